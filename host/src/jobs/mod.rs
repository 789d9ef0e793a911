//! Jobs: the config file (an environment and its tasks), turning a task's
//! steps into step requests, running them as a chain, and reporting each
//! step (metrics, run history).

pub mod chain;
pub mod config;
pub mod daemon;
pub mod diagnostics;
pub mod guard;
pub mod history;
pub mod lock;
pub mod marker;
pub mod report;
pub mod request;
pub mod runner;
pub mod scheduler;
pub mod task;
