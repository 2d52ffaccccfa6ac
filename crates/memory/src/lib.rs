//! `holdfast-memory`: stable-memory allocation governance.
//!
//! Status: being built (see `shared/spec/memory.md`).
#![forbid(unsafe_code)]
