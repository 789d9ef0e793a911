//! A throwaway S3-compatible server on 127.0.0.1, a small signed S3 client to
//! look into it, and a view of one `s3://bucket/prefix` store.
//!
//! [`S3Server::start`] runs [`Backend::S3sFs`] — `s3s-fs`, installed by
//! `scripts/setup.sh` into `~/.cargo/bin` — as a direct child of the test
//! process on a random port, with a fresh access key and secret key (it
//! checks SigV4 signatures), and kills and reaps it on drop: in CI, PID 1
//! does not reap orphans. `s3s-fs` is a *filesystem* backend: every bucket is
//! a folder of its data dir ([`S3Server::data_dir`]) and every object a plain
//! file in it, so the tests can create buckets by `mkdir`, flip bytes of a
//! stored object behind the server's back, and find the leftovers of
//! multipart uploads (`.upload-<id>.json`, `.upload_id-<id>.part-<n>` in the
//! data dir's root; `s3s-fs` has no ListMultipartUploads).
//!
//! [`Backend::Garage`] is the second, more realistic server type, used when a
//! `garage` binary is on `PATH` (see [`Backend::available`]); it is not
//! installed here, so that code path has not run in this repository yet. The
//! helpers that look behind the server's back fall back to S3 requests on it.
//!
//! [`Backend::Moto`] is moto's standalone server (`moto_server`, PyPI
//! `moto[server]`, installed by `scripts/setup.sh`), an in-memory S3
//! *emulator*. Unlike s3s-fs it lists ETags in ListObjectsV2 as AWS, MinIO
//! and Ceph do, and gives a server-side copy of a multipart-uploaded object
//! a whole-object MD5 ETag as AWS does; so it is where the cost of a
//! listing-only rerun is proved. It accepts any keys (it checks no
//! signatures) and is started only by the tests that ask for it, not by
//! [`Backend::available`].
//!
//! [`S3Client`] signs requests (SigV4, path-style, region [`REGION`]) with
//! nothing but `std` and `sha2`, so the tests never look at the store through
//! the SDK the host uses. [`S3Store`] reads the layout the host writes under a
//! prefix (README.md, "Store layout"): `<prefix>/<instance>/<ts>-<db>.<ext>[.zst|.gz][.age]`,
//! `<artifact>.manifest.json` beside it, and the pointer
//! `<prefix>/<instance>/latest-<db>.txt` holding the artifact's key relative to
//! the prefix.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::host_cli::{Host, Step};
use crate::ports::free_port;
use crate::process::Output;

/// The region every server is configured with and every request is signed for.
pub const REGION: &str = "us-east-1";

/// The kinds of S3-compatible server the harness can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `s3s-fs` 0.14.1: a filesystem backend that checks SigV4 signatures.
    S3sFs,
    /// Garage, single node, when a `garage` binary is on `PATH`.
    Garage,
    /// moto's standalone server: in memory, lists ETags, checks no signatures.
    Moto,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::S3sFs => "s3s-fs",
            Backend::Garage => "garage",
            Backend::Moto => "moto",
        }
    }

    /// The server program, if installed: `ENVSYNC_S3S_FS_BIN` or `s3s-fs` on
    /// `PATH` or in `~/.cargo/bin`; `ENVSYNC_GARAGE_BIN` or `garage` on `PATH`;
    /// `ENVSYNC_MOTO_BIN` or `moto_server` on `PATH` or in `~/.local/bin`
    /// (where a user-level pip install puts it).
    pub fn program(self) -> Option<PathBuf> {
        let (var, name) = match self {
            Backend::S3sFs => ("ENVSYNC_S3S_FS_BIN", "s3s-fs"),
            Backend::Garage => ("ENVSYNC_GARAGE_BIN", "garage"),
            Backend::Moto => ("ENVSYNC_MOTO_BIN", "moto_server"),
        };
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        if let Some(home) = std::env::var_os("HOME") {
            match self {
                Backend::S3sFs => dirs.push(PathBuf::from(home).join(".cargo").join("bin")),
                Backend::Moto => dirs.push(PathBuf::from(home).join(".local").join("bin")),
                Backend::Garage => {}
            }
        }
        dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
    }

    /// The backends to run a suite against: `s3s-fs` always (its absence is
    /// reported by [`S3Server::start`]), Garage when installed — otherwise a
    /// note saying it was skipped is printed.
    pub fn available() -> Vec<Backend> {
        let mut out = vec![Backend::S3sFs];
        if Backend::Garage.program().is_some() {
            out.push(Backend::Garage);
        } else {
            eprintln!(
                "note: garage is not on PATH (nor ENVSYNC_GARAGE_BIN): running against s3s-fs only"
            );
        }
        out
    }

    /// Whether the backend keeps objects as plain files the tests can read
    /// and change behind the server's back.
    pub fn is_filesystem(self) -> bool {
        self == Backend::S3sFs
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fresh, unguessable-enough token for keys and secrets.
fn token(len: usize) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
    );
    let mut out = String::new();
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.push_str(&hex::encode(block));
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// A running throwaway S3 server; killed, reaped and deleted on drop.
pub struct S3Server {
    backend: Backend,
    program: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
    /// Garage only: the config file the CLI needs.
    garage_config: Option<PathBuf>,
    // Declared last: removed after the server is gone.
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts `s3s-fs`.
    pub fn start() -> Result<S3Server> {
        S3Server::start_backend(Backend::S3sFs)
    }

    /// Starts a server of the given kind on a random free port (retrying with
    /// another port if the chosen one was taken in the meantime).
    pub fn start_backend(backend: Backend) -> Result<S3Server> {
        let Some(program) = backend.program() else {
            let (var, install) = match backend {
                Backend::S3sFs => (
                    "ENVSYNC_S3S_FS_BIN",
                    "cargo install s3s-fs@0.14.1 --features binary --locked",
                ),
                Backend::Garage => ("ENVSYNC_GARAGE_BIN", "a garage v1 release binary"),
                Backend::Moto => ("ENVSYNC_MOTO_BIN", "pip install 'moto[server]==5.2.1'"),
            };
            bail!(
                "{backend} not found (on PATH, in ~/.cargo/bin or ~/.local/bin, or {var}): run \
                 scripts/setup.sh (`{install}`)"
            );
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("envsync-{}-", backend.name()))
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        let (access_key, secret_key) = match backend {
            // s3s-fs takes any strings.
            Backend::S3sFs => (format!("AKENVSYNC{}", token(11).to_uppercase()), token(40)),
            // Garage imports keys of this exact shape.
            Backend::Garage => (format!("GK{}", token(24)), token(64)),
            // moto accepts any keys (it checks no signatures).
            Backend::Moto => (format!("AKMOTO{}", token(14).to_uppercase()), token(40)),
        };
        let mut server = S3Server {
            backend,
            program,
            port: 0,
            access_key,
            secret_key,
            child: None,
            garage_config: None,
            dir,
        };
        let mut last_error = String::new();
        for _attempt in 0..8 {
            server.port = free_port()?;
            match server.spawn_and_wait() {
                Ok(()) => {
                    if backend == Backend::Garage {
                        server.garage_setup()?;
                    }
                    return Ok(server);
                }
                Err(e) => {
                    server.kill();
                    let log = server.log();
                    let port_taken =
                        log.contains("Address already in use") || log.contains("AddrInUse");
                    last_error = format!("{e:#}\n--- server log ---\n{log}");
                    if !port_taken {
                        bail!("{backend} did not start: {last_error}");
                    }
                }
            }
        }
        bail!("{backend} did not start on any of 8 random ports: {last_error}")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server program on `self.port` and waits until a signed
    /// request succeeds.
    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.program);
        match self.backend {
            Backend::S3sFs => {
                cmd.arg("--host")
                    .arg("127.0.0.1")
                    .arg("--port")
                    .arg(self.port.to_string())
                    .arg("--access-key")
                    .arg(&self.access_key)
                    .arg("--secret-key")
                    .arg(&self.secret_key)
                    .arg(self.data_dir_path());
                // Errors only (its default); the log stays small.
                cmd.env_remove("RUST_LOG");
            }
            Backend::Garage => {
                let config = self.write_garage_config()?;
                cmd.arg("-c").arg(&config).arg("server");
                cmd.env("RUST_LOG", "garage=warn");
            }
            Backend::Moto => {
                cmd.arg("-H")
                    .arg("127.0.0.1")
                    .arg("-p")
                    .arg(self.port.to_string());
                // Its own AWS settings must not come from the test's
                // environment (it would read a profile for nothing).
                isolate_from_aws_config(&mut cmd, self.dir.path());
            }
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", self.program.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Ready when the port accepts connections and a signed request gets an
    /// answer from the server (for s3s-fs: ListBuckets succeeds, which also
    /// proves the keys are the ones it checks signatures with).
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.client();
        let mut last = String::from("no connection yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("the server exited during start-up ({status})");
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                match client.request("GET", "/", &[], &[], &[]) {
                    Ok(r) if r.status == 200 => return Ok(()),
                    // Garage answers before it has a layout and the key; the
                    // setup that follows waits for both.
                    Ok(_) if self.backend == Backend::Garage => return Ok(()),
                    Ok(r) => last = format!("ListBuckets answered {}: {}", r.status, r.text()),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if Instant::now() >= deadline {
                bail!("the server was not ready after {timeout:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server abruptly (SIGKILL) and reaps it; the data dir stays,
    /// so [`S3Server::restart`] brings the same buckets back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the server again on the same port with the same data and keys
    /// (after [`S3Server::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    self.kill();
                    eprintln!("restart of {} on port {}: {e:#}", self.backend, self.port);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.context(format!("restart of {}", self.backend))),
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn region(&self) -> &'static str {
        REGION
    }

    fn data_dir_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// s3s-fs only: the folder it serves (one sub-folder per bucket, one file
    /// per object, upload leftovers as hidden files in the root). `None` for
    /// backends that do not keep objects as plain files.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.backend.is_filesystem().then(|| self.data_dir_path())
    }

    /// What to give the host so it reaches this server with its own
    /// credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` and `ENVSYNC_S3_PATH_STYLE=true`.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_with_keys(&self.access_key, &self.secret_key)
    }

    /// [`S3Server::env`] with other credentials (e.g. a wrong secret key).
    pub fn env_with_keys(&self, access_key: &str, secret_key: &str) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", access_key),
            ("AWS_SECRET_ACCESS_KEY", secret_key),
            ("AWS_REGION", REGION),
            ("AWS_ENDPOINT_URL", &self.endpoint()),
            ("ENVSYNC_S3_PATH_STYLE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The host's state folder for runs against this server (shared by
    /// every run of one test, private to it).
    pub fn host_state_dir(&self) -> PathBuf {
        self.dir.path().join("host-state")
    }

    /// A signed client with this server's credentials.
    pub fn client(&self) -> S3Client {
        S3Client::new(self.port, &self.access_key, &self.secret_key)
    }

    /// The view of `s3://bucket/prefix`.
    pub fn store(&self, bucket: &str, prefix: &str) -> S3Store {
        S3Store {
            client: self.client(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    /// Creates a bucket (the host has no bucket-creation command and must
    /// not need one). On s3s-fs a bucket is a folder of the data dir, so
    /// this is a `mkdir`; on Garage and moto a CreateBucket request.
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        match self.backend {
            Backend::S3sFs => {
                std::fs::create_dir_all(self.data_dir_path().join(bucket))?;
                Ok(())
            }
            Backend::Garage => {
                self.garage(&["bucket", "create", bucket])?;
                self.garage(&[
                    "bucket",
                    "allow",
                    "--read",
                    "--write",
                    "--owner",
                    bucket,
                    "--key",
                    "envsync-test",
                ])?;
                Ok(())
            }
            Backend::Moto => self
                .client()
                .request("PUT", &format!("/{bucket}"), &[], &[], &[])?
                .ok(&format!("CreateBucket {bucket} on moto"))
                .map(drop),
        }
    }

    /// s3s-fs only: the file holding object `key` of `bucket`.
    pub fn object_file(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        self.data_dir().map(|d| d.join(bucket).join(key))
    }

    /// The multipart uploads the server still holds open. s3s-fs has no
    /// ListMultipartUploads: its data dir's root is searched for an upload's
    /// record (`.upload-<id>.json`), parts (`.upload_id-<id>.part-<n>`) and
    /// metadata (`.bucket-….upload-<id>.metadata.json`), whatever the bucket.
    /// On other backends, ListMultipartUploads of `bucket`.
    pub fn open_multipart_uploads(&self, bucket: &str) -> Result<Vec<String>> {
        match self.data_dir() {
            Some(dir) => {
                let mut found = vec![];
                for entry in std::fs::read_dir(&dir)? {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if name.starts_with(".upload-")
                        || name.starts_with(".upload_id-")
                        || (name.starts_with(".bucket-") && name.contains(".upload-"))
                    {
                        found.push(name);
                    }
                }
                found.sort();
                Ok(found)
            }
            None => self.client().list_multipart_uploads(bucket),
        }
    }

    /// s3s-fs: the parts written so far by open multipart uploads (file names
    /// and sizes). Elsewhere: one entry per open upload, size 0.
    pub fn uploaded_parts(&self, bucket: &str) -> Result<Vec<(String, u64)>> {
        match self.data_dir() {
            Some(dir) => {
                let mut parts = vec![];
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with(".upload_id-") && name.contains(".part-") {
                        parts.push((name, entry.metadata().map(|m| m.len()).unwrap_or(0)));
                    }
                }
                parts.sort();
                Ok(parts)
            }
            None => Ok(self
                .client()
                .list_multipart_uploads(bucket)?
                .into_iter()
                .map(|u| (u, 0))
                .collect()),
        }
    }

    /// Changes `count` bytes of the stored object at `offset` (XOR 0x5A),
    /// keeping its size. On s3s-fs the file is changed in place behind the
    /// server's back, so the server still reports the old ETag (bit rot the
    /// server does not notice); elsewhere the object is read and written back.
    pub fn corrupt_object(&self, bucket: &str, key: &str, offset: u64, count: usize) -> Result<()> {
        let flip = |bytes: &mut [u8]| {
            for b in bytes {
                *b ^= 0x5A;
            }
        };
        match self.object_file(bucket, key) {
            Some(path) => {
                use std::io::{Seek, SeekFrom};
                let mut file = File::options().read(true).write(true).open(&path)?;
                let mut buf = vec![0u8; count];
                file.seek(SeekFrom::Start(offset))?;
                file.read_exact(&mut buf)?;
                flip(&mut buf);
                file.seek(SeekFrom::Start(offset))?;
                file.write_all(&buf)?;
                file.sync_all()?;
                Ok(())
            }
            None => {
                let client = self.client();
                let mut bytes = client.get_object(bucket, key)?;
                let start = offset as usize;
                ensure!(start + count <= bytes.len(), "{key} is too short");
                flip(&mut bytes[start..start + count]);
                client.put_object(bucket, key, &bytes)
            }
        }
    }

    /// Replaces the stored object by `bytes` behind the server's back
    /// (s3s-fs: the file is rewritten, the ETag the server reports stays the
    /// old one); elsewhere a plain PutObject.
    pub fn overwrite_object(&self, bucket: &str, key: &str, bytes: &[u8]) -> Result<()> {
        match self.object_file(bucket, key) {
            Some(path) => {
                ensure!(path.is_file(), "no object file {}", path.display());
                std::fs::write(&path, bytes)?;
                Ok(())
            }
            None => self.client().put_object(bucket, key, bytes),
        }
    }

    /// Cuts the stored object down to its first `len` bytes (see
    /// [`S3Server::overwrite_object`]).
    pub fn truncate_object(&self, bucket: &str, key: &str, len: u64) -> Result<()> {
        match self.object_file(bucket, key) {
            Some(path) => {
                File::options().write(true).open(&path)?.set_len(len)?;
                Ok(())
            }
            None => {
                let client = self.client();
                let mut bytes = client.get_object(bucket, key)?;
                bytes.truncate(len as usize);
                client.put_object(bucket, key, &bytes)
            }
        }
    }

    /// s3s-fs only: every file of the data dir (relative path, size, mtime
    /// in ns), hidden ones included; what must stay byte-identical when a
    /// step must not write to the server. Empty for other backends.
    pub fn data_files(&self) -> Vec<(String, u64, u128)> {
        let Some(root) = self.data_dir() else {
            return vec![];
        };
        let mut out = vec![];
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64, u128)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else if let (Ok(rel), Ok(meta)) = (path.strip_prefix(root), entry.metadata()) {
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    out.push((rel.to_string_lossy().into_owned(), meta.len(), mtime));
                }
            }
        }
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    /// `envsync-host ARGS…` reaching this server: the caller's `AWS_*`
    /// variables are removed (no profile, config file or instance metadata
    /// of the machine can leak in), [`S3Server::env`] is set, and the host's
    /// state folder (`ENVSYNC_STATE_DIR`, where it journals the multipart
    /// uploads it has open) is one of this server's, see
    /// [`S3Server::host_state_dir`].
    pub fn host_command<S: AsRef<std::ffi::OsStr>>(&self, host: &Host, args: &[S]) -> Command {
        self.host_command_with_env(host, args, &self.env())
    }

    /// [`S3Server::host_command`] with other S3 variables.
    pub fn host_command_with_env<S: AsRef<std::ffi::OsStr>>(
        &self,
        host: &Host,
        args: &[S],
        env: &[(String, String)],
    ) -> Command {
        let mut cmd = host.command(args);
        isolate_from_aws_config(&mut cmd, self.dir.path());
        cmd.env("ENVSYNC_STATE_DIR", self.host_state_dir());
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Runs `step` with [`S3Server::env`].
    pub fn run(&self, host: &Host, step: &Step) -> Output {
        host.run_command(self.host_command(host, step.args()))
    }

    /// Runs `envsync-host ARGS…` with [`S3Server::env`].
    pub fn run_args<S: AsRef<std::ffi::OsStr>>(&self, host: &Host, args: &[S]) -> Output {
        host.run_command(self.host_command(host, args))
    }

    // Garage ------------------------------------------------------------------

    fn write_garage_config(&mut self) -> Result<PathBuf> {
        if let Some(c) = &self.garage_config {
            return Ok(c.clone());
        }
        let rpc_port = free_port()?;
        let root = self.dir.path();
        let config = root.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\n\
                 data_dir = \"{data}\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                meta = root.join("meta").display(),
                data = root.join("data").display(),
                secret = token(64),
                port = self.port,
            ),
        )?;
        self.garage_config = Some(config.clone());
        Ok(config)
    }

    /// Runs the `garage` CLI against this server.
    fn garage(&self, args: &[&str]) -> Result<String> {
        let config = self
            .garage_config
            .as_ref()
            .ok_or_else(|| anyhow!("not a garage server"))?;
        let mut cmd = Command::new(&self.program);
        cmd.arg("-c").arg(config).args(args);
        let out = crate::process::run(cmd, None, Duration::from_secs(60))?;
        if !out.success() {
            bail!("garage {} failed\n{out}", args.join(" "));
        }
        Ok(out.stdout)
    }

    /// Single-node layout, and the test key imported (Garage v1 CLI).
    fn garage_setup(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = loop {
            match self.garage(&["node", "id", "-q"]) {
                Ok(id) => break id.trim().split('@').next().unwrap_or("").to_string(),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        self.garage(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        self.garage(&["layout", "apply", "--version", "1"])?;
        let (ak, sk) = (self.access_key.clone(), self.secret_key.clone());
        self.garage(&["key", "import", "--yes", "-n", "envsync-test", &ak, &sk])?;
        // Wait for the S3 API to accept the key.
        let client = self.client();
        loop {
            match client.request("GET", "/", &[], &[], &[]) {
                Ok(r) if r.status == 200 => return Ok(()),
                other if Instant::now() >= deadline => {
                    bail!("garage never accepted the test key: {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes the caller's `AWS_*` variables from `cmd` and points the shared
/// config and credentials files at empty files under `scratch` (missing ones
/// would make the SDK log warnings), with instance metadata lookups off.
pub fn isolate_from_aws_config(cmd: &mut Command, scratch: &Path) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&key);
        }
    }
    let config = scratch.join("empty-aws-config");
    let credentials = scratch.join("empty-aws-credentials");
    for file in [&config, &credentials] {
        if !file.exists() {
            let _ = std::fs::write(file, "");
        }
    }
    cmd.env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

// The client ----------------------------------------------------------------

/// A response of the server.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `<Code>` of an S3 error body.
    pub fn error_code(&self) -> Option<String> {
        xml_values(&self.text(), "Code").into_iter().next()
    }

    fn ok(self, what: &str) -> Result<Response> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            bail!("{what}: HTTP {}: {}", self.status, self.text())
        }
    }
}

/// An object as a listing or HEAD shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
}

impl ObjectInfo {
    /// The number of parts, when the ETag is a multipart one (`<md5>-<n>`).
    pub fn multipart_parts(&self) -> Option<u32> {
        self.etag.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
    }
}

/// A minimal S3 client: SigV4-signed HTTP/1.1 requests, path-style, one
/// connection per request, no retries.
#[derive(Debug, Clone)]
pub struct S3Client {
    port: u16,
    access_key: String,
    secret_key: String,
    timeout: Duration,
}

impl S3Client {
    pub fn new(port: u16, access_key: &str, secret_key: &str) -> S3Client {
        S3Client {
            port,
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            timeout: Duration::from_secs(120),
        }
    }

    /// The same client with another secret key (for signature failures).
    pub fn with_secret_key(&self, secret_key: &str) -> S3Client {
        S3Client {
            secret_key: secret_key.to_string(),
            ..self.clone()
        }
    }

    /// One signed request. `path` starts with `/` and is not yet encoded
    /// (`/bucket/key`); `query` pairs are not yet encoded either.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        self.request_into(method, path, query, headers, body, None)
    }

    /// Like [`S3Client::request`]; a 2xx body goes to `sink` instead of
    /// memory when one is given.
    pub fn request_into(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        sink: Option<&mut dyn Write>,
    ) -> Result<Response> {
        let host = format!("127.0.0.1:{}", self.port);
        let (amz_date, date) = amz_dates(SystemTime::now());
        let payload_hash = hex::encode(Sha256::digest(body));
        let canonical_uri = uri_encode(path, false);
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
            .collect();
        q.sort();
        let canonical_query = q
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut signed: BTreeMap<String, String> = BTreeMap::new();
        signed.insert("host".into(), host.clone());
        signed.insert("x-amz-content-sha256".into(), payload_hash.clone());
        signed.insert("x-amz-date".into(), amz_date.clone());
        for (k, v) in headers {
            signed.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = signed.keys().cloned().collect::<Vec<_>>().join(";");
        let canonical_request = format!(
            "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
        );
        let scope = format!("{date}/{REGION}/s3/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac_sha256(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [REGION, "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );

        let target = if canonical_query.is_empty() {
            canonical_uri
        } else {
            format!("{canonical_uri}?{canonical_query}")
        };
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        for (k, v) in &signed {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "authorization: {authorization}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .with_context(|| format!("cannot connect to {host}"))?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        read_response(stream, method == "HEAD", sink)
            .with_context(|| format!("{method} {path} on {host}"))
    }

    fn object_path(bucket: &str, key: &str) -> String {
        format!("/{bucket}/{key}")
    }

    /// ListBuckets: the bucket names.
    pub fn list_buckets(&self) -> Result<Vec<String>> {
        let r = self.request("GET", "/", &[], &[], &[])?.ok("ListBuckets")?;
        Ok(xml_values(&r.text(), "Name"))
    }

    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) -> Result<()> {
        self.request("PUT", &Self::object_path(bucket, key), &[], &[], bytes)?
            .ok(&format!("PutObject {bucket}/{key}"))
            .map(drop)
    }

    /// Uploads `bytes` as a multipart upload of `part_size` parts (the last
    /// one shorter), as `aws s3 cp` does for large files: the object's ETag
    /// is then a multipart one (`<md5 of the parts' md5s>-<parts>`).
    pub fn put_object_multipart(
        &self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        part_size: usize,
    ) -> Result<()> {
        let path = Self::object_path(bucket, key);
        let what = format!("multipart upload of {bucket}/{key}");
        let started = self
            .request("POST", &path, &[("uploads", "")], &[], &[])?
            .ok(&what)?;
        let id = xml_values(&started.text(), "UploadId")
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{what}: no UploadId in {}", started.text()))?;
        let mut done = String::from("<CompleteMultipartUpload>");
        for (i, part) in bytes.chunks(part_size.max(1)).enumerate() {
            let number = (i + 1).to_string();
            let r = self
                .request(
                    "PUT",
                    &path,
                    &[("partNumber", &number), ("uploadId", &id)],
                    &[],
                    part,
                )?
                .ok(&format!("{what}: part {number}"))?;
            let etag = r
                .header("etag")
                .ok_or_else(|| anyhow!("{what}: part {number} has no ETag"))?;
            done.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
            ));
        }
        done.push_str("</CompleteMultipartUpload>");
        self.request("POST", &path, &[("uploadId", &id)], &[], done.as_bytes())?
            .ok(&format!("{what}: completing it"))
            .map(drop)
    }

    /// CreateMultipartUpload of `key` and nothing more: the upload id of an
    /// upload left open, as a process killed right after starting it leaves.
    pub fn start_multipart_upload(&self, bucket: &str, key: &str) -> Result<String> {
        let what = format!("CreateMultipartUpload {bucket}/{key}");
        let r = self
            .request(
                "POST",
                &Self::object_path(bucket, key),
                &[("uploads", "")],
                &[],
                &[],
            )?
            .ok(&what)?;
        xml_values(&r.text(), "UploadId")
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{what}: no UploadId in {}", r.text()))
    }

    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        Ok(self
            .request("GET", &Self::object_path(bucket, key), &[], &[], &[])?
            .ok(&format!("GetObject {bucket}/{key}"))?
            .body)
    }

    /// GetObject streamed into `sink`; returns the number of bytes.
    pub fn get_object_into(&self, bucket: &str, key: &str, sink: &mut dyn Write) -> Result<u64> {
        let mut counting = CountingWriter { inner: sink, n: 0 };
        self.request_into(
            "GET",
            &Self::object_path(bucket, key),
            &[],
            &[],
            &[],
            Some(&mut counting),
        )?
        .ok(&format!("GetObject {bucket}/{key}"))?;
        Ok(counting.n)
    }

    /// Size and lower-case hex SHA-256 of an object, streamed.
    pub fn object_sha256(&self, bucket: &str, key: &str) -> Result<(u64, String)> {
        let mut hasher = HashWriter(Sha256::new());
        let n = self.get_object_into(bucket, key, &mut hasher)?;
        Ok((n, hex::encode(hasher.0.finalize())))
    }

    /// HeadObject; `None` when there is no such object.
    pub fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        let r = self.request("HEAD", &Self::object_path(bucket, key), &[], &[], &[])?;
        if r.status == 404 {
            return Ok(None);
        }
        let r = r.ok(&format!("HeadObject {bucket}/{key}"))?;
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: r.header("etag").unwrap_or("").trim_matches('"').to_string(),
        }))
    }

    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.request("DELETE", &Self::object_path(bucket, key), &[], &[], &[])?
            .ok(&format!("DeleteObject {bucket}/{key}"))
            .map(drop)
    }

    /// ListObjectsV2 of everything under `prefix`, sorted by key.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let r = self
                .request("GET", &format!("/{bucket}"), &query, &[], &[])?
                .ok(&format!("ListObjectsV2 {bucket} prefix {prefix:?}"))?;
            let text = r.text();
            for block in xml_blocks(&text, "Contents") {
                out.push(ObjectInfo {
                    key: xml_values(&block, "Key")
                        .into_iter()
                        .next()
                        .unwrap_or_default(),
                    size: xml_values(&block, "Size")
                        .first()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    etag: xml_values(&block, "ETag")
                        .into_iter()
                        .next()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string(),
                });
            }
            let truncated =
                xml_values(&text, "IsTruncated").first().map(String::as_str) == Some("true");
            token = xml_values(&text, "NextContinuationToken")
                .into_iter()
                .next();
            if !truncated || token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// ListMultipartUploads: `key upload-id` of each open upload (not
    /// implemented by s3s-fs; see [`S3Server::open_multipart_uploads`]).
    pub fn list_multipart_uploads(&self, bucket: &str) -> Result<Vec<String>> {
        let r = self
            .request("GET", &format!("/{bucket}"), &[("uploads", "")], &[], &[])?
            .ok(&format!("ListMultipartUploads {bucket}"))?;
        Ok(xml_blocks(&r.text(), "Upload")
            .iter()
            .map(|b| {
                format!(
                    "{} {}",
                    xml_values(b, "Key").join(""),
                    xml_values(b, "UploadId").join("")
                )
            })
            .collect())
    }
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads one HTTP/1.1 response (the connection is closed after it).
fn read_response(
    stream: TcpStream,
    head_only: bool,
    sink: Option<&mut dyn Write>,
) -> Result<Response> {
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut headers = vec![];
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the response head");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut response = Response {
        status,
        headers,
        body: vec![],
    };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(response);
    }
    let mut memory = Vec::new();
    let out: &mut dyn Write = match sink {
        Some(s) if (200..300).contains(&status) => s,
        _ => &mut memory,
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| anyhow!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, then the final empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let copied = std::io::copy(&mut (&mut reader).take(size), out)?;
            ensure!(copied == size, "connection closed inside a chunk");
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else if let Some(len) = response
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        let copied = std::io::copy(&mut (&mut reader).take(len), out)?;
        ensure!(
            copied == len,
            "connection closed after {copied} of {len} body bytes"
        );
    } else {
        std::io::copy(&mut reader, out)?;
    }
    response.body = memory;
    Ok(response)
}

/// `(YYYYMMDDTHHMMSSZ, YYYYMMDD)` in UTC.
fn amz_dates(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    (stamp, date)
}

/// SigV4 URI encoding: unreserved characters stay, the rest is `%XX`; `/`
/// stays too unless `encode_slash`.
fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The inner texts of every `<tag>…</tag>` (not nested in one another).
pub fn xml_blocks(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = vec![];
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + close.len()..];
    }
    out
}

/// [`xml_blocks`], with XML entities decoded.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    xml_blocks(xml, tag)
        .iter()
        .map(|s| xml_unescape(s))
        .collect()
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(end) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&after[..=end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

// The store -----------------------------------------------------------------

/// One object of a [`S3Store::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The full object key (prefix included).
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub sha256: String,
}

/// The store `s3://bucket/prefix` as the host lays it out. Keys taken and
/// returned by these methods are relative to the prefix, as the pointer
/// holds them, unless the name says otherwise.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: S3Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn client(&self) -> &S3Client {
        &self.client
    }

    /// `s3://bucket/prefix` (what `--store` takes).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The full object key of a key relative to the prefix.
    pub fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The key relative to the prefix of a full object key.
    pub fn relative_key<'k>(&self, object_key: &'k str) -> &'k str {
        if self.prefix.is_empty() {
            object_key
        } else {
            object_key
                .strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(object_key)
        }
    }

    pub fn pointer_key(instance: &str, database: &str) -> String {
        format!("{instance}/latest-{database}.txt")
    }

    pub fn manifest_key(key: &str) -> String {
        format!("{key}.manifest.json")
    }

    /// The key the pointer names, trimmed; `None` if there is no pointer.
    pub fn pointer(&self, instance: &str, database: &str) -> Option<String> {
        let key = self.object_key(&Self::pointer_key(instance, database));
        let r = self
            .client
            .request("GET", &format!("/{}/{key}", self.bucket), &[], &[], &[]);
        match r {
            Ok(r) if r.status == 200 => Some(r.text().trim().to_string()),
            Ok(r) if r.status == 404 => None,
            Ok(r) => panic!("GetObject {key}: HTTP {}: {}", r.status, r.text()),
            Err(e) => panic!("GetObject {key}: {e:#}"),
        }
    }

    /// Writes the pointer by hand.
    pub fn set_pointer(&self, instance: &str, database: &str, key: &str) -> Result<()> {
        self.put(&Self::pointer_key(instance, database), key.as_bytes())
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.client.get_object(&self.bucket, &self.object_key(key))
    }

    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.client
            .put_object(&self.bucket, &self.object_key(key), bytes)
    }

    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.client.head_object(&self.bucket, &self.object_key(key))
    }

    pub fn exists(&self, key: &str) -> bool {
        self.head(key).map(|h| h.is_some()).unwrap_or(false)
    }

    /// Size and SHA-256 of the stored object, streamed.
    pub fn sha256(&self, key: &str) -> Result<(u64, String)> {
        self.client
            .object_sha256(&self.bucket, &self.object_key(key))
    }

    pub fn manifest(&self, key: &str) -> Result<Value> {
        let bytes = self
            .get(&Self::manifest_key(key))
            .with_context(|| format!("no manifest for {key}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("manifest of {key} is not JSON"))
    }

    /// Every object under the prefix (keys relative to it), sorted.
    pub fn keys(&self) -> Vec<String> {
        self.objects()
            .into_iter()
            .map(|o| self.relative_key(&o.key).to_string())
            .collect()
    }

    /// Every object under the prefix, full keys.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        self.client
            .list_objects(&self.bucket, &prefix)
            .unwrap_or_else(|e| panic!("listing {}: {e:#}", self.url()))
    }

    /// The artifacts (neither manifests nor pointers), relative keys, sorted.
    pub fn artifact_keys(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| !k.ends_with(".manifest.json") && !is_pointer(k))
            .collect()
    }

    /// Checks that artifact `key` and its manifest agree: `size` and `sha256`
    /// match the stored bytes, `plugin` is `plugin`, and the other fields the
    /// layout promises are there. Returns the manifest.
    pub fn verify_manifest(&self, key: &str, plugin: &str) -> Result<Value> {
        let manifest = self.manifest(key)?;
        let (size, sha) = self.sha256(key)?;
        ensure!(
            manifest["size"].as_u64() == Some(size),
            "manifest size {} != stored size {size}: {manifest:#}",
            manifest["size"]
        );
        ensure!(
            manifest["sha256"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(&sha)),
            "manifest sha256 {} != sha256 of the stored object {sha}: {manifest:#}",
            manifest["sha256"]
        );
        ensure!(
            manifest["plugin"].as_str() == Some(plugin),
            "manifest plugin is not {plugin:?}: {manifest:#}"
        );
        for field in ["plugin_version", "format", "created_at", "compression"] {
            ensure!(
                manifest[field].as_str().is_some_and(|s| !s.is_empty()),
                "manifest lacks {field}: {manifest:#}"
            );
        }
        Ok(manifest)
    }

    /// Every object of the whole bucket with its size, ETag and SHA-256:
    /// equal snapshots mean the bucket was not written to.
    pub fn snapshot_bucket(&self) -> Result<Vec<StoredObject>> {
        let mut out = vec![];
        for o in self.client.list_objects(&self.bucket, "")? {
            let (_, sha256) = self.client.object_sha256(&self.bucket, &o.key)?;
            out.push(StoredObject {
                key: o.key,
                size: o.size,
                etag: o.etag,
                sha256,
            });
        }
        Ok(out)
    }
}

/// Whether a relative key is a pointer (`<instance>/latest-<db>.txt`).
pub fn is_pointer(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("latest-") && n.ends_with(".txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_encoding() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(amz_dates(t).0, "20231114T221320Z");
        assert_eq!(amz_dates(UNIX_EPOCH).1, "19700101");
        assert_eq!(uri_encode("/b/a b+c~", false), "/b/a%20b%2Bc~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(xml_unescape("a&amp;b&#x41;&#66;&lt;"), "a&bAB<");
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
