//! Mistakes in a config file, each pointing at `file:line:column` and the
//! field it is about, and a small reader over a parsed TOML table that
//! collects every mistake instead of stopping at the first (as serde would).

use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One mistake (or warning) found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the operator named it.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Where in the schema: `environment`, `task "shop" step 2`, ….
    pub context: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects diagnostics for one file, turning byte offsets into lines and
/// columns.
pub struct Report<'s> {
    file: String,
    text: &'s str,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'s> Report<'s> {
    pub fn new(file: impl Into<String>, text: &'s str) -> Self {
        Report {
            file: file.into(),
            text,
            diagnostics: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn push(&mut self, severity: Severity, span: &Range<usize>, context: &str, message: String) {
        let (line, column) = self.position(span.start);
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line,
            column,
            context: context.to_string(),
            message,
        });
    }

    pub fn error(&mut self, span: &Range<usize>, context: &str, message: impl Into<String>) {
        self.push(Severity::Error, span, context, message.into());
    }

    pub fn warn(&mut self, span: &Range<usize>, context: &str, message: impl Into<String>) {
        self.push(Severity::Warning, span, context, message.into());
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics in file order.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.diagnostics
            .sort_by_key(|d| (d.line, d.column, d.severity));
        self.diagnostics
    }
}

/// A value as read from the file, with where it was.
#[derive(Clone, Debug)]
pub struct At<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// One TOML table of the schema: reports unknown keys when created, then
/// hands out typed fields, reporting wrong types and missing required ones.
pub struct Fields<'t, 'i> {
    table: &'t DeTable<'i>,
    /// Where the table starts (for "missing field" messages).
    pub span: Range<usize>,
    /// The context printed before each message.
    pub context: String,
}

/// A short name of a TOML value's type, for messages.
pub fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'t, 'i> Fields<'t, 'i> {
    /// Reads `table`; every key not in `known` is reported (with `hint(key)`
    /// appended when it returns one).
    pub fn new(
        report: &mut Report<'_>,
        table: &'t DeTable<'i>,
        span: Range<usize>,
        context: impl Into<String>,
        known: &[&str],
        hint: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let context = context.into();
        for key in table.keys() {
            let name: &str = key.get_ref();
            if !known.contains(&name) {
                let mut message = format!("unknown field \"{name}\"");
                match hint(name) {
                    Some(h) => message.push_str(&format!(" ({h})")),
                    None => message.push_str(&format!(" (known fields: {})", known.join(", "))),
                }
                report.error(&key.span(), &context, message);
            }
        }
        Fields {
            table,
            span,
            context,
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The span of `key` itself (for "does not apply" messages).
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table.get_key_value(key).map(|(k, _)| k.span())
    }

    pub fn raw(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    fn wrong_type(&self, report: &mut Report<'_>, key: &str, v: &Spanned<DeValue<'_>>, want: &str) {
        report.error(
            &v.span(),
            &self.context,
            format!("{key} must be {want}, not {}", type_name(v.get_ref())),
        );
    }

    pub fn missing(&self, report: &mut Report<'_>, key: &str) {
        report.error(
            &self.span,
            &self.context,
            format!("missing field \"{key}\""),
        );
    }

    pub fn string(&self, report: &mut Report<'_>, key: &str) -> Option<At<String>> {
        let v = self.table.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(At {
                value: s.to_string(),
                span: v.span(),
            }),
            _ => {
                self.wrong_type(report, key, v, "a string");
                None
            }
        }
    }

    /// A required, non-empty string.
    pub fn required_string(&self, report: &mut Report<'_>, key: &str) -> Option<At<String>> {
        if !self.has(key) {
            self.missing(report, key);
            return None;
        }
        let s = self.string(report, key)?;
        if s.value.trim().is_empty() {
            report.error(&s.span, &self.context, format!("{key} is empty"));
            return None;
        }
        Some(s)
    }

    pub fn bool(&self, report: &mut Report<'_>, key: &str) -> Option<At<bool>> {
        let v = self.table.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(At {
                value: *b,
                span: v.span(),
            }),
            _ => {
                self.wrong_type(report, key, v, "true or false");
                None
            }
        }
    }

    /// An integer within `range`.
    pub fn integer(
        &self,
        report: &mut Report<'_>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<At<i64>> {
        let v = self.table.get(key)?;
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(report, key, v, "an integer");
            return None;
        };
        let parsed = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok();
        match parsed {
            Some(n) if range.contains(&n) => Some(At {
                value: n,
                span: v.span(),
            }),
            _ => {
                report.error(
                    &v.span(),
                    &self.context,
                    format!(
                        "{key} must be between {} and {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A string or an array of strings.
    pub fn strings(&self, report: &mut Report<'_>, key: &str) -> Vec<At<String>> {
        let Some(v) = self.table.get(key) else {
            return Vec::new();
        };
        match v.get_ref() {
            DeValue::String(s) => vec![At {
                value: s.to_string(),
                span: v.span(),
            }],
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push(At {
                            value: s.to_string(),
                            span: item.span(),
                        }),
                        other => report.error(
                            &item.span(),
                            &self.context,
                            format!("{key} must list strings, not {}", type_name(other)),
                        ),
                    }
                }
                out
            }
            _ => {
                self.wrong_type(report, key, v, "a string or an array of strings");
                Vec::new()
            }
        }
    }

    /// A sub-table (`[a.b]` or an inline table).
    pub fn table(
        &self,
        report: &mut Report<'_>,
        key: &str,
    ) -> Option<(&'t DeTable<'i>, Range<usize>)> {
        let v = self.table.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some((t, v.span())),
            _ => {
                self.wrong_type(report, key, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[a.b]]`).
    pub fn tables(
        &self,
        report: &mut Report<'_>,
        key: &str,
    ) -> Vec<(&'t DeTable<'i>, Range<usize>)> {
        let Some(v) = self.table.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(report, key, v, &format!("an array of tables ([[{key}]])"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push((t, item.span())),
                other => report.error(
                    &item.span(),
                    &self.context,
                    format!("{key} must hold tables, not {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// A table of scalar values, as `NAME=VALUE` pairs (strings kept, numbers
    /// and booleans written out).
    pub fn scalar_map(&self, report: &mut Report<'_>, key: &str) -> Vec<(String, String)> {
        let Some((table, _)) = self.table(report, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in table.iter() {
            let text = match v.get_ref() {
                DeValue::String(s) => s.to_string(),
                DeValue::Integer(i) => i.as_str().to_string(),
                DeValue::Float(f) => f.as_str().to_string(),
                DeValue::Boolean(b) => b.to_string(),
                other => {
                    report.error(
                        &v.span(),
                        &self.context,
                        format!(
                            "{key}.{} must be a string, number or boolean, not {}",
                            k.get_ref(),
                            type_name(other)
                        ),
                    );
                    continue;
                }
            };
            out.push((k.get_ref().to_string(), text));
        }
        out
    }
}
