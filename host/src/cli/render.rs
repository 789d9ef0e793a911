//! `envsync-host render kubernetes --config FILE [--image IMAGE]
//! [--namespace NS]`: the manifests that run a config file's tasks on a
//! cluster, as multi-document YAML on stdout (docs/kubernetes.md).

use crate::failure::{Failure, Kind};
use crate::jobs::diagnostics::Severity;
use crate::render::kubernetes::{self, names};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum RenderCommand {
    /// Kubernetes manifests: a CronJob per task, a ConfigMap with the config and its scripts, a ServiceAccount (YAML on stdout).
    Kubernetes(KubernetesArgs),
}

#[derive(Args, Debug)]
pub struct KubernetesArgs {
    /// The config file (TOML); its optional [kubernetes] table adds image, namespace, resources, Secrets, volumes.
    #[arg(long)]
    pub config: PathBuf,
    /// Container image with envsync-host and the plugins [default: image in [kubernetes]].
    #[arg(long, value_parser = parse_image)]
    pub image: Option<String>,
    /// Namespace of every object [default: namespace in [kubernetes], else none (kubectl's current)].
    #[arg(long, value_parser = parse_namespace)]
    pub namespace: Option<String>,
}

fn parse_image(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err("an image reference looks like REGISTRY/NAME:TAG".into());
    }
    Ok(text.to_string())
}

fn parse_namespace(text: &str) -> Result<String, String> {
    if !names::is_dns_label(text, names::LABEL_MAX) {
        return Err("a namespace is lower-case letters, digits and '-', at most 63".into());
    }
    Ok(text.to_string())
}

pub fn execute(command: &RenderCommand) -> Result<()> {
    match command {
        RenderCommand::Kubernetes(args) => render_kubernetes(args),
    }
}

fn render_kubernetes(args: &KubernetesArgs) -> Result<()> {
    let options = kubernetes::Options {
        image: args.image.clone(),
        namespace: args.namespace.clone(),
    };
    match kubernetes::render(&args.config, &options) {
        Ok(rendered) => {
            for w in &rendered.warnings {
                eprintln!("{w}");
            }
            print!("{}", rendered.yaml);
            Ok(())
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            let errors = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            Err(Failure::new(
                Kind::Usage,
                format!(
                    "{}: {errors} mistake{}; nothing rendered",
                    args.config.display(),
                    if errors == 1 { "" } else { "s" }
                ),
            )
            .into())
        }
    }
}
