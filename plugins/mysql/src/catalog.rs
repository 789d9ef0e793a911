//! What a database holds (tables, views, triggers, routines, events) and the
//! definitions of its non-table objects, read from the server: the swap moves
//! tables with RENAME TABLE but must recreate everything else. Parsing and
//! ordering are pure logic, unit-tested.

use crate::batch::{self, Row};
use crate::sql::{self, MARKER_TABLE};
use std::collections::{BTreeMap, BTreeSet};

/// What one database holds, and what server it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// `VERSION()` of the server.
    pub server: String,
    /// Default character set and collation; None when the database does not exist.
    pub charset: Option<(String, String)>,
    /// Everything RENAME TABLE moves: base tables, sequences, system-versioned
    /// tables (not views). The marker table is not among them.
    pub tables: Vec<String>,
    pub views: Vec<String>,
    /// Whether the plugin's marker table is there.
    pub marked: bool,
    /// (table, trigger), in firing order per table.
    pub triggers: Vec<(String, String)>,
    pub routines: Vec<(RoutineKind, String)>,
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoutineKind {
    Procedure,
    Function,
}

impl RoutineKind {
    pub fn keyword(self) -> &'static str {
        match self {
            RoutineKind::Procedure => "PROCEDURE",
            RoutineKind::Function => "FUNCTION",
        }
    }
}

impl Catalog {
    /// Reads the output of [`sql::catalog_query`].
    pub fn from_rows(rows: &[Row]) -> Result<Catalog, String> {
        let mut c = Catalog::default();
        for row in rows {
            let field = |i: usize| row.get(i).map(batch::text).unwrap_or_default();
            match field(0).as_str() {
                "server" => c.server = field(1),
                "schema" => c.charset = Some((field(1), field(2))),
                "table" if field(2) == MARKER_TABLE => c.marked = true,
                "table" if field(1) == "VIEW" => c.views.push(field(2)),
                "table" => c.tables.push(field(2)),
                "trigger" => c.triggers.push((field(1), field(2))),
                "routine" => match field(1).as_str() {
                    "PROCEDURE" => c.routines.push((RoutineKind::Procedure, field(2))),
                    "FUNCTION" => c.routines.push((RoutineKind::Function, field(2))),
                    // MariaDB's Oracle-mode packages: not dumped by
                    // mariadb-dump 10.11 either.
                    _ => {}
                },
                "event" => c.events.push(field(2)),
                other => return Err(format!("unexpected catalog row {other:?}")),
            }
        }
        if c.server.is_empty() {
            return Err("the server did not say its version".into());
        }
        Ok(c)
    }

    pub fn exists(&self) -> bool {
        self.charset.is_some()
    }

    pub fn is_mariadb(&self) -> bool {
        self.server.contains("MariaDB")
    }

    /// Names of tables and views.
    pub fn relations(&self) -> BTreeSet<String> {
        self.tables.iter().chain(&self.views).cloned().collect()
    }
}

/// The kinds of objects whose definitions are read with SHOW CREATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Trigger,
    View,
    Routine(RoutineKind),
    Event,
}

impl Kind {
    pub fn keyword(self) -> &'static str {
        match self {
            Kind::Trigger => "TRIGGER",
            Kind::View => "VIEW",
            Kind::Routine(r) => r.keyword(),
            Kind::Event => "EVENT",
        }
    }

    /// Columns of SHOW CREATE <kind>: (count, sql_mode, time_zone, create,
    /// character_set_client) indexes.
    fn layout(self) -> (usize, Option<usize>, Option<usize>, usize, usize) {
        match self {
            // Trigger, sql_mode, SQL Original Statement, character_set_client,
            // collation_connection, Database Collation, Created
            Kind::Trigger => (7, Some(1), None, 2, 3),
            // View, Create View, character_set_client, collation_connection
            Kind::View => (4, None, None, 1, 2),
            // Name, sql_mode, Create, character_set_client, collation_connection,
            // Database Collation
            Kind::Routine(_) => (6, Some(1), None, 2, 3),
            // Event, sql_mode, time_zone, Create Event, character_set_client,
            // collation_connection, Database Collation
            Kind::Event => (7, Some(1), Some(2), 3, 4),
        }
    }
}

/// One object to read the definition of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: Kind,
    pub name: String,
    /// The table of a trigger.
    pub table: Option<String>,
}

impl Object {
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            self.kind.keyword().to_lowercase(),
            sql::ident(&self.name)
        )
    }
}

/// The objects of `catalog` to recreate after a swap, triggers first (in
/// firing order), then views, routines and events.
pub fn objects(catalog: &Catalog) -> Vec<Object> {
    let mut out = Vec::new();
    for (table, name) in &catalog.triggers {
        out.push(Object {
            kind: Kind::Trigger,
            name: name.clone(),
            table: Some(table.clone()),
        });
    }
    for name in &catalog.views {
        out.push(Object {
            kind: Kind::View,
            name: name.clone(),
            table: None,
        });
    }
    for (kind, name) in &catalog.routines {
        out.push(Object {
            kind: Kind::Routine(*kind),
            name: name.clone(),
            table: None,
        });
    }
    for name in &catalog.events {
        out.push(Object {
            kind: Kind::Event,
            name: name.clone(),
            table: None,
        });
    }
    out
}

/// The definition of one object, as SHOW CREATE gives it, with the session
/// settings it must be created under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub object: Object,
    pub sql_mode: String,
    pub time_zone: Option<String>,
    pub charset_client: String,
    pub collation_connection: String,
    /// The CREATE statement, in the character set `charset_client`.
    pub create: Vec<u8>,
}

/// Scripts of at most this many bytes are written to a client whose output
/// is read afterwards: the script then fits in the pipe whatever the client
/// prints, so writing all before reading cannot deadlock.
pub const QUERY_SCRIPT_MAX: usize = 32 * 1024;

/// SHOW CREATE statements for `objects` (run with the object's database as
/// the current one, so view bodies name its tables without the database),
/// in batches whose scripts stay under [`QUERY_SCRIPT_MAX`]. Definitions are
/// read as they are stored (`character_set_results = binary`), as
/// mariadb-dump does, so they can be sent back under their own
/// `character_set_client`.
pub fn show_create_scripts(objects: &[Object]) -> Vec<(usize, String)> {
    let start = format!(
        "{}SET SESSION character_set_results = binary;\n",
        sql::SESSION_START
    );
    let mut batches = Vec::new();
    let mut script = start.clone();
    let mut count = 0;
    for o in objects {
        let line = format!(
            "SHOW CREATE {} {};\n",
            o.kind.keyword(),
            sql::ident(&o.name)
        );
        if count > 0 && script.len() + line.len() > QUERY_SCRIPT_MAX {
            batches.push((count, std::mem::replace(&mut script, start.clone())));
            count = 0;
        }
        script.push_str(&line);
        count += 1;
    }
    if count > 0 {
        batches.push((count, script));
    }
    batches
}

/// Pairs the rows SHOW CREATE printed (one per statement) with `objects`.
pub fn definitions(objects: &[Object], rows: &[Row]) -> Result<Vec<Definition>, String> {
    if rows.len() != objects.len() {
        return Err(format!(
            "SHOW CREATE printed {} rows for {} objects",
            rows.len(),
            objects.len()
        ));
    }
    objects
        .iter()
        .zip(rows)
        .map(|(object, row)| {
            let (count, mode, tz, create, cs) = object.kind.layout();
            if row.len() != count {
                return Err(format!(
                    "SHOW CREATE {} {} printed {} columns instead of {count}",
                    object.kind.keyword(),
                    sql::ident(&object.name),
                    row.len()
                ));
            }
            let Some(body) = row[create].clone() else {
                return Err(format!(
                    "the server did not show the definition of {}: the user needs to own it, \
                     or privileges to read routine definitions (SELECT on mysql.proc, or SHOW \
                     CREATE ROUTINE in MariaDB 11.3 and later)",
                    object.describe()
                ));
            };
            Ok(Definition {
                object: object.clone(),
                sql_mode: mode.map(|i| batch::text(&row[i])).unwrap_or_default(),
                time_zone: tz.map(|i| batch::text(&row[i])),
                charset_client: batch::text(&row[cs]),
                collation_connection: batch::text(&row[cs + 1]),
                create: body,
            })
        })
        .collect()
}

/// Views in an order in which each one's views exist before it: a view
/// depends on every other view whose name appears quoted in its definition
/// (SHOW CREATE quotes every name). A name that only looks like a reference
/// (a column alias equal to a view's name) adds a harmless extra edge; a
/// cycle, which only such extra edges can make, is broken by name order.
pub fn order_views(views: Vec<Definition>) -> Vec<Definition> {
    let names: BTreeSet<String> = views.iter().map(|v| v.object.name.clone()).collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, Definition> = BTreeMap::new();
    for v in views {
        let own = &v.object.name;
        let uses: BTreeSet<String> = quoted_names(&v.create)
            .into_iter()
            .filter(|n| n != own && names.contains(n))
            .collect();
        deps.insert(own.clone(), uses);
        by_name.insert(own.clone(), v);
    }
    let mut ordered = Vec::with_capacity(by_name.len());
    while !deps.is_empty() {
        let next = deps
            .iter()
            .find(|(_, uses)| uses.is_empty())
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| deps.keys().next().cloned().expect("not empty"));
        deps.remove(&next);
        for uses in deps.values_mut() {
            uses.remove(&next);
        }
        ordered.push(by_name.remove(&next).expect("every view has a definition"));
    }
    ordered
}

/// The backtick-quoted names in `text` (`` `a``b` `` is `a`b`).
fn quoted_names(text: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'`' {
            i += 1;
            continue;
        }
        let mut name = Vec::new();
        i += 1;
        while i < text.len() {
            if text[i] == b'`' {
                if text.get(i + 1) == Some(&b'`') {
                    name.push(b'`');
                    i += 2;
                    continue;
                }
                break;
            }
            name.push(text[i]);
            i += 1;
        }
        i += 1;
        names.push(String::from_utf8_lossy(&name).into_owned());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fields: &[&str]) -> Row {
        fields
            .iter()
            .map(|f| (*f != "NULL").then(|| f.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn reads_a_catalog() {
        let rows = vec![
            row(&["server", "10.11.19-MariaDB-0+deb12u1", ""]),
            row(&["schema", "utf8mb4", "utf8mb4_unicode_ci"]),
            row(&["table", "BASE TABLE", "customers"]),
            row(&["table", "SEQUENCE", "seq"]),
            row(&["table", "VIEW", "summary"]),
            row(&["table", "BASE TABLE", MARKER_TABLE]),
            row(&["trigger", "orders", "orders_bi"]),
            row(&["routine", "FUNCTION", "f"]),
            row(&["routine", "PROCEDURE", "p"]),
            row(&["routine", "PACKAGE", "pk"]),
            row(&["event", "", "nightly"]),
        ];
        let c = Catalog::from_rows(&rows).unwrap();
        assert!(c.exists() && c.is_mariadb() && c.marked);
        assert_eq!(
            c.charset,
            Some(("utf8mb4".into(), "utf8mb4_unicode_ci".into()))
        );
        assert_eq!(c.tables, ["customers", "seq"]);
        assert_eq!(c.views, ["summary"]);
        assert_eq!(
            c.triggers,
            [("orders".to_string(), "orders_bi".to_string())]
        );
        assert_eq!(
            c.routines,
            [
                (RoutineKind::Function, "f".to_string()),
                (RoutineKind::Procedure, "p".to_string())
            ]
        );
        assert_eq!(c.events, ["nightly"]);
        let kinds: Vec<Kind> = objects(&c).iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Trigger,
                Kind::View,
                Kind::Routine(RoutineKind::Function),
                Kind::Routine(RoutineKind::Procedure),
                Kind::Event
            ]
        );

        let missing = Catalog::from_rows(&[row(&["server", "8.0.36", ""])]).unwrap();
        assert!(!missing.exists() && !missing.is_mariadb() && missing.tables.is_empty());
        assert!(Catalog::from_rows(&[]).is_err());
        assert!(Catalog::from_rows(&[row(&["server", "x", ""]), row(&["what", "", ""])]).is_err());
    }

    fn obj(kind: Kind, name: &str) -> Object {
        Object {
            kind,
            name: name.into(),
            table: None,
        }
    }

    #[test]
    fn batches_show_create_statements() {
        let few = vec![obj(Kind::View, "v"), obj(Kind::Event, "e`x")];
        let batches = show_create_scripts(&few);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].0, 2);
        assert!(batches[0].1.contains("character_set_results = binary"));
        assert!(
            batches[0]
                .1
                .ends_with("SHOW CREATE VIEW `v`;\nSHOW CREATE EVENT `e``x`;\n")
        );

        let many: Vec<Object> = (0..3000)
            .map(|i| obj(Kind::View, &format!("view_number_{i}")))
            .collect();
        let batches = show_create_scripts(&many);
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(|b| b.0).sum::<usize>(), 3000);
        assert!(batches.iter().all(|b| b.1.len() <= QUERY_SCRIPT_MAX));
    }

    #[test]
    fn pairs_definitions_with_objects() {
        let objects = vec![
            Object {
                kind: Kind::Trigger,
                name: "tr".into(),
                table: Some("t".into()),
            },
            obj(Kind::View, "v"),
            obj(Kind::Routine(RoutineKind::Procedure), "p"),
            obj(Kind::Event, "e"),
        ];
        let rows = vec![
            row(&[
                "tr",
                "STRICT_TRANS_TABLES",
                "CREATE TRIGGER tr",
                "utf8mb4",
                "utf8mb4_general_ci",
                "latin1_swedish_ci",
                "2026-01-01",
            ]),
            row(&[
                "v",
                "CREATE VIEW `v` AS select 1",
                "utf8mb3",
                "utf8mb3_general_ci",
            ]),
            row(&[
                "p",
                "",
                "CREATE PROCEDURE `p`() BEGIN END",
                "latin1",
                "latin1_swedish_ci",
                "latin1_swedish_ci",
            ]),
            row(&[
                "e",
                "",
                "SYSTEM",
                "CREATE EVENT `e` ON SCHEDULE",
                "utf8mb4",
                "utf8mb4_general_ci",
                "utf8mb4_general_ci",
            ]),
        ];
        let defs = definitions(&objects, &rows).unwrap();
        assert_eq!(defs[0].sql_mode, "STRICT_TRANS_TABLES");
        assert_eq!(defs[0].create, b"CREATE TRIGGER tr");
        assert_eq!(defs[0].object.table.as_deref(), Some("t"));
        assert_eq!(defs[1].charset_client, "utf8mb3");
        assert_eq!(defs[1].collation_connection, "utf8mb3_general_ci");
        assert_eq!(defs[1].sql_mode, "");
        assert_eq!(defs[2].charset_client, "latin1");
        assert_eq!(defs[3].time_zone.as_deref(), Some("SYSTEM"));
        assert_eq!(defs[3].create, b"CREATE EVENT `e` ON SCHEDULE");

        assert!(definitions(&objects, &rows[..3]).is_err());
        let hidden = vec![row(&[
            "p",
            "",
            "NULL",
            "latin1",
            "latin1_swedish_ci",
            "latin1_swedish_ci",
        ])];
        let e = definitions(&objects[2..3], &hidden).unwrap_err();
        assert!(
            e.contains("procedure `p`") && e.contains("privileges"),
            "{e}"
        );
    }

    fn view(name: &str, body: &str) -> Definition {
        Definition {
            object: obj(Kind::View, name),
            sql_mode: String::new(),
            time_zone: None,
            charset_client: "utf8mb4".into(),
            collation_connection: "utf8mb4_general_ci".into(),
            create: format!(
                "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `{name}` AS {body}"
            )
            .into_bytes(),
        }
    }

    fn names(defs: &[Definition]) -> Vec<&str> {
        defs.iter().map(|d| d.object.name.as_str()).collect()
    }

    #[test]
    fn views_come_after_the_views_they_use() {
        let ordered = order_views(vec![
            view("a_top", "select `m`.`x` AS `x` from `m_mid` `m`"),
            view("m_mid", "select `z_base`.`x` AS `x` from `z_base`"),
            view("z_base", "select `t`.`x` AS `x` from `t`"),
            view("alone", "select 1 AS `1`"),
        ]);
        assert_eq!(names(&ordered), ["alone", "z_base", "m_mid", "a_top"]);
    }

    #[test]
    fn spurious_cycles_are_broken_by_name() {
        // Each view has a column named like the other: an apparent cycle.
        let ordered = order_views(vec![
            view("b", "select `t`.`a` AS `a` from `t`"),
            view("a", "select `t`.`b` AS `b` from `t`"),
        ]);
        assert_eq!(names(&ordered), ["a", "b"]);
    }

    #[test]
    fn quoted_names_unescape() {
        assert_eq!(quoted_names(b"select `a``b` from `t`"), ["a`b", "t"]);
        assert!(quoted_names(b"select 1").is_empty());
    }
}
