//! Closing is panic-safe (issue 14): a module whose `before_close` (fini)
//! or drop panics is logged, every other module of the image still gets its
//! fini and is closed, and nothing unwinds out of `reclaim`.

use std::sync::{Arc, Mutex};

use holdfast_plugin::{BundleLoader, LoadContext, LoadedModule, LoaderError, ManifestData, Runtime};
use holdfast_plugin_abi::{BundleId, HostApi, LogLevel};

/// What the well-behaved module saw, in order.
type Seen = Arc<Mutex<Vec<&'static str>>>;

struct Panicky;

impl LoadedModule for Panicky {
    fn before_close(&mut self, _host: *const HostApi) {
        panic!("before_close panicked");
    }
}

impl Drop for Panicky {
    fn drop(&mut self) {
        panic!("drop panicked");
    }
}

struct Recorder(Seen);

impl LoadedModule for Recorder {
    fn before_close(&mut self, _host: *const HostApi) {
        self.0.lock().unwrap().push("before_close");
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.0.lock().unwrap().push("drop");
    }
}

/// Adopts a panicking module, then a recording one.
struct TwoModules(Seen);

impl BundleLoader for TwoModules {
    fn loader_name(&self) -> &'static str {
        "scripted"
    }

    fn load(&self, _manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        ctx.adopt(Box::new(Panicky));
        ctx.adopt(Box::new(Recorder(self.0.clone())));
        Ok(())
    }
}

#[test]
fn a_module_panicking_in_fini_or_drop_does_not_stop_the_others_closing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        format!(
            "loader = \"scripted\"\nname = \"scripted\"\nid = \"{}\"\nversion = \"1.0.0\"\nfile = \"lib.bin\"\nprovides = []\n",
            BundleId::new("scripted")
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("lib.bin"), b"scripted").unwrap();
    let seen = Seen::default();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let logged = errors.clone();
    let runtime = Runtime::builder()
        .loader(TwoModules(seen.clone()))
        .logger(move |level, message| {
            if level == LogLevel::Error {
                logged.lock().unwrap().push(message.to_owned());
            }
        })
        .build()
        .unwrap();
    let id = runtime.load_bundle(dir.path()).unwrap();
    runtime.unload_bundle(id).unwrap();
    // Other test threads may be pinned for a moment: retry for up to 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while runtime.reclaim() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(runtime.pending_closes(), 0);
    assert_eq!(*seen.lock().unwrap(), ["before_close", "drop"]);
    assert_eq!(
        *errors.lock().unwrap(),
        [
            "[scripted] a module panicked in before_close",
            "[scripted] a module panicked while being closed"
        ]
    );
    // The bundle loads again: nothing was left busy or in fini.
    let again = runtime.load_bundle(dir.path()).unwrap();
    assert_eq!(again, id);
}
