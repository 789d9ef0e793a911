//! What gets published is checked first, and a sanitiser's words stay out
//! of the host's output:
//! - a backup whose artifact the engine's own `check` refuses (the
//!   `sandbox-probe` fixture's `misbehave=garbage`) is not published, in a
//!   folder store (plain and encrypted) and in S3: the step fails naming the
//!   plugin, no new object is visible, the pointer still names the last good
//!   backup, and the next backup in the same process works;
//! - an S3 object already at an artifact's key is never overwritten, even
//!   when it appears while the upload runs (the test plants it mid-upload);
//! - a sanitiser's error text and stderr carrying a row value (a canary)
//!   reach none of the host's stdout, stderr, state files, history or status;
//! - a sanitiser's clocks do not move and its timers do not wait.

use std::path::Path;
use std::time::{Duration, Instant};

use envsync_host::capabilities::job::JobContext;
use envsync_host::connection::Connection;
use envsync_host::runtime::bindings::Operation;
use envsync_host::runtime::compile_cache::CompileCache;
use envsync_host::runtime::{LoadedPlugin, Runtime};
use envsync_host::step::{self, StepRequest};
use envsync_host::store::codec::Compression;
use envsync_tests::host_cli::{Expect, Host, Step, exit};
use envsync_tests::paths::{self, workspace_root};
use envsync_tests::plugin_folder::copy_plugins;
use envsync_tests::postgres::PgCluster;
use envsync_tests::process::Running;
use envsync_tests::s3::{Backend, S3Server};
use envsync_tests::store::LocalStore;

const INSTANCE: &str = "probe-host";
const DB: &str = "d";
const REFUSED: &str = "plugin sandbox-probe's backup wrote an artifact its own check refuses";

// Set-up --------------------------------------------------------------------------

fn probe_dir() -> std::path::PathBuf {
    let dir = paths::target_dir().join("test-plugins");
    assert!(
        dir.join("sandbox-probe.wasm").is_file(),
        "{} missing: run ./scripts/build.sh first",
        dir.display()
    );
    dir
}

fn backup_request(store: &str, misbehave: Option<&str>, encrypt_to: &[String]) -> StepRequest {
    let mut job = JobContext::default();
    job.connections.insert(
        "source".into(),
        Connection {
            database: DB.into(),
            ..Default::default()
        },
    );
    if let Some(mode) = misbehave {
        job.params.push(("misbehave".into(), mode.into()));
    }
    StepRequest {
        operation: Operation::Backup,
        job,
        store: Some(store.to_string()),
        from_store: None,
        read_only_stores: Vec::new(),
        store_options: Default::default(),
        compression: Some(Compression::Zstd { level: 3 }),
        encrypt_to: encrypt_to.to_vec(),
        identities: Vec::new(),
        instance: Some(INSTANCE.into()),
        from_instance: None,
        from_database: None,
        artifact: None,
        script: None,
        max_runtime: Duration::from_secs(20),
        memory_cap_mib: 64,
        allow_programs: None,
        stop: Default::default(),
        sanitise: None,
        progress: Default::default(),
        state_dir: None,
    }
}

async fn probe(runtime: &Runtime) -> LoadedPlugin {
    runtime
        .load(&probe_dir().join("sandbox-probe.wasm"))
        .await
        .expect("the probe plugin loads")
}

// A refused artifact is not published ---------------------------------------------

/// Good, garbage, good in one host process against a folder store, with
/// `encrypt_to` recipients (none: plain).
async fn garbage_is_not_published(encrypt_to: &[String]) {
    let runtime = Runtime::new(CompileCache::new(None)).unwrap();
    let plugin = probe(&runtime).await;
    let store = LocalStore::new().unwrap();
    let good = backup_request(&store.path_arg(), None, encrypt_to);
    let first = step::run(&runtime, &plugin, &good)
        .await
        .expect("good backup");
    let first_key = first.manifest.unwrap().key;
    assert_eq!(
        store.pointer(INSTANCE, DB).as_deref(),
        Some(first_key.as_str())
    );
    let before = store.files();

    envsync_tests::store::wait_for_next_second();
    let garbage = backup_request(&store.path_arg(), Some("garbage"), encrypt_to);
    let error = step::run(&runtime, &plugin, &garbage)
        .await
        .expect_err("a backup its own check refuses must fail");
    let message = format!("{error:#}");
    assert!(message.contains(REFUSED), "{message}");
    assert!(message.contains("not a probe artifact"), "{message}");
    assert!(message.contains("nothing was published"), "{message}");
    assert!(
        message.contains(&format!("latest still points at {first_key}")),
        "{message}"
    );
    assert_eq!(
        envsync_host::failure::exit_code(&error),
        exit::PLUGIN,
        "{message}"
    );
    assert_eq!(
        store.pointer(INSTANCE, DB).as_deref(),
        Some(first_key.as_str())
    );
    assert_eq!(store.files(), before, "the store changed");

    let next = step::run(&runtime, &plugin, &good)
        .await
        .expect("next backup");
    let next_key = next.manifest.unwrap().key;
    assert_ne!(next_key, first_key);
    assert_eq!(
        store.pointer(INSTANCE, DB).as_deref(),
        Some(next_key.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_its_own_check_refuses_is_not_published_in_a_folder_store() {
    garbage_is_not_published(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_its_own_check_refuses_is_not_published() {
    // The host holds only the recipient: the check sees the head as written.
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    garbage_is_not_published(&[recipient]).await;
}

#[test]
fn a_backup_its_own_check_refuses_is_not_published_in_s3() {
    let host = Host::built().with_plugin_dir(&probe_dir());
    let s3 = S3Server::start_backend(Backend::S3sFs).expect("start s3s-fs");
    s3.create_bucket("backups").unwrap();
    let store = s3.store("backups", "nightly");
    let backup = || {
        Step::new("sandbox-probe", "backup")
            .opt("--database", DB)
            .opt("--instance", INSTANCE)
            .opt("--store", store.url())
    };
    s3.run(&host, &backup()).expect_ok("good backup");
    let good = store.pointer(INSTANCE, DB).expect("a pointer");
    let before = store.keys();

    envsync_tests::store::wait_for_next_second();
    s3.run(&host, &backup().param("misbehave", "garbage"))
        .expect_fail(
            &[exit::PLUGIN],
            &[
                REFUSED,
                "nothing was published",
                &format!("latest still points at {good}"),
            ],
            "garbage backup",
        );
    assert_eq!(store.pointer(INSTANCE, DB).as_deref(), Some(good.as_str()));
    assert_eq!(store.keys(), before, "objects changed");
    assert!(s3.open_multipart_uploads("backups").unwrap().is_empty());
}

// S3 never overwrites -------------------------------------------------------------

/// An object planted at the key while the host uploads it (a multipart
/// upload of 96 MiB, so there is time): completing the upload is refused,
/// the planted object is unchanged, nothing is left open, and the pointer
/// does not move.
#[test]
fn an_s3_object_at_the_key_is_never_overwritten() {
    let host = Host::built().with_plugin_dir(&probe_dir());
    let s3 = S3Server::start_backend(Backend::S3sFs).expect("start s3s-fs");
    s3.create_bucket("backups").unwrap();
    let store = s3.store("backups", "nightly");
    let step = Step::new("sandbox-probe", "backup")
        .opt("--database", DB)
        .opt("--instance", INSTANCE)
        .opt("--store", store.url())
        .opt("--compression", "none")
        .param("write-mib", 96);
    let journal = s3.host_state_dir().join("s3-uploads");
    let mut running = Running::spawn(s3.host_command(&host, step.args()), None).unwrap();

    // The host's open-upload journal names the key as soon as the
    // multipart upload starts.
    let deadline = Instant::now() + Duration::from_secs(300);
    let key = loop {
        let entry = std::fs::read_dir(&journal)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| std::fs::read(e.path()).ok());
        // The entry may be caught half-written: read it again then.
        let open = entry.and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        if let Some(key) = open.as_ref().and_then(|o| o["key"].as_str()) {
            break key.to_string();
        }
        assert!(
            !running.has_exited().unwrap(),
            "the host finished before the test saw its upload"
        );
        assert!(
            Instant::now() < deadline,
            "no open upload in {}",
            journal.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let planted = b"an object someone else put here first".to_vec();
    s3.client().put_object("backups", &key, &planted).unwrap();

    let out = running.wait_timeout(Duration::from_secs(120));
    out.expect_fail(
        &[exit::STEP_FAILED],
        &["refusing to overwrite", "nothing was changed"],
        "backup over a planted object",
    );
    assert_eq!(s3.client().get_object("backups", &key).unwrap(), planted);
    assert_eq!(store.pointer(INSTANCE, DB), None);
    assert!(
        store.keys().iter().all(|k| !k.ends_with(".manifest.json")),
        "{:#?}",
        store.keys()
    );
    assert!(
        s3.open_multipart_uploads("backups").unwrap().is_empty(),
        "the refused upload was left open"
    );
}

// Sanitisers ----------------------------------------------------------------------

/// A row value no host output may ever contain.
const CANARY: &str = "CANARY-ROW-VALUE-6f0c1d";

/// A plugin folder with the built plugins and the hostile sanitiser.
fn host_with_hostile_sanitiser() -> Host {
    let host = Host::built();
    let dir = workspace_root().join("target/test-plugin-dir-publish-checks");
    let _ = std::fs::remove_dir_all(&dir);
    copy_plugins(host.plugin_dir(), &dir).unwrap();
    let hostile = workspace_root().join("target/test-plugins/hostile-sanitiser.wasm");
    assert!(hostile.exists(), "{} is not built", hostile.display());
    // In the sanitiser folder, under the name it describes itself by.
    std::fs::copy(&hostile, dir.join("sanitisers/hostile.wasm")).unwrap();
    host.with_plugin_dir(&dir)
}

/// A config folder: `env.toml` with one sanitised backup task per mode of
/// the hostile sanitiser, of database `notes` on `pg`.
fn hostile_config(dir: &Path, store: &LocalStore, pg: &PgCluster, modes: &[&str]) -> String {
    std::fs::write(dir.join("salt.key"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut text = format!(
        "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n",
        store.path_arg()
    );
    for mode in modes {
        std::fs::write(
            dir.join(format!("{mode}.toml")),
            format!("mode = \"{mode}\"\n"),
        )
        .unwrap();
        text.push_str(&format!(
            "\n[[task]]\nname = \"{mode}\"\nplugin = \"postgres\"\n[task.database]\n\
             host = \"{}\"\nport = {}\nuser = \"{}\"\nname = \"notes\"\n\
             [task.sanitise]\nsanitiser = \"hostile\"\nrules = \"{mode}.toml\"\nsalt_file = \"salt.key\"\n\
             call_timeout = \"10s\"\n[[task.step]]\nop = \"backup\"\n",
            pg.host(),
            pg.port(),
            pg.user()
        ));
    }
    let path = dir.join("env.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn notes_cluster(value: &str) -> PgCluster {
    let pg = PgCluster::start().unwrap();
    pg.create_database("notes").unwrap();
    pg.psql(
        "notes",
        &format!("CREATE TABLE notes (t text); INSERT INTO notes VALUES ('{value}'), ('world');"),
    )
    .unwrap();
    pg
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_sanitisers_row_values_never_reach_the_hosts_output() {
    let host = host_with_hostile_sanitiser();
    let pg = notes_cluster(CANARY);
    let store = LocalStore::new().unwrap();
    let files = tempfile::tempdir().unwrap();
    // A typed error from the sanitiser fails the step (1); a panic, whose
    // message lands on its stderr, is a trap (4).
    let modes = [
        ("error-canary", exit::STEP_FAILED),
        ("stderr-canary", exit::SANDBOX),
    ];
    let names: Vec<&str> = modes.iter().map(|(m, _)| *m).collect();
    let config = hostile_config(files.path(), &store, &pg, &names);
    for (mode, code) in modes {
        let out = host.run(&["run", "--config", &config, "--task", mode]);
        out.expect_fail(&[code], &["sanitiser hostile", "withheld"], mode);
        assert!(
            !out.stdout.contains(CANARY),
            "{mode}: canary on stdout\n{out}"
        );
        assert!(
            !out.stderr.contains(CANARY),
            "{mode}: canary on stderr\n{out}"
        );
        assert_eq!(
            store.pointer("127.0.0.1", "notes"),
            None,
            "{mode}: published"
        );
    }
    let state = files.path().join("state");
    for args in [vec!["status"], vec!["status", "--json"]] {
        let mut args: Vec<&str> = args;
        let state_arg = state.display().to_string();
        args.extend(["--state-dir", &state_arg]);
        let out = host.run(&args);
        out.expect_ok("status");
        assert!(
            out.stdout.contains("notes"),
            "status shows no run of notes\n{out}"
        );
        assert!(!out.stdout.contains(CANARY), "canary in status\n{out}");
        assert!(!out.stderr.contains(CANARY), "canary in status\n{out}");
    }
    assert!(
        state.join("history.jsonl").is_file(),
        "no history in {}",
        state.display()
    );
    let leaked = files_containing(files.path(), CANARY);
    assert!(leaked.is_empty(), "canary in state files: {leaked:?}");
    let leaked = files_containing(store.root(), CANARY);
    assert!(leaked.is_empty(), "canary in the store: {leaked:?}");
}

#[test]
fn a_sanitisers_clocks_do_not_move_and_its_timers_do_not_wait() {
    let host = host_with_hostile_sanitiser();
    let pg = notes_cluster("hello");
    let store = LocalStore::new().unwrap();
    let files = tempfile::tempdir().unwrap();
    let config = hostile_config(files.path(), &store, &pg, &["clock-measure"]);
    // The sanitiser sleeps an hour per batch: only a timer that does not
    // wait lets the step finish within the 10 s per-call deadline.
    host.run(&["run", "--config", &config, "--task", "clock-measure"])
        .expect_ok("backup through clock-measure");
    pg.step("restore", "notes_copy")
        .opt("--store", store.path_arg())
        .opt("--from-database", "notes")
        .run(&host)
        .expect_ok("restore");
    let seen = pg
        .psql(
            "notes_copy",
            "SELECT string_agg(DISTINCT t, ',') FROM notes",
        )
        .unwrap();
    assert_eq!(seen, "stopped", "the sanitiser measured: {seen}");
}
