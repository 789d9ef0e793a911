//! What a pod needs of the config file and where it finds it: a copy of the
//! config with its paths rewritten to the pod's layout, the files it names
//! (scripts, recipients files) for the ConfigMap, the credentials each task
//! names (Secrets as files or variables), and the volumes folder stores
//! live on.
//!
//! In the pod the config sits in [`CONFIG_DIR`](super::CONFIG_DIR); the files
//! it names sit in `files/` beside it and Secret files in
//! `secrets/SECRET/KEY`, and the copy names them relative to itself, so it
//! is complete wherever its folder is put together. Edits replace only the
//! string values in the original text: comments, layout and line numbers
//! stay.

use super::names;
use super::settings::Settings;
use crate::jobs::config::Config;
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
    /// `identity`).
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

/// The kind of credential file, which names the default Secret key.
#[derive(Clone, Copy)]
enum Credential {
    Password,
    Identity,
}

impl Credential {
    fn key(self) -> &'static str {
        match self {
            Credential::Password => "password",
            Credential::Identity => "identity",
        }
    }
}

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

    /// A credential file (`password_file`, `identity`): mounted from its
    /// Secret, and the copy points at the mounted file.
    fn secret_file(
        &mut self,
        text: &str,
        span: Range<usize>,
        kind: Credential,
        context: &str,
        uses: &mut Vec<SecretUse>,
    ) {
        let base = Path::new(text)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| text.to_string());
        let (secret, key) = self.secret_for(text, &base, kind.key(), &span, context);
        let path = format!("secrets/{secret}/{key}");
        self.edits.push((span, toml_string(&path)));
        let use_ = SecretUse {
            secret,
            key,
            target: Target::File(path),
            reference: text.to_string(),
        };
        if !uses.contains(&use_) {
            uses.push(use_);
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

    /// A folder store must lie on a volume, or its backups would go with
    /// the pod.
    fn store(&mut self, env: &DeTable<'_>, field: &str, writes: bool) {
        for (text, span) in strings(env, field) {
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
    fn state_dir(&mut self, env: &DeTable<'_>) {
        for (text, span) in strings(env, "state_dir") {
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

    fn database(
        &mut self,
        task: &DeTable<'_>,
        field: &str,
        context: &str,
        uses: &mut Vec<SecretUse>,
    ) {
        let Some((db, _)) = table(task, field) else {
            return;
        };
        let context = format!("{context} {field}");
        for (text, span) in strings(db, "password_file") {
            self.secret_file(&text, span, Credential::Password, &context, uses);
        }
        for (var, span) in strings(db, "password_env") {
            let (secret, key) = self.secret_for(&var, &var, "password", &span, &context);
            let use_ = SecretUse {
                secret,
                key,
                target: Target::Env(var.clone()),
                reference: var,
            };
            if !uses.contains(&use_) {
                uses.push(use_);
            }
        }
    }

    fn task(&mut self, index: usize, task: &DeTable<'_>, span: Range<usize>) -> TaskPlace {
        let context = match self.config.tasks.get(index) {
            Some(t) => format!("task \"{}\"", t.name),
            None => format!("task #{}", index + 1),
        };
        let mut uses = Vec::new();
        self.database(task, "database", &context, &mut uses);
        self.database(task, "source", &context, &mut uses);
        for (i, (step, _)) in tables(task, "step").into_iter().enumerate() {
            let step_context = format!("{context} step {}", i + 1);
            for (text, span) in strings(step, "script") {
                self.ship(&text, span, &step_context, "script");
            }
            for (text, span) in strings(step, "encrypt_to_file") {
                self.ship(&text, span, &step_context, "encrypt_to_file");
            }
            for (text, span) in strings(step, "identity") {
                self.secret_file(&text, span, Credential::Identity, &step_context, &mut uses);
            }
        }
        TaskPlace {
            span,
            schedule_span: task.get("schedule").map(|v| v.span()),
            secrets: uses,
        }
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
        environment_slug: names::dns_label(&config.environment.name, names::LABEL_MAX),
        edits: Vec::new(),
        files: Vec::new(),
        file_paths: HashMap::new(),
        default_secrets: HashMap::new(),
        used_settings: vec![false; settings.secrets.len()],
        claim_use: vec![(false, false); claims.len()],
        claims,
    };
    if let Some((env, _)) = table(root, "environment") {
        b.store(env, "store", true);
        b.store(env, "upper_store", false);
        b.state_dir(env);
    }
    let tasks = tables(root, "task")
        .into_iter()
        .enumerate()
        .map(|(i, (t, span))| b.task(i, t, span))
        .collect();
    for (i, used) in b.used_settings.iter().enumerate() {
        if !used {
            let s = &settings.secrets[i];
            b.report.warn(
                &s.reference.span,
                "kubernetes.secrets",
                format!(
                    "{} is not a password_env, password_file or identity of any task",
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
        config_key: config_key(&config.file),
        config_text,
        files: b.files,
        tasks,
        claims: b.claims,
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
                "W staging.toml:10:13: warning: kubernetes.secrets: AGE is not a password_env, password_file \
                 or identity of any task"
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
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        let value: toml::Value = toml::from_str(&format!("x = {}", toml_string("é\u{1}"))).unwrap();
        assert_eq!(value["x"].as_str(), Some("é\u{1}"));
    }
}
