//! The `throttle-proxy` binary (the remote-server simulation of
//! `scripts/bench.sh`): every connection gets the whole rate on its own, in
//! each direction — two connections move twice the bytes, not half each —
//! and a real PostgreSQL session works through it at that rate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Instant;

use envsync_tests::postgres::PgCluster;

const MIB: usize = 1024 * 1024;

/// The proxy binary, killed and reaped on drop.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(target_port: u16, rate: &str) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_throttle-proxy"))
            .args(["--target", &format!("127.0.0.1:{target_port}")])
            .args(["--rate", rate])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start throttle-proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("throttle-proxy printed {line:?}, not ADDR:PORT"));
        Proxy { child, port }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream that, on every connection, sends `size` bytes and reads
/// everything the client sends, answering with how many bytes that was and
/// how long they took to arrive (the client's own clock would stop once the
/// socket buffers took its bytes).
fn sending_upstream(size: usize) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let t0 = Instant::now();
            thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let counter = thread::spawn(move || {
                    let mut n = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) | Err(_) => return (n, t0.elapsed().as_secs_f64()),
                            Ok(k) => n += k as u64,
                        }
                    }
                });
                let _ = conn.write_all(&vec![7u8; size]);
                let (received, secs) = counter.join().unwrap();
                let _ = conn.write_all(format!("received {received} in {secs}").as_bytes());
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// One client: uploads `size` bytes while downloading `size` bytes; returns
/// the seconds each direction took and how many bytes the upstream received.
fn exchange(port: u16, size: usize) -> (f64, f64, u64) {
    let t0 = Instant::now();
    let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let upload = thread::spawn(move || {
        writer.write_all(&vec![1u8; size]).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = vec![0u8; size];
    conn.read_exact(&mut got).unwrap();
    let download = t0.elapsed().as_secs_f64();
    assert!(got.iter().all(|b| *b == 7), "the payload was altered");
    upload.join().unwrap();
    let mut tail = String::new();
    conn.read_to_string(&mut tail).unwrap();
    let (received, upload) = tail
        .strip_prefix("received ")
        .and_then(|t| t.split_once(" in "))
        .unwrap_or_else(|| panic!("the upstream answered {tail:?}"));
    (download, upload.parse().unwrap(), received.parse().unwrap())
}

#[test]
fn each_connection_gets_the_whole_rate_in_each_direction() {
    // 3 MiB each way at 2 MiB/s: about 1.4 s (the first 0.2 MiB is the burst).
    let size = 3 * MIB;
    let upstream = sending_upstream(size);
    let proxy = Proxy::start(upstream, "2MiB");

    let t0 = Instant::now();
    let pair: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || exchange(proxy.port, size)))
        .collect();
    let results: Vec<_> = pair.into_iter().map(|t| t.join().unwrap()).collect();
    let wall = t0.elapsed().as_secs_f64();

    for (download, upload, received) in &results {
        assert_eq!(*received, size as u64, "the upload arrived whole");
        for (dir, secs) in [("download", download), ("upload", upload)] {
            // Held to the rate (not faster) …
            assert!(
                *secs >= 1.2,
                "{dir} of 3 MiB took {secs:.2} s: not held to 2 MiB/s"
            );
            // … and not sharing it with the other connection (shared: about 2.9 s).
            assert!(
                *secs < 2.3,
                "{dir} of 3 MiB took {secs:.2} s: the connections share the rate"
            );
        }
    }
    assert!(
        wall < 2.5,
        "two connections took {wall:.2} s together: they share the rate"
    );
}

#[test]
fn a_postgres_session_runs_through_it_at_the_rate() {
    let pg = PgCluster::start().unwrap();
    let proxy = Proxy::start(pg.port(), "2MiB");
    // About 3.9 MiB of COPY output per session.
    let copy = "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 4000)) TO STDOUT";
    let session = |port: u16| {
        let mut cmd = pg.client("psql");
        cmd.args(["-p", &port.to_string(), "-X", "-d", "postgres", "-c", copy]);
        move || {
            let t0 = Instant::now();
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (out.stdout.len(), t0.elapsed().as_secs_f64())
        }
    };
    let (direct_bytes, direct) = session(pg.port())();
    let t0 = Instant::now();
    let pair: Vec<_> = (0..2).map(|_| thread::spawn(session(proxy.port))).collect();
    let results: Vec<_> = pair.into_iter().map(|t| t.join().unwrap()).collect();
    let wall = t0.elapsed().as_secs_f64();
    for (bytes, secs) in results {
        assert_eq!(bytes, direct_bytes, "the same rows came through the proxy");
        assert!(
            secs >= 1.5,
            "{bytes} bytes in {secs:.2} s: not held to 2 MiB/s (direct: {direct:.2} s)"
        );
        assert!(
            secs < 3.0,
            "{bytes} bytes in {secs:.2} s: the sessions share the rate"
        );
    }
    assert!(
        wall < 3.2,
        "two sessions took {wall:.2} s together: they share the rate"
    );
}

#[test]
fn mistakes_are_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_throttle-proxy"))
        .args(["--target", "127.0.0.1:5432", "--rate", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rate `fast`") && err.contains("usage:"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_throttle-proxy"))
        .args(["--rate", "1MiB"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target and --rate are required"));
}
