//! Random sequences of boots, reservations and retirements, checked step by
//! step against a plain reference model of the allocation history: every
//! accepted step commits exactly what the model predicts (or nothing, for an
//! unchanged boot), every refused step writes nothing, and recovery after
//! each step returns exactly the model's ledger.

mod common;

use std::collections::BTreeMap;

use common::CutMemory;
use holdfast_memory::stable_structures::{Memory, VectorMemory};
use holdfast_memory::{
    AcceptAllPolicy, AllocationDeclaration, AllocationLedger, AllocationRetirement, AllocationSlotDescriptor,
    AllocationState, DeclarationSnapshot, LayoutVerdict, MemoryRuntime,
};
use proptest::prelude::*;

const KEYS: [&str; 6] = [
    "app.a.v1", "app.b.v1", "app.c.v1", "app.d.v1", "app.e.v1", "app.f.v1",
];
const LEDGER_KEY: &str = "ic_memory.ledger.v1";

#[derive(Clone, Debug)]
enum Op {
    Boot(Vec<(usize, u8)>),
    Reserve(Vec<(usize, u8)>),
    Retire(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let pair = (0..KEYS.len(), 100u8..106);
    prop_oneof![
        4 => proptest::collection::vec(pair.clone(), 0..5).prop_map(Op::Boot),
        1 => proptest::collection::vec(pair, 1..3).prop_map(Op::Reserve),
        1 => (0..KEYS.len(), 100u8..106).prop_map(|(k, id)| Op::Retire(k, id)),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    id: u8,
    state: AllocationState,
    first: u64,
    last_seen: u64,
    retired: Option<u64>,
}

/// The reference model: what history must be, by the specification's rules.
#[derive(Default)]
struct Model {
    generation: u64,
    records: BTreeMap<String, Record>,
}

impl Model {
    fn holder_of(&self, id: u8) -> Option<&String> {
        self.records.iter().find(|(_, r)| r.id == id).map(|(k, _)| k)
    }

    /// The generation a boot of `declared` (the ledger's own key included)
    /// commits, or None when it is refused.
    fn boot(&mut self, declared: &[(String, u8)]) -> Option<u64> {
        for (key, id) in declared {
            match self.records.get(key) {
                Some(r) if r.state == AllocationState::Retired || r.id != *id => return None,
                Some(_) => {}
                None if self.holder_of(*id).is_some() => return None,
                None => {}
            }
        }
        let live = self
            .records
            .values()
            .filter(|r| r.state == AllocationState::Active && r.last_seen == self.generation)
            .count();
        let unchanged = self.generation > 0
            && live == declared.len()
            && declared.iter().all(|(k, _)| {
                self.records
                    .get(k)
                    .is_some_and(|r| r.state == AllocationState::Active && r.last_seen == self.generation)
            });
        if unchanged {
            return Some(self.generation);
        }
        self.generation += 1;
        for (key, id) in declared {
            self.mark(key, *id, AllocationState::Active);
        }
        Some(self.generation)
    }

    fn reserve(&mut self, batch: &[(String, u8)]) -> Option<u64> {
        let mut keys: Vec<&String> = batch.iter().map(|(k, _)| k).collect();
        let mut ids: Vec<u8> = batch.iter().map(|(_, id)| *id).collect();
        keys.sort();
        keys.dedup();
        ids.sort();
        ids.dedup();
        if keys.len() != batch.len() || ids.len() != batch.len() {
            return None;
        }
        for (key, id) in batch {
            match self.records.get(key) {
                Some(r) if r.id != *id || r.state != AllocationState::Reserved => return None,
                Some(_) => {}
                None if self.holder_of(*id).is_some() => return None,
                None => {}
            }
        }
        self.generation += 1;
        for (key, id) in batch {
            self.mark(key, *id, AllocationState::Reserved);
        }
        Some(self.generation)
    }

    fn retire(&mut self, key: &str, id: u8) -> Option<u64> {
        let record = self.records.get(key)?;
        if record.id != id || record.state == AllocationState::Retired {
            return None;
        }
        self.generation += 1;
        let record = self.records.get_mut(key).expect("checked above");
        record.state = AllocationState::Retired;
        record.retired = Some(self.generation);
        Some(self.generation)
    }

    fn mark(&mut self, key: &str, id: u8, state: AllocationState) {
        let generation = self.generation;
        let record = self.records.entry(key.to_owned()).or_insert(Record {
            id,
            state,
            first: generation,
            last_seen: generation,
            retired: None,
        });
        record.state = state;
        record.last_seen = generation;
    }

    fn assert_matches(&self, ledger: &AllocationLedger) {
        assert_eq!(ledger.current_generation(), self.generation);
        let actual: BTreeMap<String, Record> = ledger
            .allocation_history()
            .records()
            .iter()
            .map(|r| {
                let record = Record {
                    id: r.slot().memory_manager_id().expect("MemoryManager slots only"),
                    state: r.state(),
                    first: r.first_generation(),
                    last_seen: r.last_seen_generation(),
                    retired: r.retired_generation(),
                };
                (r.stable_key().as_str().to_owned(), record)
            })
            .collect();
        assert_eq!(actual, self.records);
    }
}

fn declarations(pairs: &[(usize, u8)]) -> Vec<AllocationDeclaration> {
    pairs
        .iter()
        .map(|(k, id)| AllocationDeclaration::memory_manager(KEYS[*k], *id, "Store").unwrap())
        .collect()
}

fn named(pairs: &[(usize, u8)]) -> Vec<(String, u8)> {
    pairs.iter().map(|(k, id)| (KEYS[*k].to_owned(), *id)).collect()
}

/// What `MemoryRuntime::plan` predicts: None when refused, else the
/// generation the boot would commit (None inside when nothing changes).
fn plan(memory: &VectorMemory, snapshot: &DeclarationSnapshot) -> Option<Option<u64>> {
    let before = memory.borrow().len();
    let plan = MemoryRuntime::plan(memory, snapshot.clone(), &AcceptAllPolicy).expect("memory recovers");
    assert_eq!(memory.borrow().len(), before);
    match plan.verdict {
        LayoutVerdict::Accepted { next_generation, .. } => Some(next_generation),
        LayoutVerdict::Refused { conflicts } => {
            assert!(!conflicts.is_empty());
            None
        }
        LayoutVerdict::CommitRefused { error } => panic!("small ledgers always commit: {error}"),
    }
}

fn run(ops: &[Op]) {
    let memory = VectorMemory::default();
    let mut model = Model::default();
    for op in ops {
        let counting = CutMemory::counting(&memory);
        let size_before = memory.size();
        let generation_before = model.generation;
        let (actual, expected) = match op {
            Op::Boot(pairs) => {
                let Ok(snapshot) = DeclarationSnapshot::new(declarations(pairs)) else {
                    continue; // duplicates in one binary are refused before anything runs
                };
                let mut declared = vec![(LEDGER_KEY.to_owned(), 0)];
                declared.extend(named(pairs));
                let planned = (model.generation > 0).then(|| plan(&memory, &snapshot));
                let actual = MemoryRuntime::bootstrap(counting.clone(), snapshot, &AcceptAllPolicy)
                    .map(|runtime| runtime.validated().generation())
                    .ok();
                let expected = model.boot(&declared);
                if let Some(planned) = planned {
                    // The read-only plan agrees with the boot: refused, or the
                    // generation it commits (None when nothing changes).
                    let committed = expected.filter(|&g| g != generation_before);
                    assert_eq!(planned, expected.map(|_| committed), "plan of {op:?}");
                }
                (actual, expected)
            }
            Op::Reserve(pairs) => {
                let actual =
                    MemoryRuntime::reserve(counting.clone(), declarations(pairs), &AcceptAllPolicy).ok();
                (actual, model.reserve(&named(pairs)))
            }
            Op::Retire(k, id) => {
                let retirement = AllocationRetirement::new(
                    KEYS[*k],
                    AllocationSlotDescriptor::memory_manager(*id).unwrap(),
                )
                .unwrap();
                (
                    MemoryRuntime::retire(counting.clone(), retirement).ok(),
                    model.retire(KEYS[*k], *id),
                )
            }
        };
        assert_eq!(actual, expected, "{op:?}");
        let wrote = counting.written.get() > 0 || memory.size() != size_before;
        match expected {
            None => assert!(!wrote, "refused {op:?} wrote to memory"),
            Some(generation) if generation == generation_before => {
                assert!(!wrote, "unchanged {op:?} wrote to memory")
            }
            Some(_) => assert!(wrote, "{op:?} committed without writing"),
        }
        if model.generation > 0 {
            let (ledger, _) = MemoryRuntime::check(
                &memory,
                DeclarationSnapshot::new(vec![]).unwrap(),
                &AcceptAllPolicy,
            )
            .expect("memory recovers after every step");
            model.assert_matches(&ledger);
            assert_eq!(ledger.check_memory_manager_integrity(), Ok(()), "after {op:?}");
        } else {
            assert_eq!(
                memory.size(),
                0,
                "nothing was ever committed, so nothing was written"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_boot_reserve_retire_sequences_follow_the_reference_model(ops in proptest::collection::vec(op(), 1..14)) {
        run(&ops);
    }
}

#[test]
fn an_unchanged_boot_writes_nothing_and_a_changed_one_commits() {
    run(&[
        Op::Boot(vec![(0, 100)]),
        Op::Boot(vec![(0, 100)]),
        Op::Boot(vec![(0, 100), (1, 101)]),
        Op::Reserve(vec![(2, 102)]),
        Op::Boot(vec![(0, 100), (1, 101), (2, 102)]),
        Op::Retire(1, 101),
        Op::Boot(vec![(0, 100), (1, 101)]),
    ]);
}
