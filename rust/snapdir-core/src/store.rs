//! The `file://` store on disk (SPEC §4): objects and manifests under 3/3/3/rest shards.
//!
//! Objects appear only under their final name with verified content: bytes are copied to a
//! temporary name in the shard directory while they are hashed, and renamed into place only
//! if the digest is the key. Renaming over an object a concurrent writer just created is
//! harmless (same key, same bytes).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{display_path, Code, Error, Result};
use crate::fsx;
use crate::hash::{hash_stream, open_nonblocking};
use crate::manifest::{to_hex, Digest};
use crate::walk::Progress;

/// `abc/def/ghi/<rest>` of a hex digest.
pub fn shard(hex: &str) -> String {
    format!("{}/{}/{}/{}", &hex[0..3], &hex[3..6], &hex[6..9], &hex[9..])
}

pub fn object_path(root: &Path, d: &Digest) -> PathBuf {
    root.join(".objects").join(shard(&to_hex(d)))
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
    let Ok(mut f) = open_nonblocking(path, true) else {
        return false;
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    matches!(hash_stream(&mut f, size, |_| Ok(())), Ok((d, _)) if &d == checksum)
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
    // after a crash, one metadata operation fewer than create + rename).
    if !replace {
        if let Some(mut out) = fsx::open_unnamed(parent) {
            let n = copy_checked(&mut src, &mut out, source, checksum, size, origin, dst)?;
            if opts.durable {
                out.sync_all()
                    .map_err(|e| Error::io("cannot sync", dst, e))?;
            }
            match fsx::link_unnamed(&out, dst) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("cannot link into", dst, e)),
            }
            if opts.durable {
                sync_dir(parent)?;
            }
            return Ok(n);
        }
    }
    let tmp = temp_sibling(dst);
    let result = (|| -> Result<u64> {
        let mut out = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(|e| Error::io("cannot create", &tmp, e))?
            }
            Err(e) => return Err(Error::io("cannot create", &tmp, e)),
        };
        fsx::fchmod(&out, 0o644).map_err(|e| Error::io("cannot chmod", &tmp, e))?;
        let n = copy_checked(&mut src, &mut out, source, checksum, size, origin, dst)?;
        if opts.durable {
            out.sync_all()
                .map_err(|e| Error::io("cannot sync", &tmp, e))?;
        }
        drop(out);
        fs::rename(&tmp, dst).map_err(|e| Error::io("cannot rename into", dst, e))?;
        if opts.durable {
            sync_dir(parent)?;
        }
        Ok(n)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies while hashing and checks the result is exactly object `checksum` of `size` bytes.
fn copy_checked(
    src: &mut File,
    out: &mut File,
    source: &Path,
    checksum: &Digest,
    size: u64,
    origin: Origin,
    dst: &Path,
) -> Result<u64> {
    let (d, n) = fsx::copy_hashing(src, out, size).map_err(|e| e.at(source, dst))?;
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
    let src_path = object_path(root, checksum);
    let mut src = match open_nonblocking(&src_path, true) {
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
    let size = src.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = File::create(dest).map_err(|e| Error::io("cannot create", dest, e))?;
    let res = fsx::copy_hashing(&mut src, &mut out, size);
    match res {
        Ok((d, n)) if &d == checksum => Ok(n),
        Ok((d, _)) => {
            drop(out);
            let _ = fs::remove_file(dest);
            Err(Error::new(
                Code::HashMismatch,
                format!(
                    "object {} in {} does not hash to its key (got {})",
                    to_hex(checksum),
                    display_path(root),
                    to_hex(&d)
                ),
            ))
        }
        Err(e) => {
            drop(out);
            let _ = fs::remove_file(dest);
            Err(e.at(&src_path, dest))
        }
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
            let mut f = match open_nonblocking(&p, true) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Some((*d, Problem::Missing)))
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Ok(Some((*d, Problem::Corrupt)))
                }
                Err(e) => return Err(Error::io("cannot open", &p, e)),
            };
            let (got, n) = hash_stream(&mut f, *size, |_| Ok(()))
                .map_err(|e| Error::io("cannot read", &p, e))?;
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
