//! A tiny HTTP/1.0 client for the servers the tests talk to (Pushgateway,
//! `envsync-host serve` / `daemon --listen`): GET only, body never chunked.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on 127.0.0.1:`port`: status and body.
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("the answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in the answer to GET {path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in the answer to GET {path}: {head}"))?;
    Ok((status, body.to_string()))
}

/// Polls `GET path` until it answers (a server that is still starting).
pub fn wait_for(port: u16, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match get(port, path) {
            Ok(answer) => return Ok(answer),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(e.context(format!("no answer on port {port} within {timeout:?}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
