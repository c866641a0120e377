//! Walking a directory into a manifest (SPEC §3).
//!
//! Discovery and hashing share one rayon pool: each directory lists its children and hands
//! them to `par_iter`, so sub-directories are discovered while files elsewhere are hashed and
//! no single thread serialises the walk.

// `stat` field types differ between Linux and macOS; casts that are no-ops on one are needed
// on the other.
#![allow(clippy::unnecessary_cast)]

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use regex::RegexSet;

use crate::error::{display_path, escape_bytes, Code, Error, Result};
use crate::fsx::Dir;
use crate::hash::{hash_opened_mapped, HashOutcome, Stamp};
use crate::manifest::{Digest, Entry, Kind, Manifest};
use crate::statcache::{
    self, DirStamp, Fresh, FreshChild, FreshDir, FsId, OldChild, Rec, StatCache,
};

/// Counters a caller may poll from another thread to draw progress.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Files whose checksum came from the stat cache (counted in `files` too), not read.
    pub reused: AtomicU64,
    /// Directories whose listing came from the stat cache (not read again).
    pub dirs_reused: AtomicU64,
}

/// How to walk.
#[derive(Debug, Default, Clone)]
pub struct WalkOptions {
    /// Leave symbolic links out entirely.
    pub no_follow: bool,
    /// Render paths with the absolute root instead of `.` (display only).
    pub absolute: bool,
    /// Entries whose `./`-relative path matches any of these are left out.
    pub exclude: Option<RegexSet>,
    /// Set from another thread to stop the walk early with an error.
    pub cancel: Option<Arc<AtomicBool>>,
    pub progress: Option<Arc<Progress>>,
    /// Directory of stat cache files (`<cache>/statcache`); `None` hashes every file and
    /// keeps no cache. See [`crate::statcache`].
    pub stat_cache: Option<PathBuf>,
    /// With `stat_cache`: ignore what the cache holds (re-read every file) but rewrite it.
    pub rehash: bool,
    /// Reads every file the walk must hash (those the stat cache does not vouch for) in its
    /// place: a `file://` push copies them into the store while they are hashed.
    pub ingest: Option<Arc<dyn Ingest>>,
}

/// Something that reads the regular files of a walk instead of the plain hasher. It must
/// behave like [`hash_opened`] (same checks, same errors), with whatever else it does.
pub trait Ingest: std::fmt::Debug + Send + Sync {
    fn file(
        &self,
        opened: io::Result<fs::File>,
        path: &Path,
        no_follow: bool,
    ) -> Result<HashOutcome>;
}

impl WalkOptions {
    /// Compiles `exclude` patterns, naming the one that does not compile.
    pub fn compile_exclude(patterns: &[String]) -> Result<Option<RegexSet>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        for p in patterns {
            regex::Regex::new(p).map_err(|e| {
                Error::new(
                    Code::InvalidArgument,
                    format!("invalid exclude pattern {p:?}: {e}"),
                )
            })?;
        }
        RegexSet::new(patterns).map(Some).map_err(|e| {
            Error::new(
                Code::InvalidArgument,
                format!("invalid exclude patterns: {e}"),
            )
        })
    }
}

/// A walked tree.
#[derive(Debug, Clone)]
pub struct Walked {
    pub manifest: Manifest,
    /// Things the caller must tell the user about (dangling symlinks), never silently.
    pub warnings: Vec<String>,
    /// The directory that was walked (as given, not canonicalised): file entries are read
    /// from `root.join(entry.rel())`.
    pub root: PathBuf,
}

struct Ctx<'a> {
    opts: &'a WalkOptions,
    entries: Mutex<Vec<Entry>>,
    warnings: Mutex<Vec<String>>,
    /// The loaded stat cache (absent when disabled or with `rehash`).
    cache: Option<&'a StatCache>,
    /// Whether to collect records for a new cache file, and the records collected.
    collect: bool,
    fresh: Mutex<Vec<Fresh>>,
    /// When the walk started (for the racy-timestamp rule).
    start_ns: i128,
    /// Per device seen: its file system's identity, whether the cache's records taken
    /// there may be trusted, whether a remembered listing may be reused there.
    devs: Mutex<Vec<DevTrust>>,
}

/// See [`Ctx::devs`]: `(st_dev, identity, records trusted, listing reusable)`.
type DevTrust = (u64, Option<FsId>, bool, bool);

impl Ctx<'_> {
    /// For a directory on device `dev`: `(records, listing)`: whether its cache record may be
    /// used at all (the file system is the one the cache was written on, and keeps a real
    /// ctime), and whether its remembered listing may be reused. One `fstatfs` per device.
    fn dev_trust(&self, dev: u64, dir: &Dir) -> (bool, bool) {
        let mut known = self.devs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, _, records, listing)) = known.iter().find(|d| d.0 == dev) {
            return (records, listing);
        }
        let id = FsId::of_fd(dir.raw(), dev);
        let records = id.is_some_and(|id| {
            statcache::ctime_reliable(id.f_type) && self.cache.is_some_and(|c| c.knows_fs(&id))
        });
        let listing = records && id.is_some_and(|id| statcache::listing_reuse_ok_on(&id));
        known.push((dev, id, records, listing));
        (records, listing)
    }
}

struct Summary {
    checksum: Digest,
    size: u64,
    /// Same checksum and size as the cache remembers for this directory.
    same: bool,
}

/// Walks `root` into a manifest.
pub fn walk(root: &Path, opts: &WalkOptions) -> Result<Walked> {
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::new(
            Code::NotFound,
            format!("no such directory: {}", display_path(root)),
        ),
        _ => Error::io("cannot read", root, e),
    })?;
    if !meta.is_dir() {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("not a directory: {}", display_path(root)),
        ));
    }
    let prefix = if opts.absolute {
        let real = fs::canonicalize(root).map_err(|e| Error::io("cannot resolve", root, e))?;
        let s = real.to_str().ok_or_else(|| {
            Error::new(
                Code::InvalidArgument,
                format!(
                    "the absolute path {} is not valid UTF-8",
                    display_path(&real)
                ),
            )
        })?;
        Some(s.trim_end_matches('/').to_owned())
    } else {
        None
    };
    let dir = Dir::open(root).map_err(|e| Error::io("cannot open", root, e))?;
    // The stat cache is keyed by the canonical root and the options that change the walk;
    // a root that cannot be resolved is walked without it.
    let start_ns = statcache::now_ns();
    let cache_at = opts.stat_cache.as_ref().and_then(|dir| {
        let real = fs::canonicalize(root).ok()?;
        let patterns = opts.exclude.as_ref().map(|s| s.patterns()).unwrap_or(&[]);
        let file = statcache::cache_file(dir, &real, opts.no_follow, patterns);
        Some((file, real))
    });
    let mut warnings = Vec::new();
    let loaded = match &cache_at {
        Some((file, real)) if !opts.rehash => {
            let (c, why) = StatCache::load_reporting(file, real);
            warnings.extend(why);
            Some(c)
        }
        _ => None,
    };
    let ctx = Ctx {
        opts,
        entries: Mutex::new(Vec::new()),
        warnings: Mutex::new(warnings),
        cache: loaded.as_ref(),
        collect: cache_at.is_some(),
        fresh: Mutex::new(Vec::new()),
        start_ns,
        devs: Mutex::new(Vec::new()),
    };
    let root_st = dir.stat().map_err(|e| Error::io("cannot stat", root, e))?;
    let root_summary = walk_dir(&ctx, &dir, root, "./", &root_st, &[])?;
    if let Some((file, real)) = &cache_at {
        let fresh = ctx.fresh.into_inner().unwrap_or_else(|p| p.into_inner());
        let devs: Vec<FsId> = (ctx.devs.into_inner().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .filter_map(|d| d.1)
            .collect();
        // A no-op walk (every directory's record unchanged, none gone, on the same file
        // systems) writes nothing.
        let unchanged = loaded.as_ref().is_some_and(|c| {
            c.len() == fresh.len()
                && c.file_systems().len() == devs.len()
                && devs.iter().all(|d| c.knows_fs(d))
        }) && fresh.iter().all(|f| matches!(f, Fresh::Old(_)));
        if !unchanged {
            // Best effort: an unwritable cache directory must not fail the walk.
            let _ = statcache::save(file, real, &devs, &fresh, loaded.as_ref(), start_ns);
        }
    }
    let mut entries = ctx.entries.into_inner().unwrap_or_else(|p| p.into_inner());
    entries.push(Entry {
        kind: Kind::Directory,
        mode: meta.mode() & 0o7777,
        checksum: root_summary.checksum,
        size: root_summary.size,
        path: "./".to_owned(),
    });
    let mut warnings = ctx.warnings.into_inner().unwrap_or_else(|p| p.into_inner());
    warnings.sort();
    Ok(Walked {
        manifest: Manifest::from_walk(entries, prefix),
        warnings,
        root: root.to_path_buf(),
    })
}

/// Checksum of a directory: BLAKE3 of its children's distinct hex checksums, sorted,
/// concatenated. Sorting raw digests sorts their hex forms identically.
pub fn dir_checksum(children: &mut Vec<Digest>) -> Digest {
    children.sort_unstable();
    children.dedup();
    let mut h = blake3::Hasher::new();
    let mut hex = String::with_capacity(64);
    for c in children.iter() {
        hex.clear();
        crate::manifest::push_hex(&mut hex, c);
        h.update(hex.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// What a child contributed: its checksum and size for the parent, and the entries it
/// produced (its own line; a directory's lines are already in the shared list).
/// `same`: the checksum and size are those the stat cache remembers for this entry.
enum Child {
    File(Entry, Option<Rec>, bool),
    Dir(Digest, u64, bool),
    Skipped,
}

/// A directory's size plus a child's. The manifest records sizes in 64 bits: a tree whose
/// files add up to more (sparse files of exabytes) is an error, never a silently saturated
/// total.
fn add_size(total: u64, more: u64, dir: &Path) -> Result<u64> {
    total.checked_add(more).ok_or_else(|| {
        Error::new(
            Code::InvalidArgument,
            format!(
                "the files under {} add up to more than {} bytes, more than a manifest can \
                 record (sizes are 64-bit)",
                display_path(dir),
                u64::MAX
            ),
        )
    })
}

fn walk_dir(
    ctx: &Ctx<'_>,
    dir: &Dir,
    dir_path: &Path,
    rel: &str,
    st: &libc::stat,
    ancestors: &[(u64, u64)],
) -> Result<Summary> {
    check_cancel(ctx, dir_path)?;
    let mut chain = Vec::with_capacity(ancestors.len() + 1);
    chain.extend_from_slice(ancestors);
    chain.push((st.st_dev as u64, st.st_ino as u64));

    // A directory whose own stamp is unchanged (and was settled) has the entries the cache
    // remembers: they are not read again. Each entry is still visited (`fstatat`).
    let stamp = DirStamp::of(st);
    // (Also with `rehash`: the next cache file must name the file systems it was taken on.)
    let (records_ok, listing_ok) = if ctx.collect {
        ctx.dev_trust(stamp.dev, dir)
    } else {
        (false, false)
    };
    let old = ctx.cache.and_then(|c| c.dir(rel)).filter(|_| records_ok);
    let reuse = old.filter(|o| listing_ok && o.listing_valid_for(&stamp));
    let read;
    if let (Some(_), Some(p)) = (reuse, &ctx.opts.progress) {
        p.dirs_reused.fetch_add(1, Ordering::Relaxed);
    }
    let listed: Vec<(&[u8], u8, Option<OldChild<'_>>)> = match reuse {
        Some(o) => (0..o.len())
            .map(|k| {
                let c = o.child(k);
                (c.name(), c.dtype(), Some(c))
            })
            .collect(),
        None => {
            let mut l = dir.list_typed().map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => Error::in_flux(dir_path, "it vanished"),
                _ => Error::io("cannot list", dir_path, e),
            })?;
            if ctx.collect {
                l.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
            read = l;
            read.iter()
                .map(|(n, t)| (n.as_slice(), *t, old.and_then(|o| o.find(n))))
                .collect()
        }
    };

    let children: Vec<Child> = listed
        .par_iter()
        .map(|&(name, dtype, oc)| visit(ctx, dir, dir_path, rel, name, dtype, oc, &chain))
        .collect::<Result<_>>()?;

    let mut sums = Vec::with_capacity(children.len());
    let mut size = 0u64;
    let mut files = Vec::new();
    let mut all_same = true;
    let mut n_contrib = 0u64;
    let mut kids = Vec::with_capacity(if ctx.collect { listed.len() } else { 0 });
    for (&(name, dtype, _), c) in listed.iter().zip(children) {
        let mut rec = None;
        match c {
            Child::File(e, r, same) => {
                sums.push(e.checksum);
                size = add_size(size, e.size, dir_path)?;
                all_same &= same;
                n_contrib += 1;
                rec = r;
                files.push(e);
            }
            Child::Dir(d, s, same) => {
                sums.push(d);
                size = add_size(size, s, dir_path)?;
                all_same &= same;
                n_contrib += 1;
            }
            Child::Skipped => {}
        }
        if ctx.collect {
            kids.push(FreshChild { name, dtype, rec });
        }
    }
    if !files.is_empty() {
        // One lock per directory, not per file.
        ctx.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(&mut files);
    }
    // Every entry contributing what it contributed last time, and as many as then: the
    // digest is the remembered one.
    let checksum = match old {
        Some(o) if all_same && o.n_contrib() == n_contrib && o.size() == size => o.digest(),
        _ => dir_checksum(&mut sums),
    };
    if ctx.collect {
        let fresh = FreshDir {
            rel,
            stamp,
            digest: checksum,
            size,
            n_contrib,
            children: kids,
        }
        .finish(old, ctx.start_ns);
        ctx.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fresh);
    }
    Ok(Summary {
        checksum,
        size,
        same: old.is_some_and(|o| o.digest() == checksum && o.size() == size),
    })
}

fn is_type(mode: libc::mode_t, t: libc::mode_t) -> bool {
    mode & libc::S_IFMT == t
}

#[allow(clippy::too_many_arguments)]
fn visit(
    ctx: &Ctx<'_>,
    dir: &Dir,
    dir_path: &Path,
    rel_dir: &str,
    name: &[u8],
    dtype: u8,
    old: Option<OldChild<'_>>,
    chain: &[(u64, u64)],
) -> Result<Child> {
    let opts = ctx.opts;
    let path = || dir_path.join(std::ffi::OsStr::from_bytes(name));
    let vanished = |e: io::Error, what: &str| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::in_flux(&path(), "it vanished"),
        _ => Error::io(what, &path(), e),
    };
    let mut dtype = dtype;
    // A `stat` already made of the entry (following a link when it is one followed).
    let mut known: Option<libc::stat> = None;
    if dtype == libc::DT_UNKNOWN {
        let st = dir
            .stat_at(name, false)
            .map_err(|e| vanished(e, "cannot stat"))?;
        known = Some(st);
        dtype = match st.st_mode & libc::S_IFMT {
            m if m == libc::S_IFDIR => libc::DT_DIR,
            m if m == libc::S_IFREG => libc::DT_REG,
            m if m == libc::S_IFLNK => libc::DT_LNK,
            _ => return Ok(Child::Skipped),
        };
    }
    // Decide what the entry is, following a symlink when asked to.
    let (is_dir, via_link) = match dtype {
        libc::DT_DIR => (true, false),
        libc::DT_REG => (false, false),
        libc::DT_LNK => {
            if opts.no_follow {
                return Ok(Child::Skipped);
            }
            match dir.stat_at(name, true) {
                Ok(st) if is_type(st.st_mode, libc::S_IFDIR) => (true, true),
                Ok(st) if is_type(st.st_mode, libc::S_IFREG) => {
                    known = Some(st);
                    (false, true)
                }
                Ok(_) => return Ok(Child::Skipped),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(Error::new(
                        Code::InvalidArgument,
                        format!("symbolic link loop at {}", display_path(&path())),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    ctx.warnings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!(
                            "skipping dangling symbolic link {}",
                            display_path(&path())
                        ));
                    return Ok(Child::Skipped);
                }
                Err(e) => return Err(Error::io("cannot follow symbolic link", &path(), e)),
            }
        }
        // FIFOs, sockets, devices: not content a snapshot can hold.
        _ => return Ok(Child::Skipped),
    };

    let valid = std::str::from_utf8(name)
        .ok()
        .filter(|s| !s.contains(['\n', '\r']));
    let shown = match valid {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => String::from_utf8_lossy(name),
    };
    let mut rel = String::with_capacity(rel_dir.len() + shown.len() + 1);
    rel.push_str(rel_dir);
    rel.push_str(&shown);
    if is_dir {
        rel.push('/');
    }
    if let Some(set) = &opts.exclude {
        if set.is_match(&rel) {
            return Ok(Child::Skipped);
        }
    }
    if valid.is_none() {
        return Err(Error::new(
            Code::InvalidArgument,
            format!(
                "cannot snapshot {}: names must be UTF-8 without newline or carriage return \
                 (rename it or exclude it)",
                escape_bytes(path().as_os_str().as_bytes())
            ),
        ));
    }

    if is_dir {
        let sub_path = path();
        let sub = dir
            .open_dir_at(name, via_link)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => Error::in_flux(&sub_path, "it vanished"),
                Some(libc::ENOTDIR) | Some(libc::ELOOP) => {
                    Error::in_flux(&sub_path, "it is no longer a directory")
                }
                _ => Error::io("cannot open", &sub_path, e),
            })?;
        let st = sub
            .stat()
            .map_err(|e| Error::io("cannot stat", &sub_path, e))?;
        let id = (st.st_dev as u64, st.st_ino as u64);
        if via_link && chain.contains(&id) {
            return Err(Error::new(
                Code::InvalidArgument,
                format!(
                    "symbolic link loop: {} points to a directory that contains it",
                    display_path(&sub_path)
                ),
            ));
        }
        let s = walk_dir(ctx, &sub, &sub_path, &rel, &st, chain)?;
        push_entry(
            ctx,
            Kind::Directory,
            st.st_mode as u32,
            s.checksum,
            s.size,
            rel,
        );
        Ok(Child::Dir(s.checksum, s.size, s.same))
    } else {
        check_cancel(ctx, dir_path)?;
        let old_rec = old.and_then(|c| c.rec());
        if let Some(orec) = old_rec {
            // The point of the cache: an unchanged file is only `stat`ed, never opened.
            let st = match known {
                Some(st) => Some(st),
                None => dir.stat_at(name, via_link).ok(),
            };
            if let Some(st) = st.filter(|st| is_type(st.st_mode, libc::S_IFREG)) {
                let stamp = Stamp::of_stat(&st);
                if orec.matches(&stamp) {
                    if let Some(p) = &opts.progress {
                        p.files.fetch_add(1, Ordering::Relaxed);
                        p.bytes.fetch_add(stamp.size, Ordering::Relaxed);
                        p.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(Child::File(
                        Entry {
                            kind: Kind::File,
                            mode: stamp.mode & 0o7777,
                            checksum: orec.digest,
                            size: stamp.size,
                            path: rel,
                        },
                        Some(orec),
                        true,
                    ));
                }
            }
        }
        // A regular file is opened without following (a link swapped in meanwhile is then
        // an error, not silently followed); a followed link is opened through the link.
        let follow = via_link && !opts.no_follow;
        let opened = dir.open_file_at(name, follow);
        let opened = match opened {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) && !opts.no_follow => {
                dir.open_file_at(name, true)
            }
            other => other,
        };
        let outcome = match &opts.ingest {
            Some(ingest) => ingest.file(opened, &path(), opts.no_follow)?,
            None => hash_opened_mapped(opened, &path(), opts.no_follow)?,
        };
        match outcome {
            HashOutcome::NotRegular => Ok(Child::Skipped),
            HashOutcome::File(h) => {
                if let Some(p) = &opts.progress {
                    p.files.fetch_add(1, Ordering::Relaxed);
                    p.bytes.fetch_add(h.stamp.size, Ordering::Relaxed);
                }
                let rec = ctx.collect.then(|| Rec::new(&h.stamp, h.digest));
                let same = old_rec.is_some_and(|o| o.digest == h.digest && o.size == h.stamp.size);
                Ok(Child::File(
                    Entry {
                        kind: Kind::File,
                        mode: h.stamp.mode & 0o7777,
                        checksum: h.digest,
                        size: h.stamp.size,
                        path: rel,
                    },
                    rec,
                    same,
                ))
            }
        }
    }
}

fn push_entry(ctx: &Ctx<'_>, kind: Kind, mode: u32, checksum: Digest, size: u64, path: String) {
    let e = Entry {
        kind,
        mode: mode & 0o7777,
        checksum,
        size,
        path,
    };
    ctx.entries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(e);
}

fn check_cancel(ctx: &Ctx<'_>, path: &Path) -> Result<()> {
    if let Some(c) = &ctx.opts.cancel {
        if c.load(Ordering::Relaxed) {
            return Err(Error::new(
                Code::Io,
                format!("interrupted while reading {}", display_path(path)),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn directory_sizes_past_64_bits_are_an_error_naming_the_directory() {
        let dir = Path::new("/data/images");
        assert_eq!(add_size(u64::MAX - 1, 1, dir).unwrap(), u64::MAX);
        let err = add_size(u64::MAX, 1, dir).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains("/data/images"), "{err}");
        assert!(err.message.contains(&u64::MAX.to_string()), "{err}");
    }
}
