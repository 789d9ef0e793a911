//! Pushing a job's metrics to a Prometheus Pushgateway.
//!
//! Each run pushes twice: when it starts and when it ends (succeeded or
//! failed, also when stopped by its deadline or SIGTERM). A push sends, with
//! `POST`, every series the group has — the new values and the earlier ones
//! this process knows — because the Pushgateway replaces a whole metric
//! *family* of the group on every push, `POST` included: pushing only
//! `…timestamp_seconds{state="failed"}` would delete
//! `…timestamp_seconds{state="succeeded"}`, which the "not succeeded within"
//! alerts need. The first push for a group in a process therefore reads the
//! group's current series back from the Pushgateway (`GET /api/v1/metrics`)
//! and fills in what this process has not seen (see
//! docs/decisions/0009-metrics-http.md).
//!
//! A push that fails (gateway down, timeout, refused) is logged as a warning
//! by [`Pusher::started`] and [`Pusher::finished`]; it never fails the step.

use super::exposition::{CONTENT_TYPE, GroupValues, ProgressValues, Registry, SharedRegistry};
use super::names::{
    DATA_TIMESTAMP, DURATION, FILE_SIZE, Group, GroupingKey, STATE, STATUS_TIMESTAMP, State,
};
use crate::http_client::HttpClient;
use anyhow::{Context, Result, bail};
use hyper::Method;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default time one request to the Pushgateway may take, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `size`: the artifact's size in bytes, when the operation has one
    /// (backup: written; restore: read); sets `db_backup_job_file_size_bytes`.
    Succeeded {
        duration: Duration,
        size: Option<u64>,
    },
    /// Failed, timed out or stopped.
    Failed { duration: Duration },
}

impl Outcome {
    pub fn state(&self) -> State {
        match self {
            Outcome::Succeeded { .. } => State::Succeeded,
            Outcome::Failed { .. } => State::Failed,
        }
    }

    pub fn duration(&self) -> Duration {
        match self {
            Outcome::Succeeded { duration, .. } | Outcome::Failed { duration } => *duration,
        }
    }
}

/// Pushes job metrics to one Pushgateway and keeps the last values of every
/// group in a [`Registry`] (served by the daemon as `/metrics`).
pub struct Pusher {
    target: Option<HttpClient>,
    registry: SharedRegistry,
    /// Groups whose earlier series were read back from the Pushgateway.
    seeded: Mutex<HashSet<GroupingKey>>,
}

impl Pusher {
    /// A pusher to the Pushgateway at `url` (`http://` or `https://`, an
    /// optional path prefix); every request may take at most `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Pusher> {
        let client = HttpClient::new(url, timeout, "Pushgateway")?;
        Ok(Pusher {
            target: Some(client),
            registry: SharedRegistry::default(),
            seeded: Mutex::new(HashSet::new()),
        })
    }

    /// A pusher without a Pushgateway: only the registry is updated (the
    /// daemon still serves `/metrics`).
    pub fn local_only() -> Pusher {
        Pusher {
            target: None,
            registry: SharedRegistry::default(),
            seeded: Mutex::new(HashSet::new()),
        }
    }

    /// The Pushgateway's base URL, if any.
    pub fn url(&self) -> Option<&str> {
        self.target.as_ref().map(HttpClient::base)
    }

    /// The registry this pusher updates; hand it to the `/metrics` server.
    pub fn registry(&self) -> SharedRegistry {
        Arc::clone(&self.registry)
    }

    /// A run of `group` starts now: state 1 and the started timestamp.
    /// A failed push is logged as a warning, never returned.
    pub async fn started(&self, group: &Group) {
        if let Err(e) = self.push_started(group, SystemTime::now()).await {
            tracing::warn!(group = %group.key, "could not push metrics to the Pushgateway: {e:#}");
        }
    }

    /// A run of `group` ended now with `outcome`: state 0 or 2, that
    /// state's timestamp and duration, and the size on success. A failed
    /// push is logged as a warning, never returned.
    pub async fn finished(&self, group: &Group, outcome: Outcome) {
        if let Err(e) = self.push_finished(group, &outcome, SystemTime::now()).await {
            tracing::warn!(group = %group.key, "could not push metrics to the Pushgateway: {e:#}");
        }
    }

    /// The running run's progress: the `db_backup_job_progress_*` gauges.
    /// A failed push is logged as a warning, never returned.
    pub async fn progress(&self, group: &Group, values: ProgressValues) {
        self.lock().record_progress(group, values);
        if let Err(e) = self.push(&group.key).await {
            tracing::warn!(group = %group.key, "could not push progress to the Pushgateway: {e:#}");
        }
    }

    /// The target database of `group` now holds production data from `at`;
    /// pushed with the run's end ([`Pusher::finished`]).
    pub fn data_from(&self, group: &Group, at: SystemTime) {
        self.lock().record_data_timestamp(group, unix_seconds(at));
    }

    /// [`Pusher::started`] at a given time, returning the push's error.
    pub async fn push_started(&self, group: &Group, at: SystemTime) -> Result<()> {
        self.lock().record_started(group, unix_seconds(at));
        self.push(&group.key).await
    }

    /// [`Pusher::finished`] at a given time, returning the push's error.
    pub async fn push_finished(
        &self,
        group: &Group,
        outcome: &Outcome,
        at: SystemTime,
    ) -> Result<()> {
        let size = match outcome {
            Outcome::Succeeded { size, .. } => size.map(|s| s as f64),
            Outcome::Failed { .. } => None,
        };
        self.lock().record_finished(
            group,
            outcome.state(),
            unix_seconds(at),
            outcome.duration().as_secs_f64(),
            size,
        );
        self.push(&group.key).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends every series of the group (after reading back the group's
    /// earlier series once).
    async fn push(&self, key: &GroupingKey) -> Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let seeded = self
            .seeded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key);
        if !seeded {
            match self.read_back(target, key).await {
                Ok(older) => {
                    if let Some(older) = older {
                        self.lock().entry(key).fill_from(&older);
                    }
                    self.seeded
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone());
                }
                Err(e) => tracing::warn!(
                    group = %key,
                    "could not read the group's earlier metrics back from the Pushgateway \
                     (series of earlier runs may be lost): {e:#}"
                ),
            }
        }
        let body = self
            .lock()
            .get(key)
            .map(GroupValues::push_body)
            .unwrap_or_default();
        let headers = [("content-type".to_string(), CONTENT_TYPE.to_string())];
        let answer = target
            .request(Method::POST, &key.push_path(), &headers, body.into())
            .await?;
        if !answer.status.is_success() {
            bail!(
                "POST {}{} answered {}: {}",
                target.base(),
                key.push_path(),
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            );
        }
        Ok(())
    }

    /// The group's current series in the Pushgateway; `None` when it has
    /// no such group.
    async fn read_back(
        &self,
        target: &HttpClient,
        key: &GroupingKey,
    ) -> Result<Option<GroupValues>> {
        let answer = target
            .request(Method::GET, "/api/v1/metrics", &[], Default::default())
            .await?;
        if !answer.status.is_success() {
            bail!(
                "GET {}/api/v1/metrics answered {}: {}",
                target.base(),
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&answer.body)
            .context("the Pushgateway's /api/v1/metrics is not JSON")?;
        Ok(group_from_api(&json, key))
    }
}

/// Finds `key`'s group in a `GET /api/v1/metrics` answer and reads our four
/// families from it (anything that does not parse is left out).
pub fn group_from_api(json: &serde_json::Value, key: &GroupingKey) -> Option<GroupValues> {
    let groups = json.get("data")?.as_array()?;
    let wanted = key.labels();
    let group = groups.iter().find(|g| {
        g.get("labels")
            .and_then(|l| l.as_object())
            .is_some_and(|l| {
                l.len() == wanted.len()
                    && wanted
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(|x| x.as_str()) == Some(*v))
            })
    })?;
    let samples = |family: &str| -> Vec<(Option<State>, f64)> {
        let Some(metrics) = group
            .get(family)
            .and_then(|f| f.get("metrics"))
            .and_then(|m| m.as_array())
        else {
            return Vec::new();
        };
        metrics
            .iter()
            .filter_map(|m| {
                let value: f64 = m.get("value")?.as_str()?.parse().ok()?;
                let state = m
                    .get("labels")
                    .and_then(|l| l.get("state"))
                    .and_then(|s| s.as_str())
                    .and_then(State::from_label);
                Some((state, value))
            })
            .collect()
    };
    let mut out = GroupValues {
        state: samples(STATE)
            .first()
            .and_then(|(_, v)| State::from_value(*v)),
        file_size: samples(FILE_SIZE).first().map(|(_, v)| *v),
        data_timestamp: samples(DATA_TIMESTAMP).first().map(|(_, v)| *v),
        ..GroupValues::default()
    };
    for (state, v) in samples(STATUS_TIMESTAMP) {
        if let Some(s) = state {
            out.timestamps.insert(s, v);
        }
    }
    for (state, v) in samples(DURATION) {
        if let Some(s) = state.filter(|s| *s != State::Started) {
            out.durations.insert(s, v);
        }
    }
    Some(out)
}

fn unix_seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_pusher_checks_the_url() {
        assert!(Pusher::new("http://127.0.0.1:9091/", DEFAULT_TIMEOUT).is_ok());
        assert_eq!(
            Pusher::new("http://pgw:9091/prefix/", DEFAULT_TIMEOUT)
                .unwrap()
                .url(),
            Some("http://pgw:9091/prefix")
        );
        assert!(Pusher::new("ftp://pgw", DEFAULT_TIMEOUT).is_err());
        assert!(Pusher::new("pgw:9091", DEFAULT_TIMEOUT).is_err());
        assert!(Pusher::new("http://pgw:9091?x=1", DEFAULT_TIMEOUT).is_err());
        assert!(Pusher::new("http://pgw:9091", Duration::ZERO).is_err());
    }

    #[test]
    fn metrics_https_pusher_builds_or_names_the_missing_certificates() {
        match Pusher::new("https://pgw.example.org", DEFAULT_TIMEOUT) {
            Ok(p) => assert_eq!(p.url(), Some("https://pgw.example.org")),
            Err(e) => assert!(format!("{e:#}").contains("CA certificates"), "{e:#}"),
        }
    }

    #[test]
    fn metrics_push_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let p = Pusher::local_only();
        let g = Group::new(GroupingKey::new("postgres", "h", "d", "backup"));
        assert_send(&p.started(&g));
        assert_send(&p.finished(
            &g,
            Outcome::Failed {
                duration: Duration::ZERO,
            },
        ));
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Pusher>();
    }

    #[test]
    fn metrics_read_back_from_api_json() {
        let key = GroupingKey::new("postgres", "h/1", "d", "backup");
        let json: serde_json::Value = serde_json::from_str(
            r#"{"status":"success","data":[
              {"labels":{"job":"db-backup","database_engine":"postgres","database_instance":"other","database_db_name":"d","operation":"backup"},
               "db_backup_job_state":{"type":"GAUGE","metrics":[{"labels":{},"value":"1"}]}},
              {"labels":{"job":"db-backup","database_engine":"postgres","database_instance":"h/1","database_db_name":"d","operation":"backup"},
               "db_backup_job_state":{"type":"GAUGE","metrics":[{"labels":{"job":"db-backup"},"value":"2"}]},
               "db_backup_job_status_timestamp_seconds":{"type":"GAUGE","metrics":[
                  {"labels":{"state":"succeeded"},"value":"1.7e+09"},
                  {"labels":{"state":"started"},"value":"1699999990"},
                  {"labels":{"state":"bogus"},"value":"3"}]},
               "db_backup_job_duration_seconds":{"type":"GAUGE","metrics":[{"labels":{"state":"succeeded"},"value":"10"}]},
               "db_backup_job_file_size_bytes":{"type":"GAUGE","metrics":[{"labels":{},"value":"123"}]},
               "db_backup_job_data_timestamp_seconds":{"type":"GAUGE","metrics":[{"labels":{},"value":"1690000000"}]},
               "push_time_seconds":{"type":"GAUGE","metrics":[{"labels":{},"value":"1"}]}}
            ]}"#,
        )
        .unwrap();
        let g = group_from_api(&json, &key).unwrap();
        assert_eq!(g.state, Some(State::Succeeded));
        assert_eq!(g.timestamps.len(), 2);
        assert_eq!(g.timestamps[&State::Succeeded], 1.7e9);
        assert_eq!(g.durations[&State::Succeeded], 10.0);
        assert_eq!(g.file_size, Some(123.0));
        assert_eq!(g.data_timestamp, Some(1.69e9));
        let missing = GroupingKey::new("mysql", "h/1", "d", "backup");
        assert!(group_from_api(&json, &missing).is_none());
    }

    #[tokio::test]
    async fn metrics_local_only_updates_the_registry() {
        let p = Pusher::local_only();
        let g = Group::new(GroupingKey::new("postgres", "h", "d", "backup"));
        p.started(&g).await;
        p.finished(
            &g,
            Outcome::Succeeded {
                duration: Duration::from_secs(3),
                size: Some(10),
            },
        )
        .await;
        let r = p.registry();
        let r = r.lock().unwrap();
        let v = r.get(&g.key).unwrap();
        assert_eq!(v.state, Some(State::Succeeded));
        assert_eq!(v.durations[&State::Succeeded], 3.0);
        assert_eq!(v.file_size, Some(10.0));
    }

    #[tokio::test]
    async fn metrics_silent_gateway_times_out() {
        // Accepts connections (the kernel does) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Pusher::new(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_millis(300),
        )
        .unwrap();
        let g = Group::new(GroupingKey::new("postgres", "h", "d", "backup"));
        let start = std::time::Instant::now();
        let err = p.push_started(&g, SystemTime::now()).await.unwrap_err();
        // The read-back and the push each wait at most the timeout.
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(format!("{err:#}").contains("no answer within"), "{err:#}");
        drop(listener);
    }

    #[tokio::test]
    async fn metrics_unreachable_gateway_is_an_error_within_the_timeout() {
        // A port nobody listens on: connection refused, quickly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Pusher::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let g = Group::new(GroupingKey::new("postgres", "h", "d", "backup"));
        let start = std::time::Instant::now();
        assert!(p.push_started(&g, SystemTime::now()).await.is_err());
        // The non-failing form only logs.
        p.started(&g).await;
        assert!(start.elapsed() < Duration::from_secs(10));
        // Recorded locally all the same.
        assert!(p.registry().lock().unwrap().contains(&g.key));
    }
}
