//! The config file: one environment and its tasks (schema in docs/config.md).
//!
//! Parsing walks the TOML document by hand (through [`Fields`]) rather than
//! through serde, so that one pass reports **every** mistake, each with its
//! line, column and field, and the result is a fully validated [`Config`]:
//! paths resolved against the config file's folder, durations, cron
//! schedules, time zone, stores and age recipients parsed.

use super::diagnostics::{At, Diagnostic, Fields, Report, Severity};
use super::request::{MEMORY_CAP_MIB, parse_duration};
use crate::failure::{Failure, Kind};
use crate::metrics::{AlertSettings, RuntimeClass, ScheduleClass};
use crate::runtime::bindings::Operation;
use crate::store::StoreOptions;
use crate::store::codec::{self, Compression};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::DeTable;

/// A validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file as the operator named it.
    pub file: PathBuf,
    /// The folder relative paths in the file are resolved against.
    pub dir: PathBuf,
    pub environment: Environment,
    /// `[alerts]`: classes, thresholds and severities of the alert rules
    /// (defaults when absent).
    pub alerts: AlertSettings,
    pub tasks: Vec<Task>,
    /// Warnings found while loading (errors make loading fail).
    pub warnings: Vec<Diagnostic>,
}

#[derive(Clone, Debug)]
pub struct Environment {
    pub name: String,
    /// `production = true|false`: overrides the name heuristic of the
    /// production guard.
    pub production: Option<bool>,
    /// This environment's store: backups write only here.
    pub store: Option<String>,
    /// The store of the environment above: restores read from it, nothing
    /// ever writes to it.
    pub upper_store: Option<String>,
    /// Pushgateway base URL (metrics).
    pub pushgateway: Option<String>,
    /// How often a running step's progress is pushed and written for
    /// `status` (default `progress::PUSH_EVERY`, 30 s).
    pub progress_interval: Duration,
    /// Time zone of the schedules (default UTC).
    pub timezone: chrono_tz::Tz,
    pub state_dir: Option<PathBuf>,
    /// The busy marker (exists while any task runs); default
    /// `<state dir>/busy`.
    pub marker_file: Option<PathBuf>,
    pub s3: S3Settings,
}

impl Environment {
    /// Whether this is production: `production = true|false` when the file
    /// says, else a name containing "prod" (see [`super::guard`]).
    pub fn is_production(&self) -> bool {
        super::guard::is_production(&self.name, self.production)
    }
}

/// `[environment.s3]`: overrides the CLI's/environment's S3 settings.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub part_size_mib: Option<usize>,
    pub parts_in_flight: Option<usize>,
}

impl S3Settings {
    /// `base` (from the command line) with what the config sets on top.
    pub fn apply(&self, base: &StoreOptions) -> StoreOptions {
        let mut options = base.clone();
        let s3 = &mut options.s3;
        if let Some(v) = &self.endpoint {
            s3.endpoint = Some(v.clone());
        }
        if let Some(v) = &self.region {
            s3.region = Some(v.clone());
        }
        if let Some(v) = self.path_style {
            s3.path_style = Some(v);
        }
        if let Some(v) = self.part_size_mib {
            s3.part_size = v << 20;
        }
        if let Some(v) = self.parts_in_flight {
            s3.parts_in_flight = v;
        }
        options
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    pub plugin: String,
    pub schedule: Option<Schedule>,
    /// The alerting schedule class (`daily`, `weekly`, …): configured, or
    /// guessed from the schedule.
    pub schedule_class: Option<String>,
    pub suspend: bool,
    pub params: Vec<(String, String)>,
    /// The database the task acts on (backup source; restore, transform and
    /// copy target).
    pub database: DatabaseSpec,
    /// Copy: the database to copy from.
    pub source: Option<DatabaseSpec>,
    pub steps: Vec<StepSpec>,
    pub memory_cap_mib: Option<u64>,
    /// Sessions a step may run at once (`jobs`); None: automatic.
    pub jobs: Option<u32>,
    pub allow_programs: Option<Vec<String>>,
    /// `[task.sanitise]`: backups and copies of this task pass their rows
    /// through a sanitiser.
    pub sanitise: Option<SanitiseSpec>,
    /// Line of the task's `[[task]]` header.
    pub line: usize,
}

/// `[task.sanitise]`.
#[derive(Clone, Debug)]
pub struct SanitiseSpec {
    /// The sanitiser's name (a sanitiser in the plugin folder).
    pub sanitiser: String,
    /// The rules file (resolved), handed to the sanitiser as text.
    pub rules: PathBuf,
    pub salt: SaltSource,
    /// Refuse uncovered columns before dumping, and fail the step when the
    /// residual scan finds personal data.
    pub strict: bool,
    pub allowed_email_domains: Vec<String>,
    pub memory_cap_mib: Option<u64>,
    pub call_timeout: Duration,
}

/// Where the keyed-hash salt comes from; never inline in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaltSource {
    File(PathBuf),
    Env(String),
}

/// Longest one sanitiser call may take unless the task says otherwise.
pub const DEFAULT_SANITISER_CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Schedule {
    pub text: String,
    pub cron: croner::Cron,
}

/// Parses a 5-field cron expression (minute hour day-of-month month
/// day-of-week), a 6-field one whose first field is the second, or a
/// nickname such as `@daily`.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "schedule {text:?} has {fields} fields; expected 5 (minute hour day-of-month month day-of-week), \
             or 6 with the second first"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("schedule {text:?} is not a valid cron expression: {e}"))
}

#[derive(Clone, Debug, Default)]
pub struct DatabaseSpec {
    pub name: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: PasswordSource,
    /// An object-store location's region (signing), over `[environment.s3]`'s.
    pub region: Option<String>,
}

/// Where a password comes from; never inline in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PasswordSource {
    /// None configured: the plugin's standard variables (PGPASSWORD, …) apply.
    #[default]
    Default,
    File(PathBuf),
    Env(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOp {
    Backup,
    Restore,
    Transform,
    Copy,
}

impl StepOp {
    pub const NAMES: [&'static str; 4] = ["backup", "restore", "transform", "copy"];

    pub fn parse(text: &str) -> Option<StepOp> {
        Some(match text {
            "backup" => StepOp::Backup,
            "restore" => StepOp::Restore,
            "transform" => StepOp::Transform,
            "copy" => StepOp::Copy,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            StepOp::Backup => "backup",
            StepOp::Restore => "restore",
            StepOp::Transform => "transform",
            StepOp::Copy => "copy",
        }
    }

    /// The per-step maximum runtime when the file sets none.
    pub fn default_max_runtime(self) -> Duration {
        const MIN: u64 = 60;
        Duration::from_secs(match self {
            StepOp::Backup => 60 * MIN,
            StepOp::Restore => 240 * MIN,
            StepOp::Transform => 45 * MIN,
            StepOp::Copy => 240 * MIN,
        })
    }

    pub fn operation(self) -> Operation {
        match self {
            StepOp::Backup => Operation::Backup,
            StepOp::Restore => Operation::Restore,
            StepOp::Transform => Operation::Transform,
            StepOp::Copy => Operation::Copy,
        }
    }

    /// Fields a step of this operation may have besides the common ones.
    fn fields(self) -> &'static [&'static str] {
        match self {
            StepOp::Backup => &[
                "compression",
                "compression_level",
                "encrypt_to",
                "encrypt_to_file",
                "instance",
            ],
            StepOp::Restore => &[
                "from",
                "from_instance",
                "from_database",
                "artifact",
                "identity",
            ],
            StepOp::Transform => &["script"],
            StepOp::Copy => &[],
        }
    }
}

/// Which store a restore reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FromStore {
    /// The environment above (`upper_store`).
    #[default]
    Upper,
    /// This environment's own store.
    Own,
}

#[derive(Clone, Debug)]
pub struct StepSpec {
    pub op: StepOp,
    pub max_runtime: Duration,
    /// Added to (and overriding) the task's params for this step.
    pub params: Vec<(String, String)>,
    // restore
    pub from: FromStore,
    pub from_instance: Option<String>,
    pub from_database: Option<String>,
    pub artifact: Option<String>,
    pub identities: Vec<PathBuf>,
    // transform
    pub script: Option<PathBuf>,
    // backup
    pub compression: Option<Compression>,
    pub encrypt_to: Vec<String>,
    pub encrypt_to_files: Vec<PathBuf>,
    pub instance: Option<String>,
    /// Line of the step's `[[task.step]]` header.
    pub line: usize,
}

/// Options of [`check`] that need more than the file.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// When set, plugins missing from this folder are warned about.
    pub plugin_dir: Option<PathBuf>,
}

/// Loads and validates `path`. Every error (and warning) is returned in
/// file order; `Ok` means no errors.
pub fn check(path: &Path, options: &CheckOptions) -> Result<Config, Vec<Diagnostic>> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            return Err(vec![Diagnostic {
                severity: Severity::Error,
                file: name,
                line: 1,
                column: 1,
                context: String::new(),
                message: format!("cannot read the config file: {e}"),
            }]);
        }
    };
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &name, path, &dir, options)
}

/// Loads `path` for running: errors become one usage failure listing them
/// all (exit code 2); warnings are logged.
pub fn load(path: &Path, options: &CheckOptions) -> anyhow::Result<Config> {
    match check(path, options) {
        Ok(config) => {
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            Ok(config)
        }
        Err(diagnostics) => Err(invalid(path, &diagnostics).into()),
    }
}

/// The failure for a file with `diagnostics`.
pub fn invalid(path: &Path, diagnostics: &[Diagnostic]) -> Failure {
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    Failure::new(
        Kind::Usage,
        format!(
            "{} has {} mistake{}:\n{}",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n")
        ),
    )
}

/// Parses and validates config `text` read from `file` (named `name` in
/// messages); relative paths are resolved against `dir`.
pub fn parse(
    text: &str,
    name: &str,
    file: &Path,
    dir: &Path,
    options: &CheckOptions,
) -> Result<Config, Vec<Diagnostic>> {
    let mut report = Report::new(name, text);
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in &syntax {
        let span = e.span().unwrap_or(0..0);
        report.error(&span, "", format!("TOML syntax: {}", e.message().trim()));
    }
    if !syntax.is_empty() {
        // A broken document gives unreliable fields; report the syntax only.
        return Err(report.into_sorted());
    }
    let mut reader = Reader {
        report,
        dir: dir.to_path_buf(),
        options,
        alerts: AlertSettings::default(),
    };
    let (environment, tasks) = reader.root(root.get_ref(), root.span());
    let alerts = reader.alerts;
    let report = reader.report;
    if report.has_errors() {
        return Err(report.into_sorted());
    }
    let environment = environment.expect("no errors means an environment");
    Ok(Config {
        file: file.to_path_buf(),
        dir: dir.to_path_buf(),
        environment,
        alerts,
        tasks,
        warnings: report.into_sorted(),
    })
}

const ROOT_FIELDS: &[&str] = &["environment", "alerts", "task", "kubernetes"];
const ALERT_FIELDS: &[&str] = &[
    "runtime_classes",
    "schedule_classes",
    "failed_severity",
    "running_too_long_severity",
    "not_succeeded_severity",
    "data_max_age",
    "data_too_old_severity",
];
const ENV_FIELDS: &[&str] = &[
    "name",
    "production",
    "store",
    "upper_store",
    "pushgateway",
    "progress_interval",
    "timezone",
    "state_dir",
    "marker_file",
    "s3",
];
const S3_FIELDS: &[&str] = &[
    "endpoint",
    "region",
    "path_style",
    "part_size_mib",
    "parts_in_flight",
];
const TASK_FIELDS: &[&str] = &[
    "name",
    "plugin",
    "schedule",
    "schedule_class",
    "suspend",
    "params",
    "database",
    "source",
    "step",
    "memory_cap_mib",
    "jobs",
    "allow_programs",
    "sanitise",
];
const SANITISE_FIELDS: &[&str] = &[
    "sanitiser",
    "rules",
    "salt_file",
    "salt_env",
    "strict",
    "allowed_email_domains",
    "memory_cap_mib",
    "call_timeout",
];
const DATABASE_FIELDS: &[&str] = &[
    "name",
    "host",
    "port",
    "user",
    "password_file",
    "password_env",
    "region",
];
const STEP_COMMON: &[&str] = &["op", "max_runtime", "params"];

struct Reader<'s, 'o> {
    report: Report<'s>,
    dir: PathBuf,
    options: &'o CheckOptions,
    alerts: AlertSettings,
}

/// Hints for fields people get wrong.
fn hint_secret(key: &str) -> Option<String> {
    matches!(key, "password" | "passwd" | "pass").then(|| {
        "secrets never go in the file: use password_file = \"FILE\" or password_env = \"VARIABLE\""
            .to_string()
    })
}

impl Reader<'_, '_> {
    fn root(&mut self, root: &DeTable<'_>, span: Range<usize>) -> (Option<Environment>, Vec<Task>) {
        let top = Fields::new(
            &mut self.report,
            root,
            span.clone(),
            "",
            ROOT_FIELDS,
            |_| None,
        );
        let environment = match top.table(&mut self.report, "environment") {
            Some((table, span)) => self.environment(table, span),
            None => {
                if !top.has("environment") {
                    self.report
                        .error(&(0..0), "", "missing the [environment] table");
                }
                None
            }
        };
        if let Some((table, span)) = top.table(&mut self.report, "alerts") {
            self.alerts = self.alerts(table, span);
        }
        // `[kubernetes]` is for `render kubernetes`; checked here, not kept.
        if let Some(value) = top.raw("kubernetes") {
            crate::render::kubernetes::settings::check(&mut self.report, value);
        }
        let tables = top.tables(&mut self.report, "task");
        if tables.is_empty() && !top.has("task") {
            self.report
                .error(&(0..0), "", "no tasks: add at least one [[task]]");
        }
        let mut tasks: Vec<Task> = Vec::new();
        let mut names: Vec<(String, usize)> = Vec::new();
        for (index, (table, span)) in tables.into_iter().enumerate() {
            if let Some(task) = self.task(index + 1, table, span.clone(), environment.as_ref()) {
                if let Some((_, line)) = names.iter().find(|(n, _)| *n == task.name) {
                    self.report.error(
                        &span,
                        &format!("task \"{}\"", task.name),
                        format!(
                            "another task has this name (line {line}); task names must be unique"
                        ),
                    );
                } else {
                    names.push((task.name.clone(), task.line));
                }
                tasks.push(task);
            }
        }
        (environment, tasks)
    }

    fn store(&mut self, at: &At<String>, context: &str, field: &str) -> Option<String> {
        match check_store(&at.value) {
            Ok(StoreKind::Folder(path)) => Some(resolve(&self.dir, &path).display().to_string()),
            Ok(StoreKind::Url) => Some(at.value.clone()),
            Err(why) => {
                self.report
                    .error(&at.span, context, format!("{field}: {why}"));
                None
            }
        }
    }

    fn environment(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<Environment> {
        let ctx = "environment";
        let f = Fields::new(&mut self.report, table, span, ctx, ENV_FIELDS, |_| None);
        let name = f.required_string(&mut self.report, "name");
        let production = f.bool(&mut self.report, "production").map(|b| b.value);
        let store = f
            .string(&mut self.report, "store")
            .and_then(|s| self.store(&s, ctx, "store").map(|v| (v, s.span)));
        let upper = f
            .string(&mut self.report, "upper_store")
            .and_then(|s| self.store(&s, ctx, "upper_store").map(|v| (v, s.span)));
        if let (Some((own, _)), Some((upper, span))) = (&store, &upper)
            && crate::store::overlaps(own, upper)
        {
            self.report.error(
                span,
                ctx,
                format!(
                    "upper_store {upper} is the same place as (or inside) store {own}; the environment above \
                     must have its own store, or restores and backups would mix"
                ),
            );
        }
        let pushgateway = f.string(&mut self.report, "pushgateway").and_then(|s| {
            if s.value.starts_with("http://") || s.value.starts_with("https://") {
                Some(s.value.trim_end_matches('/').to_string())
            } else {
                self.report.error(
                    &s.span,
                    ctx,
                    format!(
                        "pushgateway {:?} must be an http:// or https:// URL",
                        s.value
                    ),
                );
                None
            }
        });
        let progress_interval = match f.string(&mut self.report, "progress_interval") {
            None => crate::progress::PUSH_EVERY,
            Some(s) => match parse_duration(&s.value) {
                Ok(d) if d >= Duration::from_secs(1) => d,
                Ok(_) => {
                    self.report.error(
                        &s.span,
                        ctx,
                        "progress_interval must be at least 1s (default 30s)",
                    );
                    crate::progress::PUSH_EVERY
                }
                Err(why) => {
                    self.report
                        .error(&s.span, ctx, format!("progress_interval {why}"));
                    crate::progress::PUSH_EVERY
                }
            },
        };
        let timezone = match f.string(&mut self.report, "timezone") {
            None => Some(chrono_tz::Tz::UTC),
            Some(s) => match s.value.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.report.error(
                        &s.span,
                        ctx,
                        format!(
                            "timezone {:?} is not an IANA time zone name (like \"Europe/London\" or \"UTC\")",
                            s.value
                        ),
                    );
                    None
                }
            },
        };
        let state_dir = f
            .string(&mut self.report, "state_dir")
            .map(|s| resolve(&self.dir, &s.value));
        let marker_file = f
            .string(&mut self.report, "marker_file")
            .map(|s| resolve(&self.dir, &s.value));
        let s3 = match f.table(&mut self.report, "s3") {
            Some((t, span)) => self.s3(t, span),
            None => S3Settings::default(),
        };
        Some(Environment {
            name: name?.value,
            production,
            store: store.map(|(s, _)| s),
            upper_store: upper.map(|(s, _)| s),
            pushgateway,
            progress_interval,
            timezone: timezone?,
            state_dir,
            marker_file,
            s3,
        })
    }

    /// `[alerts]`: severities, and the class tables (`name = "duration"`).
    /// A class table given replaces the default classes of its kind.
    fn alerts(&mut self, table: &DeTable<'_>, span: Range<usize>) -> AlertSettings {
        let ctx = "alerts";
        let mut settings = AlertSettings::default();
        let f = Fields::new(
            &mut self.report,
            table,
            span.clone(),
            ctx,
            ALERT_FIELDS,
            |_| None,
        );
        for (key, target) in [
            ("failed_severity", &mut settings.failed_severity),
            (
                "running_too_long_severity",
                &mut settings.running_too_long_severity,
            ),
            (
                "not_succeeded_severity",
                &mut settings.not_succeeded_severity,
            ),
            ("data_too_old_severity", &mut settings.data_too_old_severity),
        ] {
            if let Some(s) = f.string(&mut self.report, key) {
                if s.value.trim().is_empty() {
                    self.report
                        .error(&s.span, ctx, format!("{key} must not be empty"));
                } else {
                    *target = s.value;
                }
            }
        }
        if let Some(s) = f.string(&mut self.report, "data_max_age") {
            match parse_duration(&s.value) {
                Ok(d) => settings.data_max_age = d,
                Err(why) => self
                    .report
                    .error(&s.span, ctx, format!("data_max_age {why}")),
            }
        }
        if let Some((t, _)) = f.table(&mut self.report, "runtime_classes") {
            settings.runtime_classes = self
                .class_table(t, "alerts.runtime_classes")
                .into_iter()
                .map(|(name, max_runtime)| RuntimeClass { name, max_runtime })
                .collect();
        }
        if let Some((t, _)) = f.table(&mut self.report, "schedule_classes") {
            settings.schedule_classes = self
                .class_table(t, "alerts.schedule_classes")
                .into_iter()
                .map(|(name, max_age)| ScheduleClass { name, max_age })
                .collect();
        }
        if let Err(e) = settings.validate() {
            self.report.error(&span, ctx, format!("{e:#}"));
        }
        settings
    }

    /// A table of `class = "duration"` entries.
    fn class_table(&mut self, table: &DeTable<'_>, ctx: &str) -> Vec<(String, Duration)> {
        let mut out = Vec::new();
        for (k, v) in table.iter() {
            let name = k.get_ref().to_string();
            match v.get_ref() {
                toml::de::DeValue::String(text) => match humantime::parse_duration(text) {
                    Ok(d) if !d.is_zero() => out.push((name, d)),
                    _ => self.report.error(
                        &v.span(),
                        ctx,
                        format!("{name}: {text:?} is not a duration like \"45m\", \"25h\" or \"7days 12h\""),
                    ),
                },
                other => self.report.error(
                    &v.span(),
                    ctx,
                    format!(
                        "{name} must be a duration string like \"4h\", not {}",
                        super::diagnostics::type_name(other)
                    ),
                ),
            }
        }
        out
    }

    fn s3(&mut self, table: &DeTable<'_>, span: Range<usize>) -> S3Settings {
        let r = &mut self.report;
        let f = Fields::new(r, table, span, "environment.s3", S3_FIELDS, |_| None);
        S3Settings {
            endpoint: f.string(r, "endpoint").map(|s| s.value),
            region: f.string(r, "region").map(|s| s.value),
            path_style: f.bool(r, "path_style").map(|b| b.value),
            part_size_mib: f
                .integer(r, "part_size_mib", 5..=5120)
                .map(|n| n.value as usize),
            parts_in_flight: f
                .integer(r, "parts_in_flight", 1..=64)
                .map(|n| n.value as usize),
        }
    }

    fn database(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        context: String,
    ) -> Option<DatabaseSpec> {
        let r = &mut self.report;
        let f = Fields::new(r, table, span, context, DATABASE_FIELDS, hint_secret);
        let name = f.required_string(r, "name");
        let host = f.string(r, "host").map(|s| s.value);
        let port = f.integer(r, "port", 1..=65535).map(|n| n.value as u16);
        let user = f.string(r, "user").map(|s| s.value);
        let region = f.string(r, "region").map(|s| s.value);
        let file = f.string(r, "password_file");
        let env = f.string(r, "password_env");
        let password = match (file, env) {
            (Some(_), Some(env)) => {
                r.error(
                    &env.span,
                    &f.context,
                    "give either password_file or password_env, not both",
                );
                PasswordSource::Default
            }
            (Some(file), None) => {
                let path = resolve(&self.dir, &file.value);
                if !path.is_file() {
                    r.warn(
                        &file.span,
                        &f.context,
                        format!("password_file {} does not exist here", path.display()),
                    );
                }
                PasswordSource::File(path)
            }
            (None, Some(env)) => {
                let valid = !env.value.is_empty()
                    && env
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !env.value.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    r.error(
                        &env.span,
                        &f.context,
                        format!(
                            "password_env {:?} is not an environment variable name (letters, digits, _)",
                            env.value
                        ),
                    );
                }
                PasswordSource::Env(env.value)
            }
            (None, None) => PasswordSource::Default,
        };
        Some(DatabaseSpec {
            name: name?.value,
            host,
            port,
            user,
            password,
            region,
        })
    }

    fn task(
        &mut self,
        index: usize,
        table: &DeTable<'_>,
        span: Range<usize>,
        environment: Option<&Environment>,
    ) -> Option<Task> {
        let line = self.report.position(span.start).0;
        // The name first, so that every other message can say which task.
        let name = match table.get("name").map(|v| v.get_ref()) {
            Some(toml::de::DeValue::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
            _ => None,
        };
        let context = match &name {
            Some(n) => format!("task \"{n}\""),
            None => format!("task #{index}"),
        };
        let f = Fields::new(
            &mut self.report,
            table,
            span.clone(),
            context.clone(),
            TASK_FIELDS,
            |_| None,
        );
        let name_at = f.required_string(&mut self.report, "name");
        if let Some(n) = &name_at
            && !n
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.report.error(
                &n.span,
                &context,
                format!(
                    "name {:?} may only use letters, digits, '-', '_' and '.' (it names lock files and metrics)",
                    n.value
                ),
            );
        }
        let plugin = f.required_string(&mut self.report, "plugin");
        if let Some(p) = &plugin {
            self.plugin(p, &context);
        }
        let schedule =
            f.string(&mut self.report, "schedule")
                .and_then(|s| match parse_schedule(&s.value) {
                    Ok(cron) => Some(Schedule {
                        text: s.value,
                        cron,
                    }),
                    Err(why) => {
                        self.report.error(&s.span, &context, why);
                        None
                    }
                });
        let schedule_class = match f.string(&mut self.report, "schedule_class") {
            Some(c) => {
                let known: Vec<&str> = self
                    .alerts
                    .schedule_classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                if !known.contains(&c.value.as_str()) {
                    self.report.error(
                        &c.span,
                        &context,
                        format!(
                            "schedule_class {:?} is not one of the alert schedule classes ({}); \
                             define it under [alerts.schedule_classes]",
                            c.value,
                            known.join(", ")
                        ),
                    );
                }
                Some(c.value)
            }
            None => schedule
                .as_ref()
                .and_then(|s| crate::jobs::report::schedule_class(&s.text))
                .map(str::to_string),
        };
        let suspend = f.bool(&mut self.report, "suspend").is_some_and(|b| b.value);
        let params = f.scalar_map(&mut self.report, "params");
        let memory_cap_mib = f
            .integer(&mut self.report, "memory_cap_mib", memory_caps())
            .map(|n| n.value as u64);
        let jobs = f
            .integer(
                &mut self.report,
                "jobs",
                1..=crate::jobs::request::MAX_JOBS as i64,
            )
            .map(|n| n.value as u32);
        let allow_programs = f.has("allow_programs").then(|| {
            f.strings(&mut self.report, "allow_programs")
                .into_iter()
                .map(|s| s.value)
                .collect()
        });
        let database = match f.table(&mut self.report, "database") {
            Some((t, s)) => self.database(t, s, format!("{context} database")),
            None => {
                if !f.has("database") {
                    f.missing(&mut self.report, "database");
                }
                None
            }
        };
        let source = f
            .table(&mut self.report, "source")
            .and_then(|(t, s)| self.database(t, s, format!("{context} source")));
        let sanitise = f
            .table(&mut self.report, "sanitise")
            .and_then(|(t, s)| self.sanitise(t, s, &format!("{context} sanitise")));
        let step_tables = f.tables(&mut self.report, "step");
        if step_tables.is_empty() && !f.has("step") {
            self.report.error(
                &span,
                &context,
                "no steps: add at least one [[task.step]] with op = \"backup\", \"restore\", \"transform\" or \"copy\"",
            );
        }
        let mut steps = Vec::new();
        for (i, (t, s)) in step_tables.into_iter().enumerate() {
            let step_context = format!("{context} step {}", i + 1);
            if let Some(step) = self.step(t, s, &step_context, environment, source.is_some()) {
                steps.push(step);
            }
        }
        Some(Task {
            name: name_at?.value,
            plugin: plugin?.value,
            schedule,
            schedule_class,
            suspend,
            params,
            database: database?,
            source,
            steps,
            memory_cap_mib,
            jobs,
            allow_programs,
            sanitise,
            line,
        })
    }

    fn sanitise(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        context: &str,
    ) -> Option<SanitiseSpec> {
        let hint = |key: &str| {
            (key == "salt").then(|| {
                "the salt is a secret: use salt_file = \"FILE\" or salt_env = \"VARIABLE\""
                    .to_string()
            })
        };
        let f = Fields::new(
            &mut self.report,
            table,
            span.clone(),
            context,
            SANITISE_FIELDS,
            hint,
        );
        let r = &mut self.report;
        let sanitiser = f.required_string(r, "sanitiser");
        let rules = f.required_string(r, "rules").and_then(|s| {
            let path = resolve(&self.dir, &s.value);
            if path.is_file() {
                Some(path)
            } else {
                r.error(
                    &s.span,
                    context,
                    format!("rules: {} does not exist", path.display()),
                );
                None
            }
        });
        let salt = match (f.string(r, "salt_file"), f.string(r, "salt_env")) {
            (Some(file), None) => Some(SaltSource::File(resolve(&self.dir, &file.value))),
            (None, Some(env)) => Some(SaltSource::Env(env.value)),
            (Some(_), Some(env)) => {
                r.error(&env.span, context, "give salt_file or salt_env, not both");
                None
            }
            (None, None) => {
                r.error(
                    &span,
                    context,
                    "missing the keyed-hash salt: salt_file = \"FILE\" or salt_env = \"VARIABLE\" \
                     (a secret; keep it the same between runs so masks stay stable)",
                );
                None
            }
        };
        let strict = f.bool(r, "strict").is_some_and(|b| b.value);
        let allowed_email_domains = f
            .strings(r, "allowed_email_domains")
            .into_iter()
            .map(|s| s.value)
            .collect();
        let memory_cap_mib = f
            .integer(r, "memory_cap_mib", memory_caps())
            .map(|n| n.value as u64);
        let call_timeout = match f.string(r, "call_timeout") {
            None => DEFAULT_SANITISER_CALL_TIMEOUT,
            Some(s) => parse_duration(&s.value).unwrap_or_else(|why| {
                r.error(&s.span, context, format!("call_timeout {why}"));
                DEFAULT_SANITISER_CALL_TIMEOUT
            }),
        };
        Some(SanitiseSpec {
            sanitiser: sanitiser?.value,
            rules: rules?,
            salt: salt?,
            strict,
            allowed_email_domains,
            memory_cap_mib,
            call_timeout,
        })
    }

    fn plugin(&mut self, p: &At<String>, context: &str) {
        let valid = p
            .value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
            && p.value.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            self.report.error(
                &p.span,
                context,
                format!(
                    "plugin {:?} is not a plugin name (lower-case letters, digits, '-', '_')",
                    p.value
                ),
            );
            return;
        }
        if let Some(dir) = &self.options.plugin_dir {
            let file = dir.join(format!("{}.wasm", p.value));
            if !file.is_file() {
                self.report.warn(
                    &p.span,
                    context,
                    format!(
                        "plugin {} is not installed in {} (no {})",
                        p.value,
                        dir.display(),
                        file.display()
                    ),
                );
            }
        }
    }

    fn step(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        context: &str,
        environment: Option<&Environment>,
        has_source: bool,
    ) -> Option<StepSpec> {
        let line = self.report.position(span.start).0;
        // The op decides which fields are allowed.
        let op_value = table.get("op");
        let op = match op_value.map(|v| (v.get_ref(), v.span())) {
            None => {
                self.report.error(
                    &span,
                    context,
                    "missing field \"op\" (one of backup, restore, transform, copy)",
                );
                None
            }
            Some((toml::de::DeValue::String(s), span)) => match StepOp::parse(s) {
                Some(op) => Some(op),
                None => {
                    self.report.error(
                        &span,
                        context,
                        format!("op \"{s}\" is not one of {}", StepOp::NAMES.join(", ")),
                    );
                    None
                }
            },
            Some((other, span)) => {
                self.report.error(
                    &span,
                    context,
                    format!(
                        "op must be a string, not {}",
                        super::diagnostics::type_name(other)
                    ),
                );
                None
            }
        };
        let all: Vec<&str> = STEP_COMMON
            .iter()
            .chain(StepOp::Backup.fields())
            .chain(StepOp::Restore.fields())
            .chain(StepOp::Transform.fields())
            .copied()
            .collect();
        let f = Fields::new(&mut self.report, table, span.clone(), context, &all, |_| {
            None
        });
        let op = op?;
        // Fields of another operation.
        for key in table.keys() {
            let key: &str = key.get_ref();
            if all.contains(&key) && !STEP_COMMON.contains(&key) && !op.fields().contains(&key) {
                let owner = [StepOp::Backup, StepOp::Restore, StepOp::Transform]
                    .into_iter()
                    .find(|o| o.fields().contains(&key))
                    .map_or("", StepOp::name);
                self.report.error(
                    &f.key_span(key).unwrap_or(span.clone()),
                    context,
                    format!(
                        "{key} belongs to {owner} steps; it does not apply to a {} step",
                        op.name()
                    ),
                );
            }
        }
        let r = &mut self.report;
        let max_runtime = match f.string(r, "max_runtime") {
            None => op.default_max_runtime(),
            Some(s) => parse_duration(&s.value).unwrap_or_else(|why| {
                r.error(&s.span, context, format!("max_runtime {why}"));
                op.default_max_runtime()
            }),
        };
        let params = f.scalar_map(r, "params");
        let mut step = StepSpec {
            op,
            max_runtime,
            params,
            from: FromStore::Upper,
            from_instance: None,
            from_database: None,
            artifact: None,
            identities: Vec::new(),
            script: None,
            compression: None,
            encrypt_to: Vec::new(),
            encrypt_to_files: Vec::new(),
            instance: None,
            line,
        };
        let env = environment;
        match op {
            StepOp::Restore => {
                let from = f.string(r, "from");
                step.from = match from.as_ref().map(|s| s.value.as_str()) {
                    None | Some("upper") => FromStore::Upper,
                    Some("own") => FromStore::Own,
                    Some(other) => {
                        r.error(
                            &from.as_ref().unwrap().span,
                            context,
                            format!("from \"{other}\" is not one of upper, own"),
                        );
                        FromStore::Upper
                    }
                };
                let at = from.map(|s| s.span).unwrap_or(span.clone());
                match (step.from, env) {
                    (FromStore::Upper, Some(e)) if e.upper_store.is_none() => r.error(
                        &at,
                        context,
                        "a restore reads the upper environment's store, but [environment] sets no upper_store \
                         (set it, or use from = \"own\")",
                    ),
                    (FromStore::Own, Some(e)) if e.store.is_none() => r.error(
                        &at,
                        context,
                        "from = \"own\" reads this environment's store, but [environment] sets no store",
                    ),
                    _ => {}
                }
                step.from_instance = f.string(r, "from_instance").map(|s| s.value);
                step.from_database = f.string(r, "from_database").map(|s| s.value);
                step.artifact = f.string(r, "artifact").map(|s| s.value);
                for id in f.strings(r, "identity") {
                    let path = resolve(&self.dir, &id.value);
                    if !path.is_file() {
                        r.warn(
                            &id.span,
                            context,
                            format!("identity {} does not exist here", path.display()),
                        );
                    }
                    step.identities.push(path);
                }
            }
            StepOp::Transform => match f.string(r, "script") {
                None => {
                    if !f.has("script") {
                        f.missing(r, "script");
                    }
                }
                Some(s) => {
                    let path = resolve(&self.dir, &s.value);
                    if !path.is_file() {
                        r.error(
                            &s.span,
                            context,
                            format!("script {} does not exist", path.display()),
                        );
                    }
                    step.script = Some(path);
                }
            },
            StepOp::Backup => {
                if let Some(e) = env
                    && e.store.is_none()
                {
                    r.error(
                        &f.key_span("op").unwrap_or(span.clone()),
                        context,
                        "a backup writes to this environment's store, but [environment] sets no store",
                    );
                }
                let level = f.integer(r, "compression_level", i64::MIN..=i64::MAX);
                let name = f.string(r, "compression");
                step.compression = match Compression::parse(
                    name.as_ref().map(|n| n.value.as_str()),
                    level.as_ref().map(|l| l.value),
                ) {
                    Ok(chosen) => chosen,
                    Err(why) => {
                        // A bad name is the name's fault; anything else the level's.
                        let at = match (&name, &level) {
                            (Some(n), _) if why.starts_with("compression \"") => &n.span,
                            (_, Some(l)) => &l.span,
                            (Some(n), None) => &n.span,
                            (None, None) => &span,
                        };
                        r.error(at, context, why);
                        None
                    }
                };
                for recipient in f.strings(r, "encrypt_to") {
                    match codec::parse_recipient(&recipient.value) {
                        Ok(_) => step.encrypt_to.push(recipient.value.trim().to_string()),
                        Err(e) => r.error(&recipient.span, context, format!("encrypt_to: {e:#}")),
                    }
                }
                for file in f.strings(r, "encrypt_to_file") {
                    let path = resolve(&self.dir, &file.value);
                    if let Err(e) = codec::read_recipients_file(&path) {
                        r.error(&file.span, context, format!("encrypt_to_file: {e:#}"));
                    }
                    step.encrypt_to_files.push(path);
                }
                step.instance = f.string(r, "instance").map(|s| s.value);
            }
            StepOp::Copy => {
                if !has_source {
                    r.error(
                        &f.key_span("op").unwrap_or(span.clone()),
                        context,
                        "a copy step needs the task's [task.source] database (the one to copy from)",
                    );
                }
            }
        }
        Some(step)
    }
}

/// [`MEMORY_CAP_MIB`] as the config's integers.
fn memory_caps() -> std::ops::RangeInclusive<i64> {
    *MEMORY_CAP_MIB.start() as i64..=*MEMORY_CAP_MIB.end() as i64
}

/// `text` as a path, relative ones resolved against `dir`.
fn resolve(dir: &Path, text: &str) -> PathBuf {
    let p = Path::new(text);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

enum StoreKind {
    /// A folder path (maybe relative).
    Folder(String),
    Url,
}

/// Checks a store location: a folder path, `file://PATH` or
/// `s3://bucket[/prefix]`.
fn check_store(text: &str) -> Result<StoreKind, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the store is empty".into());
    }
    if let Some(rest) = text.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or_default();
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!(
                "{text:?} does not name a valid S3 bucket (3-63 lower-case letters, digits, '-', '.'): s3://BUCKET[/PREFIX]"
            ));
        }
        return Ok(StoreKind::Url);
    }
    if let Some(path) = text.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "{text:?}: a file:// URL needs an absolute path (file:///srv/backups)"
            ));
        }
        return Ok(StoreKind::Url);
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "{scheme}:// stores are not supported; use a folder path, file:///PATH or s3://BUCKET/PREFIX"
        ));
    }
    Ok(StoreKind::Folder(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[environment]
name = "staging"
store = "s3://staging-backups/db"
upper_store = "s3://prod-backups/db"
pushgateway = "http://pushgateway:9091/"
timezone = "Europe/London"

[environment.s3]
endpoint = "http://127.0.0.1:9000"
part_size_mib = 8

[[task]]
name = "shop"
plugin = "postgres"
schedule = "30 2 * * *"
params = { owner = "app", swap-retries = 5 }

[task.database]
host = "db1.staging"
name = "shop"
password_env = "SHOP_PASSWORD"

[[task.step]]
op = "restore"
from_instance = "db1.prod"

[[task.step]]
op = "transform"
script = "sanitise.sql"

[[task.step]]
op = "backup"
compression = "gzip"
max_runtime = "2h"
"#;

    fn parse_in(text: &str, dir: &Path) -> Result<Config, Vec<Diagnostic>> {
        parse(
            text,
            "staging.toml",
            &dir.join("staging.toml"),
            dir,
            &CheckOptions::default(),
        )
    }

    fn dir_with_script() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sanitise.sql"), "select 1;").unwrap();
        dir
    }

    /// The error messages (`line:column: context: message`) of `text`.
    fn errors(text: &str) -> Vec<String> {
        let dir = dir_with_script();
        match parse_in(text, dir.path()) {
            Ok(_) => panic!("expected errors"),
            Err(d) => d
                .into_iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| {
                    d.to_string()
                        .trim_start_matches("staging.toml:")
                        .to_string()
                })
                .collect(),
        }
    }

    fn assert_error(text: &str, expected: &str) {
        let errors = errors(text);
        assert!(
            errors.iter().any(|e| e == expected),
            "expected {expected:?} among {errors:#?}"
        );
    }

    #[test]
    fn a_good_file_parses_with_defaults_and_resolved_paths() {
        let dir = dir_with_script();
        let config = parse_in(GOOD, dir.path()).unwrap_or_else(|d| panic!("{d:#?}"));
        let env = &config.environment;
        assert_eq!(env.name, "staging");
        assert_eq!(env.store.as_deref(), Some("s3://staging-backups/db"));
        assert_eq!(env.upper_store.as_deref(), Some("s3://prod-backups/db"));
        assert_eq!(env.pushgateway.as_deref(), Some("http://pushgateway:9091"));
        assert_eq!(env.timezone, chrono_tz::Europe::London);
        assert!(!env.is_production());
        assert_eq!(env.s3.part_size_mib, Some(8));
        let options = env.s3.apply(&StoreOptions::default());
        assert_eq!(options.s3.part_size, 8 << 20);
        assert_eq!(
            options.s3.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );

        let task = &config.tasks[0];
        assert_eq!(task.name, "shop");
        assert_eq!(task.line, 13);
        assert!(!task.suspend);
        assert_eq!(task.schedule.as_ref().unwrap().text, "30 2 * * *");
        assert!(task.params.contains(&("swap-retries".into(), "5".into())));
        assert_eq!(
            task.database.password,
            PasswordSource::Env("SHOP_PASSWORD".into())
        );
        let ops: Vec<StepOp> = task.steps.iter().map(|s| s.op).collect();
        assert_eq!(ops, [StepOp::Restore, StepOp::Transform, StepOp::Backup]);
        let [restore, transform, backup] = &task.steps[..] else {
            unreachable!()
        };
        assert_eq!(restore.from, FromStore::Upper);
        assert_eq!(restore.max_runtime, Duration::from_secs(4 * 3600));
        assert_eq!(transform.max_runtime, Duration::from_secs(45 * 60));
        assert_eq!(
            transform.script.as_deref(),
            Some(&*dir.path().join("sanitise.sql"))
        );
        assert_eq!(backup.max_runtime, Duration::from_secs(2 * 3600));
        assert_eq!(backup.compression, Some(Compression::gzip()));
        assert_eq!(
            StepOp::Copy.default_max_runtime(),
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(
            StepOp::Backup.default_max_runtime(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn a_wrong_op_points_at_its_line_and_column_and_step() {
        let text = GOOD.replace("op = \"transform\"", "op = \"restor\"");
        assert_error(
            &text,
            "29:6: task \"shop\" step 2: op \"restor\" is not one of backup, restore, transform, copy",
        );
    }

    #[test]
    fn every_mistake_is_listed_in_file_order() {
        let text = GOOD
            .replace(
                "timezone = \"Europe/London\"",
                "timezone = \"Mars/Olympus\"",
            )
            .replace("schedule = \"30 2 * * *\"", "schedule = \"30 2 * *\"")
            .replace("max_runtime = \"2h\"", "max_runtime = \"2 fortnights\"")
            .replace("script = \"sanitise.sql\"", "script = \"missing.sql\"");
        let errors = errors(&text);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with("7:12: environment: timezone \"Mars/Olympus\""),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with("16:12: task \"shop\": schedule \"30 2 * *\" has 4 fields"),
            "{errors:#?}"
        );
        assert!(
            errors[2].starts_with("30:10: task \"shop\" step 2: script "),
            "{errors:#?}"
        );
        assert!(
            errors[2].ends_with("missing.sql does not exist"),
            "{errors:#?}"
        );
        assert!(
            errors[3].starts_with("35:15: task \"shop\" step 3: max_runtime \"2 fortnights\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn unknown_fields_and_inline_secrets_are_errors() {
        let text = GOOD
            .replace("suspend", "x")
            .replace("schedule =", "shedule =")
            .replace("password_env = \"SHOP_PASSWORD\"", "password = \"hunter2\"");
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.starts_with("16:1: task \"shop\": unknown field \"shedule\" (known fields: name, plugin, schedule")),
            "{errors:#?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("22:1: task \"shop\" database: unknown field \"password\" (secrets never go in the file")),
            "{errors:#?}"
        );
        assert!(!errors.iter().any(|e| e.contains("hunter2")), "{errors:#?}");
    }

    #[test]
    fn a_field_of_another_operation_is_named() {
        let text = GOOD.replace("compression = \"gzip\"", "script = \"sanitise.sql\"");
        assert_error(
            &text,
            "34:1: task \"shop\" step 3: script belongs to transform steps; it does not apply to a backup step",
        );
    }

    #[test]
    fn upper_store_must_differ_from_the_own_store() {
        let text = GOOD.replace("s3://prod-backups/db", "s3://staging-backups/other");
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.starts_with(
                "5:15: environment: upper_store s3://staging-backups/other is the same place"
            )),
            "{errors:#?}"
        );
    }

    #[test]
    fn stores_and_urls_are_checked() {
        let text = GOOD
            .replace("s3://staging-backups/db", "s3://Bad_Bucket/db")
            .replace("http://pushgateway:9091/", "pushgateway:9091");
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.starts_with(
                "4:9: environment: store: \"s3://Bad_Bucket/db\" does not name a valid S3 bucket"
            )),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e
                    .starts_with("6:15: environment: pushgateway \"pushgateway:9091\" must be")),
            "{errors:#?}"
        );
        assert_error(
            &GOOD.replace("s3://prod-backups/db", "ftp://x/y"),
            "5:15: environment: upper_store: ftp:// stores are not supported; use a folder path, file:///PATH or s3://BUCKET/PREFIX",
        );
    }

    #[test]
    fn missing_pieces_are_reported() {
        assert_error("", "1:1: missing the [environment] table");
        assert_error("", "1:1: no tasks: add at least one [[task]]");
        let text = "[environment]\nname = \"x\"\n\n[[task]]\nname = \"a\"\n";
        let errors = errors(text);
        assert!(
            errors
                .iter()
                .any(|e| e == "4:1: task \"a\": missing field \"plugin\""),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e == "4:1: task \"a\": missing field \"database\""),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("4:1: task \"a\": no steps")),
            "{errors:#?}"
        );
    }

    #[test]
    fn task_names_are_unique_and_restores_need_an_upper_store() {
        let task = "\n[[task]]\nname = \"a\"\nplugin = \"postgres\"\ndatabase = { name = \"d\" }\n[[task.step]]\nop = \"restore\"\n";
        let text =
            format!("[environment]\nname = \"integration\"\nstore = \"/srv/int\"\n{task}{task}");
        let errors = errors(&text);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("12:1: task \"a\": another task has this name (line 5)")),
            "{errors:#?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with(
                "9:1: task \"a\" step 1: a restore reads the upper environment's store"
            )),
            "{errors:#?}"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let text = GOOD
            .replace("part_size_mib = 8", "part_size_mib = \"8\"")
            .replace(
                "name = \"shop\"\nplugin",
                "name = \"shop\"\nsuspend = \"yes\"\nplugin",
            );
        let errors = errors(&text);
        assert!(
            errors
                .iter()
                .any(|e| e
                    == "11:17: environment.s3: part_size_mib must be an integer, not a string"),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e == "15:11: task \"shop\": suspend must be true or false, not a string"),
            "{errors:#?}"
        );
    }

    #[test]
    fn toml_syntax_errors_have_a_position() {
        let errors = errors("[environment]\nname = \"x\n");
        assert!(errors[0].starts_with("2:"), "{errors:#?}");
        assert!(errors[0].contains("TOML syntax"), "{errors:#?}");
    }

    #[test]
    fn schedules_are_five_field_cron_or_six_with_seconds() {
        assert!(parse_schedule("30 2 * * *").is_ok());
        assert!(parse_schedule("0 3 * * 0").is_ok());
        assert!(parse_schedule("@daily").is_ok());
        assert!(parse_schedule("*/5 * * * * *").is_ok());
        assert!(parse_schedule("0 0 3 * * * 2027").is_err());
        assert!(parse_schedule("61 2 * * *").is_err());
    }

    #[test]
    fn sanitise_tables_are_checked() {
        let dir = dir_with_script();
        std::fs::write(dir.path().join("rules.toml"), "").unwrap();
        let text = |sanitise: &str| {
            format!(
                "[environment]\nname = \"staging\"\nstore = \"/srv/b\"\n\n[[task]]\nname = \"shop\"\nplugin = \"postgres\"\n\
                 database = {{ name = \"shop\" }}\n[task.sanitise]\n{sanitise}\n[[task.step]]\nop = \"backup\"\n"
            )
        };
        let good = parse_in(
            &text("sanitiser = \"sanitise\"\nrules = \"rules.toml\"\nsalt_env = \"SALT\"\nstrict = true\ncall_timeout = \"5s\""),
            dir.path(),
        )
        .unwrap();
        let spec = good.tasks[0].sanitise.as_ref().unwrap();
        assert_eq!(spec.salt, SaltSource::Env("SALT".into()));
        assert!(spec.strict);
        assert_eq!(spec.call_timeout, Duration::from_secs(5));
        assert_eq!(spec.rules, dir.path().join("rules.toml"));

        let bad = parse_in(
            &text("sanitiser = \"sanitise\"\nrules = \"missing.toml\"\nsalt = \"hunter2\""),
            dir.path(),
        )
        .unwrap_err();
        let bad: Vec<String> = bad.iter().map(|d| d.to_string()).collect();
        assert!(
            bad.iter()
                .any(|e| e.contains("missing.toml does not exist")),
            "{bad:#?}"
        );
        assert!(
            bad.iter()
                .any(|e| e.contains("salt_file") && e.contains("unknown field")),
            "{bad:#?}"
        );
        assert!(!bad.iter().any(|e| e.contains("hunter2")), "{bad:#?}");
        assert!(
            bad.iter()
                .any(|e| e.contains("missing the keyed-hash salt")),
            "{bad:#?}"
        );
    }

    #[test]
    fn alert_classes_come_from_the_config() {
        let dir = dir_with_script();
        let text = r#"
[environment]
name = "staging"
store = "/srv/b"

[alerts]
failed_severity = "page"
runtime_classes = { "2h" = "2h", "30m" = "30m" }
schedule_classes = { nightly = "26h", weekly = "7days 12h" }

[[task]]
name = "orders"
plugin = "postgres"
schedule = "0 3 * * 1-5"
schedule_class = "nightly"
database = { name = "orders" }
[[task.step]]
op = "backup"
"#;
        let config = parse_in(text, dir.path()).unwrap();
        assert_eq!(config.alerts.failed_severity, "page");
        let runtime: Vec<_> = config
            .alerts
            .runtime_classes
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(runtime, ["2h", "30m"]);
        assert_eq!(
            config.alerts.schedule_classes[1].max_age,
            Duration::from_secs(180 * 3600)
        );
        assert_eq!(config.tasks[0].schedule_class.as_deref(), Some("nightly"));

        let bad = text
            .replace(
                "schedule_class = \"nightly\"",
                "schedule_class = \"hourly\"",
            )
            .replace("\"30m\" = \"30m\"", "\"30m\" = \"soon\"");
        let errors = errors(&bad);
        assert!(
            errors.iter().any(|e| e.starts_with("8:42:")
                && e.contains("alerts.runtime_classes")
                && e.contains("30m")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("schedule_class \"hourly\" is not one of")
                    && e.contains("nightly, weekly")),
            "{errors:#?}"
        );
    }

    #[test]
    fn production_is_the_explicit_field_else_a_name_with_prod() {
        let dir = dir_with_script();
        let env = |name: &str, extra: &str| {
            let text = GOOD.replace("name = \"staging\"", &format!("name = \"{name}\"\n{extra}"));
            parse_in(&text, dir.path())
                .unwrap_or_else(|d| panic!("{d:#?}"))
                .environment
        };
        assert!(env("Production-EU", "").is_production());
        assert!(env("preprod", "").is_production());
        assert!(!env("preprod", "production = false").is_production());
        assert!(env("staging", "production = true").is_production());
        assert!(!env("staging", "").is_production());
        assert_error(
            &GOOD.replace("name = \"staging\"", "name = \"s\"\nproduction = \"no\""),
            "4:14: environment: production must be true or false, not a string",
        );
    }
}
