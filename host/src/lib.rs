//! envsync-host: runs WebAssembly datastore plugins to back up, restore,
//! transform and copy databases between environments.

// What keeps plugin programs in their place is Linux's: Landlock, prctl
// (PR_SET_PDEATHSIG) and /proc. Elsewhere it would build
// without the guarantees docs/security.md makes, so it does not build.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "envsync-host runs on Linux only (Landlock, prctl and /proc confine the programs plugins \
     run); build it on Linux 5.13 or later, or use the container image"
);

pub mod capabilities;
pub mod cli;
pub mod connection;
pub mod export;
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
