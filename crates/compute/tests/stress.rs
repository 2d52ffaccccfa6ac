//! Many daemons, many delivering threads, and daemons churned through
//! `stop_with_snapshot` / `spawn_from_snapshot` meanwhile: no accepted event
//! is lost or processed twice, and every daemon's outputs form one valid
//! chain from genesis across its churns (spec §10, Stress).
#![cfg(feature = "compute")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::ready_runtime;
use holdfast_compute::{
    Bytes, CapabilityFilter, CausalEvent, CausalLink, ChainValidator, CoreDaemonError, DaemonError,
    DaemonHostConfig, DaemonRuntime, Identity, MeshDaemon,
};

const DAEMONS: usize = 1_000;
const THREADS: u64 = 16;
const EVENTS_PER_THREAD: u64 = 2_000;
const CHURNED: usize = 10;

/// Counts events and sums their ids; echoes each id as its output.
#[derive(Default)]
struct Recorder {
    count: u64,
    id_sum: u64,
}

impl MeshDaemon for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, CoreDaemonError> {
        let id = u64::from_le_bytes(event.payload.as_ref().try_into().expect("8-byte ids"));
        self.count += 1;
        self.id_sum = self.id_sum.wrapping_add(id);
        Ok(vec![event.payload.clone()])
    }
    fn snapshot(&self) -> Option<Bytes> {
        let mut state = self.count.to_le_bytes().to_vec();
        state.extend_from_slice(&self.id_sum.to_le_bytes());
        Some(Bytes::from(state))
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn restore(&mut self, state: Bytes) -> Result<(), CoreDaemonError> {
        let (count, id_sum) = decode_state(&state);
        (self.count, self.id_sum) = (count, id_sum);
        Ok(())
    }
}

fn decode_state(state: &[u8]) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| u64::from_le_bytes(state[range].try_into().unwrap());
    (word(0..8), word(8..16))
}

/// SplitMix64: a seeded, reproducible choice of daemons.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Default)]
struct Accepted {
    count: u64,
    id_sum: u64,
    outputs: Vec<CausalEvent>,
}

fn deliver_from_thread(
    runtime: &DaemonRuntime,
    origins: &[u64],
    thread_index: u64,
) -> HashMap<u64, Accepted> {
    let mut rng = SplitMix(0x5eed ^ thread_index);
    let mut accepted: HashMap<u64, Accepted> = HashMap::new();
    for n in 0..EVENTS_PER_THREAD {
        let origin = origins[(rng.next() % origins.len() as u64) as usize];
        let id = thread_index * EVENTS_PER_THREAD + n + 1;
        let input = CausalEvent {
            link: CausalLink {
                origin_hash: thread_index,
                sequence: n + 1,
                ..CausalLink::default()
            },
            payload: Bytes::copy_from_slice(&id.to_le_bytes()),
            received_at: id,
        };
        match runtime.deliver(origin, &input) {
            Ok(outputs) => {
                let entry = accepted.entry(origin).or_default();
                entry.count += 1;
                entry.id_sum = entry.id_sum.wrapping_add(id);
                entry.outputs.extend(outputs);
            }
            Err(DaemonError::Core(CoreDaemonError::NotFound(missing))) => assert_eq!(missing, origin),
            Err(other) => panic!("unexpected delivery error {other:?}"),
        }
    }
    accepted
}

/// Churns `identities` until `done`, and at least 20 rounds; returns how
/// many events the retired instances processed (final through_seq minus
/// starting through_seq).
fn churn(runtime: &DaemonRuntime, identities: &[Identity], done: &AtomicBool) -> u64 {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut started_at: HashMap<u64, u64> = HashMap::new();
    let mut retired_processed = 0;
    let mut rounds = 0;
    while !done.load(Ordering::SeqCst) || rounds < 20 {
        for identity in identities {
            let origin = identity.origin_hash();
            let snapshot = tokio.block_on(runtime.stop_with_snapshot(origin)).unwrap();
            retired_processed += snapshot.through_seq - started_at.get(&origin).copied().unwrap_or(0);
            started_at.insert(origin, snapshot.through_seq);
            let kind = if rounds % 2 == 0 { "recorder@2" } else { "recorder" };
            tokio
                .block_on(runtime.spawn_from_snapshot(
                    kind,
                    identity.clone(),
                    snapshot,
                    DaemonHostConfig::default(),
                ))
                .unwrap();
        }
        rounds += 1;
    }
    retired_processed
}

#[test]
fn stress_no_loss_no_dup() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = tokio.block_on(ready_runtime());
    runtime
        .register_factory("recorder", || Box::new(Recorder::default()))
        .unwrap();
    runtime
        .register_factory("recorder@2", || Box::new(Recorder::default()))
        .unwrap();
    let identities: Vec<Identity> = (0..DAEMONS)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            seed[31] = 0x57;
            Identity::from_seed(seed)
        })
        .collect();
    for identity in &identities {
        tokio
            .block_on(runtime.spawn("recorder", identity.clone(), DaemonHostConfig::default()))
            .unwrap();
    }
    let origins: Arc<Vec<u64>> = Arc::new(identities.iter().map(Identity::origin_hash).collect());

    let done = Arc::new(AtomicBool::new(false));
    let churner = thread::spawn({
        let runtime = runtime.clone();
        let churned = identities[..CHURNED].to_vec();
        let done = Arc::clone(&done);
        move || churn(&runtime, &churned, &done)
    });
    let senders: Vec<_> = (0..THREADS)
        .map(|thread_index| {
            let runtime = runtime.clone();
            let origins = Arc::clone(&origins);
            thread::spawn(move || deliver_from_thread(&runtime, &origins, thread_index))
        })
        .collect();
    let mut accepted: HashMap<u64, Accepted> = HashMap::new();
    for sender in senders {
        for (origin, part) in sender.join().unwrap() {
            let entry = accepted.entry(origin).or_default();
            entry.count += part.count;
            entry.id_sum = entry.id_sum.wrapping_add(part.id_sum);
            entry.outputs.extend(part.outputs);
        }
    }
    done.store(true, Ordering::SeqCst);
    let retired_processed = churner.join().unwrap();

    let total_accepted: u64 = accepted.values().map(|entry| entry.count).sum();
    assert!(
        total_accepted > THREADS * EVENTS_PER_THREAD * 9 / 10,
        "most deliveries were accepted"
    );
    let mut live_processed = 0;
    for identity in &identities {
        let origin = identity.origin_hash();
        let handle = runtime.handle(origin).expect("every daemon is hosted at the end");
        live_processed += handle.stats().unwrap().events_processed;
        let snapshot = tokio.block_on(runtime.snapshot(origin)).unwrap().unwrap();
        let mut expected = accepted.remove(&origin).unwrap_or_default();
        assert_eq!(
            decode_state(&snapshot.state),
            (expected.count, expected.id_sum),
            "daemon {origin:#x}"
        );
        assert_eq!(snapshot.through_seq, expected.count);

        expected.outputs.sort_by_key(|output| output.link.sequence);
        let mut validator = ChainValidator::new(origin);
        for output in &expected.outputs {
            validator
                .push(output)
                .unwrap_or_else(|error| panic!("daemon {origin:#x}: {error}"));
        }
        assert_eq!(validator.head_seq(), expected.count);
    }
    assert_eq!(live_processed + retired_processed, total_accepted);
}
