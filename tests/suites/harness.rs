//! Proves the harness itself: a throwaway cluster starts, the sample loads,
//! fingerprints tell equal databases from different ones, held sessions notice
//! when the server ends them, and the store helpers read the layout.

use std::time::Duration;

use envsync_tests::paths::fixture;
use envsync_tests::postgres::{HoldMode, PgCluster};
use envsync_tests::store::{self, LocalStore};

fn sample_cluster() -> PgCluster {
    let pg = PgCluster::start().expect("start a throwaway cluster");
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("postgres/sample.sql"))
        .unwrap();
    pg
}

#[test]
fn cluster_starts_and_sample_loads() {
    let pg = sample_cluster();
    assert!(pg.port() > 0);
    assert!(pg.database_exists("shop").unwrap());
    assert!(!pg.database_exists("nope").unwrap());
    assert_eq!(pg.databases().unwrap(), vec!["shop".to_string()]);
    assert_eq!(pg.psql("shop", "SELECT 1 + 1").unwrap(), "2");
    // The sample has what the round trip must carry.
    let fp = pg.fingerprint("shop").unwrap();
    for table in [
        "public.customers",
        "public.products",
        "public.orders",
        "public.order_items",
        "audit.events",
    ] {
        let t = fp
            .tables
            .get(table)
            .unwrap_or_else(|| panic!("{table} missing:\n{fp}"));
        assert!(t.rows > 0, "{table} is empty");
    }
    assert!(fp.tables.values().map(|t| t.rows).sum::<u64>() > 5_000);
    assert_eq!(
        fp.sequences
            .get("public.invoice_number_seq")
            .map(String::as_str),
        Some("424242,true")
    );
    for needle in [
        "CREATE VIEW",
        "CREATE FUNCTION",
        "CREATE TRIGGER",
        "CREATE UNIQUE INDEX",
        "CREATE SCHEMA audit",
    ] {
        assert!(fp.schema.contains(needle), "schema lacks {needle}");
    }
    assert!(!fp.schema.contains("\\restrict"));
    // Non-ASCII text and bytea survive as written.
    assert_eq!(
        pg.psql("shop", "SELECT name FROM customers WHERE id = 3")
            .unwrap(),
        "日本語 顧客 3 🎉"
    );
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT encode(substr(avatar, 1, 4), 'hex') FROM customers WHERE id = 1"
        )
        .unwrap(),
        "00ff80fe"
    );
}

#[test]
fn fingerprint_equal_to_itself_and_changes_with_data_and_schema() {
    let pg = sample_cluster();
    let a = pg.fingerprint("shop").unwrap();
    let b = pg.fingerprint("shop").unwrap();
    a.assert_same(&b, "the same database twice");

    // A copy made by the server itself has the same fingerprint.
    pg.psql("postgres", "CREATE DATABASE shop_clone TEMPLATE shop")
        .unwrap();
    a.assert_same(&pg.fingerprint("shop_clone").unwrap(), "a template copy");

    // One changed byte in one row.
    let md5_before = pg.table_md5("shop_clone", "public.customers").unwrap();
    pg.psql(
        "shop_clone",
        "UPDATE customers SET balance = balance + 0.01 WHERE id = 17",
    )
    .unwrap();
    let changed = pg.fingerprint("shop_clone").unwrap();
    let diffs = a.differences(&changed);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert!(diffs[0].contains("public.customers"), "{diffs:#?}");
    assert_ne!(
        pg.table_md5("shop_clone", "public.customers").unwrap(),
        md5_before
    );

    // A sequence position.
    pg.psql("shop_clone", "SELECT nextval('invoice_number_seq')")
        .unwrap();
    let diffs = changed.differences(&pg.fingerprint("shop_clone").unwrap());
    assert!(
        diffs.len() == 1 && diffs[0].contains("invoice_number_seq"),
        "{diffs:#?}"
    );

    // The schema alone.
    let before = pg.fingerprint("shop_clone").unwrap();
    pg.psql(
        "shop_clone",
        "CREATE INDEX orders_note_idx ON orders (note)",
    )
    .unwrap();
    let diffs = before.differences(&pg.fingerprint("shop_clone").unwrap());
    assert!(
        diffs.len() == 1 && diffs[0].contains("orders_note_idx"),
        "{diffs:#?}"
    );

    // OIDs tell a replaced database from the same one.
    let oid = pg.database_oid("shop_clone").unwrap();
    assert!(oid.is_some());
    assert_eq!(pg.database_oid("shop_clone").unwrap(), oid);
    assert_eq!(pg.database_oid("nope").unwrap(), None);
    assert_eq!(pg.database_owner("shop_clone").unwrap(), "postgres");
}

#[test]
fn held_sessions_report_whether_the_server_ended_them() {
    let pg = sample_cluster();
    let mut sleeping = pg.hold_session("shop", HoldMode::Sleep).unwrap();
    let mut idle = pg
        .hold_session(
            "shop",
            HoldMode::IdleInTransaction("SELECT count(*) FROM customers".into()),
        )
        .unwrap();
    let mut survivor = pg
        .hold_session("shop", HoldMode::IdleInTransaction("SELECT 1".into()))
        .unwrap();
    assert_eq!(pg.connections_to("shop").unwrap(), 3);
    pg.psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ('{}', '{}')",
            sleeping.application_name(),
            idle.application_name()
        ),
    )
    .unwrap();
    assert!(sleeping.was_terminated(Duration::from_secs(10)));
    assert!(
        idle.was_terminated(Duration::from_secs(10)),
        "{}",
        idle.stderr()
    );
    assert!(!survivor.was_terminated(Duration::from_secs(10)));
    assert!(
        sleeping.stderr().contains("terminat") || sleeping.stderr().contains("connection"),
        "{}",
        sleeping.stderr()
    );
}

#[test]
fn clusters_run_side_by_side() {
    let a = PgCluster::start().unwrap();
    let b = PgCluster::start().unwrap();
    assert_ne!(a.port(), b.port());
    a.create_database("only_in_a").unwrap();
    assert!(!b.database_exists("only_in_a").unwrap());
    let dir = a.dir().to_path_buf();
    drop(a);
    assert!(!dir.exists(), "the cluster folder is removed on drop");
    assert_eq!(b.psql("postgres", "SELECT 1").unwrap(), "1");
}

#[test]
fn store_helpers_read_the_layout() {
    let s = LocalStore::new().unwrap();
    assert!(s.url().starts_with("file:///"));
    store::check_key_layout(
        "127.0.0.1/2026-11-21T101500Z-shop.pgdump",
        "127.0.0.1",
        "shop",
        "pgdump",
    )
    .unwrap();
    for bad in [
        "127.0.0.1/2026-11-21T10:15:00Z-shop.pgdump",
        "other/2026-11-21T101500Z-shop.pgdump",
        "127.0.0.1/2026-11-21T101500Z-shop_copy.pgdump",
    ] {
        assert!(
            store::check_key_layout(bad, "127.0.0.1", "shop", "pgdump").is_err(),
            "{bad}"
        );
    }
    std::fs::create_dir_all(s.root().join("h")).unwrap();
    std::fs::write(s.root().join("h/a.pgdump"), b"PGDMP").unwrap();
    std::fs::write(
        s.root().join("h/a.pgdump.manifest.json"),
        serde_json::json!({
            "size": 5,
            "sha256": store::sha256_file(&s.root().join("h/a.pgdump")).unwrap(),
            "plugin": "postgres", "plugin_version": "0.1.0", "format": "pg-custom",
            "created_at": "2026-11-21T10:15:00Z", "source": {"host": "h"},
            "key": "h/a.pgdump",
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(s.root().join("h/.b.pgdump.partial"), b"PG").unwrap();
    std::fs::write(s.root().join("h/latest-a.txt"), b"h/a.pgdump\n").unwrap();
    s.verify_manifest("h/a.pgdump", "postgres").unwrap();
    assert_eq!(s.pointer("h", "a").as_deref(), Some("h/a.pgdump"));
    assert_eq!(s.hidden_files(), vec!["h/.b.pgdump.partial".to_string()]);
    assert_eq!(s.artifact_keys("pgdump"), vec!["h/a.pgdump".to_string()]);
    s.put_artifact("h/c.pgdump", b"hello", "h/a.pgdump")
        .unwrap();
    let m = s.verify_manifest("h/c.pgdump", "postgres").unwrap();
    assert_eq!(m["key"], "h/c.pgdump");
    std::fs::write(s.root().join("h/c.pgdump"), b"hellO").unwrap();
    assert!(s.verify_manifest("h/c.pgdump", "postgres").is_err());
}
