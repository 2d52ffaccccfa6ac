//! [`NodeConfig`]: every setting of a node (spec/host.md §8). Each field has
//! an effect and a test; defaults are the spec's.
//!
//! This module only holds values and checks that they make sense together;
//! it never opens a file or a socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_plugin::signature::TrustedKeys;
use holdfast_plugin_abi::SignaturePolicy;

use crate::error::NodeError;

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The data directory; `DATA/holdfast.redb` holds everything.
    pub data_dir: PathBuf,
    /// Bundles found here are loaded at start and watched for changes.
    pub plugins_dir: Option<PathBuf>,
    /// Where the HTTP API listens (`holdfast run`; the library itself binds
    /// nothing until [`crate::http::serve`] is called).
    pub listen: SocketAddr,
    /// A file holding the bearer token; required when `listen` is not a
    /// loopback address.
    pub token_file: Option<PathBuf>,
    /// A daemon is snapshotted after this many processed events (0: never by
    /// count).
    pub snapshot_every_events: u64,
    /// A daemon with unsnapshotted events is snapshotted this long after its
    /// last snapshot.
    pub snapshot_every: Duration,
    /// Outputs kept per daemon; older ones are deleted.
    pub output_retention: u64,
    /// The largest event payload accepted, in bytes.
    pub max_event_bytes: usize,
    /// The most daemons a node hosts.
    pub max_daemons: usize,
    /// The longest the journal writer waits to gather more events into one
    /// durable commit. It waits only while other senders' events are on
    /// their way (submitted, not yet taken), so concurrent senders share
    /// commits and a lone sender is answered at once (0: never wait).
    pub group_commit_max_delay: Duration,
    /// Idempotency keys remembered per daemon: at least this many…
    pub idempotency_keys: usize,
    /// …and every key younger than this.
    pub idempotency_window: Duration,
    /// A reload whose pause would exceed this is rolled back.
    pub reload_pause_limit: Duration,
    /// How often the plugins directory is scanned for new or changed
    /// bundles (0: never).
    pub plugin_scan_interval: Duration,
    /// Whether bundles must be signed (docs/PLUGINS.md, "Signed bundles"):
    /// under `Require` an unsigned or altered bundle is never opened and its
    /// kind stays unavailable; `Warn` logs and loads. Default `Off`.
    pub signature_policy: SignaturePolicy,
    /// The keys bundles may be signed by, and revoked keys.
    pub trusted_keys: TrustedKeys,
}

impl NodeConfig {
    /// The defaults of spec/host.md §8 for a node on `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            plugins_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token_file: None,
            snapshot_every_events: 1_000,
            snapshot_every: Duration::from_secs(5),
            output_retention: 10_000,
            max_event_bytes: 1024 * 1024,
            max_daemons: 1_000_000,
            group_commit_max_delay: Duration::from_millis(2),
            idempotency_keys: 100_000,
            idempotency_window: Duration::from_secs(600),
            reload_pause_limit: Duration::from_secs(5),
            plugin_scan_interval: Duration::from_secs(1),
            signature_policy: SignaturePolicy::Off,
            trusted_keys: TrustedKeys::new(),
        }
    }

    /// Refuses settings that cannot work.
    ///
    /// # Errors
    /// `InvalidConfig` naming the field.
    pub fn validate(&self) -> Result<(), NodeError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(NodeError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.max_event_bytes == 0 {
            return invalid("max_event_bytes", "must be at least 1");
        }
        if self.max_daemons == 0 {
            return invalid("max_daemons", "must be at least 1");
        }
        if self.output_retention == 0 {
            return invalid("output_retention", "must be at least 1");
        }
        if self.reload_pause_limit.is_zero() {
            return invalid("reload_pause_limit", "must be longer than zero");
        }
        if self.signature_policy == SignaturePolicy::Require && self.trusted_keys.trusted().is_empty() {
            return invalid(
                "trusted_keys",
                "signature policy require needs at least one trusted key",
            );
        }
        if !self.listen.ip().is_loopback() && self.token_file.is_none() {
            return Err(NodeError::TokenRequired { listen: self.listen });
        }
        Ok(())
    }
}
