//! A hostile engine plugin (tests/fixtures/hostile-engine) tries to turn the
//! programs it declares into a shell, a file reader or writer, a password
//! leak, or processes that outlive the step. Canaries are planted where an
//! attacker would look — the host's environment (an AWS key, another task's
//! password), a file in the host's HOME, the task's own password — and none
//! may appear in the artifact, the store, the host's output or a file the
//! plugin names. Every attack ends with a clear error naming the plugin,
//! nothing published, and the next step works. The host runs as a separate
//! process (`envsync-host run`), against a real PostgreSQL that asks for a
//! password.

use envsync_tests::host_cli::{Host, Step, exit};
use envsync_tests::paths;
use envsync_tests::postgres::PgCluster;
use envsync_tests::process::Output;
use envsync_tests::procs::running_with_args;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CANARY_ENV: &str = "canary-env-5f1c0e";
const CANARY_AWS: &str = "canary-aws-9a7e21";
const CANARY_FILE: &str = "canary-file-31d4b8";
const CANARY_PASSWORD: &str = "canaryPw7c02aa";
const USER: &str = "backup_user";

struct World {
    pg: PgCluster,
    host: Host,
    home: tempfile::TempDir,
    store: tempfile::TempDir,
    _plugins: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let pg = PgCluster::start().expect("PostgreSQL starts");
        pg.require_password(USER, CANARY_PASSWORD).unwrap();
        pg.create_database("shop").unwrap();
        // The host's HOME holds the secrets a shell user would find there.
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("canary.txt"), CANARY_FILE).unwrap();
        std::fs::write(
            home.path().join(".pgpass"),
            format!("*:*:*:*:{CANARY_FILE}\n"),
        )
        .unwrap();
        let plugins = tempfile::tempdir().unwrap();
        let fixture = paths::target_dir()
            .join("test-plugins")
            .join("hostile-engine.wasm");
        assert!(
            fixture.is_file(),
            "{} missing: run ./scripts/build.sh",
            fixture.display()
        );
        std::fs::copy(&fixture, plugins.path().join("hostile-engine.wasm")).unwrap();
        World {
            host: Host::built().with_plugin_dir(plugins.path()),
            pg,
            home,
            store: tempfile::tempdir().unwrap(),
            _plugins: plugins,
        }
    }

    fn canary_file(&self) -> PathBuf {
        self.home.path().join("canary.txt")
    }

    /// A backup by the hostile plugin with `attack`, the task's password in
    /// ENVSYNC_DB_PASSWORD and canaries in the host's environment.
    fn backup(&self, attack: &str, extra: &[(&str, String)], allow: &[&str]) -> Output {
        let mut step = Step::new("hostile-engine", "backup")
            .opt("--database", "shop")
            .opt("--db-host", self.pg.host())
            .opt("--db-port", self.pg.port())
            .opt("--db-user", USER)
            .opt("--store", self.store.path().display())
            .opt("--compression", "none")
            .param("attack", attack)
            .param("canary-file", self.canary_file().display());
        for (k, v) in extra {
            step = step.param(k, v);
        }
        for program in allow {
            step = step.opt("--allow-program", program);
        }
        let mut cmd = self.host.command(step.args());
        cmd.env("HOME", self.home.path())
            .env("ENVSYNC_DB_PASSWORD", CANARY_PASSWORD)
            .env("ENVSYNC_CANARY", CANARY_ENV)
            .env("AWS_SECRET_ACCESS_KEY", CANARY_AWS)
            .env(
                "ENVSYNC_LOG",
                "debug,wasmtime=warn,cranelift=warn,cranelift_codegen=warn,wasmtime_cranelift=warn",
            );
        self.host.run_command(cmd)
    }

    /// Every byte the store holds.
    fn store_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in walk(self.store.path()) {
            all.extend(std::fs::read(entry).unwrap_or_default());
        }
        all
    }

    fn store_files(&self) -> Vec<PathBuf> {
        walk(self.store.path())
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_no_canary(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for canary in [CANARY_ENV, CANARY_AWS, CANARY_FILE, CANARY_PASSWORD] {
        assert!(
            !text.contains(canary),
            "{canary} leaked into {what}:\n{text}"
        );
    }
}

/// The attack failed: the step failed naming the plugin, the host printed
/// no canary, nothing was published.
#[track_caller]
fn assert_stopped(world: &World, attack: &str, out: &Output, why: &str) -> String {
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_ne!(
        out.code(),
        Some(exit::OK),
        "attack {attack} succeeded:\n{all}"
    );
    assert!(
        all.contains("hostile-engine"),
        "{attack}: the error names the plugin:\n{all}"
    );
    assert!(
        all.to_lowercase().contains(&why.to_lowercase()),
        "{attack}: expected {why:?} in:\n{all}"
    );
    assert_no_canary(&format!("the host's output for {attack}"), all.as_bytes());
    assert_no_canary(&format!("the store after {attack}"), &world.store_bytes());
    assert!(
        world
            .store_files()
            .iter()
            .all(|f| !f.to_string_lossy().contains("latest")),
        "{attack}: a pointer was published: {:?}",
        world.store_files()
    );
    all
}

/// Extra job parameters of an attack.
type Params = [(&'static str, String)];

#[test]
fn declared_programs_cannot_be_used_as_shells_file_tools_or_leaks() {
    let world = World::start();
    let target = world.home.path().join("written-by-plugin");
    let target_param = [("target-file", target.display().to_string())];
    let cases: &[(&str, &Params, &str)] = &[
        ("psql-shell-c", &[], "backslash command"),
        ("psql-shell-stdin", &[], "restricted"),
        ("psql-getenv", &[], "restricted"),
        ("psql-read-file", &[], "standard input"),
        ("psql-copy-file", &[], "restricted"),
        ("pg-dump-file", &target_param, "--file"),
        ("psql-write-file", &target_param, "restricted"),
        ("sqlite-shell", &[], "got nothing"),
        ("sqlite-readfile", &[], "got nothing"),
        ("sqlite-writefile", &target_param, "got nothing"),
        ("declared-sh", &[], "no confinement policy"),
    ];
    for (attack, extra, why) in cases {
        let out = world.backup(attack, extra, &[]);
        assert_stopped(&world, attack, &out, why);
        assert!(!target.exists(), "{attack} wrote {}", target.display());
    }
    // /proc is closed to children altogether (the host's pid is not known
    // before it starts; Landlock's ptrace scoping and the host being
    // non-dumpable close /proc/HOST/environ on top).
    let out = world.backup("proc-environ", &[("host-pid", "self".into())], &[]);
    assert_stopped(&world, "proc-environ", &out, "got nothing");
    // The largest of the hosts these attacks ran in; an upper bound, as it
    // also counts their programs and the harness's own (initdb, psql).
    let peak = children_peak_rss_mib();
    println!("peak RSS of envsync-host under the hostile engine: at most {peak} MiB");
    assert!(peak <= 150, "{peak} MiB");
}

/// The largest resident set of any child this test process waited for,
/// or of their own waited-for children (getrusage's RUSAGE_CHILDREN).
fn children_peak_rss_mib() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 / 1024
}

#[test]
fn credentials_go_only_to_the_task_connection() {
    let world = World::start();
    // A listener that would receive the password if a child came here.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    listener.set_nonblocking(true).unwrap();
    for (attack, why) in [
        ("pg-dump-elsewhere", "not allowed"),
        ("psql-conninfo-elsewhere", "host's to set"),
        ("mariadb-elsewhere", "not the step's connection"),
        ("mariadb-option-file", "not allowed"),
    ] {
        let out = world.backup(attack, &[("port", port.clone())], &[]);
        assert_stopped(&world, attack, &out, why);
        assert!(
            listener.accept().is_err(),
            "{attack}: a child connected to the other server"
        );
    }
    // A shell the operator allowed by name still reaches only the task's
    // port, runs no other program and reads no file outside its grant.
    for (attack, why) in [
        ("bash-connect", "permission denied"),
        ("bash-cat", "permission denied"),
        ("bash-read", "permission denied"),
    ] {
        let out = world.backup(attack, &[("port", port.clone())], &["bash"]);
        assert_stopped(&world, attack, &out, why);
        assert!(listener.accept().is_err(), "{attack}: bash connected");
    }
    // What an allowed program sees of its environment: no host variable
    // but PATH and the locale, HOME an empty folder of the step's, the
    // task's own credentials only.
    let out = world.backup("printenv", &[], &["printenv"]);
    assert_eq!(out.code(), Some(exit::OK), "{}\n{}", out.stdout, out.stderr);
    let artifact = world
        .store_files()
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "hostile"))
        .expect("the printenv artifact");
    let env = std::fs::read_to_string(&artifact).unwrap();
    for line in env.lines().skip(1) {
        let name = line.split('=').next().unwrap();
        assert!(
            [
                "PATH",
                "LANG",
                "LC_ALL",
                "LC_CTYPE",
                "LC_MESSAGES",
                "TZ",
                "HOME",
                "TMPDIR",
                "PGHOST",
                "PGPORT",
                "PGUSER",
                "PGPASSWORD"
            ]
            .contains(&name),
            "the child saw {line}"
        );
    }
    let home = env
        .lines()
        .find_map(|l| l.strip_prefix("HOME="))
        .expect("HOME is set");
    assert_ne!(Path::new(home), world.home.path());
    assert!(
        !Path::new(home).exists(),
        "the step's HOME is removed with the step"
    );
    assert!(
        env.contains(&format!("PGPASSWORD={CANARY_PASSWORD}")),
        "its own credentials: {env}"
    );
    for canary in [CANARY_ENV, CANARY_AWS, CANARY_FILE] {
        assert!(!env.contains(canary), "{canary} reached the child: {env}");
    }
    std::fs::remove_file(&artifact).unwrap();
}

#[test]
fn children_cannot_outlive_or_outnumber_the_step() {
    let world = World::start();
    // setsid: the allowed program may run, but it cannot start another.
    let out = world.backup("setsid", &[], &["setsid", "sleep"]);
    assert_stopped(&world, "setsid", &out, "got nothing");
    assert!(
        running_with_args(&["sleep", "876.5"]).is_empty(),
        "setsid's sleep runs"
    );
    // Hundreds at once: refused past the cap, and all gone after the step.
    let out = world.backup("many-children", &[], &["sleep"]);
    assert_stopped(
        &world,
        "many-children",
        &out,
        "most one step may run at once",
    );
    // Each sleeps 61.7 s unless killed (an odd length: the search is
    // machine-wide, and a plain `sleep 60` elsewhere once matched). Killed
    // children still need CPU to exit, at nice 10, so they have 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = running_with_args(&["sleep", "61.7"]);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = left
                .iter()
                .map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
                    format!("{pid}: {}", stat.unwrap_or_default().trim())
                })
                .collect();
            panic!("the step's children outlived it:\n{}", states.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next step of the same plugin works.
    let out = world.backup("none", &[], &[]);
    assert_eq!(out.code(), Some(exit::OK), "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn children_die_with_a_killed_host() {
    let world = World::start();
    let step = Step::new("hostile-engine", "backup")
        .opt("--database", "shop")
        .opt("--db-host", world.pg.host())
        .opt("--db-port", world.pg.port())
        .opt("--db-user", USER)
        .opt("--store", world.store.path().display())
        .param("attack", "hang");
    let mut cmd = world.host.command(step.args());
    cmd.env("ENVSYNC_DB_PASSWORD", CANARY_PASSWORD);
    let mut host = cmd.spawn().expect("envsync-host starts");
    let marker = ["select pg_sleep(765.4)"];
    let deadline = Instant::now() + Duration::from_secs(300);
    while running_with_args(&marker).is_empty() {
        assert!(Instant::now() < deadline, "psql never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGKILL: the host gets no chance to clean up; its children die with it.
    host.kill().unwrap();
    host.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running_with_args(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "psql outlived the killed host: {:?}",
            running_with_args(&marker)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        world
            .store_files()
            .iter()
            .all(|f| !f.to_string_lossy().contains("latest")),
        "nothing is published"
    );
}

/// Every attack of a sanitised backup tries to get a row into the artifact
/// around the sanitiser: as structure, as a name, as a column's kind, or
/// from the encoder's own sandbox. Each fails the step, nothing is
/// published, and the row appears nowhere.
#[test]
fn sanitised_backups_hold_only_what_the_sanitiser_returned() {
    let world = World::start();
    world
        .pg
        .psql(
            "shop",
            "CREATE TABLE users (email text, note text); \
             INSERT INTO users VALUES ('ann@realmail.test', 'x'); \
             GRANT SELECT ON users TO backup_user",
        )
        .unwrap();
    // The first-party sanitiser beside the hostile engine.
    let plugins = world.host.plugin_dir();
    std::fs::create_dir_all(plugins.join("sanitisers")).unwrap();
    std::fs::copy(
        paths::target_dir().join("plugins/sanitisers/sanitise.wasm"),
        plugins.join("sanitisers/sanitise.wasm"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[tables.users.columns]\nemail = \"fake_email\"\nnote = \"keep\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("salt.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    // Each in one stream, and the row attacks again with `jobs` set, where
    // the engine opts into a chunked backup sanitised in parallel.
    let attacks = [
        ("structure-full-dump", "schema alone", ""),
        ("structure-psql", "structure call", ""),
        ("rows-table-name", "did not list", ""),
        ("rows-ignore-refusal", "did not list", ""),
        ("rows-kinds", "back from", ""),
        ("encode-escape", "may not run", ""),
        ("rows-into-chunk", "only during a backup", ""),
        ("rows-table-name", "did not list", "jobs = 2\n"),
        ("rows-ignore-refusal", "did not list", "jobs = 2\n"),
        ("rows-kinds", "back from", "jobs = 2\n"),
        ("encode-escape", "may not run", "jobs = 2\n"),
        ("rows-into-chunk", "only during a backup", "jobs = 2\n"),
    ];
    for (attack, why, jobs) in attacks {
        let config = dir.path().join(format!("{attack}.toml"));
        std::fs::write(
            &config,
            format!(
                "[environment]\nname = \"staging\"\nstore = \"{store}\"\nstate_dir = \"state\"\n\n\
                 [[task]]\nname = \"shop\"\nplugin = \"hostile-engine\"\n{jobs}\
                 params = {{ attack = \"{attack}\" }}\n\
                 [task.database]\nhost = \"{host}\"\nport = {port}\nuser = \"{USER}\"\nname = \"shop\"\n\
                 password_env = \"ENVSYNC_DB_PASSWORD\"\n\
                 [task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"rules.toml\"\nsalt_file = \"salt.key\"\n\
                 strict = true\n\
                 [[task.step]]\nop = \"backup\"\n",
                store = world.store.path().display(),
                host = world.pg.host(),
                port = world.pg.port(),
            ),
        )
        .unwrap();
        let mut cmd = world.host.command(&[
            "run",
            "--config",
            &config.display().to_string(),
            "--task",
            "shop",
        ]);
        // The canaries of every other attack too: none may reach the
        // output or the store by way of a sanitised backup either.
        cmd.env("ENVSYNC_DB_PASSWORD", CANARY_PASSWORD)
            .env("HOME", world.home.path())
            .env("ENVSYNC_CANARY", CANARY_ENV)
            .env("AWS_SECRET_ACCESS_KEY", CANARY_AWS);
        let out = world.host.run_command(cmd);
        let all = assert_stopped(&world, attack, &out, why);
        if !jobs.is_empty() {
            assert!(
                all.contains("sanitiser instance(s) at once, into chunks"),
                "{attack}: not the chunked path:\n{all}"
            );
        }
        assert!(
            !all.contains("realmail.test"),
            "{attack}: the row reached the host's output:\n{all}"
        );
        assert!(
            !String::from_utf8_lossy(&world.store_bytes()).contains("realmail.test"),
            "{attack}: the unsanitised row reached the store"
        );
    }
}

/// `backups export` grants no connection: programs run only as offline
/// converters (pg_restore `-f -`), so an export cannot reach a database,
/// by option, conninfo, the step's connection or another program, nor
/// write a file; the export fails naming the plugin and leaves no output.
#[test]
fn an_export_cannot_reach_a_database() {
    let world = World::start();
    // A listener that would see a connection if a child came here, and the
    // real server, which must see none from the export either.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let ports = [
        listener.local_addr().unwrap().port().to_string(),
        world.pg.port().to_string(),
    ];
    let out_dir = tempfile::tempdir().unwrap();
    for port in &ports {
        for (attack, why) in [
            ("export-restore-into", "not allowed"),
            ("export-restore-conninfo", "not allowed"),
            ("export-connection", "has no source connection"),
            ("export-psql", "no offline form"),
            ("export-file", "only - (standard output)"),
        ] {
            let params = [
                ("export-attack", attack.to_string()),
                ("port", port.clone()),
            ];
            let backup = world.backup("export-plan", &params, &[]);
            assert_eq!(
                backup.code(),
                Some(exit::OK),
                "{}\n{}",
                backup.stdout,
                backup.stderr
            );
            let output = out_dir.path().join("export.sql");
            let store = world.store.path().display().to_string();
            let mut cmd = world.host.command(&[
                "backups",
                "export",
                "--store",
                store.as_str(),
                "--plugin",
                "hostile-engine",
                "--instance",
                world.pg.host(),
                "--database",
                "shop",
                "--output",
                output.to_str().unwrap(),
            ]);
            cmd.env("HOME", world.home.path())
                .env("PGPASSWORD", CANARY_PASSWORD)
                .env("PGHOST", world.pg.host())
                .env("PGPORT", world.pg.port().to_string())
                .env("AWS_SECRET_ACCESS_KEY", CANARY_AWS);
            let out = world.host.run_command(cmd);
            let all = format!("{}\n{}", out.stdout, out.stderr);
            assert_eq!(out.code(), Some(exit::SANDBOX), "{attack}:\n{all}");
            assert!(
                all.contains("hostile-engine"),
                "{attack}: names the plugin:\n{all}"
            );
            assert!(all.contains(why), "{attack}: expected {why:?} in:\n{all}");
            assert_no_canary(&format!("the output of export {attack}"), all.as_bytes());
            assert!(listener.accept().is_err(), "{attack}: a child connected");
            assert!(!output.exists(), "{attack}: an output was left");
            assert!(
                !Path::new("/tmp/envsync-export-attack").exists(),
                "{attack}: pg_restore wrote a file"
            );
        }
    }
}

/// The chunk calls and the transfer calls misused at the WIT boundary
/// (host/src/store/layout.rs unit-tests the name rule itself): every probe
/// gets a typed error (or the documented answer), never a host panic; the
/// chunks of the failed backup are gone, nothing else was written, nothing
/// was published.
#[test]
fn chunk_and_transfer_calls_refuse_misuse_with_typed_errors() {
    let world = World::start();
    let out = world.backup("chunks-backup", &[], &[]);
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code(), Some(exit::STEP_FAILED), "{all}");
    for expected in [
        "create ../x => invalid-param",
        "create a/b => invalid-param",
        "create .x => invalid-param",
        "create empty => invalid-param",
        "create 101 chars => invalid-param",
        "create control char => invalid-param",
        "create newline => invalid-param",
        "create dup => ok",
        "create dup again => invalid-param",
        "open in backup => denied",
        "contents in backup => ok 1",
        "rows-in of own chunk => ok false",
        "wait-any of nothing => invalid-param",
        "wait-any-within of nothing => invalid-param",
        "wait-any-within 100 ms of a 2 s transfer => ok None",
        "wait-any-within 60 s of a 2 s transfer => ok Some(0)",
        "wait after wait-any-within => ok true",
        "wait => Ok(",
        "wait again same => ok true",
        "wait-any twice listed => ok 0",
        "feed output => ok true",
        "write after feed => ok ()",
        "feed output again => ok false",
        "splice output => ok false",
        "dropped transfer => ok",
        "create past the limit at 10000 => denied",
    ] {
        assert!(all.contains(expected), "expected {expected:?} in:\n{all}");
    }
    assert!(!all.contains("panicked"), "{all}");
    // The failed backup left nothing: no chunk (they are deleted with it),
    // no file outside the artifact's `.chunks/` ever, no manifest, no pointer.
    let files = world.store_files();
    assert!(files.is_empty(), "the failed backup left {files:?}");
    let parent = world.store.path().parent().unwrap();
    assert!(!parent.join("x").exists() && !world.store.path().join("x").exists());

    // In a restore: no creating, and only the manifest's chunks open.
    let backup = world.backup("none", &[], &[]);
    assert_eq!(
        backup.code(),
        Some(exit::OK),
        "{}\n{}",
        backup.stdout,
        backup.stderr
    );
    let restore = Step::new("hostile-engine", "restore")
        .opt("--database", "shop")
        .opt("--db-host", world.pg.host())
        .opt("--db-port", world.pg.port())
        .opt("--db-user", USER)
        .opt("--store", world.store.path().display())
        .param("attack", "chunks-restore");
    let mut cmd = world.host.command(restore.args());
    cmd.env("ENVSYNC_DB_PASSWORD", CANARY_PASSWORD);
    let out = world.host.run_command(cmd);
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code(), Some(exit::STEP_FAILED), "{all}");
    for expected in [
        "create in restore => denied",
        "contents in restore => ok 0",
        "rows-in in restore => denied",
        "open unlisted => bad-artifact",
        "open ../x => bad-artifact",
        "open manifest => bad-artifact",
    ] {
        assert!(all.contains(expected), "expected {expected:?} in:\n{all}");
    }
}
