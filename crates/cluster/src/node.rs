//! The cluster node: the daemons this process hosts on the cluster, its
//! lease, and the moves it makes.
//!
//! Six kinds of task run per node:
//!
//! - the **heartbeat** refreshes the node's entry in `HF_C_NODES` every third
//!   of the lease; the node's lease ends one lease after the last refresh
//!   it *sent*, so it always believes itself dead no later than the others
//!   can (the entry expires on the server after it was stored);
//! - the **watcher** mirrors `HF_C_OWNERS` and wakes the supervisor;
//! - the **supervisor** starts the daemons whose records name this node,
//!   stops those that moved away, claims the daemons of dead nodes that
//!   rendezvous placement gives it, and, when the membership changed,
//!   rebalances at a bounded rate;
//! - the **control** task answers moves asked of this node, as the owner,
//!   by other nodes (over NATS request and reply);
//! - the **trimmer**, on the live node with the smallest id, purges the
//!   inputs stream below the first input any daemon's recorded snapshot
//!   does not cover;
//! - one **daemon task** per hosted daemon takes its inputs in order,
//!   processes them through compute, appends outputs only after the
//!   subject's expected last sequence, snapshots, and hands the daemon over.
//!   Inputs arrive as the server republishes them once stored (a plain
//!   subscription, no consumer on the server); each carries the sequence of
//!   the one before it on the subject, so a lost one shows as a gap that the
//!   task fills by reading the stream. A lost *last* one shows no gap: the
//!   task reads the subject's last sequence once quiet for a second after
//!   an input (50 ms after one that followed a gap), after every
//!   reconnection of the live connection, and every [`SUBJECT_SWEEP`] in
//!   any case.
//!
//! Fencing has two layers. Before every input and every append a daemon
//! task checks the node's lease; once it lapsed (or was renewed after a
//! lapse the task has not answered), nothing is written until the ownership
//! record is read again and still names this node and epoch.
//! And a node that takes a daemon appends a claim entry to its output
//! subject before its first output, so the previous owner's next append
//! fails its expected sequence even if it never noticed the lapse.
//!
//! This module never writes an ownership record without compare-and-set on
//! the revision it read, and never starts a daemon from a snapshot whose
//! length, digest, seal or identity does not check out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use holdfast_compute::{
    CausalEvent, CausalLink, DaemonHostConfig, DaemonRuntime, Identity, ObservedHorizon, StateSnapshot,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::ClusterConfig;
use crate::engine::{AppendError, Engine, Stored};
use crate::error::{ClusterError, RecordError};
use crate::handoff;
use crate::layout::{Layout, origin_key, parse_origin_key};
use crate::lock;
use crate::placement;
use crate::record::{self, NodeEntry, OwnerRecord, RecordKind, SnapshotRef, node_id_text};
use crate::restore::{OpenedSnapshot, SealedPlace, check_snapshot, open_sealed};
use crate::seal::SealContext;
use crate::wire::{self, OutputEntry, OutputEvent, SnapshotPayload};

/// The inbound origin of client inputs (their sequence is the input
/// stream's sequence), as on a single node.
pub const INGRESS_ORIGIN: u64 = 0;

/// A daemon task reads its subject's last sequence once it has been quiet
/// this long after an input (the input republished last may have been
/// lost, and nothing after it would reveal the gap).
const QUIET_CHECK: Duration = Duration::from_secs(1);

/// Or this long after its last input once it found a gap (copies are
/// being dropped, and the last may be among them).
const QUIET_AFTER_GAP: Duration = Duration::from_millis(50);

/// And at least this often, whatever happened.
const SUBJECT_SWEEP: Duration = Duration::from_secs(30);

/// How often the trimmer purges the inputs behind every snapshot.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// How long starting a daemon waits for each stopped task of it to end.
const STOPPED_TASK_WAIT: Duration = Duration::from_secs(10);

/// How long the trimmer waits for the ownership mirror to reach the
/// bucket's last revision before it lists the bucket's keys instead.
const MIRROR_CATCH_UP: Duration = Duration::from_secs(1);

/// Inputs read from the stream at a time while a daemon catches up.
const CATCH_UP_PAGE: usize = 512;

/// Entries read beyond a page's limit of outputs, for the claims among
/// them.
const OUTPUT_PAGE_SLACK: usize = 16;

/// How long a drain waits for one daemon's move before leaving it to fail
/// over.
const DRAIN_MOVE_LIMIT: Duration = Duration::from_secs(30);

/// How many daemons a node starts (or claims) at once.
const STARTS_AT_ONCE: usize = 32;

/// How many times a claim entry is retried when outputs keep arriving.
const CLAIM_ATTEMPTS: usize = 16;

/// How often a move reads the output subject's last entry while it waits
/// for the new owner's claim (besides at every append it is told of).
const CLAIM_POLL: Duration = Duration::from_millis(2);

/// How long a new owner waits for the opening of a snapshot handed over to
/// it to finish before it reads the object store instead.
const HANDOFF_OPENING_WAIT: Duration = Duration::from_millis(200);

/// The daemon kinds this node can host, as the host provides them.
pub trait KindSource: Send + Sync + 'static {
    /// The kinds present now, each with its `major.minor`. Every kind
    /// returned has a factory registered with the [`DaemonRuntime`] given to
    /// [`Cluster::connect`].
    fn present_kinds(&self) -> Vec<(String, String)>;

    /// The state a new daemon of `kind` starts from.
    fn fresh_state(&self, kind: &str) -> Bytes;
}

/// A daemon just created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnedDaemon {
    /// Its origin.
    pub origin: u64,
    /// Its entity id (64 hex digits).
    pub entity_id: String,
    /// Its kind.
    pub kind: String,
    /// The kind's `major.minor`.
    pub kind_version: String,
    /// The node placed to host it.
    pub node: String,
}

/// Where a daemon is and what the cluster knows of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonPlacement {
    /// Its origin.
    pub origin: u64,
    /// Its kind.
    pub kind: String,
    /// The kind version of its latest snapshot.
    pub kind_version: String,
    /// The owning node.
    pub node: String,
    /// The ownership epoch.
    pub epoch: u64,
    /// How many times it moved.
    pub moves: u64,
    /// The input sequence its latest snapshot covers.
    pub snapshot_input_seq: u64,
    /// Why it is stopped for good, if it is.
    pub halted: Option<String>,
    /// Inputs processed here since it started on this node (`None` when it
    /// runs elsewhere).
    pub processed_here: Option<u64>,
    /// Why this node, its owner, cannot start it (bad snapshot, kind
    /// missing), if it cannot.
    pub refused: Option<String>,
}

/// A live node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub node: String,
    /// Its HTTP address.
    pub http: String,
    /// The kinds it hosts.
    pub kinds: Vec<String>,
    /// How many daemons it hosts.
    pub hosted: u64,
    /// Whether it is draining.
    pub draining: bool,
}

/// What a planned move did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The daemon.
    pub origin: u64,
    /// The node it left.
    pub from: String,
    /// The node it went to.
    pub to: String,
    /// Its new epoch.
    pub epoch: u64,
    /// From the request to the old owner (which then finishes the input in
    /// flight and stops taking inputs) to the moment the new owner's claim
    /// was in the output stream, in microseconds; the whole wait when the
    /// new owner was not seen ready.
    pub pause_us: u64,
    /// The sealed snapshot's size.
    pub snapshot_bytes: u64,
    /// Inputs after the moved snapshot, counted in the stream once the new
    /// owner claimed the daemon; `None` when the count failed (logged as a
    /// warning: the move itself is done).
    pub inputs_waiting: Option<u64>,
    /// Whether the new owner was seen ready before the report was made.
    pub target_ready: bool,
}

/// Where the daemons a node started got their snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreCounts {
    /// Handed over directly by the old owner of a planned move, and
    /// accepted against the record.
    pub from_handoff: u64,
    /// Read from the object store (no handoff, or one that was lost, late
    /// or refused).
    pub from_store: u64,
    /// Handoffs that arrived for the snapshot a record named but did not
    /// open or did not match the record (each followed by a read of the
    /// store).
    pub handoffs_refused: u64,
}

/// A change of owner this node saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// The daemon.
    pub origin: u64,
    /// The previous owner.
    pub from: String,
    /// The new owner.
    pub to: String,
    /// The new epoch.
    pub epoch: u64,
    /// When it was seen (Unix ms).
    pub at_ms: u64,
}

/// An output read back from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOutput {
    /// Its chain sequence.
    pub seq: u64,
    /// Its payload.
    pub payload: Bytes,
    /// The hash of the output event (the next output's parent).
    pub hash: u64,
    /// The full event, for chain validation.
    pub event: CausalEvent,
    /// The node that appended it.
    pub node: String,
}

/// What a drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Daemons handed to other nodes.
    pub moved: Vec<MigrationReport>,
    /// Daemons snapshotted and left to fail over (no other node could
    /// take them).
    pub left: Vec<u64>,
}

/// One node's membership of a cluster. Cloning shares it.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Known {
    revision: u64,
    record: Result<OwnerRecord, RecordError>,
}

/// What the API shows of a daemon hosted here.
#[derive(Default)]
struct HostedStatus {
    /// Inputs processed since it started on this node.
    processed: AtomicU64,
}

struct Hosted {
    epoch: u64,
    control: mpsc::UnboundedSender<Control>,
    status: Arc<HostedStatus>,
    moving: bool,
    /// The daemon's task; once stopped, awaited before a new epoch starts
    /// here, so the old task's last step (stopping the compute instance)
    /// cannot stop the new one, nor its inputs reach it.
    task: tokio::task::JoinHandle<()>,
}

enum Control {
    Handover {
        to: String,
        reply: oneshot::Sender<Result<MigrationReport, ClusterError>>,
    },
    Stop,
    /// Snapshot, then stop (a drain leaving the daemon to fail over from
    /// where it is now, not from an older snapshot).
    Retire {
        reply: oneshot::Sender<Result<(), ClusterError>>,
    },
}

struct Refusal {
    revision: u64,
    reason: String,
    at: Instant,
}

struct Inner {
    engine: Engine,
    config: ClusterConfig,
    identity: Identity,
    node_id: String,
    runtime: DaemonRuntime,
    kinds: Arc<dyn KindSource>,
    started_at_ms: u64,
    lease_until: Mutex<Option<Instant>>,
    /// How many times the lease was renewed after it had lapsed. A daemon
    /// task that saw another count re-reads its record before writing: a
    /// heartbeat that renews the lease after a pause must not hide the
    /// pause from the daemons.
    lapses: AtomicU64,
    draining: AtomicBool,
    closed: AtomicBool,
    hosted: Mutex<HashMap<u64, Hosted>>,
    /// The tasks of daemons this node stopped hosting, until they are
    /// seen to have ended.
    stopping: StoppedTasks,
    owners: Mutex<BTreeMap<u64, Known>>,
    /// The highest revision of the ownership bucket `owners` has applied.
    mirrored_through: AtomicU64,
    live: Mutex<Vec<NodeEntry>>,
    refused: Mutex<HashMap<u64, Refusal>>,
    /// The trimmer's last round: each daemon's recorded snapshot input
    /// sequence and what it learned of the inputs after it.
    first_inputs: Mutex<HashMap<u64, (u64, FirstInput)>>,
    moves: Mutex<VecDeque<MoveRecord>>,
    rebalance: Mutex<Rebalance>,
    wake: Notify,
    /// Snapshots handed over by the old owners of planned moves.
    handoffs: handoff::Inbox,
    restores: RestoreCounters,
}

/// Where the daemons this node started got their snapshots.
#[derive(Default)]
struct RestoreCounters {
    from_handoff: AtomicU64,
    from_store: AtomicU64,
    handoffs_refused: AtomicU64,
}

/// A daemon task told to stop, and when.
struct StoppedTask {
    at: Instant,
    task: tokio::task::JoinHandle<()>,
}

/// The tasks of daemons told to stop, per daemon, kept until seen to have
/// ended: a new epoch of a daemon must not start here while a task of an
/// earlier one runs, or two tasks would drive one compute instance (the
/// old task's last step stops the instance, and its inputs would reach the
/// new one).
#[derive(Default)]
struct StoppedTasks(Mutex<HashMap<u64, Vec<StoppedTask>>>);

/// A task of an earlier epoch still ran when the wait for it ended.
#[derive(Debug, PartialEq)]
struct StillRunning;

impl StoppedTasks {
    /// Keeps `task`, told to stop just now, and forgets every task already
    /// ended.
    fn park(&self, origin: u64, task: tokio::task::JoinHandle<()>) {
        let mut stopping = lock(&self.0);
        stopping.retain(|_, tasks| {
            tasks.retain(|stopped| !stopped.task.is_finished());
            !tasks.is_empty()
        });
        stopping.entry(origin).or_default().push(StoppedTask {
            at: Instant::now(),
            task,
        });
    }

    /// Waits until every kept task of `origin` has ended, each until `wait`
    /// after it was told to stop. A task still running then (deep in a long
    /// catch-up) stays kept, and every later call answers `StillRunning`
    /// at once until it ends: the supervisor must not wait on it each
    /// round.
    async fn await_ended(&self, origin: u64, wait: Duration) -> Result<(), StillRunning> {
        let mut tasks = lock(&self.0).remove(&origin).unwrap_or_default();
        while let Some(mut stopped) = tasks.pop() {
            let left = wait.saturating_sub(stopped.at.elapsed());
            if tokio::time::timeout(left, &mut stopped.task).await.is_err() {
                tasks.push(stopped);
                lock(&self.0).entry(origin).or_default().extend(tasks);
                return Err(StillRunning);
            }
        }
        Ok(())
    }
}

/// Rebalancing happens when the live set changes (a node joins or
/// leaves), not continuously: a daemon moved by hand stays where it was
/// put until the membership changes again.
struct Rebalance {
    /// The live, non-draining nodes when daemons were last weighed.
    members: Vec<String>,
    /// Daemons still to weigh since that change.
    pending: VecDeque<u64>,
    /// The start of the current one-second budget and the moves in it.
    window: (Instant, u32),
}

/// What the trimmer learned of a daemon's inputs after its snapshot.
#[derive(Clone, Copy, Debug)]
enum FirstInput {
    /// The first is at this stream sequence.
    At(u64),
    /// There was none through this stream sequence.
    NoneThrough(u64),
}

impl FirstInput {
    /// What `kept` (the last round's answer for a daemon, if any) still
    /// says of its first input after snapshot sequence `snapshot_input`,
    /// now that the stream's last sequence is `last`: `Ok` with the answer,
    /// or `Err` with the sequence to ask the stream from.
    fn still_known(kept: Option<&(u64, Self)>, snapshot_input: u64, last: u64) -> Result<Option<u64>, u64> {
        match kept {
            Some(&(after, Self::At(first))) if after == snapshot_input => Ok(Some(first)),
            Some(&(after, Self::NoneThrough(through))) if after == snapshot_input && through <= last => {
                if through == last {
                    Ok(None)
                } else {
                    Err(through + 1)
                }
            }
            // No answer, another snapshot, or a stream that is shorter than
            // it was (re-created): ask again from the snapshot.
            _ => Err(snapshot_input + 1),
        }
    }
}

/// The most moves kept for the status page.
const MOVES_KEPT: usize = 256;

impl Cluster {
    /// Joins the cluster: checks the servers, opens the engine's objects,
    /// announces this node and starts its tasks.
    ///
    /// `runtime` must be started; `kinds` names what it can host.
    ///
    /// # Errors
    /// `InvalidClusterName`, `Version` (a server older than 2.10 or without
    /// JetStream), `Connect`, `Engine`.
    pub async fn connect(
        config: ClusterConfig,
        runtime: DaemonRuntime,
        kinds: Arc<dyn KindSource>,
    ) -> Result<Self, ClusterError> {
        let layout = Layout::new(&config.name)?;
        if config.output_retention == 0 {
            return Err(ClusterError::InvalidConfig {
                field: "output_retention",
                reason: "must be at least 1: a daemon's last output entry is what fences its old owner"
                    .into(),
            });
        }
        let engine = Engine::open(&config, layout).await?;
        let identity = Identity::from_seed(config.node_seed);
        let node_id = node_id_text(identity.entity_id());
        let inner = Arc::new(Inner {
            engine,
            config,
            identity,
            node_id,
            runtime,
            kinds,
            started_at_ms: unix_ms(),
            lease_until: Mutex::new(None),
            lapses: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            hosted: Mutex::new(HashMap::new()),
            stopping: StoppedTasks::default(),
            owners: Mutex::new(BTreeMap::new()),
            mirrored_through: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
            refused: Mutex::new(HashMap::new()),
            first_inputs: Mutex::new(HashMap::new()),
            moves: Mutex::new(VecDeque::new()),
            rebalance: Mutex::new(Rebalance {
                members: Vec::new(),
                pending: VecDeque::new(),
                window: (Instant::now(), 0),
            }),
            wake: Notify::new(),
            handoffs: handoff::Inbox::default(),
            restores: RestoreCounters::default(),
        });
        inner.heartbeat_once().await?;
        inner.refresh_live().await?;
        lock(&inner.rebalance).members = inner.members();
        let watch = inner
            .engine
            .owners
            .watch_with_history(">")
            .await
            .map_err(|error| ClusterError::engine("watch ownership records", error))?;
        let control = inner
            .engine
            .client
            .subscribe(inner.engine.layout.control_subject(&inner.node_id))
            .await
            .map_err(|error| ClusterError::engine("subscribe to the control subject", error))?;
        let handoffs = inner
            .engine
            .client
            .subscribe(inner.engine.layout.handoff_subject(&inner.node_id))
            .await
            .map_err(|error| ClusterError::engine("subscribe to the handoff subject", error))?;
        tokio::spawn(Arc::clone(&inner).heartbeat_loop());
        tokio::spawn(Arc::clone(&inner).watch_loop(watch));
        tokio::spawn(Arc::clone(&inner).supervisor_loop());
        tokio::spawn(Arc::clone(&inner).control_loop(control));
        tokio::spawn(Arc::clone(&inner).handoff_loop(handoffs));
        tokio::spawn(Arc::clone(&inner).trim_loop());
        tracing::info!(node = %inner.node_id, cluster = inner.engine.layout.name(), "joined the cluster");
        Ok(Self { inner })
    }

    /// This node's id (64 hex digits).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        self.inner.engine.layout.name()
    }

    /// Creates a daemon of `kind` on the node placement chooses.
    ///
    /// # Errors
    /// `Draining`, `NoNodeForKind`, `Engine`.
    pub async fn spawn(&self, kind: &str) -> Result<SpawnedDaemon, ClusterError> {
        self.inner.spawn(kind).await
    }

    /// Appends an input for `origin`; it is acknowledged once JetStream
    /// stored it. A repeat with the same `key` within two minutes returns
    /// the first sequence and is not processed again.
    ///
    /// # Errors
    /// `UnknownDaemon`, `Halted`, `Engine`.
    pub async fn submit(&self, origin: u64, payload: Bytes, key: Option<&[u8]>) -> Result<u64, ClusterError> {
        // The mirror answers for known daemons: reading and verifying the
        // record from the engine cost a round trip and an Ed25519
        // verification per input.
        let halted = match self.inner.known_record(origin) {
            Some(record) => record.halted,
            None => self.inner.record(origin).await?.0.halted,
        };
        if let Some(reason) = halted {
            return Err(ClusterError::Halted { origin, reason });
        }
        let message_id = key.map(|key| format!("{}:{}", origin_key(origin), hex(key)));
        let (seq, _duplicate) = self
            .inner
            .engine
            .append_input(origin, payload, message_id)
            .await?;
        Ok(seq)
    }

    /// The outputs of `origin` with chain sequence ≥ `from`, at most
    /// `limit`, in order, from whichever node wrote them.
    ///
    /// # Errors
    /// `UnknownDaemon`, `Engine`, `BadSnapshot` naming an entry that does
    /// not decode.
    pub async fn outputs(
        &self,
        origin: u64,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ClusterOutput>, ClusterError> {
        let record = match self.inner.known_record(origin) {
            Some(record) => record,
            None => self.inner.record(origin).await?.0,
        };
        // Outputs up to the snapshot's chain position were appended before
        // its stream position, and every later one after it: a reader of
        // recent outputs starts there instead of at the subject's start.
        let mut after = if from > record.snapshot.output_seq {
            record.snapshot.output_stream_seq
        } else {
            0
        };
        let mut outputs = Vec::new();
        loop {
            let page = limit.saturating_add(OUTPUT_PAGE_SLACK);
            let (entries, last) = self.inner.engine.read_outputs_page(origin, after, page).await?;
            for entry in &entries {
                let Some(event) = decode_output(origin, entry)? else {
                    continue;
                };
                let seq = CausalLink::from_bytes(&event.link).sequence;
                if seq < from {
                    continue;
                }
                if outputs.len() >= limit {
                    return Ok(outputs);
                }
                let causal = output_event(&event);
                outputs.push(ClusterOutput {
                    seq,
                    payload: causal.payload.clone(),
                    hash: causal.hash(),
                    event: causal,
                    node: event.node,
                });
            }
            match entries.last() {
                Some(entry) if entry.sequence < last && outputs.len() < limit => after = entry.sequence,
                _ => return Ok(outputs),
            }
        }
    }

    /// Where `origin` is.
    ///
    /// # Errors
    /// `UnknownDaemon`, `Record` for a record that is not believed, `Engine`.
    pub async fn daemon(&self, origin: u64) -> Result<DaemonPlacement, ClusterError> {
        let (record, _) = self.inner.record(origin).await?;
        Ok(self.inner.placement_of(&record))
    }

    /// Every daemon the cluster knows, by origin (refused records are left
    /// out; the log names them).
    pub fn placement(&self) -> Vec<DaemonPlacement> {
        let records: Vec<OwnerRecord> = lock(&self.inner.owners)
            .values()
            .filter_map(|known| known.record.as_ref().ok().cloned())
            .collect();
        records
            .iter()
            .map(|record| self.inner.placement_of(record))
            .collect()
    }

    /// The live nodes.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        lock(&self.inner.live)
            .iter()
            .map(|entry| NodeInfo {
                node: entry.node.clone(),
                http: entry.http.clone(),
                kinds: entry.kinds.clone(),
                hosted: entry.hosted,
                draining: entry.draining,
            })
            .collect()
    }

    /// The changes of owner this node saw, oldest first (the last 256).
    pub fn moves(&self) -> Vec<MoveRecord> {
        lock(&self.inner.moves).iter().cloned().collect()
    }

    /// Where the daemons this node started since it joined got their
    /// snapshots: a planned move to this node normally restores from the
    /// handoff of its old owner.
    pub fn restores(&self) -> RestoreCounts {
        RestoreCounts {
            from_handoff: self.inner.restores.from_handoff.load(Ordering::Relaxed),
            from_store: self.inner.restores.from_store.load(Ordering::Relaxed),
            handoffs_refused: self.inner.restores.handoffs_refused.load(Ordering::Relaxed),
        }
    }

    /// How many daemons this node hosts now.
    pub fn hosted_count(&self) -> usize {
        lock(&self.inner.hosted).len()
    }

    /// Moves `origin` to `node` (a planned move), asking its owner if it
    /// runs elsewhere. A move to the node that already owns it changes
    /// nothing and reports a zero pause. The daemon stays on `node` until
    /// the cluster's membership changes (rebalancing weighs daemons only
    /// when a node joins or leaves).
    ///
    /// # Errors
    /// `UnknownDaemon`, `UnknownNode`, `Halted`, `Fenced`, `Engine`,
    /// `MoveTimedOut`.
    pub async fn migrate(&self, origin: u64, node: &str) -> Result<MigrationReport, ClusterError> {
        self.inner.migrate(origin, node).await
    }

    /// Stops and forgets `origin`: its record, streams and snapshot.
    ///
    /// # Errors
    /// `UnknownDaemon`, `Engine`.
    pub async fn delete(&self, origin: u64) -> Result<(), ClusterError> {
        let (record, revision) = self.inner.record(origin).await?;
        if !self.inner.engine.delete_owner(origin, revision).await? {
            return Err(ClusterError::Fenced {
                origin,
                reason: "the record changed while it was being deleted".into(),
            });
        }
        self.inner.stop_hosting(origin);
        self.inner.engine.purge_daemon(origin).await?;
        self.inner.engine.delete_snapshot(&record.snapshot.object).await;
        Ok(())
    }

    /// Hands every hosted daemon to another node, then leaves the cluster
    /// (the node entry is removed). Daemons no other node can take are
    /// snapshotted and fail over when a node that can appears.
    ///
    /// # Errors
    /// `Engine` when the entry cannot be removed; moves that fail are
    /// reported in the log and their daemons left to fail over.
    pub async fn drain(&self) -> Result<DrainReport, ClusterError> {
        self.inner.drain().await
    }
}

impl Inner {
    // ---- lease and membership ----

    fn entry(&self) -> NodeEntry {
        NodeEntry {
            node: self.node_id.clone(),
            http: self.config.http_address.clone(),
            kinds: self
                .kinds
                .present_kinds()
                .into_iter()
                .map(|(kind, _)| kind)
                .collect(),
            capabilities: self.config.capabilities.clone(),
            hosted: lock(&self.hosted).len() as u64,
            draining: self.draining.load(Ordering::Acquire),
            started_at_ms: self.started_at_ms,
        }
    }

    async fn heartbeat_once(&self) -> Result<(), ClusterError> {
        let sent = Instant::now();
        let bytes = record::seal_record(RecordKind::Node, &self.entry(), &self.identity, &self.config.keys);
        self.engine.put_node(&self.node_id, Bytes::from(bytes)).await?;
        let mut lease = lock(&self.lease_until);
        if lease.is_some_and(|until| Instant::now() >= until) {
            self.lapses.fetch_add(1, Ordering::AcqRel);
        }
        *lease = Some(sent + self.engine.lease);
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let every = self.engine.lease / 3;
        while !self.closed.load(Ordering::Acquire) {
            tokio::time::sleep(every).await;
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            if let Err(error) = self.heartbeat_once().await {
                tracing::warn!(%error, "the node entry could not be refreshed");
            }
        }
    }

    /// Every [`TRIM_EVERY`], the live node with the smallest id purges
    /// the inputs stream below the cluster's floor (see
    /// [`Inner::input_floor`]). One unfiltered purge drops whole message
    /// blocks; a purge per daemon and subject scanned the whole stream each
    /// time (measured: 256 evenly loaded daemons snapshotting together
    /// stalled every publish for 7 s, and purging cost 45 % of ingest).
    /// Two nodes that both believe they are the smallest both purge, each
    /// below a floor it proved.
    async fn trim_loop(self: Arc<Self>) {
        while !self.closed.load(Ordering::Acquire) {
            tokio::time::sleep(TRIM_EVERY).await;
            let trimmer = self.members().into_iter().min();
            if self.closed.load(Ordering::Acquire) || trimmer.as_deref() != Some(self.node_id.as_str()) {
                continue;
            }
            let purged = match self.input_floor().await {
                Ok(floor) if floor > 1 => self.engine.purge_inputs_below(floor).await,
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            };
            if let Err(error) = purged {
                // Refusing to guess is right, but a record that keeps
                // failing stops trimming for the whole cluster: say so.
                tracing::warn!(%error, "the inputs behind snapshots stay until the next round");
            }
        }
    }

    /// The lowest stream sequence any daemon may still need: the first
    /// input after each daemon's recorded snapshot, and for inputs not yet
    /// stored, one past the stream's last sequence read before anything
    /// else (an input stored later has a higher sequence; a record created
    /// later has only later inputs). Every record in the bucket as of a
    /// revision read after that counts, read from the mirror when known (an
    /// older snapshot there only lowers the floor). Any failure is an
    /// error: nothing is purged on a guess.
    ///
    /// What a round learned of each daemon's inputs after its recorded
    /// snapshot S is kept for the next while the record still says S, so
    /// an idle cluster's round reads no subject at all: a first input found
    /// stays the first (later inputs get higher sequences, and a purge past
    /// it needs a snapshot past it, which changes S); "none through the
    /// stream's last sequence L" stays true, and once the stream has grown
    /// only the inputs after L are asked about.
    async fn input_floor(&self) -> Result<u64, ClusterError> {
        let last = self.engine.inputs_last_sequence().await?;
        let mut floor = last + 1;
        let mut snapshots = Vec::new();
        for origin in self.owner_origins().await? {
            let snapshot_input = match self.known_record(origin) {
                Some(record) => record.snapshot.input_seq,
                None => self.record(origin).await?.0.snapshot.input_seq,
            };
            snapshots.push((snapshot_input, origin));
        }
        // Lowest snapshot first: once a snapshot reaches the floor, no
        // daemon after it can have an input below it.
        snapshots.sort_unstable();
        let known = std::mem::take(&mut *lock(&self.first_inputs));
        let mut found = HashMap::with_capacity(known.len());
        for (snapshot_input, origin) in snapshots {
            if snapshot_input + 1 >= floor {
                break;
            }
            let first = match FirstInput::still_known(known.get(&origin), snapshot_input, last) {
                Ok(first) => first,
                Err(from) => self.engine.first_input_from(origin, from).await?,
            };
            let answer = match first {
                Some(first) => {
                    floor = floor.min(first);
                    FirstInput::At(first)
                }
                None => FirstInput::NoneThrough(last),
            };
            found.insert(origin, (snapshot_input, answer));
        }
        *lock(&self.first_inputs) = found;
        Ok(floor)
    }

    /// Every origin with an ownership record, as of a moment after the
    /// call began: from the mirror once it has applied the bucket's last
    /// revision read now (listing the bucket's keys costs the server a
    /// message per record, every round), else listed from the engine.
    async fn owner_origins(&self) -> Result<Vec<u64>, ClusterError> {
        let last = self.engine.owners_last_revision().await?;
        let started = Instant::now();
        while self.mirrored_through.load(Ordering::Acquire) < last {
            if started.elapsed() >= MIRROR_CATCH_UP {
                tracing::debug!(
                    last,
                    "the ownership mirror is behind the bucket; its keys are listed"
                );
                return self.engine.owner_origins().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(lock(&self.owners).keys().copied().collect())
    }

    fn lease_is_valid(&self) -> bool {
        lock(&self.lease_until).is_some_and(|until| Instant::now() < until)
    }

    async fn refresh_live(&self) -> Result<(), ClusterError> {
        let entries = self.engine.node_entries().await?;
        let mut live = Vec::with_capacity(entries.len());
        for (key, bytes) in entries {
            match record::open_node(&bytes, &self.config.keys) {
                Ok(entry) if entry.node == key => live.push(entry),
                Ok(entry) => {
                    tracing::warn!(key, node = %entry.node, "a node entry is stored under another node's key; ignored")
                }
                Err(error) => tracing::warn!(key, %error, "a node entry is refused"),
            }
        }
        live.sort_by(|a, b| a.node.cmp(&b.node));
        *lock(&self.live) = live;
        Ok(())
    }

    /// The live, non-draining nodes that announce `kind`.
    fn candidates(&self, kind: &str) -> Vec<String> {
        lock(&self.live)
            .iter()
            .filter(|entry| !entry.draining && entry.kinds.iter().any(|known| known == kind))
            .map(|entry| entry.node.clone())
            .collect()
    }

    fn is_live(&self, node: &str) -> bool {
        lock(&self.live).iter().any(|entry| entry.node == node)
    }

    // ---- the ownership mirror ----

    /// Keeps the mirror: a watch that fails (after a leader change its
    /// consumer can fall silent for good) is made again, and the new one
    /// delivers every key's latest value, delete markers included.
    async fn watch_loop(self: Arc<Self>, mut watch: async_nats::jetstream::kv::Watch) {
        loop {
            self.mirror(&mut watch).await;
            loop {
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                match self.engine.owners.watch_with_history(">").await {
                    Ok(renewed) => {
                        watch = renewed;
                        break;
                    }
                    Err(error) => tracing::warn!(%error, "the ownership watch cannot be made again yet"),
                }
            }
        }
    }

    /// Applies the watch's entries to the mirror until it fails or ends.
    async fn mirror(&self, watch: &mut async_nats::jetstream::kv::Watch) {
        while let Some(entry) = watch.next().await {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "the ownership watch failed; it is made again");
                    return;
                }
            };
            self.apply_to_mirror(&entry);
            // Before the watch has delivered every key's latest value, the
            // mirror may still lack a key changed while no watch ran: only
            // a caught-up watch says the mirror holds the bucket through a
            // revision.
            if entry.seen_current {
                self.mirrored_through.fetch_max(entry.revision, Ordering::AcqRel);
            }
            self.wake.notify_one();
        }
    }

    /// Applies one ownership entry (a record, or its deletion) to the mirror.
    fn apply_to_mirror(&self, entry: &async_nats::jetstream::kv::Entry) {
        let Some(origin) = parse_origin_key(&entry.key) else {
            tracing::warn!(
                key = entry.key,
                "an ownership record under a key that is no origin; ignored"
            );
            return;
        };
        let mut owners = lock(&self.owners);
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            owners.remove(&origin);
        } else {
            let record = record::open_owner(origin, &entry.value, &self.config.keys);
            if let Err(error) = &record {
                tracing::error!(origin = %origin_key(origin), %error, "an ownership record is refused; the daemon stays stopped");
            }
            if let (Ok(new), Some(Known { record: Ok(old), .. })) = (&record, owners.get(&origin))
                && new.node != old.node
            {
                let mut moves = lock(&self.moves);
                if moves.len() == MOVES_KEPT {
                    moves.pop_front();
                }
                moves.push_back(MoveRecord {
                    origin,
                    from: old.node.clone(),
                    to: new.node.clone(),
                    epoch: new.epoch,
                    at_ms: unix_ms(),
                });
            }
            owners.insert(
                origin,
                Known {
                    revision: entry.revision,
                    record,
                },
            );
        }
    }

    /// The mirror's believed record of `origin`, if it has one.
    fn known_record(&self, origin: u64) -> Option<OwnerRecord> {
        lock(&self.owners)
            .get(&origin)
            .and_then(|known| known.record.as_ref().ok().cloned())
    }

    /// The believed record of `origin` and its revision, from the engine.
    async fn record(&self, origin: u64) -> Result<(OwnerRecord, u64), ClusterError> {
        let (bytes, revision) = self
            .engine
            .owner_entry(origin)
            .await?
            .ok_or(ClusterError::UnknownDaemon { origin })?;
        let record =
            record::open_owner(origin, &bytes, &self.config.keys).map_err(|error| ClusterError::Record {
                what: "ownership",
                key: origin_key(origin),
                error,
            })?;
        Ok((record, revision))
    }

    fn placement_of(&self, record: &OwnerRecord) -> DaemonPlacement {
        let processed_here = lock(&self.hosted)
            .get(&record.origin)
            .map(|hosted| hosted.status.processed.load(Ordering::Relaxed));
        let refused = lock(&self.refused)
            .get(&record.origin)
            .filter(|_| record.node == self.node_id)
            .map(|refusal| refusal.reason.clone());
        DaemonPlacement {
            origin: record.origin,
            kind: record.kind.clone(),
            kind_version: record.kind_version.clone(),
            node: record.node.clone(),
            epoch: record.epoch,
            moves: record.moves,
            snapshot_input_seq: record.snapshot.input_seq,
            halted: record.halted.clone(),
            processed_here,
            refused,
        }
    }

    fn sign(&self, record: &OwnerRecord) -> Bytes {
        Bytes::from(record::seal_record(
            RecordKind::Owner,
            record,
            &self.identity,
            &self.config.keys,
        ))
    }

    // ---- the supervisor ----

    async fn supervisor_loop(self: Arc<Self>) {
        let every = (self.engine.lease / 4).max(Duration::from_millis(100));
        let mut refreshed = Instant::now();
        while !self.closed.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(every, self.wake.notified()).await;
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            // A wake by the ownership watch (a record now names this node)
            // starts the daemon without first re-reading the live set; the
            // set is re-read every quarter lease, which failover needs.
            if refreshed.elapsed() >= every {
                if let Err(error) = self.refresh_live().await {
                    tracing::warn!(%error, "the live nodes could not be read");
                    continue;
                }
                refreshed = Instant::now();
            }
            Arc::clone(&self).supervise().await;
        }
    }

    async fn supervise(self: Arc<Self>) {
        let snapshot: Vec<(u64, u64, OwnerRecord)> = lock(&self.owners)
            .iter()
            .filter_map(|(origin, known)| {
                known
                    .record
                    .as_ref()
                    .ok()
                    .map(|record| (*origin, known.revision, record.clone()))
            })
            .collect();
        // Daemons whose record went away or names another node stop here.
        // (A record naming this node in another epoch restarts the daemon
        // below: `start_hosting` stops the old task and waits for it.)
        let hosted: Vec<u64> = lock(&self.hosted).keys().copied().collect();
        for origin in hosted {
            let hosted_epoch = lock(&self.hosted).get(&origin).map_or(0, |hosted| hosted.epoch);
            // A mirror older than the hosted epoch (this node's own claim
            // not seen yet) is no reason to stop.
            let still_ours = snapshot.iter().any(|(known, _, record)| {
                *known == origin && (record.node == self.node_id || record.epoch < hosted_epoch)
            });
            let moving = lock(&self.hosted)
                .get(&origin)
                .is_some_and(|hosted| hosted.moving);
            if !still_ours && !moving {
                tracing::warn!(origin = %origin_key(origin), "fenced: the daemon's record names another node now; it stops here");
                self.stop_hosting(origin);
            }
        }
        let draining = self.draining.load(Ordering::Acquire);
        let mut starts = Vec::new();
        let mut claims = Vec::new();
        for (origin, revision, record) in snapshot {
            if record.halted.is_some() {
                continue;
            }
            if record.node == self.node_id {
                let hosted_epoch = lock(&self.hosted).get(&origin).map(|hosted| hosted.epoch);
                // A draining node starts nothing: what it hosts is leaving.
                if !draining && hosted_epoch != Some(record.epoch) && self.may_try(origin, revision) {
                    starts.push((record, revision));
                }
            } else if !draining && !self.is_live(&record.node) {
                claims.push((record, revision));
            }
        }
        // Each start waits on a few round trips (the snapshot, the output
        // subject, the claim): a node taking over thousands of daemons
        // starts them side by side, not one after another.
        futures_util::stream::iter(starts)
            .for_each_concurrent(STARTS_AT_ONCE, |(record, revision)| {
                let inner = Arc::clone(&self);
                async move {
                    let origin = record.origin;
                    if let Err(error) = Arc::clone(&inner).start_contained(record, revision).await {
                        inner.refuse(origin, revision, &error);
                    }
                }
            })
            .await;
        futures_util::stream::iter(claims)
            .for_each_concurrent(STARTS_AT_ONCE, |(record, revision)| {
                let inner = Arc::clone(&self);
                async move { inner.fail_over(&record, revision).await }
            })
            .await;
        if !draining {
            self.rebalance();
        }
    }

    fn may_try(&self, origin: u64, revision: u64) -> bool {
        lock(&self.refused).get(&origin).is_none_or(|refusal| {
            refusal.revision != revision || refusal.at.elapsed() >= Duration::from_secs(5)
        })
    }

    fn refuse(&self, origin: u64, revision: u64, error: &ClusterError) {
        if matches!(error, ClusterError::Draining) {
            tracing::debug!(origin = %origin_key(origin), "not started: this node is draining or stopping");
            return;
        }
        tracing::error!(origin = %origin_key(origin), %error, "the daemon cannot start on this node; it stays stopped");
        lock(&self.refused).insert(
            origin,
            Refusal {
                revision,
                reason: error.to_string(),
                at: Instant::now(),
            },
        );
    }

    /// Claims the daemon of a dead node if placement gives it to this node.
    async fn fail_over(self: &Arc<Self>, record: &OwnerRecord, revision: u64) {
        let candidates = self.candidates(&record.kind);
        if placement::choose(record.origin, candidates.iter().map(String::as_str))
            != Some(self.node_id.as_str())
        {
            return;
        }
        // The live set may be a quarter lease old: a node that just joined
        // (and was given this daemon) must not lose it to a stale view.
        if self.engine.node_is_present(&record.node).await.unwrap_or(true) {
            return;
        }
        let claimed = OwnerRecord {
            node: self.node_id.clone(),
            epoch: record.epoch + 1,
            moves: record.moves + 1,
            writer: self.node_id.clone(),
            ..record.clone()
        };
        match self
            .engine
            .update_owner(record.origin, self.sign(&claimed), revision)
            .await
        {
            Ok(Some(new_revision)) => {
                tracing::info!(origin = %origin_key(record.origin), from = %record.node, epoch = claimed.epoch, "failover: claimed the daemon of a dead node");
                if let Err(error) = Arc::clone(self).start_contained(claimed, new_revision).await {
                    self.refuse(record.origin, new_revision, &error);
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(origin = %origin_key(record.origin), %error, "failover claim failed")
            }
        }
    }

    /// The live, non-draining nodes, sorted.
    fn members(&self) -> Vec<String> {
        lock(&self.live)
            .iter()
            .filter(|entry| !entry.draining)
            .map(|entry| entry.node.clone())
            .collect()
    }

    /// After a node joined or left, moves the daemons whose best node is
    /// now another one, at most `rebalance_rate` per second.
    fn rebalance(self: &Arc<Self>) {
        let members = self.members();
        let mut state = lock(&self.rebalance);
        if state.members != members {
            state.members = members;
            state.pending = lock(&self.hosted).keys().copied().collect();
        }
        while let Some(origin) = state.pending.pop_front() {
            if state.window.0.elapsed() >= Duration::from_secs(1) {
                state.window = (Instant::now(), 0);
            }
            if state.window.1 >= self.config.rebalance_rate {
                state.pending.push_front(origin);
                return;
            }
            let Some(kind) = lock(&self.owners)
                .get(&origin)
                .and_then(|known| known.record.as_ref().ok().map(|record| record.kind.clone()))
            else {
                continue;
            };
            let candidates = self.candidates(&kind);
            let Some(best) = placement::choose(origin, candidates.iter().map(String::as_str)) else {
                continue;
            };
            let moving = lock(&self.hosted).get(&origin).is_none_or(|hosted| hosted.moving);
            if best == self.node_id || moving {
                continue;
            }
            state.window.1 += 1;
            let inner = Arc::clone(self);
            let best = best.to_owned();
            tokio::spawn(async move {
                match inner.migrate(origin, &best).await {
                    Ok(report) => {
                        tracing::info!(origin = %origin_key(origin), to = %report.to, pause_us = report.pause_us, "rebalanced")
                    }
                    Err(error) => {
                        tracing::warn!(origin = %origin_key(origin), %error, "rebalancing move failed")
                    }
                }
            });
        }
    }

    // ---- starting and stopping daemons ----

    /// [`start_hosting`](Self::start_hosting) in a task of its own: a panic
    /// inside the client (async-nats 0.45 unwraps a timed-out read of an
    /// object, seen while a leader was killed) becomes a refusal to retry,
    /// not the end of the supervisor.
    async fn start_contained(
        self: Arc<Self>,
        record: OwnerRecord,
        revision: u64,
    ) -> Result<(), ClusterError> {
        let origin = record.origin;
        tokio::spawn(self.start_hosting(record, revision))
            .await
            .unwrap_or_else(|failed| {
                if failed.is_cancelled() {
                    // The node's runtime is shutting down.
                    return Err(ClusterError::Draining);
                }
                Err(ClusterError::Compute {
                    origin,
                    reason: format!("starting the daemon panicked: {failed}"),
                })
            })
    }

    /// Restores `record`'s daemon from its snapshot and starts its task.
    /// A record that changed after the caller saw it starts nothing and is
    /// no failure: the daemon moved on (a move back and forth outran this
    /// node's mirror), or a newer record naming this node follows, and it
    /// is started from that one.
    async fn start_hosting(self: Arc<Self>, record: OwnerRecord, revision: u64) -> Result<(), ClusterError> {
        let origin = record.origin;
        if self.draining.load(Ordering::Acquire) {
            return Err(ClusterError::Draining);
        }
        // The mirror may lag: start only from the record the engine holds
        // now, at the revision the caller saw (the lapse count is taken
        // first, so a pause after this read is noticed by the task).
        let confirmed_lapses = self.lapses.load(Ordering::Acquire);
        let (current, current_revision) = self.record(origin).await?;
        if current_revision != revision || current.node != self.node_id {
            tracing::debug!(origin = %origin_key(origin), node = %current.node, epoch = current.epoch, "not started: the record changed since this node saw it");
            return Ok(());
        }
        let kind_version = self
            .kinds
            .present_kinds()
            .into_iter()
            .find(|(kind, _)| *kind == record.kind)
            .map(|(_, version)| version)
            .ok_or_else(|| ClusterError::UnknownKind {
                kind: record.kind.clone(),
            })?;
        // Stop a stale task of an earlier epoch on this node, if any, and
        // wait for every stopped one: its last step stops the compute
        // instance.
        self.stop_hosting(origin);
        self.await_stopped_tasks(origin).await?;
        let opened = self.open_snapshot(&record).await?;
        let identity = Identity::from_seed(opened.seed);
        // Outputs after the snapshot were written by an earlier owner: the
        // replay must regenerate them exactly.
        let mut inherited = Inherited::after_snapshot(&record);
        self.collect_outputs(&record, &mut inherited).await?;
        let _ = self.runtime.stop(origin).await;
        self.runtime
            .spawn_from_snapshot(&record.kind, identity, opened.state, host_config())
            .await
            .map_err(|error| ClusterError::Compute {
                origin,
                reason: error.to_string(),
            })?;
        let mut attempts = 0;
        loop {
            let claim = wire::encode(&OutputEntry::Claim {
                epoch: record.epoch,
                node: self.node_id.clone(),
                through: Some(inherited.appended_through),
            });
            match self.engine.append_output(origin, inherited.last_out, claim).await {
                Ok(sequence) => {
                    inherited.last_out = sequence;
                    break;
                }
                Err(AppendError::WrongLastSequence) if attempts < CLAIM_ATTEMPTS => {
                    attempts += 1;
                    if let Err(error) = self.collect_outputs(&record, &mut inherited).await {
                        let _ = self.runtime.stop(origin).await;
                        return Err(error);
                    }
                }
                Err(AppendError::WrongLastSequence) => {
                    let _ = self.runtime.stop(origin).await;
                    return Err(ClusterError::Fenced {
                        origin,
                        reason: "outputs kept arriving from another writer while this node claimed".into(),
                    });
                }
                Err(AppendError::Engine(error)) => {
                    let _ = self.runtime.stop(origin).await;
                    return Err(error);
                }
            }
        }
        let status = Arc::new(HostedStatus::default());
        let (control, commands) = mpsc::unbounded_channel();
        let running = Running {
            origin,
            epoch: record.epoch,
            revision,
            applied: record.snapshot.input_seq,
            last_out: inherited.last_out,
            verify: inherited.verify,
            appended_through: inherited.appended_through,
            since_snapshot: 0,
            seed: opened.seed,
            kind_version,
            record,
            status: Arc::clone(&status),
            confirmed_lapses,
            snapshot_at: Instant::now(),
        };
        lock(&self.refused).remove(&origin);
        tracing::info!(origin = %origin_key(origin), epoch = running.epoch, from_input = running.applied, "hosting the daemon");
        // Spawned with the table locked, so whoever stops the daemon next
        // finds its task to wait for.
        let mut hosted = lock(&self.hosted);
        let epoch = running.epoch;
        let task = tokio::spawn(Arc::clone(&self).run_daemon(running, commands));
        let replaced = hosted.insert(
            origin,
            Hosted {
                epoch,
                control,
                status,
                moving: false,
                task,
            },
        );
        if let Some(replaced) = replaced {
            self.park_stopped(origin, replaced);
        }
        Ok(())
    }

    /// Adds what the daemon's subject holds after `inherited.last_out`:
    /// outputs past the snapshot's chain position to `verify`, how far the
    /// chain went to `appended_through`, and the subject's last sequence as
    /// read to `last_out`.
    async fn collect_outputs(
        &self,
        record: &OwnerRecord,
        inherited: &mut Inherited,
    ) -> Result<(), ClusterError> {
        let (entries, last) = self
            .engine
            .read_outputs(record.origin, inherited.last_out)
            .await?;
        for entry in entries {
            match wire::decode::<OutputEntry>(&entry.payload) {
                Ok(OutputEntry::Output(event)) => {
                    let seq = CausalLink::from_bytes(&event.link).sequence;
                    inherited.appended_through = inherited.appended_through.max(seq);
                    if seq > record.snapshot.output_seq {
                        inherited.verify.insert(seq, event);
                    }
                }
                Ok(OutputEntry::Claim { epoch, node, .. }) if epoch > record.epoch => {
                    return Err(ClusterError::Fenced {
                        origin: record.origin,
                        reason: format!("node {node} already claimed epoch {epoch}"),
                    });
                }
                Ok(OutputEntry::Claim { through, .. }) => {
                    inherited.appended_through = inherited.appended_through.max(through.unwrap_or(0));
                }
                Err(reason) => {
                    return Err(ClusterError::BadSnapshot {
                        origin: record.origin,
                        object: format!("output entry {}", entry.sequence),
                        problem: format!("does not decode: {reason}"),
                    });
                }
            }
        }
        inherited.last_out = last;
        Ok(())
    }

    /// The snapshot `record` names, checked and opened: the one its old
    /// owner handed over when that passes the record's checks, otherwise
    /// the one read from the object store.
    async fn open_snapshot(&self, record: &OwnerRecord) -> Result<OpenedSnapshot, ClusterError> {
        let reference = &record.snapshot;
        let handed = self
            .handoffs
            .take(record.origin, &reference.object, HANDOFF_OPENING_WAIT)
            .await;
        match handed.map(|opened| opened.and_then(|opened| opened.check_against(record))) {
            Some(Ok(opened)) => {
                self.restores.from_handoff.fetch_add(1, Ordering::Relaxed);
                return Ok(opened);
            }
            Some(Err(error)) => {
                self.restores.handoffs_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "a snapshot handed over was refused; reading the object store");
            }
            None => {}
        }
        let sealed = self
            .engine
            .get_snapshot(record.origin, &reference.object, reference.bytes)
            .await?;
        let opened = check_snapshot(&self.config.keys, self.engine.layout.name(), record, sealed)?;
        self.restores.from_store.fetch_add(1, Ordering::Relaxed);
        Ok(opened)
    }

    /// Takes in the frames of snapshots handed over to this node and opens
    /// each complete one off the async workers, before the record naming
    /// it arrives.
    async fn handoff_loop(self: Arc<Self>, mut frames: async_nats::Subscriber) {
        while let Some(frame) = frames.next().await {
            let Some(complete) = self.handoffs.receive(frame.headers.as_ref(), &frame.payload) else {
                continue;
            };
            let inner = Arc::clone(&self);
            tokio::task::spawn_blocking(move || {
                let digest = Sha256::digest(&complete.sealed).into();
                let opened = open_sealed(
                    &inner.config.keys,
                    inner.engine.layout.name(),
                    complete.origin,
                    complete.place,
                    complete.sealed,
                    digest,
                );
                // Nobody waits when the record never came to name it.
                let _ = complete.opened.send(opened);
            });
        }
    }

    /// Sends `sealed` to node `to` as a handoff. Best effort: whatever is
    /// lost, `to` reads the object store.
    async fn hand_sealed_over(&self, to: &str, origin: u64, place: &SealedPlace, sealed: &Bytes) {
        let subject = self.engine.layout.handoff_subject(to);
        for (headers, chunk) in handoff::frames(origin, place, sealed) {
            if let Err(error) = self
                .engine
                .client
                .publish_with_headers(subject.clone(), headers, chunk)
                .await
            {
                tracing::debug!(%error, "a snapshot handoff could not be sent; the new owner reads the store");
                return;
            }
        }
    }

    /// Tells the daemon's task to stop (it stops between two inputs) and
    /// keeps its handle for [`Inner::await_stopped_tasks`].
    fn stop_hosting(&self, origin: u64) {
        let Some(hosted) = lock(&self.hosted).remove(&origin) else {
            return;
        };
        self.park_stopped(origin, hosted);
    }

    /// Tells a daemon's task, no longer in the table, to stop, and keeps
    /// its handle.
    fn park_stopped(&self, origin: u64, hosted: Hosted) {
        let _ = hosted.control.send(Control::Stop);
        self.stopping.park(origin, hosted.task);
    }

    /// Waits until every task of `origin` this node stopped has ended (see
    /// [`StoppedTasks::await_ended`]); starting the daemon is refused while
    /// one still runs.
    async fn await_stopped_tasks(&self, origin: u64) -> Result<(), ClusterError> {
        self.stopping
            .await_ended(origin, STOPPED_TASK_WAIT)
            .await
            .map_err(|StillRunning| ClusterError::Compute {
                origin,
                reason: format!(
                    "a task of an earlier epoch still runs here after {STOPPED_TASK_WAIT:?}; the daemon starts once it has ended"
                ),
            })
    }

    // ---- creating ----

    async fn spawn(&self, kind: &str) -> Result<SpawnedDaemon, ClusterError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(ClusterError::Draining);
        }
        self.refresh_live().await?;
        let candidates = self.candidates(kind);
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system's random source is available");
        let identity = Identity::from_seed(seed);
        let origin = identity.origin_hash();
        let node = placement::choose(origin, candidates.iter().map(String::as_str))
            .ok_or_else(|| ClusterError::NoNodeForKind {
                kind: kind.to_owned(),
            })?
            .to_owned();
        let kind_version = self
            .kinds
            .present_kinds()
            .into_iter()
            .find(|(known, _)| known == kind)
            .map_or_else(|| "0.0".to_owned(), |(_, version)| version);
        let state = genesis_snapshot(&identity, self.kinds.fresh_state(kind));
        let payload = SnapshotPayload {
            seed,
            kind: kind.to_owned(),
            kind_version: kind_version.clone(),
            state: Vec::from(state.to_bytes()),
        };
        let epoch = 1;
        let reference = self
            .seal_and_store(origin, epoch, 0, 0, 0, &payload, None)
            .await?;
        let record = OwnerRecord {
            origin,
            kind: kind.to_owned(),
            kind_version: kind_version.clone(),
            node: node.clone(),
            epoch,
            snapshot: reference,
            halted: None,
            moves: 0,
            writer: self.node_id.clone(),
        };
        self.engine.create_owner(origin, self.sign(&record)).await?;
        self.wake.notify_one();
        Ok(SpawnedDaemon {
            origin,
            entity_id: node_id_text(identity.entity_id()),
            kind: kind.to_owned(),
            kind_version,
            node,
        })
    }

    /// Seals `payload` and stores it, and hands it to node `handoff` as
    /// well while it is stored, when given (the new owner of a planned
    /// move).
    #[allow(
        clippy::too_many_arguments,
        reason = "the positions a snapshot covers, each one a plain number its two callers name"
    )]
    async fn seal_and_store(
        &self,
        origin: u64,
        epoch: u64,
        input_seq: u64,
        output_stream_seq: u64,
        output_seq: u64,
        payload: &SnapshotPayload,
        handoff: Option<&str>,
    ) -> Result<SnapshotRef, ClusterError> {
        let context = SealContext {
            cluster: self.engine.layout.name(),
            origin,
            epoch,
            input_seq,
        };
        let sealed = Bytes::from(self.config.keys.seal_written(
            &context,
            payload.state.len() + 256,
            |buffer| wire::encode_into(payload, buffer),
        ));
        // A random suffix: a retried snapshot at the same place must not
        // overwrite an object a record already names.
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let object = format!("{}.{epoch}.{input_seq}.{}", origin_key(origin), hex(&nonce));
        if let Some(to) = handoff {
            let place = SealedPlace {
                object: object.clone(),
                sealed_epoch: epoch,
                input_seq,
            };
            self.hand_sealed_over(to, origin, &place, &sealed).await;
        }
        let digest = self.engine.put_snapshot(&object, &sealed).await?;
        Ok(SnapshotRef {
            object,
            digest,
            sealed_epoch: epoch,
            input_seq,
            output_stream_seq,
            output_seq,
            bytes: sealed.len() as u64,
        })
    }

    // ---- moves ----

    async fn migrate(self: &Arc<Self>, origin: u64, to: &str) -> Result<MigrationReport, ClusterError> {
        let (record, _) = self.record(origin).await?;
        if let Some(reason) = record.halted {
            return Err(ClusterError::Halted { origin, reason });
        }
        self.refresh_live().await?;
        if !self.is_live(to) {
            return Err(ClusterError::UnknownNode { node: to.to_owned() });
        }
        if record.node != to && !self.candidates(&record.kind).iter().any(|node| node == to) {
            return Err(ClusterError::NodeCannotHost {
                node: to.to_owned(),
                kind: record.kind,
            });
        }
        if record.node == to {
            return Ok(MigrationReport {
                origin,
                from: record.node.clone(),
                to: record.node,
                epoch: record.epoch,
                pause_us: 0,
                snapshot_bytes: 0,
                inputs_waiting: Some(0),
                target_ready: true,
            });
        }
        if record.node != self.node_id {
            return self.ask_owner(&record.node, origin, to).await;
        }
        // The record may name this node a moment before its task runs.
        let started = Instant::now();
        while !lock(&self.hosted).contains_key(&origin) && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Appends to the daemon's output subject wake the wait for the new
        // owner's claim (the poll in between covers a subscription the
        // server refused).
        let appended = self
            .engine
            .client
            .subscribe(self.engine.layout.output_subject(origin))
            .await
            .ok();
        let (reply, answer) = oneshot::channel();
        // The pause runs from this request (the daemon finishes the input in
        // flight, then stops) to the new owner's claim in the stream.
        let asked = Instant::now();
        {
            let mut hosted = lock(&self.hosted);
            let Some(entry) = hosted.get_mut(&origin) else {
                return Err(ClusterError::MoveTimedOut {
                    origin,
                    reason: "this node owns the daemon but could not start it within 5 s".into(),
                });
            };
            entry.moving = true;
            let _ = entry.control.send(Control::Handover {
                to: to.to_owned(),
                reply,
            });
        }
        let mut report = answer.await.map_err(|_| ClusterError::MoveTimedOut {
            origin,
            reason: "the daemon's task ended before handing it over".into(),
        })??;
        report.target_ready = self
            .wait_for_claim(origin, report.epoch, appended, Duration::from_secs(10))
            .await;
        report.pause_us = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Counted after the pause, so the count does not lengthen it.
        report.inputs_waiting = self.inputs_waiting(origin).await;
        Ok(report)
    }

    /// Waits until the new owner's claim entry (or a later entry of its
    /// epoch) is in the output stream: read again at each message on
    /// `appended`, a subscription to the daemon's output subject, and at
    /// least every [`CLAIM_POLL`].
    async fn wait_for_claim(
        &self,
        origin: u64,
        epoch: u64,
        mut appended: Option<async_nats::Subscriber>,
        limit: Duration,
    ) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(last)) = self.engine.last_output(origin).await {
                match wire::decode::<OutputEntry>(&last.payload) {
                    Ok(OutputEntry::Claim { epoch: claimed, .. }) if claimed >= epoch => return true,
                    Ok(OutputEntry::Output(event)) if event.epoch >= epoch => return true,
                    _ => {}
                }
            }
            let poll = tokio::time::sleep(CLAIM_POLL);
            let closed = match appended.as_mut() {
                Some(subscriber) => tokio::select! {
                    message = subscriber.next() => message.is_none(),
                    () = poll => false,
                },
                None => {
                    poll.await;
                    false
                }
            };
            if closed {
                appended = None;
            }
        }
        false
    }

    async fn ask_owner(&self, owner: &str, origin: u64, to: &str) -> Result<MigrationReport, ClusterError> {
        let request = serde_json::to_vec(&MoveRequest {
            origin: origin_key(origin),
            to: to.to_owned(),
        })
        .expect("a move request serializes");
        let reply = tokio::time::timeout(
            Duration::from_secs(30),
            self.engine
                .client
                .request(self.engine.layout.control_subject(owner), request.into()),
        )
        .await
        .map_err(|_| ClusterError::MoveTimedOut {
            origin,
            reason: format!("its owner {owner} did not answer"),
        })?
        .map_err(|error| ClusterError::engine("ask the owner to move a daemon", error))?;
        let answer: MoveAnswer = serde_json::from_slice(&reply.payload)
            .map_err(|error| ClusterError::engine("read the owner's answer", error))?;
        match answer {
            MoveAnswer::Moved(report) => Ok(report),
            MoveAnswer::Refused(reason) => Err(ClusterError::Engine {
                action: format!("move daemon {} (refused by its owner)", origin_key(origin)),
                reason,
            }),
        }
    }

    async fn control_loop(self: Arc<Self>, mut requests: async_nats::Subscriber) {
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let inner = Arc::clone(&self);
            tokio::spawn(async move {
                let answer = match serde_json::from_slice::<MoveRequest>(&message.payload) {
                    Ok(request) => match parse_origin_key(&request.origin) {
                        Some(origin) => match inner.migrate(origin, &request.to).await {
                            Ok(report) => MoveAnswer::Moved(report),
                            Err(error) => MoveAnswer::Refused(error.to_string()),
                        },
                        None => MoveAnswer::Refused(format!("{:?} is not an origin", request.origin)),
                    },
                    Err(error) => MoveAnswer::Refused(format!("malformed move request: {error}")),
                };
                let payload = serde_json::to_vec(&answer).expect("a move answer serializes");
                let _ = inner.engine.client.publish(reply, payload.into()).await;
            });
        }
    }

    async fn drain(self: &Arc<Self>) -> Result<DrainReport, ClusterError> {
        self.draining.store(true, Ordering::Release);
        self.heartbeat_once().await?;
        self.refresh_live().await?;
        let mut report = DrainReport::default();
        let origins: Vec<u64> = lock(&self.hosted).keys().copied().collect();
        for origin in origins {
            let kind = lock(&self.owners)
                .get(&origin)
                .and_then(|known| known.record.as_ref().ok().map(|record| record.kind.clone()));
            let target = kind.and_then(|kind| {
                let candidates = self.candidates(&kind);
                placement::choose(origin, candidates.iter().map(String::as_str)).map(str::to_owned)
            });
            match target {
                Some(target) => match tokio::time::timeout(DRAIN_MOVE_LIMIT, self.migrate(origin, &target))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClusterError::MoveTimedOut {
                            origin,
                            reason: format!("the drain gave up after {DRAIN_MOVE_LIMIT:?}"),
                        })
                    }) {
                    Ok(moved) => report.moved.push(moved),
                    Err(error) => {
                        tracing::warn!(origin = %origin_key(origin), %error, "drain: the move failed; the daemon will fail over");
                        report.left.push(origin);
                    }
                },
                None => report.left.push(origin),
            }
        }
        // Daemons no other node took: snapshot them where they are, so the
        // node that fails them over replays as little as possible.
        let left: Vec<u64> = lock(&self.hosted).keys().copied().collect();
        for origin in left {
            let (reply, retired) = oneshot::channel();
            let asked = lock(&self.hosted)
                .get(&origin)
                .is_some_and(|hosted| hosted.control.send(Control::Retire { reply }).is_ok());
            if asked && let Ok(Ok(Err(error))) = tokio::time::timeout(DRAIN_MOVE_LIMIT, retired).await {
                tracing::warn!(origin = %origin_key(origin), %error, "drain: the last snapshot failed; the daemon fails over from the one before");
            }
        }
        self.closed.store(true, Ordering::Release);
        let left: Vec<u64> = lock(&self.hosted).keys().copied().collect();
        for origin in left {
            self.stop_hosting(origin);
        }
        self.wake.notify_one();
        self.engine.delete_node(&self.node_id).await?;
        Ok(report)
    }
}

/// A daemon task's own state.
struct Running {
    origin: u64,
    epoch: u64,
    revision: u64,
    record: OwnerRecord,
    applied: u64,
    last_out: u64,
    verify: BTreeMap<u64, OutputEvent>,
    /// The highest chain sequence an earlier owner appended, as its output
    /// subject said when this owner started. A replayed output at or below
    /// it that is not in `verify` was dropped by the retention limit: it
    /// cannot be compared, and appending it again would double it.
    appended_through: u64,
    since_snapshot: u64,
    seed: [u8; 32],
    kind_version: String,
    status: Arc<HostedStatus>,
    /// The node's lapse count when this daemon's ownership was last
    /// confirmed.
    confirmed_lapses: u64,
    /// When its last snapshot was recorded (or it started here).
    snapshot_at: Instant,
}

enum Exit {
    HandedOver,
    Stopped,
}

/// What a starting owner learns from the daemon's output subject after its
/// snapshot's position.
struct Inherited {
    /// Outputs past the snapshot's chain position, by chain sequence: the
    /// replay must regenerate each exactly.
    verify: BTreeMap<u64, OutputEvent>,
    /// The subject's last stream sequence as read.
    last_out: u64,
    /// The highest chain sequence appended so far, from the outputs read
    /// and the claims' `through`; the subject's last entry is never dropped
    /// by retention, so this holds even when the outputs before it were.
    appended_through: u64,
}

impl Inherited {
    fn after_snapshot(record: &OwnerRecord) -> Self {
        Self {
            verify: BTreeMap::new(),
            last_out: record.snapshot.output_stream_seq,
            appended_through: record.snapshot.output_seq,
        }
    }
}

impl Inner {
    async fn run_daemon(
        self: Arc<Self>,
        mut daemon: Running,
        mut commands: mpsc::UnboundedReceiver<Control>,
    ) {
        let origin = daemon.origin;
        let outcome = self.daemon_loop(&mut daemon, &mut commands).await;
        let _ = self.runtime.stop(origin).await;
        {
            let mut hosted = lock(&self.hosted);
            if hosted
                .get(&origin)
                .is_some_and(|hosted| hosted.epoch == daemon.epoch)
            {
                hosted.remove(&origin);
            }
        }
        match outcome {
            Ok(Exit::HandedOver) => tracing::info!(origin = %origin_key(origin), "handed over"),
            Ok(Exit::Stopped) => tracing::info!(origin = %origin_key(origin), "stopped here"),
            Err(error @ ClusterError::Fenced { .. }) => {
                tracing::warn!(%error, "fenced: stopped hosting the daemon")
            }
            Err(error) => {
                tracing::warn!(origin = %origin_key(origin), %error, "the daemon stopped on an error; it restarts from its snapshot");
                self.wake.notify_one();
            }
        }
    }

    async fn daemon_loop(
        self: &Arc<Self>,
        daemon: &mut Running,
        commands: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Result<Exit, ClusterError> {
        // Subscribed before the catch-up read, so nothing stored in between
        // is missed: it is either read or republished (or both, and the
        // second is skipped as already applied).
        let mut live = self.engine.live_inputs(daemon.origin).await?;
        let mut resyncs = self.engine.resyncs();
        let mut resyncs_open = true;
        self.catch_up(daemon).await?;
        // When the daemon last took an input (its start counts): once it
        // has been quiet for `quiet_after` since, the subject is read once
        // more. Shorter after a gap: copies are being dropped, and the last
        // may be among them.
        let mut last_input_at = Some(Instant::now());
        let mut quiet_after = QUIET_CHECK;
        // Spread over the sweep period, so a node's daemons do not all
        // read their subjects in the same instant.
        let phase = Duration::from_millis(daemon.origin % SUBJECT_SWEEP.as_millis() as u64);
        let mut swept_at = Instant::now().checked_sub(phase).unwrap_or_else(Instant::now);
        loop {
            let sweep_at = swept_at + SUBJECT_SWEEP;
            let check_at = last_input_at.map_or(sweep_at, |at| (at + quiet_after).min(sweep_at));
            // A quiet daemon's snapshot falls due with no input to trigger
            // it. Its own arm: waking the quiet check early would restart
            // the wait that check is owed.
            let snapshot_due = self.snapshot_due_at(daemon);
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Control::Handover { to, reply }) => {
                        // Whatever the handover's outcome, this task ends:
                        // after a failure part-way (the instance may be
                        // stopped, the record may or may not have moved) the
                        // supervisor restarts the daemon from its record.
                        let result = self.hand_over(daemon, &to).await;
                        let outcome = match &result {
                            Ok(_) => Ok(Exit::HandedOver),
                            Err(ClusterError::Fenced { reason, .. }) => Err(ClusterError::Fenced { origin: daemon.origin, reason: reason.clone() }),
                            Err(error) => Err(ClusterError::engine("hand the daemon over", error)),
                        };
                        let _ = reply.send(result);
                        return outcome;
                    }
                    Some(Control::Retire { reply }) => {
                        let _ = reply.send(self.snapshot(daemon, None).await);
                        return Ok(Exit::Stopped);
                    }
                    Some(Control::Stop) | None => return Ok(Exit::Stopped),
                },
                message = live.next() => {
                    let Some(message) = message else {
                        return Err(ClusterError::engine("take inputs", "the live subscription ended"));
                    };
                    let copy = match self.engine.parse_live_input(daemon.origin, message) {
                        Ok(copy) => copy,
                        Err(reason) => {
                            tracing::warn!(origin = %origin_key(daemon.origin), reason, "a message on the live input subject is not a republished input; ignored");
                            continue;
                        }
                    };
                    if copy.input.sequence <= daemon.applied {
                        continue;
                    }
                    if copy.previous == daemon.applied {
                        self.apply(daemon, &copy.input).await?;
                    } else if copy.previous == 0
                        && let Some(last) = self.engine.last_input(daemon.origin).await?
                        && last.sequence == copy.input.sequence
                    {
                        // The first input after a purge emptied the
                        // subject: the trimmer purges only a daemon's
                        // inputs up to its recorded snapshot, which this
                        // owner has applied, so none is missing before it.
                        // The stream's own copy is what gets applied.
                        self.apply(daemon, &last).await?;
                    } else {
                        // Copies were lost: read the subject to its end now
                        // (at least through the one this copy names; it and
                        // the buffered copies after the gap are then
                        // skipped), and check again soon after the last. A
                        // copy naming a predecessor before the last applied
                        // input is no republished input: the stream, not
                        // the copy, says what comes next.
                        self.catch_up_through(daemon, copy.previous.max(daemon.applied)).await?;
                        quiet_after = QUIET_AFTER_GAP;
                    }
                    last_input_at = Some(Instant::now());
                }
                changed = resyncs.changed(), if resyncs_open => {
                    // Closed only with the client, whose end the live
                    // subscription reports.
                    resyncs_open = changed.is_ok();
                    if resyncs_open {
                        swept_at = Instant::now();
                        // The client says it is connected before it has
                        // subscribed again: once the server has the
                        // subscription, a copy is either delivered or
                        // already in the stream for this read. And once
                        // more a quiet second later, in case the round trip
                        // went ahead of the subscriptions.
                        if let Err(error) = self.engine.live_round_trip().await {
                            tracing::debug!(%error, "reading the stream without a round trip on the live connection");
                        }
                        self.catch_up(daemon).await?;
                        last_input_at = Some(Instant::now());
                        quiet_after = QUIET_CHECK;
                    }
                }
                () = tokio::time::sleep_until(snapshot_due.unwrap_or(check_at).into()), if snapshot_due.is_some() => {
                    self.snapshot(daemon, None).await?;
                }
                () = tokio::time::sleep_until(check_at.into()) => {
                    swept_at = Instant::now();
                    last_input_at = self.catch_up(daemon).await?;
                    if last_input_at.is_none() {
                        quiet_after = QUIET_CHECK;
                    }
                }
            }
        }
    }

    /// Reads and applies the daemon's inputs from the stream, after the
    /// last applied one through the subject's last sequence, a page at a
    /// time. Returns the instant it finished if it applied any input.
    async fn catch_up(self: &Arc<Self>, daemon: &mut Running) -> Result<Option<Instant>, ClusterError> {
        self.catch_up_through(daemon, 0).await
    }

    /// As [`Inner::catch_up`], through at least `at_least` (an input a
    /// republished copy named as its predecessor: it is in the stream).
    async fn catch_up_through(
        self: &Arc<Self>,
        daemon: &mut Running,
        at_least: u64,
    ) -> Result<Option<Instant>, ClusterError> {
        let through = self
            .engine
            .last_input_sequence(daemon.origin)
            .await?
            .max(at_least);
        let before = daemon.applied;
        while daemon.applied < through {
            let page = self
                .engine
                .read_inputs(daemon.origin, daemon.applied, through, CATCH_UP_PAGE)
                .await?;
            for input in &page {
                self.apply(daemon, input).await?;
            }
        }
        Ok((daemon.applied != before).then(Instant::now))
    }

    /// Processes one input (unless already applied) and snapshots when
    /// the interval is due.
    async fn apply(self: &Arc<Self>, daemon: &mut Running, input: &Stored) -> Result<(), ClusterError> {
        if input.sequence <= daemon.applied {
            return Ok(());
        }
        self.process_input(daemon, input).await?;
        if self.snapshot_is_due(daemon) {
            self.snapshot(daemon, None).await?;
        }
        Ok(())
    }

    /// Whether `daemon` has inputs its last snapshot does not cover and
    /// either `snapshot_every_events` of them or a last snapshot older
    /// than `snapshot_every`.
    fn snapshot_is_due(&self, daemon: &Running) -> bool {
        let every = self.config.snapshot_every_events;
        Self::may_snapshot(daemon)
            && ((every > 0 && daemon.since_snapshot >= every)
                || daemon.snapshot_at.elapsed() >= self.config.snapshot_every)
    }

    /// When `daemon`'s snapshot falls due by age, if it may take one.
    fn snapshot_due_at(&self, daemon: &Running) -> Option<Instant> {
        if Self::may_snapshot(daemon) {
            daemon.snapshot_at.checked_add(self.config.snapshot_every)
        } else {
            None
        }
    }

    /// A daemon still comparing replayed outputs takes no snapshot (it
    /// would cover outputs not yet verified), and one without inputs since
    /// its last needs none.
    fn may_snapshot(daemon: &Running) -> bool {
        daemon.since_snapshot > 0 && daemon.verify.is_empty()
    }

    /// Waits while the lease is lapsed; once it is valid again, the record
    /// must still name this node and epoch, or the daemon is fenced.
    async fn ensure_lease(&self, daemon: &mut Running) -> Result<(), ClusterError> {
        if self.lease_is_valid() && self.lapses.load(Ordering::Acquire) == daemon.confirmed_lapses {
            return Ok(());
        }
        tracing::warn!(origin = %origin_key(daemon.origin), "the node's lease lapsed; the daemon writes nothing until ownership is confirmed");
        while !self.lease_is_valid() {
            if self.closed.load(Ordering::Acquire) {
                return Err(ClusterError::Draining);
            }
            let _ = self.heartbeat_once().await;
            if !self.lease_is_valid() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let lapses = self.lapses.load(Ordering::Acquire);
        let (record, revision) = self.record(daemon.origin).await?;
        if record.node != self.node_id || record.epoch != daemon.epoch {
            return Err(ClusterError::Fenced {
                origin: daemon.origin,
                reason: format!(
                    "while the lease lapsed, node {} took epoch {}",
                    record.node, record.epoch
                ),
            });
        }
        daemon.revision = revision;
        daemon.record = record;
        daemon.confirmed_lapses = lapses;
        Ok(())
    }

    async fn process_input(&self, daemon: &mut Running, input: &Stored) -> Result<(), ClusterError> {
        let seq = input.sequence;
        self.ensure_lease(daemon).await?;
        let event = CausalEvent {
            link: CausalLink {
                origin_hash: INGRESS_ORIGIN,
                horizon_encoded: 0,
                sequence: seq,
                parent_hash: 0,
            },
            payload: input.payload.clone(),
            received_at: input.stored_at_ms,
        };
        match self.runtime.deliver(daemon.origin, &event) {
            Ok(outputs) => {
                for output in outputs {
                    self.emit(daemon, &output, seq).await?;
                }
            }
            Err(error) => {
                if self.runtime.handle(daemon.origin).is_none() {
                    return Err(ClusterError::Compute {
                        origin: daemon.origin,
                        reason: error.to_string(),
                    });
                }
                tracing::warn!(origin = %origin_key(daemon.origin), seq, %error, "an input failed in its daemon");
            }
        }
        daemon.applied = seq;
        daemon.since_snapshot += 1;
        daemon.status.processed.fetch_add(1, Ordering::Relaxed);
        // An output an earlier owner appended for this input (or one
        // before it) that the replay did not produce: it differs too.
        if let Some((&missing, _)) = daemon
            .verify
            .first_key_value()
            .filter(|(_, stored)| stored.input_seq <= seq)
        {
            return Err(self.halt_nondeterministic(daemon, missing).await);
        }
        Ok(())
    }

    /// Appends one output, or checks it against the one an earlier owner
    /// already appended.
    async fn emit(
        &self,
        daemon: &mut Running,
        output: &CausalEvent,
        input_seq: u64,
    ) -> Result<(), ClusterError> {
        let seq = output.link.sequence;
        if let Some(stored) = daemon.verify.remove(&seq) {
            if stored.link == output.link.to_bytes() && stored.payload == output.payload.as_ref() {
                return Ok(());
            }
            return Err(self.halt_nondeterministic(daemon, seq).await);
        }
        if seq <= daemon.appended_through {
            // Appended by an earlier owner, since dropped by retention.
            return Ok(());
        }
        let entry = wire::encode(&OutputEntry::Output(OutputEvent {
            link: output.link.to_bytes(),
            payload: output.payload.to_vec(),
            received_at: output.received_at,
            input_seq,
            epoch: daemon.epoch,
            node: self.node_id.clone(),
        }));
        self.append_guarded(daemon, entry, &output.link).await
    }

    /// Appends after the expected last sequence, retrying transient engine
    /// failures; a wrong last sequence is this node's own earlier append
    /// (whose answer was lost) or a fence.
    async fn append_guarded(
        &self,
        daemon: &mut Running,
        entry: Bytes,
        link: &CausalLink,
    ) -> Result<(), ClusterError> {
        let mut delay = Duration::from_millis(50);
        loop {
            self.ensure_lease(daemon).await?;
            match self
                .engine
                .append_output(daemon.origin, daemon.last_out, entry.clone())
                .await
            {
                Ok(sequence) => {
                    daemon.last_out = sequence;
                    return Ok(());
                }
                Err(AppendError::WrongLastSequence) => {
                    let last = self.engine.last_output(daemon.origin).await?;
                    let ours = last.as_ref().is_some_and(|last| {
                        matches!(wire::decode::<OutputEntry>(&last.payload),
                            Ok(OutputEntry::Output(event)) if event.link == link.to_bytes() && event.node == self.node_id && event.epoch == daemon.epoch)
                    });
                    if let (true, Some(last)) = (ours, last) {
                        daemon.last_out = last.sequence;
                        return Ok(());
                    }
                    return Err(ClusterError::Fenced {
                        origin: daemon.origin,
                        reason: "another node appended to the daemon's outputs".into(),
                    });
                }
                Err(AppendError::Engine(error)) => {
                    tracing::warn!(origin = %origin_key(daemon.origin), %error, "an output append failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn halt_nondeterministic(&self, daemon: &mut Running, seq: u64) -> ClusterError {
        let reason = format!(
            "nondeterministic: the replay did not reproduce the output at sequence {seq}; daemons must be deterministic in (state, event)"
        );
        let halted = OwnerRecord {
            halted: Some(reason.clone()),
            writer: self.node_id.clone(),
            ..daemon.record.clone()
        };
        if let Err(error) = self
            .engine
            .update_owner(daemon.origin, self.sign(&halted), daemon.revision)
            .await
        {
            tracing::error!(origin = %origin_key(daemon.origin), %error, "the halt could not be recorded");
        }
        ClusterError::Halted {
            origin: daemon.origin,
            reason,
        }
    }

    /// The inputs after the snapshot a move recorded, counted in the
    /// stream (for the move's report; `None`, with a warning, when the
    /// count fails: the move itself is done).
    async fn inputs_waiting(&self, origin: u64) -> Option<u64> {
        let counted = match self.record(origin).await {
            Ok((record, _)) => {
                self.engine
                    .count_inputs_after(origin, record.snapshot.input_seq)
                    .await
            }
            Err(error) => Err(error),
        };
        counted
            .inspect_err(|error| {
                tracing::warn!(origin = %origin_key(origin), %error, "the inputs waiting at cutover could not be counted");
            })
            .ok()
    }

    /// Snapshots the daemon and records it by compare-and-set. Postponed
    /// (Ok, nothing written) while outputs an earlier owner appended are
    /// still being regenerated: a snapshot records the output stream's
    /// position, and the outputs not yet checked lie before it. With
    /// `handoff` (a planned move's new owner), the sealed snapshot is also
    /// handed to that node while it is stored.
    async fn snapshot(
        self: &Arc<Self>,
        daemon: &mut Running,
        handoff: Option<&str>,
    ) -> Result<(), ClusterError> {
        if !daemon.verify.is_empty() {
            return Ok(());
        }
        self.ensure_lease(daemon).await?;
        let state = self
            .runtime
            .snapshot(daemon.origin)
            .await
            .map_err(|error| ClusterError::Compute {
                origin: daemon.origin,
                reason: error.to_string(),
            })?
            .ok_or_else(|| ClusterError::Compute {
                origin: daemon.origin,
                reason: "the daemon returned no state".into(),
            })?;
        let payload = SnapshotPayload {
            seed: daemon.seed,
            kind: daemon.record.kind.clone(),
            kind_version: daemon.kind_version.clone(),
            state: Vec::from(state.to_bytes()),
        };
        let reference = self
            .seal_and_store(
                daemon.origin,
                daemon.epoch,
                daemon.applied,
                daemon.last_out,
                state.through_seq,
                &payload,
                handoff,
            )
            .await?;
        let previous = daemon.record.snapshot.object.clone();
        let record = OwnerRecord {
            snapshot: reference,
            kind_version: daemon.kind_version.clone(),
            writer: self.node_id.clone(),
            ..daemon.record.clone()
        };
        match self
            .engine
            .update_owner(daemon.origin, self.sign(&record), daemon.revision)
            .await?
        {
            Some(revision) => {
                // Off the critical path (a move waits for this snapshot):
                // the old object goes in the background (a failure leaves
                // garbage, never a gap); the inputs it covers go with the
                // trimmer's next round.
                if previous != record.snapshot.object {
                    let inner = Arc::clone(self);
                    tokio::spawn(async move { inner.engine.delete_snapshot(&previous).await });
                }
                daemon.snapshot_at = Instant::now();
                daemon.revision = revision;
                daemon.record = record;
                daemon.since_snapshot = 0;
                Ok(())
            }
            None => {
                self.engine.delete_snapshot(&record.snapshot.object).await;
                Err(ClusterError::Fenced {
                    origin: daemon.origin,
                    reason: "the snapshot's compare-and-set failed: another node changed the record".into(),
                })
            }
        }
    }

    /// The old owner's half of a planned move: stop after the input in
    /// flight (the caller is between inputs), snapshot, stop the instance,
    /// and give the record to `to` with the next epoch.
    async fn hand_over(
        self: &Arc<Self>,
        daemon: &mut Running,
        to: &str,
    ) -> Result<MigrationReport, ClusterError> {
        if daemon.applied != daemon.record.snapshot.input_seq || daemon.since_snapshot > 0 {
            self.snapshot(daemon, Some(to)).await?;
        }
        self.ensure_lease(daemon).await?;
        let _ = self.runtime.stop(daemon.origin).await;
        let moved = OwnerRecord {
            node: to.to_owned(),
            epoch: daemon.epoch + 1,
            moves: daemon.record.moves + 1,
            writer: self.node_id.clone(),
            ..daemon.record.clone()
        };
        match self
            .engine
            .update_owner(daemon.origin, self.sign(&moved), daemon.revision)
            .await?
        {
            Some(_) => Ok(MigrationReport {
                origin: daemon.origin,
                from: self.node_id.clone(),
                to: to.to_owned(),
                epoch: moved.epoch,
                pause_us: 0,
                snapshot_bytes: moved.snapshot.bytes,
                inputs_waiting: None,
                target_ready: false,
            }),
            None => Err(ClusterError::Fenced {
                origin: daemon.origin,
                reason: "the handover's compare-and-set failed".into(),
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct MoveRequest {
    origin: String,
    to: String,
}

#[derive(Serialize, Deserialize)]
enum MoveAnswer {
    Moved(MigrationReport),
    Refused(String),
}

fn decode_output(origin: u64, stored: &Stored) -> Result<Option<OutputEvent>, ClusterError> {
    match wire::decode::<OutputEntry>(&stored.payload) {
        Ok(OutputEntry::Output(event)) => Ok(Some(event)),
        Ok(OutputEntry::Claim { .. }) => Ok(None),
        Err(reason) => Err(ClusterError::BadSnapshot {
            origin,
            object: format!("output entry {}", stored.sequence),
            problem: format!("does not decode: {reason}"),
        }),
    }
}

fn output_event(event: &OutputEvent) -> CausalEvent {
    CausalEvent {
        link: CausalLink::from_bytes(&event.link),
        payload: Bytes::copy_from_slice(&event.payload),
        received_at: event.received_at,
    }
}

pub(crate) fn genesis_snapshot(identity: &Identity, state: Bytes) -> StateSnapshot {
    let origin = identity.origin_hash();
    StateSnapshot {
        entity_id: *identity.entity_id(),
        through_seq: 0,
        chain_link: CausalLink::genesis(origin),
        head_hash: CausalEvent {
            link: CausalLink::genesis(origin),
            payload: Bytes::new(),
            received_at: 0,
        }
        .hash(),
        horizon: ObservedHorizon::new(),
        state,
        created_at: unix_ms(),
    }
}

/// Compute keeps no output log (the output stream does) and takes no
/// automatic snapshots (the daemon task decides when).
fn host_config() -> DaemonHostConfig {
    DaemonHostConfig {
        auto_snapshot_interval: 0,
        max_log_entries: 0,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_start_is_refused_while_a_stopped_task_of_the_daemon_still_runs() {
        let stopped = StoppedTasks::default();
        let (release, released) = oneshot::channel::<()>();
        // Deep in a catch-up: ends only when released.
        stopped.park(
            7,
            tokio::spawn(async move {
                let _ = released.await;
            }),
        );
        stopped.park(7, tokio::spawn(async {}));
        stopped.park(8, tokio::spawn(async {}));
        let wait = Duration::from_millis(50);
        assert_eq!(stopped.await_ended(7, wait).await, Err(StillRunning));
        // Still kept: a second start is refused too, not let through
        // because the first wait took the handle.
        assert_eq!(stopped.await_ended(7, wait).await, Err(StillRunning));
        // Another daemon's ended task holds nothing up.
        assert_eq!(stopped.await_ended(8, wait).await, Ok(()));
        release.send(()).expect("the task waits for it");
        assert_eq!(stopped.await_ended(7, Duration::from_secs(10)).await, Ok(()));
        assert!(
            lock(&stopped.0).is_empty(),
            "nothing is kept once every task ended"
        );
    }

    #[test]
    fn the_trimmer_asks_only_what_its_last_round_cannot_answer() {
        let still_known = FirstInput::still_known;
        // Nothing kept, or kept for another snapshot: ask after the snapshot.
        assert_eq!(still_known(None, 10, 50), Err(11));
        assert_eq!(still_known(Some(&(9, FirstInput::At(12))), 10, 50), Err(11));
        assert_eq!(
            still_known(Some(&(9, FirstInput::NoneThrough(50))), 10, 50),
            Err(11)
        );
        // A first input found stays the first, however the stream grew.
        assert_eq!(still_known(Some(&(10, FirstInput::At(12))), 10, 90), Ok(Some(12)));
        // None through the last sequence: still none while nothing was
        // stored; once the stream grew, ask only after what was seen.
        assert_eq!(
            still_known(Some(&(10, FirstInput::NoneThrough(50))), 10, 50),
            Ok(None)
        );
        assert_eq!(
            still_known(Some(&(10, FirstInput::NoneThrough(50))), 10, 64),
            Err(51)
        );
        // A stream shorter than the answer (re-created): ask again from the
        // snapshot.
        assert_eq!(
            still_known(Some(&(10, FirstInput::NoneThrough(50))), 10, 40),
            Err(11)
        );
    }
}
