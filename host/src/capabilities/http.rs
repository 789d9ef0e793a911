//! `envsync:plugin/http`: requests to the step's clusters. The plugin names
//! a connection role and a path; the host builds the URL from the operator's
//! configuration of that connection, adds its credentials and refuses
//! everything else before any connection is made. One client per role,
//! made on first use.

use super::HostResult;
use crate::connection::Connection;
use crate::http_client::HttpClient;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::envsync::plugin::http::{Host, Request, Response};
use crate::runtime::sandbox::StepState;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest one request may take (connect, send, whole answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request body a plugin may send.
const MAX_BODY: usize = 64 << 20;
/// Largest answer the host reads for a plugin. The answer is copied whole
/// into the plugin's memory, so it must fit there with room to parse it;
/// the Elasticsearch plugin's largest answers are search pages
/// (`page_size` documents, 2,000 by default) and bulk results for 5 MiB
/// requests, a few MiB each. 64 MiB keeps the host's copy small next to a
/// plugin's memory cap while leaving pages of large documents room.
pub const MAX_RESPONSE: usize = 64 << 20;
const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "DELETE"];
/// Headers only the host sets.
const RESERVED_HEADERS: &[&str] = &["authorization", "host", "proxy-authorization", "cookie"];

/// The clients of one step, by connection role.
#[derive(Default)]
pub struct HttpClients {
    clients: BTreeMap<String, HttpClient>,
    /// A sanitised backup's structure call: only [`metadata_read`]s.
    pub(crate) metadata_only: bool,
}

/// Whether `method path` only reads cluster or index metadata (settings,
/// mappings, aliases, the index list), never a document, in the REST API
/// Elasticsearch and OpenSearch share. What a sanitised backup's structure
/// call may ask, so it reads no rows. Segments are percent-decoded first,
/// as the cluster decodes them.
pub fn metadata_read(method: &str, path: &str) -> bool {
    if !method.eq_ignore_ascii_case("GET") {
        return false;
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Option<Vec<String>> = path
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|d| d.into_owned())
        })
        .collect();
    let Some(segments) = segments else {
        return false;
    };
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    const META: &[&str] = &["_mapping", "_mappings", "_settings", "_alias", "_aliases"];
    let index = |s: &str| !s.starts_with('_') || s == "_all";
    match seg.as_slice() {
        [] => true,
        ["_cat", "indices" | "aliases"] => true,
        ["_resolve", "index", _] => true,
        [m] if META.contains(m) => true,
        [i] => index(i),
        [i, m] => index(i) && META.contains(m),
        _ => false,
    }
}

/// The base URL of `conn`: its host when that is a URL
/// (`https://es.prod:9200`), else `http://HOST:PORT` (port 9200 unless set).
pub fn base_url(conn: &Connection) -> Result<String, String> {
    let host = conn.host.as_deref().unwrap_or("localhost");
    if host.starts_with("http://") || host.starts_with("https://") {
        if conn.port.is_some() {
            return Err(format!(
                "the connection's host {host:?} is a URL; put the port in it instead of setting port"
            ));
        }
        return Ok(host.trim_end_matches('/').to_string());
    }
    if host.contains('/') || host.contains('@') {
        return Err(format!(
            "the connection's host {host:?} is not a host name or a URL"
        ));
    }
    Ok(format!("http://{host}:{}", conn.port.unwrap_or(9200)))
}

/// `authorization` for `conn`: basic auth with a user, an API key without.
fn authorization(conn: &Connection) -> Option<String> {
    let password = conn.password.as_ref()?;
    Some(match &conn.user {
        Some(user) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", password.expose()))
        ),
        None => format!("ApiKey {}", password.expose()),
    })
}

impl Host for StepState {
    async fn send(&mut self, request: Request) -> HostResult<Response> {
        let Request {
            method,
            connection,
            path,
            headers,
            body,
        } = request;
        let method = method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Ok(Err(WitError::Denied(format!(
                "HTTP method {method:?} is not allowed (use {})",
                METHODS.join(", ")
            ))));
        }
        if !path.starts_with('/') || path.contains("://") || path.starts_with("//") {
            return Ok(Err(WitError::Denied(format!(
                "HTTP path {path:?} refused: requests go only to the task's clusters; name the connection \
                 (source or target) and give a path starting with /"
            ))));
        }
        if let Some((name, _)) = headers
            .iter()
            .find(|(n, _)| RESERVED_HEADERS.contains(&n.to_ascii_lowercase().as_str()))
        {
            return Ok(Err(WitError::Denied(format!(
                "header {name:?} is set by the host, not by plugins"
            ))));
        }
        if body.len() > MAX_BODY {
            return Ok(Err(WitError::Denied(format!(
                "request body of {} bytes is over the limit of {} MiB; send smaller batches",
                body.len(),
                MAX_BODY >> 20
            ))));
        }
        if self.http.metadata_only && !metadata_read(&method, &path) {
            return Ok(Err(WitError::Denied(format!(
                "{method} {path} refused: a sanitised backup's structure call reads only metadata \
                 (index settings, mappings and aliases), never documents"
            ))));
        }
        let Some(conn) = self.job.connections.get(&connection).cloned() else {
            return Ok(Err(WitError::Denied(format!(
                "this step has no {connection:?} connection"
            ))));
        };
        if !self.http.clients.contains_key(&connection) {
            let base = match base_url(&conn) {
                Ok(b) => b,
                Err(e) => return Ok(Err(WitError::InvalidParam(e))),
            };
            match HttpClient::new(&base, REQUEST_TIMEOUT, "cluster") {
                Ok(client) => {
                    self.http.clients.insert(connection.clone(), client);
                }
                Err(e) => return Ok(Err(WitError::InvalidParam(format!("{e:#}")))),
            }
        }
        let client = &self.http.clients[&connection];
        let mut headers = headers;
        if let Some(auth) = authorization(&conn) {
            headers.push(("authorization".into(), auth));
        }
        let method = hyper::Method::from_bytes(method.as_bytes()).expect("checked above");
        match client
            .request_limited(method, &path, &headers, body.into(), MAX_RESPONSE)
            .await
        {
            Ok(answer) => Ok(Ok(Response {
                status: answer.status.as_u16(),
                headers: answer
                    .headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                    .collect(),
                body: answer.body.to_vec(),
            })),
            Err(e) if e.is::<crate::http_client::BodyTooLarge>() => {
                Ok(Err(WitError::Denied(format!(
                    "the answer to {path} is over the host's limit of {} MiB on HTTP answers and was not \
                     read; ask for less per request (a smaller page size)",
                    MAX_RESPONSE >> 20
                ))))
            }
            Err(e) => Ok(Err(WitError::Io(format!("{e:#}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Secret;

    #[test]
    fn structure_calls_read_metadata_and_never_documents() {
        for ok in [
            "/",
            "/products-*,orders?expand_wildcards=open&ignore_unavailable=false",
            "/products/_mapping",
            "/products/_settings?flat_settings=true",
            "/_alias",
            "/_cat/indices?format=json",
            "/_resolve/index/prod*",
        ] {
            assert!(metadata_read("GET", ok), "{ok}");
        }
        for refused in [
            "/products/_search",
            "/products/%5Fsearch",
            "/products/_doc/1",
            "/products/_source/1",
            "/products/type/1",
            "/_search/scroll",
            "/products/_pit?keep_alive=1m",
            "/_mget",
            "/products/_count",
            "/%ff",
        ] {
            assert!(!metadata_read("GET", refused), "{refused}");
        }
        assert!(!metadata_read("POST", "/products/_mapping"));
        assert!(!metadata_read("HEAD", "/"));
    }

    fn conn(host: &str, port: Option<u16>) -> Connection {
        Connection {
            database: "logs".into(),
            host: Some(host.into()),
            port,
            ..Default::default()
        }
    }

    #[test]
    fn base_urls_come_from_the_connection() {
        assert_eq!(base_url(&conn("es1", None)).unwrap(), "http://es1:9200");
        assert_eq!(
            base_url(&conn("es1", Some(9201))).unwrap(),
            "http://es1:9201"
        );
        assert_eq!(
            base_url(&conn("https://es.prod:9243/", None)).unwrap(),
            "https://es.prod:9243"
        );
        assert!(base_url(&conn("https://es.prod", Some(1))).is_err());
        assert!(base_url(&conn("evil/x", None)).is_err());
    }

    #[test]
    fn credentials_become_basic_auth_or_an_api_key() {
        let mut c = conn("es1", None);
        assert_eq!(authorization(&c), None);
        c.password = Some(Secret::new("k3y".into()));
        assert_eq!(authorization(&c).unwrap(), "ApiKey k3y");
        c.user = Some("elastic".into());
        assert_eq!(authorization(&c).unwrap(), "Basic ZWxhc3RpYzprM3k=");
    }

    /// A server that answers every request with `len` bytes, announced by
    /// `content-length` or chunked (unannounced).
    async fn server(len: usize, chunked: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let head = if chunked {
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n")
                    };
                    sock.write_all(head.as_bytes()).await?;
                    let piece = vec![b'x'; 64 << 10];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(piece.len());
                        if chunked {
                            sock.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                        }
                        sock.write_all(&piece[..n]).await?;
                        if chunked {
                            sock.write_all(b"\r\n").await?;
                        }
                        left -= n;
                    }
                    if chunked {
                        sock.write_all(b"0\r\n\r\n").await?;
                    }
                    Ok::<_, std::io::Error>(())
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn answers_over_the_limit_are_not_read() {
        for chunked in [false, true] {
            let client =
                HttpClient::new(&server(3 << 20, chunked).await, REQUEST_TIMEOUT, "cluster")
                    .unwrap();
            let e = client
                .request_limited(hyper::Method::GET, "/", &[], Default::default(), 1 << 20)
                .await
                .err()
                .unwrap();
            assert!(
                e.is::<crate::http_client::BodyTooLarge>(),
                "chunked {chunked}: {e:#}"
            );
            let ok = client
                .request_limited(hyper::Method::GET, "/", &[], Default::default(), 3 << 20)
                .await
                .unwrap();
            assert_eq!(ok.body.len(), 3 << 20);
        }
    }
}
