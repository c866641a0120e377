//! The stat cache: what a walk learnt about each directory, reused when nothing changed.
//!
//! One cache file per (real root path, walk options) holds one record per directory:
//! its `(dev, ino, mtime_ns, ctime_ns, mode)`, its digest and size, and its sorted listing
//! (name and `d_type` of every entry); a regular file in the listing also carries the
//! `(dev, ino, size, mtime_ns, ctime_ns, mode)` and checksum it was hashed under.
//!
//! On the next walk (see `walk.rs`):
//! - a directory whose own stamp is unchanged is not read again: the remembered listing is
//!   used (adding, removing or renaming an entry always changes the directory's mtime and
//!   ctime). Every entry is still `fstatat`ed: a file's content changes its own stamp, not
//!   its directory's;
//! - a regular file whose six fields are unchanged keeps its checksum without being opened;
//! - a directory whose entries all contribute what they contributed last time (same names,
//!   same checksums and sizes) keeps its digest without recomputing it.
//!
//! Correctness rules (docs/statcache.md):
//! - Racy timestamps: a file record, or a directory's listing, is only written when the
//!   stamp's mtime and ctime are both strictly older than the start of the walk minus
//!   [`RACY_MARGIN_NS`]. A file or directory modified after it was read within the
//!   timestamp granularity could otherwise keep its stamp; it is read again next time.
//!   Any change sets the ctime to the current time, which `utime` cannot set back.
//! - Listings are only reused on file systems known to update a directory's mtime on every
//!   change of its entries ([`listing_reuse_ok_on`]); elsewhere every directory is read.
//! - Integrity: the file starts with a header (magic, version, record count, body length,
//!   BLAKE3 of the body), and the body is fully validated before anything is used. A torn,
//!   truncated, corrupt, foreign or older-version file is ignored whole.
//! - Concurrency: written to a temporary file in the same directory, then renamed over the
//!   old one; concurrent runs never see a half-written file (last writer wins).
//! - Untrusted input: a cache file is opened only when `lstat` shows a regular file owned by
//!   this user (or root) and writable by nobody else, with `O_NOFOLLOW | O_NONBLOCK`, checked
//!   again with `fstat`, and read only up to [`MAX_FILE`] bytes ([`read_cache_file`]): a FIFO,
//!   device, socket, symbolic link or directory in its place never blocks, never makes us read
//!   without bound, and is reported and treated as "no cache".
//! - File system identity: each record is trusted only while the file system holding it is
//!   the one it was written on (`st_dev` plus `statfs`'s type and `f_fsid`, [`FsId`]), and only
//!   on file systems whose ctime no unprivileged call can set ([`ctime_reliable`]).

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::hash::Stamp;
use crate::manifest::Digest;

const MAGIC: &[u8; 8] = b"SNAPSTC\0";
/// 1: one record per file keyed by path. 2: one record per directory (listing + files).
/// 3: as 2, with the identity of every file system the records were taken on ([`FsId`]).
const VERSION: u32 = 3;
/// The largest cache file read or written. A record costs about 100 bytes per file (76 of
/// stamp and checksum, the name, a few bytes of framing), so 1 GiB holds some ten million
/// files; anything larger is not a file we wrote and is ignored rather than read into memory.
pub const MAX_FILE: u64 = 1 << 30;
/// Bytes of one file system's identity in a cache file: dev, `f_type`, `f_fsid`.
const FSID_LEN: usize = 8 + 8 + 8;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 32;
/// Bytes of a directory record without its path and children.
const DIR_FIXED: usize = 4 + 8 * 4 + 4 + 4 + 32 + 8 + 8 + 4;
/// Bytes of a file's stamp and checksum in a listing.
const REC_LEN: usize = 8 * 5 + 4 + 32;
/// Smallest child entry (empty names are rejected, so this bounds counts safely).
const CHILD_MIN: usize = 4 + 1 + 1 + 1;
/// The directory's stamp was settled when written: its listing may be reused.
const FLAG_LISTING: u32 = 1;
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

fn sane_time(t: i64) -> bool {
    t != i64::MAX && t != i64::MIN
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
            && sane_time(self.mtime_ns)
            && sane_time(self.ctime_ns)
    }

    fn settled(&self, start_ns: i128) -> bool {
        is_settled(self.mtime_ns, self.ctime_ns, start_ns)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.ctime_ns.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.digest);
    }

    /// Decodes a record that [`parse`] has already bounds-checked.
    fn decode(b: &[u8]) -> Rec {
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Rec {
            dev: u(0),
            ino: u(8),
            size: u(16),
            mtime_ns: u(24) as i64,
            ctime_ns: u(32) as i64,
            mode: u32::from_le_bytes(b[40..44].try_into().expect("4 bytes")),
            digest: b[44..76].try_into().expect("32 bytes"),
        }
    }
}

/// What the cache remembers of a directory's own `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
}

impl DirStamp {
    // `stat` field types differ between Linux and macOS; some casts are no-ops on one.
    #[allow(clippy::unnecessary_cast)]
    pub fn of(st: &libc::stat) -> DirStamp {
        let ns = |s: i64, n: i64| clamp_i64(s as i128 * 1_000_000_000 + n as i128);
        DirStamp {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            mode: st.st_mode as u32,
        }
    }
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Where one directory's record sits in the cache file, and a digest of its bytes as they
/// were validated: a record is read again (one `pread`) only when the walk reaches its
/// directory, and used only if it is still those bytes.
#[derive(Debug)]
struct DirLoc {
    start: u64,
    len: u32,
    sum: [u8; 16],
}

/// A loaded cache (possibly empty). The whole file is validated when loaded (header,
/// checksum, every record's structure), then only an index of it is kept: the path, place
/// and digest of each directory's record, a few dozen bytes per directory whatever it
/// holds. A directory's record (about 100 bytes a file) is read back from the open file
/// when the walk reaches it and dropped when the walk leaves it, so a walk never holds the
/// whole cache next to the entries it collects.
#[derive(Debug, Default)]
pub struct StatCache {
    /// The cache file, open since it was validated (a newer file renamed over it does not
    /// change what this descriptor reads).
    file: Option<fs::File>,
    dirs: HashMap<Box<str>, usize>,
    locs: Vec<DirLoc>,
    /// Number of file records, counted when validated.
    n_files: usize,
    /// The file systems the records were taken on.
    devs: Vec<FsId>,
}

/// One directory's record, read back from the cache file and decoded.
#[derive(Debug)]
struct DirRec {
    bytes: Vec<u8>,
    stamp: DirStamp,
    flags: u32,
    digest: Digest,
    size: u64,
    n_contrib: u64,
    /// Offset in `bytes` of every listed entry.
    kids: Vec<u32>,
}

/// One directory of a loaded cache: its record, held while the walk is in the directory.
#[derive(Debug, Clone)]
pub struct OldDir {
    idx: usize,
    rec: std::sync::Arc<DirRec>,
}

/// One entry of a remembered listing.
#[derive(Debug, Clone, Copy)]
pub struct OldChild<'a> {
    name: &'a [u8],
    dtype: u8,
    rec: Option<&'a [u8]>,
}

impl<'a> OldChild<'a> {
    pub fn name(&self) -> &'a [u8] {
        self.name
    }
    pub fn dtype(&self) -> u8 {
        self.dtype
    }
    /// The file's stamp and checksum, when it was a settled regular file.
    pub fn rec(&self) -> Option<Rec> {
        self.rec.map(Rec::decode)
    }
}

/// The entry at `off` of a record that [`parse_dir`] has already bounds-checked.
fn child_at(data: &[u8], off: usize) -> OldChild<'_> {
    let nl = u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
    let name = &data[off + 4..off + 4 + nl];
    let dtype = data[off + 4 + nl];
    let rec = (data[off + 5 + nl] == 1).then(|| &data[off + 6 + nl..off + 6 + nl + REC_LEN]);
    OldChild { name, dtype, rec }
}

impl OldDir {
    /// Index of this record in the loaded file (for [`Fresh::Old`]).
    pub fn index(&self) -> usize {
        self.idx
    }

    /// Whether the remembered listing is still the directory's: its stamp was settled
    /// when written and is exactly `stamp` now.
    pub fn listing_valid_for(&self, stamp: &DirStamp) -> bool {
        let m = &self.rec;
        m.flags & FLAG_LISTING != 0
            && m.stamp == *stamp
            && sane_time(stamp.mtime_ns)
            && sane_time(stamp.ctime_ns)
    }

    pub fn digest(&self) -> Digest {
        self.rec.digest
    }

    pub fn size(&self) -> u64 {
        self.rec.size
    }

    /// How many entries contributed to the digest.
    pub fn n_contrib(&self) -> u64 {
        self.rec.n_contrib
    }

    pub fn len(&self) -> usize {
        self.rec.kids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rec.kids.is_empty()
    }

    /// Entry `k` of the listing (sorted by name).
    pub fn child(&self, k: usize) -> OldChild<'_> {
        child_at(&self.rec.bytes, self.rec.kids[k] as usize)
    }

    /// The entry called `name`, if the listing had one.
    pub fn find(&self, name: &[u8]) -> Option<OldChild<'_>> {
        let data = &self.rec.bytes;
        let kids = &self.rec.kids;
        kids.binary_search_by(|&off| child_at(data, off as usize).name.cmp(name))
            .ok()
            .map(|k| child_at(data, kids[k] as usize))
    }

    /// The record's bytes exactly as loaded.
    fn bytes(&self) -> &[u8] {
        &self.rec.bytes
    }
}

/// The first 16 bytes of the BLAKE3 of a record: what it must still be when read back.
fn record_sum(bytes: &[u8]) -> [u8; 16] {
    let mut s = [0u8; 16];
    s.copy_from_slice(&blake3::hash(bytes).as_bytes()[..16]);
    s
}

impl StatCache {
    /// The record of directory `rel` (`./`, `./a/`, ...), read back from the cache file.
    /// A record that cannot be read, or is no longer the bytes validated at load time, is
    /// a miss.
    pub fn dir(&self, rel: &str) -> Option<OldDir> {
        let &idx = self.dirs.get(rel)?;
        let bytes = self.record_bytes(idx)?;
        let rec = parse_dir(&bytes, 0)
            .filter(|(r, _, end)| *r == rel && *end == bytes.len())?
            .1;
        let rec = DirRec { bytes, ..rec };
        Some(OldDir {
            idx,
            rec: std::sync::Arc::new(rec),
        })
    }

    /// The bytes of record `idx`, checked against the digest taken when it was validated.
    fn record_bytes(&self, idx: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let loc = self.locs.get(idx)?;
        let mut bytes = vec![0u8; loc.len as usize];
        self.file
            .as_ref()?
            .read_exact_at(&mut bytes, loc.start)
            .ok()?;
        (record_sum(&bytes) == loc.sum).then_some(bytes)
    }

    /// Number of directory records.
    pub fn len(&self) -> usize {
        self.locs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }

    /// Number of file records (settled regular files), for tests and statistics.
    pub fn files(&self) -> usize {
        self.n_files
    }

    /// Loads `file`, checking it was written for `root` (the canonical root path). Anything
    /// wrong with it (missing, short, corrupt, other version or root, not a regular file of
    /// ours) gives an empty cache.
    pub fn load(file: &Path, root: &Path) -> StatCache {
        Self::load_reporting(file, root).0
    }

    /// As [`StatCache::load`], with the reason the user should hear about when the file was
    /// not even read (something other than a regular file of ours in its place, too large).
    /// A missing, torn or corrupt file is silent: that is what a first run or a crash leaves.
    pub fn load_reporting(file: &Path, root: &Path) -> (StatCache, Option<String>) {
        match read_cache_file_open(file) {
            Ok(Some((data, f))) => (
                parse(&data, root.as_os_str().as_bytes(), Some(f)).unwrap_or_default(),
                None,
            ),
            Ok(None) => (StatCache::default(), None),
            Err(why) => (StatCache::default(), Some(why)),
        }
    }

    /// Whether the records were taken on the file system `id` (same device number, type
    /// and `f_fsid`): only then may a directory's record there be trusted.
    pub fn knows_fs(&self, id: &FsId) -> bool {
        self.devs.contains(id)
    }

    /// The file systems the loaded records were taken on.
    pub fn file_systems(&self) -> &[FsId] {
        &self.devs
    }
}

/// Identity of a mounted file system: the device number `stat` reports, and `statfs`'s type
/// (magic number) and `f_fsid` (derived from the file system's UUID on ext4, XFS, Btrfs...).
/// Device numbers are reused: another disk, image or network share mounted at the same place
/// (or at any place, after the first was unmounted) can show the same `st_dev` and, by
/// chance or on purpose, the same inode numbers and timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsId {
    pub dev: u64,
    pub f_type: u64,
    pub fsid: [u8; 8],
}

impl FsId {
    /// The identity of the file system holding the open file `fd`, whose `st_dev` is `dev`.
    pub fn of_fd(fd: std::os::fd::RawFd, dev: u64) -> Option<FsId> {
        #[cfg(target_os = "linux")]
        {
            let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstatfs(fd, &mut sfs) } != 0 {
                return None;
            }
            // `fsid_t`'s two ints are private in `libc`; their bytes are the identity.
            let fsid: [u8; 8] = unsafe { std::mem::transmute(sfs.f_fsid) };
            #[allow(clippy::unnecessary_cast)]
            Some(FsId {
                dev,
                f_type: sfs.f_type as u64,
                fsid,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstatvfs(fd, &mut sv) } != 0 {
                return None;
            }
            #[allow(clippy::unnecessary_cast)]
            Some(FsId {
                dev,
                f_type: 0,
                fsid: (sv.f_fsid as u64).to_le_bytes(),
            })
        }
    }

    /// The identity of the file system holding `path` (a directory, opened to ask).
    pub fn of_path(path: &Path) -> Option<FsId> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let dev = f.metadata().ok()?.dev();
        FsId::of_fd(f.as_raw_fd(), dev)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.f_type.to_le_bytes());
        out.extend_from_slice(&self.fsid);
    }

    fn read(r: &mut Reader<'_>) -> Option<FsId> {
        Some(FsId {
            dev: r.u64()?,
            f_type: r.u64()?,
            fsid: r.take(8)?.try_into().ok()?,
        })
    }
}

/// Whether files' stamps may be trusted on a file system of type `f_type` (statfs magic):
/// one that sets a file's ctime to the current time on every change of its content or
/// metadata, in a way no unprivileged call can set back, and whose attributes are never
/// served stale from a client-side cache. These are the local POSIX file systems of
/// [`listing_reuse_ok_on`]. Not: FAT, vfat and exFAT (no ctime: it is derived from the mtime,
/// which `utime` sets), squashfs and ISO 9660 (read-only images whose timestamps are what
/// the image says), FUSE (whatever the daemon reports), NFS, SMB and other network file
/// systems (attributes cached on the client for seconds, changes by other clients unseen).
/// Outside Linux the type is not known: stamps are trusted there (APFS and HFS+ keep a real
/// ctime; docs/statcache.md lists this as a blind spot for FAT media on macOS).
pub fn ctime_reliable(f_type: u64) -> bool {
    if cfg!(target_os = "linux") {
        fs_type_local(f_type)
    } else {
        true
    }
}

/// The local Linux file systems that keep a real ctime and update a directory's mtime and
/// ctime on every change of its entries.
fn fs_type_local(f_type: u64) -> bool {
    matches!(
        f_type,
        0xEF53            // ext2/3/4
        | 0x5846_5342     // xfs
        | 0x9123_683E     // btrfs
        | 0x0102_1994     // tmpfs
        | 0x2FC1_2FC1     // zfs
        | 0xF2F5_2010     // f2fs
        | 0xCA45_1A4E     // bcachefs
        | 0x794C_7630 // overlayfs
    )
}

/// Whether a directory's remembered listing may be reused on the file system `id`: one
/// known to update a directory's mtime and ctime whenever an entry is added, removed or
/// renamed (the local POSIX file systems of [`ctime_reliable`]). Network and FUSE file
/// systems may not, so their directories are always read again; so are all directories
/// outside Linux, where the type is not known.
pub fn listing_reuse_ok_on(id: &FsId) -> bool {
    cfg!(target_os = "linux") && fs_type_local(id.f_type)
}

/// What a file's type is called in a message.
#[allow(clippy::unnecessary_cast)] // `mode_t` is u32 on Linux, u16 on macOS
fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT as u32 {
        m if m == libc::S_IFIFO as u32 => "a FIFO",
        m if m == libc::S_IFCHR as u32 => "a character device",
        m if m == libc::S_IFBLK as u32 => "a block device",
        m if m == libc::S_IFSOCK as u32 => "a socket",
        m if m == libc::S_IFLNK as u32 => "a symbolic link",
        m if m == libc::S_IFDIR as u32 => "a directory",
        _ => "not a regular file",
    }
}

/// Why the file described by `m` must not be read as a cache file, if it must not.
fn untrusted_file(m: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !m.file_type().is_file() {
        return Some(format!("it is {}, not a regular file", kind_name(m.mode())));
    }
    let me = unsafe { libc::geteuid() };
    if m.uid() != me && m.uid() != 0 {
        return Some(format!(
            "it is owned by uid {}, not by this user (uid {me}) or root",
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "it is writable by group or others (mode {:o})",
            m.mode() & 0o7777
        ));
    }
    if m.len() > MAX_FILE {
        return Some(format!(
            "it is {} bytes, more than the {MAX_FILE} a cache file may have",
            m.len()
        ));
    }
    None
}

/// Reads a cache file as untrusted input: `Ok(None)` when there is none, `Err(why)` (a
/// message naming the path) when something other than a regular file of ours, of at most
/// [`MAX_FILE`] bytes, is in its place. The path is `lstat`ed first, so a FIFO, device or
/// socket is never even opened (opening some devices has effects); the open itself uses
/// `O_NOFOLLOW | O_NONBLOCK` (a FIFO or symbolic link swapped in after the `lstat` neither
/// blocks nor is followed) and `fstat` must show the same regular file. At most the size
/// `fstat` reported is read, so a file growing meanwhile cannot make us read without bound
/// (its checksum then fails).
pub fn read_cache_file(path: &Path) -> std::result::Result<Option<Vec<u8>>, String> {
    Ok(read_cache_file_open(path)?.map(|(data, _)| data))
}

/// As [`read_cache_file`], also returning the file, still open (to read parts back from).
fn read_cache_file_open(path: &Path) -> std::result::Result<Option<(Vec<u8>, fs::File)>, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = crate::error::display_path(path);
    let refused = |why: String| format!("ignoring the cache file {shown}: {why}");
    let lst = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(format!("cannot inspect it: {e}"))),
    };
    if let Some(why) = untrusted_file(&lst) {
        return Err(refused(why));
    }
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(format!("cannot open it: {e}"))),
    };
    let m = f
        .metadata()
        .map_err(|e| refused(format!("cannot stat it: {e}")))?;
    if let Some(why) = untrusted_file(&m) {
        return Err(refused(why));
    }
    if (m.dev(), m.ino()) != (lst.dev(), lst.ino()) {
        return Err(refused("it was replaced while it was opened".to_owned()));
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    (&f).take(m.len())
        .read_to_end(&mut data)
        .map_err(|e| refused(format!("cannot read it: {e}")))?;
    Ok(Some((data, f)))
}

/// The cache file for a walk of `root` (canonical) with the options that change the walk.
/// (The name does not depend on the format version: a new version overwrites the old file.)
/// `ignore`: what the walk's ignore rules were made of (empty: none, the key of a walk
/// without them is unchanged).
pub fn cache_file(
    dir: &Path,
    root: &Path,
    no_follow: bool,
    exclude: &[String],
    ignore: &[u8],
) -> PathBuf {
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
    if !ignore.is_empty() {
        h.update(b"\0ignore\0");
        h.update(&(ignore.len() as u64).to_le_bytes());
        h.update(ignore);
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
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
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
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Validates the whole file (every record's structure, as [`parse_dir`] checks it again
/// when the record is read back) and indexes it; `file` is the open file `data` was read
/// from, kept to read records back from.
fn parse(data: &[u8], root: &[u8], file: Option<fs::File>) -> Option<StatCache> {
    let (count, mut r) = open_file(data, MAGIC, VERSION)?;
    let rl = r.u32()? as usize;
    if r.take(rl)? != root {
        return None;
    }
    let nd = r.u32()? as usize;
    if nd > r.left() / FSID_LEN {
        return None;
    }
    let mut devs = Vec::with_capacity(nd);
    for _ in 0..nd {
        let id = FsId::read(&mut r)?;
        // One identity per device number: two would make `knows_fs` ambiguous.
        if devs.iter().any(|d: &FsId| d.dev == id.dev) {
            return None;
        }
        devs.push(id);
    }
    if count > (r.left() / DIR_FIXED) as u64 {
        return None;
    }
    let mut dirs = HashMap::with_capacity(count as usize);
    let mut locs = Vec::with_capacity(count as usize);
    let mut n_files = 0;
    let mut pos = r.pos;
    for idx in 0..count as usize {
        let (rel, rec, end) = parse_dir(data, pos)?;
        if dirs.insert(Box::from(rel), idx).is_some() {
            return None;
        }
        let bytes = &data[pos..end];
        n_files += rec
            .kids
            .iter()
            .filter(|&&off| child_at(bytes, off as usize).rec.is_some())
            .count();
        locs.push(DirLoc {
            start: pos as u64,
            len: u32::try_from(end - pos).ok()?,
            sum: record_sum(bytes),
        });
        pos = end;
    }
    if pos != data.len() {
        return None;
    }
    Some(StatCache {
        file,
        dirs,
        locs,
        n_files,
        devs,
    })
}

/// Validates the directory record at `pos` of `data` (every offset used later is checked
/// here); returns its path, its decoded fields (`bytes` left empty, child offsets relative
/// to `pos`) and where it ends.
fn parse_dir(data: &[u8], pos: usize) -> Option<(&str, DirRec, usize)> {
    let mut r = Reader { data, pos };
    let pl = r.u32()? as usize;
    let rel = std::str::from_utf8(r.take(pl)?).ok()?;
    let stamp = DirStamp {
        dev: r.u64()?,
        ino: r.u64()?,
        mtime_ns: r.i64()?,
        ctime_ns: r.i64()?,
        mode: r.u32()?,
    };
    let flags = r.u32()?;
    let digest: Digest = r.take(32)?.try_into().ok()?;
    let size = r.u64()?;
    let n_contrib = r.u64()?;
    let n = r.u32()? as usize;
    if n > r.left() / CHILD_MIN {
        return None;
    }
    let mut kids = Vec::with_capacity(n);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let off = u32::try_from(r.pos - pos).ok()?;
        let nl = r.u32()? as usize;
        let name = r.take(nl)?;
        // Sorted, distinct, plain names: `find` relies on it.
        if name.is_empty() || name.contains(&b'/') || prev.is_some_and(|p| p >= name) {
            return None;
        }
        prev = Some(name);
        let _dtype = r.u8()?;
        match r.u8()? {
            0 => {}
            1 => {
                r.take(REC_LEN)?;
            }
            _ => return None,
        }
        kids.push(off);
    }
    if n_contrib > n as u64 {
        return None;
    }
    let rec = DirRec {
        bytes: Vec::new(),
        stamp,
        flags,
        digest,
        size,
        n_contrib,
        kids,
    };
    Some((rel, rec, r.pos))
}

fn is_settled(mtime_ns: i64, ctime_ns: i64, start_ns: i128) -> bool {
    let limit = start_ns - RACY_MARGIN_NS;
    (mtime_ns as i128) < limit && (ctime_ns as i128) < limit
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i128 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// One entry of a directory as walked: its name and `d_type`, and for a regular file the
/// record it was read (or reused) under.
pub struct FreshChild<'a> {
    pub name: &'a [u8],
    pub dtype: u8,
    pub rec: Option<Rec>,
}

/// A directory as walked, for the next cache file.
pub struct FreshDir<'a> {
    pub rel: &'a str,
    pub stamp: DirStamp,
    pub digest: Digest,
    pub size: u64,
    pub n_contrib: u64,
    /// Sorted by name, distinct.
    pub children: Vec<FreshChild<'a>>,
}

/// A directory's record in the next cache file: the loaded one unchanged, or new bytes.
#[derive(Debug)]
pub enum Fresh {
    Old(usize),
    New(Vec<u8>),
}

impl FreshDir<'_> {
    /// Encodes the record, leaving out what is not settled relative to `start_ns` (racy
    /// files, a racy directory's listing), and compares it with the loaded one: an
    /// unchanged record is referred to, not copied.
    pub fn finish(&self, old: Option<&OldDir>, start_ns: i128) -> Fresh {
        let mut out = Vec::with_capacity(DIR_FIXED + self.rel.len() + self.children.len() * 96);
        out.extend_from_slice(&(self.rel.len() as u32).to_le_bytes());
        out.extend_from_slice(self.rel.as_bytes());
        let s = &self.stamp;
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.mtime_ns.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
        out.extend_from_slice(&s.mode.to_le_bytes());
        let settled = is_settled(s.mtime_ns, s.ctime_ns, start_ns)
            && sane_time(s.mtime_ns)
            && sane_time(s.ctime_ns);
        let flags = if settled { FLAG_LISTING } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.n_contrib.to_le_bytes());
        out.extend_from_slice(&(self.children.len() as u32).to_le_bytes());
        for c in &self.children {
            out.extend_from_slice(&(c.name.len() as u32).to_le_bytes());
            out.extend_from_slice(c.name);
            out.push(c.dtype);
            match c.rec.filter(|r| r.settled(start_ns)) {
                Some(r) => {
                    out.push(1);
                    r.encode(&mut out);
                }
                None => out.push(0),
            }
        }
        match old {
            Some(o) if o.bytes() == out.as_slice() => Fresh::Old(o.index()),
            _ => Fresh::New(out),
        }
    }
}

/// Writes the cache for `root` atomically (temporary file + rename) from the records of a
/// walk; `old` is the cache those records may refer to, `devs` the file systems the walk
/// saw (distinct device numbers). Errors are returned for the caller to ignore: the cache
/// is an optimisation, never a reason to fail.
pub fn save(
    file: &Path,
    root: &Path,
    devs: &[FsId],
    dirs: &[Fresh],
    old: Option<&StatCache>,
    start_ns: i128,
) -> std::io::Result<()> {
    let root_b = root.as_os_str().as_bytes();
    let mut len = 4 + root_b.len() + 4 + devs.len() * FSID_LEN;
    for d in dirs {
        len += match d {
            Fresh::Old(i) => old.map_or(0, |c| c.locs.get(*i).map_or(0, |l| l.len as usize)),
            Fresh::New(b) => b.len(),
        };
    }
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&(root_b.len() as u32).to_le_bytes());
    body.extend_from_slice(root_b);
    body.extend_from_slice(&(devs.len() as u32).to_le_bytes());
    for d in devs {
        d.encode(&mut body);
    }
    let mut count = 0u64;
    for d in dirs {
        match d {
            Fresh::Old(i) => {
                // Read back (and checked) once more; one that cannot be is left out: its
                // directory is read in full next time.
                let Some(b) = old.and_then(|c| c.record_bytes(*i)) else {
                    continue;
                };
                body.extend_from_slice(&b);
            }
            Fresh::New(b) => body.extend_from_slice(b),
        }
        count += 1;
    }
    write_file(file, MAGIC, VERSION, count, &body, start_ns)
}

/// Writes a cache file atomically (temporary file + rename): the header (magic, version,
/// flags, record count, body length, time, BLAKE3 of all that and the body), then `body`.
fn write_file(
    file: &Path,
    magic: &[u8; 8],
    version: u32,
    count: u64,
    body: &[u8],
    start_ns: i128,
) -> std::io::Result<()> {
    if (HEADER_LEN + body.len()) as u64 > MAX_FILE {
        // It would be ignored when read; the old file (if any) stays as correct as it was.
        return Err(std::io::Error::other("cache file too large"));
    }
    let mut head = Vec::with_capacity(HEADER_LEN);
    head.extend_from_slice(magic);
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&count.to_le_bytes());
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(&clamp_i64(start_ns).to_le_bytes());
    let sum = checksum(&head, body);
    head.extend_from_slice(&sum);

    let dir = file.parent().unwrap_or(Path::new("."));
    let mut b = fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.recursive(true).create(dir)?;
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{:x}",
        std::process::id(),
        now_ns() as u64 ^ (body.as_ptr() as u64)
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&head)?;
        f.write_all(body)?;
        drop(f);
        fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Checks a cache file's header and checksum; returns the record count and a reader
/// positioned at the start of the body.
fn open_file<'a>(data: &'a [u8], magic: &[u8; 8], version: u32) -> Option<(u64, Reader<'a>)> {
    let mut r = Reader { data, pos: 0 };
    if r.take(8)? != magic || r.u32()? != version {
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
    Some((count, r))
}

// -- what a checkout learnt about its destination ---------------------------------------------

const STAMPS_MAGIC: &[u8; 8] = b"SNAPCKS\0";
/// 1: records. 2: the identity of the destination's file system ([`FsId`]), then records.
const STAMPS_VERSION: u32 = 2;

/// The files of a checkout's destination that held the right content, by path relative to
/// the destination, each with the stamp it had when that was last established (hashed, or
/// found unchanged since). An incremental pull or checkout then trusts a file whose stamp is
/// unchanged instead of hashing it again. The same rules as the walk's cache hold: records
/// are only written for settled files (mtime and ctime older than the start of the run minus
/// [`RACY_MARGIN_NS`]), the file is checksummed and ignored whole when anything is wrong with
/// it, and it is replaced atomically.
#[derive(Debug, Default)]
pub struct FileStamps {
    map: HashMap<Box<[u8]>, Rec>,
}

impl FileStamps {
    /// Loads `file` (written for the canonical destination `root`, whose file system is now
    /// `fs`); anything wrong with it gives an empty set. So does a destination file system
    /// that is not the one the file was written for, or one whose ctime is not to be trusted
    /// ([`ctime_reliable`]): there a changed file may keep its stamp.
    pub fn load(file: &Path, root: &Path, fs: Option<FsId>) -> FileStamps {
        Self::load_reporting(file, root, fs).0
    }

    /// As [`FileStamps::load`], with the reason the file was not read when the user should
    /// hear it (see [`read_cache_file`]).
    pub fn load_reporting(
        file: &Path,
        root: &Path,
        fs: Option<FsId>,
    ) -> (FileStamps, Option<String>) {
        let Some(now) = fs.filter(|f| ctime_reliable(f.f_type)) else {
            return (FileStamps::default(), None);
        };
        match read_cache_file(file) {
            Ok(Some(data)) => (
                parse_stamps(&data, root.as_os_str().as_bytes(), &now).unwrap_or_default(),
                None,
            ),
            Ok(None) => (FileStamps::default(), None),
            Err(why) => (FileStamps::default(), Some(why)),
        }
    }

    /// The record of `rel` (a path relative to the destination, without `./`).
    pub fn get(&self, rel: &[u8]) -> Option<&Rec> {
        self.map.get(rel)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn parse_stamps(data: &[u8], root: &[u8], fs: &FsId) -> Option<FileStamps> {
    let (count, mut r) = open_file(data, STAMPS_MAGIC, STAMPS_VERSION)?;
    let rl = r.u32()? as usize;
    if r.take(rl)? != root || FsId::read(&mut r)? != *fs {
        return None;
    }
    if count > (r.left() / (4 + 1 + REC_LEN)) as u64 {
        return None;
    }
    let mut map = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let pl = r.u32()? as usize;
        let rel = r.take(pl)?;
        if rel.is_empty() {
            return None;
        }
        let rec = Rec::decode(r.take(REC_LEN)?);
        if map.insert(Box::from(rel), rec).is_some() {
            return None;
        }
    }
    (r.left() == 0).then_some(FileStamps { map })
}

/// The stamps file of checkouts into `root` (canonical), in the cache directory `dir`.
pub fn stamps_file(dir: &Path, root: &Path) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(b"snapdir checkout stamps v1\0");
    h.update(root.as_os_str().as_bytes());
    dir.join(format!("checkout-{}", h.finalize().to_hex()))
}

/// Writes the stamps of a checkout into `root` (on the file system `fs`): the settled ones
/// of `recs` (see [`FileStamps`]). Errors are the caller's to ignore: the file is an
/// optimisation.
pub fn save_stamps(
    file: &Path,
    root: &Path,
    fs: &FsId,
    recs: &[(Vec<u8>, Rec)],
    start_ns: i128,
) -> std::io::Result<()> {
    let root_b = root.as_os_str().as_bytes();
    let mut body =
        Vec::with_capacity(4 + root_b.len() + FSID_LEN + recs.len() * (4 + 32 + REC_LEN));
    body.extend_from_slice(&(root_b.len() as u32).to_le_bytes());
    body.extend_from_slice(root_b);
    fs.encode(&mut body);
    let mut count = 0u64;
    for (rel, rec) in recs {
        if rel.is_empty() || !rec.settled(start_ns) {
            continue;
        }
        body.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        body.extend_from_slice(rel);
        rec.encode(&mut body);
        count += 1;
    }
    write_file(file, STAMPS_MAGIC, STAMPS_VERSION, count, &body, start_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ext4 file system (real ctime, reliable directory mtimes).
    const EXT4: FsId = FsId {
        dev: 1,
        f_type: 0xEF53,
        fsid: [1, 2, 3, 4, 5, 6, 7, 8],
    };

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

    fn stamp(t: i64) -> DirStamp {
        DirStamp {
            dev: 1,
            ino: 7,
            mtime_ns: t,
            ctime_ns: t,
            mode: 0o40755,
        }
    }

    fn fresh<'a>(rel: &'a str, t: i64, kids: Vec<FreshChild<'a>>) -> FreshDir<'a> {
        FreshDir {
            rel,
            stamp: stamp(t),
            digest: [5; 32],
            size: 3,
            n_contrib: kids.len() as u64,
            children: kids,
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/some/root");
        let f = cache_file(d.path(), root, false, &[], &[]);
        let now = now_ns();
        let racy = (now - 1_000_000_000) as i64;
        let kids = vec![
            FreshChild {
                name: b"a",
                dtype: libc::DT_REG,
                rec: Some(rec(1_000_000_000)),
            },
            // Racy: too recent, its record is left out (the name stays).
            FreshChild {
                name: b"b",
                dtype: libc::DT_REG,
                rec: Some(rec(racy)),
            },
            FreshChild {
                name: b"s",
                dtype: libc::DT_DIR,
                rec: None,
            },
        ];
        let dirs = vec![
            fresh("./", 1_000_000_000, kids).finish(None, now),
            // A racy directory: no reusable listing.
            fresh("./s/", racy, vec![]).finish(None, now),
        ];
        save(&f, root, &[EXT4], &dirs, None, now).unwrap();
        let c = StatCache::load(&f, root);
        assert_eq!((c.len(), c.files()), (2, 1));
        let top = c.dir("./").unwrap();
        assert!(top.listing_valid_for(&stamp(1_000_000_000)));
        assert!(!top.listing_valid_for(&stamp(1_000_000_001)));
        assert!(!c.dir("./s/").unwrap().listing_valid_for(&stamp(racy)));
        assert_eq!(top.len(), 3);
        assert_eq!(top.find(b"a").unwrap().rec(), Some(rec(1_000_000_000)));
        assert_eq!(top.find(b"b").unwrap().rec(), None);
        assert_eq!(top.find(b"s").unwrap().dtype(), libc::DT_DIR);
        assert!(top.find(b"c").is_none());
        assert_eq!(top.child(2).name(), b"s");
        assert_eq!((top.digest(), top.size(), top.n_contrib()), ([5; 32], 3, 3));
        // An unchanged record is referred to, a changed one re-encoded.
        let same = fresh(
            "./",
            1_000_000_000,
            vec![
                FreshChild {
                    name: b"a",
                    dtype: libc::DT_REG,
                    rec: Some(rec(1_000_000_000)),
                },
                FreshChild {
                    name: b"b",
                    dtype: libc::DT_REG,
                    rec: None,
                },
                FreshChild {
                    name: b"s",
                    dtype: libc::DT_DIR,
                    rec: None,
                },
            ],
        );
        assert!(matches!(same.finish(Some(&top), now), Fresh::Old(0)));
        let other = fresh("./", 1_000_000_001, vec![]);
        assert!(matches!(other.finish(Some(&top), now), Fresh::New(_)));
        // Saving from references gives the same file.
        let good = fs::read(&f).unwrap();
        save(
            &f,
            root,
            &[EXT4],
            &[Fresh::Old(0), Fresh::Old(1)],
            Some(&c),
            now,
        )
        .unwrap();
        assert_eq!(fs::read(&f).unwrap(), good);
        assert!(StatCache::load(&f, Path::new("/other")).is_empty());
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

    /// Records are read back from the open file when a directory is reached: a file
    /// renamed over it meanwhile (another walk's) changes nothing, and bytes changed in
    /// place after it was validated make that directory a miss, never a wrong record.
    #[test]
    fn records_are_read_back_per_directory_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let f = cache_file(d.path(), root, false, &[], &[]);
        let now = now_ns();
        let kid = |name: &'static [u8]| FreshChild {
            name,
            dtype: libc::DT_REG,
            rec: Some(rec(1)),
        };
        let dirs = vec![
            fresh("./", 1, vec![kid(b"a"), kid(b"d")]).finish(None, now),
            fresh("./d/", 1, vec![kid(b"x")]).finish(None, now),
        ];
        save(&f, root, &[EXT4], &dirs, None, now).unwrap();
        let c = StatCache::load(&f, root);
        assert_eq!((c.len(), c.files()), (2, 3));
        // Another walk renames a new file over it: the loaded cache still reads its own.
        save(&f, root, &[EXT4], &dirs[..1], None, now).unwrap();
        assert_eq!(
            c.dir("./d/").unwrap().find(b"x").unwrap().rec(),
            Some(rec(1))
        );
        // Bytes changed in place (same inode) after validation: that record is a miss.
        let c = StatCache::load(&f, root);
        assert_eq!(c.len(), 1);
        let mut data = fs::read(&f).unwrap();
        let at = data.len() - 1; // the last byte of the last checksum of the record
        data[at] ^= 1;
        let mut w = fs::OpenOptions::new().write(true).open(&f).unwrap();
        w.write_all(&data).unwrap();
        drop(w);
        assert!(c.dir("./").is_none());
        // Nor is it copied into the next file as an unchanged record.
        let g = d.path().join("next");
        save(&g, root, &[EXT4], &[Fresh::Old(0)], Some(&c), now).unwrap();
        assert!(StatCache::load(&g, root).is_empty());
        // A truncated file reads nothing back (no error, no panic).
        fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(c.dir("./").is_none());
    }

    #[test]
    fn other_versions_and_unsorted_listings_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let f = cache_file(d.path(), root, false, &[], &[]);
        let now = now_ns();
        let kids = |a: &'static [u8], b: &'static [u8]| {
            vec![
                FreshChild {
                    name: a,
                    dtype: libc::DT_REG,
                    rec: Some(rec(1)),
                },
                FreshChild {
                    name: b,
                    dtype: libc::DT_REG,
                    rec: Some(rec(1)),
                },
            ]
        };
        save(
            &f,
            root,
            &[EXT4],
            &[fresh("./", 1, kids(b"a", b"b")).finish(None, now)],
            None,
            now,
        )
        .unwrap();
        assert_eq!(StatCache::load(&f, root).files(), 2);
        // Same bytes under version 1 (with a valid checksum): not read.
        let mut v1 = fs::read(&f).unwrap();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let sum = checksum(&v1[..HEADER_LEN - 32], &v1[HEADER_LEN..]);
        v1[HEADER_LEN - 32..HEADER_LEN].copy_from_slice(&sum);
        fs::write(&f, &v1).unwrap();
        assert!(StatCache::load(&f, root).is_empty());
        // A listing out of order (or with duplicates) would break `find`: rejected whole.
        for (a, b) in [(b"b", b"a"), (b"a", b"a")] {
            save(
                &f,
                root,
                &[EXT4],
                &[fresh("./", 1, kids(a, b)).finish(None, now)],
                None,
                now,
            )
            .unwrap();
            assert!(StatCache::load(&f, root).is_empty());
        }
    }

    #[test]
    fn key_depends_on_options() {
        let d = Path::new("/c");
        let r = Path::new("/r");
        let a = cache_file(d, r, false, &[], &[]);
        assert_ne!(a, cache_file(d, r, true, &[], &[]));
        assert_ne!(a, cache_file(d, r, false, &["x".to_owned()], &[]));
        assert_ne!(a, cache_file(d, Path::new("/r2"), false, &[], &[]));
        assert_ne!(a, cache_file(d, r, false, &[], b"file\0x"));
        assert_ne!(
            cache_file(d, r, false, &[], b"file\0x"),
            cache_file(d, r, false, &[], b"file\0y")
        );
    }

    #[test]
    fn checkout_stamps_round_trip_and_keep_only_settled_records() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/some/dest");
        let file = stamps_file(dir.path(), root);
        let now: i64 = 10_000_000_000_000;
        let old = rec(now - 5_000_000_000);
        let racy = rec(now - 1_000_000_000);
        let recs = vec![
            (b"a/old".to_vec(), old),
            (b"b/racy".to_vec(), racy),
            (b"c/also-old".to_vec(), old),
        ];
        save_stamps(&file, root, &EXT4, &recs, now as i128).unwrap();
        let got = FileStamps::load(&file, root, Some(EXT4));
        assert_eq!(got.len(), 2);
        assert_eq!(got.get(b"a/old"), Some(&old));
        assert_eq!(got.get(b"c/also-old"), Some(&old));
        assert_eq!(got.get(b"b/racy"), None, "a racy record was written");
        // Written for another destination: not used.
        assert!(FileStamps::load(&file, Path::new("/other"), Some(EXT4)).is_empty());
        // Another root hashes to another file.
        assert_ne!(stamps_file(dir.path(), Path::new("/other")), file);
    }

    #[test]
    fn damaged_checkout_stamps_are_ignored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/d");
        let file = stamps_file(dir.path(), root);
        let now: i64 = 10_000_000_000_000;
        save_stamps(&file, root, &EXT4, &[(b"f".to_vec(), rec(0))], now as i128).unwrap();
        let good = fs::read(&file).unwrap();
        assert_eq!(FileStamps::load(&file, root, Some(EXT4)).len(), 1);
        for cut in [0, 10, HEADER_LEN, good.len() - 1] {
            fs::write(&file, &good[..cut]).unwrap();
            assert!(
                FileStamps::load(&file, root, Some(EXT4)).is_empty(),
                "cut at {cut}"
            );
        }
        for flip in [0, 9, HEADER_LEN + 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[flip] ^= 0x40;
            fs::write(&file, &bad).unwrap();
            assert!(
                FileStamps::load(&file, root, Some(EXT4)).is_empty(),
                "flip at {flip}"
            );
        }
        // A walk's cache file is not a stamps file, and the other way round.
        fs::write(&file, &good).unwrap();
        assert!(StatCache::load(&file, root).is_empty());
    }

    /// A valid cache file for `root` with one settled file record.
    fn one_file_cache(f: &Path, root: &Path, devs: &[FsId]) {
        let now = now_ns();
        let kids = vec![FreshChild {
            name: b"a",
            dtype: libc::DT_REG,
            rec: Some(rec(1)),
        }];
        save(
            f,
            root,
            devs,
            &[fresh("./", 1, kids).finish(None, now)],
            None,
            now,
        )
        .unwrap();
    }

    #[test]
    fn special_files_in_place_of_a_cache_file_are_refused_unopened() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let f = d.path().join("cache");
        // Missing: silent.
        assert_eq!(read_cache_file(&f), Ok(None));
        // A FIFO (opening it for reading would block for ever without O_NONBLOCK).
        let c = std::ffi::CString::new(f.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        let (cache, why) = StatCache::load_reporting(&f, root);
        assert!(cache.is_empty() && why.unwrap().contains("a FIFO"));
        assert!(t.elapsed().as_secs() < 5);
        fs::remove_file(&f).unwrap();
        // A symbolic link, to a valid cache file and to an endless device.
        let real = d.path().join("real");
        one_file_cache(&real, root, &[EXT4]);
        assert_eq!(StatCache::load(&real, root).files(), 1);
        for target in [real.as_path(), Path::new("/dev/zero")] {
            std::os::unix::fs::symlink(target, &f).unwrap();
            let (cache, why) = StatCache::load_reporting(&f, root);
            assert!(cache.is_empty() && why.unwrap().contains("a symbolic link"));
            fs::remove_file(&f).unwrap();
        }
        // A directory, a socket.
        fs::create_dir(&f).unwrap();
        assert!(read_cache_file(&f).unwrap_err().contains("a directory"));
        fs::remove_dir(&f).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(&f).unwrap();
        assert!(read_cache_file(&f).unwrap_err().contains("a socket"));
        fs::remove_file(&f).unwrap();
        // Writable by others: not ours alone, not read.
        fs::copy(&real, &f).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o622)).unwrap();
        assert!(read_cache_file(&f)
            .unwrap_err()
            .contains("writable by group or others"));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(StatCache::load(&f, root).files(), 1);
        // Larger than any file we write (sparse: no disk used): refused before reading.
        let big = fs::OpenOptions::new().write(true).open(&f).unwrap();
        big.set_len(MAX_FILE + 1).unwrap();
        drop(big);
        assert!(read_cache_file(&f).unwrap_err().contains("more than"));
        // And a writer never produces one: the body is refused before anything is written.
        let huge = vec![0u8; MAX_FILE as usize];
        let other = d.path().join("other");
        assert!(write_file(&other, MAGIC, VERSION, 0, &huge, 0).is_err());
        assert!(!other.exists());
    }

    #[test]
    fn a_cache_file_of_another_user_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("cache");
        one_file_cache(&f, Path::new("/r"), &[EXT4]);
        if unsafe { libc::geteuid() } != 0 {
            return; // only root can give a file away
        }
        let c = std::ffi::CString::new(f.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        assert_eq!(fs::metadata(&f).unwrap().uid(), 65534);
        assert!(read_cache_file(&f)
            .unwrap_err()
            .contains("owned by uid 65534"));
    }

    #[test]
    fn file_system_identities_are_recorded_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let root = Path::new("/r");
        let f = d.path().join("cache");
        let other_fsid = FsId {
            fsid: [9; 8],
            ..EXT4
        };
        let other_dev = FsId { dev: 2, ..EXT4 };
        one_file_cache(&f, root, &[EXT4, other_dev]);
        let c = StatCache::load(&f, root);
        assert_eq!(c.files(), 1);
        assert!(c.knows_fs(&EXT4) && c.knows_fs(&other_dev));
        assert!(!c.knows_fs(&other_fsid), "same st_dev, other file system");
        assert!(!c.knows_fs(&FsId {
            f_type: 0x4d44,
            ..EXT4
        }));
        // Two identities for one device number: the file is not ours, ignored whole.
        one_file_cache(&f, root, &[EXT4, other_fsid]);
        assert!(StatCache::load(&f, root).is_empty());
        // Checkout stamps: only for the file system they were written on, and only where
        // the ctime is real.
        let file = stamps_file(d.path(), root);
        save_stamps(
            &file,
            root,
            &EXT4,
            &[(b"f".to_vec(), rec(0))],
            10_000_000_000_000,
        )
        .unwrap();
        assert_eq!(FileStamps::load(&file, root, Some(EXT4)).len(), 1);
        assert!(FileStamps::load(&file, root, Some(other_fsid)).is_empty());
        assert!(FileStamps::load(&file, root, Some(other_dev)).is_empty());
        assert!(FileStamps::load(&file, root, None).is_empty());
        // vfat (0x4d44), exFAT, squashfs, FUSE, NFS: never trusted, even when they match.
        for magic in [0x4d44u64, 0x2011_BAB0, 0x7371_7368, 0x6573_5546, 0x6969] {
            let id = FsId {
                f_type: magic,
                ..EXT4
            };
            assert!(!ctime_reliable(magic));
            save_stamps(
                &file,
                root,
                &id,
                &[(b"f".to_vec(), rec(0))],
                10_000_000_000_000,
            )
            .unwrap();
            assert!(FileStamps::load(&file, root, Some(id)).is_empty());
        }
        // A version-1 stamps file (no identity) is ignored, not misread.
        save_stamps(
            &file,
            root,
            &EXT4,
            &[(b"f".to_vec(), rec(0))],
            10_000_000_000_000,
        )
        .unwrap();
        let mut v1 = fs::read(&file).unwrap();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let sum = checksum(&v1[..HEADER_LEN - 32], &v1[HEADER_LEN..]);
        v1[HEADER_LEN - 32..HEADER_LEN].copy_from_slice(&sum);
        fs::write(&file, &v1).unwrap();
        assert!(FileStamps::load(&file, root, Some(EXT4)).is_empty());
    }

    #[test]
    fn crafted_counts_cannot_make_the_parser_allocate() {
        // A header claiming 2^64-1 directories or file systems with a valid checksum: the
        // counts are bounded by the bytes left before anything is reserved.
        let root = b"/r";
        for (ndev, count) in [(u32::MAX, 0u64), (0, u64::MAX), (1, u64::MAX / 2)] {
            let mut body = Vec::new();
            body.extend_from_slice(&(root.len() as u32).to_le_bytes());
            body.extend_from_slice(root);
            body.extend_from_slice(&ndev.to_le_bytes());
            body.extend_from_slice(&[0u8; FSID_LEN]);
            let mut head = Vec::new();
            head.extend_from_slice(MAGIC);
            head.extend_from_slice(&VERSION.to_le_bytes());
            head.extend_from_slice(&0u32.to_le_bytes());
            head.extend_from_slice(&count.to_le_bytes());
            head.extend_from_slice(&(body.len() as u64).to_le_bytes());
            head.extend_from_slice(&0i64.to_le_bytes());
            let sum = checksum(&head, &body);
            head.extend_from_slice(&sum);
            head.extend_from_slice(&body);
            assert!(
                parse(&head, root, None).is_none(),
                "ndev {ndev} count {count}"
            );
        }
    }
}
