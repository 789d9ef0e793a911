//! `envsync:plugin/job`: the step's parameters and non-secret connection facts.

use crate::connection::Connection;
use crate::runtime::bindings::envsync::plugin::job::{ConnectionInfo, Host, ParallelSessions};
use crate::runtime::sandbox::StepState;
use std::collections::BTreeMap;

/// The job as the plugin may see it. Connections carry secrets, but only
/// their database name and display address cross into the guest.
#[derive(Clone, Debug, Default)]
pub struct JobContext {
    pub params: Vec<(String, String)>,
    /// Keyed by role: `source`, `target`.
    pub connections: BTreeMap<String, Connection>,
    /// Sessions the plugin may run at once (0 in contexts that grant none: 1).
    pub jobs: u32,
    /// True when the operator chose `jobs` (else it is automatic).
    pub jobs_chosen: bool,
}

impl JobContext {
    /// The value of parameter `name`; the last one given wins.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Host for StepState {
    async fn param(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.job.param(&name).map(str::to_string))
    }

    async fn params(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.job.params.clone())
    }

    async fn parallelism(&mut self) -> wasmtime::Result<ParallelSessions> {
        Ok(ParallelSessions {
            jobs: self.job.jobs.max(1),
            chosen: self.job.jobs_chosen,
        })
    }

    async fn connection(&mut self, role: String) -> wasmtime::Result<Option<ConnectionInfo>> {
        Ok(self.job.connections.get(&role).map(|c| ConnectionInfo {
            database: c.database.clone(),
            instance: c.display_address(),
            host: c.host.clone(),
            port: c.port,
            user: c.user.clone(),
        }))
    }
}
