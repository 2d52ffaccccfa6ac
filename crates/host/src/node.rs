//! [`Node`]: one process hosting daemons whose kinds come from plugin
//! bundles, with every accepted event journaled before it is acknowledged
//! (spec/host.md §1–§4, §8).
//!
//! The node owns the plugin runtime, the compute runtime, the database and
//! the engine thread (see [`crate::engine`]). Requests that change anything
//! go to the engine as commands and are answered after its commit; reads are
//! served from the views the engine publishes and from read transactions.
//! Reloads run on the caller's thread; the plugin runtime's reload events
//! close and open the [`ReloadGate`](crate::kind::ReloadGate), so no plugin
//! call overlaps a reload however the reload was started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use holdfast_compute::{DaemonRuntime, MeshBuilder};
use holdfast_plugin::Runtime;
use holdfast_plugin::error::RuntimeError;
use holdfast_plugin::manifest::ManifestData;
use holdfast_plugin_abi::{ReloadPhaseType, RuntimeConfig};
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::NodeConfig;
use crate::engine::{Command, Engine, origin_text};
use crate::error::{NodeError, RequestError};
use crate::kind::{KindRegistry, ReloadGate};
use crate::metrics::{KindLabel, Metrics};
use crate::store::{self, FORMAT_VERSION, Halt, Meta, OUTPUTS, OutputRecord};

/// A daemon's status as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonStatus {
    /// Processing its events.
    Running,
    /// Its kind is not provided by any loaded bundle; its events are
    /// journaled and it resumes when a bundle provides the kind again.
    WaitingForKind,
    /// Its replay after a restart differed from its stored outputs; it is
    /// stopped and its data kept.
    Nondeterministic,
}

impl DaemonStatus {
    /// The status as text (`running`, `waiting_for_kind`, `nondeterministic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::WaitingForKind => "waiting_for_kind",
            Self::Nondeterministic => "nondeterministic",
        }
    }
}

/// What the node shows of one daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaemonView {
    /// Its origin (16 hex digits), the name the API uses.
    pub origin: String,
    /// Its entity id (64 hex digits).
    pub entity_id: String,
    /// Its kind.
    pub kind: String,
    /// The `major.minor` of the code that runs it now (none while waiting).
    pub kind_version: Option<String>,
    /// Its status.
    pub status: DaemonStatus,
    /// Why it was halted, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halt: Option<Halt>,
    /// Input events processed (the input sequence processed through).
    pub events_processed: u64,
    /// Processed events whose daemon returned an error, since the node
    /// started.
    pub events_failed: u64,
    /// The last input sequence accepted.
    pub through_seq: u64,
    /// The input sequence its latest snapshot covers.
    pub snapshot_seq: u64,
    /// The sequence of its last output.
    pub chain_head: u64,
    /// Journaled events after its latest snapshot.
    pub journal_depth: u64,
}

/// A new daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spawned {
    /// Its origin.
    pub origin: String,
    /// Its entity id.
    pub entity_id: String,
    /// Its kind.
    pub kind: String,
    /// The `major.minor` of the code that runs it.
    pub kind_version: String,
}

/// One stored output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Output {
    /// Its sequence in the daemon's chain.
    pub seq: u64,
    /// The payload.
    #[serde(skip)]
    pub payload: Bytes,
    /// The payload, base64.
    pub payload_base64: String,
    /// The event hash (16 hex digits): links the next output to this one.
    pub hash: String,
    /// The hash of the output before it (16 hex digits).
    pub parent_hash: String,
}

/// One bundle as the node reports it.
#[derive(Clone, Debug, Serialize)]
pub struct BundleView {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The directory its code came from.
    pub dir: PathBuf,
    /// The daemon kinds it provides, with their `major.minor`.
    pub kinds: Vec<KindView>,
}

/// A daemon kind a bundle provides.
#[derive(Clone, Debug, Serialize)]
pub struct KindView {
    /// The kind.
    pub kind: String,
    /// Its `major.minor`.
    pub version: String,
}

/// One reload, for the history.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadReport {
    /// Unix ms when it ended.
    pub at: u64,
    /// The bundle.
    pub bundle: String,
    /// Its version before.
    pub from: String,
    /// Its version after (the same as `from` when rolled back).
    pub to: String,
    /// Daemons whose state was carried into the new code.
    pub daemons_carried: u32,
    /// How long daemons were paused, in microseconds.
    pub pause_us: u64,
    /// `reloaded` or `rolled_back`.
    pub outcome: String,
    /// Why it rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Facts about the node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    /// The node id (64 hex digits).
    pub node_id: String,
    /// The holdfast version of this binary.
    pub binary_version: &'static str,
    /// The storage format of its database.
    pub storage_format: u32,
    /// Seconds since the node opened.
    pub uptime_s: u64,
    /// Daemons hosted.
    pub daemons: usize,
    /// Daemons per status.
    pub by_status: BTreeMap<&'static str, usize>,
    /// Bundles loaded.
    pub bundles: usize,
    /// Events accepted since the node opened.
    pub events_accepted: u64,
    /// Events processed since the node opened.
    pub events_processed: u64,
}

/// State the engine publishes for readers.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) views: RwLock<BTreeMap<u64, DaemonView>>,
    pub(crate) metrics: Metrics,
    pub(crate) draining: AtomicBool,
    pub(crate) storage_failed: AtomicBool,
    /// Events handed to the engine and not answered yet (the engine waits
    /// for these to share a commit).
    pub(crate) submitting: std::sync::atomic::AtomicUsize,
}

/// What the reload-event callback records between `Preparing` and the end.
#[derive(Default)]
struct PauseClock {
    started: Option<Instant>,
    last: Option<Duration>,
}

/// The modification times of a bundle's library, manifest and signature
/// file.
type BundleStamp = [Option<SystemTime>; 3];

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    config: NodeConfig,
    meta: Meta,
    db: Arc<Database>,
    plugins: Arc<Runtime>,
    compute: DaemonRuntime,
    kinds: Arc<KindRegistry>,
    shared: Arc<Shared>,
    commands: Mutex<Option<Sender<Command>>>,
    engine: Mutex<Option<std::thread::JoinHandle<()>>>,
    opened: Instant,
    history: Mutex<Vec<ReloadReport>>,
    pause: Arc<Mutex<PauseClock>>,
    /// Bundle directories by name, and the library and manifest mtimes
    /// last seen.
    scanned: Mutex<BTreeMap<String, (PathBuf, BundleStamp)>>,
    /// One reload or scan at a time.
    reloading: Mutex<()>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        // Closing the channel ends the engine, which snapshots everything
        // it can; then the daemons are dropped before the plugin runtime.
        self.commands.lock().take();
        if let Some(engine) = self.engine.lock().take() {
            let _ = engine.join();
        }
    }
}

impl Node {
    /// Opens the node on `config.data_dir`: checks the storage format
    /// before anything else reads the database, loads the bundles of
    /// `config.plugins_dir`, restores every daemon from its snapshot and
    /// replays its journal. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// `InvalidConfig`, `TokenRequired`; `DataDir`, `InUse`, `NewerFormat`,
    /// `Corrupt` (nothing written); `Plugins` when the plugin runtime cannot
    /// be built. A bundle that fails to load is logged and skipped: its
    /// daemons wait for their kind.
    pub async fn open(config: NodeConfig) -> Result<Self, NodeError> {
        config.validate()?;
        let (db, meta) = store::open_database(&config.data_dir)?;
        let db = Arc::new(db);
        let gate = Arc::new(ReloadGate::default());
        let pause = Arc::new(Mutex::new(PauseClock::default()));
        let plugins = build_plugin_runtime(&config, Arc::clone(&gate), Arc::clone(&pause))?;
        let mesh = MeshBuilder::new("127.0.0.1:0", &meta.node_id)
            .map_err(|error| NodeError::Plugins(error.to_string()))?
            .build()
            .await
            .map_err(|error| NodeError::Plugins(error.to_string()))?;
        let compute = DaemonRuntime::new(Arc::new(mesh));
        compute
            .start()
            .await
            .map_err(|error| NodeError::Plugins(error.to_string()))?;
        let kinds = Arc::new(KindRegistry::new(
            Arc::clone(&plugins),
            compute.clone(),
            Arc::clone(&gate),
        ));
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = channel();
        let inner = Arc::new(NodeInner {
            config: config.clone(),
            meta,
            db: Arc::clone(&db),
            plugins,
            compute: compute.clone(),
            kinds: Arc::clone(&kinds),
            shared: Arc::clone(&shared),
            commands: Mutex::new(Some(sender)),
            engine: Mutex::new(None),
            opened: Instant::now(),
            history: Mutex::new(Vec::new()),
            pause,
            scanned: Mutex::new(BTreeMap::new()),
            reloading: Mutex::new(()),
        });
        let node = Self { inner };
        node.load_plugins_dir();
        let mut engine = Engine::new(
            config,
            db,
            compute,
            tokio::runtime::Handle::current(),
            gate,
            shared,
            receiver,
            kinds,
        );
        let (recovered_tx, recovered_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("holdfast-engine".into())
            .spawn(move || match engine.recover() {
                Ok(()) => {
                    let _ = recovered_tx.send(Ok(()));
                    engine.run();
                }
                Err(error) => drop(recovered_tx.send(Err(error))),
            })
            .map_err(|error| NodeError::Storage(error.to_string()))?;
        *node.inner.engine.lock() = Some(thread);
        recovered_rx
            .await
            .map_err(|_| NodeError::Storage("the engine stopped while recovering".into()))??;
        node.spawn_plugin_scanner();
        Ok(node)
    }

    /// The node id (64 hex digits).
    pub fn node_id(&self) -> String {
        store::encode_hex(&self.inner.meta.node_id)
    }

    /// The configuration the node was opened with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The plugin runtime (for tests and tools; reload through
    /// [`Node::reload_bundle`] to get a report).
    pub fn plugins(&self) -> &Arc<Runtime> {
        &self.inner.plugins
    }

    /// The compute runtime the node's daemons run in (cluster mode hosts
    /// its daemons there too).
    pub(crate) fn compute(&self) -> &DaemonRuntime {
        &self.inner.compute
    }

    /// The kinds the loaded bundles provide, registered with compute.
    pub(crate) fn kinds(&self) -> &Arc<KindRegistry> {
        &self.inner.kinds
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> Command,
    ) -> Result<T, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.send_command(command(reply))?;
        answer.await.map_err(|_| RequestError::Draining)?
    }

    fn send_command(&self, command: Command) -> Result<(), RequestError> {
        if self.inner.shared.draining.load(Ordering::Acquire) {
            return Err(RequestError::Draining);
        }
        let commands = self.inner.commands.lock();
        let sender = commands.as_ref().ok_or(RequestError::Draining)?;
        sender.send(command).map_err(|_| RequestError::Draining)
    }

    /// Spawns a daemon of `kind` with a fresh identity.
    ///
    /// # Errors
    /// `UnknownKind`, `TooManyDaemons`, `SpawnFailed`, `Draining`,
    /// `StorageUnavailable`.
    pub async fn spawn(&self, kind: &str, config: serde_json::Value) -> Result<Spawned, RequestError> {
        let kind = kind.to_owned();
        self.ask(|reply| Command::Spawn { kind, config, reply }).await
    }

    /// Journals `payload` for daemon `origin` and returns its input
    /// sequence once the journal entry is durable; the daemon processes it
    /// afterwards. With `key`, a repeat of an accepted key returns the
    /// first sequence and is not processed again (across restarts too).
    ///
    /// # Errors
    /// `Malformed` (origin or key), `UnknownDaemon`, `EventTooLarge`,
    /// `DaemonStopped`, `Draining`, `StorageUnavailable`.
    pub async fn send(&self, origin: &str, payload: Bytes, key: Option<Bytes>) -> Result<u64, RequestError> {
        let origin = parse_origin(origin)?;
        if let Some(key) = &key
            && (key.is_empty() || key.len() > store::MAX_IDEMPOTENCY_KEY)
        {
            return Err(RequestError::Malformed(format!(
                "an idempotency key is 1 to {} bytes",
                store::MAX_IDEMPOTENCY_KEY
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.inner.shared.submitting.fetch_add(1, Ordering::AcqRel);
        let sent = self.send_command(Command::Submit {
            origin,
            payload,
            key,
            reply,
        });
        if let Err(error) = sent {
            self.inner.shared.submitting.fetch_sub(1, Ordering::AcqRel);
            return Err(error);
        }
        answer.await.map_err(|_| RequestError::Draining)?
    }

    /// Stops `origin` and deletes its journal, snapshot and outputs.
    ///
    /// # Errors
    /// `Malformed`, `UnknownDaemon`, `Draining`, `StorageUnavailable`.
    pub async fn delete(&self, origin: &str) -> Result<(), RequestError> {
        let origin = parse_origin(origin)?;
        self.ask(|reply| Command::Delete { origin, reply }).await
    }

    /// One daemon.
    ///
    /// # Errors
    /// `Malformed`, `UnknownDaemon`.
    pub fn daemon(&self, origin: &str) -> Result<DaemonView, RequestError> {
        let key = parse_origin(origin)?;
        self.inner
            .shared
            .views
            .read()
            .get(&key)
            .cloned()
            .ok_or_else(|| RequestError::UnknownDaemon {
                origin: origin.to_owned(),
            })
    }

    /// Up to `limit` daemons in origin order, starting after `after`.
    ///
    /// # Errors
    /// `Malformed` for a bad `after`.
    pub fn daemons(&self, after: Option<&str>, limit: usize) -> Result<Vec<DaemonView>, RequestError> {
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(parse_origin(after)?),
            None => std::ops::Bound::Unbounded,
        };
        let views = self.inner.shared.views.read();
        Ok(views
            .range((start, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(_, view)| view.clone())
            .collect())
    }

    /// The number of daemons.
    pub fn daemon_count(&self) -> usize {
        self.inner.shared.views.read().len()
    }

    /// Up to `limit` stored outputs of `origin` from sequence `from`, in
    /// order. Outputs appear once the commit that processed their event is
    /// done; older ones than `output_retention` are gone.
    ///
    /// # Errors
    /// `Malformed`, `UnknownDaemon`, `StorageUnavailable`.
    pub fn outputs(&self, origin: &str, from: u64, limit: usize) -> Result<Vec<Output>, RequestError> {
        let key = parse_origin(origin)?;
        if !self.inner.shared.views.read().contains_key(&key) {
            return Err(RequestError::UnknownDaemon {
                origin: origin.to_owned(),
            });
        }
        let unavailable = |error: &dyn std::fmt::Display| RequestError::StorageUnavailable(error.to_string());
        let read = self.inner.db.begin_read().map_err(|error| unavailable(&error))?;
        let table = read.open_table(OUTPUTS).map_err(|error| unavailable(&error))?;
        let mut outputs = Vec::new();
        for row in table
            .range((key, from.max(1))..=(key, u64::MAX))
            .map_err(|error| unavailable(&error))?
            .take(limit)
        {
            let (row_key, value) = row.map_err(|error| unavailable(&error))?;
            let seq = row_key.value().1;
            let event = OutputRecord::decode(key, seq, value.value()).map_err(|error| unavailable(&error))?;
            outputs.push(Output {
                seq,
                payload_base64: base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &event.payload,
                ),
                hash: format!("{:016x}", event.hash()),
                parent_hash: format!("{:016x}", event.link.parent_hash),
                payload: event.payload,
            });
        }
        Ok(outputs)
    }

    /// Every loaded bundle with the daemon kinds it provides.
    pub fn bundles(&self) -> Vec<BundleView> {
        let kinds = self.inner.plugins.daemon_kinds();
        self.inner
            .plugins
            .bundles()
            .into_iter()
            .map(|bundle| BundleView {
                kinds: kinds
                    .iter()
                    .filter(|kind| kind.bundle == bundle.name)
                    .map(|kind| KindView {
                        kind: kind.kind.clone(),
                        version: format!("{}.{}", kind.version.major, kind.version.minor),
                    })
                    .collect(),
                version: bundle.version.to_string(),
                dir: bundle.dir,
                name: bundle.name,
            })
            .collect()
    }

    /// The reload history, oldest first.
    pub fn reload_history(&self) -> Vec<ReloadReport> {
        self.inner.history.lock().clone()
    }

    /// Node facts.
    pub fn info(&self) -> NodeInfo {
        let views = self.inner.shared.views.read();
        let mut by_status = BTreeMap::new();
        for view in views.values() {
            *by_status.entry(view.status.as_str()).or_insert(0) += 1;
        }
        NodeInfo {
            node_id: self.node_id(),
            binary_version: env!("CARGO_PKG_VERSION"),
            storage_format: FORMAT_VERSION,
            uptime_s: self.inner.opened.elapsed().as_secs(),
            daemons: views.len(),
            by_status,
            bundles: self.inner.plugins.bundles().len(),
            events_accepted: self.inner.shared.metrics.events_accepted.get(),
            events_processed: self.inner.shared.metrics.events_processed.get(),
        }
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        let metrics = &self.inner.shared.metrics;
        metrics.daemons.clear();
        for view in self.inner.shared.views.read().values() {
            metrics
                .daemons
                .get_or_create(&KindLabel {
                    kind: view.kind.clone(),
                    status: view.status.as_str().to_owned(),
                })
                .inc();
        }
        metrics.render()
    }

    /// Whether the node has stopped accepting requests.
    pub fn is_draining(&self) -> bool {
        self.inner.shared.draining.load(Ordering::Acquire)
    }

    /// Whether a commit failed (the node refuses writes until restarted).
    pub fn storage_failed(&self) -> bool {
        self.inner.shared.storage_failed.load(Ordering::Acquire)
    }

    /// Reloads bundle `name` from its directory (or, if it is not loaded
    /// yet, loads it from the plugins directory). Daemons of its kinds are
    /// paused only while the plugin runtime swaps the code and carries their
    /// state through the kind's state hooks; events keep being journaled
    /// meanwhile. A reload that fails for any daemon is rolled back
    /// completely and the old code keeps serving. Blocks; call it from a
    /// blocking context.
    ///
    /// # Errors
    /// `UnknownBundle`; `ReloadRolledBack` with the reason.
    pub fn reload_bundle(&self, name: &str) -> Result<ReloadReport, RequestError> {
        let _one_at_a_time = self.inner.reloading.lock();
        let loaded = self
            .inner
            .plugins
            .bundles()
            .into_iter()
            .find(|bundle| bundle.name == name);
        let Some(loaded) = loaded else {
            let dir = self
                .bundle_dir_in_plugins(name)
                .ok_or_else(|| RequestError::UnknownBundle {
                    name: name.to_owned(),
                })?;
            let report = self.load_new_bundle(name, &dir);
            self.remember_stamp(name);
            return report;
        };
        let report = self.reload_from(name, &loaded.dir.clone(), loaded.version.to_string());
        self.remember_stamp(name);
        report
    }

    /// Records bundle `name`'s files as seen, so the watcher does not
    /// reload what a request has just reloaded.
    fn remember_stamp(&self, name: &str) {
        if let Some((name, dir, stamp)) = self
            .plugin_bundles()
            .into_iter()
            .find(|(found, _, _)| found == name)
        {
            self.inner.scanned.lock().insert(name, (dir, stamp));
        }
    }

    /// [`Node::reload_bundle`] on a blocking thread, for async callers.
    ///
    /// # Errors
    /// As [`Node::reload_bundle`].
    pub async fn reload(&self, name: &str) -> Result<ReloadReport, RequestError> {
        let node = self.clone();
        let bundle = name.to_owned();
        tokio::task::spawn_blocking(move || node.reload_bundle(&bundle))
            .await
            .map_err(|_| RequestError::ReloadRolledBack {
                bundle: name.to_owned(),
                reason: "the reload task panicked".into(),
            })?
    }

    fn reload_from(&self, name: &str, dir: &Path, from: String) -> Result<ReloadReport, RequestError> {
        // Every daemon is snapshotted where it stands and paused first
        // (every kind: the reload may cascade to bundles that depend on
        // this one): after the reload, the new code continues from a
        // durable state, and a replay never feeds old events to new code.
        let kinds = self.all_kinds();
        if !kinds.is_empty() {
            self.block_on_engine(|reply| Command::Park { kinds, reply })
                .map_err(|error| RequestError::ReloadRolledBack {
                    bundle: name.to_owned(),
                    reason: format!("refused before it started: {error}"),
                })?;
        }
        self.inner.pause.lock().last = None;
        let outcome = self.inner.plugins.reload_bundle(dir);
        let pause = self.inner.pause.lock().last.unwrap_or_default();
        let _ = self.send_command(Command::Resume);
        let to = self
            .inner
            .plugins
            .bundles()
            .into_iter()
            .find(|bundle| bundle.name == name)
            .map_or_else(|| from.clone(), |bundle| bundle.version.to_string());
        let carried = self
            .inner
            .plugins
            .last_reload_stats()
            .map_or(0, |stats| stats.instances_migrated);
        let mut report = ReloadReport {
            at: store::unix_millis(),
            bundle: name.to_owned(),
            from,
            to,
            daemons_carried: 0,
            pause_us: u64::try_from(pause.as_micros()).unwrap_or(u64::MAX),
            outcome: "reloaded".into(),
            reason: None,
        };
        let result = match outcome {
            Ok(()) => {
                report.daemons_carried = carried;
                self.inner.shared.metrics.reloads.inc();
                tracing::info!(bundle = name, from = %report.from, to = %report.to, pause_us = report.pause_us, "reloaded");
                Ok(report.clone())
            }
            Err(error) => {
                let reason = describe_reload_error(&error);
                report.outcome = "rolled_back".into();
                report.to = report.from.clone();
                report.reason = Some(reason.clone());
                self.inner.shared.metrics.reloads_rolled_back.inc();
                tracing::warn!(bundle = name, %reason, "reload rolled back");
                Err(RequestError::ReloadRolledBack {
                    bundle: name.to_owned(),
                    reason,
                })
            }
        };
        self.inner.history.lock().push(report);
        result
    }

    fn load_new_bundle(&self, name: &str, dir: &Path) -> Result<ReloadReport, RequestError> {
        let outcome = self.inner.plugins.load_bundle(dir);
        let _ = self.send_command(Command::Resume);
        let mut report = ReloadReport {
            at: store::unix_millis(),
            bundle: name.to_owned(),
            from: "-".into(),
            to: "-".into(),
            daemons_carried: 0,
            pause_us: 0,
            outcome: "loaded".into(),
            reason: None,
        };
        let result = match outcome {
            Ok(_) => {
                report.to = self
                    .bundles()
                    .into_iter()
                    .find(|bundle| bundle.name == name)
                    .map_or_else(|| "-".into(), |bundle| bundle.version);
                Ok(report.clone())
            }
            Err(error) => {
                let reason = describe_reload_error(&error);
                report.outcome = "refused".into();
                report.reason = Some(reason.clone());
                Err(RequestError::ReloadRolledBack {
                    bundle: name.to_owned(),
                    reason,
                })
            }
        };
        self.inner.history.lock().push(report);
        result
    }

    /// Every daemon kind loaded bundles provide.
    fn all_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .inner
            .plugins
            .daemon_kinds()
            .into_iter()
            .map(|kind| kind.kind)
            .collect();
        kinds.dedup();
        kinds
    }

    fn block_on_engine(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), RequestError>>) -> Command,
    ) -> Result<(), RequestError> {
        let (reply, answer) = oneshot::channel();
        self.send_command(command(reply))?;
        answer.blocking_recv().map_err(|_| RequestError::Draining)?
    }

    /// The directory of bundle `name` in the plugins directory. Reads
    /// only: the watcher's record of what it has seen is not touched.
    fn bundle_dir_in_plugins(&self, name: &str) -> Option<PathBuf> {
        self.plugin_bundles()
            .into_iter()
            .find(|(found, _, _)| found == name)
            .map(|(_, dir, _)| dir)
    }

    /// Loads every bundle directory of the plugins directory; a bundle that
    /// fails is logged and skipped.
    fn load_plugins_dir(&self) {
        for (name, dir) in self.scan_plugins_dir() {
            match self.inner.plugins.load_bundle(&dir) {
                Ok(_) => tracing::info!(bundle = %name, dir = %dir.display(), "bundle loaded"),
                Err(error) => {
                    tracing::warn!(bundle = %name, dir = %dir.display(), error = %describe_reload_error(&error), "bundle not loaded")
                }
            }
        }
    }

    /// Every bundle directory of the plugins directory with a readable
    /// manifest: its name, directory and stamp, in directory order.
    fn plugin_bundles(&self) -> Vec<(String, PathBuf, BundleStamp)> {
        let Some(root) = &self.inner.config.plugins_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        dirs.sort();
        dirs.into_iter()
            .filter_map(|dir| {
                let manifest = ManifestData::from_dir(&dir).ok()?;
                // Every file: a bundle replaced file by file (its signature
                // last, say) is reloaded again once its last file lands.
                let stamp = manifest
                    .bundle_files()
                    .map(|path| std::fs::metadata(path).and_then(|meta| meta.modified()).ok());
                Some((manifest.name, dir, stamp))
            })
            .collect()
    }

    /// Reads the plugins directory; returns the bundles that are new or
    /// changed since the watcher last saw them, and records what it saw.
    fn scan_plugins_dir(&self) -> Vec<(String, PathBuf)> {
        let found = self.plugin_bundles();
        let mut scanned = self.inner.scanned.lock();
        let mut changed = Vec::new();
        for (name, dir, stamp) in found {
            let previous = scanned.insert(name.clone(), (dir.clone(), stamp));
            if previous.is_none_or(|(_, seen)| seen != stamp) {
                changed.push((name, dir));
            }
        }
        changed
    }

    /// Watches the plugins directory: a new bundle is loaded, a changed one
    /// reloaded. Holds the node weakly, so it ends with the node.
    fn spawn_plugin_scanner(&self) {
        let interval = self.inner.config.plugin_scan_interval;
        if self.inner.config.plugins_dir.is_none() || interval.is_zero() {
            return;
        }
        let weak: Weak<NodeInner> = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("holdfast-plugin-scan".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(inner) = weak.upgrade() else { return };
                    let node = Self { inner };
                    if node.is_draining() {
                        return;
                    }
                    for (name, _) in node.scan_plugins_dir() {
                        let _ = node.reload_bundle(&name);
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "the plugins directory is not watched");
        }
    }

    /// Stops accepting requests, lets in-flight events finish, snapshots
    /// every daemon and commits. Idempotent.
    ///
    /// # Errors
    /// `Storage` when the final commit failed (the journal still holds
    /// every acknowledged event).
    pub async fn drain(&self) -> Result<(), NodeError> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .inner
            .commands
            .lock()
            .as_ref()
            .is_some_and(|sender| sender.send(Command::Drain { reply }).is_ok());
        if sent {
            answer
                .await
                .map_err(|_| NodeError::Storage("the engine stopped before it drained".into()))??;
        }
        self.inner.shared.draining.store(true, Ordering::Release);
        self.inner.commands.lock().take();
        let engine = self.inner.engine.lock().take();
        if let Some(engine) = engine {
            tokio::task::spawn_blocking(move || engine.join())
                .await
                .map_err(|error| NodeError::Storage(error.to_string()))?
                .map_err(|_| NodeError::Storage("the engine panicked".into()))?;
        }
        let _ = self.inner.compute.shutdown().await;
        Ok(())
    }
}

fn build_plugin_runtime(
    config: &NodeConfig,
    gate: Arc<ReloadGate>,
    pause: Arc<Mutex<PauseClock>>,
) -> Result<Arc<Runtime>, NodeError> {
    Runtime::builder()
        .reload_time_limit(config.reload_pause_limit)
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            signature_policy: config.signature_policy,
            ..Default::default()
        })
        .trusted_keys(config.trusted_keys.clone())
        .on_reload(move |_, phase| match phase.phase_type {
            ReloadPhaseType::Preparing => {
                gate.close();
                pause.lock().started = Some(Instant::now());
            }
            ReloadPhaseType::Reloaded | ReloadPhaseType::Failed => {
                let mut clock = pause.lock();
                clock.last = clock.started.take().map(|started| started.elapsed());
                gate.open();
            }
            ReloadPhaseType::Unloading => {}
        })
        .build()
        .map_err(|error| NodeError::Plugins(error.to_string()))
}

/// The reason of a reload error: for a rollback, its cause (the rollback
/// itself is what `ReloadRolledBack` already says).
fn describe_reload_error(error: &RuntimeError) -> String {
    match error {
        RuntimeError::ReloadRolledBack { source, .. } => describe_reload_error(source),
        other => other.to_string(),
    }
}

/// Parses an origin (16 hex digits).
pub(crate) fn parse_origin(text: &str) -> Result<u64, RequestError> {
    if text.len() != 16 {
        return Err(RequestError::Malformed(format!(
            "an origin is 16 hex digits, not {:?}",
            text.chars().take(40).collect::<String>()
        )));
    }
    u64::from_str_radix(text, 16)
        .map_err(|_| RequestError::Malformed(format!("an origin is 16 hex digits, not {text:?}")))
        .and_then(|origin| {
            if origin_text(origin) == text.to_ascii_lowercase() {
                Ok(origin)
            } else {
                Err(RequestError::Malformed(format!(
                    "an origin is 16 hex digits, not {text:?}"
                )))
            }
        })
}
