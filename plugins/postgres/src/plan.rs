//! The main stream of a chunked artifact: a text plan naming its chunks in
//! load order (docs/decisions/0019). Pure logic, unit-tested natively.
//!
//! ```text
//! ENVSYNC-POSTGRES-CHUNKED 1
//! id <unique id of this backup>
//! encoding <server encoding of the source>
//! pre-data <chunk>                     pg_dump -Fc --section=pre-data
//! data <chunk> <table> <columns>       COPY text of one table or block range
//! sequences <chunk>                    pg_dump -Fc --section=data, no table data
//! post-data <chunk>                    pg_dump -Fp --section=post-data
//! ```
//!
//! A sanitised backup's plan (docs/decisions/0021) has a line `kind
//! sanitised` after `encoding`; its pre-data and sequences chunks are
//! plain SQL scripts, and its data lines name a chunk and its table
//! (`data <chunk> <table>`, the table as pg_dump names it; plans written
//! before the host told row chunks' tables have `data <chunk>`): a script
//! with its own `COPY … FROM stdin;` written by the host from the rows the
//! sanitiser kept.
//!
//! Fields are separated by tabs; a field's `\`, tab and newline are escaped
//! as `\\`, `\t`, `\n` (quoted identifiers may hold any character).

use envsync_plugin_sdk::fields::{escape, unescape};

/// First line of every plan.
pub const MAGIC: &[u8] = b"ENVSYNC-POSTGRES-CHUNKED 1\n";

/// One table's rows, or a block range of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataChunk {
    pub chunk: String,
    /// Schema-qualified, quoted: `"public"."orders"`; in a sanitised plan
    /// as pg_dump's COPY names it (`public.orders`), or empty in one
    /// written before the host told row chunks' tables.
    pub table: String,
    /// Quoted column list without parentheses (empty for no columns).
    pub columns: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub encoding: String,
    pub pre_data: String,
    pub data: Vec<DataChunk>,
    pub sequences: String,
    pub post_data: String,
    /// A sanitised backup's plan: pre-data and sequences are SQL scripts,
    /// data chunks are scripts with their own COPY.
    pub sanitised: bool,
}

impl Plan {
    pub fn render(&self) -> String {
        let mut out = String::from_utf8(MAGIC.to_vec()).expect("ascii");
        let mut line = |fields: &[&str]| {
            let escaped: Vec<String> = fields.iter().map(|f| escape(f)).collect();
            out.push_str(&escaped.join("\t"));
            out.push('\n');
        };
        line(&["id", &self.id]);
        line(&["encoding", &self.encoding]);
        if self.sanitised {
            line(&["kind", "sanitised"]);
        }
        line(&["pre-data", &self.pre_data]);
        for d in &self.data {
            if self.sanitised && d.table.is_empty() {
                line(&["data", &d.chunk]);
            } else if self.sanitised {
                line(&["data", &d.chunk, &d.table]);
            } else {
                line(&["data", &d.chunk, &d.table, &d.columns]);
            }
        }
        line(&["sequences", &self.sequences]);
        line(&["post-data", &self.post_data]);
        out
    }

    pub fn parse(text: &[u8]) -> Result<Plan, String> {
        let body = text
            .strip_prefix(MAGIC)
            .ok_or("the artifact does not start with the chunked plan's first line")?;
        let body = std::str::from_utf8(body).map_err(|_| "the plan is not UTF-8 text")?;
        let mut plan = Plan::default();
        for (number, line) in body.lines().enumerate() {
            let fields: Vec<String> = line.split('\t').map(unescape).collect();
            let bad = || {
                format!(
                    "line {} of the plan is not understood: {line:?}",
                    number + 2
                )
            };
            match (fields[0].as_str(), fields.len()) {
                ("id", 2) => plan.id = fields[1].clone(),
                ("encoding", 2) => plan.encoding = fields[1].clone(),
                ("kind", 2) if fields[1] == "sanitised" => plan.sanitised = true,
                ("pre-data", 2) => plan.pre_data = fields[1].clone(),
                ("sequences", 2) => plan.sequences = fields[1].clone(),
                ("post-data", 2) => plan.post_data = fields[1].clone(),
                ("data", 4) if !plan.sanitised => plan.data.push(DataChunk {
                    chunk: fields[1].clone(),
                    table: fields[2].clone(),
                    columns: fields[3].clone(),
                }),
                ("data", 2 | 3) if plan.sanitised => plan.data.push(DataChunk {
                    chunk: fields[1].clone(),
                    table: fields.get(2).cloned().unwrap_or_default(),
                    columns: String::new(),
                }),
                _ => return Err(bad()),
            }
        }
        if plan.id.is_empty() || plan.pre_data.is_empty() || plan.post_data.is_empty() {
            return Err("the plan is incomplete (no id, pre-data or post-data line)".into());
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_with_any_identifier() {
        let plan = Plan {
            id: "00000003-1 1700000000".into(),
            encoding: "UTF8".into(),
            pre_data: "pre-data".into(),
            data: vec![DataChunk {
                chunk: "data-00001".into(),
                table: "\"public\".\"odd\tname\\\n\"".into(),
                columns: "\"a\", \"b\"".into(),
            }],
            sequences: "sequences".into(),
            post_data: "post-data".into(),
            sanitised: false,
        };
        let text = plan.render();
        assert!(text.as_bytes().starts_with(MAGIC));
        assert_eq!(Plan::parse(text.as_bytes()).unwrap(), plan);
    }

    #[test]
    fn sanitised_plans_round_trip_and_their_data_lines_name_chunk_and_table() {
        let plan = Plan {
            id: "sanitised-1".into(),
            encoding: "UTF8".into(),
            pre_data: "pre-data".into(),
            data: vec![
                DataChunk {
                    chunk: "rows-00001".into(),
                    table: "public.\"odd\tname\"".into(),
                    columns: String::new(),
                },
                // As written before the host told row chunks' tables.
                DataChunk {
                    chunk: "rows-00002".into(),
                    table: String::new(),
                    columns: String::new(),
                },
            ],
            sequences: "sequences".into(),
            post_data: "post-data".into(),
            sanitised: true,
        };
        let text = plan.render();
        assert!(text.contains("\nkind\tsanitised\n"), "{text}");
        assert!(
            text.contains("\ndata\trows-00001\tpublic.\"odd\\tname\"\n"),
            "{text}"
        );
        assert!(text.contains("\ndata\trows-00002\n"), "{text}");
        assert_eq!(Plan::parse(text.as_bytes()).unwrap(), plan);
        // A data line with columns is not a sanitised plan's.
        let columns = text.replace("rows-00002\n", "rows-00002\tt\tc\n");
        assert!(Plan::parse(columns.as_bytes()).is_err());
        // A table-less data line outside a sanitised plan is refused.
        let plain = text.replace("kind\tsanitised\n", "");
        assert!(Plan::parse(plain.as_bytes()).is_err());
    }

    #[test]
    fn damaged_plans_are_refused() {
        assert!(Plan::parse(b"PGDMP").is_err());
        assert!(Plan::parse(b"ENVSYNC-POSTGRES-CHUNKED 1\nid\tx\nbogus\n").is_err());
        assert!(Plan::parse(b"ENVSYNC-POSTGRES-CHUNKED 1\nid\tx\n").is_err());
    }
}
