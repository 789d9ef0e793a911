//! Database connections as the operator configures them. Secrets stay in the
//! host: they are only ever written into a child program's environment.

use std::fmt;

/// A password that never prints.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One database to act on.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub database: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

impl Connection {
    /// `host:port` for messages, `localhost` when nothing is configured.
    pub fn display_address(&self) -> String {
        let host = self.host.as_deref().unwrap_or("localhost");
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}
