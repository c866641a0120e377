//! The small parsers behind ids, keys and paths: `parse_hex` (object keys and snapshot
//! ids), `check_path` (SPEC §5, checked against an independent statement of the rule) and
//! `escape_bytes` (hostile names in messages: no raw control characters, reversible).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapdir_core::error::escape_bytes;
use snapdir_core::manifest::{check_path, parse_hex, to_hex, Kind};

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

fn unescape(s: &str) -> Vec<u8> {
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

fuzz_target!(|data: &[u8]| {
    let escaped = escape_bytes(data);
    assert!(!escaped.chars().any(char::is_control), "{escaped:?}");
    assert_eq!(unescape(&escaped), data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match parse_hex(s) {
        Some(d) => assert_eq!(to_hex(&d), s),
        None => assert!(
            s.len() != 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        ),
    }
    for kind in [Kind::File, Kind::Directory] {
        assert_eq!(
            check_path(s, kind).is_ok(),
            safe(s, kind),
            "{s:?} as {kind:?}"
        );
    }
});
