//! The small parsers behind ids, keys and paths: `parse_hex` (object keys and snapshot
//! ids), `check_path` (SPEC §5, checked against an independent statement of the rule) and
//! `escape_bytes` (hostile names in messages: no raw control characters, reversible).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| {
    invariants::hex_and_paths(data);
});
