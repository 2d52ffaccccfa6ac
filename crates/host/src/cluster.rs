//! Cluster mode of `holdfast run` (spec/cluster.md §6): the node keeps its
//! plugin runtime, compute runtime and HTTP server, but its daemons live in
//! the cluster ([`holdfast_cluster::Cluster`]) instead of the node's own
//! database. This module joins the cluster with the node's kinds, keeps the
//! node's cluster identity seed in the data directory, and translates the
//! HTTP API's requests and answers to and from the cluster's.
//!
//! It owns the seed file and the mapping of [`ClusterError`] to
//! [`RequestError`]; it never writes the node's redb database and never
//! decides where a daemon runs (the cluster does).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use holdfast_cluster::{
    Cluster, ClusterConfig, ClusterError, ClusterKeys, DaemonPlacement, DrainReport, KindSource,
    MigrationReport, MoveRecord, NodeInfo, RestoreCounts,
};
use serde::Serialize;

pub use holdfast_cluster::NatsAuth;

use crate::engine::origin_text;
use crate::error::{NodeError, RequestError};
use crate::kind::{KindRegistry, fresh_state};
use crate::node::{Node, parse_origin};
use crate::store;

/// The file in the data directory that holds the node's cluster identity
/// seed (32 bytes, mode 0600): a restarted node is the same node.
pub const SEED_FILE: &str = "cluster-node.seed";

/// How the node joins a cluster (`holdfast run --cluster …`).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// NATS server URLs (`nats://HOST:PORT`), at least one.
    pub servers: Vec<String>,
    /// The cluster's name.
    pub name: String,
    /// The file holding the cluster's pre-shared key.
    pub psk_file: PathBuf,
    /// How to authenticate to NATS.
    pub auth: NatsAuth,
    /// The node's lease; `None` keeps the cluster's default (5 s).
    pub lease: Option<Duration>,
    /// Daemons moved per second when nodes join or leave (0: never);
    /// `None` keeps the cluster's default (10).
    pub rebalance_rate: Option<u32>,
    /// JetStream replicas of the cluster's streams and buckets (3 on a
    /// three-server JetStream cluster); `None` keeps 1.
    pub replicas: Option<usize>,
}

/// A node's membership of a cluster, as the HTTP API uses it. Cheap to
/// clone.
#[derive(Clone)]
pub struct ClusterMode {
    cluster: Cluster,
}

/// A daemon just created in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterSpawned {
    /// Its origin (16 hex digits).
    pub origin: String,
    /// Its entity id (64 hex digits).
    pub entity_id: String,
    /// Its kind.
    pub kind: String,
    /// The kind's `major.minor`.
    pub kind_version: String,
    /// The node placed to host it.
    pub node: String,
}

/// One daemon as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterDaemonView {
    /// Its origin (16 hex digits).
    pub origin: String,
    /// Its kind.
    pub kind: String,
    /// The kind version of its latest snapshot.
    pub kind_version: String,
    /// `running`, or `halted` when it is stopped for good.
    pub status: &'static str,
    /// The node that owns it.
    pub node: String,
    /// The owner's HTTP address, while the owner is a live node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_http: Option<String>,
    /// Its ownership epoch (one more at every move).
    pub epoch: u64,
    /// How many times it moved.
    pub moves: u64,
    /// The input sequence its latest snapshot covers.
    pub snapshot_seq: u64,
    /// Why it is halted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
    /// Why its owner (when that is this node) cannot start it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Inputs processed since it started here, when this node hosts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processed_here: Option<u64>,
}

/// One output read back from the cluster: the single-node shape (`seq`,
/// `payload_base64`, `hash`, `parent_hash`) plus who wrote it and what a
/// client needs to validate the chain itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterOutputView {
    /// Its sequence in the daemon's chain.
    pub seq: u64,
    /// The payload.
    #[serde(skip)]
    pub payload: Bytes,
    /// The payload, base64.
    pub payload_base64: String,
    /// The event hash (16 hex digits).
    pub hash: String,
    /// The hash of the output before it (16 hex digits).
    pub parent_hash: String,
    /// The node that appended it.
    pub node: String,
    /// The output event's causal link (32 bytes, hex).
    pub link: String,
    /// The output event's `received_at` (Unix ms).
    pub received_at: u64,
}

/// A move for `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MoveView {
    /// The daemon (16 hex digits).
    pub origin: String,
    /// The previous owner.
    pub from: String,
    /// The new owner.
    pub to: String,
    /// The new epoch.
    pub epoch: u64,
    /// When it was seen (Unix ms).
    pub at_ms: u64,
}

/// A migration report with the origin as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MigrationView {
    /// The daemon (16 hex digits).
    pub origin: String,
    /// The node it left.
    pub from: String,
    /// The node it went to.
    pub to: String,
    /// Its new epoch.
    pub epoch: u64,
    /// How long it took no inputs, in microseconds.
    pub pause_us: u64,
    /// The sealed snapshot's size.
    pub snapshot_bytes: u64,
    /// Inputs waiting in the stream at cutover; `null` when they could not
    /// be counted (the move is done either way).
    pub inputs_waiting: Option<u64>,
    /// Whether the new owner was seen ready before the answer.
    pub target_ready: bool,
}

/// `GET /v1/cluster`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterOverview {
    /// The cluster's name.
    pub cluster: String,
    /// This node's id.
    pub node: String,
    /// The live nodes.
    pub nodes: Vec<NodeInfo>,
    /// Every daemon with its owner.
    pub daemons: Vec<ClusterDaemonView>,
    /// The changes of owner this node saw, oldest first.
    pub moves: Vec<MoveView>,
    /// Where the daemons this node started got their snapshots (a planned
    /// move's handoff or the object store), and the handoffs it refused.
    pub restores: RestoreCounts,
}

/// The node's kinds, as the cluster asks for them.
struct NodeKinds(Arc<KindRegistry>);

impl KindSource for NodeKinds {
    fn present_kinds(&self) -> Vec<(String, String)> {
        let mut kinds: Vec<(String, String)> = self.0.present().into_iter().collect();
        kinds.sort();
        kinds
    }

    fn fresh_state(&self, _kind: &str) -> Bytes {
        fresh_state()
    }
}

impl ClusterMode {
    /// Joins the cluster `options` names with `node`'s kinds and compute
    /// runtime, announcing `http_address` to the other nodes. The node's
    /// identity seed is read from (or, on first start, created in) the data
    /// directory.
    ///
    /// # Errors
    /// `DataDir` when the seed file cannot be read or created, or is not 32
    /// bytes; `Cluster` with the cluster's reason (PSK unreadable or too
    /// short, a server too old, authentication refused, engine failure).
    pub async fn join(node: &Node, options: ClusterOptions, http_address: String) -> Result<Self, NodeError> {
        if node.daemon_count() > 0 {
            return Err(NodeError::InvalidConfig {
                field: "data_dir",
                reason: format!(
                    "{} holds {} daemons of a single node; cluster mode needs a data directory of its own",
                    node.config().data_dir.display(),
                    node.daemon_count()
                ),
            });
        }
        let seed = node_seed(&node.config().data_dir)?;
        let keys = ClusterKeys::from_file(&options.psk_file)
            .map_err(|error| NodeError::Cluster(error.to_string()))?;
        let mut config = ClusterConfig::new(options.servers, options.name, keys, seed);
        config.auth = options.auth;
        config.http_address = http_address;
        config.output_retention = node.config().output_retention;
        config.snapshot_every_events = node.config().snapshot_every_events;
        config.snapshot_every = node.config().snapshot_every;
        if let Some(lease) = options.lease {
            config.lease_ttl = lease;
        }
        if let Some(rate) = options.rebalance_rate {
            config.rebalance_rate = rate;
        }
        if let Some(replicas) = options.replicas {
            config.replicas = replicas;
        }
        // No engine stands between compute and these daemons, so each
        // passes the reload gate itself: a hot reload never overlaps a call.
        node.kinds().gate_every_call();
        let kinds: Arc<dyn KindSource> = Arc::new(NodeKinds(Arc::clone(node.kinds())));
        let cluster = Cluster::connect(config, node.compute().clone(), kinds)
            .await
            .map_err(|error| NodeError::Cluster(error.to_string()))?;
        Ok(Self { cluster })
    }

    /// The cluster membership itself.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    /// Creates a daemon of `kind` on the node placement chooses.
    ///
    /// # Errors
    /// `Draining`, `NoNodeForKind`, `ClusterUnavailable`.
    pub async fn spawn(&self, kind: &str) -> Result<ClusterSpawned, RequestError> {
        let spawned = self
            .cluster
            .spawn(kind)
            .await
            .map_err(|error| request_error(error, None))?;
        Ok(ClusterSpawned {
            origin: origin_text(spawned.origin),
            entity_id: spawned.entity_id,
            kind: spawned.kind,
            kind_version: spawned.kind_version,
            node: spawned.node,
        })
    }

    /// Appends an input for `origin` to the cluster's input stream and
    /// returns its sequence once the engine stored it. A repeat of `key`
    /// returns the first sequence and is not processed again.
    ///
    /// # Errors
    /// `Malformed` (origin or key), `UnknownDaemon`, `DaemonStopped`,
    /// `ClusterUnavailable`.
    pub async fn send(&self, origin: &str, payload: Bytes, key: Option<Bytes>) -> Result<u64, RequestError> {
        let parsed = parse_origin(origin)?;
        if let Some(key) = &key
            && (key.is_empty() || key.len() > store::MAX_IDEMPOTENCY_KEY)
        {
            return Err(RequestError::Malformed(format!(
                "an idempotency key is 1 to {} bytes",
                store::MAX_IDEMPOTENCY_KEY
            )));
        }
        self.cluster
            .submit(parsed, payload, key.as_deref())
            .await
            .map_err(|error| request_error(error, Some(origin)))
    }

    /// Up to `limit` outputs of `origin` from chain sequence `from`.
    ///
    /// # Errors
    /// `Malformed`, `UnknownDaemon`, `DaemonRefused` (an entry that does
    /// not decode), `ClusterUnavailable`.
    pub async fn outputs(
        &self,
        origin: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ClusterOutputView>, RequestError> {
        let parsed = parse_origin(origin)?;
        let outputs = self
            .cluster
            .outputs(parsed, from.max(1), limit)
            .await
            .map_err(|error| request_error(error, Some(origin)))?;
        Ok(outputs
            .into_iter()
            .map(|output| ClusterOutputView {
                seq: output.seq,
                payload_base64: base64::engine::general_purpose::STANDARD.encode(&output.payload),
                hash: format!("{:016x}", output.hash),
                parent_hash: format!("{:016x}", output.event.link.parent_hash),
                node: output.node,
                link: store::encode_hex(&output.event.link.to_bytes()),
                received_at: output.event.received_at,
                payload: output.payload,
            })
            .collect())
    }

    /// Where `origin` is and what the cluster knows of it.
    ///
    /// # Errors
    /// `Malformed`, `UnknownDaemon`, `DaemonRefused` (its record is not
    /// believed), `ClusterUnavailable`.
    pub async fn daemon(&self, origin: &str) -> Result<ClusterDaemonView, RequestError> {
        let parsed = parse_origin(origin)?;
        let placement = self
            .cluster
            .daemon(parsed)
            .await
            .map_err(|error| request_error(error, Some(origin)))?;
        Ok(self.with_addresses(vec![placement]).remove(0))
    }

    /// Up to `limit` daemons in origin order after `after`, from this
    /// node's mirror of the ownership records.
    ///
    /// # Errors
    /// `Malformed` for a bad `after`.
    pub fn daemons(&self, after: Option<&str>, limit: usize) -> Result<Vec<ClusterDaemonView>, RequestError> {
        let after = after.map(parse_origin).transpose()?;
        let mut placement = self.cluster.placement();
        placement.sort_by_key(|daemon| daemon.origin);
        let page = placement
            .into_iter()
            .filter(|daemon| after.is_none_or(|after| daemon.origin > after))
            .take(limit)
            .collect();
        Ok(self.with_addresses(page))
    }

    /// The views of `placement`, each with its owner's HTTP address when
    /// the owner is live.
    fn with_addresses(&self, placement: Vec<DaemonPlacement>) -> Vec<ClusterDaemonView> {
        let addresses: std::collections::HashMap<String, String> = self
            .cluster
            .nodes()
            .into_iter()
            .map(|node| (node.node, node.http))
            .collect();
        placement
            .into_iter()
            .map(|daemon| {
                let mut view = daemon_view(daemon);
                view.node_http = addresses.get(&view.node).cloned();
                view
            })
            .collect()
    }

    /// Stops and forgets `origin` in the whole cluster.
    ///
    /// # Errors
    /// `Malformed`, `UnknownDaemon`, `OwnershipChanged`, `ClusterUnavailable`.
    pub async fn delete(&self, origin: &str) -> Result<(), RequestError> {
        let parsed = parse_origin(origin)?;
        self.cluster
            .delete(parsed)
            .await
            .map_err(|error| request_error(error, Some(origin)))
    }

    /// Moves `origin` to `node` (a planned move).
    ///
    /// # Errors
    /// `Malformed`, `UnknownDaemon`, `UnknownNode`, `DaemonStopped`
    /// (halted), `OwnershipChanged`, `ClusterUnavailable` (the engine, or a
    /// move that timed out).
    pub async fn migrate(&self, origin: &str, node: &str) -> Result<MigrationView, RequestError> {
        let parsed = parse_origin(origin)?;
        let report = self
            .cluster
            .migrate(parsed, node)
            .await
            .map_err(|error| request_error(error, Some(origin)))?;
        Ok(migration_view(report))
    }

    /// The cluster as this node sees it.
    pub fn overview(&self) -> ClusterOverview {
        let mut daemons = self.cluster.placement();
        daemons.sort_by_key(|daemon| daemon.origin);
        ClusterOverview {
            cluster: self.cluster.name().to_owned(),
            node: self.cluster.node_id().to_owned(),
            nodes: self.cluster.nodes(),
            daemons: self.with_addresses(daemons),
            moves: self.cluster.moves().into_iter().map(move_view).collect(),
            restores: self.cluster.restores(),
        }
    }

    /// Hands every daemon this node hosts to other nodes and leaves the
    /// cluster.
    ///
    /// # Errors
    /// `Cluster` when the node's entry could not be removed (its daemons
    /// then fail over once its lease ends).
    pub async fn drain(&self) -> Result<DrainReport, NodeError> {
        self.cluster
            .drain()
            .await
            .map_err(|error| NodeError::Cluster(error.to_string()))
    }
}

fn daemon_view(placement: DaemonPlacement) -> ClusterDaemonView {
    ClusterDaemonView {
        origin: origin_text(placement.origin),
        kind: placement.kind,
        kind_version: placement.kind_version,
        status: if placement.halted.is_some() {
            "halted"
        } else {
            "running"
        },
        node: placement.node,
        node_http: None,
        epoch: placement.epoch,
        moves: placement.moves,
        snapshot_seq: placement.snapshot_input_seq,
        halted: placement.halted,
        refused: placement.refused,
        processed_here: placement.processed_here,
    }
}

fn move_view(record: MoveRecord) -> MoveView {
    MoveView {
        origin: origin_text(record.origin),
        from: record.from,
        to: record.to,
        epoch: record.epoch,
        at_ms: record.at_ms,
    }
}

fn migration_view(report: MigrationReport) -> MigrationView {
    MigrationView {
        origin: origin_text(report.origin),
        from: report.from,
        to: report.to,
        epoch: report.epoch,
        pause_us: report.pause_us,
        snapshot_bytes: report.snapshot_bytes,
        inputs_waiting: report.inputs_waiting,
        target_ready: report.target_ready,
    }
}

/// What a cluster refusal means to an API client. `origin` is the daemon
/// the request named, if any (errors that carry none name it).
fn request_error(error: ClusterError, origin: Option<&str>) -> RequestError {
    let origin_of = |origin_hash: u64| origin.map_or_else(|| origin_text(origin_hash), str::to_owned);
    match error {
        ClusterError::UnknownDaemon { origin } => RequestError::UnknownDaemon {
            origin: origin_of(origin),
        },
        ClusterError::UnknownNode { node } => RequestError::UnknownNode { node },
        ClusterError::UnknownKind { kind } => RequestError::UnknownKind { kind },
        ClusterError::NoNodeForKind { kind } => RequestError::NoNodeForKind { kind },
        ClusterError::NodeCannotHost { node, kind } => RequestError::NodeCannotHost { node, kind },
        ClusterError::Halted { origin, reason } => RequestError::DaemonStopped {
            origin: origin_of(origin),
            status: "halted".into(),
            reason,
        },
        ClusterError::Fenced { origin, reason } => RequestError::OwnershipChanged {
            origin: origin_of(origin),
            reason,
        },
        ClusterError::Draining => RequestError::Draining,
        ClusterError::Compute { origin, reason } => RequestError::DaemonRefused {
            origin: origin_of(origin),
            reason,
        },
        ClusterError::BadSnapshot { origin: hash, .. } => RequestError::DaemonRefused {
            origin: origin_of(hash),
            reason: error.to_string(),
        },
        error @ (ClusterError::Record { .. } | ClusterError::Seal(_)) => RequestError::DaemonRefused {
            origin: origin.unwrap_or("-").to_owned(),
            reason: error.to_string(),
        },
        error => RequestError::ClusterUnavailable(error.to_string()),
    }
}

/// The node's identity seed: read from `data_dir/SEED_FILE`, or created
/// there (mode 0600) from the operating system's random source.
fn node_seed(data_dir: &Path) -> Result<[u8; 32], NodeError> {
    let path = data_dir.join(SEED_FILE);
    let failed = |reason: String| NodeError::DataDir {
        path: path.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            failed(format!(
                "the cluster identity seed is {} bytes, not 32 (the file is damaged; restore it, or delete it to join as a new node)",
                bytes.len()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|error| failed(format!("no random source: {error}")))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|error| failed(format!("cannot create the cluster identity seed: {error}")))?;
            file.write_all(&seed)
                .and_then(|()| file.sync_all())
                .map_err(|error| failed(format!("cannot write the cluster identity seed: {error}")))?;
            Ok(seed)
        }
        Err(error) => Err(failed(format!("cannot read the cluster identity seed: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_created_private_once_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = node_seed(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SEED_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(node_seed(dir.path()).unwrap(), first);
    }

    #[test]
    fn a_damaged_seed_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SEED_FILE), [7u8; 31]).unwrap();
        let error = node_seed(dir.path()).unwrap_err();
        assert!(
            matches!(&error, NodeError::DataDir { reason, .. } if reason.contains("31 bytes, not 32")),
            "{error}"
        );
        assert_eq!(std::fs::read(dir.path().join(SEED_FILE)).unwrap(), [7u8; 31]);
    }

    #[test]
    fn cluster_refusals_map_to_the_api_contract() {
        let origin = "00000000000000ff";
        assert_eq!(
            request_error(ClusterError::UnknownDaemon { origin: 0xff }, Some(origin)),
            RequestError::UnknownDaemon {
                origin: origin.into()
            }
        );
        assert_eq!(
            request_error(ClusterError::UnknownNode { node: "n".into() }, None),
            RequestError::UnknownNode { node: "n".into() }
        );
        assert_eq!(
            request_error(ClusterError::Draining, None),
            RequestError::Draining
        );
        assert_eq!(
            request_error(ClusterError::NoNodeForKind { kind: "k".into() }, None),
            RequestError::NoNodeForKind { kind: "k".into() }
        );
        assert_eq!(
            request_error(
                ClusterError::Fenced {
                    origin: 0xff,
                    reason: "r".into()
                },
                None
            ),
            RequestError::OwnershipChanged {
                origin: origin.into(),
                reason: "r".into()
            }
        );
        assert!(matches!(
            request_error(
                ClusterError::Halted {
                    origin: 0xff,
                    reason: "r".into()
                },
                None
            ),
            RequestError::DaemonStopped { status, .. } if status == "halted"
        ));
        assert!(matches!(
            request_error(
                ClusterError::Engine {
                    action: "a".into(),
                    reason: "r".into()
                },
                None
            ),
            RequestError::ClusterUnavailable(_)
        ));
    }
}
