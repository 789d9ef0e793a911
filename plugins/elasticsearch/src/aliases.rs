//! Making restored indices live: one atomic `POST /_aliases` that points
//! the original index name and the original aliases at the new indices and
//! takes them off the old ones, so readers see the old data until the swap
//! and the new data after it, never an empty or missing index.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The infix of the indices envsync creates: `<name>-envsync-<stamp>`.
pub const INFIX: &str = "-envsync-";

/// The name a restored index is known by: its original name, without the
/// `-envsync-<stamp>` suffix of an earlier restore.
pub fn base_name(original: &str) -> &str {
    if let Some(at) = original.rfind(INFIX) {
        let stamp = &original[at + INFIX.len()..];
        if !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()) {
            return &original[..at];
        }
    }
    original
}

/// The concrete index a restore of `base` creates.
pub fn new_name(base: &str, stamp: u64) -> String {
    format!("{base}{INFIX}{stamp}")
}

/// True for an index an earlier restore of `base` created.
fn made_for(index: &str, base: &str) -> bool {
    index.len() > base.len() && index.starts_with(base) && base_name(index) == base
}

/// The target's concrete indices and aliases, from `GET /_alias`.
#[derive(Debug, Default)]
pub struct Live {
    pub indices: BTreeSet<String>,
    /// Alias → the indices holding it.
    pub aliases: BTreeMap<String, BTreeSet<String>>,
}

impl Live {
    pub fn from_get_alias(answer: &Value) -> Live {
        let mut live = Live::default();
        if let Some(indices) = answer.as_object() {
            for (index, v) in indices {
                live.indices.insert(index.clone());
                if let Some(aliases) = v.get("aliases").and_then(Value::as_object) {
                    for alias in aliases.keys() {
                        live.aliases
                            .entry(alias.clone())
                            .or_default()
                            .insert(index.clone());
                    }
                }
            }
        }
        live
    }
}

/// The aliases (with their properties) that the live holders of `base`
/// carry, from `GET /_alias`: the concrete index `base`, or the indices
/// holding the alias `base`. `base` itself is left out.
pub fn held_by_live(answer: &Value, base: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(indices) = answer.as_object() else {
        return out;
    };
    for (index, v) in indices {
        let Some(aliases) = v.get("aliases").and_then(Value::as_object) else {
            continue;
        };
        if index != base && !aliases.contains_key(base) {
            continue;
        }
        for (alias, props) in aliases {
            if alias != base {
                out.insert(alias.clone(), props.clone());
            }
        }
    }
    out
}

/// One index loaded under a new name.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The name readers use (the original index name, as [`base_name`]).
    pub base: String,
    /// The new concrete index.
    pub new: String,
    /// The original index's aliases and their properties (filter, routing, …).
    pub aliases: Map<String, Value>,
}

/// The actions of the swap: remove the old holders (deleting the concrete
/// indices that stand in the way and the ones earlier restores created),
/// then add the base name and the aliases to the new indices.
pub fn swap_actions(restored: &[Restored], live: &Live) -> Result<Vec<Value>, String> {
    let new: BTreeSet<&str> = restored.iter().map(|r| r.new.as_str()).collect();
    let mut delete = BTreeSet::new();
    let mut remove = BTreeSet::new(); // (index, alias)
    let mut adds = Vec::new();
    for r in restored {
        // The base name: a concrete index gives way; an alias moves.
        if live.indices.contains(&r.base) && !live.aliases.contains_key(&r.base) {
            delete.insert(r.base.clone());
        }
        for holder in live.aliases.get(&r.base).into_iter().flatten() {
            if new.contains(holder.as_str()) {
                continue;
            }
            if made_for(holder, &r.base) {
                delete.insert(holder.clone());
            } else {
                remove.insert((holder.clone(), r.base.clone()));
            }
        }
        adds.push(json!({"add": {"index": r.new, "alias": r.base}}));
        for (alias, props) in &r.aliases {
            if alias == &r.base {
                continue;
            }
            if live.indices.contains(alias) && !live.aliases.contains_key(alias) {
                return Err(format!(
                    "alias {alias:?} of index {:?} cannot be moved: the target has a concrete index \
                     of that name (delete or rename it first)",
                    r.base
                ));
            }
            for holder in live.aliases.get(alias).into_iter().flatten() {
                if !new.contains(holder.as_str()) {
                    remove.insert((holder.clone(), alias.clone()));
                }
            }
            let mut add = props.as_object().cloned().unwrap_or_default();
            add.insert("index".into(), Value::from(r.new.clone()));
            add.insert("alias".into(), Value::from(alias.clone()));
            adds.push(json!({ "add": add }));
        }
    }
    let mut actions: Vec<Value> = delete
        .iter()
        .map(|index| json!({"remove_index": {"index": index}}))
        .collect();
    actions.extend(
        remove
            .iter()
            .filter(|(index, _)| !delete.contains(index))
            .map(|(index, alias)| json!({"remove": {"index": index, "alias": alias}})),
    );
    actions.extend(adds);
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restored(base: &str, new: &str, aliases: Value) -> Restored {
        Restored {
            base: base.into(),
            new: new.into(),
            aliases: aliases.as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn names() {
        assert_eq!(base_name("products"), "products");
        assert_eq!(base_name("products-envsync-1795255310177"), "products");
        assert_eq!(base_name("products-envsync-"), "products-envsync-");
        assert_eq!(base_name("products-envsync-x1"), "products-envsync-x1");
        assert_eq!(new_name("products", 42), "products-envsync-42");
        assert!(made_for("products-envsync-42", "products"));
        assert!(!made_for("products-other-envsync-42", "products"));
        assert!(!made_for("products", "products"));
    }

    #[test]
    fn a_concrete_index_becomes_an_alias_and_aliases_move() {
        let live = Live::from_get_alias(&json!({
            "products": {"aliases": {"shop": {}}},
            "orders": {"aliases": {}},
            "other": {"aliases": {"shop": {}}},
        }));
        let r = [restored(
            "products",
            "products-envsync-7",
            json!({"shop": {"is_write_index": true}}),
        )];
        let actions = swap_actions(&r, &live).unwrap();
        assert_eq!(
            actions,
            [
                json!({"remove_index": {"index": "products"}}),
                json!({"remove": {"index": "other", "alias": "shop"}}),
                json!({"add": {"index": "products-envsync-7", "alias": "products"}}),
                json!({"add": {"index": "products-envsync-7", "alias": "shop", "is_write_index": true}}),
            ]
        );
    }

    #[test]
    fn a_second_restore_deletes_the_first_restores_index() {
        let live = Live::from_get_alias(&json!({
            "products-envsync-7": {"aliases": {"products": {}, "shop": {}}},
            "legacy": {"aliases": {"products": {}}},
        }));
        let r = [restored(
            "products",
            "products-envsync-9",
            json!({"shop": {}}),
        )];
        let actions = swap_actions(&r, &live).unwrap();
        assert_eq!(
            actions,
            [
                json!({"remove_index": {"index": "products-envsync-7"}}),
                json!({"remove": {"index": "legacy", "alias": "products"}}),
                json!({"add": {"index": "products-envsync-9", "alias": "products"}}),
                json!({"add": {"index": "products-envsync-9", "alias": "shop"}}),
            ]
        );
    }

    #[test]
    fn the_live_holders_aliases_are_found() {
        let answer = json!({
            "products": {"aliases": {"shop": {"filter": {"term": {"x": 1}}}}},
            "orders-envsync-3": {"aliases": {"orders": {}, "sales": {}}},
            "other": {"aliases": {"misc": {}}},
        });
        assert_eq!(
            Value::Object(held_by_live(&answer, "products")),
            json!({"shop": {"filter": {"term": {"x": 1}}}})
        );
        assert_eq!(
            Value::Object(held_by_live(&answer, "orders")),
            json!({"sales": {}})
        );
        assert!(held_by_live(&answer, "absent").is_empty());
    }

    #[test]
    fn a_fresh_target_only_gets_adds_and_clashes_are_refused() {
        let r = [
            restored("a", "a-envsync-1", json!({"all": {}})),
            restored("b", "b-envsync-1", json!({"all": {}})),
        ];
        let actions = swap_actions(&r, &Live::default()).unwrap();
        assert_eq!(actions.len(), 4);
        assert!(actions.iter().all(|a| a.get("add").is_some()));

        let live = Live::from_get_alias(&json!({"all": {"aliases": {}}}));
        let e = swap_actions(&r, &live).unwrap_err();
        assert!(e.contains("concrete index"), "{e}");
    }
}
