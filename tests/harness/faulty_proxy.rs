//! A network-fault double: an in-process TCP proxy on 127.0.0.1 in front of
//! an S3 server, which misbehaves on request.
//!
//! It forwards every connection to the upstream port, reading the HTTP/1.1
//! requests that go through it (method, target, `Range` header — see
//! [`FaultyProxy::requests`]) and passing the responses back unchanged,
//! except when armed:
//!
//! - [`FaultyProxy::cut_responses`]: a connection whose responses have
//!   carried more than N bytes is cut there (both sockets shut down, the
//!   response left unfinished), for the first K connections that get that
//!   far — small responses (listings, manifests, pointers) are never cut, a
//!   big GetObject is. This is how a dropped download connection looks to the
//!   host.
//! - [`FaultyProxy::set_read_only`]: every request that is not GET or HEAD is
//!   refused with `403 AccessDenied` without reaching the server — the double
//!   of read-only credentials, which s3s-fs (one key pair) cannot express.
//!
//! Threads, not processes: nothing to reap. Dropping the proxy stops the
//! listener, shuts every live connection down and joins the threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

/// One request that went through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Which accepted connection (0, 1, …) carried it.
    pub connection: u64,
    pub method: String,
    /// The request target as sent (`/bucket/key?query`, still encoded).
    pub target: String,
    /// The `Range` header, if any (e.g. `bytes=1048576-`).
    pub range: Option<String>,
    /// Whether the proxy refused it (read-only mode).
    pub refused: bool,
}

impl RequestRecord {
    /// The first byte a `Range: bytes=N-…` asks for.
    pub fn range_start(&self) -> Option<u64> {
        let spec = self.range.as_deref()?.trim().strip_prefix("bytes=")?;
        spec.split('-').next()?.trim().parse().ok()
    }

    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
}

#[derive(Default)]
struct State {
    stop: AtomicBool,
    /// Cut a connection once its responses carried more than this many bytes.
    cut_after: AtomicU64,
    /// How many more connections may be cut.
    cuts_left: AtomicU32,
    cuts_done: AtomicU32,
    /// The connections cut, in order.
    cut_connections: Mutex<Vec<u64>>,
    read_only: AtomicBool,
    /// Responses limited to this many bytes per second per connection (0: no limit).
    rate: AtomicU64,
    next_connection: AtomicU64,
    requests: Mutex<Vec<RequestRecord>>,
    /// Clones of every socket, to shut them down on drop.
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running proxy; see the module documentation.
pub struct FaultyProxy {
    port: u16,
    upstream: u16,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultyProxy {
    /// Listens on a random port of 127.0.0.1, forwarding to
    /// `127.0.0.1:upstream_port`; not armed.
    pub fn start(upstream_port: u16) -> Result<FaultyProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        let acceptor = {
            let state = state.clone();
            std::thread::spawn(move || accept_loop(listener, upstream_port, state))
        };
        Ok(FaultyProxy {
            port,
            upstream: upstream_port,
            state,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn upstream_port(&self) -> u16 {
        self.upstream
    }

    /// `http://127.0.0.1:PORT` (what `--s3-endpoint` takes).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Arms the cut: the next `times` connections whose responses carry more
    /// than `after_bytes` bytes are cut right there.
    pub fn cut_responses(&self, after_bytes: u64, times: u32) {
        self.state.cut_after.store(after_bytes, Ordering::SeqCst);
        self.state.cuts_left.store(times, Ordering::SeqCst);
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> u32 {
        self.state.cuts_done.load(Ordering::SeqCst)
    }

    /// The ids of the connections cut (as in [`RequestRecord::connection`]).
    pub fn cut_connections(&self) -> Vec<u64> {
        self.state.cut_connections.lock().unwrap().clone()
    }

    /// Limits every connection's responses to `bytes_per_second` (0: no
    /// limit), from the next bytes on.
    pub fn throttle(&self, bytes_per_second: u64) {
        self.state.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Refuses (or again forwards) every request other than GET and HEAD.
    pub fn set_read_only(&self, on: bool) {
        self.state.read_only.store(on, Ordering::SeqCst);
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The requests refused in read-only mode.
    pub fn refused(&self) -> Vec<RequestRecord> {
        self.requests().into_iter().filter(|r| r.refused).collect()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor up.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for s in self.state.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self.state.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream_port: u16, state: Arc<State>) {
    for client in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)) else {
            // Upstream down: the client sees the connection closed.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = state.next_connection.fetch_add(1, Ordering::SeqCst);
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = clones else {
            continue;
        };
        state.sockets.lock().unwrap().extend([c3, s3]);
        let requests = {
            let state = state.clone();
            std::thread::spawn(move || forward_requests(id, client, server, &state))
        };
        let responses = {
            let state = state.clone();
            std::thread::spawn(move || forward_responses(id, s2, c2, &state))
        };
        let mut threads = state.threads.lock().unwrap();
        threads.retain(|t| !t.is_finished());
        threads.extend([requests, responses]);
    }
}

/// Client → server, one request at a time, recording each and refusing
/// writes in read-only mode. Falls back to a plain copy when a request's
/// framing is not understood.
fn forward_requests(id: u64, client: TcpStream, mut server: TcpStream, state: &State) {
    let mut reader = BufReader::with_capacity(
        1 << 16,
        match client.try_clone() {
            Ok(c) => c,
            Err(_) => return,
        },
    );
    let mut client_out = client;
    while let Some(head) = read_head(&mut reader) {
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut range = None;
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => content_length = v.parse().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "range" => range = Some(v.to_string()),
                _ => {}
            }
        }
        let refuse = state.read_only.load(Ordering::SeqCst) && method != "GET" && method != "HEAD";
        state.requests.lock().unwrap().push(RequestRecord {
            connection: id,
            method: method.clone(),
            target,
            range,
            refused: refuse,
        });
        if refuse {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
                <Message>Access Denied (read-only credentials: envsync test proxy)</Message></Error>";
            let response = format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client_out.write_all(response.as_bytes());
            let _ = client_out.flush();
            let _ = client_out.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        if server.write_all(&head).is_err() {
            break;
        }
        let forwarded = if chunked {
            forward_chunked(&mut reader, &mut server)
        } else {
            let n = content_length.unwrap_or(0);
            std::io::copy(&mut (&mut reader).take(n), &mut server).is_ok_and(|c| c == n)
        };
        if !forwarded {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
}

/// Reads a request head up to and including the blank line; `None` at EOF
/// or on a head larger than 1 MiB.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            if head.len() == line.len() {
                // Stray blank line between requests.
                head.clear();
                continue;
            }
            return Some(head);
        }
        if head.len() > 1 << 20 {
            return None;
        }
    }
}

/// Forwards a chunked body (chunks, trailers, final blank line) verbatim.
fn forward_chunked(reader: &mut BufReader<TcpStream>, server: &mut TcpStream) -> bool {
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return false;
        }
        if server.write_all(&line).is_err() {
            return false;
        }
        let text = String::from_utf8_lossy(&line);
        let size_text = text.trim().split(';').next().unwrap_or("").to_string();
        let Ok(size) = u64::from_str_radix(&size_text, 16) else {
            return false;
        };
        if size == 0 {
            loop {
                let mut trailer = Vec::new();
                if reader.read_until(b'\n', &mut trailer).unwrap_or(0) == 0 {
                    return false;
                }
                if server.write_all(&trailer).is_err() {
                    return false;
                }
                if trailer == b"\r\n" || trailer == b"\n" {
                    return true;
                }
            }
        }
        // The chunk and its CRLF.
        let want = size + 2;
        match std::io::copy(&mut reader.take(want), server) {
            Ok(n) if n == want => {}
            _ => return false,
        }
    }
}

/// Writes `bytes` to the client, in slices of a twentieth of the
/// throttle's rate with a 50 ms pause after each when throttled.
fn write_paced(client: &mut TcpStream, bytes: &[u8], state: &State) -> std::io::Result<()> {
    let rate = state.rate.load(Ordering::SeqCst);
    if rate == 0 {
        return client.write_all(bytes);
    }
    let slice = (rate / 20).max(1) as usize;
    for part in bytes.chunks(slice) {
        client.write_all(part)?;
        client.flush()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Server → client, counting bytes; cuts the connection when armed.
fn forward_responses(id: u64, mut server: TcpStream, mut client: TcpStream, state: &State) {
    let _ = server.set_read_timeout(Some(Duration::from_secs(600)));
    let mut buf = vec![0u8; 1 << 16];
    let mut carried: u64 = 0;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let limit = state.cut_after.load(Ordering::SeqCst);
        let armed = state.cuts_left.load(Ordering::SeqCst) > 0;
        if armed && carried + n as u64 > limit {
            // Take one cut, if another connection did not take the last one.
            let took = state
                .cuts_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok();
            if took {
                let keep = limit.saturating_sub(carried) as usize;
                let _ = client.write_all(&buf[..keep.min(n)]);
                let _ = client.flush();
                state.cut_connections.lock().unwrap().push(id);
                state.cuts_done.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
        }
        if write_paced(&mut client, &buf[..n], state).is_err() {
            break;
        }
        carried += n as u64;
    }
    let _ = client.shutdown(Shutdown::Write);
}
