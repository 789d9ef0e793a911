//! Running the plugin's scripts in mongosh: `mongosh --nodb --quiet --norc
//! --eval SCRIPT`, where SCRIPT is the job configuration, the shared prelude
//! (connecting with the credentials the host put in the environment, stdin
//! and stdout helpers) and one operation's script from `js/`.

use crate::settings;
use envsync_plugin_sdk::{Command, Error, Running};
use serde_json::Value;

pub const PROGRAM: &str = "mongosh";

const PRELUDE: &str = include_str!("js/prelude.js");

/// The plugin's mongosh scripts.
#[derive(Clone, Copy, Debug)]
pub enum Script {
    Dump,
    Load,
    Swap,
    Cleanup,
    Transform,
    Schema,
}

impl Script {
    fn source(self) -> &'static str {
        match self {
            Script::Dump => include_str!("js/dump.js"),
            Script::Load => include_str!("js/load.js"),
            Script::Swap => include_str!("js/swap.js"),
            Script::Cleanup => include_str!("js/cleanup.js"),
            Script::Transform => include_str!("js/transform.js"),
            Script::Schema => include_str!("js/schema.js"),
        }
    }
}

/// The whole program mongosh evaluates.
fn program(script: Script, config: &Value) -> String {
    format!("const ENVSYNC = {config};\n{PRELUDE}\n{}", script.source())
}

/// A mongosh running `script` against connection `role`, stdout piped (the
/// scripts print their results), stdin piped when `stdin` is set.
pub fn spawn(script: Script, role: &str, stdin: bool) -> Result<Running, Error> {
    let config = settings::config(role)?;
    let mut cmd = Command::new(PROGRAM)
        .args(["--nodb", "--quiet", "--norc", "--eval"])
        .arg(program(script, &config))
        .connection(role)
        .stdout_piped()
        .stderr_filter(errors_only);
    if stdin {
        cmd = cmd.stdin_piped();
    }
    cmd.spawn()
}

/// Runs `script` with `input` on stdin and returns what it printed (one
/// JSON line), parsed.
pub fn run(script: Script, role: &str, input: &[u8]) -> Result<Value, Error> {
    let config = settings::config(role)?;
    let out = Command::new(PROGRAM)
        .args(["--nodb", "--quiet", "--norc", "--eval"])
        .arg(program(script, &config))
        .connection(role)
        .stderr_filter(errors_only)
        .output(Some(input), 1 << 20)?;
    summary(script, &out)
}

/// The JSON line a script printed last.
pub fn summary(script: Script, out: &[u8]) -> Result<Value, Error> {
    let text = String::from_utf8_lossy(out);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        Error::Other(format!(
            "mongosh's {script:?} script printed no summary ({e}): {}",
            text.chars().take(500).collect::<String>()
        ))
    })
}

/// mongosh prints an uncaught error as `Name: message` lines, after
/// warnings and deprecation notes: keep those lines.
fn errors_only(tail: &str) -> String {
    tail.lines()
        .filter(|l| {
            let l = l.trim_start();
            l.contains("Error") || l.starts_with("Uncaught") || l.starts_with("bad artifact")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_lines_of_a_failed_script_are_kept() {
        let tail = "(node:1) Warning: something\nMongoServerError: E11000 duplicate key\n";
        assert_eq!(errors_only(tail), "MongoServerError: E11000 duplicate key");
        assert_eq!(errors_only("plain noise"), "");
    }

    #[test]
    fn the_program_starts_with_the_configuration() {
        let p = program(Script::Cleanup, &serde_json::json!({"database": "shop"}));
        assert!(p.starts_with("const ENVSYNC = {\"database\":\"shop\"};\n"));
        assert!(p.contains("function envsyncConnect"));
        assert!(p.ends_with(include_str!("js/cleanup.js")));
    }
}
