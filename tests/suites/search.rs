//! Elasticsearch/OpenSearch end to end: `envsync-host` with the
//! elasticsearch plugin against throwaway osmem-server instances (an
//! in-memory OpenSearch-compatible server) and a local folder store.
//!
//! The sample: three indices with explicit mappings (keyword, text, dates,
//! objects, nested, a `dynamic: strict` one), aliases, 11,000 documents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use envsync_tests::host_cli::{Expect, Host, Step, exit};
use envsync_tests::search::SearchServer;
use envsync_tests::store::LocalStore;
use serde_json::{Value, json};

/// The store key's database name (the indices come from `--param indices`).
const DB: &str = "catalog";
const INDICES: &str = "products,customers,orders";
const INSTANCE: &str = "127.0.0.1";

/// Index → (mapping, aliases, number of documents).
fn sample_indices() -> Vec<(&'static str, Value, Value, usize)> {
    vec![
        (
            "products",
            json!({"properties": {
                "sku": {"type": "keyword"},
                "name": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
                "price": {"type": "float"},
                "created": {"type": "date"},
                "tags": {"type": "keyword"},
                "details": {"properties": {"color": {"type": "keyword"}, "size": {"type": "integer"}}},
                "variants": {"type": "nested", "properties": {"sku": {"type": "keyword"}, "stock": {"type": "integer"}}},
            }}),
            json!({"shop": {}}),
            6000,
        ),
        (
            "customers",
            json!({"properties": {
                "email": {"type": "keyword"},
                "name": {"type": "text"},
                "joined": {"type": "date", "format": "yyyy-MM-dd"},
                "address": {"properties": {"street": {"type": "text"}, "city": {"type": "keyword"}}},
            }}),
            json!({"people": {}, "crm": {}}),
            4500,
        ),
        (
            "orders",
            json!({"dynamic": "strict", "properties": {
                "customer": {"type": "keyword"},
                "total": {"type": "double"},
                "placed": {"type": "date"},
                "lines": {"type": "nested", "properties": {"sku": {"type": "keyword"}, "qty": {"type": "integer"}}},
            }}),
            json!({}),
            500,
        ),
    ]
}

const COLORS: [&str; 3] = ["red", "green", "blue"];
const CITIES: [&str; 2] = ["Leeds", "York"];

fn sample_doc(index: &str, i: usize) -> Value {
    match index {
        "products" => json!({
            "sku": format!("SKU-{i:05}"),
            "name": format!("Product number {i} \"quoted\" ünïcode"),
            "price": (i % 1000) as f64 / 4.0,
            "created": format!("2026-{:02}-{:02}T10:00:00Z", i % 12 + 1, i % 28 + 1),
            "tags": [format!("t{}", i % 7), "all"],
            "details": {"color": COLORS[i % 3], "size": i % 50},
            "variants": [{"sku": format!("V-{i}-a"), "stock": i % 9}, {"sku": format!("V-{i}-b"), "stock": 1}],
        }),
        "customers" => json!({
            "email": format!("person{i}@example.org"),
            "name": format!("Person {i}"),
            "joined": format!("2025-{:02}-{:02}", i % 12 + 1, i % 28 + 1),
            "address": {"street": format!("{i} High Street"), "city": CITIES[i % 2]},
        }),
        _ => json!({
            "customer": format!("c{}", i % 300),
            "total": i as f64 * 1.5,
            "placed": "2026-03-04T05:06:07Z",
            "lines": [{"sku": format!("SKU-{:05}", i % 6000), "qty": i % 4 + 1}],
        }),
    }
}

/// Creates the sample indices, aliases and documents on `server`.
fn load_sample(server: &SearchServer) {
    for (index, mappings, aliases, n) in sample_indices() {
        server
            .put(
                &format!("/{index}"),
                &json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                        "mappings": mappings, "aliases": aliases}),
            )
            .unwrap();
        let docs: Vec<(String, Value)> = (0..n)
            .map(|i| (format!("{index}-{i}"), sample_doc(index, i)))
            .collect();
        server.bulk_load(index, &docs).unwrap();
    }
}

/// The concrete index `name` (an index or alias) resolves to.
fn concrete(server: &SearchServer, name: &str) -> String {
    let v = server.get(&format!("/{name}/_mapping")).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 1, "{name} resolves to one index: {v}");
    keys[0].clone()
}

/// Mapping of `name` (whatever concrete index it resolves to).
fn mapping(server: &SearchServer, name: &str) -> Value {
    let v = server.get(&format!("/{name}/_mapping")).unwrap();
    v.as_object().unwrap().values().next().unwrap()["mappings"].clone()
}

/// Alias names of the concrete index `index`.
fn aliases_of(server: &SearchServer, index: &str) -> Vec<String> {
    let v = server.get(&format!("/{index}/_alias")).unwrap();
    let mut names: Vec<String> = v[index]["aliases"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn step(op: &str, server: &SearchServer) -> Step {
    Step::new("elasticsearch", op)
        .opt("--database", DB)
        .opt("--db-host", "127.0.0.1")
        .opt("--db-port", server.port)
}

/// Checks that `target` serves the sample exactly as `source` does: every
/// document, mapping and alias, the original names now aliases of new
/// indices.
#[track_caller]
fn assert_same_sample(source: &SearchServer, target: &SearchServer) {
    for (index, _, aliases, n) in sample_indices() {
        let docs = target.all_docs(index).unwrap();
        assert_eq!(docs.len(), n, "{index}: document count");
        assert_eq!(docs, source.all_docs(index).unwrap(), "{index}: documents");
        assert_eq!(
            mapping(target, index),
            mapping(source, index),
            "{index}: mapping"
        );
        let live = concrete(target, index);
        assert!(
            live.starts_with(&format!("{index}-envsync-")),
            "{index} → {live}"
        );
        let mut expected: Vec<String> = aliases.as_object().unwrap().keys().cloned().collect();
        expected.push(index.to_string());
        expected.sort();
        assert_eq!(aliases_of(target, &live), expected, "{index}: aliases");
    }
}

/// The envsync-made indices of `server`.
fn envsync_indices(server: &SearchServer) -> Vec<String> {
    let v = server.get("/_alias").unwrap();
    v.as_object()
        .unwrap()
        .keys()
        .filter(|k| k.contains("-envsync-"))
        .cloned()
        .collect()
}

/// Backs the sample up (uncompressed, so tests can read the artifact);
/// returns the key.
fn backup(host: &Host, server: &SearchServer, store: &LocalStore) -> String {
    step("backup", server)
        .opt("--store", store.path_arg())
        .opt("--compression", "none")
        .param("indices", INDICES)
        .run(host)
        .expect_ok("backup");
    store
        .pointer(INSTANCE, DB)
        .expect("a pointer after the backup")
}

#[test]
fn backup_restore_keeps_documents_mappings_and_aliases_with_readers_on_the_alias() {
    let host = Host::built();
    let a = SearchServer::start().unwrap();
    let b = SearchServer::start().unwrap();
    let store = LocalStore::new().unwrap();
    load_sample(&a);
    let key = backup(&host, &a, &store);
    store.verify_manifest(&key, "elasticsearch").unwrap();
    let text = std::fs::read_to_string(store.artifact_path(&key)).unwrap();
    assert!(text.starts_with("{\"envsync\":\"search-ndjson\",\"version\":1}\n"));
    assert_eq!(
        text.lines().count(),
        1 + 3 + 11_000 + 1,
        "format, headers, documents, end"
    );

    // Into an empty cluster.
    step("restore", &b)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("restore into an empty cluster");
    assert_same_sample(&a, &b);

    // Into the source cluster itself, with readers on an alias and on an
    // index name that becomes an alias: never an error, never empty.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let port = a.port;
    let readers: Vec<_> = [("shop", 6000u64), ("customers", 4500)]
        .into_iter()
        .map(|(name, n)| {
            let (stop, reads) = (stop.clone(), reads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) =
                        envsync_tests::http::request(port, "GET", &format!("/{name}/_count"), None)
                            .unwrap();
                    assert_eq!(status, 200, "reading {name} during the restore: {body}");
                    let v: Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(v["count"], n, "reading {name} during the restore: {body}");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let restore = step("restore", &a)
        .opt("--store", store.path_arg())
        .run(&host);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw an error or an empty result");
    }
    restore.expect_ok("restore into the source cluster");
    assert!(reads.load(Ordering::Relaxed) > 10, "the readers ran");
    assert_same_sample(&b, &a);

    // A second restore replaces the first one's indices.
    let first = envsync_indices(&b);
    step("restore", &b)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("second restore");
    assert_same_sample(&a, &b);
    let second = envsync_indices(&b);
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(
        first.iter().all(|i| !second.contains(i)),
        "old indices deleted: {first:?} {second:?}"
    );
}

#[test]
fn copy_between_two_clusters() {
    let host = Host::built();
    let a = SearchServer::start().unwrap();
    let b = SearchServer::start().unwrap();
    load_sample(&a);
    Step::new("elasticsearch", "copy")
        .opt("--source-database", DB)
        .opt("--source-host", "127.0.0.1")
        .opt("--source-port", a.port)
        .opt("--database", DB)
        .opt("--db-host", "127.0.0.1")
        .opt("--db-port", b.port)
        .param("indices", INDICES)
        .run(&host)
        .expect_ok("copy");
    assert_same_sample(&a, &b);
}

#[test]
fn refused_bulk_items_fail_the_restore_and_leave_the_target_intact() {
    let host = Host::built();
    let a = SearchServer::start().unwrap();
    let store = LocalStore::new().unwrap();
    load_sample(&a);
    let key = backup(&host, &a, &store);
    let before = a.get("/_alias").unwrap();

    // `orders` is `dynamic: strict`: documents with a field its mapping
    // lacks are refused item by item in a 200 answer.
    let text = std::fs::read_to_string(store.artifact_path(&key)).unwrap();
    let mut doctored = String::new();
    for line in text.lines() {
        if line.starts_with("{\"_index\":\"orders\",\"_id\":\"orders-1") {
            let mut v: Value = serde_json::from_str(line).unwrap();
            v["_source"]["coupon"] = json!("FREE");
            doctored.push_str(&v.to_string());
        } else {
            doctored.push_str(line);
        }
        doctored.push('\n');
    }
    let bad_key = format!("{INSTANCE}/2001-01-01T000000Z-{DB}.ndjson");
    store
        .put_artifact(&bad_key, doctored.as_bytes(), &key)
        .unwrap();

    step("restore", &a)
        .opt("--store", store.path_arg())
        .opt("--artifact", &bad_key)
        .run(&host)
        .expect_fail(
            &[exit::STEP_FAILED],
            &[
                "document(s) were refused",
                "/orders-1: 400 strict_dynamic_mapping_exception",
                "strict_dynamic_mapping_exception",
                "target left unchanged",
            ],
            "restore with refused documents",
        );
    assert_eq!(
        a.get("/_alias").unwrap(),
        before,
        "aliases and indices unchanged"
    );
    assert!(envsync_indices(&a).is_empty(), "new indices deleted");
    for (index, _, _, n) in sample_indices() {
        assert_eq!(a.count(index).unwrap(), n as u64, "{index} intact");
    }
}

#[test]
fn a_cut_off_artifact_is_refused_before_anything_goes_live() {
    let host = Host::built();
    let a = SearchServer::start().unwrap();
    let store = LocalStore::new().unwrap();
    load_sample(&a);
    let key = backup(&host, &a, &store);
    let before = a.get("/_alias").unwrap();
    let text = std::fs::read_to_string(store.artifact_path(&key)).unwrap();
    // Drop the end line: a whole number of lines, but not the whole dump.
    let cut: String = text.lines().take(5000).map(|l| format!("{l}\n")).collect();
    let bad_key = format!("{INSTANCE}/2001-01-02T000000Z-{DB}.ndjson");
    store.put_artifact(&bad_key, cut.as_bytes(), &key).unwrap();
    step("restore", &a)
        .opt("--store", store.path_arg())
        .opt("--artifact", &bad_key)
        .run(&host)
        .expect_fail(
            &[exit::ARTIFACT_REJECTED],
            &["cut off"],
            "restore of a cut-off artifact",
        );
    assert_eq!(a.get("/_alias").unwrap(), before);
    assert!(envsync_indices(&a).is_empty());
}

#[test]
fn a_pattern_as_database_name_is_refused() {
    let host = Host::built();
    let a = SearchServer::start().unwrap();
    let store = LocalStore::new().unwrap();
    a.put("/logs-1", &json!({})).unwrap();
    Step::new("elasticsearch", "backup")
        .opt("--database", "logs-*")
        .opt("--db-host", "127.0.0.1")
        .opt("--db-port", a.port)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_fail(&[exit::USAGE], &["--param indices"], "pattern as database");
}

/// Rules masking `customers`' personal fields, a salt, and a config at
/// `dir/NAME.toml` whose task `search` runs `op` with them over
/// `customers,orders`; `connections` holds the `[task.source]` /
/// `[task.database]` tables.
fn sanitising_task(
    dir: &Path,
    store: &LocalStore,
    name: &str,
    connections: &str,
    op: &str,
) -> PathBuf {
    std::fs::write(
        dir.join("rules.toml"),
        "[documents.customers]\n\"email\" = \"fake_email\"\n\"name\" = \"fake_name\"\n\
         \"address.street\" = \"fake_address\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("salt.key"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n\n\
             [[task]]\nname = \"search\"\nplugin = \"elasticsearch\"\n\
             params = {{ indices = \"customers,orders\" }}\n\
             [task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"rules.toml\"\n\
             salt_file = \"salt.key\"\nallowed_email_domains = [\"example.com\"]\n\
             {connections}\
             [[task.step]]\nop = \"{op}\"\n{from}",
            store.path_arg(),
            // A restore reads this environment's own store.
            from = if op == "restore" {
                "from = \"own\"\n"
            } else {
                ""
            },
        ),
    )
    .unwrap();
    config
}

#[test]
fn sanitised_copy_masks_documents_through_the_sanitiser() {
    let host = Host::built();
    let a = SearchServer::start().unwrap();
    let b = SearchServer::start().unwrap();
    load_sample(&a);
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new().unwrap();
    let connections = format!(
        "[task.source]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{DB}\"\n\
         [task.database]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{DB}\"\n",
        a.port, b.port
    );
    let config = sanitising_task(dir.path(), &store, "copy", &connections, "copy");
    host.run(&[
        "run",
        "--config",
        &config.display().to_string(),
        "--task",
        "search",
    ])
    .expect_ok("sanitised copy");

    let source = a.all_docs("customers").unwrap();
    let copied = b.all_docs("customers").unwrap();
    assert_eq!(copied.len(), source.len());
    assert_eq!(
        copied.keys().collect::<Vec<_>>(),
        source.keys().collect::<Vec<_>>(),
        "ids kept"
    );
    for (id, doc) in &copied {
        let original = &source[id];
        let email = doc["email"].as_str().unwrap();
        assert!(
            email.starts_with("user-") && email.ends_with("@example.com"),
            "{id}: {doc}"
        );
        assert_ne!(doc["name"], original["name"], "{id}: name masked");
        assert_ne!(doc["address"]["street"], original["address"]["street"]);
        assert_eq!(
            doc["address"]["city"], original["address"]["city"],
            "{id}: unruled field kept"
        );
        assert_eq!(doc["joined"], original["joined"]);
    }
    // Indices without rules are copied as they are.
    assert_eq!(b.all_docs("orders").unwrap(), a.all_docs("orders").unwrap());

    // `sanitise check` lists the mapping fields (dotted paths) the rules leave
    // uncovered. (The sanitise sanitiser does not yet count `[documents.X]`
    // rules as covering fields, so covered fields are not asserted here.)
    let check = host.run(&[
        "sanitise",
        "check",
        "--config",
        &config.display().to_string(),
        "--task",
        "search",
    ]);
    check.expect_fail(&[exit::STEP_FAILED], &["not covered"], "sanitise check");
    for field in [
        "customers.joined",
        "customers.address.city",
        "orders.lines.sku",
    ] {
        assert!(check.stdout.contains(field), "{field} uncovered\n{check}");
    }
}

/// A sanitised backup is written by the host (contract 0.2): the index
/// headers, then the documents the sanitiser kept, then the end line. It
/// restores into another cluster with every e-mail masked and the indices
/// without rules unchanged.
#[test]
fn sanitised_backup_restores_masked_documents() {
    let host = Host::built();
    let a = SearchServer::start().unwrap();
    let b = SearchServer::start().unwrap();
    load_sample(&a);
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new().unwrap();
    let run = |port: u16, op: &str| {
        let connections =
            format!("[task.database]\nhost = \"127.0.0.1\"\nport = {port}\nname = \"{DB}\"\n");
        let config = sanitising_task(dir.path(), &store, op, &connections, op);
        host.run(&[
            "run",
            "--config",
            &config.display().to_string(),
            "--task",
            "search",
        ])
    };
    run(a.port, "backup").expect_ok("sanitised backup");
    run(b.port, "restore").expect_ok("restore of the sanitised backup");

    let source = a.all_docs("customers").unwrap();
    let restored = b.all_docs("customers").unwrap();
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        source.keys().collect::<Vec<_>>(),
        "every document restored, ids kept"
    );
    for (id, doc) in &restored {
        let email = doc["email"].as_str().unwrap();
        assert!(
            email.starts_with("user-") && email.ends_with("@example.com"),
            "{id}: {doc}"
        );
        assert_ne!(doc["name"], source[id]["name"], "{id}: name masked");
        assert_eq!(doc["address"]["city"], source[id]["address"]["city"]);
    }
    assert_eq!(b.all_docs("orders").unwrap(), a.all_docs("orders").unwrap());
}
