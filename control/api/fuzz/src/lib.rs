//! Fuzz targets for wasmorch-api: see `fuzz_targets/` (built with `--features fuzzing`).
