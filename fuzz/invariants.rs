//! The invariants of the fuzz targets, shared by the targets (`fuzz_targets/*.rs`, run by
//! `cargo fuzz`) and by the corpus replay that runs in every CI build on the stable
//! toolchain (`rust/snapdir-core/tests/fuzz_corpus.rs`). Each function panics when an
//! invariant breaks and returns whether the input reached the interesting side (a corpus
//! in which no input does would check nothing).
#![allow(dead_code)]

use snapdir_core::error::escape_bytes;
use snapdir_core::manifest::{check_path, id_of_text, parse_hex, to_hex, Kind, Manifest};

/// `Manifest::parse` on arbitrary text: a manifest that parses renders to canonical text
/// that parses back to the same manifest with the same id; every entry satisfies the
/// SPEC §5 path rules; the error of one that does not parse formats.
pub fn manifest_parse(data: &[u8]) -> bool {
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
    let again = Manifest::parse(&raw).expect("the canonical text of a manifest must parse");
    assert_eq!(again, m, "parse(render(m)) != m");
    assert_eq!(again.render(), raw, "render is not stable");
    assert_eq!(again.id(), m.id(), "the id is not stable");
    assert_eq!(m.id(), id_of_text(&raw));
    let entries: Vec<_> = m.entries().iter().collect();
    assert_eq!(entries[0].path, "./", "the root is not first");
    for w in entries.windows(2) {
        assert!(
            w[0].path.as_bytes() < w[1].path.as_bytes(),
            "not strictly sorted"
        );
    }
    for e in entries {
        assert!(
            check_path(e.path, e.kind).is_ok(),
            "unsafe path {:?}",
            e.path
        );
        assert!(e.mode <= 0o7777);
    }
    let (logical, physical, files, objects) = m.size_stats();
    assert!(physical <= logical && objects <= files);
    assert_eq!(m.objects().len() as u64, objects);
    true
}

/// A manifest as a store may hold it: the canonical lines in another order, CRLF line
/// ends, `#` comments and blank lines. The first byte chooses the variation, the rest is
/// the text; whenever the text parses, the stored variant parses to the same manifest.
pub fn stored_manifest(data: &[u8]) -> bool {
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
    let parsed = Manifest::parse(&stored).expect("a stored variant of a valid manifest must parse");
    assert_eq!(parsed, m);
    assert_eq!(parsed.id(), m.id());
    true
}

/// The SPEC §5 path rule, stated independently of `check_path`.
pub fn safe(path: &str, kind: Kind) -> bool {
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

/// The inverse of `escape_bytes` (messages must name hostile names reversibly).
pub fn unescape(s: &str) -> Vec<u8> {
    let inner = &s[1..s.len() - 1];
    let mut out = Vec::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match it.next().expect("dangling backslash") {
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            '"' => out.push(b'"'),
            '\\' => out.push(b'\\'),
            'x' => {
                let h: String = it.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&h, 16).expect("\\x escape"));
            }
            'u' => {
                assert_eq!(it.next(), Some('{'));
                let h: String = it.by_ref().take_while(|&c| c != '}').collect();
                let c = char::from_u32(u32::from_str_radix(&h, 16).expect("\\u escape"));
                let mut b = [0u8; 4];
                out.extend_from_slice(c.expect("scalar").encode_utf8(&mut b).as_bytes());
            }
            other => panic!("unknown escape \\{other}"),
        }
    }
    out
}

/// `parse_hex` (object keys and snapshot ids), `check_path` against [`safe`], and
/// `escape_bytes` (no raw control characters, reversible).
pub fn hex_and_paths(data: &[u8]) -> bool {
    let escaped = escape_bytes(data);
    assert!(!escaped.chars().any(char::is_control), "{escaped:?}");
    assert_eq!(unescape(&escaped), data);
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
