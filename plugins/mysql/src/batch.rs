//! Reading what the `mariadb`/`mysql` client prints in batch mode
//! (`--batch --skip-column-names`): one line per row, fields separated by
//! tabs, with NUL, tab, newline and backslash inside values escaped as `\0`,
//! `\t`, `\n` and `\\`, and SQL NULL printed as `NULL`. Values stay bytes:
//! object definitions are read with `character_set_results = binary`, in the
//! character set they were written in. Pure logic, unit-tested.

/// One value: `None` for SQL NULL.
pub type Value = Option<Vec<u8>>;
pub type Row = Vec<Value>;

/// Splits batch output into rows of unescaped values.
pub fn parse(output: &[u8]) -> Vec<Row> {
    let output = output.strip_suffix(b"\n").unwrap_or(output);
    if output.is_empty() {
        return Vec::new();
    }
    output
        .split(|&b| b == b'\n')
        .map(|line| line.split(|&b| b == b'\t').map(value).collect())
        .collect()
}

fn value(field: &[u8]) -> Value {
    if field == b"NULL" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'\\') => out.push(b'\\'),
            // Not produced by the client; kept as it is.
            Some(&other) => out.extend_from_slice(&[b'\\', other]),
            None => out.push(b'\\'),
        }
    }
    Some(out)
}

/// A value as text (names, character sets, modes are UTF-8 or ASCII).
pub fn text(value: &Value) -> String {
    value
        .as_deref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Some(v.as_bytes().to_vec())
    }

    #[test]
    fn splits_rows_and_fields() {
        assert!(parse(b"").is_empty());
        assert!(parse(b"\n").is_empty());
        assert_eq!(
            parse(b"table\tBASE TABLE\tcustomers\ntable\tVIEW\tv\n"),
            vec![
                vec![s("table"), s("BASE TABLE"), s("customers")],
                vec![s("table"), s("VIEW"), s("v")],
            ]
        );
        assert_eq!(parse(b"a\t\tNULL"), vec![vec![s("a"), s(""), None]]);
    }

    #[test]
    fn unescapes_values() {
        let rows = parse(b"tr\tCREATE TRIGGER tr BEGIN\\n  SET x = '\\ttab\\\\n \\0';\\nEND\n");
        assert_eq!(
            rows[0][1].as_deref(),
            Some(&b"CREATE TRIGGER tr BEGIN\n  SET x = '\ttab\\n \0';\nEND"[..])
        );
        // Raw bytes (e.g. latin1 definitions read as binary) stay as they are.
        assert_eq!(parse(b"caf\xe9")[0][0].as_deref(), Some(&b"caf\xe9"[..]));
    }

    #[test]
    fn text_of_values() {
        assert_eq!(text(&s("utf8mb4")), "utf8mb4");
        assert_eq!(text(&None), "");
    }
}
