//! The rules file: TOML, parsed into [`Rules`] once by `configure`.
//!
//! ```toml
//! [tables.users.columns]
//! email = "fake_email"
//! country = { fixed = "GB" }
//! [tables.users.rows]
//! delete_older_than = { column = "created_at", age = "90 days" }
//! keep_where = { column = "country", in = ["GB", "FR"] }
//! [tables.audit_log]
//! drop_all_rows = true
//! [documents.customers]
//! "email" = "fake_email"
//! ```
//!
//! Every mistake is an `invalid-param` error naming the table (or index)
//! and column, so an operator can fix the file.

use crate::json::JsonPath;
use crate::time::parse_age;
use envsync_plugin_sdk::Error;
use toml::{Table, Value};

/// What happens to one value.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Left as it is.
    Keep,
    /// Replaced by NULL.
    Null,
    /// Hex of the keyed hash.
    Hash,
    /// `user-<12 hex>@example.com` from the keyed hash of the lower-cased value.
    FakeEmail,
    /// "First Last" picked by the keyed hash.
    FakeName,
    /// `+44 7700 900xxx` (Ofcom's drama range) picked by the keyed hash.
    FakePhone,
    /// `<n> <street> <town>` picked by the keyed hash.
    FakeAddress,
    /// Lorem ipsum of the same length in characters.
    Lorem,
    /// This text.
    Fixed(String),
    /// The first n characters.
    Truncate(usize),
    /// Text with `{column}` replaced by other columns of the row.
    Template(Template),
    /// Actions on paths inside a JSON value.
    Json(Vec<(JsonPath, Action)>),
}

impl Action {
    /// Whether the action needs the keyed hash of the value (on a column
    /// with or without a unique constraint).
    pub fn needs_hash(&self, unique: bool) -> bool {
        match self {
            Action::Hash
            | Action::FakeEmail
            | Action::FakeName
            | Action::FakePhone
            | Action::FakeAddress => true,
            Action::Lorem | Action::Fixed(_) | Action::Truncate(_) => unique,
            Action::Keep | Action::Null | Action::Template(_) | Action::Json(_) => false,
        }
    }
}

/// A parsed `template`: literal text and column references.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Column(String),
}

impl Template {
    /// Parses `anon-{id}@example.com`; `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("template {text:?}: `{{` without `}}`")),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(format!("template {text:?}: empty `{{}}`"));
                    }
                    if !lit.is_empty() {
                        parts.push(TemplatePart::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(TemplatePart::Column(name));
                }
                '}' => {
                    return Err(format!(
                        "template {text:?}: `}}` without `{{` (write `}}}}` for a brace)"
                    ));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(TemplatePart::Text(lit));
        }
        Ok(Template { parts })
    }

    /// The columns it refers to.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Column(c) => Some(c.as_str()),
            TemplatePart::Text(_) => None,
        })
    }
}

/// `delete_older_than`: rows whose `column` is older than `age_secs`
/// before the run started are dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct AgeFilter {
    pub column: String,
    pub age_secs: i64,
}

/// `keep_where`: only rows whose `column` is one of `values` are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepWhere {
    pub column: String,
    pub values: Vec<String>,
}

/// The rules of one `[tables.KEY]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableRules {
    /// `users` (any schema) or `public.users`.
    pub key: String,
    /// Column actions, sorted by column name (TOML tables are unordered).
    pub columns: Vec<(String, Action)>,
    pub delete_older_than: Option<AgeFilter>,
    pub keep_where: Option<KeepWhere>,
    pub drop_all_rows: bool,
}

impl TableRules {
    /// Whether the rules name `column`.
    pub fn covers(&self, column: &str) -> bool {
        self.drop_all_rows || self.columns.iter().any(|(c, _)| c == column)
    }
}

/// The rules of one `[documents.INDEX]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRules {
    pub index: String,
    pub paths: Vec<(JsonPath, Action)>,
}

/// A whole rules file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    pub tables: Vec<TableRules>,
    pub documents: Vec<DocumentRules>,
}

/// The part after the last `.`: `public.users` → `users`.
pub fn bare(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(_, t)| t)
}

impl Rules {
    /// The rules for `table` as an engine names it: an exact key first,
    /// else a bare key matching the table's bare name (`users` matches
    /// `public.users` and `users`).
    pub fn table(&self, table: &str) -> Option<&TableRules> {
        self.tables.iter().find(|t| t.key == table).or_else(|| {
            let name = bare(table);
            self.tables
                .iter()
                .find(|t| !t.key.contains('.') && t.key == name)
        })
    }

    /// The rules for a document index (exact name).
    pub fn documents(&self, index: &str) -> Option<&DocumentRules> {
        self.documents.iter().find(|d| d.index == index)
    }

    /// What `configure` answers: every table key and index name.
    pub fn targets(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|t| t.key.clone())
            .chain(self.documents.iter().map(|d| d.index.clone()))
            .collect()
    }

    /// Parses a rules file.
    pub fn parse(text: &str) -> Result<Rules, Error> {
        let root: Table = toml::from_str(text)
            .map_err(|e| invalid(format!("the rules are not valid TOML: {e}")))?;
        let mut rules = Rules::default();
        for (key, value) in &root {
            match key.as_str() {
                "tables" => {
                    let tables = as_table(value, "`tables`")?;
                    for (name, t) in tables {
                        // `[tables.public.users.columns]` (unquoted) nests
                        // the schema: read it as `"public.users"`.
                        match t.as_table() {
                            Some(schema) if is_schema(schema) => {
                                for (table, t) in schema {
                                    rules
                                        .tables
                                        .push(parse_table(&format!("{name}.{table}"), t)?);
                                }
                            }
                            _ => rules.tables.push(parse_table(name, t)?),
                        }
                    }
                }
                "documents" => {
                    let docs = as_table(value, "`documents`")?;
                    for (index, d) in docs {
                        let what = format!("index {index:?}");
                        let paths = as_table(d, &what)?;
                        let mut parsed = Vec::new();
                        for (path, action) in paths {
                            let ctx = format!("index {index:?}, path {path:?}");
                            let p = JsonPath::parse(path)
                                .map_err(|e| invalid(format!("{ctx}: {e}")))?;
                            parsed.push((p, parse_action(action, &ctx, true)?));
                        }
                        rules.documents.push(DocumentRules {
                            index: index.clone(),
                            paths: parsed,
                        });
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown top-level key {other:?} in the rules (expected [tables.NAME] or \
                         [documents.INDEX])"
                    )));
                }
            }
        }
        Ok(rules)
    }
}

/// Whether a `[tables.X]` entry is a schema holding tables rather than a
/// table: none of a table's keys, and only tables inside.
fn is_schema(entry: &Table) -> bool {
    !entry.is_empty()
        && entry.iter().all(|(k, v)| {
            !matches!(k.as_str(), "columns" | "rows" | "drop_all_rows") && v.is_table()
        })
}

fn invalid(message: String) -> Error {
    Error::InvalidParam(message)
}

fn as_table<'a>(value: &'a Value, what: &str) -> Result<&'a Table, Error> {
    value
        .as_table()
        .ok_or_else(|| invalid(format!("{what} must be a table, not {}", value.type_str())))
}

fn as_str<'a>(value: &'a Value, what: &str) -> Result<&'a str, Error> {
    value
        .as_str()
        .ok_or_else(|| invalid(format!("{what} must be a string, not {}", value.type_str())))
}

fn parse_table(name: &str, value: &Value) -> Result<TableRules, Error> {
    let tctx = format!("table {name:?}");
    let table = as_table(value, &tctx)?;
    let mut rules = TableRules {
        key: name.to_string(),
        ..TableRules::default()
    };
    for (key, value) in table {
        match key.as_str() {
            "columns" => {
                for (column, action) in as_table(value, &format!("{tctx}: `columns`"))? {
                    let ctx = format!("table {name:?}, column {column:?}");
                    rules
                        .columns
                        .push((column.clone(), parse_action(action, &ctx, false)?));
                }
            }
            "rows" => {
                for (filter, spec) in as_table(value, &format!("{tctx}: `rows`"))? {
                    match filter.as_str() {
                        "delete_older_than" => {
                            rules.delete_older_than = Some(parse_age_filter(name, spec)?);
                        }
                        "keep_where" => rules.keep_where = Some(parse_keep_where(name, spec)?),
                        other => {
                            return Err(invalid(format!(
                                "{tctx}: unknown row rule {other:?} (expected delete_older_than \
                                 or keep_where)"
                            )));
                        }
                    }
                }
            }
            "drop_all_rows" => {
                rules.drop_all_rows = value.as_bool().ok_or_else(|| {
                    invalid(format!("{tctx}: drop_all_rows must be true or false"))
                })?;
            }
            other => {
                return Err(invalid(format!(
                    "{tctx}: unknown key {other:?} (expected columns, rows or drop_all_rows)"
                )));
            }
        }
    }
    Ok(rules)
}

fn column_field<'a>(
    spec: &'a Table,
    field: &str,
    table: &str,
    rule: &str,
) -> Result<&'a str, Error> {
    let value = spec
        .get(field)
        .ok_or_else(|| invalid(format!("table {table:?}: {rule} needs `{field}`")))?;
    as_str(value, &format!("table {table:?}: {rule}.{field}"))
}

fn parse_age_filter(table: &str, spec: &Value) -> Result<AgeFilter, Error> {
    let ctx = format!("table {table:?}: delete_older_than");
    let spec = as_table(spec, &ctx)?;
    check_keys(spec, &["column", "age"], &ctx)?;
    let column = column_field(spec, "column", table, "delete_older_than")?;
    let age = column_field(spec, "age", table, "delete_older_than")?;
    let age_secs = parse_age(age).map_err(|e| {
        invalid(format!(
            "table {table:?}, column {column:?}: delete_older_than: {e}"
        ))
    })?;
    Ok(AgeFilter {
        column: column.to_string(),
        age_secs,
    })
}

fn parse_keep_where(table: &str, spec: &Value) -> Result<KeepWhere, Error> {
    let ctx = format!("table {table:?}: keep_where");
    let spec = as_table(spec, &ctx)?;
    check_keys(spec, &["column", "in", "equals"], &ctx)?;
    let column = column_field(spec, "column", table, "keep_where")?;
    let cctx = format!("table {table:?}, column {column:?}: keep_where");
    let values = match (spec.get("in"), spec.get("equals")) {
        (Some(list), None) => {
            let list = list
                .as_array()
                .ok_or_else(|| invalid(format!("{cctx}: `in` must be a list")))?;
            list.iter()
                .map(|v| scalar_text(v, &cctx))
                .collect::<Result<Vec<_>, _>>()?
        }
        (None, Some(v)) => vec![scalar_text(v, &cctx)?],
        _ => {
            return Err(invalid(format!(
                "{cctx}: give exactly one of `in = [...]` or `equals = ...`"
            )));
        }
    };
    Ok(KeepWhere {
        column: column.to_string(),
        values,
    })
}

fn check_keys(spec: &Table, allowed: &[&str], ctx: &str) -> Result<(), Error> {
    for key in spec.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(invalid(format!(
                "{ctx}: unknown key {key:?} (expected {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// A string, integer, float or boolean as the text a dump holds.
fn scalar_text(value: &Value, ctx: &str) -> Result<String, Error> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(invalid(format!(
            "{ctx}: expected a string or number, not {}",
            other.type_str()
        ))),
    }
}

const ACTIONS: &str = "keep, null, hash, fake_email, fake_name, fake_phone, fake_address, lorem, \
                       { fixed = \"...\" }, { truncate = N }, { template = \"...{column}...\" }, \
                       { json = { \"path\" = ACTION } }";

fn parse_action(value: &Value, ctx: &str, in_json: bool) -> Result<Action, Error> {
    match value {
        Value::String(name) => match name.as_str() {
            "keep" => Ok(Action::Keep),
            "null" => Ok(Action::Null),
            "hash" => Ok(Action::Hash),
            "fake_email" => Ok(Action::FakeEmail),
            "fake_name" => Ok(Action::FakeName),
            "fake_phone" => Ok(Action::FakePhone),
            "fake_address" => Ok(Action::FakeAddress),
            "lorem" => Ok(Action::Lorem),
            other => Err(invalid(format!(
                "{ctx}: unknown action {other:?} (expected one of {ACTIONS})"
            ))),
        },
        Value::Table(t) if t.len() == 1 => {
            let (kind, arg) = t.iter().next().expect("one entry");
            match kind.as_str() {
                "fixed" => Ok(Action::Fixed(scalar_text(arg, &format!("{ctx}: fixed"))?)),
                "truncate" => match arg.as_integer() {
                    Some(n) if n >= 0 => Ok(Action::Truncate(n as usize)),
                    _ => Err(invalid(format!(
                        "{ctx}: truncate needs a number of characters (0 or more)"
                    ))),
                },
                "template" if in_json => Err(invalid(format!(
                    "{ctx}: template refers to columns and cannot be used inside JSON"
                ))),
                "template" => {
                    let text = as_str(arg, &format!("{ctx}: template"))?;
                    Template::parse(text)
                        .map(Action::Template)
                        .map_err(|e| invalid(format!("{ctx}: {e}")))
                }
                "json" if in_json => Err(invalid(format!(
                    "{ctx}: json cannot be nested; use a longer path (`a.b`, `list[].c`)"
                ))),
                "json" => {
                    let paths = as_table(arg, &format!("{ctx}: json"))?;
                    let mut parsed = Vec::new();
                    for (path, action) in paths {
                        let pctx = format!("{ctx}, json path {path:?}");
                        let p =
                            JsonPath::parse(path).map_err(|e| invalid(format!("{pctx}: {e}")))?;
                        parsed.push((p, parse_action(action, &pctx, true)?));
                    }
                    Ok(Action::Json(parsed))
                }
                other => Err(invalid(format!(
                    "{ctx}: unknown action {{ {other} = ... }} (expected one of {ACTIONS})"
                ))),
            }
        }
        other => Err(invalid(format!(
            "{ctx}: an action is a name or a one-entry table, not {} (expected one of {ACTIONS})",
            other.type_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[tables.users.columns]
id = "keep"
email = "fake_email"
name = "fake_name"
phone = "fake_phone"
address = "fake_address"
bio = "lorem"
ssn = "null"
token = "hash"
country = { fixed = "GB" }
notes = { truncate = 20 }
login = { template = "anon-{id}@example.com" }
profile = { json = { "email" = "fake_email", "phone" = "null", "address.street" = "fake_address", "tags[]" = "lorem" } }
created_at = "keep"
[tables.users.rows]
delete_older_than = { column = "created_at", age = "90 days" }
keep_where = { column = "country", in = ["GB", "FR"] }
[tables.audit_log]
drop_all_rows = true
[documents.customers]
"email" = "fake_email"
"name" = "fake_name"
"#;

    fn message(e: Error) -> String {
        match e {
            Error::InvalidParam(m) => m,
            other => panic!("expected invalid-param, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        assert_eq!(rules.targets(), vec!["audit_log", "users", "customers"]);
        let users = rules.table("public.users").unwrap();
        assert_eq!(users.columns.len(), 13);
        let action = |c: &str| &users.columns.iter().find(|(n, _)| n == c).unwrap().1;
        assert_eq!(action("email"), &Action::FakeEmail);
        assert_eq!(action("country"), &Action::Fixed("GB".into()));
        assert_eq!(action("notes"), &Action::Truncate(20));
        assert!(matches!(action("login"), Action::Template(_)));
        assert!(matches!(action("profile"), Action::Json(p) if p.len() == 4));
        assert_eq!(
            users.delete_older_than,
            Some(AgeFilter {
                column: "created_at".into(),
                age_secs: 90 * 86_400
            })
        );
        assert_eq!(users.keep_where.as_ref().unwrap().values, vec!["GB", "FR"]);
        assert!(rules.table("audit_log").unwrap().drop_all_rows);
        assert!(rules.table("orders").is_none());
        assert_eq!(rules.documents("customers").unwrap().paths.len(), 2);
    }

    #[test]
    fn the_example_in_the_docs_parses() {
        let doc = include_str!("../../../docs/sanitisers.md");
        let section = &doc[doc.find("## The `sanitise` rules").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let rules = Rules::parse(example).unwrap();
        assert_eq!(
            rules.targets(),
            vec!["audit_log", "public.orders", "users", "customers"]
        );
    }

    #[test]
    fn exact_keys_win_over_bare_ones() {
        let rules = Rules::parse(
            "[tables.users.columns]\na = \"keep\"\n[tables.\"crm.users\".columns]\na = \"null\"\n",
        )
        .unwrap();
        assert_eq!(rules.table("crm.users").unwrap().columns[0].1, Action::Null);
        assert_eq!(
            rules.table("public.users").unwrap().columns[0].1,
            Action::Keep
        );
        assert_eq!(rules.table("users").unwrap().columns[0].1, Action::Keep);
        // A qualified key never matches another schema.
        let rules = Rules::parse("[tables.\"crm.users\".columns]\na = \"null\"\n").unwrap();
        assert!(rules.table("public.users").is_none());
    }

    #[test]
    fn unquoted_schema_names_nest() {
        let rules = Rules::parse(
            "[tables.public.users.columns]\na = \"null\"\n[tables.crm.audit]\ndrop_all_rows = true\n",
        )
        .unwrap();
        assert_eq!(rules.targets(), vec!["crm.audit", "public.users"]);
        assert_eq!(
            rules.table("public.users").unwrap().columns[0].1,
            Action::Null
        );
        assert!(rules.table("users").is_none());
        assert!(rules.table("crm.audit").unwrap().drop_all_rows);
    }

    #[test]
    fn equals_is_a_one_value_list() {
        let rules = Rules::parse(
            "[tables.t.rows]\nkeep_where = { column = \"country\", equals = \"GB\" }\n",
        )
        .unwrap();
        assert_eq!(
            rules.tables[0].keep_where.as_ref().unwrap().values,
            vec!["GB"]
        );
    }

    #[test]
    fn mistakes_name_the_table_and_column() {
        let m =
            message(Rules::parse("[tables.users.columns]\nemail = \"fake_mail\"\n").unwrap_err());
        assert!(
            m.contains("\"users\"") && m.contains("\"email\"") && m.contains("fake_mail"),
            "{m}"
        );
        let m = message(
            Rules::parse("[tables.users.columns]\nnotes = { truncate = -1 }\n").unwrap_err(),
        );
        assert!(m.contains("\"notes\"") && m.contains("truncate"), "{m}");
        let m = message(
            Rules::parse("[tables.users.columns]\np = { json = { \"a..b\" = \"null\" } }\n")
                .unwrap_err(),
        );
        assert!(m.contains("\"p\"") && m.contains("a..b"), "{m}");
        let m = message(
            Rules::parse("[tables.users.columns]\nl = { template = \"x{id\" }\n").unwrap_err(),
        );
        assert!(m.contains("\"l\""), "{m}");
        let m = message(
            Rules::parse(
                "[tables.users.rows]\ndelete_older_than = { column = \"c\", age = \"soon\" }\n",
            )
            .unwrap_err(),
        );
        assert!(
            m.contains("\"users\"") && m.contains("\"c\"") && m.contains("soon"),
            "{m}"
        );
        let m = message(Rules::parse("[tables.users]\ndrop_all_row = true\n").unwrap_err());
        assert!(m.contains("drop_all_row"), "{m}");
        let m = message(Rules::parse("[table.users]\n").unwrap_err());
        assert!(m.contains("\"table\""), "{m}");
        let m = message(Rules::parse("not toml at all = = =").unwrap_err());
        assert!(m.contains("not valid TOML"), "{m}");
        let m = message(
            Rules::parse("[tables.t.rows]\nkeep_where = { column = \"c\" }\n").unwrap_err(),
        );
        assert!(m.contains("exactly one"), "{m}");
    }

    #[test]
    fn templates_parse_columns_and_braces() {
        let t = Template::parse("anon-{id}@{{x}}-{ tenant }").unwrap();
        assert_eq!(
            t.parts,
            vec![
                TemplatePart::Text("anon-".into()),
                TemplatePart::Column("id".into()),
                TemplatePart::Text("@{x}-".into()),
                TemplatePart::Column("tenant".into()),
            ]
        );
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["id", "tenant"]);
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("{}").is_err());
    }
}
