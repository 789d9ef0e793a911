//! Tab-separated text lines whose fields may hold any character: the
//! chunked plans of the engine plugins (a quoted identifier can hold a
//! tab or a newline). A field's `\`, tab and newline are escaped as `\\`,
//! `\t`, `\n`.

/// One field, escaped for a tab-separated line.
pub fn escape(field: &str) -> String {
    field
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// The field [`escape`] wrote.
pub fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_field_round_trips_and_holds_no_tab_or_newline() {
        for field in ["plain", "a\tb", "line\nbreak", "back\\slash\\t", "\\", ""] {
            let escaped = escape(field);
            assert!(!escaped.contains('\t') && !escaped.contains('\n'));
            assert_eq!(unescape(&escaped), field);
        }
    }
}
