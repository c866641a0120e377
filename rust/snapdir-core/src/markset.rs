//! The collector's mark set: the digests of everything reachable from a store's roots,
//! kept as one sorted, deduplicated vector of 32-byte BLAKE3 digests.
//!
//! Why a sorted vector and not a hash set: 32 bytes per digest and nothing else (a
//! `HashSet<[u8; 32]>` costs about twice that with its control bytes and load factor), a
//! membership test is a binary search over contiguous memory, and "which of these listed
//! keys are unmarked" over a sorted listing is one merge. One million objects fit in 32 MB
//! (the test below asserts at most 64 MB, counting the spare capacity).
//!
//! Digests are added in batches (one manifest at a time); they are appended to a pending
//! tail that is sorted and merged into the set once it grows past the set's own size, so
//! 200 manifests that share most of their objects never hold 200 copies of them.

use crate::error::{Code, Error, Result};
use crate::manifest::{parse_hex, Digest, Kind, Manifest};

/// A set of 32-byte digests (see the module documentation).
#[derive(Debug, Default, Clone)]
pub struct MarkSet {
    sorted: Vec<Digest>,
    pending: Vec<Digest>,
}

/// The pending tail is merged once it is this long, or as long as the set.
const MIN_PENDING: usize = 1 << 16;

impl MarkSet {
    pub fn new() -> MarkSet {
        MarkSet::default()
    }

    /// Adds one digest.
    pub fn add(&mut self, d: Digest) {
        self.pending.push(d);
        if self.pending.len() >= MIN_PENDING.max(self.sorted.len()) {
            self.seal();
        }
    }

    /// Adds the objects of a manifest's files (directories name no object).
    pub fn add_manifest(&mut self, m: &Manifest) {
        for e in m.entries() {
            if e.kind == Kind::File {
                self.add(e.checksum);
            }
        }
    }

    /// Adds 64-hex digests; the first that is not exactly 64 lowercase hex characters is
    /// an `INVALID_ARGUMENT` error naming it (nothing after it is added).
    pub fn add_hex<'a>(&mut self, hexes: impl IntoIterator<Item = &'a str>) -> Result<()> {
        for h in hexes {
            self.add(parse_hex(h).ok_or_else(|| bad_digest(h))?);
        }
        Ok(())
    }

    /// Adds concatenated 32-byte digests (any order); a length that is not a multiple of
    /// 32 is an `INVALID_ARGUMENT` error.
    pub fn add_packed(&mut self, data: &[u8]) -> Result<()> {
        if data.len() % 32 != 0 {
            return Err(Error::new(
                Code::InvalidArgument,
                format!(
                    "packed digests: {} bytes is not a multiple of 32",
                    data.len()
                ),
            ));
        }
        for c in data.chunks_exact(32) {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            self.add(d);
        }
        Ok(())
    }

    /// Sorts and deduplicates the pending tail into the set, and gives back spare memory.
    pub fn seal(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.sorted.append(&mut self.pending);
        self.sorted.sort_unstable();
        self.sorted.dedup();
        if self.sorted.capacity() > self.sorted.len() + self.sorted.len() / 2 + MIN_PENDING {
            self.sorted.shrink_to_fit();
        }
        if self.pending.capacity() > MIN_PENDING {
            self.pending = Vec::new();
        }
    }

    /// Distinct digests held.
    pub fn len(&mut self) -> usize {
        self.seal();
        self.sorted.len()
    }

    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the set holds (capacity of both vectors, not just their length).
    pub fn heap_bytes(&self) -> usize {
        (self.sorted.capacity() + self.pending.capacity()) * std::mem::size_of::<Digest>()
    }

    pub fn contains(&mut self, d: &Digest) -> bool {
        self.seal();
        self.sorted.binary_search(d).is_ok()
    }

    /// The indexes of the digests in `keys` that are not in the set, in `keys`' order.
    pub fn unmarked(&mut self, keys: &[Digest]) -> Vec<usize> {
        self.seal();
        let set = &self.sorted;
        keys.iter()
            .enumerate()
            .filter(|(_, d)| set.binary_search(d).is_err())
            .map(|(i, _)| i)
            .collect()
    }

    /// The digests, sorted, as one packed byte string (32 bytes each).
    pub fn packed(&mut self) -> Vec<u8> {
        self.seal();
        let mut out = Vec::with_capacity(self.sorted.len() * 32);
        for d in &self.sorted {
            out.extend_from_slice(d);
        }
        out
    }

    /// The sorted digests.
    pub fn digests(&mut self) -> &[Digest] {
        self.seal();
        &self.sorted
    }
}

fn bad_digest(h: &str) -> Error {
    let shown: String = h.chars().take(80).collect();
    Error::new(
        Code::InvalidArgument,
        format!("invalid digest {shown:?}: expected 64 lowercase hex characters"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u64) -> Digest {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    #[test]
    fn one_million_digests_fit_in_64_mb() {
        let mut s = MarkSet::new();
        for i in 0..1_000_000u64 {
            s.add(digest(i));
            if i % 3 == 0 {
                s.add(digest(i / 2)); // duplicates, as shared objects bring
            }
        }
        assert_eq!(s.len(), 1_000_000);
        assert!(
            s.heap_bytes() <= 64 << 20,
            "{} bytes for 1M digests",
            s.heap_bytes()
        );
        assert!(s.contains(&digest(999_999)));
        assert!(!s.contains(&digest(1_000_001)));
    }

    #[test]
    fn membership_unmarked_and_packing() {
        let mut s = MarkSet::new();
        let hexes: Vec<String> = (0..10)
            .map(|i| crate::manifest::to_hex(&digest(i)))
            .collect();
        s.add_hex(hexes.iter().map(String::as_str)).unwrap();
        s.add_hex(hexes.iter().map(String::as_str)).unwrap();
        assert_eq!(s.len(), 10);
        let keys: Vec<Digest> = (5..15).map(digest).collect();
        assert_eq!(s.unmarked(&keys), vec![5, 6, 7, 8, 9]);
        let packed = s.packed();
        assert_eq!(packed.len(), 320);
        assert!(packed
            .chunks(32)
            .zip(packed.chunks(32).skip(1))
            .all(|(a, b)| a < b));
        let mut t = MarkSet::new();
        t.add_packed(&packed).unwrap();
        assert_eq!(t.digests(), s.digests());
        assert!(t.add_packed(&packed[..31]).is_err());
        assert!(t.add_hex(["ABC"]).is_err());
        assert!(t.add_hex([hexes[0].to_uppercase().as_str()]).is_err());
    }

    #[test]
    fn built_from_a_manifest_marks_file_objects_only() {
        let text = format!(
            "D 755 {e} 0 ./\nF 644 {a} 3 ./a\nF 644 {a} 3 ./b\n",
            e = crate::manifest::EMPTY_CHECKSUM,
            a = crate::manifest::to_hex(&digest(1)),
        );
        let m = Manifest::parse(&text).unwrap();
        let mut s = MarkSet::new();
        s.add_manifest(&m);
        assert_eq!(s.len(), 1);
        assert!(s.contains(&digest(1)));
    }
}
