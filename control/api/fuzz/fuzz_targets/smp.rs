//! Strategic merge patch under coverage-guided fuzzing: `cargo +nightly fuzz run smp --features fuzzing`
//! (from `control/api`). The properties live in `wasmorch_api::smp::fuzz::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmorch_api::smp::fuzz::check(data));
