//! The ledger decoder preallocates only what the remaining bytes can really
//! hold: a crafted payload at the 3 MiB bound whose list heads claim millions
//! of items is refused without asking for hundreds of megabytes.
//!
//! Found by the hostile-input campaign (issue 11): a record list claiming as
//! many items as bytes remained passed the old bound (one byte per item) and
//! reserved 3 M records of ~200 bytes each, 629 MB, before the first item
//! failed to decode. dhat's global allocator counts every byte asked for, so this file is its own test binary with a single test.

use holdfast_memory::codec::{
    LEDGER_ENVELOPE_LEN, LEDGER_ENVELOPE_MAGIC, LEDGER_ENVELOPE_VERSION, MAX_ENCODED_LEDGER_LEN,
};
use holdfast_memory::{CborLedgerCodec, LedgerCodec, LedgerDecodeError};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// What decoding one crafted payload may ask the allocator for in all.
/// Decoding allocates what it decoded so far plus the preallocated list; the
/// crafted payloads decode at most one record before they fail, so a correct
/// decoder stays far below this (about 210 KB: 1,024 preallocated records),
/// and the 626 MB of the bug far above.
const DECODE_HEAP_BOUND: u64 = 1 << 20;

/// A CBOR head of major type `major` with a 4-byte argument (the form a
/// crafted count of millions takes).
fn head32(major: u8, argument: u32) -> Vec<u8> {
    let mut head = vec![(major << 5) | 26];
    head.extend_from_slice(&argument.to_be_bytes());
    head
}

/// An envelope around `cbor`, padded with `0xf6` (null, never a record or a
/// generation) up to the 3 MiB bound.
fn sealed_at_the_bound(mut cbor: Vec<u8>) -> Vec<u8> {
    cbor.resize(MAX_ENCODED_LEDGER_LEN, 0xf6);
    let mut bytes = Vec::with_capacity(LEDGER_ENVELOPE_LEN + cbor.len());
    bytes.extend_from_slice(&LEDGER_ENVELOPE_MAGIC);
    bytes.extend_from_slice(&LEDGER_ENVELOPE_VERSION.to_le_bytes());
    bytes.extend_from_slice(&u32::try_from(cbor.len()).expect("3 MiB fits").to_le_bytes());
    bytes.extend_from_slice(&cbor);
    bytes
}

/// The smallest decodable record: key "a.v1" on ID 10, active in generation
/// 1, no retirement, no label, and a schema history of `schema_head`.
fn smallest_record_with_schema_head(schema_head: &[u8]) -> Vec<u8> {
    let mut record = vec![0x88, 0x64];
    record.extend_from_slice(b"a.v1");
    record.extend_from_slice(&[0x82, 0x00, 0x0a, 0x01, 0x01, 0x01, 0xf6, 0xf6]);
    record.extend_from_slice(schema_head);
    record
}

/// Decodes `bytes` and returns the error and how many heap bytes the decode
/// asked for in all (every allocation and reallocation, freed or not: an
/// upper bound on its peak that does not depend on what was live before).
fn decode_requested(bytes: &[u8]) -> (LedgerDecodeError, u64) {
    let before = dhat::HeapStats::get().total_bytes;
    let error = CborLedgerCodec
        .decode(bytes)
        .expect_err("every crafted payload is refused");
    let after = dhat::HeapStats::get().total_bytes;
    (error, after - before)
}

#[test]
fn crafted_list_heads_at_the_payload_bound_never_preallocate_beyond_what_the_bytes_hold() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let body = u32::try_from(MAX_ENCODED_LEDGER_LEN).expect("3 MiB fits");
    // Ledger: 5 fields, schema 1, format 1, generation 0, then the lists.
    let ledger = [0x85, 0x01, 0x01, 0x00];
    // The smallest encodings (15, 6 and 4 bytes; locked by the codec's unit
    // tests): a count of `left / smallest` passes any bound by the bytes
    // left, so only the preallocation cap keeps it small.
    let records = |count: u32| [&ledger[..], &head32(4, count)].concat();
    let generations = |count: u32| [&ledger[..], &[0x80], &head32(4, count)].concat();
    let schemas = |count: u32| {
        [
            &ledger[..],
            &[0x81],
            &smallest_record_with_schema_head(&head32(4, count)),
        ]
        .concat()
    };
    let cases = [
        ("record list claiming one item per byte left", records(body - 9)),
        (
            "record list claiming a smallest record per 15 bytes left",
            records((body - 9) / 15),
        ),
        (
            "generation list claiming one item per byte left",
            generations(body - 10),
        ),
        (
            "generation list claiming a smallest generation per 6 bytes left",
            generations((body - 10) / 6),
        ),
        (
            "schema history claiming one item per byte left",
            schemas(body - 24),
        ),
        (
            "schema history claiming a smallest entry per 4 bytes left",
            schemas((body - 24) / 4),
        ),
    ];
    for (what, cbor) in cases {
        let bytes = sealed_at_the_bound(cbor);
        assert_eq!(bytes.len(), LEDGER_ENVELOPE_LEN + MAX_ENCODED_LEDGER_LEN);
        let (error, requested) = decode_requested(&bytes);
        assert!(
            matches!(error, LedgerDecodeError::Malformed { .. }),
            "{what}: refused as {error:?}, expected a malformed list"
        );
        assert!(
            requested <= DECODE_HEAP_BOUND,
            "{what}: decoding a {}-byte payload asked for {requested} heap bytes",
            bytes.len()
        );
    }
}
