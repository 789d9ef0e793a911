//! The one step-request builder. An ad-hoc step (`run --plugin … --op …`,
//! converted in `cli/run.rs`) and a configured task's step (`run --config`,
//! the daemon and `sanitise check`, converted in [`super::task`]) are both
//! described as [`StepInputs`]; [`build`] turns either into the
//! [`StepRequest`] that `step::run` executes, with the same defaults
//! (deadline per operation, memory cap, compression), the same checks and
//! the same errors.

use super::config::{DatabaseSpec, PasswordSource, SaltSource, SanitiseSpec, StepOp};
use crate::capabilities::job::JobContext;
use crate::connection::{Connection, Secret};
use crate::failure::{Failure, Kind};
use crate::runtime::sandbox::DEFAULT_MEMORY_CAP_MIB;
use crate::sanitiser::SanitiseOptions;
use crate::step::StepRequest;
use crate::store::StoreOptions;
use crate::store::codec::{self, Compression};
use anyhow::Result;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// Memory caps (MiB) accepted for a plugin or a sanitiser, on the command
/// line and in the config.
pub const MEMORY_CAP_MIB: RangeInclusive<u64> = 16..=65536;

/// The shortest salt accepted: fewer random bytes let masked values be
/// guessed back.
pub const MIN_SALT_BYTES: usize = 16;

/// Parses a duration such as `45m`, `4h` or `1h 30m`; zero is refused (a
/// step that may not run at all is a mistake). Shared by `--max-runtime`,
/// `--sanitiser-call-timeout` and the config's `max_runtime` and
/// `call_timeout`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{text:?} is zero; give more than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{text:?} is not a duration like \"45m\", \"4h\" or \"1h 30m\": {e}"
        )),
    }
}

/// Where a step was described, so errors name what the operator wrote: a
/// flag or a config field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    Config,
}

impl Origin {
    /// `flag` for a command line, `field` for a config file.
    fn name<'a>(self, flag: &'a str, field: &'a str) -> &'a str {
        match self {
            Origin::CommandLine => flag,
            Origin::Config => field,
        }
    }
}

/// A step as the operator described it, before anything is read or
/// defaulted.
#[derive(Clone, Debug)]
pub struct StepInputs {
    pub op: StepOp,
    pub origin: Origin,
    /// Names the step in errors: `task "shop" step 2 (copy)`, `ad-hoc copy`.
    pub what: String,
    /// The environment's name (the sanitiser sees it).
    pub environment: String,
    /// The backup source; the restore, transform and copy target.
    pub database: DatabaseSpec,
    /// Copy: the database to copy from; unset host, port, user and password
    /// default to `database`'s.
    pub source: Option<DatabaseSpec>,
    /// Plugin parameters; the last of a name wins.
    pub params: Vec<(String, String)>,
    pub store: Option<String>,
    pub from_store: Option<String>,
    pub read_only_stores: Vec<String>,
    pub store_options: StoreOptions,
    /// Backup.
    pub compression: Option<Compression>,
    pub encrypt_to: Vec<String>,
    pub encrypt_to_files: Vec<PathBuf>,
    pub instance: Option<String>,
    /// Restore.
    pub identities: Vec<PathBuf>,
    pub from_instance: Option<String>,
    pub from_database: Option<String>,
    pub artifact: Option<String>,
    /// Transform.
    pub script: Option<PathBuf>,
    /// Unset: the operation's default ([`StepOp::default_max_runtime`]).
    pub max_runtime: Option<Duration>,
    /// Unset: [`DEFAULT_MEMORY_CAP_MIB`].
    pub memory_cap_mib: Option<u64>,
    /// Unset: every program the plugin declares.
    pub allow_programs: Option<Vec<String>>,
    /// Sessions the plugin may run at once; unset: [`automatic_jobs`].
    pub jobs: Option<u32>,
    /// Backup and copy: sanitise the rows.
    pub sanitise: Option<SanitiseSpec>,
    /// The state folder (locks, history, the objects capability's ETag
    /// memories).
    pub state_dir: Option<PathBuf>,
}

impl StepInputs {
    /// `op` on `database`, nothing else set.
    pub fn new(op: StepOp, origin: Origin, what: String, database: DatabaseSpec) -> StepInputs {
        StepInputs {
            op,
            origin,
            what,
            environment: String::new(),
            database,
            source: None,
            params: Vec::new(),
            store: None,
            from_store: None,
            read_only_stores: Vec::new(),
            store_options: StoreOptions::default(),
            compression: None,
            encrypt_to: Vec::new(),
            encrypt_to_files: Vec::new(),
            instance: None,
            identities: Vec::new(),
            from_instance: None,
            from_database: None,
            artifact: None,
            script: None,
            max_runtime: None,
            memory_cap_mib: None,
            allow_programs: None,
            jobs: None,
            sanitise: None,
            state_dir: None,
        }
    }

    fn usage(&self, message: impl std::fmt::Display) -> anyhow::Error {
        Failure::new(Kind::Usage, format!("{}: {message}", self.what)).into()
    }

    /// Refuses what does not belong to this operation (a config file cannot
    /// get here with such fields; a command line can).
    fn check_fields(&self) -> Result<()> {
        use StepOp::{Backup, Copy, Restore, Transform};
        let o = self.origin;
        let given: [(bool, &[StepOp], &str); 11] = [
            // A backup takes it too: to refuse writing into it.
            (
                self.from_store.is_some(),
                &[Restore, Backup],
                o.name("--from-store", "from"),
            ),
            (
                self.compression.is_some(),
                &[Backup],
                o.name("--compression", "compression"),
            ),
            (
                !self.encrypt_to.is_empty() || !self.encrypt_to_files.is_empty(),
                &[Backup],
                o.name("--encrypt-to", "encrypt_to"),
            ),
            (
                self.instance.is_some(),
                &[Backup],
                o.name("--instance", "instance"),
            ),
            (
                !self.identities.is_empty(),
                &[Restore],
                o.name("--identity", "identity"),
            ),
            (
                self.from_instance.is_some(),
                &[Restore],
                o.name("--from-instance", "from_instance"),
            ),
            (
                self.from_database.is_some(),
                &[Restore],
                o.name("--from-database", "from_database"),
            ),
            (
                self.artifact.is_some(),
                &[Restore],
                o.name("--artifact", "artifact"),
            ),
            (
                self.script.is_some(),
                &[Transform],
                o.name("--script", "script"),
            ),
            (
                self.source.is_some(),
                &[Copy],
                o.name("--source-database", "[task.source]"),
            ),
            (
                self.sanitise.is_some(),
                &[Backup, Copy],
                o.name("--sanitiser", "[task.sanitise]"),
            ),
        ];
        for (present, owners, name) in given {
            if present && !owners.contains(&self.op) {
                let owners: Vec<&str> = owners.iter().map(|op| op.name()).collect();
                return Err(self.usage(format!(
                    "{name} belongs to {} steps; it does not apply to a {}",
                    owners.join(" and "),
                    self.op.name()
                )));
            }
        }
        Ok(())
    }

    /// Reads the password of `spec` from where it is said to be.
    fn password(&self, spec: &DatabaseSpec, role: &str) -> Result<Option<Secret>> {
        match &spec.password {
            PasswordSource::Default => Ok(None),
            PasswordSource::File(path) => {
                let name = match role {
                    "source" => self
                        .origin
                        .name("--source-password-file", "source password_file"),
                    _ => self
                        .origin
                        .name("--db-password-file", "database password_file"),
                };
                let text = std::fs::read_to_string(path).map_err(|e| {
                    self.usage(format!("cannot read {name} {}: {e}", path.display()))
                })?;
                Ok(Some(Secret::new(
                    text.trim_end_matches(['\r', '\n']).to_string(),
                )))
            }
            PasswordSource::Env(name) => match std::env::var(name) {
                Ok(value) => Ok(Some(Secret::new(value))),
                Err(_) => Err(self.usage(format!(
                    "{role} password_env {name} is not set in the environment"
                ))),
            },
        }
    }

    fn connection(&self, spec: &DatabaseSpec, role: &str) -> Result<Connection> {
        Ok(Connection {
            database: spec.name.clone(),
            host: spec.host.clone(),
            port: spec.port,
            user: spec.user.clone(),
            password: self.password(spec, role)?,
            region: spec.region.clone(),
        })
    }

    /// The sanitising of a backup or copy: rules and salt read now, so a
    /// step that cannot sanitise stops before anything runs.
    fn sanitise_options(&self) -> Result<Option<SanitiseOptions>> {
        let Some(spec) = &self.sanitise else {
            return Ok(None);
        };
        let o = self.origin;
        let rules = std::fs::read_to_string(&spec.rules).map_err(|e| {
            self.usage(format!(
                "cannot read the sanitiser rules {}: {e}",
                spec.rules.display()
            ))
        })?;
        let salt: Vec<u8> = match &spec.salt {
            SaltSource::File(path) => std::fs::read(path)
                .map_err(|e| {
                    self.usage(format!(
                        "cannot read {} {}: {e}",
                        o.name("--salt-file", "salt_file"),
                        path.display()
                    ))
                })?
                .trim_ascii_end()
                .to_vec(),
            SaltSource::Env(name) => std::env::var(name)
                .map_err(|_| {
                    self.usage(format!(
                        "{} {name} is not set in the environment",
                        o.name("--salt-env", "salt_env")
                    ))
                })?
                .into_bytes(),
        };
        if salt.len() < MIN_SALT_BYTES {
            return Err(self.usage(format!(
                "the keyed-hash salt has {} bytes; use at least {MIN_SALT_BYTES} random bytes \
                 (e.g. `openssl rand -hex 32 > salt.key`), or masked values can be guessed back",
                salt.len()
            )));
        }
        Ok(Some(SanitiseOptions {
            sanitiser: spec.sanitiser.clone(),
            rules,
            rules_origin: spec.rules.display().to_string(),
            salt: salt.into(),
            memory_cap_mib: spec
                .memory_cap_mib
                .unwrap_or(crate::sanitiser::DEFAULT_MEMORY_CAP_MIB),
            call_timeout: spec.call_timeout,
            allowed_email_domains: spec.allowed_email_domains.clone(),
            strict: spec.strict,
            environment: self.environment.clone(),
        }))
    }

    /// The age recipients: those given, then those of the files; each one
    /// checked so a typo fails now rather than after the dump.
    fn recipients(&self) -> Result<Vec<String>> {
        let mut recipients = Vec::new();
        for r in &self.encrypt_to {
            codec::parse_recipient(r).map_err(|e| self.usage(format!("{e:#}")))?;
            recipients.push(r.trim().to_string());
        }
        for file in &self.encrypt_to_files {
            recipients.extend(
                codec::read_recipients_file(file).map_err(|e| self.usage(format!("{e:#}")))?,
            );
        }
        Ok(recipients)
    }
}

/// Most sessions a step may run at once: each costs the host a bounded
/// transfer buffer (docs/decisions/0019), and the server a backend.
pub const MAX_JOBS: u32 = 32;

/// The default of `jobs`: one session per core, at most 4 (beyond that a
/// restore's gain depends on the target server, which the operator knows).
pub fn automatic_jobs() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(1, 4) as u32
}

/// The request for `inputs`: checks what belongs to the operation, reads
/// passwords, recipients files, rules and salt, and fills the defaults.
pub fn build(inputs: StepInputs) -> Result<StepRequest> {
    inputs.check_fields()?;
    let o = inputs.origin;
    let mut job = JobContext {
        params: inputs.params.clone(),
        jobs: inputs.jobs.unwrap_or_else(automatic_jobs),
        jobs_chosen: inputs.jobs.is_some(),
        ..Default::default()
    };
    let main = inputs.connection(&inputs.database, "database")?;
    match inputs.op {
        StepOp::Backup => {
            job.connections.insert("source".into(), main);
        }
        StepOp::Restore | StepOp::Transform => {
            job.connections.insert("target".into(), main);
        }
        StepOp::Copy => {
            let spec = inputs.source.as_ref().ok_or_else(|| {
                inputs.usage(format!(
                    "a copy needs the database to copy from: {}",
                    o.name("--source-database NAME", "add [task.source]")
                ))
            })?;
            let mut source = inputs.connection(spec, "source")?;
            source.host = source.host.or_else(|| main.host.clone());
            source.port = source.port.or(main.port);
            source.user = source.user.or_else(|| main.user.clone());
            if source.password.is_none() {
                source.password = main.password.clone();
            }
            if source.database == main.database
                && source.display_address() == main.display_address()
            {
                return Err(inputs.usage("copy source and target are the same database"));
            }
            job.connections.insert("source".into(), source);
            job.connections.insert("target".into(), main);
        }
    }
    if inputs.op == StepOp::Transform && inputs.script.is_none() {
        return Err(inputs.usage(format!(
            "a transform needs a script: {}",
            o.name("pass --script FILE", "set script = \"FILE\"")
        )));
    }
    Ok(StepRequest {
        operation: inputs.op.operation(),
        encrypt_to: inputs.recipients()?,
        sanitise: inputs.sanitise_options()?,
        job,
        store: inputs.store,
        from_store: inputs.from_store,
        read_only_stores: inputs.read_only_stores,
        // Uploads are journaled in the step's state folder (the config's
        // over the command line's).
        store_options: StoreOptions {
            state_dir: inputs.state_dir.clone(),
            ..inputs.store_options
        },
        compression: inputs.compression,
        identities: inputs.identities,
        instance: inputs.instance,
        from_instance: inputs.from_instance,
        from_database: inputs.from_database,
        artifact: inputs.artifact,
        script: inputs.script,
        max_runtime: inputs
            .max_runtime
            .unwrap_or_else(|| inputs.op.default_max_runtime()),
        memory_cap_mib: inputs.memory_cap_mib.unwrap_or(DEFAULT_MEMORY_CAP_MIB),
        allow_programs: inputs.allow_programs,
        stop: Default::default(),
        progress: Default::default(),
        state_dir: inputs.state_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::jobs::config::{CheckOptions, parse};
    use crate::jobs::task::step_request;

    /// Files the steps read, in one folder (absolute paths, so the command
    /// line and the config name the same files).
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let write =
                |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
            write("db.pw", "hunter2\n");
            write("src.pw", "s3cret\n");
            write("rules.toml", "[tables.users]\nemail = \"email\"\n");
            write("salt.key", "0123456789abcdef0123456789abcdef\n");
            write("short.key", "tooshort\n");
            write("fix.sql", "UPDATE users SET name = 'x';\n");
            write("age.key", "AGE-SECRET-KEY-unused\n");
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        /// `{name}` in `text` replaced by the path of file `name`.
        fn fill(&self, text: &str) -> String {
            let mut text = text.to_string();
            for name in [
                "db.pw",
                "src.pw",
                "rules.toml",
                "salt.key",
                "short.key",
                "fix.sql",
                "age.key",
                "own",
                "upper",
            ] {
                text = text.replace(&format!("{{{name}}}"), &self.path(name));
            }
            text
        }

        /// The request of the config's only task's only step: `[environment]`
        /// `staging` with its own and upper store, task `shop` on `db1`,
        /// `task` lines added to the task and `step` lines to its step.
        fn config_request(&self, task: &str, step: &str) -> Result<StepRequest> {
            self.config_request_with("", task, step, &StoreOptions::default())
        }

        /// [`Files::config_request`] with `environment` lines added to
        /// `[environment]` and the command line's store options `cli`.
        fn config_request_with(
            &self,
            environment: &str,
            task: &str,
            step: &str,
            cli: &StoreOptions,
        ) -> Result<StepRequest> {
            let text = self.fill(&format!(
                "[environment]\nname = \"staging\"\nstore = \"{{own}}\"\nupper_store = \"{{upper}}\"\n{environment}\n\n\
                 [[task]]\nname = \"shop\"\nplugin = \"postgres\"\n{task}\n\
                 [task.database]\nhost = \"db1\"\nport = 5433\nuser = \"app\"\nname = \"shop\"\npassword_file = \"{{db.pw}}\"\n\n\
                 [[task.step]]\n{step}\n"
            ));
            let config = parse(
                &text,
                "staging.toml",
                &self.dir.path().join("staging.toml"),
                self.dir.path(),
                &CheckOptions::default(),
            )
            .unwrap_or_else(|d| panic!("{d:#?}\n{text}"));
            step_request(&config, &config.tasks[0], 0, cli)
        }

        /// The request of `run` with the same database and stores as
        /// [`Files::config_request`] and `flags` added.
        fn ad_hoc_request(&self, flags: &str) -> Result<StepRequest> {
            let mut args: Vec<String> = [
                "envsync-host",
                "run",
                "--plugin",
                "postgres",
                "--database",
                "shop",
                "--db-host",
                "db1",
                "--db-port",
                "5433",
                "--db-user",
                "app",
                "--db-password-file",
                "{db.pw}",
                "--environment",
                "staging",
                "--store",
                "{own}",
                "--read-only-store",
                "{upper}",
            ]
            .iter()
            .map(|a| self.fill(a))
            .collect();
            args.extend(flags.split_whitespace().map(|a| self.fill(a)));
            let cli = Cli::try_parse_from_args(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let Command::Run(run) = cli.command else {
                unreachable!()
            };
            build(run.inputs(&StoreOptions::default())?)
        }
    }

    /// Every field of a request that describes the step (not its stop
    /// token), secrets included, so two requests compare equal only when
    /// they would run the same.
    fn comparable(r: &StepRequest) -> String {
        let passwords: Vec<(&String, Option<&str>)> = r
            .job
            .connections
            .iter()
            .map(|(role, c)| (role, c.password.as_ref().map(Secret::expose)))
            .collect();
        let sanitise = r.sanitise.as_ref().map(|s| {
            format!(
                "{s:?} rules={:?} salt={:?} env={}",
                s.rules, s.salt, s.environment
            )
        });
        [
            format!("{:?} {:?}", r.operation, r.job),
            format!("passwords {passwords:?}"),
            format!(
                "stores {:?} {:?} {:?}",
                r.store, r.from_store, r.read_only_stores
            ),
            format!("store options {:?}", r.store_options),
            format!(
                "backup {:?} {:?} {:?}",
                r.compression, r.encrypt_to, r.instance
            ),
            format!(
                "restore {:?} {:?} {:?} {:?}",
                r.identities, r.from_instance, r.from_database, r.artifact
            ),
            format!("transform {:?}", r.script),
            format!(
                "limits {:?} {} {:?}",
                r.max_runtime, r.memory_cap_mib, r.allow_programs
            ),
            format!("sanitise {sanitise:?}"),
        ]
        .join("\n")
    }

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn a_configs_state_folder_holds_its_steps_upload_journal() {
        let files = Files::new();
        let state = files.dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        // The command line's options name another folder: the config wins.
        let cli = StoreOptions {
            state_dir: Some(files.dir.path().join("elsewhere")),
            ..StoreOptions::default()
        };
        let request = files
            .config_request_with(
                &format!("state_dir = \"{}\"", state.display()),
                "",
                "op = \"backup\"",
                &cli,
            )
            .unwrap();
        assert_eq!(request.store_options.state_dir, Some(state));
    }

    #[test]
    fn the_same_step_ad_hoc_and_in_a_config_is_the_same_request() {
        let files = Files::new();
        // (what, [[task]] lines, [[task.step]] lines, ad-hoc flags)
        let recipient = format!("--encrypt-to {RECIPIENT}");
        let encrypt = format!("encrypt_to = \"{RECIPIENT}\"");
        let cases: Vec<(&str, &str, String, String)> = vec![
            ("backup, all defaults", "", "op = \"backup\"".into(), "--op backup".into()),
            (
                "backup, zstd at its default level",
                "",
                "op = \"backup\"\ncompression = \"zstd\"".into(),
                "--op backup --compression zstd".into(),
            ),
            (
                "backup, gzip 9, encrypted, own instance",
                "",
                format!("op = \"backup\"\ncompression = \"gzip\"\ncompression_level = 9\n{encrypt}\ninstance = \"db1.staging\""),
                format!("--op backup --compression gzip --compression-level 9 {recipient} --instance db1.staging"),
            ),
            (
                "backup, fast zstd",
                "",
                "op = \"backup\"\ncompression = \"zstd\"\ncompression_level = -3".into(),
                "--op backup --compression zstd --compression-level -3".into(),
            ),
            (
                "restore from the upper store",
                "",
                "op = \"restore\"\nfrom_instance = \"db1.prod\"\nfrom_database = \"shop_prod\"\nartifact = \"a.pgdump\"\nidentity = \"{age.key}\"".into(),
                "--op restore --from-store {upper} --from-instance db1.prod --from-database shop_prod --artifact a.pgdump --identity {age.key}".into(),
            ),
            (
                "restore from the own store",
                "",
                "op = \"restore\"\nfrom = \"own\"".into(),
                "--op restore".into(),
            ),
            (
                "transform with params and a deadline",
                "params = { owner = \"app\" }",
                "op = \"transform\"\nscript = \"{fix.sql}\"\nmax_runtime = \"10m\"\nparams = { retries = \"3\" }".into(),
                "--op transform --script {fix.sql} --max-runtime 10m --param owner=app --param retries=3".into(),
            ),
            (
                "copy from another server, limits",
                "memory_cap_mib = 128\njobs = 3\nallow_programs = [\"pg_dump\", \"psql\"]\n[task.source]\nhost = \"db1.prod\"\nname = \"shop\"\npassword_file = \"{src.pw}\"",
                "op = \"copy\"".into(),
                "--op copy --source-database shop --source-host db1.prod --source-password-file {src.pw} --memory-cap-mib 128 --jobs 3 --allow-program pg_dump --allow-program psql".into(),
            ),
            (
                "sanitised backup",
                "[task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"{rules.toml}\"\nsalt_file = \"{salt.key}\"\nstrict = true\nallowed_email_domains = [\"example.com\"]\nmemory_cap_mib = 64\ncall_timeout = \"5s\"",
                "op = \"backup\"".into(),
                "--op backup --sanitiser sanitise --rules {rules.toml} --salt-file {salt.key} --strict --allowed-email-domain example.com --sanitiser-memory-cap-mib 64 --sanitiser-call-timeout 5s".into(),
            ),
            (
                "sanitised copy, salt from the environment",
                "[task.source]\nhost = \"db1.prod\"\nname = \"shop\"\n[task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"{rules.toml}\"\nsalt_env = \"ENVSYNC_TEST_REQUEST_SALT\"",
                "op = \"copy\"".into(),
                "--op copy --source-database shop --source-host db1.prod --sanitiser sanitise --rules {rules.toml} --salt-env ENVSYNC_TEST_REQUEST_SALT".into(),
            ),
        ];
        // SAFETY: the only test that touches this variable.
        unsafe {
            std::env::set_var(
                "ENVSYNC_TEST_REQUEST_SALT",
                "fedcba9876543210fedcba9876543210",
            )
        };
        for (what, task, step, flags) in &cases {
            let config = files
                .config_request(task, step)
                .unwrap_or_else(|e| panic!("{what}: config: {e:#}"));
            let ad_hoc = files
                .ad_hoc_request(flags)
                .unwrap_or_else(|e| panic!("{what}: ad hoc: {e:#}"));
            assert_eq!(comparable(&ad_hoc), comparable(&config), "{what}");
        }

        // The documented defaults, whichever way the step was given.
        let backup = files.ad_hoc_request("--op backup").unwrap();
        assert_eq!(backup.max_runtime, Duration::from_secs(3600));
        assert_eq!(backup.memory_cap_mib, DEFAULT_MEMORY_CAP_MIB);
        let zstd = files
            .ad_hoc_request("--op backup --compression zstd")
            .unwrap();
        assert_eq!(zstd.compression, Some(Compression::Zstd { level: 1 }));
        for (op, hours) in [("restore", 4.0), ("transform", 0.75), ("copy", 4.0)] {
            let extra = match op {
                "transform" => " --script {fix.sql}",
                "copy" => " --source-database other",
                _ => "",
            };
            let r = files.ad_hoc_request(&format!("--op {op}{extra}")).unwrap();
            assert_eq!(
                r.max_runtime,
                Duration::from_secs_f64(hours * 3600.0),
                "{op}"
            );
        }
    }

    #[test]
    fn the_same_mistake_ad_hoc_and_in_a_config_is_the_same_error() {
        let files = Files::new();
        // (what, [[task]] lines, [[task.step]] lines, ad-hoc flags, message)
        let cases = [
            (
                "a copy onto itself",
                "[task.source]\nname = \"shop\"",
                "op = \"copy\"",
                "--op copy --source-database shop",
                "copy source and target are the same database",
            ),
            (
                "a short salt",
                "[task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"{rules.toml}\"\nsalt_file = \"{short.key}\"",
                "op = \"backup\"",
                "--op backup --sanitiser sanitise --rules {rules.toml} --salt-file {short.key}",
                "the keyed-hash salt has 8 bytes; use at least 16 random bytes",
            ),
        ];
        for (what, task, step, flags, message) in cases {
            let config = files.config_request(task, step).unwrap_err();
            let ad_hoc = files.ad_hoc_request(flags).unwrap_err();
            for (err, how) in [(&config, "config"), (&ad_hoc, "ad hoc")] {
                assert_eq!(crate::failure::exit_code(err), 2, "{what} {how}");
                let text = format!("{err:#}");
                let (_, tail) = text.split_once(": ").unwrap();
                assert!(tail.starts_with(message), "{what} {how}: {text}");
            }
        }
    }

    #[test]
    fn what_belongs_to_another_operation_is_refused_ad_hoc() {
        let files = Files::new();
        for (flags, message) in [
            (
                "--op restore --compression gzip",
                "ad-hoc restore: --compression belongs to backup steps; it does not apply to a restore",
            ),
            (
                "--op backup --script {fix.sql}",
                "ad-hoc backup: --script belongs to transform steps; it does not apply to a backup",
            ),
            (
                "--op backup --from-instance x",
                "ad-hoc backup: --from-instance belongs to restore steps",
            ),
            (
                "--op restore --sanitiser sanitise --rules {rules.toml} --salt-file {salt.key}",
                "ad-hoc restore: --sanitiser belongs to backup and copy steps",
            ),
            (
                "--op transform --script {fix.sql} --from-store /srv/upper",
                "ad-hoc transform: --from-store belongs to restore and backup steps",
            ),
            (
                "--op transform",
                "ad-hoc transform: a transform needs a script: pass --script FILE",
            ),
            (
                "--op copy",
                "ad-hoc copy: a copy needs the database to copy from: --source-database NAME",
            ),
            (
                "--op backup --compression-level 3",
                "--compression: a compression level needs a compression",
            ),
            (
                "--op backup --compression zstd --compression-level 23",
                "--compression: zstd compression level must be between -7 and 22, not 23",
            ),
            (
                "--op backup --compression gzip --compression-level -1",
                "--compression: gzip compression level must be between 0 and 9, not -1",
            ),
            ("--op backup --encrypt-to age1nope", "ad-hoc backup: "),
            (
                "--op backup --sanitiser sanitise --rules {rules.toml}",
                "--sanitiser needs the keyed-hash salt",
            ),
        ] {
            let err = files.ad_hoc_request(flags).unwrap_err();
            assert_eq!(crate::failure::exit_code(&err), 2, "{flags}");
            let text = format!("{err:#}");
            assert!(text.contains(&files.fill(message)), "{flags}: {text}");
        }
    }

    #[test]
    fn durations_are_parsed_once_for_every_entry_point() {
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("is not a duration")
        );
    }
}
