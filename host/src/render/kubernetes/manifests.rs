//! The few Kubernetes object shapes the renderer writes, as serde types (the
//! field names of the `batch/v1` and `v1` APIs; empty optional fields are
//! left out).

use serde::Serialize;
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !b
}

/// An object: `apiVersion`, `kind`, `metadata`, and the kind's own fields.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Object<B: Serialize> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub body: B,
}

#[derive(Serialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountBody {
    pub automount_service_account_token: bool,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapBody {
    pub data: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
}

#[derive(Serialize, Debug)]
pub struct CronJobBody {
    pub spec: CronJobSpec,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CronJobSpec {
    pub schedule: String,
    pub time_zone: String,
    pub concurrency_policy: &'static str,
    pub starting_deadline_seconds: i64,
    pub suspend: bool,
    pub successful_jobs_history_limit: u32,
    pub failed_jobs_history_limit: u32,
    pub job_template: JobTemplate,
}

#[derive(Serialize, Debug)]
pub struct JobTemplate {
    pub metadata: ObjectMeta,
    pub spec: JobSpec,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub active_deadline_seconds: u64,
    pub backoff_limit: u32,
    pub pod_failure_policy: PodFailurePolicy,
    pub template: PodTemplate,
}

#[derive(Serialize, Debug)]
pub struct PodFailurePolicy {
    pub rules: Vec<PodFailurePolicyRule>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PodFailurePolicyRule {
    pub action: &'static str,
    pub on_pod_conditions: Vec<PodConditionPattern>,
}

#[derive(Serialize, Debug)]
pub struct PodConditionPattern {
    #[serde(rename = "type")]
    pub condition: &'static str,
    pub status: &'static str,
}

#[derive(Serialize, Debug)]
pub struct PodTemplate {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub service_account_name: String,
    pub automount_service_account_token: bool,
    pub restart_policy: &'static str,
    pub security_context: PodSecurityContext,
    pub containers: Vec<Container>,
    pub volumes: Vec<Volume>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    pub run_as_non_root: bool,
    pub run_as_user: u32,
    pub run_as_group: u32,
    pub fs_group: u32,
    pub seccomp_profile: SeccompProfile,
}

#[derive(Serialize, Debug)]
pub struct SeccompProfile {
    #[serde(rename = "type")]
    pub profile: &'static str,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: &'static str,
    pub image: String,
    pub image_pull_policy: String,
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    pub resources: ResourceRequirements,
    pub security_context: ContainerSecurityContext,
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    pub secret_key_ref: SecretKeySelector,
}

#[derive(Serialize, Debug)]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    pub secret_ref: SecretEnvSource,
}

#[derive(Serialize, Debug)]
pub struct SecretEnvSource {
    pub name: String,
}

#[derive(Serialize, Debug)]
pub struct ResourceRequirements {
    pub requests: BTreeMap<&'static str, String>,
    pub limits: BTreeMap<&'static str, String>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecurityContext {
    pub allow_privilege_escalation: bool,
    pub read_only_root_filesystem: bool,
    pub capabilities: Capabilities,
}

#[derive(Serialize, Debug)]
pub struct Capabilities {
    pub drop: Vec<&'static str>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// A volume: exactly one of the sources is set.
#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projected: Option<ProjectedVolume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDir>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimSource>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ProjectedVolume {
    pub default_mode: u32,
    pub sources: Vec<VolumeProjection>,
}

#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeProjection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<KeysProjection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<KeysProjection>,
}

/// Some keys of a ConfigMap or Secret, each as a file.
#[derive(Serialize, Debug)]
pub struct KeysProjection {
    pub name: String,
    pub items: Vec<KeyToPath>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
}

#[derive(Serialize, Debug)]
pub struct EmptyDir {}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSource {
    pub claim_name: String,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
}
