//! The sandbox: a plugin that spawns an undeclared program, loops forever,
//! allocates without end or panics is stopped with a clear error, and the
//! next step in the same host process works. Uses the `sandbox-probe`
//! fixture plugin (tests/fixtures/sandbox-probe) and the host as a library,
//! so "the same host process" is literal.

use envsync_host::capabilities::job::JobContext;
use envsync_host::connection::Connection;
use envsync_host::failure::exit_code;
use envsync_host::runtime::bindings::Operation;
use envsync_host::runtime::compile_cache::CompileCache;
use envsync_host::runtime::{LoadedPlugin, Runtime};
use envsync_host::step::{self, StepRequest};
use envsync_host::store::codec::Compression;
use envsync_tests::host_cli::{Expect, Host, exit};
use envsync_tests::paths;
use envsync_tests::procs::running_with_args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn probe_file() -> PathBuf {
    let path = paths::target_dir()
        .join("test-plugins")
        .join("sandbox-probe.wasm");
    assert!(
        path.is_file(),
        "{} missing: run ./scripts/build.sh first",
        path.display()
    );
    path
}

/// What the probe declares, named by the operator.
const PROBE_PROGRAMS: &[&str] = &["true", "sleep", "nice", "ionice"];

fn backup_request(store: &std::path::Path, misbehave: Option<&str>) -> StepRequest {
    let mut job = JobContext::default();
    job.connections.insert(
        "source".into(),
        Connection {
            database: "probe".into(),
            ..Default::default()
        },
    );
    if let Some(mode) = misbehave {
        job.params.push(("misbehave".into(), mode.into()));
    }
    StepRequest {
        operation: Operation::Backup,
        job,
        store: Some(store.display().to_string()),
        from_store: None,
        read_only_stores: Vec::new(),
        store_options: Default::default(),
        // Stored as written, so tests can read the artifact back directly.
        compression: Some(Compression::None),
        encrypt_to: Vec::new(),
        identities: Vec::new(),
        instance: Some("sandbox".into()),
        from_instance: None,
        from_database: None,
        artifact: None,
        script: None,
        max_runtime: Duration::from_secs(3),
        memory_cap_mib: 64,
        // The probe's programs have no host policy: they run only because
        // the operator names them (docs/security.md).
        allow_programs: Some(PROBE_PROGRAMS.iter().map(|p| p.to_string()).collect()),
        stop: Default::default(),
        sanitise: None,
        progress: Default::default(),
        state_dir: None,
    }
}

async fn load(runtime: &Runtime) -> LoadedPlugin {
    runtime
        .load(&probe_file())
        .await
        .expect("the probe plugin loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugin_is_stopped_and_the_host_carries_on() {
    let runtime = Runtime::new(CompileCache::new(None)).unwrap();
    let plugin = load(&runtime).await;
    let store = tempfile::tempdir().unwrap();

    let cases = [
        (
            "spawn-undeclared",
            "may not run \"sh\": it is not among the programs it declared",
        ),
        ("loop", "exceeded the step's maximum runtime of 3s"),
        ("alloc", "memory cap of 64 MiB reached"),
        ("panic", "the probe panicked on purpose"),
    ];
    for (mode, phrase) in cases {
        let started = Instant::now();
        let error = step::run(&runtime, &plugin, &backup_request(store.path(), Some(mode)))
            .await
            .expect_err(mode);
        let message = format!("{error:#}");
        assert_eq!(exit_code(&error), 4, "{mode}: exit code for {message}");
        assert!(
            message.contains(phrase),
            "{mode}: {message:?} should contain {phrase:?}"
        );
        assert!(
            message.contains("sandbox-probe"),
            "{mode}: the message names the plugin: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{mode} took {:?}",
            started.elapsed()
        );

        // The next step in this same process still works.
        let outcome = step::run(&runtime, &plugin, &backup_request(store.path(), None))
            .await
            .unwrap_or_else(|e| panic!("after {mode}: {e:#}"));
        let manifest = outcome.manifest.expect("a backup has a manifest");
        assert_eq!(manifest.size, 15 + 100_000);
    }

    // No failed step left a partial artifact or a manifest behind.
    let folder = store.path().join("sandbox");
    let names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "partials left: {names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".probe")).count(),
        cases.len(),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_can_refuse_a_declared_program() {
    let runtime = Runtime::new(CompileCache::new(None)).unwrap();
    let plugin = load(&runtime).await;
    let store = tempfile::tempdir().unwrap();

    let mut request = backup_request(store.path(), Some("spawn-declared"));
    step::run(&runtime, &plugin, &request)
        .await
        .expect("a declared, allowed program runs");

    request.allow_programs = Some(vec!["pg_dump".into()]);
    let error = step::run(&runtime, &plugin, &request)
        .await
        .expect_err("refused by the operator");
    let message = format!("{error:#}");
    assert_eq!(exit_code(&error), 4);
    assert!(message.contains("not allowed by the operator"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_cannot_set_credential_variables() {
    let runtime = Runtime::new(CompileCache::new(None)).unwrap();
    let plugin = load(&runtime).await;
    let store = tempfile::tempdir().unwrap();
    let error = step::run(
        &runtime,
        &plugin,
        &backup_request(store.path(), Some("spawn-declared-with-secret-env")),
    )
    .await
    .expect_err("PGPASSWORD is reserved");
    let message = format!("{error:#}");
    assert_eq!(exit_code(&error), 4, "{message}");
    assert!(
        message.contains("may not set environment variable PGPASSWORD"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_killed_at_the_deadline() {
    let runtime = Runtime::new(CompileCache::new(None)).unwrap();
    let plugin = load(&runtime).await;
    let store = tempfile::tempdir().unwrap();
    let mut request = backup_request(store.path(), Some("hang-in-child"));
    request.max_runtime = Duration::from_secs(2);
    let started = Instant::now();
    let error = step::run(&runtime, &plugin, &request)
        .await
        .expect_err("the deadline stops it");
    let message = format!("{error:#}");
    assert_eq!(exit_code(&error), 4, "{message}");
    assert!(message.contains("maximum runtime of 2s"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The child (`sleep 987.654`) is gone once the step has ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !running_with_args(&["sleep", "987.654"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sleep 987.654 still runs after the deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_run_at_low_cpu_and_io_priority() {
    let runtime = Runtime::new(CompileCache::new(None)).unwrap();
    let plugin = load(&runtime).await;
    let store = tempfile::tempdir().unwrap();
    let outcome = step::run(
        &runtime,
        &plugin,
        &backup_request(store.path(), Some("priority")),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let key = outcome.manifest.unwrap().key;
    let report = std::fs::read_to_string(store.path().join(key)).unwrap();
    let mut lines = report.lines().skip(1); // the probe's magic line
    assert_eq!(
        lines.next(),
        Some("10"),
        "nice level of the child: {report}"
    );
    assert_eq!(
        lines.next(),
        Some("best-effort: prio 6"),
        "I/O class of the child: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_plugins_are_cached_between_starts() {
    let cache = tempfile::tempdir().unwrap();
    let first = Runtime::new(CompileCache::new(Some(cache.path().to_path_buf()))).unwrap();
    assert!(!load(&first).await.from_cache, "the first start compiles");
    drop(first);
    let second = Runtime::new(CompileCache::new(Some(cache.path().to_path_buf()))).unwrap();
    assert!(
        load(&second).await.from_cache,
        "the second start loads the compiled plugin"
    );

    // A damaged cache entry is ignored and rebuilt, never trusted.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = Runtime::new(CompileCache::new(Some(cache.path().to_path_buf()))).unwrap();
    assert!(!load(&third).await.from_cache);
}

#[test]
fn broken_plugin_files_are_reported_and_do_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(probe_file(), dir.path().join("sandbox-probe.wasm")).unwrap();
    std::fs::write(dir.path().join("garbage.wasm"), b"\0asm but not really").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let host = Host::built().with_plugin_dir(dir.path());

    let out = host.run(&["plugins", "list", "--json"]);
    out.expect_ok("plugins list");
    let listed = out.json();
    let names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sandbox-probe"]);
    let broken = listed["broken"].as_array().unwrap();
    assert_eq!(broken.len(), 1, "{listed}");
    assert!(
        broken[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("garbage.wasm")
    );

    // Asking for a plugin that is not there names what is, and the broken file.
    host.run(&["plugins", "inspect", "mysql"]).expect_fail(
        &[exit::PLUGIN],
        &["no plugin named \"mysql\"", "sandbox-probe", "garbage.wasm"],
        "inspect missing",
    );

    // The good plugin still runs.
    let store = tempfile::tempdir().unwrap();
    host.run(&[
        "run",
        "--plugin",
        "sandbox-probe",
        "--op",
        "backup",
        "--database",
        "d",
        "--store",
        &store.path().display().to_string(),
    ])
    .expect_ok("backup with the good plugin");
}

/// A one-request HTTP server on 127.0.0.1 that answers `200 hello` and
/// records the request head it got; a double of a cluster (no search server
/// is needed to prove what the host lets through).
struct OneShotServer {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl OneShotServer {
    fn start() -> OneShotServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                );
            }
        });
        OneShotServer { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn http_request(store: &std::path::Path, port: u16, params: &[(&str, &str)]) -> StepRequest {
    let mut request = backup_request(store, Some("http"));
    let source = request.job.connections.get_mut("source").unwrap();
    source.host = Some("127.0.0.1".into());
    source.port = Some(port);
    source.user = Some("elastic".into());
    source.password = Some(envsync_host::connection::Secret::new("s3cret".into()));
    for (k, v) in params {
        request.job.params.push((k.to_string(), v.to_string()));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_goes_only_to_the_task_connection_with_host_side_credentials() {
    let runtime = Runtime::new(CompileCache::new(None)).unwrap();
    let plugin = load(&runtime).await;
    let store = tempfile::tempdir().unwrap();
    let cluster = OneShotServer::start();
    let elsewhere = OneShotServer::start();

    // Allowed: a path on the step's own connection; the host adds the
    // credentials (the plugin never has them).
    let ok = step::run(
        &runtime,
        &plugin,
        &http_request(
            store.path(),
            cluster.port,
            &[("http-path", "/_cluster/health")],
        ),
    )
    .await
    .expect("a request to the task's cluster");
    assert!(ok.summary.contains("backed up"), "{}", ok.summary);
    let requests = cluster.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("GET /_cluster/health "),
        "{}",
        requests[0]
    );
    // base64("elastic:s3cret")
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("authorization: basic zwxhc3rpyzpzm2nyzxq="),
        "{}",
        requests[0]
    );

    // Refused before any connection: an absolute URL to another host, a
    // role the step does not have, a forged authorization header.
    for (params, phrase) in [
        (
            vec![("http-path", format!("http://127.0.0.1:{}/", elsewhere.port))],
            "requests go only to the task's clusters",
        ),
        (
            vec![("http-path", format!("//127.0.0.1:{}/", elsewhere.port))],
            "requests go only to the task's clusters",
        ),
        (
            vec![("http-connection", "target".to_string())],
            "no \"target\" connection",
        ),
        (
            vec![("http-forge-auth", "1".to_string())],
            "set by the host",
        ),
    ] {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let err = step::run(
            &runtime,
            &plugin,
            &http_request(store.path(), cluster.port, &params),
        )
        .await
        .expect_err("a refused request fails the step");
        let msg = format!("{err:#}");
        assert!(msg.contains(phrase), "{params:?}: {msg}");
        assert_eq!(exit_code(&err), exit::SANDBOX, "{msg}");
    }
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    assert_eq!(
        cluster.requests().len(),
        1,
        "a refused request reached the cluster"
    );
}
