//! Requests to a cluster through the host's `http` capability: the plugin
//! names the connection role, the host adds the base URL and credentials.

use crate::backoff;
use crate::bulk::preview;
use envsync_plugin_sdk::Error;
use envsync_plugin_sdk::bindings::envsync::plugin::http::{self, Request};
use serde_json::Value;

/// One connection role's cluster (`source` or `target`).
#[derive(Clone, Copy, Debug)]
pub struct Cluster {
    pub role: &'static str,
}

/// An answer: status and body as JSON (`Null` when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Cluster {
    pub const SOURCE: Cluster = Cluster { role: "source" };
    pub const TARGET: Cluster = Cluster { role: "target" };

    /// Sends one request, retrying 429 answers with backoff; any other
    /// status is returned as it is.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        ndjson: bool,
    ) -> Result<Answer, Error> {
        let mut headers = vec![("accept".to_string(), "application/json".to_string())];
        if body.is_some() {
            let kind = if ndjson {
                "application/x-ndjson"
            } else {
                "application/json"
            };
            headers.push(("content-type".to_string(), kind.to_string()));
        }
        let mut retry = 0;
        loop {
            let response = http::send(&Request {
                method: method.to_string(),
                connection: self.role.to_string(),
                path: path.to_string(),
                headers: headers.clone(),
                body: body.map(<[u8]>::to_vec).unwrap_or_default(),
            })
            .map_err(|e| e.context(format!("{method} {path} on the {} cluster", self.role)))?;
            if response.status == 429
                && let Some(wait) = backoff::delay(retry)
            {
                envsync_plugin_sdk::debug(format!(
                    "{method} {path}: 429 too many requests, retrying in {wait:?}"
                ));
                std::thread::sleep(wait);
                retry += 1;
                continue;
            }
            let body = if response.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&response.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&response.body).into_owned())
                })
            };
            return Ok(Answer {
                status: response.status,
                body,
            });
        }
    }

    /// Sends a request that must succeed (2xx); returns the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let answer = self.send(method, path, bytes.as_deref(), false)?;
        if !answer.ok() {
            return Err(self.failed(method, path, &answer));
        }
        Ok(answer.body)
    }

    /// The error for a failed request, quoting the cluster's answer.
    pub fn failed(&self, method: &str, path: &str, answer: &Answer) -> Error {
        Error::Other(format!(
            "{method} {path} on the {} cluster answered {}: {}",
            self.role,
            answer.status,
            preview(&answer.body)
        ))
    }
}

/// `s` percent-encoded for a path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
