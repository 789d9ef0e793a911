//! Rendering a config file into what another system runs: Kubernetes
//! manifests, one CronJob per task ([`kubernetes`]).

pub mod kubernetes;
