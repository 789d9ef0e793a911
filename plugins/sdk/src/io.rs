//! Reading and writing host streams when the plugin must see the bytes.
//!
//! Bulk data should move with [`splice`](crate::splice), which copies inside
//! the host: the bytes never enter the plugin's memory and cost one call.
//! When the plugin has to look at them (sniff a format, check how a dump
//! ends, parse rows), these helpers move them in large chunks
//! ([`CHUNK`], 256 KiB) so a stream costs few host calls:
//!
//! - [`read_all`], [`read_head`], [`write_all`]: whole small streams, heads;
//! - [`copy_through`]: a copy that shows every chunk to a closure on its way;
//! - [`Tail`]: the last bytes of a stream, kept while it flows;
//! - [`Reader`] and [`Writer`]: `std::io` adapters (`Read`/`BufRead` and
//!   buffered `Write`) for parsers and formatters written against std.
//!
//! ```no_run
//! use envsync_plugin_sdk::{ByteSink, ByteSource, Error, Tail, copy_through};
//!
//! /// Copies a dump into the artifact and checks that it ends as complete
//! /// dumps do.
//! fn store_dump(dump: &ByteSource, artifact: &ByteSink) -> Result<u64, Error> {
//!     let mut tail = Tail::new(64);
//!     let bytes = copy_through(dump, artifact, |chunk| {
//!         tail.push(chunk);
//!         Ok(())
//!     })?;
//!     if !tail.bytes().ends_with(b"COMMIT;\n") {
//!         return Err(Error::Other("the dump is incomplete".into()));
//!     }
//!     Ok(bytes)
//! }
//! # let _ = store_dump;
//! ```

use crate::{ByteSink, ByteSource, Error};
use std::collections::VecDeque;
use std::io;

/// Chunk size for reads and buffered writes: large, so a stream costs few
/// host calls (the contract asks for 64 KiB or more).
pub const CHUNK: usize = 256 * 1024;

/// Reads `source` to its end, refusing more than `limit` bytes (so a plugin
/// never buffers an unbounded stream by mistake).
pub fn read_all(source: &ByteSource, limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let chunk = source.read(CHUNK as u32)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        if out.len() + chunk.len() > limit {
            return Err(Error::Other(format!(
                "stream is larger than the {limit} bytes this plugin reads into memory"
            )));
        }
        out.extend_from_slice(&chunk);
    }
}

/// Reads up to `max` bytes from the start of `source` (fewer only when the
/// stream ends first); the rest of the stream stays unread.
pub fn read_head(source: &ByteSource, max: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while out.len() < max {
        let want = (max - out.len()).min(CHUNK);
        let chunk = source.read(want as u32)?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Writes all of `bytes` to `sink`, in chunks of [`CHUNK`].
pub fn write_all(sink: &ByteSink, bytes: &[u8]) -> Result<(), Error> {
    for chunk in bytes.chunks(CHUNK) {
        sink.write(chunk)?;
    }
    Ok(())
}

/// Copies `source` into `sink` until `source` ends, through the plugin in
/// chunks of [`CHUNK`], calling `inspect` on each chunk before it is
/// written; an error from `inspect` stops the copy. Returns the number of
/// bytes copied. Does not close `sink`. Prefer [`splice`](crate::splice)
/// when the plugin does not need to see the bytes.
pub fn copy_through(
    source: &ByteSource,
    sink: &ByteSink,
    mut inspect: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<u64, Error> {
    let mut total = 0u64;
    loop {
        let chunk = source.read(CHUNK as u32)?;
        if chunk.is_empty() {
            return Ok(total);
        }
        inspect(&chunk)?;
        sink.write(&chunk)?;
        total += chunk.len() as u64;
    }
}

/// The last bytes of a stream, kept while the stream flows by in chunks
/// (to check how a dump ends without holding all of it).
///
/// ```
/// use envsync_plugin_sdk::Tail;
///
/// let mut tail = Tail::new(8);
/// tail.push(b"BEGIN TRANSACTION;\n");
/// tail.push(b"COMMIT;\n");
/// assert_eq!(tail.bytes(), b"COMMIT;\n");
/// assert_eq!(tail.total(), 27);
/// ```
#[derive(Clone, Debug)]
pub struct Tail {
    keep: usize,
    bytes: VecDeque<u8>,
    total: u64,
}

impl Tail {
    /// Keeps the last `keep` bytes.
    pub fn new(keep: usize) -> Self {
        Tail {
            keep,
            bytes: VecDeque::with_capacity(keep),
            total: 0,
        }
    }

    /// Takes in the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.keep)..];
        let excess = (self.bytes.len() + chunk.len()).saturating_sub(self.keep);
        self.bytes.drain(..excess);
        self.bytes.extend(chunk);
    }

    /// The last bytes seen (at most `keep`).
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }

    /// How many bytes went by in all.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A host [`ByteSource`] as a buffered [`std::io::Read`] and
/// [`std::io::BufRead`]: reads [`CHUNK`] bytes per host call whatever the
/// caller asks for, so line-by-line parsing stays cheap.
///
/// ```no_run
/// use envsync_plugin_sdk::{ByteSource, Reader};
/// use std::io::BufRead;
///
/// fn count_inserts(script: &ByteSource) -> std::io::Result<usize> {
///     let mut n = 0;
///     for line in Reader::new(script).split(b'\n') {
///         n += usize::from(line?.starts_with(b"INSERT "));
///     }
///     Ok(n)
/// }
/// # let _ = count_inserts;
/// ```
pub struct Reader<'a> {
    source: &'a ByteSource,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from `source`.
    pub fn new(source: &'a ByteSource) -> Self {
        Reader {
            source,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl io::Read for Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = io::BufRead::fill_buf(self)?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for Reader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.buf.len() {
            self.buf = self.source.read(CHUNK as u32).map_err(to_io)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.buf.len());
    }
}

/// A host [`ByteSink`] as a buffered [`std::io::Write`]: bytes are sent in
/// chunks of [`CHUNK`]. Call [`Writer::finish`] (or `flush`) at the end;
/// dropping it unflushed loses the buffered rest.
///
/// ```no_run
/// use envsync_plugin_sdk::{ByteSink, Error, Writer};
/// use std::io::Write;
///
/// fn write_rows(sink: &ByteSink, rows: &[(u32, &str)]) -> Result<(), Error> {
///     let mut out = Writer::new(sink);
///     for (id, name) in rows {
///         writeln!(out, "{id}\t{name}").map_err(|e| Error::Io(e.to_string()))?;
///     }
///     out.finish()
/// }
/// # let _ = write_rows;
/// ```
pub struct Writer<'a> {
    sink: &'a ByteSink,
    buf: Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Writes to `sink`.
    pub fn new(sink: &'a ByteSink) -> Self {
        Writer {
            sink,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    /// Sends what is buffered; does not close the sink.
    pub fn finish(mut self) -> Result<(), Error> {
        self.send()
    }

    fn send(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            self.sink.write(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl io::Write for Writer<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > CHUNK {
            self.send().map_err(to_io)?;
        }
        if bytes.len() >= CHUNK {
            self.sink.write(bytes).map_err(to_io)?;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send().map_err(to_io)
    }
}

/// A host stream error as an `std::io::Error` (its message kept).
fn to_io(e: Error) -> io::Error {
    io::Error::other(e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_across_chunks() {
        let mut tail = Tail::new(5);
        assert_eq!(tail.bytes(), b"");
        tail.push(b"abc");
        assert_eq!(tail.bytes(), b"abc");
        tail.push(b"defg");
        assert_eq!(tail.bytes(), b"cdefg");
        tail.push(b"0123456789");
        assert_eq!(tail.bytes(), b"56789");
        tail.push(b"");
        assert_eq!(tail.bytes(), b"56789");
        assert_eq!(tail.total(), 17);
        let mut none = Tail::new(0);
        none.push(b"xyz");
        assert_eq!(none.bytes(), b"");
    }
}
