//! `envsync-host backups list|prune|export`.

use crate::export::{ExportRequest, Output};
use crate::jobs::request;
use crate::runtime::Runtime;
use crate::runtime::registry::Registry;
use crate::runtime::sandbox::DEFAULT_MEMORY_CAP_MIB;
use crate::step::{ExportLimits, human_size};
use crate::store::StoreOptions;
use crate::store::catalog::{Catalog, Listed};
use anyhow::Result;
use chrono::Utc;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// Key, size, age, encryption and checksum of every backup (oldest first).
    List {
        /// Store: a folder path, file:// or s3://bucket/prefix URL.
        #[arg(long, env = "ENVSYNC_STORE")]
        store: String,
        /// Only backups from this instance.
        #[arg(long)]
        instance: Option<String>,
        /// Only backups of this database.
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete old backups of a database; never the one its pointer names.
    Prune {
        #[arg(long, env = "ENVSYNC_STORE")]
        store: String,
        /// Only backups from this instance [default: every instance].
        #[arg(long)]
        instance: Option<String>,
        #[arg(long)]
        database: String,
        /// Keep the newest N backups (per instance).
        #[arg(long)]
        keep_last: Option<usize>,
        /// Keep backups younger than D days.
        #[arg(long)]
        keep_days: Option<u64>,
        /// Only show what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stream one backup out as a single dump its datastore's own tools load (a chunked PostgreSQL backup as one SQL script for psql), for users without envsync.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Store: a folder path, file:// or s3://bucket/prefix URL.
    #[arg(long, env = "ENVSYNC_STORE")]
    store: String,
    /// Plugin that made the backup (see `plugins list`).
    #[arg(long)]
    plugin: String,
    /// The backup's key, INSTANCE/FILE as `backups list` shows it [default: the latest of --instance and --database].
    #[arg(long)]
    key: Option<String>,
    /// Instance whose backup to export.
    #[arg(long)]
    instance: Option<String>,
    /// Database whose latest backup to export.
    #[arg(long)]
    database: Option<String>,
    /// Where the dump goes: a file (written under a temporary name, renamed when complete and verified) or - for standard output.
    #[arg(long, default_value = "-")]
    output: String,
    /// Age identity file to decrypt with (repeatable).
    #[arg(long = "identity", value_name = "FILE", env = "ENVSYNC_AGE_IDENTITY")]
    identities: Vec<PathBuf>,
    /// The plugin and its programs are stopped after this long [default: 4h].
    #[arg(long, value_parser = request::parse_duration)]
    max_runtime: Option<Duration>,
    /// Cap on the plugin's memory, in MiB [default: 256].
    #[arg(long, value_parser = clap::value_parser!(u64).range(*request::MEMORY_CAP_MIB.start()..=*request::MEMORY_CAP_MIB.end()))]
    memory_cap_mib: Option<u64>,
    /// Allow only these of the plugin's declared programs (repeatable) [default: all it declares].
    #[arg(long = "allow-program", value_name = "PROGRAM")]
    allow_programs: Vec<String>,
}

/// Longest an export runs by default (as long as a restore).
const EXPORT_MAX_RUNTIME: Duration = Duration::from_secs(4 * 3600);

/// `backups export`: the plugin converts, the host verifies and writes.
async fn export(
    runtime: &Runtime,
    registry: &Registry,
    args: &ExportArgs,
    options: &StoreOptions,
) -> Result<()> {
    let plugin = registry.plugin(runtime, &args.plugin).await?;
    let output = match args.output.as_str() {
        "-" => Output::Stdout,
        path => Output::File(PathBuf::from(path)),
    };
    let request = ExportRequest {
        store: args.store.clone(),
        store_options: options.clone(),
        key: args.key.clone(),
        instance: args.instance.clone(),
        database: args.database.clone(),
        identities: args.identities.clone(),
        output,
        limits: ExportLimits {
            max_runtime: args.max_runtime.unwrap_or(EXPORT_MAX_RUNTIME),
            memory_cap_mib: args.memory_cap_mib.unwrap_or(DEFAULT_MEMORY_CAP_MIB),
            allow_programs: (!args.allow_programs.is_empty()).then(|| args.allow_programs.clone()),
            stop: crate::signals::stop_on_signals(),
        },
    };
    let exported = crate::export::export(runtime, &plugin, &request).await?;
    tracing::info!(
        "exported {} ({}) to {}",
        exported.key,
        human_size(exported.bytes),
        args.output
    );
    Ok(())
}

fn age(item: &Listed) -> String {
    let Some(m) = &item.manifest else {
        return "?".into();
    };
    let age = Utc::now().signed_duration_since(m.created_at);
    if age.num_days() > 0 {
        format!("{}d", age.num_days())
    } else if age.num_hours() > 0 {
        format!("{}h", age.num_hours())
    } else {
        format!("{}m", age.num_minutes())
    }
}

fn print_table(items: &[Listed]) {
    println!(
        "{:<64} {:>10} {:>6} {:<6} {:<9} SHA256",
        "KEY", "SIZE", "AGE", "LATEST", "ENCRYPTED"
    );
    for item in items {
        let (encrypted, sha) = match &item.manifest {
            Some(m) => (
                if m.encryption.is_some() { "yes" } else { "no" },
                m.sha256.as_str(),
            ),
            None => ("?", "(no manifest: unfinished or foreign, not restorable)"),
        };
        println!(
            "{:<64} {:>10} {:>6} {:<6} {:<9} {}",
            item.key,
            human_size(item.size),
            age(item),
            if item.latest { "yes" } else { "" },
            encrypted,
            sha
        );
    }
}

pub async fn execute(command: &BackupsCommand, cli: &super::Cli) -> Result<()> {
    let options = &cli.s3.options();
    match command {
        BackupsCommand::Export(args) => {
            let runtime = cli.runtime()?;
            export(&runtime, &cli.registry(), args, options).await?;
        }
        BackupsCommand::List {
            store,
            instance,
            database,
            json,
        } => {
            let catalog = Catalog::new(crate::store::open(store, options).await?);
            let listed = catalog
                .list(instance.as_deref(), database.as_deref())
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else if listed.is_empty() {
                println!("(no backups in {})", catalog.location());
            } else {
                print_table(&listed);
            }
        }
        BackupsCommand::Prune {
            store,
            instance,
            database,
            keep_last,
            keep_days,
            dry_run,
            json,
        } => {
            let catalog = Catalog::new(crate::store::open(store, options).await?);
            let doomed = catalog
                .prune(
                    instance.as_deref(),
                    database,
                    *keep_last,
                    *keep_days,
                    *dry_run,
                )
                .await?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"dry_run": dry_run, "deleted": doomed})
                    )?
                );
            } else if doomed.is_empty() {
                println!("nothing to prune");
            } else {
                println!(
                    "{} {} backup(s):",
                    if *dry_run { "would delete" } else { "deleted" },
                    doomed.len()
                );
                print_table(&doomed);
            }
        }
    }
    Ok(())
}
