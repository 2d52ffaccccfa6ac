//! Shared by the cluster crate's behaviour tests: a counter daemon kind and
//! nodes that each run on their own Tokio runtime, so a test can crash one
//! (drop its runtime: every task ends at once, nothing is drained) while the
//! others go on.

#![allow(dead_code, reason = "each test file uses part of the support")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_cluster::{Cluster, ClusterConfig, ClusterKeys, KindSource};
use holdfast_compute::{
    CapabilityFilter, CausalEvent, ChainValidator, CoreDaemonError, DaemonRuntime, MeshBuilder, MeshDaemon,
};

pub(crate) const PSK: [u8; 32] = [42; 32];

/// Tests of one binary run one at a time: each starts real servers and
/// nodes whose leases and timeouts assume the two cores are not shared
/// with the other tests of the binary.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts its inputs; each output is the new count (8 bytes, LE).
pub(crate) struct Counter {
    count: u64,
}

impl MeshDaemon for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        self.count += 1;
        Ok(vec![Bytes::copy_from_slice(&self.count.to_le_bytes())])
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        self.count = count_of_state(&state)?;
        Ok(())
    }
}

/// The count a counter's state holds (8 little-endian bytes).
fn count_of_state(state: &[u8]) -> Result<u64, CoreDaemonError> {
    let bytes: [u8; 8] = state
        .try_into()
        .map_err(|_| CoreDaemonError::RestoreFailed(format!("{} state bytes", state.len())))?;
    Ok(u64::from_le_bytes(bytes))
}

/// A counter whose outputs also carry a value drawn when its instance is
/// made: a replay on another instance produces different outputs (the
/// nondeterminism the cluster must detect).
pub(crate) struct Flaky {
    count: u64,
    salt: u64,
}

impl MeshDaemon for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        self.count += 1;
        let mut output = self.count.to_le_bytes().to_vec();
        output.extend_from_slice(&self.salt.to_le_bytes());
        Ok(vec![Bytes::from(output)])
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        self.count = count_of_state(&state)?;
        Ok(())
    }
}

/// A counter that answers each input only on nodes made with an odd seed:
/// replayed elsewhere, it produces fewer outputs than were appended.
pub(crate) struct Fickle {
    count: u64,
    answers: bool,
}

impl MeshDaemon for Fickle {
    fn name(&self) -> &str {
        "fickle"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        self.count += 1;
        Ok(if self.answers {
            vec![Bytes::copy_from_slice(&self.count.to_le_bytes())]
        } else {
            Vec::new()
        })
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        self.count = count_of_state(&state)?;
        Ok(())
    }
}

/// Like [`Counter`], carrying `BLOB_BYTES` of state (moves of big state).
pub(crate) struct Blob {
    state: Vec<u8>,
}

/// The state size of a [`Blob`].
pub(crate) const BLOB_BYTES: usize = 1024 * 1024;

impl MeshDaemon for Blob {
    fn name(&self) -> &str {
        "blob"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        let count = u64::from_le_bytes(self.state[..8].try_into().expect("8 bytes")) + 1;
        self.state[..8].copy_from_slice(&count.to_le_bytes());
        Ok(vec![Bytes::copy_from_slice(&count.to_le_bytes())])
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.state))
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        if state.len() != BLOB_BYTES {
            return Err(CoreDaemonError::RestoreFailed(format!(
                "{} state bytes",
                state.len()
            )));
        }
        self.state = state.to_vec();
        Ok(())
    }
}

/// The kinds a test node provides.
struct CounterKinds {
    blob_only: bool,
}

impl KindSource for CounterKinds {
    fn present_kinds(&self) -> Vec<(String, String)> {
        if self.blob_only {
            return vec![("blob".into(), "1.0".into())];
        }
        vec![
            ("counter".into(), "1.0".into()),
            ("blob".into(), "1.0".into()),
            ("flaky".into(), "1.0".into()),
            ("fickle".into(), "1.0".into()),
        ]
    }
    fn fresh_state(&self, kind: &str) -> Bytes {
        if kind == "blob" {
            Bytes::from(vec![0u8; BLOB_BYTES])
        } else {
            Bytes::copy_from_slice(&0u64.to_le_bytes())
        }
    }
}

/// Tests snapshot often (every 25 inputs) so that restores start from a
/// snapshot and replay; benches set `HOLDFAST_BENCH_SNAPSHOT_EVERY` to the
/// default of a real node (1,000).
fn snapshot_every_events() -> u64 {
    std::env::var("HOLDFAST_BENCH_SNAPSHOT_EVERY")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(25)
}

/// Output entries kept per daemon: the default (10,000) unless
/// `HOLDFAST_BENCH_OUTPUT_RETENTION` says otherwise, so a bench can measure
/// ingest while the server drops an old output at every append (a node's
/// steady state once its daemons have that many outputs).
fn output_retention() -> Option<u64> {
    std::env::var("HOLDFAST_BENCH_OUTPUT_RETENTION")
        .ok()
        .and_then(|value| value.parse().ok())
}

/// A node on its own runtime.
pub(crate) struct TestNode {
    pub(crate) cluster: Cluster,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestNode {
    pub(crate) fn start(servers: &str, name: &str, seed: u8, lease: Duration) -> Self {
        Self::try_start(servers, name, seed, lease, &PSK).expect("the node joins")
    }

    pub(crate) fn try_start(
        servers: &str,
        name: &str,
        seed: u8,
        lease: Duration,
        psk: &[u8],
    ) -> Result<Self, holdfast_cluster::ClusterError> {
        Self::try_start_replicated(servers, name, seed, lease, psk, 1)
    }

    /// The nodes' warnings go to the test's output (`RUST_LOG` overrides).
    fn log_to_test_output() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("holdfast_cluster=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }

    /// A node whose streams and buckets have `replicas` replicas.
    pub(crate) fn try_start_replicated(
        servers: &str,
        name: &str,
        seed: u8,
        lease: Duration,
        psk: &[u8],
        replicas: usize,
    ) -> Result<Self, holdfast_cluster::ClusterError> {
        Self::try_start_with(servers, name, seed, lease, psk, false, move |config| {
            config.replicas = replicas;
        })
    }

    /// A node whose configuration `adjust` changes after the tests' own.
    pub(crate) fn try_start_adjusted(
        servers: &str,
        name: &str,
        seed: u8,
        lease: Duration,
        adjust: fn(&mut ClusterConfig),
    ) -> Result<Self, holdfast_cluster::ClusterError> {
        Self::try_start_with(servers, name, seed, lease, &PSK, false, adjust)
    }

    /// A node that provides only the blob kind.
    pub(crate) fn start_blob_only(servers: &str, name: &str, seed: u8, lease: Duration) -> Self {
        Self::try_start_with(servers, name, seed, lease, &PSK, true, |_| {}).expect("the node joins")
    }

    fn try_start_with(
        servers: &str,
        name: &str,
        seed: u8,
        lease: Duration,
        psk: &[u8],
        blob_only: bool,
        adjust: impl FnOnce(&mut ClusterConfig) + Send + 'static,
    ) -> Result<Self, holdfast_cluster::ClusterError> {
        Self::log_to_test_output();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let servers: Vec<String> = servers.split(',').map(str::to_owned).collect();
        let keys = ClusterKeys::derive(psk).expect("a long enough PSK");
        let cluster = runtime.block_on(async move {
            let mesh = MeshBuilder::new("127.0.0.1:0", &[seed; 32])
                .expect("a mesh")
                .build()
                .await
                .expect("a mesh");
            let compute = DaemonRuntime::new(Arc::new(mesh));
            compute.start().await.expect("compute starts");
            compute
                .register_factory("counter", || Box::new(Counter { count: 0 }))
                .expect("registers");
            compute
                .register_factory("flaky", || {
                    use std::hash::BuildHasher;
                    let salt = std::collections::hash_map::RandomState::new().hash_one(0u8);
                    Box::new(Flaky { count: 0, salt })
                })
                .expect("registers");
            compute
                .register_factory("fickle", move || {
                    Box::new(Fickle {
                        count: 0,
                        answers: seed % 2 == 1,
                    })
                })
                .expect("registers");
            compute
                .register_factory("blob", || {
                    Box::new(Blob {
                        state: vec![0; BLOB_BYTES],
                    })
                })
                .expect("registers");
            let mut config = ClusterConfig::new(servers, name, keys, [seed; 32]);
            config.lease_ttl = lease;
            config.snapshot_every_events = snapshot_every_events();
            if let Some(kept) = output_retention() {
                config.output_retention = kept;
            }
            config.http_address = format!("node-{seed}");
            adjust(&mut config);
            Cluster::connect(config, compute, Arc::new(CounterKinds { blob_only })).await
        })?;
        Ok(Self {
            cluster,
            runtime: Some(runtime),
        })
    }

    /// Spawns `count` counter daemons (placed wherever placement says) and
    /// returns their origins.
    pub(crate) fn spawn_counters(&self, count: usize) -> Vec<u64> {
        (0..count)
            .map(|_| {
                self.block_on(self.cluster.spawn("counter"))
                    .expect("spawned")
                    .origin
            })
            .collect()
    }

    /// Submits `count` inputs of `+1` to `origin` through this node, one
    /// after another, each accepted.
    pub(crate) fn send_ticks(&self, origin: u64, count: u64) {
        for _ in 0..count {
            self.block_on(self.cluster.submit(origin, Bytes::from_static(b"+1"), None))
                .expect("accepted");
        }
    }

    pub(crate) fn id(&self) -> String {
        self.cluster.node_id().to_owned()
    }

    /// Runs `future` on this node's runtime.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("running").block_on(future)
    }

    /// Ends the node as a crash would: every task stops where it is.
    pub(crate) fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Waits until `origin` has `count` outputs (read through `node`), then
/// checks they are the counts 1..=count in one valid chain, and returns the
/// nodes that wrote them.
pub(crate) fn expect_exact_outputs(
    node: &TestNode,
    origin: u64,
    count: u64,
    within: Duration,
) -> Vec<String> {
    let started = Instant::now();
    loop {
        // A read can fail while the engine elects a new leader; only the
        // deadline ends the wait.
        let outputs = match node.block_on(node.cluster.outputs(origin, 0, usize::MAX)) {
            Ok(outputs) => outputs,
            Err(error) if started.elapsed() <= within => {
                eprintln!("outputs of {origin:016x} not readable yet: {error}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(error) => panic!("outputs of {origin:016x} unreadable: {error}"),
        };
        if outputs.len() as u64 >= count || started.elapsed() > within {
            assert_eq!(
                outputs.len() as u64,
                count,
                "daemon {origin:016x}: {} outputs after {:?}, expected {count}",
                outputs.len(),
                started.elapsed()
            );
            let mut chain = ChainValidator::new(origin);
            for (index, output) in outputs.iter().enumerate() {
                let value = u64::from_le_bytes(output.payload.as_ref().try_into().expect("8 bytes"));
                assert_eq!(
                    value,
                    index as u64 + 1,
                    "daemon {origin:016x}: output {index} out of order"
                );
                chain.push(&output.event).expect("the output chain validates");
            }
            return outputs.into_iter().map(|output| output.node).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
