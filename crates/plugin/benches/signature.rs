//! What checking a bundle's signature costs (docs/BENCHMARKS.md, "Signed
//! bundles"):
//!
//! - `signature/verify_bundle`: `verify_bundle` alone on a signed copy of
//!   the reload fixture (read `bundle.sig` and the manifest, one Ed25519
//!   `verify_strict`, re-parse the manifest, SHA-256 of the 270 KB library);
//! - `signature/sha256_library` and `signature/ed25519_verify_strict`: its
//!   two main parts alone (the library's bytes already in memory; the
//!   signature file's message and signature);
//! - `signature/load_bundle/{off,require}`: a whole load of that bundle
//!   (unload untimed, the image unmapped between iterations) under
//!   `SignaturePolicy::Off` and `Require`; their difference is what a host
//!   pays per load and per reload for requiring signatures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::VerifyingKey;
use holdfast_plugin::signature::{SecretKey, TrustedKeys, sign_bundle, verify_bundle, write_signature};
use holdfast_plugin::{ManifestData, Runtime};
use holdfast_plugin_abi::{RuntimeConfig, SignaturePolicy};
use sha2::{Digest, Sha256};

fn runtime(policy: SignaturePolicy, keys: TrustedKeys) -> std::sync::Arc<Runtime> {
    Runtime::builder()
        .config(RuntimeConfig {
            hot_reload_enabled: true,
            signature_policy: policy,
            ..Default::default()
        })
        .loader(common::TestNativeLoader::new())
        .trusted_keys(keys)
        .build()
        .expect("the runtime builds")
}

/// Loads `dir` `iters` times, timing only the loads.
fn time_loads(runtime: &Runtime, dir: &Path, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        let id = runtime.load_bundle(dir).expect("the signed bundle loads");
        spent += started.elapsed();
        runtime.unload_bundle(id).expect("it unloads");
        runtime.reclaim();
    }
    spent
}

fn signature(c: &mut Criterion) {
    let key = SecretKey::from_seed([7; 32]);
    let keys = TrustedKeys::new().trust(key.public_key());
    let bundle = common::copy_bundle("reload-v1");
    let signed = sign_bundle(bundle.path(), &key).expect("the fixture signs");
    write_signature(bundle.path(), &signed).expect("the signature is written");
    let manifest = ManifestData::from_dir(bundle.path()).expect("fixture manifest");

    let mut group = c.benchmark_group("signature");
    group.bench_function("verify_bundle", |b| {
        b.iter(|| verify_bundle(&manifest, &keys).expect("valid"));
    });
    let library = std::fs::read(manifest.library_path()).expect("the library reads");
    group.bench_function("sha256_library", |b| {
        b.iter(|| Sha256::digest(black_box(&library)));
    });
    let message = signed.signed_message();
    let public = VerifyingKey::from_bytes(&signed.key.to_bytes()).expect("a valid key");
    let ed25519 = ed25519_dalek::Signature::from_bytes(&signed.signature);
    group.bench_function("ed25519_verify_strict", |b| {
        b.iter(|| {
            public
                .verify_strict(black_box(&message), &ed25519)
                .expect("valid")
        });
    });
    let off = runtime(SignaturePolicy::Off, TrustedKeys::new());
    group.bench_function("load_bundle/off", |b| {
        b.iter_custom(|iters| time_loads(&off, bundle.path(), iters));
    });
    let require = runtime(SignaturePolicy::Require, keys.clone());
    group.bench_function("load_bundle/require", |b| {
        b.iter_custom(|iters| time_loads(&require, bundle.path(), iters));
    });
    group.finish();
}

criterion_group!(benches, signature);
criterion_main!(benches);
