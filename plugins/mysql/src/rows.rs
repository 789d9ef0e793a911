//! Sanitising a mariadb-dump / mysqldump SQL stream row by row: every line
//! passes through unchanged except the `INSERT` statements of the tables the
//! sanitiser wants, whose tuples are parsed (MySQL quoting rules), handed to
//! the sanitiser in batches and written back as extended INSERTs. Pure logic
//! over byte chunks (the host calls go through [`Target`]), so it is
//! unit-tested natively; `sanitise.rs` wires it to the host.
//!
//! What the sanitiser sees (one `row` per tuple, `None` for NULL):
//! - strings: their text, unescaped (`'it\'s'` → `it's`);
//! - numbers: as the dump writes them (`-12.50`, `1.5e-7`);
//! - binary values (`0x…` and `X'…'` literals, which the dump writes for
//!   binary columns and BIT with `--hex-blob`; `_binary '…'` strings;
//!   `b'0101'` bit literals; any string that is not valid UTF-8): the text
//!   `0x` followed by hex digits.
//!
//! How values are written back: NULL as `NULL`; in a column whose dump
//! values were hex, a value of the form `0x` + hex digits as that hex
//! literal (so an unchanged binary value keeps its bytes); in a column whose
//! values were unquoted numbers, a value that is a plain number unquoted;
//! everything else as a quoted string with backslash escapes (MySQL converts
//! a quoted number into a numeric column).
//!
//! Memory stays bounded by one batch ([`BATCH_ROWS`] rows or
//! [`BATCH_BYTES`] bytes, whichever comes first) plus one output chunk,
//! however long a statement or line is. Column names come from the
//! INSERT's column list, else from the `CREATE TABLE` the dump wrote just
//! before the table's data.

use envsync_plugin_sdk::rows::{check, values};
use envsync_plugin_sdk::{Error, RowBatch};

/// One row of values, `None` for SQL NULL (the contract's `row`).
pub type Row = Vec<Option<String>>;

/// A batch goes to the sanitiser when it holds this many rows…
pub const BATCH_ROWS: usize = 4096;
/// …or about this many bytes of values.
pub const BATCH_BYTES: usize = 1 << 20;
/// Output is written in chunks of at least this size (the last may be
/// smaller).
pub const OUT_CHUNK: usize = 256 * 1024;
/// How much of an ordinary line is kept to recognise it (the rest streams).
const LINE_KEEP: usize = 64 * 1024;
/// The longest INSERT header (`INSERT INTO `t` (`a`, …) VALUES`) accepted;
/// 4096 columns with long names fit.
const HEADER_MAX: usize = 1 << 20;
/// Value buffers kept for reuse at most this large.
const POOL_VALUE_MAX: usize = 64 * 1024;

/// Column kinds seen in the dump (bit flags).
pub const NUM: u8 = 1;
pub const HEX: u8 = 2;

/// Where rows go to be sanitised and where the rewritten dump goes.
pub trait Target {
    /// Passes a batch of `table`'s rows through the sanitiser; the rows
    /// come back packed.
    fn transform(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &[Row],
    ) -> Result<RowBatch, Error>;
    /// Writes rewritten bytes.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error>;
    /// [`Target::transform`] told how the dump wrote each column so far
    /// ([`NUM`] / [`HEX`] flags), for targets that hand rows on.
    fn transform_kinds(
        &mut self,
        table: &str,
        columns: &[String],
        _kinds: &[u8],
        rows: &[Row],
    ) -> Result<RowBatch, Error> {
        self.transform(table, columns, rows)
    }
}

/// Rows in and out of the sanitiser, per table, for the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub rows_in: u64,
    pub rows_out: u64,
    pub batches: u64,
    pub tables: Vec<String>,
}

/// The INSERT statement whose rows are being read.
struct Insert {
    /// `INSERT INTO `t` … VALUES`, as the dump wrote it.
    header: Vec<u8>,
    table: String,
    columns: Vec<String>,
    /// [`NUM`] / [`HEX`] flags per column.
    kinds: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the start of a line into `line`.
    LineStart,
    /// Copying the rest of a line verbatim.
    PassLine,
    /// After the `;` of a sanitised INSERT: drops the newline that ends it
    /// (the rewritten statements end with their own).
    SkipNewline,
    /// Inside the VALUES of a sanitised INSERT.
    Values(V),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    /// Expecting `(`.
    TupleStart,
    /// After `)`: expecting `,` or `;`.
    AfterTuple,
    /// Expecting a value (or `)` of an empty tuple).
    Value,
    /// After a value: expecting `,` or `)`.
    AfterValue,
    /// An unquoted token (number, NULL, 0x…, introducer).
    Token,
    /// Inside '…'.
    Str,
    /// After a backslash inside '…'.
    StrEscape,
    /// After a quote inside '…': a doubled quote or the end.
    StrQuote,
    /// Inside X'…'.
    HexStr,
    /// Inside b'…'.
    BitStr,
}

/// How the string being read is introduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intro {
    None,
    Binary,
    Other,
}

/// The streaming rewriter. Feed it the dump with [`Rewriter::feed`], end
/// with [`Rewriter::finish`].
pub struct Rewriter {
    /// The tables to sanitise (None: all), as bare names or `db.table`.
    tables: Option<Vec<String>>,
    database: String,
    state: State,
    line: Vec<u8>,
    /// Inside a `DELIMITER ;;` block (triggers, routines, events): their
    /// bodies may hold INSERT statements that are not data.
    in_delimiter: bool,
    /// The CREATE TABLE being read: name and columns so far.
    creating: Option<(String, Vec<String>)>,
    /// The last complete CREATE TABLE.
    created: Option<(String, Vec<String>)>,
    insert: Option<Insert>,
    batch: Vec<Row>,
    batch_bytes: usize,
    row: Row,
    value: Vec<u8>,
    intro: Intro,
    /// Value buffers and rows kept for reuse.
    pool: Vec<Vec<u8>>,
    row_pool: Vec<Row>,
    out: Vec<u8>,
    pub stats: Stats,
}

impl Rewriter {
    /// A rewriter for the dump of `database`, sanitising `tables` (None:
    /// every table).
    pub fn new(database: &str, tables: Option<Vec<String>>) -> Rewriter {
        Rewriter {
            tables,
            database: database.to_string(),
            state: State::LineStart,
            line: Vec::new(),
            in_delimiter: false,
            creating: None,
            created: None,
            insert: None,
            batch: Vec::new(),
            batch_bytes: 0,
            row: Vec::new(),
            value: Vec::new(),
            intro: Intro::None,
            pool: Vec::new(),
            row_pool: Vec::new(),
            out: Vec::with_capacity(OUT_CHUNK + 64 * 1024),
            stats: Stats::default(),
        }
    }

    /// Whether the rows of `table` go through the sanitiser.
    pub fn wants(&self, table: &str) -> bool {
        match &self.tables {
            None => true,
            Some(list) => list.iter().any(|t| {
                t == table
                    || t.split_once('.')
                        .is_some_and(|(db, bare)| db == self.database && bare == table)
            }),
        }
    }

    /// Takes in the next chunk of the dump.
    pub fn feed(&mut self, mut input: &[u8], t: &mut impl Target) -> Result<(), Error> {
        while !input.is_empty() {
            let used = match self.state {
                State::LineStart => self.line_start(input, t)?,
                State::PassLine => {
                    let (n, done) = match memchr(b'\n', input) {
                        Some(i) => (i + 1, true),
                        None => (input.len(), false),
                    };
                    self.emit(&input[..n], t)?;
                    if done {
                        self.state = State::LineStart;
                    }
                    n
                }
                State::SkipNewline => {
                    self.state = State::LineStart;
                    usize::from(input[0] == b'\n')
                }
                State::Values(v) => self.values(v, input, t)?,
            };
            input = &input[used..];
        }
        self.drain_out(t)
    }

    /// Ends the stream: the last batch goes through the sanitiser and the
    /// rest of the output is written. Fails when the dump stops inside an
    /// INSERT statement.
    pub fn finish(&mut self, t: &mut impl Target) -> Result<(), Error> {
        if let State::Values(_) = self.state {
            let table = self.insert.as_ref().map_or("", |i| i.table.as_str());
            return Err(Error::Other(format!(
                "the dump ends inside an INSERT statement of table {table:?}: it is truncated"
            )));
        }
        if self.state == State::LineStart && !self.line.is_empty() {
            // A last line without a newline.
            let line = std::mem::take(&mut self.line);
            if starts_insert(&line) && !self.in_delimiter {
                return Err(Error::Other(format!(
                    "the dump ends inside an INSERT statement: {}",
                    excerpt(&line)
                )));
            }
            self.flush_batch(t)?;
            self.track(&line);
            self.emit(&line, t)?;
        }
        self.flush_batch(t)?;
        if !self.out.is_empty() {
            t.write(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Collects the start of a line and decides what it is. Returns how
    /// many bytes of `input` it used.
    fn line_start(&mut self, input: &[u8], t: &mut impl Target) -> Result<usize, Error> {
        let insert_like = !self.in_delimiter && starts_insert_or_prefix(&self.line, input);
        let cap = if insert_like { HEADER_MAX } else { LINE_KEEP };
        let room = cap.saturating_sub(self.line.len()).max(1);
        let (n, complete) = match memchr(b'\n', &input[..input.len().min(room)]) {
            Some(i) => (i + 1, true),
            None => (input.len().min(room), false),
        };
        self.line.extend_from_slice(&input[..n]);
        let full = self.line.len() >= cap;
        if insert_like && starts_insert(&self.line) {
            match parse_header(&self.line) {
                Header::Incomplete if !complete && !full => return Ok(n),
                Header::Incomplete | Header::Bad(_) => {
                    let why = match parse_header(&self.line) {
                        Header::Bad(why) => why,
                        _ => "it stops before VALUES".into(),
                    };
                    return Err(Error::Other(format!(
                        "cannot read the INSERT statement {} of the dump ({why}), so its rows \
                         cannot be sanitised",
                        excerpt(&self.line)
                    )));
                }
                Header::Insert {
                    len,
                    table,
                    columns,
                } => {
                    let line = std::mem::take(&mut self.line);
                    if !self.wants(&table) {
                        self.flush_batch(t)?;
                        self.emit(&line, t)?;
                        self.state = if complete {
                            State::LineStart
                        } else {
                            State::PassLine
                        };
                        return Ok(n);
                    }
                    self.start_insert(&line[..len], table, columns, t)?;
                    self.state = State::Values(V::TupleStart);
                    // The rest of the line (at most one line) is values.
                    let rest = &line[len..];
                    self.feed_values_only(rest, t)?;
                    self.recycle_line(line);
                    return Ok(n);
                }
                Header::NotInsert => {}
            }
        }
        if !complete && !full && (insert_like || self.line.len() < LINE_KEEP) {
            return Ok(n);
        }
        // An ordinary line (or the start of a long one).
        let line = std::mem::take(&mut self.line);
        self.flush_batch(t)?;
        self.track(&line);
        self.emit(&line, t)?;
        self.recycle_line(line);
        self.state = if complete {
            State::LineStart
        } else {
            State::PassLine
        };
        Ok(n)
    }

    fn recycle_line(&mut self, mut line: Vec<u8>) {
        if line.capacity() <= LINE_KEEP * 2 {
            line.clear();
            self.line = line;
        }
    }

    /// Feeds bytes that cannot contain the start of another line (the rest
    /// of the line that held an INSERT header).
    fn feed_values_only(&mut self, mut input: &[u8], t: &mut impl Target) -> Result<(), Error> {
        while !input.is_empty() {
            let used = match self.state {
                State::Values(v) => self.values(v, input, t)?,
                State::SkipNewline => {
                    self.state = State::LineStart;
                    usize::from(input[0] == b'\n')
                }
                // After the statement's end: the rest of the line.
                State::LineStart | State::PassLine => {
                    self.state = State::LineStart;
                    let line = input.to_vec();
                    if line.ends_with(b"\n") {
                        self.flush_batch(t)?;
                        self.track(&line);
                        self.emit(&line, t)?;
                    } else {
                        self.line = line;
                    }
                    input.len()
                }
            };
            input = &input[used..];
        }
        Ok(())
    }

    /// Keeps track of DELIMITER blocks and CREATE TABLE column names.
    fn track(&mut self, line: &[u8]) {
        let trimmed = trim_end(line);
        if let Some(delimiter) = trimmed.strip_prefix(b"DELIMITER ") {
            self.in_delimiter = trim_end(delimiter) != b";";
            return;
        }
        if self.in_delimiter {
            return;
        }
        if let Some(rest) = line.strip_prefix(b"CREATE TABLE ") {
            let rest = rest.strip_prefix(b"IF NOT EXISTS ").unwrap_or(rest);
            self.creating = ident(rest).map(|(name, _)| (name, Vec::new()));
            return;
        }
        if let Some((_, columns)) = &mut self.creating {
            if line.starts_with(b"  `") {
                if let Some((name, _)) = ident(&line[2..]) {
                    columns.push(name);
                }
            } else if line.starts_with(b")") {
                self.created = self.creating.take();
            }
        }
    }

    /// Starts reading the rows of an INSERT (continuing the pending batch
    /// when it is for the same table and columns).
    fn start_insert(
        &mut self,
        header: &[u8],
        table: String,
        columns: Option<Vec<String>>,
        t: &mut impl Target,
    ) -> Result<(), Error> {
        let header = trim_end(header);
        if let Some(i) = &self.insert
            && i.header == header
        {
            return Ok(());
        }
        self.flush_batch(t)?;
        let columns = match columns {
            Some(c) => c,
            None => match &self.created {
                Some((name, cols)) if *name == table && !cols.is_empty() => cols.clone(),
                _ => {
                    return Err(Error::Other(format!(
                        "the INSERT statements of table {table:?} have no column list and no \
                         CREATE TABLE precedes them in the dump, so the columns of its rows \
                         are unknown and they cannot be sanitised"
                    )));
                }
            },
        };
        if !self.stats.tables.contains(&table) {
            self.stats.tables.push(table.clone());
        }
        self.insert = Some(Insert {
            header: header.to_vec(),
            table,
            kinds: vec![0; columns.len()],
            columns,
        });
        Ok(())
    }

    /// Reads VALUES syntax; returns how many bytes it used.
    fn values(&mut self, v: V, input: &[u8], t: &mut impl Target) -> Result<usize, Error> {
        let b = input[0];
        let set = |s: &mut Self, v: V| s.state = State::Values(v);
        match v {
            V::TupleStart => match b {
                b' ' | b'\n' | b'\r' | b'\t' => {}
                b'(' => {
                    self.row = self.row_pool.pop().unwrap_or_default();
                    set(self, V::Value);
                }
                _ => return Err(self.syntax(b, "( to start a row")),
            },
            V::AfterTuple => match b {
                b' ' | b'\n' | b'\r' | b'\t' => {}
                b',' => set(self, V::TupleStart),
                b';' => self.state = State::SkipNewline,
                _ => return Err(self.syntax(b, ", or ; after a row")),
            },
            V::Value => match b {
                b' ' | b'\n' | b'\r' | b'\t' => {}
                b'\'' => {
                    self.start_value();
                    set(self, V::Str);
                }
                b')' if self.row.is_empty() && self.intro == Intro::None => {
                    self.end_row(t)?;
                    set(self, V::AfterTuple);
                }
                b if is_token(b) => {
                    self.start_value();
                    set(self, V::Token);
                    return Ok(self.token(input));
                }
                _ => return Err(self.syntax(b, "a value")),
            },
            V::AfterValue => match b {
                b' ' | b'\n' | b'\r' | b'\t' => {}
                b',' => set(self, V::Value),
                b')' => {
                    self.end_row(t)?;
                    set(self, V::AfterTuple);
                }
                _ => return Err(self.syntax(b, ", or ) after a value")),
            },
            V::Token => {
                if is_token(b) {
                    return Ok(self.token(input));
                }
                if b == b'\'' {
                    // X'…', b'…', _charset'…'
                    if self.value.eq_ignore_ascii_case(b"x") {
                        self.value.clear();
                        set(self, V::HexStr);
                    } else if self.value.eq_ignore_ascii_case(b"b") {
                        self.value.clear();
                        set(self, V::BitStr);
                    } else if self.value.first() == Some(&b'_') && self.intro == Intro::None {
                        self.intro = intro_of(&self.value);
                        self.value.clear();
                        set(self, V::Str);
                    } else {
                        return Err(self.syntax(b, "a value"));
                    }
                    return Ok(1);
                }
                if self.value.first() == Some(&b'_') && self.intro == Intro::None {
                    // An introducer, then whitespace and the value.
                    self.intro = intro_of(&self.value);
                    self.value.clear();
                    set(self, V::Value);
                    return Ok(0);
                }
                self.end_token()?;
                set(self, V::AfterValue);
                return Ok(0);
            }
            V::Str => {
                // The bulk of the bytes: copy up to the next quote or backslash.
                let end = input
                    .iter()
                    .position(|&c| c == b'\'' || c == b'\\')
                    .unwrap_or(input.len());
                self.value.extend_from_slice(&input[..end]);
                if end < input.len() {
                    set(
                        self,
                        if input[end] == b'\\' {
                            V::StrEscape
                        } else {
                            V::StrQuote
                        },
                    );
                    return Ok(end + 1);
                }
                return Ok(end);
            }
            V::StrEscape => {
                match b {
                    b'0' => self.value.push(0),
                    b'b' => self.value.push(8),
                    b'n' => self.value.push(b'\n'),
                    b'r' => self.value.push(b'\r'),
                    b't' => self.value.push(b'\t'),
                    b'Z' => self.value.push(0x1a),
                    // \% and \_ keep their backslash (they matter in LIKE).
                    b'%' | b'_' => self.value.extend_from_slice(&[b'\\', b]),
                    other => self.value.push(other),
                }
                set(self, V::Str);
            }
            V::StrQuote => {
                if b == b'\'' {
                    self.value.push(b'\'');
                    set(self, V::Str);
                } else {
                    self.end_string();
                    set(self, V::AfterValue);
                    return Ok(0);
                }
            }
            V::HexStr => {
                let end = input.iter().position(|&c| c == b'\'');
                let digits = &input[..end.unwrap_or(input.len())];
                if let Some(&bad) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
                    return Err(self.syntax(bad, "a hex digit in X'…'"));
                }
                self.value.extend_from_slice(digits);
                if let Some(end) = end {
                    let mut text = self.take_buffer();
                    text.extend_from_slice(b"0x");
                    text.extend_from_slice(&self.value);
                    let digits = std::mem::replace(&mut self.value, text);
                    self.recycle(digits);
                    self.push_value(HEX);
                    set(self, V::AfterValue);
                    return Ok(end + 1);
                }
                return Ok(input.len());
            }
            V::BitStr => match b {
                b'0' | b'1' => self.value.push(b),
                b'\'' => {
                    let hex = bits_to_hex(&self.value);
                    self.value.clear();
                    self.value.extend_from_slice(hex.as_bytes());
                    self.push_value(HEX);
                    set(self, V::AfterValue);
                }
                _ => return Err(self.syntax(b, "a bit (0 or 1) in b'…'")),
            },
        }
        Ok(1)
    }

    /// Takes the token characters at the start of `input`.
    fn token(&mut self, input: &[u8]) -> usize {
        let n = input
            .iter()
            .position(|&c| !is_token(c))
            .unwrap_or(input.len());
        self.value.extend_from_slice(&input[..n]);
        n
    }

    fn start_value(&mut self) {
        if self.value.capacity() == 0
            && let Some(buf) = self.pool.pop()
        {
            self.value = buf;
        }
        self.value.clear();
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// The token in `value` is complete: NULL, a number or a hex literal.
    fn end_token(&mut self) -> Result<(), Error> {
        let token = &self.value;
        if token.eq_ignore_ascii_case(b"NULL") {
            self.value.clear();
            self.row.push(None);
            self.intro = Intro::None;
            return Ok(());
        }
        if token.len() >= 2 && (token.starts_with(b"0x") || token.starts_with(b"0X")) {
            if !token[2..].iter().all(u8::is_ascii_hexdigit) {
                return Err(self.bad_value());
            }
            self.value[1] = b'x';
            if self.value.len() == 2 {
                return Err(self.bad_value());
            }
            self.push_value(HEX);
            return Ok(());
        }
        if is_number(token) && self.intro == Intro::None {
            self.push_value(NUM);
            return Ok(());
        }
        Err(self.bad_value())
    }

    fn bad_value(&self) -> Error {
        let table = self.insert.as_ref().map_or("", |i| i.table.as_str());
        Error::Other(format!(
            "unexpected value {} in the rows of table {table:?} in the dump; its rows cannot be \
             sanitised",
            excerpt(&self.value)
        ))
    }

    /// A string literal is complete.
    fn end_string(&mut self) {
        let binary = self.intro == Intro::Binary;
        if binary || std::str::from_utf8(&self.value).is_err() {
            let bytes = std::mem::take(&mut self.value);
            let mut text = self.take_buffer();
            hex_text(&bytes, &mut text);
            self.value = text;
            self.recycle(bytes);
            self.push_value(HEX);
        } else {
            self.push_value(0);
        }
    }

    /// Moves `value` (valid UTF-8) into the row; `kind` is recorded for its
    /// column.
    fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= POOL_VALUE_MAX && self.pool.len() < BATCH_ROWS * 4 {
            self.pool.push(buf);
        }
    }

    fn push_value(&mut self, kind: u8) {
        let col = self.row.len();
        if let Some(i) = &mut self.insert
            && let Some(k) = i.kinds.get_mut(col)
        {
            *k |= kind;
        }
        let bytes = std::mem::take(&mut self.value);
        self.batch_bytes += bytes.len() + 8;
        // Every path to here checked the bytes (hex text, numbers, or a
        // string that passed from_utf8).
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        self.row.push(Some(text));
        self.intro = Intro::None;
    }

    fn end_row(&mut self, t: &mut impl Target) -> Result<(), Error> {
        let row = std::mem::take(&mut self.row);
        let insert = self.insert.as_ref().expect("inside an INSERT");
        if row.len() != insert.columns.len() {
            return Err(Error::Other(format!(
                "a row of table {:?} in the dump has {} values for its {} columns ({}); its \
                 rows cannot be sanitised",
                insert.table,
                row.len(),
                insert.columns.len(),
                insert.columns.join(", ")
            )));
        }
        self.batch.push(row);
        self.stats.rows_in += 1;
        if self.batch.len() >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES {
            self.flush_batch(t)?;
        }
        Ok(())
    }

    /// Sends the pending batch through the sanitiser and writes what comes
    /// back as one extended INSERT.
    fn flush_batch(&mut self, t: &mut impl Target) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let insert = self.insert.as_ref().expect("a batch belongs to an INSERT");
        let rows = t
            .transform_kinds(&insert.table, &insert.columns, &insert.kinds, &self.batch)
            .map_err(|e| e.context(format!("sanitising table {:?}", insert.table)))?;
        let width = insert.columns.len();
        check(&rows, width).map_err(|e| {
            e.context(format!(
                "the sanitiser's answer for table {:?} ({width} columns)",
                insert.table
            ))
        })?;
        self.stats.batches += 1;
        self.stats.rows_out += u64::from(rows.rows);
        if rows.rows > 0 {
            self.out.extend_from_slice(&insert.header);
            let mut column = 0;
            let mut row = 0;
            for value in values(&rows) {
                if column == 0 {
                    self.out
                        .extend_from_slice(if row == 0 { b"\n(" } else { b",\n(" });
                } else {
                    self.out.push(b',');
                }
                let kind = insert.kinds.get(column).copied().unwrap_or(0);
                encode_value(value, kind, &mut self.out);
                column += 1;
                if column == width {
                    self.out.push(b')');
                    column = 0;
                    row += 1;
                    if self.out.len() >= OUT_CHUNK {
                        t.write(&self.out)?;
                        self.out.clear();
                    }
                }
            }
            self.out.extend_from_slice(b";\n");
        }
        // Keep the buffers for the next batch.
        for mut row in self.batch.drain(..) {
            for v in row.drain(..).flatten() {
                if v.capacity() <= POOL_VALUE_MAX && self.pool.len() < BATCH_ROWS * 4 {
                    self.pool.push(v.into_bytes());
                }
            }
            if self.row_pool.len() < BATCH_ROWS {
                self.row_pool.push(row);
            }
        }
        self.batch_bytes = 0;
        self.drain_out(t)
    }

    fn emit(&mut self, bytes: &[u8], t: &mut impl Target) -> Result<(), Error> {
        if self.out.len() + bytes.len() > OUT_CHUNK && !self.out.is_empty() {
            t.write(&self.out)?;
            self.out.clear();
        }
        if bytes.len() >= OUT_CHUNK {
            return t.write(bytes);
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn drain_out(&mut self, t: &mut impl Target) -> Result<(), Error> {
        if self.out.len() >= OUT_CHUNK {
            t.write(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    fn syntax(&self, found: u8, expected: &str) -> Error {
        let table = self.insert.as_ref().map_or("", |i| i.table.as_str());
        Error::Other(format!(
            "unexpected {:?} where the dump should have {expected} in the rows of table \
             {table:?}; its rows cannot be sanitised",
            char::from(found)
        ))
    }
}

fn intro_of(token: &[u8]) -> Intro {
    if token.eq_ignore_ascii_case(b"_binary") {
        Intro::Binary
    } else {
        Intro::Other
    }
}

/// Writes one value as SQL (see the module documentation).
pub fn encode_value(value: Option<&str>, kind: u8, out: &mut Vec<u8>) {
    let Some(v) = value else {
        out.extend_from_slice(b"NULL");
        return;
    };
    if kind & HEX != 0 && is_hex_text(v) {
        if v.len() == 2 {
            out.extend_from_slice(b"X''");
        } else {
            out.extend_from_slice(v.as_bytes());
        }
        return;
    }
    if kind & NUM != 0 && is_number(v.as_bytes()) {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    quote(v.as_bytes(), out);
}

/// `bytes` as a single-quoted string literal with backslash escapes.
pub fn quote(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    out.push(b'\'');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\'' => b"\\'",
            0 => b"\\0",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0x1a => b"\\Z",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\'');
}

/// `0x` followed by hex digits (none: the empty binary string).
fn is_hex_text(v: &str) -> bool {
    v.strip_prefix("0x")
        .is_some_and(|d| d.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// A plain SQL number: `-12`, `3.50`, `.5`, `1.5e-7`.
pub fn is_number(t: &[u8]) -> bool {
    let t = t.strip_prefix(b"-").or(t.strip_prefix(b"+")).unwrap_or(t);
    let (mantissa, exponent) = match t.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &b""[..]),
    };
    let digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
        return false;
    }
    match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(b"-").or(e.strip_prefix(b"+")).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
}

/// `0x` and the bytes as upper-case hex digits (as mariadb-dump writes
/// them).
fn hex_text(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(2 + bytes.len() * 2);
    out.extend_from_slice(b"0x");
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// `b'0101'` bits as `0x` hex text, padded on the left to whole bytes.
fn bits_to_hex(bits: &[u8]) -> String {
    let pad = (8 - bits.len() % 8) % 8;
    let padded: Vec<u8> = std::iter::repeat_n(b'0', pad)
        .chain(bits.iter().copied())
        .collect();
    let bytes: Vec<u8> = padded
        .chunks(8)
        .map(|byte| byte.iter().fold(0u8, |acc, &b| (acc << 1) | (b - b'0')))
        .collect();
    let mut out = Vec::new();
    hex_text(&bytes, &mut out);
    String::from_utf8(out).expect("hex is ASCII")
}

/// What the start of a line holds.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    /// Not an INSERT statement.
    NotInsert,
    /// Could be one; more bytes needed.
    Incomplete,
    /// An INSERT whose header (up to and including VALUES) is `len` bytes.
    Insert {
        len: usize,
        table: String,
        columns: Option<Vec<String>>,
    },
    /// Looks like an INSERT but cannot be read.
    Bad(String),
}

const INSERT_FORMS: &[&[u8]] = &[b"INSERT INTO ", b"INSERT IGNORE INTO ", b"REPLACE INTO "];

fn starts_insert(line: &[u8]) -> bool {
    line.starts_with(b"INSERT") || line.starts_with(b"REPLACE")
}

/// Whether the line being collected (`line` + the next bytes) may start an
/// INSERT.
fn starts_insert_or_prefix(line: &[u8], next: &[u8]) -> bool {
    let mut head = [0u8; 7];
    let have = line.len().min(7);
    head[..have].copy_from_slice(&line[..have]);
    let more = (7 - have).min(next.len());
    head[have..have + more].copy_from_slice(&next[..more]);
    let head = &head[..have + more];
    [&b"INSERT"[..], b"REPLACE"].iter().any(|w| {
        let n = head.len().min(w.len());
        head[..n] == w[..n]
    })
}

/// Reads `INSERT INTO `t` [(`a`, …)] VALUES` at the start of `line`.
fn parse_header(line: &[u8]) -> Header {
    let Some(form) = INSERT_FORMS.iter().find(|f| line.starts_with(f)) else {
        if INSERT_FORMS
            .iter()
            .any(|f| f.starts_with(&line[..line.len().min(f.len())]))
        {
            return Header::Incomplete;
        }
        if starts_insert(line) {
            return Header::Bad(
                "only INSERT INTO, INSERT IGNORE INTO and REPLACE INTO are understood".into(),
            );
        }
        return Header::NotInsert;
    };
    let mut at = form.len();
    let Some((mut table, n)) = ident(&line[at..]) else {
        return incomplete_or(line, at, "the table name is not a `quoted` name");
    };
    at += n;
    if line.get(at) == Some(&b'.') {
        // `db`.`table`: the bare table name counts.
        let Some((bare, n)) = ident(&line[at + 1..]) else {
            return incomplete_or(line, at + 1, "the table name is not a `quoted` name");
        };
        table = bare;
        at += 1 + n;
    }
    at += spaces(&line[at..]);
    let mut columns = None;
    if line.get(at) == Some(&b'(') {
        at += 1;
        let mut list = Vec::new();
        loop {
            at += spaces(&line[at..]);
            let Some((name, n)) = ident(&line[at..]) else {
                return incomplete_or(line, at, "a column name is not a `quoted` name");
            };
            list.push(name);
            at += n;
            at += spaces(&line[at..]);
            match line.get(at) {
                Some(b',') => at += 1,
                Some(b')') => {
                    at += 1;
                    break;
                }
                Some(_) => return Header::Bad("unexpected text in the column list".into()),
                None => return Header::Incomplete,
            }
        }
        columns = Some(list);
        at += spaces(&line[at..]);
    }
    let rest = &line[at..];
    if rest.len() < 6 {
        return if b"VALUES".starts_with(rest) {
            Header::Incomplete
        } else {
            Header::Bad("VALUES does not follow the table name".into())
        };
    }
    if !rest.starts_with(b"VALUES") {
        return Header::Bad("VALUES does not follow the table name".into());
    }
    Header::Insert {
        len: at + 6,
        table,
        columns,
    }
}

fn incomplete_or(line: &[u8], at: usize, why: &str) -> Header {
    let rest = &line[at..];
    // An opening backquote without its end yet.
    if rest.is_empty() || (rest[0] == b'`' && !rest.ends_with(b"\n")) {
        Header::Incomplete
    } else {
        Header::Bad(why.into())
    }
}

fn spaces(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b == b' ').count()
}

/// A backquoted identifier at the start of `bytes`: the name and how many
/// bytes it took.
pub fn ident(bytes: &[u8]) -> Option<(String, usize)> {
    if bytes.first() != Some(&b'`') {
        return None;
    }
    let mut name = Vec::new();
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            if bytes.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            if i + 1 == bytes.len() {
                // Could be the first of a doubled backquote.
                return None;
            }
            return Some((String::from_utf8_lossy(&name).into_owned(), i + 1));
        }
        if bytes[i] == b'\n' {
            return None;
        }
        name.push(bytes[i]);
        i += 1;
    }
    None
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b.len()
        - b.iter()
            .rev()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
    &b[..n]
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// The start of `bytes`, for messages.
fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(80)];
    let text = String::from_utf8_lossy(trim_end(cut));
    if bytes.len() > 80 {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envsync_plugin_sdk::rows::pack;

    /// Records batches; transforms rows with `f` (None: unchanged).
    #[derive(Default)]
    struct Mock {
        out: Vec<u8>,
        writes: Vec<usize>,
        batches: Vec<(String, Vec<String>, Vec<Row>)>,
        f: Option<fn(&str, &mut Row) -> bool>,
        fail: bool,
        /// Answer with one value too few.
        damaged: bool,
    }

    impl Target for Mock {
        fn transform(
            &mut self,
            table: &str,
            columns: &[String],
            rows: &[Row],
        ) -> Result<RowBatch, Error> {
            if self.fail {
                return Err(Error::Other("rule broke".into()));
            }
            self.batches
                .push((table.to_string(), columns.to_vec(), rows.to_vec()));
            let mut out = rows.to_vec();
            if let Some(f) = self.f {
                out.retain_mut(|r| f(table, r));
            }
            let mut batch = pack(columns.len(), &out);
            if self.damaged {
                batch.ends.pop();
            }
            Ok(batch)
        }

        fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
            self.writes.push(bytes.len());
            self.out.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// Runs `dump` through a rewriter in chunks of `chunk` bytes.
    fn run(
        dump: &[u8],
        tables: Option<Vec<String>>,
        chunk: usize,
        mock: &mut Mock,
    ) -> Result<(), Error> {
        let mut rw = Rewriter::new("shop", tables);
        for piece in dump.chunks(chunk) {
            rw.feed(piece, mock)?;
        }
        rw.finish(mock)
    }

    fn rows_of(dump: &[u8]) -> Vec<Row> {
        let mut mock = Mock::default();
        run(dump, None, 1 << 20, &mut mock).unwrap();
        mock.batches.into_iter().flat_map(|b| b.2).collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    const CREATE: &str = "DROP TABLE IF EXISTS `c`;\n\
        CREATE TABLE `c` (\n  `id` int(11) NOT NULL,\n  `we``ird` text,\n  `b` blob,\n\
        \x20 `n` decimal(10,2),\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\n";

    #[test]
    fn values_are_parsed_with_mysql_quoting() {
        let dump = format!(
            "{CREATE}/*!40000 ALTER TABLE `c` DISABLE KEYS */;\n\
             INSERT INTO `c` VALUES\n\
             (1,'it\\'s \\\"q\\\" \\\\ back\\nnl\ttab é 😀 \\Z \\0 \\r \\b it''s \\% \\_ \\x',0x00FF10,-12.50),\n\
             (2,'NULL',NULL,1.5e-7),(3,'',X'cafe',+3),( 4 , _binary 'ab' , _binary'\\0' , .5 ),\n\
             (5,_utf8mb4'x',b'101',0),(6,'\\'',0xABC,-0);\n\
             /*!40000 ALTER TABLE `c` ENABLE KEYS */;\n"
        );
        let rows = rows_of(dump.as_bytes());
        assert_eq!(
            rows,
            vec![
                vec![
                    s("1"),
                    s("it's \"q\" \\ back\nnl\ttab é 😀 \x1a \0 \r \x08 it's \\% \\_ x"),
                    s("0x00FF10"),
                    s("-12.50")
                ],
                vec![s("2"), s("NULL"), None, s("1.5e-7")],
                vec![s("3"), s(""), s("0xcafe"), s("+3")],
                vec![s("4"), s("0x6162"), s("0x00"), s(".5")],
                vec![s("5"), s("x"), s("0x05"), s("0")],
                vec![s("6"), s("'"), s("0xABC"), s("-0")],
            ]
        );
    }

    #[test]
    fn unchanged_rows_round_trip_through_the_encoding() {
        let dump = format!(
            "{CREATE}INSERT INTO `c` VALUES (1,'a\\\\b\\'c\\nd\\0e\\Zf\\r',0x00FF,-1.5),\
             (2,'NULL',NULL,NULL),(3,_binary 'xyz',X'',7),(4,'ünï 😀',b'1',1e3);\n"
        );
        let mut mock = Mock::default();
        run(dump.as_bytes(), None, 3, &mut mock).unwrap();
        let out = String::from_utf8(mock.out.clone()).unwrap();
        // Lines other than the data are kept.
        assert!(out.starts_with(CREATE), "{out}");
        assert!(
            out.contains("INSERT INTO `c` VALUES\n(1,'a\\\\b\\'c\\nd\\0e\\Zf\\r',0x00FF,-1.5),\n"),
            "{out}"
        );
        assert!(out.contains("(2,'NULL',NULL,NULL)"), "{out}");
        assert!(out.contains("(3,0x78797A,X'',7)"), "{out}");
        assert!(out.contains("(4,'ünï 😀',0x01,1e3);\n"), "{out}");
        // Reading the output again gives the same rows.
        assert_eq!(rows_of(&mock.out), rows_of(dump.as_bytes()));
    }

    #[test]
    fn changed_values_are_quoted_unless_numbers_or_hex_in_such_columns() {
        let mut out = Vec::new();
        encode_value(Some("12"), NUM, &mut out);
        out.push(b' ');
        encode_value(Some("12"), 0, &mut out);
        out.push(b' ');
        encode_value(Some("1; DROP TABLE x"), NUM, &mut out);
        out.push(b' ');
        encode_value(Some("0xBEEF"), HEX, &mut out);
        out.push(b' ');
        encode_value(Some("0xBEEF"), 0, &mut out);
        out.push(b' ');
        encode_value(Some("0xZZ"), HEX, &mut out);
        out.push(b' ');
        encode_value(Some("masked"), HEX, &mut out);
        out.push(b' ');
        encode_value(None, NUM, &mut out);
        out.push(b' ');
        encode_value(Some("NULL"), 0, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "12 '12' '1; DROP TABLE x' 0xBEEF '0xBEEF' '0xZZ' 'masked' NULL 'NULL'"
        );
        for n in ["1", "-1", "+1.5", ".5", "5.", "1e10", "1.5E-7", "-0"] {
            assert!(is_number(n.as_bytes()), "{n}");
        }
        for n in [
            "", "-", ".", "e5", "1e", "1x", "0x10", "1.2.3", "--1", "1e+-2",
        ] {
            assert!(!is_number(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn the_sanitiser_changes_and_drops_rows() {
        let dump = format!(
            "{CREATE}INSERT INTO `c` VALUES (1,'alice@example.com',0x01,1.00),(2,'bob',NULL,2.00);\n\
             /*!40000 ALTER TABLE `c` ENABLE KEYS */;\n"
        );
        let mut mock = Mock {
            f: Some(|_, row| {
                if row[0].as_deref() == Some("2") {
                    return false;
                }
                row[1] = Some("x'; DROP TABLE c; --\\".into());
                row[2] = Some("0xFF".into());
                row[3] = Some("3".into());
                true
            }),
            ..Mock::default()
        };
        run(dump.as_bytes(), None, 1 << 20, &mut mock).unwrap();
        let out = String::from_utf8(mock.out).unwrap();
        assert!(
            out.contains(
                "INSERT INTO `c` VALUES\n(1,'x\\'; DROP TABLE c; --\\\\',0xFF,3);\n\
                 /*!40000 ALTER TABLE `c` ENABLE KEYS */;\n"
            ),
            "{out}"
        );
        assert!(!out.contains("alice") && !out.contains("bob"), "{out}");
        assert_eq!(mock.batches[0].1, ["id", "we`ird", "b", "n"]);

        // An answer with a value missing is refused, naming the table.
        let mut mock = Mock {
            damaged: true,
            ..Mock::default()
        };
        let e = run(dump.as_bytes(), None, 1 << 20, &mut mock).unwrap_err();
        assert!(
            e.message().contains("7 values for 2 rows of 4 columns")
                && e.message().contains("table \"c\""),
            "{}",
            e.message()
        );

        // All rows dropped: no INSERT at all.
        let mut mock = Mock {
            f: Some(|_, _| false),
            ..Mock::default()
        };
        run(dump.as_bytes(), None, 1 << 20, &mut mock).unwrap();
        let out = String::from_utf8(mock.out).unwrap();
        assert!(!out.contains("INSERT"), "{out}");
        assert!(out.ends_with("ENABLE KEYS */;\n"), "{out}");
    }

    #[test]
    fn column_lists_in_the_insert_win() {
        let dump = "INSERT INTO `t` (`a`, `b``c`) VALUES (1,'x');\n\
                    REPLACE INTO `t` (`a`,`b``c`) VALUES (2,'y');\n\
                    INSERT IGNORE INTO `shop`.`u` (`z`) VALUES (3);\n";
        let mut mock = Mock::default();
        run(dump.as_bytes(), None, 5, &mut mock).unwrap();
        let names: Vec<_> = mock
            .batches
            .iter()
            .map(|b| (b.0.as_str(), b.1.join("|"), b.2.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("t", "a|b`c".into(), 1),
                ("t", "a|b`c".into(), 1),
                ("u", "z".into(), 1)
            ]
        );
        let out = String::from_utf8(mock.out).unwrap();
        assert_eq!(
            out,
            "INSERT INTO `t` (`a`, `b``c`) VALUES\n(1,'x');\n\
             REPLACE INTO `t` (`a`,`b``c`) VALUES\n(2,'y');\n\
             INSERT IGNORE INTO `shop`.`u` (`z`) VALUES\n(3);\n"
        );
    }

    #[test]
    fn create_table_column_names() {
        let mut rw = Rewriter::new("shop", None);
        for line in CREATE.split_inclusive('\n') {
            rw.track(line.as_bytes());
        }
        let (table, columns) = rw.created.clone().unwrap();
        assert_eq!(table, "c");
        assert_eq!(columns, ["id", "we`ird", "b", "n"]);
        rw.track(b"CREATE TABLE IF NOT EXISTS `x``y` (\n");
        rw.track(b"  `a b` int,\n");
        rw.track(b"  KEY `k` (`a b`)\n");
        rw.track(b") ENGINE=InnoDB;\n");
        assert_eq!(
            rw.created.unwrap(),
            ("x`y".to_string(), vec!["a b".to_string()])
        );
    }

    #[test]
    fn other_tables_and_routines_pass_unchanged() {
        let dump = format!(
            "{CREATE}INSERT INTO `c` VALUES\n(1,'a',NULL,1),\n(2,'b',NULL,2);\n\
             INSERT INTO `other` (`a`, `b`) VALUES (1,'not parsed: \\' ( ;');\n\
             DELIMITER ;;\n\
             /*!50003 CREATE*/ /*!50003 TRIGGER `t` BEFORE INSERT ON `c` FOR EACH ROW\n\
             INSERT INTO `c` VALUES (NEW.id) */;;\n\
             DELIMITER ;\n\
             -- Dump completed\n"
        );
        let mut mock = Mock::default();
        run(dump.as_bytes(), Some(vec!["other".into()]), 7, &mut mock).unwrap();
        let expected = dump.replace("VALUES (1,'not", "VALUES\n(1,'not");
        assert_eq!(String::from_utf8(mock.out).unwrap(), expected);
        assert_eq!(mock.batches.len(), 1);
        assert_eq!(mock.batches[0].0, "other");

        // Not wanted at all: byte for byte the same, no call.
        let mut mock = Mock::default();
        run(
            dump.as_bytes(),
            Some(vec!["elsewhere.c".into()]),
            1 << 20,
            &mut mock,
        )
        .unwrap();
        assert_eq!(String::from_utf8(mock.out).unwrap(), dump);
        assert!(mock.batches.is_empty());
        // `db.table` of this database counts.
        let rw = Rewriter::new("shop", Some(vec!["shop.c".into()]));
        assert!(rw.wants("c") && !rw.wants("shop"));
    }

    #[test]
    fn long_statements_are_split_into_batches() {
        let mut dump = String::from("INSERT INTO `t` (`id`, `v`) VALUES ");
        let n = BATCH_ROWS * 2 + 10;
        for i in 0..n {
            if i > 0 {
                dump.push(',');
            }
            dump.push_str(&format!("({i},'{}')", "v".repeat(i % 50)));
        }
        dump.push_str(";\nINSERT INTO `t` (`id`, `v`) VALUES (-1,'last');\n-- end\n");
        for chunk in [1, 13, 4096, 1 << 20] {
            let mut mock = Mock::default();
            run(dump.as_bytes(), None, chunk, &mut mock).unwrap();
            let sizes: Vec<_> = mock.batches.iter().map(|b| b.2.len()).collect();
            assert_eq!(sizes, [BATCH_ROWS, BATCH_ROWS, 11], "chunk {chunk}");
            let out = String::from_utf8(mock.out.clone()).unwrap();
            assert_eq!(out.matches("INSERT INTO").count(), 3);
            assert!(out.ends_with("(-1,'last');\n-- end\n"));
            assert_eq!(rows_of(&mock.out).len(), n + 1);
            // Written in large chunks.
            let (last, rest) = mock.writes.split_last().unwrap();
            assert!(rest.iter().all(|&w| w >= OUT_CHUNK), "{:?}", mock.writes);
            assert!(*last > 0);
        }
        // A huge value ends its batch by size.
        let big = format!(
            "INSERT INTO `t` (`v`) VALUES ('{}'),('{}'),('x');\n",
            "a".repeat(BATCH_BYTES),
            "b".repeat(10)
        );
        let mut mock = Mock::default();
        run(big.as_bytes(), None, 1000, &mut mock).unwrap();
        let sizes: Vec<_> = mock.batches.iter().map(|b| b.2.len()).collect();
        assert_eq!(sizes, [1, 2]);
        assert_eq!(
            mock.out,
            big.replace("VALUES (", "VALUES\n(")
                .replace("'),('b", "');\nINSERT INTO `t` (`v`) VALUES\n('b")
                .replace("'),('x", "'),\n('x")
                .into_bytes()
        );
    }

    #[test]
    fn unreadable_or_cut_dumps_fail() {
        let cases = [
            ("INSERT INTO `t` (`a`) VALUES (1),(2", "truncated"),
            (
                "INSERT INTO `t` (`a`) VALUES (1,2);\n",
                "2 values for its 1 columns",
            ),
            ("INSERT INTO `t` VALUES (1);\n", "no column list"),
            ("INSERT INTO `t` (`a`) VALUES (NOW());\n", "unexpected"),
            ("INSERT INTO `t` (`a`) VALUES ('x' 'y');\n", "unexpected"),
            ("INSERT INTO `t` (`a`) VALUES (X'0G');\n", "hex digit"),
            ("INSERT DELAYED INTO `t` VALUES (1);\n", "INSERT statement"),
            ("INSERT INTO t VALUES (1);\n", "INSERT statement"),
            ("INSERT INTO `t` (`a`) VALUES 1;\n", "( to start a row"),
            ("INSERT INTO `t` (`a`) VALUES (1) (2);\n", ", or ;"),
        ];
        for (dump, expected) in cases {
            let mut mock = Mock::default();
            let e = run(dump.as_bytes(), None, 4, &mut mock).expect_err(dump);
            assert!(e.message().contains(expected), "{dump}: {}", e.message());
        }
        let mut mock = Mock {
            fail: true,
            ..Mock::default()
        };
        let e = run(b"INSERT INTO `t` (`a`) VALUES (1);\n", None, 64, &mut mock).unwrap_err();
        assert_eq!(e.message(), "sanitising table \"t\": rule broke");
        // A cut dump of a table that is not sanitised is left to the load.
        let mut mock = Mock::default();
        run(b"INSERT INTO `o` VALUES (1),(", Some(vec![]), 4, &mut mock).unwrap();
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    struct Null(u64);

    impl Target for Null {
        fn transform(&mut self, _: &str, c: &[String], rows: &[Row]) -> Result<RowBatch, Error> {
            Ok(envsync_plugin_sdk::rows::pack(c.len(), rows))
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
            self.0 += bytes.len() as u64;
            Ok(())
        }
    }

    /// `cargo test --release -p envsync-mysql -- --ignored --nocapture throughput`
    #[test]
    #[ignore]
    fn throughput() {
        let mut dump = Vec::new();
        for s in 0..200 {
            dump.extend_from_slice(b"INSERT INTO `t` (`id`, `email`, `note`, `b`, `n`) VALUES\n");
            for i in 0..2000 {
                if i > 0 {
                    dump.extend_from_slice(b",\n");
                }
                dump.extend_from_slice(
                    format!(
                        "({},'user{i}@example.com','some note with \\'quotes\\' and more text here',0x00FF10AB,{s}.25)",
                        s * 2000 + i
                    )
                    .as_bytes(),
                );
            }
            dump.extend_from_slice(b";\n");
        }
        let started = std::time::Instant::now();
        let mut rw = Rewriter::new("shop", None);
        let mut out = Null(0);
        for chunk in dump.chunks(256 * 1024) {
            rw.feed(chunk, &mut out).unwrap();
        }
        rw.finish(&mut out).unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{} MB in {secs:.2}s: {:.0} MB/s, {} rows",
            dump.len() / 1_000_000,
            dump.len() as f64 / secs / 1e6,
            rw.stats.rows_in
        );
    }
}

#[cfg(test)]
mod real_dump {
    use super::*;

    struct Identity(Vec<u8>);

    impl Target for Identity {
        fn transform(&mut self, _: &str, c: &[String], rows: &[Row]) -> Result<RowBatch, Error> {
            Ok(envsync_plugin_sdk::rows::pack(c.len(), rows))
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// Rewrites the dump in `$ENVSYNC_DUMP_IN` unchanged into
    /// `$ENVSYNC_DUMP_OUT` (for checking against a real server by hand).
    #[test]
    #[ignore]
    fn rewrite_a_real_dump() {
        let input = std::fs::read(std::env::var("ENVSYNC_DUMP_IN").unwrap()).unwrap();
        let mut rw = Rewriter::new("shop", None);
        let mut out = Identity(Vec::new());
        for chunk in input.chunks(65536) {
            rw.feed(chunk, &mut out).unwrap();
        }
        rw.finish(&mut out).unwrap();
        std::fs::write(std::env::var("ENVSYNC_DUMP_OUT").unwrap(), &out.0).unwrap();
        println!("{:?}", rw.stats);
    }
}
