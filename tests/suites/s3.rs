//! Object storage end to end: `envsync-host` backing up to and restoring from
//! a throwaway S3-compatible server (`s3s-fs`, and Garage when installed)
//! started by the harness (`envsync_tests::s3`).
//!
//! Each test starts its own server (and PostgreSQL cluster when it needs a
//! database). Databases come from the postgres plugin; big artifacts come
//! from the `sandbox-probe` test plugin (`--param write-mib=N`: N MiB of
//! incompressible bytes), so no database is needed for them. The host gets
//! its S3 settings the standard way: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, plus
//! `ENVSYNC_S3_PATH_STYLE=true` (see `S3Server::env`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use envsync_tests::faulty_proxy::FaultyProxy;
use envsync_tests::host_cli::{Expect, Host, Step, exit, objects_with, strip_ansi};
use envsync_tests::mariadb::MariaDb;
use envsync_tests::paths::{self, fixture};
use envsync_tests::postgres::PgCluster;
use envsync_tests::process::{Output, Running};
use envsync_tests::procs;
use envsync_tests::s3::{Backend, S3Server, S3Store, StoredObject, xml_values};
use envsync_tests::store::{check_key_layout, wait_for_next_second};
use sha2::{Digest, Sha256};

/// The instance (key folder) of PostgreSQL backups: the `--db-host` value.
const PG_INSTANCE: &str = "127.0.0.1";
/// The instance and database of probe backups.
const PROBE_INSTANCE: &str = "probe-host";
const PROBE_DB: &str = "d";
/// The first line of every probe artifact.
const PROBE_MAGIC: &[u8] = b"PROBE-ARTIFACT\n";
/// Where backups go unless a test says otherwise.
const BUCKET: &str = "backups";
const PREFIX: &str = "envsync/nightly";
const MIB: u64 = 1 << 20;

// Set-up --------------------------------------------------------------------------

/// Runs `case` against every available S3 server type.
fn each_backend(case: impl Fn(Backend)) {
    for backend in Backend::available() {
        eprintln!("===== against {backend} =====");
        case(backend);
    }
}

/// The host, a server with the bucket [`BUCKET`], and the store
/// `s3://BUCKET/PREFIX`.
struct S3Env {
    host: Host,
    s3: S3Server,
    store: S3Store,
}

fn s3_env(backend: Backend, host: Host) -> S3Env {
    let s3 = S3Server::start_backend(backend).expect("start a throwaway S3 server");
    s3.create_bucket(BUCKET).unwrap();
    let store = s3.store(BUCKET, PREFIX);
    S3Env { host, s3, store }
}

/// The host pointed at the test plugins (the `sandbox-probe`).
fn probe_host() -> Host {
    let dir = paths::target_dir().join("test-plugins");
    assert!(
        dir.join("sandbox-probe.wasm").is_file(),
        "{} missing: run ./scripts/build.sh first",
        dir.join("sandbox-probe.wasm").display()
    );
    Host::built().with_plugin_dir(&dir)
}

/// A database: the host with the first-party plugins, a cluster with the
/// sample loaded into `shop`.
fn sample_cluster() -> PgCluster {
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("postgres/sample.sql"))
        .unwrap();
    pg
}

impl S3Env {
    fn run(&self, step: &Step) -> Output {
        self.s3.run(&self.host, step)
    }

    fn run_args(&self, args: &[&str]) -> Output {
        self.s3.run_args(&self.host, args)
    }

    /// A probe backup into `store`.
    fn probe_backup(&self, store: &S3Store) -> Step {
        Step::new("sandbox-probe", "backup")
            .opt("--database", PROBE_DB)
            .opt("--instance", PROBE_INSTANCE)
            .opt("--store", store.url())
    }

    /// A probe restore of the latest probe backup in `store`.
    fn probe_restore(&self, store: &S3Store) -> Step {
        Step::new("sandbox-probe", "restore")
            .opt("--database", PROBE_DB)
            .opt("--from-instance", PROBE_INSTANCE)
            .opt("--store", store.url())
    }

    /// The key the probe pointer names (panics without one).
    #[track_caller]
    fn probe_pointer(&self) -> String {
        self.store
            .pointer(PROBE_INSTANCE, PROBE_DB)
            .unwrap_or_else(|| panic!("no probe pointer; objects: {:#?}", self.store.keys()))
    }

    #[track_caller]
    fn assert_no_open_uploads(&self, what: &str) {
        let open = self.s3.open_multipart_uploads(BUCKET).unwrap();
        assert!(
            open.is_empty(),
            "{what}: multipart uploads left open on the server: {open:#?}"
        );
    }
}

/// Peak RSS the host reported on stdout (`--log-format json`).
#[track_caller]
fn peak_rss(out: &Output) -> u64 {
    out.json()["host_peak_rss_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no host_peak_rss_bytes in the JSON summary\n{out}"))
}

/// True if stderr (lower-cased, colours removed) contains any of `phrases`.
fn mentions_any(out: &Output, phrases: &[&str]) -> bool {
    let stderr = strip_ansi(&out.stderr).to_lowercase();
    phrases.iter().any(|p| stderr.contains(&p.to_lowercase()))
}

#[track_caller]
fn assert_mentions_any(out: &Output, phrases: &[&str], what: &str) {
    assert!(
        mentions_any(out, phrases),
        "{what}: stderr should mention one of {phrases:?}\n{out}"
    );
}

/// The lines of stderr that report the command's failure (`ERROR` log
/// lines, `error:` usage lines), lower-cased, colours removed.
fn error_lines(out: &Output) -> String {
    strip_ansi(&out.stderr)
        .lines()
        .filter(|l| l.contains("ERROR") || l.trim_start().to_lowercase().starts_with("error"))
        .map(|l| l.to_lowercase())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the error itself (not just any log line) mentions one of `phrases`.
#[track_caller]
fn assert_error_mentions_any(out: &Output, phrases: &[&str], what: &str) {
    let errors = error_lines(out);
    assert!(
        phrases.iter().any(|p| errors.contains(&p.to_lowercase())),
        "{what}: the error should mention one of {phrases:?}\n{out}"
    );
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Decodes `bytes` with a command-line tool (`zstd -d -c`, `gzip -d -c`);
/// `None` when the tool is not installed.
fn decode_with(tool: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let probe = Command::new(tool).arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("note: {tool} is not installed: its output is not decoded, only restored");
        return None;
    }
    let mut cmd = Command::new(tool);
    cmd.args(["-d", "-c"]);
    // Binary output: run it directly rather than through the text-collecting helper.
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{tool} -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// Adds a database big enough that its dump takes a while: ~300k rows of
/// hex text (about 40 MB raw), generated by the server.
fn create_big_database(pg: &PgCluster, name: &str) {
    pg.create_database(name).unwrap();
    pg.psql(
        name,
        "CREATE TABLE big (id integer NOT NULL, a text NOT NULL, b text);\n\
         INSERT INTO big SELECT i, md5(i::text) || md5((i * 31)::text) || md5((i * 17)::text), \
                CASE WHEN i % 10 = 0 THEN NULL ELSE md5((i * 7)::text) END \
         FROM generate_series(1, 300000) AS i;",
    )
    .unwrap();
}

// The harness itself ------------------------------------------------------------------

#[test]
fn harness_server_client_and_fault_proxy_work() {
    each_backend(|backend| {
        let mut s3 = S3Server::start_backend(backend).expect("start the server");
        let client = s3.client();
        let env = s3.env();
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_ENDPOINT_URL",
            "ENVSYNC_S3_PATH_STYLE",
        ] {
            assert!(env.iter().any(|(k, _)| k == name), "env() lacks {name}");
        }
        assert!(env.contains(&("AWS_ENDPOINT_URL".into(), s3.endpoint())));

        // Signed requests: buckets, objects with awkward key characters.
        s3.create_bucket("harness").unwrap();
        assert!(
            client
                .list_buckets()
                .unwrap()
                .contains(&"harness".to_string())
        );
        let key = "dir one/ünïcode+plus=eq&amp.txt";
        client.put_object("harness", key, b"hello").unwrap();
        assert_eq!(client.get_object("harness", key).unwrap(), b"hello");
        let head = client.head_object("harness", key).unwrap().unwrap();
        assert_eq!(head.size, 5);
        assert_eq!(
            head.etag,
            hex::encode(md5_of(b"hello")),
            "single-put ETag is the MD5"
        );
        assert_eq!(head.multipart_parts(), None);
        let listed = client.list_objects("harness", "dir one/").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, key);
        assert!(client.head_object("harness", "nothing").unwrap().is_none());

        // A wrong secret key is refused with a signature error.
        let bad = client
            .with_secret_key("not-the-secret")
            .request("GET", "/harness", &[("list-type", "2")], &[], &[])
            .unwrap();
        assert_eq!(bad.status, 403, "{}", bad.text());
        assert_eq!(bad.error_code().as_deref(), Some("SignatureDoesNotMatch"));

        // Multipart: an open upload is seen, an aborted one is gone, a
        // completed one has a `-N` ETag.
        assert!(s3.open_multipart_uploads("harness").unwrap().is_empty());
        let mp_key = "multi/part.bin";
        let upload_id = create_upload(&client, "harness", mp_key);
        put_part(
            &client,
            "harness",
            mp_key,
            &upload_id,
            1,
            &vec![1u8; 5 * MIB as usize],
        );
        assert!(
            !s3.open_multipart_uploads("harness").unwrap().is_empty(),
            "an open multipart upload is not detected"
        );
        assert!(!s3.uploaded_parts("harness").unwrap().is_empty());
        let aborted = client
            .request(
                "DELETE",
                &format!("/harness/{mp_key}"),
                &[("uploadId", &upload_id)],
                &[],
                &[],
            )
            .unwrap();
        assert!(aborted.status < 300, "{}", aborted.text());
        assert!(s3.open_multipart_uploads("harness").unwrap().is_empty());
        let upload_id = create_upload(&client, "harness", mp_key);
        let e1 = put_part(
            &client,
            "harness",
            mp_key,
            &upload_id,
            1,
            &vec![1u8; 5 * MIB as usize],
        );
        let e2 = put_part(&client, "harness", mp_key, &upload_id, 2, b"tail");
        let complete = format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{e1}</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>{e2}</ETag></Part></CompleteMultipartUpload>"
        );
        let done = client
            .request(
                "POST",
                &format!("/harness/{mp_key}"),
                &[("uploadId", &upload_id)],
                &[],
                complete.as_bytes(),
            )
            .unwrap();
        assert!(done.status < 300, "{}", done.text());
        let head = client.head_object("harness", mp_key).unwrap().unwrap();
        assert_eq!(head.multipart_parts(), Some(2), "{head:?}");
        assert_eq!(head.size, 5 * MIB + 4);
        assert!(s3.open_multipart_uploads("harness").unwrap().is_empty());

        // Damage behind the server's back.
        client
            .put_object("harness", "victim", b"0123456789")
            .unwrap();
        let etag_before = client
            .head_object("harness", "victim")
            .unwrap()
            .unwrap()
            .etag;
        s3.corrupt_object("harness", "victim", 2, 3).unwrap();
        let damaged = client.get_object("harness", "victim").unwrap();
        assert_eq!(damaged.len(), 10);
        assert_ne!(damaged, b"0123456789");
        assert_eq!(&damaged[..2], b"01");
        assert_eq!(&damaged[5..], b"56789");
        if backend.is_filesystem() {
            assert_eq!(
                client
                    .head_object("harness", "victim")
                    .unwrap()
                    .unwrap()
                    .etag,
                etag_before,
                "s3s-fs does not notice a file changed behind its back"
            );
        }
        s3.truncate_object("harness", "victim", 4).unwrap();
        assert_eq!(client.get_object("harness", "victim").unwrap().len(), 4);

        // The fault proxy: forwards, cuts big responses when armed, refuses
        // writes in read-only mode.
        let big = vec![7u8; 3 * MIB as usize];
        client.put_object("harness", "big", &big).unwrap();
        let proxy = FaultyProxy::start(s3.port()).unwrap();
        let via = envsync_tests::s3::S3Client::new(proxy.port(), s3.access_key(), s3.secret_key());
        assert_eq!(via.get_object("harness", "big").unwrap().len(), big.len());
        proxy.cut_responses(MIB, 1);
        let cut = via.get_object("harness", "big");
        assert!(cut.is_err(), "the armed proxy did not cut the download");
        assert_eq!(proxy.cuts(), 1);
        assert_eq!(via.get_object("harness", "big").unwrap().len(), big.len());
        assert_eq!(via.get_object("harness", "victim").unwrap().len(), 4);
        let ranged = via
            .request(
                "GET",
                "/harness/big",
                &[],
                &[("range", "bytes=1048576-")],
                &[],
            )
            .unwrap();
        assert_eq!(ranged.status, 206);
        assert_eq!(ranged.body.len() as u64, 2 * MIB);
        let seen = proxy.requests();
        assert!(
            seen.iter().any(|r| r.method == "GET"
                && r.path() == "/harness/big"
                && r.range_start() == Some(MIB)),
            "{seen:#?}"
        );
        proxy.set_read_only(true);
        assert!(via.put_object("harness", "ro", b"x").is_err());
        assert_eq!(proxy.refused().len(), 1);
        assert!(client.head_object("harness", "ro").unwrap().is_none());
        assert_eq!(via.get_object("harness", "victim").unwrap().len(), 4);
        drop(proxy);

        // Kill and restart: same port, same data.
        let port = s3.port();
        s3.kill();
        assert!(!s3.is_running());
        assert!(client.list_buckets().is_err());
        s3.restart().unwrap();
        assert_eq!(s3.port(), port);
        assert_eq!(client.get_object("harness", key).unwrap(), b"hello");
    });
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    // A tiny MD5 for one check above (RFC 1321).
    let s: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = bytes.to_vec();
    let bit_len = (bytes.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(s[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

fn create_upload(client: &envsync_tests::s3::S3Client, bucket: &str, key: &str) -> String {
    let r = client
        .request(
            "POST",
            &format!("/{bucket}/{key}"),
            &[("uploads", "")],
            &[],
            &[],
        )
        .unwrap();
    assert!(r.status < 300, "CreateMultipartUpload: {}", r.text());
    xml_values(&r.text(), "UploadId")
        .into_iter()
        .next()
        .expect("an UploadId")
}

fn put_part(
    client: &envsync_tests::s3::S3Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    n: u32,
    bytes: &[u8],
) -> String {
    let number = n.to_string();
    let r = client
        .request(
            "PUT",
            &format!("/{bucket}/{key}"),
            &[("partNumber", &number), ("uploadId", upload_id)],
            &[],
            bytes,
        )
        .unwrap();
    assert!(r.status < 300, "UploadPart: {}", r.text());
    r.header("etag").unwrap_or_default().to_string()
}

// 1 ---------------------------------------------------------------------------------

#[test]
fn postgres_backup_to_s3_and_restore_round_trip() {
    each_backend(|backend| {
        let env = s3_env(backend, Host::built());
        let pg = sample_cluster();
        let source = pg.fingerprint("shop").unwrap();

        env.run(&pg.step("backup", "shop").opt("--store", env.store.url()))
            .expect_ok("backup of shop to S3");
        let key = env
            .store
            .pointer(PG_INSTANCE, "shop")
            .unwrap_or_else(|| panic!("no pointer after the backup: {:#?}", env.store.keys()));
        check_key_layout(&key, PG_INSTANCE, "shop", "pgdump").unwrap();
        let bytes = env.store.get(&key).unwrap();
        assert!(
            bytes.starts_with(b"PGDMP"),
            "the object is not a pg_dump archive"
        );
        let manifest = env
            .store
            .verify_manifest(&key, "postgres")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            manifest["sha256"].as_str(),
            Some(sha256_hex(&bytes).as_str())
        );
        assert_eq!(manifest["size"].as_u64(), Some(bytes.len() as u64));
        assert_eq!(
            manifest["compression"].as_str(),
            Some("none"),
            "{manifest:#}"
        );
        if let Some(file) = env.s3.object_file(BUCKET, &env.store.object_key(&key)) {
            // What the server keeps on disk is what the manifest describes.
            assert_eq!(
                envsync_tests::store::sha256_file(&file).unwrap(),
                manifest["sha256"].as_str().unwrap()
            );
        }
        let mut expected = vec![
            key.clone(),
            S3Store::manifest_key(&key),
            S3Store::pointer_key(PG_INSTANCE, "shop"),
        ];
        expected.sort();
        assert_eq!(
            env.store.keys(),
            expected,
            "a backup leaves the artifact, its manifest and the pointer under the prefix"
        );
        assert_eq!(
            env.store.client().list_objects(BUCKET, "").unwrap().len(),
            3,
            "nothing is written outside the prefix"
        );
        env.assert_no_open_uploads("after a backup");

        env.run(
            &pg.step("restore", "shop_copy")
                .opt("--store", env.store.url())
                .opt("--from-database", "shop"),
        )
        .expect_ok("restore from S3");
        source.assert_same(
            &pg.fingerprint("shop_copy").unwrap(),
            "shop vs its copy restored from S3",
        );
        assert_eq!(
            pg.databases().unwrap(),
            vec!["shop".to_string(), "shop_copy".to_string()]
        );
        assert_eq!(env.store.keys(), expected, "a restore writes nothing");
    });
}

/// The MySQL/MariaDB plugin goes through S3 exactly as through a folder: its
/// plain SQL dump is stored zstd-compressed, and restores to an identical
/// database (every object's SHOW CREATE, every table's checksum).
#[test]
fn mysql_backup_to_s3_and_restore_round_trip() {
    each_backend(|backend| {
        let env = s3_env(backend, Host::built());
        let db = MariaDb::start().expect("start a throwaway MariaDB server");
        db.create_database("shop").unwrap();
        db.load_sql_file("shop", &fixture("mysql/sample.sql"))
            .unwrap();
        let source = db.fingerprint("shop").unwrap();

        env.run(&db.step("backup", "shop").opt("--store", env.store.url()))
            .expect_ok("mysql backup to S3");
        let key = env
            .store
            .pointer(db.host(), "shop")
            .unwrap_or_else(|| panic!("no pointer after the backup: {:#?}", env.store.keys()));
        check_key_layout(&key, db.host(), "shop", "sql.zst").unwrap();
        let manifest = env
            .store
            .verify_manifest(&key, "mysql")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            manifest["compression"].as_str(),
            Some("zstd"),
            "{manifest:#}"
        );
        env.assert_no_open_uploads("after a mysql backup");

        env.run(
            &db.step("restore", "shop_copy")
                .opt("--store", env.store.url())
                .opt("--from-database", "shop"),
        )
        .expect_ok("mysql restore from S3");
        source.assert_same(
            &db.fingerprint("shop_copy").unwrap(),
            "shop vs its copy restored from S3",
        );
    });
}

// 2 ---------------------------------------------------------------------------------

/// Memory bound of an upload: part size × (parts in flight + 1).
const PART_MIB: u64 = 8;
const IN_FLIGHT: u64 = 2;
/// What the host may use beyond a measured baseline and the parts: the
/// allocator keeping freed part buffers in per-thread arenas instead of
/// returning them, HTTP connection and SDK buffers, the plugin's 1 MiB
/// writes in flight between guest and host. Measured here (debug host,
/// s3s-fs): baseline 58 MiB, 200 MiB upload 82 MiB — exactly the 24 MiB of
/// parts above the baseline. Buffering the artifact (200 MiB) or one more
/// part per part in flight (+16 MiB) would go past the bound.
const SLACK_MIB: u64 = 16;

#[test]
fn big_artifact_goes_multipart_with_memory_bounded() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        let tuned = |step: Step| {
            step.opt("--s3-part-size-mib", PART_MIB)
                .opt("--s3-parts-in-flight", IN_FLIGHT)
                .opt("--compression", "none")
                .opt("--log-format", "json")
        };
        // Warm-up: the plugin gets compiled into the cache here, so that every
        // run measured below loads it the same way.
        env.run(&tuned(env.probe_backup(&env.store)).param("write-mib", 1))
            .expect_ok("warm-up backup");
        wait_for_next_second();

        // Baseline: the same command with a 1 MiB artifact (one part at most).
        let small = env.run(&tuned(env.probe_backup(&env.store)).param("write-mib", 1));
        small.expect_ok("small backup");
        let small_key = env.probe_pointer();
        let baseline = peak_rss(&small);
        wait_for_next_second();

        let started = Instant::now();
        let big = env.run(&tuned(env.probe_backup(&env.store)).param("write-mib", 200));
        big.expect_ok("200 MiB backup");
        let backup_time = started.elapsed();
        let key = env.probe_pointer();
        assert_ne!(key, small_key);
        check_key_layout(&key, PROBE_INSTANCE, PROBE_DB, "probe").unwrap();
        // Size only: hashing 200 MiB in this unoptimised test binary is slow,
        // and the restore below verifies the checksum anyway.
        let manifest = env.store.manifest(&key).unwrap();
        let size = manifest["size"].as_u64().unwrap();
        assert_eq!(size, 200 * MIB + PROBE_MAGIC.len() as u64, "{manifest:#}");
        assert_eq!(
            manifest["compression"].as_str(),
            Some("none"),
            "{manifest:#}"
        );

        // Multipart: the server's ETag is `<md5 of part md5s>-<parts>`.
        let head = env.store.head(&key).unwrap().unwrap();
        assert_eq!(head.size, size);
        let expected_parts = size.div_ceil(PART_MIB * MIB);
        assert_eq!(
            head.multipart_parts(),
            Some(expected_parts as u32),
            "{size} bytes in {PART_MIB} MiB parts should be a {expected_parts}-part upload: {head:?}"
        );
        env.assert_no_open_uploads("after a multipart upload");

        let peak = peak_rss(&big);
        let bound = baseline + (PART_MIB * (IN_FLIGHT + 1) + SLACK_MIB) * MIB;
        eprintln!(
            "backup: baseline peak RSS {} MiB, 200 MiB artifact {} MiB (bound {} MiB), {:.1}s",
            baseline / MIB,
            peak / MIB,
            bound / MIB,
            backup_time.as_secs_f64()
        );
        assert!(
            bound < baseline + size / 2,
            "the bound must prove streaming"
        );
        assert!(
            peak <= bound,
            "the host's peak RSS during a 200 MiB upload was {} MiB: above the bound of {} MiB \
             (baseline {} MiB + {PART_MIB} MiB × ({IN_FLIGHT} + 1) parts + {SLACK_MIB} MiB)\n{big}",
            peak / MIB,
            bound / MIB,
            baseline / MIB
        );

        // Restores: the small one for the baseline, then the big one.
        let small_restore = env.run(
            &env.probe_restore(&env.store)
                .opt("--artifact", &small_key)
                .opt("--log-format", "json"),
        );
        small_restore.expect_ok("restore of the small artifact");
        let restore_baseline = peak_rss(&small_restore);
        let started = Instant::now();
        let restore = env.run(&env.probe_restore(&env.store).opt("--log-format", "json"));
        restore.expect_ok("restore of the 200 MiB artifact");
        let restore_peak = peak_rss(&restore);
        let restore_bound = restore_baseline + (PART_MIB * (IN_FLIGHT + 1) + SLACK_MIB) * MIB;
        eprintln!(
            "restore: baseline peak RSS {} MiB, 200 MiB artifact {} MiB (bound {} MiB), {:.1}s",
            restore_baseline / MIB,
            restore_peak / MIB,
            restore_bound / MIB,
            started.elapsed().as_secs_f64()
        );
        assert!(
            restore_peak <= restore_bound,
            "the host's peak RSS while restoring 200 MiB was {} MiB, above {} MiB\n{restore}",
            restore_peak / MIB,
            restore_bound / MIB
        );
    });
}

// 3 ---------------------------------------------------------------------------------

#[test]
fn small_artifact_uses_a_single_put_with_manifest_and_pointer() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        env.run(
            &env.probe_backup(&env.store)
                .opt("--s3-part-size-mib", 5)
                .opt("--compression", "none"),
        )
        .expect_ok("small backup");
        let key = env.probe_pointer();
        check_key_layout(&key, PROBE_INSTANCE, PROBE_DB, "probe").unwrap();
        let manifest = env
            .store
            .verify_manifest(&key, "sandbox-probe")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(manifest["size"].as_u64().unwrap() < 5 * MIB);
        let head = env.store.head(&key).unwrap().unwrap();
        assert!(
            !head.etag.contains('-') && head.etag.len() == 32,
            "an object under the part size is a single PutObject (plain MD5 ETag): {head:?}"
        );
        let bytes = env.store.get(&key).unwrap();
        assert!(bytes.starts_with(PROBE_MAGIC));
        assert_eq!(head.etag, hex::encode(md5_of(&bytes)));
        let mut expected = vec![
            key.clone(),
            S3Store::manifest_key(&key),
            S3Store::pointer_key(PROBE_INSTANCE, PROBE_DB),
        ];
        expected.sort();
        assert_eq!(env.store.keys(), expected);
        env.assert_no_open_uploads("after a single put");
        env.run(&env.probe_restore(&env.store))
            .expect_ok("restore of the small artifact");
    });
}

// 4 ---------------------------------------------------------------------------------

#[test]
fn failed_upload_aborts_the_multipart_upload_and_keeps_the_pointer() {
    // The pg_dump orphaned if the host dies becomes our child and is reaped.
    procs::become_subreaper();
    each_backend(|backend| {
        let env = s3_env(backend, Host::built());
        let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
        create_big_database(&pg, "bigdb");
        let backup = || {
            pg.step("backup", "bigdb")
                .opt("--store", env.store.url())
                .opt("--s3-part-size-mib", 5)
                .opt("--s3-parts-in-flight", 1)
        };
        env.run(&backup()).expect_ok("first backup");
        let first = env.store.pointer(PG_INSTANCE, "bigdb").unwrap();
        let size = env.store.head(&first).unwrap().unwrap().size;
        assert!(
            size > 10 * MIB,
            "the dump ({size} bytes) must span several 5 MiB parts for this test"
        );
        let keys_before = env.store.keys();
        wait_for_next_second();

        // Second backup: pg_dump frozen once a part reached the server, then killed.
        let mut running =
            Running::spawn(env.s3.host_command(&env.host, backup().args()), None).unwrap();
        let host_pid = running.pid() as i32;
        let dump =
            procs::wait_for_descendant(host_pid, "pg_dump", Duration::from_secs(300), || {
                running.has_exited().unwrap_or(true)
            });
        let Some(dump) = dump else {
            let out = running.wait_timeout(Duration::from_secs(10));
            panic!("the backup never started pg_dump\n{out}");
        };
        procs::signal(dump, libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(300);
        while env.s3.uploaded_parts(BUCKET).unwrap().is_empty() {
            assert!(
                procs::is_alive(dump),
                "pg_dump finished before a part reached the server"
            );
            assert!(
                Instant::now() < deadline,
                "no multipart upload part reached the server while pg_dump ran"
            );
            procs::signal(dump, libc::SIGCONT);
            std::thread::sleep(Duration::from_millis(5));
            procs::signal(dump, libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(30));
        }
        assert!(!env.s3.open_multipart_uploads(BUCKET).unwrap().is_empty());
        procs::signal(dump, libc::SIGKILL);
        procs::signal(dump, libc::SIGCONT);
        let out = running.wait_timeout(Duration::from_secs(90));
        out.expect_fail(
            &[exit::STEP_FAILED],
            &["pg_dump"],
            "backup whose pg_dump was killed",
        );

        assert_eq!(
            env.store.pointer(PG_INSTANCE, "bigdb").as_deref(),
            Some(first.as_str()),
            "the pointer moved"
        );
        assert_eq!(
            env.store.keys(),
            keys_before,
            "a failed backup left objects\n{out}"
        );
        env.assert_no_open_uploads(&format!("after a failed upload\n{out}"));
    });
}

#[test]
fn server_killed_during_upload_fails_clearly_and_the_previous_backup_restores() {
    each_backend(|backend| {
        let mut env = s3_env(backend, probe_host());
        env.run(&env.probe_backup(&env.store).opt("--compression", "none"))
            .expect_ok("first backup");
        let first = env.probe_pointer();
        let keys_before = env.store.keys();
        wait_for_next_second();

        let step = env
            .probe_backup(&env.store)
            .param("write-mib", 300)
            .opt("--compression", "none")
            .opt("--s3-part-size-mib", 5)
            .opt("--s3-parts-in-flight", 1);
        let mut running =
            Running::spawn(env.s3.host_command(&env.host, step.args()), None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while env.s3.uploaded_parts(BUCKET).unwrap().is_empty() {
            if running.has_exited().unwrap() {
                let out = running.wait_timeout(Duration::from_secs(1));
                panic!("the backup ended before a part reached the server\n{out}");
            }
            assert!(Instant::now() < deadline, "no part reached the server");
            std::thread::sleep(Duration::from_millis(2));
        }
        env.s3.kill();
        let out = running.wait_timeout(Duration::from_secs(150));
        eprintln!("the backup that lost its server:\n{out}");
        assert!(
            !out.timed_out(),
            "the host kept going with the server gone\n{out}"
        );
        out.expect_fail(
            &[exit::STEP_FAILED],
            &[],
            "backup while the S3 server was killed",
        );
        assert_error_mentions_any(&out, &[PROBE_INSTANCE], "the error names the object");
        assert_error_mentions_any(
            &out,
            &[
                "connect",
                "connection",
                "unreachable",
                "refused",
                "dispatch",
                "timeout",
                "timed out",
            ],
            "the error says the server could not be reached",
        );

        env.s3.restart().unwrap();
        assert_eq!(
            env.store.pointer(PROBE_INSTANCE, PROBE_DB).as_deref(),
            Some(first.as_str()),
            "the pointer moved"
        );
        assert_eq!(
            env.store.keys(),
            keys_before,
            "the failed backup left objects"
        );
        // The host could not abort the upload on a dead server: it stays open
        // until the next run that opens the bucket (the host journals the
        // uploads it opens) aborts it.
        assert!(
            !env.s3.open_multipart_uploads(BUCKET).unwrap().is_empty(),
            "the upload cut off by the outage should still be open on the server"
        );
        let out = env.run(&env.probe_restore(&env.store));
        out.expect_ok("restore of the previous backup");
        env.assert_no_open_uploads(&format!("after the next run that opened the bucket\n{out}"));
        assert_mentions_any(&out, &["abort"], "the next run says it aborted the upload");
        env.run(&env.probe_backup(&env.store))
            .expect_ok("the next backup once the server is back");
    });
}

#[test]
fn upload_of_a_killed_host_is_aborted_by_the_next_run() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        env.run(&env.probe_backup(&env.store).opt("--compression", "none"))
            .expect_ok("first backup");
        let first = env.probe_pointer();
        let keys_before = env.store.keys();
        wait_for_next_second();

        let step = env
            .probe_backup(&env.store)
            .param("write-mib", 300)
            .opt("--compression", "none")
            .opt("--s3-part-size-mib", 5)
            .opt("--s3-parts-in-flight", 1);
        let mut running =
            Running::spawn(env.s3.host_command(&env.host, step.args()), None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while env.s3.uploaded_parts(BUCKET).unwrap().is_empty() {
            if running.has_exited().unwrap() {
                let out = running.wait_timeout(Duration::from_secs(1));
                panic!("the backup ended before a part reached the server\n{out}");
            }
            assert!(Instant::now() < deadline, "no part reached the server");
            std::thread::sleep(Duration::from_millis(2));
        }
        running.signal(libc::SIGKILL);
        let out = running.wait_timeout(Duration::from_secs(30));
        assert!(!out.success(), "the killed host reported success\n{out}");
        assert!(
            !env.s3.open_multipart_uploads(BUCKET).unwrap().is_empty(),
            "a killed host cannot abort its upload"
        );
        assert_eq!(
            env.store.pointer(PROBE_INSTANCE, PROBE_DB).as_deref(),
            Some(first.as_str()),
            "the pointer moved"
        );
        assert_eq!(
            env.store.keys(),
            keys_before,
            "the killed backup left objects"
        );

        wait_for_next_second();
        let out = env.run(&env.probe_backup(&env.store).opt("--compression", "none"));
        out.expect_ok("the next backup");
        assert_mentions_any(&out, &["abort"], "the next run says it aborted the upload");
        env.assert_no_open_uploads(&format!("after the next backup\n{out}"));
        assert_ne!(env.probe_pointer(), first);
    });
}

// 5 ---------------------------------------------------------------------------------

#[test]
fn restore_verifies_the_checksum_before_the_swap() {
    each_backend(|backend| {
        let env = s3_env(backend, Host::built());
        let pg = sample_cluster();
        pg.psql(
            "shop",
            "INSERT INTO products (sku, title, price) VALUES ('TAMPER-ME-0001', 'tamper target', 1)",
        )
        .unwrap();
        let shop = pg.fingerprint("shop").unwrap();
        // -Z0: the rows are stored as plain text, so a change to one of them
        // goes unnoticed by pg_restore; only the checksum can catch it.
        env.run(
            &pg.step("backup", "shop")
                .opt("--store", env.store.url())
                .param("dump-flags", "-Fc -Z0"),
        )
        .expect_ok("backup");
        let key = env.store.pointer(PG_INSTANCE, "shop").unwrap();
        let object = env.store.object_key(&key);
        let original = env.store.get(&key).unwrap();

        // The live target differs from the backup, so any replacement shows.
        env.run(
            &pg.step("restore", "shop_copy")
                .opt("--store", env.store.url())
                .opt("--from-database", "shop"),
        )
        .expect_ok("first restore");
        pg.psql(
            "shop_copy",
            "INSERT INTO products (sku, title, price) VALUES ('LIVE-ONLY', 'only in the live target', 1)",
        )
        .unwrap();
        let live = pg.fingerprint("shop_copy").unwrap();
        let live_oid = pg.database_oid("shop_copy").unwrap();
        let restore = || {
            env.run(
                &pg.step("restore", "shop_copy")
                    .opt("--store", env.store.url())
                    .opt("--from-database", "shop"),
            )
        };
        let assert_untouched = |what: &str| {
            assert_eq!(
                pg.database_oid("shop_copy").unwrap(),
                live_oid,
                "{what}: the target was replaced"
            );
            live.assert_same(&pg.fingerprint("shop_copy").unwrap(), what);
            assert_eq!(
                pg.databases().unwrap(),
                vec!["shop".to_string(), "shop_copy".to_string()],
                "{what}: a scratch database was left"
            );
        };

        // One row changed in the stored object, same size.
        let at = original
            .windows(14)
            .position(|w| w == b"TAMPER-ME-0001")
            .expect("the marker row is in the uncompressed dump");
        let mut tampered = original.clone();
        tampered[at + 7..at + 9].copy_from_slice(b"XX");
        env.s3.overwrite_object(BUCKET, &object, &tampered).unwrap();
        let out = restore();
        out.expect_fail(
            &[exit::ARTIFACT_REJECTED],
            &["checksum"],
            "restore of an object changed in the bucket",
        );
        assert_error_mentions_any(&out, &[file_name(&key)], "the error names the object");
        assert_untouched("after the tampered restore");

        // Truncated to half.
        env.s3.overwrite_object(BUCKET, &object, &original).unwrap();
        env.s3
            .truncate_object(BUCKET, &object, original.len() as u64 / 2)
            .unwrap();
        // The loader fails on the short stream; the host names the cause.
        restore().expect_fail(
            &[exit::ARTIFACT_REJECTED],
            &["truncated", "manifest says"],
            "restore of a truncated object",
        );
        let out = restore();
        assert_error_mentions_any(&out, &[file_name(&key)], "the error names the object");
        assert_untouched("after the truncated restore");

        // Put back, it restores.
        env.s3.overwrite_object(BUCKET, &object, &original).unwrap();
        restore().expect_ok("restore of the intact object");
        shop.assert_same(&pg.fingerprint("shop_copy").unwrap(), "shop vs the copy");
    });
}

// 6 ---------------------------------------------------------------------------------

#[test]
fn dropped_download_connection_resumes_with_a_ranged_get() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        env.run(
            &env.probe_backup(&env.store)
                .param("write-mib", 24)
                .opt("--compression", "none"),
        )
        .expect_ok("24 MiB backup");
        let key = env.probe_pointer();
        let object_path = format!("/{BUCKET}/{}", env.store.object_key(&key));

        let proxy = FaultyProxy::start(env.s3.port()).unwrap();
        // Cut twice: after 5 MiB of the first download connection, and of the next.
        proxy.cut_responses(5 * MIB, 2);
        let out = env.run(
            &env.probe_restore(&env.store)
                .opt("--s3-endpoint", proxy.endpoint()),
        );
        let requests = proxy.requests();
        out.expect_ok(&format!(
            "restore through connections cut twice\nrequests: {requests:#?}"
        ));
        assert_eq!(proxy.cuts(), 2, "the proxy did not cut: {requests:#?}");
        assert_mentions_any(&out, &["resum"], "the host says it resumes");
        let cut = proxy.cut_connections();
        let gets: Vec<_> = requests
            .iter()
            .filter(|r| r.method == "GET" && r.path() == object_path)
            .collect();
        // The look at the artifact's start (the plugin's format check) is a
        // small ranged GET, not a download begun and dropped: a dropped one
        // would move megabytes, and here could take the proxy's first cut.
        let first = gets.first().expect("GETs of the artifact");
        assert!(
            first
                .range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes=0-") && !r.ends_with('-')),
            "the head was not read with a bounded range: {gets:#?}"
        );
        // Every GET of the artifact on a connection opened after the first cut
        // resumes: a range starting past byte 0, past the last one.
        let resumed: Vec<_> = gets.iter().filter(|r| r.connection > cut[0]).collect();
        assert!(
            resumed.len() >= 2,
            "expected a resumed GET after each of the cuts on connections {cut:?}: {gets:#?}"
        );
        let mut last = 0;
        for r in &resumed {
            let start = r.range_start();
            assert!(
                start.is_some_and(|s| s > last),
                "after a cut the download restarted instead of resuming where it stopped \
                 (cuts on connections {cut:?}): {gets:#?}"
            );
            last = start.unwrap_or(0);
        }
    });
}

// 7 ---------------------------------------------------------------------------------

/// The production bucket as the data dir holds it (its files, and any upload
/// leftover in the root), for "not a byte written" comparisons.
fn bucket_files(s3: &S3Server, bucket: &str) -> Vec<(String, u64, u128)> {
    s3.data_files()
        .into_iter()
        .filter(|(path, _, _)| {
            path.starts_with(&format!("{bucket}/")) || path.starts_with(".upload")
        })
        .collect()
}

/// A backup into another environment's store (one this environment may
/// only read) is refused by the host before any request: the S3 endpoint
/// here is a closed port, so any request would fail differently.
#[test]
fn backup_into_another_environments_bucket_is_refused_before_any_request() {
    let host = probe_host();
    let closed = format!(
        "http://127.0.0.1:{}",
        envsync_tests::ports::free_port().unwrap()
    );
    for (store, read_only) in [
        (
            "s3://production/nightly",
            vec!["--read-only-store", "s3://production"],
        ),
        (
            "s3://production/nightly",
            vec!["--from-store", "s3://production/other"],
        ),
    ] {
        let mut step = Step::new("sandbox-probe", "backup")
            .opt("--database", PROBE_DB)
            .opt("--store", store)
            .opt("--s3-endpoint", &closed);
        for pair in read_only.chunks(2) {
            step = step.opt(pair[0], pair[1]);
        }
        let mut cmd = host.command(step.args());
        cmd.env("AWS_ACCESS_KEY_ID", "unused")
            .env("AWS_SECRET_ACCESS_KEY", "unused");
        let started = Instant::now();
        host.run_command(cmd).expect_fail(
            &[exit::USAGE],
            &[
                "refusing to back up into s3://production/nightly",
                "another environment",
            ],
            "backup into a read-only store",
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "refused without retrying requests"
        );
    }
}

#[test]
fn staging_restores_from_production_and_writes_only_its_own_bucket() {
    each_backend(|backend| {
        let env = s3_env(backend, Host::built());
        env.s3.create_bucket("prod-bucket").unwrap();
        env.s3.create_bucket("staging-bucket").unwrap();
        let prod = env.s3.store("prod-bucket", "envsync");
        let staging = env.s3.store("staging-bucket", "envsync");
        let pg = sample_cluster();
        let shop = pg.fingerprint("shop").unwrap();

        env.run(&pg.step("backup", "shop").opt("--store", prod.url()))
            .expect_ok("production backup");
        let prod_before: Vec<StoredObject> = prod.snapshot_bucket().unwrap();
        let prod_files_before = bucket_files(&env.s3, "prod-bucket");
        assert_eq!(prod_before.len(), 3, "{prod_before:#?}");

        // Staging restores production's latest backup.
        let restore = |target: &str| {
            pg.step("restore", target)
                .opt("--from-store", prod.url())
                .opt("--store", staging.url())
                .opt("--from-instance", PG_INSTANCE)
                .opt("--from-database", "shop")
        };
        env.run(&restore("shop_staging"))
            .expect_ok("staging restore from the production bucket");
        shop.assert_same(&pg.fingerprint("shop_staging").unwrap(), "shop vs staging");
        assert_eq!(
            prod.snapshot_bucket().unwrap(),
            prod_before,
            "the restore wrote to production"
        );
        assert_eq!(bucket_files(&env.s3, "prod-bucket"), prod_files_before);
        assert!(
            staging.keys().is_empty(),
            "a restore writes no backup: {:#?}",
            staging.keys()
        );

        // With read-only access (every write refused), it works the same.
        let proxy = FaultyProxy::start(env.s3.port()).unwrap();
        proxy.set_read_only(true);
        env.run(&restore("shop_readonly").opt("--s3-endpoint", proxy.endpoint()))
            .expect_ok("staging restore with read-only access to production");
        assert!(proxy.refused().is_empty(), "{:#?}", proxy.refused());
        assert!(
            proxy.requests().iter().any(|r| r.method == "GET"),
            "the restore did not go through the read-only endpoint"
        );
        shop.assert_same(
            &pg.fingerprint("shop_readonly").unwrap(),
            "shop vs read-only copy",
        );

        // Staging's own backup goes to the staging bucket only.
        env.run(
            &pg.step("backup", "shop_staging")
                .opt("--store", staging.url()),
        )
        .expect_ok("staging backup");
        let key = staging.pointer(PG_INSTANCE, "shop_staging").unwrap();
        check_key_layout(&key, PG_INSTANCE, "shop_staging", "pgdump").unwrap();
        staging.verify_manifest(&key, "postgres").unwrap();
        assert_eq!(
            prod.snapshot_bucket().unwrap(),
            prod_before,
            "the backup wrote to production"
        );
        assert_eq!(bucket_files(&env.s3, "prod-bucket"), prod_files_before);
        assert!(
            env.store.keys().is_empty(),
            "nothing goes to a bucket not named: {:#?}",
            env.store.keys()
        );
    });
}

// 8 ---------------------------------------------------------------------------------

#[test]
fn compression_follows_the_artifact_format() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        let restore_key = |key: &str, what: &str| {
            env.run(&env.probe_restore(&env.store).opt("--artifact", key))
                .expect_ok(what);
        };

        // The probe format is not compressed: zstd by default.
        env.run(&env.probe_backup(&env.store))
            .expect_ok("backup with the default compression");
        let zst = env.probe_pointer();
        check_key_layout(&zst, PROBE_INSTANCE, PROBE_DB, "probe.zst").unwrap();
        let manifest = env.store.verify_manifest(&zst, "sandbox-probe").unwrap();
        assert_eq!(
            manifest["compression"].as_str(),
            Some("zstd"),
            "{manifest:#}"
        );
        let stored = env.store.get(&zst).unwrap();
        assert!(
            stored.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]),
            "not a zstd frame"
        );
        assert!(
            stored.len() < 10_000,
            "100 kB of one repeated byte should compress: {} bytes",
            stored.len()
        );
        if let Some(plain) = decode_with("zstd", &stored) {
            assert!(plain.starts_with(PROBE_MAGIC));
            assert_eq!(plain.len(), PROBE_MAGIC.len() + 100_000);
        }
        restore_key(&zst, "restore of the zstd artifact");
        wait_for_next_second();

        env.run(&env.probe_backup(&env.store).opt("--compression", "gzip"))
            .expect_ok("backup with gzip");
        let gz = env.probe_pointer();
        check_key_layout(&gz, PROBE_INSTANCE, PROBE_DB, "probe.gz").unwrap();
        let manifest = env.store.verify_manifest(&gz, "sandbox-probe").unwrap();
        assert_eq!(
            manifest["compression"].as_str(),
            Some("gzip"),
            "{manifest:#}"
        );
        let stored = env.store.get(&gz).unwrap();
        assert!(stored.starts_with(&[0x1F, 0x8B]), "not a gzip stream");
        if let Some(plain) = decode_with("gzip", &stored) {
            assert!(plain.starts_with(PROBE_MAGIC));
            assert_eq!(plain.len(), PROBE_MAGIC.len() + 100_000);
        }
        restore_key(&gz, "restore of the gzip artifact");
        wait_for_next_second();

        env.run(&env.probe_backup(&env.store).opt("--compression", "none"))
            .expect_ok("backup without compression");
        let raw = env.probe_pointer();
        check_key_layout(&raw, PROBE_INSTANCE, PROBE_DB, "probe").unwrap();
        let manifest = env.store.verify_manifest(&raw, "sandbox-probe").unwrap();
        assert_eq!(
            manifest["compression"].as_str(),
            Some("none"),
            "{manifest:#}"
        );
        assert!(env.store.get(&raw).unwrap().starts_with(PROBE_MAGIC));
        restore_key(&raw, "restore of the uncompressed artifact");

        // A PostgreSQL custom-format dump is compressed already: never twice.
        let pg = sample_cluster();
        let pg_host = Host::built();
        let out = env.s3.run(
            &pg_host,
            &pg.step("backup", "shop")
                .opt("--store", env.store.url())
                .opt("--compression", "zstd"),
        );
        out.expect_ok("postgres backup asking for zstd");
        assert!(
            strip_ansi(&out.stderr).lines().any(|l| {
                let l = l.to_lowercase();
                l.contains("warn") && l.contains("compress")
            }),
            "no warning that the format is compressed already\n{out}"
        );
        let key = env.store.pointer(PG_INSTANCE, "shop").unwrap();
        check_key_layout(&key, PG_INSTANCE, "shop", "pgdump").unwrap();
        let manifest = env.store.verify_manifest(&key, "postgres").unwrap();
        assert_eq!(
            manifest["compression"].as_str(),
            Some("none"),
            "{manifest:#}"
        );
        assert!(env.store.get(&key).unwrap().starts_with(b"PGDMP"));
    });
}

// 9 ---------------------------------------------------------------------------------

/// A new age X25519 identity written to `dir/name` (mode 0600); returns the
/// file and the recipient (`age1…`).
fn new_identity(dir: &Path, name: &str) -> (PathBuf, String, age::x25519::Identity) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "# created by the envsync S3 suite\n# public key: {recipient}\n{}\n",
            identity.to_string().expose_secret()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (path, recipient, identity)
}

#[test]
fn encryption_to_age_recipients_round_trip_and_key_errors() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        let keys = tempfile::tempdir().unwrap();
        let (id_file, recipient, identity) = new_identity(keys.path(), "ops.key");
        let (other_file, other_recipient, _) = new_identity(keys.path(), "other.key");
        let (wrong_file, _, _) = new_identity(keys.path(), "wrong.key");

        env.run(&env.probe_backup(&env.store).opt("--encrypt-to", &recipient))
            .expect_ok("encrypted backup");
        let key = env.probe_pointer();
        check_key_layout(&key, PROBE_INSTANCE, PROBE_DB, "probe.zst.age").unwrap();
        let manifest = env.store.verify_manifest(&key, "sandbox-probe").unwrap();
        assert_eq!(manifest["encryption"].as_str(), Some("age"), "{manifest:#}");
        assert_eq!(
            manifest["compression"].as_str(),
            Some("zstd"),
            "{manifest:#}"
        );
        let stored = env.store.get(&key).unwrap();
        assert!(
            stored.starts_with(b"age-encryption.org/v1"),
            "the stored object is not an age file"
        );
        assert!(
            !stored.windows(PROBE_MAGIC.len()).any(|w| w == PROBE_MAGIC),
            "plaintext in the stored object"
        );
        // Compressed, then encrypted.
        let compressed = age::decrypt(&identity, &stored).expect("decrypts with the identity");
        assert!(
            compressed.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]),
            "not zstd inside"
        );
        if let Some(plain) = decode_with("zstd", &compressed) {
            assert!(plain.starts_with(PROBE_MAGIC));
        }

        env.run(
            &env.probe_restore(&env.store)
                .opt("--identity", id_file.display()),
        )
        .expect_ok("restore with the identity");
        env.run(
            &env.probe_restore(&env.store)
                .opt("--identity", wrong_file.display())
                .opt("--identity", id_file.display()),
        )
        .expect_ok("restore with the right identity among others");

        let out = env.run(
            &env.probe_restore(&env.store)
                .opt("--identity", wrong_file.display()),
        );
        out.expect_fail(
            &[exit::ARTIFACT_REJECTED],
            &["identit"],
            "restore with a wrong identity",
        );
        assert_error_mentions_any(&out, &[file_name(&key)], "the error names the object");
        let out = env.run(&env.probe_restore(&env.store));
        out.expect_fail(
            &[exit::USAGE],
            &["--identity"],
            "restore of an encrypted artifact without an identity",
        );

        // Several recipients from a file: any one identity decrypts.
        wait_for_next_second();
        let recipients = keys.path().join("recipients.txt");
        std::fs::write(
            &recipients,
            format!("# ops and the other team\n{recipient}\n\n{other_recipient}\n"),
        )
        .unwrap();
        env.run(
            &env.probe_backup(&env.store)
                .opt("--encrypt-to-file", recipients.display()),
        )
        .expect_ok("backup to recipients from a file");
        let second = env.probe_pointer();
        assert_ne!(second, key);
        env.run(
            &env.probe_restore(&env.store)
                .opt("--identity", other_file.display()),
        )
        .expect_ok("restore with the second recipient's identity");

        // Listings say what is encrypted.
        wait_for_next_second();
        env.run(&env.probe_backup(&env.store))
            .expect_ok("plain backup");
        let plain = env.probe_pointer();
        let out = env.run_args(&["backups", "list", "--store", &env.store.url(), "--json"]);
        out.expect_ok("backups list --json");
        let json = out.json();
        let entries = objects_with(&json, "key");
        let entry = |k: &str| {
            entries
                .iter()
                .find(|e| e["key"].as_str() == Some(k))
                .unwrap_or_else(|| panic!("{k} not listed\n{out}"))
        };
        for k in [&key, &second] {
            assert_eq!(
                entry(k)["manifest"]["encryption"].as_str(),
                Some("age"),
                "{out}"
            );
        }
        assert!(
            matches!(
                entry(&plain)["manifest"]["encryption"].as_str(),
                None | Some("none") | Some("")
            ),
            "{out}"
        );
        let human = env.run_args(&["backups", "list", "--store", &env.store.url()]);
        human.expect_ok("backups list");
        // The human listing has an encryption column; read it by its offset.
        let header = human
            .stdout
            .lines()
            .find(|l| l.to_lowercase().contains("encrypt"))
            .unwrap_or_else(|| panic!("the listing has no encryption column\n{human}"));
        let column = header.to_lowercase().find("encrypt").unwrap();
        let encryption_of = |k: &str| -> String {
            let line = human
                .stdout
                .lines()
                .find(|l| l.contains(k))
                .unwrap_or_else(|| panic!("{k} not listed\n{human}"));
            line.get(column..)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("")
                .to_lowercase()
        };
        for k in [&key, &second] {
            assert!(
                ["yes", "age", "true"].contains(&encryption_of(k).as_str()),
                "{k} is not shown as encrypted\n{human}"
            );
        }
        assert_ne!(
            encryption_of(&plain),
            encryption_of(&key),
            "the plain backup is shown as encrypted\n{human}"
        );
    });
}

// 10 --------------------------------------------------------------------------------

#[test]
fn prune_keeps_the_newest_the_young_and_always_the_pointer() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        let mut keys = vec![];
        for i in 0..4 {
            if i > 0 {
                wait_for_next_second();
            }
            env.run(&env.probe_backup(&env.store))
                .expect_ok(&format!("backup {i}"));
            keys.push(env.probe_pointer());
        }
        let unique: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), 4, "{keys:#?}");
        assert_eq!(env.store.artifact_keys(), keys);
        let prune = |extra: &[&str]| {
            let url = env.store.url();
            let mut args = vec![
                "backups",
                "prune",
                "--store",
                &url,
                "--instance",
                PROBE_INSTANCE,
                "--database",
                PROBE_DB,
            ];
            args.extend_from_slice(extra);
            env.run_args(&args)
        };
        let all = env.store.keys();

        let dry = prune(&["--keep-last", "2", "--keep-days", "0", "--dry-run"]);
        dry.expect_ok("prune --dry-run");
        assert_eq!(env.store.keys(), all, "a dry run deleted something\n{dry}");
        for k in &keys[..2] {
            assert!(
                dry.stdout.contains(k.as_str()),
                "the dry run does not list {k}\n{dry}"
            );
        }

        // Young enough: nothing goes (kept if among the newest N *or* younger than D days).
        prune(&["--keep-last", "1", "--keep-days", "30"]).expect_ok("prune keeping 30 days");
        assert_eq!(
            env.store.keys(),
            all,
            "backups younger than --keep-days were deleted"
        );

        let out = prune(&["--keep-last", "2", "--keep-days", "0"]);
        out.expect_ok("prune --keep-last 2");
        assert_eq!(env.store.artifact_keys(), keys[2..].to_vec(), "{out}");
        let mut expected = vec![S3Store::pointer_key(PROBE_INSTANCE, PROBE_DB)];
        for k in &keys[2..] {
            expected.push(k.clone());
            expected.push(S3Store::manifest_key(k));
        }
        expected.sort();
        assert_eq!(
            env.store.keys(),
            expected,
            "artifacts and manifests go together\n{out}"
        );

        // The pointer names an older backup: it is kept whatever the flags.
        env.store
            .set_pointer(PROBE_INSTANCE, PROBE_DB, &keys[2])
            .unwrap();
        let out = prune(&["--keep-last", "1", "--keep-days", "0"]);
        out.expect_ok("prune --keep-last 1 with the pointer on the older backup");
        assert_eq!(env.store.artifact_keys(), keys[2..].to_vec(), "{out}");
        let out = prune(&["--keep-last", "0", "--keep-days", "0"]);
        if out.code() != Some(exit::USAGE) {
            out.expect_ok("prune --keep-last 0");
            assert!(
                env.store.artifact_keys().contains(&keys[2]),
                "the pointer's backup was deleted\n{out}"
            );
            assert!(env.store.exists(&S3Store::manifest_key(&keys[2])));
        }
        assert_eq!(
            env.store.pointer(PROBE_INSTANCE, PROBE_DB),
            Some(keys[2].clone())
        );
        env.run(&env.probe_restore(&env.store))
            .expect_ok("the pointer's backup still restores");
    });
}

// 11 --------------------------------------------------------------------------------

/// Asserts that stderr holds no Debug rendering of an SDK error (nested
/// structs, raw responses): what a user reads must be sentences.
#[track_caller]
fn assert_no_debug_structures(out: &Output, what: &str) {
    for marker in [
        "{ source:",
        "Some(",
        "DispatchFailure(",
        "ProviderError(",
        "ConnectorError",
        "SdkBody",
        "kind: ",
        "ServiceError(",
    ] {
        assert!(
            !out.stderr.contains(marker),
            "{what}: stderr shows an SDK error in Debug form ({marker:?})\n{out}"
        );
    }
}

#[test]
fn wrong_or_missing_credentials_are_a_clear_error_and_write_nothing() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        let step = env.probe_backup(&env.store).opt("--compression", "none");

        let wrong = env
            .s3
            .env_with_keys(env.s3.access_key(), "wrong-secret-key");
        let out =
            env.host
                .run_command(env.s3.host_command_with_env(&env.host, step.args(), &wrong));
        out.expect_fail(
            &[exit::STEP_FAILED],
            &[
                &format!("cannot use S3 bucket {BUCKET}"),
                "refused the credentials",
                "AWS_SECRET_ACCESS_KEY",
            ],
            "backup with a wrong secret key",
        );
        assert_no_debug_structures(&out, "wrong secret key");
        let unknown = env
            .s3
            .env_with_keys("no-such-access-key", env.s3.secret_key());
        let out = env.host.run_command(env.s3.host_command_with_env(
            &env.host,
            step.args(),
            &unknown,
        ));
        out.expect_fail(
            &[exit::STEP_FAILED],
            &["refused the credentials", "AWS_ACCESS_KEY_ID"],
            "backup with an unknown access key",
        );
        assert_no_debug_structures(&out, "unknown access key");
        assert!(
            env.store
                .client()
                .list_objects(BUCKET, "")
                .unwrap()
                .is_empty()
        );
        env.assert_no_open_uploads("after a refused backup");

        // No credentials at all (no profile files, no instance metadata:
        // the harness isolates the host from the machine's AWS config).
        let none: Vec<(String, String)> = env
            .s3
            .env()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
            .collect();
        let out = env
            .host
            .run_command(env.s3.host_command_with_env(&env.host, step.args(), &none));
        out.expect_fail(
            &[exit::STEP_FAILED],
            &[
                "no AWS credentials for the S3 store s3://",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                "AWS_PROFILE",
            ],
            "backup without credentials",
        );
        assert_no_debug_structures(&out, "no credentials");
        assert!(
            env.store
                .client()
                .list_objects(BUCKET, "")
                .unwrap()
                .is_empty()
        );

        // A restore with the wrong key fails the same way.
        env.run(&step).expect_ok("backup with the right keys");
        let restore = env.probe_restore(&env.store);
        let out = env.host.run_command(env.s3.host_command_with_env(
            &env.host,
            restore.args(),
            &wrong,
        ));
        out.expect_fail(
            &[exit::STEP_FAILED],
            &["refused the credentials"],
            "restore with a wrong secret key",
        );
        assert_no_debug_structures(&out, "wrong secret key on restore");
    });
}

#[test]
fn missing_bucket_is_a_clear_error() {
    each_backend(|backend| {
        let env = s3_env(backend, probe_host());
        let missing = env.s3.store("no-such-bucket", "envsync");
        let out = env.run(&env.probe_backup(&missing));
        out.expect_fail(
            &[exit::STEP_FAILED],
            &[
                "cannot use S3 bucket no-such-bucket",
                "the bucket does not exist; create it or fix the store URL",
            ],
            "backup into a missing bucket",
        );
        assert_no_debug_structures(&out, "missing bucket");
        let out = env.run(&env.probe_restore(&missing));
        out.expect_fail(
            &[exit::STEP_FAILED],
            &["cannot use S3 bucket no-such-bucket", "does not exist"],
            "restore from a missing bucket",
        );
        assert!(
            !env.store
                .client()
                .list_buckets()
                .unwrap()
                .contains(&"no-such-bucket".to_string()),
            "the host created the bucket"
        );
    });
}

#[test]
fn an_unreachable_endpoint_is_a_clear_error() {
    let env = s3_env(Backend::available()[0], probe_host());
    // A port nothing listens on: taken from a listener that is then closed.
    let port = envsync_tests::ports::free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut vars = env.s3.env();
    for (k, v) in vars.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = endpoint.clone();
        }
    }
    let step = env.probe_backup(&env.store).opt("--compression", "none");
    let out = env
        .host
        .run_command(env.s3.host_command_with_env(&env.host, step.args(), &vars));
    out.expect_fail(
        &[exit::STEP_FAILED],
        &[
            &format!("cannot use S3 bucket {BUCKET} at {endpoint}"),
            "the S3 endpoint cannot be reached",
            "connection refused",
            "AWS_ENDPOINT_URL",
        ],
        "backup to an unreachable endpoint",
    );
    assert_no_debug_structures(&out, "unreachable endpoint");
}
