//! A tiny HTTP/1.0 client for the servers the tests talk to (Pushgateway,
//! `envsync-host serve` / `daemon --listen`, the search server): [`get`],
//! and [`request`] for other methods with a body; answers never chunked.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on 127.0.0.1:`port`: status and body.
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    request(port, "GET", path, None)
}

/// `METHOD path` on 127.0.0.1:`port` with an optional body (sent as
/// `content-type: application/json`, or `application/x-ndjson` for paths
/// containing `_bulk`): status and body.
pub fn request(port: u16, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(body) = body {
        let kind = if path.contains("_bulk") {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        head.push_str(&format!(
            "Content-Type: {kind}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("the answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in the answer to {method} {path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in the answer to {method} {path}: {head}"))?;
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
