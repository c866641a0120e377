//! snapdir-core: content-addressable directory snapshots.
//!
//! Walks a directory, hashes it with BLAKE3, renders and parses manifests (`TYPE PERMS
//! CHECKSUM SIZE PATH` lines), computes snapshot ids and does the local file I/O of the
//! `file://` store and of materialising a snapshot. Knows nothing of Python.

pub mod checkout;
pub mod diff;
pub mod error;
pub mod fsx;
pub mod hash;
pub mod manifest;
pub mod mapped;
pub mod markset;
pub mod names;
pub mod recording;
pub mod sparse;
pub mod statcache;
pub mod store;
pub mod walk;

pub use error::{Code, Error, Result};
pub use manifest::{Entries, Entry, EntryRef, Kind, Manifest};
pub use walk::{walk, walk_counted, Ignore, IgnoreFile, WalkOptions, Walked};

/// The version of this crate (and of the Python package built from it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Held by the tests that open a descriptor per level of a deep tree, and by the one that
/// counts the process's descriptors: the count would otherwise see theirs.
#[cfg(test)]
pub(crate) static DEEP_TREE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
