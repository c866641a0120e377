//! The stat cache: checksums of files whose `stat` has not changed since they were hashed.
//!
//! One cache file per (real root path, walk options): a map from `./`-relative path to the
//! file's `(dev, ino, size, mtime_ns, ctime_ns, mode)` and checksum. The walker `fstatat`s a
//! regular file and reuses the checksum when every field matches, without opening the file.
//!
//! Correctness rules (docs/statcache.md):
//! - Racy timestamps: an entry is only written when the file's mtime and ctime are both
//!   strictly older than the start of the walk minus [`RACY_MARGIN_NS`]. A file modified
//!   after it was hashed within the timestamp granularity could otherwise keep its stamp;
//!   such a file is simply left out and hashed again next time. Any change to a file sets
//!   its ctime to the current time, which `utime` cannot set back.
//! - Integrity: the file starts with a header (magic, version, entry count, body length,
//!   BLAKE3 of the body). A torn, truncated, corrupt or foreign file is ignored whole.
//! - Concurrency: written to a temporary file in the same directory, then renamed over the
//!   old one; concurrent runs never see a half-written file (last writer wins).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::hash::Stamp;
use crate::manifest::Digest;

const MAGIC: &[u8; 8] = b"SNAPSTC\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 32;
/// Entries whose mtime or ctime is this close to (or later than) the start of the walk
/// that hashed them are not cached: 2 s covers coarse file-system timestamps (FAT: 2 s),
/// the kernel's coarse clock lagging `clock_gettime`, and small clock differences.
pub const RACY_MARGIN_NS: i128 = 2_000_000_000;

/// What the cache remembers about one regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
    pub digest: Digest,
}

impl Rec {
    pub fn new(stamp: &Stamp, digest: Digest) -> Rec {
        Rec {
            dev: stamp.dev,
            ino: stamp.ino,
            size: stamp.size,
            mtime_ns: clamp_i64(stamp.mtime_ns),
            ctime_ns: clamp_i64(stamp.ctime_ns),
            mode: stamp.mode,
            digest,
        }
    }

    /// Whether `stamp` is exactly the one this record was hashed under.
    pub fn matches(&self, stamp: &Stamp) -> bool {
        self.dev == stamp.dev
            && self.ino == stamp.ino
            && self.size == stamp.size
            && self.mode == stamp.mode
            && self.mtime_ns as i128 == stamp.mtime_ns
            && self.ctime_ns as i128 == stamp.ctime_ns
            // A clamped (absurd) time never matches: such a file is always re-hashed.
            && self.mtime_ns != i64::MAX
            && self.mtime_ns != i64::MIN
            && self.ctime_ns != i64::MAX
            && self.ctime_ns != i64::MIN
    }
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// A loaded cache (possibly empty).
#[derive(Debug, Default)]
pub struct StatCache {
    map: HashMap<Box<str>, Rec>,
}

impl StatCache {
    pub fn get(&self, rel: &str) -> Option<&Rec> {
        self.map.get(rel)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Loads `file`, checking it was written for `root` (the canonical root path). Anything
    /// wrong with it (missing, short, corrupt, other version or root) gives an empty cache.
    pub fn load(file: &Path, root: &Path) -> StatCache {
        fs::read(file)
            .ok()
            .and_then(|data| parse(&data, root.as_os_str().as_bytes()))
            .unwrap_or_default()
    }
}

/// The cache file for a walk of `root` (canonical) with the options that change the walk.
pub fn cache_file(dir: &Path, root: &Path, no_follow: bool, exclude: &[String]) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(b"snapdir statcache v1\0");
    h.update(root.as_os_str().as_bytes());
    h.update(if no_follow {
        b"\0nofollow\0"
    } else {
        b"\0follow\0\0\0"
    });
    for p in exclude {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    dir.join(h.finalize().to_hex().as_str())
}

/// BLAKE3 of the header fields before the checksum, then the body.
fn checksum(head: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(body);
    *h.finalize().as_bytes()
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn parse(data: &[u8], root: &[u8]) -> Option<StatCache> {
    let mut r = Reader { data, pos: 0 };
    if r.take(8)? != MAGIC || r.u32()? != VERSION {
        return None;
    }
    let _flags = r.u32()?;
    let count = r.u64()?;
    let body_len = r.u64()?;
    let _written_at = r.i64()?;
    let sum: [u8; 32] = r.take(32)?.try_into().ok()?;
    let body = &data[HEADER_LEN..];
    if body.len() as u64 != body_len || checksum(&data[..HEADER_LEN - 32], body) != sum {
        return None;
    }
    let mut b = Reader { data: body, pos: 0 };
    let rl = b.u32()? as usize;
    if b.take(rl)? != root {
        return None;
    }
    // Each entry is at least 4 + 3*8 + 2*8 + 4 + 32 bytes: bounds `count` before allocating.
    if count > (body.len() / 80) as u64 {
        return None;
    }
    let mut map = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let pl = b.u32()? as usize;
        let path = std::str::from_utf8(b.take(pl)?).ok()?;
        let rec = Rec {
            dev: b.u64()?,
            ino: b.u64()?,
            size: b.u64()?,
            mtime_ns: b.i64()?,
            ctime_ns: b.i64()?,
            mode: b.u32()?,
            digest: b.take(32)?.try_into().ok()?,
        };
        map.insert(Box::from(path), rec);
    }
    if b.pos != body.len() {
        return None;
    }
    Some(StatCache { map })
}

/// Whether a file with this stamp may be cached by a walk that started at `start_ns`.
pub fn is_settled(rec: &Rec, start_ns: i128) -> bool {
    let limit = start_ns - RACY_MARGIN_NS;
    (rec.mtime_ns as i128) < limit && (rec.ctime_ns as i128) < limit
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Writes the cache for `root` atomically (temporary file + rename). Entries that are not
/// settled relative to `start_ns` are left out. Errors are returned for the caller to
/// ignore: the cache is an optimisation, never a reason to fail.
pub fn save(
    file: &Path,
    root: &Path,
    entries: &[(String, Rec)],
    start_ns: i128,
) -> std::io::Result<()> {
    let root_b = root.as_os_str().as_bytes();
    let mut body = Vec::with_capacity(4 + root_b.len() + entries.len() * 100);
    body.extend_from_slice(&(root_b.len() as u32).to_le_bytes());
    body.extend_from_slice(root_b);
    let mut count = 0u64;
    for (path, rec) in entries {
        if !is_settled(rec, start_ns) {
            continue;
        }
        count += 1;
        body.extend_from_slice(&(path.len() as u32).to_le_bytes());
        body.extend_from_slice(path.as_bytes());
        body.extend_from_slice(&rec.dev.to_le_bytes());
        body.extend_from_slice(&rec.ino.to_le_bytes());
        body.extend_from_slice(&rec.size.to_le_bytes());
        body.extend_from_slice(&rec.mtime_ns.to_le_bytes());
        body.extend_from_slice(&rec.ctime_ns.to_le_bytes());
        body.extend_from_slice(&rec.mode.to_le_bytes());
        body.extend_from_slice(&rec.digest);
    }
    let mut head = Vec::with_capacity(HEADER_LEN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&count.to_le_bytes());
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(&clamp_i64(start_ns).to_le_bytes());
    let sum = checksum(&head, &body);
    head.extend_from_slice(&sum);

    let dir = file.parent().unwrap_or(Path::new("."));
    let mut b = fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.recursive(true).create(dir)?;
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{:x}",
        std::process::id(),
        now_ns() as u64 ^ (&body as *const _ as u64)
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&head)?;
        f.write_all(&body)?;
        drop(f);
        fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: i64) -> Rec {
        Rec {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: t,
            ctime_ns: t,
            mode: 0o100644,
            digest: [9; 32],
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/some/root");
        let f = cache_file(d.path(), root, false, &[]);
        let now = now_ns();
        let entries = vec![
            ("./a".to_owned(), rec(1_000_000_000)),
            // Racy: too recent, left out.
            ("./b".to_owned(), rec((now - 1_000_000_000) as i64)),
        ];
        save(&f, root, &entries, now).unwrap();
        let c = StatCache::load(&f, root);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get("./a"), Some(&rec(1_000_000_000)));
        assert!(StatCache::load(&f, Path::new("/other")).is_empty());
        let good = fs::read(&f).unwrap();
        // Every truncation and every single flipped byte is rejected.
        for n in 0..good.len() {
            fs::write(&f, &good[..n]).unwrap();
            assert!(StatCache::load(&f, root).is_empty(), "truncated at {n}");
            let mut bad = good.clone();
            bad[n] ^= 0x40;
            fs::write(&f, &bad).unwrap();
            assert!(StatCache::load(&f, root).is_empty(), "flipped byte {n}");
        }
    }

    #[test]
    fn key_depends_on_options() {
        let d = Path::new("/c");
        let r = Path::new("/r");
        let a = cache_file(d, r, false, &[]);
        assert_ne!(a, cache_file(d, r, true, &[]));
        assert_ne!(a, cache_file(d, r, false, &["x".to_owned()]));
        assert_ne!(a, cache_file(d, Path::new("/r2"), false, &[]));
    }
}
