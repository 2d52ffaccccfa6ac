//! The delivery path allocates nothing of its own but the returned vector
//! (spec §10, Allocation). dhat's global allocator counts heap blocks, so this
//! file is its own test binary with a single test.
#![cfg(feature = "compute")]

mod common;

use common::{event, ready_runtime};
use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CoreDaemonError, DaemonHostConfig, DaemonRuntime, Identity,
    MeshDaemon,
};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Processes everything and emits nothing.
struct Sink;

impl MeshDaemon for Sink {
    fn name(&self) -> &str {
        "sink"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(Vec::new())
    }
}

const WARM_UP: u64 = 300; // beyond the default 256-entry output log
const MEASURED: u64 = 1_000;

/// Heap blocks allocated by `MEASURED` deliveries after `WARM_UP` ones.
fn blocks_per_measured_run(runtime: &DaemonRuntime, origin: u64) -> u64 {
    for sequence in 1..=WARM_UP {
        runtime
            .deliver(origin, &event(7, sequence, b"sixteen byte msg"))
            .unwrap();
    }
    let inputs: Vec<CausalEvent> = (WARM_UP + 1..=WARM_UP + MEASURED)
        .map(|sequence| event(7, sequence, b"sixteen byte msg"))
        .collect();
    let before = dhat::HeapStats::get().total_blocks;
    for input in &inputs {
        runtime.deliver(origin, input).unwrap();
    }
    dhat::HeapStats::get().total_blocks - before
}

#[test]
fn delivery_allocates_only_the_returned_vector() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = tokio.block_on(ready_runtime());
    runtime.register_factory("sink", || Box::new(Sink)).unwrap();
    let sink = Identity::from_seed([1; 32]);
    let echo = Identity::from_seed([2; 32]);
    tokio
        .block_on(runtime.spawn("sink", sink.clone(), DaemonHostConfig::default()))
        .unwrap();
    tokio
        .block_on(runtime.spawn("echo", echo.clone(), DaemonHostConfig::default()))
        .unwrap();

    assert_eq!(
        blocks_per_measured_run(&runtime, sink.origin_hash()),
        0,
        "a daemon without outputs"
    );
    // Echo: the daemon's own `Vec<Bytes>` and the returned `Vec<CausalEvent>`;
    // the static payload is shared with the output log without allocating.
    assert_eq!(
        blocks_per_measured_run(&runtime, echo.origin_hash()),
        2 * MEASURED,
        "an echo daemon"
    );
}
