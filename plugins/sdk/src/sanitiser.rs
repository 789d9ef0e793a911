//! Writing a sanitiser (feature `sanitiser`).
//!
//! A sanitiser is a WebAssembly component (`wasm32-wasip2`) of the
//! `sanitiser` world of `envsync:plugin@0.1.0`. When a task sanitises, an
//! engine plugin dumps the source in a row-level format and the host passes
//! every batch of rows of the tables the sanitiser asked for through it,
//! before the rows reach the artifact or the target. It implements
//! [`Sanitiser`](crate::Sanitiser):
//!
//! | function | when | what |
//! |---|---|---|
//! | `describe()` | once, when the host loads the file | [`SanitiserInfo`](crate::SanitiserInfo): the name tasks use (`sanitiser = "NAME"`), version, one line of description |
//! | `configure(rules, context)` | once per step, first | the task's rules file as text (the format is the sanitiser's own) and the [`RunContext`](crate::RunContext) (`started_at`, Unix seconds: the only clock it has; `environment`). Returns the tables/indices it acts on (`None`: all). Bad rules: [`Error::InvalidParam`](crate::Error::InvalidParam), naming the table and column. |
//! | `uncovered(schema)` | once after `configure`, before any rows (and by `sanitise check`) | the live schema ([`TableInfo`](crate::TableInfo), with per-column `unique`); returns every `table.column` the rules say nothing about. Fail closed. |
//! | `transform_rows(table, columns, rows)` | per batch (≥ 1,000 rows or ~1 MiB) | the rows to keep; each with exactly as many values as `columns` (the host refuses reshaped rows). Rows come packed in a [`RowBatch`](crate::RowBatch) (see [`rows`](crate::rows)): `None` for NULL, the dump's text form otherwise. |
//! | `transform_documents(index, documents)` | per batch | JSON documents to keep. |
//!
//! The sandbox gives it nothing but the rows and [`keyed_hash`]: no files,
//! sockets, environment, credentials; the wall and monotonic clocks are
//! stopped at the Unix epoch. Each call runs under a memory cap and a
//! deadline, and the host scans its output for residual personal data. State
//! kept between calls (the parsed rules, per-table plans) lives in statics,
//! e.g. a `std::sync::OnceLock` or a `thread_local!`: one instance serves one
//! step.
//!
//! [`keyed_hash`] is HMAC-SHA-256 under the task's salt, which the sanitiser
//! never sees: the same value gives the same mask in every table and every
//! run, so joins on masked columns still match, and nobody without the salt
//! can reverse it by hashing guesses.
//!
//! Cargo.toml:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! envsync-plugin-sdk = { path = "../sdk", default-features = false, features = ["sanitiser"] }
//! ```
//!
//! A complete sanitiser that replaces every column named `email` with a
//! keyed pseudonym and drops the rows of `audit_log`:
//!
//! ```no_run
//! use envsync_plugin_sdk::{
//!     Error, RowBatch, RunContext, Sanitiser, SanitiserInfo, TableInfo, keyed_hash,
//! };
//! use envsync_plugin_sdk::rows::{pack, unpack};
//!
//! struct EmailMasker;
//!
//! impl Sanitiser for EmailMasker {
//!     fn describe() -> SanitiserInfo {
//!         SanitiserInfo {
//!             name: "email-masker".into(),
//!             version: "0.1.0".into(),
//!             description: "replaces `email` columns, drops audit_log".into(),
//!         }
//!     }
//!
//!     fn configure(rules: String, _context: RunContext) -> Result<Option<Vec<String>>, Error> {
//!         if !rules.trim().is_empty() {
//!             return Err(Error::InvalidParam("email-masker takes no rules".into()));
//!         }
//!         Ok(None) // every table
//!     }
//!
//!     fn transform_rows(
//!         table: String,
//!         columns: Vec<String>,
//!         batch: RowBatch,
//!     ) -> Result<RowBatch, Error> {
//!         if table == "audit_log" || table.ends_with(".audit_log") {
//!             return Ok(pack(columns.len(), &[]));
//!         }
//!         // Rows arrive packed; unpack them (or read them in place with
//!         // `rows::values` and build the answer with `RowBatchBuilder`).
//!         let mut rows = unpack(&batch, columns.len())?;
//!         if let Some(i) = columns.iter().position(|c| c == "email") {
//!             for row in &mut rows {
//!                 if let Some(value) = row[i].as_mut() {
//!                     let digest = keyed_hash(value.to_lowercase().as_bytes());
//!                     let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
//!                     *value = format!("user-{tag}@example.com");
//!                 }
//!             }
//!         }
//!         Ok(pack(columns.len(), &rows)) // same number of values in every row
//!     }
//!
//!     fn transform_documents(_index: String, documents: Vec<String>) -> Result<Vec<String>, Error> {
//!         Ok(documents)
//!     }
//!
//!     fn uncovered(schema: Vec<TableInfo>) -> Vec<String> {
//!         // Fail closed: everything but `email` (and audit_log) is uncovered.
//!         schema
//!             .iter()
//!             .filter(|t| t.name != "audit_log" && !t.name.ends_with(".audit_log"))
//!             .flat_map(|t| {
//!                 t.columns
//!                     .iter()
//!                     .filter(|c| c.name != "email")
//!                     .map(move |c| format!("{}.{}", t.name, c.name))
//!             })
//!             .collect()
//!     }
//! }
//!
//! envsync_plugin_sdk::export_sanitiser!(EmailMasker);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --profile wasm -p NAME`
//! and drop the `.wasm` into the plugin folder; `docs/sanitisers.md` shows
//! how a task uses it. Logic worth testing natively should take the hash as
//! a parameter (a closure or trait), since [`keyed_hash`] only works inside
//! the host.

pub use crate::sanitiser_bindings::envsync::plugin::keyed;

/// HMAC-SHA-256 of `data` under the task's secret salt (the `keyed.hash`
/// import). Deterministic for a given salt; the sanitiser never sees the
/// salt. Only works inside the host (natively it is unreachable).
pub fn keyed_hash(data: &[u8]) -> [u8; 32] {
    // The host always answers 32 bytes; anything else is a host bug, and a
    // mask must never be weakened, so that traps.
    keyed::hash(data)
        .try_into()
        .expect("keyed.hash returns the 32 bytes of an HMAC-SHA-256")
}
