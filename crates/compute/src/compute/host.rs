//! One hosted instance: the daemon behind its mutex, together with the chain
//! head, the observed horizon, the output log, the statistics and the latest
//! snapshot. Everything that must be consistent with the daemon's state is
//! changed under that one mutex (guarantees G1, G2 and fences F5, F6).
//!
//! Invariants: the chain head never passes [`MAX_SEQUENCE`] (a restored
//! chain is checked before it gets here, and `deliver` refuses outputs that
//! would pass it); a stopped instance holds no daemon, output, horizon entry
//! or snapshot, because the runtime's read views may keep it for a while.
//!
//! This module never touches the runtime's tables and never takes a table
//! lock; the runtime removes an instance from its tables before calling
//! [`Instance::stop`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};

use super::{DaemonControl, DaemonHealth, DaemonHostConfig, DaemonStats, MeshDaemon};
use crate::causal::{
    CausalEvent, CausalLink, MAX_SEQUENCE, ObservedHorizon, genesis_hash, hash_link_and_payload,
};
use crate::core::DaemonError as CoreDaemonError;
use crate::identity::EntityId;
use crate::snapshot::StateSnapshot;

/// Where a daemon's chain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChainHead {
    pub(super) head: CausalLink,
    pub(super) head_hash: u64,
    pub(super) horizon: ObservedHorizon,
}

impl ChainHead {
    pub(super) fn genesis(origin_hash: u64) -> Self {
        Self {
            head: CausalLink::genesis(origin_hash),
            head_hash: genesis_hash(origin_hash),
            horizon: ObservedHorizon::new(),
        }
    }

    /// Where `snapshot` left the chain; takes its horizon, leaving the state
    /// bytes for the daemon's `restore`.
    pub(super) fn of_snapshot(snapshot: &mut StateSnapshot) -> Self {
        Self {
            head: snapshot.chain_link,
            head_hash: snapshot.head_hash,
            horizon: std::mem::take(&mut snapshot.horizon),
        }
    }
}

/// What a snapshot holds when the daemon returns no state.
#[derive(Clone, Copy)]
enum WhenNoState {
    /// Produce no snapshot (an explicit or automatic snapshot).
    Skip,
    /// Produce one with empty state, so that the chain head still carries
    /// over (the final snapshot of `stop_with_snapshot`).
    UseEmptyState,
}

/// The ring of an instance's most recent outputs. It grows lazily up to its
/// limit and never allocates after that.
struct OutputLog {
    events: VecDeque<CausalEvent>,
    limit: usize,
}

impl OutputLog {
    fn new(limit: usize) -> Self {
        Self {
            events: VecDeque::new(),
            limit,
        }
    }

    fn push(&mut self, event: &CausalEvent) {
        if self.limit == 0 {
            return;
        }
        if self.events.len() == self.limit {
            self.events.pop_front();
        } else if self.events.len() == self.events.capacity() {
            let grown = (self.events.capacity() * 2).clamp(4, self.limit);
            self.events.reserve_exact(grown - self.events.len());
        }
        self.events.push_back(event.clone());
    }

    /// Gives up every retained output (at stop); the log keeps nothing after.
    fn release(&mut self) -> VecDeque<CausalEvent> {
        self.limit = 0;
        std::mem::take(&mut self.events)
    }

    /// Retained outputs with sequence ≥ `from_seq`; `Stale(first retained)`
    /// if older outputs that existed were asked for.
    fn replay(&self, from_seq: u64, head_seq: u64) -> Result<Vec<CausalEvent>, CoreDaemonError> {
        let from_seq = from_seq.max(1);
        let first = head_seq + 1 - self.events.len() as u64;
        if from_seq < first && from_seq <= head_seq {
            return Err(CoreDaemonError::Stale(first));
        }
        Ok(self
            .events
            .iter()
            .filter(|event| event.link.sequence >= from_seq)
            .cloned()
            .collect())
    }
}

/// Everything guarded by an instance's mutex.
struct Host {
    /// The daemon while the instance runs; `None` once it is stopped. At stop
    /// the daemon, the output log, the horizon and the latest snapshot are
    /// all freed, even if a table's read view still holds the instance (see
    /// [`Released`]).
    daemon: Option<Box<dyn MeshDaemon>>,
    is_stateful: bool,
    auto_snapshot_interval: u64,
    chain: ChainHead,
    log: OutputLog,
    stats: DaemonStats,
    /// Boxed: most instances never take one, and inline it would triple the
    /// size of an idle daemon.
    latest_snapshot: Option<Box<StateSnapshot>>,
}

/// What an instance gives up when it stops. It is dropped after the
/// instance's lock is released: dropping the daemon or a payload can run
/// user code (a `Drop` of the daemon, or the owner of a `Bytes`).
struct Released {
    _daemon: Box<dyn MeshDaemon>,
    _log: VecDeque<CausalEvent>,
    _horizon: ObservedHorizon,
    _latest_snapshot: Option<Box<StateSnapshot>>,
}

/// One hosted run of a daemon under one identity.
///
/// Cache-line aligned, so that instances driven from different threads never
/// share a line (their reference counts and mutexes are written on every
/// delivery).
#[repr(align(64))]
pub(super) struct Instance {
    /// Distinguishes this run from every other run on the runtime, so that a
    /// rollback removes only its own table entries.
    pub(super) id: u64,
    pub(super) origin_hash: u64,
    pub(super) entity_id: EntityId,
    pub(super) kind: Arc<str>,
    pub(super) name: Arc<str>,
    /// Mirrors `host.daemon.is_none()` for lock-free readers of the tables.
    stopped: AtomicBool,
    host: Mutex<Host>,
}

impl Host {
    /// The daemon of a running instance.
    fn daemon(&mut self) -> &mut dyn MeshDaemon {
        self.daemon
            .as_deref_mut()
            .expect("only running instances are handed out by running_host")
    }
}

fn unix_millis_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    })
}

impl Instance {
    /// An instance of `daemon` (already restored, if it came from a snapshot)
    /// whose chain stands at `chain`.
    pub(super) fn new(
        id: u64,
        entity_id: EntityId,
        origin_hash: u64,
        kind: Arc<str>,
        daemon: Box<dyn MeshDaemon>,
        chain: ChainHead,
        config: &DaemonHostConfig,
    ) -> Self {
        let name = Arc::from(daemon.name());
        let is_stateful = daemon.is_stateful();
        Self {
            id,
            origin_hash,
            entity_id,
            kind,
            name,
            stopped: AtomicBool::new(false),
            host: Mutex::new(Host {
                daemon: Some(daemon),
                is_stateful,
                auto_snapshot_interval: config.auto_snapshot_interval,
                chain,
                log: OutputLog::new(config.max_log_entries),
                stats: DaemonStats::default(),
                latest_snapshot: None,
            }),
        }
    }

    /// Locks the host; `NotFound` once the instance is stopped (fence F5).
    fn running_host(&self) -> Result<MutexGuard<'_, Host>, CoreDaemonError> {
        let host = self.host.lock();
        if host.daemon.is_none() {
            return Err(CoreDaemonError::NotFound(self.origin_hash));
        }
        Ok(host)
    }

    /// Whether the instance has been stopped (read without its lock).
    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Processes `event` and extends the chain with its outputs (spec §4.2
    /// `deliver`). Allocates only the returned vector (none for no outputs).
    ///
    /// Outputs that would take the chain past [`MAX_SEQUENCE`] are refused
    /// as a whole with `SequenceExhausted` before anything but the daemon
    /// has changed.
    pub(super) fn deliver(&self, event: &CausalEvent) -> Result<Vec<CausalEvent>, CoreDaemonError> {
        let mut host = self.running_host()?;
        let host = &mut *host;
        let payloads = match host.daemon().process(event) {
            Ok(payloads) => payloads,
            Err(error) => {
                host.stats.errors += 1;
                return Err(error);
            }
        };
        let head = host.chain.head.sequence;
        let emitted = u64::try_from(payloads.len()).unwrap_or(u64::MAX);
        if head.checked_add(emitted).is_none_or(|last| last > MAX_SEQUENCE) {
            host.stats.errors += 1;
            return Err(CoreDaemonError::SequenceExhausted {
                origin_hash: self.origin_hash,
                head,
                outputs: emitted,
            });
        }
        host.chain
            .horizon
            .observe(event.link.origin_hash, event.link.sequence);
        let horizon_encoded = host.chain.horizon.encoded();
        let mut outputs = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let link = CausalLink {
                origin_hash: self.origin_hash,
                horizon_encoded,
                // At most `head + emitted`, checked above against the ceiling.
                sequence: host.chain.head.sequence + 1,
                parent_hash: host.chain.head_hash,
            };
            host.chain.head_hash = hash_link_and_payload(&link, &payload);
            host.chain.head = link;
            outputs.push(CausalEvent {
                link,
                payload,
                received_at: event.received_at,
            });
            host.log.push(outputs.last().expect("an output was just pushed"));
        }
        host.stats.events_processed += 1;
        host.stats.events_emitted += outputs.len() as u64;
        self.auto_snapshot(host);
        Ok(outputs)
    }

    /// Every `auto_snapshot_interval`-th successful `process` call keeps a
    /// snapshot; a stateful daemon that returns none counts an error.
    fn auto_snapshot(&self, host: &mut Host) {
        let interval = host.auto_snapshot_interval;
        if interval == 0 || !host.stats.events_processed.is_multiple_of(interval) {
            return;
        }
        if self.capture(host, WhenNoState::Skip).is_err() {
            host.stats.errors += 1;
        }
    }

    /// Builds a snapshot of `host` (fence F6: one mutex hold), counts it and
    /// keeps it as the latest; returns the kept snapshot, so that callers
    /// copy it only when they hand it out.
    fn capture<'h>(
        &self,
        host: &'h mut Host,
        when_no_state: WhenNoState,
    ) -> Result<Option<&'h StateSnapshot>, CoreDaemonError> {
        let state = match (host.daemon().snapshot(), when_no_state) {
            (Some(state), _) => state,
            (None, _) if host.is_stateful => {
                return Err(CoreDaemonError::SnapshotFailed(
                    "stateful daemon returned no state".to_owned(),
                ));
            }
            (None, WhenNoState::Skip) => return Ok(None),
            (None, WhenNoState::UseEmptyState) => bytes::Bytes::new(),
        };
        let snapshot = StateSnapshot {
            entity_id: self.entity_id,
            through_seq: host.chain.head.sequence,
            chain_link: host.chain.head,
            head_hash: host.chain.head_hash,
            horizon: host.chain.horizon.clone(),
            state,
            created_at: unix_millis_now(),
        };
        host.stats.snapshots_taken += 1;
        Ok(Some(&**host.latest_snapshot.insert(Box::new(snapshot))))
    }

    /// A snapshot now, or `None` for a stateless daemon without state.
    pub(super) fn snapshot(&self) -> Result<Option<StateSnapshot>, CoreDaemonError> {
        let mut host = self.running_host()?;
        Ok(self.capture(&mut host, WhenNoState::Skip)?.cloned())
    }

    /// Takes the final snapshot and, under the same mutex hold, runs
    /// `remove_from_tables` and stops the instance. If the snapshot fails the
    /// instance keeps running and nothing is removed.
    pub(super) fn stop_with_snapshot(
        &self,
        remove_from_tables: impl FnOnce(),
    ) -> Result<StateSnapshot, CoreDaemonError> {
        let mut host = self.running_host()?;
        self.capture(&mut host, WhenNoState::UseEmptyState)?;
        // The instance stops now, so its latest snapshot is handed out
        // rather than copied.
        let snapshot = *host
            .latest_snapshot
            .take()
            .expect("a final snapshot is produced whenever capture succeeds");
        remove_from_tables();
        let released = self.mark_stopped(&mut host);
        drop(host);
        drop(released);
        Ok(snapshot)
    }

    /// Waits for a running `process` to return, then stops the instance:
    /// `process` is never called on it again, and the daemon, output log,
    /// horizon and latest snapshot are freed (after the lock is released).
    /// Stopping twice is harmless.
    pub(super) fn stop(&self) {
        let mut host = self.host.lock();
        let released = self.mark_stopped(&mut host);
        drop(host);
        drop(released);
    }

    /// Tells the daemon `Stopping` and takes out of the host everything a
    /// stopped instance no longer needs; `None` if it was already stopped.
    /// Every stop path (`stop`, `stop_with_snapshot`, the shutdown sweep and
    /// a spawn's rollback) comes through here, so a stopped instance that
    /// lingers in a read view holds only its fixed-size fields.
    fn mark_stopped(&self, host: &mut Host) -> Option<Released> {
        let mut daemon = host.daemon.take()?;
        self.stopped.store(true, Ordering::Release);
        daemon.on_control(DaemonControl::Stopping);
        Some(Released {
            _daemon: daemon,
            _log: host.log.release(),
            _horizon: std::mem::take(&mut host.chain.horizon),
            _latest_snapshot: host.latest_snapshot.take(),
        })
    }

    pub(super) fn latest_snapshot(&self) -> Result<Option<StateSnapshot>, CoreDaemonError> {
        Ok(self.running_host()?.latest_snapshot.as_deref().cloned())
    }

    pub(super) fn replay(&self, from_seq: u64) -> Result<Vec<CausalEvent>, CoreDaemonError> {
        let host = self.running_host()?;
        host.log.replay(from_seq, host.chain.head.sequence)
    }

    pub(super) fn stats(&self) -> Result<DaemonStats, CoreDaemonError> {
        Ok(self.running_host()?.stats)
    }

    pub(super) fn head(&self) -> Result<CausalLink, CoreDaemonError> {
        Ok(self.running_host()?.chain.head)
    }

    pub(super) fn health(&self) -> Result<DaemonHealth, CoreDaemonError> {
        Ok(self.running_host()?.daemon().health())
    }

    /// The daemon's saturation clamped to `[0, 1]`; NaN reads as fully
    /// saturated, so that a broken report never looks idle.
    pub(super) fn saturation(&self) -> Result<f32, CoreDaemonError> {
        let reported = self.running_host()?.daemon().saturation();
        Ok(if reported.is_nan() {
            1.0
        } else {
            reported.clamp(0.0, 1.0)
        })
    }
}
