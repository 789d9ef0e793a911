//! Splitting pg_dump's plain post-data section (indexes, constraints,
//! triggers, …) into its entries, so a restore can build the independent
//! ones concurrently. Pure logic, unit-tested natively.
//!
//! pg_dump heads every entry with a comment block
//! `--\n-- Name: …; Type: T; Schema: …; Owner: …\n--`; the text before the
//! first one is the session setup every session must run first.

/// One entry of the section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// pg_dump's object type, e.g. `INDEX`, `FK CONSTRAINT`.
    pub kind: String,
    pub sql: String,
    /// A primary key or unique constraint split in two (see
    /// [`split_unique_constraint`]): the `CREATE UNIQUE INDEX` committed
    /// first, with bookkeeping name `<name>-index`, which `sql` then attaches.
    pub index_first: Option<String>,
}

impl Entry {
    /// Entries that depend only on their own table's rows and the tables
    /// themselves: built concurrently, before everything else. Foreign
    /// keys need the referenced keys, index attachments both indexes,
    /// triggers and the rest keep pg_dump's order.
    pub fn independent(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "INDEX" | "CONSTRAINT" | "CHECK CONSTRAINT"
        )
    }

    /// Independent entries a foreign key referencing their table may need
    /// (its primary key, unique constraints and indexes), or that lock the
    /// table exclusively (every constraint): a table's keys are built in
    /// one session, and a foreign key on it after them in that session.
    pub fn is_key(&self) -> bool {
        self.independent() && (self.kind != "INDEX" || self.sql.contains("CREATE UNIQUE INDEX"))
    }

    /// This independent entry, first taking the lock its statement needs
    /// on its table without queueing for it (see [`lock_without_queueing`]):
    /// for a lane that builds while other tables load.
    pub fn without_queueing(&self) -> Entry {
        let mode = match self.kind.as_str() {
            "INDEX" => "SHARE",
            "CONSTRAINT" | "CHECK CONSTRAINT" => "ACCESS EXCLUSIVE",
            _ => return self.clone(),
        };
        let Some(table) = table_of(self) else {
            return self.clone();
        };
        let only = format!("ONLY {table}");
        Entry {
            kind: self.kind.clone(),
            sql: format!("{}{}", lock_without_queueing(&only, mode), self.sql),
            // Its own transaction: SHARE, beside the table's other index builds.
            index_first: self
                .index_first
                .as_ref()
                .map(|index| format!("{}{index}", lock_without_queueing(&only, "SHARE"))),
        }
    }
}

/// A plain table's primary key or unique constraint (`ALTER TABLE ONLY t
/// ADD CONSTRAINT c PRIMARY KEY (cols);`) as its index, `CREATE UNIQUE
/// INDEX c ON t USING btree (cols)`, and the constraint attaching it (`…
/// PRIMARY KEY USING INDEX c`), in two transactions. Adding the constraint
/// whole takes ACCESS EXCLUSIVE for the whole build, so the table's other
/// indexes wait for it or it for them; the index alone takes SHARE and
/// builds beside them, and the attach (no rows read: pg_dump declares the
/// key's columns NOT NULL) waits only for them to end. Anything else
/// (options, INCLUDE, DEFERRABLE, a partitioned table, more than one
/// statement) stays whole.
pub fn split_unique_constraint(entry: &Entry) -> Option<Entry> {
    if entry.kind != "CONSTRAINT" || entry.index_first.is_some() {
        return None;
    }
    let sql = statement(&entry.sql);
    let rest = sql.strip_prefix("ALTER TABLE ONLY ")?;
    let (table, rest) = rest.split_once('\n')?;
    let rest = rest.trim_start().strip_prefix("ADD CONSTRAINT ")?;
    let name = identifier(rest)?;
    let rest = &rest[name.len()..];
    let (kind, columns) = [" PRIMARY KEY (", " UNIQUE ("]
        .iter()
        .find_map(|k| Some((k.trim().trim_end_matches(" ("), rest.strip_prefix(k)?)))?;
    let columns = columns.strip_suffix(");")?;
    if columns.is_empty() || columns.contains(['(', ')', ';']) || table.contains(';') {
        return None;
    }
    Some(Entry {
        kind: entry.kind.clone(),
        sql: format!(
            "ALTER TABLE ONLY {table}\n    ADD CONSTRAINT {name} {kind} USING INDEX {name};\n"
        ),
        index_first: Some(format!(
            "CREATE UNIQUE INDEX {name} ON {table} USING btree ({columns});\n"
        )),
    })
}

/// Takes `mode` on `tables` (a `LOCK TABLE` list) for the rest of the
/// transaction without joining the lock queue. An index lane's statement
/// queued behind a running COPY would make the next COPY of that table
/// (already fed to another load session) queue behind it in turn, and that
/// session would stand still for the whole index build. So the lock is
/// asked for with NOWAIT every 20 ms until granted; it is then held, as
/// the statement after it needs. (PostgreSQL keeps a lock taken in a
/// block with an exception handler when the block succeeds.)
pub fn lock_without_queueing(tables: &str, mode: &str) -> String {
    const TAG: &str = "$envsync_lock$";
    let lock = format!("LOCK TABLE {tables} IN {mode} MODE");
    if lock.contains("$envsync_lock") {
        // A name that would end the block: the plain, queueing lock.
        return format!("{lock};\n");
    }
    format!(
        "DO {TAG} BEGIN LOOP BEGIN {lock} NOWAIT; RETURN; \
         EXCEPTION WHEN lock_not_available THEN PERFORM pg_sleep(0.02); END; END LOOP; END {TAG};\n"
    )
}

/// A foreign key still to be built: a plain table's in two halves (see
/// [`split_validation`]), a partitioned table's whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignKey {
    /// The add (`NOT VALID` when split) with its bookkeeping name.
    pub add: (String, Entry),
    /// The validation with its bookkeeping name; none for a whole one.
    pub validate: Option<(String, Entry)>,
    /// The referencing and the referenced table, as pg_dump names them.
    pub table: String,
    pub referenced: String,
}

impl ForeignKey {
    /// Locks both tables in one order (by [`table_key`]) before the add.
    /// Adding a foreign key locks the referencing table, then the
    /// referenced one; two adds running at once on tables that reference
    /// each other would deadlock without a common order. A partitioned
    /// table is locked with its partitions, as its add locks them.
    pub fn lock_sql(&self) -> String {
        let mut tables = vec![self.table.as_str(), self.referenced.as_str()];
        tables.sort_by_key(|t| table_key(t));
        tables.dedup_by_key(|t| table_key(t));
        let only: Vec<String> = tables
            .iter()
            .map(|&t| match t == self.table && self.validate.is_none() {
                true => t.to_string(),
                false => format!("ONLY {t}"),
            })
            .collect();
        lock_without_queueing(&only.join(", "), "SHARE ROW EXCLUSIVE")
    }
}

/// The table an index, constraint or validation entry works on, as pg_dump
/// names it (`public.orders`, `"Odd"."Name"`): what `ON [ONLY] …` or
/// `ALTER TABLE [ONLY] …` names.
pub fn table_of(entry: &Entry) -> Option<&str> {
    let sql = entry.sql.as_str();
    let rest = if let Some(i) = sql.find("ALTER TABLE ") {
        let rest = &sql[i + "ALTER TABLE ".len()..];
        rest.strip_prefix("ONLY ").unwrap_or(rest)
    } else {
        let i = sql.find(" ON ")?;
        let rest = &sql[i + " ON ".len()..];
        rest.strip_prefix("ONLY ").unwrap_or(rest)
    };
    let end = rest.find(['\n', ' ']).unwrap_or(rest.len());
    // A quoted name may hold spaces: up to the space after its closing quote.
    if rest.contains('"') {
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ' ' | '\n' if !quoted => return Some(&rest[..i]),
                _ => {}
            }
        }
        return Some(rest);
    }
    Some(&rest[..end])
}

/// A table name as pg_dump or the plan writes it (`public.orders`,
/// `"public"."orders"`, `"My s"."t.x"`), reduced to one comparable form:
/// its unquoted parts joined by NUL (which no identifier holds).
pub fn table_key(name: &str) -> String {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().expect("one part").push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts.join("\0")
}

/// A foreign key split in two: added `NOT VALID` (brief: no rows are
/// read) in pg_dump's order, then validated with the other validations
/// concurrently. `VALIDATE CONSTRAINT` locks the referencing table only
/// against schema changes and the referenced one not at all, so
/// validations neither wait for each other nor deadlock, where adding
/// foreign keys that share a table would. Only `ALTER TABLE ONLY` (a
/// plain table): a partitioned table's foreign key cannot be `NOT VALID`
/// before PostgreSQL 18, so it stays whole.
/// Also gives the referenced table (as pg_dump names it), whose size
/// weighs in the validation's cost with the referencing one's.
pub fn split_validation(entry: &Entry) -> Option<(Entry, Entry, String)> {
    if entry.kind != "FK CONSTRAINT" {
        return None;
    }
    let sql = statement(&entry.sql);
    let body = sql.strip_suffix(';')?;
    let start = sql.find("ALTER TABLE ONLY ")?;
    let rest = &sql[start + "ALTER TABLE ONLY ".len()..];
    let (table, rest) = rest.split_once('\n')?;
    let constraint = identifier(rest.trim_start().strip_prefix("ADD CONSTRAINT ")?)?;
    // One statement only: anything after the first `;` is not ours to move.
    if body.contains(';') || body.contains("NOT VALID") {
        return None;
    }
    let referenced = referenced_table(rest)?;
    let add = Entry {
        kind: entry.kind.clone(),
        sql: format!("{body} NOT VALID;\n"),
        index_first: None,
    };
    let validate = Entry {
        kind: "FK VALIDATION".into(),
        sql: format!(
            "ALTER TABLE ONLY {} VALIDATE CONSTRAINT {constraint};\n",
            table.trim()
        ),
        index_first: None,
    };
    Some((add, validate, referenced))
}

/// The table a partitioned table's foreign key references: a single
/// `ALTER TABLE` without `ONLY` (pg_dump's form for a partitioned table),
/// which stays whole (see [`split_validation`]).
pub fn partitioned_foreign_key(entry: &Entry) -> Option<String> {
    if entry.kind != "FK CONSTRAINT" {
        return None;
    }
    let statement = statement(&entry.sql);
    let body = statement.strip_suffix(';')?;
    let rest = statement.strip_prefix("ALTER TABLE ")?;
    if rest.starts_with("ONLY ") || body.contains(';') {
        return None;
    }
    referenced_table(rest)
}

/// An entry's SQL without comments and blank lines (the dump's closing
/// lines end the last entry).
fn statement(sql: &str) -> String {
    let lines: Vec<&str> = sql
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .collect();
    lines.join("\n")
}

/// The table after `REFERENCES ` in a foreign key's definition, up to its
/// column list (a quoted name may hold `(`).
fn referenced_table(definition: &str) -> Option<String> {
    let rest = &definition[definition.find(" REFERENCES ")? + " REFERENCES ".len()..];
    let mut quoted = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' | ' ' | '\n' if !quoted => return Some(rest[..i].to_string()),
            _ => {}
        }
    }
    None
}

/// The identifier `text` starts with: a double-quoted one (`""` inside)
/// or a plain word.
fn identifier(text: &str) -> Option<&str> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut i = 0;
        let bytes = quoted.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some(&text[..i + 2]);
            }
            i += 1;
        }
        return None;
    }
    let end = text.find(|c: char| c.is_whitespace()).unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// The setup text and the entries of a plain post-data dump, in order.
pub fn split(dump: &str) -> (String, Vec<Entry>) {
    let lines: Vec<&str> = dump.split_inclusive('\n').collect();
    let mut setup = String::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let header = lines.get(i + 1).and_then(|next| entry_kind(next));
        if line.trim_end() == "--"
            && let Some(kind) = header
        {
            entries.push(Entry {
                kind,
                sql: String::new(),
                index_first: None,
            });
            i += 2;
            continue;
        }
        // pg_dump (since 17.6, 16.10, 15.14, …) fences a plain dump with
        // `\restrict KEY` … `\unrestrict KEY`; the host's own `\restrict`
        // already guards every psql session, which refuses a second one.
        if !crate::sanitised::is_restrict_line(line.as_bytes()) {
            match entries.last_mut() {
                Some(entry) => entry.sql.push_str(line),
                None => setup.push_str(line),
            }
        }
        i += 1;
    }
    entries.retain(|e| has_sql(&e.sql));
    (setup, entries)
}

/// The type named in an entry's header line, if `line` is one.
fn entry_kind(line: &str) -> Option<String> {
    let rest = line.strip_prefix("-- Name: ")?;
    let (_, after) = rest.split_once("; Type: ")?;
    let kind = after.split(';').next()?.trim();
    Some(kind.to_string())
}

/// True when `sql` holds more than comments and blank lines.
fn has_sql(sql: &str) -> bool {
    sql.lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with("--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\n\
SELECT pg_catalog.set_config('search_path', '', false);\n\n\
--\n-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: me\n--\n\n\
ALTER TABLE ONLY public.orders\n    ADD CONSTRAINT orders_pkey PRIMARY KEY (id);\n\n\n\
--\n-- Name: orders_at; Type: INDEX; Schema: public; Owner: me\n--\n\n\
CREATE INDEX orders_at ON public.orders USING btree (at);\n\n\n\
--\n-- Name: lines lines_order_fkey; Type: FK CONSTRAINT; Schema: public; Owner: me\n--\n\n\
ALTER TABLE ONLY public.lines\n    ADD CONSTRAINT lines_order_fkey FOREIGN KEY (o) REFERENCES public.orders(id);\n\n\n\
--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n";

    #[test]
    fn entries_are_split_with_their_kind() {
        let (setup, entries) = split(DUMP);
        assert!(setup.contains("set_config('search_path'"));
        assert!(!setup.contains("restrict") && !entries[2].sql.contains("restrict"));
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["CONSTRAINT", "INDEX", "FK CONSTRAINT"]);
        assert!(entries[0].sql.contains("PRIMARY KEY"));
        assert!(entries[2].sql.contains("FOREIGN KEY"));
        assert!(!entries[2].sql.contains("dump complete") || !has_sql("-- x\n"));
        assert!(entries[0].independent() && entries[1].independent());
        assert!(!entries[2].independent());
        assert!(entries[0].is_key() && !entries[1].is_key() && !entries[2].is_key());
        let unique = Entry {
            kind: "INDEX".into(),
            sql: "CREATE UNIQUE INDEX u ON public.orders USING btree (code);\n".into(),
            index_first: None,
        };
        assert!(unique.is_key());
    }

    #[test]
    fn entries_name_their_table() {
        let (_, entries) = split(DUMP);
        let tables: Vec<Option<&str>> = entries.iter().map(table_of).collect();
        assert_eq!(
            tables,
            [
                Some("public.orders"),
                Some("public.orders"),
                Some("public.lines")
            ]
        );
        let quoted = Entry {
            kind: "INDEX".into(),
            sql: "CREATE INDEX i ON ONLY \"my s\".\"t x\" USING btree (a);\n".into(),
            index_first: None,
        };
        assert_eq!(table_of(&quoted), Some("\"my s\".\"t x\""));
    }

    #[test]
    fn table_names_compare_however_they_are_quoted() {
        assert_eq!(
            table_key("public.orders"),
            table_key("\"public\".\"orders\"")
        );
        assert_eq!(table_key("\"My s\".\"t.x\""), "My s\0t.x");
        assert_eq!(table_key("s.\"a\"\"b\""), "s\0a\"b");
        assert_ne!(table_key("public.orders"), table_key("\"public.orders\""));
    }

    #[test]
    fn foreign_keys_of_plain_tables_are_added_not_valid_then_validated() {
        let (_, entries) = split(DUMP);
        let (add, validate, referenced) = split_validation(&entries[2]).unwrap();
        assert_eq!(referenced, "public.orders");
        assert!(
            add.sql
                .ends_with("REFERENCES public.orders(id) NOT VALID;\n"),
            "{}",
            add.sql
        );
        assert_eq!(
            validate.sql,
            "ALTER TABLE ONLY public.lines VALIDATE CONSTRAINT lines_order_fkey;\n"
        );
        assert!(split_validation(&entries[0]).is_none());
        let quoted = Entry {
            kind: "FK CONSTRAINT".into(),
            sql: "ALTER TABLE ONLY \"my schema\".\"t\"\n    ADD CONSTRAINT \"fk \"\"x\"\"\" FOREIGN KEY (a) \
                  REFERENCES s.p(id) DEFERRABLE INITIALLY DEFERRED;\n\n"
                .into(),
            index_first: None,
        };
        let (add, validate, referenced) = split_validation(&quoted).unwrap();
        assert_eq!(referenced, "s.p");
        assert!(
            add.sql
                .ends_with("DEFERRABLE INITIALLY DEFERRED NOT VALID;\n")
        );
        assert_eq!(
            validate.sql,
            "ALTER TABLE ONLY \"my schema\".\"t\" VALIDATE CONSTRAINT \"fk \"\"x\"\"\";\n"
        );
        let fk = ForeignKey {
            add: ("p-1".into(), add),
            validate: Some(("p-1-validate".into(), validate)),
            table: "\"my schema\".\"t\"".into(),
            referenced: referenced.clone(),
        };
        let locks = |sql: String| {
            assert!(
                sql.starts_with("DO $envsync_lock$ BEGIN LOOP BEGIN "),
                "{sql}"
            );
            assert!(sql.contains("NOWAIT; RETURN; EXCEPTION WHEN lock_not_available"));
            let lock = &sql[sql.find("LOCK TABLE").unwrap()..sql.find(" NOWAIT").unwrap()];
            lock.to_string()
        };
        assert_eq!(
            locks(fk.lock_sql()),
            "LOCK TABLE ONLY \"my schema\".\"t\", ONLY s.p IN SHARE ROW EXCLUSIVE MODE"
        );
        let own = ForeignKey {
            table: "s.p".into(),
            ..fk
        };
        assert_eq!(
            locks(own.lock_sql()),
            "LOCK TABLE ONLY s.p IN SHARE ROW EXCLUSIVE MODE"
        );
        // A partitioned table's foreign key (no ONLY) stays whole.
        let partitioned = Entry {
            kind: "FK CONSTRAINT".into(),
            sql: "ALTER TABLE public.events\n    ADD CONSTRAINT e_fk FOREIGN KEY (c) REFERENCES public.c(id);\n"
                .into(),
            index_first: None,
        };
        assert!(split_validation(&partitioned).is_none());
        assert_eq!(
            partitioned_foreign_key(&partitioned).as_deref(),
            Some("public.c")
        );
        assert_eq!(partitioned_foreign_key(&entries[2]), None);
        let whole = ForeignKey {
            add: ("p-2".into(), partitioned),
            validate: None,
            table: "public.events".into(),
            referenced: "public.c".into(),
        };
        // The partitioned table with its partitions, the referenced one alone.
        assert_eq!(
            locks(whole.lock_sql()),
            "LOCK TABLE ONLY public.c, public.events IN SHARE ROW EXCLUSIVE MODE"
        );
        // A name that would end the block gets the plain lock.
        let odd = lock_without_queueing("ONLY \"a$envsync_lock$b\"", "SHARE");
        assert_eq!(odd, "LOCK TABLE ONLY \"a$envsync_lock$b\" IN SHARE MODE;\n");
        // Index and key entries lock their own table only, in their mode.
        let index = Entry {
            kind: "INDEX".into(),
            sql: "CREATE INDEX i ON public.t USING btree (a);\n".into(),
            index_first: None,
        };
        let gated = index.without_queueing();
        assert_eq!(
            locks(gated.sql.clone()),
            "LOCK TABLE ONLY public.t IN SHARE MODE"
        );
        assert!(gated.sql.ends_with(&index.sql));
        let key = Entry {
            kind: "CONSTRAINT".into(),
            sql: "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a);\n".into(),
            index_first: None,
        };
        assert_eq!(
            locks(key.without_queueing().sql),
            "LOCK TABLE ONLY public.t IN ACCESS EXCLUSIVE MODE"
        );
    }

    fn constraint(sql: &str) -> Entry {
        Entry {
            kind: "CONSTRAINT".into(),
            sql: sql.into(),
            index_first: None,
        }
    }

    #[test]
    fn a_plain_key_builds_its_index_before_attaching_it() {
        let pk = constraint(
            "ALTER TABLE ONLY public.order_items\n    ADD CONSTRAINT order_items_pkey PRIMARY KEY (order_id, line);\n\n\n",
        );
        let split = split_unique_constraint(&pk).unwrap();
        assert_eq!(
            split.index_first.as_deref(),
            Some(
                "CREATE UNIQUE INDEX order_items_pkey ON public.order_items USING btree (order_id, line);\n"
            )
        );
        assert_eq!(
            split.sql,
            "ALTER TABLE ONLY public.order_items\n    ADD CONSTRAINT order_items_pkey PRIMARY KEY USING INDEX order_items_pkey;\n"
        );
        assert!(split.is_key());
        let unique = constraint(
            "ALTER TABLE ONLY \"My s\".\"t\"\n    ADD CONSTRAINT \"u x\" UNIQUE (\"Code\");\n",
        );
        let split = split_unique_constraint(&unique).unwrap();
        assert!(
            split
                .sql
                .ends_with("ADD CONSTRAINT \"u x\" UNIQUE USING INDEX \"u x\";\n")
        );
        assert_eq!(
            split.index_first.as_deref(),
            Some("CREATE UNIQUE INDEX \"u x\" ON \"My s\".\"t\" USING btree (\"Code\");\n")
        );
        // Both halves take their own lock without queueing: SHARE for the
        // index, ACCESS EXCLUSIVE for the attach.
        let gated = split.without_queueing();
        assert!(gated.index_first.unwrap().contains("IN SHARE MODE NOWAIT"));
        assert!(gated.sql.contains("IN ACCESS EXCLUSIVE MODE NOWAIT"));
    }

    #[test]
    fn keys_with_options_or_on_partitioned_tables_stay_whole() {
        for sql in [
            // A partitioned table: no ONLY, and no USING INDEX for it.
            "ALTER TABLE public.events\n    ADD CONSTRAINT events_pkey PRIMARY KEY (id, at);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a) INCLUDE (b);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a) WITH (fillfactor='70');\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_u UNIQUE (a) DEFERRABLE;\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_u UNIQUE NULLS NOT DISTINCT (a);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_x EXCLUDE USING gist (r WITH &&);\n",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a);\nALTER TABLE public.t CLUSTER ON t_pkey;\n",
        ] {
            assert_eq!(split_unique_constraint(&constraint(sql)), None, "{sql}");
        }
        let check = Entry {
            kind: "CHECK CONSTRAINT".into(),
            ..constraint("ALTER TABLE ONLY public.t\n    ADD CONSTRAINT c UNIQUE (a);\n")
        };
        assert_eq!(split_unique_constraint(&check), None);
    }
}
