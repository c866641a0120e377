//! `Manifest::parse` on arbitrary text. A manifest that parses must render to canonical
//! text that parses back to the same manifest with the same id; every entry must satisfy
//! the SPEC §5 path rules; the error of one that does not parse must format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapdir_core::manifest::{check_path, id_of_text, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let m = match Manifest::parse(text) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let raw = m.render();
    let again = Manifest::parse(&raw).expect("the canonical text of a manifest must parse");
    assert_eq!(again, m, "parse(render(m)) != m");
    assert_eq!(again.render(), raw, "render is not stable");
    assert_eq!(again.id(), m.id(), "the id is not stable");
    assert_eq!(m.id(), id_of_text(&raw));
    let entries = m.entries();
    assert_eq!(entries[0].path, "./", "the root is not first");
    for w in entries.windows(2) {
        assert!(
            w[0].path.as_bytes() < w[1].path.as_bytes(),
            "not strictly sorted"
        );
    }
    for e in entries {
        assert!(
            check_path(&e.path, e.kind).is_ok(),
            "unsafe path {:?}",
            e.path
        );
        assert!(e.mode <= 0o7777);
    }
    let (logical, physical, files, objects) = m.size_stats();
    assert!(physical <= logical && objects <= files);
    assert_eq!(m.objects().len() as u64, objects);
});
