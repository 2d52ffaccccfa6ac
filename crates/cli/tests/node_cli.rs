//! `holdfast run` and the client commands as a person uses them: the exit
//! codes of a node that cannot start, and spawn/send/outputs/daemons/reload
//! against a running node.

use std::path::PathBuf;
use std::process::Command;

use holdfast_host::samples::{self, Sample};

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

#[test]
fn a_damaged_database_makes_run_exit_2_and_stays_untouched() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("holdfast.redb"),
        b"not a database at all, just some bytes",
    )
    .unwrap();
    let output = holdfast()
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert_eq!(
        std::fs::read(data.join("holdfast.redb")).unwrap(),
        b"not a database at all, just some bytes"
    );
}

#[test]
fn listening_beyond_loopback_without_a_token_exits_1() {
    let root = tempfile::tempdir().unwrap();
    let output = holdfast()
        .args(["run", "--listen", "0.0.0.0:0", "--data"])
        .arg(root.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("requires --token-file"), "{stderr}");
}

#[test]
fn a_zero_snapshot_interval_is_refused_before_anything_is_opened() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let output = holdfast()
        // Were the interval accepted, the listen address would end the
        // run with exit 1 instead of serving.
        .args([
            "run",
            "--snapshot-every-ms",
            "0",
            "--listen",
            "0.0.0.0:0",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--snapshot-every-ms"), "{stderr}");
    assert!(!data.exists(), "nothing is created for a refused command line");
}

#[test]
fn requiring_signatures_needs_a_readable_trusted_key() {
    let root = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let output = holdfast()
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--signature-policy",
                "require",
                "--data",
            ])
            .arg(root.path().join("data"))
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("at least one trusted key"), "{stderr}");

    let not_a_key = root.path().join("not-a-key.pub");
    std::fs::write(&not_a_key, "hello\n").unwrap();
    let (code, stderr) = run(&["--trusted-key", not_a_key.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not-a-key.pub"), "{stderr}");
}

#[test]
fn client_commands_drive_a_running_node() {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixture-target"); // shared with the plugin and host tests: one build of the fixtures
    std::fs::create_dir_all(&target).unwrap();
    let lock = std::fs::File::create(target.join(".lock")).unwrap();
    lock.lock().unwrap();
    let built = samples::build(&[Sample::CounterV1, Sample::CounterV2], &target).unwrap();
    lock.unlock().unwrap();
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    built
        .install(Sample::CounterV1, &plugins.join("counter"))
        .unwrap();
    let started = holdfast_cli::run::spawn_node(
        std::path::Path::new(env!("CARGO_BIN_EXE_holdfast")),
        &root.path().join("data"),
        &plugins,
        "info",
    )
    .unwrap();
    let (mut node, url) = (started.child, started.url);
    let client = |args: &[&str]| {
        let output = holdfast().args(args).args(["--node", &url]).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, origin, _) = client(&["spawn", "counter"]);
    assert_eq!(code, Some(0));
    let origin = origin.trim().to_owned();
    assert_eq!(origin.len(), 16, "{origin}");
    let (code, out, _) = client(&["send", &origin, "hello", "--key", "k1"]);
    assert_eq!((code, out.as_str()), (Some(0), "accepted as input 1\n"));
    let (_, out, _) = client(&["send", &origin, "hello", "--key", "k1"]);
    assert_eq!(
        out, "accepted as input 1\n",
        "a repeated key is not journaled again"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let outputs = loop {
        let (_, out, _) = client(&["outputs", &origin, "--json"]);
        let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
        if !outputs.as_array().unwrap().is_empty() || std::time::Instant::now() > deadline {
            break outputs;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(outputs[0]["seq"], 1);
    assert_eq!(
        outputs[0]["payload_base64"], "AQAAAAAAAAA=",
        "the count 1 as 8 LE bytes"
    );
    let (_, out, _) = client(&["daemons"]);
    assert!(
        out.starts_with(&format!("{origin}  counter@1.0  running")),
        "{out}"
    );
    built
        .install(Sample::CounterV2, &plugins.join("counter"))
        .unwrap();
    let (code, out, _) = client(&["reload", "counter"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("counter 1.0.0 -> 2.0.0: 1 daemons carried"),
        "{out}"
    );
    let (code, _, err) = client(&["send", "0000000000000000", "x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown_daemon"), "{err}");
    Command::new("kill")
        .arg("-TERM")
        .arg(node.id().to_string())
        .status()
        .unwrap();
    assert!(node.wait().unwrap().success());
}
