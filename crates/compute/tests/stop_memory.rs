//! A stopped daemon's output log, horizon and latest snapshot are freed when
//! it stops, on every stop path, and not only when its shard next publishes.
//!
//! A stopped instance may linger in its shard's read view as a husk until
//! the next spawn in that shard prunes it (see `compute/table.rs`). Before
//! this was fixed the husk kept everything but the daemon, so a daemon that
//! had filled a large output log and a large snapshot kept them in memory
//! after `stop`. dhat's global allocator counts the live heap bytes, so this
//! file is its own test binary with a single test.
#![cfg(feature = "compute")]

mod common;

use common::ready_runtime;
use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CausalLink, CoreDaemonError, DaemonHostConfig, DaemonRuntime,
    Identity, MeshDaemon,
};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Bytes of each output; every output is a fresh allocation, which the
/// output log keeps.
const PAYLOAD_LEN: usize = 64 * 1024;
/// Outputs the log keeps (and events delivered per cycle, each from its own
/// inbound origin, so that the horizon grows too).
const LOG_ENTRIES: usize = 16;
/// Bytes of the daemon's state; each snapshot copies it.
const STATE_LEN: usize = 256 * 1024;
/// What one cycle leaves behind if a stop frees nothing but the daemon:
/// the log, the latest snapshot's state, and (ignored here) the horizon.
const FILLED: u64 = (LOG_ENTRIES * PAYLOAD_LEN + STATE_LEN) as u64;

/// The live bytes one stopped daemon may leave. dhat counts requested sizes,
/// so they do not depend on the allocator; measured, they are 656:
/// - the husk: its `Arc<Instance>`, 384 bytes (the instance is 320 bytes
///   and 64-byte aligned, so the two reference counts take 64), and its
///   name, an `Arc<str>` of "filler" (16 + 6, padded to 24);
/// - what the shard allocates at its first spawn and keeps: its
///   authoritative map's table (four 24-byte buckets and 20 control bytes:
///   116) and its read view (an `Arc` of a map, 48, and a table of four
///   16-byte buckets: 84).
///
/// The bound leaves room for another hash-table or `Arc` layout after a
/// dependency update, and is still over a thousand times smaller than what
/// one cycle fills (`FILLED`, 1.25 MiB), which a husk kept before the fix.
const HUSK_BOUND: u64 = 1024;

/// What the shutdown sweep itself may leave: it publishes a fresh, empty
/// view in each of the 256 shards (at most an `Arc` of a map, 48 bytes, and
/// the table it was cloned with, 84 bytes), while it frees every instance.
const SWEEP_VIEWS: u64 = 256 * (48 + 84);

/// Emits a fresh `PAYLOAD_LEN`-byte payload per event; its snapshots copy a
/// `STATE_LEN`-byte state.
struct Filler {
    state: Bytes,
}

impl MeshDaemon for Filler {
    fn name(&self) -> &str {
        "filler"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(vec![Bytes::from(vec![event.link.sequence as u8; PAYLOAD_LEN])])
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.state))
    }
    fn is_stateful(&self) -> bool {
        true
    }
}

#[derive(Clone, Copy, Debug)]
enum StopPath {
    Stop,
    StopWithSnapshot,
}

fn live_bytes() -> u64 {
    dhat::HeapStats::get().curr_bytes as u64
}

fn shard_of(identity: &Identity) -> u64 {
    // The runtime shards by the top 8 bits of the origin hash.
    identity.origin_hash() >> 56
}

/// `count` identities whose shards differ from each other and from `taken`.
fn identities_in_fresh_shards(count: usize, taken: &[u64]) -> Vec<Identity> {
    let mut used = taken.to_vec();
    let mut found = Vec::new();
    for i in 0u64.. {
        if found.len() == count {
            break;
        }
        let mut seed = [0xa7; 32];
        seed[..8].copy_from_slice(&i.to_le_bytes());
        let identity = Identity::from_seed(seed);
        if !used.contains(&shard_of(&identity)) {
            used.push(shard_of(&identity));
            found.push(identity);
        }
    }
    found
}

/// Spawns `identity` as a filler, fills its output log and its latest
/// snapshot, and returns its origin; the caller keeps no output or snapshot.
async fn spawn_and_fill(runtime: &DaemonRuntime, identity: &Identity) -> u64 {
    let config = DaemonHostConfig {
        max_log_entries: LOG_ENTRIES,
        ..DaemonHostConfig::default()
    };
    let origin = identity.origin_hash();
    drop(runtime.spawn("filler", identity.clone(), config).await.unwrap());
    for inbound in 1..=LOG_ENTRIES as u64 {
        let input = CausalEvent {
            link: CausalLink {
                origin_hash: inbound,
                horizon_encoded: 0,
                sequence: inbound,
                parent_hash: 0,
            },
            payload: Bytes::new(),
            received_at: 0,
        };
        drop(runtime.deliver(origin, &input).unwrap());
    }
    drop(runtime.snapshot(origin).await.unwrap());
    assert_eq!(
        runtime.replay(origin, 1).unwrap().len(),
        LOG_ENTRIES,
        "the log is full"
    );
    origin
}

async fn fill_and_stop(runtime: &DaemonRuntime, identity: &Identity, path: StopPath) {
    let origin = spawn_and_fill(runtime, identity).await;
    match path {
        StopPath::Stop => runtime.stop(origin).await.unwrap(),
        StopPath::StopWithSnapshot => drop(runtime.stop_with_snapshot(origin).await.unwrap()),
    }
}

fn path_of_cycle(cycle: usize) -> StopPath {
    if cycle.is_multiple_of(2) {
        StopPath::Stop
    } else {
        StopPath::StopWithSnapshot
    }
}

#[test]
fn stopped_daemons_leave_only_a_small_husk_however_many_stop_cycles_run() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let runtime = ready_runtime().await;
        runtime
            .register_factory("filler", || {
                Box::new(Filler {
                    state: Bytes::from(vec![0x5a; STATE_LEN]),
                })
            })
            .unwrap();
        let same = Identity::from_seed([0x11; 32]);
        let warm_up = identities_in_fresh_shards(1, &[shard_of(&same)]).remove(0);
        let fresh = identities_in_fresh_shards(24, &[shard_of(&same), shard_of(&warm_up)]);

        // One cycle in a shard of its own first, so that the baseline holds
        // what the first use of the runtime allocates once (arc-swap's
        // per-thread slot, the tokio runtime's first task state).
        fill_and_stop(&runtime, &warm_up, StopPath::Stop).await;
        let baseline = live_bytes();

        // Many cycles in one shard, measured after each stop and before the
        // next spawn (which would prune the husk): the husk of the last
        // cycle is all that stays.
        for cycle in 0..32 {
            fill_and_stop(&runtime, &same, path_of_cycle(cycle)).await;
            let grown = live_bytes().saturating_sub(baseline);
            assert!(
                grown <= HUSK_BOUND,
                "cycle {cycle} ({:?}) left {grown} live bytes, more than one husk ({HUSK_BOUND}); \
                 a filled cycle is {FILLED}",
                path_of_cycle(cycle)
            );
        }

        // One cycle in each of 24 more shards: nothing prunes these husks,
        // so each stays, and each must be small.
        let before_fresh = live_bytes();
        for (cycle, identity) in fresh.iter().enumerate() {
            fill_and_stop(&runtime, identity, path_of_cycle(cycle)).await;
            let grown = live_bytes().saturating_sub(before_fresh);
            let husks = cycle as u64 + 1;
            assert!(
                grown <= husks * HUSK_BOUND,
                "{husks} husks in fresh shards hold {grown} live bytes, more than {} \
                 ({HUSK_BOUND} each); a filled cycle is {FILLED}",
                husks * HUSK_BOUND
            );
        }

        // The shutdown sweep: filled daemons that were never stopped are
        // stopped by it, and it empties every view, so nothing of theirs,
        // nor any husk, stays.
        let before_filled = live_bytes();
        for identity in fresh.iter().take(4) {
            spawn_and_fill(&runtime, identity).await;
        }
        assert!(live_bytes() - before_filled >= 4 * FILLED);
        runtime.shutdown().await.unwrap();
        let left = live_bytes().saturating_sub(before_filled);
        assert!(
            left <= SWEEP_VIEWS,
            "shutdown left {left} live bytes more than before 4 daemons were filled \
             ({FILLED} each); the sweep's own views account for at most {SWEEP_VIEWS}"
        );
    });
}
