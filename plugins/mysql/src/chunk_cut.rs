//! Cutting a data-only dump (`mariadb-dump --no-create-info`) into chunks
//! of complete INSERT statements of one table, about `limit` bytes each
//! (a chunk may pass the limit by its last statement).
//!
//! An extended INSERT is either one line (`INSERT INTO `t` VALUES
//! (…),(…);`, MySQL's mysqldump and older MariaDB) or, with MariaDB
//! 10.11's mariadb-dump, a line `INSERT INTO `t` VALUES` followed by one
//! line per row, each ending `),` but the last, which ends `);`. A value's
//! newlines are escaped as `\n`, so lines are whole rows either way.
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
    /// A statement that starts a new chunk, of this table.
    Start(String),
}

pub struct Cutter {
    limit: u64,
    table: Option<String>,
    size: u64,
    /// Inside a multi-line INSERT (its row lines follow).
    in_statement: bool,
}

impl Cutter {
    pub fn new(limit: u64) -> Cutter {
        Cutter {
            limit: limit.max(1),
            table: None,
            size: 0,
            in_statement: false,
        }
    }

    /// Where `line` (with its newline) goes. A line the dump should not
    /// hold is an error: the chunk would otherwise run it at restore.
    pub fn line(&mut self, line: &[u8]) -> Result<Cut, String> {
        let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
        let len = line.len() as u64;
        if self.in_statement {
            if !trimmed.starts_with(b"(") {
                return Err(format!(
                    "a line inside an INSERT that is not a row: {}",
                    preview(line)
                ));
            }
            if trimmed.ends_with(b");") {
                self.in_statement = false;
            } else if !trimmed.ends_with(b"),") {
                return Err(format!("a row line cut short: {}", preview(line)));
            }
            self.size += len;
            return Ok(Cut::Append);
        }
        let Some((table, whole)) = insert_start(trimmed)? else {
            return Ok(Cut::Skip);
        };
        self.in_statement = !whole;
        // Chunks end between statements: at a new table, or once full.
        if self.table.as_deref() == Some(table.as_str()) && self.size < self.limit {
            self.size += len;
            return Ok(Cut::Append);
        }
        self.table = Some(table.clone());
        self.size = len;
        Ok(Cut::Start(table))
    }

    /// At the end of the dump: an INSERT must not be left open.
    pub fn finish(&self) -> Result<(), String> {
        if self.in_statement {
            return Err("the data dump ends inside an INSERT: it is cut short".into());
        }
        Ok(())
    }
}

/// The table of an INSERT's first line and whether the statement ends on
/// it; None for a line without rows.
fn insert_start(line: &[u8]) -> Result<Option<(String, bool)>, String> {
    if let Some(rest) = line.strip_prefix(INSERT) {
        let (table, used) = ident(rest)
            .ok_or_else(|| format!("an INSERT without a table name: {}", preview(line)))?;
        let rest = &rest[used..];
        if rest == b" VALUES" {
            return Ok(Some((table, false)));
        }
        if rest.starts_with(b" VALUES (") && rest.ends_with(b");") {
            return Ok(Some((table, true)));
        }
        return Err(format!(
            "an INSERT that is not an extended INSERT of whole rows: {}",
            preview(line)
        ));
    }
    let harmless = line.is_empty()
        || line.starts_with(b"--")
        || line.starts_with(b"/*")
        || line.starts_with(b"LOCK TABLES `")
        || line == b"UNLOCK TABLES;";
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
        let out = dump
            .split_inclusive('\n')
            .map(|l| c.line(l.as_bytes()).unwrap())
            .collect();
        c.finish().unwrap();
        out
    }

    #[test]
    fn one_line_inserts_are_cut_between_statements() {
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
        // Room after the first statement of `a`, not after the second.
        let first = "INSERT INTO `a` VALUES (1,'x'),(2,'y');\n";
        assert_eq!(
            cuts(first.len() as u64 + 1, dump),
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
    }

    #[test]
    fn row_per_line_inserts_stay_whole() {
        // MariaDB 10.11's mariadb-dump: one row per line.
        let dump = "INSERT INTO `a` VALUES\n(1,'x\\n'),\n(2,'y');\n\
                    INSERT INTO `a` VALUES\n(3,'z');\n\
                    INSERT INTO `b` VALUES\n(1);\n";
        use Cut::*;
        assert_eq!(
            cuts(1, dump),
            [
                Start("a".into()),
                Append,
                Append,
                Start("a".into()),
                Append,
                Start("b".into()),
                Append
            ]
        );
        assert_eq!(
            cuts(1000, dump),
            [
                Start("a".into()),
                Append,
                Append,
                Append,
                Append,
                Start("b".into()),
                Append
            ]
        );
        let mut c = Cutter::new(10);
        c.line(b"INSERT INTO `a` VALUES\n").unwrap();
        c.line(b"(1),\n").unwrap();
        assert!(c.finish().is_err(), "an open INSERT at the end");
    }

    #[test]
    fn lines_that_would_run_anything_else_are_refused() {
        let mut c = Cutter::new(100);
        assert!(c.line(b"DROP TABLE `a`;\n").is_err());
        assert!(c.line(b"INSERT INTO `a` VALUES (1,'cut\n").is_err());
        assert!(c.line(b"INSERT INTO `a` SELECT 1;\n").is_err());
        assert!(c.line(b"INSERT INTO a VALUES (1);\n").is_err());
        let mut c = Cutter::new(100);
        c.line(b"INSERT INTO `a` VALUES\n").unwrap();
        assert!(c.line(b"DROP TABLE `a`;\n").is_err());
        let mut c = Cutter::new(100);
        c.line(b"INSERT INTO `a` VALUES\n").unwrap();
        assert!(c.line(b"(1,'cut\n").is_err());
    }
}
