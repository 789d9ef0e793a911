//! Paths inside JSON values, for `json = { ... }` column rules and
//! `[documents.INDEX]`: `email` (a top-level key), `address.street` (nested
//! keys), `tags[]` (every element of an array), `orders[].email` (a key of
//! every element). A path that is not there is skipped.
//!
//! The action at the end of a path applies to a string as to a column
//! value; `null` makes it JSON null, `keep` leaves it; numbers, booleans,
//! objects and arrays are masked as their JSON text and become strings.
//! JSON null stays null.

use crate::mask::{Keyed, apply};
use crate::rules::Action;
use serde_json::Value;

/// One step of a path: a key (none for a leading `[]`) then `arrays` times
/// "every element".
#[derive(Debug, Clone, PartialEq)]
struct Step {
    key: Option<String>,
    arrays: usize,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

impl JsonPath {
    /// Parses `a.b[].c`.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        if text.is_empty() {
            return Err("empty JSON path".into());
        }
        let mut steps = Vec::new();
        for (i, part) in text.split('.').enumerate() {
            let key_end = part.find('[').unwrap_or(part.len());
            let key = &part[..key_end];
            let mut rest = &part[key_end..];
            let mut arrays = 0;
            while let Some(r) = rest.strip_prefix("[]") {
                arrays += 1;
                rest = r;
            }
            if !rest.is_empty() {
                return Err(format!(
                    "JSON path {text:?}: only `[]` (every element) may follow a key, found {rest:?}"
                ));
            }
            if key.is_empty() && (arrays == 0 || i > 0) {
                return Err(format!("JSON path {text:?} has an empty key"));
            }
            steps.push(Step {
                key: (!key.is_empty()).then(|| key.to_string()),
                arrays,
            });
        }
        Ok(JsonPath {
            text: text.to_string(),
            steps,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Applies every `(path, action)` to `value`.
pub fn apply_paths<K: Keyed + ?Sized>(value: &mut Value, paths: &[(JsonPath, Action)], keyed: &K) {
    for (path, action) in paths {
        walk(value, &path.steps, action, keyed);
    }
}

fn walk<K: Keyed + ?Sized>(value: &mut Value, steps: &[Step], action: &Action, keyed: &K) {
    let Some((step, rest)) = steps.split_first() else {
        leaf(value, action, keyed);
        return;
    };
    let target = match &step.key {
        Some(key) => match value {
            Value::Object(map) => match map.get_mut(key) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        },
        None => value,
    };
    elements(target, step.arrays, rest, action, keyed);
}

fn elements<K: Keyed + ?Sized>(
    value: &mut Value,
    arrays: usize,
    rest: &[Step],
    action: &Action,
    keyed: &K,
) {
    if arrays == 0 {
        walk(value, rest, action, keyed);
    } else if let Value::Array(items) = value {
        for item in items {
            elements(item, arrays - 1, rest, action, keyed);
        }
    }
}

fn leaf<K: Keyed + ?Sized>(value: &mut Value, action: &Action, keyed: &K) {
    match (action, &mut *value) {
        (Action::Keep, _) | (_, Value::Null) => {}
        (Action::Null, _) => *value = Value::Null,
        (_, Value::String(s)) => {
            if !apply(action, false, s, keyed) {
                *value = Value::Null;
            }
        }
        (_, other) => {
            let mut text = other.to_string();
            *value = if apply(action, false, &mut text, keyed) {
                Value::String(text)
            } else {
                Value::Null
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::tests::test_keyed;
    use serde_json::json;

    fn run(doc: Value, rules: &[(&str, Action)]) -> Value {
        let paths: Vec<_> = rules
            .iter()
            .map(|(p, a)| (JsonPath::parse(p).unwrap(), a.clone()))
            .collect();
        let mut doc = doc;
        apply_paths(&mut doc, &paths, &test_keyed);
        doc
    }

    #[test]
    fn paths_reach_keys_nested_keys_and_array_elements() {
        let doc = json!({
            "email": "Ann@X.org",
            "phone": "+44 20 7946 0000",
            "address": { "street": "1 Real Road", "town": "Leeds" },
            "tags": ["vip", "early", null],
            "orders": [{ "email": "a@b.c", "n": 1 }, { "n": 2 }],
            "age": 42
        });
        let out = run(
            doc,
            &[
                ("email", Action::FakeEmail),
                ("phone", Action::Null),
                ("address.street", Action::FakeAddress),
                ("tags[]", Action::Lorem),
                ("orders[].email", Action::Hash),
                ("age", Action::Fixed("0".into())),
                ("missing.path", Action::Null),
            ],
        );
        let mut email = "Ann@X.org".to_string();
        apply(&Action::FakeEmail, false, &mut email, &test_keyed);
        assert_eq!(out["email"], json!(email), "same mask as a column value");
        assert_eq!(out["phone"], Value::Null);
        assert_ne!(out["address"]["street"], json!("1 Real Road"));
        assert_eq!(out["address"]["town"], json!("Leeds"));
        assert_eq!(out["tags"], json!(["Lor", "Lorem", null]));
        assert_eq!(out["orders"][0]["email"].as_str().unwrap().len(), 64);
        assert_eq!(out["orders"][1], json!({ "n": 2 }));
        assert_eq!(out["age"], json!("0"));
    }

    #[test]
    fn objects_are_masked_as_their_text() {
        let out = run(json!({ "a": { "secret": 1 } }), &[("a", Action::Hash)]);
        assert!(out["a"].is_string());
    }

    #[test]
    fn root_arrays_and_bad_paths() {
        let out = run(
            json!([{ "e": "x" }, { "e": "y" }]),
            &[("[].e", Action::Null)],
        );
        assert_eq!(out, json!([{ "e": null }, { "e": null }]));
        assert!(JsonPath::parse("").is_err());
        assert!(JsonPath::parse("a..b").is_err());
        assert!(JsonPath::parse("a[0]").is_err());
        assert!(JsonPath::parse("a.[]").is_err());
        assert!(JsonPath::parse("a[][]").is_ok());
    }
}
