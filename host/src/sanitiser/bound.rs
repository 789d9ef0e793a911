//! How much a sanitiser may answer for what it was given, and the hostcall
//! fuel that makes wasmtime refuse a larger answer while lifting it, before
//! the host has copied it. A sanitiser's answer lives in its own memory; a
//! list of strings (or the three lists of a row batch) can name one buffer
//! over and over, so without this a sanitiser capped at 64 MiB could make
//! the host copy gigabytes.

/// Room over twice the input for small batches: masks may lengthen values
/// (a fake e-mail for a short name).
const SLACK: usize = 1 << 20;
/// Room for the message of a typed error, which shares the fuel.
const ERROR_ROOM: usize = 64 << 10;
/// Fuel of the other calls (`describe`, `configure`, `uncovered`): their
/// answers are a name, a table list or a column list.
pub const OTHER_CALLS_FUEL: usize = 4 << 20;
/// Wasmtime's message when a lift runs out of hostcall fuel (pinned with
/// the wasmtime version; the host_limits suite fails if it changes).
const FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// The most an answer to one batch may hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnswerBound {
    /// Rows or documents: never more than came in.
    pub items: usize,
    /// Bytes of value text (rows) or of documents:
    /// max(2 × input, input + 1 MiB).
    pub bytes: usize,
}

impl AnswerBound {
    pub fn for_input(items: usize, bytes: usize) -> AnswerBound {
        AnswerBound {
            items,
            bytes: bytes.saturating_mul(2).max(bytes.saturating_add(SLACK)),
        }
    }

    /// Hostcall fuel of a `transform-rows` answer of `columns` columns: the
    /// text, 4 bytes per value end, the NULL bitmap and an error message.
    pub fn rows_fuel(&self, columns: usize) -> usize {
        let values = self.items.saturating_mul(columns);
        self.bytes
            .saturating_add(values.saturating_mul(size_of::<u32>()))
            .saturating_add(values.div_ceil(8))
            .saturating_add(ERROR_ROOM)
    }

    /// Hostcall fuel of a `transform-documents` answer: the documents' text
    /// and the host's `String` per document (what wasmtime charges for a
    /// list of strings), and an error message.
    pub fn documents_fuel(&self) -> usize {
        self.bytes
            .saturating_add(self.items.saturating_mul(size_of::<String>()))
            .saturating_add(ERROR_ROOM)
    }

    /// `at most 100 rows and 2.0 MiB of values`.
    pub fn describe(&self, items: &str, text: &str) -> String {
        format!(
            "at most {} {items} and {} of {text}",
            self.items,
            crate::step::human_size(self.bytes as u64)
        )
    }
}

/// Whether a guest call failed because it handed the host more data than
/// its hostcall fuel allowed.
pub fn fuel_exhausted(trap: &wasmtime::Error) -> bool {
    trap.chain()
        .any(|cause| cause.to_string().contains(FUEL_EXHAUSTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_bounded_by_their_input() {
        let small = AnswerBound::for_input(10, 1000);
        assert_eq!(
            small,
            AnswerBound {
                items: 10,
                bytes: 1000 + (1 << 20)
            }
        );
        let big = AnswerBound::for_input(4096, 8 << 20);
        assert_eq!(big.bytes, 16 << 20);
        assert_eq!(
            big.rows_fuel(3),
            (16 << 20) + 4096 * 3 * 4 + 4096 * 3 / 8 + ERROR_ROOM
        );
        assert_eq!(
            small.documents_fuel(),
            small.bytes + 10 * size_of::<String>() + ERROR_ROOM
        );
        assert_eq!(
            AnswerBound::for_input(usize::MAX, usize::MAX).rows_fuel(usize::MAX),
            usize::MAX
        );
        assert!(
            small
                .describe("rows", "values")
                .starts_with("at most 10 rows and 1.0")
        );
    }
}
