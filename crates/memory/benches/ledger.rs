//! Criterion benchmarks of holdfast-memory (filled in below).
fn main() {}
