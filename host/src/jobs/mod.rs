//! Jobs: the config file (an environment and its tasks), turning a task's
//! steps into step requests, and running them as a chain.

pub mod chain;
pub mod config;
pub mod diagnostics;
pub mod task;
