//! envsync-host: runs WebAssembly datastore plugins to back up, restore,
//! transform and copy databases between environments.

pub mod capabilities;
pub mod cli;
pub mod connection;
pub mod failure;
pub mod http_client;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod render;
pub mod runtime;
pub mod sanitiser;
pub mod signals;
pub mod step;
pub mod store;
pub mod web;
