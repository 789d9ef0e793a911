//! Test harness of envsync's end-to-end suites.
//!
//! One module per real server the suites start (today: [`postgres`]), plus the
//! pieces every suite shares: where the built binaries are ([`paths`]), free
//! ports ([`ports`]), running child programs with a deadline ([`process`]),
//! looking at other processes through `/proc` ([`procs`]), running the
//! `envsync-host` CLI ([`host_cli`]) and inspecting a local folder store
//! ([`store`]).
//!
//! Every child the harness starts is waited for: in CI, PID 1 does not reap
//! orphans, so a forgotten child stays a zombie until the machine goes.

pub mod host_cli;
pub mod paths;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod procs;
pub mod store;
