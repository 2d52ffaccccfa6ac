//! The fuzzer's bytes straight into the ledger decoder: refused, or exactly what they encode.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdfast_memory::fuzzing::fuzz_raw_ledger_bytes(data);
});
