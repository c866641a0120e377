//! Materialising a snapshot into a directory (pull, checkout) — SPEC §5.
//!
//! Three steps, so that a broken or hostile store can neither write outside the destination
//! nor leave half-verified files behind:
//!
//! 1. [`plan`] (read-only): compare the destination with the manifest (which `parse` has
//!    already validated: normalised paths, no duplicates, parents present). Files already
//!    right are kept; files that differ are conflicts — an error listing them unless `force`.
//! 2. fill: every object still needed is written into a private staging directory inside
//!    the destination and verified (by [`Plan::fill_from_store`] for `file://`, or by the
//!    Python store for cloud backends). A bad object aborts here, before the tree is touched.
//! 3. [`Plan::commit`]: directories are created and files renamed into place walking the
//!    tree with directory descriptors and `O_NOFOLLOW`, so no existing link is ever followed.
//!
//! An interrupted run leaves at most a staging directory (removed by the next run) and files
//! that are complete and verified; re-running finishes the job.
//!
//! From a local cache the files may also be hard links to, or copy-on-write clones of, the
//! cache's objects ([`LinkMode`], docs/checkout-links.md). Each object is verified before
//! it is used either way.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::error::{display_path, escape_bytes, Code, Error, Result};
use crate::fsx::{self, Dir, Kind as FsKind};
use crate::hash::{hash_sized, hash_whole, open_nonblocking, Stamp};
use crate::manifest::{to_hex, Digest, Entry, Kind, Manifest, EMPTY_CHECKSUM};
use crate::statcache::{self, FileStamps, FsId, Rec};
use crate::store::{object_path, LocalOptions};

/// Name prefix of the staging directory inside a destination.
pub const STAGING_PREFIX: &str = ".snapdir-staging.";

/// How files get their content from a `file://` store (the local cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkMode {
    /// Independent copies.
    #[default]
    Copy,
    /// Hard links to the objects: no data written, but the file *is* the object (editing it
    /// in place edits the cache). A file whose mode differs from the object's (0644) is
    /// copied instead, so that no mode is ever changed through a link.
    Hardlink,
    /// Copy-on-write clones (`FICLONE`): no data written, independent files. Needs a file
    /// system that clones (Btrfs, XFS with reflink, ...) holding both the cache and the
    /// destination; anywhere else it is an error, not a silent copy.
    Reflink,
}

impl LinkMode {
    pub fn parse(s: &str) -> Result<LinkMode> {
        match s {
            "copy" => Ok(LinkMode::Copy),
            "hardlink" => Ok(LinkMode::Hardlink),
            "reflink" => Ok(LinkMode::Reflink),
            _ => Err(Error::new(
                Code::InvalidArgument,
                format!("link must be 'copy', 'hardlink' or 'reflink', not {s:?}"),
            )),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CheckoutOptions {
    /// Overwrite local files that differ from the snapshot.
    pub force: bool,
    /// Remove local files and directories the snapshot does not have.
    pub delete: bool,
    /// With `delete`: local paths these rules ignore are kept (as a walk leaves them out).
    pub keep: Option<crate::walk::Ignore>,
    /// Apply setuid, setgid and sticky bits (off by default: a store may be hostile).
    pub preserve_special_bits: bool,
    /// Copies, hard links or clones (only [`Plan::fill_from_store`] links or clones).
    pub link: LinkMode,
    /// The stat cache directory (`None`: off). The plan trusts a destination file whose
    /// stamp is unchanged since a previous checkout found it right, instead of hashing it
    /// ([`crate::statcache::FileStamps`]); a successful commit records what it found.
    pub stat_cache: Option<PathBuf>,
    pub local: LocalOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Content and mode already right.
    Keep,
    /// Content right, mode to fix.
    Chmod,
    /// Content to write (the entry index refers to a needed object).
    Write,
    /// Directory to create.
    Mkdir,
    /// Directory exists.
    DirOk,
}

/// One object the destination still needs, staged under `staging/<index>`.
#[derive(Debug, Clone)]
pub struct Needed {
    pub checksum: Digest,
    pub size: u64,
    /// Number of files that take their content from this object.
    pub uses: usize,
}

/// Whether the `keep` rules protect the extra local path `rel` (named `name` in `dir`).
fn kept(opts: &CheckoutOptions, dir: &Dir, name: &[u8], rel: &[u8]) -> bool {
    let Some(keep) = &opts.keep else { return false };
    let is_dir = dir
        .lstat(name)
        .ok()
        .flatten()
        .is_some_and(|st| matches!(fsx::kind_of(&st), FsKind::Dir { .. }));
    keep.is_ignored(&String::from_utf8_lossy(rel), is_dir)
}

/// A checked plan for one destination.
#[derive(Debug)]
pub struct Plan {
    manifest: Manifest,
    dest: PathBuf,
    actions: Vec<Action>,
    /// Needed object per entry index (for `Write` entries).
    object_of: Vec<Option<usize>>,
    needed: Vec<Needed>,
    /// Paths (relative, as in the manifest) that are in the way and will be replaced.
    replace: Vec<usize>,
    /// Extra local paths (relative to dest, raw bytes) to remove with `delete`.
    extras: Vec<Vec<u8>>,
    staging: Option<PathBuf>,
    prepared: bool,
    created_dest: bool,
    opts: CheckoutOptions,
    /// Files found right, with their stamps, to record after a successful commit.
    stamps: Option<Stamps>,
    /// Files kept without being read: unchanged since a checkout found them right.
    unread: usize,
}

/// What the plan learnt for the stamps file of its destination.
#[derive(Debug)]
struct Stamps {
    file: PathBuf,
    root: PathBuf,
    /// The destination's file system when planned: stamps are only trusted, and written,
    /// for the same one (`statcache::FileStamps::load`).
    fs: Option<FsId>,
    start_ns: i128,
    found: Vec<(Vec<u8>, Rec)>,
}

/// Summary of a finished checkout.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutStats {
    pub files_written: u64,
    pub files_kept: u64,
    pub bytes_written: u64,
    pub removed: u64,
}

fn rel_bytes(e: &Entry) -> &[u8] {
    e.rel().as_bytes()
}

fn mode_of(e: &Entry, opts: &CheckoutOptions) -> u32 {
    if opts.preserve_special_bits {
        e.mode & 0o7777
    } else {
        e.mode & 0o777
    }
}

/// Compares `dest` with `manifest` without writing anything (see the module docs).
pub fn plan(manifest: &Manifest, dest: &Path, opts: &CheckoutOptions) -> Result<Plan> {
    if manifest.is_absolute() {
        return Err(Error::new(
            Code::InvalidArgument,
            "an absolute-path manifest cannot be checked out",
        ));
    }
    let entries = manifest.entries();
    let mut actions = vec![Action::Keep; entries.len()];
    let mut conflicts: Vec<usize> = Vec::new();
    let mut replace: Vec<usize> = Vec::new();
    let mut extras = Vec::new();
    let dest_exists = match fs::metadata(dest) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(Error::new(
                Code::InvalidArgument,
                format!(
                    "destination {} exists and is not a directory",
                    display_path(dest)
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("cannot access destination", dest, e)),
    };
    // Walk the manifest in order (a depth-first pre-order, since paths sort with their
    // parents first), keeping only the current chain of directories open. Files whose size
    // matches are hashed when their directory is left, in parallel.
    struct Frame {
        idx: usize,
        dir: Option<Dir>,
        /// Files of the right size, with their stamps, still to compare.
        pending: Vec<(usize, Stamp)>,
    }
    let start_ns = statcache::now_ns();
    // The stamps of an earlier checkout into this destination (under its canonical path:
    // the same directory reached another way shares them).
    let mut stamps = match (&opts.stat_cache, dest_exists) {
        (Some(dir), true) => fs::canonicalize(dest).ok().map(|root| Stamps {
            file: statcache::stamps_file(dir, &root),
            fs: FsId::of_path(&root),
            root,
            start_ns,
            found: Vec::new(),
        }),
        _ => None,
    };
    let mut unread = 0usize;
    let known = stamps
        .as_ref()
        .map(|st| FileStamps::load(&st.file, &st.root, st.fs))
        .unwrap_or_default();
    let root_dir = if dest_exists {
        actions[0] = Action::DirOk;
        Some(Dir::open(dest).map_err(|e| Error::io("cannot open", dest, e))?)
    } else {
        actions[0] = Action::Mkdir;
        None
    };
    let mut stack: Vec<Frame> = vec![Frame {
        idx: 0,
        dir: root_dir,
        pending: Vec::new(),
    }];
    let mut finish = |f: Frame,
                      actions: &mut Vec<Action>,
                      conflicts: &mut Vec<usize>,
                      found: Option<&mut Vec<(Vec<u8>, Rec)>>|
     -> Result<()> {
        let Some(dir) = &f.dir else { return Ok(()) };
        let results: Vec<(usize, Stamp, bool, bool)> = f
            .pending
            .par_iter()
            .map(|&(i, stamp)| {
                let e = &entries[i];
                let rel = rel_bytes(e);
                // Unchanged since a checkout found it right: no need to read it.
                let known_right = known
                    .get(rel)
                    .is_some_and(|r| r.digest == e.checksum && r.matches(&stamp));
                let same = known_right
                    || dir
                        .open_read(last_component(rel_bytes(e)))
                        .and_then(|file| hash_sized(&file, e.size))
                        .map(|(d, n)| d == e.checksum && n == e.size)
                        .unwrap_or(false);
                (i, stamp, same, known_right)
            })
            .collect();
        let mut found = found;
        for (i, stamp, same, known_right) in results {
            let e = &entries[i];
            unread += usize::from(known_right);
            if same {
                let mode = stamp.mode & 0o7777;
                actions[i] = if mode == mode_of(e, opts) {
                    if let Some(found) = found.as_deref_mut() {
                        found.push((rel_bytes(e).to_vec(), Rec::new(&stamp, e.checksum)));
                    }
                    Action::Keep
                } else {
                    Action::Chmod
                };
            } else {
                conflicts.push(i);
                actions[i] = Action::Write;
            }
        }
        if opts.delete {
            let e = &entries[f.idx];
            let names = dir
                .list()
                .map_err(|err| Error::io("cannot list", &dest.join(e.rel()), err))?;
            let prefix = if e.rel().is_empty() {
                String::new()
            } else {
                format!("{}/", e.rel())
            };
            for n in names {
                if f.idx == 0 && n.starts_with(STAGING_PREFIX.as_bytes()) {
                    continue;
                }
                let mut rel = prefix.clone().into_bytes();
                rel.extend_from_slice(&n);
                if !in_manifest(entries, &rel) && !kept(opts, dir, &n, &rel) {
                    extras.push(rel);
                }
            }
        }
        Ok(())
    };
    for i in 1..entries.len() {
        let e = &entries[i];
        let parent_rel = parent_of(e.rel());
        while stack.len() > 1 && entries[stack[stack.len() - 1].idx].rel() != parent_rel {
            let f = stack.pop().expect("non-empty");
            finish(
                f,
                &mut actions,
                &mut conflicts,
                stamps.as_mut().map(|st| &mut st.found),
            )?;
        }
        let top = stack.last_mut().expect("root frame");
        let name = last_component(rel_bytes(e));
        let st = match &top.dir {
            Some(dir) => dir
                .lstat(name)
                .map_err(|err| Error::io("cannot inspect", &dest.join(e.rel()), err))?,
            None => None,
        };
        let state = st.as_ref().map_or(FsKind::Missing, fsx::kind_of);
        let mut sub: Option<Dir> = None;
        match (e.kind, state) {
            (Kind::Directory, FsKind::Dir { .. }) => {
                actions[i] = Action::DirOk;
                let d = top
                    .dir
                    .as_ref()
                    .expect("state came from an open parent")
                    .open_dir(name)
                    .map_err(|err| Error::io("cannot open", &dest.join(e.rel()), err))?;
                sub = Some(d);
            }
            (Kind::Directory, FsKind::Missing) => actions[i] = Action::Mkdir,
            (Kind::Directory, _) => {
                conflicts.push(i);
                actions[i] = Action::Mkdir;
            }
            (Kind::File, FsKind::Missing) => actions[i] = Action::Write,
            (Kind::File, FsKind::File { size, .. }) if size == e.size => {
                let stamp = Stamp::of_stat(st.as_ref().expect("a file was found"));
                top.pending.push((i, stamp));
            }
            (Kind::File, _) => {
                conflicts.push(i);
                actions[i] = Action::Write;
            }
        }
        if e.kind == Kind::Directory {
            stack.push(Frame {
                idx: i,
                dir: sub,
                pending: Vec::new(),
            });
        }
    }
    while let Some(f) = stack.pop() {
        finish(
            f,
            &mut actions,
            &mut conflicts,
            stamps.as_mut().map(|st| &mut st.found),
        )?;
    }
    conflicts.sort_unstable();
    if !conflicts.is_empty() {
        if !opts.force {
            let shown: Vec<String> = conflicts
                .iter()
                .take(20)
                .map(|&i| escape_bytes(entries[i].path.as_bytes()))
                .collect();
            let more = if conflicts.len() > 20 {
                format!(" and {} more", conflicts.len() - 20)
            } else {
                String::new()
            };
            return Err(Error::new(
                Code::Conflict,
                format!(
                    "{} local path(s) in {} differ from the snapshot and would be overwritten: \
                     {}{more} (use force to overwrite)",
                    conflicts.len(),
                    display_path(dest),
                    shown.join(", ")
                ),
            ));
        }
        replace = conflicts;
    }
    // Objects to fetch, one per distinct checksum.
    let mut object_of = vec![None; entries.len()];
    let mut needed: Vec<Needed> = Vec::new();
    let mut by_sum: std::collections::HashMap<Digest, usize> = std::collections::HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if actions[i] == Action::Write {
            let k = *by_sum.entry(e.checksum).or_insert_with(|| {
                needed.push(Needed {
                    checksum: e.checksum,
                    size: e.size,
                    uses: 0,
                });
                needed.len() - 1
            });
            needed[k].uses += 1;
            object_of[i] = Some(k);
        }
    }
    Ok(Plan {
        manifest: manifest.clone(),
        dest: dest.to_path_buf(),
        actions,
        object_of,
        needed,
        replace,
        extras,
        staging: None,
        prepared: false,
        created_dest: false,
        opts: opts.clone(),
        stamps,
        unread,
    })
}

/// Whether the process that named a staging directory `.snapdir-staging.<pid>.<nanos>` is
/// still running (then its staging is not ours to clear).
fn staging_owner_alive(name: &[u8]) -> bool {
    let rest = &name[STAGING_PREFIX.len()..];
    let pid = std::str::from_utf8(rest)
        .ok()
        .and_then(|r| r.split('.').next())
        .and_then(|p| p.parse::<libc::pid_t>().ok());
    match pid {
        Some(p) if p > 0 && p as u32 != std::process::id() => {
            let r = unsafe { libc::kill(p, 0) };
            r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
        _ => false,
    }
}

fn parent_of(rel: &str) -> &str {
    rel.rfind('/').map_or("", |k| &rel[..k])
}

fn last_component(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(k) => &rel[k + 1..],
        None => rel,
    }
}

fn in_manifest(entries: &[Entry], rel: &[u8]) -> bool {
    let Ok(rel) = std::str::from_utf8(rel) else {
        return false;
    };
    let file = format!("./{rel}");
    let dir = format!("./{rel}/");
    let find = |p: &str| {
        entries
            .binary_search_by(|e| e.path.as_bytes().cmp(p.as_bytes()))
            .is_ok()
    };
    find(&file) || find(&dir)
}

/// Puts object `n` of the `file://` store at `root` at `dst` (a fresh name in staging) as
/// `link` says, and verifies it (digest and size); returns its size.
fn stage_object(
    root: &Path,
    n: &Needed,
    dst: &Path,
    dest: &Path,
    link: LinkMode,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let src = object_path(root, &n.checksum);
    let missing = || {
        Error::new(
            Code::NotFound,
            format!(
                "object {} not found in {}",
                to_hex(&n.checksum),
                display_path(root)
            ),
        )
    };
    match link {
        LinkMode::Copy => {
            return crate::store::get_object_sized(root, &n.checksum, dst, Some(n.size), cancel)
        }
        LinkMode::Hardlink => match fs::hard_link(&src, dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            // As many links as the file system allows (ext4: 65,000): this one is a copy.
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
                return crate::store::get_object_sized(root, &n.checksum, dst, Some(n.size), cancel)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {
                return Err(unsupported("hard-link", root, dest, e))
            }
            Err(e) => return Err(Error::io("cannot hard-link", &src, e)),
        },
        LinkMode::Reflink => {
            let from = match open_nonblocking(&src, true) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                Err(e) => return Err(Error::io("cannot open", &src, e)),
            };
            let out = fs::File::create(dst).map_err(|e| Error::io("cannot create", dst, e))?;
            if let Err(e) = fsx::clone_file(&from, &out) {
                drop(out);
                let _ = fs::remove_file(dst);
                return Err(if fsx::clone_unsupported(&e) {
                    unsupported("reflink", root, dest, e)
                } else {
                    Error::io("cannot clone", &src, e)
                });
            }
        }
    }
    // Linked or cloned, the object is read once: a corrupt object (a hard-linked file edited
    // in place edits it) is found here, before anything in the destination changes.
    let checked = open_nonblocking(dst, true).and_then(|f| hash_whole(&f, n.size));
    match checked {
        Ok((d, got)) if d == n.checksum && got == n.size => Ok(got),
        other => {
            let _ = fs::remove_file(dst);
            let why = match other {
                Ok((d, got)) => format!("got {} ({got} bytes)", to_hex(&d)),
                Err(e) => e.to_string(),
            };
            Err(Error::new(
                Code::HashMismatch,
                format!(
                    "object {} in {} does not hash to its key ({why}); a hard-linked \
                     checkout edited in place edits the cache's object: `snapdir verify` \
                     lists such objects, `snapdir stage --repair` of a good tree rewrites them",
                    to_hex(&n.checksum),
                    display_path(root)
                ),
            ))
        }
    }
}

/// The error for a link or clone the file systems cannot make: names both places, their
/// file systems, and the way out.
fn unsupported(what: &str, root: &Path, dest: &Path, e: io::Error) -> Error {
    let mut err = Error::new(
        Code::Io,
        format!(
            "cannot {what} objects of {} ({}) into {} ({}): {e}; {what} checkouts need the \
             cache and the destination on one file system{} (use link=\"copy\" or --link copy, or put the \
             cache there with SNAPDIR_CACHE_DIR)",
            display_path(root),
            fsx::fs_name(root),
            display_path(dest),
            fsx::fs_name(dest),
            if what == "reflink" {
                " that supports copy-on-write clones (Btrfs, XFS with reflink=1, ...)"
            } else {
                ""
            }
        ),
    );
    err.errno = e.raw_os_error();
    err
}

impl Plan {
    /// Objects still to be fetched (empty files need none).
    pub fn needed(&self) -> &[Needed] {
        &self.needed
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where object `i` of [`Plan::needed`] must be written before [`Plan::commit`].
    pub fn staged_path(&self, i: usize) -> Option<PathBuf> {
        self.staging.as_ref().map(|s| s.join(self.staged_rel(i)))
    }

    /// Staged objects are spread over sub-directories when there are many: creating
    /// thousands of files in one directory serialises on that directory's lock.
    fn staging_fanout(&self) -> usize {
        (self.needed.len() / 128).clamp(1, 64)
    }

    fn staged_rel(&self, i: usize) -> String {
        match self.staging_fanout() {
            1 => i.to_string(),
            n => format!("{}/{i}", i % n),
        }
    }

    /// How many files the checkout will write, keep, and remove.
    pub fn counts(&self) -> (usize, usize, usize) {
        let writes = self.actions.iter().filter(|a| **a == Action::Write).count();
        let keeps = self
            .actions
            .iter()
            .zip(self.manifest.entries())
            .filter(|(a, e)| e.kind == Kind::File && matches!(a, Action::Keep | Action::Chmod))
            .count();
        (writes, keeps, self.extras.len())
    }

    /// How many of the kept files were not read: their stat was unchanged since a previous
    /// checkout found them right (see [`CheckoutOptions::stat_cache`]).
    pub fn unread(&self) -> usize {
        self.unread
    }

    /// Creates the destination (if needed) and the private staging directory.
    pub fn prepare(&mut self) -> Result<()> {
        if self.staging.is_some() || (self.prepared && self.needed.is_empty()) {
            return Ok(());
        }
        self.prepared = true;
        if !self.dest.exists() {
            fs::create_dir_all(&self.dest)
                .map_err(|e| Error::io("cannot create destination", &self.dest, e))?;
            self.created_dest = true;
        }
        // Clear staging directories left by interrupted runs (not those of a live process).
        if let Ok(rd) = fs::read_dir(&self.dest) {
            for e in rd.flatten() {
                if e.file_name()
                    .as_bytes()
                    .starts_with(STAGING_PREFIX.as_bytes())
                    && !staging_owner_alive(e.file_name().as_bytes())
                {
                    let _ =
                        Dir::open(&self.dest).and_then(|d| d.remove_all(e.file_name().as_bytes()));
                }
            }
        }
        if self.needed.is_empty() {
            // Nothing to fetch: no staging directory (a no-op pull writes nothing at all).
            return Ok(());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let staging = self
            .dest
            .join(format!("{STAGING_PREFIX}{}.{nanos}", std::process::id()));
        fs::create_dir(&staging).map_err(|e| Error::io("cannot create", &staging, e))?;
        if self.staging_fanout() > 1 {
            for k in 0..self.staging_fanout() {
                let sub = staging.join(k.to_string());
                fs::create_dir(&sub).map_err(|e| Error::io("cannot create", &sub, e))?;
            }
        }
        self.staging = Some(staging);
        Ok(())
    }

    /// Copies the needed objects from the `file://` store at `root` into staging, verifying
    /// each (digest and size). Empty objects are created without reading the store.
    pub fn fill_from_store(&mut self, root: &Path) -> Result<()> {
        self.prepare()?;
        let Some(staging) = self.staging.clone() else {
            return Ok(());
        };
        let opts = &self.opts.local;
        self.needed
            .par_iter()
            .enumerate()
            .try_for_each(|(i, n)| -> Result<()> {
                let dst = staging.join(self.staged_rel(i));
                if opts
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
                {
                    return Err(Error::new(
                        Code::Io,
                        format!("interrupted while writing {}", display_path(&dst)),
                    ));
                }
                if to_hex(&n.checksum) == EMPTY_CHECKSUM && n.size == 0 {
                    fs::File::create(&dst).map_err(|e| Error::io("cannot create", &dst, e))?;
                    return Ok(());
                }
                let got = stage_object(
                    root,
                    n,
                    &dst,
                    &self.dest,
                    self.opts.link,
                    opts.cancel.as_deref(),
                )?;
                if got != n.size {
                    return Err(Error::new(
                        Code::HashMismatch,
                        format!(
                            "object {} in {} has {got} bytes but the manifest says {}",
                            to_hex(&n.checksum),
                            display_path(root),
                            n.size
                        ),
                    ));
                }
                if let Some(p) = &opts.progress {
                    p.files.fetch_add(1, Ordering::Relaxed);
                    p.bytes.fetch_add(got, Ordering::Relaxed);
                }
                Ok(())
            })?;
        let _ = object_path; // layout helper shared with the store module
        Ok(())
    }

    /// Checks that every staged object is present with the right size (objects staged by
    /// Python stores were verified while downloaded).
    fn check_staged(&self) -> Result<()> {
        for (i, n) in self.needed.iter().enumerate() {
            let p = self.staged_path(i).expect("prepared");
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() && m.len() == n.size => {}
                Ok(m) => {
                    return Err(Error::new(
                        Code::HashMismatch,
                        format!(
                            "object {} has {} bytes but the manifest says {}",
                            to_hex(&n.checksum),
                            m.len(),
                            n.size
                        ),
                    ))
                }
                Err(e) => return Err(Error::io("staged object missing", &p, e)),
            }
        }
        Ok(())
    }

    /// Moves everything into place (see the module docs). Consumes the plan's staging.
    pub fn commit(&mut self) -> Result<CheckoutStats> {
        self.prepare()?;
        self.check_staged()?;
        let staging_path = self.staging.clone().unwrap_or_default();
        let staging = match &self.staging {
            Some(p) => Some(Dir::open(p).map_err(|e| Error::io("cannot open", p, e))?),
            None => None,
        };
        let entries = self.manifest.entries();
        let root = Dir::open(&self.dest).map_err(|e| Error::io("cannot open", &self.dest, e))?;
        let mut stats = CheckoutStats::default();
        let mut remaining: Vec<usize> = self.needed.iter().map(|n| n.uses).collect();
        let replace: std::collections::HashSet<usize> = self.replace.iter().copied().collect();
        let durable = self.opts.local.durable;
        let dest = self.dest.clone();
        let io_err = |what: &str, rel: &str, e: io::Error| Error::io(what, &dest.join(rel), e);

        // Directories opened along the current path: (entry index, dir, its current mode).
        let mut stack: Vec<(usize, Dir, u32)> = Vec::new();
        // A directory we write into must be writable by us meanwhile; its final mode is
        // applied when we leave it, and only if it differs (a pull with nothing to do writes
        // nothing, and so works on a read-only destination).
        let current_mode = |d: &Dir| d.stat().map(|st| fsx::perm_bits(&st)).unwrap_or(0);
        let open_for_work = |d: &Dir| -> u32 {
            let cur = current_mode(d);
            if cur & 0o700 != 0o700 {
                let _ = d.chmod(cur | 0o700);
            }
            cur
        };
        let root_mode = open_for_work(&root);
        let finish_dir = |idx: usize, dir: &Dir, cur: u32, opts: &CheckoutOptions| -> Result<()> {
            if durable {
                dir.sync()
                    .map_err(|e| io_err("cannot sync", entries[idx].rel(), e))?;
            }
            let want = mode_of(&entries[idx], opts);
            if cur != want || current_mode(dir) != want {
                dir.chmod(want)
                    .map_err(|e| io_err("cannot chmod", entries[idx].rel(), e))?;
            }
            Ok(())
        };
        for i in 1..entries.len() {
            let e = &entries[i];
            let parent_rel = parent_of(e.rel());
            while let Some((top, _, _)) = stack.last() {
                if entries[*top].rel() == parent_rel {
                    break;
                }
                let (idx, dir, cur) = stack.pop().expect("non-empty");
                finish_dir(idx, &dir, cur, &self.opts)?;
            }
            let parent: &Dir = stack.last().map(|(_, d, _)| d).unwrap_or(&root);
            let name = last_component(rel_bytes(e));
            if replace.contains(&i) {
                parent
                    .remove_all(name)
                    .map_err(|err| io_err("cannot replace", e.rel(), err))?;
            }
            match self.actions[i] {
                Action::Mkdir | Action::DirOk => {
                    let existed = self.actions[i] == Action::DirOk && !replace.contains(&i);
                    if !existed {
                        match parent.mkdir(name, 0o700) {
                            Ok(()) => {}
                            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(err) => {
                                return Err(io_err("cannot create directory", e.rel(), err))
                            }
                        }
                    }
                    let d = parent.open_dir(name).map_err(|err| {
                        Error::new(
                            Code::UnsafePath,
                            format!(
                                "cannot enter {} (a link or file is in the way?): {err}",
                                display_path(&dest.join(e.rel()))
                            ),
                        )
                    })?;
                    let cur = open_for_work(&d);
                    stack.push((i, d, cur));
                }
                Action::Keep => stats.files_kept += 1,
                Action::Chmod => {
                    let mut f = parent
                        .open_read(name)
                        .map_err(|err| io_err("cannot open", e.rel(), err))?;
                    let links = f
                        .metadata()
                        .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
                        .unwrap_or(1);
                    if links > 1 {
                        // A mode set through a hard link would change every other name of
                        // the file too (a cache object, another checkout): the file gets an
                        // inode of its own instead.
                        let tmp = format!("{STAGING_PREFIX}{}.relink.{i}", std::process::id());
                        let mut out = root
                            .create_new(tmp.as_bytes(), 0o600)
                            .map_err(|err| io_err("cannot create", e.rel(), err))?;
                        let copied = fsx::copy_hashing(&mut f, &mut out, e.size)
                            .map_err(|err| err.at(&dest.join(e.rel()), &dest.join(&tmp)));
                        let ok = matches!(copied, Ok((d, n)) if d == e.checksum && n == e.size);
                        if ok {
                            fsx::fchmod(&out, mode_of(e, &self.opts))
                                .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                            if durable {
                                out.sync_all()
                                    .map_err(|err| io_err("cannot sync", e.rel(), err))?;
                            }
                        }
                        drop(out);
                        if !ok {
                            let _ = root.unlink(tmp.as_bytes(), false);
                            copied?;
                            return Err(Error::new(
                                Code::InFlux,
                                format!(
                                    "{} changed while it was checked out",
                                    display_path(&dest.join(e.rel()))
                                ),
                            ));
                        }
                        root.rename_to(tmp.as_bytes(), parent, name)
                            .map_err(|err| io_err("cannot move into place", e.rel(), err))?;
                    } else {
                        fsx::fchmod(&f, mode_of(e, &self.opts))
                            .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                    }
                    stats.files_kept += 1;
                }
                Action::Write => {
                    let staging = staging.as_ref().expect("objects needed, so staging exists");
                    let k = self.object_of[i].expect("write has an object");
                    let staged_name = self.staged_rel(k);
                    remaining[k] -= 1;
                    let mode = mode_of(e, &self.opts);
                    let link = self.opts.link;
                    // A hard link shares the object's inode and so its mode: it is only used
                    // where that mode is the file's; other files are copied.
                    let mode_fits = link != LinkMode::Hardlink
                        || staging
                            .stat_at(staged_name.as_bytes(), false)
                            .is_ok_and(|st| fsx::perm_bits(&st) == mode);
                    if remaining[k] == 0 && mode_fits {
                        let f = staging.open_read(staged_name.as_bytes()).map_err(|err| {
                            Error::io("cannot open staged", &staging_path.join(&staged_name), err)
                        })?;
                        if link != LinkMode::Hardlink {
                            fsx::fchmod(&f, mode)
                                .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                        }
                        if durable {
                            f.sync_all()
                                .map_err(|err| io_err("cannot sync", e.rel(), err))?;
                        }
                        drop(f);
                        staging
                            .rename_to(staged_name.as_bytes(), parent, name)
                            .map_err(|err| io_err("cannot move into place", e.rel(), err))?;
                    } else if link != LinkMode::Copy && mode_fits {
                        // Another name for verified content: one more link, or one more clone.
                        let tmp = format!("{STAGING_PREFIX}copy.{i}");
                        if link == LinkMode::Hardlink {
                            staging
                                .link_to(staged_name.as_bytes(), staging, tmp.as_bytes())
                                .map_err(|err| io_err("cannot hard-link", e.rel(), err))?;
                        } else {
                            let src = staging.open_read(staged_name.as_bytes()).map_err(|err| {
                                Error::io(
                                    "cannot open staged",
                                    &staging_path.join(&staged_name),
                                    err,
                                )
                            })?;
                            let out = staging
                                .create_new(tmp.as_bytes(), 0o600)
                                .map_err(|err| io_err("cannot create", e.rel(), err))?;
                            fsx::clone_file(&src, &out)
                                .map_err(|err| io_err("cannot clone", e.rel(), err))?;
                            fsx::fchmod(&out, mode)
                                .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                            if durable {
                                out.sync_all()
                                    .map_err(|err| io_err("cannot sync", e.rel(), err))?;
                            }
                        }
                        staging
                            .rename_to(tmp.as_bytes(), parent, name)
                            .map_err(|err| io_err("cannot move into place", e.rel(), err))?;
                    } else {
                        let tmp = format!("{STAGING_PREFIX}copy.{i}");
                        let mut src = staging.open_read(staged_name.as_bytes()).map_err(|err| {
                            Error::io("cannot open staged", &staging_path.join(&staged_name), err)
                        })?;
                        let mut out = staging
                            .create_new(tmp.as_bytes(), 0o600)
                            .map_err(|err| io_err("cannot create", e.rel(), err))?;
                        let (d, _) = fsx::copy_hashing(&mut src, &mut out, e.size)
                            .map_err(|err| err.at(&staging_path, &dest.join(e.rel())))?;
                        if d != e.checksum {
                            return Err(Error::new(
                                Code::HashMismatch,
                                format!(
                                    "staged object for {} changed",
                                    display_path(&dest.join(e.rel()))
                                ),
                            ));
                        }
                        fsx::fchmod(&out, mode)
                            .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                        if durable {
                            out.sync_all()
                                .map_err(|err| io_err("cannot sync", e.rel(), err))?;
                        }
                        drop(out);
                        staging
                            .rename_to(tmp.as_bytes(), parent, name)
                            .map_err(|err| io_err("cannot move into place", e.rel(), err))?;
                    }
                    stats.files_written += 1;
                    stats.bytes_written += e.size;
                }
            }
        }
        while let Some((idx, dir, cur)) = stack.pop() {
            finish_dir(idx, &dir, cur, &self.opts)?;
        }
        for rel in &self.extras {
            let (parent_rel, name) = match rel.iter().rposition(|&b| b == b'/') {
                Some(k) => (&rel[..k], &rel[k + 1..]),
                None => (&rel[..0], &rel[..]),
            };
            let mut dir =
                Dir::open(&self.dest).map_err(|e| Error::io("cannot open", &self.dest, e))?;
            if !parent_rel.is_empty() {
                for comp in parent_rel.split(|&b| b == b'/') {
                    dir = dir.open_dir(comp).map_err(|e| {
                        Error::io(
                            "cannot open",
                            &self.dest.join(std::ffi::OsStr::from_bytes(parent_rel)),
                            e,
                        )
                    })?;
                }
            }
            dir.remove_all(name).map_err(|e| {
                Error::io(
                    "cannot remove",
                    &self.dest.join(std::ffi::OsStr::from_bytes(rel)),
                    e,
                )
            })?;
            stats.removed += 1;
        }
        if self.staging.is_some() {
            root.remove_all(
                staging_path
                    .file_name()
                    .map(|n| n.as_bytes())
                    .unwrap_or_default(),
            )
            .map_err(|e| Error::io("cannot remove", &staging_path, e))?;
            self.staging = None;
        }
        finish_dir(0, &root, root_mode, &self.opts)?;
        if let Some(st) = self.stamps.take() {
            // Only what the plan found right and left alone; written files are too new
            // to record (the next run hashes them once, then trusts them).
            if let Some(fs) = &st.fs {
                let _ = statcache::save_stamps(&st.file, &st.root, fs, &st.found, st.start_ns);
            }
        }
        Ok(stats)
    }

    /// Removes the staging directory (and the destination if this plan created it and it is
    /// otherwise empty). Used when a fill fails: the destination is left as it was.
    pub fn abort(&mut self) {
        if let Some(s) = self.staging.take() {
            if let (Ok(root), Some(name)) = (Dir::open(&self.dest), s.file_name()) {
                let _ = root.remove_all(name.as_bytes());
            }
        }
        if self.created_dest {
            let _ = fs::remove_dir(&self.dest);
            self.created_dest = false;
        }
    }
}
