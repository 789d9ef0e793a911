//! Rows and packed row batches.
//!
//! Rows cross the host in a [`RowBatch`] (the contract's `row-batch`): one
//! buffer of text, the end offset of every value and a NULL bitmap, so a
//! batch of thousands of rows costs a handful of allocations instead of one
//! per value. [`RowBatchBuilder`] packs values as you produce them (no
//! per-value `String`), [`values`] reads them back as `&str`, and
//! [`pack`] / [`unpack`] convert from and to plain [`Row`]s where that is
//! simpler.
//!
//! ```
//! use envsync_plugin_sdk::rows::{RowBatchBuilder, unpack, values};
//! let mut b = RowBatchBuilder::new(2);
//! b.push(Some("1"));
//! b.push(None);
//! b.push(Some("2"));
//! b.push(Some("b@example.com"));
//! let batch = b.finish();
//! assert_eq!(batch.rows, 2);
//! let v: Vec<Option<&str>> = values(&batch).collect();
//! assert_eq!(v, [Some("1"), None, Some("2"), Some("b@example.com")]);
//! let rows = unpack(&batch, 2).unwrap();
//! assert_eq!(rows[1][1].as_deref(), Some("b@example.com"));
//! ```

use crate::{Error, RowBatch};

/// One row: the column values in order, `None` for SQL NULL.
pub type Row = Vec<Option<String>>;

/// Packs values, row after row, column after column.
#[derive(Debug)]
pub struct RowBatchBuilder {
    columns: usize,
    values: usize,
    data: Vec<u8>,
    ends: Vec<u32>,
    nulls: Vec<u8>,
}

impl RowBatchBuilder {
    /// A builder for rows of `columns` values.
    pub fn new(columns: usize) -> RowBatchBuilder {
        RowBatchBuilder {
            columns,
            values: 0,
            data: Vec::new(),
            ends: Vec::new(),
            nulls: Vec::new(),
        }
    }

    /// A builder with room for `values` values of `bytes` bytes of text in
    /// all (e.g. those of the batch being rewritten).
    pub fn with_capacity(columns: usize, values: usize, bytes: usize) -> RowBatchBuilder {
        RowBatchBuilder {
            columns,
            values: 0,
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(values),
            nulls: Vec::with_capacity(values.div_ceil(8)),
        }
    }

    /// Appends the next value (`None`: NULL).
    pub fn push(&mut self, value: Option<&str>) {
        match value {
            Some(text) => self.push_with(|buf| buf.extend_from_slice(text.as_bytes())),
            None => {
                self.push_with(|_| {});
                let i = self.values - 1;
                self.nulls[i / 8] |= 1 << (i % 8);
            }
        }
    }

    /// Appends the next value by writing its UTF-8 text straight into the
    /// batch's buffer (e.g. while decoding an escaped dump field). The
    /// writer must append valid UTF-8 only.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        if self.values.is_multiple_of(8) {
            self.nulls.push(0);
        }
        self.values += 1;
        self.ends.push(self.data.len() as u32);
    }

    /// Appends `count` values of `batch`, from value `first` on, as they
    /// are: their text in one copy, their offsets and NULL bits adjusted.
    /// Panics if the range or the batch's offsets are out of bounds (check
    /// a batch from elsewhere before, e.g. with [`check`]).
    pub fn push_run(&mut self, batch: &RowBatch, first: usize, count: usize) {
        if count == 0 {
            return;
        }
        let start = if first == 0 {
            0
        } else {
            batch.ends[first - 1] as usize
        };
        let end = batch.ends[first + count - 1] as usize;
        let base = self.data.len() as u32;
        self.data.extend_from_slice(&batch.data[start..end]);
        for (k, &e) in batch.ends[first..first + count].iter().enumerate() {
            let i = first + k;
            if self.values.is_multiple_of(8) {
                self.nulls.push(0);
            }
            if batch.nulls[i / 8] & (1 << (i % 8)) != 0 {
                self.nulls[self.values / 8] |= 1 << (self.values % 8);
            }
            self.values += 1;
            self.ends.push(base + (e - start as u32));
        }
    }

    /// Rows complete so far.
    pub fn rows(&self) -> usize {
        self.values.checked_div(self.columns).unwrap_or(0)
    }

    /// Bytes of text so far.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// The batch. Panics if the last row is incomplete (a plugin bug).
    pub fn finish(self) -> RowBatch {
        assert!(
            self.columns == 0 || self.values.is_multiple_of(self.columns),
            "a row batch ends inside a row: {} values for {} columns",
            self.values,
            self.columns
        );
        RowBatch {
            rows: self.rows() as u32,
            data: self.data,
            ends: self.ends,
            nulls: self.nulls,
        }
    }
}

/// Every value of `batch` in order (`None` for NULL). Values whose text is
/// not UTF-8 or out of range read as empty (the host checks batches before
/// handing them on, so that only happens with a hand-made batch).
pub fn values(batch: &RowBatch) -> impl Iterator<Item = Option<&str>> {
    // One UTF-8 check for the whole text (per value only if that fails).
    let whole = std::str::from_utf8(&batch.data).ok();
    let mut start = 0usize;
    batch.ends.iter().enumerate().map(move |(i, &end)| {
        let end = (end as usize).min(batch.data.len()).max(start);
        let range = start..end;
        start = end;
        let null = batch
            .nulls
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0);
        if null {
            return None;
        }
        Some(match whole {
            Some(text) => text.get(range).unwrap_or_default(),
            None => std::str::from_utf8(&batch.data[range]).unwrap_or_default(),
        })
    })
}

/// Checks that `batch` holds whole rows of `columns` values: offsets in
/// order and inside the text, a NULL bit for every value, and UTF-8 text
/// split only at character boundaries. Returns the text.
pub fn check(batch: &RowBatch, columns: usize) -> Result<&str, Error> {
    let bad = |why: String| Err(Error::Other(format!("a damaged row batch: {why}")));
    if batch.ends.len() as u64 != u64::from(batch.rows) * columns as u64 {
        return bad(format!(
            "{} values for {} rows of {columns} columns",
            batch.ends.len(),
            batch.rows
        ));
    }
    if batch.nulls.len() < batch.ends.len().div_ceil(8) {
        return bad("the NULL bitmap is too short".into());
    }
    let Ok(text) = std::str::from_utf8(&batch.data) else {
        return bad("the text is not UTF-8".into());
    };
    let mut start = 0u32;
    for &end in &batch.ends {
        if end < start || !text.is_char_boundary(end as usize) {
            return bad(format!("a value ends at {end}, after {start}"));
        }
        start = end;
    }
    Ok(text)
}

/// Packs `rows` of `columns` values each (the width is given, so an empty
/// batch has it too). Panics if a row has another length (a plugin bug).
pub fn pack(columns: usize, rows: &[Row]) -> RowBatch {
    let mut b = RowBatchBuilder::new(columns);
    for row in rows {
        assert_eq!(
            row.len(),
            columns,
            "a row of {} values for {columns} columns",
            row.len()
        );
        for value in row {
            b.push(value.as_deref());
        }
    }
    b.finish()
}

/// Unpacks `batch` into rows of `columns` values.
pub fn unpack(batch: &RowBatch, columns: usize) -> Result<Vec<Row>, Error> {
    if batch.ends.len() as u64 != batch.rows as u64 * columns as u64 {
        return Err(Error::Other(format!(
            "a row batch of {} values for {} rows of {columns} columns",
            batch.ends.len(),
            batch.rows
        )));
    }
    let mut rows = Vec::with_capacity(batch.rows as usize);
    let mut row = Vec::with_capacity(columns);
    for value in values(batch) {
        row.push(value.map(str::to_string));
        if row.len() == columns {
            rows.push(std::mem::replace(&mut row, Vec::with_capacity(columns)));
        }
    }
    Ok(rows)
}

/// Engine side: passes `rows` of `table` through the step's sanitiser,
/// packed on the way out; the answer stays packed (read it with
/// [`values`] after [`check`], or [`unpack`] it). Engines that decode
/// straight into a [`RowBatchBuilder`] call `sanitising::transform_rows`
/// with the batch instead.
#[cfg(feature = "engine")]
pub fn sanitise_rows(table: &str, columns: &[String], rows: &[Row]) -> Result<RowBatch, Error> {
    let batch = pack(columns.len(), rows);
    crate::bindings::envsync::plugin::sanitising::transform_rows(table, columns, &batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_pack_and_unpack() {
        let rows: Vec<Row> = vec![
            vec![Some("1".into()), None, Some(String::new())],
            vec![Some("zoë\t\\".into()), Some("x".into()), None],
        ];
        let batch = pack(3, &rows);
        assert_eq!(batch.rows, 2);
        assert_eq!(unpack(&batch, 3).unwrap(), rows);
        assert!(unpack(&batch, 2).is_err());
        assert_eq!(pack(4, &[]).rows, 0);
        assert_eq!(pack(4, &[]).ends.len(), 0);
        assert!(unpack(&pack(4, &[]), 4).unwrap().is_empty());
    }

    #[test]
    fn nine_values_need_two_bitmap_bytes() {
        let mut b = RowBatchBuilder::new(9);
        for i in 0..9 {
            b.push(if i == 8 { None } else { Some("v") });
        }
        let batch = b.finish();
        assert_eq!(batch.nulls, [0, 1]);
        assert_eq!(values(&batch).last().unwrap(), None);
    }

    #[test]
    fn runs_are_copied_with_their_offsets_and_nulls() {
        let rows: Vec<Row> = (0..5)
            .map(|i| vec![Some(format!("v{i}")), None, Some("ü".repeat(i))])
            .collect();
        let batch = pack(3, &rows);
        check(&batch, 3).unwrap();
        let mut b = RowBatchBuilder::new(3);
        b.push(Some("x"));
        b.push_run(&batch, 4, 5); // rest of row 1, then row 2
        b.push_run(&batch, 9, 0);
        let out = b.finish();
        check(&out, 3).unwrap();
        let got = unpack(&out, 3).unwrap();
        assert_eq!(got[0], [Some("x".to_string()), None, Some("ü".into())]);
        assert_eq!(got[1], rows[2]);
    }

    #[test]
    fn damaged_batches_are_refused_by_check() {
        let good = pack(2, &[vec![Some("aé".to_string()), None]]);
        assert_eq!(check(&good, 2).unwrap(), "aé");
        assert!(check(&good, 3).is_err());
        let mut split = good.clone();
        split.ends = vec![2, 3];
        assert!(check(&split, 2).is_err(), "inside é");
        let mut backwards = good.clone();
        backwards.ends = vec![3, 1];
        assert!(check(&backwards, 2).is_err());
        let mut past = good.clone();
        past.ends = vec![1, 9];
        assert!(check(&past, 2).is_err());
        let mut no_bits = good.clone();
        no_bits.nulls.clear();
        assert!(check(&no_bits, 2).is_err());
        let mut latin1 = good;
        latin1.data = vec![b'a', 0xe9, b'b'];
        assert!(check(&latin1, 2).is_err());
    }

    #[test]
    fn values_of_damaged_batches_read_as_empty() {
        // "é" split in two values, then a valid one.
        let batch = RowBatch {
            rows: 3,
            data: "éok".as_bytes().to_vec(),
            ends: vec![1, 2, 4],
            nulls: vec![0],
        };
        let v: Vec<_> = values(&batch).collect();
        assert_eq!(v, [Some(""), Some(""), Some("ok")]);
        let batch = RowBatch {
            rows: 2,
            data: b"a\xffb".to_vec(),
            ends: vec![1, 3],
            nulls: vec![0],
        };
        let v: Vec<_> = values(&batch).collect();
        assert_eq!(v, [Some("a"), Some("")]);
    }
}
