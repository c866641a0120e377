//! Replays the committed fuzzing corpus (`fuzz/corpus/<target>/`) through the invariants
//! of the fuzz targets, on the stable toolchain: what `cargo fuzz` found interesting stays
//! checked in every CI run, without nightly or libFuzzer. The targets and how to run a
//! campaign are described in `fuzz/README.md`.

use std::fs;
use std::path::PathBuf;

use snapdir_core::error::escape_bytes;
use snapdir_core::manifest::{check_path, id_of_text, parse_hex, to_hex, Kind, Manifest};

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

/// `fuzz_targets/manifest_parse.rs`.
fn manifest_parse(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let m = match Manifest::parse(text) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return false;
        }
    };
    let raw = m.render();
    let again = Manifest::parse(&raw).expect("the canonical text must parse");
    assert_eq!(again, m);
    assert_eq!(again.render(), raw);
    assert_eq!(m.id(), id_of_text(&raw));
    assert_eq!(m.entries()[0].path, "./");
    for w in m.entries().windows(2) {
        assert!(w[0].path.as_bytes() < w[1].path.as_bytes());
    }
    for e in m.entries() {
        assert!(check_path(&e.path, e.kind).is_ok() && e.mode <= 0o7777);
    }
    let (logical, physical, files, objects) = m.size_stats();
    assert!(physical <= logical && objects <= files);
    true
}

/// `fuzz_targets/stored_manifest.rs`.
fn stored_manifest(data: &[u8]) -> bool {
    let Some((&flags, rest)) = data.split_first() else {
        return false;
    };
    let Ok(m) = std::str::from_utf8(rest)
        .map_err(|_| ())
        .and_then(|t| Manifest::parse(t).map_err(|_| ()))
    else {
        return false;
    };
    let raw = m.render();
    let mut lines: Vec<&str> = raw.split('\n').collect();
    let n = lines.len();
    lines.rotate_left(usize::from(flags >> 4) % n);
    if flags & 1 != 0 {
        lines.reverse();
    }
    let eol = if flags & 2 != 0 { "\r\n" } else { "\n" };
    let mut stored = String::new();
    if flags & 4 != 0 {
        stored.push_str("# a comment\r\n");
    }
    for (i, line) in lines.iter().enumerate() {
        stored.push_str(line);
        stored.push_str(eol);
        if flags & 8 != 0 && i % 2 == 0 {
            stored.push_str(if i % 4 == 0 { "#" } else { "   \t" });
            stored.push_str(eol);
        }
    }
    let parsed = Manifest::parse(&stored).expect("a stored variant must parse");
    assert_eq!(parsed, m);
    assert_eq!(parsed.id(), m.id());
    true
}

fn safe(path: &str, kind: Kind) -> bool {
    if path == "./" {
        return kind == Kind::Directory;
    }
    let Some(rest) = path.strip_prefix("./") else {
        return false;
    };
    let rest = match (kind, rest.strip_suffix('/')) {
        (Kind::Directory, Some(r)) => r,
        (Kind::File, None) => rest,
        _ => return false,
    };
    !rest.contains(['\0', '\n', '\r'])
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// `fuzz_targets/hex_and_paths.rs` (the escape round trip is checked there).
fn hex_and_paths(data: &[u8]) -> bool {
    let escaped = escape_bytes(data);
    assert!(!escaped.chars().any(char::is_control), "{escaped:?}");
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    let hex = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match parse_hex(s) {
        Some(d) => assert_eq!(to_hex(&d), s),
        None => assert!(!hex, "{s:?}"),
    }
    for kind in [Kind::File, Kind::Directory] {
        assert_eq!(
            check_path(s, kind).is_ok(),
            safe(s, kind),
            "{s:?} as {kind:?}"
        );
    }
    hex || check_path(s, Kind::File).is_ok() || check_path(s, Kind::Directory).is_ok()
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
