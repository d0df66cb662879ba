//! The one integration test binary: each module below drives one area end to end.

mod dsl;
mod gen;
mod midi;
mod model;
mod play;
mod script;
mod tokens;

/// The inputs the fuzzer found for `target` (`tests/data/fuzz/TARGET`, `scripts/fuzz.sh`), kept
/// as regressions; at least `min` of them, so a folder gone missing fails instead of passing.
pub fn fuzz_findings(target: &str, min: usize) -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz").join(target);
    let found: Vec<std::path::PathBuf> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(found.len() >= min, "the fuzz findings are in {}", dir.display());
    found
}
