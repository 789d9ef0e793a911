//! `export-dump` of a chunked artifact: one plain SQL dump that `mariadb`
//! or `mysql` loads into an empty database (`mariadb db < dump.sql`): the
//! schema dump, the rows with foreign-key and unique checks off, the
//! triggers dump. Every chunk is checked against the manifest.

use crate::chunk_plan::{MAGIC, Plan};
use crate::chunked_restore::{ROW_SESSION, read_plan_after};
use envsync_plugin_sdk::{ByteSink, ByteSource, Error, chunks, read_head, splice, write_all};

/// What the export writes, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Part<'a> {
    Chunk(&'a str),
    Text(String),
}

pub fn parts(plan: &Plan) -> Vec<Part<'_>> {
    let mut out = vec![
        Part::Chunk(&plan.schema),
        Part::Text(format!(
            "SET SESSION foreign_key_checks = 0, unique_checks = 0;\n{ROW_SESSION}"
        )),
    ];
    out.extend(plan.data.iter().map(|d| Part::Chunk(&d.chunk)));
    out.push(Part::Text(
        "SET SESSION foreign_key_checks = 1, unique_checks = 1;\n".into(),
    ));
    out.push(Part::Chunk(&plan.triggers));
    out
}

pub fn export_dump(artifact: &ByteSource, out: &ByteSink) -> Result<(), Error> {
    let head = read_head(artifact, MAGIC.len())?;
    if head != MAGIC {
        // A single-stream artifact already is one dump `mariadb` loads.
        write_all(out, &head)?;
        splice(artifact, out)?;
        return artifact.verify();
    }
    let plan = read_plan_after(&head, artifact)?;
    for part in parts(&plan) {
        match part {
            Part::Text(text) => write_all(out, text.as_bytes())?,
            Part::Chunk(name) => {
                let source = chunks::open(name)?;
                splice(&source, out)?;
                source
                    .verify()
                    .map_err(|e| e.context(format!("chunk {name:?}")))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_plan::DataChunk;

    #[test]
    fn rows_load_between_schema_and_triggers_with_checks_off() {
        let plan = Plan {
            id: "x".into(),
            schema: "schema".into(),
            data: vec![DataChunk {
                chunk: "data-00001".into(),
                table: "t".into(),
            }],
            triggers: "triggers".into(),
        };
        let parts = parts(&plan);
        assert_eq!(parts[0], Part::Chunk("schema"));
        let Part::Text(setup) = &parts[1] else {
            panic!("{parts:?}")
        };
        assert!(setup.contains("foreign_key_checks = 0"), "{setup}");
        assert!(setup.contains("time_zone = '+00:00'"), "{setup}");
        assert_eq!(parts[2], Part::Chunk("data-00001"));
        assert_eq!(parts[4], Part::Chunk("triggers"));
    }
}
