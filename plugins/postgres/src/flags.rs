//! Checking operator-supplied pg_dump / pg_restore flags. The plugin streams
//! custom-format archives through pipes and chooses the database itself, so
//! flags that change the format, the output file or the database would break
//! a step in confusing ways (or restore somewhere unexpected); they are
//! refused up front with a message saying why. Pure logic, unit-tested.

/// One program's option syntax, as far as the checks need it.
struct Syntax {
    program: &'static str,
    /// Short options that take an argument (from the program's getopt string).
    short_with_arg: &'static str,
    /// Long options that take an argument and matter here.
    long_with_arg: &'static [&'static str],
    /// Options refused outright: (short, long, why).
    refused: &'static [(char, &'static str, &'static str)],
}

const PG_DUMP: Syntax = Syntax {
    program: "pg_dump",
    short_with_arg: "deEfFhjnNpStTUZ",
    long_with_arg: &["format", "file", "dbname"],
    refused: &[
        (
            'f',
            "file",
            "the dump must go to the artifact stream, not a file",
        ),
        (
            'd',
            "dbname",
            "the database comes from the step's source connection",
        ),
    ],
};

const PG_RESTORE: Syntax = Syntax {
    program: "pg_restore",
    short_with_arg: "dfFhIjLnNpPStTU",
    long_with_arg: &["format", "file", "dbname", "jobs"],
    refused: &[
        (
            'd',
            "dbname",
            "the plugin restores into a scratch database and swaps it in",
        ),
        (
            'C',
            "create",
            "the plugin creates the scratch database itself",
        ),
        (
            'f',
            "file",
            "the plugin restores into a database, not a script file",
        ),
        (
            'l',
            "list",
            "it would print the table of contents and restore nothing",
        ),
        (
            'j',
            "jobs",
            "parallel restore cannot read the archive from a stream",
        ),
    ],
};

/// Splits `flags` on whitespace and checks them as pg_dump flags. Returns the
/// flags with `-Fc` put first when they name no format, since pg_dump's own
/// default (plain SQL) could not be restored.
pub fn dump_flags(flags: &str) -> Result<Vec<String>, String> {
    let mut args = split(flags);
    if !check(&PG_DUMP, "dump-flags", &args)? {
        args.insert(0, "-Fc".into());
    }
    Ok(args)
}

/// Splits `flags` on whitespace and checks them as pg_restore flags.
pub fn restore_flags(flags: &str) -> Result<Vec<String>, String> {
    let args = split(flags);
    check(&PG_RESTORE, "restore-flags", &args)?;
    Ok(args)
}

const LARGE_OBJECTS: &str = "dump-flags: large objects cannot be sanitised (their bytes are \
    not rows): remove -b/--blobs/--large-objects; sanitised dumps leave large objects out";

/// pg_dump flags for a sanitised dump: the operator's `dump-flags`, checked
/// as for a backup, then rewritten for plain SQL that psql loads into an
/// empty scratch database and whose COPY blocks the plugin can rewrite:
/// the format (`-F`) and compression (`-Z`) flags are dropped and `-Fp` is
/// used; `-C`/`--create`, `-c`/`--clean` and `--if-exists` are dropped (the
/// plugin creates the scratch database itself); ownership is left out
/// (`--no-owner`, as pg_restore --no-owner does for custom archives);
/// large objects are left out (`-B`: their bytes are not rows a sanitiser
/// could see) and flags asking for them are refused;
/// the dump is in UTF-8 unless `-E` says otherwise. Flags that write rows as
/// INSERT statements are refused: those rows could not be sanitised.
pub fn plain_dump_flags(flags: &str) -> Result<Vec<String>, String> {
    let args = dump_flags(flags)?;
    let mut out = vec!["-Fp".to_string()];
    let mut encoding = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            out.extend(args[i - 1..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let is = |full: &str| name.len() >= 2 && full.starts_with(name);
            for insert in [
                "inserts",
                "column-inserts",
                "attribute-inserts",
                "rows-per-insert",
            ] {
                // --in is ambiguous in pg_dump itself; refuse any prefix.
                if name.len() >= 3 && insert.starts_with(name) {
                    return Err(format!(
                        "dump-flags: pg_dump flag --{insert} cannot be used when sanitising: rows \
                         must be dumped as COPY data for the sanitiser to see them; remove it"
                    ));
                }
            }
            if is("blobs") || is("large-objects") {
                return Err(LARGE_OBJECTS.to_string());
            }
            let takes_arg = ["format", "compress", "encoding"]
                .iter()
                .chain(PG_DUMP.long_with_arg)
                .any(|full| is(full));
            if is("encoding") {
                encoding = true;
            }
            let drop = is("format")
                || is("compress")
                || (is("create") && !is("clean"))
                || (is("clean") && !is("create"))
                || is("if-exists");
            if takes_arg && inline.is_none() && name != "create" && name != "clean" {
                // The value is the next word.
                let value = args.get(i).cloned();
                i += 1;
                if !drop {
                    out.push(arg.clone());
                    out.extend(value);
                }
                continue;
            }
            if !drop {
                out.push(arg.clone());
            }
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            out.push(arg.clone());
            continue;
        };
        for (at, opt) in cluster.char_indices() {
            if PG_DUMP.short_with_arg.contains(opt) {
                let rest = &cluster[at + opt.len_utf8()..];
                let value = if rest.is_empty() {
                    i += 1;
                    args.get(i - 1).cloned().unwrap_or_default()
                } else {
                    rest.to_string()
                };
                if opt == 'E' {
                    encoding = true;
                }
                if opt != 'F' && opt != 'Z' {
                    out.push(format!("-{opt}"));
                    out.push(value);
                }
                break;
            }
            if opt == 'b' {
                return Err(LARGE_OBJECTS.to_string());
            }
            if opt != 'C' && opt != 'c' {
                out.push(format!("-{opt}"));
            }
        }
    }
    if !out
        .iter()
        .any(|a| a == "-B" || a.starts_with("--no-b") || a.starts_with("--no-l"))
    {
        out.push("-B".into());
    }
    if !out.iter().any(|a| a == "-O" || a == "--no-owner") {
        out.push("--no-owner".into());
    }
    if !encoding {
        out.push("--encoding=UTF8".into());
    }
    Ok(out)
}

fn split(flags: &str) -> Vec<String> {
    flags.split_whitespace().map(String::from).collect()
}

/// Checks `args`; returns whether they name a format (always custom if so).
fn check(syntax: &Syntax, param: &str, args: &[String]) -> Result<bool, String> {
    let mut format_given = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            // getopt_long accepts unambiguous abbreviations (--form=p).
            let is = |full: &str| name.len() >= 2 && full.starts_with(name);
            let takes_arg = syntax.long_with_arg.iter().any(|full| is(full));
            let value = match (inline, takes_arg) {
                (Some(v), _) => Some(v.to_string()),
                (None, true) => next(args, &mut i).map(String::from),
                (None, false) => None,
            };
            if let Some((_, full, why)) = syntax.refused.iter().find(|(_, full, _)| is(full)) {
                return Err(refused(syntax, param, &format!("--{full}"), why));
            }
            if is("format") {
                custom_format(syntax, param, value.as_deref())?;
                format_given = true;
            }
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            continue; // an argument of an option we do not track
        };
        // Short options may be bundled (-vFc); one taking an argument ends
        // the bundle, its value being the rest or the next word.
        for (at, opt) in cluster.char_indices() {
            if let Some((_, _, why)) = syntax.refused.iter().find(|(short, _, _)| *short == opt) {
                return Err(refused(syntax, param, &format!("-{opt}"), why));
            }
            if syntax.short_with_arg.contains(opt) {
                let rest = &cluster[at + opt.len_utf8()..];
                let value = if rest.is_empty() {
                    next(args, &mut i)
                } else {
                    Some(rest)
                };
                if opt == 'F' {
                    custom_format(syntax, param, value)?;
                    format_given = true;
                }
                break;
            }
        }
    }
    Ok(format_given)
}

/// The word at `i` (an option's value), moving past it.
fn next<'a>(args: &'a [String], i: &mut usize) -> Option<&'a str> {
    let word = args.get(*i).map(String::as_str);
    *i += 1;
    word
}

fn custom_format(syntax: &Syntax, param: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if v.eq_ignore_ascii_case("c") || v.eq_ignore_ascii_case("custom") => Ok(()),
        Some(v) => Err(format!(
            "{param}: {} format {v:?} is not supported; the postgres plugin stores and restores \
             only the custom format (-Fc): remove the format flag or use -Fc",
            syntax.program
        )),
        None => Err(format!("{param}: the format flag needs a value (use -Fc)")),
    }
}

fn refused(syntax: &Syntax, param: &str, flag: &str, why: &str) -> String {
    format!(
        "{param}: {} flag {flag} is not allowed: {why}; remove it",
        syntax.program
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dump_flags_pass() {
        assert_eq!(dump_flags("-Fc -Z1").unwrap(), ["-Fc", "-Z1"]);
    }

    #[test]
    fn custom_format_spellings_pass() {
        for f in [
            "-F c",
            "-Fcustom",
            "--format=custom",
            "--format c",
            "--form=C",
            "-vFc",
        ] {
            let args = dump_flags(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_ne!(args[0], "-Fc", "{f}: no -Fc should be added");
        }
    }

    #[test]
    fn missing_format_gets_custom() {
        assert_eq!(
            dump_flags("--exclude-table-data=audit").unwrap(),
            ["-Fc", "--exclude-table-data=audit"]
        );
        assert_eq!(dump_flags("").unwrap(), ["-Fc"]);
    }

    #[test]
    fn other_formats_are_refused() {
        for f in [
            "-Fp",
            "-F t",
            "--format=directory",
            "--format plain",
            "-vFd",
            "-Z1 -Ft",
        ] {
            let e = dump_flags(f).expect_err(f);
            assert!(e.contains("only the custom format"), "{f}: {e}");
        }
        assert!(dump_flags("-F").unwrap_err().contains("needs a value"));
    }

    #[test]
    fn option_values_are_not_read_as_flags() {
        // "-Fp" here is the value of --table, not a format flag.
        assert!(dump_flags("-Fc -t -Fp").is_ok());
        assert!(dump_flags("-Fc -Z9").is_ok());
    }

    #[test]
    fn file_and_database_flags_are_refused() {
        assert!(dump_flags("-f out.dump").unwrap_err().contains("-f"));
        assert!(dump_flags("--file=x").unwrap_err().contains("--file"));
        assert!(dump_flags("-dother").unwrap_err().contains("-d"));
        assert!(restore_flags("--create").unwrap_err().contains("--create"));
        assert!(restore_flags("-l").unwrap_err().contains("-l"));
        assert!(restore_flags("-j4").unwrap_err().contains("-j"));
        assert!(
            restore_flags("--dbname=x")
                .unwrap_err()
                .contains("--dbname")
        );
    }

    #[test]
    fn plain_flags_for_sanitised_dumps() {
        assert_eq!(
            plain_dump_flags("-Fc -Z1").unwrap(),
            ["-Fp", "-B", "--no-owner", "--encoding=UTF8"]
        );
        assert_eq!(
            plain_dump_flags("").unwrap(),
            ["-Fp", "-B", "--no-owner", "--encoding=UTF8"]
        );
        assert_eq!(
            plain_dump_flags("-vFc -Z 5 --compress=3 -C --clean --if-exists -t x -n s -E LATIN1")
                .unwrap(),
            [
                "-Fp",
                "-v",
                "-t",
                "x",
                "-n",
                "s",
                "-E",
                "LATIN1",
                "-B",
                "--no-owner"
            ]
        );
        assert_eq!(
            plain_dump_flags("--format custom --exclude-table-data=audit -O").unwrap(),
            [
                "-Fp",
                "--exclude-table-data=audit",
                "-O",
                "-B",
                "--encoding=UTF8"
            ]
        );
        assert_eq!(
            plain_dump_flags("--no-blobs").unwrap(),
            ["-Fp", "--no-blobs", "--no-owner", "--encoding=UTF8"]
        );
        for f in ["-b", "-vb", "--blobs", "--large-objects"] {
            let e = plain_dump_flags(f).unwrap_err();
            assert!(e.contains("large objects cannot be sanitised"), "{f}: {e}");
        }
        for f in [
            "--inserts",
            "--column-inserts",
            "--rows-per-insert=5",
            "--attribute-inserts",
        ] {
            let e = plain_dump_flags(f).unwrap_err();
            assert!(e.contains("cannot be used when sanitising"), "{f}: {e}");
        }
        assert!(plain_dump_flags("-Fp").is_err());
    }

    #[test]
    fn ordinary_restore_flags_pass() {
        assert_eq!(
            restore_flags(" --no-privileges  --no-comments ").unwrap(),
            ["--no-privileges", "--no-comments"]
        );
        assert!(restore_flags("-Fc -1 -x").is_ok());
        assert!(restore_flags("-Ft").is_err());
    }
}
