//! `envsync-host backups list`.

use crate::step::human_size;
use crate::store::catalog::Catalog;
use anyhow::Result;
use chrono::Utc;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// Key, size, age, checksum of every backup (oldest first).
    List {
        /// Store: a folder path or file:// URL.
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
}

pub async fn execute(command: &BackupsCommand) -> Result<()> {
    let BackupsCommand::List {
        store,
        instance,
        database,
        json,
    } = command;
    let catalog = Catalog::new(crate::store::open(store)?);
    let listed = catalog
        .list(instance.as_deref(), database.as_deref())
        .await?;
    if *json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    println!(
        "{:<58} {:>10} {:>8} {:<6} SHA256",
        "KEY", "SIZE", "AGE", "LATEST"
    );
    for item in &listed {
        let (age, sha) = match &item.manifest {
            Some(m) => {
                let age = Utc::now().signed_duration_since(m.created_at);
                let age = if age.num_days() > 0 {
                    format!("{}d", age.num_days())
                } else if age.num_hours() > 0 {
                    format!("{}h", age.num_hours())
                } else {
                    format!("{}m", age.num_minutes())
                };
                (age, m.sha256.clone())
            }
            None => ("?".into(), "(no manifest: not restorable)".into()),
        };
        println!(
            "{:<58} {:>10} {:>8} {:<6} {}",
            item.key,
            human_size(item.size),
            age,
            if item.latest { "yes" } else { "" },
            sha
        );
    }
    if listed.is_empty() {
        println!("(no backups in {})", catalog.location());
    }
    Ok(())
}
