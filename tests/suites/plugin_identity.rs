//! The operator decides what a plugin file is and which name it answers
//! to, never the file: engine plugins are `NAME.wasm` in the plugin folder,
//! sanitisers `sanitisers/NAME.wasm`. A file in the sanitiser folder that
//! exports the engine world is refused before it runs, and a task naming it
//! fails naming the file; a sanitiser in the engine folder is refused; a file
//! whose own name is not its file name is refused, and every file claiming a
//! name another file claims is refused, each refusal naming all of them. The
//! first-party layout (postgres engine, sanitise sanitiser) works.
//!
//! The hostile files are the `sandbox-probe` fixture (an engine plugin that
//! describes itself as `sandbox-probe`) and the first-party `sanitise`
//! sanitiser, put where they do not belong.

use std::path::{Path, PathBuf};

use envsync_tests::host_cli::{Expect, Host, PRECOMPILE_TIMEOUT, Step, exit};
use envsync_tests::paths::{fixture, target_dir};
use envsync_tests::plugin_folder::{PluginFolder, SANITISERS, test_plugin};
use envsync_tests::postgres::PgCluster;
use envsync_tests::process::Output;
use envsync_tests::store::LocalStore;
use serde_json::Value;

/// A built first-party plugin file: `target/plugins/[sanitisers/]NAME.wasm`.
#[track_caller]
fn first_party(relative: &str) -> PathBuf {
    let path = target_dir().join("plugins").join(relative);
    assert!(
        path.is_file(),
        "{} missing: run ./scripts/build.sh first",
        path.display()
    );
    path
}

/// `plugins list --json` of `host`.
#[track_caller]
fn list(host: &Host) -> Value {
    let out = host.run(&["plugins", "list", "--json"]);
    out.expect_ok("plugins list --json");
    out.json()
}

/// The names listed under `key` ("plugins" or "sanitisers").
fn names(listed: &Value, key: &str) -> Vec<String> {
    listed[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// The refusal of `file` in `listed`: its role and reason.
#[track_caller]
fn refusal(listed: &Value, file: &Path) -> (String, String) {
    let broken = listed["broken"].as_array().unwrap();
    let entry = broken
        .iter()
        .find(|b| Path::new(b["file"].as_str().unwrap()) == file)
        .unwrap_or_else(|| panic!("{} is not refused: {listed:#}", file.display()));
    (
        entry["role"].as_str().unwrap().to_string(),
        entry["error"].as_str().unwrap().to_string(),
    )
}

/// A config with one sanitised backup task `shop` of the database `shop` on
/// `pg`, sanitised by the sanitiser `sanitiser` with the fixture rules.
fn sanitised_config(dir: &Path, store: &LocalStore, pg: &PgCluster, sanitiser: &str) -> PathBuf {
    std::fs::copy(fixture("sanitise/rules.toml"), dir.join("rules.toml")).unwrap();
    std::fs::write(dir.join("salt.key"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let text = format!(
        "[environment]\nname = \"staging\"\nstore = \"{store}\"\nstate_dir = \"state\"\n\n\
         [[task]]\nname = \"shop\"\nplugin = \"postgres\"\n\
         [task.database]\nhost = \"{host}\"\nport = {port}\nuser = \"{user}\"\nname = \"shop\"\n\
         [task.sanitise]\nsanitiser = \"{sanitiser}\"\nrules = \"rules.toml\"\nsalt_file = \"salt.key\"\n\
         allowed_email_domains = [\"example.com\"]\n\
         [[task.step]]\nop = \"backup\"\n",
        store = store.path_arg(),
        host = pg.host(),
        port = pg.port(),
        user = pg.user(),
    );
    let path = dir.join(format!("{sanitiser}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_task(host: &Host, config: &Path) -> Output {
    host.run(&[
        "run",
        "--config",
        &config.display().to_string(),
        "--task",
        "shop",
    ])
}

#[test]
fn the_first_party_layout_has_engines_in_the_folder_and_sanitisers_in_sanitisers() {
    let host = Host::built();
    let listed = list(&host);
    assert_eq!(listed["broken"].as_array().unwrap().len(), 0, "{listed:#}");
    let postgres = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "postgres")
        .unwrap_or_else(|| panic!("postgres is not listed: {listed:#}"));
    assert_eq!(postgres["role"], "engine");
    assert_eq!(
        Path::new(postgres["file"].as_str().unwrap()),
        host.plugin_dir().join("postgres.wasm")
    );
    assert_eq!(names(&listed, "sanitisers"), ["sanitise"], "{listed:#}");
    let sanitise = &listed["sanitisers"][0];
    assert_eq!(sanitise["role"], "sanitiser");
    assert_eq!(
        Path::new(sanitise["file"].as_str().unwrap()),
        host.plugin_dir().join(SANITISERS).join("sanitise.wasm")
    );
    let human = host.run(&["plugins", "list"]);
    human.expect_ok("plugins list");
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("sanitise ") && l.contains(" sanitiser ")),
        "the sanitiser's role is not shown\n{human}"
    );
}

#[test]
fn a_sanitiser_file_exporting_the_engine_world_is_refused_and_a_task_naming_it_fails() {
    let folder = PluginFolder::first_party();
    let hostile = folder.sanitiser(&test_plugin("sandbox-probe"), "sandbox-probe.wasm");
    let host = Host::built().with_plugin_dir(folder.path());

    let listed = list(&host);
    assert_eq!(names(&listed, "sanitisers"), ["sanitise"], "{listed:#}");
    assert!(
        !names(&listed, "plugins").contains(&"sandbox-probe".to_string()),
        "a file of the sanitiser folder became an engine plugin: {listed:#}"
    );
    let (role, reason) = refusal(&listed, &hostile);
    assert_eq!(role, "sanitiser");
    for phrase in [
        "in the sanitiser folder but exports the engine world",
        "envsync:plugin/operations",
        "sanitisers may only export envsync:plugin/sanitise",
    ] {
        assert!(reason.contains(phrase), "{phrase:?} not in {reason:?}");
    }

    // A sanitised backup naming it stops before anything runs: no
    // connection, nothing in the store.
    let pg = PgCluster::start().unwrap();
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("sanitise/postgres.sql"))
        .unwrap();
    let store = LocalStore::new().unwrap();
    let files = tempfile::tempdir().unwrap();
    let config = sanitised_config(files.path(), &store, &pg, "sandbox-probe");
    run_task(&host, &config).expect_fail(
        &[exit::PLUGIN],
        &[
            "no sanitiser named \"sandbox-probe\"",
            &hostile.display().to_string(),
            "exports the engine world",
        ],
        "a task naming a refused sanitiser",
    );
    assert_eq!(store.files(), Vec::<String>::new(), "something was stored");
    assert_eq!(store.pointer("127.0.0.1", "shop"), None);

    // The same folder's first-party sanitiser still works.
    let config = sanitised_config(files.path(), &store, &pg, "sanitise");
    let out = run_task(&host, &config);
    out.expect_ok("a sanitised backup with the first-party sanitiser");
    assert!(out.stdout.contains("sanitised"), "{out}");
    assert!(store.pointer("127.0.0.1", "shop").is_some(), "{out}");
}

#[test]
fn a_sanitiser_in_the_engine_folder_is_refused_and_told_where_it_belongs() {
    let folder = PluginFolder::empty();
    let misplaced = folder.engine(&first_party("sanitisers/sanitise.wasm"), "sanitise.wasm");
    folder.engine(&first_party("sqlite.wasm"), "sqlite.wasm");
    let host = Host::built().with_plugin_dir(folder.path());

    let listed = list(&host);
    assert_eq!(names(&listed, "plugins"), ["sqlite"], "{listed:#}");
    assert_eq!(names(&listed, "sanitisers"), Vec::<String>::new());
    let (role, reason) = refusal(&listed, &misplaced);
    assert_eq!(role, "engine");
    assert!(
        reason.contains("is a sanitiser")
            && reason.contains(&folder.sanitiser_dir().display().to_string()),
        "{reason}"
    );
}

#[test]
fn a_plugin_answers_to_its_file_name_and_a_contested_name_refuses_every_claimant() {
    let folder = PluginFolder::empty();
    let sqlite = folder.engine(&first_party("sqlite.wasm"), "sqlite.wasm");
    let impostor = folder.engine(&test_plugin("sandbox-probe"), "00-x.wasm");
    let host = Host::built().with_plugin_dir(folder.path());
    let store = LocalStore::new().unwrap();
    let probe_backup = || {
        Step::new("sandbox-probe", "backup")
            .opt("--database", "d")
            .opt("--store", store.path_arg())
            .run(&host)
    };

    // A file whose own name is not its file name.
    let listed = list(&host);
    assert_eq!(names(&listed, "plugins"), ["sqlite"], "{listed:#}");
    let (role, reason) = refusal(&listed, &impostor);
    assert_eq!(role, "engine");
    assert!(
        reason.contains("00-x.wasm describes itself as \"sandbox-probe\"")
            && reason.contains("rename the file to sandbox-probe.wasm"),
        "{reason}"
    );
    probe_backup().expect_fail(
        &[exit::PLUGIN],
        &["no plugin named \"sandbox-probe\"", "00-x.wasm", "rename"],
        "a plugin known only by a file of another name",
    );

    // Two files claiming one name: `plugins list` refuses both, each naming
    // both. A step loads only the file named for its plugin, so the impostor
    // is never even compiled by it.
    let rightful = folder.engine(&test_plugin("sandbox-probe"), "sandbox-probe.wasm");
    let listed = list(&host);
    assert_eq!(names(&listed, "plugins"), ["sqlite"], "{listed:#}");
    for file in [&impostor, &rightful] {
        let (role, reason) = refusal(&listed, file);
        assert_eq!(role, "engine");
        assert!(
            reason.contains("00-x.wasm and sandbox-probe.wasm both describe themselves as the engine plugin \"sandbox-probe\""),
            "{} : {reason}",
            file.display()
        );
    }
    assert_eq!(listed["broken"].as_array().unwrap().len(), 2, "{listed:#}");

    // The operator resolves it: the listing is clean again.
    std::fs::remove_file(&impostor).unwrap();
    let listed = list(&host);
    assert_eq!(
        names(&listed, "plugins"),
        ["sandbox-probe", "sqlite"],
        "{listed:#}"
    );
    assert_eq!(listed["broken"].as_array().unwrap().len(), 0, "{listed:#}");
    probe_backup().expect_ok("backup with the plugin once its name is its own");
    assert!(sqlite.is_file());
}

/// The `.cwasm` entries of a compile cache folder.
fn cache_entries(dir: &Path) -> Vec<String> {
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".cwasm"))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

#[test]
fn a_step_compiles_only_its_own_plugin_and_a_broken_file_of_another_stops_nothing() {
    let folder = PluginFolder::empty();
    folder.engine(&first_party("sqlite.wasm"), "sqlite.wasm");
    folder.engine(&first_party("postgres.wasm"), "postgres.wasm");
    let junk = folder.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm but not really").unwrap();
    folder.sanitiser(&first_party("sanitisers/sanitise.wasm"), "sanitise.wasm");
    let host = Host::built().with_plugin_dir(folder.path());
    let cache = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("shop.db");
    let made = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .status()
        .expect("run sqlite3 (installed by scripts/setup.sh)");
    assert!(made.success());
    let store = LocalStore::new().unwrap();

    let step = Step::new("sqlite", "backup")
        .opt("--database", "shop.db")
        .param("directory", data.path().display())
        .opt("--store", store.path_arg());
    let mut cmd = host.command(step.args());
    cmd.env("ENVSYNC_CACHE_DIR", cache.path());
    let out = host.run_command(cmd);
    out.expect_ok("a sqlite backup beside a broken junk.wasm");
    assert!(!store.files().is_empty(), "nothing stored: {out}");
    // One plugin compiled: sqlite's, not postgres, not the sanitiser, not junk.
    assert_eq!(
        cache_entries(cache.path()).len(),
        1,
        "{:?}",
        cache_entries(cache.path())
    );

    // Listing loads the whole folder and reports the broken file.
    let mut cmd = host.command(&["plugins", "list", "--json"]);
    cmd.env("ENVSYNC_CACHE_DIR", cache.path());
    let out = host.run_command(cmd);
    out.expect_ok("plugins list");
    let listed = out.json();
    assert_eq!(
        names(&listed, "plugins"),
        ["postgres", "sqlite"],
        "{listed:#}"
    );
    let (role, reason) = refusal(&listed, &junk);
    assert_eq!(role, "engine");
    assert!(reason.contains("junk.wasm"), "{reason}");
    assert_eq!(
        cache_entries(cache.path()).len(),
        3,
        "sqlite, postgres, sanitise"
    );

    // A step naming the broken file fails saying why.
    let mut cmd = host.command(
        Step::new("junk", "backup")
            .opt("--database", "d")
            .opt("--store", store.path_arg())
            .args(),
    );
    cmd.env("ENVSYNC_CACHE_DIR", cache.path());
    host.run_command(cmd).expect_fail(
        &[exit::PLUGIN],
        &["no plugin named \"junk\"", &junk.display().to_string()],
        "a step naming a broken plugin",
    );
}

#[test]
fn precompiled_plugins_are_used_without_compiling_and_need_a_folder_others_cannot_write() {
    let host = Host::built();
    let installed = tempfile::tempdir().unwrap();
    let into = installed.path().join("precompiled");
    let into_arg = into.display().to_string();
    let out =
        host.with_timeout(PRECOMPILE_TIMEOUT)
            .run(&["plugins", "precompile", "--into", &into_arg]);
    out.expect_ok("plugins precompile");
    let compiled = cache_entries(&into);
    assert!(compiled.len() >= 2, "{compiled:?}\n{out}");

    let cache = tempfile::tempdir().unwrap();
    let inspect = |installed: &Path| {
        let mut cmd = host.command(&["plugins", "inspect", "sqlite", "--json"]);
        cmd.env("ENVSYNC_CACHE_DIR", cache.path());
        cmd.env("ENVSYNC_PRECOMPILED_DIR", installed);
        host.run_command(cmd)
    };
    // Everything comes from the installed folder: the writable cache stays empty.
    inspect(&into).expect_ok("plugins inspect with precompiled plugins");
    assert_eq!(cache_entries(cache.path()), Vec::<String>::new());

    // A folder others can write is not trusted: compiled into the cache.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&into, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = inspect(&into);
    out.expect_ok("plugins inspect with an untrusted precompiled folder");
    assert!(out.stderr.contains("not using precompiled"), "{out}");
    assert!(!cache_entries(cache.path()).is_empty());
    assert_eq!(cache_entries(&into), compiled, "nothing there is deleted");
}
