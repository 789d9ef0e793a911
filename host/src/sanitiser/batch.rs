//! Reading and checking packed row batches (`types.row-batch`) without
//! copying them: the host only validates the shape, scans the values and
//! moves the three lists between the engine's and the sanitiser's sandbox.

/// A validated view of a batch: `rows` rows of `columns` values.
#[derive(Debug)]
pub struct Packed<'a> {
    /// The values' text (checked once as a whole).
    text: &'a str,
    ends: &'a [u32],
    nulls: &'a [u8],
    pub columns: usize,
    pub rows: usize,
}

impl<'a> Packed<'a> {
    /// Checks that the lists describe whole rows of `columns` values of
    /// UTF-8 text; the error says what is wrong, for a message naming who
    /// sent the batch.
    pub fn new(
        rows: u32,
        data: &'a [u8],
        ends: &'a [u32],
        nulls: &'a [u8],
        columns: usize,
    ) -> Result<Packed<'a>, String> {
        if ends.len() as u64 != rows as u64 * columns as u64 {
            return Err(format!(
                "{} values for {rows} rows of {columns} columns",
                ends.len()
            ));
        }
        if columns == 0 {
            return if ends.is_empty() {
                Ok(Packed {
                    text: "",
                    ends,
                    nulls,
                    columns,
                    rows: 0,
                })
            } else {
                Err("values for a table without columns".into())
            };
        }
        if nulls.len() < ends.len().div_ceil(8) {
            return Err(format!(
                "the NULL bitmap has {} bytes for {} values",
                nulls.len(),
                ends.len()
            ));
        }
        // One UTF-8 check over all the text, then every value must start
        // and end on a character boundary.
        let mut start = 0u32;
        for (i, &end) in ends.iter().enumerate() {
            if end < start || end as usize > data.len() {
                return Err(format!(
                    "value {i} ends at {end}, outside {start}..={}",
                    data.len()
                ));
            }
            if !is_boundary(data, end as usize) {
                return Err(format!("value {i} is not UTF-8 text"));
            }
            start = end;
        }
        let text = std::str::from_utf8(&data[..start as usize]).map_err(|e| {
            let i = ends.partition_point(|&end| (end as usize) <= e.valid_up_to());
            format!("value {i} is not UTF-8 text")
        })?;
        Ok(Packed {
            text,
            ends,
            nulls,
            columns,
            rows: ends.len() / columns,
        })
    }

    /// The non-NULL values of at least `min_len` bytes, in order; the
    /// others are passed over by their length alone (a NULL has none).
    pub fn values_of_at_least(&self, min_len: usize) -> impl Iterator<Item = &'a str> + '_ {
        let min_len = min_len.max(1) as u32;
        let mut start = 0u32;
        self.ends.iter().enumerate().filter_map(move |(i, &end)| {
            let from = std::mem::replace(&mut start, end);
            if end - from < min_len || self.nulls[i / 8] & (1 << (i % 8)) != 0 {
                return None;
            }
            // In range and on character boundaries: checked in `new`.
            Some(&self.text[from as usize..end as usize])
        })
    }

    /// The text of all values together.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Bytes of text in the batch.
    pub fn bytes(&self) -> usize {
        self.ends.last().map_or(0, |&e| e as usize)
    }
}

/// Whether `at` is a character boundary of UTF-8 text `data` (the end, or
/// not a continuation byte).
fn is_boundary(data: &[u8], at: usize) -> bool {
    data.get(at).is_none_or(|&b| (b as i8) >= -0x40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_read_and_checked() {
        // Two rows of (id, email): ("1", NULL), ("22", "a@b").
        let data = b"122a@b";
        let ends = [1, 1, 3, 6];
        let nulls = [0b0000_0010];
        let p = Packed::new(2, data, &ends, &nulls, 2).unwrap();
        assert_eq!(p.rows, 2);
        let long: Vec<_> = p.values_of_at_least(2).collect();
        assert_eq!(long, ["22", "a@b"]);
        let all: Vec<_> = p.values_of_at_least(0).collect();
        assert_eq!(all, ["1", "22", "a@b"]);
        assert_eq!(p.bytes(), 6);

        assert!(
            Packed::new(2, data, &ends, &nulls, 3)
                .unwrap_err()
                .contains("4 values for 2 rows of 3 columns")
        );
        assert!(Packed::new(1, data, &ends, &nulls, 4).is_ok());
        assert!(
            Packed::new(2, data, &[1, 0, 3, 6], &nulls, 2)
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            Packed::new(2, data, &[1, 1, 3, 7], &nulls, 2)
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            Packed::new(2, data, &ends, &[], 2)
                .unwrap_err()
                .contains("bitmap")
        );
        assert!(
            Packed::new(1, &[0xff], &[1], &[0], 1)
                .unwrap_err()
                .contains("UTF-8")
        );
        // Valid text as a whole, but a value ends inside a character.
        let e = Packed::new(1, "aé".as_bytes(), &[2, 3], &[0], 2).unwrap_err();
        assert!(e.contains("value 0 is not UTF-8"), "{e}");
        let e = Packed::new(1, b"ab\xffc", &[2, 4], &[0], 2).unwrap_err();
        assert!(e.contains("value 1 is not UTF-8"), "{e}");
        assert_eq!(Packed::new(0, b"", &[], &[], 0).unwrap().rows, 0);
    }
}
