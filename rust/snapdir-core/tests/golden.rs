//! Every golden vector (produced by snapdir 1.12.0) must be reproduced byte for byte.
//! The vectors are the same file pytest reads: `tests/fixtures/golden_manifests.json`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use snapdir_core::{walk, Manifest, WalkOptions};

fn golden() -> Value {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden_manifests.json");
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn content(c: &Value) -> Vec<u8> {
    if let Some(t) = c.get("text") {
        return t.as_str().unwrap().as_bytes().to_vec();
    }
    if let Some(b) = c.get("b64") {
        return b64(b.as_str().unwrap());
    }
    let size = c["size"].as_u64().unwrap() as usize;
    if let Some(f) = c.get("fill") {
        return vec![f.as_u64().unwrap() as u8; size];
    }
    let seed = c["xof"].as_str().unwrap();
    let mut out = vec![0u8; size];
    let mut h = blake3::Hasher::new();
    h.update(seed.as_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

fn b64(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | A.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn mode(v: &Value) -> u32 {
    u32::from_str_radix(v.as_str().unwrap(), 8).unwrap()
}

fn build(case: &Value, root: &Path) {
    let dirs = case["dirs"].as_array().unwrap();
    for d in dirs {
        fs::create_dir_all(root.join(d["path"].as_str().unwrap())).unwrap();
    }
    for f in case["files"].as_array().unwrap() {
        let p = root.join(f["path"].as_str().unwrap());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content(&f["content"])).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode(&f["mode"]))).unwrap();
    }
    let mut by_depth: Vec<&Value> = dirs.iter().collect();
    by_depth.sort_by_key(|d| std::cmp::Reverse(d["path"].as_str().unwrap().matches('/').count()));
    for d in by_depth {
        let p = root.join(d["path"].as_str().unwrap());
        fs::set_permissions(&p, fs::Permissions::from_mode(mode(&d["mode"]))).unwrap();
    }
    let root_mode = case.get("root_mode").map(mode).unwrap_or(0o755);
    fs::set_permissions(root, fs::Permissions::from_mode(root_mode)).unwrap();
}

#[test]
fn golden_vectors_walk_and_parse() {
    let g = golden();
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let want = case["manifest"].as_str().unwrap();
        let want_id = case["id"].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        build(case, &root);
        let walked = walk(&root, &WalkOptions::default()).unwrap();
        assert_eq!(walked.manifest.render(), want, "case {name}");
        assert_eq!(walked.manifest.id_hex(), want_id, "case {name}");
        let parsed = Manifest::parse(want).unwrap();
        assert_eq!(parsed.render(), want, "case {name}");
        assert_eq!(parsed.id_hex(), want_id, "case {name}");
        // Let the temp dir be removed even where modes locked it.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
