//! The demo runs the real binary end to end: a node's daemon keeps its
//! count through a hot reload, a `kill -9` and a refused broken release;
//! the drifted stable-memory release is refused with its reason and the
//! image hash is unchanged.

use std::process::Command;

#[test]
fn demo_refuses_the_swapped_release_and_leaves_the_image_unchanged() {
    let dir = std::env::temp_dir().join(format!("holdfast-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .expect("run holdfast");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("sent 5 events; v1 counted 5"), "{stdout}");
    assert!(
        stdout.contains("hot reload 1.0.0 -> 2.0.0: 1 daemon carried"),
        "{stdout}"
    );
    assert!(stdout.contains("sent 3 more; v2 counted 8"), "{stdout}");
    assert!(stdout.contains("with 8 events processed"), "{stdout}");
    assert!(stdout.contains("sent 1 more; the count is 9"), "{stdout}");
    assert!(
        stdout.contains("broken v3 refused: reload_rolled_back"),
        "{stdout}"
    );
    assert!(stdout.contains("v2 keeps serving: the count is 10"), "{stdout}");
    assert!(stdout.contains("v3  refused: layout refused: stable key demo.users.v1 is recorded on MemoryManager ID 100 but declared on MemoryManager ID 101"), "{stdout}");
    assert!(stdout.contains("(unchanged)"), "{stdout}");
    assert!(stdout.contains("v3' accepted at generation 3"), "{stdout}");
    assert!(stdout.contains("user 2 still has balance Some(250)"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
