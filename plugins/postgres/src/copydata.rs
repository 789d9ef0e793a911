//! Rewriting the COPY blocks of a plain-format dump (`pg_dump -Fp`) through
//! a sanitiser, everything else passing unchanged. Pure logic over closures
//! (read a chunk, write bytes, transform a batch), so it is unit-tested
//! natively; `sanitised.rs` wires it to pg_dump, the host and psql.
//!
//! A data block in a plain dump is
//!
//! ```text
//! COPY public.users (id, email, "Full Name") FROM stdin;
//! 1\tann@example.com\tAnn\n
//! 2\t\N\tBob\tby\n
//! \.
//! ```
//!
//! one line per row, values separated by tabs, in PostgreSQL's text COPY
//! escaping (`\N` is NULL). Rows of the tables the plan names are decoded,
//! sent in batches, and the rows that come back are encoded again; other
//! tables' blocks are copied through by the chunk without looking at rows.

use envsync_plugin_sdk::rows::RowBatchBuilder;
use envsync_plugin_sdk::{Error, RowBatch};
use memchr::{memchr, memchr_iter, memmem, memrchr};
use std::borrow::Cow;

/// A batch goes to the sanitiser once it holds this many rows… (more than
/// the contract's minimum of 1,000: each call has a fixed cost)
pub const BATCH_ROWS: usize = 8192;
/// …or this many bytes of row text, whichever comes first (and at the end
/// of each table).
pub const BATCH_BYTES: usize = 1 << 20;
/// Output is sent in writes of at least this many bytes (except the last).
pub const OUT_CHUNK: usize = 256 * 1024;

const TERMINATOR: &[u8] = b"\\.\n";

/// The table and columns of a `COPY … FROM stdin;` line, unquoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyHeader {
    /// `schema.table` (or `table` when the line names no schema).
    pub table: String,
    /// The bare table name.
    pub bare: String,
    pub columns: Vec<String>,
}

/// Whether `line` is a COPY data header as pg_dump writes it (`COPY … FROM
/// stdin;`), whether or not it parses.
pub fn is_copy_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;")
}

/// Parses `COPY schema.table (col, …) FROM stdin;` (trailing newline
/// optional); names may be double-quoted (`""` inside for `"`). `None`
/// when the line is not such a header.
pub fn parse_copy_line(line: &[u8]) -> Option<CopyHeader> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_prefix("COPY ")?.strip_suffix(" FROM stdin;")?;
    let mut p = Parser { s: rest, at: 0 };
    let mut parts = vec![p.ident()?];
    while p.eat('.') {
        parts.push(p.ident()?);
    }
    if parts.len() > 2 {
        // database.schema.table is not something pg_dump writes.
        return None;
    }
    let bare = parts.last()?.clone();
    let table = parts.join(".");
    let mut columns = Vec::new();
    p.skip_spaces();
    if p.eat('(') {
        loop {
            p.skip_spaces();
            columns.push(p.ident()?);
            p.skip_spaces();
            if p.eat(')') {
                break;
            }
            if !p.eat(',') {
                return None;
            }
        }
    }
    p.skip_spaces();
    if p.at != p.s.len() {
        return None;
    }
    Some(CopyHeader {
        table,
        bare,
        columns,
    })
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.at..]
    }

    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.eat(' ') {}
    }

    /// A quoted identifier, or a bare one (up to `.`, `,`, `(`, `)`, space).
    fn ident(&mut self) -> Option<String> {
        if self.eat('"') {
            let mut out = String::new();
            loop {
                let rest = self.rest();
                let q = rest.find('"')?;
                out.push_str(&rest[..q]);
                self.at += q + 1;
                if !self.eat('"') {
                    return Some(out);
                }
                out.push('"');
            }
        }
        let rest = self.rest();
        let end = rest
            .find(['.', ',', '(', ')', ' ', '"'])
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        let name = rest[..end].to_string();
        self.at += end;
        Some(name)
    }
}

/// Decodes one value of a text COPY line. `\N` (the whole value) is NULL;
/// a value without escapes is borrowed.
pub fn decode_value(raw: &[u8]) -> Result<Option<Cow<'_, str>>, String> {
    if raw == b"\\N" {
        return Ok(None);
    }
    let text = match memchr(b'\\', raw) {
        None => std::str::from_utf8(raw).ok().map(Cow::Borrowed),
        Some(first) => String::from_utf8(unescape(raw, first)).ok().map(Cow::Owned),
    };
    text.map(Some)
        .ok_or_else(|| "a value is not valid UTF-8".to_string())
}

/// PostgreSQL's text COPY de-escaping (CopyReadAttributesText), from the
/// first backslash at `first`.
fn unescape(raw: &[u8], first: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut i = first;
    while i < raw.len() {
        let Some(off) = memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            break;
        };
        out.extend_from_slice(&raw[i..i + off]);
        i += off + 1;
        let Some(&c) = raw.get(i) else {
            // A lone backslash at the end: kept (PostgreSQL does the same).
            out.push(b'\\');
            break;
        };
        i += 1;
        match c {
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u8;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v);
            }
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            other => out.push(other),
        }
    }
    out
}

/// Decodes a data line (without its newline) into the next row of
/// `batch`, which has `columns` values per row. Values go straight into the
/// batch's buffer (no allocation per value); on error the batch may hold
/// part of the row and must be dropped. Lines without escapes are not
/// checked for UTF-8 here: [`Batch::take`] checks a whole batch at once.
pub fn decode_row_into(
    line: &[u8],
    columns: usize,
    batch: &mut RowBatchBuilder,
) -> Result<(), String> {
    let wrong_count = || {
        let found = memchr_iter(b'\t', line).count() + 1;
        format!("a row has {found} values for {columns} columns")
    };
    let escaped = memchr(b'\\', line).is_some();
    let mut start = 0;
    let mut pushed = 0;
    for tab in memchr_iter(b'\t', line).chain([line.len()]) {
        if pushed == columns {
            return Err(wrong_count());
        }
        let raw = &line[start..tab];
        start = tab + 1;
        pushed += 1;
        if !escaped {
            // The common case: no escapes and no NULLs in the line.
            batch.push_with(|buf| buf.extend_from_slice(raw));
            continue;
        }
        batch.push(decode_value(raw)?.as_deref());
    }
    if pushed != columns {
        return Err(wrong_count());
    }
    Ok(())
}

/// Appends one value (the bytes of UTF-8 text) in text COPY escaping.
/// Fails on a NUL character, which PostgreSQL text cannot hold.
fn encode_bytes(v: &[u8], out: &mut Vec<u8>) -> Result<(), NulError> {
    // One branch-free pass (vectorised): any backslash or control character?
    if !v
        .iter()
        .fold(false, |any, &b| any | (b < 0x20) | (b == b'\\'))
    {
        out.extend_from_slice(v);
        return Ok(());
    }
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x0b => b"\\v",
            0 => return Err(NulError),
            _ => continue,
        };
        out.extend_from_slice(&v[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&v[start..]);
    Ok(())
}

/// A value held a NUL character.
#[derive(Debug, PartialEq, Eq)]
pub struct NulError;

/// Rows collected for one call, packed as they are decoded; flushed at
/// [`BATCH_ROWS`] rows or [`BATCH_BYTES`] bytes.
#[derive(Debug)]
pub struct Batch {
    columns: usize,
    rows: RowBatchBuilder,
    /// Rows in `rows` (counted: the builder would divide to tell).
    count: usize,
    /// Lines of the block before this batch's first row.
    lines_before: u64,
}

impl Batch {
    pub fn new(columns: usize) -> Batch {
        Batch {
            columns,
            rows: RowBatchBuilder::new(columns),
            count: 0,
            lines_before: 0,
        }
    }

    /// Decodes `line` as the next row; `Ok(true)` when the batch is full.
    pub fn push_line(&mut self, line: &[u8]) -> Result<bool, RowError> {
        let row = self.lines_before + self.count as u64 + 1;
        decode_row_into(line, self.columns, &mut self.rows).map_err(|why| RowError { row, why })?;
        self.count += 1;
        Ok(self.count >= BATCH_ROWS || self.rows.bytes() >= BATCH_BYTES)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The packed rows, leaving the batch empty; fails naming the first
    /// row whose text is not UTF-8.
    pub fn take(&mut self) -> Result<RowBatch, RowError> {
        let batch = std::mem::replace(&mut self.rows, RowBatchBuilder::new(self.columns)).finish();
        self.count = 0;
        let first = self.lines_before + 1;
        self.lines_before += u64::from(batch.rows);
        if let Err(e) = std::str::from_utf8(&batch.data) {
            let value = batch
                .ends
                .partition_point(|&end| end as usize <= e.valid_up_to());
            return Err(RowError {
                row: first + (value / self.columns.max(1)) as u64,
                why: "a value is not valid UTF-8".into(),
            });
        }
        Ok(batch)
    }
}

/// A row of a data block that cannot be read: its number (1-based, within
/// the block) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct RowError {
    pub row: u64,
    pub why: String,
}

impl RowError {
    fn into_error(self, header: &CopyHeader) -> Error {
        Error::Other(format!(
            "row {} of table {} in the dump: {}",
            self.row, header.table, self.why
        ))
    }
}

/// Appends the rows of `batch` (`columns` values each; the caller checked
/// the count) as data lines. Values are copied as they are when no byte of
/// the batch needs escaping.
fn encode_batch(batch: &RowBatch, columns: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let data = &batch.data;
    let plain = !data
        .iter()
        .fold(false, |any, &b| any | (b < 0x20) | (b == b'\\'));
    if plain && columns > 0 && batch.nulls.iter().all(|&b| b == 0) {
        // The common case, without a branch per value for escapes or NULLs:
        // each value and a tab, the row's last tab turned into a newline.
        out.reserve(data.len() + batch.ends.len());
        let mut start = 0usize;
        for row in batch.ends.chunks_exact(columns) {
            for &end in row {
                let value = data.get(start..end as usize).ok_or(EncodeError::Shape)?;
                out.extend_from_slice(value);
                out.push(b'\t');
                start = end as usize;
            }
            if let Some(last) = out.last_mut() {
                *last = b'\n';
            }
        }
        return Ok(());
    }
    let mut start = 0usize;
    let mut column = 0usize;
    for (i, &end) in batch.ends.iter().enumerate() {
        let end = end as usize;
        if end < start || end > data.len() {
            return Err(EncodeError::Shape);
        }
        if column > 0 {
            out.push(b'\t');
        }
        let null = batch
            .nulls
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0);
        if null {
            out.extend_from_slice(b"\\N");
        } else if plain {
            out.extend_from_slice(&data[start..end]);
        } else {
            encode_bytes(&data[start..end], out).map_err(|NulError| EncodeError::Nul)?;
        }
        start = end;
        column += 1;
        if column == columns {
            out.push(b'\n');
            column = 0;
        }
    }
    Ok(())
}

/// Appends the COPY lines of `batch`, rows of `table` the sanitiser
/// returned with `columns` values each; refuses a batch of another shape.
pub fn encode_rows(
    table: &str,
    batch: &RowBatch,
    columns: usize,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    if batch.ends.len() as u64 != u64::from(batch.rows) * columns as u64 {
        return Err(Error::Other(format!(
            "the sanitiser returned {} values for {} rows of table {table} with {columns} columns",
            batch.ends.len(),
            batch.rows,
        )));
    }
    encode_batch(batch, columns, out).map_err(|e| {
        Error::Other(match e {
            EncodeError::Nul => format!(
                "the sanitiser returned a value with a NUL character for table {table}, which \
                 PostgreSQL cannot store"
            ),
            EncodeError::Shape => format!(
                "the sanitiser returned a damaged batch for table {table} (value offsets out of \
                 order)"
            ),
        })
    })
}

/// Why a batch could not be written as COPY text.
#[derive(Debug, PartialEq, Eq)]
enum EncodeError {
    /// A value holds a NUL character.
    Nul,
    /// The offsets run backwards or past the text.
    Shape,
}

/// What a rewrite did, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Tables whose rows went through the sanitiser.
    pub tables_sanitised: u64,
    /// Tables whose data blocks were copied through.
    pub tables_passed: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub batches: u64,
}

/// Whether the plan wants `header`'s rows: every table when `wanted` is
/// None, else when `schema.table` or the bare name is listed.
pub fn wants(wanted: Option<&[String]>, header: &CopyHeader) -> bool {
    match wanted {
        None => true,
        Some(list) => list.iter().any(|t| *t == header.table || *t == header.bare),
    }
}

/// Input lines from chunks; ranges index `buf` until the next call.
struct Lines<R> {
    read: R,
    buf: Vec<u8>,
    pos: usize,
    /// Where the newline search resumes (everything in pos..scan has none).
    scan: usize,
    /// A chunk read but not yet in `buf`, and where its unread part starts.
    next: Option<(Vec<u8>, usize)>,
    eof: bool,
    bytes_in: u64,
}

impl<R: FnMut() -> Result<Vec<u8>, Error>> Lines<R> {
    /// Brings more input into `buf`; false at end of input.
    fn refill(&mut self) -> Result<bool, Error> {
        let (chunk, from) = match self.next.take() {
            Some(next) => next,
            None if self.eof => return Ok(false),
            None => {
                let chunk = (self.read)()?;
                if chunk.is_empty() {
                    self.eof = true;
                    return Ok(false);
                }
                self.bytes_in += chunk.len() as u64;
                (chunk, 0)
            }
        };
        if self.pos == self.buf.len() {
            self.buf = chunk;
            self.pos = from;
            self.scan = from;
            return Ok(true);
        }
        // A line runs on into the chunk: only its end joins the rest of it
        // in `buf`; the chunk waits to become `buf` itself, uncopied.
        let rest = &chunk[from..];
        let cut = memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        self.buf.drain(..self.pos);
        self.scan -= self.pos;
        self.pos = 0;
        self.buf.extend_from_slice(&rest[..cut]);
        if cut < rest.len() {
            self.next = Some((chunk, from + cut));
        }
        Ok(true)
    }

    /// The next line with its newline (the last one may have none).
    fn next_line(&mut self) -> Result<Option<std::ops::Range<usize>>, Error> {
        loop {
            if let Some(i) = memchr(b'\n', &self.buf[self.scan..]) {
                let line = self.pos..self.scan + i + 1;
                self.pos = line.end;
                self.scan = line.end;
                return Ok(Some(line));
            }
            self.scan = self.buf.len();
            if !self.refill()? {
                if self.pos < self.buf.len() {
                    let line = self.pos..self.buf.len();
                    self.pos = line.end;
                    self.scan = line.end;
                    return Ok(Some(line));
                }
                return Ok(None);
            }
        }
    }
}

/// Buffered output in large writes.
struct Out<W> {
    write: W,
    buf: Vec<u8>,
    bytes_out: u64,
}

impl<W: FnMut(&[u8]) -> Result<(), Error>> Out<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(bytes);
        self.maybe_send()
    }

    fn maybe_send(&mut self) -> Result<(), Error> {
        if self.buf.len() >= OUT_CHUNK {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            (self.write)(&self.buf)?;
            self.bytes_out += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Copies a plain dump from `read` (chunks; empty at the end) to `write`,
/// passing the rows of the tables `wanted` names (all when None) through
/// `transform(table, columns, rows)` in batches. Fails on a damaged COPY
/// block (so nothing unsanitised slips through) and on any error of
/// `transform` or `write`.
/// Lines outside COPY data for which `keep` is false are dropped.
pub fn rewrite_filtered<R, W, T, K>(
    read: R,
    write: W,
    wanted: Option<&[String]>,
    mut transform: T,
    mut keep: K,
) -> Result<Stats, Error>
where
    R: FnMut() -> Result<Vec<u8>, Error>,
    W: FnMut(&[u8]) -> Result<(), Error>,
    T: FnMut(&str, &[String], RowBatch) -> Result<RowBatch, Error>,
    K: FnMut(&[u8]) -> bool,
{
    let mut input = Lines {
        read,
        buf: Vec::new(),
        pos: 0,
        scan: 0,
        next: None,
        eof: false,
        bytes_in: 0,
    };
    let mut out = Out {
        write,
        buf: Vec::with_capacity(OUT_CHUNK + 64 * 1024),
        bytes_out: 0,
    };
    let mut stats = Stats::default();
    let finder = memmem::Finder::new(b"\n\\.\n");
    while let Some(range) = input.next_line()? {
        let line = &input.buf[range];
        if !line.starts_with(b"COPY ") || !is_copy_line(line) {
            if keep(line) {
                out.put(line)?;
            }
            continue;
        }
        let header = parse_copy_line(line).ok_or_else(|| {
            Error::Other(format!(
                "cannot parse the COPY line {:?} of the dump, so its rows cannot be sanitised",
                String::from_utf8_lossy(line)
            ))
        })?;
        out.put(line)?;
        if wants(wanted, &header) && !header.columns.is_empty() {
            stats.tables_sanitised += 1;
            sanitise_block(&mut input, &mut out, &header, &mut transform, &mut stats)?;
        } else {
            stats.tables_passed += 1;
            pass_block(&mut input, &mut out, &finder, &header)?;
        }
    }
    out.send()?;
    stats.bytes_in = input.bytes_in;
    stats.bytes_out = out.bytes_out;
    Ok(stats)
}

fn cut_off(header: &CopyHeader) -> Error {
    Error::Other(format!(
        "the dump ended inside the data of table {} (no \\. line): pg_dump was cut off",
        header.table
    ))
}

/// Copies a data block through up to and including its `\.` line, in
/// large pieces (a data line can never be `\.`, since data escapes `\`).
/// Long lines go through in pieces too, so no line is held whole.
fn pass_block<R, W>(
    input: &mut Lines<R>,
    out: &mut Out<W>,
    finder: &memmem::Finder,
    header: &CopyHeader,
) -> Result<(), Error>
where
    R: FnMut() -> Result<Vec<u8>, Error>,
    W: FnMut(&[u8]) -> Result<(), Error>,
{
    let mut at_line_start = true;
    loop {
        let avail = &input.buf[input.pos..];
        if at_line_start {
            if avail.starts_with(TERMINATOR) || (input.eof && avail == b"\\.") {
                let n = avail.len().min(TERMINATOR.len());
                out.put(&avail[..n])?;
                input.pos += n;
                input.scan = input.pos;
                return Ok(());
            }
            if avail.len() < TERMINATOR.len() && !input.eof {
                // Too short to tell whether this is the end: read more.
                input.refill()?;
                continue;
            }
        }
        if let Some(i) = finder.find(avail) {
            let n = i + 1 + TERMINATOR.len();
            out.put(&avail[..n])?;
            input.pos += n;
            input.scan = input.pos;
            return Ok(());
        }
        // Everything up to the last newline is data; without a newline,
        // all of it is (the middle of a long line).
        let n = match memrchr(b'\n', avail) {
            Some(nl) => {
                at_line_start = true;
                nl + 1
            }
            None => {
                at_line_start &= avail.is_empty();
                avail.len()
            }
        };
        out.put(&avail[..n])?;
        input.pos += n;
        input.scan = input.pos;
        if !input.refill()? && input.pos == input.buf.len() {
            return Err(cut_off(header));
        }
    }
}

/// Decodes, sanitises and re-encodes a data block up to its `\.` line.
fn sanitise_block<R, W, T>(
    input: &mut Lines<R>,
    out: &mut Out<W>,
    header: &CopyHeader,
    transform: &mut T,
    stats: &mut Stats,
) -> Result<(), Error>
where
    R: FnMut() -> Result<Vec<u8>, Error>,
    W: FnMut(&[u8]) -> Result<(), Error>,
    T: FnMut(&str, &[String], RowBatch) -> Result<RowBatch, Error>,
{
    let columns = header.columns.len();
    let mut batch = Batch::new(columns);
    let mut flush = |batch: &mut Batch, out: &mut Out<W>, stats: &mut Stats| {
        if batch.is_empty() {
            return Ok(());
        }
        let rows = batch.take().map_err(|e| e.into_error(header))?;
        stats.rows_in += u64::from(rows.rows);
        stats.batches += 1;
        let kept = transform(&header.table, &header.columns, rows)?;
        stats.rows_out += u64::from(kept.rows);
        encode_rows(&header.table, &kept, columns, &mut out.buf)?;
        out.maybe_send()
    };
    loop {
        let Some(range) = input.next_line()? else {
            return Err(cut_off(header));
        };
        let line = &input.buf[range];
        if line == TERMINATOR || line == b"\\." {
            flush(&mut batch, out, stats)?;
            out.put(line)?;
            return Ok(());
        }
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(cut_off(header));
        };
        if batch.push_line(text).map_err(|e| e.into_error(header))? {
            flush(&mut batch, out, stats)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envsync_plugin_sdk::rows::{Row, pack, unpack};

    fn header(table: &str, bare: &str, columns: &[&str]) -> CopyHeader {
        CopyHeader {
            table: table.into(),
            bare: bare.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn parses_plain_copy_lines() {
        assert_eq!(
            parse_copy_line(b"COPY public.users (id, email, name) FROM stdin;\n"),
            Some(header("public.users", "users", &["id", "email", "name"]))
        );
        assert_eq!(
            parse_copy_line(b"COPY t (a) FROM stdin;"),
            Some(header("t", "t", &["a"]))
        );
        // A table without columns: pg_dump leaves two spaces.
        assert_eq!(
            parse_copy_line(b"COPY public.empty  FROM stdin;\n"),
            Some(header("public.empty", "empty", &[]))
        );
    }

    #[test]
    fn parses_quoted_names() {
        let h = parse_copy_line(
            "COPY \"My Schema\".\"odd.\"\"table\"\" name\" (\"Full Name\", \"a,b\", \"x(y)\", \"q\"\"\", \"ünï\", plain) FROM stdin;\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(h.table, "My Schema.odd.\"table\" name");
        assert_eq!(h.bare, "odd.\"table\" name");
        assert_eq!(
            h.columns,
            ["Full Name", "a,b", "x(y)", "q\"", "ünï", "plain"]
        );
        assert_eq!(
            parse_copy_line(b"COPY public.\"FROM stdin;\" (\"a\") FROM stdin;\n")
                .unwrap()
                .bare,
            "FROM stdin;"
        );
    }

    #[test]
    fn refuses_what_is_not_a_copy_header() {
        assert_eq!(parse_copy_line(b"COPY public.t (a) TO stdout;\n"), None);
        assert_eq!(parse_copy_line(b"COPY public.t (a FROM stdin;\n"), None);
        assert_eq!(
            parse_copy_line(b"COPY \"unterminated (a) FROM stdin;\n"),
            None
        );
        assert_eq!(parse_copy_line(b"COPY a.b.c (a) FROM stdin;\n"), None);
        assert_eq!(parse_copy_line(b"COPY public.t (a,) FROM stdin;\n"), None);
        assert!(!is_copy_line(b"-- COPY x FROM stdin;\n"));
        assert!(is_copy_line(b"COPY x FROM stdin;\n"));
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode_value(b"\\N").unwrap(), None);
        assert_eq!(decode_value(b"\\\\N").unwrap().unwrap(), "\\N");
        assert_eq!(decode_value(b"").unwrap().unwrap(), "");
        assert_eq!(
            decode_value(b"a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh")
                .unwrap()
                .unwrap(),
            "a\tb\nc\rd\\e\u{8}f\u{c}g\u{b}h"
        );
        assert_eq!(
            decode_value(b"\\101\\7\\0601").unwrap().unwrap(),
            "A\u{7}01"
        );
        assert_eq!(decode_value(b"\\x41\\x4a\\x7").unwrap().unwrap(), "AJ\u{7}");
        // \x without a hex digit is x; any other escaped char is itself.
        assert_eq!(decode_value(b"\\xg\\q\\.\\N").unwrap().unwrap(), "xgq.N");
        assert_eq!(decode_value(b"a\\").unwrap().unwrap(), "a\\");
        // UTF-8 from octal escapes.
        assert_eq!(decode_value(b"\\303\\251").unwrap().unwrap(), "é");
        assert!(decode_value(b"\\377").is_err());
    }

    #[test]
    fn round_trips_awkward_values() {
        let values = [
            Some("plain".to_string()),
            None,
            Some("\\N".into()),
            Some("".into()),
            Some("tab\there".into()),
            Some("multi\nline\r\nvalue".into()),
            Some("back\\slash\\".into()),
            Some("\\.".into()),
            Some("ünïcødé ✓ 𝄞".into()),
            Some("\u{8}\u{b}\u{c}\u{1}".into()),
        ];
        let mut line = Vec::new();
        encode_batch(
            &pack(values.len(), &[values.to_vec()]),
            values.len(),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
        // Plain batches are copied as they are, NULLs still written as \N.
        let mut plain = Vec::new();
        let rows = [
            vec![Some("a b".to_string()), None],
            vec![Some("ü".into()), Some("".into())],
        ];
        encode_batch(&pack(2, &rows), 2, &mut plain).unwrap();
        assert_eq!(plain, "a b\t\\N\nü\t\n".as_bytes());
        let nul = pack(1, &[vec![Some("a\0b".to_string())]]);
        assert_eq!(
            encode_batch(&nul, 1, &mut Vec::new()),
            Err(EncodeError::Nul)
        );
        let mut backwards = pack(2, &[vec![Some("ab".to_string()), Some("c".into())]]);
        backwards.ends = vec![2, 1];
        assert_eq!(
            encode_batch(&backwards, 2, &mut Vec::new()),
            Err(EncodeError::Shape)
        );
        let mut batch = RowBatchBuilder::new(values.len());
        decode_row_into(&line[..line.len() - 1], values.len(), &mut batch).unwrap();
        assert_eq!(unpack(&batch.finish(), values.len()).unwrap(), [values]);
        let mut batch = RowBatchBuilder::new(3);
        assert!(
            decode_row_into(b"a\tb", 3, &mut batch)
                .unwrap_err()
                .contains("2 values for 3")
        );
        assert!(
            decode_row_into(b"a\tb\tc\td", 3, &mut batch)
                .unwrap_err()
                .contains("4 values for 3")
        );
        assert!(
            decode_row_into(b"a\t\\xff", 2, &mut batch)
                .unwrap_err()
                .contains("UTF-8")
        );
        // An escaped line is checked value by value (its unescaped bytes
        // are new); a plain one when its batch is taken (Batch::take).
        assert!(
            decode_row_into(b"\\N\t\xff", 2, &mut batch)
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    /// Runs `rewrite` over `input` cut into `chunk`-byte reads.
    fn run(
        input: &[u8],
        chunk: usize,
        wanted: Option<&[String]>,
        mut transform: impl FnMut(&str, &[String], Vec<Row>) -> Result<Vec<Row>, Error>,
    ) -> Result<(Vec<u8>, Stats, Vec<usize>), Error> {
        // The tests speak rows; the rewrite speaks packed batches.
        let transform = |table: &str, columns: &[String], batch: RowBatch| {
            let rows = unpack(&batch, columns.len())?;
            let out = transform(table, columns, rows)?;
            // Packed at the rows' own width, so a reshaped answer reaches
            // the rewrite as the damaged batch it would be.
            let mut packed = RowBatchBuilder::new(out.first().map_or(columns.len(), Vec::len));
            for value in out.iter().flatten() {
                packed.push(value.as_deref());
            }
            Ok(packed.finish())
        };
        let mut chunks = input.chunks(chunk).map(<[u8]>::to_vec);
        let mut out = Vec::new();
        let mut writes = Vec::new();
        let stats = rewrite_filtered(
            || Ok(chunks.next().unwrap_or_default()),
            |b| {
                writes.push(b.len());
                out.extend_from_slice(b);
                Ok(())
            },
            wanted,
            transform,
            |_| true,
        )?;
        Ok((out, stats, writes))
    }

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\
        CREATE TABLE public.users (id int, email text);\n\
        COPY public.users (id, email) FROM stdin;\n\
        1\tann@example.com\n2\t\\N\n3\tx\\ty\\\\z\n\\.\n\n\
        COPY public.\"Other T\" (a) FROM stdin;\n\
        secret\n\\N\n\\.\n\
        COPY public.empty (a) FROM stdin;\n\\.\n\
        \\unrestrict abc\n";

    fn mask(_: &str, _: &[String], rows: Vec<Row>) -> Result<Vec<Row>, Error> {
        Ok(rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| v.map(|s| format!("<{}>", s.len())))
                    .collect()
            })
            .collect())
    }

    #[test]
    fn rewrites_only_copy_data() {
        for chunk in [1, 2, 3, 7, 64, 1 << 20] {
            let (out, stats, _) = run(DUMP.as_bytes(), chunk, None, mask).unwrap();
            let expected = DUMP
                .replace(
                    "1\tann@example.com\n2\t\\N\n3\tx\\ty\\\\z\n",
                    "<1>\t<15>\n<1>\t\\N\n<1>\t<5>\n",
                )
                .replace("secret\n\\N\n", "<6>\n\\N\n");
            assert_eq!(String::from_utf8(out).unwrap(), expected, "chunk {chunk}");
            assert_eq!(stats.tables_sanitised, 3);
            assert_eq!(stats.rows_in, 5);
            assert_eq!(stats.bytes_in, DUMP.len() as u64);
        }
    }

    #[test]
    fn passes_tables_the_plan_does_not_name() {
        let wanted = vec!["users".to_string()];
        for chunk in [1, 2, 5, 1 << 20] {
            let mut seen = Vec::new();
            let (out, stats, _) = run(DUMP.as_bytes(), chunk, Some(&wanted), |t, c, rows| {
                seen.push((t.to_string(), c.to_vec(), rows.len()));
                mask(t, c, rows)
            })
            .unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(out.contains("secret\n\\N\n\\.\n"), "{out}");
            assert!(!out.contains("ann@"));
            assert_eq!(
                seen,
                [(
                    "public.users".to_string(),
                    vec!["id".to_string(), "email".to_string()],
                    3
                )]
            );
            assert_eq!(stats.tables_passed, 2);
        }
        let wanted = vec!["public.Other T".to_string()];
        let (out, _, _) = run(DUMP.as_bytes(), 4, Some(&wanted), mask).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("ann@example.com") && out.contains("<6>\n"));
    }

    #[test]
    fn filters_lines_outside_copy_data() {
        let dump =
            "\\restrict k\nSET x;\nCOPY t (a) FROM stdin;\n\\restrict k\n\\.\n\\unrestrict k\n";
        let mut out = Vec::new();
        let mut chunks = dump.as_bytes().chunks(3).map(<[u8]>::to_vec);
        rewrite_filtered(
            || Ok(chunks.next().unwrap_or_default()),
            |b| {
                out.extend_from_slice(b);
                Ok(())
            },
            Some(&[]),
            |_, _, _| unreachable!(),
            |line| !line.starts_with(b"\\"),
        )
        .unwrap();
        // Data lines are never filtered (this one is not even valid data).
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SET x;\nCOPY t (a) FROM stdin;\n\\restrict k\n\\.\n"
        );
    }

    #[test]
    fn dropped_rows_and_errors() {
        let (out, stats, _) = run(DUMP.as_bytes(), 16, None, |_, _, _| Ok(vec![])).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("COPY public.users (id, email) FROM stdin;\n\\.\n"));
        assert_eq!(stats.rows_out, 0);
        let e = run(DUMP.as_bytes(), 16, None, |_, _, _| {
            Err(Error::Other("rules broke".into()))
        })
        .unwrap_err();
        assert_eq!(e.message(), "rules broke");
        let e = run(DUMP.as_bytes(), 16, None, |_, _, _| Ok(vec![vec![None]])).unwrap_err();
        assert!(
            e.message()
                .contains("1 values for 1 rows of table public.users with 2 columns"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn damaged_blocks_fail() {
        let cut = "COPY public.t (a, b) FROM stdin;\n1\t2\n3\t4";
        for wanted in [None, Some(&[][..])] {
            let e = run(cut.as_bytes(), 5, wanted, mask).unwrap_err();
            assert!(
                e.message().contains("pg_dump was cut off"),
                "{}",
                e.message()
            );
        }
        let short = "COPY public.t (a, b) FROM stdin;\n1\n\\.\n";
        let e = run(short.as_bytes(), 5, None, mask).unwrap_err();
        assert!(e.message().contains("row 1 of table public.t"));
        let odd = "COPY public.\"t (a) FROM stdin;\n1\n\\.\n";
        assert!(run(odd.as_bytes(), 5, None, mask).is_err());
        // The last line may lack its newline.
        let end = "COPY public.t (a) FROM stdin;\n1\n\\.";
        for wanted in [None, Some(&[][..])] {
            let (out, _, _) = run(end.as_bytes(), 3, wanted, |_, _, r| Ok(r)).unwrap();
            assert_eq!(out, end.as_bytes());
        }
    }

    #[test]
    fn batches_at_the_row_and_byte_limits() {
        let mut dump = String::from("COPY public.t (a) FROM stdin;\n");
        let rows = 2 * BATCH_ROWS + 1;
        for i in 0..rows {
            dump.push_str(&format!("{i}\n"));
        }
        dump.push_str("\\.\n");
        let mut sizes = Vec::new();
        let (out, stats, writes) = run(dump.as_bytes(), 4096, None, |_, _, r| {
            sizes.push(r.len());
            Ok(r)
        })
        .unwrap();
        assert_eq!(out, dump.as_bytes());
        assert_eq!(sizes, [BATCH_ROWS, BATCH_ROWS, 1]);
        assert_eq!(stats.batches, 3);
        assert_eq!(writes.len(), 1, "small output goes in one write");

        // 300 KiB values: a batch is full after 4 rows (1 MiB).
        let big = "x".repeat(300 * 1024);
        let mut dump = String::from("COPY public.t (a) FROM stdin;\n");
        for _ in 0..9 {
            dump.push_str(&big);
            dump.push('\n');
        }
        dump.push_str("\\.\n");
        let mut sizes = Vec::new();
        let (out, _, writes) = run(dump.as_bytes(), 100_000, None, |_, _, r| {
            sizes.push(r.len());
            Ok(r)
        })
        .unwrap();
        assert_eq!(out, dump.as_bytes());
        assert_eq!(sizes, [4, 4, 1]);
        assert!(writes[..writes.len() - 1].iter().all(|w| *w >= OUT_CHUNK));
    }

    #[test]
    fn long_lines_pass_through_in_pieces() {
        let big = "y".repeat(3 * 1024 * 1024);
        let dump = format!("COPY public.t (a) FROM stdin;\n{big}\n\\\\.x\n{big}\n\\.\nSELECT 1;\n");
        let wanted: Vec<String> = vec![];
        for chunk in [1, 2, 3, 4, 100_000] {
            let input = if chunk < 100 {
                &dump[dump.len() - 40..]
            } else {
                &dump[..]
            };
            let input = if chunk < 100 {
                format!("COPY public.t (a) FROM stdin;\n{input}")
            } else {
                input.to_string()
            };
            let (out, stats, writes) = run(input.as_bytes(), chunk, Some(&wanted), mask).unwrap();
            assert_eq!(out, input.as_bytes(), "chunk {chunk}");
            assert_eq!(stats.tables_passed, 1);
            if chunk == 100_000 {
                // Pieces went out before each long line was complete.
                assert!(writes.len() > 20, "{}", writes.len());
            }
        }
    }

    #[test]
    fn batch_push_reports_full() {
        let mut b = Batch::new(1);
        for _ in 0..BATCH_ROWS - 1 {
            assert!(!b.push_line(b"1").unwrap());
        }
        assert!(b.push_line(b"1").unwrap());
        assert_eq!(b.take().unwrap().rows as usize, BATCH_ROWS);
        assert!(b.is_empty());
        assert!(b.push_line(&vec![b'x'; BATCH_BYTES]).unwrap());
        b.take().unwrap();
        // Rows are numbered across batches of the block; bad UTF-8 without
        // escapes is found when the batch is taken.
        assert!(!b.push_line(b"ok").unwrap());
        assert!(!b.push_line(b"\xff").unwrap());
        assert_eq!(
            b.take().unwrap_err(),
            (RowError {
                row: BATCH_ROWS as u64 + 3,
                why: "a value is not valid UTF-8".into()
            })
        );
        assert_eq!(b.push_line(b"a\tb").unwrap_err().row, BATCH_ROWS as u64 + 4);
    }
}
