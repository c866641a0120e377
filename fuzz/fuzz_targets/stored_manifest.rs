//! A manifest as a store may hold it: the canonical lines in another order, CRLF line
//! ends, `#` comments and blank lines between them. The first input byte chooses the
//! variation, the rest is the manifest text; whenever the text parses, the stored variant
//! must parse to the same manifest (and so hash to the same id).
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapdir_core::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(m) = Manifest::parse(text) else {
        return;
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
});
