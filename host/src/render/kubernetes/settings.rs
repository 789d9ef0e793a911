//! The optional `[kubernetes]` table of a config file: what
//! `render kubernetes` needs beyond the environment and its tasks (image,
//! namespace, service account, resources, Secrets, volumes). Read from the
//! raw TOML with the same located diagnostics as the rest of the file;
//! `config check` checks it too, and running tasks ignores it.

use super::names;
use crate::jobs::diagnostics::{At, Fields, Report, type_name};
use std::ops::Range;
use std::time::Duration;
use toml::de::{DeTable, DeValue};

const FIELDS: &[&str] = &[
    "image",
    "image_pull_policy",
    "namespace",
    "starting_deadline_seconds",
    "deadline_margin",
    "env_from_secrets",
    "pod_annotations",
    "volumes",
    "service_account",
    "resources",
    "secrets",
];
const SERVICE_ACCOUNT_FIELDS: &[&str] = &["name", "create", "annotations"];
const RESOURCES_FIELDS: &[&str] = &["cpu_request", "cpu_limit", "memory_request", "memory_limit"];
const SECRET_FIELDS: &[&str] = &["name", "key"];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

/// The `[kubernetes]` table; everything optional.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub image: Option<At<String>>,
    pub image_pull_policy: Option<String>,
    pub namespace: Option<At<String>>,
    pub starting_deadline_seconds: Option<i64>,
    /// Added to the sum of the steps' max runtimes for the Job's deadline.
    pub deadline_margin: Option<Duration>,
    /// Secrets whose keys all become environment variables (S3 keys, …).
    pub env_from_secrets: Vec<String>,
    pub pod_annotations: Vec<(String, String)>,
    /// Persistent volume claims mounted at a path (folder stores, state).
    pub volumes: Vec<VolumeSetting>,
    pub service_account: ServiceAccountSetting,
    pub resources: ResourceSettings,
    /// Which Secret holds each credential the tasks name.
    pub secrets: Vec<SecretSetting>,
    /// Where the table starts, when there is one.
    pub span: Option<Range<usize>>,
}

#[derive(Clone, Debug)]
pub struct VolumeSetting {
    /// Absolute path in the container, with where it was written.
    pub path: At<String>,
    pub claim: String,
}

#[derive(Clone, Debug)]
pub struct ServiceAccountSetting {
    pub name: Option<String>,
    /// Whether the manifests create it (false: it exists already).
    pub create: bool,
    pub annotations: Vec<(String, String)>,
}

impl Default for ServiceAccountSetting {
    fn default() -> Self {
        ServiceAccountSetting {
            name: None,
            create: true,
            annotations: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ResourceSettings {
    pub cpu_request: Option<At<String>>,
    pub cpu_limit: Option<At<String>>,
    pub memory_request: Option<At<String>>,
    pub memory_limit: Option<At<String>>,
}

/// `REFERENCE = "secret"` or `REFERENCE = { name = "secret", key = "k" }`:
/// a `password_env` variable, or a `password_file` / `identity` path as
/// written in the file, and the Secret (and key) that holds it.
#[derive(Clone, Debug)]
pub struct SecretSetting {
    pub reference: At<String>,
    pub name: String,
    pub key: Option<String>,
}

/// The keys and string values of the table at `key`, with their spans.
fn string_map(
    report: &mut Report<'_>,
    f: &Fields<'_, '_>,
    key: &str,
) -> Vec<(At<String>, At<String>)> {
    let Some((table, _)) = f.table(report, key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in table.iter() {
        let name = At {
            value: k.get_ref().to_string(),
            span: k.span(),
        };
        match v.get_ref() {
            DeValue::String(s) => out.push((
                name,
                At {
                    value: s.to_string(),
                    span: v.span(),
                },
            )),
            other => report.error(
                &v.span(),
                &f.context,
                format!(
                    "{key}.{} must be a string, not {}",
                    name.value,
                    type_name(other)
                ),
            ),
        }
    }
    out
}

/// Annotations (keys are qualified names).
fn annotations(report: &mut Report<'_>, f: &Fields<'_, '_>, key: &str) -> Vec<(String, String)> {
    string_map(report, f, key)
        .into_iter()
        .filter_map(|(k, v)| {
            if names::is_qualified_name(&k.value) {
                Some((k.value, v.value))
            } else {
                report.error(
                    &k.span,
                    &f.context,
                    format!(
                        "{key}: {:?} is not an annotation key ([prefix/]name: letters, digits, '-', '_', '.'; \
                         the prefix a DNS name)",
                        k.value
                    ),
                );
                None
            }
        })
        .collect()
}

/// Reads the `[kubernetes]` table at `span`, reporting every mistake.
pub fn read(report: &mut Report<'_>, table: &DeTable<'_>, span: Range<usize>) -> Settings {
    let ctx = "kubernetes";
    let f = Fields::new(report, table, span.clone(), ctx, FIELDS, |_| None);
    let mut settings = Settings {
        span: Some(span),
        ..Default::default()
    };
    settings.image = f.string(report, "image").and_then(|s| {
        if s.value.trim().is_empty() || s.value.contains(char::is_whitespace) {
            report.error(
                &s.span,
                ctx,
                format!(
                    "image {:?} is not an image reference (REGISTRY/NAME:TAG)",
                    s.value
                ),
            );
            None
        } else {
            Some(s)
        }
    });
    settings.image_pull_policy = f.string(report, "image_pull_policy").and_then(|s| {
        if PULL_POLICIES.contains(&s.value.as_str()) {
            Some(s.value)
        } else {
            report.error(
                &s.span,
                ctx,
                format!(
                    "image_pull_policy {:?} is not one of {}",
                    s.value,
                    PULL_POLICIES.join(", ")
                ),
            );
            None
        }
    });
    settings.namespace = f.string(report, "namespace").and_then(|s| {
        if names::is_dns_label(&s.value, names::LABEL_MAX) {
            Some(s)
        } else {
            report.error(
                &s.span,
                ctx,
                format!(
                    "namespace {:?} is not a Kubernetes namespace name (lower-case letters, digits, '-'; at most 63)",
                    s.value
                ),
            );
            None
        }
    });
    settings.starting_deadline_seconds = f
        .integer(report, "starting_deadline_seconds", 10..=7 * 86400)
        .map(|n| n.value);
    settings.deadline_margin = f.string(report, "deadline_margin").and_then(|s| {
        match humantime::parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(e) => {
                report.error(
                    &s.span,
                    ctx,
                    format!(
                        "deadline_margin {:?} is not a duration like \"15m\" or \"1h\": {e}",
                        s.value
                    ),
                );
                None
            }
        }
    });
    for s in f.strings(report, "env_from_secrets") {
        if names::is_dns_subdomain(&s.value) {
            settings.env_from_secrets.push(s.value);
        } else {
            report.error(
                &s.span,
                ctx,
                format!("env_from_secrets: {:?} is not a Secret name", s.value),
            );
        }
    }
    settings.pod_annotations = annotations(report, &f, "pod_annotations");
    for (path, claim) in string_map(report, &f, "volumes") {
        let p = std::path::Path::new(&path.value);
        if !p.is_absolute() || p.parent().is_none() {
            report.error(
                &path.span,
                ctx,
                format!(
                    "volumes: {:?} is not an absolute folder path in the container",
                    path.value
                ),
            );
        } else if p.starts_with(super::CONFIG_DIR) {
            report.error(
                &path.span,
                ctx,
                format!(
                    "volumes: {} is inside {}, where the config file is mounted",
                    path.value,
                    super::CONFIG_DIR
                ),
            );
        } else if !names::is_dns_subdomain(&claim.value) {
            report.error(
                &claim.span,
                ctx,
                format!(
                    "volumes: {:?} is not a PersistentVolumeClaim name",
                    claim.value
                ),
            );
        } else {
            settings.volumes.push(VolumeSetting {
                path,
                claim: claim.value,
            });
        }
    }
    if let Some((t, s)) = f.table(report, "service_account") {
        let r = &mut *report;
        let sa = Fields::new(
            r,
            t,
            s,
            "kubernetes.service_account",
            SERVICE_ACCOUNT_FIELDS,
            |_| None,
        );
        settings.service_account.name = sa.string(r, "name").and_then(|n| {
            if names::is_dns_subdomain(&n.value) {
                Some(n.value)
            } else {
                r.error(
                    &n.span,
                    &sa.context,
                    format!("name {:?} is not a ServiceAccount name", n.value),
                );
                None
            }
        });
        if let Some(b) = sa.bool(r, "create") {
            settings.service_account.create = b.value;
        }
        settings.service_account.annotations = annotations(r, &sa, "annotations");
    }
    if let Some((t, s)) = f.table(report, "resources") {
        let r = &mut *report;
        let res = Fields::new(r, t, s, "kubernetes.resources", RESOURCES_FIELDS, |_| None);
        let mut quantity = |key: &str, valid: fn(&str) -> bool, example: &str| {
            res.string(r, key).and_then(|q| {
                if valid(&q.value) {
                    Some(q)
                } else {
                    r.error(
                        &q.span,
                        &res.context,
                        format!("{key} {:?} is not a quantity like {example}", q.value),
                    );
                    None
                }
            })
        };
        let cpu = |q: &str| names::cpu_millis(q).is_some();
        let memory = |q: &str| names::memory_bytes(q).is_some();
        settings.resources = ResourceSettings {
            cpu_request: quantity("cpu_request", cpu, "\"250m\" or \"1\""),
            cpu_limit: quantity("cpu_limit", cpu, "\"250m\" or \"1\""),
            memory_request: quantity("memory_request", memory, "\"512Mi\" or \"2Gi\""),
            memory_limit: quantity("memory_limit", memory, "\"512Mi\" or \"2Gi\""),
        };
        let res = &settings.resources;
        if let (Some(req), Some(lim)) = (&res.cpu_request, &res.cpu_limit)
            && names::cpu_millis(&req.value) > names::cpu_millis(&lim.value)
        {
            report.error(
                &req.span,
                "kubernetes.resources",
                format!(
                    "cpu_request {} is more than cpu_limit {}",
                    req.value, lim.value
                ),
            );
        }
        if let (Some(req), Some(lim)) = (&res.memory_request, &res.memory_limit)
            && names::memory_bytes(&req.value) > names::memory_bytes(&lim.value)
        {
            report.error(
                &req.span,
                "kubernetes.resources",
                format!(
                    "memory_request {} is more than memory_limit {}",
                    req.value, lim.value
                ),
            );
        }
    }
    if let Some((t, _)) = f.table(report, "secrets") {
        for (k, v) in t.iter() {
            let reference = At {
                value: k.get_ref().to_string(),
                span: k.span(),
            };
            let sctx = format!("kubernetes.secrets.{}", reference.value);
            let (name, key) = match v.get_ref() {
                DeValue::String(s) => (
                    Some(At {
                        value: s.to_string(),
                        span: v.span(),
                    }),
                    None,
                ),
                DeValue::Table(inner) => {
                    let sf = Fields::new(report, inner, v.span(), &sctx, SECRET_FIELDS, |_| None);
                    (sf.required_string(report, "name"), sf.string(report, "key"))
                }
                other => {
                    report.error(
                        &v.span(),
                        &sctx,
                        format!(
                            "must be a Secret name or {{ name = \"SECRET\", key = \"KEY\" }}, not {}",
                            type_name(other)
                        ),
                    );
                    continue;
                }
            };
            let Some(name) = name else { continue };
            if !names::is_dns_subdomain(&name.value) {
                report.error(
                    &name.span,
                    &sctx,
                    format!(
                        "{:?} is not a Secret name (lower-case letters, digits, '-', '.')",
                        name.value
                    ),
                );
                continue;
            }
            if let Some(key) = &key
                && !names::is_data_key(&key.value)
            {
                report.error(
                    &key.span,
                    &sctx,
                    format!(
                        "key {:?} is not a Secret key (letters, digits, '-', '_', '.')",
                        key.value
                    ),
                );
                continue;
            }
            settings.secrets.push(SecretSetting {
                reference,
                name: name.value,
                key: key.map(|k| k.value),
            });
        }
    }
    settings
}

/// Checks the `[kubernetes]` value of a config file's root table (the
/// hook `config check` calls); nothing is kept.
pub fn check(report: &mut Report<'_>, value: &toml::Spanned<DeValue<'_>>) {
    match value.get_ref() {
        DeValue::Table(table) => {
            read(report, table, value.span());
        }
        other => report.error(
            &value.span(),
            "",
            format!("kubernetes must be a table, not {}", type_name(other)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> (Settings, Vec<String>) {
        let root = DeTable::parse(text).unwrap();
        let mut report = Report::new("t.toml", text);
        let value = root.get_ref().get("kubernetes").unwrap();
        let DeValue::Table(t) = value.get_ref() else {
            panic!()
        };
        let settings = read(&mut report, t, value.span());
        let errors = report
            .into_sorted()
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        (settings, errors)
    }

    #[test]
    fn a_full_table_reads() {
        let (s, errors) = read_text(
            r#"
[kubernetes]
image = "registry.example.com/envsync:1.0"
image_pull_policy = "Always"
namespace = "envsync"
starting_deadline_seconds = 600
deadline_margin = "30m"
env_from_secrets = ["s3-keys"]
pod_annotations = { "sidecar.istio.io/inject" = "false" }
volumes = { "/srv/backups" = "backups" }

[kubernetes.service_account]
name = "envsync-prod"
annotations = { "eks.amazonaws.com/role-arn" = "arn:aws:iam::123456789012:role/envsync" }

[kubernetes.resources]
cpu_request = "500m"
memory_limit = "2Gi"

[kubernetes.secrets]
SHOP_PASSWORD = "shop-db"
"/etc/envsync/age.key" = { name = "age", key = "key.txt" }
"#,
        );
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(s.image.unwrap().value, "registry.example.com/envsync:1.0");
        assert_eq!(s.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(s.namespace.unwrap().value, "envsync");
        assert_eq!(s.starting_deadline_seconds, Some(600));
        assert_eq!(s.deadline_margin, Some(Duration::from_secs(1800)));
        assert_eq!(s.env_from_secrets, ["s3-keys"]);
        assert_eq!(s.volumes[0].path.value, "/srv/backups");
        assert_eq!(s.volumes[0].claim, "backups");
        assert_eq!(s.service_account.name.as_deref(), Some("envsync-prod"));
        assert!(s.service_account.create);
        assert_eq!(
            s.service_account.annotations[0].0,
            "eks.amazonaws.com/role-arn"
        );
        assert_eq!(s.resources.memory_limit.unwrap().value, "2Gi");
        assert_eq!(s.secrets.len(), 2);
        let age = s
            .secrets
            .iter()
            .find(|s| s.reference.value == "/etc/envsync/age.key")
            .unwrap();
        assert_eq!(
            (age.name.as_str(), age.key.as_deref()),
            ("age", Some("key.txt"))
        );
    }

    #[test]
    fn mistakes_point_at_their_line_and_column() {
        let (_, errors) = read_text(
            r#"[kubernetes]
image = "has space"
namespace = "Envsync"
imag = "x"
volumes = { "srv" = "Claim" }
starting_deadline_seconds = 1
[kubernetes.resources]
memory_limit = "2GB"
cpu_request = "2"
cpu_limit = "1"
[kubernetes.secrets]
X = { name = "Bad_Name" }
Y = 3
"#,
        );
        let expected = [
            "t.toml:2:9: kubernetes: image \"has space\" is not an image reference",
            "t.toml:3:13: kubernetes: namespace \"Envsync\" is not a Kubernetes namespace name",
            "t.toml:4:1: kubernetes: unknown field \"imag\"",
            "t.toml:5:13: kubernetes: volumes: \"srv\" is not an absolute folder path",
            "t.toml:6:29: kubernetes: starting_deadline_seconds must be between 10 and 604800",
            "t.toml:8:16: kubernetes.resources: memory_limit \"2GB\" is not a quantity",
            "t.toml:9:15: kubernetes.resources: cpu_request 2 is more than cpu_limit 1",
            "t.toml:12:14: kubernetes.secrets.X: \"Bad_Name\" is not a Secret name",
            "t.toml:13:5: kubernetes.secrets.Y: must be a Secret name",
        ];
        for e in expected {
            assert!(
                errors.iter().any(|x| x.starts_with(e)),
                "expected {e:?} among {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }
}
