//! Secondary keys and foreign keys built after the rows of a chunked
//! restore, not maintained row by row while they load.
//!
//! InnoDB inserts each loaded row into every secondary index of its table,
//! at a random place in each B-tree; `ALTER TABLE … ADD KEY` on a loaded
//! table sorts the rows once and builds the index bottom-up, and
//! (with `foreign_key_checks=0`) adds a foreign key without reading a row.
//! So, once the schema is in, the keys of each table that has rows to load
//! are dropped and recorded in the bookkeeping table `envsync-restore-keys`,
//! and after the last chunk each table gets them back in one `ALTER TABLE`,
//! tables spread over the restore's sessions. The clauses are the table's
//! own `SHOW CREATE TABLE` lines, in their order, so the restored
//! definitions are the source's.
//!
//! A table keeps its keys (nothing of it is deferred) unless every
//! secondary key is a plain B-tree (`KEY`/`UNIQUE KEY`) whose first column
//! is not the table's AUTO_INCREMENT column (which must stay indexed), the
//! table is InnoDB and not system-versioned, every foreign key that
//! references it uses its primary key (which is never dropped), and each
//! key and foreign key is found as exactly one line of its definition.
//! Deferring is only a speed-up; anything unexpected keeps a table as the
//! schema made it.
//!
//! Resume: each table's keys come back in one `ALTER TABLE`, which MariaDB
//! applies whole or not at all; a rerun adds, from the recorded clauses,
//! only the names the table does not have yet.

use crate::batch::{Row, text};
use crate::catalog::QUERY_SCRIPT_MAX;
use crate::sql::{SESSION_START, hex, ident};
use envsync_plugin_sdk::sessions;
use std::collections::{BTreeMap, BTreeSet};

pub const KEYS_TABLE: &str = "envsync-restore-keys";

/// What a deferred clause adds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Key,
    ForeignKey,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::ForeignKey => "foreign-key",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<Kind> {
        match tag {
            b"key" => Some(Kind::Key),
            b"foreign-key" => Some(Kind::ForeignKey),
            _ => None,
        }
    }
}

/// One key or foreign key taken out of a table: its name and the clause of
/// `ALTER TABLE … ADD` that puts it back (`KEY \`k\` (\`c\`)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    pub kind: Kind,
    pub name: String,
    pub text: String,
}

/// A table's deferred keys and foreign keys, in definition order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableKeys {
    pub table: String,
    pub clauses: Vec<Clause>,
}

/// The bookkeeping table, created with the others.
pub fn create_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (tbl VARBINARY(1024) NOT NULL, seq INT NOT NULL, \
         kind VARBINARY(16) NOT NULL, name VARBINARY(1024) NOT NULL, clause LONGBLOB NOT NULL, \
         PRIMARY KEY (tbl, seq)) ENGINE=InnoDB;\n",
        ident(KEYS_TABLE)
    )
}

/// What the plan is decided from, one statement per kind of fact; each row
/// starts with its kind.
pub fn facts_query() -> String {
    format!(
        "{SESSION_START}\
         SELECT 'T', TABLE_NAME FROM information_schema.TABLES \
           WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' AND ENGINE = 'InnoDB';\n\
         SELECT 'I', TABLE_NAME, INDEX_NAME, NON_UNIQUE, INDEX_TYPE, COLUMN_NAME \
           FROM information_schema.STATISTICS \
           WHERE TABLE_SCHEMA = DATABASE() AND SEQ_IN_INDEX = 1;\n\
         SELECT 'A', TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
           WHERE TABLE_SCHEMA = DATABASE() AND EXTRA LIKE '%auto_increment%';\n\
         SELECT 'F', TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME, UNIQUE_CONSTRAINT_NAME, \
           IF(UNIQUE_CONSTRAINT_SCHEMA = DATABASE(), 'here', 'elsewhere') \
           FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE();\n"
    )
}

/// The catalogue facts of the scratch database.
#[derive(Debug, Default)]
pub struct Facts {
    innodb: BTreeSet<String>,
    /// table → (index name, unique, index type, first column), PRIMARY included.
    indexes: BTreeMap<String, Vec<(String, bool, String, String)>>,
    auto_increment: BTreeMap<String, String>,
    /// (table, name, referenced table in this database, unique constraint it uses).
    foreign_keys: Vec<(String, String, Option<String>, String)>,
}

impl Facts {
    pub fn from_rows(rows: &[Row]) -> Result<Facts, String> {
        let mut facts = Facts::default();
        for row in rows {
            let f: Vec<String> = row.iter().map(text).collect();
            match f.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["T", table] => {
                    facts.innodb.insert(table.into());
                }
                ["I", table, index, non_unique, kind, column] => {
                    facts.indexes.entry(table.into()).or_default().push((
                        index.into(),
                        non_unique == "0",
                        kind.into(),
                        column.into(),
                    ));
                }
                ["A", table, column] => {
                    facts.auto_increment.insert(table.into(), column.into());
                }
                ["F", table, name, referenced, unique, here] => facts.foreign_keys.push((
                    table.into(),
                    name.into(),
                    (here == "here").then(|| referenced.to_string()),
                    unique.into(),
                )),
                _ => return Err(format!("unexpected catalogue row {f:?}")),
            }
        }
        Ok(facts)
    }

    /// The InnoDB tables.
    pub fn tables(&self) -> BTreeSet<String> {
        self.innodb.clone()
    }

    /// The tables among `candidates` whose keys may be deferred and their
    /// secondary key and foreign key names, before their definitions are
    /// read.
    pub fn deferrable(
        &self,
        candidates: &BTreeSet<String>,
    ) -> Vec<(String, Vec<String>, Vec<String>)> {
        let mut out = Vec::new();
        for table in candidates.iter().filter(|t| self.innodb.contains(*t)) {
            // Referenced through anything but its primary key: that key stays.
            if self.foreign_keys.iter().any(|(_, _, referenced, unique)| {
                referenced.as_deref() == Some(table.as_str()) && unique != "PRIMARY"
            }) {
                continue;
            }
            let auto = self.auto_increment.get(table);
            let secondary: Vec<_> = self
                .indexes
                .get(table)
                .into_iter()
                .flatten()
                .filter(|(name, ..)| name != "PRIMARY")
                .collect();
            let plain = secondary
                .iter()
                .all(|(_, _, kind, first)| kind == "BTREE" && Some(first) != auto);
            if !plain {
                continue;
            }
            let keys: Vec<String> = secondary.iter().map(|(name, ..)| name.clone()).collect();
            let fks: Vec<String> = self
                .foreign_keys
                .iter()
                .filter(|(t, ..)| t == table)
                .map(|(_, name, ..)| name.clone())
                .collect();
            if !keys.is_empty() || !fks.is_empty() {
                out.push((table.clone(), keys, fks));
            }
        }
        out
    }
}

/// `SHOW CREATE TABLE` of each of `tables`, a client run per batch of
/// statements under [`QUERY_SCRIPT_MAX`] (a schema may have thousands of
/// tables; a client start costs milliseconds).
pub fn show_create_scripts(tables: &[String]) -> Vec<String> {
    let mut scripts = Vec::new();
    let mut script = String::from(SESSION_START);
    for table in tables {
        let line = format!("SHOW CREATE TABLE {};\n", ident(table));
        if script.len() > SESSION_START.len() && script.len() + line.len() > QUERY_SCRIPT_MAX {
            scripts.push(std::mem::replace(&mut script, String::from(SESSION_START)));
        }
        script.push_str(&line);
    }
    if script.len() > SESSION_START.len() {
        scripts.push(script);
    }
    scripts
}

/// The `create` statement of each table from what those scripts printed
/// (table name, statement; one row per table).
pub fn definitions(rows: &[Row]) -> Result<BTreeMap<String, String>, String> {
    rows.iter()
        .map(|row| match &row[..] {
            [Some(table), Some(create)] => Ok((
                String::from_utf8_lossy(table).into_owned(),
                String::from_utf8_lossy(create).into_owned(),
            )),
            _ => Err(format!("unexpected SHOW CREATE TABLE row {row:?}")),
        })
        .collect()
}

/// The clauses of `keys` and `fks` as lines of the table's `create`
/// statement (SHOW CREATE TABLE), in the statement's order; None when the
/// definition is not what this expects (the table then keeps its keys).
pub fn clauses(create: &str, keys: &[String], fks: &[String]) -> Option<Vec<Clause>> {
    if create.contains("WITH SYSTEM VERSIONING") {
        return None;
    }
    let wanted: Vec<(Kind, &String, Vec<String>)> = keys
        .iter()
        .map(|k| {
            let id = ident(k);
            (
                Kind::Key,
                k,
                vec![format!("KEY {id} ("), format!("UNIQUE KEY {id} (")],
            )
        })
        .chain(fks.iter().map(|f| {
            (
                Kind::ForeignKey,
                f,
                vec![format!("CONSTRAINT {} FOREIGN KEY (", ident(f))],
            )
        }))
        .collect();
    let mut found: Vec<(usize, Clause)> = Vec::new();
    for (kind, name, prefixes) in &wanted {
        let mut lines = create.lines().enumerate().filter_map(|(n, line)| {
            let body = line.strip_prefix("  ")?;
            prefixes
                .iter()
                .any(|p| body.starts_with(p.as_str()))
                .then(|| (n, body.strip_suffix(',').unwrap_or(body)))
        });
        let (n, body) = lines.next()?;
        if lines.next().is_some() {
            return None;
        }
        found.push((
            n,
            Clause {
                kind: *kind,
                name: (*name).clone(),
                text: body.to_string(),
            },
        ));
    }
    found.sort_by_key(|(n, _)| *n);
    Some(found.into_iter().map(|(_, c)| c).collect())
}

/// Records `tables`' clauses and drops them: foreign keys first (an index a
/// foreign key needs cannot go before it).
pub fn defer_script(tables: &[TableKeys]) -> String {
    let mut out = String::from("SET SESSION foreign_key_checks = 0;\n");
    for t in tables {
        for (seq, c) in t.clauses.iter().enumerate() {
            out.push_str(&format!(
                "INSERT INTO {} VALUES ({}, {seq}, {}, {}, {});\n",
                ident(KEYS_TABLE),
                hex(&t.table),
                hex(c.kind.tag()),
                hex(&c.name),
                hex(&c.text)
            ));
        }
        let drops = |kind: Kind, what: &str| -> Vec<String> {
            t.clauses
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| format!("DROP {what} {}", ident(&c.name)))
                .collect()
        };
        for (kind, what) in [(Kind::ForeignKey, "FOREIGN KEY"), (Kind::Key, "KEY")] {
            let drops = drops(kind, what);
            if !drops.is_empty() {
                out.push_str(&format!(
                    "ALTER TABLE {} {};\n",
                    ident(&t.table),
                    drops.join(", ")
                ));
            }
        }
    }
    out
}

/// Reads the recorded clauses, and the key and foreign key names the
/// scratch database's tables have now.
pub fn recorded_query() -> String {
    format!(
        "{SESSION_START}\
         SELECT 'R', tbl, seq, kind, name, clause FROM {} ORDER BY tbl, seq;\n\
         SELECT 'key', TABLE_NAME, INDEX_NAME FROM information_schema.STATISTICS \
           WHERE TABLE_SCHEMA = DATABASE() AND SEQ_IN_INDEX = 1;\n\
         SELECT 'foreign-key', TABLE_NAME, CONSTRAINT_NAME \
           FROM information_schema.REFERENTIAL_CONSTRAINTS \
           WHERE CONSTRAINT_SCHEMA = DATABASE();\n",
        ident(KEYS_TABLE)
    )
}

/// From [`recorded_query`]'s rows: each table's clauses it does not have yet.
pub fn missing(rows: &[Row]) -> Result<Vec<TableKeys>, String> {
    // (kind tag, table, name) of what the tables have.
    let mut have: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut recorded: BTreeMap<String, Vec<(u64, Clause)>> = BTreeMap::new();
    for row in rows {
        match row.first().and_then(|v| v.as_deref()) {
            Some(tag @ (b"key" | b"foreign-key")) if row.len() == 3 => {
                have.insert((
                    String::from_utf8_lossy(tag).into_owned(),
                    text(&row[1]),
                    text(&row[2]),
                ));
            }
            Some(b"R") if row.len() == 6 => {
                let seq: u64 = text(&row[2])
                    .parse()
                    .map_err(|_| format!("unexpected position {:?}", text(&row[2])))?;
                let kind = Kind::from_tag(row[3].as_deref().unwrap_or_default())
                    .ok_or_else(|| format!("unexpected kind {:?}", text(&row[3])))?;
                recorded.entry(text(&row[1])).or_default().push((
                    seq,
                    Clause {
                        kind,
                        name: text(&row[4]),
                        text: text(&row[5]),
                    },
                ));
            }
            _ => return Err(format!("unexpected row {row:?}")),
        }
    }
    Ok(recorded
        .into_iter()
        .filter_map(|(table, mut clauses)| {
            clauses.sort_by_key(|(seq, _)| *seq);
            let clauses: Vec<Clause> = clauses
                .into_iter()
                .map(|(_, c)| c)
                .filter(|c| {
                    !have.contains(&(c.kind.tag().to_string(), table.clone(), c.name.clone()))
                })
                .collect();
            (!clauses.is_empty()).then_some(TableKeys { table, clauses })
        })
        .collect())
}

/// The statement that gives `t` its keys back.
pub fn add_statement(t: &TableKeys) -> String {
    let adds: Vec<String> = t
        .clauses
        .iter()
        .map(|c| format!("ADD {}", c.text))
        .collect();
    format!("ALTER TABLE {} {};\n", ident(&t.table), adds.join(", "))
}

/// Spreads `tables` over at most `lanes` scripts, the heaviest table first
/// to the lightest lane (tables of equal weight by name); `weight` is a
/// table's share of the rows.
pub fn deal(mut tables: Vec<TableKeys>, lanes: usize, weight: impl Fn(&str) -> u64) -> Vec<String> {
    tables.sort_by(|a, b| a.table.cmp(&b.table));
    let weighted = tables.into_iter().map(|t| (weight(&t.table), t)).collect();
    sessions::deal(weighted, lanes)
        .into_iter()
        .filter(|share| !share.is_empty())
        .map(|share| {
            let adds: String = share.iter().map(add_statement).collect();
            format!("SET SESSION foreign_key_checks = 0;\n{adds}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fields: &[&str]) -> Row {
        fields.iter().map(|f| Some(f.as_bytes().to_vec())).collect()
    }

    const ORDERS: &str = "CREATE TABLE `orders` (\n  `id` bigint(20) NOT NULL,\n  \
        `customer_id` int(11) NOT NULL,\n  `placed_at` timestamp NOT NULL,\n  \
        PRIMARY KEY (`id`),\n  KEY `orders_placed` (`placed_at`),\n  \
        KEY `orders_customer` (`customer_id`),\n  CONSTRAINT `orders_customer` FOREIGN KEY \
        (`customer_id`) REFERENCES `customers` (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

    fn facts() -> Facts {
        Facts::from_rows(&[
            row(&["T", "customers"]),
            row(&["T", "orders"]),
            row(&["T", "audit"]),
            row(&["T", "tags"]),
            row(&["I", "customers", "PRIMARY", "0", "BTREE", "id"]),
            row(&["I", "customers", "email", "0", "BTREE", "email"]),
            row(&["I", "orders", "PRIMARY", "0", "BTREE", "id"]),
            row(&["I", "orders", "orders_placed", "1", "BTREE", "placed_at"]),
            row(&[
                "I",
                "orders",
                "orders_customer",
                "1",
                "BTREE",
                "customer_id",
            ]),
            row(&["I", "audit", "PRIMARY", "0", "BTREE", "order_id"]),
            row(&["I", "audit", "audit_id", "1", "BTREE", "id"]),
            row(&["I", "tags", "tags_text", "1", "FULLTEXT", "text"]),
            row(&["A", "audit", "id"]),
            row(&[
                "F",
                "orders",
                "orders_customer",
                "customers",
                "PRIMARY",
                "here",
            ]),
        ])
        .unwrap()
    }

    #[test]
    fn only_plain_keys_of_innodb_tables_are_deferred() {
        let all: BTreeSet<String> = ["customers", "orders", "audit", "tags", "myisam"]
            .map(String::from)
            .into();
        let got = facts().deferrable(&all);
        // audit's AUTO_INCREMENT column is indexed by its only secondary
        // key, tags has a FULLTEXT key, myisam is not InnoDB.
        assert_eq!(
            got,
            vec![
                ("customers".into(), vec!["email".into()], vec![]),
                (
                    "orders".into(),
                    vec!["orders_placed".into(), "orders_customer".into()],
                    vec!["orders_customer".into()]
                ),
            ]
        );
    }

    #[test]
    fn a_table_referenced_through_a_unique_key_keeps_its_keys() {
        let mut facts = facts();
        facts.foreign_keys.push((
            "orders".into(),
            "by_email".into(),
            Some("customers".into()),
            "email".into(),
        ));
        let got = facts.deferrable(&["customers".to_string()].into());
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn clauses_are_the_definition_lines_in_order() {
        let keys = ["orders_customer".to_string(), "orders_placed".to_string()];
        let got = clauses(ORDERS, &keys, &["orders_customer".to_string()]).unwrap();
        let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "KEY `orders_placed` (`placed_at`)",
                "KEY `orders_customer` (`customer_id`)",
                "CONSTRAINT `orders_customer` FOREIGN KEY (`customer_id`) REFERENCES `customers` (`id`)",
            ]
        );
        assert_eq!(got[2].kind, Kind::ForeignKey);
        let script = defer_script(&[TableKeys {
            table: "orders".into(),
            clauses: got.clone(),
        }]);
        let fk = script.find("DROP FOREIGN KEY `orders_customer`").unwrap();
        let key = script
            .find("DROP KEY `orders_placed`, DROP KEY `orders_customer`")
            .unwrap();
        assert!(fk < key, "{script}");
        assert_eq!(
            add_statement(&TableKeys {
                table: "orders".into(),
                clauses: got
            }),
            "ALTER TABLE `orders` ADD KEY `orders_placed` (`placed_at`), ADD KEY \
             `orders_customer` (`customer_id`), ADD CONSTRAINT `orders_customer` FOREIGN KEY \
             (`customer_id`) REFERENCES `customers` (`id`);\n"
        );
    }

    #[test]
    fn an_unexpected_definition_keeps_the_keys() {
        let keys = ["nope".to_string()];
        assert_eq!(clauses(ORDERS, &keys, &[]), None);
        let twice = format!("{ORDERS}\n  KEY `orders_placed` (`id`),");
        assert_eq!(clauses(&twice, &["orders_placed".into()], &[]), None);
        let versioned = ORDERS.replace(") ENGINE", ") WITH SYSTEM VERSIONING ENGINE");
        assert_eq!(clauses(&versioned, &["orders_placed".into()], &[]), None);
        // A name with a backtick is found quoted.
        let odd = ORDERS.replace("`orders_placed`", "`a``b`");
        assert!(clauses(&odd, &["a`b".into()], &[]).is_some());
    }

    #[test]
    fn a_rerun_adds_only_what_is_missing() {
        let rows = vec![
            row(&[
                "R",
                "orders",
                "0",
                "key",
                "orders_placed",
                "KEY `orders_placed` (`placed_at`)",
            ]),
            row(&[
                "R",
                "orders",
                "1",
                "key",
                "orders_customer",
                "KEY `orders_customer` (`c`)",
            ]),
            row(&[
                "R",
                "customers",
                "0",
                "key",
                "email",
                "UNIQUE KEY `email` (`email`)",
            ]),
            row(&["key", "orders", "PRIMARY"]),
            row(&["key", "customers", "email"]),
            // A foreign key of that name does not stand for the key.
            row(&["foreign-key", "orders", "orders_placed"]),
        ];
        let got = missing(&rows).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].table, "orders");
        assert_eq!(got[0].clauses.len(), 2);
        assert!(missing(&[row(&["R", "t", "x", "key", "k", "KEY"])]).is_err());
    }

    #[test]
    fn the_heaviest_tables_are_spread_first() {
        let t = |name: &str| TableKeys {
            table: name.into(),
            clauses: vec![Clause {
                kind: Kind::Key,
                name: "k".into(),
                text: "KEY `k` (`c`)".into(),
            }],
        };
        let weight = |name: &str| match name {
            "big" => 10,
            "mid" => 6,
            _ => 5,
        };
        let scripts = deal(vec![t("small"), t("mid"), t("big"), t("tiny")], 2, weight);
        assert_eq!(scripts.len(), 2);
        assert!(scripts[0].contains("`big`") && !scripts[0].contains("`mid`"));
        assert!(scripts[1].contains("`mid`"));
        assert_eq!(deal(vec![t("one")], 4, weight).len(), 1);
        assert!(deal(vec![], 4, weight).is_empty());
    }

    #[test]
    fn definitions_are_read_in_batches_that_fit_the_pipe() {
        let tables: Vec<String> = (0..2000).map(|n| format!("table_{n:04}")).collect();
        let scripts = show_create_scripts(&tables);
        assert!(scripts.len() > 1);
        assert!(
            scripts
                .iter()
                .all(|s| s.len() <= QUERY_SCRIPT_MAX && s.starts_with(SESSION_START))
        );
        let statements: usize = scripts
            .iter()
            .map(|s| s.matches("SHOW CREATE TABLE").count())
            .sum();
        assert_eq!(statements, 2000);
        assert!(show_create_scripts(&[]).is_empty());
        let got = definitions(&[row(&["orders", ORDERS])]).unwrap();
        assert_eq!(got["orders"], ORDERS);
        assert!(definitions(&[row(&["orders"])]).is_err());
    }
}
