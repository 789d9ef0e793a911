//! `throttle-proxy`: a TCP proxy that holds each connection to a rate, to
//! stand in for a remote server whose sessions are each bound by their own
//! backend (`scripts/bench.sh`, target `parallel`).
//!
//!   throttle-proxy --target HOST:PORT --rate 10MiB [--listen 127.0.0.1:0]
//!
//! Prints the address it listens on (`127.0.0.1:PORT`) as its first line of
//! stdout, then forwards until killed. The rate applies to every connection,
//! in each direction, on its own: N connections move N times the rate.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result, bail};
use envsync_tests::faulty_proxy::{FaultyProxy, ProxyConfig};
use envsync_tests::throttle::parse_rate;

const USAGE: &str = "usage: throttle-proxy --target HOST:PORT --rate RATE [--listen ADDR:PORT]\n\
    RATE: bytes per second for each connection in each direction, e.g. 10MiB, 512KiB, 2M\n\
    --listen defaults to 127.0.0.1:0 (any free port); the address taken is printed on stdout";

fn main() {
    if let Err(e) = run() {
        eprintln!("throttle-proxy: {e:#}\n{USAGE}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let mut target = None;
    let mut rate = None;
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return Ok(());
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--target" => {
                let addr = value
                    .to_socket_addrs()
                    .with_context(|| format!("--target {value}: not a HOST:PORT that resolves"))?
                    .next()
                    .with_context(|| format!("--target {value}: resolves to no address"))?;
                target = Some(addr);
            }
            "--rate" => rate = Some(parse_rate(&value).map_err(anyhow::Error::msg)?),
            "--listen" => {
                listen = value.parse().with_context(|| {
                    format!("--listen {value}: expected ADDR:PORT, e.g. 127.0.0.1:0")
                })?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let (Some(upstream), Some(rate)) = (target, rate) else {
        bail!("--target and --rate are required");
    };
    let proxy = FaultyProxy::start_with(ProxyConfig {
        listen,
        upstream,
        http: false,
        rate_per_connection: Some(rate),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", proxy.local_addr())?;
    out.flush()?;
    drop(out);
    // The proxy's threads do the work; this one only keeps the process alive.
    loop {
        std::thread::park();
    }
}
