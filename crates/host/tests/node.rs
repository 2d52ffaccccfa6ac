//! The node's behaviour through its Rust API (spec/host.md §9): exactly
//! once across restarts, idempotency keys, hot reload under load with its
//! rollbacks, daemons that wait for a missing kind, and the storage format
//! guard.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Dirs, all_outputs, count_of, feed, spawn, wait_processed};
use holdfast_host::samples::Sample;
use holdfast_host::{DaemonStatus, Node, NodeError, RequestError};

fn payload(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

async fn send_n(node: &Node, origin: &str, n: u64) {
    for _ in 0..n {
        node.send(origin, payload("tick"), None).await.unwrap();
    }
}

/// Outputs 1..=n with counts 1..=n, each linked to its parent.
fn assert_counts_one_to(outputs: &[holdfast_host::Output], n: u64) {
    let counts: Vec<u64> = outputs.iter().map(|output| count_of(&output.payload)).collect();
    assert_eq!(counts, (1..=n).collect::<Vec<_>>());
    let seqs: Vec<u64> = outputs.iter().map(|output| output.seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    for pair in outputs.windows(2) {
        assert_eq!(
            pair[1].parent_hash, pair[0].hash,
            "output {} links to its parent",
            pair[1].seq
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_processed_once_and_survive_a_restart() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let node = dirs.open().await;
    let spawned = node
        .spawn("counter", serde_json::json!({"note": "x"}))
        .await
        .unwrap();
    assert_eq!(spawned.kind, "counter");
    assert_eq!(spawned.kind_version, "1.0");
    for expected in 1..=5 {
        assert_eq!(
            node.send(&spawned.origin, payload("tick"), None).await.unwrap(),
            expected
        );
    }
    wait_processed(&node, &spawned.origin, 5).await;
    node.drain().await.unwrap();
    drop(node);

    let node = dirs.open().await;
    let view = node.daemon(&spawned.origin).unwrap();
    assert_eq!(
        (view.status, view.events_processed, view.through_seq),
        (DaemonStatus::Running, 5, 5)
    );
    assert_eq!(
        view.entity_id, spawned.entity_id,
        "the identity survives a restart"
    );
    send_n(&node, &spawned.origin, 2).await;
    wait_processed(&node, &spawned.origin, 7).await;
    assert_counts_one_to(&all_outputs(&node, &spawned.origin), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_returns_the_first_sequence_across_a_restart() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let node = dirs.open().await;
    let origin = spawn(&node, "counter").await;
    let key = || Some(Bytes::from_static(b"order-17"));
    assert_eq!(node.send(&origin, payload("a"), key()).await.unwrap(), 1);
    assert_eq!(node.send(&origin, payload("b"), None).await.unwrap(), 2);
    assert_eq!(node.send(&origin, payload("a"), key()).await.unwrap(), 1);
    wait_processed(&node, &origin, 2).await;
    drop(node);

    let node = dirs.open().await;
    assert_eq!(node.send(&origin, payload("a"), key()).await.unwrap(), 1);
    assert_eq!(node.send(&origin, payload("c"), None).await.unwrap(), 3);
    wait_processed(&node, &origin, 3).await;
    assert_counts_one_to(&all_outputs(&node, &origin), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_reloads_under_load_lose_and_double_nothing() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let node = dirs.open().await;
    let mut origins = Vec::new();
    for _ in 0..4 {
        origins.push(spawn(&node, "counter").await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for origin in origins.clone() {
        let (node, stop, sent) = (node.clone(), Arc::clone(&stop), Arc::clone(&sent));
        senders.push(tokio::spawn(async move {
            let mut count = 0u64;
            while !stop.load(Ordering::Acquire) {
                node.send(&origin, Bytes::from_static(b"tick"), None)
                    .await
                    .unwrap();
                count += 1;
                sent.fetch_add(1, Ordering::AcqRel);
            }
            count
        }));
    }
    for round in 0..6 {
        let sample = if round % 2 == 0 {
            Sample::CounterV2
        } else {
            Sample::CounterV1
        };
        dirs.install(sample, "counter");
        let report = node.reload("counter").await.unwrap();
        assert_eq!(report.daemons_carried, 4);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    let mut per_daemon = Vec::new();
    for sender in senders {
        per_daemon.push(sender.await.unwrap());
    }
    for (origin, sent) in origins.iter().zip(per_daemon) {
        wait_processed(&node, origin, sent).await;
        let outputs = all_outputs(&node, origin);
        assert_counts_one_to(&outputs, sent);
        // Each switch happens at one point: the marker (v2 outputs are 9
        // bytes) changes at most once per reload, never back and forth.
        let switches = outputs
            .windows(2)
            .filter(|pair| pair[0].payload.len() != pair[1].payload.len())
            .count();
        assert!(switches <= 6, "{switches} switches for 6 reloads");
    }
    assert_eq!(node.reload_history().len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_reloads_roll_back_with_every_count_unchanged() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let node = dirs.open().await;
    let mut origins = Vec::new();
    for events in [13u64, 3] {
        let origin = spawn(&node, "counter").await;
        feed(&node, &origin, events).await;
        origins.push((origin, events));
    }
    for broken in [
        Sample::CounterRestoreFailsOne,
        Sample::CounterV3Broken,
        Sample::CounterBadLayout,
    ] {
        dirs.install(broken, "counter");
        let error = node
            .reload("counter")
            .await
            .expect_err("a broken bundle is refused");
        assert!(
            matches!(error, RequestError::ReloadRolledBack { ref bundle, .. } if bundle == "counter"),
            "{error:?}"
        );
        for (origin, events) in &origins {
            node.send(origin, payload("tick"), None).await.unwrap();
            wait_processed(&node, origin, events + 1).await;
            let last = all_outputs(&node, origin).pop().unwrap();
            assert_eq!(
                count_of(&last.payload),
                events + 1,
                "{broken:?}: v1 keeps counting"
            );
            assert_eq!(last.payload.len(), 8, "{broken:?}: v1 serves");
        }
        for (_, events) in &mut origins {
            *events += 1;
        }
    }
    let outcomes: Vec<String> = node
        .reload_history()
        .into_iter()
        .map(|report| report.outcome)
        .collect();
    assert_eq!(outcomes, ["rolled_back"; 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_plugin_fails_its_event_and_the_node_stays_up() {
    let dirs = Dirs::new(&[(Sample::Panicky, "panicky")]);
    let node = dirs.open().await;
    let origin = spawn(&node, "panicky").await;
    node.send(&origin, payload("tick"), None).await.unwrap();
    node.send(&origin, payload("panic"), None).await.unwrap();
    node.send(&origin, payload("tick"), None).await.unwrap();
    wait_processed(&node, &origin, 3).await;
    let view = node.daemon(&origin).unwrap();
    assert_eq!((view.events_failed, view.status), (1, DaemonStatus::Running));
    let counts: Vec<u64> = all_outputs(&node, &origin)
        .iter()
        .map(|output| count_of(&output.payload))
        .collect();
    assert_eq!(counts, [1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn daemons_of_a_missing_kind_wait_and_resume_with_their_events() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let node = dirs.open().await;
    let origin = spawn(&node, "counter").await;
    feed(&node, &origin, 3).await;
    node.drain().await.unwrap();
    drop(node);

    dirs.remove("counter");
    let node = dirs.open().await;
    let view = node.daemon(&origin).unwrap();
    assert_eq!(
        (view.status, view.kind_version),
        (DaemonStatus::WaitingForKind, None)
    );
    assert_eq!(node.send(&origin, payload("tick"), None).await.unwrap(), 4);
    assert!(matches!(
        node.spawn("counter", serde_json::Value::Null).await,
        Err(RequestError::UnknownKind { .. })
    ));

    dirs.install(Sample::CounterV2, "counter");
    node.reload("counter").await.unwrap();
    wait_processed(&node, &origin, 4).await;
    assert_eq!(node.daemon(&origin).unwrap().status, DaemonStatus::Running);
    let outputs = all_outputs(&node, &origin);
    assert_counts_one_to(&outputs, 4);
    assert_eq!(
        outputs[3].payload.len(),
        9,
        "v2 processed the waiting event after converting v1's state"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_storage_format_is_refused_and_left_unchanged() {
    let dirs = Dirs::new(&[]);
    let node = dirs.open().await;
    node.drain().await.unwrap();
    drop(node);
    let path = holdfast_host::store::database_path(&dirs.data());
    {
        let db = redb::Database::create(&path).unwrap();
        let write = db.begin_write().unwrap();
        {
            let mut meta = write
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap();
            meta.insert("format", 99u32.to_le_bytes().as_slice()).unwrap();
        }
        write.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let error = Node::open(dirs.config())
        .await
        .err()
        .expect("a newer format is refused");
    assert!(
        matches!(
            error,
            NodeError::NewerFormat {
                found: 99,
                known: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 2);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the database is untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_database_is_reported_and_never_reset() {
    let dirs = Dirs::new(&[]);
    std::fs::create_dir_all(dirs.data()).unwrap();
    let path = holdfast_host::store::database_path(&dirs.data());
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let error = Node::open(dirs.config())
        .await
        .err()
        .expect("a corrupt database is refused");
    assert!(matches!(error, NodeError::Corrupt { .. }), "{error:?}");
    assert_eq!(error.exit_code(), 2);
    assert!(std::fs::read(&path).unwrap() == garbage, "nothing was reset");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dirs = Dirs::new(&[]);
    let node = dirs.open().await;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dirs.data()), 0o700);
    assert_eq!(mode(&holdfast_host::store::database_path(&dirs.data())), 0o600);
    drop(node);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_refused_with_their_typed_errors() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let mut config = dirs.config();
    config.max_event_bytes = 16;
    config.max_daemons = 1;
    let node = Node::open(config).await.unwrap();
    assert!(matches!(
        node.send("xyz", payload("a"), None).await,
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        node.send("00000000000000aa", payload("a"), None).await,
        Err(RequestError::UnknownDaemon { .. })
    ));
    assert!(matches!(
        node.spawn("nope", serde_json::Value::Null).await,
        Err(RequestError::UnknownKind { kind }) if kind == "nope"
    ));
    let origin = spawn(&node, "counter").await;
    assert!(matches!(
        node.spawn("counter", serde_json::Value::Null).await,
        Err(RequestError::TooManyDaemons { max: 1 })
    ));
    assert!(matches!(
        node.send(&origin, Bytes::from(vec![0u8; 17]), None).await,
        Err(RequestError::EventTooLarge { size: 17, max: 16 })
    ));
    assert!(matches!(
        node.reload_bundle("nope"),
        Err(RequestError::UnknownBundle { name }) if name == "nope"
    ));
    node.delete(&origin).await.unwrap();
    assert!(matches!(
        node.daemon(&origin),
        Err(RequestError::UnknownDaemon { .. })
    ));
    node.drain().await.unwrap();
    assert!(matches!(
        node.spawn("counter", serde_json::Value::Null).await,
        Err(RequestError::Draining)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_bound_the_journal_and_retention_bounds_outputs() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let mut config = dirs.config();
    config.snapshot_every_events = 10;
    config.output_retention = 15;
    let node = Node::open(config).await.unwrap();
    let origin = spawn(&node, "counter").await;
    feed(&node, &origin, 25).await;
    let view = node.daemon(&origin).unwrap();
    assert_eq!((view.snapshot_seq, view.journal_depth), (20, 5));
    let outputs = all_outputs(&node, &origin);
    assert_eq!(
        outputs.first().map(|output| output.seq),
        Some(6),
        "outputs older than 20 - 15 are deleted"
    );
    assert_eq!(outputs.len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_slower_than_its_pause_limit_is_rolled_back() {
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter")]);
    let mut config = dirs.config();
    config.reload_pause_limit = Duration::from_nanos(1);
    let node = Node::open(config).await.unwrap();
    let origin = spawn(&node, "counter").await;
    feed(&node, &origin, 2).await;
    dirs.install(Sample::CounterV2, "counter");
    let error = node
        .reload("counter")
        .await
        .expect_err("no reload fits in a nanosecond");
    assert!(
        matches!(&error, RequestError::ReloadRolledBack { reason, .. } if reason.contains("over its limit of 1ns")),
        "{error:?}"
    );
    send_n(&node, &origin, 1).await;
    wait_processed(&node, &origin, 3).await;
    let last = all_outputs(&node, &origin).pop().unwrap();
    assert_eq!(
        (count_of(&last.payload), last.payload.len()),
        (3, 8),
        "v1 kept its state and keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_c_counter_kind_runs_in_the_node() {
    let dirs = Dirs::new(&[(Sample::CCounter, "ccounter")]);
    let node = dirs.open().await;
    let origin = spawn(&node, "ccounter").await;
    feed(&node, &origin, 3).await;
    drop(node);
    let node = dirs.open().await;
    send_n(&node, &origin, 1).await;
    wait_processed(&node, &origin, 4).await;
    assert_counts_one_to(&all_outputs(&node, &origin), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_panics_in_restore_rolls_the_reload_back() {
    let dirs = Dirs::new(&[(Sample::Panicky, "panicky")]);
    let node = dirs.open().await;
    let origin = spawn(&node, "panicky").await;
    feed(&node, &origin, 7).await;
    let error = node
        .reload("panicky")
        .await
        .expect_err("restore panics at count 7");
    assert!(
        matches!(&error, RequestError::ReloadRolledBack { reason, .. } if reason.contains("daemon restore panicked")),
        "{error:?}"
    );
    send_n(&node, &origin, 1).await;
    wait_processed(&node, &origin, 8).await;
    assert_eq!(count_of(&all_outputs(&node, &origin).pop().unwrap().payload), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_in_use_is_refused() {
    let dirs = Dirs::new(&[]);
    let node = dirs.open().await;
    let error = Node::open(dirs.config())
        .await
        .err()
        .expect("a second node on the same data is refused");
    assert!(matches!(error, NodeError::InUse { .. }), "{error:?}");
    assert_eq!(error.exit_code(), 2);
    drop(node);
}
