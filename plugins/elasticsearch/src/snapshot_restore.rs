//! Restoring a snapshot without touching the live indices: the cluster
//! restores the snapshot's indices under new names (`<base>-envsync-<stamp>`,
//! through the restore API's `rename_pattern`), and once every shard has
//! recovered one atomic `POST /_aliases` makes them live, exactly as a
//! logical restore does (`aliases::swap_actions`). Until then readers see the
//! old indices; on any failure the new indices are deleted and the old ones
//! keep serving.
//!
//! The snapshot's own aliases are not restored with the indices
//! (`include_aliases: false`): the cluster would put them on the new indices
//! at once, so readers of an alias would see half-recovered data before the
//! swap. The swap adds them instead, from the manifest (the source's aliases
//! when the snapshot was made) or, for manifests that did not record them,
//! from what the live holders carry now.

use crate::aliases::{self, Live, Restored};
use crate::bulk::preview;
use crate::client::{Cluster, encode};
use crate::snapshot::{self, Manifest};
use crate::snapshot_mode::wait_for_recovery;
use envsync_plugin_sdk::{Error, info, warn};
use serde_json::{Map, Value, json};

/// Restores `indices` of snapshot `name` under new names and swaps them in.
pub fn restore(
    cluster: Cluster,
    repo: &str,
    name: &str,
    indices: &[String],
    manifest: &Manifest,
) -> Result<(), Error> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let live_aliases = cluster.call("GET", "/_alias", None)?;
    let restored = plan(indices, stamp, manifest, &live_aliases)?;
    let new: Vec<String> = restored.iter().map(|r| r.new.clone()).collect();
    let path = format!(
        "/_snapshot/{}/{}/_restore?wait_for_completion=false",
        encode(repo),
        encode(name)
    );
    let body = json!({
        "indices": indices.join(","),
        "include_global_state": false,
        "include_aliases": false,
        "rename_pattern": snapshot::RENAME_PATTERN,
        "rename_replacement": snapshot::rename_replacement(stamp),
    });
    info(format!(
        "restoring {} index(es) from snapshot {name} under new names ({}); the live indices \
         keep serving until the swap",
        indices.len(),
        new.join(", ")
    ));
    let result = cluster
        .call("POST", &path, Some(&body))
        .and_then(|_| wait_for_recovery(cluster, &new))
        .and_then(|()| swap(cluster, &restored));
    if let Err(e) = result {
        delete_new(cluster, &new);
        return Err(e.context("the live indices were not touched"));
    }
    for r in &restored {
        info(format!("{} is live: {}", r.base, r.new));
    }
    Ok(())
}

/// What each index becomes: its base name, its new name, and the aliases
/// the swap gives it.
fn plan(
    indices: &[String],
    stamp: u64,
    manifest: &Manifest,
    live_aliases: &Value,
) -> Result<Vec<Restored>, Error> {
    let mut restored: Vec<Restored> = Vec::new();
    // One entry per index, in order: `restored[k]` comes from `indices[k]`.
    for index in indices {
        let base = aliases::base_name(index).to_string();
        if let Some(other) = restored.iter().position(|r| r.base == base) {
            return Err(Error::InvalidParam(format!(
                "the snapshot holds both {:?} and {index:?}, which would both become {base:?}: \
                 choose one with --param indices",
                indices[other]
            )));
        }
        let kept = match &manifest.aliases {
            Some(recorded) => recorded
                .get(index)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            None => aliases::held_by_live(live_aliases, &base),
        };
        restored.push(Restored {
            new: aliases::new_name(&base, stamp),
            base,
            aliases: kept,
        });
    }
    Ok(restored)
}

/// One atomic `POST /_aliases`: the base names and aliases move to the new
/// indices; concrete live indices of those names go in the same call.
fn swap(cluster: Cluster, restored: &[Restored]) -> Result<(), Error> {
    let live = Live::from_get_alias(&cluster.call("GET", "/_alias", None)?);
    let actions = aliases::swap_actions(restored, &live).map_err(Error::Other)?;
    let answer = cluster
        .send(
            "POST",
            "/_aliases",
            Some(json!({ "actions": actions }).to_string().as_bytes()),
            false,
        )
        .map_err(|e| e.context("the alias swap"))?;
    if !answer.ok() {
        return Err(cluster
            .failed("POST", "/_aliases", &answer)
            .context(format!(
                "the alias swap was refused; if this cluster cannot replace a concrete index \
                 in an alias swap (remove_index), {}",
                crate::snapshot_mode::DELETE_FIRST_HINT
            )));
    }
    if answer.body.get("acknowledged") != Some(&Value::Bool(true)) {
        return Err(Error::Other(format!(
            "the alias swap was not acknowledged: {}",
            preview(&answer.body)
        )));
    }
    Ok(())
}

/// Deletes the indices this restore created (best effort; 404 is fine).
fn delete_new(cluster: Cluster, new: &[String]) {
    for index in new {
        match cluster.send("DELETE", &format!("/{}", encode(index)), None, false) {
            Ok(a) if a.ok() || a.status == 404 => {}
            Ok(a) => warn(format!(
                "could not delete the restored index {index}: {}; delete it by hand",
                preview(&a.body)
            )),
            Err(e) => warn(format!(
                "could not delete the restored index {index}: {}; delete it by hand",
                e.message()
            )),
        }
    }
}

/// Index → its aliases, from `GET /LIST/_alias`, for the indices listed.
pub fn recorded_aliases(answer: &Value, indices: &[String]) -> Map<String, Value> {
    indices
        .iter()
        .map(|index| {
            let aliases = answer[index.as_str()]["aliases"].clone();
            let aliases = if aliases.is_object() {
                aliases
            } else {
                json!({})
            };
            (index.clone(), aliases)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(aliases: Option<Value>) -> Manifest {
        Manifest {
            repository: "r".into(),
            name: "n".into(),
            cluster: "c".into(),
            patterns: vec![],
            indices: vec![],
            state: "SUCCESS".into(),
            start: String::new(),
            end: String::new(),
            aliases: aliases.and_then(|a| a.as_object().cloned()),
        }
    }

    #[test]
    fn new_names_carry_the_stamp_and_aliases_come_from_the_manifest() {
        let m = manifest(Some(
            json!({"products": {"shop": {"is_write_index": true}}}),
        ));
        let live = json!({"products": {"aliases": {"old-alias": {}}}});
        let plan = plan(
            &["products".into(), "orders-envsync-5".into()],
            9,
            &m,
            &live,
        )
        .unwrap();
        assert_eq!(plan[0].base, "products");
        assert_eq!(plan[0].new, "products-envsync-9");
        assert_eq!(
            Value::Object(plan[0].aliases.clone()),
            json!({"shop": {"is_write_index": true}})
        );
        assert_eq!(plan[1].base, "orders");
        assert_eq!(plan[1].new, "orders-envsync-9");
        assert!(plan[1].aliases.is_empty());
    }

    #[test]
    fn older_manifests_keep_the_live_aliases_and_clashing_bases_are_refused() {
        let live = json!({"products": {"aliases": {"shop": {}}}});
        let plan = plan(&["products".into()], 1, &manifest(None), &live).unwrap();
        assert_eq!(Value::Object(plan[0].aliases.clone()), json!({"shop": {}}));
        let e = super::plan(
            &["a".into(), "a-envsync-3".into()],
            1,
            &manifest(None),
            &json!({}),
        )
        .unwrap_err();
        assert!(e.message().contains("choose one"), "{}", e.message());
    }

    #[test]
    fn recorded_aliases_list_every_index() {
        let answer = json!({"a": {"aliases": {"x": {}}}, "b": {"aliases": {}}, "c": {}});
        assert_eq!(
            Value::Object(recorded_aliases(
                &answer,
                &["a".into(), "b".into(), "c".into()]
            )),
            json!({"a": {"x": {}}, "b": {}, "c": {}})
        );
    }
}
