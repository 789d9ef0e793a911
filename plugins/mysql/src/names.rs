//! The databases of a restore (target, scratch, old) and the temporary names
//! the swap gives to views in the way.

use std::collections::BTreeSet;

/// MySQL and MariaDB refuse identifiers longer than this many characters.
pub const MAX_NAME_CHARS: usize = 64;

const SCRATCH_SUFFIX: &str = "-envsync-restore";
const OLD_SUFFIX: &str = "-envsync-old";

/// `<target>-envsync-restore` is loaded and its tables swapped in;
/// `<target>-envsync-old` receives the target's previous tables in the same
/// swap and is dropped right after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub target: String,
    pub scratch: String,
    pub old: String,
}

impl Names {
    pub fn for_target(target: &str) -> Result<Names, String> {
        if target.is_empty() {
            return Err("the target database name is empty".into());
        }
        if target.contains('\0') {
            return Err("the target database name contains a NUL character".into());
        }
        if target.chars().count() > MAX_NAME_CHARS {
            return Err(format!(
                "the target database name {target:?} is longer than the {MAX_NAME_CHARS} \
                 characters MySQL and MariaDB allow"
            ));
        }
        if target.ends_with(' ') {
            return Err(format!(
                "the target database name {target:?} ends with a space, which MySQL and MariaDB \
                 do not allow"
            ));
        }
        let names = Names {
            target: target.to_string(),
            scratch: with_suffix(target, SCRATCH_SUFFIX),
            old: with_suffix(target, OLD_SUFFIX),
        };
        if names.scratch == names.target || names.old == names.target {
            return Err(format!(
                "the target database name {target:?} is too long to derive distinct scratch \
                 names; use a name of at most {} characters",
                MAX_NAME_CHARS - SCRATCH_SUFFIX.len()
            ));
        }
        Ok(names)
    }
}

/// `base` + `suffix`, with `base` cut (at a character boundary) so the whole
/// fits in 64 characters: the server refuses longer names.
fn with_suffix(base: &str, suffix: &str) -> String {
    let keep = MAX_NAME_CHARS - suffix.chars().count();
    let cut: String = base.chars().take(keep).collect();
    format!("{cut}{suffix}")
}

/// `count` names `envsync-old-view-N` (N from 1) that are not in `taken`, for
/// the target's views that stand where the restored tables go: the swap
/// renames them out of the way (a view cannot move to another database) and
/// drops them once the new tables are in.
pub fn parking_names(count: usize, taken: &BTreeSet<String>) -> Vec<String> {
    (1..)
        .map(|n| format!("envsync-old-view-{n}"))
        .filter(|name| !taken.contains(name))
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_get_plain_suffixes() {
        let n = Names::for_target("shop").unwrap();
        assert_eq!(n.scratch, "shop-envsync-restore");
        assert_eq!(n.old, "shop-envsync-old");
    }

    #[test]
    fn long_names_are_cut_to_64_characters() {
        let n = Names::for_target(&"x".repeat(60)).unwrap();
        assert_eq!(n.scratch.chars().count(), 64);
        assert_eq!(n.old.chars().count(), 64);
        assert!(n.scratch.ends_with(SCRATCH_SUFFIX));
        assert!(n.old.ends_with(OLD_SUFFIX));
        // Characters, not bytes: 60 × "é" is 120 bytes but a valid name.
        let n = Names::for_target(&"é".repeat(60)).unwrap();
        assert_eq!(n.scratch.chars().count(), 64);
        assert!(n.scratch.starts_with(&"é".repeat(48)));
    }

    #[test]
    fn rejects_unusable_names() {
        assert!(Names::for_target("").is_err());
        assert!(Names::for_target("a\0b").is_err());
        assert!(Names::for_target("shop ").is_err());
        assert!(Names::for_target(&"x".repeat(65)).is_err());
        let clash = format!("{}{SCRATCH_SUFFIX}", "x".repeat(48));
        assert!(Names::for_target(&clash).is_err());
    }

    #[test]
    fn parking_names_avoid_taken_ones() {
        let taken: BTreeSet<String> = ["envsync-old-view-1", "envsync-old-view-3"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            parking_names(3, &taken),
            [
                "envsync-old-view-2",
                "envsync-old-view-4",
                "envsync-old-view-5"
            ]
        );
        assert!(parking_names(0, &taken).is_empty());
    }
}
