//! `holdfast run`: a node in the foreground (spec/host.md §7). Logs go
//! through tracing (`RUST_LOG`); SIGTERM and Ctrl-C drain the node (stop
//! accepting, finish in-flight events, snapshot every daemon) and exit 0.
//!
//! The first line on stdout is `holdfast node listening on http://ADDR`,
//! so scripts and the demo can find a node started on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// `--signature-policy`.
    pub signature_policy: SignaturePolicy,
    /// `--trusted-key` files (public keys, `holdfast bundle keygen`).
    pub trusted_keys: Vec<PathBuf>,
    /// `--revoked-key` files.
    pub revoked_keys: Vec<PathBuf>,
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
    config.signature_policy = args.signature_policy;
    config.trusted_keys = read_keys(&args.trusted_keys, &args.revoked_keys)?;
    config.validate()?;
    let token = read_token(&config)?;
    let node = Node::open(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| NodeError::Http(format!("cannot listen on {}: {error}", config.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|error| NodeError::Http(error.to_string()))?;
    println!("holdfast node listening on http://{address}");
    tracing::info!(%address, data = %config.data_dir.display(), "node ready");
    let router = holdfast_host::http::router(node.clone(), token);
    holdfast_host::http::serve(listener, router, shutdown_signal())
        .await
        .map_err(|error| NodeError::Http(error.to_string()))?;
    tracing::info!("draining");
    node.drain().await?;
    tracing::info!("drained; every daemon is snapshotted");
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
