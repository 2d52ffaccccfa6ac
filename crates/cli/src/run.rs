//! `holdfast run`: a node in the foreground (spec/host.md §7). Logs go
//! through tracing (`RUST_LOG`); SIGTERM and Ctrl-C drain the node (stop
//! accepting, finish in-flight events, snapshot every daemon) and exit 0.
//!
//! The first line on stdout is `holdfast node listening on http://ADDR`,
//! so scripts and the demo can find a node started on port 0.
//!
//! With `--cluster` the node joins a NATS JetStream cluster
//! (spec/cluster.md §6): its daemons live in the cluster, and SIGTERM or
//! Ctrl-C first hands every daemon it hosts to another node, then drains
//! the node and exits 0. The listening line is printed only once the node
//! has joined, so a node that cannot join prints no URL and exits 1.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_host::cluster::{ClusterMode, ClusterOptions, NatsAuth};
use holdfast_host::{Node, NodeConfig, NodeError};
use holdfast_plugin::abi::SignaturePolicy;
use holdfast_plugin::signature::{PublicKey, TrustedKeys};

use crate::error::CliError;

/// What `holdfast run` was given.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// `--data`.
    pub data: PathBuf,
    /// `--plugins`.
    pub plugins: Option<PathBuf>,
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--plugin-scan-ms` (0: do not watch the plugins directory).
    pub plugin_scan_ms: u64,
    /// `--output-retention`.
    pub output_retention: u64,
    /// `--snapshot-every-events` (0: never by count).
    pub snapshot_every_events: u64,
    /// `--snapshot-every-ms`.
    pub snapshot_every_ms: u64,
    /// `--signature-policy`.
    pub signature_policy: SignaturePolicy,
    /// `--trusted-key` files (public keys, `holdfast bundle keygen`).
    pub trusted_keys: Vec<PathBuf>,
    /// `--revoked-key` files.
    pub revoked_keys: Vec<PathBuf>,
    /// The cluster flags (cluster mode when `--cluster` is given).
    pub cluster: ClusterArgs,
}

/// `holdfast run`'s cluster flags (spec/cluster.md §6).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// Join the cluster on these NATS servers (comma-separated
    /// `nats://HOST:PORT`): daemons then live in the cluster.
    #[arg(long, value_name = "nats://HOST:PORT[,...]", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// The cluster's name (1 to 32 of [A-Za-z0-9_-]); with --cluster.
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub cluster_name: Option<String>,
    /// The cluster's pre-shared key (at least 32 bytes, e.g. `head -c 32
    /// /dev/urandom > cluster.psk`); with --cluster.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub psk_file: Option<PathBuf>,
    /// A NATS credentials file (JWT and nkey seed, as `nsc` writes it).
    #[arg(long, value_name = "FILE", requires = "cluster", conflicts_with = "nats_user")]
    pub nats_creds: Option<PathBuf>,
    /// A NATS user (with --nats-password-file).
    #[arg(long, value_name = "USER", requires_all = ["cluster", "nats_password_file"])]
    pub nats_user: Option<String>,
    /// The file holding the NATS user's password (one line).
    #[arg(long, value_name = "FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// The node's lease in milliseconds: a node silent this long is dead to
    /// the cluster and its daemons fail over (default 5000).
    #[arg(long, value_name = "MS", requires = "cluster")]
    pub lease_ms: Option<u64>,
    /// At most this many daemons move per second when nodes join or leave
    /// (default 10; 0: daemons stay where they are until moved by hand,
    /// drained or failed over).
    #[arg(long, value_name = "N", requires = "cluster")]
    pub rebalance_rate: Option<u32>,
    /// JetStream replicas of the cluster's streams and buckets: 1 on a
    /// single server (the default), 3 on a three-server JetStream cluster.
    /// The first node to create them decides.
    #[arg(long, value_name = "N", requires = "cluster", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: Option<u8>,
}

impl ClusterArgs {
    /// The options to join with, or `None` without `--cluster`.
    ///
    /// # Errors
    /// `InvalidConfig` for a missing `--cluster-name` or `--psk-file`, a
    /// lease of 0 ms, or an unreadable or empty password file.
    pub fn options(&self) -> Result<Option<ClusterOptions>, NodeError> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        let missing = |field: &'static str, flag: &str| NodeError::InvalidConfig {
            field,
            reason: format!("is required with --cluster (give {flag})"),
        };
        let name = self
            .cluster_name
            .clone()
            .ok_or_else(|| missing("cluster_name", "--cluster-name NAME"))?;
        let psk_file = self
            .psk_file
            .clone()
            .ok_or_else(|| missing("psk_file", "--psk-file FILE"))?;
        let auth = match (&self.nats_creds, &self.nats_user, &self.nats_password_file) {
            (Some(creds), _, _) => NatsAuth::CredentialsFile(creds.clone()),
            (None, Some(user), Some(path)) => NatsAuth::UserPassword {
                user: user.clone(),
                password: read_secret(path, "nats_password_file")?,
            },
            _ => NatsAuth::Anonymous,
        };
        let lease = match self.lease_ms {
            Some(0) => {
                return Err(NodeError::InvalidConfig {
                    field: "lease_ms",
                    reason: "must be at least 1".into(),
                });
            }
            other => other.map(Duration::from_millis),
        };
        Ok(Some(ClusterOptions {
            servers: self.cluster.clone(),
            name,
            psk_file,
            auth,
            lease,
            rebalance_rate: self.rebalance_rate,
            replicas: self.nats_replicas.map(usize::from),
        }))
    }
}

/// The first line of a secret file, without its line ending.
fn read_secret(path: &std::path::Path, field: &'static str) -> Result<String, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|error| NodeError::InvalidConfig {
        field,
        reason: format!("{}: {error}", path.display()),
    })?;
    let secret = text.lines().next().unwrap_or_default();
    if secret.is_empty() {
        return Err(NodeError::InvalidConfig {
            field,
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(secret.to_owned())
}

/// Runs a node until SIGTERM or Ctrl-C.
///
/// # Errors
/// `Node` with the node's error (its exit code: 2 for data that cannot be
/// used as it is).
pub fn run(args: RunArgs) -> Result<(), CliError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person watching, not in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| NodeError::Http(error.to_string()))?;
    runtime.block_on(serve(args))?;
    Ok(())
}

async fn serve(args: RunArgs) -> Result<(), NodeError> {
    let mut config = NodeConfig::new(&args.data);
    config.plugins_dir = args.plugins;
    config.listen = args.listen;
    config.token_file = args.token_file;
    config.plugin_scan_interval = Duration::from_millis(args.plugin_scan_ms);
    config.output_retention = args.output_retention;
    config.snapshot_every_events = args.snapshot_every_events;
    config.snapshot_every = Duration::from_millis(args.snapshot_every_ms);
    config.signature_policy = args.signature_policy;
    config.trusted_keys = read_keys(&args.trusted_keys, &args.revoked_keys)?;
    config.validate()?;
    let token = read_token(&config)?;
    let cluster_options = args.cluster.options()?;
    let node = Node::open(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| NodeError::Http(format!("cannot listen on {}: {error}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|error| NodeError::Http(error.to_string()))?;
    let Some(options) = cluster_options else {
        println!("holdfast node listening on http://{address}");
        tracing::info!(%address, data = %config.data_dir.display(), "node ready");
        let router = holdfast_host::http::router(node.clone(), token);
        holdfast_host::http::serve(listener, router, shutdown_signal())
            .await
            .map_err(|error| NodeError::Http(error.to_string()))?;
        tracing::info!("draining");
        node.drain().await?;
        tracing::info!("drained; every daemon is snapshotted");
        return Ok(());
    };
    let joined = ClusterMode::join(&node, options, format!("http://{address}")).await;
    let cluster = match joined {
        Ok(cluster) => cluster,
        Err(error) => {
            let _ = node.drain().await;
            return Err(error);
        }
    };
    println!("holdfast node listening on http://{address}");
    tracing::info!(%address, data = %config.data_dir.display(), node = cluster.node_id(), cluster = cluster.cluster().name(), "node ready in cluster mode");
    let router = holdfast_host::http::cluster_router(node.clone(), cluster.clone(), token);
    // The cluster drains while the API still answers, so reads and inputs
    // sent to this node keep working while its daemons move away.
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel();
    let draining = cluster.clone();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("draining: handing every daemon to other nodes");
        let _ = drained_tx.send(draining.drain().await);
    };
    holdfast_host::http::serve(listener, router, shutdown)
        .await
        .map_err(|error| NodeError::Http(error.to_string()))?;
    let drained = drained_rx
        .await
        .map_err(|_| NodeError::Cluster("the server stopped before the cluster drained".into()))?;
    node.drain().await?;
    let report = drained?;
    tracing::info!(
        moved = report.moved.len(),
        left = report.left.len(),
        "drained; the daemons moved to other nodes"
    );
    Ok(())
}

/// The trusted and revoked public keys, read strictly from their files.
fn read_keys(trusted: &[PathBuf], revoked: &[PathBuf]) -> Result<TrustedKeys, NodeError> {
    let read = |path: &PathBuf, field: &'static str| {
        PublicKey::read(path).map_err(|error| NodeError::InvalidConfig {
            field,
            reason: error.to_string(),
        })
    };
    let mut keys = TrustedKeys::new();
    for path in trusted {
        keys = keys.trust(read(path, "trusted_key")?);
    }
    for path in revoked {
        keys = keys.revoke(read(path, "revoked_key")?);
    }
    Ok(keys)
}

fn read_token(config: &NodeConfig) -> Result<Option<String>, NodeError> {
    let Some(path) = &config.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|error| NodeError::TokenFile {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(NodeError::TokenFile {
            path: path.clone(),
            reason: "it is empty".into(),
        });
    }
    Ok(Some(token.to_owned()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// A `holdfast run` child process on loopback, as the demo and the tests
/// start one: an ephemeral port, no plugins-directory scan.
#[derive(Debug)]
pub struct NodeProcess {
    /// The child.
    pub child: std::process::Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
}

/// Starts `exe run` on `data` with bundles from `plugins`, logging at
/// `log_level`, and waits for its first stdout line to learn its URL.
///
/// # Errors
/// Why the child could not start or did not say where it listens.
pub fn spawn_node(
    exe: &std::path::Path,
    data: &std::path::Path,
    plugins: &std::path::Path,
    log_level: &str,
) -> Result<NodeProcess, String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(exe)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--plugin-scan-ms",
            "0",
            "--data",
        ])
        .arg(data)
        .arg("--plugins")
        .arg(plugins)
        .env("RUST_LOG", log_level)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start `holdfast run`: {error}"))?;
    let stdout = child.stdout.take().ok_or("the node has no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|error| format!("reading the node's first line: {error}"))?;
    let Some(url) = line.trim().strip_prefix("holdfast node listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the node did not start: {line:?}"));
    };
    Ok(NodeProcess {
        url: url.to_owned(),
        child,
    })
}
