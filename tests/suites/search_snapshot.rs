//! Elasticsearch/OpenSearch snapshot mode (`--param mode=snapshot`) end to
//! end: `envsync-host` with the elasticsearch plugin against an HTTP double
//! of the snapshot API ([`SnapshotDouble`]: no server with a snapshot API
//! runs here, osmem-server has none) and a local folder store. The double
//! records every request; the tests assert on what the plugin asked for and
//! in which order.

use envsync_tests::host_cli::{Expect, Host, Step, exit};
use envsync_tests::snapshot_double::{Model, Recorded, Snap, SnapshotDouble};
use envsync_tests::store::{LocalStore, wait_for_next_second};
use serde_json::{Map, Value, json};

const DB: &str = "catalog";
const REPO: &str = "backups";
const INSTANCE: &str = "127.0.0.1";
const CLUSTER: &str = "prod-eu";
const MAGIC: &str = "{\"envsync\":\"search-snapshot\",\"version\":1}";

/// A cluster with a registered S3 repository, three indices (two with
/// aliases) and two system indices.
fn model() -> Model {
    let mut m = Model::default();
    m.repositories.insert(
        REPO.into(),
        json!({"type": "s3", "settings": {"bucket": "search", "base_path": "prod"}}),
    );
    m.indices = ["products", "customers", "orders", ".kibana_1", ".security"]
        .map(String::from)
        .into();
    m.aliases
        .insert("products".into(), object(json!({"shop": shop_alias()})));
    m.aliases
        .insert("customers".into(), object(json!({"people": {}})));
    m
}

/// The `shop` alias of `products`, with properties that must survive a restore.
fn shop_alias() -> Value {
    json!({"filter": {"term": {"public": true}}})
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn step(op: &str, double: &SnapshotDouble, store: &LocalStore) -> Step {
    Step::new("elasticsearch", op)
        .opt("--database", DB)
        .opt("--db-host", "127.0.0.1")
        .opt("--db-port", double.port)
        .opt("--store", store.path_arg())
        .param("mode", "snapshot")
        .param("repository", REPO)
}

fn backup(double: &SnapshotDouble, store: &LocalStore) -> Step {
    step("backup", double, store)
        .opt("--compression", "none")
        .param("indices", "products,customers")
}

/// Whether `name` is `prod-eu-<UTC %Y%m%dt%H%M%Sz>`.
fn envsync_name(name: &str) -> bool {
    name.strip_prefix(&format!("{CLUSTER}-"))
        .is_some_and(|stamp| {
            let b = stamp.as_bytes();
            b.len() == 16
                && b.iter().enumerate().all(|(i, c)| match i {
                    8 => *c == b't',
                    15 => *c == b'z',
                    _ => c.is_ascii_digit(),
                })
        })
}

/// The manifest line of the stored artifact `key`.
fn stored_manifest(store: &LocalStore, key: &str) -> Value {
    let text = std::fs::read_to_string(store.artifact_path(key)).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(MAGIC), "{text}");
    let v: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(lines.next(), None, "{text}");
    v["snapshot"].clone()
}

/// Position of the first request matching `f` (panics when none does).
#[track_caller]
fn position(requests: &[Recorded], what: &str, f: impl Fn(&Recorded) -> bool) -> usize {
    requests
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("no request {what} in {requests:#?}"))
}

/// The values `PUT /_cluster/settings` set `action.auto_create_index` to, in order.
fn auto_create_settings(double: &SnapshotDouble) -> Vec<Value> {
    double
        .requests_to("PUT", "/_cluster/settings")
        .iter()
        .map(|r| r.json()["persistent"]["action.auto_create_index"].clone())
        .collect()
}

#[test]
fn backup_creates_a_snapshot_waits_for_success_and_stores_its_manifest() {
    let host = Host::built();
    let double = SnapshotDouble::start(model()).unwrap();
    let store = LocalStore::new().unwrap();
    backup(&double, &store)
        .run(&host)
        .expect_ok("snapshot backup");

    let snaps = double.snapshots(REPO);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let (name, state) = &snaps[0];
    assert!(envsync_name(name), "snapshot name {name}");
    assert_eq!(state, "SUCCESS");

    let creates = double.requests_to("PUT", &format!("/_snapshot/{REPO}/{name}"));
    assert_eq!(creates.len(), 1);
    assert!(
        creates[0].target.contains("wait_for_completion=false"),
        "{creates:?}"
    );
    assert_eq!(
        creates[0].json(),
        json!({"indices": "products,customers", "include_global_state": false})
    );
    // Polled until SUCCESS (IN_PROGRESS first), the repository verified.
    let polls = double.requests_to("GET", &format!("/_snapshot/{REPO}/{name}"));
    assert!(polls.len() >= 2, "{polls:?}");
    assert_eq!(
        double
            .requests_to("POST", &format!("/_snapshot/{REPO}/_verify"))
            .len(),
        1
    );
    // An existing repository without repository-settings is not re-registered.
    assert!(
        double
            .requests_to("PUT", "/_snapshot/")
            .iter()
            .all(|r| r.path() != format!("/_snapshot/{REPO}"))
    );

    let key = store.pointer(INSTANCE, DB).expect("a pointer");
    store.verify_manifest(&key, "elasticsearch").unwrap();
    let m = stored_manifest(&store, &key);
    assert_eq!(m["repository"], REPO);
    assert_eq!(m["name"], name.as_str());
    assert_eq!(m["cluster"], CLUSTER);
    assert_eq!(m["state"], "SUCCESS");
    assert_eq!(m["indices"], json!(["products", "customers"]));
    // The aliases a restore gives the restored indices.
    assert_eq!(
        m["aliases"],
        json!({"products": {"shop": shop_alias()}, "customers": {"people": {}}})
    );
    assert_eq!(m["patterns"], json!(["products", "customers"]));
    assert!(m["start_time"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(m["end_time"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn repository_settings_register_a_missing_or_different_repository_once() {
    let host = Host::built();
    let mut m = model();
    m.repositories.clear();
    m.cluster_name = "Ignored".into();
    let double = SnapshotDouble::start(m).unwrap();
    let store = LocalStore::new().unwrap();
    let settings = r#"{"bucket":"search","base_path":"prod"}"#;
    let run = || {
        backup(&double, &store)
            .param("repository-settings", settings)
            .param("cluster-name", "Staging Copy")
            .run(&host)
            .expect_ok("snapshot backup with repository settings");
    };
    run();
    let puts = double.requests_to("PUT", &format!("/_snapshot/{REPO}"));
    let registers: Vec<&Recorded> = puts
        .iter()
        .filter(|r| r.path() == "/_snapshot/backups")
        .collect();
    assert_eq!(registers.len(), 1, "{puts:?}");
    assert_eq!(
        registers[0].json(),
        json!({"type": "s3", "settings": {"bucket": "search", "base_path": "prod"}})
    );
    assert!(
        double
            .requests_to("GET", "/")
            .iter()
            .all(|r| r.path() != "/"),
        "cluster-name given: no GET /"
    );
    let snaps = double.snapshots(REPO);
    assert!(snaps[0].0.starts_with("staging-copy-2"), "{snaps:?}");

    // Registered as configured: not registered again.
    wait_for_next_second();
    run();
    let registers = double
        .requests_to("PUT", "/_snapshot/backups")
        .into_iter()
        .filter(|r| r.path() == "/_snapshot/backups")
        .count();
    assert_eq!(registers, 1);
    assert_eq!(double.snapshots(REPO).len(), 2);

    // Registered with other settings: registered again with these.
    let mut m = model();
    m.repositories.insert(
        REPO.into(),
        json!({"type": "s3", "settings": {"bucket": "old"}}),
    );
    let changed = SnapshotDouble::start(m).unwrap();
    wait_for_next_second();
    backup(&changed, &store)
        .param("repository-settings", settings)
        .run(&host)
        .expect_ok("snapshot backup re-registering the repository");
    let registers: Vec<Value> = changed
        .requests_to("PUT", "/_snapshot/backups")
        .iter()
        .filter(|r| r.path() == "/_snapshot/backups")
        .map(Recorded::json)
        .collect();
    assert_eq!(
        registers,
        [json!({"type": "s3", "settings": {"bucket": "search", "base_path": "prod"}})]
    );

    // Without settings, a missing repository is an error naming it.
    let other = SnapshotDouble::start(Model::default()).unwrap();
    backup(&other, &store).run(&host).expect_fail(
        &[exit::USAGE],
        &["repository backups does not exist", "repository-settings"],
        "missing repository",
    );
}

#[test]
fn a_create_answered_504_is_retried_and_makes_exactly_one_snapshot() {
    let host = Host::built();
    let store = LocalStore::new().unwrap();

    // The 504 did not create it: created again after a check.
    let mut m = model();
    m.create_504s = 1;
    let double = SnapshotDouble::start(m).unwrap();
    backup(&double, &store)
        .run(&host)
        .expect_ok("backup after a 504");
    let snaps = double.snapshots(REPO);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0].1, "SUCCESS");
    let name = &snaps[0].0;
    let creates = double.requests_to("PUT", &format!("/_snapshot/{REPO}/{name}"));
    assert_eq!(
        creates.iter().map(|r| r.status).collect::<Vec<_>>(),
        [504, 200]
    );
    let requests = double.requests();
    let first = position(&requests, "504 create", |r| r.status == 504);
    let check = position(&requests, "check after the 504", |r| {
        r.method == "GET" && r.path() == format!("/_snapshot/{REPO}/{name}")
    });
    assert!(first < check, "checked after the 504");

    // The 504 created it anyway: not created twice.
    wait_for_next_second();
    let mut m = model();
    m.create_504s = 1;
    m.created_anyway = true;
    let double = SnapshotDouble::start(m).unwrap();
    backup(&double, &store)
        .run(&host)
        .expect_ok("backup after a 504 that created the snapshot");
    let snaps = double.snapshots(REPO);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0].1, "SUCCESS");
    let creates = double.requests_to("PUT", &format!("/_snapshot/{REPO}/{}", snaps[0].0));
    assert_eq!(creates.iter().map(|r| r.status).collect::<Vec<_>>(), [504]);
    assert_eq!(
        store
            .pointer(INSTANCE, DB)
            .map(|k| stored_manifest(&store, &k)["name"].clone()),
        Some(json!(snaps[0].0))
    );
}

#[test]
fn a_partial_snapshot_fails_the_step_and_leaves_latest_unchanged() {
    let host = Host::built();
    let double = SnapshotDouble::start(model()).unwrap();
    let store = LocalStore::new().unwrap();
    backup(&double, &store).run(&host).expect_ok("first backup");
    let before = store.pointer(INSTANCE, DB).expect("a pointer");
    let artifacts = store.artifact_keys("ndjson");

    wait_for_next_second();
    double.with(|m| {
        m.next_states = vec!["IN_PROGRESS".into(), "IN_PROGRESS".into(), "PARTIAL".into()];
        m.next_reason = Some("1 shard failed".into());
        m.next_failures =
            json!([{"index": "customers", "shard_id": 0, "reason": "disk full on node-2"}]);
    });
    backup(&double, &store).run(&host).expect_fail(
        &[exit::STEP_FAILED],
        &[
            "PARTIAL",
            "customers[0]: disk full on node-2",
            "1 shard failed",
        ],
        "partial snapshot",
    );
    assert_eq!(
        store.pointer(INSTANCE, DB),
        Some(before),
        "pointer unchanged"
    );
    assert_eq!(store.artifact_keys("ndjson"), artifacts, "no new artifact");
    assert!(
        double.requests_to("DELETE", "/_snapshot").is_empty(),
        "no retention after a failed snapshot"
    );

    // FAILED too.
    wait_for_next_second();
    double.with(|m| {
        m.next_states = vec!["FAILED".into()];
        m.next_reason = Some("repository is read-only".into());
        m.next_failures = json!([]);
    });
    backup(&double, &store).run(&host).expect_fail(
        &[exit::STEP_FAILED],
        &["FAILED", "repository is read-only"],
        "failed snapshot",
    );
    assert_eq!(store.artifact_keys("ndjson"), artifacts);
}

#[test]
fn retention_deletes_only_the_oldest_successful_envsync_snapshots() {
    let host = Host::built();
    let mut m = model();
    m.snapshots = vec![
        Snap::existing(REPO, "prod-eu-20261101t000000z", "SUCCESS", 1000),
        Snap::existing(REPO, "prod-eu-20261102t000000z", "SUCCESS", 2000),
        Snap::existing(REPO, "prod-eu-20261103t000000z", "PARTIAL", 3000),
        Snap::existing(REPO, "prod-eu-20261104t000000z", "SUCCESS", 4000),
        Snap::existing(REPO, "nightly-slm-2026.11.01", "SUCCESS", 500),
        Snap::existing(REPO, "prod-us-20261101t000000z", "SUCCESS", 600),
    ];
    let double = SnapshotDouble::start(m).unwrap();
    let store = LocalStore::new().unwrap();
    backup(&double, &store)
        .param("keep", 2)
        .run(&host)
        .expect_ok("backup with keep=2");
    let deleted: Vec<String> = double
        .requests_to("DELETE", "/_snapshot/")
        .iter()
        .map(|r| r.path().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        deleted,
        ["prod-eu-20261102t000000z", "prod-eu-20261101t000000z"]
    );
    let left: Vec<String> = double.snapshots(REPO).into_iter().map(|s| s.0).collect();
    assert_eq!(left.len(), 5, "{left:?}");
    for kept in [
        "prod-eu-20261103t000000z",
        "prod-eu-20261104t000000z",
        "nightly-slm-2026.11.01",
        "prod-us-20261101t000000z",
    ] {
        assert!(left.iter().any(|n| n == kept), "{kept} kept: {left:?}");
    }
    assert!(envsync_name(&left[4]), "the new one kept: {left:?}");
    // Listing came after the snapshot succeeded.
    let requests = double.requests();
    let list = position(&requests, "listing", |r| {
        r.path() == format!("/_snapshot/{REPO}/_all")
    });
    let delete = position(&requests, "delete", |r| r.method == "DELETE");
    assert!(list < delete);
}

/// Backs up every index (`*`) and returns the snapshot's name.
fn backup_all(host: &Host, double: &SnapshotDouble, store: &LocalStore) -> String {
    step("backup", double, store)
        .opt("--compression", "none")
        .param("indices", "*")
        .run(host)
        .expect_ok("snapshot backup of every index");
    let key = store.pointer(INSTANCE, DB).unwrap();
    let m = stored_manifest(store, &key);
    assert_eq!(m["indices"], json!(["products", "customers", "orders"]));
    m["name"].as_str().unwrap().to_string()
}

#[test]
fn delete_live_indices_first_switches_auto_create_off_deletes_restores_and_switches_it_back() {
    let host = Host::built();
    let mut m = model();
    m.persistent
        .insert("action.auto_create_index".into(), json!("+logs-*,-*"));
    m.recovery_polls = 3;
    let double = SnapshotDouble::start(m).unwrap();
    let store = LocalStore::new().unwrap();
    let name = backup_all(&host, &double, &store);
    let start = double.requests().len();

    let out = step("restore", &double, &store)
        .param("indices", "*,-orders")
        .param("delete-live-indices-first", "true")
        .run(&host);
    out.expect_ok("snapshot restore deleting the live indices first");
    assert!(
        out.stderr.contains("stay missing until a restore succeeds"),
        "the risk is not named\n{out}"
    );
    let requests: Vec<Recorded> = double.requests().split_off(start);
    let is = |method: &'static str, path: String| {
        move |r: &Recorded| r.method == method && r.path() == path
    };

    assert_eq!(
        auto_create_settings(&double),
        [json!(false), json!("+logs-*,-*")],
        "switched off, then back to the previous value"
    );
    let off = position(
        &requests,
        "switch off",
        is("PUT", "/_cluster/settings".into()),
    );
    let del_products = position(
        &requests,
        "DELETE /products",
        is("DELETE", "/products".into()),
    );
    let del_customers = position(
        &requests,
        "DELETE /customers",
        is("DELETE", "/customers".into()),
    );
    let restore = position(
        &requests,
        "_restore",
        is("POST", format!("/_snapshot/{REPO}/{name}/_restore")),
    );
    assert!(off < del_products && off < del_customers);
    assert!(del_products < restore && del_customers < restore);
    let deleted: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(Recorded::path)
        .collect();
    assert_eq!(
        deleted,
        ["/products", "/customers"],
        "only matching, non-system indices"
    );
    assert!(
        requests[restore]
            .target
            .contains("wait_for_completion=false")
    );
    assert_eq!(
        requests[restore].json(),
        json!({"indices": "products,customers", "include_global_state": false, "include_aliases": true})
    );
    // Waited until every shard was DONE: three answers in stage INDEX, then DONE.
    let recoveries: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path() == "/_recovery")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(recoveries.len(), 4, "{requests:#?}");
    assert!(recoveries[0] > restore);
    let back = requests
        .iter()
        .rposition(|r| r.method == "PUT" && r.path() == "/_cluster/settings")
        .unwrap();
    assert!(
        back > *recoveries.last().unwrap(),
        "set back after the recovery finished"
    );
    double.with(|m| {
        assert_eq!(
            m.persistent.get("action.auto_create_index"),
            Some(&json!("+logs-*,-*"))
        );
        for index in ["products", "customers", "orders", ".kibana_1", ".security"] {
            assert!(
                m.indices.iter().any(|i| i == index),
                "{index}: {:?}",
                m.indices
            );
        }
    });
}

#[test]
fn with_delete_live_indices_first_a_failed_restore_still_switches_auto_create_index_back() {
    let host = Host::built();
    let double = SnapshotDouble::start(model()).unwrap();
    let store = LocalStore::new().unwrap();
    let name = backup_all(&host, &double, &store);
    let restore_path = format!("/_snapshot/{REPO}/{name}/_restore");
    double.fail_next(
        "POST",
        &restore_path,
        500,
        json!({"error": {"type": "snapshot_restore_exception", "reason": "disk watermark exceeded"}}),
    );
    let delete_first =
        || step("restore", &double, &store).param("delete-live-indices-first", "true");
    delete_first().run(&host).expect_fail(
        &[exit::STEP_FAILED],
        &[
            "500",
            "disk watermark exceeded",
            "action.auto_create_index set back to null",
        ],
        "restore answered 500",
    );
    // Unset before: switched off, then removed again (null).
    assert_eq!(auto_create_settings(&double), [json!(false), Value::Null]);
    double.with(|m| assert_eq!(m.persistent, Map::new()));

    // Both the restore and switching the setting back fail: both reported.
    double.fail_next(
        "POST",
        &restore_path,
        500,
        json!({"error": "restore broke"}),
    );
    double.fail_later(
        "PUT",
        "/_cluster/settings",
        1,
        503,
        json!({"error": "settings broke"}),
    );
    delete_first().run(&host).expect_fail(
        &[exit::STEP_FAILED],
        &["restore broke", "settings broke", "set it by hand"],
        "restore and reset both fail",
    );
}

/// The cluster's indices without system ones, sorted.
fn user_indices(double: &SnapshotDouble) -> Vec<String> {
    let mut all: Vec<String> = double.with(|m| m.indices.clone());
    all.retain(|i| !i.starts_with('.'));
    all.sort();
    all
}

#[test]
fn a_restore_loads_under_new_names_and_swaps_aliases_in_one_call() {
    let host = Host::built();
    let double = SnapshotDouble::start(model()).unwrap();
    let store = LocalStore::new().unwrap();
    let name = backup_all(&host, &double, &store);
    // The target changed since the backup: shop now points elsewhere too.
    double.with(|m| {
        m.indices.push("legacy".into());
        m.aliases
            .insert("legacy".into(), object(json!({"shop": {}})));
    });

    for round in 1..=2 {
        let start = double.requests().len();
        step("restore", &double, &store)
            .param("indices", "*,-orders")
            .run(&host)
            .expect_ok(&format!("snapshot restore {round}"));
        let requests: Vec<Recorded> = double.requests().split_off(start);
        assert!(
            requests.iter().all(|r| r.method != "DELETE"),
            "round {round}: a live index was deleted: {requests:#?}"
        );
        assert!(
            auto_create_settings(&double).is_empty(),
            "the cluster setting was touched"
        );
        let restore = position(&requests, "_restore", |r| {
            r.path() == format!("/_snapshot/{REPO}/{name}/_restore")
        });
        let body = requests[restore].json();
        assert_eq!(body["indices"], "products,customers");
        assert_eq!(body["include_aliases"], false);
        let stamp = body["rename_replacement"]
            .as_str()
            .and_then(|r| r.strip_prefix("$1-envsync-"))
            .unwrap_or_else(|| panic!("rename_replacement: {body}"))
            .to_string();
        let (products, customers) = (
            format!("products-envsync-{stamp}"),
            format!("customers-envsync-{stamp}"),
        );
        // The swap is one call, after the recovery of the new indices.
        let swaps: Vec<usize> = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.method == "POST" && r.path() == "/_aliases")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(swaps.len(), 1, "{requests:#?}");
        let last_recovery = requests
            .iter()
            .rposition(|r| r.path() == "/_recovery")
            .unwrap();
        assert!(restore < last_recovery && last_recovery < swaps[0]);

        assert_eq!(
            user_indices(&double),
            [customers.as_str(), "legacy", "orders", products.as_str()],
            "round {round}: the old (or earlier restored) indices went in the swap"
        );
        double.with(|m| {
            assert_eq!(m.holders("products"), [products.as_str()]);
            assert_eq!(m.holders("customers"), [customers.as_str()]);
            assert_eq!(m.holders("people"), [customers.as_str()]);
            // The backup's alias, with its filter, moved off everything else.
            assert_eq!(m.holders("shop"), [products.as_str()]);
            assert_eq!(m.aliases[&products]["shop"], shop_alias());
        });
    }
}

#[test]
fn a_failed_restore_leaves_the_old_indices_serving() {
    let host = Host::built();
    let double = SnapshotDouble::start(model()).unwrap();
    let store = LocalStore::new().unwrap();
    let name = backup_all(&host, &double, &store);
    let before = (user_indices(&double), double.with(|m| m.aliases.clone()));
    let unchanged = |what: &str| {
        assert_eq!(
            (user_indices(&double), double.with(|m| m.aliases.clone())),
            before,
            "{what}: the target changed"
        );
        let deleted: Vec<String> = double
            .requests_to("DELETE", "/")
            .iter()
            .map(|r| r.path().to_string())
            .collect();
        assert!(
            deleted.iter().all(|p| p.contains("-envsync-")),
            "{what}: a live index was deleted: {deleted:?}"
        );
    };

    // The cluster refuses the restore.
    double.fail_next(
        "POST",
        &format!("/_snapshot/{REPO}/{name}/_restore"),
        500,
        json!({"error": {"type": "snapshot_restore_exception", "reason": "disk watermark exceeded"}}),
    );
    step("restore", &double, &store).run(&host).expect_fail(
        &[exit::STEP_FAILED],
        &["disk watermark exceeded", "live indices were not touched"],
        "restore refused",
    );
    unchanged("restore refused");

    // The restore ran, but the swap is refused: the new indices are deleted.
    double.fail_next(
        "POST",
        "/_aliases",
        400,
        json!({"error": {"type": "illegal_argument_exception", "reason": "swap refused"}}),
    );
    step("restore", &double, &store).run(&host).expect_fail(
        &[exit::STEP_FAILED],
        &[
            "swap refused",
            "live indices were not touched",
            "delete-live-indices-first=true",
        ],
        "swap refused",
    );
    // Also: the restored indices were deleted again (none is left over).
    unchanged("swap refused");
}

#[test]
fn a_sanitising_step_refuses_snapshot_mode() {
    let host = Host::built();
    let double = SnapshotDouble::start(model()).unwrap();
    let store = LocalStore::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[documents.customers]\n\"email\" = \"fake_email\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("salt.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let config = dir.path().join("env.toml");
    std::fs::write(
        &config,
        format!(
            "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n\n\
             [[task]]\nname = \"search\"\nplugin = \"elasticsearch\"\n\
             params = {{ indices = \"customers\", mode = \"snapshot\", repository = \"{REPO}\" }}\n\
             [task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"rules.toml\"\n\
             salt_file = \"salt.key\"\nallowed_email_domains = [\"example.com\"]\n\
             [task.database]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{DB}\"\n\
             [[task.step]]\nop = \"backup\"\n",
            store.path_arg(),
            double.port
        ),
    )
    .unwrap();
    host.run(&[
        "run",
        "--config",
        &config.display().to_string(),
        "--task",
        "search",
    ])
    .expect_fail(
        &[exit::USAGE],
        &["sanitises", "mode=logical"],
        "sanitised snapshot backup",
    );
    assert!(
        double.requests_to("PUT", "/_snapshot/").is_empty(),
        "no snapshot made"
    );
    assert!(store.pointer(INSTANCE, DB).is_none());
}
