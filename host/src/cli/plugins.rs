//! `envsync-host plugins list|inspect`.

use crate::runtime::registry::Registry;
use crate::runtime::{LoadedPlugin, Role};
use crate::step::operation_name;
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Name, role, version, operations, programs and file of every plugin and sanitiser, and every refused file.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Everything a plugin declared: operations, programs, artifact format, credentials, parameters.
    Inspect {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn to_json(p: &LoadedPlugin) -> serde_json::Value {
    let i = &p.info;
    json!({
        "name": i.name,
        "role": Role::Engine.as_str(),
        "version": i.version,
        "description": i.description,
        "operations": i.operations.iter().map(|o| operation_name(*o)).collect::<Vec<_>>(),
        "programs": i.programs,
        "capabilities": p.capabilities,
        "artifact": {
            "format": i.artifact.name,
            "extension": i.artifact.extension,
            "compressed": i.artifact.compressed,
            "head_size": i.artifact.head_size,
        },
        "sanitised_artifact": i.sanitised_artifact.as_ref().map(|f| json!({
            "format": f.name, "extension": f.extension, "compressed": f.compressed,
        })),
        "credentials": {
            "host": i.credentials.host,
            "port": i.credentials.port,
            "user": i.credentials.user,
            "password": i.credentials.password,
            "passthrough": i.credentials.passthrough,
        },
        "params": i.params.iter().map(|p| json!({"name": p.name, "description": p.description, "default": p.default_value})).collect::<Vec<_>>(),
        "file": p.file.display().to_string(),
    })
}

pub fn execute(registry: &Registry, command: &PluginsCommand) -> Result<()> {
    match command {
        PluginsCommand::List { json } => {
            if *json {
                let broken: Vec<_> = registry
                    .broken
                    .iter()
                    .map(|b| {
                        json!({"file": b.file.display().to_string(), "role": b.role.as_str(), "error": b.reason})
                    })
                    .collect();
                let plugins: Vec<_> = registry.plugins.iter().map(to_json).collect();
                let sanitisers: Vec<_> = registry
                    .sanitisers
                    .iter()
                    .map(|s| {
                        json!({"name": s.info.name, "role": Role::Sanitiser.as_str(), "version": s.info.version,
                               "description": s.info.description, "file": s.file.display().to_string()})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "dir": registry.dir.display().to_string(),
                        "sanitiser_dir": registry.sanitiser_dir().display().to_string(),
                        "plugins": plugins,
                        "sanitisers": sanitisers,
                        "broken": broken
                    }))?
                );
                return Ok(());
            }
            println!(
                "engine plugins in {}, sanitisers in {}",
                registry.dir.display(),
                registry.sanitiser_dir().display()
            );
            println!(
                "{:<14} {:<10} {:<9} {:<34} {:<28} FILE",
                "NAME", "ROLE", "VERSION", "OPERATIONS", "PROGRAMS"
            );
            for p in &registry.plugins {
                let ops: Vec<_> = p
                    .info
                    .operations
                    .iter()
                    .map(|o| operation_name(*o))
                    .collect();
                println!(
                    "{:<14} {:<10} {:<9} {:<34} {:<28} {}",
                    p.info.name,
                    Role::Engine.as_str(),
                    p.info.version,
                    ops.join(","),
                    p.info.programs.join(","),
                    p.file.display()
                );
            }
            for s in &registry.sanitisers {
                println!(
                    "{:<14} {:<10} {:<9} {:<34} {:<28} {}",
                    s.info.name,
                    Role::Sanitiser.as_str(),
                    s.info.version,
                    "sanitise",
                    "-",
                    s.file.display()
                );
            }
            for b in &registry.broken {
                println!(
                    "REFUSED {} {}: {}",
                    b.role.as_str(),
                    b.file.display(),
                    b.reason
                );
            }
            if registry.plugins.is_empty()
                && registry.sanitisers.is_empty()
                && registry.broken.is_empty()
            {
                println!(
                    "(none: put engine plugins in {} as NAME.wasm and sanitisers in {}, or pass --plugin-dir)",
                    registry.dir.display(),
                    registry.sanitiser_dir().display()
                );
            }
            Ok(())
        }
        PluginsCommand::Inspect { name, json } => {
            let p = registry.get(name)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&to_json(p))?);
                return Ok(());
            }
            let i = &p.info;
            let ops: Vec<_> = i.operations.iter().map(|o| operation_name(*o)).collect();
            println!("{} {} — {}", i.name, i.version, i.description);
            println!("role:        engine plugin");
            println!("file:        {}", p.file.display());
            println!("operations:  {}", ops.join(", "));
            println!("programs:    {}", i.programs.join(", "));
            println!(
                "imports:     {}",
                if p.capabilities.is_empty() {
                    "job, log, streams only".to_string()
                } else {
                    format!("job, log, streams, {}", p.capabilities.join(", "))
                }
            );
            println!(
                "artifact:    {} (.{}, {})",
                i.artifact.name,
                i.artifact.extension,
                if i.artifact.compressed {
                    "compressed"
                } else {
                    "not compressed"
                }
            );
            match &i.sanitised_artifact {
                Some(f) => println!(
                    "sanitised:   {} (.{}): backups and copies can sanitise",
                    f.name, f.extension
                ),
                None if p.capabilities.iter().any(|c| c == "sanitising") => {
                    println!("sanitised:   copies only (no sanitised backup format)")
                }
                None => println!("sanitised:   no (this plugin cannot sanitise in the stream)"),
            }
            let c = &i.credentials;
            let vars: Vec<String> = [
                ("host", &c.host),
                ("port", &c.port),
                ("user", &c.user),
                ("password", &c.password),
            ]
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}→{v}")))
            .collect();
            println!("credentials: {}", vars.join(", "));
            println!("passthrough: {}", c.passthrough.join(", "));
            println!("parameters:");
            for p in &i.params {
                let default = p
                    .default_value
                    .as_deref()
                    .map(|d| format!(" [default: {d}]"))
                    .unwrap_or_default();
                println!("  {:<22} {}{default}", p.name, p.description);
            }
            Ok(())
        }
    }
}
