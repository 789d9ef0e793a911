//! The three database names of a restore: target, scratch and old.

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN − 1).
const MAX_NAME_BYTES: usize = 63;

/// `<target>-restore` is loaded and swapped in; `<target>-envsync-old` holds
/// the previous target between the swap and its drop.
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
        if target.len() > MAX_NAME_BYTES {
            return Err(format!(
                "the target database name {target:?} is longer than PostgreSQL's {MAX_NAME_BYTES}-byte limit"
            ));
        }
        let names = Names {
            target: target.to_string(),
            scratch: with_suffix(target, "-restore"),
            old: with_suffix(target, "-envsync-old"),
        };
        if names.scratch == names.target || names.old == names.target {
            return Err(format!(
                "the target database name {target:?} is too long to derive distinct scratch names; \
                 use a name of at most {} bytes",
                MAX_NAME_BYTES - "-envsync-old".len()
            ));
        }
        Ok(names)
    }
}

/// `base` + `suffix`, with `base` cut (at a character boundary) so the whole
/// fits in 63 bytes. Doing the cut ourselves keeps the names we compare as
/// literals identical to the names the server stores, which it would
/// otherwise truncate silently.
fn with_suffix(base: &str, suffix: &str) -> String {
    let mut end = base.len().min(MAX_NAME_BYTES - suffix.len());
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_get_plain_suffixes() {
        let n = Names::for_target("app").unwrap();
        assert_eq!(n.scratch, "app-restore");
        assert_eq!(n.old, "app-envsync-old");
    }

    #[test]
    fn long_names_are_cut_to_63_bytes() {
        let target = "x".repeat(60);
        let n = Names::for_target(&target).unwrap();
        assert_eq!(n.scratch.len(), 63);
        assert_eq!(n.old.len(), 63);
        assert!(n.scratch.ends_with("-restore"));
        assert!(n.old.ends_with("-envsync-old"));
    }

    #[test]
    fn cuts_at_char_boundaries() {
        let target = "é".repeat(30); // 60 bytes
        let n = Names::for_target(&target).unwrap();
        assert!(n.scratch.len() <= 63);
        assert!(n.scratch.ends_with("-restore"));
    }

    #[test]
    fn rejects_unusable_names() {
        assert!(Names::for_target("").is_err());
        assert!(Names::for_target(&"x".repeat(64)).is_err());
        let clash = format!("{}-restore", "x".repeat(55));
        assert!(Names::for_target(&clash).is_err());
    }
}
