//! A record, on the local disk, of S3 multipart uploads this machine has
//! started and not yet completed or aborted. An upload cut off by a killed
//! process or an S3 outage stays open in the bucket (and costs money); the
//! next run that opens the same bucket finds it here and aborts it.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One open upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenUpload {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    /// The process that started it: a live one still owns its upload.
    pub pid: u32,
}

/// The journal folder: `$ENVSYNC_STATE_DIR/s3-uploads`, else the user's
/// state (or data) dir.
#[derive(Clone, Debug)]
pub struct UploadJournal {
    dir: Option<PathBuf>,
}

impl UploadJournal {
    pub fn default_location() -> Self {
        let base = std::env::var_os("ENVSYNC_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                dirs::state_dir()
                    .or_else(dirs::data_local_dir)
                    .map(|d| d.join("envsync"))
            });
        UploadJournal {
            dir: base.map(|b| b.join("s3-uploads")),
        }
    }

    fn entry(&self, upload_id: &str) -> Option<PathBuf> {
        let safe: String = upload_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        self.dir.as_ref().map(|d| d.join(format!("{safe}.json")))
    }

    /// Notes an upload as open. A journal that cannot be written only loses
    /// the clean-up after a crash, so this warns instead of failing the step.
    pub fn open(&self, upload: &OpenUpload) {
        let (Some(dir), Some(path)) = (&self.dir, self.entry(&upload.upload_id)) else {
            return;
        };
        let result = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, serde_json::to_vec(upload).unwrap_or_default()));
        if let Err(e) = result {
            tracing::warn!("could not record open upload in {}: {e}", path.display());
        }
    }

    /// Forgets an upload that was completed or aborted.
    pub fn close(&self, upload_id: &str) {
        if let Some(path) = self.entry(upload_id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Uploads in `bucket` whose process is gone.
    pub fn abandoned(&self, bucket: &str) -> Result<Vec<OpenUpload>> {
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
                out.push(upload);
            }
        }
        Ok(out)
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
