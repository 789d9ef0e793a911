//! `sanitise`: envsync's first-party sanitiser. It masks, fakes, filters
//! and drops rows by a TOML rules file (format in `docs/sanitisers.md` and
//! [`rules`]).
//!
//! The logic is plain Rust, tested natively with a stand-in for the host's
//! keyed hash ([`mask::Keyed`]); only the glue at the bottom, which exports
//! the `sanitiser` world, is WebAssembly-only.

pub mod engine;
pub mod json;
pub mod mask;
pub mod rules;
pub mod time;

/// The component glue: one [`engine::Sanitiser`] per instance (one
/// instance serves one step), the host's `keyed.hash` as the hash.
#[cfg(target_arch = "wasm32")]
mod component {
    use crate::engine::Sanitiser as Rules;
    use envsync_plugin_sdk::{
        Error, RowBatch, RunContext, Sanitiser, SanitiserInfo, TableInfo, keyed_hash,
    };
    use std::cell::RefCell;

    thread_local! {
        static STATE: RefCell<Option<Rules>> = const { RefCell::new(None) };
    }

    fn not_configured() -> Error {
        Error::Other("the sanitiser was called before `configure`".into())
    }

    struct Component;

    impl Sanitiser for Component {
        fn describe() -> SanitiserInfo {
            SanitiserInfo {
                name: "sanitise".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Masks, fakes, filters and drops rows and JSON fields by TOML rules"
                    .into(),
            }
        }

        fn configure(rules: String, context: RunContext) -> Result<Option<Vec<String>>, Error> {
            let (state, targets) = Rules::configure(&rules, context.started_at)?;
            STATE.with_borrow_mut(|s| *s = Some(state));
            Ok(Some(targets))
        }

        fn transform_rows(
            table: String,
            columns: Vec<String>,
            batch: RowBatch,
        ) -> Result<RowBatch, Error> {
            STATE.with_borrow_mut(|s| {
                let s = s.as_mut().ok_or_else(not_configured)?;
                s.transform_batch(&table, &columns, batch, &keyed_hash)
            })
        }

        fn transform_documents(
            index: String,
            documents: Vec<String>,
        ) -> Result<Vec<String>, Error> {
            STATE.with_borrow(|s| {
                let s = s.as_ref().ok_or_else(not_configured)?;
                s.transform_documents(&index, documents, &keyed_hash)
            })
        }

        fn uncovered(schema: Vec<TableInfo>) -> Vec<String> {
            STATE.with_borrow_mut(|s| match s.as_mut() {
                Some(s) => s.uncovered(&schema),
                // Fail closed: without rules nothing is covered.
                None => Rules::configure("", 0)
                    .map(|(mut r, _)| r.uncovered(&schema))
                    .unwrap_or_default(),
            })
        }
    }

    envsync_plugin_sdk::export_sanitiser!(Component);
}
