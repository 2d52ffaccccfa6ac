//! Dependencies between bundles (spec §6.6, §6.7, §10.2 test 12): unload
//! refused while needed, cascade reload of a dependent in order and never
//! nested, a two-bundle cycle reloading each bundle once, and a reload that
//! would break a dependent rolled back.

mod common;

use std::path::Path;

use common::{bundle_dir, bundle_with_manifest, call_u32, manifest_text, recording_runtime};
use holdfast_plugin::RuntimeError;
use holdfast_plugin_abi::{BundleId, GuestContractId, ReloadPhaseType};

const RELOAD_TEST: u64 = GuestContractId::new("reload.test", 1).id();
/// The events of a reload of R (`reload-plugin`) that cascades to B.
const PROVIDER_THEN_DEPENDENT: [(ReloadPhaseType, &str); 4] = [
    (ReloadPhaseType::Preparing, "R"),
    (ReloadPhaseType::Reloaded, "R"),
    (ReloadPhaseType::Preparing, "B"),
    (ReloadPhaseType::Reloaded, "B"),
];
const NEEDS_REINIT: &str = "needs_reinit_on_dep_reload = true\n";

/// The probe library as bundle `dependent`, needing `reload.test@1` at
/// `min_version` and asking to be reloaded with it.
fn dependent(min_version: &str) -> tempfile::TempDir {
    let tables = format!("[[dependency]]\ncontract = \"reload.test@1\"\nmin_version = \"{min_version}\"\n");
    let manifest = manifest_text(
        "dependent",
        "1.0.0",
        "probe_plugin",
        &[("probe.test@1", 6)],
        NEEDS_REINIT,
        &tables,
    );
    bundle_with_manifest("probe", &manifest)
}

fn phases_and_names(events: Vec<(ReloadPhaseType, String)>) -> Vec<(ReloadPhaseType, &'static str)> {
    events
        .into_iter()
        .map(|(phase, name)| (phase, if name == "reload-plugin" { "R" } else { "B" }))
        .collect()
}

#[test]
fn unloading_a_bundle_others_need_is_refused() {
    let (runtime, _events) = recording_runtime();
    let provider = runtime.load_bundle(&bundle_dir("reload-v1")).unwrap();
    let dependent_dir = dependent("1.0");
    let dependent = runtime.load_bundle(dependent_dir.path()).unwrap();
    let error = runtime.unload_bundle(provider).unwrap_err();
    match error {
        RuntimeError::BundleInUse { bundle, dependents } => {
            assert_eq!(
                (bundle.as_str(), dependents),
                ("reload-plugin", vec!["dependent".to_owned()])
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(100));
    runtime.unload_bundle(dependent).unwrap();
    runtime.unload_bundle(provider).unwrap();
    assert!(runtime.bundles().is_empty());
}

#[test]
fn a_missing_dependency_refuses_the_load() {
    let (runtime, _events) = recording_runtime();
    let dependent_dir = dependent("1.0");
    assert!(matches!(
        runtime.load_bundle(dependent_dir.path()),
        Err(RuntimeError::MissingDependency { .. })
    ));
}

#[test]
fn a_dependent_is_reloaded_after_its_provider_and_events_never_nest() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir("reload-v1")).unwrap();
    let dependent_dir = dependent("1.0");
    runtime.load_bundle(dependent_dir.path()).unwrap();
    runtime.reload_bundle(&bundle_dir("reload-v2")).unwrap();
    assert_eq!(phases_and_names(events.take()), PROVIDER_THEN_DEPENDENT);
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert_eq!(runtime.revision(), 4);
}

#[test]
fn a_two_bundle_cycle_reloads_each_bundle_once() {
    let (runtime, events) = recording_runtime();
    let provider_manifest = manifest_text(
        "reload-plugin",
        "1.0.0",
        "reload_plugin_v1",
        &[("reload.test@1", 1)],
        NEEDS_REINIT,
        "[[dependency]]\ncontract = \"probe.test@1\"\noptional = true\n",
    );
    let provider = bundle_with_manifest("reload-v1", &provider_manifest);
    runtime.load_bundle(provider.path()).unwrap();
    let dependent_dir = dependent("1.0");
    runtime.load_bundle(dependent_dir.path()).unwrap();
    runtime.reload_bundle(provider.path()).unwrap();
    assert_eq!(phases_and_names(events.take()), PROVIDER_THEN_DEPENDENT);
}

#[test]
fn a_reload_that_would_break_a_dependent_is_rolled_back() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir("reload-v2")).unwrap();
    let dependent_dir = dependent("1.1");
    runtime.load_bundle(dependent_dir.path()).unwrap();
    let error = runtime
        .reload_bundle(Path::new(&bundle_dir("reload-v1")))
        .unwrap_err();
    let RuntimeError::ReloadRolledBack { source, .. } = error else {
        panic!("{error:?}");
    };
    match *source {
        RuntimeError::DependencyWouldBreak {
            ref bundle,
            ref contract,
            ref dependents,
        } => {
            assert_eq!(
                (bundle.as_str(), contract.as_str(), dependents.as_slice()),
                (
                    "reload-plugin",
                    "reload.test@1.1",
                    ["dependent".to_owned()].as_slice()
                )
            );
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(
        events.take_phases(),
        [ReloadPhaseType::Preparing, ReloadPhaseType::Failed]
    );
    assert_eq!(call_u32(&runtime, RELOAD_TEST, 0), Some(200));
    assert!(
        runtime
            .bundles()
            .iter()
            .any(|bundle| bundle.id == BundleId::new("dependent"))
    );
}

#[test]
fn a_dependent_that_fails_is_reported_while_the_provider_stays_reloaded() {
    let (runtime, events) = recording_runtime();
    runtime.load_bundle(&bundle_dir("reload-v1")).unwrap();
    let dependent_dir = dependent("1.0");
    runtime.load_bundle(dependent_dir.path()).unwrap();
    // The dependent's library is damaged on disk after it loaded.
    let library = dependent_dir
        .path()
        .join(common::library_file_name("probe_plugin"));
    std::fs::write(&library, b"not a library").unwrap();
    let error = runtime.reload_bundle(&bundle_dir("reload-v2")).unwrap_err();
    match error {
        RuntimeError::CascadeFailed { bundle, failures } => {
            assert_eq!(bundle, "reload-plugin");
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].0, "dependent");
            assert!(
                matches!(failures[0].1, RuntimeError::ReloadRolledBack { .. }),
                "{:?}",
                failures[0].1
            );
        }
        other => panic!("{other:?}"),
    }
    use ReloadPhaseType::{Failed, Preparing, Reloaded};
    assert_eq!(
        phases_and_names(events.take()),
        [(Preparing, "R"), (Reloaded, "R"), (Preparing, "B"), (Failed, "B")]
    );
    assert_eq!(
        call_u32(&runtime, RELOAD_TEST, 0),
        Some(200),
        "the provider's reload stays committed"
    );
    assert_eq!(
        call_u32(&runtime, GuestContractId::new("probe.test", 1).id(), 0),
        Some(500)
    );
}
