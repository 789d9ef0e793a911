//! One HTTP client for everything the host says over HTTP (the Pushgateway,
//! plugins' cluster requests): a base URL, `http://` or `https://` (rustls
//! with the system's CA roots), and a timeout over each whole exchange.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

enum Transport {
    Http(Client<HttpConnector, Full<Bytes>>),
    Https(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

/// A client for one base URL.
pub struct HttpClient {
    /// Without a trailing `/`, e.g. `http://pushgateway:9091`.
    base: String,
    timeout: Duration,
    transport: Transport,
}

/// An answer longer than the caller's limit (it was not read further).
#[derive(Debug)]
pub struct BodyTooLarge {
    pub limit: usize,
}

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the answer is longer than {} bytes", self.limit)
    }
}

impl std::error::Error for BodyTooLarge {}

/// A whole response.
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpClient {
    /// `what` names the service in messages (e.g. "Pushgateway").
    pub fn new(url: &str, timeout: Duration, what: &str) -> Result<HttpClient> {
        let base = url.trim_end_matches('/').to_string();
        let uri: Uri = base
            .parse()
            .with_context(|| format!("{what} URL {url:?} is not a URL"))?;
        if uri.host().is_none() {
            bail!("{what} URL {url:?} has no host");
        }
        if uri.query().is_some() {
            bail!("{what} URL {url:?} must not have a query");
        }
        if timeout.is_zero() {
            bail!("{what} timeout must be more than zero");
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        let transport = match uri.scheme_str() {
            Some("http") => Transport::Http(Client::builder(TokioExecutor::new()).build(http)),
            Some("https") => {
                http.enforce_http(false);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
                    .with_context(|| {
                        format!("no CA certificates to check the {what}'s certificate with")
                    })?
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                Transport::Https(Client::builder(TokioExecutor::new()).build(https))
            }
            _ => bail!("{what} URL {url:?} must start with http:// or https://"),
        };
        Ok(HttpClient {
            base,
            timeout,
            transport,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request to `base + path`, with `timeout` over the whole exchange
    /// (connect, send, read the body).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<HttpResponse> {
        self.request_limited(method, path, headers, body, usize::MAX)
            .await
    }

    /// [`HttpClient::request`], reading at most `max_body` bytes of the
    /// answer: a longer one fails with [`BodyTooLarge`] as soon as it is
    /// known (its `content-length`, or the bytes read so far).
    pub async fn request_limited(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
        max_body: usize,
    ) -> Result<HttpResponse> {
        let url = format!("{}{path}", self.base);
        let mut builder = Request::builder().method(method.clone()).uri(&url);
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let req = builder
            .body(Full::new(body))
            .with_context(|| format!("bad request {method} {url}"))?;
        let exchange = async {
            let resp = match &self.transport {
                Transport::Http(c) => c.request(req).await,
                Transport::Https(c) => c.request(req).await,
            }
            .with_context(|| format!("{method} {url}"))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let declared = headers
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max_body as u64) {
                return Err(BodyTooLarge { limit: max_body }.into());
            }
            let body = match http_body_util::Limited::new(resp.into_body(), max_body)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(BodyTooLarge { limit: max_body }.into());
                }
                Err(e) => {
                    return Err(anyhow!(e).context(format!("{method} {url}: reading the answer")));
                }
            };
            Ok::<_, anyhow::Error>(HttpResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("{method} {url}: no answer within {:?}", self.timeout))?
    }
}
