//! Engine failure (cluster.md §7): on a three-server JetStream cluster with
//! replicas 3, the server leading the inputs stream is killed in the middle
//! of a stream of inputs; processing resumes without loss or duplicate.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use holdfast_cluster::testing::NatsCluster;
use support::{PSK, TestNode, expect_exact_outputs};

/// Submits until acknowledged; the idempotency key makes a resend after a
/// lost acknowledgement count once.
fn submit_until_accepted(node: &TestNode, origin: u64, key: u64) {
    // A new stream leader is elected within seconds; allow 30.
    for _ in 0..300 {
        let accepted = node.block_on(node.cluster.submit(
            origin,
            Bytes::from_static(b"+1"),
            Some(&key.to_be_bytes()),
        ));
        if accepted.is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("input {key} was never accepted");
}

#[test]
fn killing_the_stream_leader_loses_and_doubles_nothing() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let mut servers = tokio.block_on(NatsCluster::start());
    let node = TestNode::try_start_replicated(&servers.urls(), "engine", 1, Duration::from_secs(3), &PSK, 3)
        .expect("joins the replicated cluster");
    let origin = node.spawn_counters(1)[0];
    for key in 1..=40 {
        submit_until_accepted(&node, origin, key);
    }
    expect_exact_outputs(&node, origin, 40, Duration::from_secs(20));

    kill_leader(&tokio, &mut servers, "HF_engine_IN");

    for key in 41..=80 {
        submit_until_accepted(&node, origin, key);
    }
    expect_exact_outputs(&node, origin, 80, Duration::from_secs(60));
}

/// The leader of the named stream, killed.
fn kill_leader(tokio: &tokio::runtime::Runtime, servers: &mut NatsCluster, stream: &str) {
    let leader = tokio.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .connect(servers.server_addrs())
            .await
            .expect("connects");
        let mut stream = jetstream::new(client)
            .get_stream(stream)
            .await
            .expect("the stream");
        let info = stream.info().await.expect("info");
        info.cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone())
            .expect("a replicated stream has a leader")
    });
    let index = servers.index_of(&leader).expect("one of ours");
    servers.kill(index).expect("killed");
}

#[test]
fn a_move_while_the_ownership_leader_dies_completes_or_fails_typed_and_loses_nothing() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let mut servers = tokio.block_on(NatsCluster::start());
    let lease = Duration::from_secs(3);
    let a = TestNode::try_start_replicated(&servers.urls(), "midmove", 1, lease, &PSK, 3).expect("a joins");
    let b = TestNode::try_start_replicated(&servers.urls(), "midmove", 2, lease, &PSK, 3).expect("b joins");
    let origin = a.spawn_counters(1)[0];
    for key in 1..=20 {
        submit_until_accepted(&a, origin, key);
    }
    expect_exact_outputs(&a, origin, 20, Duration::from_secs(20));
    let owner = a.block_on(a.cluster.daemon(origin)).expect("known").node;
    let target = if owner == a.id() { b.id() } else { a.id() };
    std::thread::scope(|scope| {
        let mover = scope.spawn(|| a.block_on(a.cluster.migrate(origin, &target)));
        std::thread::sleep(Duration::from_millis(2));
        kill_leader(&tokio, &mut servers, "KV_HF_midmove_OWNERS");
        match mover.join().expect("the move returns") {
            Ok(report) => assert_eq!(report.to, target),
            // A typed refusal, never a panic or a hang.
            Err(error) => eprintln!("the move failed while the leader died: {error}"),
        }
    });
    for key in 21..=40 {
        submit_until_accepted(&b, origin, key);
    }
    expect_exact_outputs(&b, origin, 40, Duration::from_secs(60));
    // One owner in the end, whichever it is.
    let hosted = a.cluster.hosted_count() + b.cluster.hosted_count();
    assert_eq!(hosted, 1);
}
