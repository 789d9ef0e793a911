//! What a pod needs of the config file and where it finds it: a copy of the
//! config with its paths rewritten to the pod's layout, the files it names
//! (scripts, sanitiser rules, recipients files) for the ConfigMap, the
//! credentials each task names (passwords, the sanitising salt, age
//! identities: Secrets as files or variables), the volumes folder stores
//! live on, and the writable folders the busy marker needs.
//!
//! What a config holds comes from the validated [`Config`] alone: each of
//! its structs is taken apart field by field without `..`, so a field added
//! to the config does not compile here until the renderer says what a pod
//! needs of it. The parsed document is only used to find where a value the
//! config holds is written, to rewrite it in place.
//!
//! In the pod the config sits in [`CONFIG_DIR`](super::CONFIG_DIR); the files
//! it names sit in `files/` beside it and Secret files in
//! `secrets/SECRET/KEY`, and the copy names them relative to itself, so it
//! is complete wherever its folder is put together. Edits replace only the
//! string values in the original text: comments, layout and line numbers
//! stay.

use super::names;
use super::settings::Settings;
use crate::jobs::config::{
    Config, DatabaseSpec, Environment, PasswordSource, SaltSource, SanitiseSpec, StepSpec, Task,
};
use crate::jobs::diagnostics::Report;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A file of the ConfigMap: its key and its path under the config folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileItem {
    pub key: String,
    pub path: String,
    pub content: Vec<u8>,
}

/// Where a task finds one credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An environment variable (`password_env`).
    Env(String),
    /// A file, by its path under the config folder (`password_file`,
    /// `salt_file`, `identity`).
    File(String),
}

/// One credential a task names, and the Secret key that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    pub secret: String,
    pub key: String,
    pub target: Target,
    /// The variable or path as the config file writes it.
    pub reference: String,
}

/// The pieces of one task in the file.
#[derive(Clone, Debug, Default)]
pub struct TaskPlace {
    pub span: Range<usize>,
    pub schedule_span: Option<Range<usize>>,
    pub secrets: Vec<SecretUse>,
}

/// A persistent volume claim mounted at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMount {
    pub name: String,
    pub claim: String,
    pub path: String,
    pub read_only: bool,
}

#[derive(Clone, Debug)]
pub struct Layout {
    /// The config copy's ConfigMap key and file name.
    pub config_key: String,
    pub config_text: String,
    pub files: Vec<FileItem>,
    /// In the order of the file's tasks (`Config::tasks`).
    pub tasks: Vec<TaskPlace>,
    pub claims: Vec<ClaimMount>,
    /// Folders the pod must be able to write besides its own state, cache
    /// and /tmp (the busy marker's): emptyDirs.
    pub scratch_dirs: Vec<String>,
}

/// `text` as a TOML basic string.
pub fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The string, or each string of the array, at `key` of `table`.
fn strings(table: &DeTable<'_>, key: &str) -> Vec<(String, Range<usize>)> {
    let Some(v) = table.get(key) else {
        return Vec::new();
    };
    let one = |v: &Spanned<DeValue<'_>>| match v.get_ref() {
        DeValue::String(s) => Some((s.to_string(), v.span())),
        _ => None,
    };
    match v.get_ref() {
        DeValue::Array(items) => items.iter().filter_map(one).collect(),
        _ => one(v).into_iter().collect(),
    }
}

fn table<'t, 'i>(parent: &'t DeTable<'i>, key: &str) -> Option<(&'t DeTable<'i>, Range<usize>)> {
    let v = parent.get(key)?;
    match v.get_ref() {
        DeValue::Table(t) => Some((t, v.span())),
        _ => None,
    }
}

fn tables<'t, 'i>(parent: &'t DeTable<'i>, key: &str) -> Vec<(&'t DeTable<'i>, Range<usize>)> {
    match parent.get(key).map(|v| v.get_ref()) {
        Some(DeValue::Array(items)) => items
            .iter()
            .filter_map(|i| match i.get_ref() {
                DeValue::Table(t) => Some((t, i.span())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The kind of credential, which names the default Secret key.
#[derive(Clone, Copy)]
enum Credential {
    Password,
    Identity,
    Salt,
}

impl Credential {
    fn key(self) -> &'static str {
        match self {
            Credential::Password => "password",
            Credential::Identity => "identity",
            Credential::Salt => "salt",
        }
    }
}

/// Top-level folders of the image a volume must never cover.
const SYSTEM_FOLDERS: &[&str] = &[
    "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "sbin", "sys", "usr",
];

struct Builder<'a, 'r, 's> {
    report: &'r mut Report<'s>,
    config: &'a Config,
    settings: &'a Settings,
    environment_slug: String,
    edits: Vec<(Range<usize>, String)>,
    files: Vec<FileItem>,
    /// Local file → its path in the pod.
    file_paths: HashMap<PathBuf, String>,
    /// Default Secret name → the reference that took it, and where.
    default_secrets: HashMap<String, (String, Range<usize>)>,
    used_settings: Vec<bool>,
    claims: Vec<ClaimMount>,
    claim_use: Vec<(bool, bool)>,
    scratch_dirs: Vec<String>,
}

impl Builder<'_, '_, '_> {
    fn resolve(&self, text: &str) -> PathBuf {
        let p = Path::new(text);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.config.dir.join(p)
        }
    }

    /// Where `table` writes `key`, which the validated config holds: each
    /// string (one, or each of an array). The config was read from this very
    /// text, so a value it holds is there; if not, that is a bug here,
    /// reported rather than rendered without it.
    fn locate(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        at: &Range<usize>,
        context: &str,
    ) -> Vec<(String, Range<usize>)> {
        let found = strings(table, key);
        if found.is_empty() {
            self.report.error(
                at,
                context,
                format!(
                    "{key} is in the checked config but was not found in the file to rewrite for the pod \
                     (a bug in render kubernetes: please report it)"
                ),
            );
        }
        found
    }

    /// Ships the file `text` names (at `span`) in the ConfigMap and points
    /// the copy at it.
    fn ship(&mut self, text: &str, span: Range<usize>, context: &str, field: &str) {
        let local = self.resolve(text);
        let path = match self.file_paths.get(&local) {
            Some(p) => p.clone(),
            None => {
                let content = match std::fs::read(&local) {
                    Ok(c) => c,
                    Err(e) => {
                        self.report.error(
                            &span,
                            context,
                            format!("{field}: cannot read {}: {e}", local.display()),
                        );
                        return;
                    }
                };
                let base = local
                    .file_name()
                    .map(|n| names::data_key(&n.to_string_lossy()))
                    .unwrap_or_else(|| "file".into());
                let mut key = base.clone();
                let mut n = 2;
                while key == self.config_key() || self.files.iter().any(|f| f.key == key) {
                    key = format!("{n}-{base}");
                    n += 1;
                }
                let path = format!("files/{key}");
                self.files.push(FileItem {
                    key,
                    path: path.clone(),
                    content,
                });
                self.file_paths.insert(local, path.clone());
                path
            }
        };
        self.edits.push((span, toml_string(&path)));
    }

    /// Ships every file `table` names at `key`.
    fn ship_all(&mut self, table: &DeTable<'_>, key: &str, at: &Range<usize>, context: &str) {
        for (text, span) in self.locate(table, key, at, context) {
            self.ship(&text, span, context, key);
        }
    }

    fn config_key(&self) -> String {
        config_key(&self.config.file)
    }

    /// The Secret (and key) holding `reference`: from `[kubernetes.secrets]`,
    /// else `envsync-ENVIRONMENT-NAME` with the credential's default key.
    fn secret_for(
        &mut self,
        reference: &str,
        base: &str,
        key: &str,
        span: &Range<usize>,
        context: &str,
    ) -> (String, String) {
        if let Some(i) = self
            .settings
            .secrets
            .iter()
            .position(|s| s.reference.value == reference)
        {
            self.used_settings[i] = true;
            let s = &self.settings.secrets[i];
            return (s.name.clone(), s.key.clone().unwrap_or_else(|| key.into()));
        }
        let name = names::dns_label(
            &format!("envsync-{}-{base}", self.environment_slug),
            names::LABEL_MAX,
        );
        match self.default_secrets.get(&name) {
            Some((other, at)) if other != reference => {
                let line = self.report.position(at.start).0;
                self.report.error(
                    span,
                    context,
                    format!(
                        "{reference} would be kept in Secret {name}, like {other} (line {line}); \
                         name the Secret of one of them in [kubernetes.secrets]"
                    ),
                );
            }
            Some(_) => {}
            None => {
                self.default_secrets
                    .insert(name.clone(), (reference.to_string(), span.clone()));
            }
        }
        (name, key.to_string())
    }

    /// A credential file (`password_file`, `salt_file`, `identity`): mounted
    /// from its Secret, and the copy points at the mounted file.
    fn secret_files(
        &mut self,
        table: &DeTable<'_>,
        field: &str,
        kind: Credential,
        at: &Range<usize>,
        context: &str,
        uses: &mut Vec<SecretUse>,
    ) {
        for (text, span) in self.locate(table, field, at, context) {
            let base = Path::new(&text)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| text.clone());
            let (secret, key) = self.secret_for(&text, &base, kind.key(), &span, context);
            let path = format!("secrets/{secret}/{key}");
            self.edits.push((span, toml_string(&path)));
            push_new(
                uses,
                SecretUse {
                    secret,
                    key,
                    target: Target::File(path),
                    reference: text,
                },
            );
        }
    }

    /// A credential in a variable (`password_env`, `salt_env`): the same
    /// variable, from its Secret.
    fn secret_variable(
        &mut self,
        table: &DeTable<'_>,
        field: &str,
        kind: Credential,
        at: &Range<usize>,
        context: &str,
        uses: &mut Vec<SecretUse>,
    ) {
        for (var, span) in self.locate(table, field, at, context) {
            let (secret, key) = self.secret_for(&var, &var, kind.key(), &span, context);
            push_new(
                uses,
                SecretUse {
                    secret,
                    key,
                    target: Target::Env(var.clone()),
                    reference: var,
                },
            );
        }
    }

    /// The claim of `[kubernetes] volumes` that `path` lies on.
    fn claim_of(&self, path: &Path) -> Option<usize> {
        self.claims
            .iter()
            .enumerate()
            .filter(|(_, c)| path.starts_with(&c.path))
            .max_by_key(|(_, c)| c.path.len())
            .map(|(i, _)| i)
    }

    /// The environment: where it stores, keeps its history and marks itself
    /// busy.
    fn environment(&mut self, root: &DeTable<'_>, root_span: &Range<usize>) {
        let Environment {
            name: _,
            // A pod guards nothing itself: `render` refuses the tasks the
            // guard would (`jobs::guard`).
            production: _,
            store,
            upper_store,
            pushgateway: _,
            progress_interval: _,
            timezone: _,
            state_dir,
            marker_file,
            s3: _,
        } = &self.config.environment;
        let Some((env, span)) = table(root, "environment") else {
            self.report.error(
                root_span,
                "environment",
                "[environment] is in the checked config but not in the file (a bug in render kubernetes)",
            );
            return;
        };
        if store.is_some() {
            self.store(env, "store", true, &span);
        }
        if upper_store.is_some() {
            self.store(env, "upper_store", false, &span);
        }
        if state_dir.is_some() {
            self.state_dir(env, &span);
        }
        if marker_file.is_some() {
            self.marker_file(env, &span);
        }
    }

    /// A folder store must lie on a volume, or its backups would go with
    /// the pod.
    fn store(&mut self, env: &DeTable<'_>, field: &str, writes: bool, at: &Range<usize>) {
        for (text, span) in self.locate(env, field, at, "environment") {
            let text = text.trim();
            if text.starts_with("s3://") {
                continue;
            }
            let folder = text.strip_prefix("file://").unwrap_or(text);
            if !Path::new(folder).is_absolute() {
                self.report.error(
                    &span,
                    "environment",
                    format!(
                        "{field} {text:?} is a relative folder: for Kubernetes a folder store needs an absolute \
                         path on a volume (the config's folder is read-only in the pod)"
                    ),
                );
                continue;
            }
            match self.claim_of(Path::new(folder)) {
                Some(i) => {
                    let (w, r) = &mut self.claim_use[i];
                    if writes {
                        *w = true;
                    } else {
                        *r = true;
                    }
                }
                None => self.report.error(
                    &span,
                    "environment",
                    format!(
                        "{field} {folder} is a folder: in a pod it needs a persistent volume, or backups go \
                         with the pod; add volumes = {{ {} = \"CLAIM\" }} to [kubernetes]",
                        toml_string(folder)
                    ),
                ),
            }
        }
    }

    /// The run history goes to a volume when `state_dir` lies on one, else
    /// to the pod's own state folder.
    fn state_dir(&mut self, env: &DeTable<'_>, at: &Range<usize>) {
        for (text, span) in self.locate(env, "state_dir", at, "environment") {
            let path = Path::new(&text);
            if path.is_absolute() {
                if let Some(i) = self.claim_of(path) {
                    self.claim_use[i].0 = true;
                    continue;
                }
                if path.starts_with(super::STATE_DIR) {
                    continue;
                }
            }
            self.report.warn(
                &span,
                "environment",
                format!(
                    "state_dir {text} is on no volume: the pod keeps its run history in {} for as long as \
                     the pod lives (name a claim in [kubernetes] volumes to keep it)",
                    super::STATE_DIR
                ),
            );
            self.edits.push((span, toml_string(super::STATE_DIR)));
        }
    }

    /// The busy marker is written on every run, and the pod's root
    /// filesystem is read-only: it must lie on a claim (shared by every pod
    /// that mounts it), in a folder the pod writes anyway, or in a folder
    /// given an emptyDir of its own (then it only tells about this pod).
    fn marker_file(&mut self, env: &DeTable<'_>, at: &Range<usize>) {
        for (text, span) in self.locate(env, "marker_file", at, "environment") {
            let path = Path::new(&text);
            let folder = path.parent().unwrap_or(Path::new("/"));
            if !path.is_absolute() || folder.starts_with(super::CONFIG_DIR) {
                let file = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| crate::jobs::runner::DEFAULT_MARKER.into());
                let moved = format!("{}/{file}", super::STATE_DIR);
                self.report.warn(
                    &span,
                    "environment",
                    format!(
                        "marker_file {text} would be in the config's folder, which is read-only in the pod: \
                         the pod writes it to {moved}"
                    ),
                );
                self.edits.push((span, toml_string(&moved)));
                continue;
            }
            if let Some(i) = self.claim_of(path) {
                self.claim_use[i].0 = true;
                continue;
            }
            if [super::STATE_DIR, super::TMP_DIR]
                .iter()
                .any(|d| folder.starts_with(d))
            {
                continue;
            }
            let top = folder
                .components()
                .nth(1)
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            let system = match &top {
                None => true,
                Some(top) => SYSTEM_FOLDERS.contains(&top.as_str()),
            };
            if system || folder == Path::new(super::CACHE_DIR) {
                self.report.error(
                    &span,
                    "environment",
                    format!(
                        "marker_file {text}: the pod's root filesystem is read-only and {} cannot take a \
                         volume of its own; put the marker under /run (e.g. \"/run/envsync/busy\"), on a \
                         claim in [kubernetes] volumes, or leave marker_file unset",
                        folder.display()
                    ),
                );
                continue;
            }
            let folder = folder.display().to_string();
            if !self.scratch_dirs.contains(&folder) {
                self.scratch_dirs.push(folder);
            }
        }
    }

    fn database(
        &mut self,
        spec: &DatabaseSpec,
        task: &DeTable<'_>,
        field: &str,
        context: &str,
        uses: &mut Vec<SecretUse>,
    ) {
        let DatabaseSpec {
            name: _,
            host: _,
            port: _,
            user: _,
            // Neither a file nor a secret: it travels in the config as it is.
            region: _,
            password,
        } = spec;
        let context = format!("{context} {field}");
        let Some((db, span)) = table(task, field) else {
            self.report.error(
                &(0..0),
                &context,
                "in the checked config but not in the file (a bug in render kubernetes)",
            );
            return;
        };
        match password {
            PasswordSource::Default => {}
            PasswordSource::File(_) => {
                self.secret_files(
                    db,
                    "password_file",
                    Credential::Password,
                    &span,
                    &context,
                    uses,
                );
            }
            PasswordSource::Env(_) => {
                self.secret_variable(
                    db,
                    "password_env",
                    Credential::Password,
                    &span,
                    &context,
                    uses,
                );
            }
        }
    }

    /// `[task.sanitise]`: the rules file is shipped, the salt comes from a
    /// Secret. The sanitiser itself is in the image's plugin folder.
    fn sanitise(
        &mut self,
        spec: &SanitiseSpec,
        task: &DeTable<'_>,
        context: &str,
        uses: &mut Vec<SecretUse>,
    ) {
        let SanitiseSpec {
            sanitiser: _,
            rules: _,
            salt,
            strict: _,
            allowed_email_domains: _,
            memory_cap_mib: _,
            call_timeout: _,
        } = spec;
        let context = format!("{context} sanitise");
        let Some((table, span)) = table(task, "sanitise") else {
            self.report.error(
                &(0..0),
                &context,
                "in the checked config but not in the file (a bug in render kubernetes)",
            );
            return;
        };
        self.ship_all(table, "rules", &span, &context);
        match salt {
            SaltSource::File(_) => {
                self.secret_files(table, "salt_file", Credential::Salt, &span, &context, uses)
            }
            SaltSource::Env(_) => {
                self.secret_variable(table, "salt_env", Credential::Salt, &span, &context, uses)
            }
        }
    }

    fn step(
        &mut self,
        step: &StepSpec,
        table: &DeTable<'_>,
        span: &Range<usize>,
        context: &str,
        uses: &mut Vec<SecretUse>,
    ) {
        let StepSpec {
            op: _,
            max_runtime: _,
            params: _,
            from: _,
            from_instance: _,
            from_database: _,
            artifact: _,
            identities,
            script,
            compression: _,
            encrypt_to: _,
            encrypt_to_files,
            instance: _,
            line: _,
        } = step;
        if script.is_some() {
            self.ship_all(table, "script", span, context);
        }
        if !encrypt_to_files.is_empty() {
            self.ship_all(table, "encrypt_to_file", span, context);
        }
        if !identities.is_empty() {
            self.secret_files(table, "identity", Credential::Identity, span, context, uses);
        }
    }

    fn task(&mut self, task: &Task, table: &DeTable<'_>, span: Range<usize>) -> TaskPlace {
        let Task {
            name,
            plugin: _,
            schedule,
            schedule_class: _,
            suspend: _,
            params: _,
            database,
            source,
            steps,
            memory_cap_mib: _,
            jobs: _,
            allow_programs: _,
            sanitise,
            line: _,
        } = task;
        let context = format!("task \"{name}\"");
        let mut uses = Vec::new();
        self.database(database, table, "database", &context, &mut uses);
        if let Some(source) = source {
            self.database(source, table, "source", &context, &mut uses);
        }
        if let Some(spec) = sanitise {
            self.sanitise(spec, table, &context, &mut uses);
        }
        let step_tables = tables(table, "step");
        if step_tables.len() != steps.len() {
            self.report.error(
                &span,
                &context,
                "its steps in the file and in the checked config differ (a bug in render kubernetes)",
            );
        }
        for (i, (step, (step_table, step_span))) in steps.iter().zip(step_tables).enumerate() {
            let step_context = format!("{context} step {}", i + 1);
            self.step(step, step_table, &step_span, &step_context, &mut uses);
        }
        TaskPlace {
            schedule_span: schedule
                .as_ref()
                .and_then(|_| table.get("schedule").map(|v| v.span())),
            span,
            secrets: uses,
        }
    }
}

fn push_new(uses: &mut Vec<SecretUse>, use_: SecretUse) {
    if !uses.contains(&use_) {
        uses.push(use_);
    }
}

/// The config copy's key (and file name in the pod): the file's own name.
pub fn config_key(file: &Path) -> String {
    file.file_name()
        .map(|n| names::data_key(&n.to_string_lossy()))
        .filter(|k| k != "file")
        .unwrap_or_else(|| "config.toml".into())
}

/// Lays out the checked `config`, whose text is `text` and parsed root
/// `root`, for a pod. Mistakes go to `report`.
pub fn layout(
    report: &mut Report<'_>,
    config: &Config,
    root: &DeTable<'_>,
    text: &str,
    settings: &Settings,
) -> Layout {
    let Config {
        file,
        dir: _,
        environment,
        alerts: _,
        tasks,
        warnings: _,
    } = config;
    let claims: Vec<ClaimMount> = settings
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| ClaimMount {
            name: format!("volume-{}", i + 1),
            claim: v.claim.clone(),
            path: v.path.value.trim_end_matches('/').to_string(),
            read_only: false,
        })
        .collect();
    let mut b = Builder {
        report,
        config,
        settings,
        environment_slug: names::dns_label(&environment.name, names::LABEL_MAX),
        edits: Vec::new(),
        files: Vec::new(),
        file_paths: HashMap::new(),
        default_secrets: HashMap::new(),
        used_settings: vec![false; settings.secrets.len()],
        claim_use: vec![(false, false); claims.len()],
        claims,
        scratch_dirs: Vec::new(),
    };
    let whole = 0..text.len();
    b.environment(root, &whole);
    let task_tables = tables(root, "task");
    if task_tables.len() != tasks.len() {
        b.report.error(
            &whole,
            "",
            "the tasks in the file and in the checked config differ (a bug in render kubernetes)",
        );
    }
    let tasks = tasks
        .iter()
        .zip(task_tables)
        .map(|(task, (t, span))| b.task(task, t, span))
        .collect();
    for (i, used) in b.used_settings.iter().enumerate() {
        if !used {
            let s = &settings.secrets[i];
            b.report.warn(
                &s.reference.span,
                "kubernetes.secrets",
                format!(
                    "{} is not a password_env, password_file, salt_env, salt_file or identity of any task",
                    s.reference.value
                ),
            );
        }
    }
    // Claims only the upper store reads are mounted read-only.
    for (claim, (writes, reads)) in b.claims.iter_mut().zip(&b.claim_use) {
        claim.read_only = *reads && !*writes;
    }
    let mut edits = b.edits;
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    edits.dedup_by_key(|(span, _)| span.start);
    let mut config_text = text.to_string();
    for (span, replacement) in edits {
        config_text.replace_range(span, &replacement);
    }
    Layout {
        config_key: config_key(file),
        config_text,
        files: b.files,
        tasks,
        claims: b.claims,
        scratch_dirs: b.scratch_dirs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::config::{CheckOptions, parse};
    use crate::jobs::diagnostics::Severity;

    fn lay_out(text: &str, dir: &Path) -> (Layout, Vec<String>) {
        let config = parse(
            text,
            "staging.toml",
            &dir.join("staging.toml"),
            dir,
            &CheckOptions::default(),
        )
        .unwrap_or_else(|d| panic!("{d:#?}"));
        let root = DeTable::parse(text).unwrap();
        let mut report = Report::new("staging.toml", text);
        let settings = match root
            .get_ref()
            .get("kubernetes")
            .map(|v| (v.get_ref(), v.span()))
        {
            Some((DeValue::Table(t), span)) => super::super::settings::read(&mut report, t, span),
            _ => Settings::default(),
        };
        let layout = layout(&mut report, &config, root.get_ref(), text, &settings);
        let messages = report
            .into_sorted()
            .into_iter()
            .map(|d| {
                format!(
                    "{}{}",
                    if d.severity == Severity::Warning {
                        "W "
                    } else {
                        "E "
                    },
                    d
                )
            })
            .collect();
        (layout, messages)
    }

    #[test]
    fn files_are_shipped_and_credentials_become_secrets_with_paths_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sql")).unwrap();
        std::fs::write(dir.path().join("sql/clean.sql"), "select 1;").unwrap();
        std::fs::write(dir.path().join("staging.toml.sql"), "select 2;").unwrap();
        let text = r#"
[environment]
name = "Staging"
store = "/srv/backups/staging"   # own
upper_store = "file:///srv/prod"
state_dir = "state"

[kubernetes]
volumes = { "/srv/backups" = "backups", "/srv/prod" = "prod-backups" }
secrets = { "AGE" = "unused", "/etc/envsync/shop.pw" = { name = "shop-db", key = "pw" } }

[[task]]
name = "shop"
plugin = "postgres"
database = { name = "shop", password_file = "/etc/envsync/shop.pw" }
source = { name = "shop", password_env = "PROD_PASSWORD" }

[[task.step]]
op = "restore"
from = "own"
identity = ["keys/age.key"]

[[task.step]]
op = "transform"
script = 'sql/clean.sql'

[[task.step]]
op = "transform"
script = "staging.toml.sql"

[[task]]
name = "blog"
plugin = "postgres"
database = { name = "blog", password_env = "PROD_PASSWORD" }
[[task.step]]
op = "transform"
script = "sql/clean.sql"
"#;
        let (layout, messages) = lay_out(text, dir.path());
        assert_eq!(
            messages,
            [
                "W staging.toml:6:13: warning: environment: state_dir state is on no volume: the pod keeps \
                 its run history in /var/lib/envsync for as long as the pod lives (name a claim in \
                 [kubernetes] volumes to keep it)",
                "W staging.toml:10:13: warning: kubernetes.secrets: AGE is not a password_env, password_file, \
                 salt_env, salt_file or identity of any task"
            ]
        );
        assert_eq!(layout.config_key, "staging.toml");
        // One file per local file; a name taken by the config gets a prefix.
        let files: Vec<(&str, &str)> = layout
            .files
            .iter()
            .map(|f| (f.key.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                ("clean.sql", "files/clean.sql"),
                ("staging.toml.sql", "files/staging.toml.sql")
            ]
        );
        assert_eq!(layout.files[0].content, b"select 1;");
        // The copy is the original with only the path values changed.
        let copy = &layout.config_text;
        assert!(
            copy.contains("store = \"/srv/backups/staging\"   # own"),
            "{copy}"
        );
        assert!(copy.contains("state_dir = \"/var/lib/envsync\""), "{copy}");
        assert!(
            copy.contains("password_file = \"secrets/shop-db/pw\" }"),
            "{copy}"
        );
        assert!(
            copy.contains("identity = [\"secrets/envsync-staging-age-key/identity\"]"),
            "{copy}"
        );
        assert!(copy.contains("script = \"files/clean.sql\"\n"), "{copy}");
        assert_eq!(copy.lines().count(), text.lines().count());
        // The copy is still a valid config where its files are.
        let pod = tempfile::tempdir().unwrap();
        std::fs::create_dir(pod.path().join("files")).unwrap();
        for f in &layout.files {
            std::fs::write(pod.path().join(&f.path), &f.content).unwrap();
        }
        let copied = parse(
            copy,
            "staging.toml",
            &pod.path().join("staging.toml"),
            pod.path(),
            &CheckOptions::default(),
        )
        .unwrap_or_else(|d| panic!("{d:#?}"));
        assert_eq!(
            copied.tasks[0].steps[1].script.as_deref(),
            Some(&*pod.path().join("files/clean.sql"))
        );

        let shop = &layout.tasks[0].secrets;
        assert_eq!(
            shop,
            &[
                SecretUse {
                    secret: "shop-db".into(),
                    key: "pw".into(),
                    target: Target::File("secrets/shop-db/pw".into()),
                    reference: "/etc/envsync/shop.pw".into(),
                },
                SecretUse {
                    secret: "envsync-staging-prod-password".into(),
                    key: "password".into(),
                    target: Target::Env("PROD_PASSWORD".into()),
                    reference: "PROD_PASSWORD".into(),
                },
                SecretUse {
                    secret: "envsync-staging-age-key".into(),
                    key: "identity".into(),
                    target: Target::File("secrets/envsync-staging-age-key/identity".into()),
                    reference: "keys/age.key".into(),
                },
            ]
        );
        assert_eq!(layout.tasks[1].secrets.len(), 1);
        assert_eq!(layout.tasks[0].span.start, text.find("[[task]]").unwrap());
        // The own store's claim is writable, the upper store's read-only.
        assert_eq!(
            layout.claims,
            [
                ClaimMount {
                    name: "volume-1".into(),
                    claim: "backups".into(),
                    path: "/srv/backups".into(),
                    read_only: false,
                },
                ClaimMount {
                    name: "volume-2".into(),
                    claim: "prod-backups".into(),
                    path: "/srv/prod".into(),
                    read_only: true,
                },
            ]
        );
    }

    #[test]
    fn folder_stores_need_a_volume_and_default_secret_names_must_not_clash() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"[environment]
name = "staging"
store = "/srv/backups"
upper_store = "prod"

[[task]]
name = "shop"
plugin = "postgres"
database = { name = "shop", password_file = "/a/db.pw" }
source = { name = "shop", password_file = "/b/db.pw" }
[[task.step]]
op = "copy"
"#;
        let (_, messages) = lay_out(text, dir.path());
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(
            messages[0].starts_with(
                "E staging.toml:3:9: environment: store /srv/backups is a folder: in a pod it needs a \
                 persistent volume, or backups go with the pod; add volumes = { \"/srv/backups\" = \"CLAIM\" }"
            ),
            "{messages:#?}"
        );
        assert!(
            messages[1].starts_with(
                "E staging.toml:4:15: environment: upper_store \"prod\" is a relative folder"
            ),
            "{messages:#?}"
        );
        assert!(
            messages[2].starts_with(
                "E staging.toml:10:43: task \"shop\" source: /b/db.pw would be kept in Secret \
                 envsync-staging-db-pw, like /a/db.pw (line 9)"
            ),
            "{messages:#?}"
        );
    }

    #[test]
    fn a_sanitised_task_ships_its_rules_and_takes_its_salt_from_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/shop.toml"), "[tables]\n").unwrap();
        let text = r#"[environment]
name = "staging"
store = "s3://staging-backups/db"

[[task]]
name = "shop"
plugin = "postgres"
database = { name = "shop" }
sanitise.sanitiser = "sanitise"
sanitise.rules = "rules/shop.toml"
sanitise.salt_file = "/etc/envsync/salt.key"
[[task.step]]
op = "backup"

[[task]]
name = "blog"
plugin = "postgres"
database = { name = "blog" }
[task.sanitise]
sanitiser = "sanitise"
rules = "rules/shop.toml"
salt_env = "BLOG_SALT"
[[task.step]]
op = "backup"
"#;
        let (layout, messages) = lay_out(text, dir.path());
        assert_eq!(messages, Vec::<String>::new());
        assert_eq!(
            layout
                .files
                .iter()
                .map(|f| (f.key.as_str(), f.path.as_str(), f.content.as_slice()))
                .collect::<Vec<_>>(),
            [("shop.toml", "files/shop.toml", &b"[tables]\n"[..])]
        );
        let copy = &layout.config_text;
        assert!(
            copy.contains("sanitise.rules = \"files/shop.toml\"\n"),
            "{copy}"
        );
        assert!(copy.contains("\nrules = \"files/shop.toml\"\n"), "{copy}");
        assert!(
            copy.contains("sanitise.salt_file = \"secrets/envsync-staging-salt-key/salt\"\n"),
            "{copy}"
        );
        assert!(copy.contains("salt_env = \"BLOG_SALT\""), "{copy}");
        assert_eq!(
            layout.tasks[0].secrets,
            [SecretUse {
                secret: "envsync-staging-salt-key".into(),
                key: "salt".into(),
                target: Target::File("secrets/envsync-staging-salt-key/salt".into()),
                reference: "/etc/envsync/salt.key".into(),
            }]
        );
        assert_eq!(
            layout.tasks[1].secrets,
            [SecretUse {
                secret: "envsync-staging-blog-salt".into(),
                key: "salt".into(),
                target: Target::Env("BLOG_SALT".into()),
                reference: "BLOG_SALT".into(),
            }]
        );
    }

    #[test]
    fn the_busy_marker_gets_a_folder_the_pod_can_write() {
        let dir = tempfile::tempdir().unwrap();
        let with_marker = |marker: &str| {
            format!(
                "[environment]\nname = \"qa\"\nstore = \"/srv/b\"\nmarker_file = \"{marker}\"\n\
                 [kubernetes]\nvolumes = {{ \"/srv\" = \"shared\" }}\n\
                 [[task]]\nname = \"t\"\nplugin = \"postgres\"\ndatabase = {{ name = \"d\" }}\n\
                 [[task.step]]\nop = \"backup\"\n"
            )
        };
        // Its own folder: an emptyDir.
        let (layout, messages) = lay_out(&with_marker("/run/envsync/busy"), dir.path());
        assert_eq!(messages, Vec::<String>::new());
        assert_eq!(layout.scratch_dirs, ["/run/envsync"]);
        // On a claim: shared with every pod mounting it, and writable.
        let (layout, messages) = lay_out(&with_marker("/srv/markers/busy"), dir.path());
        assert_eq!(messages, Vec::<String>::new());
        assert_eq!(layout.scratch_dirs, Vec::<String>::new());
        assert!(!layout.claims[0].read_only);
        // Under the pod's state folder: nothing to add.
        let (layout, _) = lay_out(&with_marker("/var/lib/envsync/busy"), dir.path());
        assert_eq!(layout.scratch_dirs, Vec::<String>::new());
        // Beside the config (read-only in the pod): moved to the state folder.
        let (layout, messages) = lay_out(&with_marker("busy.txt"), dir.path());
        assert!(
            layout
                .config_text
                .contains("marker_file = \"/var/lib/envsync/busy.txt\""),
            "{}",
            layout.config_text
        );
        assert_eq!(messages.len(), 1, "{messages:#?}");
        assert!(messages[0].starts_with("W staging.toml:4:15: warning: environment: marker_file busy.txt would be in the config's folder"), "{messages:#?}");
        // A system folder cannot take a volume.
        let (_, messages) = lay_out(&with_marker("/usr/local/busy"), dir.path());
        assert_eq!(messages.len(), 1, "{messages:#?}");
        assert!(
            messages[0].starts_with(
                "E staging.toml:4:15: environment: marker_file /usr/local/busy: the pod's root filesystem is read-only"
            ),
            "{messages:#?}"
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        let value: toml::Value = toml::from_str(&format!("x = {}", toml_string("é\u{1}"))).unwrap();
        assert_eq!(value["x"].as_str(), Some("é\u{1}"));
    }
}
