//! Cutting a data-only dump (`mariadb-dump --no-create-info`) into chunks
//! of complete INSERT statements of one table, about `limit` bytes each.
//! With extended inserts the dump writes one INSERT per line (a value's
//! newlines are escaped as `\n`), so a chunk is a run of whole lines.
//! Everything else in such a dump (its header and footer of session
//! settings, comments, `DISABLE KEYS`) is left out: the restore sets the
//! session itself. Pure logic, unit-tested natively.

use crate::rows::ident;

const INSERT: &[u8] = b"INSERT INTO ";

/// What to do with one line of the dump.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// Not rows: left out.
    Skip,
    /// Rows that go into the current chunk.
    Append,
    /// Rows that start a new chunk, of this table.
    Start(String),
}

pub struct Cutter {
    limit: u64,
    table: Option<String>,
    size: u64,
}

impl Cutter {
    pub fn new(limit: u64) -> Cutter {
        Cutter {
            limit: limit.max(1),
            table: None,
            size: 0,
        }
    }

    /// Where `line` (with its newline) goes. A line the dump should not
    /// hold is an error: the chunk would otherwise run it at restore.
    pub fn line(&mut self, line: &[u8]) -> Result<Cut, String> {
        let Some(table) = insert_table(line)? else {
            return Ok(Cut::Skip);
        };
        let len = line.len() as u64;
        if self.table.as_deref() == Some(table.as_str()) && self.size + len <= self.limit {
            self.size += len;
            return Ok(Cut::Append);
        }
        // A new table, or the chunk is full (a first line always goes in,
        // however long).
        self.table = Some(table.clone());
        self.size = len;
        Ok(Cut::Start(table))
    }
}

/// The table of an INSERT line; None for a line without rows.
fn insert_table(line: &[u8]) -> Result<Option<String>, String> {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    if let Some(rest) = trimmed.strip_prefix(INSERT) {
        let (table, used) = ident(rest)
            .ok_or_else(|| format!("an INSERT without a table name: {}", preview(line)))?;
        if !rest[used..].starts_with(b" VALUES ") || !trimmed.ends_with(b");") {
            return Err(format!(
                "an INSERT that is not one whole extended INSERT line: {}",
                preview(line)
            ));
        }
        return Ok(Some(table));
    }
    let harmless = trimmed.is_empty()
        || trimmed.starts_with(b"--")
        || trimmed.starts_with(b"/*")
        || trimmed == b"LOCK TABLES"
        || trimmed.starts_with(b"LOCK TABLES `")
        || trimmed == b"UNLOCK TABLES;";
    if harmless {
        Ok(None)
    } else {
        Err(format!(
            "unexpected line in the data dump: {}",
            preview(line)
        ))
    }
}

fn preview(line: &[u8]) -> String {
    let n = line.len().min(80);
    format!("{:?}", String::from_utf8_lossy(&line[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(limit: u64, dump: &str) -> Vec<Cut> {
        let mut c = Cutter::new(limit);
        dump.split_inclusive('\n')
            .map(|l| c.line(l.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn chunks_hold_whole_lines_of_one_table() {
        let dump = "/*M!999999\\- enable the sandbox mode */ \n\
                    -- MariaDB dump 10.19\n\
                    /*!40101 SET NAMES utf8mb4 */;\n\
                    \n\
                    /*!40000 ALTER TABLE `a` DISABLE KEYS */;\n\
                    INSERT INTO `a` VALUES (1,'x'),(2,'y');\n\
                    INSERT INTO `a` VALUES (3,'z');\n\
                    INSERT INTO `a` VALUES (4,'w');\n\
                    INSERT INTO `b``c` VALUES (1,0x00ff);\n\
                    -- Dump completed\n";
        use Cut::*;
        // Room for the first two lines of `a`, not the third.
        let two = "INSERT INTO `a` VALUES (1,'x'),(2,'y');\nINSERT INTO `a` VALUES (3,'z');\n";
        assert_eq!(
            cuts(two.len() as u64, dump),
            [
                Skip,
                Skip,
                Skip,
                Skip,
                Skip,
                Start("a".into()),
                Append,
                Start("a".into()),
                Start("b`c".into()),
                Skip
            ]
        );
        // A line over the limit still makes a chunk of its own.
        assert_eq!(
            cuts(1, "INSERT INTO `a` VALUES (1);\nINSERT INTO `a` VALUES (2);\n"),
            [Start("a".into()), Start("a".into())]
        );
    }

    #[test]
    fn lines_that_would_run_anything_else_are_refused() {
        let mut c = Cutter::new(100);
        assert!(c.line(b"DROP TABLE `a`;\n").is_err());
        assert!(c.line(b"INSERT INTO `a` VALUES (1,'cut\n").is_err());
        assert!(c.line(b"INSERT INTO `a` SELECT 1;\n").is_err());
        assert!(c.line(b"INSERT INTO a VALUES (1);\n").is_err());
    }
}
