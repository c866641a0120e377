//! `Manifest::parse` on arbitrary text. A manifest that parses must render to canonical
//! text that parses back to the same manifest with the same id; every entry must satisfy
//! the SPEC §5 path rules; the error of one that does not parse must format.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| {
    invariants::manifest_parse(data);
});
