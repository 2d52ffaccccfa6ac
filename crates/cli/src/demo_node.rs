//! The node chapter of the demo (spec/host.md §7): a real `holdfast run`
//! child process on a temporary directory with the sample counter bundle;
//! events, a hot reload to v2 whose state format differs, a `kill -9` and a
//! restart with the count intact, and a broken v3 refused while v2 keeps
//! serving. Every claim it prints is checked against the node's answers;
//! a mismatch fails the demo.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use holdfast_host::samples::{self, Sample, Samples};
use serde_json::Value;

use crate::client::NodeClient;

/// A node child process and a client of it.
struct RunningNode {
    child: Child,
    client: NodeClient,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays the node chapter in `dir`.
pub(crate) fn play(dir: &Path) -> Result<(), String> {
    println!("== 1. A node whose daemons survive a hot reload, a crash and a broken release ==");
    let samples = build_samples()?;
    let data = dir.join("node-data");
    let plugins = dir.join("plugins");
    let counter_dir = plugins.join("counter");
    samples
        .install(Sample::CounterV1, &counter_dir)
        .map_err(|error| format!("installing counter v1: {error}"))?;

    let node = start_node(&data, &plugins)?;
    let spawned = expect_ok(node.client.spawn("counter", None), "spawn a counter")?;
    let origin = text_of(&spawned, "origin")?;
    println!(
        "spawned counter daemon {origin} (kind version {})",
        text_of(&spawned, "kind_version")?
    );
    send_events(&node.client, &origin, 5)?;
    let count = wait_for_count(&node.client, &origin, 5)?;
    println!("sent 5 events; v1 counted {count} (v1 keeps its state as 8 bytes)");

    samples
        .install(Sample::CounterV2, &counter_dir)
        .map_err(|error| format!("installing counter v2: {error}"))?;
    let report = expect_ok(node.client.reload("counter"), "reload to v2")?;
    println!(
        "hot reload {} -> {}: {} daemon carried, paused {} µs; v2 converted v1's state in restore",
        text_of(&report, "from")?,
        text_of(&report, "to")?,
        report["daemons_carried"],
        report["pause_us"],
    );
    send_events(&node.client, &origin, 3)?;
    let count = wait_for_count(&node.client, &origin, 8)?;
    println!("sent 3 more; v2 counted {count} (its outputs carry v2's marker byte)");

    drop(node);
    println!("killed the node with SIGKILL (no drain, no final snapshot)");
    let node = start_node(&data, &plugins)?;
    let view = wait_for_replay(&node.client, &origin)?;
    println!(
        "restarted: daemon {origin} is {} with {} events processed ({} from its snapshot + {} replayed from the journal)",
        text_of(&view, "status")?,
        view["events_processed"],
        view["snapshot_seq"],
        number_of(&view, "events_processed")? - number_of(&view, "snapshot_seq")?,
    );
    send_events(&node.client, &origin, 1)?;
    let count = wait_for_count(&node.client, &origin, 9)?;
    println!("sent 1 more; the count is {count}: nothing lost, nothing counted twice");

    samples
        .install(Sample::CounterV3Broken, &counter_dir)
        .map_err(|error| format!("installing counter v3: {error}"))?;
    let refused = node.client.reload("counter").map_err(|error| error.to_string())?;
    if refused.is_success() {
        return Err("the broken v3 bundle was accepted".into());
    }
    println!("broken v3 refused: {}", refused.error_text());
    send_events(&node.client, &origin, 1)?;
    let count = wait_for_count(&node.client, &origin, 10)?;
    println!("v2 keeps serving: the count is {count}");
    println!();
    Ok(())
}

fn build_samples() -> Result<Samples, String> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/holdfast-samples");
    let fresh = !target.join("bundles").exists();
    if fresh {
        println!("building the sample plugins with cargo (first run only, about a minute)…");
    }
    samples::build(
        &[Sample::CounterV1, Sample::CounterV2, Sample::CounterV3Broken],
        &target,
    )
    .map_err(|error| error.to_string())
}

fn start_node(data: &Path, plugins: &Path) -> Result<RunningNode, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find this binary: {error}"))?;
    let node = crate::run::spawn_node(&exe, data, plugins, "warn")?;
    let client = NodeClient::new(&node.url, None).map_err(|error| error.to_string())?;
    println!("node started at {} on {}", node.url, data.display());
    Ok(RunningNode {
        child: node.child,
        client,
    })
}

fn send_events(client: &NodeClient, origin: &str, count: usize) -> Result<(), String> {
    for _ in 0..count {
        expect_ok(client.send(origin, b"tick", None), "send an event")?;
    }
    Ok(())
}

/// Waits until the daemon's last output shows `count`, and returns it.
fn wait_for_count(client: &NodeClient, origin: &str, count: u64) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outputs = expect_ok(client.outputs(origin, count, 1), "read outputs")?;
        if let Some(last) = outputs.as_array().and_then(|outputs| outputs.last()) {
            let seen = count_of(last)?;
            if seen != count {
                return Err(format!("output {count} shows the count {seen}"));
            }
            return Ok(seen);
        }
        if Instant::now() > deadline {
            return Err(format!("output {count} did not appear within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a restarted daemon has replayed its journal (the node
/// answers requests while the replay runs), and returns its view.
fn wait_for_replay(client: &NodeClient, origin: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = expect_ok(client.daemon(origin), "read the daemon after the restart")?;
        if number_of(&view, "events_processed")? == number_of(&view, "through_seq")? {
            return Ok(view);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the daemon did not replay its journal within 10 s: {view}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn number_of(body: &Value, field: &str) -> Result<u64, String> {
    body[field]
        .as_u64()
        .ok_or_else(|| format!("the node's answer has no number '{field}': {body}"))
}

/// The count in a counter output (8 LE bytes, v2 adds a marker byte).
fn count_of(output: &Value) -> Result<u64, String> {
    let encoded = output["payload_base64"]
        .as_str()
        .ok_or("an output without payload")?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
        .map_err(|error| error.to_string())?;
    let count: [u8; 8] = bytes
        .get(..8)
        .and_then(|head| head.try_into().ok())
        .ok_or("a counter output is at least 8 bytes")?;
    Ok(u64::from_le_bytes(count))
}

fn expect_ok(answer: Result<crate::client::Answer, crate::CliError>, what: &str) -> Result<Value, String> {
    let answer = answer.map_err(|error| format!("{what}: {error}"))?;
    if answer.is_success() {
        Ok(answer.body)
    } else {
        Err(format!("{what}: {}", answer.error_text()))
    }
}

fn text_of(body: &Value, field: &str) -> Result<String, String> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the node's answer has no '{field}': {body}"))
}

/// A directory for the demo's node data beside the image.
pub(crate) fn node_dir(dir: &Path) -> PathBuf {
    dir.join("node")
}
