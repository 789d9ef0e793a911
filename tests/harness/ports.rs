//! Free TCP ports on 127.0.0.1.

use std::net::{Ipv4Addr, TcpListener};

/// A port that was free a moment ago. Another process may take it before the
/// caller binds it, so servers started on it must retry with a new port when
/// the bind fails (see [`crate::postgres::PgCluster::start`]).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
