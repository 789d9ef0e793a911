//! Host memory stays bounded whatever a plugin does: sanitised PostgreSQL
//! backups through the hostile sanitiser (tests/fixtures/hostile-sanitiser)
//! in its memory-hungry modes, each run by its own `envsync-host` whose
//! peak resident memory is measured. Every one must fail with a clear error
//! naming the sanitiser, publish nothing, and keep the host's peak RSS at
//! or under 150 MiB; a good sanitised backup then works.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use envsync_tests::host_cli::{Expect, Host, exit};
use envsync_tests::paths::{fixture, workspace_root};
use envsync_tests::plugin_folder::copy_plugins;
use envsync_tests::postgres::PgCluster;
use envsync_tests::process::Output;
use envsync_tests::store::LocalStore;

const INSTANCE: &str = "127.0.0.1";
/// The bound on the host's peak resident memory under any hostile
/// plugin (with a 64 MiB sanitiser memory cap).
const PEAK_RSS_LIMIT_MIB: u64 = 150;

/// The built plugins plus the hostile sanitiser, in a folder of their own.
fn host_with_hostile_sanitiser() -> Host {
    let host = Host::built();
    let dir = workspace_root().join("target/test-plugin-dir-host-limits");
    let _ = std::fs::remove_dir_all(&dir);
    copy_plugins(host.plugin_dir(), &dir).unwrap();
    let hostile = workspace_root().join("target/test-plugins/hostile-sanitiser.wasm");
    assert!(
        hostile.exists(),
        "{} is not built: run scripts/build.sh",
        hostile.display()
    );
    // In the sanitiser folder, under the name it describes itself by.
    std::fs::copy(&hostile, dir.join("sanitisers/hostile.wasm")).unwrap();
    host.with_plugin_dir(&dir)
}

/// How one host process ended and the most memory it held.
struct Measured {
    output: Output,
    /// The host's own high-water mark (`VmHWM`), sampled until it exited.
    host_peak: u64,
    /// `ru_maxrss` from `wait4` on the host: the largest of the host and
    /// the programs it waited for (pg_dump), so an upper bound on the host.
    bound: u64,
}

/// Runs `envsync-host ARGS…` and measures its peak resident memory.
fn run_measured(host: &Host, args: &[&str], dir: &Path) -> Measured {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let mut cmd = host.command(args);
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let command = envsync_tests::process::describe(&cmd);
    let child = cmd.spawn().expect("starting envsync-host");
    let pid = child.id() as libc::pid_t;
    // `VmHWM` only grows; the last value read before the process exits is
    // its peak up to then. Reading stops when the status file loses it.
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while !done.load(Ordering::SeqCst) {
                if let Some(kib) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| vm_hwm_kib(&s))
                {
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // `wait4`, not `Child::wait`: it also gives the child's resource usage.
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; the pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    Measured {
        output: Output {
            command,
            status: Some(status),
            stdout: std::fs::read_to_string(&out_path).unwrap(),
            stderr: std::fs::read_to_string(&err_path).unwrap(),
        },
        host_peak: peak.load(Ordering::SeqCst) << 10,
        bound: (usage.ru_maxrss as u64) << 10,
    }
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The config: one sanitised backup task of `shop` per (name, sanitiser,
/// rules file), each with a 64 MiB sanitiser memory cap.
fn config(dir: &Path, store: &LocalStore, conn: &str, tasks: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = format!(
        "[environment]\nname = \"staging\"\nstore = \"{}\"\nstate_dir = \"state\"\n",
        store.path_arg()
    );
    for (name, sanitiser, rules) in tasks {
        text.push_str(&format!(
            "\n[[task]]\nname = \"{name}\"\nplugin = \"postgres\"\n[task.database]\n{conn}\n\
             [task.sanitise]\nsanitiser = \"{sanitiser}\"\nrules = \"{rules}\"\nsalt_file = \"salt.key\"\n\
             allowed_email_domains = [\"example.com\"]\nmemory_cap_mib = 64\ncall_timeout = \"20s\"\n\
             [[task.step]]\nop = \"backup\"\n",
        ));
    }
    let path = dir.join("env.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn hostile_sanitisers_cannot_make_the_host_hold_much_memory() {
    let host = host_with_hostile_sanitiser();
    let pg = PgCluster::start().unwrap();
    pg.create_database("shop").unwrap();
    pg.load_sql_file("shop", &fixture("sanitise/postgres.sql"))
        .unwrap();
    let store = LocalStore::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("sanitise/rules.toml"),
        dir.path().join("rules.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("salt.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    // What each mode does and what its error must say.
    let modes: &[(&str, &str, &[&str])] = &[
        // Answers a batch of a few KiB with three lists naming one 48 MiB
        // region: 144 MiB to copy, were it copied.
        (
            "amplify",
            "mode = \"amplify\"\namplify_mib = 48\n",
            &[
                "sanitiser hostile",
                "transform-rows of table",
                "more than the host accepts",
                "refused before the host copied it",
            ],
        ),
        // Allocates and touches memory until the cap stops it.
        (
            "alloc",
            "mode = \"alloc\"\n",
            &["sanitiser hostile", "memory cap of 64 MiB reached"],
        ),
        // Answers rows of another width.
        (
            "reshape",
            "mode = \"reshape\"\n",
            &["sanitiser hostile", "never reshaped"],
        ),
    ];
    let mut tasks = Vec::new();
    for (mode, rules, _) in modes {
        let file = format!("hostile-{mode}.toml");
        std::fs::write(dir.path().join(&file), rules).unwrap();
        tasks.push((mode.to_string(), "hostile", file));
    }
    tasks.push(("good".into(), "sanitise", "rules.toml".into()));
    let conn = format!(
        "host = \"{}\"\nport = {}\nuser = \"{}\"\nname = \"shop\"",
        pg.host(),
        pg.port(),
        pg.user()
    );
    let task_refs: Vec<(&str, &str, &str)> = tasks
        .iter()
        .map(|(n, s, r)| (n.as_str(), *s, r.as_str()))
        .collect();
    let config = config(dir.path(), &store, &conn, &task_refs);
    let config = config.display().to_string();

    for (mode, _, phrases) in modes {
        let run = run_measured(
            &host,
            &["run", "--config", &config, "--task", mode],
            dir.path(),
        );
        println!(
            "host peak RSS under {mode}: {} MiB (wait4 bound, pg_dump included: {} MiB)",
            run.host_peak >> 20,
            run.bound >> 20
        );
        // Every limit a sanitiser breaks is the sandbox's to report.
        run.output.expect_fail(
            &[exit::SANDBOX],
            phrases,
            &format!("a backup through the hostile sanitiser ({mode})"),
        );
        assert!(run.host_peak > 0, "{mode}: VmHWM was never read");
        let peak = run.host_peak.max(run.bound);
        assert!(
            peak <= PEAK_RSS_LIMIT_MIB << 20,
            "{mode}: the host's peak RSS reached {} MiB (over {PEAK_RSS_LIMIT_MIB} MiB)\n{}",
            peak >> 20,
            run.output
        );
        assert_eq!(
            store.pointer(INSTANCE, "shop"),
            None,
            "{mode}: the pointer moved"
        );
        assert!(
            store.visible_files().is_empty(),
            "{mode}: {:#?}",
            store.visible_files()
        );
    }

    // The same database, config and store: a good sanitised backup works.
    let run = run_measured(
        &host,
        &["run", "--config", &config, "--task", "good"],
        dir.path(),
    );
    run.output
        .expect_ok("a backup through the first-party sanitiser after the hostile ones");
    println!(
        "host peak RSS of a good sanitised backup: {} MiB",
        run.host_peak >> 20
    );
    assert!(store.pointer(INSTANCE, "shop").is_some());
}
