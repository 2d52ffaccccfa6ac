//! Bad data in the engine (cluster.md §7): forged, truncated and foreign
//! snapshots, malformed and unsigned ownership records. Each is a typed
//! refusal; the daemon is not started from it, and the node goes on serving
//! its other daemons.

mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use holdfast_cluster::record::{self, OwnerRecord, RecordKind, SnapshotRef, node_id_text};
use holdfast_cluster::seal::{ClusterKeys, SealContext};
use holdfast_cluster::testing::NatsServer;
use holdfast_cluster::wire::{self, SnapshotPayload};
use holdfast_cluster::{ClusterError, RecordError};
use holdfast_compute::{CausalEvent, CausalLink, Identity, ObservedHorizon, StateSnapshot};
use sha2::{Digest, Sha256};
use support::{PSK, TestNode, expect_exact_outputs};

const CLUSTER: &str = "bad";

/// A member of the cluster that writes straight into the engine, as a
/// faulty node or an operator with the PSK could.
struct Forger {
    js: jetstream::Context,
    keys: ClusterKeys,
    writer: Identity,
}

impl Forger {
    async fn connect(url: &str) -> Self {
        let client = async_nats::connect(url).await.expect("connects");
        Self {
            js: jetstream::new(client),
            keys: ClusterKeys::derive(&PSK).expect("long enough"),
            writer: Identity::from_seed([77; 32]),
        }
    }

    /// A daemon's genesis snapshot payload, sealed under `keys` for `origin`.
    fn sealed_genesis(keys: &ClusterKeys, seed: [u8; 32], origin: u64) -> Vec<u8> {
        let identity = Identity::from_seed(seed);
        let own = identity.origin_hash();
        let state = StateSnapshot {
            entity_id: *identity.entity_id(),
            through_seq: 0,
            chain_link: CausalLink::genesis(own),
            head_hash: CausalEvent {
                link: CausalLink::genesis(own),
                payload: Bytes::new(),
                received_at: 0,
            }
            .hash(),
            horizon: ObservedHorizon::new(),
            state: Bytes::copy_from_slice(&0u64.to_le_bytes()),
            created_at: 0,
        };
        let payload = SnapshotPayload {
            seed,
            kind: "counter".into(),
            kind_version: "1.0".into(),
            state: state.to_bytes().to_vec(),
        };
        let context = SealContext {
            cluster: CLUSTER,
            origin,
            epoch: 1,
            input_seq: 0,
        };
        keys.seal(&context, &wire::encode(&payload))
    }

    /// Stores `object` and an ownership record of `origin` naming `node`,
    /// whose snapshot reference says `recorded` (digest and length).
    async fn plant(&self, origin: u64, node: &str, object: &[u8], recorded: &[u8]) {
        let name = format!("{origin:016x}.forged");
        let mut reader = object;
        self.snapshots()
            .await
            .put(name.as_str(), &mut reader)
            .await
            .expect("stored");
        let record = OwnerRecord {
            origin,
            kind: "counter".into(),
            kind_version: "1.0".into(),
            node: node.to_owned(),
            epoch: 1,
            snapshot: SnapshotRef {
                object: name,
                digest: Sha256::digest(recorded).into(),
                sealed_epoch: 1,
                input_seq: 0,
                output_stream_seq: 0,
                output_seq: 0,
                bytes: recorded.len() as u64,
            },
            halted: None,
            moves: 0,
            writer: node_id_text(self.writer.entity_id()),
        };
        let bytes = record::seal_record(RecordKind::Owner, &record, &self.writer, &self.keys);
        self.put_record(origin, bytes).await;
    }

    async fn put_record(&self, origin: u64, bytes: Vec<u8>) {
        self.owners()
            .await
            .put(format!("{origin:016x}"), bytes.into())
            .await
            .expect("written");
    }

    async fn owners(&self) -> jetstream::kv::Store {
        self.js
            .get_key_value(format!("HF_{CLUSTER}_OWNERS"))
            .await
            .expect("the bucket exists")
    }

    async fn snapshots(&self) -> jetstream::object_store::ObjectStore {
        self.js
            .get_object_store(format!("HF_{CLUSTER}_SNAPSHOTS"))
            .await
            .expect("the store exists")
    }

    /// The ownership record of `origin`, checked as a node checks it.
    async fn record(&self, origin: u64) -> OwnerRecord {
        let bytes = self
            .owners()
            .await
            .get(format!("{origin:016x}"))
            .await
            .expect("readable")
            .expect("recorded");
        record::open_owner(origin, &bytes, &self.keys).expect("a member's record")
    }

    /// The snapshot `record` names, its counter set to `count` and sealed
    /// again at the same place.
    async fn resealed_with_count(&self, record: &OwnerRecord, count: u64) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut sealed = Vec::new();
        self.snapshots()
            .await
            .get(record.snapshot.object.as_str())
            .await
            .expect("stored")
            .read_to_end(&mut sealed)
            .await
            .expect("read");
        let context = SealContext {
            cluster: CLUSTER,
            origin: record.origin,
            epoch: record.snapshot.sealed_epoch,
            input_seq: record.snapshot.input_seq,
        };
        let plain = self.keys.open(&context, &sealed).expect("sealed by the cluster");
        let mut payload: SnapshotPayload = wire::decode(&plain).expect("a payload");
        let mut state = StateSnapshot::from_bytes(&payload.state).expect("a compute snapshot");
        state.state = Bytes::copy_from_slice(&count.to_le_bytes());
        payload.state = state.to_bytes().to_vec();
        let resealed = self.keys.seal(&context, &wire::encode(&payload));
        assert_ne!(Sha256::digest(&resealed).as_slice(), record.snapshot.digest);
        resealed
    }
}

/// Waits until the node reports why it refuses `origin`.
fn refusal_of(node: &TestNode, origin: u64) -> String {
    let started = Instant::now();
    loop {
        let placement = node
            .block_on(node.cluster.daemon(origin))
            .expect("the record is believed");
        if let Some(reason) = placement.refused {
            return reason;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refusal of {origin:016x}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_snapshots_and_records_are_refused_and_the_node_keeps_serving() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), CLUSTER, 1, Duration::from_millis(1500));
    let healthy = node.spawn_counters(1)[0];
    let forger = node.block_on(Forger::connect(&server.url()));
    let here = node.id();

    // Sealed with another cluster's PSK.
    let seed = [1; 32];
    let forged = Identity::from_seed(seed).origin_hash();
    let theirs = ClusterKeys::derive(&[9; 32]).expect("long enough");
    let sealed = Forger::sealed_genesis(&theirs, seed, forged);
    node.block_on(forger.plant(forged, &here, &sealed, &sealed));
    assert!(refusal_of(&node, forged).contains("does not authenticate"));

    // Truncated in the engine: the record still says the full length.
    let seed = [2; 32];
    let truncated = Identity::from_seed(seed).origin_hash();
    let sealed = Forger::sealed_genesis(&forger.keys, seed, truncated);
    node.block_on(forger.plant(truncated, &here, &sealed[..sealed.len() / 2], &sealed));
    assert!(refusal_of(&node, truncated).contains(&format!("its ownership record says {}", sealed.len())));

    // Another daemon's valid snapshot substituted (its own digest recorded):
    // the associated data names another origin.
    let seed = [3; 32];
    let foreign = Identity::from_seed(seed).origin_hash();
    let others = Forger::sealed_genesis(&forger.keys, [4; 32], Identity::from_seed([4; 32]).origin_hash());
    node.block_on(forger.plant(foreign, &here, &others, &others));
    assert!(refusal_of(&node, foreign).contains("does not authenticate"));

    // A malformed record and an unsigned one (MAC'd by a member, signature
    // zeroed) are not believed at all.
    let malformed = 0x00ba_d000_0000_0001;
    node.block_on(forger.put_record(malformed, b"{\"node\":\"me\"}".to_vec()));
    let unsigned = 0x00ba_d000_0000_0002;
    let record = OwnerRecord {
        origin: unsigned,
        kind: "counter".into(),
        kind_version: "1.0".into(),
        node: here.clone(),
        epoch: 1,
        snapshot: SnapshotRef {
            object: "none".into(),
            digest: [0; 32],
            sealed_epoch: 1,
            input_seq: 0,
            output_stream_seq: 0,
            output_seq: 0,
            bytes: 0,
        },
        halted: None,
        moves: 0,
        writer: node_id_text(forger.writer.entity_id()),
    };
    let mut bytes = record::seal_record(RecordKind::Owner, &record, &forger.writer, &forger.keys);
    let signature_at = bytes.len() - 32 - 64;
    bytes[signature_at..signature_at + 64].fill(0);
    let mac_at = bytes.len() - 32;
    let mac = forger.keys.record_mac(&bytes[..mac_at]);
    bytes[mac_at..].copy_from_slice(&mac);
    node.block_on(forger.put_record(unsigned, bytes));
    match node.block_on(node.cluster.daemon(malformed)) {
        Err(ClusterError::Record { error, .. }) => assert_eq!(error, RecordError::NotARecord),
        other => panic!("a malformed record was believed: {other:?}"),
    }
    match node.block_on(node.cluster.daemon(unsigned)) {
        Err(ClusterError::Record { error, .. }) => assert!(matches!(error, RecordError::BadSignature { .. })),
        other => panic!("an unsigned record was believed: {other:?}"),
    }

    // None of them started; the healthy daemon still processes.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.cluster.hosted_count(), 1);
    assert!(
        node.cluster
            .placement()
            .iter()
            .all(|daemon| daemon.origin != malformed && daemon.origin != unsigned)
    );
    node.send_ticks(healthy, 5);
    expect_exact_outputs(&node, healthy, 5, Duration::from_secs(10));
    for origin in [forged, truncated, foreign] {
        let outputs = node
            .block_on(node.cluster.outputs(origin, 0, 10))
            .expect("readable");
        assert!(outputs.is_empty(), "a refused daemon wrote outputs");
    }
}

#[test]
fn a_node_with_another_psk_cannot_read_the_clusters_records() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let node = TestNode::start(&server.url(), CLUSTER, 1, Duration::from_millis(1500));
    let origin = node.spawn_counters(1)[0];
    let outsider = TestNode::try_start(&server.url(), CLUSTER, 2, Duration::from_millis(1500), &[8; 32])
        .expect("joins the engine (the PSK is not checked by NATS)");
    match outsider.block_on(outsider.cluster.daemon(origin)) {
        Err(ClusterError::Record { error, .. }) => assert_eq!(error, RecordError::NotFromAMember),
        other => panic!("an outsider believed a record: {other:?}"),
    }
    // The outsider's own entry is not believed by the member, so no daemon
    // is ever placed on it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        node.cluster
            .nodes()
            .iter()
            .all(|entry| entry.node != outsider.id())
    );
}

/// The strongest forger of a handoff holds the PSK: it reads the snapshot a
/// record names, changes the state inside, seals it again at the same
/// place and hands it to the node about to take the daemon, under the
/// object name the record holds. Only the record's digest, which the
/// forger cannot re-sign, tells them apart: the node refuses the handoff,
/// reads the object store, and the daemon continues exactly.
#[test]
fn a_resealed_handoff_under_the_recorded_name_is_refused_and_the_store_is_read() {
    let _serial = support::serial();
    let tokio = tokio::runtime::Runtime::new().expect("runtime");
    let server = tokio.block_on(NatsServer::start());
    let lease = Duration::from_millis(1500);
    let a = TestNode::start(&server.url(), CLUSTER, 3, lease);
    let b = TestNode::start(&server.url(), CLUSTER, 4, lease);
    let origin = loop {
        let spawned = b.block_on(b.cluster.spawn("counter")).expect("spawned");
        if spawned.node == a.id() {
            break spawned.origin;
        }
    };
    // 30 inputs: the tests snapshot every 25, so the record names a
    // snapshot at input 25 and the failover replays five.
    b.send_ticks(origin, 30);
    expect_exact_outputs(&b, origin, 30, Duration::from_secs(20));
    let forger = b.block_on(Forger::connect(&server.url()));
    let record = b.block_on(forger.record(origin));
    assert_eq!(record.snapshot.input_seq, 25);
    let forged = b.block_on(forger.resealed_with_count(&record, 1000));

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Hf-Origin", format!("{origin:016x}").as_str());
    headers.insert("Hf-Object", record.snapshot.object.as_str());
    headers.insert(
        "Hf-Sealed-Epoch",
        record.snapshot.sealed_epoch.to_string().as_str(),
    );
    headers.insert("Hf-Input-Seq", record.snapshot.input_seq.to_string().as_str());
    headers.insert("Hf-Total", forged.len().to_string().as_str());
    headers.insert("Hf-Offset", "0");
    let subject = holdfast_cluster::Layout::new(CLUSTER)
        .expect("valid")
        .handoff_subject(&b.id());
    b.block_on(async {
        let client = forger.js.client();
        client
            .publish_with_headers(subject, headers, forged.into())
            .await
            .expect("published");
        client.flush().await.expect("flushed");
    });
    let before = b.cluster.restores();

    a.crash();
    b.send_ticks(origin, 30);
    let writers = expect_exact_outputs(&b, origin, 60, lease + Duration::from_secs(10));
    assert!(writers[30..].iter().all(|node| *node == b.id()));
    let after = b.cluster.restores();
    assert_eq!(
        (
            after.from_handoff - before.from_handoff,
            after.handoffs_refused - before.handoffs_refused,
            after.from_store - before.from_store,
        ),
        (0, 1, 1),
        "the forged handoff was refused and the store read instead"
    );
}
