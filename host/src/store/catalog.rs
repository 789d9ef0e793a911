//! Artifacts on any `ObjectStore`: choosing a key, publishing a finished
//! upload (verify → the caller's check → manifest → pointer, in that order),
//! choosing what to restore, listing.

use super::checksum::{self, ArtifactReader, ArtifactWriter, Digested};
use super::codec::{Codec, Identities};
use super::layout::{self, artifact_time, manifest_key, pointer_key};
use super::manifest::{Chunk, Manifest};
use super::{ObjectMeta, ObjectStore};
use crate::failure::{Failure, Kind};
use anyhow::{Context, Result};
use chrono::Utc;
use std::sync::Arc;

#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
}

/// An artifact stored and verified but not published (see [`Catalog::upload`]).
pub struct Uploaded {
    key: String,
    written: Digested,
}

impl Uploaded {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `manifest` completed with the artifact's key, size and checksum.
    pub fn describe(&self, mut manifest: Manifest) -> Manifest {
        manifest.key = self.key.clone();
        manifest.size = self.written.size;
        manifest.sha256 = self.written.sha256.clone();
        manifest
    }
}

/// A listed backup.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// None when the artifact has no readable manifest (it cannot be restored).
    pub manifest: Option<Manifest>,
    /// True when the pointer names this artifact.
    pub latest: bool,
}

impl Catalog {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Catalog { store }
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Starts the upload of a new artifact of `database` from `instance`,
    /// encoded with `codec` (whose suffix extends the plugin's extension).
    pub async fn begin(
        &self,
        instance: &str,
        database: &str,
        extension: &str,
        codec: &Codec,
    ) -> Result<ArtifactWriter> {
        layout::check_segment("instance", instance)?;
        layout::check_segment("database", database)?;
        let extension = format!("{extension}{}", codec.extension_suffix());
        let extension = extension.as_str();
        // Keys have one-second resolution: wait for a fresh second rather
        // than ever reuse a key.
        let mut key = layout::artifact_key(instance, database, extension, Utc::now());
        while self.store.get(&manifest_key(&key)).await?.is_some()
            || self.store.list(&key).await?.iter().any(|o| o.key == key)
        {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            key = layout::artifact_key(instance, database, extension, Utc::now());
        }
        let writer = self.store.create(&key).await?;
        ArtifactWriter::new(key, writer, codec)
    }

    /// Finishes the upload and re-reads it to verify the checksum. The
    /// artifact is then stored but not published: it has no manifest (so
    /// restores and listings take it for unfinished) and no pointer names it.
    pub async fn upload(&self, writer: ArtifactWriter) -> Result<Uploaded> {
        let key = writer.key().to_string();
        let written = writer
            .finish()
            .await
            .with_context(|| format!("finishing upload of {key}"))?;
        let stored = checksum::digest(self.store.open(&key).await?)
            .await
            .with_context(|| format!("re-reading {key} to verify it"))?;
        if stored != written {
            anyhow::bail!(
                "{key} in {} does not read back as written (wrote {} bytes sha256 {}, read {} bytes sha256 {}); \
                 the pointer was not moved",
                self.store.location(),
                written.size,
                written.sha256,
                stored.size,
                stored.sha256
            );
        }
        Ok(Uploaded { key, written })
    }

    /// Publishes an uploaded artifact: writes its manifest (never replacing
    /// one) and only then moves the pointer.
    pub async fn publish(&self, uploaded: Uploaded, manifest: Manifest) -> Result<Manifest> {
        let manifest = uploaded.describe(manifest);
        let json = serde_json::to_vec_pretty(&manifest)?;
        self.store
            .put_new(&manifest_key(&uploaded.key), &json)
            .await?;
        let pointer = pointer_key(&manifest.source.instance, &manifest.source.database);
        self.store
            .put(&pointer, format!("{}\n", uploaded.key).as_bytes())
            .await?;
        Ok(manifest)
    }

    /// Removes an uploaded artifact that will not be published, and its chunks.
    pub async fn discard(&self, uploaded: Uploaded) -> Result<()> {
        self.discard_chunks(&uploaded.key).await?;
        self.store
            .delete(&uploaded.key)
            .await
            .with_context(|| format!("removing the unpublished {}", uploaded.key))
    }

    /// Starts the upload of chunk `name` of the artifact at `artifact_key`
    /// (not yet published), encoded like the artifact.
    pub async fn begin_chunk(
        &self,
        artifact_key: &str,
        name: &str,
        codec: &Codec,
    ) -> Result<ArtifactWriter> {
        layout::check_chunk_name(name).map_err(|e| Failure::new(Kind::Plugin, e))?;
        let key = layout::chunk_key(artifact_key, name);
        let writer = self.store.create(&key).await?;
        ArtifactWriter::new(key, writer, codec)
    }

    /// Re-reads every chunk of the artifact at `artifact_key` and checks it
    /// is stored as written, as [`Self::upload`] does for the main stream.
    pub async fn verify_chunks(&self, artifact_key: &str, chunks: &[Chunk]) -> Result<()> {
        for chunk in chunks {
            let key = layout::chunk_key(artifact_key, &chunk.name);
            let stored = checksum::digest(self.store.open(&key).await?)
                .await
                .with_context(|| format!("re-reading {key} to verify it"))?;
            if stored.size != chunk.size || stored.sha256 != chunk.sha256 {
                anyhow::bail!(
                    "chunk {key} in {} does not read back as written (wrote {} bytes sha256 {}, \
                     read {} bytes sha256 {}); the pointer was not moved",
                    self.store.location(),
                    chunk.size,
                    chunk.sha256,
                    stored.size,
                    stored.sha256
                );
            }
        }
        Ok(())
    }

    /// Deletes whatever chunks are stored for the artifact at `artifact_key`
    /// (an unpublished backup's, or a pruned artifact's).
    pub async fn discard_chunks(&self, artifact_key: &str) -> Result<()> {
        for object in self.store.list(&layout::chunk_prefix(artifact_key)).await? {
            self.store
                .delete(&object.key)
                .await
                .with_context(|| format!("removing chunk {}", object.key))?;
        }
        Ok(())
    }

    /// Streams chunk `name` of `manifest`'s artifact decoded, checked
    /// against its manifest entry by the reader's `verify`.
    pub async fn open_chunk(
        &self,
        manifest: &Manifest,
        name: &str,
        identities: &Identities,
    ) -> Result<ArtifactReader, String> {
        let Some(chunk) = manifest.chunks.iter().find(|c| c.name == name) else {
            return Err(format!(
                "artifact {} has no chunk {name:?} (it has {})",
                manifest.key,
                manifest.chunks.len()
            ));
        };
        let codec = Codec::from_manifest(&manifest.compression, manifest.encryption.as_deref())
            .map_err(|e| format!("{}: {e:#}", manifest.key))?;
        let key = layout::chunk_key(&manifest.key, name);
        let reader = self
            .store
            .open(&key)
            .await
            .map_err(|e| format!("opening chunk {key}: {e:#}"))?;
        let expected = Digested {
            size: chunk.size,
            sha256: chunk.sha256.clone(),
        };
        ArtifactReader::new(key, reader, expected, &codec, identities)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// The key the pointer of `database` from `instance` names, if any.
    pub async fn latest(&self, instance: &str, database: &str) -> Result<Option<String>> {
        let pointer = self.store.get(&pointer_key(instance, database)).await?;
        Ok(pointer.map(|p| String::from_utf8_lossy(&p).trim().to_string()))
    }

    /// The manifest of `key`.
    pub async fn manifest(&self, key: &str) -> Result<Manifest> {
        let bytes = self.store.get(&manifest_key(key)).await?.ok_or_else(|| {
            Failure::new(
                Kind::ArtifactRejected,
                format!(
                    "{key} has no manifest in {}: it is unfinished or not an envsync artifact",
                    self.store.location()
                ),
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::new(
                Kind::ArtifactRejected,
                format!("the manifest of {key} is unreadable: {e}"),
            )
            .into()
        })
    }

    /// The artifact to restore: `explicit` (a key, or a file name inside
    /// `instance/`), else the pointer, else the newest artifact by name.
    pub async fn resolve(
        &self,
        instance: &str,
        database: &str,
        explicit: Option<&str>,
    ) -> Result<Manifest> {
        layout::check_segment("instance", instance)?;
        layout::check_segment("database", database)?;
        if let Some(name) = explicit {
            let key = if name.contains('/') {
                name.to_string()
            } else {
                format!("{instance}/{name}")
            };
            return self.manifest(&key).await;
        }
        if let Some(bytes) = self.store.get(&pointer_key(instance, database)).await? {
            let key = String::from_utf8_lossy(&bytes).trim().to_string();
            return self.manifest(&key).await.with_context(|| {
                format!(
                    "the pointer {} names {key}",
                    pointer_key(instance, database)
                )
            });
        }
        let newest = self
            .artifacts(instance, Some(database))
            .await?
            .into_iter()
            .max_by(|a, b| a.key.cmp(&b.key));
        match newest {
            Some(object) => self.manifest(&object.key).await,
            None => Err(Failure::new(
                Kind::StepFailed,
                format!("no backup of {database} from {instance} in {}; run a backup first or check --from-instance/--from-database", self.store.location()),
            )
            .into()),
        }
    }

    /// Streams the artifact of `manifest` decoded (decrypted with
    /// `identities`, decompressed), hashing the stored bytes as it goes.
    pub async fn open(
        &self,
        manifest: &Manifest,
        identities: &Identities,
    ) -> Result<ArtifactReader> {
        self.reader(manifest, identities, None).await
    }

    /// [`open`](Self::open) over only the first `stored` bytes of the
    /// artifact, to decode its start: reading past them fails (the rest is
    /// missing), and it is never verified.
    pub async fn open_start(
        &self,
        manifest: &Manifest,
        identities: &Identities,
        stored: u64,
    ) -> Result<ArtifactReader> {
        self.reader(manifest, identities, Some(stored)).await
    }

    async fn reader(
        &self,
        manifest: &Manifest,
        identities: &Identities,
        prefix: Option<u64>,
    ) -> Result<ArtifactReader> {
        let codec = Codec::from_manifest(&manifest.compression, manifest.encryption.as_deref())
            .map_err(|e| {
                Failure::new(Kind::ArtifactRejected, format!("{}: {e:#}", manifest.key))
            })?;
        let reader = match prefix {
            None => self.store.open(&manifest.key).await?,
            Some(len) => self.store.open_prefix(&manifest.key, len).await?,
        };
        let expected = Digested {
            size: manifest.size,
            sha256: manifest.sha256.clone(),
        };
        ArtifactReader::new(manifest.key.clone(), reader, expected, &codec, identities).await
    }

    /// Deletes old artifacts of `database` (of every instance unless one is
    /// given): keeps the newest `keep_last`, those younger than `keep_days`,
    /// and always the one a pointer names. Returns what was (or, with
    /// `dry_run`, would be) deleted.
    pub async fn prune(
        &self,
        instance: Option<&str>,
        database: &str,
        keep_last: Option<usize>,
        keep_days: Option<u64>,
        dry_run: bool,
    ) -> Result<Vec<Listed>> {
        if keep_last.is_none() && keep_days.is_none() {
            return Err(Failure::new(
                Kind::Usage,
                "prune needs --keep-last N and/or --keep-days D",
            )
            .into());
        }
        let mut groups: std::collections::BTreeMap<String, Vec<Listed>> = Default::default();
        for item in self.list(instance, Some(database)).await? {
            let group = item.key.split('/').next().unwrap_or_default().to_string();
            groups.entry(group).or_default().push(item);
        }
        let now = Utc::now();
        let mut doomed = Vec::new();
        for (_, mut items) in groups {
            items.reverse(); // newest first
            for (index, item) in items.into_iter().enumerate() {
                let Some(made) = artifact_time(&item.key, None) else {
                    continue;
                };
                let age = now.signed_duration_since(made);
                let recent = keep_days.is_some_and(|d| age < chrono::Duration::days(d as i64));
                let among_last = keep_last.is_some_and(|n| index < n);
                if !(item.latest || recent || among_last) {
                    doomed.push(item);
                }
            }
        }
        if !dry_run {
            for item in &doomed {
                self.discard_chunks(&item.key).await?;
                self.store.delete(&item.key).await?;
                self.store.delete(&manifest_key(&item.key)).await?;
                tracing::info!("deleted {}", item.key);
            }
        }
        Ok(doomed)
    }

    async fn artifacts(&self, instance: &str, database: Option<&str>) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .store
            .list(&format!("{instance}/"))
            .await?
            .into_iter()
            .filter(|o| artifact_time(&o.key, database).is_some())
            .collect())
    }

    /// Every artifact, optionally of one instance and database, oldest first.
    pub async fn list(
        &self,
        instance: Option<&str>,
        database: Option<&str>,
    ) -> Result<Vec<Listed>> {
        let prefix = instance.map(|i| format!("{i}/")).unwrap_or_default();
        let objects: Vec<ObjectMeta> = self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .filter(|o| artifact_time(&o.key, database).is_some())
            .collect();
        let mut out = Vec::new();
        for object in objects {
            let manifest = self.manifest(&object.key).await.ok();
            if database.is_some_and(|db| manifest.as_ref().is_some_and(|m| m.source.database != db))
            {
                continue;
            }
            let latest = match &manifest {
                Some(m) => self
                    .store
                    .get(&pointer_key(&m.source.instance, &m.source.database))
                    .await?
                    .is_some_and(|p| String::from_utf8_lossy(&p).trim() == object.key),
                None => false,
            };
            out.push(Listed {
                key: object.key,
                size: object.size,
                manifest,
                latest,
            });
        }
        out.sort_by(|a, b| {
            let ta = artifact_time(&a.key, None);
            let tb = artifact_time(&b.key, None);
            ta.cmp(&tb).then(a.key.cmp(&b.key))
        });
        Ok(out)
    }
}
