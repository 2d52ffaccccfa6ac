//! cluster.md §3 and §8: what one hosted daemon costs, in the engine and in
//! the node, measured (a harness, not criterion: these are sizes, not
//! times).
//!
//! 1. Engine, for the two structures a node could use, on a fresh server:
//!    N plain subscriptions to the live subjects a stream republishes its N
//!    input subjects to (one per hosted daemon, as the node keeps them),
//!    and, for comparison, N ordered consumers on the N input subjects (the
//!    structure the node used before): the server's resident memory per
//!    daemon, the time to set them up, and the time until one input on
//!    every subject has been delivered.
//! 2. Node: N counter daemons spawned and hosted by one node: the node
//!    process's and the server's resident memory per daemon (each leaves
//!    one ownership key, one snapshot object and one subscription); then
//!    one input to every daemon, until each has processed it; then the
//!    node's and the server's CPU while the daemons settle (quiet checks,
//!    idle snapshots) and then while idle over a whole sweep period.
//!
//! `cargo bench -p holdfast-cluster --bench per_daemon` (N = 1,000 and
//! 10,000 for the engine, 2,000 for the node); `HOLDFAST_PER_DAEMON_QUICK=1`
//! runs N = 200 only; `HOLDFAST_PER_DAEMON_NODE=10000` sets the node's N
//! (10,000 daemons on one node, end to end, take about 5 minutes).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use holdfast_cluster::testing::NatsServer;
use support::TestNode;

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a Linux process");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// How inputs reach their owner.
#[derive(Clone, Copy, Debug)]
enum Delivery {
    /// The stream republishes each input; a plain subscription per daemon.
    Republished,
    /// An ordered consumer per daemon.
    OrderedConsumers,
}

async fn engine_cost(count: usize, delivery: Delivery) {
    let server = NatsServer::start().await;
    let pid = server.pid().expect("running");
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = jetstream::new(client.clone());
    let republish = matches!(delivery, Delivery::Republished).then(|| jetstream::stream::Republish {
        source: "in.*".into(),
        destination: "live.{{wildcard(1)}}".into(),
        headers_only: false,
    });
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "IN".into(),
            subjects: vec!["in.*".into()],
            // As the cluster's streams: 2.15's default is 1,000.
            max_consumers: 1_000_000,
            republish,
            ..Default::default()
        })
        .await
        .expect("stream");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_kib(pid);
    let started = Instant::now();
    let mut receivers: Vec<futures_util::stream::BoxStream<'static, ()>> = Vec::with_capacity(count);
    for index in 0..count {
        match delivery {
            Delivery::Republished => {
                let live = client
                    .subscribe(format!("live.{index}"))
                    .await
                    .expect("subscribed");
                receivers.push(live.map(|_| ()).boxed());
            }
            Delivery::OrderedConsumers => {
                let consumer = match stream
                    .create_consumer(consumer::pull::OrderedConfig {
                        filter_subject: format!("in.{index}"),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(consumer) => consumer,
                    Err(error) => {
                        println!(
                            "engine, {count} ordered consumers: the server refused consumer {} ({error})",
                            index + 1
                        );
                        return;
                    }
                };
                let messages = consumer.messages().await.expect("messages");
                receivers.push(messages.map(|message| drop(message.expect("delivered"))).boxed());
            }
        }
    }
    client.flush().await.expect("flushed");
    let created = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resident_kib(pid);
    let started = Instant::now();
    for index in 0..count {
        js.publish(format!("in.{index}"), "x".into())
            .await
            .expect("published")
            .await
            .expect("acked");
    }
    for receiver in &mut receivers {
        receiver.next().await.expect("a message");
    }
    let delivered = started.elapsed();
    println!(
        "engine, {count} daemons, {delivery:?}: set up in {created:?} ({:.0} µs each); server RSS {before} KiB -> {after} KiB \
         ({:.1} KiB per daemon); one input to each delivered in {delivered:?}",
        created.as_micros() as f64 / count as f64,
        (after.saturating_sub(before)) as f64 / count as f64,
    );
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a Linux process");
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th of them, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a command") + 2..]
        .split_whitespace()
        .collect();
    let ticks = |index: usize| fields[index].parse::<f64>().expect("a tick count");
    (ticks(11) + ticks(12)) / 100.0
}

fn node_cost(count: usize) {
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "cost", 1, Duration::from_secs(10));
    let me = std::process::id();
    let server_pid = server.pid().expect("running");
    std::thread::sleep(Duration::from_millis(300));
    let before = resident_kib(me);
    let server_before = resident_kib(server_pid);
    let started = Instant::now();
    let origins: Vec<u64> = (0..count)
        .map(|_| {
            node.block_on(node.cluster.spawn("counter"))
                .expect("spawned")
                .origin
        })
        .collect();
    while node.cluster.hosted_count() < count {
        assert!(started.elapsed() < Duration::from_secs(1200), "hosting stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hosted = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = resident_kib(me);
    let server_after = resident_kib(server_pid);
    println!(
        "node, {count} hosted counter daemons: spawned and hosted in {hosted:?} ({:.2} ms each); node RSS {before} KiB -> \
         {after} KiB ({:.1} KiB per daemon); server RSS {server_before} KiB -> {server_after} KiB ({:.1} KiB per daemon: \
         its record, snapshot object and subscription)",
        hosted.as_secs_f64() * 1000.0 / count as f64,
        (after.saturating_sub(before)) as f64 / count as f64,
        (server_after.saturating_sub(server_before)) as f64 / count as f64,
    );

    // End to end: one input to every daemon, 256 submissions in flight at
    // a time, until every daemon has processed it.
    let started = Instant::now();
    let mut inputs = std::collections::HashMap::with_capacity(count);
    for batch in origins.chunks(256) {
        let accepted = node.block_on(futures_util::future::join_all(batch.iter().map(|&origin| {
            node.cluster
                .submit(origin, bytes::Bytes::from_static(b"+1"), None)
        })));
        for (&origin, seq) in batch.iter().zip(accepted) {
            inputs.insert(origin, seq.expect("accepted"));
        }
    }
    let processed = || {
        node.cluster
            .placement()
            .iter()
            .filter_map(|daemon| daemon.processed_here)
            .sum::<u64>()
    };
    while processed() < count as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "inputs stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let round = started.elapsed();
    // After the round: each daemon's quiet check a second after its input,
    // then, once a minute has passed since its last snapshot, its idle
    // snapshot (a one-time cost after activity), until every daemon's
    // snapshot covers its input; then steady idle: the 30 s sweep of each
    // subject, heartbeats, the trimmer's rounds, over one sweep period.
    let cpu = || (cpu_seconds(me), cpu_seconds(server_pid));
    let share = |(node_then, server_then): (f64, f64), (node_now, server_now): (f64, f64), over: Duration| {
        (
            100.0 * (node_now - node_then) / over.as_secs_f64(),
            100.0 * (server_now - server_then) / over.as_secs_f64(),
        )
    };
    let at_round = (cpu(), Instant::now());
    let all_snapshotted = || {
        node.cluster
            .placement()
            .iter()
            .filter(|daemon| {
                inputs
                    .get(&daemon.origin)
                    .is_some_and(|&seq| daemon.snapshot_input_seq >= seq)
            })
            .count()
            == count
    };
    while !all_snapshotted() {
        assert!(
            at_round.1.elapsed() < Duration::from_secs(300),
            "idle snapshots stalled"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let settle = at_round.1.elapsed();
    let settled = cpu();
    let at_round = at_round.0;
    let idle = Duration::from_secs(35);
    std::thread::sleep(idle);
    let (settling_node, settling_server) = share(at_round, settled, settle);
    let (idle_node, idle_server) = share(settled, cpu(), idle);
    println!(
        "node, {count} hosted counter daemons: one input to each submitted and processed in {round:?} \
         ({:.0} inputs/s); the {settle:?} until every daemon had snapshotted it (quiet checks, idle snapshots): node {settling_node:.1} % of a core, \
         server {settling_server:.1} %; then idle for {idle:?}: node {idle_node:.1} %, server {idle_server:.1} %; \
         node RSS {} KiB, server RSS {} KiB",
        count as f64 / round.as_secs_f64(),
        resident_kib(me),
        resident_kib(server_pid),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let quick = std::env::var_os("HOLDFAST_PER_DAEMON_QUICK").is_some();
    let engine_counts: &[usize] = if quick { &[200] } else { &[1_000, 10_000] };
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    for &count in engine_counts {
        for delivery in [Delivery::Republished, Delivery::OrderedConsumers] {
            tokio.block_on(engine_cost(count, delivery));
        }
    }
    let node_count = std::env::var("HOLDFAST_PER_DAEMON_NODE")
        .ok()
        .map(|count| count.parse().expect("HOLDFAST_PER_DAEMON_NODE is a daemon count"));
    node_cost(node_count.unwrap_or(if quick { 200 } else { 2_000 }));
}
