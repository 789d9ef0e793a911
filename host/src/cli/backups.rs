//! `envsync-host backups list|prune`.

use crate::step::human_size;
use crate::store::StoreOptions;
use crate::store::catalog::{Catalog, Listed};
use anyhow::Result;
use chrono::Utc;
use clap::Subcommand;

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

pub async fn execute(command: &BackupsCommand, options: &StoreOptions) -> Result<()> {
    match command {
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
