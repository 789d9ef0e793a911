//! Loading indices into the target cluster under new names, then making
//! them live with one atomic alias swap (see `aliases`). Until the swap the
//! target's existing indices and aliases are untouched; on any failure the
//! new indices are deleted.

use crate::aliases::{self, Live, Restored};
use crate::backoff;
use crate::bulk::{self, Batch, Failure, Item};
use crate::client::{Cluster, encode};
use crate::dump::Consumer;
use crate::format::IndexHeader;
use envsync_plugin_sdk::{Error, info};
use serde_json::{Value, json};

pub struct Loader {
    cluster: Cluster,
    stamp: u64,
    /// Indices created so far, with the documents each should hold.
    created: Vec<(Restored, u64)>,
    batch: Batch,
    loaded: u64,
}

impl Loader {
    pub fn new(cluster: Cluster) -> Loader {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Loader {
            cluster,
            stamp,
            created: Vec::new(),
            batch: Batch::default(),
            loaded: 0,
        }
    }

    fn current(&self) -> Result<&str, Error> {
        self.created
            .last()
            .map(|(r, _)| r.new.as_str())
            .ok_or_else(|| Error::BadArtifact("a document comes before any index header".into()))
    }

    /// Adds one document of the current index.
    pub fn add(&mut self, id: &str, source: &str) -> Result<(), Error> {
        let item = Item::new(self.current()?, id, source);
        if self.batch.would_overflow(&item) {
            self.flush()?;
        }
        self.batch.push(item);
        Ok(())
    }

    /// Sends the gathered documents; fails on any refused item.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        let sent = batch.len() as u64;
        let mut retry = 0;
        loop {
            let answer = self
                .cluster
                .send("POST", "/_bulk", Some(&batch.body()), true)?;
            if !answer.ok() {
                return Err(self.cluster.failed("POST", "/_bulk", &answer));
            }
            let outcome = bulk::check_response(&answer.body, &batch).map_err(Error::Other)?;
            if !outcome.failed.is_empty() {
                let mut failed: Vec<Failure> = outcome.failed;
                let total = failed.len();
                failed.truncate(bulk::QUOTED);
                return Err(Error::Other(bulk::failure_message(&failed, total)));
            }
            if outcome.retry.is_empty() {
                break;
            }
            let Some(wait) = backoff::delay(retry) else {
                return Err(Error::Other(format!(
                    "{} document(s) were still refused with 429 (too many requests) after {} retries",
                    outcome.retry.len(),
                    backoff::MAX_RETRIES
                )));
            };
            envsync_plugin_sdk::debug(format!(
                "{} bulk item(s) refused with 429, retrying in {wait:?}",
                outcome.retry.len()
            ));
            std::thread::sleep(wait);
            retry += 1;
            batch = batch.subset(&outcome.retry);
        }
        self.loaded += sent;
        envsync_plugin_sdk::log::progress("loading", self.loaded, None);
        Ok(())
    }

    /// Refreshes and counts the new indices, runs `verify` (the artifact's
    /// check), then swaps the aliases. Deletes the new indices on failure.
    pub fn finish(mut self, verify: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        let result = self.try_finish(verify);
        if result.is_err() {
            self.clean_up();
        }
        result
    }

    fn try_finish(&mut self, verify: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
        self.flush()?;
        if self.created.is_empty() {
            return Err(Error::BadArtifact("no index to restore".into()));
        }
        let names: Vec<String> = self.created.iter().map(|(r, _)| encode(&r.new)).collect();
        let list = names.join(",");
        self.cluster
            .call("POST", &format!("/{list}/_refresh"), None)?;
        for (r, expected) in &self.created {
            let count = self
                .cluster
                .call("GET", &format!("/{}/_count", encode(&r.new)), None)?
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            if count != *expected {
                return Err(Error::Other(format!(
                    "index {} holds {count} documents after loading, {expected} were sent",
                    r.new
                )));
            }
        }
        verify()?;
        let live = Live::from_get_alias(&self.cluster.call("GET", "/_alias", None)?);
        let restored: Vec<Restored> = self.created.iter().map(|(r, _)| r.clone()).collect();
        let actions = aliases::swap_actions(&restored, &live).map_err(Error::Other)?;
        let answer =
            self.cluster
                .call("POST", "/_aliases", Some(&json!({ "actions": actions })))?;
        if answer.get("acknowledged") != Some(&Value::Bool(true)) {
            return Err(Error::Other(format!(
                "the alias swap was not acknowledged: {}",
                bulk::preview(&answer)
            )));
        }
        for (r, n) in &self.created {
            info(format!("{} is live: {} ({n} documents)", r.base, r.new));
        }
        Ok(())
    }

    /// Deletes the indices this load created (best effort).
    pub fn clean_up(&mut self) {
        for (r, _) in self.created.drain(..) {
            match self
                .cluster
                .send("DELETE", &format!("/{}", encode(&r.new)), None, false)
            {
                Ok(a) if a.ok() || a.status == 404 => {}
                Ok(a) => envsync_plugin_sdk::warn(format!(
                    "could not delete the partly loaded index {}: {}",
                    r.new,
                    bulk::preview(&a.body)
                )),
                Err(e) => envsync_plugin_sdk::warn(format!(
                    "could not delete the partly loaded index {}: {e}",
                    r.new
                )),
            }
        }
    }
}

impl Consumer for Loader {
    fn begin_index(&mut self, header: &IndexHeader) -> Result<(), Error> {
        self.flush()?;
        let base = aliases::base_name(&header.name).to_string();
        let new = aliases::new_name(&base, self.stamp);
        if self.created.iter().any(|(r, _)| r.new == new) {
            return Err(Error::BadArtifact(format!(
                "index {} appears twice (as {:?})",
                base, header.name
            )));
        }
        let body = json!({"settings": header.settings, "mappings": header.mappings});
        let path = format!("/{}", encode(&new));
        let answer = self
            .cluster
            .send("PUT", &path, Some(body.to_string().as_bytes()), false)?;
        if !answer.ok() {
            return Err(self
                .cluster
                .failed("PUT", &path, &answer)
                .context(format!("creating index {new}")));
        }
        self.created.push((
            Restored {
                base,
                new,
                aliases: header.aliases.as_object().cloned().unwrap_or_default(),
            },
            0,
        ));
        Ok(())
    }

    fn documents(&mut self, _index: &str, docs: Vec<(String, String)>) -> Result<(), Error> {
        for (id, source) in docs {
            self.add(&id, &source)?;
        }
        Ok(())
    }

    fn end_index(&mut self, _index: &str, documents: u64) -> Result<(), Error> {
        self.flush()?;
        if let Some((_, n)) = self.created.last_mut() {
            *n = documents;
        }
        Ok(())
    }
}
