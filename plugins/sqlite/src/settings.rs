//! The plugin's job parameters: their documentation (shown by `plugins
//! inspect`) and reading them up front, so a typo fails the step before
//! anything changes.

use crate::paths;
use envsync_plugin_sdk::{
    Error, ParamInfo, connection, param, param_bool, param_infos, param_number,
};

/// (name, description, default) of every parameter.
const PARAMS: &[(&str, &str, Option<&str>)] = &[
    (
        "directory",
        "Folder of the database files: a relative --database (or --source-database) is a path \
         under it. Unset: relative to envsync-host's working directory. Backups and restores \
         need it for databases outside that directory, since the database name becomes part \
         of the store key and may not contain '/'.",
        None,
    ),
    (
        "safe-mode",
        "Run the sqlite3 shell with -safe when it reads an artifact or a transform script, so \
         they cannot run programs or reach other files (.shell, .system, .load, .open, \
         .output, ATTACH, readfile/writefile). Set false if a transform script needs ATTACH.",
        Some("true"),
    ),
    (
        "busy-timeout-ms",
        "Milliseconds sqlite3 waits for other connections' locks on a database before giving \
         up (the shell's .timeout).",
        Some("5000"),
    ),
];

/// `describe().params`.
pub fn infos() -> Vec<ParamInfo> {
    param_infos(PARAMS)
}

/// Every parameter, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub directory: Option<String>,
    pub safe_mode: bool,
    pub busy_timeout_ms: u32,
}

impl Settings {
    pub fn read() -> Result<Settings, Error> {
        Ok(Settings {
            directory: param("directory"),
            safe_mode: param_bool("safe-mode", true)?,
            busy_timeout_ms: param_number("busy-timeout-ms", 5000)?,
        })
    }

    /// The database file of the connection playing `role`.
    pub fn path(&self, role: &str) -> Result<String, Error> {
        let conn = connection(role)?;
        paths::resolve(&conn.database, self.directory.as_deref()).map_err(Error::InvalidParam)
    }
}
