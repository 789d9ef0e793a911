//! Snapshot mode (`--param mode=snapshot`): backups are repository
//! snapshots made by the cluster itself; the artifact in the store is only a
//! small manifest naming the snapshot (`snapshot`).
//!
//! - backup: register or check the repository, create
//!   `<cluster>-<UTC stamp>` (retrying a create answered with 504 once it
//!   is sure the snapshot does not exist), wait for SUCCESS (PARTIAL, FAILED
//!   and INCOMPATIBLE fail the step), record the indices' aliases in the
//!   manifest, then delete the successful envsync snapshots of this cluster
//!   beyond the newest `keep`;
//! - restore: under new names, then one atomic alias swap
//!   (`snapshot_restore`): the live indices serve until the swap and stay
//!   if anything fails. Only with `delete-live-indices-first=true` (for a
//!   cluster that cannot hold two copies, or cannot swap) the old way:
//!   switch `action.auto_create_index` off, delete the live indices the
//!   patterns select (never system ones), restore under the original names,
//!   wait until every shard has recovered, and always switch the setting
//!   back to what it was.

use crate::client::{Cluster, encode};
use crate::config;
use crate::snapshot::{self, Manifest, Snapshot, State};
use crate::snapshot_restore;
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising;
use envsync_plugin_sdk::{
    ByteSink, ByteSource, Error, param, param_bool, param_number, read_all, warn, write_all,
};
use envsync_plugin_sdk::{debug, info};
use serde_json::{Value, json};
use std::time::Duration;

/// The cluster setting switched off during a restore.
const AUTO_CREATE: &str = "action.auto_create_index";
/// Attempts at creating a snapshot whose create answered 504.
const CREATE_ATTEMPTS: u32 = 5;
/// The largest manifest artifact read.
const MANIFEST_LIMIT: usize = 1 << 20;
/// The parameter that allows deleting the live indices before a restore.
const DELETE_FIRST: &str = "delete-live-indices-first";
/// What to do when a cluster cannot restore beside the live indices.
pub const DELETE_FIRST_HINT: &str = "--param delete-live-indices-first=true restores the old way: \
     it deletes the live indices before restoring, so a failed restore leaves them missing";

/// Whether `mode=snapshot` (else `logical`, the default).
pub fn enabled() -> Result<bool, Error> {
    match param("mode").as_deref() {
        None | Some("logical") => Ok(false),
        Some("snapshot") => Ok(true),
        Some(other) => Err(Error::InvalidParam(format!(
            "parameter mode={other:?} must be logical or snapshot"
        ))),
    }
}

/// The error for a sanitising step in snapshot mode.
pub fn cannot_sanitise() -> Error {
    Error::InvalidParam(
        "this step sanitises, but a snapshot copies the indices as they are: sanitise with \
         mode=logical"
            .into(),
    )
}

/// A snapshot copies indices as they are: a sanitising step must stream.
fn refuse_sanitising() -> Result<(), Error> {
    match sanitising::plan() {
        Some(_) => Err(cannot_sanitise()),
        None => Ok(()),
    }
}

/// The wait before poll number `n` (0-based): 200 ms doubling to 5 s.
fn poll_delay(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.min(5)).min(5_000))
}

fn repository_param(fallback: Option<&str>) -> Result<String, Error> {
    let repo = match (param("repository"), fallback) {
        (Some(r), _) => r,
        (None, Some(f)) => f.to_string(),
        (None, None) => {
            return Err(Error::InvalidParam(
                "mode=snapshot needs the snapshot repository: --param repository=NAME".into(),
            ));
        }
    };
    if repo.starts_with('_')
        || repo.contains(['/', '\\', ' ', '"', '*', '?', '<', '>', '|', ',', '#'])
    {
        return Err(Error::InvalidParam(format!(
            "parameter repository={repo:?} is not a repository name"
        )));
    }
    Ok(repo)
}

/// Registers the repository when `repository-settings` is given and it is
/// missing or differs, else checks that it exists; then verifies it.
fn ensure_repository(cluster: Cluster, repo: &str) -> Result<(), Error> {
    let path = format!("/_snapshot/{}", encode(repo));
    let settings = match param("repository-settings") {
        None => None,
        Some(text) => {
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                Error::InvalidParam(format!("parameter repository-settings is not JSON: {e}"))
            })?;
            if !v.is_object() {
                return Err(Error::InvalidParam(
                    "parameter repository-settings must be a JSON object, e.g. \
                     {\"bucket\":\"backups\",\"base_path\":\"search\"}"
                        .into(),
                ));
            }
            Some(v)
        }
    };
    let answer = cluster.send("GET", &path, None, false)?;
    let existing = answer.ok().then(|| answer.body[repo].clone());
    if answer.status != 404 && !answer.ok() {
        return Err(cluster.failed("GET", &path, &answer));
    }
    match (settings, existing) {
        (Some(settings), existing) => {
            if existing
                .as_ref()
                .is_some_and(|e| snapshot::same_repository(e, &settings))
            {
                debug(format!("repository {repo} is registered as configured"));
            } else {
                info(format!(
                    "registering the S3 snapshot repository {repo} on the {} cluster",
                    cluster.role
                ));
                cluster.call(
                    "PUT",
                    &path,
                    Some(&json!({"type": "s3", "settings": settings})),
                )?;
            }
        }
        (None, Some(_)) => {}
        (None, None) => {
            return Err(Error::InvalidParam(format!(
                "the snapshot repository {repo} does not exist on the {} cluster: register it \
                 or pass --param repository-settings='{{\"bucket\":…,\"base_path\":…}}'",
                cluster.role
            )));
        }
    }
    cluster
        .call("POST", &format!("{path}/_verify"), None)
        .map_err(|e| e.context(format!("verifying the snapshot repository {repo}")))?;
    Ok(())
}

/// `GET /_snapshot/REPO/NAME`: the snapshot, or None on 404.
fn get_snapshot(cluster: Cluster, repo: &str, name: &str) -> Result<Option<Snapshot>, Error> {
    let path = format!("/_snapshot/{}/{}", encode(repo), encode(name));
    let answer = cluster.send("GET", &path, None, false)?;
    if answer.status == 404 {
        return Ok(None);
    }
    if !answer.ok() {
        return Err(cluster.failed("GET", &path, &answer));
    }
    Ok(snapshot::parse_snapshots(&answer.body)
        .into_iter()
        .find(|s| s.name == name))
}

fn list_snapshots(cluster: Cluster, repo: &str) -> Result<Vec<Snapshot>, Error> {
    let answer = cluster.call("GET", &format!("/_snapshot/{}/_all", encode(repo)), None)?;
    Ok(snapshot::parse_snapshots(&answer))
}

fn cluster_name(cluster: Cluster) -> Result<String, Error> {
    if let Some(name) = param("cluster-name") {
        return Ok(name);
    }
    let answer = cluster.call("GET", "/", None)?;
    answer["cluster_name"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| {
            Error::Other(
                "GET / on the source cluster names no cluster_name: pass --param cluster-name=NAME"
                    .into(),
            )
        })
}

/// Creates the snapshot, retrying answers of 504 (gateway timeout) with
/// backoff once `GET` shows that the snapshot was not created after all.
fn create(cluster: Cluster, repo: &str, name: &str, patterns: &[String]) -> Result<(), Error> {
    let path = format!(
        "/_snapshot/{}/{}?wait_for_completion=false",
        encode(repo),
        encode(name)
    );
    let body = json!({
        "indices": patterns.join(","),
        "include_global_state": false,
    })
    .to_string();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let answer = cluster.send("PUT", &path, Some(body.as_bytes()), false)?;
        if answer.ok() {
            return Ok(());
        }
        if answer.status != 504 {
            return Err(cluster.failed("PUT", &path, &answer));
        }
        if get_snapshot(cluster, repo, name)?.is_some() {
            info(format!(
                "creating snapshot {name} answered 504, but the snapshot exists: waiting for it"
            ));
            return Ok(());
        }
        if attempt >= CREATE_ATTEMPTS {
            return Err(cluster.failed("PUT", &path, &answer).context(format!(
                "snapshot {name} not created after {attempt} attempts"
            )));
        }
        let wait = Duration::from_millis(500 << (attempt - 1).min(5));
        warn(format!(
            "creating snapshot {name} answered 504 and it does not exist: retrying in {wait:?}"
        ));
        std::thread::sleep(wait);
    }
}

/// Polls the snapshot until it is finished.
fn wait_for_snapshot(cluster: Cluster, repo: &str, name: &str) -> Result<Snapshot, Error> {
    let mut n = 0;
    loop {
        let snap = get_snapshot(cluster, repo, name)?.ok_or_else(|| {
            Error::Other(format!(
                "snapshot {name} disappeared from repository {repo} while it was being made"
            ))
        })?;
        if snap.state.finished() {
            return Ok(snap);
        }
        std::thread::sleep(poll_delay(n));
        n += 1;
    }
}

pub fn backup(artifact: &ByteSink) -> Result<(), Error> {
    let cluster = Cluster::SOURCE;
    refuse_sanitising()?;
    let repo = repository_param(None)?;
    let patterns = config::read_patterns("source")?;
    let keep: usize = param_number("keep", 7)?;
    if keep == 0 {
        return Err(Error::InvalidParam(
            "parameter keep must be at least 1".into(),
        ));
    }
    ensure_repository(cluster, &repo)?;
    let cluster_name = cluster_name(cluster)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = snapshot::snapshot_name(&cluster_name, now);
    info(format!("creating snapshot {name} in repository {repo}"));
    create(cluster, &repo, &name, &patterns)?;
    let snap = wait_for_snapshot(cluster, &repo, &name)?;
    if snap.state != State::Success {
        let problems = if snap.problems.is_empty() {
            String::new()
        } else {
            format!(": {}", snap.problems)
        };
        return Err(Error::Other(format!(
            "snapshot {name} in repository {repo} ended {}{problems}",
            snap.state.name()
        )));
    }
    info(format!(
        "snapshot {name} succeeded ({} index(es))",
        snap.indices.len()
    ));
    // What a restore puts on the restored indices: their aliases now (the
    // snapshot holds them too, but restoring them would show them early).
    let aliases = match cluster.call("GET", "/_alias", None) {
        Ok(answer) => Some(snapshot_restore::recorded_aliases(&answer, &snap.indices)),
        Err(e) => {
            warn(format!(
                "the indices' aliases could not be read ({}); a restore of this backup keeps \
                 the target's aliases instead",
                e.message()
            ));
            None
        }
    };
    let manifest = Manifest {
        repository: repo.clone(),
        name: name.clone(),
        cluster: cluster_name.clone(),
        patterns,
        indices: snap.indices.clone(),
        state: snap.state.name().to_string(),
        start: snap.start.clone(),
        end: snap.end.clone(),
        aliases,
    };
    write_all(artifact, manifest.to_artifact().as_bytes())?;
    retention(cluster, &repo, &cluster_name, keep, &name);
    Ok(())
}

/// Deletes the successful envsync snapshots of this cluster beyond the
/// newest `keep`. Failures are warnings: the new snapshot is good.
fn retention(cluster: Cluster, repo: &str, cluster_name: &str, keep: usize, just_made: &str) {
    let all = match list_snapshots(cluster, repo) {
        Ok(all) => all,
        Err(e) => {
            warn(format!(
                "retention skipped: listing the snapshots failed: {}",
                e.message()
            ));
            return;
        }
    };
    for name in snapshot::to_delete(&all, cluster_name, keep, just_made) {
        let path = format!("/_snapshot/{}/{}", encode(repo), encode(&name));
        match cluster.call("DELETE", &path, None) {
            Ok(_) => info(format!("retention: deleted snapshot {name} (keep={keep})")),
            Err(e) => warn(format!(
                "retention: deleting snapshot {name} failed: {}",
                e.message()
            )),
        }
    }
}

/// The persistent value of `action.auto_create_index` (None when unset).
fn auto_create_index(cluster: Cluster) -> Result<Option<Value>, Error> {
    let v = cluster.call("GET", "/_cluster/settings?flat_settings=true", None)?;
    Ok(v["persistent"]
        .get(AUTO_CREATE)
        .filter(|v| !v.is_null())
        .cloned())
}

fn set_auto_create_index(cluster: Cluster, value: Value) -> Result<(), Error> {
    cluster
        .call(
            "PUT",
            "/_cluster/settings",
            Some(&json!({"persistent": {AUTO_CREATE: value}})),
        )
        .map(|_| ())
}

pub fn restore(artifact: &ByteSource) -> Result<(), Error> {
    let cluster = Cluster::TARGET;
    refuse_sanitising()?;
    let bytes = read_all(artifact, MANIFEST_LIMIT)?;
    if !snapshot::is_manifest(&bytes) {
        return Err(Error::BadArtifact(format!(
            "mode=snapshot restores {} artifacts (made by a backup with mode=snapshot); this \
             one is not: restore it without mode=snapshot",
            snapshot::FORMAT
        )));
    }
    let manifest = Manifest::parse(&bytes).map_err(Error::BadArtifact)?;
    artifact.verify()?;
    let repo = repository_param(Some(&manifest.repository))?;
    ensure_repository(cluster, &repo)?;
    let snap = match param("snapshot").as_deref() {
        Some("latest") => snapshot::newest_success(&list_snapshots(cluster, &repo)?)
            .cloned()
            .ok_or_else(|| {
                Error::Other(format!("repository {repo} holds no successful snapshot"))
            })?,
        named => {
            let name = named.unwrap_or(&manifest.name);
            get_snapshot(cluster, &repo, name)?.ok_or_else(|| {
                Error::Other(format!("repository {repo} holds no snapshot {name}"))
            })?
        }
    };
    if snap.state != State::Success {
        return Err(Error::Other(format!(
            "snapshot {} in repository {repo} is {}, not SUCCESS: not restored",
            snap.name,
            snap.state.name()
        )));
    }
    let patterns = match param("indices") {
        Some(list) => config::patterns(&list).map_err(Error::InvalidParam)?,
        None if !manifest.patterns.is_empty() => manifest.patterns.clone(),
        None => vec!["*".to_string()],
    };
    let indices = snapshot::select(&patterns, &snap.indices);
    if indices.is_empty() {
        return Err(Error::Other(format!(
            "snapshot {} holds no index that {} selects (it holds: {})",
            snap.name,
            patterns.join(","),
            snap.indices.join(",")
        )));
    }
    if !param_bool(DELETE_FIRST, false)? {
        return snapshot_restore::restore(cluster, &repo, &snap.name, &indices, &manifest)
            .map_err(|e| e.context(format!("restoring snapshot {} failed", snap.name)));
    }
    warn(format!(
        "{DELETE_FIRST}=true: the live indices are deleted before the restore; if it fails \
         they stay missing until a restore succeeds"
    ));
    let previous = auto_create_index(cluster)?;
    set_auto_create_index(cluster, Value::Bool(false))
        .map_err(|e| e.context(format!("switching {AUTO_CREATE} off")))?;
    info(format!("{AUTO_CREATE} switched off for the restore"));
    let result = restore_indices(cluster, &repo, &snap.name, &patterns, &indices);
    let back = previous.clone().unwrap_or(Value::Null);
    let reset = set_auto_create_index(cluster, back.clone()).map_err(|e| {
        e.context(format!(
            "setting {AUTO_CREATE} back to {back} failed: set it by hand"
        ))
    });
    match (result, reset) {
        (Ok(()), Ok(())) => {
            info(format!(
                "restored {} index(es) from snapshot {}; {AUTO_CREATE} set back to {back}",
                indices.len(),
                snap.name
            ));
            Ok(())
        }
        (Err(e), Ok(())) => Err(e.context(format!(
            "restoring snapshot {} failed ({AUTO_CREATE} set back to {back})",
            snap.name
        ))),
        (Ok(()), Err(r)) => Err(r),
        (Err(e), Err(r)) => Err(Error::Other(format!(
            "restoring snapshot {} failed: {}; also: {}",
            snap.name,
            e.message(),
            r.message()
        ))),
    }
}

/// Deletes the indices `patterns` select on the target, restores `indices`
/// and waits until they have recovered.
fn restore_indices(
    cluster: Cluster,
    repo: &str,
    name: &str,
    patterns: &[String],
    indices: &[String],
) -> Result<(), Error> {
    let listed = cluster.call(
        "GET",
        "/_cat/indices?format=json&h=index&expand_wildcards=all",
        None,
    )?;
    let existing: Vec<String> = listed
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["index"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for index in snapshot::select(patterns, &existing) {
        info(format!("deleting index {index} before the restore"));
        cluster.call("DELETE", &format!("/{}", encode(&index)), None)?;
    }
    let path = format!(
        "/_snapshot/{}/{}/_restore?wait_for_completion=false",
        encode(repo),
        encode(name)
    );
    cluster.call(
        "POST",
        &path,
        Some(&json!({
            "indices": indices.join(","),
            "include_global_state": false,
            "include_aliases": true,
        })),
    )?;
    info(format!(
        "restoring {} index(es) from snapshot {name}",
        indices.len()
    ));
    wait_for_recovery(cluster, indices)
}

/// Polls `GET /_recovery` until every shard of `indices` is DONE.
pub fn wait_for_recovery(cluster: Cluster, indices: &[String]) -> Result<(), Error> {
    let mut n = 0;
    loop {
        let recovery = cluster.call("GET", "/_recovery", None)?;
        let pending = pending_recoveries(&recovery, indices);
        if pending.is_empty() {
            return Ok(());
        }
        debug(format!(
            "waiting for the recovery of {}",
            pending.join(", ")
        ));
        std::thread::sleep(poll_delay(n));
        n += 1;
    }
}

/// The indices of `indices` whose shards have not all recovered (stage
/// DONE) in an answer of `GET /_recovery`; an index not listed yet is
/// pending.
pub fn pending_recoveries(recovery: &Value, indices: &[String]) -> Vec<String> {
    indices
        .iter()
        .filter(|index| {
            let shards = recovery[index.as_str()]["shards"].as_array();
            !shards.is_some_and(|s| {
                !s.is_empty()
                    && s.iter().all(|shard| {
                        shard["stage"]
                            .as_str()
                            .is_some_and(|st| st.eq_ignore_ascii_case("DONE"))
                    })
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_done_when_every_shard_is() {
        let idx = vec!["a".to_string(), "b".to_string()];
        let r = json!({
            "a": {"shards": [{"stage": "DONE"}, {"stage": "done"}]},
            "b": {"shards": [{"stage": "DONE"}, {"stage": "INDEX"}]},
        });
        assert_eq!(pending_recoveries(&r, &idx), ["b"]);
        assert_eq!(pending_recoveries(&json!({}), &idx), ["a", "b"]);
        let empty = json!({"a": {"shards": []}, "b": {"shards": [{"stage": "DONE"}]}});
        assert_eq!(pending_recoveries(&empty, &idx), ["a"]);
    }

    #[test]
    fn polls_back_off_to_five_seconds() {
        let all: Vec<u128> = (0..8).map(|n| poll_delay(n).as_millis()).collect();
        assert_eq!(all, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
