//! Shared setup of the node tests: the sample bundles (built once per
//! process, serialized across test binaries by a lock file) and a node on a
//! temporary directory.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use holdfast_host::samples::{self, Sample, Samples};
use holdfast_host::{Node, NodeConfig};

/// The samples, built on first use.
pub fn samples() -> &'static Samples {
    static BUILT: OnceLock<Samples> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixture-target"); // shared with the plugin and CLI tests: one build of the fixtures
        std::fs::create_dir_all(&target).unwrap();
        let lock = std::fs::File::create(target.join(".lock")).unwrap();
        lock.lock().expect("the samples lock");
        let built = samples::build(&Sample::ALL, &target).expect("the sample bundles build");
        lock.unlock().expect("the samples lock");
        built
    })
}

/// A data directory and a plugins directory with `bundles` installed.
pub struct Dirs {
    pub root: tempfile::TempDir,
}

impl Dirs {
    pub fn new(bundles: &[(Sample, &str)]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dirs = Self { root };
        for (sample, name) in bundles {
            dirs.install(*sample, name);
        }
        dirs
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn plugins(&self) -> PathBuf {
        self.root.path().join("plugins")
    }

    /// Installs `sample` as the plugins directory's bundle `name`.
    pub fn install(&self, sample: Sample, name: &str) {
        let dest = self.plugins().join(name);
        let _ = std::fs::remove_dir_all(&dest);
        samples().install(sample, &dest).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_dir_all(self.plugins().join(name)).unwrap();
    }

    /// The node configuration for tests: no background scan, snapshots by
    /// count only unless a test says otherwise.
    pub fn config(&self) -> NodeConfig {
        let mut config = NodeConfig::new(self.data());
        config.plugins_dir = Some(self.plugins());
        config.plugin_scan_interval = Duration::ZERO;
        config.group_commit_max_delay = Duration::ZERO;
        config
    }

    pub async fn open(&self) -> Node {
        Node::open(self.config()).await.expect("the node opens")
    }
}

/// The count a counter output carries (its first 8 bytes).
pub fn count_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(
        payload[..8]
            .try_into()
            .expect("a counter output is at least 8 bytes"),
    )
}

/// Waits until `origin` has processed `through` input events.
pub async fn wait_processed(node: &Node, origin: &str, through: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = node.daemon(origin).unwrap();
        if view.events_processed >= through {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "daemon {origin} processed {} of {through} events",
            view.events_processed
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every stored output of `origin`, in order.
pub fn all_outputs(node: &Node, origin: &str) -> Vec<holdfast_host::Output> {
    let mut outputs = Vec::new();
    loop {
        let from = outputs
            .last()
            .map_or(1, |last: &holdfast_host::Output| last.seq + 1);
        let page = node.outputs(origin, from, 1000).unwrap();
        if page.is_empty() {
            return outputs;
        }
        outputs.extend(page);
    }
}

/// Spawns a daemon of `kind` and returns its origin.
pub async fn spawn(node: &Node, kind: &str) -> String {
    node.spawn(kind, serde_json::Value::Null).await.unwrap().origin
}

/// Sends `n` events to `origin` and waits until they are processed.
pub async fn feed(node: &Node, origin: &str, n: u64) {
    let mut last = 0;
    for _ in 0..n {
        last = node
            .send(origin, bytes::Bytes::from_static(b"tick"), None)
            .await
            .unwrap();
    }
    wait_processed(node, origin, last).await;
}
