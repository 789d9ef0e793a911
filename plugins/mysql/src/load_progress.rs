//! Rows loaded so far, reported while a restore runs (`log.progress`, stage
//! `loading`), so the operator and the Pushgateway see rows as well as
//! bytes. The server cannot tell how far a dump load is (InnoDB's row
//! counts are estimates, its counters are server-wide), but the dump is
//! SQL text passing through the plugin: the plugin counts the tuples of its
//! `INSERT … VALUES (…),(…);` statements as they go to the client. The
//! count runs ahead of the server by at most what the pipe and the client
//! hold (one statement).

use envsync_plugin_sdk::log;
use std::time::{Duration, Instant};

/// How often the count is reported during a load.
pub const EVERY: Duration = Duration::from_secs(2);

/// Counts the tuples of the INSERT statements in a dump, chunk by chunk
/// (a statement, string or tuple may be cut anywhere between chunks).
#[derive(Debug, Default)]
pub struct TupleCounter {
    rows: u64,
    state: State,
}

#[derive(Debug, Default)]
enum State {
    /// Between statements; `line` holds the start of the current line
    /// while it may still become `INSERT `.
    #[default]
    LineStart,
    Line(Vec<u8>),
    /// The rest of a line that is not an INSERT.
    Other,
    /// In an INSERT before its `VALUES` (table name, column list): the
    /// last letters seen, and whether inside a backticked name.
    Header {
        last: Vec<u8>,
        quoted: bool,
    },
    /// In the tuples: parenthesis depth, string state.
    Values {
        depth: u32,
        text: Text,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Text {
    Outside,
    Inside,
    /// After a backslash inside a string.
    Escaped,
}

const INSERT: &[u8] = b"INSERT ";
const VALUES: &[u8] = b"VALUES";

impl TupleCounter {
    /// Takes in the next chunk of the dump.
    pub fn push(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.step(b);
        }
    }

    /// Tuples seen complete so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn step(&mut self, b: u8) {
        self.state = match std::mem::take(&mut self.state) {
            State::LineStart => self.line(Vec::new(), b),
            State::Line(start) => self.line(start, b),
            State::Other => {
                if b == b'\n' {
                    State::LineStart
                } else {
                    State::Other
                }
            }
            State::Header { mut last, quoted } => {
                if b == b'`' {
                    State::Header {
                        last: Vec::new(),
                        quoted: !quoted,
                    }
                } else if quoted {
                    State::Header { last, quoted }
                } else {
                    last.push(b.to_ascii_uppercase());
                    if last.len() > VALUES.len() {
                        last.remove(0);
                    }
                    if last == VALUES {
                        State::Values {
                            depth: 0,
                            text: Text::Outside,
                        }
                    } else {
                        State::Header { last, quoted }
                    }
                }
            }
            State::Values { depth, text } => self.values(depth, text, b),
        };
    }

    fn line(&mut self, mut start: Vec<u8>, b: u8) -> State {
        if b == b'\n' {
            return State::LineStart;
        }
        start.push(b);
        if start == INSERT {
            State::Header {
                last: Vec::new(),
                quoted: false,
            }
        } else if INSERT.starts_with(&start) {
            State::Line(start)
        } else {
            State::Other
        }
    }

    fn values(&mut self, depth: u32, text: Text, b: u8) -> State {
        let text = match (text, b) {
            (Text::Escaped, _) => Text::Inside,
            (Text::Inside, b'\\') => Text::Escaped,
            (Text::Inside, b'\'') => Text::Outside,
            (Text::Inside, _) => Text::Inside,
            (Text::Outside, b'\'') => Text::Inside,
            (Text::Outside, b'(') => {
                return State::Values {
                    depth: depth + 1,
                    text,
                };
            }
            (Text::Outside, b')') => {
                if depth == 1 {
                    self.rows += 1;
                }
                return State::Values {
                    depth: depth.saturating_sub(1),
                    text,
                };
            }
            (Text::Outside, b';') if depth == 0 => return State::Other,
            (Text::Outside, _) => Text::Outside,
        };
        State::Values { depth, text }
    }
}

/// Reports a [`TupleCounter`]'s count at most every [`EVERY`].
pub struct RowMeter {
    pub counter: TupleCounter,
    reported: Option<Instant>,
}

impl RowMeter {
    pub fn new() -> Self {
        RowMeter {
            counter: TupleCounter::default(),
            reported: None,
        }
    }

    /// Counts `chunk`, reporting the rows before it when [`EVERY`] passed
    /// (they are the ones the client may already have loaded).
    pub fn push(&mut self, chunk: &[u8]) {
        if self.reported.is_none_or(|at| at.elapsed() >= EVERY) {
            self.report();
        }
        self.counter.push(chunk);
    }

    /// Reports the count now.
    pub fn report(&mut self) {
        self.reported = Some(Instant::now());
        log::progress("loading", self.counter.rows(), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_in_chunks(dump: &[u8], size: usize) -> u64 {
        let mut c = TupleCounter::default();
        for chunk in dump.chunks(size) {
            c.push(chunk);
        }
        c.rows()
    }

    #[test]
    fn tuples_of_inserts_are_counted_wherever_chunks_end() {
        let dump = b"-- MariaDB dump\n\
            /*!40101 SET NAMES utf8mb4 */;\n\
            CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `s` text\n);\n\
            INSERT INTO `t` VALUES (1,'a'),(2,'it\\'s (x), (y)'),(3,NULL);\n\
            INSERT INTO `VALUES (` (`id`, `s`) VALUES (4,'\\\\'),(5,');\\nINSERT INTO x VALUES (9)');\n\
            /*!40000 ALTER TABLE `t` ENABLE KEYS */;\n\
            INSERT INTO `u` VALUES (6,POINT(1,2),0x28),(7,'''(''',0x29);\n";
        for size in [1, 2, 3, 7, 64, dump.len()] {
            assert_eq!(count_in_chunks(dump, size), 7, "chunks of {size}");
        }
    }

    #[test]
    fn other_statements_count_nothing() {
        let dump =
            b"CREATE TABLE x (a int);\nSELECT ('INSERT (1)');\n  INSERT INTO t VALUES (1);\n";
        assert_eq!(count_in_chunks(dump, 5), 0);
    }
}
