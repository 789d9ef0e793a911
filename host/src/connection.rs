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
    /// An object-store location's region (`capabilities::objects`);
    /// database plugins do not use it.
    pub region: Option<String>,
}

impl Connection {
    /// The name backups of this connection are filed under (and metrics
    /// labelled with) by default: the configured host, or for a host given
    /// as a URL (`https://es.prod:9243`) its host name alone, so a URL never
    /// ends up in a store key.
    pub fn instance(&self) -> Option<String> {
        let host = self.host.as_deref()?;
        let Some(rest) = host
            .strip_prefix("http://")
            .or_else(|| host.strip_prefix("https://"))
        else {
            return Some(host.to_string());
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let name = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or(v6)
        } else {
            authority.split(':').next().unwrap_or(authority)
        };
        Some(name.to_string())
    }

    /// `host:port` for messages, `localhost` when nothing is configured.
    pub fn display_address(&self) -> String {
        let host = self.host.as_deref().unwrap_or("localhost");
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_of_url_hosts_are_their_host_names() {
        let c = |h: &str| Connection {
            host: Some(h.into()),
            ..Default::default()
        };
        assert_eq!(c("db1.prod").instance().unwrap(), "db1.prod");
        assert_eq!(c("http://127.0.0.1:9200").instance().unwrap(), "127.0.0.1");
        assert_eq!(c("https://u@es.prod:9243/x").instance().unwrap(), "es.prod");
        assert_eq!(c("http://[::1]:9200").instance().unwrap(), "::1");
        assert_eq!(Connection::default().instance(), None);
    }
}
