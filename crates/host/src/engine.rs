//! The engine: the one thread that writes the database and calls daemons.
//!
//! Each turn of its loop gathers the commands that arrived (once an event
//! is in hand, it waits up to `group_commit_max_delay` for the events other
//! senders have submitted meanwhile: concurrent senders share commits, a
//! lone sender is not kept waiting), journals
//! accepted events, processes every journaled event it may (the reload gate
//! is open and the daemon's kind is present), takes due snapshots, and
//! writes all of it in **one** redb transaction. Only after that commit
//! returns are senders answered, so an acknowledged event is durable, and
//! its outputs and any snapshot that covers it are in the same atomic
//! commit or a later one (spec/host.md §4).
//!
//! Exactly once: a daemon's durable history is its latest snapshot plus the
//! journal after the snapshot's input sequence. Recovery restores the
//! snapshot and replays that journal; a replayed output that was stored
//! before the crash is compared with the stored one, and a daemon whose
//! replay differs is halted as `nondeterministic`, with the first differing
//! sequence, and its data kept.
//!
//! A failed commit leaves memory ahead of disk, so the engine refuses every
//! write after one (sticky) until the node restarts and recovers.
//!
//! The engine never serves reads: HTTP handlers read the database through
//! their own read transactions and the published [`DaemonView`]s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_compute::{
    CausalEvent, CausalLink, DaemonHostConfig, DaemonRuntime, Identity, ObservedHorizon, StateSnapshot,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use crate::config::NodeConfig;
use crate::error::{NodeError, RequestError};
use crate::kind::{KindRegistry, ReloadGate, fresh_state};
use crate::node::{DaemonStatus, DaemonView, Shared, Spawned};
use crate::store::{
    self, DAEMONS, DaemonRecord, Halt, IDEMPOTENCY, JOURNAL, JournalEntry, OUTPUTS, OutputRecord, SNAPSHOTS,
    SnapshotRecord,
};

/// The inbound origin the node gives client events (their sequence is the
/// input sequence), so a snapshot's horizon records the last input seen.
pub(crate) const INGRESS_ORIGIN: u64 = 0;

/// The most commands taken into one commit.
const MAX_BATCH: usize = 8192;

/// What the engine is asked to do.
pub(crate) enum Command {
    Submit {
        origin: u64,
        payload: Bytes,
        key: Option<Bytes>,
        reply: oneshot::Sender<Result<u64, RequestError>>,
    },
    Spawn {
        kind: String,
        config: serde_json::Value,
        reply: oneshot::Sender<Result<Spawned, RequestError>>,
    },
    Delete {
        origin: u64,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    /// Snapshot the daemons of `kinds` durably and stop processing them
    /// until the next `Resume` (a reload is about to remove those kinds).
    Park {
        kinds: Vec<String>,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    /// Plugins changed (a reload or a load ended): unpark, resume daemons
    /// whose kind is back, and mark those whose kind is gone as waiting.
    Resume,
    /// Snapshot every daemon, commit, and stop the engine.
    Drain {
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

/// A daemon's place in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Life {
    Running,
    /// Running, but not processed until `Resume` (a reload removes its kind).
    Parked,
    WaitingForKind,
    Halted(Halt),
}

/// Everything the engine keeps of one daemon.
struct Daemon {
    origin: u64,
    record: DaemonRecord,
    /// Derived once from the stored seed (an Ed25519 key derivation costs
    /// about 20 µs, too much to repeat per view or per restart step).
    identity: Identity,
    /// The entity id as the API shows it (64 hex digits).
    entity_id: String,
    life: Life,
    /// The last input sequence journaled (or being journaled now).
    last_input: u64,
    /// The last input sequence processed.
    processed: u64,
    /// Journaled, unprocessed events in sequence order.
    pending: VecDeque<(u64, JournalEntry)>,
    /// The input sequence the latest durable (or committing) snapshot covers.
    snapshot_input: u64,
    snapshot_at: Instant,
    /// The chain head: the last output sequence and its hash, as processed.
    head: CausalLink,
    /// Outputs at or below this sequence may be stored from before a
    /// restart: a regenerated one is compared with the stored one.
    verify_through: u64,
    idempotency: HashMap<Bytes, u64>,
    /// Remembered keys, oldest first, with when they were accepted (Unix ms).
    idempotency_order: VecDeque<(Bytes, u64)>,
    /// Events whose `process` failed (counted, not retried: a daemon is
    /// deterministic, so a replay fails the same way).
    errors: u64,
}

/// One commit's worth of writes, and the answers that wait for it.
#[derive(Default)]
struct Batch {
    journal: Vec<(u64, u64, Vec<u8>)>,
    keys: Vec<(u64, Bytes, u64, u64)>,
    forgotten_keys: Vec<(u64, Bytes)>,
    records: Vec<(u64, Vec<u8>)>,
    deletions: Vec<u64>,
    outputs: Vec<(u64, u64, Vec<u8>)>,
    /// origin, encoded snapshot, outputs to keep from (exclusive bound below).
    snapshots: Vec<(u64, Vec<u8>, u64)>,
    /// Durable commit needed (something acknowledged waits on it).
    durable: bool,
    /// Submitted events this batch answers after its commit.
    submitted: usize,
    replies: Vec<Reply>,
}

enum Reply {
    Submitted(oneshot::Sender<Result<u64, RequestError>>, u64),
    Spawned(oneshot::Sender<Result<Spawned, RequestError>>, Spawned),
    Deleted(oneshot::Sender<Result<(), RequestError>>),
    Parked(oneshot::Sender<Result<(), RequestError>>),
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.journal.is_empty()
            && self.records.is_empty()
            && self.deletions.is_empty()
            && self.outputs.is_empty()
            && self.snapshots.is_empty()
            && self.forgotten_keys.is_empty()
            && self.replies.is_empty()
    }
}

pub(crate) struct Engine {
    pub(crate) config: NodeConfig,
    pub(crate) db: Arc<Database>,
    pub(crate) compute: DaemonRuntime,
    pub(crate) tokio: tokio::runtime::Handle,
    pub(crate) gate: Arc<ReloadGate>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: Receiver<Command>,
    daemons: BTreeMap<u64, Daemon>,
    /// The kinds bundles provide, registered with compute.
    kinds: Arc<KindRegistry>,
    /// Each present kind's `major.minor`, as of the last `present_kinds`
    /// (refreshed at recovery, spawn and every `Resume` after a reload).
    kind_versions: HashMap<String, String>,
    /// Kinds whose bundle is being reloaded (between `Park` and `Resume`):
    /// daemons spawned meanwhile are parked too.
    parked_kinds: HashSet<String>,
    /// Set after a failed commit: every later write is refused.
    failed: Option<String>,
    /// Origins whose published view is out of date.
    dirty: Vec<u64>,
}

impl Engine {
    #[expect(
        clippy::too_many_arguments,
        reason = "the engine is wired once, by Node::open, from the node's parts"
    )]
    pub(crate) fn new(
        config: NodeConfig,
        db: Arc<Database>,
        compute: DaemonRuntime,
        tokio: tokio::runtime::Handle,
        gate: Arc<ReloadGate>,
        shared: Arc<Shared>,
        commands: Receiver<Command>,
        kinds: Arc<KindRegistry>,
    ) -> Self {
        Self {
            config,
            db,
            compute,
            tokio,
            gate,
            shared,
            commands,
            daemons: BTreeMap::new(),
            kinds,
            parked_kinds: HashSet::new(),
            kind_versions: HashMap::new(),
            failed: None,
            dirty: Vec::new(),
        }
    }

    // ---- recovery ----

    /// Loads every daemon with its snapshot and unprocessed journal, and
    /// starts those whose kind is present; the replay itself runs in the
    /// first turns of [`Engine::run`] (before any new event is processed,
    /// since a daemon processes its events in sequence order).
    ///
    /// # Errors
    /// `Corrupt` naming the record that cannot be read; nothing is written.
    pub(crate) fn recover(&mut self) -> Result<(), NodeError> {
        let path = store::database_path(&self.config.data_dir);
        let corrupt = |error: &dyn std::fmt::Display| store::corrupt(&path, error);
        let read = self.db.begin_read().map_err(|error| corrupt(&error))?;
        let records = read.open_table(DAEMONS).map_err(|error| corrupt(&error))?;
        let snapshots = read.open_table(SNAPSHOTS).map_err(|error| corrupt(&error))?;
        let journal = read.open_table(JOURNAL).map_err(|error| corrupt(&error))?;
        let outputs = read.open_table(OUTPUTS).map_err(|error| corrupt(&error))?;
        let keys = read.open_table(IDEMPOTENCY).map_err(|error| corrupt(&error))?;
        let mut stored = Vec::new();
        for row in records.iter().map_err(|error| corrupt(&error))? {
            let (origin, value) = row.map_err(|error| corrupt(&error))?;
            let origin = origin.value();
            let record = DaemonRecord::decode(origin, value.value()).map_err(|error| corrupt(&error))?;
            let seed = record.seed_bytes(origin).map_err(|error| corrupt(&error))?;
            stored.push((origin, record, seed));
        }
        let identities = derive_identities(&stored);
        let present = self.present_kinds();
        for ((origin, record, _), identity) in stored.into_iter().zip(identities) {
            if identity.origin_hash() != origin {
                return Err(corrupt(&format!(
                    "daemon {origin:016x}: its identity seed belongs to another origin"
                )));
            }
            let snapshot = match snapshots.get(origin).map_err(|error| corrupt(&error))? {
                Some(bytes) => {
                    Some(SnapshotRecord::decode(origin, bytes.value()).map_err(|error| corrupt(&error))?)
                }
                None => None,
            };
            let (snapshot_input, head) = snapshot
                .as_ref()
                .map_or((0, CausalLink::genesis(origin)), |record| {
                    (record.input_through, record.snapshot.chain_link)
                });
            let mut pending = VecDeque::new();
            let mut last_input = snapshot_input;
            let first_unsnapshotted = snapshot_input.checked_add(1).ok_or_else(|| {
                corrupt(&format!(
                    "daemon {origin:016x}: its snapshot covers input u64::MAX"
                ))
            })?;
            for row in journal
                .range((origin, first_unsnapshotted)..=(origin, u64::MAX))
                .map_err(|error| corrupt(&error))?
            {
                let (key, value) = row.map_err(|error| corrupt(&error))?;
                let (_, seq) = key.value();
                let entry =
                    JournalEntry::decode(origin, seq, value.value()).map_err(|error| corrupt(&error))?;
                if seq != last_input + 1 {
                    return Err(corrupt(&format!(
                        "daemon {origin:016x}: journal jumps from input {last_input} to {seq}"
                    )));
                }
                last_input = seq;
                pending.push_back((seq, entry));
            }
            let verify_through = outputs
                .range((origin, 0)..=(origin, u64::MAX))
                .map_err(|error| corrupt(&error))?
                .next_back()
                .transpose()
                .map_err(|error| corrupt(&error))?
                .map_or(0, |(key, _)| key.value().1);
            let mut idempotency = HashMap::new();
            let mut ordered = Vec::new();
            for row in keys
                .range((origin, [].as_slice())..)
                .map_err(|error| corrupt(&error))?
            {
                let (key, value) = row.map_err(|error| corrupt(&error))?;
                let (row_origin, key) = key.value();
                if row_origin != origin {
                    break;
                }
                let (seq, accepted_at) = value.value();
                let key = Bytes::copy_from_slice(key);
                idempotency.insert(key.clone(), seq);
                ordered.push((key, accepted_at, seq));
            }
            ordered.sort_by_key(|(_, _, seq)| *seq);
            let ordered: VecDeque<(Bytes, u64)> = ordered.into_iter().map(|(key, at, _)| (key, at)).collect();
            let life = match &record.halted {
                Some(halt) => Life::Halted(halt.clone()),
                None => Life::WaitingForKind,
            };
            let mut daemon = Daemon {
                origin,
                record,
                entity_id: store::encode_hex(identity.entity_id().as_bytes()),
                identity,
                life,
                last_input,
                processed: snapshot_input,
                pending,
                snapshot_input,
                snapshot_at: Instant::now(),
                head,
                verify_through,
                idempotency,
                idempotency_order: ordered,
                errors: 0,
            };
            if daemon.life == Life::WaitingForKind {
                self.start_daemon(&mut daemon, &present, snapshot.map(|record| record.snapshot));
            }
            self.dirty.push(origin);
            self.daemons.insert(origin, daemon);
        }
        drop((records, snapshots, journal, outputs, keys));
        self.publish_views();
        Ok(())
    }

    /// Starts `daemon` in compute from `snapshot` (genesis when `None`) if
    /// its kind is in `present`; otherwise it stays waiting. A restore that fails
    /// leaves it waiting too, with the reason logged.
    fn start_daemon(
        &mut self,
        daemon: &mut Daemon,
        present: &HashSet<String>,
        snapshot: Option<StateSnapshot>,
    ) {
        let kind = daemon.record.kind.clone();
        if !present.contains(&kind) {
            daemon.life = Life::WaitingForKind;
            return;
        }
        let identity = daemon.identity.clone();
        let snapshot = snapshot.unwrap_or_else(|| genesis_snapshot(&identity));
        let Some(_inside) = self.gate.try_enter() else {
            daemon.life = Life::WaitingForKind;
            return;
        };
        let spawned =
            self.tokio.block_on(
                self.compute
                    .spawn_from_snapshot(&kind, identity, snapshot, host_config()),
            );
        match spawned {
            Ok(_) => daemon.life = Life::Running,
            Err(error) => {
                tracing::warn!(origin = %origin_text(daemon.origin), %kind, %error, "daemon waits: its kind could not restore it");
                daemon.life = Life::WaitingForKind;
            }
        }
    }

    fn kind_is_present(&mut self, kind: &str) -> bool {
        self.present_kinds().contains(kind)
    }

    /// The kinds loaded bundles provide now, each registered with compute
    /// (see [`KindRegistry::present`]).
    fn present_kinds(&mut self) -> HashSet<String> {
        self.kind_versions = self.kinds.present();
        self.kind_versions.keys().cloned().collect()
    }

    // ---- the loop ----

    /// Runs until `Drain` or until every sender is gone.
    pub(crate) fn run(mut self) {
        loop {
            let mut batch = Batch::default();
            let mut drain = None;
            let wait = self.next_wait();
            match self.gather(&mut batch, wait) {
                Gathered::Drain(reply) => drain = Some(reply),
                Gathered::Disconnected => drain = Some(None),
                Gathered::Commands => {}
            }
            self.process_pending(&mut batch);
            self.take_due_snapshots(&mut batch, drain.is_some());
            self.commit(batch);
            self.publish_views();
            if let Some(reply) = drain {
                let outcome = match &self.failed {
                    Some(reason) => Err(NodeError::Storage(reason.clone())),
                    None => Ok(()),
                };
                self.shared.draining.store(true, Ordering::Release);
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
                return;
            }
        }
    }

    /// How long the loop may block: not at all while processable events
    /// wait, else until the next snapshot is due.
    fn next_wait(&self) -> Duration {
        let processable = self
            .daemons
            .values()
            .any(|daemon| daemon.life == Life::Running && !daemon.pending.is_empty());
        if self.gate_is_closed() {
            // A reload is running: nothing can be processed or snapshotted
            // until the `Resume` that follows it wakes the loop.
            return Duration::from_secs(1);
        }
        if processable {
            return Duration::ZERO;
        }
        let interval = self.config.snapshot_every;
        self.daemons
            .values()
            .filter(|daemon| daemon.life == Life::Running && daemon.processed > daemon.snapshot_input)
            .map(|daemon| interval.saturating_sub(daemon.snapshot_at.elapsed()))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1))
    }

    fn gate_is_closed(&self) -> bool {
        self.gate.try_enter().is_none()
    }

    fn gather(&mut self, batch: &mut Batch, wait: Duration) -> Gathered {
        let first = if wait.is_zero() {
            match self.commands.try_recv() {
                Ok(command) => Some(command),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Gathered::Disconnected,
            }
        } else {
            match self.commands.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Gathered::Disconnected,
            }
        };
        let Some(first) = first else {
            return Gathered::Commands;
        };
        let deadline = Instant::now() + self.config.group_commit_max_delay;
        let mut next = Some(first);
        let mut taken = 0;
        let mut events = 0;
        while let Some(command) = next.take() {
            taken += 1;
            if let Command::Drain { reply } = command {
                return Gathered::Drain(Some(reply));
            }
            if matches!(command, Command::Submit { .. }) {
                events += 1;
            }
            self.handle(command, batch);
            if taken >= MAX_BATCH {
                break;
            }
            // Wait (up to the delay) only for events that other senders
            // have already submitted: a lone sender is answered at once.
            let expect_more = events > 0 && self.shared.submitting.load(Ordering::Acquire) > batch.submitted;
            next = match self.commands.try_recv() {
                Ok(command) => Some(command),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Gathered::Disconnected,
                Err(std::sync::mpsc::TryRecvError::Empty) if expect_more => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        None
                    } else {
                        match self.commands.recv_timeout(left) {
                            Ok(command) => Some(command),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => return Gathered::Disconnected,
                        }
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
            };
        }
        Gathered::Commands
    }

    fn handle(&mut self, command: Command, batch: &mut Batch) {
        if let Some(reason) = &self.failed {
            let refused = RequestError::StorageUnavailable(reason.clone());
            match command {
                Command::Submit { reply, .. } => self.answer_submit(reply, Err(refused)),
                Command::Spawn { reply, .. } => drop(reply.send(Err(refused))),
                Command::Delete { reply, .. } | Command::Park { reply, .. } => drop(reply.send(Err(refused))),
                Command::Resume | Command::Drain { .. } => {}
            }
            return;
        }
        match command {
            Command::Submit {
                origin,
                payload,
                key,
                reply,
            } => match self.accept(origin, payload, key, batch) {
                Ok(seq) => {
                    batch.submitted += 1;
                    batch.replies.push(Reply::Submitted(reply, seq));
                }
                Err(error) => self.answer_submit(reply, Err(error)),
            },
            Command::Spawn { kind, config, reply } => match self.spawn(kind, config, batch) {
                Ok(spawned) => batch.replies.push(Reply::Spawned(reply, spawned)),
                Err(error) => drop(reply.send(Err(error))),
            },
            Command::Delete { origin, reply } => match self.delete(origin, batch) {
                Ok(()) => batch.replies.push(Reply::Deleted(reply)),
                Err(error) => drop(reply.send(Err(error))),
            },
            Command::Park { kinds, reply } => match self.park(&kinds, batch) {
                Ok(()) => batch.replies.push(Reply::Parked(reply)),
                Err(error) => drop(reply.send(Err(error))),
            },
            Command::Resume => self.resume(),
            Command::Drain { .. } => unreachable!("gather returns on Drain before handling it"),
        }
    }

    /// Answers one submitted event; it no longer counts as in flight.
    fn answer_submit(
        &self,
        reply: oneshot::Sender<Result<u64, RequestError>>,
        answer: Result<u64, RequestError>,
    ) {
        self.shared.submitting.fetch_sub(1, Ordering::AcqRel);
        let _ = reply.send(answer);
    }

    /// Journals one event: refuses unknown or halted daemons and oversized
    /// events; a repeated idempotency key returns the first sequence.
    fn accept(
        &mut self,
        origin: u64,
        payload: Bytes,
        key: Option<Bytes>,
        batch: &mut Batch,
    ) -> Result<u64, RequestError> {
        if payload.len() > self.config.max_event_bytes {
            return Err(RequestError::EventTooLarge {
                size: payload.len(),
                max: self.config.max_event_bytes,
            });
        }
        let window = self.config.idempotency_window;
        let keep = self.config.idempotency_keys;
        let daemon = self
            .daemons
            .get_mut(&origin)
            .ok_or_else(|| RequestError::UnknownDaemon {
                origin: origin_text(origin),
            })?;
        if let Some(key) = &key
            && let Some(&seq) = daemon.idempotency.get(key)
        {
            self.shared.metrics.duplicates.inc();
            return Ok(seq);
        }
        if let Life::Halted(halt) = &daemon.life {
            return Err(RequestError::DaemonStopped {
                origin: origin_text(origin),
                status: halt.status.clone(),
                reason: halt.reason.clone(),
            });
        }
        let seq = daemon.last_input + 1;
        let received_at = store::unix_millis();
        let entry = JournalEntry {
            received_at,
            key: key.clone(),
            payload,
        };
        batch.journal.push((origin, seq, entry.encode()));
        batch.durable = true;
        daemon.last_input = seq;
        daemon.pending.push_back((seq, entry));
        if let Some(key) = key {
            daemon.idempotency.insert(key.clone(), seq);
            daemon.idempotency_order.push_back((key.clone(), received_at));
            batch.keys.push((origin, key, seq, received_at));
            forget_old_keys(daemon, keep, window, batch);
        }
        self.shared.metrics.events_accepted.inc();
        self.dirty.push(origin);
        Ok(seq)
    }

    fn spawn(
        &mut self,
        kind: String,
        config: serde_json::Value,
        batch: &mut Batch,
    ) -> Result<Spawned, RequestError> {
        if self.daemons.len() >= self.config.max_daemons {
            return Err(RequestError::TooManyDaemons {
                max: self.config.max_daemons,
            });
        }
        if !self.kind_is_present(&kind) {
            return Err(RequestError::UnknownKind { kind });
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| RequestError::StorageUnavailable(error.to_string()))?;
        let identity = Identity::from_seed(seed);
        let origin = identity.origin_hash();
        if self.daemons.contains_key(&origin) {
            return Err(RequestError::SpawnFailed {
                kind,
                reason: "the random identity collided with a hosted daemon; retry".into(),
            });
        }
        let entity_id = store::encode_hex(identity.entity_id().as_bytes());
        let spawned = {
            let _inside = self.gate.try_enter().ok_or_else(|| RequestError::SpawnFailed {
                kind: kind.clone(),
                reason: "its bundle is being reloaded; retry".into(),
            })?;
            self.tokio.block_on(self.compute.spawn_from_snapshot(
                &kind,
                identity.clone(),
                genesis_snapshot(&identity),
                host_config(),
            ))
        };
        spawned.map_err(|error| RequestError::SpawnFailed {
            kind: kind.clone(),
            reason: error.to_string(),
        })?;
        let record = DaemonRecord {
            kind: kind.clone(),
            seed: store::encode_hex(&seed),
            config,
            created_at: store::unix_millis(),
            halted: None,
        };
        batch.records.push((origin, record.encode()));
        batch.durable = true;
        self.daemons.insert(
            origin,
            Daemon {
                origin,
                record,
                entity_id: entity_id.clone(),
                identity,
                life: if self.parked_kinds.contains(&kind) {
                    Life::Parked
                } else {
                    Life::Running
                },
                last_input: 0,
                processed: 0,
                pending: VecDeque::new(),
                snapshot_input: 0,
                snapshot_at: Instant::now(),
                head: CausalLink::genesis(origin),
                verify_through: 0,
                idempotency: HashMap::new(),
                idempotency_order: VecDeque::new(),
                errors: 0,
            },
        );
        self.dirty.push(origin);
        Ok(Spawned {
            origin: origin_text(origin),
            entity_id,
            kind_version: self.kind_versions.get(&kind).cloned().unwrap_or_default(),
            kind,
        })
    }

    fn delete(&mut self, origin: u64, batch: &mut Batch) -> Result<(), RequestError> {
        let daemon = self
            .daemons
            .remove(&origin)
            .ok_or_else(|| RequestError::UnknownDaemon {
                origin: origin_text(origin),
            })?;
        if matches!(daemon.life, Life::Running | Life::Parked) {
            let _inside = self.gate.try_enter();
            // Stopping drops the plugin instance; during a reload the
            // plugin runtime refuses that, so the instance is then left to
            // the runtime, which destroys it at shutdown.
            let _ = self.tokio.block_on(self.compute.stop(origin));
        }
        batch
            .forgotten_keys
            .extend(daemon.idempotency.into_keys().map(|key| (origin, key)));
        batch.deletions.push(origin);
        batch.durable = true;
        self.shared.views.write().remove(&origin);
        Ok(())
    }

    /// Processes what is pending, then makes the durable state of every
    /// running daemon of `kinds` equal to its state now (a snapshot where
    /// events were processed since the last one) and parks it. A reload
    /// follows: events the new code processes are then always after a
    /// durable snapshot, so a replay after a crash never runs an event
    /// through other code than the code that first processed it.
    fn park(&mut self, kinds: &[String], batch: &mut Batch) -> Result<(), RequestError> {
        self.process_pending(batch);
        let gate = Arc::clone(&self.gate);
        let inside = gate.try_enter();
        let origins: Vec<u64> = self
            .daemons
            .values()
            .filter(|daemon| daemon.life == Life::Running && kinds.contains(&daemon.record.kind))
            .map(|daemon| daemon.origin)
            .collect();
        for &origin in &origins {
            let behind = self
                .daemons
                .get(&origin)
                .is_some_and(|daemon| daemon.processed > daemon.snapshot_input);
            let snapshotted = match (behind, &inside) {
                (false, _) => Ok(()),
                (true, Some(_)) => self.snapshot_daemon(origin, batch),
                (true, None) => Err("another reload holds the gate".to_owned()),
            };
            // Fail closed: without a durable base, new code must not run.
            if let Err(reason) = snapshotted {
                for origin in &origins {
                    if let Some(daemon) = self.daemons.get_mut(origin)
                        && daemon.life == Life::Parked
                    {
                        daemon.life = Life::Running;
                    }
                }
                return Err(RequestError::SnapshotFailed {
                    origin: origin_text(origin),
                    reason,
                });
            }
            if let Some(daemon) = self.daemons.get_mut(&origin) {
                daemon.life = Life::Parked;
            }
        }
        self.parked_kinds.extend(kinds.iter().cloned());
        batch.durable = true;
        Ok(())
    }

    /// After plugins changed: daemons whose kind is present run (waiting
    /// ones are restored from their snapshot), the others wait.
    fn resume(&mut self) {
        self.parked_kinds.clear();
        let kinds = self.present_kinds();
        let origins: Vec<u64> = self.daemons.keys().copied().collect();
        for origin in origins {
            let Some(mut daemon) = self.daemons.remove(&origin) else {
                continue;
            };
            let present = kinds.contains(&daemon.record.kind);
            match (&daemon.life, present) {
                (Life::Parked, true) if self.instance_is_alive(origin) => daemon.life = Life::Running,
                (Life::Parked | Life::Running, true) if !self.instance_is_alive(origin) => {
                    // The reload dropped its instance (another major): start
                    // the present code from the parked snapshot.
                    self.lose_instance(&mut daemon);
                    if let Ok(snapshot) = self.read_snapshot(origin) {
                        self.start_daemon(&mut daemon, &kinds, snapshot.map(|record| record.snapshot));
                    }
                }
                (Life::Parked | Life::Running, false) => {
                    // Its instance went with the kind; the parked snapshot
                    // and the journal after it are its durable history.
                    self.lose_instance(&mut daemon);
                }
                (Life::WaitingForKind, true) => {
                    let snapshot = self.read_snapshot(origin);
                    match snapshot {
                        Ok(snapshot) => {
                            self.start_daemon(&mut daemon, &kinds, snapshot.map(|record| record.snapshot))
                        }
                        Err(error) => {
                            tracing::error!(origin = %origin_text(origin), %error, "snapshot unreadable")
                        }
                    }
                }
                _ => {}
            }
            self.dirty.push(origin);
            self.daemons.insert(origin, daemon);
        }
    }

    /// Puts back into `pending` the journaled events after the daemon's
    /// durable snapshot, for a daemon whose in-memory state is gone, and
    /// moves its chain head back to the snapshot's: outputs up to the old
    /// head are (or are about to be) stored, so their regeneration is
    /// checked against them.
    ///
    /// # Errors
    /// A storage or decoding failure; the caller stops writing.
    fn rewind_to_snapshot(&self, daemon: &mut Daemon) -> Result<(), String> {
        let read = self.db.begin_read().map_err(|error| error.to_string())?;
        let journal = read.open_table(JOURNAL).map_err(|error| error.to_string())?;
        let first = daemon.snapshot_input.saturating_add(1);
        let mut pending = VecDeque::new();
        for row in journal
            .range((daemon.origin, first)..=(daemon.origin, u64::MAX))
            .map_err(|error| error.to_string())?
        {
            let (key, value) = row.map_err(|error| error.to_string())?;
            let (_, seq) = key.value();
            let entry =
                JournalEntry::decode(daemon.origin, seq, value.value()).map_err(|error| error.to_string())?;
            pending.push_back((seq, entry));
        }
        // Events journaled in this very turn are not readable yet.
        let durable_through = pending.back().map_or(daemon.snapshot_input, |(seq, _)| *seq);
        pending.extend(daemon.pending.drain(..).filter(|(seq, _)| *seq > durable_through));
        daemon.pending = pending;
        daemon.processed = daemon.snapshot_input;
        daemon.verify_through = daemon.verify_through.max(daemon.head.sequence);
        daemon.head = self
            .read_snapshot(daemon.origin)?
            .map_or(CausalLink::genesis(daemon.origin), |record| {
                record.snapshot.chain_link
            });
        Ok(())
    }

    /// Stops a daemon whose plugin instance is gone and puts it back to its
    /// durable state, waiting; a storage failure stops all writing.
    fn lose_instance(&mut self, daemon: &mut Daemon) {
        let _ = self.tokio.block_on(self.compute.stop(daemon.origin));
        daemon.life = Life::WaitingForKind;
        if let Err(reason) = self.rewind_to_snapshot(daemon) {
            tracing::error!(origin = %origin_text(daemon.origin), %reason, "rewinding a daemon failed; the node refuses writes");
            self.failed = Some(reason);
            self.shared.storage_failed.store(true, Ordering::Release);
        }
    }

    /// Whether the daemon's plugin instance still answers (a reload that
    /// changed its contract's major drops it).
    fn instance_is_alive(&self, origin: u64) -> bool {
        self.compute
            .handle(origin)
            .and_then(|handle| handle.health().ok())
            .is_some_and(|health| health != holdfast_compute::DaemonHealth::Unhealthy)
    }

    fn read_snapshot(&self, origin: u64) -> Result<Option<SnapshotRecord>, String> {
        let read = self.db.begin_read().map_err(|error| error.to_string())?;
        let table = read.open_table(SNAPSHOTS).map_err(|error| error.to_string())?;
        let value = table.get(origin).map_err(|error| error.to_string())?;
        value
            .map(|value| SnapshotRecord::decode(origin, value.value()).map_err(|error| error.to_string()))
            .transpose()
    }

    // ---- processing ----

    fn process_pending(&mut self, batch: &mut Batch) {
        if self.failed.is_some() {
            return;
        }
        let gate = Arc::clone(&self.gate);
        let Some(_inside) = gate.try_enter() else {
            return;
        };
        let busy: Vec<u64> = self
            .daemons
            .values()
            .filter(|daemon| daemon.life == Life::Running && !daemon.pending.is_empty())
            .map(|daemon| daemon.origin)
            .collect();
        if busy.is_empty() {
            return;
        }
        let read = self.db.begin_read().ok();
        let stored = read.as_ref().and_then(|read| read.open_table(OUTPUTS).ok());
        for origin in busy {
            let Some(mut daemon) = self.daemons.remove(&origin) else {
                continue;
            };
            if self.process_daemon(&mut daemon, stored.as_ref(), batch) == Processed::InstanceLost {
                self.lose_instance(&mut daemon);
            }
            self.daemons.insert(origin, daemon);
            let due = self.daemons.get(&origin).is_some_and(|daemon| {
                daemon.life == Life::Running
                    && self.config.snapshot_every_events > 0
                    && daemon.processed - daemon.snapshot_input >= self.config.snapshot_every_events
            });
            if due {
                let _ = self.snapshot_daemon(origin, batch);
            }
            self.dirty.push(origin);
        }
    }

    /// Processes the daemon's pending events in order. Returns
    /// `InstanceLost` (with the failed event put back) when its plugin
    /// instance no longer answers: that is not the daemon's failure, so
    /// the event is not counted as processed.
    fn process_daemon(
        &self,
        daemon: &mut Daemon,
        stored: Option<&redb::ReadOnlyTable<(u64, u64), &[u8]>>,
        batch: &mut Batch,
    ) -> Processed {
        while let Some((seq, entry)) = daemon.pending.pop_front() {
            let event = CausalEvent {
                link: CausalLink {
                    origin_hash: INGRESS_ORIGIN,
                    horizon_encoded: 0,
                    sequence: seq,
                    parent_hash: 0,
                },
                payload: entry.payload.clone(),
                received_at: entry.received_at,
            };
            match self.compute.deliver(daemon.origin, &event) {
                Ok(outputs) => {
                    for output in outputs {
                        if let Some(halt) = self.verify_replayed(daemon, &output, stored) {
                            tracing::error!(origin = %origin_text(daemon.origin), reason = %halt.reason, "daemon halted");
                            self.halt(daemon, halt, batch);
                            daemon.pending.push_front((seq, entry));
                            return Processed::Halted;
                        }
                        daemon.head = output.link;
                        batch.outputs.push((
                            daemon.origin,
                            output.link.sequence,
                            OutputRecord::encode(&output),
                        ));
                    }
                }
                Err(error) => {
                    if !self.instance_is_alive(daemon.origin) {
                        tracing::warn!(origin = %origin_text(daemon.origin), seq, %error, "the daemon's instance is gone; it waits");
                        daemon.pending.push_front((seq, entry));
                        return Processed::InstanceLost;
                    }
                    daemon.errors += 1;
                    self.shared.metrics.process_errors.inc();
                    tracing::warn!(origin = %origin_text(daemon.origin), seq, %error, "an event failed in its daemon");
                }
            }
            daemon.processed = seq;
            self.shared.metrics.events_processed.inc();
        }
        Processed::All
    }

    /// Compares a regenerated output with the one stored before a restart.
    fn verify_replayed(
        &self,
        daemon: &Daemon,
        output: &CausalEvent,
        stored: Option<&redb::ReadOnlyTable<(u64, u64), &[u8]>>,
    ) -> Option<Halt> {
        let seq = output.link.sequence;
        if seq > daemon.verify_through {
            return None;
        }
        let stored = stored?.get((daemon.origin, seq)).ok().flatten()?;
        let matches = OutputRecord::decode(daemon.origin, seq, stored.value())
            .is_ok_and(|held| held.link == output.link && held.payload == output.payload);
        (!matches).then(|| Halt {
            status: DaemonStatus::Nondeterministic.as_str().to_owned(),
            first_differing_seq: Some(seq),
            reason: format!(
                "replaying the journal produced a different output at sequence {seq}; daemons must be \
                 deterministic in (state, event)"
            ),
        })
    }

    fn halt(&self, daemon: &mut Daemon, halt: Halt, batch: &mut Batch) {
        let _ = self.tokio.block_on(self.compute.stop(daemon.origin));
        daemon.record.halted = Some(halt.clone());
        daemon.life = Life::Halted(halt);
        batch.records.push((daemon.origin, daemon.record.encode()));
        batch.durable = true;
    }

    fn take_due_snapshots(&mut self, batch: &mut Batch, everyone: bool) {
        if self.failed.is_some() {
            return;
        }
        let interval = self.config.snapshot_every;
        let due: Vec<u64> = self
            .daemons
            .values()
            .filter(|daemon| daemon.life == Life::Running && daemon.processed > daemon.snapshot_input)
            .filter(|daemon| everyone || daemon.snapshot_at.elapsed() >= interval)
            .map(|daemon| daemon.origin)
            .collect();
        if due.is_empty() {
            return;
        }
        let gate = Arc::clone(&self.gate);
        let Some(_inside) = gate.try_enter() else {
            return;
        };
        for origin in due {
            let _ = self.snapshot_daemon(origin, batch);
        }
    }

    /// Snapshots one running daemon into `batch`; the journal at or below
    /// its input sequence is deleted in the same commit.
    fn snapshot_daemon(&mut self, origin: u64, batch: &mut Batch) -> Result<(), String> {
        let Some(daemon) = self.daemons.get_mut(&origin) else {
            return Ok(());
        };
        let snapshot = match self.tokio.block_on(self.compute.snapshot(origin)) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Err("the daemon returned no state".into()),
            Err(error) => {
                tracing::warn!(origin = %origin_text(origin), %error, "snapshot failed; the journal keeps the events");
                // Tried again an interval later, not on every turn.
                daemon.snapshot_at = Instant::now();
                return Err(error.to_string());
            }
        };
        let record = SnapshotRecord {
            input_through: daemon.processed,
            snapshot,
        };
        let encoded = record.encode();
        self.shared.metrics.snapshot_bytes.inc_by(encoded.len() as u64);
        let keep_outputs_from = record
            .snapshot
            .through_seq
            .saturating_sub(self.config.output_retention)
            .saturating_add(1);
        batch.snapshots.push((origin, encoded, keep_outputs_from));
        batch.durable = true;
        daemon.snapshot_input = daemon.processed;
        daemon.snapshot_at = Instant::now();
        self.dirty.push(origin);
        Ok(())
    }

    // ---- the commit ----

    fn commit(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let durable = batch.durable;
        let outcome = write_batch(&self.db, &batch, &self.daemons, durable);
        match outcome {
            Ok(()) => {
                self.shared.metrics.commits.inc();
                for reply in batch.replies {
                    match reply {
                        Reply::Submitted(reply, seq) => self.answer_submit(reply, Ok(seq)),
                        Reply::Spawned(reply, spawned) => drop(reply.send(Ok(spawned))),
                        Reply::Deleted(reply) | Reply::Parked(reply) => drop(reply.send(Ok(()))),
                    }
                }
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(%reason, "a commit failed; the node refuses writes until it restarts");
                self.failed = Some(reason.clone());
                self.shared.storage_failed.store(true, Ordering::Release);
                let refused = || RequestError::StorageUnavailable(reason.clone());
                for reply in batch.replies {
                    match reply {
                        Reply::Submitted(reply, _) => self.answer_submit(reply, Err(refused())),
                        Reply::Spawned(reply, _) => drop(reply.send(Err(refused()))),
                        Reply::Deleted(reply) | Reply::Parked(reply) => drop(reply.send(Err(refused()))),
                    }
                }
            }
        }
    }

    // ---- views ----

    fn publish_views(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut views = self.shared.views.write();
        for origin in dirty {
            let Some(daemon) = self.daemons.get(&origin) else {
                views.remove(&origin);
                continue;
            };
            let status = match &daemon.life {
                Life::Running | Life::Parked => DaemonStatus::Running,
                Life::WaitingForKind => DaemonStatus::WaitingForKind,
                Life::Halted(_) => DaemonStatus::Nondeterministic,
            };
            views.insert(
                origin,
                DaemonView {
                    origin: origin_text(origin),
                    entity_id: daemon.entity_id.clone(),
                    kind: daemon.record.kind.clone(),
                    kind_version: self.kind_versions.get(&daemon.record.kind).cloned(),
                    status,
                    halt: daemon.record.halted.clone(),
                    events_processed: daemon.processed,
                    events_failed: daemon.errors,
                    through_seq: daemon.last_input,
                    snapshot_seq: daemon.snapshot_input,
                    chain_head: daemon.head.sequence,
                    journal_depth: daemon.last_input - daemon.snapshot_input,
                },
            );
        }
        self.shared.metrics.journal_depth.set(
            self.daemons
                .values()
                .map(|daemon| (daemon.last_input - daemon.snapshot_input) as i64)
                .sum(),
        );
    }
}

/// How far [`Engine::process_daemon`] got.
#[derive(Debug, PartialEq, Eq)]
enum Processed {
    All,
    Halted,
    InstanceLost,
}

enum Gathered {
    Commands,
    Drain(Option<oneshot::Sender<Result<(), NodeError>>>),
    Disconnected,
}

/// The identity of each stored daemon, derived on every core: an Ed25519
/// key derivation is most of what a restart of many daemons costs.
fn derive_identities(stored: &[(u64, DaemonRecord, [u8; 32])]) -> Vec<Identity> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = stored.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = stored
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, _, seed)| Identity::from_seed(*seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("deriving an identity does not panic"))
            .collect()
    })
}

/// Forgets a daemon's oldest idempotency keys once it remembers more than
/// `keep` and the oldest is older than `window`.
fn forget_old_keys(daemon: &mut Daemon, keep: usize, window: Duration, batch: &mut Batch) {
    let horizon = store::unix_millis().saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
    while daemon.idempotency_order.len() > keep {
        let Some((key, accepted_at)) = daemon.idempotency_order.front() else {
            break;
        };
        if *accepted_at > horizon {
            break;
        }
        daemon.idempotency.remove(key);
        batch.forgotten_keys.push((daemon.origin, key.clone()));
        daemon.idempotency_order.pop_front();
    }
}

fn write_batch(
    db: &Database,
    batch: &Batch,
    daemons: &BTreeMap<u64, Daemon>,
    durable: bool,
) -> Result<(), redb::Error> {
    let mut write = db.begin_write()?;
    if !durable {
        write.set_durability(Durability::None)?;
    }
    {
        let mut journal = write.open_table(JOURNAL)?;
        for (origin, seq, bytes) in &batch.journal {
            journal.insert((*origin, *seq), bytes.as_slice())?;
        }
        let mut keys = write.open_table(IDEMPOTENCY)?;
        // Forgotten first: a key forgotten and accepted again in the same
        // batch must stay remembered.
        for (origin, key) in &batch.forgotten_keys {
            keys.remove((*origin, key.as_ref()))?;
        }
        for (origin, key, seq, at) in &batch.keys {
            keys.insert((*origin, key.as_ref()), (*seq, *at))?;
        }
        let mut records = write.open_table(DAEMONS)?;
        for (origin, bytes) in &batch.records {
            if daemons.contains_key(origin) {
                records.insert(*origin, bytes.as_slice())?;
            }
        }
        let mut outputs = write.open_table(OUTPUTS)?;
        for (origin, seq, bytes) in &batch.outputs {
            if daemons.contains_key(origin) {
                outputs.insert((*origin, *seq), bytes.as_slice())?;
            }
        }
        let mut snapshots = write.open_table(SNAPSHOTS)?;
        for (origin, bytes, keep_outputs_from) in &batch.snapshots {
            if !daemons.contains_key(origin) {
                continue;
            }
            snapshots.insert(*origin, bytes.as_slice())?;
            let input_through = u64::from_le_bytes(
                bytes[..8]
                    .try_into()
                    .expect("a snapshot record starts with 8 bytes"),
            );
            journal.retain_in((*origin, 0)..=(*origin, input_through), |_, _| false)?;
            outputs.retain_in((*origin, 0)..(*origin, *keep_outputs_from), |_, _| false)?;
        }
        for origin in &batch.deletions {
            records.remove(*origin)?;
            snapshots.remove(*origin)?;
            journal.retain_in((*origin, 0)..=(*origin, u64::MAX), |_, _| false)?;
            outputs.retain_in((*origin, 0)..=(*origin, u64::MAX), |_, _| false)?;
        }
    }
    write.commit()?;
    Ok(())
}

/// The snapshot a new daemon is spawned from: genesis chain, fresh state.
fn genesis_snapshot(identity: &Identity) -> StateSnapshot {
    let origin = identity.origin_hash();
    StateSnapshot {
        entity_id: *identity.entity_id(),
        through_seq: 0,
        chain_link: CausalLink::genesis(origin),
        head_hash: genesis_event(origin).hash(),
        horizon: ObservedHorizon::new(),
        state: fresh_state(),
        created_at: store::unix_millis(),
    }
}

/// The genesis event of `origin`: its hash is the chain's starting parent.
fn genesis_event(origin: u64) -> CausalEvent {
    CausalEvent {
        link: CausalLink::genesis(origin),
        payload: Bytes::new(),
        received_at: 0,
    }
}

/// Compute keeps no output log (the node stores outputs) and takes no
/// automatic snapshots (the engine decides when).
fn host_config() -> DaemonHostConfig {
    DaemonHostConfig {
        auto_snapshot_interval: 0,
        max_log_entries: 0,
    }
}

/// An origin as the API shows it: 16 lower-case hex digits.
pub(crate) fn origin_text(origin: u64) -> String {
    format!("{origin:016x}")
}
