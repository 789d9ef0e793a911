//! `_bulk` requests: batching documents, and reading every item of the
//! answer (a 200 can hide failed items).

use serde_json::Value;

/// Largest request body, in bytes (a batch ends before it would pass it,
/// unless one document alone is larger).
pub const MAX_BYTES: usize = 5 << 20;
/// Most documents in one request.
pub const MAX_DOCS: usize = 5000;
/// How many failures an error message quotes.
pub const QUOTED: usize = 5;

/// One `index` action and its document, as the two NDJSON lines `_bulk`
/// takes.
#[derive(Clone, Debug)]
pub struct Item {
    pub index: String,
    pub id: String,
    lines: String,
}

impl Item {
    /// An `index` action putting `source` (JSON text) under `id` in `index`.
    pub fn new(index: &str, id: &str, source: &str) -> Item {
        let mut lines = String::with_capacity(source.len() + index.len() + id.len() + 40);
        lines.push_str("{\"index\":{\"_index\":");
        lines.push_str(&Value::from(index).to_string());
        lines.push_str(",\"_id\":");
        lines.push_str(&Value::from(id).to_string());
        lines.push_str("}}\n");
        lines.push_str(source.trim());
        lines.push('\n');
        Item {
            index: index.to_string(),
            id: id.to_string(),
            lines,
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }
}

/// Documents gathered for one `_bulk` request.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    bytes: usize,
}

impl Batch {
    /// True when `item` does not fit any more: send first.
    pub fn would_overflow(&self, item: &Item) -> bool {
        !self.items.is_empty()
            && (self.items.len() >= MAX_DOCS || self.bytes + item.len() > MAX_BYTES)
    }

    pub fn push(&mut self, item: Item) {
        self.bytes += item.len();
        self.items.push(item);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The request body.
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.bytes);
        for item in &self.items {
            body.extend_from_slice(item.lines.as_bytes());
        }
        body
    }

    /// A batch of the items at `positions` (to retry them).
    pub fn subset(&self, positions: &[usize]) -> Batch {
        let mut out = Batch::default();
        for &i in positions {
            out.push(self.items[i].clone());
        }
        out
    }
}

/// A failed item of a bulk answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub index: String,
    pub id: String,
    pub status: u64,
    pub kind: String,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}: {} {}: {}",
            self.index, self.id, self.status, self.kind, self.reason
        )
    }
}

/// What a bulk answer says about its items.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Items that failed for good.
    pub failed: Vec<Failure>,
    /// Positions of items refused with 429 (retry them).
    pub retry: Vec<usize>,
}

/// Reads every item of the answer to a batch of `sent` items.
pub fn check_response(answer: &Value, batch: &Batch) -> Result<Outcome, String> {
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("the _bulk answer has no items: {}", preview(answer)))?;
    if items.len() != batch.len() {
        return Err(format!(
            "the _bulk answer has {} items for {} documents sent",
            items.len(),
            batch.len()
        ));
    }
    let mut out = Outcome::default();
    for (i, item) in items.iter().enumerate() {
        // {"index": {...}} (or create/update/delete): the one value.
        let result = item
            .as_object()
            .and_then(|o| o.values().next())
            .ok_or_else(|| format!("bulk item {i} is malformed: {item}"))?;
        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
        let error = result.get("error");
        if error.is_none() && (200..300).contains(&status) {
            continue;
        }
        if status == 429 {
            out.retry.push(i);
            continue;
        }
        let (kind, reason) = match error {
            Some(Value::Object(e)) => (
                e.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_string(),
                e.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            Some(other) => ("error".to_string(), other.to_string()),
            None => ("error".to_string(), format!("status {status}")),
        };
        let sent = &batch.items[i];
        out.failed.push(Failure {
            index: result
                .get("_index")
                .and_then(Value::as_str)
                .unwrap_or(&sent.index)
                .to_string(),
            id: result
                .get("_id")
                .and_then(Value::as_str)
                .unwrap_or(&sent.id)
                .to_string(),
            status,
            kind,
            reason,
        });
    }
    Ok(out)
}

/// The error message for failed items: how many, and the first few.
pub fn failure_message(failures: &[Failure], total_failed: usize) -> String {
    let quoted: Vec<String> = failures
        .iter()
        .take(QUOTED)
        .map(|f| f.to_string())
        .collect();
    format!(
        "{total_failed} document(s) were refused by the target cluster; first failures: {}",
        quoted.join("; ")
    )
}

/// The start of a JSON value, for messages.
pub fn preview(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 500 {
        return s;
    }
    let mut end = 500;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(n: usize) -> Batch {
        let mut b = Batch::default();
        for i in 0..n {
            b.push(Item::new("idx", &i.to_string(), &format!("{{\"n\":{i}}}")));
        }
        b
    }

    #[test]
    fn bodies_are_ndjson_pairs() {
        let mut b = Batch::default();
        b.push(Item::new("a\"b", "x\ny", " {\"k\":1}\n"));
        let body = String::from_utf8(b.body()).unwrap();
        assert_eq!(
            body,
            "{\"index\":{\"_index\":\"a\\\"b\",\"_id\":\"x\\ny\"}}\n{\"k\":1}\n"
        );
        for line in body.lines() {
            serde_json::from_str::<Value>(line).unwrap();
        }
    }

    #[test]
    fn batches_end_at_the_document_and_byte_limits() {
        let mut b = Batch::default();
        let small = Item::new("i", "1", "{}");
        assert!(!b.would_overflow(&small));
        for _ in 0..MAX_DOCS {
            b.push(small.clone());
        }
        assert!(b.would_overflow(&small));

        let big = Item::new(
            "i",
            "2",
            &format!("{{\"s\":\"{}\"}}", "x".repeat(MAX_BYTES)),
        );
        let empty = Batch::default();
        assert!(
            !empty.would_overflow(&big),
            "a lone big document still goes"
        );
        let mut one = Batch::default();
        one.push(small);
        assert!(one.would_overflow(&big));
    }

    #[test]
    fn a_200_with_failed_items_is_a_failure() {
        let b = batch(4);
        let answer = json!({"errors": true, "items": [
            {"index": {"_index": "idx", "_id": "0", "status": 201, "result": "created"}},
            {"index": {"_index": "idx", "_id": "1", "status": 400, "error": {
                "type": "mapper_parsing_exception",
                "reason": "failed to parse field [n] of type [integer]"}}},
            {"index": {"_index": "idx", "_id": "2", "status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"_index": "idx", "_id": "3", "status": 400, "error": {
                "type": "strict_dynamic_mapping_exception", "reason": "not allowed"}}},
        ]});
        let out = check_response(&answer, &b).unwrap();
        assert_eq!(out.retry, [2]);
        assert_eq!(out.failed.len(), 2);
        assert_eq!(
            out.failed[0].to_string(),
            "idx/1: 400 mapper_parsing_exception: failed to parse field [n] of type [integer]"
        );
        let msg = failure_message(&out.failed, 2);
        assert!(msg.starts_with("2 document(s) were refused"), "{msg}");
        assert!(
            msg.contains("idx/3: 400 strict_dynamic_mapping_exception"),
            "{msg}"
        );
        assert_eq!(b.subset(&out.retry).items[0].id, "2");
    }

    #[test]
    fn all_good_and_malformed_answers() {
        let b = batch(1);
        let ok = json!({"errors": false, "items": [{"index": {"_id": "0", "status": 200}}]});
        assert_eq!(check_response(&ok, &b).unwrap(), Outcome::default());
        assert!(check_response(&json!({"error": "x"}), &b).is_err());
        assert!(
            check_response(&json!({"items": []}), &b)
                .unwrap_err()
                .contains("0 items for 1")
        );
    }

    #[test]
    fn only_the_first_failures_are_quoted() {
        let f: Vec<Failure> = (0..9)
            .map(|i| Failure {
                index: "i".into(),
                id: i.to_string(),
                status: 400,
                kind: "k".into(),
                reason: "r".into(),
            })
            .collect();
        let msg = failure_message(&f, 9);
        assert_eq!(msg.matches("i/").count(), QUOTED);
    }
}
