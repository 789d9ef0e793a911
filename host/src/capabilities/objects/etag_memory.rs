//! What the host remembers of objects on servers that list them without
//! ETags (s3s-fs, some gateways): each object's ETag with the size and
//! modification second it had when a HEAD, GET or copy told the host. A
//! later listing showing the same key with that size and second gets the
//! remembered ETag, so an incremental copy compares unchanged objects
//! without a HEAD on each side. Servers that list ETags (AWS, MinIO, Ceph)
//! never open one.
//!
//! One redb file per bucket, endpoint and access key in the state folder's
//! `objects-etags/`, keyed by the object's full key. It is a cache: a file
//! that cannot be opened (another host holds it, it is damaged) leaves the
//! copy to HEAD as before, and every entry read is checked like a byte from
//! a store. The one thing it cannot notice is an object rewritten with the
//! same size within the same second as the version it remembers.

use super::ObjectLocation;
use anyhow::{Context, Result};
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::ops::Bound;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Full key → size (8 bytes LE), modification second (8 bytes LE), ETag.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("etags");
/// Memory the file's page cache may take (redb's default is 1 GiB).
const CACHE: usize = 4 << 20;
/// Longest ETag kept; S3's are 32 hex digits plus a part count.
const MAX_ETAG: usize = 128;
/// Every this many commits one waits for the disk: redb reuses the pages
/// that non-durable commits free only after a durable one, so the file
/// stays small.
const DURABLE_EVERY: u32 = 32;

/// One object as a response showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The full key in the bucket.
    pub key: String,
    pub size: u64,
    /// Unix seconds.
    pub last_modified: i64,
    pub etag: String,
}

pub struct EtagMemory {
    db: Database,
    path: PathBuf,
    commits: std::sync::atomic::AtomicU32,
}

impl EtagMemory {
    /// The memory of `location`'s bucket in `state_dir`, created if new.
    pub fn open(state_dir: &Path, location: &ObjectLocation) -> Result<Self> {
        let dir = state_dir.join("objects-etags");
        // Keys can be personal (file names): the folder is the host's own.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.redb", file_id(location)));
        let db = match create(&path) {
            Err(e @ (DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch)) => {
                return Err(e).with_context(|| {
                    format!("{} is in use by another envsync-host", path.display())
                });
            }
            // Damaged or of another format: a cache, so it starts afresh.
            Err(e) => {
                tracing::warn!(
                    "ETag memory {} could not be read ({e}); starting it afresh",
                    path.display()
                );
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                create(&path).with_context(|| format!("creating {}", path.display()))?
            }
            Ok(db) => db,
        };
        Ok(EtagMemory {
            db,
            path,
            commits: std::sync::atomic::AtomicU32::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the empty ETag of each `(full key, size, second, etag)` whose
    /// remembered size and second match. Returns how many it filled.
    pub fn fill<'o>(
        &self,
        objects: impl Iterator<Item = (String, u64, i64, &'o mut String)>,
    ) -> Result<usize> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut filled = 0;
        for (key, size, second, etag) in objects {
            if !etag.is_empty() {
                continue;
            }
            let Some(value) = table.get(key.as_str())? else {
                continue;
            };
            if let Some((s, m, e)) = decode(value.value())
                && s == size
                && m == second
            {
                *etag = e;
                filled += 1;
            }
        }
        Ok(filled)
    }

    /// Remembers `seen`, replacing what was known of those keys.
    pub fn remember(&self, seen: &[Seen]) -> Result<()> {
        self.write(|table| {
            for s in seen.iter().filter(|s| valid_etag(&s.etag)) {
                table.insert(s.key.as_str(), encode(s).as_slice())?;
            }
            Ok(())
        })
    }

    /// Forgets `keys` (objects written or deleted with no ETag and second
    /// to remember).
    pub fn forget<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<()> {
        self.write(|table| {
            for k in keys {
                table.remove(k)?;
            }
            Ok(())
        })
    }

    /// Forgets the keys starting with `prefix` after `after` (none: from
    /// the start) up to and including `through` (none: to the end) that
    /// are not in `listed`: one listing page covers that range, so what it
    /// did not show is gone.
    pub fn forget_unlisted(
        &self,
        prefix: &str,
        after: Option<&str>,
        through: Option<&str>,
        listed: &HashSet<&str>,
    ) -> Result<()> {
        self.write(|table| {
            let start = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Included(prefix),
            };
            let end = match through {
                Some(t) => Bound::Included(t),
                None => Bound::Unbounded,
            };
            let mut gone = Vec::new();
            for entry in table.range((start, end))? {
                let (k, _) = entry?;
                let k = k.value();
                if !k.starts_with(prefix) {
                    break;
                }
                if !listed.contains(k) {
                    gone.push(k.to_string());
                }
            }
            for k in &gone {
                table.remove(k.as_str())?;
            }
            Ok(())
        })
    }

    fn write(
        &self,
        change: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<()>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        // A cache: losing the last commits to a crash costs HEADs, not
        // correctness, so most commits need not wait for the disk.
        let n = self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if !n.is_multiple_of(DURABLE_EVERY) {
            tx.set_durability(Durability::None)?;
        }
        {
            let mut table = tx.open_table(TABLE)?;
            change(&mut table)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Drop for EtagMemory {
    /// Non-durable commits reach the disk only with a durable one.
    fn drop(&mut self) {
        let flushed = self
            .db
            .begin_write()
            .map_err(anyhow::Error::from)
            .and_then(|tx| {
                tx.commit()?;
                Ok(())
            });
        if let Err(e) = flushed {
            tracing::warn!("could not save {}: {e:#}", self.path.display());
        }
    }
}

fn create(path: &Path) -> Result<Database, DatabaseError> {
    Database::builder()
        .set_cache_size(CACHE)
        // The file is read like hostile input: a damaged one fails to open
        // instead of being trusted.
        .set_check_integrity_on_open(true)
        .create(path)
}

/// The file of a bucket as one identity reads it: endpoint, bucket and
/// access key id (not the secret), hashed so the name says nothing.
pub(super) fn file_id(location: &ObjectLocation) -> String {
    let mut h = Sha256::new();
    h.update(location.endpoint.as_deref().unwrap_or("aws"));
    h.update([0]);
    h.update(&location.bucket);
    h.update([0]);
    h.update(location.key.as_ref().map(|k| k.id.as_str()).unwrap_or(""));
    hex::encode(&h.finalize()[..12])
}

fn valid_etag(etag: &str) -> bool {
    !etag.is_empty() && etag.len() <= MAX_ETAG && !etag.chars().any(char::is_control)
}

fn encode(s: &Seen) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + s.etag.len());
    v.extend_from_slice(&s.size.to_le_bytes());
    v.extend_from_slice(&s.last_modified.to_le_bytes());
    v.extend_from_slice(s.etag.as_bytes());
    v
}

/// An entry as written by [`encode`]; anything else reads as unknown.
fn decode(v: &[u8]) -> Option<(u64, i64, String)> {
    let (size, rest) = v.split_first_chunk::<8>()?;
    let (second, etag) = rest.split_first_chunk::<8>()?;
    let etag = std::str::from_utf8(etag).ok()?;
    valid_etag(etag).then(|| {
        (
            u64::from_le_bytes(*size),
            i64::from_le_bytes(*second),
            etag.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(bucket: &str) -> ObjectLocation {
        ObjectLocation {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: bucket.into(),
            prefix: String::new(),
            key: None,
            region: None,
        }
    }

    fn seen(key: &str, size: u64, second: i64, etag: &str) -> Seen {
        Seen {
            key: key.into(),
            size,
            last_modified: second,
            etag: etag.into(),
        }
    }

    /// Fills `(key, size, second)` like a listing page without ETags.
    fn filled(m: &EtagMemory, listed: &[(&str, u64, i64)]) -> Vec<String> {
        let mut etags = vec![String::new(); listed.len()];
        m.fill(
            listed
                .iter()
                .zip(etags.iter_mut())
                .map(|((k, s, t), e)| (k.to_string(), *s, *t, e)),
        )
        .unwrap();
        etags
    }

    #[test]
    fn an_etag_is_given_back_only_for_the_same_size_and_second() {
        let dir = tempfile::tempdir().unwrap();
        let m = EtagMemory::open(dir.path(), &location("b")).unwrap();
        m.remember(&[seen("p/a", 10, 100, "aaa"), seen("p/b", 20, 200, "bbb")])
            .unwrap();
        let got = filled(&m, &[("p/a", 10, 100), ("p/b", 21, 200), ("p/c", 1, 1)]);
        assert_eq!(got, ["aaa", "", ""]);
        // A rewrite a second later is not the remembered version.
        assert_eq!(filled(&m, &[("p/a", 10, 101)]), [""]);
        drop(m);
        // It survives the process (the drop's durable commit).
        let m = EtagMemory::open(dir.path(), &location("b")).unwrap();
        assert_eq!(filled(&m, &[("p/a", 10, 100)]), ["aaa"]);
        // Another bucket has its own file.
        let other = EtagMemory::open(dir.path(), &location("other")).unwrap();
        assert_eq!(filled(&other, &[("p/a", 10, 100)]), [""]);
    }

    #[test]
    fn a_listing_page_forgets_what_it_no_longer_shows_in_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let m = EtagMemory::open(dir.path(), &location("b")).unwrap();
        let all = ["p/a", "p/b", "p/c", "p/d", "q/x"];
        m.remember(&all.map(|k| seen(k, 1, 1, "e"))).unwrap();
        // A page showing a and d after nothing, through d: b and c are gone.
        m.forget_unlisted("p/", None, Some("p/d"), &HashSet::from(["p/a", "p/d"]))
            .unwrap();
        let listed = all.map(|k| (k, 1, 1));
        assert_eq!(filled(&m, &listed), ["e", "", "", "e", "e"]);
        // The last page after a, showing nothing: the rest of p/ is gone, q/ stays.
        m.forget_unlisted("p/", Some("p/a"), None, &HashSet::new())
            .unwrap();
        assert_eq!(filled(&m, &listed), ["e", "", "", "", "e"]);
        m.forget(["p/a"]).unwrap();
        assert_eq!(filled(&m, &listed), ["", "", "", "", "e"]);
    }

    #[test]
    fn damaged_files_and_entries_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let m = EtagMemory::open(dir.path(), &location("b")).unwrap();
        let path = m.path().to_path_buf();
        m.remember(&[seen("k", 1, 1, "e"), seen("bad", 1, 1, "e\n")])
            .unwrap();
        assert_eq!(filled(&m, &[("bad", 1, 1)]), [""]);
        assert_eq!(decode(&[1, 2, 3]), None);
        drop(m);
        // Garbage in place of the file: it starts afresh, knowing nothing.
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let m = EtagMemory::open(dir.path(), &location("b")).unwrap();
        assert_eq!(filled(&m, &[("k", 1, 1)]), [""]);
        // Held by another host: not touched.
        let again = EtagMemory::open(dir.path(), &location("b"));
        let e = format!("{:#}", again.err().expect("the file is in use"));
        assert!(e.contains("in use by another envsync-host"), "{e}");
        m.remember(&[seen("k", 1, 1, "e")]).unwrap();
        assert_eq!(filled(&m, &[("k", 1, 1)]), ["e"]);
    }

    #[test]
    fn the_file_name_hides_the_bucket_and_key() {
        let mut l = location("secret-bucket");
        l.key = Some(crate::store::s3_client::AccessKey {
            id: "AKIACANARY".into(),
            secret: crate::connection::Secret::new("s3cr3t".into()),
        });
        let id = file_id(&l);
        assert_eq!(id.len(), 24);
        assert!(!id.contains("secret") && !id.contains("CANARY"));
        assert_ne!(id, file_id(&location("secret-bucket")));
    }
}
