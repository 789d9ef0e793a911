//! `render kubernetes`: the manifests that run a config file's tasks on a
//! cluster, one CronJob per task, as multi-document YAML.
//!
//! Beside the CronJobs: a ConfigMap with a copy of the config file and the
//! files it names ([`files`]), and a ServiceAccount (annotations for cloud
//! IAM roles). Credentials stay in Secrets the operator creates: the
//! manifests only reference them, as files or variables, exactly where the
//! config says the task finds them. Settings beyond the config's own come
//! from its optional `[kubernetes]` table ([`settings`]); every mistake is
//! reported against the file, with line and column, before anything is
//! printed. The choices are in docs/decisions/0010-kubernetes-render.md.

pub mod files;
mod manifests;
pub mod names;
pub mod settings;

use crate::jobs::config::{self, CheckOptions, Config, StepOp, Task};
use crate::jobs::diagnostics::{Diagnostic, Report, Severity};
use crate::runtime::sandbox::DEFAULT_MEMORY_CAP_MIB;
use crate::store::StoreOptions;
use files::{Layout, SecretUse, Target};
use manifests::*;
use settings::Settings;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::de::{DeTable, DeValue};

/// Where the config file and the files it names are mounted.
pub const CONFIG_DIR: &str = "/etc/envsync";
/// The state folder (run history): an emptyDir unless a volume is there.
pub const STATE_DIR: &str = "/var/lib/envsync";
/// Compiled plugins: an emptyDir.
pub const CACHE_DIR: &str = "/var/cache/envsync";
const TMP_DIR: &str = "/tmp";
/// The container's name in every pod.
pub const CONTAINER: &str = "envsync";
/// The image's `envsync` user and group (see the Dockerfile).
pub const RUN_AS: u32 = 10001;
const DEFAULT_STARTING_DEADLINE_SECONDS: i64 = 3600;
const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_secs(15 * 60);
const DEFAULT_CPU_REQUEST: &str = "250m";
/// Memory beside the plugin's cap: the host, the programs it starts
/// (pg_dump, psql, mariadb-dump, …), codec buffers.
const HEADROOM_MIB: u64 = 768;
/// The least headroom a configured memory limit must leave.
const MIN_HEADROOM_MIB: u64 = 256;
/// The schedule of a task without one (suspended; run on demand).
pub const UNSCHEDULED: &str = "0 0 1 1 *";
/// A ConfigMap holds at most 1 MiB; leave room for the object itself.
const CONFIGMAP_MAX_BYTES: usize = 1_000_000;
const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// What the command line adds (it wins over `[kubernetes]`).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub image: Option<String>,
    pub namespace: Option<String>,
}

/// The manifests, and what the operator must know.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub yaml: String,
    pub warnings: Vec<Diagnostic>,
}

fn error_at_start(file: &str, message: String) -> Vec<Diagnostic> {
    vec![Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        line: 1,
        column: 1,
        context: String::new(),
        message,
    }]
}

/// Renders the config file at `path`. Errors (with warnings) are returned in
/// file order, as `config check` gives them.
pub fn render(path: &Path, options: &Options) -> Result<Rendered, Vec<Diagnostic>> {
    let config = config::check(path, &CheckOptions::default())?;
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| error_at_start(&name, format!("cannot read the config file: {e}")))?;
    let root = DeTable::parse(&text)
        .map_err(|e| error_at_start(&name, format!("TOML syntax: {}", e.message().trim())))?;
    let mut report = Report::new(&name, &text);
    let settings = match root
        .get_ref()
        .get("kubernetes")
        .map(|v| (v.get_ref(), v.span()))
    {
        Some((DeValue::Table(t), span)) => settings::read(&mut report, t, span),
        _ => Settings::default(),
    };
    let layout = files::layout(&mut report, &config, root.get_ref(), &text, &settings);
    let yaml = Renderer {
        config: &config,
        settings: &settings,
        options,
        layout: &layout,
        file_name: &name,
    }
    .render(&mut report);
    if report.has_errors() {
        return Err(report.into_sorted());
    }
    Ok(Rendered {
        yaml,
        warnings: report.into_sorted(),
    })
}

struct Renderer<'a> {
    config: &'a Config,
    settings: &'a Settings,
    options: &'a Options,
    layout: &'a Layout,
    file_name: &'a str,
}

/// Makes `text` safe inside a YAML comment line.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn document<T: serde::Serialize>(comments: &[String], object: &T) -> String {
    let mut out = String::from("---\n");
    for c in comments {
        out.push_str(&format!("# {}\n", comment_text(c)));
    }
    out.push_str(&serde_norway::to_string(object).expect("manifests serialize"));
    out
}

impl Renderer<'_> {
    fn environment_slug(&self) -> String {
        names::dns_label(&self.config.environment.name, names::LABEL_MAX)
    }

    fn namespace(&self) -> Option<String> {
        self.options
            .namespace
            .clone()
            .or_else(|| self.settings.namespace.as_ref().map(|n| n.value.clone()))
    }

    fn meta(&self, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace(),
            labels,
            annotations: BTreeMap::new(),
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "envsync".into()),
            ("app.kubernetes.io/instance".into(), self.environment_slug()),
            ("app.kubernetes.io/managed-by".into(), "envsync-host".into()),
        ])
    }

    fn service_account_name(&self) -> String {
        self.settings
            .service_account
            .name
            .clone()
            .unwrap_or_else(|| {
                names::dns_label(
                    &format!("envsync-{}", self.config.environment.name),
                    names::LABEL_MAX,
                )
            })
    }

    fn config_map_name(&self) -> String {
        names::dns_label(
            &format!("envsync-{}-config", self.config.environment.name),
            names::LABEL_MAX,
        )
    }

    fn render(&self, report: &mut Report<'_>) -> String {
        let image = match (&self.options.image, &self.settings.image) {
            (Some(image), _) => image.clone(),
            (None, Some(image)) => image.value.clone(),
            (None, None) => {
                let span = self.settings.span.clone().unwrap_or(0..0);
                report.error(
                    &span,
                    "kubernetes",
                    "no container image: pass --image IMAGE or set image = \"REGISTRY/envsync:TAG\" in [kubernetes]",
                );
                String::new()
            }
        };
        let mut docs = Vec::new();
        let env = &self.config.environment;
        let mut header = vec![
            format!(
                "envsync-host {} render kubernetes: environment {:?} from {}",
                env!("CARGO_PKG_VERSION"),
                env.name,
                self.file_name
            ),
            "A ServiceAccount, a ConfigMap with the config, one CronJob per task. Apply with"
                .to_string(),
            "`kubectl apply -f FILE` (docs/kubernetes.md).".to_string(),
        ];
        header.extend(self.secrets_needed());
        if self.settings.service_account.create {
            let mut meta = self.meta(self.service_account_name(), self.labels());
            meta.annotations = self
                .settings
                .service_account
                .annotations
                .iter()
                .cloned()
                .collect();
            docs.push(document(
                &header,
                &Object {
                    api_version: "v1",
                    kind: "ServiceAccount",
                    metadata: meta,
                    body: ServiceAccountBody {
                        automount_service_account_token: false,
                    },
                },
            ));
            header.clear();
        }
        docs.push(document(&header, &self.config_map(report)));
        let mut names_seen: Vec<(String, usize)> = Vec::new();
        self.check_memory_limit(report);
        for (task, place) in self.config.tasks.iter().zip(&self.layout.tasks) {
            let line = report.position(place.span.start).0;
            let name = names::dns_label(
                &format!("{}-{}", env.name, task.name),
                names::CRONJOB_NAME_MAX,
            );
            let context = format!("task \"{}\"", task.name);
            if let Some((_, other)) = names_seen.iter().find(|(n, _)| *n == name) {
                report.error(
                    &place.span,
                    &context,
                    format!(
                        "its CronJob name {name} is that of the task on line {other} too; rename one of them"
                    ),
                );
            }
            names_seen.push((name.clone(), line));
            if let Some((_, op)) = crate::jobs::guard::first_guarded_step(env, task) {
                report.error(
                    &place.span,
                    &context,
                    format!(
                        "{} production environment {:?}, which `envsync-host run` refuses without \
                         {}; a CronJob would fail every time",
                        crate::jobs::guard::writes_how(op),
                        env.name,
                        crate::jobs::guard::OVERRIDE_FLAG
                    ),
                );
            }
            if let (Some(schedule), Some(span)) = (&task.schedule, &place.schedule_span)
                && let Err(why) = names::check_schedule(&schedule.text)
            {
                report.error(span, &context, why);
            }
            docs.push(self.cron_job(task, &place.secrets, &name, &image));
        }
        docs.concat()
    }

    /// Header lines naming the Secrets to create, and how.
    fn secrets_needed(&self) -> Vec<String> {
        // (secret, key) → what reads it (a variable, a file) and in which tasks.
        type Readers = Vec<(String, Vec<String>)>;
        let mut needed: BTreeMap<(String, String), Readers> = BTreeMap::new();
        for (task, place) in self.config.tasks.iter().zip(&self.layout.tasks) {
            for s in &place.secrets {
                let what = match &s.target {
                    Target::Env(var) => format!("variable {var}"),
                    Target::File(_) => format!("file {}", s.reference),
                };
                let users = needed.entry((s.secret.clone(), s.key.clone())).or_default();
                match users.iter_mut().find(|(w, _)| *w == what) {
                    Some((_, tasks)) if !tasks.contains(&task.name) => {
                        tasks.push(task.name.clone())
                    }
                    Some(_) => {}
                    None => users.push((what, vec![task.name.clone()])),
                }
            }
        }
        if needed.is_empty() {
            return Vec::new();
        }
        let namespace = self
            .namespace()
            .map(|n| format!("-n {n} "))
            .unwrap_or_default();
        let mut lines =
            vec!["Secrets to create first (only referenced here, never rendered):".to_string()];
        for ((secret, key), users) in needed {
            let users: Vec<String> = users
                .into_iter()
                .map(|(what, tasks)| {
                    let plural = if tasks.len() == 1 { "" } else { "s" };
                    format!("{what} of task{plural} {}", tasks.join(", "))
                })
                .collect();
            lines.push(format!("  {secret}, key {key}: {}", users.join("; ")));
            lines.push(format!(
                "    kubectl {namespace}create secret generic {secret} --from-file={key}=FILE"
            ));
        }
        lines
    }

    fn config_map(&self, report: &mut Report<'_>) -> Object<ConfigMapBody> {
        let mut data = BTreeMap::new();
        let mut binary_data = BTreeMap::new();
        data.insert(
            self.layout.config_key.clone(),
            self.layout.config_text.clone(),
        );
        let mut size = self.layout.config_text.len();
        for f in &self.layout.files {
            size += f.content.len();
            match String::from_utf8(f.content.clone()) {
                Ok(text) => data.insert(f.key.clone(), text),
                Err(_) => binary_data.insert(
                    f.key.clone(),
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &f.content),
                ),
            };
        }
        if size > CONFIGMAP_MAX_BYTES {
            report.error(
                &(0..0),
                "",
                format!(
                    "the config and the files it names come to {size} bytes; a ConfigMap holds at most about \
                     {CONFIGMAP_MAX_BYTES} (move large scripts into the image or a volume)"
                ),
            );
        }
        Object {
            api_version: "v1",
            kind: "ConfigMap",
            metadata: self.meta(self.config_map_name(), self.labels()),
            body: ConfigMapBody { data, binary_data },
        }
    }

    /// MiB the S3 uploads of this environment hold at most.
    fn s3_buffer_mib(&self) -> u64 {
        let env = &self.config.environment;
        let uses_s3 = [&env.store, &env.upper_store]
            .into_iter()
            .flatten()
            .any(|s| s.starts_with("s3://"));
        if !uses_s3 {
            return 0;
        }
        let s3 = env.s3.apply(&StoreOptions::default()).s3;
        ((s3.part_size * s3.parts_in_flight) >> 20) as u64
    }

    /// MiB of plugin memory `task` holds at most at once: its engine's cap,
    /// plus its sanitiser's when a step sanitises (both run together, the
    /// rows streaming from one to the other).
    fn memory_cap_mib(task: &Task) -> u64 {
        let engine = task.memory_cap_mib.unwrap_or(DEFAULT_MEMORY_CAP_MIB);
        let sanitises = task
            .steps
            .iter()
            .any(|s| matches!(s.op, StepOp::Backup | StepOp::Copy));
        let sanitiser = match &task.sanitise {
            Some(spec) if sanitises => spec
                .memory_cap_mib
                .unwrap_or(crate::sanitiser::DEFAULT_MEMORY_CAP_MIB),
            _ => 0,
        };
        engine + sanitiser
    }

    /// What the caps of [`Self::memory_cap_mib`] are made of, for messages.
    fn caps_described(task: &Task) -> String {
        let engine = task.memory_cap_mib.unwrap_or(DEFAULT_MEMORY_CAP_MIB);
        match Self::memory_cap_mib(task) - engine {
            0 => format!("plugin memory cap ({engine} MiB)"),
            sanitiser => format!("plugin and sanitiser memory caps ({engine} + {sanitiser} MiB)"),
        }
    }

    /// The default memory limit of `task`, in MiB.
    fn default_memory_mib(&self, task: &Task) -> u64 {
        (Self::memory_cap_mib(task) + self.s3_buffer_mib() + HEADROOM_MIB).div_ceil(128) * 128
    }

    /// A configured memory limit must be comfortably above every task's
    /// plugin (and sanitiser) memory caps.
    fn check_memory_limit(&self, report: &mut Report<'_>) {
        let Some(limit) = &self.settings.resources.memory_limit else {
            return;
        };
        let (Some(bytes), Some(task)) = (
            names::memory_bytes(&limit.value),
            self.config
                .tasks
                .iter()
                .max_by_key(|t| Self::memory_cap_mib(t)),
        ) else {
            return;
        };
        let cap = Self::memory_cap_mib(task);
        let required = (cap + MIN_HEADROOM_MIB) << 20;
        if bytes < required {
            report.error(
                &limit.span,
                "kubernetes.resources",
                format!(
                    "memory_limit {} is not comfortably above task \"{}\"'s {}: \
                     give at least {} MiB (the host and the programs it starts live beside the plugin)",
                    limit.value,
                    task.name,
                    Self::caps_described(task),
                    cap + MIN_HEADROOM_MIB
                ),
            );
        }
    }

    fn resources(&self, task: &Task) -> ResourceRequirements {
        let r = &self.settings.resources;
        let memory_limit = r
            .memory_limit
            .as_ref()
            .map(|q| q.value.clone())
            .unwrap_or_else(|| format!("{}Mi", self.default_memory_mib(task)));
        let memory_request = r
            .memory_request
            .as_ref()
            .map_or_else(|| memory_limit.clone(), |q| q.value.clone());
        let cpu_request = r
            .cpu_request
            .as_ref()
            .map_or_else(|| DEFAULT_CPU_REQUEST.to_string(), |q| q.value.clone());
        let mut limits = BTreeMap::from([("memory", memory_limit)]);
        if let Some(cpu) = &r.cpu_limit {
            limits.insert("cpu", cpu.value.clone());
        }
        ResourceRequirements {
            requests: BTreeMap::from([("cpu", cpu_request), ("memory", memory_request)]),
            limits,
        }
    }

    fn volumes(&self, secrets: &[SecretUse]) -> (Vec<Volume>, Vec<VolumeMount>) {
        let mut items = vec![KeyToPath {
            key: self.layout.config_key.clone(),
            path: self.layout.config_key.clone(),
        }];
        items.extend(self.layout.files.iter().map(|f| KeyToPath {
            key: f.key.clone(),
            path: f.path.clone(),
        }));
        let mut sources = vec![VolumeProjection {
            config_map: Some(KeysProjection {
                name: self.config_map_name(),
                items,
            }),
            ..Default::default()
        }];
        let mut by_secret: BTreeMap<&str, Vec<KeyToPath>> = BTreeMap::new();
        for s in secrets {
            if let Target::File(path) = &s.target {
                let item = KeyToPath {
                    key: s.key.clone(),
                    path: path.clone(),
                };
                let items = by_secret.entry(&s.secret).or_default();
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        sources.extend(by_secret.into_iter().map(|(name, items)| VolumeProjection {
            secret: Some(KeysProjection {
                name: name.to_string(),
                items,
            }),
            ..Default::default()
        }));
        let mut volumes = vec![Volume {
            name: "config".into(),
            projected: Some(ProjectedVolume {
                default_mode: 0o440,
                sources,
            }),
            ..Default::default()
        }];
        let mut mounts = vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: true,
        }];
        let scratch = self
            .layout
            .scratch_dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| (format!("scratch-{}", i + 1), dir.as_str()));
        let own = [("state", STATE_DIR), ("cache", CACHE_DIR), ("tmp", TMP_DIR)]
            .into_iter()
            .map(|(name, path)| (name.to_string(), path));
        for (name, path) in own.chain(scratch) {
            if self.layout.claims.iter().any(|c| c.path == path) {
                continue;
            }
            volumes.push(Volume {
                name: name.clone(),
                empty_dir: Some(EmptyDir {}),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name,
                mount_path: path.into(),
                read_only: false,
            });
        }
        for c in &self.layout.claims {
            volumes.push(Volume {
                name: c.name.clone(),
                persistent_volume_claim: Some(ClaimSource {
                    claim_name: c.claim.clone(),
                    read_only: c.read_only,
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: c.name.clone(),
                mount_path: c.path.clone(),
                read_only: c.read_only,
            });
        }
        (volumes, mounts)
    }

    fn env(secrets: &[SecretUse]) -> Vec<EnvVar> {
        let mut env = vec![
            EnvVar {
                name: "ENVSYNC_STATE_DIR".into(),
                value: Some(STATE_DIR.into()),
                value_from: None,
            },
            EnvVar {
                name: "ENVSYNC_CACHE_DIR".into(),
                value: Some(CACHE_DIR.into()),
                value_from: None,
            },
        ];
        for s in secrets {
            if let Target::Env(var) = &s.target
                && !env.iter().any(|e| &e.name == var)
            {
                env.push(EnvVar {
                    name: var.clone(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: SecretKeySelector {
                            name: s.secret.clone(),
                            key: s.key.clone(),
                        },
                    }),
                });
            }
        }
        env
    }

    fn cron_job(&self, task: &Task, secrets: &[SecretUse], name: &str, image: &str) -> String {
        let env = &self.config.environment;
        let mut labels = self.labels();
        labels.insert(
            "envsync/task".into(),
            names::dns_label(&task.name, names::LABEL_MAX),
        );
        let steps: Vec<&str> = task.steps.iter().map(|s| s.op.name()).collect();
        let runtime: Duration = task.steps.iter().map(|s| s.max_runtime).sum();
        let margin = self
            .settings
            .deadline_margin
            .unwrap_or(DEFAULT_DEADLINE_MARGIN);
        let deadline = (runtime + margin).as_secs_f64().ceil() as u64;
        let mut comments = vec![format!(
            "Task {:?}: {}; each step stops after its max_runtime, the Job after {} (their sum plus {}).",
            task.name,
            steps.join(", "),
            humantime::format_duration(runtime + margin),
            humantime::format_duration(margin)
        )];
        let mut annotations = BTreeMap::from([
            ("envsync/environment".to_string(), env.name.clone()),
            ("envsync/task".to_string(), task.name.clone()),
        ]);
        let schedule = match &task.schedule {
            Some(s) => {
                comments.push(format!(
                    "Schedule {:?} in {}{}.",
                    s.text,
                    env.timezone.name(),
                    if task.suspend {
                        "; suspended (suspend = true in the config)"
                    } else {
                        ""
                    }
                ));
                s.text.clone()
            }
            None => {
                comments.push(
                    "No schedule in the config: suspended, with a placeholder schedule. Run it on demand:"
                        .into(),
                );
                comments.push(format!(
                    "  kubectl create job --from=cronjob/{name} {}",
                    names::dns_label(&format!("{name}-manual"), names::LABEL_MAX)
                ));
                annotations.insert(
                    "envsync/schedule".into(),
                    "none (suspended; run with kubectl create job --from=cronjob/NAME)".into(),
                );
                UNSCHEDULED.to_string()
            }
        };
        let command = vec![
            "envsync-host".to_string(),
            "run".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{}", self.layout.config_key),
            "--task".into(),
            task.name.clone(),
        ];
        let (volumes, volume_mounts) = self.volumes(secrets);
        let mut pod_annotations: BTreeMap<String, String> =
            self.settings.pod_annotations.iter().cloned().collect();
        pod_annotations.insert(SAFE_TO_EVICT.into(), "false".into());
        let pod = PodTemplate {
            metadata: ObjectMeta {
                name: None,
                namespace: None,
                labels: labels.clone(),
                annotations: pod_annotations,
            },
            spec: PodSpec {
                service_account_name: self.service_account_name(),
                automount_service_account_token: false,
                restart_policy: "Never",
                security_context: PodSecurityContext {
                    run_as_non_root: true,
                    run_as_user: RUN_AS,
                    run_as_group: RUN_AS,
                    fs_group: RUN_AS,
                    seccomp_profile: SeccompProfile {
                        profile: "RuntimeDefault",
                    },
                },
                containers: vec![Container {
                    name: CONTAINER,
                    image: image.to_string(),
                    image_pull_policy: self
                        .settings
                        .image_pull_policy
                        .clone()
                        .unwrap_or_else(|| "IfNotPresent".into()),
                    command,
                    env: Self::env(secrets),
                    env_from: self
                        .settings
                        .env_from_secrets
                        .iter()
                        .map(|name| EnvFromSource {
                            secret_ref: SecretEnvSource { name: name.clone() },
                        })
                        .collect(),
                    resources: self.resources(task),
                    security_context: ContainerSecurityContext {
                        allow_privilege_escalation: false,
                        read_only_root_filesystem: true,
                        capabilities: Capabilities { drop: vec!["ALL"] },
                    },
                    volume_mounts,
                }],
                volumes,
            },
        };
        let mut metadata = self.meta(name.to_string(), labels.clone());
        metadata.annotations = annotations;
        let object = Object {
            api_version: "batch/v1",
            kind: "CronJob",
            metadata,
            body: CronJobBody {
                spec: CronJobSpec {
                    schedule,
                    time_zone: env.timezone.name().to_string(),
                    concurrency_policy: "Forbid",
                    starting_deadline_seconds: self
                        .settings
                        .starting_deadline_seconds
                        .unwrap_or(DEFAULT_STARTING_DEADLINE_SECONDS),
                    suspend: task.suspend || task.schedule.is_none(),
                    successful_jobs_history_limit: 3,
                    failed_jobs_history_limit: 3,
                    job_template: JobTemplate {
                        metadata: ObjectMeta {
                            labels,
                            ..Default::default()
                        },
                        spec: JobSpec {
                            active_deadline_seconds: deadline,
                            backoff_limit: 0,
                            // A pod evicted or preempted is replaced, and its
                            // failure does not count against backoffLimit.
                            pod_failure_policy: PodFailurePolicy {
                                rules: vec![PodFailurePolicyRule {
                                    action: "Ignore",
                                    on_pod_conditions: vec![PodConditionPattern {
                                        condition: "DisruptionTarget",
                                        status: "True",
                                    }],
                                }],
                            },
                            template: pod,
                        },
                    },
                },
            },
        };
        document(&comments, &object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The YAML documents of `yaml`, as JSON values.
    fn documents(yaml: &str) -> Vec<Value> {
        serde_norway::Deserializer::from_str(yaml)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect()
    }

    const STAGING: &str = r#"
[environment]
name = "staging"
store = "s3://staging-backups/db"
upper_store = "s3://prod-backups/db"
timezone = "Europe/London"

[kubernetes]
image = "registry.example.com/envsync:1.0"
namespace = "envsync"
env_from_secrets = ["s3-keys"]
pod_annotations = { "sidecar.istio.io/inject" = "false" }

[kubernetes.service_account]
annotations = { "eks.amazonaws.com/role-arn" = "arn:aws:iam::123456789012:role/envsync" }

[[task]]
name = "shop"
plugin = "postgres"
schedule = "30 4 * * *"
memory_cap_mib = 512

[task.database]
host = "db1.staging"
name = "shop"
password_env = "SHOP_PASSWORD"

[[task.step]]
op = "restore"
from_instance = "db1.prod"
identity = "/keys/age.txt"

[[task.step]]
op = "transform"
script = "sanitise.sql"

[[task.step]]
op = "backup"
max_runtime = "30m"

[[task]]
name = "on_demand"
plugin = "postgres"
database = { name = "blog", password_file = "blog.pw" }
[[task.step]]
op = "backup"
"#;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn render_text(text: &str, options: &Options) -> Result<Rendered, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "sanitise.sql",
            "UPDATE customers SET email = 'x';\n",
        );
        let path = write(dir.path(), "staging.toml", text);
        render(&path, options).map_err(|d| {
            d.iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| {
                    d.to_string()
                        .trim_start_matches(&format!("{}:", path.display()))
                        .to_string()
                })
                .collect()
        })
    }

    #[test]
    fn every_task_becomes_a_cron_job_that_runs_it() {
        let rendered =
            render_text(STAGING, &Options::default()).unwrap_or_else(|e| panic!("{e:#?}"));
        let yaml = &rendered.yaml;
        assert!(
            yaml.contains(
                "#   envsync-staging-shop-password, key password: variable SHOP_PASSWORD of task shop\n\
                 #     kubectl -n envsync create secret generic envsync-staging-shop-password --from-file=password=FILE\n"
            ),
            "{yaml}"
        );
        let docs = documents(yaml);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ServiceAccount", "ConfigMap", "CronJob", "CronJob"]);
        for d in &docs {
            assert_eq!(d["metadata"]["namespace"], "envsync", "{d:#}");
        }
        let sa = &docs[0];
        assert_eq!(sa["metadata"]["name"], "envsync-staging");
        assert_eq!(
            sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::123456789012:role/envsync"
        );

        let data = &docs[1]["data"];
        assert!(
            data["staging.toml"]
                .as_str()
                .unwrap()
                .contains("script = \"files/sanitise.sql\""),
            "{data:#}"
        );
        assert_eq!(data["sanitise.sql"], "UPDATE customers SET email = 'x';\n");

        let shop = &docs[2];
        assert_eq!(shop["metadata"]["name"], "staging-shop");
        let spec = &shop["spec"];
        assert_eq!(spec["schedule"], "30 4 * * *");
        assert_eq!(spec["timeZone"], "Europe/London");
        assert_eq!(spec["concurrencyPolicy"], "Forbid");
        assert_eq!(spec["startingDeadlineSeconds"], 3600);
        assert_eq!(spec["suspend"], false);
        let job = &spec["jobTemplate"]["spec"];
        // restore 4h + transform 45m + backup 30m + 15m margin.
        assert_eq!(job["activeDeadlineSeconds"], (240 + 45 + 30 + 15) * 60);
        assert_eq!(job["backoffLimit"], 0);
        assert_eq!(
            job["podFailurePolicy"]["rules"][0],
            serde_json::json!({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]})
        );
        let pod = &job["template"];
        assert_eq!(
            pod["metadata"]["annotations"][SAFE_TO_EVICT], "false",
            "{pod:#}"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["sidecar.istio.io/inject"],
            "false"
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["serviceAccountName"], "envsync-staging");
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example.com/envsync:1.0");
        assert_eq!(
            container["command"],
            serde_json::json!([
                "envsync-host",
                "run",
                "--config",
                "/etc/envsync/staging.toml",
                "--task",
                "shop"
            ])
        );
        assert_eq!(container["args"], Value::Null);
        // The password comes from a Secret; no value is ever inline.
        let env = container["env"].as_array().unwrap();
        let password = env.iter().find(|e| e["name"] == "SHOP_PASSWORD").unwrap();
        assert_eq!(
            password["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "envsync-staging-shop-password", "key": "password"})
        );
        assert_eq!(password.get("value"), None);
        assert_eq!(container["envFrom"][0]["secretRef"]["name"], "s3-keys");
        // Cap 512 + S3 parts 64 + 768, rounded up to 128 MiB.
        assert_eq!(container["resources"]["limits"]["memory"], "1408Mi");
        assert_eq!(container["resources"]["requests"]["memory"], "1408Mi");
        assert_eq!(container["resources"]["requests"]["cpu"], "250m");
        // The identity file is mounted from its Secret where the copy says.
        let sources = &pod["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(
            sources[1]["secret"],
            serde_json::json!({"name": "envsync-staging-age-txt", "items": [
                {"key": "identity", "path": "secrets/envsync-staging-age-txt/identity"}]})
        );
        assert_eq!(
            sources[0]["configMap"]["items"],
            serde_json::json!([{"key": "staging.toml", "path": "staging.toml"},
                {"key": "sanitise.sql", "path": "files/sanitise.sql"}])
        );

        // No schedule: suspended, placeholder schedule, only its own Secret.
        let on_demand = &docs[3];
        assert_eq!(on_demand["metadata"]["name"], "staging-on-demand");
        assert_eq!(on_demand["spec"]["suspend"], true);
        assert_eq!(on_demand["spec"]["schedule"], UNSCHEDULED);
        assert!(yaml.contains(
            "#   kubectl create job --from=cronjob/staging-on-demand staging-on-demand-manual"
        ));
        let pod = &on_demand["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let sources = pod["volumes"][0]["projected"]["sources"]
            .as_array()
            .unwrap();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[1]["secret"]["name"], "envsync-staging-blog-pw");
        assert!(
            !pod["containers"][0]["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "SHOP_PASSWORD")
        );
    }

    #[test]
    fn a_sanitised_task_gets_its_rules_its_salt_and_memory_for_both_caps() {
        let text = STAGING.replace(
            "database = { name = \"blog\", password_file = \"blog.pw\" }\n",
            "database = { name = \"blog\", password_file = \"blog.pw\" }\n\
             [task.sanitise]\nsanitiser = \"sanitise\"\nrules = \"sanitise.sql\"\n\
             salt_env = \"BLOG_SALT\"\nmemory_cap_mib = 300\n",
        );
        let rendered = render_text(&text, &Options::default()).unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(
            rendered.yaml.contains(
                "#   envsync-staging-blog-salt, key salt: variable BLOG_SALT of task on_demand\n"
            ),
            "{}",
            rendered.yaml
        );
        let docs = documents(&rendered.yaml);
        let container =
            &docs[3]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let salt = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "BLOG_SALT")
            .unwrap_or_else(|| panic!("{container:#}"));
        assert_eq!(
            salt["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "envsync-staging-blog-salt", "key": "salt"})
        );
        // Engine 256 + sanitiser 300 + S3 parts 64 + 768, rounded up to 128 MiB.
        assert_eq!(container["resources"]["limits"]["memory"], "1408Mi");

        // A limit must hold both caps.
        let limited = text.replace(
            "pod_annotations",
            "resources = { memory_limit = \"700Mi\" }\npod_annotations",
        );
        let errors = render_text(&limited, &Options::default()).unwrap_err();
        assert!(
            errors[0].contains(
                "memory_limit 700Mi is not comfortably above task \"on_demand\"'s plugin and sanitiser \
                 memory caps (256 + 300 MiB): give at least 812 MiB"
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn the_command_line_wins_and_an_image_is_required() {
        let text = STAGING.replace("image = \"registry.example.com/envsync:1.0\"\n", "");
        let errors = render_text(&text, &Options::default()).unwrap_err();
        assert_eq!(
            errors,
            [
                "8:1: kubernetes: no container image: pass --image IMAGE or set image = \"REGISTRY/envsync:TAG\" in [kubernetes]"
            ]
        );
        let options = Options {
            image: Some("example.org/envsync:2".into()),
            namespace: Some("jobs".into()),
        };
        let docs = documents(&render_text(&text, &options).unwrap().yaml);
        assert_eq!(docs[2]["metadata"]["namespace"], "jobs");
        assert_eq!(
            docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
            "example.org/envsync:2"
        );
    }

    #[test]
    fn what_a_cluster_cannot_run_is_an_error_at_its_line() {
        let text = STAGING
            .replace("name = \"staging\"", "name = \"production\"")
            .replace("schedule = \"30 4 * * *\"", "schedule = \"0 3 * * 7\"")
            .replace(
                "pod_annotations",
                "resources = { memory_limit = \"600Mi\" }\npod_annotations",
            );
        let errors = render_text(&text, &Options::default()).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].starts_with(
                "12:30: kubernetes.resources: memory_limit 600Mi is not comfortably above task \"shop\"'s \
                 plugin memory cap (512 MiB): give at least 768 MiB"
            ),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with(
                "18:1: task \"shop\": restores into production environment \"production\""
            ),
            "{errors:#?}"
        );
        assert!(
            errors[2].starts_with(
                "21:12: task \"shop\": schedule \"0 3 * * 7\": Kubernetes counts weekdays 0-6"
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn config_mistakes_come_first_as_config_check_reports_them() {
        let text = STAGING.replace("[kubernetes]\n", "[kubernetes]\nnamespaces = \"x\"\n");
        let errors = render_text(&text, &Options::default()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("9:1: kubernetes: unknown field \"namespaces\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn long_names_are_cut_to_cron_job_length() {
        let text = STAGING.replace(
            "name = \"on_demand\"",
            "name = \"a-task-with-a-name-much-longer-than-any-cron-job-may-have\"",
        );
        let docs = documents(&render_text(&text, &Options::default()).unwrap().yaml);
        let name = docs[3]["metadata"]["name"].as_str().unwrap();
        assert!(name.len() <= names::CRONJOB_NAME_MAX, "{name}");
        assert!(name.starts_with("staging-a-task-with-a-name"), "{name}");
        assert_eq!(
            docs[3]["metadata"]["annotations"]["envsync/task"],
            "a-task-with-a-name-much-longer-than-any-cron-job-may-have"
        );
    }
}
