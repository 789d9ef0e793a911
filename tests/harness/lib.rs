//! Test harness of envsync's end-to-end suites.
//!
//! One module per real server the suites start ([`postgres`], [`mariadb`], [`s3`]), plus the
//! pieces every suite shares: where the built binaries are ([`paths`]), plugin
//! folders laid out as an operator does ([`plugin_folder`]), free
//! ports ([`ports`]), running child programs with a deadline ([`process`]),
//! looking at other processes through `/proc` ([`procs`]), running the
//! `envsync-host` CLI ([`host_cli`]) and inspecting a local folder store
//! ([`store`]). For object storage: a throwaway S3 server, a signed client
//! and a view of an `s3://` store ([`s3`]), and a network-fault double to put
//! in front of it ([`faulty_proxy`]), which also runs as a per-connection
//! throttling TCP proxy for any server ([`throttle`]). For metrics: a throwaway Prometheus
//! Pushgateway, a reader of its text exposition and where `promtool` is
//! ([`pushgateway`]), and a throwaway Prometheus evaluating alert rules
//! ([`prometheus`]). For Kubernetes: reading rendered manifests and the
//! offline checkers `kubernetes-validate` and `hadolint` ([`kubernetes`]). For search
//! engines: a throwaway OpenSearch-compatible server (osmem-server) and JSON
//! helpers on it ([`search`]); for document databases: a throwaway
//! MongoDB-compatible server (SecantusDB) and mongosh ([`mongo`]); and an HTTP double of the snapshot API, which
//! no server that runs here has ([`snapshot_double`]).
//!
//! Every child the harness starts is waited for: in CI, PID 1 does not reap
//! orphans, so a forgotten child stays a zombie until the machine goes.

pub mod faulty_proxy;
pub mod host_cli;
pub mod http;
pub mod http_server;
pub mod kubernetes;
pub mod mariadb;
pub mod mongo;
pub mod paths;
pub mod plugin_folder;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod procs;
pub mod prometheus;
pub mod pushgateway;
pub mod s3;
pub mod search;
pub mod snapshot_double;
pub mod store;
pub mod throttle;
