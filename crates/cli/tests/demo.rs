//! The demo runs the real binary end to end: the drifted release is refused
//! with its reason and the image hash is unchanged.

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
    assert!(stdout.contains("v3  refused: layout refused: stable key demo.users.v1 is recorded on MemoryManager ID 100 but declared on MemoryManager ID 101"), "{stdout}");
    assert!(stdout.contains("(unchanged)"), "{stdout}");
    assert!(stdout.contains("v3' accepted at generation 3"), "{stdout}");
    assert!(stdout.contains("user 2 still has balance Some(250)"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
