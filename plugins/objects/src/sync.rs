//! The copy: both listings merged in key order, page by page. A source
//! object the target lacks, or has with another size or content, is
//! copied (or, when redacted, replaced by the placeholder); one the target
//! has alike is left; a target object the source lacks is deleted when
//! `delete` is on. Copies and deletes go to the host in batches, which it
//! runs several at a time. Where a server lists no ETags, only objects on
//! both sides with equal sizes need theirs; the host fetches them in
//! batches too (a key on one side only, or of another size, needs none).

use crate::listing::Listing;
use crate::settings::{DEFAULT_PLACEHOLDER, Settings};
use envsync_plugin_sdk::objects::{self, ObjectInfo};
use envsync_plugin_sdk::{Error, info, log, splice, warn};

/// User metadata the host sets on a streamed copy: the source's ETag, so a
/// copy whose own ETag differs (other part sizes) is still recognised.
const SOURCE_ETAG: &str = "envsync-source-etag";
/// User metadata of a placeholder: which placeholder it is.
const REDACTED: &str = "envsync-redacted";

#[derive(Default)]
struct Counts {
    copied: u64,
    redacted: u64,
    unchanged: u64,
    deleted: u64,
    bytes: u64,
}

struct Run<'s> {
    settings: &'s Settings,
    /// What marks a target object as this run's placeholder.
    placeholder_id: String,
    copies: Vec<(String, String)>,
    deletes: Vec<String>,
    /// Objects on both sides, of equal size, waiting for ETags to compare.
    compares: Vec<(ObjectInfo, ObjectInfo)>,
    counts: Counts,
}

pub fn run(settings: &Settings) -> Result<(), Error> {
    let source = objects::location("source")?;
    let target = objects::location("target")?;
    info(format!(
        "copying s3://{}/{} ({}) into s3://{}/{} ({}){}{}",
        source.bucket,
        source.prefix,
        source.endpoint,
        target.bucket,
        target.prefix,
        target.endpoint,
        if source.same_account_as_other {
            ", server-side"
        } else {
            ", streamed through the host"
        },
        if settings.dry_run { " [dry run]" } else { "" }
    ));
    let placeholder_id = match &settings.placeholder_key {
        None => "text".to_string(),
        Some(key) => {
            let head = objects::head("source", key)?.ok_or_else(|| {
                Error::InvalidParam(format!(
                    "placeholder-key {key:?} is not in the source location; upload the \
                     placeholder there or leave placeholder-key out for a text placeholder"
                ))
            })?;
            format!("key:{key}:{}", head.info.etag)
        }
    };
    let mut run = Run {
        settings,
        placeholder_id,
        copies: Vec::new(),
        deletes: Vec::new(),
        compares: Vec::new(),
        counts: Counts::default(),
    };
    let mut src = Listing::new("source");
    let mut tgt = Listing::new("target");
    loop {
        let order = match (src.peek()?, tgt.peek()?) {
            (None, None) => break,
            (Some(s), Some(t)) => s.key.cmp(&t.key),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let s = src.take()?.expect("peeked");
                run.source_only(s)?;
            }
            std::cmp::Ordering::Equal => {
                let s = src.take()?.expect("peeked");
                let t = tgt.take()?.expect("peeked");
                run.both(s, t)?;
            }
            std::cmp::Ordering::Greater => {
                let t = tgt.take()?.expect("peeked");
                run.target_only(t)?;
            }
        }
    }
    run.flush_compares()?;
    run.flush_copies()?;
    run.flush_deletes()?;
    objects::note_unchanged(run.counts.unchanged);
    let c = &run.counts;
    info(format!(
        "{}{} copied ({} bytes), {} redacted, {} unchanged, {} deleted",
        if settings.dry_run {
            "dry run, would be: "
        } else {
            ""
        },
        c.copied,
        c.bytes,
        c.redacted,
        c.unchanged,
        c.deleted
    ));
    Ok(())
}

impl Run<'_> {
    fn source_only(&mut self, s: ObjectInfo) -> Result<(), Error> {
        if !self.settings.selected(&s.key) {
            return Ok(());
        }
        if self.settings.redacted(&s.key) {
            return self.redact(&s.key);
        }
        self.copy(s)
    }

    fn both(&mut self, s: ObjectInfo, t: ObjectInfo) -> Result<(), Error> {
        if !self.settings.selected(&s.key) {
            return Ok(());
        }
        if self.settings.redacted(&s.key) {
            let marked = objects::head("target", &t.key)?.is_some_and(|h| {
                h.metadata
                    .iter()
                    .any(|(k, v)| k == REDACTED && *v == self.placeholder_id)
            });
            if marked {
                self.counts.unchanged += 1;
                return Ok(());
            }
            return self.redact(&s.key);
        }
        if s.size != t.size {
            return self.copy(s);
        }
        if s.etag.is_empty() || t.etag.is_empty() {
            if unchanged_by_time(&s, &t, self.settings.verify) {
                self.counts.unchanged += 1;
                return Ok(());
            }
            self.compares.push((s, t));
            if self.compares.len() >= self.settings.batch {
                self.flush_compares()?;
            }
            return Ok(());
        }
        self.compare(s, t)
    }

    /// Objects of equal size: unchanged when the ETags match or the target
    /// is a streamed copy of this very source object, copied otherwise.
    fn compare(&mut self, s: ObjectInfo, t: ObjectInfo) -> Result<(), Error> {
        if !s.etag.is_empty() && s.etag == t.etag || self.copied_from(&s, &t)? {
            self.counts.unchanged += 1;
            return Ok(());
        }
        self.copy(s)
    }

    /// Fetches the missing ETags of the waiting objects (one host call per
    /// side, which HEADs several at once) and compares them.
    fn flush_compares(&mut self) -> Result<(), Error> {
        let mut batch = std::mem::take(&mut self.compares);
        fill_etags("source", batch.iter_mut().map(|(s, _)| s))?;
        fill_etags("target", batch.iter_mut().map(|(_, t)| t))?;
        for (s, t) in batch {
            self.compare(s, t)?;
        }
        Ok(())
    }

    /// Whether the target object is a streamed copy of this very source
    /// object (its ETag differs only because it was uploaded in other parts).
    fn copied_from(&self, s: &ObjectInfo, t: &ObjectInfo) -> Result<bool, Error> {
        if s.etag.is_empty() {
            return Ok(false);
        }
        Ok(objects::head("target", &t.key)?.is_some_and(|h| {
            h.metadata
                .iter()
                .any(|(k, v)| k == SOURCE_ETAG && *v == s.etag)
        }))
    }

    fn target_only(&mut self, t: ObjectInfo) -> Result<(), Error> {
        if !self.settings.delete || !self.settings.selected(&t.key) {
            return Ok(());
        }
        self.counts.deleted += 1;
        if self.settings.dry_run {
            info(format!("would delete {}", t.key));
            return Ok(());
        }
        self.deletes.push(t.key);
        if self.deletes.len() >= self.settings.batch {
            self.flush_deletes()?;
        }
        Ok(())
    }

    fn copy(&mut self, s: ObjectInfo) -> Result<(), Error> {
        if self.settings.dry_run {
            info(format!("would copy {} ({} bytes)", s.key, s.size));
            self.counts.copied += 1;
            self.counts.bytes += s.size;
            return Ok(());
        }
        self.copies.push((s.key.clone(), s.key));
        if self.copies.len() >= self.settings.batch {
            self.flush_copies()?;
        }
        Ok(())
    }

    /// Writes the placeholder at `key` in the target. The source object is
    /// never read.
    fn redact(&mut self, key: &str) -> Result<(), Error> {
        self.counts.redacted += 1;
        if self.settings.dry_run {
            info(format!("would replace {key} by the placeholder"));
            return Ok(());
        }
        let marker = vec![(REDACTED.to_string(), self.placeholder_id.clone())];
        match &self.settings.placeholder_key {
            None => {
                let sink =
                    objects::write("target", key, Some("text/plain; charset=utf-8"), &marker)?;
                sink.write(DEFAULT_PLACEHOLDER.as_bytes())?;
                sink.close()?;
            }
            Some(placeholder) => {
                let head = objects::head("source", placeholder)?.ok_or_else(|| {
                    Error::Other(format!(
                        "placeholder-key {placeholder:?} disappeared from the source during the copy"
                    ))
                })?;
                let sink = objects::write("target", key, head.content_type.as_deref(), &marker)?;
                let body = objects::read("source", placeholder)?;
                splice(&body, &sink)?;
                sink.close()?;
            }
        }
        Ok(())
    }

    fn flush_copies(&mut self) -> Result<(), Error> {
        if self.copies.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.copies);
        let results = objects::copy("source", "target", &batch)?;
        let mut failed = Vec::new();
        for ((key, _), result) in batch.iter().zip(results) {
            match result {
                Ok(c) => {
                    self.counts.copied += 1;
                    self.counts.bytes += c.bytes;
                }
                Err(e) => failed.push(format!("{key}: {}", describe(&e))),
            }
        }
        log::progress("copying", self.counts.copied, None);
        if !failed.is_empty() {
            for f in failed.iter().take(5) {
                warn(format!("not copied: {f}"));
            }
            return Err(Error::Io(format!(
                "{} of {} objects in a batch were not copied (first: {}); the objects copied \
                 so far stay, and a rerun copies only what is still missing",
                failed.len(),
                batch.len(),
                failed[0]
            )));
        }
        Ok(())
    }

    fn flush_deletes(&mut self) -> Result<(), Error> {
        if self.deletes.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.deletes);
        objects::delete("target", &batch)?;
        Ok(())
    }
}

/// Fills the empty ETags of `objects` from `role`, in one host call.
/// Where a server lists no ETags: an equal-size target object written
/// after its source last changed is this copy of it (a source changed
/// since is newer than the copy, and is compared by ETag), unless
/// `verify` asks for ETags anyway. Saves two HEADs per unchanged object.
fn unchanged_by_time(s: &ObjectInfo, t: &ObjectInfo, verify: bool) -> bool {
    !verify && s.size == t.size && t.last_modified >= s.last_modified
}

fn fill_etags<'o>(
    role: &str,
    objects: impl Iterator<Item = &'o mut ObjectInfo>,
) -> Result<(), Error> {
    let mut missing: Vec<&mut ObjectInfo> = objects.filter(|o| o.etag.is_empty()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = missing.iter().map(|o| o.key.clone()).collect();
    let etags = objects::etags(role, &keys)?;
    for (o, etag) in missing.iter_mut().zip(etags) {
        o.etag = etag;
    }
    Ok(())
}

fn describe(e: &Error) -> String {
    match e {
        Error::InvalidParam(m)
        | Error::BadArtifact(m)
        | Error::Denied(m)
        | Error::ProgramFailed(m)
        | Error::Io(m)
        | Error::Integrity(m)
        | Error::Other(m) => m.clone(),
    }
}
