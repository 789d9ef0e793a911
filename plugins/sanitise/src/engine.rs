//! The sanitiser's state for one step: the rules, the unique columns of the
//! live schema, and a plan per table (column indices resolved once, not per
//! row).

use crate::json::apply_paths;
use crate::mask::{Keyed, apply, mask_into};
use crate::rules::{Action, Rules, TableRules, TemplatePart, bare};
use crate::time::parse_timestamp;
use envsync_plugin_sdk::rows::{RowBatchBuilder, check, pack, unpack, values};
use envsync_plugin_sdk::{Error, Row, RowBatch, TableInfo};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::rc::Rc;

/// A configured sanitiser.
#[derive(Debug)]
pub struct Sanitiser {
    rules: Rules,
    started_at: i64,
    /// Unique columns per table, as the schema names the table.
    unique: HashMap<String, HashSet<String>>,
    /// Plans by table name, with the columns they were made for.
    plans: HashMap<String, (Vec<String>, Option<Rc<Plan>>)>,
}

/// How to sanitise the rows of one table with one column list.
#[derive(Debug)]
struct Plan {
    drop_all: bool,
    /// Column index and the oldest Unix second kept.
    older: Option<(usize, i64)>,
    keep_where: Option<(usize, Vec<String>)>,
    ops: Vec<Op>,
    templates: Vec<(usize, Vec<Piece>)>,
    json_columns: Vec<(usize, Rc<Action>)>,
    /// Per column: whether a rule reads or writes it (the others pass as
    /// they are).
    touched: Vec<bool>,
    /// When only per-column actions apply (no row filter, template or JSON
    /// path): per column, the index of its op.
    column_ops: Option<Vec<Option<usize>>>,
    table: String,
    columns: Vec<String>,
}

#[derive(Debug)]
struct Op {
    index: usize,
    action: Action,
    unique: bool,
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Column(usize),
}

impl Sanitiser {
    /// Parses `rules` for a run that started at `started_at` (Unix
    /// seconds); returns the sanitiser and the tables and indices it acts
    /// on.
    pub fn configure(rules: &str, started_at: i64) -> Result<(Sanitiser, Vec<String>), Error> {
        let rules = Rules::parse(rules)?;
        let targets = rules.targets();
        Ok((
            Sanitiser {
                rules,
                started_at,
                unique: HashMap::new(),
                plans: HashMap::new(),
            },
            targets,
        ))
    }

    /// Remembers the unique columns of `schema` and returns every
    /// `table.column` the rules do not cover (fail closed: a table without
    /// rules is uncovered entirely; `drop_all_rows` covers its table).
    pub fn uncovered(&mut self, schema: &[TableInfo]) -> Vec<String> {
        self.plans.clear();
        let mut uncovered = Vec::new();
        for table in schema {
            let unique: HashSet<String> = table
                .columns
                .iter()
                .filter(|c| c.unique)
                .map(|c| c.name.clone())
                .collect();
            self.unique.insert(table.name.clone(), unique);
            let rules = self.rules.table(&table.name);
            // An index's fields (dotted paths) are covered by its
            // `[documents.INDEX]` paths: the path itself or a parent of it.
            let documents = self
                .rules
                .documents(&table.name)
                .or_else(|| self.rules.documents(bare(&table.name)));
            for column in &table.columns {
                let by_table = rules.is_some_and(|r| r.covers(&column.name));
                let by_documents = documents.is_some_and(|d| {
                    d.paths.iter().any(|(path, _)| {
                        let p = path.as_str().trim_start_matches("$.").replace("[]", "");
                        column.name == p || column.name.starts_with(&format!("{p}."))
                    })
                });
                if !by_table && !by_documents {
                    uncovered.push(format!("{}.{}", table.name, column.name));
                }
            }
        }
        uncovered
    }

    fn unique_columns(&self, table: &str) -> Option<&HashSet<String>> {
        self.unique.get(table).or_else(|| {
            let name = bare(table);
            self.unique
                .iter()
                .find(|(t, _)| bare(t) == name)
                .map(|(_, u)| u)
        })
    }

    fn plan(&mut self, table: &str, columns: &[String]) -> Result<Option<Rc<Plan>>, Error> {
        if let Some((cols, plan)) = self.plans.get(table)
            && cols == columns
        {
            return Ok(plan.clone());
        }
        let plan = match self.rules.table(table) {
            None => None,
            Some(rules) => Some(Rc::new(make_plan(
                table,
                columns,
                rules,
                self.unique_columns(table),
                self.started_at,
            )?)),
        };
        self.plans
            .insert(table.to_string(), (columns.to_vec(), plan.clone()));
        Ok(plan)
    }

    /// Sanitises one packed batch of `table`'s rows: drops the rows the row
    /// rules reject and masks the rest. Every row keeps its number of
    /// values. Columns no rule reads or writes are copied as they are; the
    /// others go through one reused row, so a batch costs no allocation per
    /// value.
    pub fn transform_batch<K: Keyed + ?Sized>(
        &mut self,
        table: &str,
        columns: &[String],
        batch: RowBatch,
        keyed: &K,
    ) -> Result<RowBatch, Error> {
        let Some(plan) = self.plan(table, columns)? else {
            return Ok(batch);
        };
        let width = columns.len();
        if batch.ends.len() as u64 != u64::from(batch.rows) * width as u64 {
            return Err(Error::Other(format!(
                "table {table:?}: a batch of {} values for {} rows of {width} columns",
                batch.ends.len(),
                batch.rows
            )));
        }
        if plan.drop_all {
            return Ok(RowBatchBuilder::new(width).finish());
        }
        if plan.touched.iter().all(|t| !t) {
            return Ok(batch); // every column kept
        }
        let mut out = RowBatchBuilder::with_capacity(width, batch.ends.len(), batch.data.len());
        if let Some(ops) = &plan.column_ops {
            // No rule needs the whole row: masked values one by one, and
            // each run of kept values in between copied in one piece.
            let text = check(&batch, width)?;
            let mut scratch = String::new();
            let mut run = 0; // first value of the pending run of kept values
            // The column of value i, counted (a division per value costs
            // more than the copy it decides).
            let mut column = width - 1;
            for i in 0..batch.ends.len() {
                column = if column + 1 == width { 0 } else { column + 1 };
                let Some(op) = ops[column].map(|o| &plan.ops[o]) else {
                    continue;
                };
                out.push_run(&batch, run, i - run);
                run = i + 1;
                if batch.nulls[i / 8] & (1 << (i % 8)) != 0 {
                    out.push(None);
                    continue;
                }
                let start = if i == 0 {
                    0
                } else {
                    batch.ends[i - 1] as usize
                };
                let value = &text[start..batch.ends[i] as usize];
                mask_into(&op.action, op.unique, value, &mut out, &mut scratch, keyed);
            }
            out.push_run(&batch, run, batch.ends.len() - run);
            return Ok(out.finish());
        }
        let mut row: Row = vec![None; width];
        let mut current: Vec<Option<&str>> = Vec::with_capacity(width);
        let mut values = values(&batch);
        for _ in 0..batch.rows {
            current.clear();
            current.extend(values.by_ref().take(width));
            for (i, slot) in row.iter_mut().enumerate() {
                if plan.touched[i] {
                    refill(slot, current[i]);
                }
            }
            if !plan.keeps(&row)? {
                continue;
            }
            plan.mask(&mut row, keyed)?;
            for (i, value) in current.iter().enumerate() {
                out.push(if plan.touched[i] {
                    row[i].as_deref()
                } else {
                    *value
                });
            }
        }
        Ok(out.finish())
    }

    /// [`Self::transform_batch`] over unpacked rows.
    pub fn transform_rows<K: Keyed + ?Sized>(
        &mut self,
        table: &str,
        columns: &[String],
        rows: Vec<Row>,
        keyed: &K,
    ) -> Result<Vec<Row>, Error> {
        if let Some(bad) = rows.iter().position(|r| r.len() != columns.len()) {
            return Err(Error::Other(format!(
                "table {table:?}: row {bad} of the batch has {} values for {} columns",
                rows[bad].len(),
                columns.len()
            )));
        }
        let batch = self.transform_batch(table, columns, pack(columns.len(), &rows), keyed)?;
        unpack(&batch, columns.len())
    }

    /// Sanitises a batch of `index`'s JSON documents; an index without
    /// rules passes unchanged.
    pub fn transform_documents<K: Keyed + ?Sized>(
        &self,
        index: &str,
        mut documents: Vec<String>,
        keyed: &K,
    ) -> Result<Vec<String>, Error> {
        let Some(rules) = self.rules.documents(index) else {
            return Ok(documents);
        };
        for (i, doc) in documents.iter_mut().enumerate() {
            let mut value: serde_json::Value = serde_json::from_str(doc).map_err(|e| {
                Error::Other(format!(
                    "index {index:?}: document {i} of the batch is not valid JSON: {e}"
                ))
            })?;
            apply_paths(&mut value, &rules.paths, keyed);
            *doc = value.to_string();
        }
        Ok(documents)
    }
}

fn index_of(table: &str, columns: &[String], column: &str, what: &str) -> Result<usize, Error> {
    columns.iter().position(|c| c == column).ok_or_else(|| {
        Error::InvalidParam(format!(
            "table {table:?}, column {column:?}: {what} names a column the table does not have \
             (it has {})",
            columns.join(", ")
        ))
    })
}

fn make_plan(
    table: &str,
    columns: &[String],
    rules: &TableRules,
    unique: Option<&HashSet<String>>,
    started_at: i64,
) -> Result<Plan, Error> {
    let older = match &rules.delete_older_than {
        Some(f) => Some((
            index_of(table, columns, &f.column, "delete_older_than")?,
            started_at.saturating_sub(f.age_secs),
        )),
        None => None,
    };
    let keep_where = match &rules.keep_where {
        Some(k) => Some((
            index_of(table, columns, &k.column, "keep_where")?,
            k.values.clone(),
        )),
        None => None,
    };
    let mut ops = Vec::new();
    let mut templates = Vec::new();
    let mut json_columns = Vec::new();
    for (column, action) in &rules.columns {
        // A rule for a column the dump does not have does nothing (the
        // schema check reports the columns rules miss, not the reverse).
        let Some(index) = columns.iter().position(|c| c == column) else {
            continue;
        };
        match action {
            Action::Keep => {}
            Action::Template(t) => {
                let mut pieces = Vec::new();
                for part in &t.parts {
                    pieces.push(match part {
                        TemplatePart::Text(s) => Piece::Text(s.clone()),
                        TemplatePart::Column(c) => Piece::Column(index_of(table, columns, c, "the template of column")
                            .map_err(|_| {
                                Error::InvalidParam(format!(
                                    "table {table:?}, column {column:?}: the template refers to \
                                     {{{c}}}, which the table does not have (it has {})",
                                    columns.join(", ")
                                ))
                            })?),
                    });
                }
                templates.push((index, pieces));
            }
            Action::Json(_) => json_columns.push((index, Rc::new(action.clone()))),
            other => ops.push(Op {
                index,
                action: other.clone(),
                unique: unique.is_some_and(|u| u.contains(column)),
            }),
        }
    }
    let mut touched = vec![false; columns.len()];
    let read = older.iter().map(|(i, _)| *i);
    let read = read.chain(keep_where.iter().map(|(i, _)| *i));
    let written = ops.iter().map(|op| op.index);
    let written = written.chain(json_columns.iter().map(|(i, _)| *i));
    let templated = templates.iter().flat_map(|(i, pieces)| {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Column(c) => Some(*c),
                Piece::Text(_) => None,
            })
            .chain([*i])
    });
    for i in read.chain(written).chain(templated) {
        touched[i] = true;
    }
    let column_ops = (older.is_none()
        && keep_where.is_none()
        && templates.is_empty()
        && json_columns.is_empty())
    .then(|| {
        let mut by_column = vec![None; columns.len()];
        for (o, op) in ops.iter().enumerate() {
            by_column[op.index] = Some(o);
        }
        by_column
    });
    Ok(Plan {
        drop_all: rules.drop_all_rows,
        touched,
        column_ops,
        older,
        keep_where,
        ops,
        templates,
        json_columns,
        table: table.to_string(),
        columns: columns.to_vec(),
    })
}

impl Plan {
    /// Whether the row rules keep `row` (on its original values).
    fn keeps(&self, row: &Row) -> Result<bool, Error> {
        if let Some((i, values)) = &self.keep_where {
            match &row[*i] {
                Some(v) if values.iter().any(|k| k == v) => {}
                _ => return Ok(false),
            }
        }
        if let Some((i, oldest)) = self.older
            && let Some(v) = &row[i]
        {
            let t = parse_timestamp(v).ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                Error::Other(format!(
                    "table {:?}, column {:?}: delete_older_than: {shown:?} is not a date or \
                     timestamp",
                    self.table, self.columns[i]
                ))
            })?;
            return Ok(t >= oldest);
        }
        Ok(true)
    }

    /// Masks one row in place: plain actions, JSON columns, then templates
    /// (which see the other columns already masked, so they never leak a
    /// clear value).
    fn mask<K: Keyed + ?Sized>(&self, row: &mut Row, keyed: &K) -> Result<(), Error> {
        for op in &self.ops {
            let slot = &mut row[op.index];
            if let Some(value) = slot
                && !apply(&op.action, op.unique, value, keyed)
            {
                *slot = None;
            }
        }
        for (i, action) in &self.json_columns {
            let Action::Json(paths) = &**action else {
                continue;
            };
            if let Some(text) = &mut row[*i] {
                let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    Error::Other(format!(
                        "table {:?}, column {:?}: the value is not valid JSON ({e}); give the \
                         column a plain action instead of `json`",
                        self.table, self.columns[*i]
                    ))
                })?;
                apply_paths(&mut value, paths, keyed);
                text.clear();
                let _ = write!(text, "{value}");
            }
        }
        for (i, pieces) in &self.templates {
            if row[*i].is_none() {
                continue;
            }
            let mut out = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(s) => out.push_str(s),
                    Piece::Column(c) => out.push_str(row[*c].as_deref().unwrap_or("")),
                }
            }
            row[*i] = Some(out);
        }
        Ok(())
    }
}

/// Sets `slot` to `value`, reusing the string it holds.
fn refill(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(held), Some(v)) => {
            held.clear();
            held.push_str(v);
        }
        (_, v) => *slot = v.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::tests::test_keyed;
    use envsync_plugin_sdk::ColumnInfo;

    const RULES: &str = r#"
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
[tables.orders.columns]
id = "keep"
customer_email = "fake_email"
[tables.audit_log]
drop_all_rows = true
[documents.customers]
"email" = "fake_email"
"name" = "fake_name"
"#;

    // 2024-08-01 00:00:00 UTC; 90 days before is 2024-05-03.
    const STARTED: i64 = 1_722_470_400;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn row(values: &[Option<&str>]) -> Row {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    const USER_COLUMNS: &[&str] = &[
        "id",
        "email",
        "name",
        "phone",
        "address",
        "bio",
        "ssn",
        "token",
        "country",
        "notes",
        "login",
        "profile",
        "created_at",
    ];

    fn user(id: &str, email: &str, country: &str, created: &str) -> Row {
        row(&[
            Some(id),
            Some(email),
            Some("Jane Doe"),
            Some("+44 20 7946 0000"),
            Some("10 Downing Street"),
            Some("Likes long walks."),
            Some("AB123456C"),
            Some("secret-token"),
            Some(country),
            Some("Called on Tuesday about the refund of order 4411"),
            Some("jane"),
            Some(
                r#"{"email":"Jane@X.org","phone":"0123","address":{"street":"1 Real Rd"},"tags":["vip"],"other":1}"#,
            ),
            Some(created),
        ])
    }

    fn configured() -> Sanitiser {
        Sanitiser::configure(RULES, STARTED).unwrap().0
    }

    fn schema(table: &str, columns: &[(&str, bool)]) -> TableInfo {
        TableInfo {
            name: table.into(),
            columns: columns
                .iter()
                .map(|(n, u)| ColumnInfo {
                    name: n.to_string(),
                    data_type: "text".into(),
                    nullable: true,
                    unique: *u,
                })
                .collect(),
        }
    }

    #[test]
    fn configure_lists_tables_and_indices() {
        let (_, targets) = Sanitiser::configure(RULES, STARTED).unwrap();
        let mut targets = targets;
        targets.sort();
        assert_eq!(targets, vec!["audit_log", "customers", "orders", "users"]);
        assert!(matches!(
            Sanitiser::configure("[tables.t.columns]\nc = \"shred\"", 0),
            Err(Error::InvalidParam(_))
        ));
    }

    #[test]
    fn masks_every_action_and_filters_rows() {
        let mut s = configured();
        let rows = vec![
            user("1", "Jane@X.org", "GB", "2024-07-01 10:00:00+00"),
            user("2", "old@x.org", "GB", "2024-01-01T00:00:00Z"), // too old
            user("3", "de@x.org", "DE", "2024-07-01"),            // not kept by country
            user("4", "fr@x.org", "FR", "2024-05-04"),
        ];
        let columns = cols(USER_COLUMNS);
        let out = s
            .transform_rows("public.users", &columns, rows, &test_keyed)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(
            out.iter().all(|r| r.len() == columns.len()),
            "never reshaped"
        );
        let r = &out[0];
        let v = |i: usize| r[i].as_deref();
        assert_eq!(v(0), Some("1"));
        let mut email = "jane@x.org".to_string();
        apply(&Action::FakeEmail, false, &mut email, &test_keyed);
        assert_eq!(v(1), Some(email.as_str()));
        assert_ne!(v(2), Some("Jane Doe"));
        assert!(v(3).unwrap().starts_with("+44 7700 900"));
        assert_ne!(v(4), Some("10 Downing Street"));
        assert_eq!(v(5).unwrap().len(), "Likes long walks.".len());
        assert!(v(5).unwrap().starts_with("Lorem"));
        assert_eq!(v(6), None);
        assert_eq!(v(7).unwrap().len(), 64);
        assert_eq!(v(8), Some("GB"));
        assert_eq!(v(9), Some("Called on Tuesday ab"));
        assert_eq!(v(10), Some("anon-1@example.com"));
        let profile: serde_json::Value = serde_json::from_str(v(11).unwrap()).unwrap();
        assert_eq!(
            profile["email"],
            serde_json::json!(email),
            "same mask inside JSON"
        );
        assert_eq!(profile["phone"], serde_json::Value::Null);
        assert_ne!(profile["address"]["street"], serde_json::json!("1 Real Rd"));
        assert_eq!(profile["tags"], serde_json::json!(["Lor"]));
        assert_eq!(profile["other"], serde_json::json!(1));
        assert_eq!(v(12), Some("2024-07-01 10:00:00+00"));
        assert_eq!(out[1][0].as_deref(), Some("4"));
    }

    #[test]
    fn masks_are_deterministic_across_tables_and_runs() {
        let mut a = configured();
        let users = a
            .transform_rows(
                "users",
                &cols(USER_COLUMNS),
                vec![user("1", "Jane@X.org", "GB", "2024-07-01")],
                &test_keyed,
            )
            .unwrap();
        let mut b = configured(); // another run, same salt
        let orders = b
            .transform_rows(
                "shop.orders",
                &cols(&["id", "customer_email"]),
                vec![row(&[Some("9"), Some("jane@x.org")])],
                &test_keyed,
            )
            .unwrap();
        assert_eq!(
            users[0][1], orders[0][1],
            "the join on the masked email survives"
        );
    }

    #[test]
    fn column_and_row_paths_mask_alike() {
        // Table a has column actions only (masked value by value); b the
        // same actions plus a row filter that keeps every row (masked row
        // by row). Both must give the same values.
        let actions = "id = \"keep\"\nemail = \"fake_email\"\nname = \"fake_name\"\n\
                       bio = \"lorem\"\nssn = \"null\"\ncode = { fixed = \"X\" }\n\
                       token = \"hash\"\nnote = { truncate = 3 }\nkind = \"keep\"\n";
        let rules = format!(
            "[tables.a.columns]\n{actions}[tables.b.columns]\n{actions}\
             [tables.b.rows]\nkeep_where = {{ column = \"kind\", in = [\"k\"] }}\n"
        );
        let mut s = Sanitiser::configure(&rules, STARTED).unwrap().0;
        let columns = cols(&[
            "id", "email", "name", "bio", "ssn", "code", "token", "note", "kind",
        ]);
        let rows: Vec<Row> = (0..20)
            .map(|i| {
                let id = i.to_string();
                let email = format!("p{i}@x.org");
                row(&[
                    Some(id.as_str()),
                    (i % 3 != 0).then_some(email.as_str()),
                    Some("Ann Lee"),
                    Some("tab\there ünï"),
                    Some("AB123456C"),
                    None,
                    Some("t"),
                    Some("abcdef"),
                    Some("k"),
                ])
            })
            .collect();
        let a = s
            .transform_rows("a", &columns, rows.clone(), &test_keyed)
            .unwrap();
        let b = s.transform_rows("b", &columns, rows, &test_keyed).unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(a, b);
        assert_eq!(a[1][7].as_deref(), Some("abc"));
        assert_eq!(a[0][1], None);
        assert_eq!(a[1][4], None);
    }

    #[test]
    fn nulls_stay_null_and_other_tables_pass_unchanged() {
        let mut s = configured();
        let rows = vec![row(&[Some("1"), None])];
        let out = s
            .transform_rows(
                "orders",
                &cols(&["id", "customer_email"]),
                rows.clone(),
                &test_keyed,
            )
            .unwrap();
        assert_eq!(out, rows);
        let other = vec![row(&[Some("x@y.z"), None, Some("3")])];
        let out = s
            .transform_rows(
                "products",
                &cols(&["a", "b", "c"]),
                other.clone(),
                &test_keyed,
            )
            .unwrap();
        assert_eq!(out, other);
        let out = s
            .transform_rows(
                "public.audit_log",
                &cols(&["a"]),
                vec![row(&[Some("x")])],
                &test_keyed,
            )
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn document_paths_cover_index_fields() {
        let mut s = configured();
        let uncovered = s.uncovered(&[schema(
            "customers",
            &[("email", false), ("name", false), ("tier", false)],
        )]);
        assert_eq!(uncovered, vec!["customers.tier"], "{uncovered:?}");
    }

    #[test]
    fn uncovered_fails_closed_and_remembers_unique_columns() {
        let mut s = configured();
        let uncovered = s.uncovered(&[
            schema(
                "public.users",
                &[
                    ("id", true),
                    ("email", true),
                    ("created_at", false),
                    ("shoe_size", false),
                ],
            ),
            schema("public.audit_log", &[("who", false), ("what", false)]),
            schema("public.payments", &[("card", false)]),
        ]);
        assert_eq!(
            uncovered,
            vec!["public.users.shoe_size", "public.payments.card"]
        );

        let (mut s, _) = Sanitiser::configure(
            "[tables.people.columns]\nid = \"keep\"\nname = \"fake_name\"\ncountry = { fixed = \"GB\" }\n",
            0,
        )
        .unwrap();
        let uncovered = s.uncovered(&[schema(
            "crm.people",
            &[("id", true), ("name", true), ("country", true)],
        )]);
        assert!(uncovered.is_empty());
        let columns = cols(&["id", "name", "country"]);
        let out = s
            .transform_rows(
                "crm.people",
                &columns,
                vec![
                    row(&[Some("1"), Some("Jane Doe"), Some("FR")]),
                    row(&[Some("2"), Some("Jane Doe "), Some("GB")]),
                ],
                &test_keyed,
            )
            .unwrap();
        assert_ne!(out[0][1], out[1][1], "unique fake names stay unique");
        assert_ne!(out[0][2], out[1][2], "unique fixed values stay unique");
        assert!(out[0][2].as_deref().unwrap().starts_with("GB-"));
    }

    #[test]
    fn data_errors_name_the_table_and_column() {
        let mut s = configured();
        let mut bad = user("1", "a@b.c", "GB", "2024-07-01");
        bad[11] = Some("{not json".into());
        let e = s
            .transform_rows("users", &cols(USER_COLUMNS), vec![bad], &test_keyed)
            .unwrap_err();
        assert!(
            matches!(&e, Error::Other(m) if m.contains("\"users\"") && m.contains("\"profile\"")),
            "{e:?}"
        );
        let e = s
            .transform_rows(
                "users",
                &cols(USER_COLUMNS),
                vec![user("1", "a@b.c", "GB", "last week")],
                &test_keyed,
            )
            .unwrap_err();
        assert!(
            matches!(&e, Error::Other(m) if m.contains("\"created_at\"")),
            "{e:?}"
        );
        // A row rule on a column the table lacks is a rules error.
        let e = s
            .transform_rows("users", &cols(&["id", "email"]), vec![], &test_keyed)
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParam(m) if m.contains("\"created_at\"")),
            "{e:?}"
        );
        let (mut t, _) =
            Sanitiser::configure("[tables.t.columns]\nl = { template = \"{nope}\" }", 0).unwrap();
        let e = t
            .transform_rows("t", &cols(&["l"]), vec![], &test_keyed)
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidParam(m) if m.contains("\"l\"") && m.contains("nope")),
            "{e:?}"
        );
        let e = s
            .transform_rows(
                "orders",
                &cols(&["id", "customer_email"]),
                vec![row(&[Some("1")])],
                &test_keyed,
            )
            .unwrap_err();
        assert!(
            matches!(&e, Error::Other(m) if m.contains("1 values for 2 columns")),
            "{e:?}"
        );
    }

    #[test]
    fn documents_use_the_same_masks() {
        let s = configured();
        let docs = vec![r#"{"email":"Jane@X.org","name":"Jane Doe","plan":"gold"}"#.to_string()];
        let out = s
            .transform_documents("customers", docs, &test_keyed)
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
        let mut email = "Jane@X.org".to_string();
        apply(&Action::FakeEmail, false, &mut email, &test_keyed);
        assert_eq!(doc["email"], serde_json::json!(email));
        assert_ne!(doc["name"], serde_json::json!("Jane Doe"));
        assert_eq!(doc["plan"], serde_json::json!("gold"));
        let same = vec!["not even json".to_string()];
        assert_eq!(
            s.transform_documents("other", same.clone(), &test_keyed)
                .unwrap(),
            same
        );
        let e = s
            .transform_documents("customers", same, &test_keyed)
            .unwrap_err();
        assert!(
            matches!(&e, Error::Other(m) if m.contains("\"customers\"")),
            "{e:?}"
        );
    }

    #[test]
    fn pgbench_shape_needs_no_hash() {
        let (mut s, _) = Sanitiser::configure(
            "[tables.pgbench_accounts.columns]\naid = \"keep\"\nbid = \"keep\"\nabalance = { fixed = \"0\" }\nfiller = \"lorem\"\n",
            0,
        )
        .unwrap();
        let never = |_: &[u8]| -> [u8; 32] { panic!("no hash for lorem and fixed") };
        let columns = cols(&["aid", "bid", "abalance", "filler"]);
        let rows = (0..1000)
            .map(|i| {
                row(&[
                    Some(&i.to_string()),
                    Some("1"),
                    Some("-4211"),
                    Some(&" ".repeat(84)),
                ])
            })
            .collect();
        let out = s
            .transform_rows("public.pgbench_accounts", &columns, rows, &never)
            .unwrap();
        assert_eq!(out.len(), 1000);
        assert_eq!(out[7][2].as_deref(), Some("0"));
        assert_eq!(out[7][3].as_deref().unwrap().len(), 84);
    }
}
