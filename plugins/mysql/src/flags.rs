//! Checking operator-supplied mariadb-dump / mysqldump flags (`dump-flags`).
//! They are appended after the plugin's own flags, so a later `--skip-X`
//! turns one of those off. Flags that would make the artifact unusable, write
//! elsewhere, reach another server, put the password on the command line or
//! act on the source server are refused up front with a message saying why.
//! Pure logic, unit-tested.
//!
//! The programs' option parser (my_getopt) accepts `_` for `-`, the prefixes
//! `loose-`, `enable-`, `skip-` and `disable-`, and any unambiguous prefix of
//! a long name (`--datab` is `--databases`), so names are normalised and a
//! prefix of a refused name is refused too.

const SAME_NAME: &str = "the plugin dumps one database without CREATE DATABASE or USE, so it can \
                         be restored under another name";
const CONNECTION: &str = "the connection comes from the step (--db-host, --db-port, --db-user; \
                          MYSQL_UNIX_PORT for a socket)";
const OPTION_FILES: &str = "option files are read as usual; this option must come first and \
                            would change where connection settings come from";
const LOADS_CODE: &str = "it makes the program load code from a folder";

/// Long options refused outright: (name, why).
const REFUSED: &[(&str, &str)] = &[
    ("databases", SAME_NAME),
    ("all-databases", SAME_NAME),
    (
        "result-file",
        "the dump must go to the artifact stream, not a file",
    ),
    (
        "tab",
        "the dump must be one SQL stream; --tab writes files on the server",
    ),
    ("xml", "a restore loads SQL, and an XML dump is not SQL"),
    (
        "compact",
        "it leaves out the dump's header and footer (time zone, character set, checks), so \
         TIMESTAMP values and text could load wrong and a truncated artifact could not be detected",
    ),
    (
        "no-create-info",
        "a restore loads into an empty scratch database, so the dump must create its tables",
    ),
    (
        "force",
        "a backup must stop at its first error, or the artifact could silently lack objects",
    ),
    ("host", CONNECTION),
    ("port", CONNECTION),
    ("user", CONNECTION),
    ("socket", CONNECTION),
    ("protocol", CONNECTION),
    (
        "password",
        "the password must come from the host (--db-password-file, ENVSYNC_DB_PASSWORD or \
         MYSQL_PWD), never from the command line",
    ),
    ("no-defaults", OPTION_FILES),
    ("defaults-file", OPTION_FILES),
    ("defaults-extra-file", OPTION_FILES),
    ("defaults-group-suffix", OPTION_FILES),
    ("print-defaults", OPTION_FILES),
    ("login-path", OPTION_FILES),
    ("plugin-dir", LOADS_CODE),
    ("default-auth", LOADS_CODE),
    (
        "delete-master-logs",
        "it purges the source server's binary logs",
    ),
    (
        "system",
        "it dumps server-wide users, grants or plugins, which a restore would apply to the \
         target server",
    ),
    ("help", "the program would print its help instead of a dump"),
    (
        "version",
        "the program would print its version instead of a dump",
    ),
];

/// Long options allowed only with the value 2 (the replication position
/// written as a comment); any other value writes CHANGE MASTER statements a
/// restore would run on the target server.
const ONLY_COMMENTED: &[&str] = &["master-data", "dump-slave"];

/// Short options: (letter, the long option it stands for).
const SHORT: &[(char, &str)] = &[
    ('A', "all-databases"),
    ('B', "databases"),
    ('r', "result-file"),
    ('T', "tab"),
    ('X', "xml"),
    ('t', "no-create-info"),
    ('f', "force"),
    ('h', "host"),
    ('P', "port"),
    ('u', "user"),
    ('S', "socket"),
    ('p', "password"),
    ('?', "help"),
    ('V', "version"),
];

/// Short options taking a required argument (attached or the next word).
const SHORT_WITH_ARG: &str = "hPrSTuw";
/// Short options taking an optional argument (attached only).
const SHORT_WITH_OPTIONAL_ARG: &str = "p#";

/// Splits `flags` on whitespace and checks them as mariadb-dump/mysqldump
/// flags; returns them in order.
pub fn dump_flags(flags: &str) -> Result<Vec<String>, String> {
    let args: Vec<String> = flags.split_whitespace().map(String::from).collect();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            return Err(refused(
                "--",
                "everything after it would be read as database and table names",
            ));
        }
        if let Some(long) = arg.strip_prefix("--") {
            check_long(arg, long)?;
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            return Err(format!(
                "dump-flags: {arg:?} is not a flag; positional arguments such as table names are \
                 not supported (the plugin dumps the whole database: leave tables out with \
                 --ignore-table=DB.TABLE), and option values must be attached with = \
                 (e.g. --where=id<1000)"
            ));
        };
        // Short options may be bundled (-qR); one taking an argument ends the
        // bundle, its value being the rest or (if required) the next word.
        for (at, opt) in cluster.char_indices() {
            if let Some((_, long)) = SHORT.iter().find(|(s, _)| *s == opt) {
                return Err(refused(&format!("-{opt} (--{long})"), why(long)));
            }
            let rest_empty = at + opt.len_utf8() == cluster.len();
            if SHORT_WITH_ARG.contains(opt) {
                if rest_empty {
                    i += 1; // the next word is the value
                }
                break;
            }
            if SHORT_WITH_OPTIONAL_ARG.contains(opt) {
                break;
            }
        }
    }
    Ok(args)
}

/// Checks one `--name[=value]` flag (`long` is without the dashes).
fn check_long(arg: &str, long: &str) -> Result<(), String> {
    let (raw, value) = match long.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (long, None),
    };
    let mut name = raw.replace('_', "-");
    if let Some(rest) = name.strip_prefix("loose-") {
        name = rest.to_string();
    }
    // Turning an option off is harmless (and how a default is undone).
    if name.starts_with("skip-") || name.starts_with("disable-") {
        return Ok(());
    }
    if let Some(rest) = name.strip_prefix("enable-") {
        name = rest.to_string();
    }
    if name.is_empty() {
        return Err(refused(arg, "it names no option"));
    }
    if let Some((full, why)) = REFUSED.iter().find(|(full, _)| full.starts_with(&name)) {
        let shown = if *full == name {
            format!("--{full}")
        } else {
            format!("{arg} (--{full})")
        };
        return Err(refused(&shown, why));
    }
    if let Some(full) = ONLY_COMMENTED.iter().find(|full| full.starts_with(&name))
        && value.map(str::trim) != Some("2")
    {
        return Err(format!(
            "dump-flags: {arg} is not allowed: without =2 it writes CHANGE MASTER statements \
             that a restore would run on the target server; use --{full}=2, which writes the \
             position as a comment"
        ));
    }
    Ok(())
}

fn why(long: &str) -> &'static str {
    REFUSED
        .iter()
        .find(|(full, _)| *full == long)
        .map_or("", |(_, why)| why)
}

fn refused(flag: &str, why: &str) -> String {
    format!("dump-flags: {flag} is not allowed: {why}; remove it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_flags_pass_in_order() {
        assert_eq!(
            dump_flags(
                "  --skip-events --ignore-table=shop.audit  -q -w id<10 --column-statistics=0"
            )
            .unwrap(),
            [
                "--skip-events",
                "--ignore-table=shop.audit",
                "-q",
                "-w",
                "id<10",
                "--column-statistics=0"
            ]
        );
        assert!(dump_flags("").unwrap().is_empty());
        assert!(dump_flags("--master-data=2 --dump-slave=2 --no-data -d").is_ok());
        // Turning a refused option off is fine; so is a long option whose
        // name merely starts like a refused one's.
        assert!(dump_flags("--skip-compact --skip-tab --disable-force --tables").is_ok());
        assert!(dump_flags("--default-character-set=utf8mb4 --hex-blob").is_ok());
    }

    #[test]
    fn flags_that_break_a_restore_are_refused() {
        for (flags, needle) in [
            ("--databases", "--databases"),
            ("-B", "-B"),
            ("--all-databases", "--all-databases"),
            ("-A", "-A"),
            ("-r out.sql", "-r"),
            ("--result-file=x", "--result-file"),
            ("--tab=/tmp", "--tab"),
            ("-T/tmp", "-T"),
            ("--xml", "--xml"),
            ("-X", "-X"),
            ("--compact", "--compact"),
            ("--no-create-info", "--no-create-info"),
            ("-qt", "-t"),
            ("--force", "--force"),
        ] {
            let e = dump_flags(flags).expect_err(flags);
            assert!(e.contains(needle), "{flags}: {e}");
            assert!(e.contains("not allowed"), "{flags}: {e}");
        }
    }

    #[test]
    fn connection_and_password_flags_are_refused() {
        for flags in [
            "--host=db2",
            "-hdb2",
            "-h db2",
            "--port=3307",
            "-P3307",
            "--user=root",
            "-uroot",
            "--socket=/run/x.sock",
            "--protocol=tcp",
            "--defaults-file=/etc/x.cnf",
            "--no-defaults",
            "--plugin-dir=/tmp",
        ] {
            assert!(dump_flags(flags).is_err(), "{flags}");
        }
        let e = dump_flags("-psecret").unwrap_err();
        assert!(e.contains("password") && e.contains("MYSQL_PWD"), "{e}");
        assert!(dump_flags("--password=secret").is_err());
        assert!(dump_flags("--password").is_err());
    }

    #[test]
    fn spellings_my_getopt_accepts_are_recognised() {
        for flags in [
            "--datab",
            "--all_databases",
            "--loose-databases",
            "--enable-xml",
            "--result_file=x",
            "--ho=x",
        ] {
            assert!(dump_flags(flags).is_err(), "{flags}");
        }
    }

    #[test]
    fn replication_statements_only_as_comments() {
        assert!(dump_flags("--master-data").unwrap_err().contains("=2"));
        assert!(dump_flags("--master-data=1").is_err());
        assert!(dump_flags("--dump-slave").is_err());
        assert!(dump_flags("--master_data=2").is_ok());
        assert!(dump_flags("--delete-master-logs").is_err());
    }

    #[test]
    fn positional_arguments_are_refused() {
        let e = dump_flags("customers orders").unwrap_err();
        assert!(
            e.contains("\"customers\"") && e.contains("--ignore-table"),
            "{e}"
        );
        assert!(dump_flags("--ignore-table shop.audit").is_err());
        assert!(dump_flags("-- shop").unwrap_err().contains("--"));
        // The value of a short option is not a positional argument.
        assert!(dump_flags("-w id<10").is_ok());
    }
}
