//! The swap script: what replaces the target's tables and objects with the
//! scratch database's in one client session. Pure logic, unit-tested.
//!
//! The session, run with the target as its current database:
//!
//! 1. drops the triggers of the target's tables: a table with triggers
//!    cannot move to another database ("Trigger in wrong schema"). Those
//!    tables are the ones being thrown away, so nothing that writes to them
//!    from here on is kept anyway; if the swap then fails, the triggers are
//!    put back (see [`restore_triggers_script`]);
//! 2. swaps every table in ONE `RENAME TABLE` statement, which is atomic:
//!    the target's tables go to the old database (with their foreign keys,
//!    whose names must leave the target so the restored tables' identical
//!    names fit), the target's views that stand where a restored table goes
//!    are renamed aside within the target (views cannot change database),
//!    and the scratch tables come in. Readers waiting for a table during the
//!    rename see the new one afterwards; no reader sees a missing table;
//! 3. recreates what does not move with a table: the backup's triggers (on
//!    the new tables), views (in dependency order, `CREATE OR REPLACE`, so a
//!    view the target already had never disappears), routines and events;
//!    and drops the target's views, routines and events the backup does not
//!    have.
//!
//! Every object is created under the sql_mode, character set and (events)
//! time zone it was defined with, as mariadb-dump does.

use crate::catalog::{Catalog, Definition, Kind};
use crate::names::{Names, parking_names};
use crate::sql::{self, ident, qualified, word};
use std::collections::BTreeSet;

pub struct SwapPlan<'a> {
    pub names: &'a Names,
    /// The target as it is just before the swap.
    pub target: &'a Catalog,
    /// The loaded scratch database (its triggers already dropped).
    pub scratch: &'a Catalog,
    /// The scratch database's triggers, views, routines and events.
    pub backup: &'a [Definition],
    /// MariaDB has `CREATE OR REPLACE` for routines and events too.
    pub mariadb: bool,
    pub lock_timeout_secs: u32,
}

/// A script being written with a chosen delimiter.
struct Script {
    out: Vec<u8>,
    delimiter: String,
}

impl Script {
    fn new(bodies: &[&Definition]) -> Script {
        let delimiter = sql::delimiter_for(bodies.iter().map(|d| d.create.as_slice()));
        let mut s = Script {
            out: Vec::new(),
            delimiter,
        };
        s.out
            .extend_from_slice(format!("DELIMITER {}\n", s.delimiter).as_bytes());
        s.own("SET SESSION sql_mode = ''");
        s.own("SET NAMES utf8mb4");
        s
    }

    /// One statement of the plugin's own (UTF-8 text).
    fn own(&mut self, statement: &str) {
        self.raw(statement.as_bytes());
    }

    fn raw(&mut self, statement: &[u8]) {
        self.out.extend_from_slice(statement);
        self.out.extend_from_slice(self.delimiter.as_bytes());
        self.out.push(b'\n');
    }

    /// `create` under the settings of `def`, then back to the plugin's own.
    fn create(&mut self, def: &Definition, create: &[u8]) -> Result<(), String> {
        let mut set = format!(
            "SET SESSION sql_mode = {}, character_set_client = {}, collation_connection = {}",
            word(&def.sql_mode)?,
            word(&def.charset_client)?,
            word(&def.collation_connection)?
        );
        if let Some(tz) = &def.time_zone {
            set.push_str(&format!(", time_zone = {}", word(tz)?));
        }
        self.own(&set);
        self.raw(create);
        self.own("SET SESSION sql_mode = ''");
        self.own("SET NAMES utf8mb4");
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"DELIMITER ;\n");
        self.out
    }
}

impl SwapPlan<'_> {
    /// Target views renamed aside, with their temporary names.
    fn parked_views(&self) -> Vec<(String, String)> {
        let incoming: BTreeSet<&String> = self.scratch.tables.iter().collect();
        let in_the_way: Vec<String> = self
            .target
            .views
            .iter()
            .filter(|v| incoming.contains(v))
            .cloned()
            .collect();
        let mut taken = self.target.relations();
        taken.extend(self.scratch.relations());
        let parking = parking_names(in_the_way.len(), &taken);
        in_the_way.into_iter().zip(parking).collect()
    }

    /// The one RENAME TABLE statement, or None when there is nothing to move.
    pub fn rename_statement(&self) -> Option<String> {
        let Names {
            target,
            scratch,
            old,
        } = self.names;
        let mut pairs = Vec::new();
        for t in &self.target.tables {
            pairs.push(format!("{} TO {}", qualified(target, t), qualified(old, t)));
        }
        for (view, parking) in self.parked_views() {
            pairs.push(format!(
                "{} TO {}",
                qualified(target, &view),
                qualified(target, &parking)
            ));
        }
        for t in &self.scratch.tables {
            pairs.push(format!(
                "{} TO {}",
                qualified(scratch, t),
                qualified(target, t)
            ));
        }
        (!pairs.is_empty()).then(|| format!("RENAME TABLE {}", pairs.join(", ")))
    }

    /// The whole swap session.
    pub fn script(&self) -> Result<Vec<u8>, String> {
        let bodies: Vec<&Definition> = self.backup.iter().collect();
        let mut s = Script::new(&bodies);
        let target = &self.names.target;
        s.own(&format!(
            "SET SESSION lock_wait_timeout = {}",
            self.lock_timeout_secs
        ));
        // 1. Triggers keep the target's tables from leaving the database.
        for (_, trigger) in &self.target.triggers {
            s.own(&format!(
                "DROP TRIGGER IF EXISTS {}",
                qualified(target, trigger)
            ));
        }
        // 2. The swap.
        if let Some(rename) = self.rename_statement() {
            s.own(&rename);
        }
        // 3. Objects. Views first go away where the backup has none.
        for (_, parking) in self.parked_views() {
            s.own(&format!(
                "DROP VIEW IF EXISTS {}",
                qualified(target, &parking)
            ));
        }
        let backup_views: BTreeSet<&str> = self
            .of_kind(|k| k == Kind::View)
            .map(|d| d.object.name.as_str())
            .collect();
        let parked: BTreeSet<String> = self.parked_views().into_iter().map(|(v, _)| v).collect();
        for v in &self.target.views {
            if !backup_views.contains(v.as_str()) && !parked.contains(v) {
                s.own(&format!("DROP VIEW IF EXISTS {}", qualified(target, v)));
            }
        }
        for def in self.of_kind(|k| k == Kind::Trigger) {
            s.create(def, &def.create)?;
        }
        let views: Vec<Definition> = self.of_kind(|k| k == Kind::View).cloned().collect();
        for def in crate::catalog::order_views(views) {
            s.create(&def, &sql::or_replace(&def.create)?)?;
        }
        // Routines and events: the target's that the backup lacks go; the
        // backup's replace or join the rest.
        let has = |kind: Kind, name: &str| {
            self.backup
                .iter()
                .any(|d| d.object.kind == kind && d.object.name == name)
        };
        for (kind, name) in &self.target.routines {
            if !has(Kind::Routine(*kind), name) {
                s.own(&format!(
                    "DROP {} IF EXISTS {}",
                    kind.keyword(),
                    ident(name)
                ));
            }
        }
        for name in &self.target.events {
            if !has(Kind::Event, name) {
                s.own(&format!("DROP EVENT IF EXISTS {}", ident(name)));
            }
        }
        for def in self.of_kind(|k| matches!(k, Kind::Routine(_) | Kind::Event)) {
            if self.mariadb {
                s.create(def, &sql::or_replace(&def.create)?)?;
            } else {
                s.own(&format!(
                    "DROP {} IF EXISTS {}",
                    def.object.kind.keyword(),
                    ident(&def.object.name)
                ));
                s.create(def, &def.create)?;
            }
        }
        Ok(s.finish())
    }

    fn of_kind(&self, want: impl Fn(Kind) -> bool) -> impl Iterator<Item = &Definition> {
        self.backup.iter().filter(move |d| want(d.object.kind))
    }
}

/// Drops the triggers of the scratch database's tables (before the swap; the
/// scratch database is the plugin's own). Their definitions were read first.
pub fn drop_triggers_script(db: &str, triggers: &[(String, String)]) -> String {
    let mut s = String::from(sql::SESSION_START);
    for (_, trigger) in triggers {
        s.push_str(&format!(
            "DROP TRIGGER IF EXISTS {};\n",
            qualified(db, trigger)
        ));
    }
    s
}

/// After a swap that failed before its RENAME: puts back the target's
/// triggers the session dropped. `captured` are the definitions read before
/// the swap, `present` the triggers the target has now. A table that lost
/// any trigger gets all of its triggers recreated in their original order
/// (the ones still there are dropped first, so the firing order is kept).
/// None when nothing was lost.
pub fn restore_triggers_script(
    captured: &[Definition],
    present: &[(String, String)],
) -> Result<Option<Vec<u8>>, String> {
    let present_names: BTreeSet<&str> = present.iter().map(|(_, n)| n.as_str()).collect();
    let affected: BTreeSet<&str> = captured
        .iter()
        .filter(|d| !present_names.contains(d.object.name.as_str()))
        .filter_map(|d| d.object.table.as_deref())
        .collect();
    if affected.is_empty() {
        return Ok(None);
    }
    let bodies: Vec<&Definition> = captured.iter().collect();
    let mut s = Script::new(&bodies);
    for (table, name) in present {
        if affected.contains(table.as_str()) {
            s.own(&format!("DROP TRIGGER IF EXISTS {}", ident(name)));
        }
    }
    for def in captured {
        if def
            .object
            .table
            .as_deref()
            .is_some_and(|t| affected.contains(t))
        {
            s.create(def, &def.create)?;
        }
    }
    Ok(Some(s.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Object, RoutineKind};

    fn names() -> Names {
        Names::for_target("shop").unwrap()
    }

    fn catalog(tables: &[&str], views: &[&str]) -> Catalog {
        Catalog {
            server: "10.11.19-MariaDB".into(),
            charset: Some(("utf8mb4".into(), "utf8mb4_unicode_ci".into())),
            tables: tables.iter().map(|s| s.to_string()).collect(),
            views: views.iter().map(|s| s.to_string()).collect(),
            ..Catalog::default()
        }
    }

    fn def(kind: Kind, name: &str, table: Option<&str>, create: &str) -> Definition {
        Definition {
            object: Object {
                kind,
                name: name.into(),
                table: table.map(String::from),
            },
            sql_mode: "STRICT_TRANS_TABLES".into(),
            time_zone: (kind == Kind::Event).then(|| "SYSTEM".to_string()),
            charset_client: "utf8mb4".into(),
            collation_connection: "utf8mb4_general_ci".into(),
            create: create.as_bytes().to_vec(),
        }
    }

    fn text(script: &[u8]) -> String {
        String::from_utf8(script.to_vec()).unwrap()
    }

    #[test]
    fn rename_moves_old_tables_out_and_new_ones_in() {
        let n = names();
        let target = catalog(&["customers", "legacy"], &["orders"]);
        let scratch = catalog(&["customers", "orders"], &[]);
        let plan = SwapPlan {
            names: &n,
            target: &target,
            scratch: &scratch,
            backup: &[],
            mariadb: true,
            lock_timeout_secs: 5,
        };
        assert_eq!(
            plan.rename_statement().unwrap(),
            "RENAME TABLE `shop`.`customers` TO `shop-envsync-old`.`customers`, \
             `shop`.`legacy` TO `shop-envsync-old`.`legacy`, \
             `shop`.`orders` TO `shop`.`envsync-old-view-1`, \
             `shop-envsync-restore`.`customers` TO `shop`.`customers`, \
             `shop-envsync-restore`.`orders` TO `shop`.`orders`"
        );
        let script = text(&plan.script().unwrap());
        // The parked view goes once the new tables are in.
        let rename = script.find("RENAME TABLE").unwrap();
        let drop = script
            .find("DROP VIEW IF EXISTS `shop`.`envsync-old-view-1`")
            .unwrap();
        assert!(rename < drop);
        // ... and the view itself is not dropped by its old name.
        assert!(!script.contains("DROP VIEW IF EXISTS `shop`.`orders`"));

        let empty = catalog(&[], &[]);
        let nothing = SwapPlan {
            names: &n,
            target: &empty,
            scratch: &empty,
            backup: &[],
            mariadb: true,
            lock_timeout_secs: 5,
        };
        assert!(nothing.rename_statement().is_none());
    }

    #[test]
    fn script_order_and_settings() {
        let n = names();
        let mut target = catalog(&["orders"], &["summary", "stale_view"]);
        target.triggers = vec![("orders".into(), "orders_bi".into())];
        target.routines = vec![
            (RoutineKind::Procedure, "old_proc".into()),
            (RoutineKind::Function, "f".into()),
        ];
        target.events = vec!["old_event".into()];
        let scratch = catalog(&["orders"], &["summary", "base"]);
        let backup = vec![
            def(
                Kind::Trigger,
                "orders_bi",
                Some("orders"),
                "CREATE DEFINER=`root`@`localhost` TRIGGER orders_bi BEFORE INSERT ON orders FOR EACH ROW BEGIN SET NEW.x = 1; END",
            ),
            def(
                Kind::View,
                "summary",
                None,
                "CREATE ALGORITHM=UNDEFINED VIEW `summary` AS select `base`.`x` AS `x` from `base`",
            ),
            def(
                Kind::View,
                "base",
                None,
                "CREATE ALGORITHM=UNDEFINED VIEW `base` AS select `orders`.`x` AS `x` from `orders`",
            ),
            def(
                Kind::Routine(RoutineKind::Function),
                "f",
                None,
                "CREATE DEFINER=`root`@`localhost` FUNCTION `f`() RETURNS int RETURN 1",
            ),
            def(
                Kind::Event,
                "nightly",
                None,
                "CREATE DEFINER=`root`@`localhost` EVENT `nightly` ON SCHEDULE EVERY 1 DAY DO DELETE FROM orders",
            ),
        ];
        let plan = SwapPlan {
            names: &n,
            target: &target,
            scratch: &scratch,
            backup: &backup,
            mariadb: true,
            lock_timeout_secs: 7,
        };
        let script = text(&plan.script().unwrap());
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in\n{script}"))
        };
        assert!(
            script.starts_with("DELIMITER $$envsync$$\nSET SESSION sql_mode = ''$$envsync$$\n")
        );
        assert!(script.ends_with("DELIMITER ;\n"));
        let order = [
            at("SET SESSION lock_wait_timeout = 7$$envsync$$"),
            at("DROP TRIGGER IF EXISTS `shop`.`orders_bi`$$envsync$$"),
            at(
                "RENAME TABLE `shop`.`orders` TO `shop-envsync-old`.`orders`, `shop-envsync-restore`.`orders` TO `shop`.`orders`$$envsync$$",
            ),
            at("DROP VIEW IF EXISTS `shop`.`stale_view`$$envsync$$"),
            at("CREATE DEFINER=`root`@`localhost` TRIGGER orders_bi"),
            at("CREATE OR REPLACE ALGORITHM=UNDEFINED VIEW `base`"),
            at("CREATE OR REPLACE ALGORITHM=UNDEFINED VIEW `summary`"),
            at("DROP PROCEDURE IF EXISTS `old_proc`$$envsync$$"),
            at("DROP EVENT IF EXISTS `old_event`$$envsync$$"),
            at("CREATE OR REPLACE DEFINER=`root`@`localhost` FUNCTION `f`"),
            at("CREATE OR REPLACE DEFINER=`root`@`localhost` EVENT `nightly`"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{script}");
        // The backup's own routine is not dropped, only replaced.
        assert!(!script.contains("DROP FUNCTION"));
        assert!(script.contains(
            "SET SESSION sql_mode = 'STRICT_TRANS_TABLES', character_set_client = 'utf8mb4', \
             collation_connection = 'utf8mb4_general_ci', time_zone = 'SYSTEM'$$envsync$$\n\
             CREATE OR REPLACE DEFINER=`root`@`localhost` EVENT"
        ));
        // The trigger body's semicolons are inside one statement.
        assert!(script.contains("BEGIN SET NEW.x = 1; END$$envsync$$\n"));

        // MySQL has no CREATE OR REPLACE for routines and events.
        let mysql = SwapPlan {
            mariadb: false,
            ..plan
        };
        let script = text(&mysql.script().unwrap());
        assert!(script.contains(
            "DROP FUNCTION IF EXISTS `f`$$envsync$$\nSET SESSION sql_mode = 'STRICT_TRANS_TABLES'"
        ));
        assert!(script.contains("DROP EVENT IF EXISTS `nightly`$$envsync$$"));
        assert!(script.contains("\nCREATE DEFINER=`root`@`localhost` FUNCTION `f`"));
        // Views are replaced in place on MySQL too.
        assert!(script.contains("CREATE OR REPLACE ALGORITHM=UNDEFINED VIEW `summary`"));
    }

    #[test]
    fn bodies_with_the_default_delimiter_get_another() {
        let n = names();
        let c = catalog(&[], &[]);
        let backup = vec![def(
            Kind::Routine(RoutineKind::Procedure),
            "p",
            None,
            "CREATE PROCEDURE `p`() SELECT '$$envsync$$'",
        )];
        let plan = SwapPlan {
            names: &n,
            target: &c,
            scratch: &c,
            backup: &backup,
            mariadb: true,
            lock_timeout_secs: 5,
        };
        assert!(text(&plan.script().unwrap()).starts_with("DELIMITER $$envsync1$$\n"));
    }

    #[test]
    fn unsafe_settings_are_refused() {
        let n = names();
        let c = catalog(&[], &[]);
        let mut bad = def(Kind::View, "v", None, "CREATE VIEW `v` AS select 1");
        bad.sql_mode = "x'y".into();
        let backup = [bad];
        let plan = SwapPlan {
            names: &n,
            target: &c,
            scratch: &c,
            backup: &backup,
            mariadb: true,
            lock_timeout_secs: 5,
        };
        assert!(plan.script().is_err());
    }

    #[test]
    fn lost_triggers_are_put_back_in_order() {
        let captured = vec![
            def(
                Kind::Trigger,
                "a1",
                Some("a"),
                "CREATE TRIGGER a1 BEFORE INSERT ON a FOR EACH ROW SET @x = 1",
            ),
            def(
                Kind::Trigger,
                "a2",
                Some("a"),
                "CREATE TRIGGER a2 BEFORE INSERT ON a FOR EACH ROW SET @x = 2",
            ),
            def(
                Kind::Trigger,
                "b1",
                Some("b"),
                "CREATE TRIGGER b1 BEFORE INSERT ON b FOR EACH ROW SET @x = 3",
            ),
        ];
        let all: Vec<(String, String)> = [("a", "a1"), ("a", "a2"), ("b", "b1")]
            .iter()
            .map(|(t, n)| (t.to_string(), n.to_string()))
            .collect();
        assert!(restore_triggers_script(&captured, &all).unwrap().is_none());

        // a1 was dropped, a2 and b1 were not.
        let script = text(
            &restore_triggers_script(&captured, &all[1..])
                .unwrap()
                .unwrap(),
        );
        let drop_a2 = script.find("DROP TRIGGER IF EXISTS `a2`").unwrap();
        let create_a1 = script.find("CREATE TRIGGER a1").unwrap();
        let create_a2 = script.find("CREATE TRIGGER a2").unwrap();
        assert!(drop_a2 < create_a1 && create_a1 < create_a2, "{script}");
        assert!(!script.contains("b1"), "{script}");
    }

    #[test]
    fn scratch_triggers_are_dropped_qualified() {
        let s = drop_triggers_script("shop-envsync-restore", &[("t".into(), "tr`1".into())]);
        assert!(s.ends_with("DROP TRIGGER IF EXISTS `shop-envsync-restore`.`tr``1`;\n"));
    }
}
