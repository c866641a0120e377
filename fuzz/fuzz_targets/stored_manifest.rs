//! A manifest as a store may hold it: the canonical lines in another order, CRLF line
//! ends, `#` comments and blank lines between them. The first input byte chooses the
//! variation, the rest is the manifest text; whenever the text parses, the stored variant
//! must parse to the same manifest (and so hash to the same id).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| {
    invariants::stored_manifest(data);
});
