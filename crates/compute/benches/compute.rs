//! Criterion benchmarks of holdfast-compute's hot paths (spec §11).
//!
//! - `deliver/{echo,counter,counter_unlogged,silent_counter}/single`: one
//!   daemon, one thread, a 16-byte static payload and a fresh sequence per
//!   event;
//! - `deliver/{…}/1000x{threads}`: 1 000 daemons of each of those rows, 1
//!   and 2 threads (one per core), each thread round-robin over its own
//!   share of the daemons; throughput is the aggregate over threads;
//! - `spawn/echo`, `spawn_from_snapshot/counter/{8B,64KiB}`, `stop/echo`:
//!   identities generated beforehand; the inverse operation runs outside the
//!   timed region;
//! - `snapshot/counter`: an explicit snapshot of an 8-byte state;
//! - `snapshot/{encode,decode}/{1KiB,64KiB,1MiB}`: the byte format.
//!
//! Before the groups run, the resident memory of 10 000 idle echo daemons is
//! measured and printed as `memory/idle_echo` (Linux `/proc/self/status`).
//!
//! The daemons are those of the anchor, net-mesh-sdk 0.25.2, so that rows
//! compare like with like: `echo` returns its input, `counter` counts and
//! emits the 8-byte count as the anchor's counter does, and
//! `silent_counter` counts and emits nothing (a daemon with no outputs, kept
//! as a row of its own). The anchor keeps no output log, so
//! `counter_unlogged` runs `counter` with `max_log_entries: 0`.
//! docs/BENCHMARKS.md gives both sets of figures from one run on one
//! machine, with the commands.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CausalLink, CoreDaemonError, DaemonHostConfig, DaemonRuntime,
    Identity, MeshBuilder, MeshDaemon, StateSnapshot,
};

struct Echo;

impl MeshDaemon for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(vec![event.payload.clone()])
    }
}

/// Keeps a count (8 bytes of state) and emits it, 8 bytes little-endian,
/// for every event, as the anchor's counter daemon does.
#[derive(Default)]
struct Counter {
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
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        self.count = u64::from_le_bytes(state.as_ref().try_into().unwrap_or([0; 8]));
        Ok(())
    }
}

/// Keeps a count like [`Counter`] but emits nothing: the delivery path of a
/// daemon without outputs (no event hash, no output log, no allocation).
#[derive(Default)]
struct SilentCounter {
    count: u64,
}

impl MeshDaemon for SilentCounter {
    fn name(&self) -> &str {
        "silent_counter"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        self.count += 1;
        Ok(Vec::new())
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        self.count = u64::from_le_bytes(state.as_ref().try_into().unwrap_or([0; 8]));
        Ok(())
    }
}

/// Holds opaque state of any size (restored without copying).
#[derive(Default)]
struct Blob {
    state: Bytes,
}

impl MeshDaemon for Blob {
    fn name(&self) -> &str {
        "blob"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        Ok(Vec::new())
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(self.state.clone())
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        self.state = state;
        Ok(())
    }
}

const PAYLOAD: &[u8; 16] = b"sixteen byte msg";
/// Identities are expensive to derive (Ed25519 and BLAKE2s); spawn benchmarks
/// cycle through this many, stopping them all between rounds.
const POOL: usize = 4_096;

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn runtime(tokio: &tokio::runtime::Runtime) -> DaemonRuntime {
    tokio.block_on(async {
        let mesh = MeshBuilder::new("127.0.0.1:0", &[0x42; 32])
            .unwrap()
            .build()
            .await
            .unwrap();
        let runtime = DaemonRuntime::new(Arc::new(mesh));
        runtime.register_factory("echo", || Box::new(Echo)).unwrap();
        runtime
            .register_factory("counter", || Box::new(Counter::default()))
            .unwrap();
        runtime
            .register_factory("silent_counter", || Box::new(SilentCounter::default()))
            .unwrap();
        runtime
            .register_factory("blob", || Box::new(Blob::default()))
            .unwrap();
        runtime.start().await.unwrap();
        runtime
    })
}

fn identities(count: usize, tag: u8) -> Vec<Identity> {
    (0..count)
        .map(|i| {
            let mut seed = [tag; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Identity::from_seed(seed)
        })
        .collect()
}

fn input(sequence: u64) -> CausalEvent {
    CausalEvent {
        link: CausalLink {
            origin_hash: 1,
            horizon_encoded: 0,
            sequence,
            parent_hash: 0,
        },
        payload: Bytes::from_static(PAYLOAD),
        received_at: sequence,
    }
}

/// The delivery rows: (row, kind, configuration). `counter_unlogged` is
/// `counter` with `max_log_entries: 0`: the anchor keeps no output log for
/// `replay` at all, so that row shows what holdfast's log costs.
fn delivery_rows() -> [(&'static str, &'static str, DaemonHostConfig); 4] {
    let unlogged = DaemonHostConfig {
        max_log_entries: 0,
        ..DaemonHostConfig::default()
    };
    [
        ("echo", "echo", DaemonHostConfig::default()),
        ("counter", "counter", DaemonHostConfig::default()),
        ("counter_unlogged", "counter", unlogged),
        ("silent_counter", "silent_counter", DaemonHostConfig::default()),
    ]
}

fn deliver_single(c: &mut Criterion) {
    let tokio = tokio();
    let runtime = runtime(&tokio);
    let mut group = c.benchmark_group("deliver");
    group.throughput(Throughput::Elements(1));
    for (row, kind, config) in delivery_rows() {
        let identity = Identity::from_seed([7; 32]);
        let origin = identity.origin_hash();
        tokio.block_on(runtime.spawn(kind, identity, config)).unwrap();
        let mut sequence = 0;
        group.bench_function(BenchmarkId::new(row, "single"), |b| {
            b.iter(|| {
                sequence += 1;
                black_box(runtime.deliver(origin, &input(sequence)).unwrap())
            })
        });
        tokio.block_on(runtime.stop(origin)).unwrap();
    }
    group.finish();
}

fn deliver_many(c: &mut Criterion) {
    let tokio = tokio();
    let runtime = runtime(&tokio);
    let cores = std::thread::available_parallelism().map_or(2, usize::from).max(2);
    let mut group = c.benchmark_group("deliver");
    for (row, kind, config) in delivery_rows() {
        let origins: Vec<u64> = identities(1_000, 0x31)
            .into_iter()
            .map(|identity| {
                let origin = identity.origin_hash();
                tokio
                    .block_on(runtime.spawn(kind, identity, config.clone()))
                    .unwrap();
                origin
            })
            .collect();
        for threads in [1, cores] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_function(BenchmarkId::new(row, format!("1000x{threads}")), |b| {
                b.iter_custom(|iters| deliver_from_threads(&runtime, &origins, threads, iters))
            });
        }
        for origin in origins {
            tokio.block_on(runtime.stop(origin)).unwrap();
        }
    }
    group.finish();
}

/// `threads` threads each deliver `iters` events round-robin over their own
/// share of `origins`; returns the wall time of the slowest.
fn deliver_from_threads(runtime: &DaemonRuntime, origins: &[u64], threads: usize, iters: u64) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let share: Vec<u64> = origins.iter().copied().skip(thread).step_by(threads).collect();
            let start = &start;
            scope.spawn(move || {
                start.wait();
                for i in 0..iters {
                    let origin = share[(i % share.len() as u64) as usize];
                    black_box(runtime.deliver(origin, &input(i + 1)).unwrap());
                }
            });
        }
        start.wait();
        let begun = Instant::now();
        // The scope joins every thread before returning.
        begun
    })
    .elapsed()
}

/// Times `iters` calls of `timed` over a pool of origins, running `untimed`
/// on all of them whenever the pool is used up.
fn time_over_pool<T>(
    tokio: &tokio::runtime::Runtime,
    iters: u64,
    pool: &[T],
    mut timed: impl AsyncFnMut(&T),
    mut untimed: impl AsyncFnMut(&T),
) -> Duration {
    tokio.block_on(async {
        let mut total = Duration::ZERO;
        let mut remaining = iters as usize;
        while remaining > 0 {
            let round = &pool[..remaining.min(pool.len())];
            let begun = Instant::now();
            for item in round {
                timed(item).await;
            }
            total += begun.elapsed();
            for item in round {
                untimed(item).await;
            }
            remaining -= round.len();
        }
        total
    })
}

fn spawn_and_stop(c: &mut Criterion) {
    let tokio = tokio();
    let runtime = runtime(&tokio);
    let pool = identities(POOL, 0x51);
    let config = DaemonHostConfig::default();
    c.bench_function("spawn/echo", |b| {
        b.iter_custom(|iters| {
            time_over_pool(
                &tokio,
                iters,
                &pool,
                async |identity| {
                    black_box(
                        runtime
                            .spawn("echo", identity.clone(), config.clone())
                            .await
                            .unwrap(),
                    );
                },
                async |identity| runtime.stop(identity.origin_hash()).await.unwrap(),
            )
        })
    });
    for identity in &pool {
        tokio
            .block_on(runtime.spawn("echo", identity.clone(), config.clone()))
            .unwrap();
    }
    c.bench_function("stop/echo", |b| {
        b.iter_custom(|iters| {
            time_over_pool(
                &tokio,
                iters,
                &pool,
                async |identity| runtime.stop(identity.origin_hash()).await.unwrap(),
                async |identity| {
                    runtime
                        .spawn("echo", identity.clone(), config.clone())
                        .await
                        .unwrap();
                },
            )
        })
    });
    // The stop benchmark leaves its last round spawned: clear them.
    for identity in &pool {
        let _ = tokio.block_on(runtime.stop(identity.origin_hash()));
    }

    let mut group = c.benchmark_group("spawn_from_snapshot");
    for (kind, label, state) in [
        ("counter", "8B", Bytes::copy_from_slice(&42u64.to_le_bytes())),
        ("blob", "64KiB", Bytes::from(vec![7; 65_536])),
    ] {
        let restorable: Vec<(Identity, StateSnapshot)> = pool
            .iter()
            .map(|identity| {
                tokio
                    .block_on(runtime.spawn(kind, identity.clone(), config.clone()))
                    .unwrap();
                let mut snapshot = tokio
                    .block_on(runtime.stop_with_snapshot(identity.origin_hash()))
                    .unwrap();
                snapshot.state = state.clone();
                (identity.clone(), snapshot)
            })
            .collect();
        group.bench_function(BenchmarkId::new(kind, label), |b| {
            b.iter_custom(|iters| {
                time_over_pool(
                    &tokio,
                    iters,
                    &restorable,
                    async |(identity, snapshot)| {
                        let spawned = runtime.spawn_from_snapshot(
                            kind,
                            identity.clone(),
                            snapshot.clone(),
                            config.clone(),
                        );
                        black_box(spawned.await.unwrap());
                    },
                    async |(identity, _)| runtime.stop(identity.origin_hash()).await.unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn snapshot_counter(c: &mut Criterion) {
    let tokio = tokio();
    let runtime = runtime(&tokio);
    let identity = Identity::from_seed([9; 32]);
    let origin = identity.origin_hash();
    tokio
        .block_on(runtime.spawn("counter", identity, DaemonHostConfig::default()))
        .unwrap();
    runtime.deliver(origin, &input(1)).unwrap();
    c.bench_function("snapshot/counter", |b| {
        b.iter_custom(|iters| {
            tokio.block_on(async {
                let begun = Instant::now();
                for _ in 0..iters {
                    black_box(runtime.snapshot(origin).await.unwrap());
                }
                begun.elapsed()
            })
        })
    });
}

fn snapshot_codec(c: &mut Criterion) {
    let identity = Identity::from_seed([0; 32]);
    let origin = identity.origin_hash();
    let mut group = c.benchmark_group("snapshot");
    for (label, size) in [("1KiB", 1_024), ("64KiB", 65_536), ("1MiB", 1 << 20)] {
        let mut horizon = holdfast_compute::ObservedHorizon::new();
        horizon.observe(1, 1);
        let head = CausalLink {
            origin_hash: origin,
            horizon_encoded: horizon.encoded(),
            sequence: 1,
            parent_hash: 0,
        };
        let snapshot = StateSnapshot {
            entity_id: *identity.entity_id(),
            through_seq: 1,
            chain_link: head,
            head_hash: 0,
            horizon,
            state: Bytes::from(vec![0xa5; size]),
            created_at: 0,
        };
        let encoded = snapshot.to_bytes();
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| black_box(snapshot.to_bytes()))
        });
        group.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| black_box(StateSnapshot::decode(encoded.clone()).unwrap()))
        });
    }
    group.finish();
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1_024)
}

/// Prints the resident memory per idle echo daemon over 10 000 daemons.
fn memory_per_idle_daemon() {
    const DAEMONS: usize = 10_000;
    let tokio = tokio();
    let runtime = runtime(&tokio);
    let pool = identities(DAEMONS, 0x71);
    let Some(before) = resident_bytes() else {
        println!("memory/idle_echo: /proc/self/status is not available here");
        return;
    };
    // The identities stay allocated until after the second reading, so that
    // freeing them does not hide the daemons' own memory.
    for identity in &pool {
        tokio
            .block_on(runtime.spawn("echo", identity.clone(), DaemonHostConfig::default()))
            .unwrap();
    }
    let after = resident_bytes().unwrap_or(before);
    drop(pool);
    println!(
        "memory/idle_echo: {} bytes per daemon ({DAEMONS} daemons, RSS {before} -> {after})",
        after.saturating_sub(before) / DAEMONS as u64
    );
}

criterion_group! {
    name = compute;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    // The order matters on a small machine: single-thread delivery first (the
    // heap is fresh), spawn and stop before the multi-thread groups (whose
    // threads come and go), which run last. See BENCHMARKS.md.
    targets = deliver_single, spawn_and_stop, snapshot_counter, snapshot_codec, deliver_many
}

fn main() {
    memory_per_idle_daemon();
    compute();
    Criterion::default().configure_from_args().final_summary();
}
