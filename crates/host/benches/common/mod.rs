//! Shared setup of the node benchmarks (spec/host.md §10): the counter
//! sample bundles (built once, serialized with the tests' builds by the
//! same lock file), a node on a temporary directory with bundle `counter`
//! installed, concurrent spawning and sending, and the small statistics the
//! harness binaries print.
//!
//! Every benchmark runs at full size under `cargo bench` (cargo passes
//! `--bench`) and at a smoke size otherwise (`cargo test --benches`), so
//! the benches can be compiled and run briefly without taking minutes.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each bench binary uses a different subset of these helpers"
)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_host::samples::{self, Sample, Samples};
use holdfast_host::{Node, NodeConfig};

/// Whether this is a measuring run (`cargo bench`) rather than a smoke run.
pub fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Says, on a smoke run, that its figures are not measurements.
pub fn announce(bench: &str) {
    if !measuring() {
        println!("{bench}: smoke size (not a measurement; `cargo bench` measures)");
    }
}

/// `full` under `cargo bench`, `smoke` otherwise.
pub fn size(full: usize, smoke: usize) -> usize {
    if measuring() { full } else { smoke }
}

/// The counter samples (v1 and v2), built on first use.
pub fn samples() -> &'static Samples {
    static BUILT: OnceLock<Samples> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("holdfast-samples");
        std::fs::create_dir_all(&target).expect("the samples directory can be created");
        let lock = std::fs::File::create(target.join(".lock")).expect("the samples lock file");
        lock.lock().expect("the samples lock");
        let built = samples::build(&[Sample::CounterV1, Sample::CounterV2], &target)
            .expect("the sample bundles build");
        lock.unlock().expect("the samples lock");
        built
    })
}

/// A root holding `data/` and `plugins/counter` (counter v1), removed
/// with this value when it made the root.
pub struct Dirs {
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Dirs {
    /// A new temporary root under `target/tmp` (on the disk a node's data
    /// would be on in this checkout, not on a tmpfs) with counter v1
    /// installed.
    pub fn new() -> Self {
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("holdfast-bench");
        std::fs::create_dir_all(&parent).expect("the bench directory can be created");
        let temp = tempfile::tempdir_in(parent).expect("a temporary directory");
        let dirs = Self {
            root: temp.path().to_owned(),
            _temp: Some(temp),
        };
        dirs.install(Sample::CounterV1);
        dirs
    }

    /// The root another process made with [`Dirs::new`]; not removed here.
    pub fn at(root: PathBuf) -> Self {
        Self { root, _temp: None }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Installs `sample` as the plugins directory's bundle `counter`.
    pub fn install(&self, sample: Sample) {
        samples()
            .install(sample, &self.plugins().join("counter"))
            .expect("the sample installs");
    }

    /// The node's defaults (spec/host.md §8) on these directories, except
    /// that the plugins directory is not scanned in the background (the
    /// reload benchmark reinstalls the bundle and reloads it itself).
    pub fn config(&self) -> NodeConfig {
        let mut config = NodeConfig::new(self.data());
        config.plugins_dir = Some(self.plugins());
        config.plugin_scan_interval = Duration::ZERO;
        config
    }
}

/// A multi-threaded Tokio runtime with one worker per core (two here).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the Tokio runtime builds")
}

/// Spawns `count` counter daemons from `tasks` concurrent tasks (so their
/// records share commits) and returns their origins.
pub async fn spawn_counters(node: &Node, count: usize, tasks: usize) -> Vec<String> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let node = node.clone();
        let share = count / tasks + usize::from(task < count % tasks);
        handles.push(tokio::spawn(async move {
            let mut origins = Vec::with_capacity(share);
            for _ in 0..share {
                let spawned = node
                    .spawn("counter", serde_json::Value::Null)
                    .await
                    .expect("a counter spawns");
                origins.push(spawned.origin);
            }
            origins
        }));
    }
    let mut origins = Vec::with_capacity(count);
    for handle in handles {
        origins.extend(handle.await.expect("a spawning task ends"));
    }
    origins
}

/// The 1 KiB event payload of the ingest and restart benchmarks.
pub fn payload() -> Bytes {
    Bytes::from((0..1024u32).map(|index| (index % 251) as u8).collect::<Vec<u8>>())
}

/// Sends `events` events of `payload` through `Node::send` from `senders`
/// concurrent tasks; sender `i` sends its `k`-th event to origin
/// `(i + k * senders) % origins.len()`, so every daemon gets its share.
/// Returns when every event is acknowledged (durable).
pub async fn send_events(node: &Node, origins: &[String], events: usize, senders: usize, payload: Bytes) {
    let origins: std::sync::Arc<[String]> = origins.into();
    let mut handles = Vec::new();
    for sender in 0..senders {
        let (node, origins, payload) = (node.clone(), std::sync::Arc::clone(&origins), payload.clone());
        handles.push(tokio::spawn(async move {
            let mut index = sender;
            while index < events {
                let origin = &origins[index % origins.len()];
                node.send(origin, payload.clone(), None)
                    .await
                    .expect("an event is accepted");
                index += senders;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a sending task ends");
    }
}

/// Whether every daemon has processed every event it accepted (as the
/// published views say, which are updated after each commit).
pub fn all_processed(node: &Node) -> bool {
    node.daemons(None, usize::MAX)
        .expect("listing from the start is never malformed")
        .iter()
        .all(|view| view.events_processed == view.through_seq)
}

/// Waits (polling every millisecond) until [`all_processed`].
pub async fn wait_all_processed(node: &Node, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !all_processed(node) {
        assert!(
            Instant::now() < deadline,
            "the daemons did not catch up in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A counter of the node's Prometheus text (`holdfast_<name>_total`).
pub fn counter(node: &Node, name: &str) -> u64 {
    let prefix = format!("holdfast_{name}_total ");
    node.metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("the metrics have no {prefix:?} line"))
}

/// Median, minimum and maximum of some measurements.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        assert!(!values.is_empty(), "a spread of no values");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = f.precision().unwrap_or(1);
        write!(
            f,
            "{:.digits$} (min {:.digits$}, max {:.digits$})",
            self.median, self.min, self.max
        )
    }
}

/// Milliseconds of `duration`.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
