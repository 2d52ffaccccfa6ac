//! Hostile input for the ledger decoder, the commit store and the
//! MemoryManager image reader: structure-aware mutators, the judge of one
//! case, and the campaign that runs many. Not part of the API: the property
//! tests (`tests/mutation.rs`), the cargo-fuzz targets under `fuzz/` and the
//! campaign example (`examples/campaign.rs`) call it.
//!
//! A case starts from a valid image the real runtime wrote ([`BaseKind`]),
//! changes it knowing its structure — CBOR items of the ledger payload,
//! fields of the commit slots, the high-water mark and the store header,
//! fields of the MemoryManager header and its bucket table, the image's
//! size — and re-seals every checksum it touched (the envelope length, the
//! slot CRC-32C, the mark's CRC-32C), so the checks behind the checksums are
//! attacked, not the checksums. It then runs every read-only call and a boot
//! over the result, each on its own copy that counts writes, under
//! `catch_unwind`, and sorts each outcome into a [`Category`]: accepted
//! (identical, or a different ledger the re-sealed bytes really say),
//! refused with a typed error, or a failure — a panic, a wrong ledger, a
//! write by a read-only call or a refused boot, a store damaged by an
//! accepted boot, a `plan` that predicted another verdict than the boot's.
//!
//! What this module must never do: change the crate's behaviour (it only
//! calls the public API and reads the format's public constants), write a
//! memory it did not create, or decide what is right by asking the code
//! under test (the oracle in `truth` reads the bytes itself).

mod base;
mod campaign;
mod case;
mod cbor;
mod entropy;
mod memory;
mod mutate;
mod truth;

pub use base::{BaseImage, BaseKind};
pub use campaign::{
    CampaignConfig, CampaignReport, DistinctFinding, SAMPLED_CASES, case_entropy, replay_case, run_campaign,
};
pub use case::{Call, CaseReport, Category, Finding, run_case, run_case_with};
pub use entropy::{Entropy, case_seed};
pub use memory::{FuzzMemory, MAX_FUZZ_PAGES, SparseImage};
pub use mutate::{MutationLog, mutate_payload};

use crate::codec::{CborLedgerCodec, LedgerCodec};
use crate::ledger::AllocationLedger;

/// Decodes `bytes` and, when they decode, checks the two promises of the
/// decoder: the ledger passes the integrity rules and re-encodes to exactly
/// `bytes`. Returns the ledger (None when refused) or which promise broke.
///
/// # Errors
/// A sentence naming the broken promise.
pub fn check_decoded(bytes: &[u8]) -> Result<Option<AllocationLedger>, String> {
    let Ok(ledger) = CborLedgerCodec.decode(bytes) else {
        return Ok(None);
    };
    if let Err(error) = ledger.check_integrity() {
        return Err(format!(
            "the decoder accepted a ledger that breaks integrity: {error}"
        ));
    }
    if CborLedgerCodec.encode(&ledger) != bytes {
        return Err("the decoder accepted bytes that are not the encoding of what they decode to".into());
    }
    Ok(Some(ledger))
}

/// The payload case of `entropy`: a base image's authoritative payload,
/// mutated by structure and re-sealed, then decoded and checked as
/// [`check_decoded`] does. Returns the mutation log.
///
/// # Errors
/// The broken promise and the mutations that led to it.
pub fn payload_case(entropy: &mut Entropy) -> Result<MutationLog, String> {
    let base = *entropy.pick(&[BaseKind::Small, BaseKind::ManyGenerations, BaseKind::MultiStore]);
    let mut log = MutationLog::new();
    let mutated = mutate_payload(base.image().payload(), entropy, &mut log);
    match check_decoded(&mutated) {
        Ok(_) => Ok(log),
        Err(broken) => Err(format!("{broken}; base {}; mutations: {log:?}", base.name())),
    }
}

/// Fuzz target body: a payload case driven by a fuzzer's bytes. Panics
/// (so the fuzzer records the input) when the decoder breaks a promise.
pub fn fuzz_ledger_payload(data: &[u8]) {
    if let Err(broken) = payload_case(&mut Entropy::from_bytes(data)) {
        panic!("{broken}");
    }
}

/// Fuzz target body: a whole-image case driven by a fuzzer's bytes. Panics
/// (so the fuzzer records the input) on any failure the judge finds; the
/// panics of the code under test are caught and reported as findings.
pub fn fuzz_image(data: &[u8]) {
    let mut entropy = Entropy::from_bytes(data);
    let base = *entropy.pick(&BaseKind::ALL);
    let report = run_case_with(base, &mut entropy);
    assert!(report.findings.is_empty(), "{report}");
}

/// Fuzz target body: raw bytes straight into the decoder (no structure).
pub fn fuzz_raw_ledger_bytes(data: &[u8]) {
    if let Err(broken) = check_decoded(data) {
        panic!("{broken}");
    }
}
