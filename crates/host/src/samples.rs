//! Sample daemon bundles built from `fixtures/plugins` of the source tree:
//! the demo's counter kind in its versions, and the fixtures the node's
//! tests and benchmarks use. Building them runs cargo (and the C compiler
//! for the C kind) on first use; later calls find them up to date.
//!
//! This module is tooling for the demo, tests and benchmarks. It only
//! builds and lays out bundle directories; it never loads them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A sample bundle: the fixture crate (or C source) and its directory name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// `counter` 1.0.0: kind `daemon.counter@1` at 1.0, state = the count.
    CounterV1,
    /// `counter` 2.0.0: kind 1.1, another state format; converts 1.0's.
    CounterV2,
    /// `counter` 3.0.0 whose restore refuses every state.
    CounterV3Broken,
    /// `counter` 2.1.0 whose restore fails for a count of exactly 13.
    CounterRestoreFailsOne,
    /// `counter` with a mismatched ABI layout table.
    CounterBadLayout,
    /// `panicky` 1.0.0: panics on the event `panic`, and in restore at 7.
    Panicky,
    /// `nondet` 1.0.0: outputs depend on the clock.
    Nondet,
    /// `ccounter` 1.0.0: the counter written in C.
    CCounter,
}

impl Sample {
    /// Every sample.
    pub const ALL: [Self; 8] = [
        Self::CounterV1,
        Self::CounterV2,
        Self::CounterV3Broken,
        Self::CounterRestoreFailsOne,
        Self::CounterBadLayout,
        Self::Panicky,
        Self::Nondet,
        Self::CCounter,
    ];

    /// The fixture crate (the library stem for the C kind).
    pub fn crate_name(self) -> &'static str {
        match self {
            Self::CounterV1 => "daemon_counter_v1",
            Self::CounterV2 => "daemon_counter_v2",
            Self::CounterV3Broken => "daemon_counter_v3_broken",
            Self::CounterRestoreFailsOne => "daemon_counter_restore_fails_one",
            Self::CounterBadLayout => "daemon_counter_bad_layout",
            Self::Panicky => "daemon_panicky",
            Self::Nondet => "daemon_nondet",
            Self::CCounter => "c_counter_daemon",
        }
    }

    fn is_c(self) -> bool {
        self == Self::CCounter
    }
}

/// Why the samples could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the sample bundles failed: {0}")]
pub struct SampleError(String);

/// Where built samples are laid out.
#[derive(Clone, Debug)]
pub struct Samples {
    /// One directory per sample, named by its crate.
    pub bundles: PathBuf,
}

impl Samples {
    /// The bundle directory of `sample`.
    pub fn dir(&self, sample: Sample) -> PathBuf {
        self.bundles.join(sample.crate_name())
    }

    /// Copies the bundle of `sample` to `dest` (a plugins directory entry),
    /// replacing what is there.
    ///
    /// # Errors
    /// The I/O error.
    pub fn install(&self, sample: Sample, dest: &Path) -> std::io::Result<()> {
        copy_dir(&self.dir(sample), dest)
    }
}

/// The fixtures workspace of this source tree.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/plugins")
}

/// Builds `samples` (release, into `target_dir`) and lays their bundles out
/// under `target_dir/bundles`.
///
/// # Errors
/// `SampleError` with cargo's or the compiler's output.
pub fn build(samples: &[Sample], target_dir: &Path) -> Result<Samples, SampleError> {
    let fixtures = fixtures_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let crates: Vec<&str> = samples
        .iter()
        .filter(|sample| !sample.is_c())
        .map(|sample| sample.crate_name())
        .collect();
    if !crates.is_empty() {
        let mut command = Command::new(cargo);
        command
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(fixtures.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        for name in &crates {
            command.args(["-p", name]);
        }
        run(&mut command)?;
    }
    let built = target_dir.join("release");
    let bundles = target_dir.join("bundles");
    for &sample in samples {
        let name = sample.crate_name();
        let (library, manifest) = if sample.is_c() {
            let library = built.join(library_file_name(name));
            run(Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .args([
                    "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared", "-I",
                ])
                .arg(fixtures.join("../../crates/plugin-abi/include"))
                .arg(fixtures.join("c/counter_daemon.c"))
                .arg("-o")
                .arg(&library))?;
            (library, fixtures.join("c/counter_daemon.manifest.toml"))
        } else {
            (
                built.join(library_file_name(name)),
                fixtures.join(name).join("manifest.toml"),
            )
        };
        let dest = bundles.join(name);
        std::fs::create_dir_all(&dest).map_err(|error| SampleError(error.to_string()))?;
        let file_name = library.file_name().expect("a library path has a file name");
        copy_if_changed(&library, &dest.join(file_name))?;
        copy_if_changed(&manifest, &dest.join("manifest.toml"))?;
    }
    Ok(Samples { bundles })
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<(), SampleError> {
    let bytes = std::fs::read(from).map_err(|error| SampleError(format!("{}: {error}", from.display())))?;
    if std::fs::read(to).is_ok_and(|held| held == bytes) {
        return Ok(());
    }
    // Written beside and renamed, so a running node never sees half a file.
    let staging = to.with_extension("staging");
    std::fs::write(&staging, &bytes).map_err(|error| SampleError(error.to_string()))?;
    std::fs::rename(&staging, to).map_err(|error| SampleError(error.to_string()))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let staging = to.join(entry.file_name()).with_extension("staging");
        std::fs::copy(entry.path(), &staging)?;
        std::fs::rename(&staging, to.join(entry.file_name()))?;
    }
    Ok(())
}

/// `lib<stem>.so` (or the platform's equivalent).
pub fn library_file_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

fn run(command: &mut Command) -> Result<(), SampleError> {
    let output = command
        .output()
        .map_err(|error| SampleError(format!("{command:?} could not start: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(SampleError(format!(
            "{command:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}
