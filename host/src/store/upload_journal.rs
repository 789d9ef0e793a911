//! A record, on the local disk, of S3 multipart uploads this machine has
//! started and not yet completed or aborted. An upload cut off by a killed
//! process or an S3 outage stays open in the bucket (and costs money); the
//! next run that opens the same bucket finds it here and aborts it.
//!
//! An entry is written *before* CreateMultipartUpload is sent and gets the
//! upload id when the answer arrives: a process killed while the answer is
//! on its way leaves an entry without an id, and the next run finds that
//! upload by listing the key's open uploads (see `s3::abort_abandoned_uploads`).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One upload being started or open.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenUpload {
    pub bucket: String,
    pub key: String,
    /// None until the server has answered CreateMultipartUpload.
    pub upload_id: Option<String>,
    /// The process that started it: a live one still owns its upload.
    pub pid: u32,
}

/// The journal folder: `s3-uploads` in the step's state folder (the
/// config's `state_dir`, else `$ENVSYNC_STATE_DIR`, else the user's).
/// (Default: no folder, nothing journaled.)
#[derive(Clone, Debug, Default)]
pub struct UploadJournal {
    dir: Option<PathBuf>,
}

/// One journal file, owned by the upload it records.
#[derive(Debug)]
pub struct JournalEntry {
    path: Option<PathBuf>,
    upload: OpenUpload,
}

/// Entry names are unique within the process; the pid makes them unique
/// across processes sharing the folder.
static NEXT_ENTRY: AtomicU64 = AtomicU64::new(0);

impl UploadJournal {
    /// The journal in `state_dir` (none: uploads are not journaled, and
    /// what a killed run leaves open waits for a lifecycle rule).
    pub fn in_state_dir(state_dir: Option<&Path>) -> Self {
        UploadJournal {
            dir: state_dir.map(|d| d.join("s3-uploads")),
        }
    }

    #[cfg(test)]
    fn at(dir: PathBuf) -> Self {
        UploadJournal { dir: Some(dir) }
    }

    /// Notes that an upload of `key` is about to be started: call before
    /// sending CreateMultipartUpload. A journal that cannot be written only
    /// loses the clean-up after a crash, so this warns instead of failing.
    pub fn starting(&self, bucket: &str, key: &str) -> JournalEntry {
        let pid = std::process::id();
        let n = NEXT_ENTRY.fetch_add(1, Ordering::Relaxed);
        let entry = JournalEntry {
            path: self.dir.as_ref().map(|d| d.join(format!("{pid}-{n}.json"))),
            upload: OpenUpload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                upload_id: None,
                pid,
            },
        };
        if let Some(dir) = &self.dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!("could not create the upload journal {}: {e}", dir.display());
        }
        entry.write();
        entry
    }

    /// Uploads in `bucket` whose process is gone, each with its entry.
    pub fn abandoned(&self, bucket: &str) -> Result<Vec<JournalEntry>> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(upload) = serde_json::from_slice::<OpenUpload>(&bytes) else {
                continue;
            };
            if upload.bucket == bucket && !process_alive(upload.pid) {
                out.push(JournalEntry {
                    path: Some(entry.path()),
                    upload,
                });
            }
        }
        Ok(out)
    }
}

impl JournalEntry {
    pub fn upload(&self) -> &OpenUpload {
        &self.upload
    }

    /// Records the id the server gave the upload.
    pub fn started(&mut self, upload_id: &str) {
        self.upload.upload_id = Some(upload_id.to_string());
        self.write();
    }

    /// Forgets an upload that was completed or aborted (or never created).
    pub fn close(&self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }

    fn write(&self) {
        let Some(path) = &self.path else {
            return;
        };
        // Written whole then renamed, so a kill mid-write leaves the old
        // entry or the new one, never half of one.
        let tmp = path.with_extension("tmp");
        let result = std::fs::write(&tmp, serde_json::to_vec(&self.upload).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!("could not record open upload in {}: {e}", path.display());
        }
    }
}

/// True when `pid` is a running envsync-host (not a recycled pid).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| String::from_utf8_lossy(&cmd).contains("envsync"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has: above the kernel's pid_max.
    const GONE: u32 = 4_194_305;

    #[test]
    fn an_entry_is_on_disk_before_the_id_and_gone_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let journal = UploadJournal::at(dir.path().join("s3-uploads"));
        let mut entry = journal.starting("b", "k/x.bin");
        let files = || {
            std::fs::read_dir(dir.path().join("s3-uploads"))
                .unwrap()
                .count()
        };
        assert_eq!(files(), 1, "written before the request is sent");
        assert_eq!(entry.upload().upload_id, None);
        entry.started("id-1");
        assert_eq!(files(), 1, "rewritten in place, no temporary left");
        // This process is alive, so its own entry is not abandoned.
        assert!(journal.abandoned("b").unwrap().is_empty());
        entry.close();
        assert_eq!(files(), 0);
    }

    #[test]
    fn entries_of_a_dead_process_are_abandoned_with_or_without_an_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let journal = UploadJournal::at(dir.path().to_path_buf());
        let write = |name: &str, json: &str| std::fs::write(dir.path().join(name), json).unwrap();
        write(
            "old.json",
            &format!(r#"{{"bucket":"b","key":"k1","upload_id":"u1","pid":{GONE}}}"#),
        );
        write(
            "new.json",
            &format!(r#"{{"bucket":"b","key":"k2","upload_id":null,"pid":{GONE}}}"#),
        );
        write(
            "other.json",
            &format!(r#"{{"bucket":"c","key":"k3","upload_id":"u3","pid":{GONE}}}"#),
        );
        write("junk.json", "{not json");
        let mut found: Vec<_> = journal
            .abandoned("b")
            .unwrap()
            .into_iter()
            .map(|e| (e.upload.key.clone(), e.upload.upload_id.clone()))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("k1".to_string(), Some("u1".to_string())),
                ("k2".to_string(), None)
            ]
        );
    }
}
