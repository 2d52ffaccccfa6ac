//! The daemon-kind adapter: a compute [`MeshDaemon`] whose code is a plugin
//! contract `daemon.<kind>` (spec/host.md §3), and the [`ReloadGate`] that
//! keeps every call into plugin code out of a reload's way.
//!
//! The adapter's state bytes (what compute keeps in a [`StateSnapshot`])
//! are an envelope that records which contract version wrote them, so new
//! code converts old state through its `restore(version, bytes)`:
//!
//! ```text
//! tag u8 = 0 (fresh: no plugin state yet) | 1 (plugin state follows)
//! major u32 LE · minor u32 LE · patch u32 LE · plugin state bytes   (tag 1)
//! ```
//!
//! [`KindRegistry`] is the one place that turns the kinds loaded bundles
//! provide into compute factories; the single-node engine and cluster mode
//! both ask it.
//!
//! This module never touches storage and never decides when to snapshot.
//!
//! [`StateSnapshot`]: holdfast_compute::StateSnapshot

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use holdfast_compute::{
    CapabilityFilter, CausalEvent, CoreDaemonError, DaemonHealth, DaemonRuntime, MeshDaemon,
};
use holdfast_plugin::Runtime;
use holdfast_plugin::daemon::DaemonInstance;
use holdfast_plugin_abi::Version;
use parking_lot::{Condvar, Mutex};

const FRESH: u8 = 0;
const WITH_STATE: u8 = 1;
const VERSION_LEN: usize = 12;

/// The state envelope of a daemon that has not processed anything yet.
pub(crate) fn fresh_state() -> Bytes {
    Bytes::from_static(&[FRESH])
}

/// Wraps plugin state written by contract version `version`.
pub(crate) fn wrap_state(version: Version, state: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(1 + VERSION_LEN + state.len());
    out.push(WITH_STATE);
    for part in [version.major, version.minor, version.patch] {
        out.extend_from_slice(&part.to_le_bytes());
    }
    out.extend_from_slice(state);
    Bytes::from(out)
}

/// What an envelope holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Envelope<'a> {
    Fresh,
    State { version: Version, state: &'a [u8] },
}

/// Reads an envelope; `None` for bytes that are not one.
pub(crate) fn unwrap_state(bytes: &[u8]) -> Option<Envelope<'_>> {
    match bytes.split_first()? {
        (&FRESH, []) => Some(Envelope::Fresh),
        (&WITH_STATE, rest) if rest.len() >= VERSION_LEN => {
            let part = |index: usize| {
                u32::from_le_bytes(
                    rest[index * 4..index * 4 + 4]
                        .try_into()
                        .expect("a four-byte slice of a checked length"),
                )
            };
            Some(Envelope::State {
                version: Version::new(part(0), part(1), part(2)),
                state: &rest[VERSION_LEN..],
            })
        }
        _ => None,
    }
}

/// A daemon whose code is a plugin contract. It is born empty and gets its
/// plugin instance in [`MeshDaemon::restore`]: the node always spawns
/// through `spawn_from_snapshot`, with [`fresh_state`] for a new daemon, so
/// a kind that cannot make an instance fails the spawn with its reason
/// instead of failing later.
///
/// With a gate (cluster mode, where no engine stands between compute and
/// the daemon), every call into plugin code waits while a reload holds the
/// gate closed, and the reload waits for the call in progress.
pub(crate) struct PluginDaemon {
    kind: String,
    plugins: Arc<Runtime>,
    instance: Option<DaemonInstance>,
    gate: Option<Arc<ReloadGate>>,
}

impl PluginDaemon {
    pub(crate) fn unborn(kind: String, plugins: Arc<Runtime>, gate: Option<Arc<ReloadGate>>) -> Self {
        Self {
            kind,
            plugins,
            instance: None,
            gate,
        }
    }

    /// Inside the gate, if this daemon has one.
    fn enter(&self) -> Option<Inside<'_>> {
        self.gate.as_deref().map(ReloadGate::enter)
    }

    fn instance(&self) -> Result<&DaemonInstance, CoreDaemonError> {
        self.instance.as_ref().ok_or_else(|| {
            CoreDaemonError::ProcessFailed(format!("daemon of kind '{}' has no instance", self.kind))
        })
    }
}

impl MeshDaemon for PluginDaemon {
    fn name(&self) -> &str {
        &self.kind
    }

    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        let _inside = self.enter();
        let mut outputs = Vec::new();
        self.instance()?
            .process(&event.payload, &mut |output| {
                outputs.push(Bytes::copy_from_slice(output));
            })
            .map_err(|error| CoreDaemonError::ProcessFailed(error.to_string()))?;
        Ok(outputs)
    }

    fn snapshot(&self) -> Option<Bytes> {
        let _inside = self.enter();
        let instance = self.instance.as_ref()?;
        let saved = instance
            .version()
            .and_then(|version| Ok((version, instance.save()?)));
        match saved {
            Ok((version, state)) => Some(wrap_state(version, &state)),
            Err(error) => {
                tracing::error!(kind = %self.kind, %error, "a daemon could not save its state");
                None
            }
        }
    }

    fn is_stateful(&self) -> bool {
        true
    }

    /// Unhealthy when the plugin instance no longer answers (gone with its
    /// contract); the engine then puts the daemon back to its durable state.
    fn health(&self) -> DaemonHealth {
        let _inside = self.enter();
        match self.instance.as_ref().map(DaemonInstance::version) {
            Some(Ok(_)) => DaemonHealth::Healthy,
            _ => DaemonHealth::Unhealthy,
        }
    }

    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        let gate = self.gate.clone();
        let _inside = gate.as_deref().map(ReloadGate::enter);
        let instance = match unwrap_state(&state) {
            Some(Envelope::Fresh) => self.plugins.create_daemon(&self.kind),
            Some(Envelope::State { version, state }) => {
                self.plugins.restore_daemon(&self.kind, version, state)
            }
            None => {
                return Err(CoreDaemonError::RestoreFailed(
                    "the stored state is not a holdfast daemon envelope".into(),
                ));
            }
        };
        self.instance = Some(instance.map_err(|error| CoreDaemonError::RestoreFailed(error.to_string()))?);
        Ok(())
    }
}

/// The daemon kinds loaded bundles provide, each registered with compute
/// as a factory of [`PluginDaemon`]s. A factory is registered once per kind
/// name and never removed: the adapter finds the kind's current code when it
/// restores, so a reload or a bundle that comes back needs no new factory.
///
/// Daemons made after [`KindRegistry::gate_every_call`] pass the reload gate
/// themselves (cluster mode); before it, the engine does that for them.
pub(crate) struct KindRegistry {
    plugins: Arc<Runtime>,
    compute: DaemonRuntime,
    registered: Mutex<HashSet<String>>,
    gate: Arc<ReloadGate>,
    gated: Arc<AtomicBool>,
}

impl KindRegistry {
    pub(crate) fn new(plugins: Arc<Runtime>, compute: DaemonRuntime, gate: Arc<ReloadGate>) -> Self {
        Self {
            plugins,
            compute,
            registered: Mutex::new(HashSet::new()),
            gate,
            gated: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on every daemon made passes the reload gate around each
    /// call into plugin code. Only for a node whose engine hosts no
    /// daemons: the engine enters the gate itself, and a daemon that waited
    /// for it inside the engine's own entry would never see it open.
    pub(crate) fn gate_every_call(&self) {
        self.gated.store(true, Ordering::Release);
    }

    /// The kinds present now with their `major.minor`; every kind returned
    /// has a factory registered with compute (a kind whose registration
    /// failed, because compute is shutting down, is left out).
    pub(crate) fn present(&self) -> HashMap<String, String> {
        let mut present: HashMap<String, String> = self
            .plugins
            .daemon_kinds()
            .into_iter()
            .map(|info| {
                (
                    info.kind,
                    format!("{}.{}", info.version.major, info.version.minor),
                )
            })
            .collect();
        let mut registered = self.registered.lock();
        present.retain(|kind, _| {
            if registered.contains(kind) {
                return true;
            }
            let plugins = Arc::clone(&self.plugins);
            let name = kind.clone();
            let gate = Arc::clone(&self.gate);
            let gated = Arc::clone(&self.gated);
            let outcome = self.compute.register_factory(kind, move || {
                let gate = gated.load(Ordering::Acquire).then(|| Arc::clone(&gate));
                Box::new(PluginDaemon::unborn(name.clone(), Arc::clone(&plugins), gate))
            });
            if outcome.is_ok() {
                registered.insert(kind.clone());
            }
            outcome.is_ok()
        });
        present
    }
}

/// Keeps plugin calls and reloads apart: the engine enters before it calls
/// into any daemon and leaves after; a reload closes the gate (waiting for
/// the engine to leave) at its `Preparing` event and opens it at `Reloaded`
/// or `Failed`. While it is closed the engine keeps journaling events but
/// does not process them.
#[derive(Default)]
pub(crate) struct ReloadGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    inside: usize,
    closed: bool,
}

/// Proof of being inside an open gate; leaves on drop.
pub(crate) struct Inside<'g>(&'g ReloadGate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.inside -= 1;
        if state.inside == 0 {
            self.0.changed.notify_all();
        }
    }
}

impl ReloadGate {
    /// Enters unless a reload has closed the gate.
    pub(crate) fn try_enter(&self) -> Option<Inside<'_>> {
        let mut state = self.state.lock();
        if state.closed {
            return None;
        }
        state.inside += 1;
        Some(Inside(self))
    }

    /// Closes the gate and waits until nobody is inside.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        while state.inside > 0 {
            self.changed.wait(&mut state);
        }
    }

    /// Enters, waiting while a reload holds the gate closed.
    pub(crate) fn enter(&self) -> Inside<'_> {
        let mut state = self.state.lock();
        while state.closed {
            self.changed.wait(&mut state);
        }
        state.inside += 1;
        Inside(self)
    }

    /// Opens the gate again.
    pub(crate) fn open(&self) {
        self.state.lock().closed = false;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_refuses_foreign_bytes() {
        let wrapped = wrap_state(Version::new(1, 2, 3), b"abc");
        assert_eq!(
            unwrap_state(&wrapped),
            Some(Envelope::State {
                version: Version::new(1, 2, 3),
                state: b"abc"
            })
        );
        assert_eq!(unwrap_state(&fresh_state()), Some(Envelope::Fresh));
        assert_eq!(unwrap_state(&[]), None);
        assert_eq!(unwrap_state(&[0, 0]), None);
        assert_eq!(unwrap_state(&[1, 0, 0]), None);
        assert_eq!(unwrap_state(&[9]), None);
    }

    #[test]
    fn a_closed_gate_waits_for_those_inside_and_refuses_new_entries() {
        let gate = Arc::new(ReloadGate::default());
        let inside = gate.try_enter().expect("an open gate admits");
        let closer = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.close())
        };
        // The closer cannot finish while someone is inside.
        while !gate.state.lock().closed {
            std::thread::yield_now();
        }
        assert!(!closer.is_finished());
        assert!(gate.try_enter().is_none());
        drop(inside);
        closer.join().expect("the closer returns once the gate is empty");
        assert!(gate.try_enter().is_none());
        gate.open();
        assert!(gate.try_enter().is_some());
    }

    #[test]
    fn a_waiting_entry_gets_in_once_the_gate_opens() {
        let gate = Arc::new(ReloadGate::default());
        gate.close();
        let waiter = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let _inside = gate.enter();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a closed gate holds the entry back");
        gate.open();
        waiter.join().expect("the entry gets in after open");
        assert_eq!(gate.state.lock().inside, 0);
    }
}
