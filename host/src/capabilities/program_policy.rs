//! What each known program may be asked to do: the argument, environment
//! and stdin rules of `programs.toml`, shipped inside the host as data so a
//! plugin cannot change them. Landlock (`confine`) limits what a program can
//! reach; these rules keep it from being pointed at another server, from
//! writing its output to a file, and from running its own commands.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const POLICIES: &str = include_str!("programs.toml");

/// The whole `programs.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    pub system: System,
    programs: BTreeMap<String, RawPolicy>,
}

/// What every child may reach.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub read: Vec<String>,
    pub devices: Vec<String>,
    pub max_children: usize,
    /// Host variables that may stand in for a connection's host, port, user
    /// or password the operator did not configure.
    pub credential_variables: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Only the options listed (in `allow`, `values` or `checks`).
    Allow,
    /// Every option but those in `deny`.
    #[default]
    Deny,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    Conninfo,
    Sql,
    Stdin,
    PsqlVariable,
    Host,
    Port,
    User,
    /// Only `-` (the program's standard output).
    Stdout,
    Any,
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prelude {
    PsqlRestrict,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    inherit: Option<String>,
    #[serde(default)]
    exec_beneath: Vec<String>,
    #[serde(default)]
    read: Vec<String>,
    default_port: Option<u16>,
    mode: Option<Mode>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    short_values: String,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    checks: BTreeMap<String, Check>,
    positional: Option<Check>,
    #[serde(default)]
    first: Vec<String>,
    #[serde(default)]
    force: Vec<String>,
    prelude: Option<Prelude>,
    #[serde(default)]
    env: Vec<String>,
    database_folder: Option<String>,
    structure: Option<StructureRule>,
    offline: Option<OfflineRule>,
}

/// How a program may run in `backups export`, which grants no connection:
/// only as a converter from standard input to standard output. `deny`
/// adds the options that would connect it anywhere; each option of
/// `stdout` (otherwise refused as a file) may name only `-`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineRule {
    deny: Vec<String>,
    #[serde(default)]
    stdout: Vec<String>,
}

/// How a program may run in a sanitised backup's structure call, which
/// must read no rows: asked for the schema alone (one of `require`), and
/// without the options in `deny` (those that add data back).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructureRule {
    require: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// The rules for one program.
#[derive(Debug, Clone)]
pub struct ProgramPolicy {
    pub name: String,
    /// Folders whose programs it may execute besides its own file.
    pub exec_beneath: Vec<String>,
    /// Paths it may read besides the system ones.
    pub read: Vec<String>,
    /// The port its connection uses when none is configured.
    pub default_port: Option<u16>,
    pub prelude: Option<Prelude>,
    /// The job parameter relative database paths resolve under, when the
    /// program works on the connection's database file and its folder.
    pub database_folder: Option<String>,
    raw: RawPolicy,
    mysql_style: bool,
    /// Set by [`ProgramPolicy::for_structure`]: one of these options must
    /// be given.
    required: Option<Vec<String>>,
}

/// The connection values arguments are checked against.
#[derive(Debug, Default, Clone)]
pub struct Granted<'a> {
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub user: Option<&'a str>,
}

pub fn policies() -> &'static Policies {
    static PARSED: OnceLock<Policies> = OnceLock::new();
    PARSED.get_or_init(|| toml::from_str(POLICIES).expect("programs.toml is valid (unit-tested)"))
}

impl Policies {
    /// The policy of `program`, if the host knows it.
    pub fn get(&self, program: &str) -> Option<ProgramPolicy> {
        let mut raw = self.programs.get(program)?.clone();
        if let Some(parent) = raw.inherit.take() {
            raw = self.programs.get(&parent)?.clone();
        }
        let mysql_style = raw.default_port == Some(3306);
        Some(ProgramPolicy {
            name: program.to_string(),
            exec_beneath: raw.exec_beneath.clone(),
            read: raw.read.clone(),
            default_port: raw.default_port,
            prelude: raw.prelude,
            database_folder: raw.database_folder.clone(),
            raw,
            mysql_style,
            required: None,
        })
    }
}

impl ProgramPolicy {
    /// The policy for a sanitised backup's structure call: the program's
    /// `structure` rule on top of its usual one, or why it may not run
    /// there at all.
    pub fn for_structure(mut self) -> Result<ProgramPolicy, String> {
        let Some(rule) = self.raw.structure.take() else {
            return Err(format!(
                "{} has no schema-only form in envsync-host's policy, and a structure call must \
                 read no rows",
                self.name
            ));
        };
        self.raw.deny.extend(rule.deny);
        self.required = Some(rule.require);
        Ok(self)
    }

    /// The policy for `backups export`: the program's `offline` rule on
    /// top of its usual one, or why it may not run there at all.
    pub fn for_offline(mut self) -> Result<ProgramPolicy, String> {
        let Some(rule) = self.raw.offline.take() else {
            return Err(format!(
                "{} has no offline form in envsync-host's policy (one that converts standard \
                 input to standard output without connecting anywhere)",
                self.name
            ));
        };
        self.raw.deny.retain(|d| !rule.stdout.contains(d));
        self.raw.deny.extend(rule.deny);
        for option in rule.stdout {
            self.raw.checks.insert(option, Check::Stdout);
        }
        Ok(self)
    }

    /// Checks a plugin's arguments and returns what runs: the host's own
    /// first and forced arguments around them. `Err` says which argument
    /// was refused and why.
    pub fn arguments(&self, args: &[String], granted: &Granted) -> Result<Vec<String>, String> {
        let mut i = 0;
        let mut options_done = false;
        // Options as the program reads them (long names resolved), for
        // `required`.
        let mut seen: Vec<String> = Vec::new();
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            if options_done || arg == "-" || !arg.starts_with('-') {
                self.check_value(
                    "argument",
                    arg,
                    self.raw.positional.unwrap_or(Check::None),
                    granted,
                )?;
                continue;
            }
            if arg == "--" {
                options_done = true;
                continue;
            }
            if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let (name, check, takes_value) = self.long_option(name)?;
                seen.push(name.clone());
                let value = match (inline, takes_value) {
                    (Some(v), _) => Some(v),
                    (None, true) => {
                        let v = args
                            .get(i)
                            .cloned()
                            .ok_or(format!("--{name} needs a value"))?;
                        i += 1;
                        Some(v)
                    }
                    (None, false) => None,
                };
                if let Some(value) = value {
                    self.check_value(&format!("--{name}"), &value, check, granted)?;
                }
                continue;
            }
            // A cluster of one-letter options; the first that takes a value
            // takes the rest of the cluster or the next argument.
            let letters: Vec<char> = arg[1..].chars().collect();
            for (n, letter) in letters.iter().enumerate() {
                let key = letter.to_string();
                let check = self.option_rule(&key)?;
                seen.push(key);
                if self.raw.short_values.contains(*letter) {
                    let rest: String = letters[n + 1..].iter().collect();
                    let value = if rest.is_empty() {
                        let v = args
                            .get(i)
                            .cloned()
                            .ok_or(format!("-{letter} needs a value"))?;
                        i += 1;
                        v
                    } else {
                        rest
                    };
                    self.check_value(&format!("-{letter}"), &value, check, granted)?;
                    break;
                }
            }
        }
        // `--help` and `--version` alone print and exit: plugins use them to
        // tell programs apart.
        let only_asks_about_itself = !seen.is_empty()
            && seen
                .iter()
                .all(|o| matches!(o.as_str(), "help" | "version" | "V" | "?"));
        if let Some(required) = &self.required
            && !only_asks_about_itself
            && !seen.iter().any(|o| required.contains(o))
        {
            let list: Vec<String> = required.iter().map(|r| dashed(r)).collect();
            return Err(format!(
                "a structure call must ask it for the schema alone ({})",
                list.join(" or ")
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(args.len() + 2);
        for first in &self.raw.first {
            out.push(first.clone());
        }
        out.extend(self.raw.force.iter().cloned());
        out.extend(args.iter().cloned());
        Ok(out)
    }

    /// Whether the plugin may set `name` for this program.
    pub fn env_allowed(&self, name: &str) -> bool {
        self.raw.env.iter().any(|e| e == name)
    }

    /// The rule for option `key` as written (no dashes): refused, checked,
    /// or allowed.
    fn option_rule(&self, key: &str) -> Result<Check, String> {
        if self.raw.deny.iter().any(|d| d == key) {
            return Err(format!("option {} is not allowed", dashed(key)));
        }
        if let Some(check) = self.raw.checks.get(key) {
            return Ok(*check);
        }
        if self.raw.mode.unwrap_or_default() == Mode::Allow
            && !self.raw.allow.iter().any(|a| a == key)
        {
            return Err(format!(
                "option {} is not among those the host allows",
                dashed(key)
            ));
        }
        Ok(Check::Any)
    }

    /// Resolves a long option as the program's own parser would (getopt and
    /// MySQL's my_getopt accept unambiguous prefixes; MySQL's also `_` for
    /// `-` and the loose-/skip-/enable-/disable-/maximum- prefixes). Any
    /// reading that reaches a refused option refuses it.
    fn long_option(&self, given: &str) -> Result<(String, Check, bool), String> {
        let mut name = given.to_string();
        let mut negated = false;
        if self.mysql_style {
            name = name.replace('_', "-");
            for prefix in ["loose-", "maximum-", "skip-", "disable-", "enable-"] {
                if let Some(rest) = name.strip_prefix(prefix) {
                    negated = matches!(prefix, "skip-" | "disable-");
                    name = rest.to_string();
                    break;
                }
            }
        }
        if name.is_empty() {
            return Err(format!("option --{given} is not allowed"));
        }
        let reaches = |option: &String| option.starts_with(&name);
        // An exact name wins over abbreviations, as in getopt.
        let exact_known = self
            .raw
            .allow
            .iter()
            .chain(&self.raw.values)
            .chain(self.raw.checks.keys())
            .any(|k| k == &name);
        let denied = self
            .raw
            .deny
            .iter()
            .find(|d| d.len() > 1 && (d.as_str() == name || (!exact_known && reaches(d))));
        if let Some(denied) = denied {
            return Err(format!("option --{given} (--{denied}) is not allowed"));
        }
        if negated && self.required.as_ref().is_some_and(|r| r.contains(&name)) {
            return Err(format!(
                "option --{given} would undo the schema-only option a structure call needs"
            ));
        }
        if negated
            && self
                .raw
                .force
                .iter()
                .any(|f| f.trim_start_matches('-').starts_with(&name))
        {
            return Err(format!(
                "option --{given} would undo the host's {}",
                self.raw.force.join(" ")
            ));
        }
        let checked: Vec<(&String, &Check)> = self
            .raw
            .checks
            .iter()
            .filter(|(k, _)| k.len() > 1 && (k.as_str() == name || reaches(k)))
            .collect();
        let exact = |k: &String| k.as_str() == name;
        let check = match checked.as_slice() {
            [] => None,
            [(_, c)] => Some(**c),
            many => match many.iter().find(|(k, _)| exact(k)) {
                Some((_, c)) => Some(**c),
                None => return Err(format!("option --{given} is ambiguous")),
            },
        };
        let takes_value = self.raw.values.iter().any(|v| v == &name)
            || check.is_some_and(|c| c != Check::Any && c != Check::None);
        if self.raw.mode.unwrap_or_default() == Mode::Allow
            && check.is_none()
            && !self.raw.allow.iter().any(|a| a == &name)
        {
            return Err(format!(
                "option --{given} is not among those the host allows"
            ));
        }
        Ok((name, check.unwrap_or(Check::Any), takes_value))
    }

    fn check_value(
        &self,
        what: &str,
        value: &str,
        check: Check,
        granted: &Granted,
    ) -> Result<(), String> {
        let ok = match check {
            Check::Any => true,
            Check::None => false,
            Check::Sql => !value.starts_with('\\'),
            Check::Stdin | Check::Stdout => value == "-",
            Check::PsqlVariable => {
                let name = value.split('=').next().unwrap_or("");
                name == "ON_ERROR_STOP"
            }
            Check::Conninfo => {
                return conninfo(value).map_err(|why| format!("{what} {value:?}: {why}"));
            }
            Check::Host => granted.host == Some(value),
            Check::Port => granted.port.map(|p| p.to_string()).as_deref() == Some(value),
            Check::User => granted.user == Some(value),
        };
        if ok {
            return Ok(());
        }
        Err(match check {
            Check::None => format!("{what} {value:?} is not allowed ({} takes none)", self.name),
            Check::Host | Check::Port | Check::User => format!(
                "{what} {value:?} is not the step's connection (the host sets where {} connects)",
                self.name
            ),
            Check::Sql => format!("{what} must be SQL, not a backslash command"),
            Check::Stdin => format!("{what} {value:?}: only - (standard input) is allowed"),
            Check::Stdout => format!("{what} {value:?}: only - (standard output) is allowed"),
            _ => format!("{what} {value:?} is not allowed"),
        })
    }
}

fn dashed(key: &str) -> String {
    if key.chars().count() == 1 {
        format!("-{key}")
    } else {
        format!("--{key}")
    }
}

/// A libpq connection string may name the database and harmless session
/// settings; where to connect, as whom, and which files to read are the
/// host's (keys: libpq's "Parameter Key Words").
fn conninfo(value: &str) -> Result<(), String> {
    const ALLOWED: &[&str] = &[
        "dbname",
        "application_name",
        "fallback_application_name",
        "connect_timeout",
        "options",
        "client_encoding",
    ];
    if value.contains("://") || value.starts_with("postgres") && value.contains(':') {
        return Err("connection URIs are not allowed; the host sets the server".into());
    }
    if !value.contains('=') {
        // A bare database name.
        return Ok(());
    }
    for key in conninfo_keys(value)? {
        if !ALLOWED.contains(&key.as_str()) {
            return Err(format!("the connection keyword {key} is the host's to set"));
        }
    }
    Ok(())
}

/// The keywords of `key = value` pairs, values single-quoted or bare, with
/// backslash escapes, as libpq parses them.
fn conninfo_keys(s: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(keys);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("missing = after {key:?}"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => {
                        chars.next();
                    }
                    Some('\'') => break,
                    Some(_) => {}
                    None => return Err("unterminated quoted value".into()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    chars.next();
                }
            }
        }
        keys.push(key.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn check(program: &str, list: &[&str]) -> Result<Vec<String>, String> {
        let granted = Granted {
            host: Some("127.0.0.1"),
            port: Some(3306),
            user: Some("root"),
        };
        policies()
            .get(program)
            .unwrap()
            .arguments(&args(list), &granted)
    }

    #[test]
    fn every_program_in_the_file_resolves() {
        for name in policies().programs.keys() {
            assert!(policies().get(name).is_some(), "{name}");
        }
        assert!(policies().get("sh").is_none());
    }

    #[test]
    fn first_party_psql_arguments_pass_with_the_host_flags_added() {
        let out = check(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "--dbname=dbname='shop'",
                "-f",
                "-",
            ],
        )
        .unwrap();
        assert_eq!(out[0], "--no-psqlrc");
        assert!(
            check(
                "psql",
                &[
                    "-X",
                    "-A",
                    "-t",
                    "-F",
                    "|",
                    "--dbname=dbname='x'",
                    "-c",
                    "select 1"
                ]
            )
            .is_ok()
        );
        assert!(check("psql", &["--single-transaction", "-f", "-"]).is_ok());
    }

    #[test]
    fn psql_cannot_be_turned_into_a_shell_or_file_tool() {
        for bad in [
            &["-c", "\\! id"][..],
            &["-f", "/etc/passwd"],
            &["--file=/root/x"],
            &["-o", "/tmp/out"],
            &["-L", "/tmp/log"],
            &["-a"],
            &["--echo-all"],
            &["-v", "ECHO=all"],
            &["--set=ECHO=all"],
            &["-h", "evil.example"],
            &["--host=evil"],
            &["--ho=evil"],
            &["-hevil"],
            &["--dbname=host=evil dbname=x"],
            &["-d", "postgresql://evil/x"],
            &["dbname=x host=evil"],
            &["--dbname=dbname=x passfile=/root/.pgpass"],
            &["-p", "1"],
            &["-U", "postgres"],
        ] {
            assert!(check("psql", bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn pg_dump_keeps_operator_flags_but_never_a_file_or_another_server() {
        assert!(
            check(
                "pg_dump",
                &[
                    "-Fc",
                    "-Z1",
                    "--exclude-table-data=audit",
                    "-t",
                    "-h",
                    "--dbname=dbname='x'"
                ]
            )
            .is_ok(),
            "-t takes -h as its value"
        );
        for bad in [
            &["-f", "/tmp/x"][..],
            &["--file=/tmp/x"],
            &["--fi=/tmp/x"],
            &["-vf/tmp/x"],
            &["--host=evil"],
            &["--port", "1"],
            &["--dbname=host=evil"],
            &["host=evil dbname=x"],
        ] {
            assert!(check("pg_dump", bad).is_err(), "{bad:?} must be refused");
        }
        assert!(check("pg_restore", &["/root/secret.dump"]).is_err());
        assert!(check("pg_restore", &["-d", "dbname='x'", "--no-owner", "-1"]).is_ok());
    }

    #[test]
    fn offline_pg_restore_only_converts_stdin_to_stdout() {
        let offline = policies().get("pg_restore").unwrap().for_offline().unwrap();
        let check = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            offline.arguments(&args, &Granted::default())
        };
        assert!(check(&["-f", "-"]).is_ok());
        assert!(check(&["--file=-", "--no-owner"]).is_ok());
        for bad in [
            &["-f", "/tmp/x"][..],
            &["--file=/tmp/x"],
            &["-d", "dbname=x"],
            &["--dbname=x"],
            &["--db=x"],
            &["-f", "-", "-dx"],
            &["-h", "127.0.0.1"],
            &["--port=5432"],
            &["-"],
        ] {
            assert!(check(bad).is_err(), "{bad:?} must be refused offline");
        }
        for program in ["psql", "pg_dump", "mariadb"] {
            assert!(
                policies().get(program).unwrap().for_offline().is_err(),
                "{program} has no offline form"
            );
        }
    }

    #[test]
    fn mysql_clients_connect_only_where_the_step_says() {
        let ok = check(
            "mariadb",
            &[
                "--host=127.0.0.1",
                "--port=3306",
                "--protocol=TCP",
                "--user=root",
                "--batch",
                "--binary-mode",
            ],
        )
        .unwrap();
        assert_eq!(&ok[..2], ["--no-defaults", "--binary-mode"]);
        for bad in [
            &["--host=evil"][..],
            &["-hevil"],
            &["-h", "evil"],
            &["--ho=evil"],
            &["--loose-host=evil"],
            &["--port=3307"],
            &["--user=admin"],
            &["--skip-binary-mode"],
            &["--disable-binary-mode"],
            &["--defaults-extra-file=/root/.my.cnf"],
            &["--defaults_file=/x"],
            &["--plugin_dir=/tmp"],
            &["--tee=/tmp/x"],
            &["--socket=/run/x"],
        ] {
            assert!(check("mariadb", bad).is_err(), "{bad:?} must be refused");
        }
        assert!(check("mysqldump", &["--result-file=/tmp/x"]).is_err());
        assert!(check("mariadb-dump", &["-r", "/tmp/x"]).is_err());
        assert!(check("mariadb-dump", &["--tab=/tmp"]).is_err());
        assert!(
            check(
                "mariadb-dump",
                &[
                    "--single-transaction",
                    "--quick",
                    "--host=127.0.0.1",
                    "shop"
                ]
            )
            .is_ok()
        );
    }

    #[test]
    fn structure_calls_run_only_schema_only_dumps() {
        let structure = |program: &str, list: &[&str]| {
            policies()
                .get(program)
                .unwrap()
                .for_structure()
                .and_then(|p| p.arguments(&args(list), &Granted::default()))
        };
        assert!(
            structure(
                "pg_dump",
                &[
                    "-Fp",
                    "--schema-only",
                    "--section=pre-data",
                    "--dbname=shop"
                ]
            )
            .is_ok()
        );
        assert!(structure("pg_dump", &["-sFp", "shop"]).is_ok());
        for refused in [
            &["-Fp", "--dbname=shop"][..],
            &["--schema-only", "--data-only"],
            &["--schema-only", "-b"],
            &["--schema-only", "--large-obj"],
            &["--section=pre-data"],
            &["--", "--schema-only"],
        ] {
            assert!(structure("pg_dump", refused).is_err(), "{refused:?}");
        }
        assert!(structure("mariadb-dump", &["--no-data", "--", "shop"]).is_ok());
        assert!(structure("mysqldump", &["--no_data", "shop"]).is_ok());
        assert!(structure("mariadb-dump", &["--help"]).is_ok());
        for refused in [
            &["--", "shop"][..],
            &["--no-data", "--skip-no-data", "shop"],
            &["--no-data", "--system=users"],
            &["--help", "shop", "--where=1"],
        ] {
            assert!(structure("mariadb-dump", refused).is_err(), "{refused:?}");
        }
        for program in ["psql", "mariadb", "pg_restore"] {
            assert!(
                policies().get(program).unwrap().for_structure().is_err(),
                "{program}"
            );
        }
    }

    #[test]
    fn mongosh_gets_a_script_but_no_server_file_or_rc() {
        assert!(
            check(
                "mongosh",
                &["--nodb", "--quiet", "--norc", "--eval", "print(1)"]
            )
            .is_ok()
        );
        for bad in [
            &["mongodb://evil:27017/x"][..],
            &["--host", "evil"],
            &["--port", "1"],
            &["--username", "root"],
            &["--file", "/etc/passwd"],
            &["script.js"],
            &["--shell"],
        ] {
            assert!(check("mongosh", bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn conninfo_parsing_finds_every_keyword() {
        assert_eq!(
            conninfo_keys("dbname='a b' host = x").unwrap(),
            ["dbname", "host"]
        );
        assert_eq!(
            conninfo_keys("dbname='it\\'s' port=1").unwrap(),
            ["dbname", "port"]
        );
        assert!(conninfo("dbname='x'").is_ok());
        assert!(conninfo("shop").is_ok());
        assert!(conninfo("dbname=x sslkey=/root/k").is_err());
    }
}
