//! `envsync-host plugins list|inspect`.

use crate::failure::{Failure, Kind};
use crate::runtime::registry::{Listing, SANITISER_FOLDER};
use crate::runtime::{LoadedPlugin, Role, Runtime, compile_cache};
use crate::step::operation_name;
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use std::path::Path;

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
    /// Compile every plugin and sanitiser of the folder into DIR, read-only, for hosts that set ENVSYNC_PRECOMPILED_DIR=DIR (the container image).
    Precompile {
        #[arg(long, value_name = "DIR")]
        into: std::path::PathBuf,
    },
}

/// `plugins precompile --into DIR`: every `.wasm` of the plugin folder and
/// its sanitiser folder, compiled and sealed into `into`, which is then made
/// readable by everyone and writable only by its owner. A file that does
/// not compile fails the command after the others are done.
pub fn precompile(runtime: &Runtime, plugin_dir: &Path, into: &Path) -> Result<()> {
    let mut files = Vec::new();
    for dir in [plugin_dir.to_path_buf(), plugin_dir.join(SANITISER_FOLDER)] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut failed = Vec::new();
    for file in &files {
        match compile_cache::precompile_into(runtime.engine(), file, into) {
            Ok(entry) => println!("{} -> {}", file.display(), entry.display()),
            Err(e) => {
                eprintln!("{}: {e:#}", file.display());
                failed.push(file.display().to_string());
            }
        }
    }
    if files.is_empty() {
        return Err(Failure::new(
            Kind::Plugin,
            format!("no plugins to precompile in {}", plugin_dir.display()),
        )
        .into());
    }
    compile_cache::publish_installed(into)?;
    if !failed.is_empty() {
        return Err(Failure::new(
            Kind::Plugin,
            format!("could not precompile {}", failed.join(", ")),
        )
        .into());
    }
    Ok(())
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

pub async fn execute(runtime: &Runtime, plugin_dir: &Path, command: &PluginsCommand) -> Result<()> {
    match command {
        PluginsCommand::Precompile { into } => {
            // Compiled afresh, whatever any cache holds.
            let fresh = Runtime::new(compile_cache::CompileCache::new(None))?;
            precompile(&fresh, plugin_dir, into)
        }
        PluginsCommand::List { json } => {
            // The whole folder, refused files included.
            let registry = &Listing::scan(runtime, plugin_dir).await?;
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
            let registry = &Listing::scan(runtime, plugin_dir).await?;
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
            let copies = p.capabilities.iter().any(|c| c == "sanitising");
            match (&i.sanitised_artifact, copies) {
                (Some(f), _) => println!(
                    "sanitised:   {} (.{}): backups and copies can sanitise",
                    f.name, f.extension
                ),
                (None, true) => println!("sanitised:   copies only (no sanitised backups)"),
                (None, false) => {
                    println!("sanitised:   no (this plugin cannot sanitise in the stream)")
                }
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
