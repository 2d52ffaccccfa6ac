//! How a node joins a cluster: servers, name, PSK, credentials, lease.
//!
//! Every field has an effect; none is read from the environment here (the
//! host's command line and config fill it in).

use std::path::PathBuf;
use std::time::Duration;

use crate::seal::ClusterKeys;

/// How the node authenticates to NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (the server allows anonymous clients).
    #[default]
    Anonymous,
    /// A user and password from the server's accounts configuration.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A `.creds` file (JWT and nkey seed) as `nsc` writes it.
    CredentialsFile(PathBuf),
}

/// What [`Cluster::connect`](crate::Cluster::connect) needs.
#[derive(Debug)]
pub struct ClusterConfig {
    /// Server URLs (`nats://host:port`), at least one.
    pub servers: Vec<String>,
    /// The cluster's name (names every stream, bucket and subject).
    pub name: String,
    /// The keys derived from the cluster PSK.
    pub keys: ClusterKeys,
    /// How to authenticate to NATS.
    pub auth: NatsAuth,
    /// The node's identity seed (its id is the Ed25519 key it derives).
    pub node_seed: [u8; 32],
    /// Where this node's HTTP API answers (announced to the others).
    pub http_address: String,
    /// The node's capability tags.
    pub capabilities: Vec<String>,
    /// How long a node's entry lives without a refresh; a node whose entry
    /// expired is dead to the cluster and its daemons fail over. Used when
    /// this node creates the nodes bucket; once the bucket exists, its max
    /// age is the lease every node follows.
    pub lease_ttl: Duration,
    /// JetStream replicas of every stream and bucket (1 on a single server,
    /// 3 on a three-server cluster).
    pub replicas: usize,
    /// Rebalancing moves at most this many daemons per second.
    pub rebalance_rate: u32,
    /// A daemon is snapshotted after this many inputs (0: never by count),
    /// and at every move.
    pub snapshot_every_events: u64,
    /// A daemon with inputs its last snapshot does not cover is snapshotted
    /// once its last snapshot is this old, busy or quiet: until then its
    /// inputs hold the cluster's purge floor down and a failover replays
    /// them. Zero snapshots after every input. A daemon still comparing
    /// the outputs of replayed inputs postpones it until they all match.
    /// The host passes its own `snapshot_every` (5 s by default).
    pub snapshot_every: Duration,
    /// How long a request to the engine may take.
    pub request_timeout: Duration,
    /// Entries kept per daemon on its output subject (its outputs and the
    /// claims of its moves); the server drops the oldest beyond it, and
    /// readers find the outputs before the oldest kept gone. At least 1.
    /// Used when this node creates the outputs stream; once the stream
    /// exists, its per-subject limit is the one every node follows (a node
    /// configured otherwise says so in its log).
    pub output_retention: u64,
}

impl ClusterConfig {
    /// A configuration with the defaults: anonymous, lease 5 s, 1 replica,
    /// 10 moves per second, a snapshot every 1,000 inputs or once the last
    /// is a minute old, the last 10,000 output entries of each daemon kept.
    pub fn new(
        servers: Vec<String>,
        name: impl Into<String>,
        keys: ClusterKeys,
        node_seed: [u8; 32],
    ) -> Self {
        Self {
            servers,
            name: name.into(),
            keys,
            auth: NatsAuth::Anonymous,
            node_seed,
            http_address: String::new(),
            capabilities: Vec::new(),
            lease_ttl: Duration::from_secs(5),
            replicas: 1,
            rebalance_rate: 10,
            snapshot_every_events: 1_000,
            snapshot_every: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            output_retention: 10_000,
        }
    }
}
