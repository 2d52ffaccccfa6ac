//! Each `NodeConfig` field that the other tests do not already pin has an
//! effect here: time-based snapshots, the idempotency window, group commit
//! and the plugins-directory scan.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Dirs, spawn, wait_processed};
use holdfast_host::Node;
use holdfast_host::samples::Sample;

fn tick() -> Bytes {
    Bytes::from_static(b"tick")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_every_snapshots_an_idle_daemon_after_the_interval() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let mut config = dirs.config();
    config.snapshot_every_events = 0;
    config.snapshot_every = Duration::from_millis(100);
    let node = Node::open(config).await.unwrap();
    let origin = spawn(&node, "counter").await;
    for _ in 0..3 {
        node.send(&origin, tick(), None).await.unwrap();
    }
    wait_processed(&node, &origin, 3).await;
    wait_until("the timed snapshot covers input 3", || {
        node.daemon(&origin).unwrap().snapshot_seq == 3
    })
    .await;
    assert_eq!(node.daemon(&origin).unwrap().journal_depth, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_beyond_the_count_and_the_window_are_forgotten() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    for (window, expected_first_key_seq) in [(Duration::ZERO, 4), (Duration::from_secs(600), 1)] {
        let mut config = dirs.config();
        config.idempotency_keys = 2;
        config.idempotency_window = window;
        let node = Node::open(config).await.unwrap();
        let origin = spawn(&node, "counter").await;
        for key in ["k1", "k2", "k3"] {
            node.send(&origin, tick(), Some(Bytes::from_static(key.as_bytes())))
                .await
                .unwrap();
        }
        let again = node
            .send(&origin, tick(), Some(Bytes::from_static(b"k1")))
            .await
            .unwrap();
        assert_eq!(again, expected_first_key_seq, "window {window:?}");
        node.delete(&origin).await.unwrap();
        node.drain().await.unwrap();
    }
}

fn commits(node: &Node) -> u64 {
    let text = node.metrics_text();
    text.lines()
        .find_map(|line| line.strip_prefix("holdfast_commits_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the commits counter is exported")
}

#[tokio::test(flavor = "multi_thread")]
async fn group_commit_shares_commits_and_waits_at_most_its_delay() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let mut config = dirs.config();
    config.group_commit_max_delay = Duration::from_millis(300);
    let node = Node::open(config).await.unwrap();
    let origin = spawn(&node, "counter").await;
    let started = Instant::now();
    node.send(&origin, tick(), None).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "a lone sender is not kept waiting for company"
    );
    let before = commits(&node);
    let sends: Vec<_> = (0..20)
        .map(|_| {
            let (node, origin) = (node.clone(), origin.clone());
            tokio::spawn(async move { node.send(&origin, tick(), None).await.unwrap() })
        })
        .collect();
    let mut seqs = Vec::new();
    for send in sends {
        seqs.push(send.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=21).collect::<Vec<u64>>());
    let shared = commits(&node) - before;
    assert!(
        shared <= 10,
        "20 concurrent events share their commits ({shared} commits)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugins_directory_scan_reloads_a_changed_bundle() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let mut config = dirs.config();
    config.plugin_scan_interval = Duration::from_millis(50);
    let node = Node::open(config).await.unwrap();
    let origin = spawn(&node, "counter").await;
    dirs.install(Sample::CounterV2, "counter");
    wait_until("the scan reloaded counter to 2.0.0", || {
        node.bundles()
            .iter()
            .any(|bundle| bundle.name == "counter" && bundle.version == "2.0.0")
    })
    .await;
    node.send(&origin, tick(), None).await.unwrap();
    wait_processed(&node, &origin, 1).await;
    let history = node.reload_history();
    assert_eq!((history.len(), history[0].outcome.as_str()), (1, "reloaded"));
}
