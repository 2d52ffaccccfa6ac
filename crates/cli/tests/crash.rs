//! The crash campaign of spec/host.md §9: a real `holdfast run` child
//! process, client threads sending events with idempotency keys, and a
//! `kill -9` at a pseudo-random moment, again and again. After every
//! restart each counter's outputs must be contiguous, hash-linked and count
//! exactly its accepted events; at the end, after every unanswered event
//! has been retried with its key, each count equals its acknowledged events.
//!
//! Every third cycle hot-reloads the counter (v1 and v2 in turn, v2 with
//! another state format) while the clients send, shortly before the kill,
//! so replay after a reload is exercised too.
//!
//! `cargo test` runs 10 cycles; `HOLDFAST_CRASH_CYCLES=100 cargo test -p
//! holdfast-cli --test crash -- --nocapture` runs the full campaign.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_cli::client::NodeClient;
use holdfast_host::samples::{self, Sample};
use serde_json::Value;

const DAEMONS: usize = 3;

struct Node {
    child: Child,
    client: NodeClient,
}

fn start(data: &Path, plugins: &Path) -> Node {
    let node =
        holdfast_cli::run::spawn_node(Path::new(env!("CARGO_BIN_EXE_holdfast")), data, plugins, "error")
            .unwrap();
    let client = NodeClient::new(&node.url, None).unwrap();
    Node {
        child: node.child,
        client,
    }
}

fn built_samples() -> samples::Samples {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixture-target"); // shared with the plugin and host tests: one build of the fixtures
    std::fs::create_dir_all(&target).unwrap();
    let lock = std::fs::File::create(target.join(".lock")).unwrap();
    lock.lock().unwrap();
    let built = samples::build(&[Sample::CounterV1, Sample::CounterV2, Sample::Nondet], &target).unwrap();
    lock.unlock().unwrap();
    built
}

fn sample_plugins(root: &Path) -> PathBuf {
    let built = built_samples();
    let plugins = root.join("plugins");
    built
        .install(Sample::CounterV1, &plugins.join("counter"))
        .unwrap();
    built.install(Sample::Nondet, &plugins.join("nondet")).unwrap();
    plugins
}

/// What one client knows: events acknowledged, and the key in flight.
#[derive(Clone, Debug, Default)]
struct Sent {
    acked: u64,
    in_flight: Option<u64>,
}

/// Every output of `origin`, checked: contiguous from 1, each counting its
/// sequence, each linked to the one before. Returns the last count.
fn checked_count(client: &NodeClient, origin: &str) -> u64 {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let from = all.last().map_or(1, |last| last["seq"].as_u64().unwrap() + 1);
        let answer = client.outputs(origin, from, 1000).unwrap();
        assert!(answer.is_success(), "{}", answer.error_text());
        let page = answer.body.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    for (index, output) in all.iter().enumerate() {
        let seq = index as u64 + 1;
        assert_eq!(
            output["seq"].as_u64(),
            Some(seq),
            "outputs of {origin} are contiguous"
        );
        let payload = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            output["payload_base64"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(
            u64::from_le_bytes(payload[..8].try_into().unwrap()),
            seq,
            "output {seq} of {origin} counts once"
        );
        if index > 0 {
            assert_eq!(
                output["parent_hash"],
                all[index - 1]["hash"],
                "output {seq} of {origin} links to its parent"
            );
        }
    }
    all.len() as u64
}

/// Waits until `origin` has processed everything it accepted.
fn settled_count(client: &NodeClient, origin: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = client.daemon(origin).unwrap().body;
        if view["events_processed"] == view["through_seq"] {
            return checked_count(client, origin);
        }
        assert!(Instant::now() < deadline, "{origin} did not catch up: {view}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends until `stop`, one key after the other; an unanswered key stays
/// in flight and is retried first next time.
fn drive(client: NodeClient, origin: String, daemon: usize, sent: Arc<Mutex<Sent>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let key = {
            let mut sent = sent.lock().unwrap();
            let key = sent.in_flight.unwrap_or(sent.acked + 1);
            sent.in_flight = Some(key);
            key
        };
        match client.send(&origin, b"tick", Some(&format!("d{daemon}-e{key}"))) {
            Ok(answer) if answer.is_success() => {
                assert_eq!(answer.body["seq"].as_u64(), Some(key), "key {key} is input {key}");
                let mut sent = sent.lock().unwrap();
                sent.acked = key;
                sent.in_flight = None;
            }
            _ => return,
        }
    }
}

#[test]
fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let cycles: usize = std::env::var("HOLDFAST_CRASH_CYCLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10);
    let root = tempfile::tempdir().unwrap();
    let plugins = sample_plugins(root.path());
    let data = root.path().join("data");
    let mut node = start(&data, &plugins);
    let origins: Vec<String> = (0..DAEMONS)
        .map(|_| {
            node.client.spawn("counter", None).unwrap().body["origin"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let sent: Vec<Arc<Mutex<Sent>>> = (0..DAEMONS).map(|_| Arc::default()).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let drivers: Vec<_> = (0..DAEMONS)
            .map(|daemon| {
                let (client, origin) = (node.client.clone(), origins[daemon].clone());
                let (sent, stop) = (Arc::clone(&sent[daemon]), Arc::clone(&stop));
                std::thread::spawn(move || drive(client, origin, daemon, sent, stop))
            })
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 180));
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        stop.store(true, Ordering::Release);
        for driver in drivers {
            driver.join().unwrap();
        }
        node = start(&data, &plugins);
        for (daemon, origin) in origins.iter().enumerate() {
            let count = settled_count(&node.client, origin);
            let sent = sent[daemon].lock().unwrap().clone();
            let upper = sent.acked + u64::from(sent.in_flight.is_some());
            assert!(
                (sent.acked..=upper).contains(&count),
                "cycle {cycle}: daemon {daemon} counts {count}, {sent:?}"
            );
        }
    }
    // Retry every unanswered key, then restart once more cleanly.
    for (daemon, origin) in origins.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(true));
        let mut state = sent[daemon].lock().unwrap();
        if let Some(key) = state.in_flight.take() {
            let answer = node
                .client
                .send(origin, b"tick", Some(&format!("d{daemon}-e{key}")))
                .unwrap();
            assert_eq!(answer.body["seq"].as_u64(), Some(key));
            state.acked = key;
        }
        drop(stop);
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    assert!(node.child.wait().unwrap().success(), "SIGTERM drains and exits 0");
    let node = start(&data, &plugins);
    for (daemon, origin) in origins.iter().enumerate() {
        let acked = sent[daemon].lock().unwrap().acked;
        assert_eq!(
            settled_count(&node.client, origin),
            acked,
            "daemon {daemon}: every acknowledged event exactly once"
        );
        let view = node.client.daemon(origin).unwrap().body;
        assert_eq!(view["journal_depth"], 0, "a drain snapshots every daemon: {view}");
    }
    println!(
        "crash campaign: {cycles} kill -9 cycles, {:?} events acknowledged",
        sent.iter().map(|s| s.lock().unwrap().acked).collect::<Vec<_>>()
    );
    let mut node = node;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}

#[test]
fn a_nondeterministic_daemon_is_halted_with_the_first_differing_sequence() {
    let root = tempfile::tempdir().unwrap();
    let plugins = sample_plugins(root.path());
    let data = root.path().join("data");
    let mut node = start(&data, &plugins);
    let origin = node.client.spawn("nondet", None).unwrap().body["origin"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..5 {
        assert!(node.client.send(&origin, b"tick", None).unwrap().is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while node
        .client
        .outputs(&origin, 5, 1)
        .unwrap()
        .body
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            Instant::now() < deadline,
            "the nondet daemon produced no output 5"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // No snapshot yet (fewer than 1,000 events): the restart replays all 5.
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let mut node = start(&data, &plugins);
    // The replay runs in the node's first turns after it starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = node.client.daemon(&origin).unwrap().body;
        if view["status"] != "running" || Instant::now() > deadline {
            break view;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(view["status"], "nondeterministic", "{view}");
    assert_eq!(view["halt"]["first_differing_seq"], 1, "{view}");
    let refused = node.client.send(&origin, b"tick", None).unwrap();
    assert_eq!(refused.status, 409, "{}", refused.error_text());
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}
