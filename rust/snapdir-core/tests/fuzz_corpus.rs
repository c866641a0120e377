//! Replays the committed fuzzing corpus (`fuzz/corpus/<target>/`) through the invariants
//! of the fuzz targets, on the stable toolchain: what `cargo fuzz` found interesting stays
//! checked in every CI run, without nightly or libFuzzer. The targets and how to run a
//! campaign are described in `fuzz/README.md`.

use std::fs;
use std::path::PathBuf;

#[path = "../../../fuzz/invariants.rs"]
mod invariants;
use invariants::{hex_and_paths, manifest_parse, stored_manifest};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let data = fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 20, "{}: the corpus is missing", dir.display());
    out
}

fn replay(target: &str, check: fn(&[u8]) -> bool) {
    let files = corpus(target);
    let accepted = files
        .iter()
        .filter(|(p, data)| {
            std::panic::catch_unwind(|| check(data))
                .unwrap_or_else(|_| panic!("{target}: invariant broken by {}", p.display()))
        })
        .count();
    // A corpus that never reaches the interesting side would check nothing.
    assert!(accepted > 0, "{target}: no input of the corpus is accepted");
}

#[test]
fn manifest_parse_corpus() {
    replay("manifest_parse", manifest_parse);
}

#[test]
fn stored_manifest_corpus() {
    replay("stored_manifest", stored_manifest);
}

#[test]
fn hex_and_paths_corpus() {
    replay("hex_and_paths", hex_and_paths);
}
