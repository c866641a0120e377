//! The `file://` store on disk (SPEC §4): objects and manifests under 3/3/3/rest shards.
//!
//! Objects appear only under their final name with verified content: bytes are copied to a
//! temporary name in the shard directory while they are hashed, and renamed into place only
//! if the digest is the key. Renaming over an object a concurrent writer just created is
//! harmless (same key, same bytes).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::error::{display_path, Code, Error, Result};
use crate::fsx;
use crate::hash::{hash_opened_pieces, hash_sized, open_nonblocking, HashOutcome};
use crate::manifest::{to_hex, Digest, Kind};
use crate::sparse::{HoleWriter, Piece};
use crate::walk::{walk_counted, Ingest, Progress, WalkOptions, Walked};

/// `abc/def/ghi/<rest>` of a hex digest.
pub fn shard(hex: &str) -> String {
    format!("{}/{}/{}/{}", &hex[0..3], &hex[3..6], &hex[6..9], &hex[9..])
}

pub fn object_path(root: &Path, d: &Digest) -> PathBuf {
    root.join(".objects").join(shard(&to_hex(d)))
}

/// The digests of `objects` the store at `root` has no regular file for (one `stat` each,
/// in parallel: the check a push's collection guard makes of every object it names).
pub fn missing_objects(root: &Path, objects: &[Digest]) -> Vec<Digest> {
    use rayon::prelude::*;
    objects
        .par_iter()
        .filter(|d| !fs::metadata(object_path(root, d)).is_ok_and(|m| m.is_file()))
        .copied()
        .collect()
}

pub fn manifest_path(root: &Path, id: &Digest) -> PathBuf {
    root.join(".manifests").join(shard(&to_hex(id)))
}

/// Where the bytes of an object come from, which decides what a mismatch means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A file of the tree being pushed: a mismatch means it changed (`IN_FLUX`).
    Tree,
    /// An object of another store: a mismatch means that store is corrupt (`HASH_MISMATCH`).
    Store,
}

/// One object to put: its key, where its bytes are, its expected size.
#[derive(Debug, Clone)]
pub struct PutItem {
    pub checksum: Digest,
    pub source: PathBuf,
    pub size: u64,
}

#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// `fsync` files before they are renamed into place and directories after.
    pub durable: bool,
    /// Re-hash objects that already exist and replace them if they are corrupt.
    pub repair: bool,
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub progress: Option<Arc<Progress>>,
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PutStats {
    pub written: u64,
    pub present: u64,
    pub repaired: u64,
    pub bytes_written: u64,
}

fn cancelled(opts: &LocalOptions) -> bool {
    opts.cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

fn interrupted(path: &Path) -> Error {
    Error::new(
        Code::Io,
        format!("interrupted while writing {}", display_path(path)),
    )
}

/// Puts objects into the store at `root` (created if missing), in parallel.
pub fn put_objects(
    root: &Path,
    items: &[PutItem],
    origin: Origin,
    opts: &LocalOptions,
) -> Result<PutStats> {
    fs::create_dir_all(root.join(".objects"))
        .map_err(|e| Error::io("cannot create store", root, e))?;
    let present = AtomicU64::new(0);
    // 1. What is missing (one stat per object; with `repair`, existing ones are re-hashed).
    let missing: Vec<(&PutItem, bool)> = items
        .par_iter()
        .filter_map(|it| {
            let dst = object_path(root, &it.checksum);
            match fs::symlink_metadata(&dst) {
                Err(_) => Some((it, false)),
                Ok(m) => {
                    let sound = !opts.repair
                        || (m.is_file()
                            && m.len() == it.size
                            && object_is_sound(&dst, &it.checksum));
                    if sound {
                        present.fetch_add(1, Ordering::Relaxed);
                        bump(opts, it.size);
                        None
                    } else {
                        Some((it, true))
                    }
                }
            }
        })
        .collect();
    // 2. Shard directories, level by level, each created once.
    create_shards(root, missing.iter().map(|(it, _)| &it.checksum))?;
    // 3. The objects, in parallel.
    let written = AtomicU64::new(0);
    let repaired = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    missing
        .par_iter()
        .try_for_each(|(it, was_corrupt)| -> Result<()> {
            let dst = object_path(root, &it.checksum);
            if cancelled(opts) {
                return Err(interrupted(&dst));
            }
            let n = write_object(
                &dst,
                &it.source,
                &it.checksum,
                it.size,
                origin,
                opts,
                *was_corrupt,
            )?;
            if *was_corrupt {
                repaired.fetch_add(1, Ordering::Relaxed);
            }
            written.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(n, Ordering::Relaxed);
            bump(opts, it.size);
            Ok(())
        })?;
    Ok(PutStats {
        written: written.into_inner(),
        present: present.into_inner(),
        repaired: repaired.into_inner(),
        bytes_written: bytes.into_inner(),
    })
}

/// Creates `.objects/abc`, `.objects/abc/def`, `.objects/abc/def/ghi` for the given keys:
/// each directory with exactly one `mkdir` (an existing one costs one failed call), level by
/// level so no call fails for a missing parent.
fn create_shards<'a>(root: &Path, keys: impl Iterator<Item = &'a Digest>) -> Result<()> {
    let base = root.join(".objects");
    let mut levels: [std::collections::BTreeSet<String>; 3] = Default::default();
    for d in keys {
        let h = to_hex(d);
        levels[0].insert(h[0..3].to_owned());
        levels[1].insert(format!("{}/{}", &h[0..3], &h[3..6]));
        levels[2].insert(format!("{}/{}/{}", &h[0..3], &h[3..6], &h[6..9]));
    }
    for level in &levels {
        level.par_iter().try_for_each(|rel| {
            let p = base.join(rel);
            match fs::create_dir(&p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(Error::io("cannot create", &p, e)),
            }
        })?;
    }
    Ok(())
}

fn bump(opts: &LocalOptions, size: u64) {
    if let Some(p) = &opts.progress {
        p.files.fetch_add(1, Ordering::Relaxed);
        p.bytes.fetch_add(size, Ordering::Relaxed);
    }
}

fn object_is_sound(path: &Path, checksum: &Digest) -> bool {
    let Ok(f) = open_nonblocking(path, true) else {
        return false;
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    matches!(hash_sized(&f, size), Ok((d, n)) if &d == checksum && n == size)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other writer uses: `<final>.tmp-<pid>-<n>`.
pub fn temp_sibling(dst: &Path) -> PathBuf {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = dst.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{pid}-{n}"));
    dst.with_file_name(name)
}

/// Copies `source` to `dst` through an unnamed or temporary file, verifying digest and
/// size before the object gets its name; returns the number of bytes written. `replace`
/// overwrites an existing (corrupt) object, otherwise an object that appeared meanwhile
/// (another writer, same bytes) is left as it is.
fn write_object(
    dst: &Path,
    source: &Path,
    checksum: &Digest,
    size: u64,
    origin: Origin,
    opts: &LocalOptions,
    replace: bool,
) -> Result<u64> {
    let mut src = match open_nonblocking(source, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(match origin {
                Origin::Tree => Error::in_flux(source, "it vanished"),
                Origin::Store => Error::new(
                    Code::NotFound,
                    format!(
                        "object {} is missing: {}",
                        to_hex(checksum),
                        display_path(source)
                    ),
                ),
            })
        }
        Err(e) => return Err(Error::io("cannot open", source, e)),
    };
    let parent = dst.parent().expect("object paths have a parent");
    // Linux: an unnamed file linked in only once verified (no temporary name to clean up
    // after a crash, one metadata operation fewer than create + rename). A repair renames
    // over the corrupt object instead (a link cannot replace a name).
    let mut spill = match Spill::create(parent, dst, !replace) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
            Spill::create(parent, dst, !replace)
        }
        other => other,
    }
    .map_err(|e| Error::io("cannot create", dst, e))?;
    let copied = copy_checked(
        &mut src,
        spill.file(),
        source,
        checksum,
        size,
        origin,
        dst,
        opts.cancel.as_deref(),
    );
    let n = match copied {
        Ok(n) => n,
        Err(e) => {
            spill.discard();
            return Err(e);
        }
    };
    spill
        .publish(dst, opts.durable)
        .map_err(|e| Error::io("cannot write", dst, e))?;
    if opts.durable {
        sync_dir(parent)?;
    }
    Ok(n)
}

/// Copies while hashing and checks the result is exactly object `checksum` of `size` bytes.
#[allow(clippy::too_many_arguments)]
fn copy_checked(
    src: &mut File,
    out: &mut File,
    source: &Path,
    checksum: &Digest,
    size: u64,
    origin: Origin,
    dst: &Path,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    // At most one byte more than expected: a source that never ends (a link to
    // /dev/zero planted in a store, a FIFO) or a huge sparse file must not fill the disk.
    // The holes of a sparse source are neither read nor written (the object stays sparse).
    let (d, n) = crate::sparse::copy_file_hashing(src, out, size, size.saturating_add(1), cancel)
        .map_err(|e| e.at(source, dst))?;
    if &d != checksum || n != size {
        return Err(match origin {
            Origin::Tree => Error::in_flux(source, "its content no longer matches the walk"),
            Origin::Store => Error::new(
                Code::HashMismatch,
                format!(
                    "object {} does not hash to its key (got {}, {n} bytes): {}",
                    to_hex(checksum),
                    to_hex(&d),
                    display_path(source)
                ),
            ),
        });
    }
    Ok(n)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("cannot sync", dir, e))
}

/// Copies one object of the store at `root` to `dest` (any path), verifying it; on a
/// mismatch `dest` is removed and `HASH_MISMATCH` raised.
pub fn get_object(root: &Path, checksum: &Digest, dest: &Path) -> Result<u64> {
    get_object_cancellable(root, checksum, dest, None)
}

/// [`get_object`] that stops within a chunk of `cancel` being set (the copy fails and
/// `dest` is removed).
pub fn get_object_cancellable(
    root: &Path,
    checksum: &Digest,
    dest: &Path,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    get_object_sized(root, checksum, dest, None, cancel)
}

/// [`get_object_cancellable`] for an object the caller expects to have `size` bytes: a
/// stored file of another size is refused before a byte is copied (a sparse terabyte under
/// a key must not be copied out), and the copy stops one byte past `size`.
pub fn get_object_sized(
    root: &Path,
    checksum: &Digest,
    dest: &Path,
    size: Option<u64>,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let mut src = open_object(root, checksum, size)?;
    let mut out = File::create(dest).map_err(|e| Error::io("cannot create", dest, e))?;
    let res = copy_object_into(root, checksum, &mut src, &mut out, dest, size, cancel);
    if res.is_err() {
        drop(out);
        let _ = fs::remove_file(dest);
    }
    res
}

/// Opens object `checksum` of the store at `root` for [`copy_object_into`], refusing a
/// stored file that is not a regular file of `size` bytes before a byte is copied.
pub fn open_object(root: &Path, checksum: &Digest, size: Option<u64>) -> Result<File> {
    let src_path = object_path(root, checksum);
    let src = match open_nonblocking(&src_path, true) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::new(
                Code::NotFound,
                format!(
                    "object {} not found in {}",
                    to_hex(checksum),
                    display_path(root)
                ),
            ))
        }
        Err(e) => return Err(Error::io("cannot open", &src_path, e)),
    };
    let meta = src
        .metadata()
        .map_err(|e| Error::io("cannot stat", &src_path, e))?;
    if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
        return Err(Error::new(
            Code::HashMismatch,
            format!(
                "object {} in {} is not a regular file of {} bytes",
                to_hex(checksum),
                display_path(root),
                size.map_or_else(|| "the right number of".to_owned(), |s| s.to_string())
            ),
        ));
    }
    Ok(src)
}

/// Copies the object opened by [`open_object`] into `out` (an open file the caller created,
/// named `out_name` in messages), verifying it. The caller removes `out` on an error: a
/// checkout writes through descriptors only, never by a path that could be swapped.
pub fn copy_object_into(
    root: &Path,
    checksum: &Digest,
    src: &mut File,
    out: &mut File,
    out_name: &Path,
    size: Option<u64>,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let src_path = object_path(root, checksum);
    let want = match size {
        Some(s) => s,
        None => src
            .metadata()
            .map_err(|e| Error::io("cannot stat", &src_path, e))?
            .len(),
    };
    // A sparse object is copied out sparse: its holes are not read, and not written.
    match crate::sparse::copy_file_hashing(src, out, want, want.saturating_add(1), cancel) {
        Ok((d, n)) if &d == checksum => Ok(n),
        Ok((d, _)) => Err(Error::new(
            Code::HashMismatch,
            format!(
                "object {} in {} does not hash to its key (got {})",
                to_hex(checksum),
                display_path(root),
                to_hex(&d)
            ),
        )),
        Err(e) => Err(e.at(&src_path, out_name)),
    }
}

/// Problems found by [`verify_objects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    Missing,
    Corrupt,
}

/// Re-hashes objects (streamed, in parallel); returns the ones missing or corrupt (content
/// not hashing to the key, or a size other than expected).
pub fn verify_objects(
    root: &Path,
    items: &[(Digest, u64)],
    opts: &LocalOptions,
) -> Result<Vec<(Digest, Problem)>> {
    let mut bad: Vec<(Digest, Problem)> = items
        .par_iter()
        .map(|(d, size)| -> Result<Option<(Digest, Problem)>> {
            let p = object_path(root, d);
            if cancelled(opts) {
                return Err(interrupted(&p));
            }
            let f = match open_nonblocking(&p, true) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Some((*d, Problem::Missing)))
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Ok(Some((*d, Problem::Corrupt)))
                }
                Err(e) => return Err(Error::io("cannot open", &p, e)),
            };
            match f.metadata() {
                Ok(m) if m.is_file() && m.len() == *size => {}
                // Not a regular file, or the wrong size: corrupt without reading it (a
                // sparse terabyte or a link to /dev/zero would never finish).
                Ok(_) => return Ok(Some((*d, Problem::Corrupt))),
                Err(e) => return Err(Error::io("cannot stat", &p, e)),
            }
            let (got, n) = match hash_sized(&f, *size) {
                Ok(done) => done,
                // Truncated while it was read: not the object it should be.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(Some((*d, Problem::Corrupt)))
                }
                Err(e) => return Err(Error::io("cannot read", &p, e)),
            };
            bump(opts, n);
            Ok((got != *d || n != *size).then_some((*d, Problem::Corrupt)))
        })
        .filter_map(|r| r.transpose())
        .collect::<Result<_>>()?;
    bad.sort_unstable();
    Ok(bad)
}

/// Lists the keys under `.objects/` or `.manifests/` of a store (4 levels of shards),
/// ignoring anything that is not a well-formed key (temporary files, strays).
pub fn list_keys(root: &Path, kind: &str) -> Result<Vec<Digest>> {
    let base = root.join(kind);
    let mut out = Vec::new();
    let rd = |p: &Path| -> Result<Vec<(String, bool)>> {
        match fs::read_dir(p) {
            Ok(rd) => rd
                .map(|e| {
                    let e = e.map_err(|err| Error::io("cannot list", p, err))?;
                    let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    Ok((e.file_name().to_string_lossy().into_owned(), is_dir))
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("cannot list", p, e)),
        }
    };
    let hex3 = |s: &str| {
        s.len() == 3
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    for (a, da) in rd(&base)? {
        if !da || !hex3(&a) {
            continue;
        }
        for (b, db) in rd(&base.join(&a))? {
            if !db || !hex3(&b) {
                continue;
            }
            for (c, dc) in rd(&base.join(&a).join(&b))? {
                if !dc || !hex3(&c) {
                    continue;
                }
                for (rest, dr) in rd(&base.join(&a).join(&b).join(&c))? {
                    if dr {
                        continue;
                    }
                    if let Some(d) = crate::manifest::parse_hex(&format!("{a}{b}{c}{rest}")) {
                        out.push(d);
                    }
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A file held while it is hashed, until its key is known: in memory up to this size (a
/// file already in the store then costs no write at all), past it in an unnamed file.
const SPOOL_MEM: usize = 1 << 20;

/// The bytes of one file on their way into the store.
struct Spool<'a> {
    objects: &'a Path,
    buf: Vec<u8>,
    /// The spill file and where the bytes go in it (all-zero blocks and the holes of a
    /// sparse source are left as holes).
    spill: Option<(Spill, HoleWriter)>,
    error: Option<io::Error>,
    len: u64,
}

/// A spooled file on disk, in `.objects/` (the file system of its final name).
enum Spill {
    /// Linux: `O_TMPFILE`, given its name with `linkat`, nothing to clean up after a crash.
    Unnamed(File),
    /// Elsewhere: a temporary name (not a key: listings ignore it) renamed into place.
    Named(File, PathBuf),
}

impl Spool<'_> {
    /// One piece of the file: bytes, or a hole of the source (zeros not read).
    fn take(&mut self, piece: Piece<'_>) -> io::Result<()> {
        let n = match piece {
            Piece::Data(c) => c.len() as u64,
            Piece::Zeros(n) => n,
        };
        self.len += n;
        #[cfg(test)]
        tests::while_reading(self.len);
        if self.spill.is_none() && self.buf.len() as u64 + n <= SPOOL_MEM as u64 {
            match piece {
                Piece::Data(c) => self.buf.extend_from_slice(c),
                Piece::Zeros(n) => self.buf.resize(self.buf.len() + n as usize, 0),
            }
            return Ok(());
        }
        let r = (|| {
            if self.spill.is_none() {
                let spill = Spill::open(self.objects)?;
                let mut out = HoleWriter::new(f_of(&spill))?;
                out.write(f_of(&spill), &self.buf)?;
                self.buf = Vec::new();
                self.spill = Some((spill, out));
            }
            let (spill, out) = self.spill.as_mut().expect("just set");
            match piece {
                Piece::Data(c) => out.write(f_of(spill), c),
                Piece::Zeros(n) => out.skip(f_of(spill), n),
            }
        })();
        r.map_err(|e| {
            let kind = e.kind();
            self.error = Some(e);
            io::Error::from(kind)
        })
    }

    /// The spill, its length set (a file that ends in a hole ends there only by its
    /// length), or `None` for bytes kept in memory.
    fn finished_spill(&mut self) -> io::Result<Option<Spill>> {
        match self.spill.take() {
            None => Ok(None),
            Some((spill, out)) => match out.finish(f_of(&spill)) {
                Ok(()) => Ok(Some(spill)),
                Err(e) => {
                    spill.discard();
                    Err(e)
                }
            },
        }
    }

    /// Removes the spill, if any (the bytes will not be named).
    fn discard(&mut self) {
        if let Some((s, _)) = self.spill.take() {
            s.discard();
        }
    }
}

impl Spill {
    fn open(objects: &Path) -> io::Result<Spill> {
        Spill::create(objects, &objects.join("spool"), true)
    }

    /// An unnamed file in `dir` (when `unnamed` and the system has them), else a new file
    /// named after `beside` (see [`temp_sibling`]), mode 0644 either way.
    fn create(dir: &Path, beside: &Path, unnamed: bool) -> io::Result<Spill> {
        if unnamed {
            if let Some(f) = fsx::open_unnamed(dir) {
                return Ok(Spill::Unnamed(f));
            }
        }
        let tmp = temp_sibling(beside);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let spill = Spill::Named(f, tmp);
        match fsx::fchmod(f_of(&spill), 0o644) {
            Ok(()) => Ok(spill),
            Err(e) => {
                spill.discard();
                Err(e)
            }
        }
    }

    fn file(&mut self) -> &mut File {
        match self {
            Spill::Unnamed(f) | Spill::Named(f, _) => f,
        }
    }

    /// Gives the spooled bytes the name `dst` (an object that appeared meanwhile, from a
    /// concurrent writer of the same key, is kept).
    fn publish(mut self, dst: &Path, durable: bool) -> io::Result<()> {
        if durable {
            self.file().sync_all()?;
        }
        match self {
            Spill::Unnamed(f) => match fsx::link_unnamed(&f, dst) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            },
            Spill::Named(f, tmp) => {
                drop(f);
                fs::rename(&tmp, dst).inspect_err(|_| {
                    let _ = fs::remove_file(&tmp);
                })
            }
        }
    }

    fn discard(self) {
        if let Spill::Named(f, tmp) = self {
            drop(f);
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Copies the files of a tree into a `file://` store while the walk hashes them, so each
/// byte is read once (SPEC §4: objects appear only under their final name, with the
/// content their name says: the bytes written are the bytes hashed, and the walk's
/// before/after `fstat` turns a file that changed meanwhile into `IN_FLUX` before anything
/// is named).
#[derive(Debug)]
pub struct Ingestor {
    root: PathBuf,
    objects: PathBuf,
    durable: bool,
    /// Shard directories known to exist (`abc`, `abc/def`, `abc/def/ghi`).
    shards: Mutex<HashSet<String>>,
    /// The top-level shards (`abc`) the store had when this push began, or `None` when they
    /// could not be listed. An object under any other top-level shard cannot have been
    /// there before: it is written without first asking whether it exists (one failed
    /// `stat` less per object in a new store; a concurrent writer of the same key is met
    /// by the final `link`, which keeps the object already there).
    had_top: Option<HashSet<String>>,
    /// Keys this push has placed or found present.
    seen: Mutex<HashSet<Digest>>,
    written: AtomicU64,
    present: AtomicU64,
    bytes: AtomicU64,
}

fn f_of(spill: &Spill) -> &File {
    match spill {
        Spill::Unnamed(f) | Spill::Named(f, _) => f,
    }
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spill")
    }
}

impl Ingestor {
    pub fn new(root: &Path, durable: bool) -> Ingestor {
        Ingestor {
            root: root.to_path_buf(),
            objects: root.join(".objects"),
            durable,
            shards: Mutex::new(HashSet::new()),
            had_top: fs::read_dir(root.join(".objects")).ok().and_then(|rd| {
                rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<io::Result<HashSet<String>>>()
                    .ok()
            }),
            seen: Mutex::new(HashSet::new()),
            written: AtomicU64::new(0),
            present: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Creates the shard directories of `hex` that are not known to exist, each with one
    /// `mkdir` (an existing one costs a failed call), parents first.
    fn ensure_shards(&self, hex: &str) -> Result<()> {
        let levels = [
            hex[0..3].to_owned(),
            format!("{}/{}", &hex[0..3], &hex[3..6]),
            format!("{}/{}/{}", &hex[0..3], &hex[3..6], &hex[6..9]),
        ];
        let known = |rel: &String| {
            self.shards
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(rel)
        };
        if known(&levels[2]) {
            return Ok(());
        }
        for rel in levels {
            if known(&rel) {
                continue;
            }
            let p = self.objects.join(&rel);
            match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("cannot create", &p, e)),
            }
            self.shards
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rel);
        }
        Ok(())
    }

    /// Names the spooled bytes of a file that hashed to `digest`, unless the store has it.
    fn place(&self, digest: &Digest, mut spool: Spool<'_>) -> Result<()> {
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*digest);
        let dst = object_path(&self.root, digest);
        let hex = to_hex(digest);
        let may_exist = self
            .had_top
            .as_ref()
            .is_none_or(|top| top.contains(&hex[0..3]));
        if !first || (may_exist && fs::symlink_metadata(&dst).is_ok()) {
            if first {
                self.present.fetch_add(1, Ordering::Relaxed);
            }
            spool.discard();
            return Ok(());
        }
        if let Err(e) = self.ensure_shards(&hex) {
            spool.discard();
            return Err(e);
        }
        let spill = spool
            .finished_spill()
            .map_err(|e| Error::io("cannot write", &dst, e))?;
        match spill {
            Some(spill) => spill
                .publish(&dst, self.durable)
                .map_err(|e| Error::io("cannot write", &dst, e))?,
            None => write_bytes(&dst, &spool.buf, self.durable)?,
        };
        let n = spool.len;
        if self.durable {
            sync_dir(dst.parent().expect("object paths have a parent"))?;
        }
        self.written.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Keys placed or found present so far.
    pub fn seen(&self) -> HashSet<Digest> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stats(&self) -> PutStats {
        PutStats {
            written: self.written.load(Ordering::Relaxed),
            present: self.present.load(Ordering::Relaxed),
            repaired: 0,
            bytes_written: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Ingest for Ingestor {
    fn file(
        &self,
        opened: io::Result<File>,
        path: &Path,
        no_follow: bool,
        reopen: &dyn Fn() -> io::Result<File>,
    ) -> Result<HashOutcome> {
        let mut spool = Spool {
            objects: &self.objects,
            buf: Vec::new(),
            spill: None,
            error: None,
            len: 0,
        };
        let outcome = hash_opened_pieces(opened, path, no_follow, |p| spool.take(p));
        if let Some(e) = spool.error.take() {
            spool.discard();
            return Err(Error::io("cannot write into", &self.objects, e));
        }
        match outcome {
            Ok(HashOutcome::File(h)) => {
                if let Err(e) = confirm_if_racy(path, reopen, &h) {
                    spool.discard();
                    return Err(e);
                }
                self.place(&h.digest, spool)?;
                Ok(HashOutcome::File(h))
            }
            other => {
                spool.discard();
                other
            }
        }
    }
}

/// A file modified within the timestamp granularity of its read may have been rewritten
/// during the read with its size and times unchanged (the racy case of the stat cache):
/// such a file is read a second time and must give the same bytes and stamp, else it is
/// `IN_FLUX`. Settled files (the vast majority) are read once. `reopen` opens the file again
/// as the walk did (relative to its directory: the path may be longer than `PATH_MAX`).
fn confirm_if_racy(
    path: &Path,
    reopen: &dyn Fn() -> io::Result<File>,
    h: &crate::hash::Hashed,
) -> Result<()> {
    let limit = crate::statcache::now_ns() - crate::statcache::RACY_MARGIN_NS;
    if h.stamp.mtime_ns < limit && h.stamp.ctime_ns < limit {
        return Ok(());
    }
    let changed = || Error::in_flux(path, "its content changed while it was read");
    let f = match reopen() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::in_flux(path, "it vanished"))
        }
        Err(e) => return Err(Error::io("cannot open", path, e)),
    };
    let stamp_now = |f: &File| -> Result<crate::hash::Stamp> {
        f.metadata()
            .map(|m| crate::hash::Stamp::of(&m))
            .map_err(|e| Error::io("cannot stat", path, e))
    };
    let same = |s: &crate::hash::Stamp| {
        s.same_content(&h.stamp) && s.ino == h.stamp.ino && s.dev == h.stamp.dev
    };
    if !same(&stamp_now(&f)?) {
        return Err(changed());
    }
    // Mapped, holes not read: a large file that was just written costs no copy here.
    let (d, n) = match hash_sized(&f, h.stamp.size) {
        Ok(done) => done,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(changed()),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    if d != h.digest || n != h.stamp.size || !same(&stamp_now(&f)?) {
        return Err(changed());
    }
    Ok(())
}

/// Writes `bytes` as the object `dst` (its shard directory exists): unnamed file + link
/// where the system has them, else a temporary name + rename.
fn write_bytes(dst: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let parent = dst.parent().expect("object paths have a parent");
    let mut spill =
        Spill::create(parent, dst, true).map_err(|e| Error::io("cannot create", dst, e))?;
    if let Err(e) = spill.file().write_all(bytes) {
        spill.discard();
        return Err(Error::io("cannot write", dst, e));
    }
    spill
        .publish(dst, durable)
        .map_err(|e| Error::io("cannot write", dst, e))
}

/// What [`push_tree`] did.
#[derive(Debug)]
pub struct PushOutcome {
    pub walked: Walked,
    pub stats: PutStats,
    /// The store already had the snapshot's manifest: nothing more was copied.
    pub noop: bool,
}

/// Snapshots `tree` into the `file://` store at `root` (created if missing): files are
/// copied into the store while the walk hashes them (one read of each byte); files whose
/// checksum came from the stat cache are copied afterwards if the store lacks them (read
/// again and verified, as [`put_objects`] does). The manifest is the caller's to write,
/// last.
pub fn push_tree(
    root: &Path,
    tree: &Path,
    walk_opts: &WalkOptions,
    opts: &LocalOptions,
) -> Result<PushOutcome> {
    fs::create_dir_all(root.join(".objects"))
        .map_err(|e| Error::io("cannot create store", root, e))?;
    let ingestor = Arc::new(Ingestor::new(root, opts.durable));
    let mut wo = walk_opts.clone();
    wo.ingest = Some(ingestor.clone());
    let walked = walk_counted(tree, &wo)?;
    let mut stats = ingestor.stats();
    let id = walked.manifest.id();
    if manifest_path(root, &id).is_file() {
        return Ok(PushOutcome {
            walked,
            stats,
            noop: true,
        });
    }
    let seen = ingestor.seen();
    let mut rest: Vec<PutItem> = Vec::new();
    let mut queued: HashSet<Digest> = HashSet::new();
    for e in walked.manifest.entries() {
        if e.kind == Kind::File && !seen.contains(&e.checksum) && queued.insert(e.checksum) {
            rest.push(PutItem {
                checksum: e.checksum,
                source: tree.join(e.rel()),
                size: e.size,
            });
        }
    }
    if !rest.is_empty() {
        let quiet = LocalOptions {
            progress: None,
            ..opts.clone()
        };
        let more = put_objects(root, &rest, Origin::Tree, &quiet)?;
        stats.written += more.written;
        stats.present += more.present;
        stats.bytes_written += more.bytes_written;
    }
    Ok(PushOutcome {
        walked,
        stats,
        noop: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push with default options (what most tests here need).
    pub(super) fn push(store: &Path, tree: &Path) -> Result<PushOutcome> {
        push_tree(
            store,
            tree,
            &WalkOptions::default(),
            &LocalOptions::default(),
        )
    }
    use std::os::unix::fs::MetadataExt;

    fn tree(dir: &Path) -> PathBuf {
        let t = dir.join("tree");
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("small.txt"), b"small\n").unwrap();
        fs::write(t.join("a/same.txt"), b"small\n").unwrap();
        fs::write(t.join("a/b/big.bin"), vec![9u8; 5 * crate::hash::CHUNK + 7]).unwrap();
        fs::write(t.join("a/empty"), b"").unwrap();
        t
    }

    /// Every object under `.objects/` hashes to its key; returns the keys.
    fn sound_keys(store: &Path) -> Vec<Digest> {
        let keys = list_keys(store, ".objects").unwrap();
        for k in &keys {
            let bytes = fs::read(object_path(store, k)).unwrap();
            assert_eq!(blake3::hash(&bytes).as_bytes(), k);
            let mode = fs::metadata(object_path(store, k)).unwrap().mode();
            assert_eq!(mode & 0o7777, 0o644);
        }
        keys
    }

    #[test]
    fn push_tree_copies_while_hashing_and_skips_present_objects() {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(dir.path());
        let store = dir.path().join("store");
        let out = push(&store, &t).unwrap();
        assert!(!out.noop);
        let plain = crate::walk::walk(&t, &WalkOptions::default()).unwrap();
        assert_eq!(out.walked.manifest.id(), plain.manifest.id());
        // small.txt and a/same.txt share one object; the empty file is an object too.
        assert_eq!(out.stats.written, 3, "{:?}", out.stats);
        assert_eq!(
            out.stats.bytes_written,
            6 + 5 * crate::hash::CHUNK as u64 + 7
        );
        let keys = sound_keys(&store);
        assert_eq!(keys.len(), 3);
        // Nothing but shard directories and objects: no temporary left behind.
        let stray: Vec<_> = fs::read_dir(store.join(".objects"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.len() != 3)
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
        // Again: objects present are neither rewritten nor counted as written.
        let inode = fs::metadata(object_path(&store, &keys[0])).unwrap().ino();
        let again = push(&store, &t).unwrap();
        assert_eq!((again.stats.written, again.stats.present), (0, 3));
        assert_eq!(
            fs::metadata(object_path(&store, &keys[0])).unwrap().ino(),
            inode
        );
    }

    #[test]
    fn push_tree_sees_the_manifest_and_fills_what_the_stat_cache_vouched_for() {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(dir.path());
        let cache = dir.path().join("statcache");
        let opts = WalkOptions {
            stat_cache: Some(cache),
            ..WalkOptions::default()
        };
        // Old enough for the racy-timestamp rule to let the cache vouch for the files.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for f in ["small.txt", "a/same.txt", "a/b/big.bin", "a/empty"] {
            let file = fs::File::options().write(true).open(t.join(f)).unwrap();
            file.set_modified(old).unwrap();
        }
        let first = dir.path().join("first");
        push_tree(&first, &t, &opts, &LocalOptions::default()).unwrap();
        // The cache now knows every file: a push into another store reads them afterwards.
        let second = dir.path().join("second");
        let out = push_tree(&second, &t, &opts, &LocalOptions::default()).unwrap();
        assert_eq!(out.stats.written, 3, "{:?}", out.stats);
        assert_eq!(sound_keys(&second).len(), 3);
        // With its manifest in place the push is a no-op.
        let id = out.walked.manifest.id();
        let mp = manifest_path(&second, &id);
        fs::create_dir_all(mp.parent().unwrap()).unwrap();
        fs::write(&mp, out.walked.manifest.render()).unwrap();
        let noop = push_tree(&second, &t, &opts, &LocalOptions::default()).unwrap();
        assert!(noop.noop);
        assert_eq!(noop.stats.written, 0);
    }

    #[test]
    fn objects_already_in_the_store_are_found_and_kept_new_ones_written() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tree");
        fs::create_dir_all(&t).unwrap();
        fs::write(t.join("old.txt"), b"already stored").unwrap();
        let store = dir.path().join("store");
        let first = push(&store, &t).unwrap();
        assert_eq!((first.stats.written, first.stats.present), (1, 0));
        let old = object_path(&store, blake3::hash(b"already stored").as_bytes());
        let ino = fs::metadata(&old).unwrap().ino();
        // A second file, and a push that lists the (now non-empty) top level first.
        fs::write(t.join("new.txt"), b"not yet").unwrap();
        let second = push(&store, &t).unwrap();
        assert_eq!((second.stats.written, second.stats.present), (1, 1));
        assert_eq!(
            fs::metadata(&old).unwrap().ino(),
            ino,
            "the stored object was rewritten"
        );
        assert_eq!(sound_keys(&store).len(), 2);
    }

    /// A file the tests append to while it is being read: once a spool has taken this many
    /// bytes (a count no other test file reaches exactly, as tests run in parallel).
    static GROW: Mutex<Option<(PathBuf, u64)>> = Mutex::new(None);
    const TRIGGER: u64 = 3 * crate::hash::CHUNK as u64 + 1;

    /// Serialises the tests that arm [`GROW`].
    pub(super) static GROW_LOCK: Mutex<()> = Mutex::new(());

    /// Arms the hook: `path` grows once a spool has taken `at` bytes.
    pub(super) fn while_reading_at(path: &Path, at: u64) {
        *GROW.lock().unwrap() = Some((path.to_path_buf(), at));
    }

    pub(super) fn while_reading(spooled: u64) {
        let mut g = GROW.lock().unwrap();
        if g.as_ref().is_some_and(|(_, at)| *at == spooled) {
            let (p, _) = g.take().unwrap();
            let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(b"more").unwrap();
        }
    }

    /// Pushes a tree holding only `name` (with `data`) while the hook appends to it once
    /// `at` bytes were spooled: the push must fail `IN_FLUX` naming the file and leave no
    /// object. Returns the tree and the store.
    pub(super) fn push_while_growing(
        dir: &Path,
        name: &str,
        data: &[u8],
        at: u64,
    ) -> (PathBuf, PathBuf) {
        let t = dir.join("tree");
        fs::create_dir_all(&t).unwrap();
        let file = t.join(name);
        fs::write(&file, data).unwrap();
        let store = dir.join("store");
        let _serial = GROW_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        while_reading_at(&file, at);
        let err = push(&store, &t).unwrap_err();
        assert_eq!(err.code, Code::InFlux, "{err}");
        assert!(err.message.contains(name), "{err}");
        assert!(sound_keys(&store).is_empty());
        (t, store)
    }

    #[test]
    fn a_file_changing_while_pushed_is_in_flux_and_names_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Spooled in memory (below SPOOL_MEM); the only file, so the hook fires on it.
        let data = vec![3u8; TRIGGER as usize];
        let (t, store) = push_while_growing(dir.path(), "big.bin", &data, TRIGGER);
        // Holding still, the same push succeeds.
        let out = push(&store, &t).unwrap();
        assert_eq!(out.stats.written, 1);
        assert_eq!(sound_keys(&store).len(), 1);
    }
}

#[cfg(test)]
mod large_file_tests {
    use super::tests::{push, push_while_growing};
    use super::*;

    /// Deterministic bytes that do not repeat in short cycles (a linear congruential
    /// generator's high bits).
    pub(super) fn pseudo_random(size: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..size)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect()
    }

    #[test]
    fn a_large_file_is_spooled_into_the_store_under_its_hash_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tree");
        fs::create_dir_all(&t).unwrap();
        let data = pseudo_random(3 << 20, 7);
        fs::write(t.join("big.bin"), &data).unwrap();
        let store = dir.path().join("store");
        let out = push(&store, &t).unwrap();
        let digest = *blake3::hash(&data).as_bytes();
        assert_eq!(out.stats.written, 1);
        assert_eq!(fs::read(object_path(&store, &digest)).unwrap(), data);
        let meta = fs::metadata(object_path(&store, &digest)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o644
        );
        // Nothing but the object (no spill left under a temporary name).
        let mut names = Vec::new();
        for e in walkdir(&store.join(".objects")) {
            names.push(e);
        }
        assert_eq!(names, vec![object_path(&store, &digest)]);
    }

    fn walkdir(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(walkdir(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn a_large_file_changing_while_spooled_is_in_flux_and_names_nothing() {
        // Past SPOOL_MEM: spooled into an unnamed file, which must vanish with the error.
        let dir = tempfile::tempdir().unwrap();
        let size = (2 << 20) + 12_345; // a count no other test file has
        let (_, store) = push_while_growing(
            dir.path(),
            "moving.bin",
            &pseudo_random(size, 9),
            size as u64,
        );
        assert!(walkdir(&store.join(".objects")).is_empty());
    }

    #[test]
    fn a_large_corrupt_object_is_refused_and_its_copy_removed() {
        let dir = tempfile::tempdir().unwrap();
        let data = pseudo_random(2 << 20, 11);
        let digest = *blake3::hash(&data).as_bytes();
        let path = object_path(dir.path(), &digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bad = data.clone();
        bad[1 << 20] ^= 1;
        fs::write(&path, &bad).unwrap();
        let dest = dir.path().join("out");
        let err = get_object_sized(dir.path(), &digest, &dest, Some(data.len() as u64), None)
            .unwrap_err();
        assert_eq!(err.code, Code::HashMismatch, "{err}");
        assert!(!dest.exists());
        fs::write(&path, &data).unwrap();
        let n =
            get_object_sized(dir.path(), &digest, &dest, Some(data.len() as u64), None).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(fs::read(&dest).unwrap(), data);
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A store holding one object of `size` pseudo-random bytes; returns (store, digest).
    fn store_with_object(dir: &Path, size: usize) -> Digest {
        let data = super::large_file_tests::pseudo_random(size, 12345);
        let digest = *blake3::hash(&data).as_bytes();
        let path = object_path(dir, &digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &data).unwrap();
        digest
    }

    #[test]
    fn a_cancelled_copy_out_of_the_store_stops_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let digest = store_with_object(dir.path(), 24 << 20);
        let dest = dir.path().join("out");
        let cancel = AtomicBool::new(true);
        let err = get_object_cancellable(dir.path(), &digest, &dest, Some(&cancel)).unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
        assert!(!dest.exists());
        cancel.store(false, Ordering::Relaxed);
        let n = get_object_cancellable(dir.path(), &digest, &dest, Some(&cancel)).unwrap();
        assert_eq!(n, 24 << 20);
    }

    #[test]
    fn a_cancelled_put_stops_within_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let src_dir = tempfile::tempdir().unwrap();
        let digest = store_with_object(src_dir.path(), 24 << 20);
        let source = object_path(src_dir.path(), &digest);
        let cancel = Arc::new(AtomicBool::new(false));
        let opts = LocalOptions {
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        // Set once the batch has begun (the per-object check has passed): only the check
        // inside the copy can stop it.
        let dst = object_path(dir.path(), &digest);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let mut src = File::open(&source).unwrap();
        let mut out = File::create(dir.path().join("partial")).unwrap();
        cancel.store(true, Ordering::Relaxed);
        let err = copy_checked(
            &mut src,
            &mut out,
            &source,
            &digest,
            24 << 20,
            Origin::Tree,
            &dst,
            opts.cancel.as_deref(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
        assert!(!dst.exists());
    }
}
