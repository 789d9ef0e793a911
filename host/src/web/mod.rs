//! The status web server of `envsync-host serve` and `envsync-host daemon`:
//! `/` (the status page), `/status.json` (the rows of `status --json`),
//! `/running.json` (the steps running now, `status --running --json`),
//! `/metrics` (Prometheus text format) and `/healthz`.
//!
//! Plain HTTP/1 on hyper, which the Pushgateway client already brings in;
//! no framework for four read-only routes. Every request reads the run
//! history afresh, so the page is current without any cache to invalidate.

mod page;

use crate::jobs::history::{self, History, Record};
use crate::metrics::{self, Group, GroupingKey, Registry, SharedRegistry, State};
use crate::progress::running;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the server shows.
#[derive(Clone)]
pub struct Site {
    /// The state folder whose history is shown.
    pub state_dir: PathBuf,
    /// Page title, e.g. the environment's name.
    pub title: String,
    /// The daemon's live metrics (what it pushed); merged over the metrics
    /// derived from the history.
    pub live: Option<SharedRegistry>,
}

/// A bound server; `serve` runs it until `stop` is cancelled.
pub struct Server {
    listener: TcpListener,
    site: Arc<Site>,
}

impl Server {
    pub async fn bind(addr: &str, site: Site) -> Result<Server> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (is the port in use?)"))?;
        Ok(Server {
            listener,
            site: Arc::new(site),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub async fn serve(self, stop: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("status server: accept failed: {e}");
                        continue;
                    }
                },
            };
            let site = Arc::clone(&self.site);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let site = Arc::clone(&site);
                    async move { Ok::<_, Infallible>(respond(&site, &req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("status server: connection ended: {e}");
                }
            });
        }
    }
}

fn respond(site: &Site, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let records = match History::in_dir(&site.state_dir).read() {
        Ok(r) => r,
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e:#}\n"),
            );
        }
    };
    let now = chrono::Utc::now();
    match req.uri().path() {
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::render(
                &site.title,
                &records,
                &running::read_all(&site.state_dir),
                now,
            ),
        ),
        "/status.json" => {
            let rows = history::latest(&records, now);
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&rows).unwrap_or_default(),
            )
        }
        "/running.json" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&running::read_all(&site.state_dir)).unwrap_or_default(),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics_text(site, &records),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /, /status.json, /running.json or /metrics\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}

/// The job metrics of every database and operation in the history (last
/// timestamp, duration and size of each state), with the daemon's live
/// values on top (they also know runs in progress).
fn metrics_text(site: &Site, records: &[Record]) -> String {
    let mut registry = registry_from_history(records);
    if let Some(live) = &site.live {
        let live = live.lock().unwrap_or_else(|e| e.into_inner());
        for (key, values) in live.groups() {
            *registry.entry(key) = values.clone();
        }
    }
    registry.render()
}

pub fn registry_from_history(records: &[Record]) -> Registry {
    let mut registry = Registry::new();
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| r.time);
    for r in sorted {
        let state = match r.state.as_str() {
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            _ => continue,
        };
        let group = Group::new(GroupingKey::new(
            &r.plugin,
            r.instance.clone(),
            r.database.clone(),
            &r.operation,
        ));
        registry.record_finished(
            &group,
            state,
            r.time.timestamp_millis() as f64 / 1000.0,
            r.duration_seconds,
            r.size.map(|s| s as f64),
        );
        if let Some(at) = r.data_time {
            registry.record_data_timestamp(&group, at.timestamp_millis() as f64 / 1000.0);
        }
    }
    registry
}
