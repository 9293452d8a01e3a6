//! Admission under coverage-guided fuzzing: `cargo +nightly fuzz run admission --features fuzzing` (from
//! `control/api`). The properties live in `wasmorch_api::validation::fuzz::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmorch_api::validation::fuzz::check(data));
