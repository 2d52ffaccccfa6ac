//! A whole case: a base image mutated in up to three layers, every call judged.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    holdfast_memory::fuzzing::fuzz_image(data);
});
