//! A base image's ledger payload, mutated by structure from the fuzzer's bytes and re-sealed.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdfast_memory::fuzzing::fuzz_ledger_payload(data);
});
