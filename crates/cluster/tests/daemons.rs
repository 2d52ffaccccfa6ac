//! Daemons on a cluster of in-process nodes and one real NATS server: every
//! accepted input processed exactly once across planned moves and crashes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use holdfast_cluster::testing::NatsServer;
use holdfast_cluster::wire::{self, OutputEntry};
use holdfast_compute::CausalLink;
use support::{TestNode, expect_exact_outputs};

const LEASE: Duration = Duration::from_millis(1500);

#[test]
fn inputs_are_processed_once_in_order_across_planned_moves() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), "moves", 1, LEASE);
    let b = TestNode::start(&server.url(), "moves", 2, LEASE);
    let nodes = [a.id(), b.id()];
    let origins = a.spawn_counters(3);
    let mut sent = vec![0u64; origins.len()];
    for round in 0..6 {
        for _ in 0..20 {
            for (index, origin) in origins.iter().enumerate() {
                a.block_on(a.cluster.submit(*origin, Bytes::from_static(b"+1"), None))
                    .expect("accepted");
                sent[index] += 1;
            }
        }
        for origin in &origins {
            let target = &nodes[round % 2];
            let placement = b.block_on(b.cluster.daemon(*origin)).expect("known");
            if placement.node == *target {
                continue;
            }
            // Asked of either node: b forwards to the owner when it is a.
            let report = b
                .block_on(b.cluster.migrate(*origin, target))
                .unwrap_or_else(|error| panic!("move of {origin:016x} to {target}: {error}"));
            assert_eq!(report.to, *target);
            assert!(report.target_ready, "the new owner claimed within 10 s");
        }
    }
    for (origin, sent) in origins.iter().zip(&sent) {
        expect_exact_outputs(&b, *origin, *sent, Duration::from_secs(30));
        // A page from the middle, and one past the end.
        let page = a.block_on(a.cluster.outputs(*origin, 100, 5)).expect("readable");
        let seqs: Vec<u64> = page.iter().map(|output| output.seq).collect();
        assert_eq!(seqs, vec![100, 101, 102, 103, 104]);
        let past = a
            .block_on(a.cluster.outputs(*origin, sent + 1, 5))
            .expect("readable");
        assert!(past.is_empty());
        let placement = a.block_on(a.cluster.daemon(*origin)).expect("known");
        assert!(placement.moves >= 3, "{placement:?}");
    }
    // The new owners took the snapshots their old owners handed over (a
    // handoff late on a busy machine is read from the store instead, so
    // not every move need show here), and none was refused.
    let (ra, rb) = (a.cluster.restores(), b.cluster.restores());
    assert!(ra.from_handoff + rb.from_handoff > 0, "{ra:?} {rb:?}");
    assert_eq!(ra.handoffs_refused + rb.handoffs_refused, 0, "{ra:?} {rb:?}");
}

#[test]
fn a_crashed_nodes_daemons_fail_over_and_continue_exactly() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), "failover", 3, LEASE);
    let b = TestNode::start(&server.url(), "failover", 4, LEASE);
    let victim = a.id();
    let mut origins = Vec::new();
    while origins.len() < 2 {
        let spawned = b.block_on(b.cluster.spawn("counter")).expect("spawned");
        if spawned.node == victim {
            origins.push(spawned.origin);
        }
    }
    for origin in &origins {
        b.send_ticks(*origin, 30);
        expect_exact_outputs(&b, *origin, 30, Duration::from_secs(20));
    }
    a.crash();
    // Inputs accepted while the owner is dead wait in the stream.
    for origin in &origins {
        b.send_ticks(*origin, 30);
    }
    for origin in &origins {
        let writers = expect_exact_outputs(&b, *origin, 60, LEASE + Duration::from_secs(10));
        assert!(writers[..30].iter().all(|node| *node == victim));
        assert!(writers[30..].iter().all(|node| *node == b.id()));
        let placement = b.block_on(b.cluster.daemon(*origin)).expect("known");
        assert_eq!(placement.node, b.id());
        assert_eq!(placement.epoch, 2);
        // Inputs behind every recorded snapshot (every 25 here) are purged
        // by the trimmer's next round: of 60, at most the 35 after the dead
        // node's snapshot at 25 remain.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut left = tokio.block_on(inputs_left(&server.url(), "failover", *origin));
        while left > 35 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            left = tokio.block_on(inputs_left(&server.url(), "failover", *origin));
        }
        assert!(left <= 35, "{left} inputs of {origin:016x} kept");
    }
}

async fn inputs_left(url: &str, cluster: &str, origin: u64) -> usize {
    use futures_util::StreamExt;
    let client = async_nats::connect(url).await.expect("connects");
    let stream = async_nats::jetstream::new(client)
        .get_stream(format!("HF_{cluster}_IN"))
        .await
        .expect("the inputs stream");
    let mut subjects = stream
        .info_with_subjects(format!("hf.{cluster}.in.{origin:016x}"))
        .await
        .expect("info");
    let mut count = 0;
    while let Some(subject) = subjects.next().await {
        count += subject.expect("a subject").1;
    }
    count
}

#[test]
fn the_purge_floor_keeps_every_input_a_recorded_snapshot_does_not_cover() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "floor", 1, LEASE);
    let origins = node.spawn_counters(2);
    let (busy, quiet) = (origins[0], origins[1]);
    // busy: inputs 1-30 (snapshot at 25); quiet: 3 inputs no snapshot
    // covers; busy: inputs 31-60 (snapshot at 50). The floor is quiet's
    // first input: busy's first 30 go, everything after stays.
    node.send_ticks(busy, 30);
    expect_exact_outputs(&node, busy, 30, Duration::from_secs(10));
    node.send_ticks(quiet, 3);
    node.send_ticks(busy, 30);
    expect_exact_outputs(&node, busy, 60, Duration::from_secs(10));
    expect_exact_outputs(&node, quiet, 3, Duration::from_secs(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut left = tokio.block_on(inputs_left(&server.url(), "floor", busy));
    while left > 30 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        left = tokio.block_on(inputs_left(&server.url(), "floor", busy));
    }
    assert_eq!(left, 30, "busy's inputs after the floor");
    // Another round passes; the floor does not move past quiet's inputs.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(tokio.block_on(inputs_left(&server.url(), "floor", quiet)), 3);
    assert_eq!(tokio.block_on(inputs_left(&server.url(), "floor", busy)), 30);
    // Restarted from its (genesis) snapshot, quiet replays all three.
    drop(node);
    let node = TestNode::start(&server.url(), "floor", 1, LEASE);
    node.block_on(node.cluster.submit(quiet, Bytes::from_static(b"+1"), None))
        .expect("accepted");
    expect_exact_outputs(&node, quiet, 4, Duration::from_secs(10));
}

/// The trimmer keeps "no input after the snapshot through sequence L" from
/// one round to the next; inputs stored after L must still hold the floor.
#[test]
fn inputs_after_a_kept_none_answer_are_not_purged() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "kept", 1, LEASE);
    let origins = node.spawn_counters(2);
    let (first, second) = (origins[0], origins[1]);
    // 25 inputs each, one daemon after the other: each snapshot at 25 covers
    // its daemon's inputs, and the first's is below the stream's last
    // sequence, so a round asks about it and keeps "none after it through
    // the last sequence" while it purges everything.
    node.send_ticks(first, 25);
    expect_exact_outputs(&node, first, 25, Duration::from_secs(10));
    node.send_ticks(second, 25);
    expect_exact_outputs(&node, second, 25, Duration::from_secs(10));
    let left = |origin| tokio.block_on(inputs_left(&server.url(), "kept", origin));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while left(first) + left(second) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the covered inputs were not purged"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Three more to the first, processed but covered by no snapshot: two
    // more rounds (5 s apart) must leave all three.
    node.send_ticks(first, 3);
    expect_exact_outputs(&node, first, 28, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(left(first), 3);
}

#[test]
fn a_thousand_hosted_daemons_hold_no_consumer_on_the_server() {
    let _serial = support::serial();
    // Inputs reach their owner as the server republishes them: hosting
    // holds a plain subscription per daemon, no consumer (nats-server 2.15
    // caps a stream at 1,000 consumers unless the stream sets a limit, and
    // each one costs the server about 42 KiB).
    const DAEMONS: usize = 1_010;
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), "many", 1, Duration::from_secs(10));
    let origins = node.spawn_counters(DAEMONS);
    let started = std::time::Instant::now();
    while node.cluster.hosted_count() < DAEMONS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {DAEMONS} hosted",
            node.cluster.hosted_count()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let inputs = tokio.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let mut stream = async_nats::jetstream::new(client)
            .get_stream("HF_many_IN")
            .await
            .expect("the inputs stream");
        stream.info().await.expect("info").state.consumer_count
    });
    assert_eq!(inputs, 0, "consumers left on the inputs stream");
    for origin in origins.iter().step_by(101) {
        node.block_on(node.cluster.submit(*origin, Bytes::from_static(b"+1"), None))
            .expect("accepted");
    }
    for origin in origins.iter().step_by(101) {
        expect_exact_outputs(&node, *origin, 1, Duration::from_secs(10));
    }
}

#[test]
fn a_daemon_moved_back_and_forth_at_once_keeps_every_input() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), "pingpong", 1, LEASE);
    let b = TestNode::start(&server.url(), "pingpong", 2, LEASE);
    let origin = a.spawn_counters(1)[0];
    let mut sent = 0;
    for _ in 0..8 {
        a.block_on(a.cluster.submit(origin, Bytes::from_static(b"+1"), None))
            .expect("accepted");
        sent += 1;
        // Straight back to the node it just left, while that node's old
        // task may still be finishing.
        let current = a.block_on(a.cluster.daemon(origin)).expect("known").node;
        let target = if current == a.id() { b.id() } else { a.id() };
        let report = a.block_on(a.cluster.migrate(origin, &target)).expect("moved");
        assert!(report.target_ready);
    }
    for _ in 0..10 {
        a.block_on(a.cluster.submit(origin, Bytes::from_static(b"+1"), None))
            .expect("accepted");
        sent += 1;
    }
    expect_exact_outputs(&a, origin, sent, Duration::from_secs(20));
}

#[test]
fn a_joining_node_takes_the_daemons_placement_gives_it_with_nothing_lost() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), "join", 1, LEASE);
    let origins = a.spawn_counters(12);
    for origin in &origins {
        a.send_ticks(*origin, 5);
    }
    let b = TestNode::start(&server.url(), "join", 2, LEASE);
    let nodes = [a.id(), b.id()];
    let belongs = |origin: u64| {
        holdfast_cluster::placement::choose(origin, nodes.iter().map(String::as_str))
            .expect("two nodes")
            .to_owned()
    };
    let expected_on_b = origins
        .iter()
        .filter(|origin| belongs(**origin) == b.id())
        .count();
    assert!(
        expected_on_b > 0,
        "placement gives the new node some of 12 daemons"
    );
    let started = std::time::Instant::now();
    loop {
        let placed: Vec<String> = origins
            .iter()
            .map(|origin| a.block_on(a.cluster.daemon(*origin)).expect("known").node)
            .collect();
        if origins
            .iter()
            .zip(&placed)
            .all(|(origin, node)| *node == belongs(*origin))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not rebalanced: {placed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new owner starts each daemon a moment after its record names it.
    while b.cluster.hosted_count() != expected_on_b {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} hosted",
            b.cluster.hosted_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for origin in &origins {
        b.send_ticks(*origin, 5);
        expect_exact_outputs(&a, *origin, 10, Duration::from_secs(20));
    }
}

#[test]
fn a_move_to_a_node_without_the_kind_is_refused_and_changes_nothing() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), "kindless", 1, LEASE);
    let b = TestNode::start_blob_only(&server.url(), "kindless", 2, LEASE);
    let origin = a.spawn_counters(1)[0];
    let before = a.block_on(a.cluster.daemon(origin)).expect("known");
    match a.block_on(a.cluster.migrate(origin, &b.id())) {
        Err(holdfast_cluster::ClusterError::NodeCannotHost { node, kind }) => {
            assert_eq!((node, kind), (b.id(), "counter".to_owned()));
        }
        other => panic!("a move to a node without the kind was not refused: {other:?}"),
    }
    let after = a.block_on(a.cluster.daemon(origin)).expect("known");
    assert_eq!((after.node, after.epoch), (before.node, before.epoch));
}

#[test]
fn a_drain_with_nowhere_to_go_snapshots_its_daemons_and_they_fail_over_later() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), "alone", 1, LEASE);
    let origin = a.spawn_counters(1)[0];
    let mut last_seq = 0;
    for _ in 0..7 {
        last_seq = a
            .block_on(a.cluster.submit(origin, Bytes::from_static(b"+1"), None))
            .expect("accepted");
    }
    expect_exact_outputs(&a, origin, 7, Duration::from_secs(10));
    let report = a.block_on(a.cluster.drain()).expect("drained");
    assert_eq!((report.moved.len(), report.left.clone()), (0, vec![origin]));
    // Fewer inputs than the snapshot interval: only the drain snapshotted.
    let b = TestNode::start(&server.url(), "alone", 2, LEASE);
    assert_eq!(
        b.block_on(b.cluster.daemon(origin))
            .expect("known")
            .snapshot_input_seq,
        last_seq
    );
    b.send_ticks(origin, 3);
    let writers = expect_exact_outputs(&b, origin, 10, LEASE + Duration::from_secs(10));
    assert!(writers[7..].iter().all(|node| *node == b.id()));
}

#[test]
fn a_replay_that_differs_after_failover_halts_the_daemon_as_nondeterministic() {
    // Each instance salts its outputs with a value of its own.
    expect_a_halt_after_failover("flaky");
}

#[test]
fn a_replay_that_produces_fewer_outputs_after_failover_halts_the_daemon_as_nondeterministic() {
    // Answers every input on a node with an odd seed (1), none on 2.
    expect_a_halt_after_failover("fickle");
}

/// Runs a daemon of `kind` on node 1 for 5 inputs, crashes node 1, and
/// expects node 2's replay to halt the daemon at output 1, with the dead
/// node's 5 outputs left as they were and further inputs refused.
fn expect_a_halt_after_failover(kind: &str) {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let a = TestNode::start(&server.url(), kind, 1, LEASE);
    let b = TestNode::start(&server.url(), kind, 2, LEASE);
    let origin = loop {
        let spawned = b.block_on(b.cluster.spawn(kind)).expect("spawned");
        if spawned.node == a.id() {
            break spawned.origin;
        }
    };
    // Fewer inputs than the snapshot interval: b replays all of them.
    b.send_ticks(origin, 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b
        .block_on(b.cluster.outputs(origin, 0, 10))
        .expect("readable")
        .len()
        < 5
    {
        assert!(std::time::Instant::now() < deadline, "5 outputs within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.crash();
    let started = std::time::Instant::now();
    let halted = loop {
        // The node's own view (what `submit` checks), not only the engine's.
        let seen = b
            .cluster
            .placement()
            .into_iter()
            .find(|daemon| daemon.origin == origin);
        if let Some(reason) = seen.and_then(|daemon| daemon.halted) {
            break reason;
        }
        assert!(started.elapsed() < LEASE + Duration::from_secs(10), "not halted");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        halted.contains("nondeterministic") && halted.contains("sequence 1"),
        "{halted}"
    );
    match b.block_on(b.cluster.submit(origin, Bytes::from_static(b"+1"), None)) {
        Err(holdfast_cluster::ClusterError::Halted {
            origin: halted_origin,
            ..
        }) => assert_eq!(halted_origin, origin),
        other => panic!("a halted daemon took an input: {other:?}"),
    }
    // Nothing was appended over the dead node's outputs.
    assert_eq!(
        b.block_on(b.cluster.outputs(origin, 0, 10))
            .expect("readable")
            .len(),
        5
    );
}

/// With one output entry kept per daemon, the owners after two crashes
/// replay inputs whose outputs the server has dropped. The first learns how
/// far the chain went from the last output kept, the second from the first
/// one's claim (the only entry left): neither appends a dropped output
/// again. Every entry published on the subject is watched, so a doubled
/// output shows even though retention would drop it from the stream.
#[test]
fn outputs_dropped_by_retention_are_not_appended_again_by_later_owners() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let keep_one_entry = |config: &mut holdfast_cluster::ClusterConfig| {
        config.output_retention = 1;
        // No snapshot after the spawn's: every later owner replays from 0.
        config.snapshot_every_events = 1_000;
    };
    let mut nodes: Vec<Option<TestNode>> = (1..=3)
        .map(|seed| {
            let node = TestNode::try_start_adjusted(&server.url(), "retention", seed, LEASE, keep_one_entry);
            Some(node.expect("the node joins"))
        })
        .collect();
    let published = tokio.block_on(watch_output_entries(&server.url(), "hf.retention.out.>"));
    let first = nodes[0].as_ref().expect("running");
    let origin = first.spawn_counters(1)[0];
    first.send_ticks(origin, 10);
    wait_for_output(first, origin, 10);
    let mut claim = wait_for_claim_after(&published, 0);
    for _crash in 0..2 {
        let owner = nodes
            .iter()
            .position(|node| node.as_ref().is_some_and(|node| node.id() == claim.1))
            .expect("the claimer is one of the nodes");
        nodes[owner].take().expect("running").crash();
        claim = wait_for_claim_after(&published, claim.0);
    }
    let last = nodes.iter().flatten().next().expect("a node still runs");
    assert_eq!(last.id(), claim.1, "the last node left claimed");
    last.send_ticks(origin, 1);
    wait_for_output(last, origin, 11);
    let kept = last
        .block_on(last.cluster.outputs(origin, 0, 100))
        .expect("readable");
    let kept: Vec<(u64, Vec<u8>)> = kept
        .iter()
        .map(|output| (output.seq, output.payload.to_vec()))
        .collect();
    assert_eq!(
        kept,
        vec![(11, 11u64.to_le_bytes().to_vec())],
        "the one entry kept"
    );
    let published = published.lock().expect("not poisoned").clone();
    let seqs: Vec<u64> = published
        .iter()
        .filter_map(|entry| match entry {
            OutputEntry::Output(event) => Some(CausalLink::from_bytes(&event.link).sequence),
            OutputEntry::Claim { .. } => None,
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=11).collect::<Vec<u64>>(),
        "each output published once, in order"
    );
    let throughs: Vec<Option<u64>> = published
        .iter()
        .filter_map(|entry| match entry {
            OutputEntry::Claim { through, .. } => Some(*through),
            OutputEntry::Output(_) => None,
        })
        .collect();
    assert_eq!(
        throughs,
        vec![Some(0), Some(10), Some(10)],
        "the spawn's claim and each failover's"
    );
}

/// The node that creates the outputs stream sets its limit; a node
/// configured otherwise appends under the stream's limit, not its own.
#[test]
fn a_node_configured_with_another_retention_follows_the_streams() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let creator = TestNode::try_start_adjusted(&server.url(), "follow", 1, LEASE, |config| {
        config.output_retention = 3;
    })
    .expect("the first node joins");
    let other = TestNode::try_start_adjusted(&server.url(), "follow", 2, LEASE, |config| {
        config.output_retention = 1_000;
    })
    .expect("the second node joins");
    let origin = other.spawn_counters(1)[0];
    let owner = other.block_on(other.cluster.daemon(origin)).expect("known").node;
    if owner != other.id() {
        let report = other
            .block_on(other.cluster.migrate(origin, &other.id()))
            .expect("moved to the node configured otherwise");
        assert!(report.target_ready);
    }
    other.send_ticks(origin, 6);
    wait_for_output(&other, origin, 6);
    // Of the claims and six outputs, the stream keeps the last three.
    let kept: Vec<u64> = creator
        .block_on(creator.cluster.outputs(origin, 0, usize::MAX))
        .expect("readable")
        .iter()
        .map(|output| output.seq)
        .collect();
    assert_eq!(kept, vec![4, 5, 6]);
    let limit = tokio.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connects");
        let mut stream = async_nats::jetstream::new(client)
            .get_stream("HF_follow_OUT")
            .await
            .expect("the outputs stream");
        stream
            .info()
            .await
            .expect("its info")
            .config
            .max_messages_per_subject
    });
    assert_eq!(limit, 3, "the second node left the creator's limit in force");
}

#[test]
fn a_retention_of_no_output_entry_is_refused_before_connecting() {
    // Nothing listens on port 1: the refusal must come first.
    let refused = TestNode::try_start_adjusted("nats://127.0.0.1:1", "retention", 1, LEASE, |config| {
        config.output_retention = 0;
    });
    match refused {
        Err(holdfast_cluster::ClusterError::InvalidConfig { field, .. }) => {
            assert_eq!(field, "output_retention")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a node kept no output entry"),
    }
}

/// `snapshot_every` bounds how old an owner's last snapshot gets while
/// inputs it does not cover wait, whether the daemon is quiet (no input
/// comes to trigger it) or busy (inputs keep coming, never `snapshot_every_events`
/// of them: the count rule is switched off).
#[test]
fn a_daemon_is_snapshotted_once_its_last_snapshot_is_snapshot_every_old_quiet_or_busy() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::try_start_adjusted(&server.url(), "age", 1, LEASE, |config| {
        config.snapshot_every_events = 0;
        config.snapshot_every = Duration::from_millis(400);
    })
    .expect("the node joins");
    let origin = node.spawn_counters(1)[0];
    let snapshot_seq = || {
        node.block_on(node.cluster.daemon(origin))
            .expect("known")
            .snapshot_input_seq
    };
    let wait_for_snapshot_through = |seq: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while snapshot_seq() < seq {
            assert!(
                std::time::Instant::now() < deadline,
                "a snapshot through {seq} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Quiet: three inputs, then none, so only the task's timer can take
    // the snapshot.
    let mut last = 0;
    for _ in 0..3 {
        last = node
            .block_on(node.cluster.submit(origin, Bytes::from_static(b"+1"), None))
            .expect("accepted");
    }
    wait_for_snapshot_through(last);
    assert_eq!(
        snapshot_seq(),
        last,
        "the quiet daemon's snapshot covers its last input"
    );

    // Busy: an input every 50 ms, far inside the quiet check (1 s), for
    // at least three intervals; snapshots must come while they do.
    let quiet_snapshot = last;
    let busy_until = std::time::Instant::now() + Duration::from_millis(1_500);
    let mut taken_while_busy = 0;
    while std::time::Instant::now() < busy_until || taken_while_busy == 0 {
        assert!(
            std::time::Instant::now() < busy_until + Duration::from_secs(10),
            "no snapshot while inputs kept coming"
        );
        last = node
            .block_on(node.cluster.submit(origin, Bytes::from_static(b"+1"), None))
            .expect("accepted");
        let covered = snapshot_seq();
        if covered > quiet_snapshot && covered < last {
            taken_while_busy += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(taken_while_busy > 0);
    wait_for_snapshot_through(last);
}

/// Every entry published on `subjects`, decoded, in the order seen.
async fn watch_output_entries(url: &str, subjects: &str) -> Arc<Mutex<Vec<OutputEntry>>> {
    let client = async_nats::connect(url).await.expect("connects");
    let mut entries = client.subscribe(subjects.to_owned()).await.expect("subscribes");
    client.flush().await.expect("subscribed");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        let _client = client;
        while let Some(message) = entries.next().await {
            let entry = wire::decode::<OutputEntry>(&message.payload).expect("an output entry");
            sink.lock().expect("not poisoned").push(entry);
        }
    });
    seen
}

/// Waits until `origin` has an output of chain sequence `seq`.
fn wait_for_output(node: &TestNode, origin: u64, seq: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let outputs = node
            .block_on(node.cluster.outputs(origin, seq, 1))
            .expect("readable");
        if outputs.first().is_some_and(|output| output.seq == seq) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "output {seq} within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a claim of an epoch after `epoch` is published; returns its
/// epoch and node.
fn wait_for_claim_after(published: &Mutex<Vec<OutputEntry>>, epoch: u64) -> (u64, String) {
    let deadline = std::time::Instant::now() + LEASE + Duration::from_secs(15);
    loop {
        let claim = published
            .lock()
            .expect("not poisoned")
            .iter()
            .find_map(|entry| match entry {
                OutputEntry::Claim {
                    epoch: claimed, node, ..
                } if *claimed > epoch => Some((*claimed, node.clone())),
                _ => None,
            });
        if let Some(claim) = claim {
            return claim;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a claim after epoch {epoch} within the lease + 15 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
