//! Free TCP ports on 127.0.0.1.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{LazyLock, Mutex};

/// Ports this test process has handed out: never handed out twice, so two
/// servers started at once by parallel tests cannot draw the same port (the
/// kernel may give a just-released port to the next `bind(0)`, before the
/// first server has bound it; the loser's readiness check would then see
/// the winner).
static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);

/// A port that was free a moment ago. Another process may take it before the
/// caller binds it, so servers started on it must retry with a new port when
/// the bind fails (see [`crate::postgres::PgCluster::start`]).
pub fn free_port() -> std::io::Result<u16> {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return Ok(port);
        }
    }
}
