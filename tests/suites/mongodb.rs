//! MongoDB end to end: `envsync-host` with the mongodb plugin against
//! throwaway SecantusDB servers (a MongoDB-compatible server on WiredTiger,
//! PyPI `secantusdb`) through mongosh, with folder and S3 stores.
//!
//! The sample: three collections — `events` (100,000 documents in the
//! round trip; a compound and a TTL index), `users` (a validator, a unique
//! and a partial index) and `types` (one value of every BSON type the issue
//! lists, nested arrays included).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use envsync_tests::host_cli::{Expect, Host, Step, exit};
use envsync_tests::mongo::MongoServer;
use envsync_tests::plugin_folder::PluginFolder;
use envsync_tests::postgres::PgCluster;
use envsync_tests::s3::S3Server;
use envsync_tests::store::LocalStore;
use serde_json::Value;

const DB: &str = "shop";
const INSTANCE: &str = "127.0.0.1";

/// Creates the sample in `db` of `server` with `events` documents.
fn load_sample(server: &MongoServer, db: &str, events: u32) {
    let script = format!(
        r#"
db.dropDatabase();
db.createCollection('users', {{
  validator: {{ $jsonSchema: {{ bsonType: 'object', required: ['email'],
    properties: {{ email: {{ bsonType: 'string' }} }} }} }},
  validationLevel: 'strict', validationAction: 'error' }});
const users = [];
for (let i = 0; i < 1000; i++) {{
  users.push({{ _id: i, email: 'Person' + i + '@Example.org', name: 'Person ' + i,
    score: i % 7 === 0 ? null : i * 1.5, tags: ['t' + (i % 3), 'all'] }});
}}
db.users.insertMany(users);
db.users.createIndex({{ email: 1 }}, {{ unique: true }});
db.users.createIndex({{ score: 1 }}, {{ name: 'score_partial', partialFilterExpression: {{ score: {{ $gt: 100 }} }} }});
db.types.insertOne({{
  _id: 'every-type',
  oid: ObjectId('65a1b2c3d4e5f60718293a4b'),
  date: new Date(1700000000123),
  decimal: NumberDecimal('1234.5600'),
  int64: NumberLong('9007199254740993'),
  int32: NumberInt(7),
  double: 2.5,
  binary: BinData(0, 'AAECAwQF'),
  uuid: UUID('0123456789abcdef0123456789abcdef'),
  timestamp: Timestamp({{ t: 1700000000, i: 3 }}),
  regex: /ab+c/im,
  nested: [[1, [2, [NumberLong('3')]]], {{ a: [{{ b: NumberDecimal('0.1'), c: NumberLong('-4') }}] }}, []],
  nothing: null,
  yes: true,
  min: MinKey(),
  max: MaxKey(),
  code: Code('function () {{ return 1; }}'),
  text: 'ünïcode "quoted" \n new line',
}});
db.events.createIndex({{ user: 1, at: -1 }});
db.events.createIndex({{ expires: 1 }}, {{ expireAfterSeconds: 3600 }});
for (let b = 0; b < {events}; b += 10000) {{
  const docs = [];
  for (let i = b; i < Math.min({events}, b + 10000); i++) {{
    docs.push({{ user: i % 1000, at: new Date(1700000000000 + i * 1000),
      expires: new Date(4102444800000), kind: 'k' + (i % 5), n: i }});
  }}
  db.events.insertMany(docs, {{ ordered: false }});
}}
print(db.events.countDocuments({{}}));
"#
    );
    let out = server.eval(db, &script).unwrap();
    assert_eq!(
        out.lines().last().unwrap_or("").trim(),
        events.to_string(),
        "sample loaded: {out}"
    );
}

/// Per collection: options, indexes, count and a SHA-256 of its documents
/// in canonical Extended JSON, in `_id` order.
fn snapshot(server: &MongoServer, db: &str) -> Value {
    server
        .json(
            db,
            r#"db.getCollectionInfos({type: 'collection'})
  .filter((c) => !c.name.startsWith('system.'))
  .sort((a, b) => (a.name < b.name ? -1 : 1))
  .map((c) => {
    const coll = db.getCollection(c.name);
    const hash = require('crypto').createHash('sha256');
    let count = 0;
    coll.find().sort({ _id: 1 }).batchSize(5000).forEach((d) => {
      hash.update(EJSON.stringify(d, { relaxed: false }) + '\n');
      count += 1;
    });
    const indexes = coll.getIndexes()
      .map((ix) => { const s = Object.assign({}, ix); delete s.ns; delete s.v; return s; })
      .sort((a, b) => (a.name < b.name ? -1 : 1));
    return { name: c.name, options: c.options, indexes, count, sha256: hash.digest('hex') };
  })"#,
        )
        .unwrap()
}

fn step(op: &str, server: &MongoServer, db: &str) -> Step {
    Step::new("mongodb", op)
        .opt("--database", db)
        .opt("--db-host", INSTANCE)
        .opt("--db-port", server.port)
}

fn host() -> Host {
    Host::built().with_timeout(Duration::from_secs(900))
}

/// A mongosh polling the document counts of `collections` until the file
/// `stop` exists, then printing what it saw. Each collection is counted at
/// most once per its interval (ms): a count is a full scan on SecantusDB
/// (11 s for 100,000 documents on a loaded 2-core machine, holding the
/// server), so counting a large collection back to back would starve the
/// restore being watched.
struct Reader {
    child: Child,
    stop: PathBuf,
    _dir: tempfile::TempDir,
}

impl Reader {
    fn start(server: &MongoServer, db: &str, collections: &[(&str, u32)]) -> Reader {
        let dir = tempfile::tempdir().unwrap();
        let stop = dir.path().join("stop");
        let every: serde_json::Map<String, Value> = collections
            .iter()
            .map(|(c, ms)| (c.to_string(), Value::from(*ms)))
            .collect();
        let script = format!(
            r#"const fs = require('fs');
const every = {every};
const seen = {{}}; const errors = []; let reads = 0; const last = {{}};
while (!fs.existsSync({stop:?})) {{
  for (const c of Object.keys(every)) {{
    if (last[c] !== undefined && Date.now() - last[c] < every[c]) continue;
    last[c] = Date.now();
    try {{
      const n = db.getCollection(c).countDocuments({{}});
      seen[c] = seen[c] || {{}};
      seen[c][n] = (seen[c][n] || 0) + 1;
      reads += 1;
    }} catch (e) {{ errors.push(c + ': ' + e.message); }}
  }}
  sleep(200);
}}
print(JSON.stringify({{ seen, errors, reads }}));"#,
            every = Value::Object(every),
            stop = stop.display().to_string(),
        );
        let child = Command::new("mongosh")
            .args(["--quiet", "--norc"])
            .arg(server.uri(db))
            .arg("--eval")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Reader {
            child,
            stop,
            _dir: dir,
        }
    }

    fn finish(mut self) -> Value {
        std::fs::write(&self.stop, "").unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the reader failed: {out}");
        serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
    }
}

#[test]
fn backup_to_folder_and_s3_restores_every_type_index_and_validator_with_readers_watching() {
    let host = host();
    let source = MongoServer::start().unwrap();
    load_sample(&source, DB, 100_000);
    let expected = snapshot(&source, DB);
    assert_eq!(expected.as_array().unwrap().len(), 3, "{expected:#}");

    // Folder store.
    let store = LocalStore::new().unwrap();
    step("backup", &source, DB)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("backup to a folder");
    let key = store.pointer(INSTANCE, DB).expect("a pointer");
    store.verify_manifest(&key, "mongodb").unwrap();

    // S3 store.
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("backups").unwrap();
    let s3_store = s3.store("backups", "mongo");
    s3.run(
        &host,
        &step("backup", &source, DB).opt("--store", s3_store.url()),
    )
    .expect_ok("backup to S3");
    assert!(s3_store.pointer(INSTANCE, DB).is_some());

    // Into an empty server, from the folder.
    let target = MongoServer::start().unwrap();
    step("restore", &target, DB)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("restore into an empty server");
    assert_eq!(snapshot(&target, DB), expected, "restored from the folder");

    // Over a modified database, from S3, with readers polling counts.
    target
        .eval(
            DB,
            "db.events.insertMany([{n: -1}, {n: -2}]); db.users.deleteMany({_id: {$lt: 10}}); \
             db.users.dropIndex('score_partial'); db.extra.insertOne({x: 1}); \
             db.runCommand({collMod: 'users', validator: {}});",
        )
        .unwrap();
    let reader = Reader::start(
        &target,
        DB,
        &[("events", 20_000), ("users", 1_000), ("types", 1_000)],
    );
    std::thread::sleep(Duration::from_secs(2));
    s3.run(
        &host,
        &step("restore", &target, DB).opt("--store", s3_store.url()),
    )
    .expect_ok("restore over a modified database from S3");
    std::thread::sleep(Duration::from_millis(500));
    let seen = reader.finish();
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "readers saw errors: {seen}"
    );
    let counts = |c: &str| -> Vec<u64> {
        let mut v: Vec<u64> = seen["seen"][c]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        v.sort();
        v
    };
    for (c, allowed) in [
        ("events", vec![100_000, 100_002]),
        ("users", vec![990, 1000]),
        ("types", vec![1]),
    ] {
        let got = counts(c);
        assert!(
            got.iter().all(|n| allowed.contains(n)),
            "readers of {c} saw a partial count: {got:?} (allowed {allowed:?}): {seen}"
        );
    }
    assert!(seen["reads"].as_u64().unwrap() > 10, "{seen}");
    assert_eq!(
        snapshot(&target, DB),
        expected,
        "restored over a modified one"
    );
    let leftovers = target
        .eval(DB, "print(db.getCollectionNames().join(','))")
        .unwrap();
    assert!(!leftovers.contains("__envsync"), "{leftovers}");
    assert!(!leftovers.contains("extra"), "{leftovers}");
}

/// A small sample, backed up uncompressed so the tests can alter it.
fn small_backup(host: &Host, server: &MongoServer, store: &LocalStore) -> String {
    load_sample(server, DB, 2000);
    step("backup", server, DB)
        .opt("--store", store.path_arg())
        .opt("--compression", "none")
        .run(host)
        .expect_ok("backup");
    store.pointer(INSTANCE, DB).expect("a pointer")
}

#[test]
fn corrupt_cut_foreign_and_mismatched_artifacts_are_refused_before_the_swap() {
    let host = host();
    let server = MongoServer::start().unwrap();
    let store = LocalStore::new().unwrap();
    let key = small_backup(&host, &server, &store);
    server
        .eval(
            DB,
            "db.users.updateOne({_id: 1}, {$set: {name: 'changed'}})",
        )
        .unwrap();
    let live = snapshot(&server, DB);
    let text = std::fs::read_to_string(store.artifact_path(&key)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let joined = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();

    let mut corrupt = lines.clone();
    corrupt[10] = "{\"_id\": not json";
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "corrupt",
            joined(&corrupt).into_bytes(),
            &["not Extended JSON"],
        ),
        (
            "cut",
            joined(&lines[..lines.len() / 2]).into_bytes(),
            &["cut off"],
        ),
        (
            "cut-mid-line",
            text.as_bytes()[..text.len() - 7].to_vec(),
            &["cut off"],
        ),
        (
            "foreign",
            b"PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01".repeat(30),
            &["not an envsync MongoDB artifact"],
        ),
    ];
    for (i, (what, bytes, phrases)) in cases.into_iter().enumerate() {
        let bad_key = format!("{INSTANCE}/2001-01-0{}T000000Z-{DB}.ejson", i + 1);
        store.put_artifact(&bad_key, &bytes, &key).unwrap();
        let out = step("restore", &server, DB)
            .opt("--store", store.path_arg())
            .opt("--artifact", &bad_key)
            .run(&host);
        out.expect_fail(
            &[exit::ARTIFACT_REJECTED],
            phrases,
            &format!("restore of a {what} artifact"),
        );
        assert_eq!(snapshot(&server, DB), live, "{what}: live data unchanged");
    }

    // The bytes no longer match the manifest's checksum.
    let path = store.artifact_path(&key);
    let tampered = text.replacen("Person 5", "Person 6", 1);
    assert_eq!(tampered.len(), text.len());
    std::fs::write(&path, tampered).unwrap();
    let out = step("restore", &server, DB)
        .opt("--store", store.path_arg())
        .opt("--artifact", &key)
        .run(&host);
    out.expect_fail(
        &[exit::ARTIFACT_REJECTED],
        &["sha256"],
        "restore of an artifact that does not match its manifest",
    );
    assert_eq!(snapshot(&server, DB), live, "checksum: live data unchanged");
    let names = server
        .eval(DB, "print(db.getCollectionNames().join(','))")
        .unwrap();
    assert!(!names.contains("__envsync"), "shadows removed: {names}");
}

#[test]
fn a_transform_failing_half_way_fails_the_step() {
    let host = host();
    let server = MongoServer::start().unwrap();
    load_sample(&server, DB, 10);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("redact.js");
    std::fs::write(
        &script,
        "db.users.updateMany({}, {$set: {legacy_url_path: '/redacted.pdf'}});\n\
         db.users.insertOne({_id: 1, email: 'duplicate@example.org'});\n\
         db.users.updateMany({}, {$set: {after: true}});\n",
    )
    .unwrap();
    step("transform", &server, DB)
        .opt("--script", script.display())
        .run(&host)
        .expect_fail(
            &[exit::STEP_FAILED],
            &["duplicate key"],
            "failing transform",
        );
    let state = server
        .json(
            DB,
            "({redacted: db.users.countDocuments({legacy_url_path: '/redacted.pdf'}), \
              after: db.users.countDocuments({after: true})})",
        )
        .unwrap();
    assert_eq!(state["redacted"]["$numberInt"], "1000", "{state}");
    assert_eq!(
        state["after"]["$numberInt"], "0",
        "stopped at the error: {state}"
    );

    std::fs::write(&script, "db.users.updateMany({}, {$set: {after: true}});\n").unwrap();
    step("transform", &server, DB)
        .opt("--script", script.display())
        .run(&host)
        .expect_ok("good transform");
    let after = server
        .json(DB, "db.users.countDocuments({after: true})")
        .unwrap();
    assert_eq!(after["$numberInt"], "1000");
}

/// `_id` → e-mail of `users`.
fn mongo_emails(server: &MongoServer, db: &str) -> Vec<(i64, String)> {
    let v = server
        .json(
            db,
            "db.users.find({}, {email: 1}).sort({_id: 1}).toArray().map((d) => [d._id, d.email])",
        )
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0]["$numberInt"].as_str().unwrap().parse().unwrap(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_sanitised_copy_masks_emails_as_the_sql_engines_do() {
    let host = host();
    let source = MongoServer::start().unwrap();
    let target = MongoServer::start().unwrap();
    load_sample(&source, DB, 100);
    let originals = mongo_emails(&source, DB);

    // The same people in PostgreSQL.
    let pg = PgCluster::start().unwrap();
    pg.create_database("crm").unwrap();
    let values: Vec<String> = originals
        .iter()
        .map(|(id, email)| format!("({id}, '{email}')"))
        .collect();
    pg.psql(
        "crm",
        &format!(
            "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL); INSERT INTO users VALUES {}",
            values.join(",")
        ),
    )
    .unwrap();
    pg.create_database("crm_masked").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[tables.users.columns]\nid = \"keep\"\nemail = \"fake_email\"\n\n\
         [documents.users]\n\"email\" = \"fake_email\"\n\"name\" = \"fake_name\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("salt.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let config = dir.path().join("env.toml");
    let sanitise = "[task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"rules.toml\"\n\
                    salt_file = \"salt.key\"\nallowed_email_domains = [\"example.com\"]\n";
    std::fs::write(
        &config,
        format!(
            "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n\n\
             [[task]]\nname = \"mongo\"\nplugin = \"mongodb\"\n{sanitise}\
             [task.source]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{DB}\"\n\
             [task.database]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{DB}\"\n\
             [[task.step]]\nop = \"copy\"\n\n\
             [[task]]\nname = \"pg\"\nplugin = \"postgres\"\n{sanitise}\
             [task.source]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\nname = \"crm\"\n\
             [task.database]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\nname = \"crm_masked\"\n\
             [[task.step]]\nop = \"copy\"\n",
            store.path_arg(),
            source.port,
            target.port,
            pg.host(),
            pg.port(),
            pg.user(),
            pg.host(),
            pg.port(),
            pg.user(),
        ),
    )
    .unwrap();
    for task in ["mongo", "pg"] {
        host.run(&[
            "run",
            "--config",
            &config.display().to_string(),
            "--task",
            task,
        ])
        .expect_ok(&format!("sanitised copy ({task})"));
    }

    let masked = mongo_emails(&target, DB);
    assert_eq!(masked.len(), originals.len());
    let pg_masked: Vec<(i64, String)> = pg
        .psql(
            "crm_masked",
            "SELECT id || '|' || email FROM users ORDER BY id",
        )
        .unwrap()
        .lines()
        .map(|l| {
            let (id, email) = l.split_once('|').unwrap();
            (id.parse().unwrap(), email.to_string())
        })
        .collect();
    assert_eq!(
        masked, pg_masked,
        "the same masks as PostgreSQL's for the same salt"
    );
    for ((_, original), (_, mask)) in originals.iter().zip(&masked) {
        assert_ne!(original, mask);
        assert!(
            mask.starts_with("user-") && mask.ends_with("@example.com"),
            "{mask}"
        );
    }
    // Unruled collections and fields pass as they are.
    let names = target
        .json(
            DB,
            "db.users.find().sort({_id: 1}).limit(3).toArray().map((d) => d.name)",
        )
        .unwrap();
    assert!(
        names
            .as_array()
            .unwrap()
            .iter()
            .all(|n| !n.as_str().unwrap().starts_with("Person ")),
        "names masked: {names}"
    );
    let types = |s: &MongoServer| s.json(DB, "db.types.findOne()").unwrap();
    assert_eq!(types(&target), types(&source));
}

/// A sanitised backup is written by the host from what the sanitiser kept
/// (format 2): restored, it masks like a sanitised copy with the same salt,
/// keeps every index, option and validator, and leaves the collections the
/// rules do not name byte for byte (field order included).
#[test]
fn a_sanitised_backup_restores_masked_documents_with_indexes_and_validators() {
    let host = host();
    let source = MongoServer::start().unwrap();
    let copied = MongoServer::start().unwrap();
    let restored = MongoServer::start().unwrap();
    load_sample(&source, DB, 3000);
    let originals = mongo_emails(&source, DB);

    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[documents.users]\n\"email\" = \"fake_email\"\n\"name\" = \"fake_name\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("salt.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let config = dir.path().join("env.toml");
    let task = |name: &str, op: &str, target: &MongoServer| {
        format!(
            "[[task]]\nname = \"{name}\"\nplugin = \"mongodb\"\n\
             [task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"rules.toml\"\n\
             salt_file = \"salt.key\"\nallowed_email_domains = [\"example.com\"]\n\
             [task.source]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{DB}\"\n\
             [task.database]\nhost = \"127.0.0.1\"\nport = {}\nname = \"{DB}\"\n\
             [[task.step]]\nop = \"{op}\"\n{}\n",
            source.port,
            target.port,
            // Plain text, so the test can read what the artifact holds.
            if op == "backup" {
                "compression = \"none\"\n"
            } else {
                ""
            },
        )
    };
    std::fs::write(
        &config,
        format!(
            "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n\n{}{}",
            store.path_arg(),
            task("copy", "copy", &copied),
            task("backup", "backup", &source),
        ),
    )
    .unwrap();
    for task in ["copy", "backup"] {
        host.run(&[
            "run",
            "--config",
            &config.display().to_string(),
            "--task",
            task,
        ])
        .expect_ok(&format!("sanitised {task}"));
    }
    let key = store.pointer(INSTANCE, DB).expect("a pointer");
    store.verify_manifest(&key, "mongodb").unwrap();
    let text = std::fs::read_to_string(store.artifact_path(&key)).expect("a text artifact");
    assert!(
        text.starts_with(r#"{"$envsync":"mongodb","format":2,"#),
        "{}",
        &text[..200]
    );
    for (_, email) in &originals {
        assert!(!text.contains(email.as_str()), "{email} in the artifact");
    }

    step("restore", &restored, DB)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("restore of the sanitised backup");

    let masked = mongo_emails(&restored, DB);
    assert_eq!(masked.len(), originals.len());
    assert_eq!(
        masked,
        mongo_emails(&copied, DB),
        "the same masks as a sanitised copy with the same salt"
    );
    for ((_, original), (_, mask)) in originals.iter().zip(&masked) {
        assert_ne!(original, mask);
    }
    let (before, after) = (snapshot(&source, DB), snapshot(&restored, DB));
    for (b, a) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["options"], b["options"], "options of {}", b["name"]);
        assert_eq!(a["indexes"], b["indexes"], "indexes of {}", b["name"]);
        assert_eq!(a["count"], b["count"], "count of {}", b["name"]);
        if b["name"] != "users" {
            assert_eq!(a, b, "a collection without rules comes back as it was");
        }
    }
    let keys = restored
        .json(DB, "Object.keys(db.users.findOne({_id: 5}))")
        .unwrap();
    assert_eq!(
        keys,
        serde_json::json!(["_id", "email", "name", "score", "tags"]),
        "masked documents keep their field order"
    );

    // A run missing a document (a whole line gone, manifest rewritten to
    // match) is refused by the loader before the swap.
    let live = snapshot(&restored, DB);
    let lines: Vec<&str> = text.lines().collect();
    let gone = lines
        .iter()
        .position(|l| l.starts_with(r#"{"_id""#))
        .expect("a document line");
    let short: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let bad_key = format!("{INSTANCE}/2001-01-01T000000Z-{DB}.ejson");
    store
        .put_artifact(&bad_key, short.as_bytes(), &key)
        .unwrap();
    step("restore", &restored, DB)
        .opt("--store", store.path_arg())
        .opt("--artifact", &bad_key)
        .run(&host)
        .expect_fail(
            &[exit::ARTIFACT_REJECTED],
            &["bad artifact"],
            "restore of a sanitised artifact missing a document",
        );
    assert_eq!(snapshot(&restored, DB), live, "live data unchanged");
}

#[test]
fn the_plugin_copied_alone_into_an_empty_folder_backs_up_and_restores() {
    let folder = PluginFolder::empty();
    let built = envsync_tests::paths::plugin_dir()
        .unwrap()
        .join("mongodb.wasm");
    folder.engine(&built, "mongodb.wasm");
    let host = host().with_plugin_dir(folder.path());
    let listed = host.run(&["plugins", "inspect", "mongodb"]);
    listed.expect_ok("inspect");
    for param in [
        "read-concern",
        "batch-size",
        "replica-set",
        "tls",
        "keep-other-collections",
    ] {
        assert!(listed.stdout.contains(param), "{param}: {listed}");
    }
    let source = MongoServer::start().unwrap();
    let target = MongoServer::start().unwrap();
    let store = LocalStore::new().unwrap();
    load_sample(&source, DB, 500);
    step("backup", &source, DB)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("backup");
    step("restore", &target, DB)
        .opt("--store", store.path_arg())
        .run(&host)
        .expect_ok("restore");
    assert_eq!(snapshot(&target, DB), snapshot(&source, DB));
    step("copy", &target, "other")
        .opt("--source-database", DB)
        .opt("--source-host", INSTANCE)
        .opt("--source-port", source.port)
        .run(&host)
        .expect_ok("copy");
    assert_eq!(snapshot(&target, "other"), snapshot(&source, DB));
}

/// Its metrics carry the label the dashboards and alert rules already use
/// for MongoDB (`database_engine="mongo"`, the plugin's declared
/// `metrics-engine`), not the plugin's name.
#[test]
fn a_configured_backup_pushes_metrics_as_the_mongo_engine() {
    let gw = envsync_tests::pushgateway::Pushgateway::start().expect("start a Pushgateway");
    let server = MongoServer::start().unwrap();
    load_sample(&server, DB, 100);
    let store = LocalStore::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("env.toml");
    std::fs::write(
        &config,
        format!(
            "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n\
             pushgateway = \"{}\"\n\n\
             [[task]]\nname = \"docs\"\nplugin = \"mongodb\"\n\
             [task.database]\nhost = \"{INSTANCE}\"\nport = {}\nname = \"{DB}\"\n\
             [[task.step]]\nop = \"backup\"\n",
            store.path_arg(),
            gw.url(),
            server.port,
        ),
    )
    .unwrap();
    host()
        .run(&[
            "run",
            "--config",
            &config.display().to_string(),
            "--task",
            "docs",
        ])
        .expect_ok("configured backup");
    let samples = gw.samples("db_backup_job_state").unwrap();
    let state = samples
        .iter()
        .find(|s| s.labels.get("operation").map(String::as_str) == Some("backup"))
        .unwrap_or_else(|| panic!("no backup state: {samples:#?}"));
    assert_eq!(
        state.labels.get("database_engine").map(String::as_str),
        Some("mongo"),
        "{state:#?}"
    );
    assert_eq!(state.value, 2.0, "{state:#?}");
}
