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
//! Started with [`FaultyProxy::throttled_tcp`] it is a plain TCP proxy for
//! any protocol (PostgreSQL, MariaDB, …) that holds EACH connection, each
//! direction, to a rate ([`crate::throttle`]): N connections get N times the
//! rate, as N sessions of a remote server bound by their own backends do.
//! The `throttle-proxy` binary runs that for `scripts/bench.sh`.
//!
//! Threads, not processes: nothing to reap. Dropping the proxy stops the
//! listener, shuts every live connection down and joins the threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::throttle::Throttled;

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
    /// The region of a SigV4 `Authorization` header's credential scope.
    pub signing_region: Option<String>,
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

/// How a [`FaultyProxy`] is set up.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Where every connection is forwarded.
    pub upstream: SocketAddr,
    /// Read the client's bytes as HTTP/1.1 requests (recorded, refusable in
    /// read-only mode); `false`: copy them as they come, any protocol.
    pub http: bool,
    /// Bytes per second allowed to each connection in each direction.
    pub rate_per_connection: Option<u64>,
}

/// One accepted connection: its sockets (to shut down on drop) and its two
/// forwarding threads. Dropped once both threads end, closing the sockets.
struct Live {
    sockets: [TcpStream; 2],
    threads: [JoinHandle<()>; 2],
}

#[derive(Default)]
struct State {
    stop: AtomicBool,
    http: bool,
    /// Cut a connection once its responses carried more than this many bytes.
    cut_after: AtomicU64,
    /// How many more connections may be cut.
    cuts_left: AtomicU32,
    cuts_done: AtomicU32,
    /// The connections cut, in order.
    cut_connections: Mutex<Vec<u64>>,
    read_only: AtomicBool,
    /// Each connection held to this many bytes per second in each direction
    /// (0: no limit); [`FaultyProxy::throttle`] changes it.
    rate: Arc<AtomicU64>,
    next_connection: AtomicU64,
    requests: Mutex<Vec<RequestRecord>>,
    connections: Mutex<Vec<Live>>,
}

/// A running proxy; see the module documentation.
pub struct FaultyProxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultyProxy {
    /// Listens on a random port of 127.0.0.1, forwarding to
    /// `127.0.0.1:upstream_port`; not armed.
    pub fn start(upstream_port: u16) -> Result<FaultyProxy> {
        FaultyProxy::start_with(ProxyConfig {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            upstream: (Ipv4Addr::LOCALHOST, upstream_port).into(),
            http: true,
            rate_per_connection: None,
        })
    }

    /// A plain TCP proxy on a random port of 127.0.0.1 to `upstream`, each
    /// connection held to `rate` bytes per second in each direction.
    pub fn throttled_tcp(upstream: SocketAddr, rate: u64) -> Result<FaultyProxy> {
        FaultyProxy::start_with(ProxyConfig {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            upstream,
            http: false,
            rate_per_connection: Some(rate),
        })
    }

    pub fn start_with(config: ProxyConfig) -> Result<FaultyProxy> {
        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let listen = listener.local_addr()?;
        let state = Arc::new(State {
            http: config.http,
            rate: Arc::new(AtomicU64::new(config.rate_per_connection.unwrap_or(0))),
            ..State::default()
        });
        let acceptor = {
            let state = state.clone();
            let upstream = config.upstream;
            std::thread::spawn(move || accept_loop(listener, upstream, state))
        };
        Ok(FaultyProxy {
            listen,
            upstream: config.upstream,
            state,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn upstream_port(&self) -> u16 {
        self.upstream.port()
    }

    /// `http://127.0.0.1:PORT` (what `--s3-endpoint` takes).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// How many connections were accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.state.next_connection.load(Ordering::SeqCst)
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

    /// Limits every connection to `bytes_per_second` in each direction (0: no
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
        // Wake the acceptor up (an unspecified listen address is reached on loopback).
        let mut wake = self.listen;
        if wake.ip().is_unspecified() {
            wake.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let _ = TcpStream::connect(wake);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let live: Vec<Live> = self.state.connections.lock().unwrap().drain(..).collect();
        for conn in &live {
            for s in &conn.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for conn in live {
            for t in conn.threads {
                let _ = t.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    for client in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(upstream) else {
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
        let server = Throttled::new(server, state.rate.clone());
        let c2 = Throttled::new(c2, state.rate.clone());
        let requests = {
            let state = state.clone();
            std::thread::spawn(move || {
                if state.http {
                    forward_requests(id, client, server, &state)
                } else {
                    forward_bytes(client, server)
                }
            })
        };
        let responses = {
            let state = state.clone();
            std::thread::spawn(move || forward_responses(id, s2, c2, &state))
        };
        let mut connections = state.connections.lock().unwrap();
        // Finished connections go, closing their sockets: a long-running proxy keeps no fds.
        connections.retain(|c| !c.threads.iter().all(|t| t.is_finished()));
        connections.push(Live {
            sockets: [c3, s3],
            threads: [requests, responses],
        });
    }
}

/// Client → server, one request at a time, recording each and refusing
/// writes in read-only mode. Falls back to a plain copy when a request's
/// framing is not understood.
fn forward_requests(id: u64, client: TcpStream, mut server: Throttled<TcpStream>, state: &State) {
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
        let mut signing_region = None;
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => content_length = v.parse().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "range" => range = Some(v.to_string()),
                // `AWS4-HMAC-SHA256 Credential=ID/DATE/REGION/s3/aws4_request, …`
                "authorization" => {
                    signing_region = v
                        .split_once("Credential=")
                        .and_then(|(_, c)| c.split('/').nth(2))
                        .map(str::to_string);
                }
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
            signing_region,
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
            let _ = server.get_ref().shutdown(Shutdown::Both);
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
    let _ = server.get_ref().shutdown(Shutdown::Write);
}

/// Client → server as the bytes come (any protocol).
fn forward_bytes(mut client: TcpStream, mut server: Throttled<TcpStream>) {
    let _ = std::io::copy(&mut client, &mut server);
    let _ = server.get_ref().shutdown(Shutdown::Write);
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
fn forward_chunked(reader: &mut BufReader<TcpStream>, server: &mut Throttled<TcpStream>) -> bool {
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

/// Server → client, counting bytes; cuts the connection when armed.
fn forward_responses(
    id: u64,
    mut server: TcpStream,
    mut client: Throttled<TcpStream>,
    state: &State,
) {
    if state.http {
        // A stuck S3 response fails the test; a database session may rightly
        // stay silent longer (an index build), so raw TCP waits as long as it takes.
        let _ = server.set_read_timeout(Some(Duration::from_secs(600)));
    }
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
                let _ = client.get_ref().shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        carried += n as u64;
    }
    let _ = client.get_ref().shutdown(Shutdown::Write);
}
