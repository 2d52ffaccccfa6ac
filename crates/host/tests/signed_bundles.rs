//! A node that requires signed bundles (`NodeConfig::signature_policy`,
//! `holdfast run --signature-policy require --trusted-key KEY.pub`): a bundle
//! signed by a trusted key runs its daemons; an unsigned one is never
//! opened, so its kind is unknown; once its signature lands, a reload
//! brings it in; and a node told to require signatures without a trusted
//! key refuses to start.

mod common;

use common::{Dirs, feed, spawn};
use holdfast_host::samples::Sample;
use holdfast_host::{Node, NodeError, RequestError};
use holdfast_plugin::signature::{SecretKey, TrustedKeys, sign_bundle, write_signature};
use holdfast_plugin_abi::SignaturePolicy;

fn sign(dir: &std::path::Path, key: &SecretKey) {
    let signature = sign_bundle(dir, key).expect("the sample bundle signs");
    write_signature(dir, &signature).expect("the signature is written");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_bundles_signed_by_a_trusted_key_run_under_require() {
    let key = SecretKey::from_seed([3; 32]);
    let dirs = Dirs::new(&[(Sample::CounterV1, "counter"), (Sample::CCounter, "ccounter")]);
    sign(&dirs.plugins().join("counter"), &key);
    let mut config = dirs.config();
    config.signature_policy = SignaturePolicy::Require;
    config.trusted_keys = TrustedKeys::new().trust(key.public_key());
    let node = Node::open(config).await.expect("the node opens");

    let origin = spawn(&node, "counter").await;
    feed(&node, &origin, 2).await;
    assert_eq!(node.daemon(&origin).unwrap().events_processed, 2);
    assert!(matches!(
        node.spawn("ccounter", serde_json::Value::Null).await,
        Err(RequestError::UnknownKind { .. })
    ));
    let loaded: Vec<String> = node
        .plugins()
        .bundles()
        .into_iter()
        .map(|bundle| bundle.name)
        .collect();
    assert_eq!(loaded.len(), 1, "only the signed bundle was opened: {loaded:?}");

    sign(&dirs.plugins().join("ccounter"), &key);
    node.reload("ccounter").await.expect("the signed bundle loads");
    let origin = spawn(&node, "ccounter").await;
    feed(&node, &origin, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn require_without_a_trusted_key_is_an_invalid_config() {
    let dirs = Dirs::new(&[]);
    let mut config = dirs.config();
    config.signature_policy = SignaturePolicy::Require;
    assert!(matches!(
        config.validate(),
        Err(NodeError::InvalidConfig {
            field: "trusted_keys",
            ..
        })
    ));
}
