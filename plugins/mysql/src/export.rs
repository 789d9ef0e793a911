//! `export-dump` of a chunked artifact: one plain SQL dump that `mariadb`
//! or `mysql` loads into an empty database (`mariadb db < dump.sql`): the
//! schema dump, the rows with foreign-key and unique checks off, the
//! triggers dump. Every chunk is checked against the manifest. A
//! single-stream artifact is written as it is, with foreign-key checks
//! turned off before its first statement ([`checks_off_at`]).

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

/// Turns the client's foreign-key checks off for a whole single-stream dump.
/// A sanitised one has its rows after the schema dump's trailer, which
/// sets the checks back to what its header saved: off, when this came first.
const CHECKS_OFF: &[u8] = b"SET SESSION foreign_key_checks = 0;\n";

/// How much of a single-stream dump is searched for its first statement.
const HEADER_LIMIT: usize = 64 << 10;

/// Where [`CHECKS_OFF`] goes: after the leading comment lines and blank
/// lines (so the dump still starts with its `-- MariaDB dump` header), or
/// at the start when no line ends within `head`.
pub fn checks_off_at(head: &[u8]) -> usize {
    let mut at = 0;
    while let Some(end) = head[at..].iter().position(|&b| b == b'\n') {
        let line = &head[at..at + end];
        if !(line.is_empty() || line.starts_with(b"--")) {
            break;
        }
        at += end + 1;
    }
    at
}

pub fn export_dump(artifact: &ByteSource, out: &ByteSink) -> Result<(), Error> {
    let head = read_head(artifact, MAGIC.len())?;
    if head != MAGIC {
        // A single-stream artifact already is one dump `mariadb` loads,
        // once its rows load with foreign-key checks off.
        let mut head = head;
        head.extend(read_head(artifact, HEADER_LIMIT)?);
        let at = checks_off_at(&head);
        write_all(out, &head[..at])?;
        write_all(out, CHECKS_OFF)?;
        write_all(out, &head[at..])?;
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
    fn checks_go_off_after_the_header_comments() {
        let dump = b"-- MariaDB dump 10.19\n--\n-- Host: x\n\n/*!40101 SET @OLD=1 */;\nCREATE TABLE t (a int);\n";
        assert_eq!(&dump[checks_off_at(dump)..][..7], b"/*!4010");
        assert_eq!(checks_off_at(b"CREATE TABLE t (a int);\n"), 0);
        // A header cut short: the SET goes after its whole lines.
        assert_eq!(checks_off_at(b"-- MariaDB dump\n-- Ho"), 16);
        assert_eq!(checks_off_at(b""), 0);
    }

    #[test]
    fn rows_load_between_schema_and_triggers_with_checks_off() {
        let plan = Plan {
            id: "x".into(),
            schema: "schema".into(),
            data: vec![DataChunk {
                chunk: "data-00001".into(),
                table: "t".into(),
                rows: None,
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
