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
//! The destination may belong to someone else than the process writing into it (a root
//! pull into a user's directory): its owner can swap any directory under it — the staging
//! directory included — for a link or a directory of theirs at any moment. So nothing here
//! resolves a path twice: the destination is opened once, every directory below it is
//! reached from an open descriptor by one name with `O_NOFOLLOW`, checked with `fstat`,
//! and every file is created exclusively (`O_EXCL|O_NOFOLLOW`) and checked again by inode
//! after it is moved into place. Only a bounded number of descriptors is held ([`Chain`]),
//! so trees deeper than the descriptor limit check out too.
//!
//! One pull or checkout at a time per destination: the plan holds an exclusive `flock` on
//! [`LOCK_NAME`] from before it compares until the commit or abort (see [`CheckoutOptions::wait`]).
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
use crate::fsx::{self, Dir, FileId, Kind as FsKind};
use crate::hash::{hash_sized, hash_whole, open_nonblocking, Stamp};
use crate::manifest::{to_hex, Digest, Entries, EntryRef, Kind, Manifest, EMPTY_CHECKSUM};
use crate::statcache::{self, FileStamps, FsId, Rec};
use crate::store::{object_path, LocalOptions};

/// Name prefix of the staging directory inside a destination.
pub const STAGING_PREFIX: &str = ".snapdir-staging.";

/// The lock file of a destination, held (`flock`) by the one pull or checkout writing into
/// it and removed when it ends. It carries the staging prefix, so `delete` never removes it
/// and the clean-up of stale staging directories leaves it alone.
pub const LOCK_NAME: &str = ".snapdir-staging.lock";

/// Called once when a checkout starts waiting for another one to release the destination.
#[derive(Clone)]
pub struct WaitNotice(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for WaitNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WaitNotice")
    }
}

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
    /// When another pull or checkout holds the destination: wait for it (`true`, telling
    /// `on_wait` once) or fail at once with `CONFLICT` (`false`).
    pub wait: bool,
    pub on_wait: Option<WaitNotice>,
    /// Only compare (`--dry-run`): the destination must exist (a missing one needs no
    /// plan: everything is to write) and no lock is taken in it, so nothing is written;
    /// such a plan is for [`Plan::preview`] and is dropped, never filled or committed.
    pub dry_run: bool,
}

/// What a plan would do, for `--dry-run`: from [`Plan::preview`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Preview {
    /// Files to write: `(path relative to the destination, size)`, in manifest order.
    pub writes: Vec<(String, u64)>,
    /// Extra local paths to remove (with `delete`), relative to the destination.
    pub removes: Vec<String>,
    /// Files whose content is right but whose mode is to fix.
    pub chmods: usize,
    /// Directories to create.
    pub mkdirs: usize,
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
    manifest: std::sync::Arc<Manifest>,
    dest: PathBuf,
    /// The destination, opened once: every later step works from this descriptor.
    root: Dir,
    /// The exclusive hold on the destination (released when the plan ends).
    lock: Option<DestLock>,
    actions: Vec<Action>,
    /// Needed object per entry index (for `Write` entries).
    object_of: Vec<Option<usize>>,
    needed: Vec<Needed>,
    /// Paths (relative, as in the manifest) that are in the way and will be replaced.
    replace: Vec<usize>,
    /// Extra local paths (relative to dest, raw bytes) to remove with `delete`.
    extras: Vec<Vec<u8>>,
    staging: Option<Staging>,
    /// The inode each staged object was created as: a staged name that no longer refers to
    /// it was swapped by someone else and is never moved into the tree.
    staged: Vec<Option<FileId>>,
    /// Deepest directory level of the manifest (sizes the descriptor [`Chain`]s).
    max_depth: usize,
    prepared: bool,
    created_dest: bool,
    /// Committed or aborted: nothing left to clean up.
    finished: bool,
    opts: CheckoutOptions,
    /// Files found right, with their stamps, to record after a successful commit.
    stamps: Option<Stamps>,
    /// Files kept without being read: unchanged since a checkout found them right.
    unread: usize,
}

/// The private staging directory, held open (with its fan-out sub-directories).
#[derive(Debug)]
struct Staging {
    name: Vec<u8>,
    id: FileId,
    dir: Dir,
    /// Sub-directories `0..n` when objects are spread (empty: objects sit in `dir`).
    subs: Vec<Dir>,
    /// For messages only (never opened by this path).
    path: PathBuf,
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

fn rel_bytes(e: EntryRef<'_>) -> &[u8] {
    e.rel().as_bytes()
}

fn mode_of(e: EntryRef<'_>, opts: &CheckoutOptions) -> u32 {
    if opts.preserve_special_bits {
        e.mode & 0o7777
    } else {
        e.mode & 0o777
    }
}

/// The error a re-opened directory gets when it is no longer the one first opened there.
fn replaced() -> io::Error {
    io::Error::other("replaced by another directory while in use")
}

/// The error for a directory that cannot be opened or entered: a link, a file or a
/// swapped directory in the way is `UNSAFE_PATH`; anything else (no descriptors left:
/// `EMFILE`, ...) is the I/O error it is.
fn dir_error(what: &str, path: &Path, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => Error::new(
            Code::UnsafePath,
            format!(
                "{what} {}: a link or a file is in the way ({e})",
                display_path(path)
            ),
        ),
        None if e.kind() == io::ErrorKind::Other => Error::new(
            Code::UnsafePath,
            format!("{what} {}: {e}", display_path(path)),
        ),
        _ => Error::io(what, path, e),
    }
}

/// The error for a file that was swapped while it was being moved into place.
fn swapped(path: &Path) -> Error {
    Error::new(
        Code::UnsafePath,
        format!(
            "{} was replaced by something else while it was checked out (another process is \
             changing the destination)",
            display_path(path)
        ),
    )
}

/// Directories held open while fewer descriptors than tree levels are at hand.
const WINDOW: usize = 32;

/// The directories along the current path below `base`, each opened from its parent by one
/// name with `O_NOFOLLOW` and identified by (device, inode). Only the deepest [`WINDOW`]
/// levels and every `stride`-th level keep their descriptor, so a tree of any depth needs a
/// bounded number of them (`RLIMIT_NOFILE` may be 1,024); a level let go is re-opened from
/// the nearest held ancestor when needed, and refused if it is not the same directory.
#[derive(Debug)]
struct Chain {
    base: Dir,
    links: Vec<Link>,
    stride: usize,
}

#[derive(Debug)]
struct Link {
    name: Vec<u8>,
    id: FileId,
    dir: Option<Dir>,
}

impl Chain {
    fn new(base: Dir, max_depth: usize) -> Chain {
        // At most ~256 checkpoints however deep the tree is.
        let stride = WINDOW.max(max_depth / 256 + 1);
        Chain {
            base,
            links: Vec::new(),
            stride,
        }
    }

    fn len(&self) -> usize {
        self.links.len()
    }

    fn keeps(&self, k: usize) -> bool {
        (k + 1) % self.stride == 0
    }

    /// The deepest directory (the base when there is none).
    fn top(&mut self) -> io::Result<&Dir> {
        let Some(i) = self.links.len().checked_sub(1) else {
            return Ok(&self.base);
        };
        self.ensure(i)?;
        Ok(self.links[i].dir.as_ref().expect("ensured"))
    }

    /// Adds `dir`, just opened as `name` in [`Chain::top`].
    fn push(&mut self, name: &[u8], dir: Dir) -> io::Result<()> {
        let id = dir.id()?;
        self.links.push(Link {
            name: name.to_vec(),
            id,
            dir: Some(dir),
        });
        let n = self.links.len();
        if n > WINDOW {
            let k = n - 1 - WINDOW;
            if !self.keeps(k) {
                self.links[k].dir = None;
            }
        }
        Ok(())
    }

    /// Removes the deepest directory and returns it, open.
    fn pop(&mut self) -> io::Result<(Vec<u8>, Dir)> {
        let i = self.links.len() - 1;
        self.ensure(i)?;
        let l = self.links.pop().expect("non-empty");
        Ok((l.name, l.dir.expect("ensured")))
    }

    fn ensure(&mut self, i: usize) -> io::Result<()> {
        if self.links[i].dir.is_some() {
            return Ok(());
        }
        let mut j = i;
        while j > 0 && self.links[j - 1].dir.is_none() {
            j -= 1;
        }
        // Levels j..=i are closed; j's parent is open. Re-open down to i, keeping the
        // window below i so the next levels up are at hand.
        let lo = i.saturating_sub(WINDOW);
        for k in j..=i {
            let d = {
                let parent = if k == 0 {
                    &self.base
                } else {
                    self.links[k - 1].dir.as_ref().expect("opened on the way")
                };
                parent.open_dir(&self.links[k].name)?
            };
            if d.id()? != self.links[k].id {
                return Err(replaced());
            }
            self.links[k].dir = Some(d);
            if k > j && k - 1 < lo && !self.keeps(k - 1) {
                self.links[k - 1].dir = None;
            }
        }
        Ok(())
    }
}

/// Removes `name` in `parent` whatever it is; a directory with everything under it, never
/// following a link, with a bounded number of descriptors however deep it is.
fn remove_tree(parent: &Dir, name: &[u8]) -> io::Result<()> {
    match parent.kind(name)? {
        FsKind::Missing => return Ok(()),
        FsKind::Dir { .. } => {}
        _ => return parent.unlink(name, false),
    }
    let mut chain = Chain::new(parent.try_clone()?, 0);
    // Sub-directories still to remove, per level.
    let mut todo: Vec<Vec<Vec<u8>>> = Vec::new();
    let enter = |d: &Dir| -> io::Result<Vec<Vec<u8>>> {
        let _ = d.chmod(0o700);
        let mut subs = Vec::new();
        for (child, t) in d.list_typed()? {
            let is_dir = match t {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => matches!(d.kind(&child)?, FsKind::Dir { .. }),
                _ => false,
            };
            if is_dir {
                subs.push(child);
            } else {
                match d.unlink(&child, false) {
                    Ok(()) => {}
                    // A directory after all (d_type lied or it was swapped): remove it as one.
                    Err(e) if e.raw_os_error() == Some(libc::EISDIR) => subs.push(child),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(subs)
    };
    let first = parent.open_dir(name)?;
    todo.push(enter(&first)?);
    chain.push(name, first)?;
    while chain.len() > 0 {
        let next = todo.last_mut().expect("one per level").pop();
        match next {
            Some(sub) => {
                let d = match chain.top()?.open_dir(&sub) {
                    Ok(d) => d,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    // Swapped for a link or file since it was listed: remove that.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                        chain.top()?.unlink(&sub, false)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                todo.push(enter(&d)?);
                chain.push(&sub, d)?;
            }
            None => {
                todo.pop();
                let (n, _) = chain.pop()?;
                chain.top()?.unlink(&n, true)?;
            }
        }
    }
    Ok(())
}

/// The exclusive hold on a destination: an `flock` on [`LOCK_NAME`] in it, and one on the
/// directory itself. The file is the lock where directory locks are not supported (NFS);
/// the directory lock is the one a checkout that cannot create the file (a read-only
/// destination, with nothing to write) can still take — so the two always meet.
#[derive(Debug)]
struct DestLock {
    /// The lock file, holding its lock while open (`None`: it could not be created).
    file: Option<fs::File>,
    /// The destination directory, holding its lock while open.
    _dir_lock: fs::File,
    /// The destination, to remove the lock file from when done.
    dir: Dir,
    id: FileId,
}

impl DestLock {
    /// Removes the lock file's name (if it is still ours) while the lock is still held: a
    /// waiter that then gets the lock on the unlinked file sees the name gone and starts
    /// over with a new one.
    fn unname(&mut self) {
        if self.file.is_some()
            && self
                .dir
                .lstat(LOCK_NAME.as_bytes())
                .ok()
                .flatten()
                .is_some_and(|st| fsx::file_id(&st) == self.id)
        {
            let _ = self.dir.unlink(LOCK_NAME.as_bytes(), false);
        }
        self.id = (0, 0);
    }
}

impl Drop for DestLock {
    fn drop(&mut self) {
        self.unname();
    }
}

/// `flock(LOCK_EX)` on `f`, waiting (or not) as `opts` says. `Ok(false)`: this file system
/// does not lock such a file (the other lock then stands alone).
fn flock_wait(
    f: &fs::File,
    dest: &Path,
    opts: &CheckoutOptions,
    told: &mut bool,
    optional: bool,
) -> Result<bool> {
    loop {
        let r = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            if optional {
                return Ok(false);
            }
            return Err(Error::io("cannot lock", &dest.join(LOCK_NAME), e));
        }
        if !opts.wait {
            return Err(Error::new(
                Code::Conflict,
                format!(
                    "another pull or checkout is writing into {} (it holds {}); retry once \
                     it is done, or let this one wait for it",
                    display_path(dest),
                    LOCK_NAME
                ),
            ));
        }
        if !*told {
            *told = true;
            if let Some(n) = &opts.on_wait {
                (n.0)(&format!(
                    "waiting for another pull or checkout writing into {} to finish",
                    display_path(dest)
                ));
            }
        }
        if opts
            .local
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Error::new(
                Code::Io,
                format!(
                    "interrupted while waiting for the lock of {}",
                    display_path(dest)
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Takes the destination's lock (see [`CheckoutOptions::wait`]).
fn lock_dest(root: &Dir, dest: &Path, opts: &CheckoutOptions) -> Result<DestLock> {
    let lock_path = dest.join(LOCK_NAME);
    let mut told = false;
    let dir = root
        .try_clone()
        .map_err(|e| Error::io("cannot open", dest, e))?;
    loop {
        // Created safely: never through a link (O_NOFOLLOW), never blocking on a FIFO put
        // there (O_NONBLOCK), never truncated, and only used if it is a regular file with
        // no other name. Opened for writing where possible (NFS locks only such files);
        // read-only where someone else's lock file allows no more (flock does not mind).
        let safe = libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let opened = match root.open_flags(
            LOCK_NAME.as_bytes(),
            libc::O_RDWR | libc::O_CREAT | safe,
            0o644,
        ) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS)) => root
                .open_flags(LOCK_NAME.as_bytes(), libc::O_RDONLY | safe, 0)
                .map(|f| (f, false)),
            other => other.map(|f| (f, true)),
        };
        let (file, writable) = match opened {
            Ok((f, writable)) => {
                let st = f
                    .metadata()
                    .map_err(|e| Error::io("cannot inspect", &lock_path, e))?;
                if !st.is_file() || std::os::unix::fs::MetadataExt::nlink(&st) != 1 {
                    return Err(Error::new(
                        Code::UnsafePath,
                        format!(
                            "lock file {} is not a regular file of its own (a hard link, a \
                             FIFO or a directory was put there)",
                            display_path(&lock_path)
                        ),
                    ));
                }
                (Some(f), writable)
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::new(
                    Code::UnsafePath,
                    format!("lock file {} is a symbolic link", display_path(&lock_path)),
                ))
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EROFS | libc::ENOENT)
                ) =>
            {
                (None, false)
            }
            Err(e) => return Err(Error::io("cannot create lock file", &lock_path, e)),
        };
        let id = match &file {
            Some(f) => fsx::fd_id(f).map_err(|e| Error::io("cannot inspect", &lock_path, e))?,
            None => (0, 0),
        };
        let mut file_locked = false;
        if let Some(f) = &file {
            file_locked = flock_wait(f, dest, opts, &mut told, !writable)?;
            // The previous holder removed the name as it finished: this file is nobody's
            // lock any more; take the one at the name now.
            let current = root.lstat(LOCK_NAME.as_bytes()).ok().flatten();
            if current.is_none_or(|st| fsx::file_id(&st) != id) {
                continue;
            }
        }
        let dir_lock = root
            .open_flags(b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| Error::io("cannot open", dest, e))?;
        let locked_dir = flock_wait(&dir_lock, dest, opts, &mut told, file_locked)?;
        if !file_locked && !locked_dir {
            return Err(Error::io(
                "cannot lock",
                dest,
                io::Error::from_raw_os_error(libc::ENOLCK),
            ));
        }
        return Ok(DestLock {
            file,
            _dir_lock: dir_lock,
            dir,
            id,
        });
    }
}

/// Compares `dest` with `manifest` without writing anything but the destination itself when
/// missing and its lock file (see the module docs).
pub fn plan(manifest: &Manifest, dest: &Path, opts: &CheckoutOptions) -> Result<Plan> {
    plan_shared(std::sync::Arc::new(manifest.clone()), dest, opts)
}

/// [`plan`] of a manifest the caller shares: the plan keeps it without a copy (a manifest
/// of millions of entries is hundreds of megabytes).
pub fn plan_shared(
    manifest: std::sync::Arc<Manifest>,
    dest: &Path,
    opts: &CheckoutOptions,
) -> Result<Plan> {
    if manifest.is_absolute() {
        return Err(Error::new(
            Code::InvalidArgument,
            "an absolute-path manifest cannot be checked out",
        ));
    }
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
    if opts.dry_run && !dest_exists {
        return Err(Error::new(
            Code::NotFound,
            format!(
                "destination {} does not exist (a dry run plans only an existing one)",
                display_path(dest)
            ),
        ));
    }
    // The lock lives in the destination, so a missing one is created first (as the fill
    // would have): a plan that fails leaves it removed again.
    if !dest_exists {
        fs::create_dir_all(dest).map_err(|e| Error::io("cannot create destination", dest, e))?;
    }
    let created_dest = !dest_exists;
    let undo = |e: Error| {
        if created_dest {
            let _ = fs::remove_dir(dest);
        }
        e
    };
    // The destination's own path is the caller's choice and is followed; from here on,
    // everything is reached from this descriptor.
    let root = Dir::open(dest).map_err(|e| undo(Error::io("cannot open", dest, e)))?;
    let lock = if opts.dry_run {
        None
    } else {
        Some(lock_dest(&root, dest, opts).map_err(undo)?)
    };
    let mut p = Plan {
        manifest: manifest.clone(),
        dest: dest.to_path_buf(),
        root,
        lock,
        actions: Vec::new(),
        object_of: Vec::new(),
        needed: Vec::new(),
        replace: Vec::new(),
        extras: Vec::new(),
        staging: None,
        staged: Vec::new(),
        max_depth: manifest
            .entries()
            .iter()
            .map(|e| e.rel().bytes().filter(|&b| b == b'/').count() + 1)
            .max()
            .unwrap_or(0),
        prepared: false,
        created_dest,
        finished: false,
        opts: opts.clone(),
        stamps: None,
        unread: 0,
    };
    // On an error the plan is dropped, which releases the lock (and removes a destination
    // it created).
    p.compare(dest_exists)?;
    Ok(p)
}

impl Plan {
    /// The read-only part of [`plan`]: what to keep, write, replace and remove.
    fn compare(&mut self, dest_existed: bool) -> Result<()> {
        let manifest = &self.manifest;
        let dest = self.dest.as_path();
        let opts = &self.opts;
        let entries = manifest.entries();
        let mut actions = vec![Action::Keep; entries.len()];
        let mut conflicts: Vec<usize> = Vec::new();
        let mut replace: Vec<usize> = Vec::new();
        let mut extras = Vec::new();
        // Walk the manifest in order (a depth-first pre-order, since paths sort with their
        // parents first), keeping only the current chain of directories open. Files whose
        // size matches are hashed when their directory is left, in parallel.
        struct Frame {
            idx: usize,
            /// Whether the directory exists (and so is in the chain).
            open: bool,
            /// Files of the right size, with their stamps, still to compare.
            pending: Vec<(usize, Stamp)>,
        }
        let start_ns = statcache::now_ns();
        // The stamps of an earlier checkout into this destination (under its canonical
        // path: the same directory reached another way shares them).
        let mut stamps = match (&opts.stat_cache, dest_existed) {
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
        actions[0] = Action::DirOk;
        let base = self
            .root
            .try_clone()
            .map_err(|e| Error::io("cannot open", dest, e))?;
        let mut chain = Chain::new(base, self.max_depth);
        let mut stack: Vec<Frame> = vec![Frame {
            idx: 0,
            open: true,
            pending: Vec::new(),
        }];
        let mut finish = |f: Frame,
                          dir: Option<&Dir>,
                          actions: &mut Vec<Action>,
                          conflicts: &mut Vec<usize>,
                          found: Option<&mut Vec<(Vec<u8>, Rec)>>|
         -> Result<()> {
            let Some(dir) = dir else { return Ok(()) };
            let results: Vec<(usize, Stamp, bool, bool)> = f
                .pending
                .par_iter()
                .map(|&(i, stamp)| {
                    let e = entries.get(i);
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
                let e = entries.get(i);
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
                let e = entries.get(f.idx);
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
                    // Paths the ignore rules leave out are not ours to delete.
                    if !in_manifest(entries, &rel) && !kept(opts, dir, &n, &rel) {
                        extras.push(rel);
                    }
                }
            }
            Ok(())
        };
        let chain_err = |rel: &str, e: io::Error| dir_error("cannot open", &dest.join(rel), e);
        for i in 1..entries.len() {
            let e = entries.get(i);
            let parent_rel = parent_of(e.rel());
            while stack.len() > 1 && entries.get(stack[stack.len() - 1].idx).rel() != parent_rel {
                let f = stack.pop().expect("non-empty");
                let popped = if f.open {
                    Some(
                        chain
                            .pop()
                            .map_err(|err| chain_err(entries.get(f.idx).rel(), err))?
                            .1,
                    )
                } else {
                    None
                };
                finish(
                    f,
                    popped.as_ref(),
                    &mut actions,
                    &mut conflicts,
                    stamps.as_mut().map(|st| &mut st.found),
                )?;
            }
            let top_open = stack.last().expect("root frame").open;
            let name = last_component(rel_bytes(e));
            let parent = if top_open {
                Some(chain.top().map_err(|err| chain_err(parent_rel, err))?)
            } else {
                None
            };
            let st = match parent {
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
                    let d = parent
                        .expect("state came from an open parent")
                        .open_dir(name)
                        .map_err(|err| chain_err(e.rel(), err))?;
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
                    stack
                        .last_mut()
                        .expect("root frame")
                        .pending
                        .push((i, stamp));
                }
                (Kind::File, _) => {
                    conflicts.push(i);
                    actions[i] = Action::Write;
                }
            }
            if e.kind == Kind::Directory {
                stack.push(Frame {
                    idx: i,
                    open: sub.is_some(),
                    pending: Vec::new(),
                });
                if let Some(d) = sub {
                    chain.push(name, d).map_err(|err| chain_err(e.rel(), err))?;
                }
            }
        }
        while let Some(f) = stack.pop() {
            let popped = if f.idx == 0 {
                None
            } else if f.open {
                Some(
                    chain
                        .pop()
                        .map_err(|err| chain_err(entries.get(f.idx).rel(), err))?
                        .1,
                )
            } else {
                None
            };
            let dir = if f.idx == 0 {
                Some(&chain.base)
            } else {
                popped.as_ref()
            };
            finish(
                f,
                dir,
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
                    .map(|&i| escape_bytes(entries.get(i).path.as_bytes()))
                    .collect();
                let more = if conflicts.len() > 20 {
                    format!(" and {} more", conflicts.len() - 20)
                } else {
                    String::new()
                };
                return Err(Error::new(
                    Code::Conflict,
                    format!(
                        "{} local path(s) in {} differ from the snapshot and would be \
                         overwritten: {}{more} (use force to overwrite)",
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
        self.staged = vec![None; needed.len()];
        self.actions = actions;
        self.object_of = object_of;
        self.needed = needed;
        self.replace = replace;
        self.extras = extras;
        self.stamps = stamps;
        self.unread = unread;
        Ok(())
    }
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

fn in_manifest(entries: Entries<'_>, rel: &[u8]) -> bool {
    let Ok(rel) = std::str::from_utf8(rel) else {
        return false;
    };
    let file = format!("./{rel}");
    let dir = format!("./{rel}/");
    let find = |p: &str| entries.find(p.as_bytes()).is_some();
    find(&file) || find(&dir)
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

/// Copies object `n` of the `file://` store at `root` into the new file `name` in `dir`
/// (verified); returns the file's identity and size.
fn copy_staged(
    root: &Path,
    n: &Needed,
    dir: &Dir,
    name: &[u8],
    shown: &Path,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(FileId, u64)> {
    let mut src = crate::store::open_object(root, &n.checksum, Some(n.size))?;
    let mut out = dir
        .create_new(name, 0o644)
        .map_err(|e| Error::io("cannot create", shown, e))?;
    let copied = crate::store::copy_object_into(
        root,
        &n.checksum,
        &mut src,
        &mut out,
        shown,
        Some(n.size),
        cancel,
    )
    .and_then(|got| {
        let id = fsx::fd_id(&out).map_err(|e| Error::io("cannot inspect", shown, e))?;
        Ok((id, got))
    });
    if copied.is_err() {
        drop(out);
        let _ = dir.unlink(name, false);
    }
    copied
}

/// Puts object `n` of the `file://` store at `root` under the new name `name` in the
/// staging directory `dir` as `link` says, and verifies it (digest and size); returns the
/// staged file's identity and its size.
#[allow(clippy::too_many_arguments)]
fn stage_object(
    root: &Path,
    n: &Needed,
    dir: &Dir,
    name: &[u8],
    shown: &Path,
    dest: &Path,
    link: LinkMode,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(FileId, u64)> {
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
    let staged = match link {
        LinkMode::Copy => return copy_staged(root, n, dir, name, shown, cancel),
        LinkMode::Hardlink => match dir.link_from(&src, name) {
            Ok(()) => dir
                .open_read(name)
                .map_err(|e| Error::io("cannot open", shown, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            // As many links as the file system allows (ext4: 65,000): this one is a copy.
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
                return copy_staged(root, n, dir, name, shown, cancel)
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
            let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            let out = dir
                .open_flags(name, flags, 0o644)
                .map_err(|e| Error::io("cannot create", shown, e))?;
            if let Err(e) = fsx::clone_file(&from, &out) {
                drop(out);
                let _ = dir.unlink(name, false);
                return Err(if fsx::clone_unsupported(&e) {
                    unsupported("reflink", root, dest, e)
                } else {
                    Error::io("cannot clone", &src, e)
                });
            }
            out
        }
    };
    // Linked or cloned, the object is read once: a corrupt object (a hard-linked file edited
    // in place edits it) is found here, before anything in the destination changes.
    let id = fsx::fd_id(&staged).map_err(|e| Error::io("cannot inspect", shown, e))?;
    // Holes are not read (a sparse object hashes as its zeros), a longer file still fails.
    let checked = hash_whole(&staged, n.size);
    match checked {
        Ok((d, got)) if d == n.checksum && got == n.size => Ok((id, got)),
        other => {
            drop(staged);
            let _ = dir.unlink(name, false);
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

/// Creates the directory `name` in `parent` (mode 0700) and opens it, making sure the one
/// opened is the one just created — ours and empty — and not one swapped in meanwhile.
fn make_private_dir(parent: &Dir, name: &[u8], shown: &Path) -> Result<Dir> {
    parent
        .mkdir(name, 0o700)
        .map_err(|e| Error::io("cannot create", shown, e))?;
    let d = parent
        .open_dir(name)
        .map_err(|e| dir_error("cannot open", shown, e))?;
    let st = d
        .stat()
        .map_err(|e| Error::io("cannot inspect", shown, e))?;
    let empty = d
        .list()
        .map_err(|e| Error::io("cannot list", shown, e))?
        .is_empty();
    if st.st_uid != unsafe { libc::geteuid() } || !empty {
        return Err(Error::new(
            Code::UnsafePath,
            format!(
                "{} was replaced while it was created (another process is changing the \
                 destination)",
                display_path(shown)
            ),
        ));
    }
    Ok(d)
}

/// Renames `from` in `src` to `name` in `parent`, then checks that the name refers to the
/// file `id`: a file swapped in between is refused, never reported as written.
fn move_into_place(
    src: &Dir,
    from: &[u8],
    parent: &Dir,
    name: &[u8],
    id: FileId,
    shown: &Path,
) -> Result<()> {
    src.rename_to(from, parent, name)
        .map_err(|e| Error::io("cannot move into place", shown, e))?;
    match parent.lstat(name) {
        Ok(Some(st)) if fsx::file_id(&st) == id => Ok(()),
        _ => Err(swapped(shown)),
    }
}

impl Plan {
    /// Objects still to be fetched (empty files need none).
    pub fn needed(&self) -> &[Needed] {
        &self.needed
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The path of object `i` of [`Plan::needed`] in staging, for messages: objects are
    /// written through [`Plan::open_staged`] (or [`Plan::fill_from_store`]), never by path.
    pub fn staged_path(&self, i: usize) -> Option<PathBuf> {
        self.staging
            .as_ref()
            .map(|s| s.path.join(self.staged_rel(i)))
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

    /// The open staging directory holding object `i`, and its name there.
    fn staged_at(&self, i: usize) -> (&Dir, String) {
        let s = self.staging.as_ref().expect("prepared");
        match self.staging_fanout() {
            1 => (&s.dir, i.to_string()),
            n => (&s.subs[i % n], i.to_string()),
        }
    }

    /// What the checkout would write, fix and remove (`--dry-run`).
    pub fn preview(&self) -> Preview {
        let mut p = Preview::default();
        for (a, e) in self.actions.iter().zip(self.manifest.entries()) {
            match a {
                Action::Write => p.writes.push((e.rel().to_string(), e.size)),
                Action::Chmod => p.chmods += 1,
                Action::Mkdir => p.mkdirs += 1,
                Action::Keep | Action::DirOk => {}
            }
        }
        p.removes = self
            .extras
            .iter()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect();
        p
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

    /// Creates the private staging directory (none when nothing is to be fetched).
    pub fn prepare(&mut self) -> Result<()> {
        if self.staging.is_some() || (self.prepared && self.needed.is_empty()) {
            return Ok(());
        }
        self.prepared = true;
        // Clear staging directories left by interrupted runs (not those of a live process).
        if let Ok(names) = self.root.list() {
            for n in names {
                if n.starts_with(STAGING_PREFIX.as_bytes())
                    && n != LOCK_NAME.as_bytes()
                    && !staging_owner_alive(&n)
                {
                    let _ = remove_tree(&self.root, &n);
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
        let name = format!("{STAGING_PREFIX}{}.{nanos}", std::process::id()).into_bytes();
        let path = self.dest.join(std::ffi::OsStr::from_bytes(&name));
        let dir = make_private_dir(&self.root, &name, &path)?;
        let id = dir
            .id()
            .map_err(|e| Error::io("cannot inspect", &path, e))?;
        let subs: Result<Vec<Dir>> = if self.staging_fanout() > 1 {
            (0..self.staging_fanout())
                .map(|k| {
                    make_private_dir(&dir, k.to_string().as_bytes(), &path.join(k.to_string()))
                })
                .collect()
        } else {
            Ok(Vec::new())
        };
        self.staging = Some(Staging {
            name,
            id,
            dir,
            subs: Vec::new(),
            path,
        });
        match subs {
            Ok(subs) => {
                self.staging.as_mut().expect("just set").subs = subs;
                Ok(())
            }
            Err(e) => {
                let _ = self.clear_staging();
                Err(e)
            }
        }
    }

    /// Creates the file object `i` is to be downloaded into, exclusively, in the staging
    /// directory, and returns it open for writing: a store writes through this descriptor
    /// (or `/proc/self/fd/<n>`), never by a path someone could swap.
    pub fn open_staged(&mut self, i: usize) -> Result<fs::File> {
        if i >= self.needed.len() {
            return Err(Error::new(
                Code::InvalidArgument,
                format!("no object {i} to stage ({} needed)", self.needed.len()),
            ));
        }
        self.prepare()?;
        let shown = self.staged_path(i).expect("prepared");
        let (dir, name) = self.staged_at(i);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let f = dir
            .open_flags(name.as_bytes(), flags, 0o644)
            .map_err(|e| Error::io("cannot create", &shown, e))?;
        self.staged[i] = Some(fsx::fd_id(&f).map_err(|e| Error::io("cannot inspect", &shown, e))?);
        Ok(f)
    }

    /// Copies the needed objects from the `file://` store at `root` into staging, verifying
    /// each (digest and size). Empty objects are created without reading the store.
    pub fn fill_from_store(&mut self, root: &Path) -> Result<()> {
        self.prepare()?;
        if self.staging.is_none() {
            return Ok(());
        }
        let opts = &self.opts.local;
        let ids: Vec<FileId> = self
            .needed
            .par_iter()
            .enumerate()
            .map(|(i, n)| -> Result<FileId> {
                let shown = self.staged_path(i).expect("prepared");
                let (dir, name) = self.staged_at(i);
                if opts
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
                {
                    return Err(Error::new(
                        Code::Io,
                        format!("interrupted while writing {}", display_path(&shown)),
                    ));
                }
                if to_hex(&n.checksum) == EMPTY_CHECKSUM && n.size == 0 {
                    let f = dir
                        .create_new(name.as_bytes(), 0o644)
                        .map_err(|e| Error::io("cannot create", &shown, e))?;
                    return fsx::fd_id(&f).map_err(|e| Error::io("cannot inspect", &shown, e));
                }
                let (id, got) = stage_object(
                    root,
                    n,
                    dir,
                    name.as_bytes(),
                    &shown,
                    &self.dest,
                    self.opts.link,
                    opts.cancel.as_deref(),
                )?;
                if got != n.size {
                    let _ = dir.unlink(name.as_bytes(), false);
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
                Ok(id)
            })
            .collect::<Result<Vec<_>>>()?;
        for (slot, id) in self.staged.iter_mut().zip(ids) {
            *slot = Some(id);
        }
        Ok(())
    }

    /// Checks that every staged object is the file created for it, with the right size
    /// (objects staged by Python stores were verified while downloaded).
    fn check_staged(&self) -> Result<()> {
        for (i, n) in self.needed.iter().enumerate() {
            let p = self.staged_path(i).expect("prepared");
            let (dir, name) = self.staged_at(i);
            let Some(want) = self.staged[i] else {
                return Err(Error::new(
                    Code::Io,
                    format!(
                        "object {} was not fetched into {}",
                        to_hex(&n.checksum),
                        display_path(&p)
                    ),
                ));
            };
            match dir.lstat(name.as_bytes()) {
                Ok(Some(st)) if fsx::file_id(&st) != want => return Err(swapped(&p)),
                Ok(Some(st)) => match fsx::kind_of(&st) {
                    FsKind::File { size, .. } if size == n.size => {}
                    FsKind::File { size, .. } => {
                        return Err(Error::new(
                            Code::HashMismatch,
                            format!(
                                "object {} has {size} bytes but the manifest says {}",
                                to_hex(&n.checksum),
                                n.size
                            ),
                        ))
                    }
                    _ => return Err(swapped(&p)),
                },
                Ok(None) => {
                    return Err(Error::io(
                        "staged object missing",
                        &p,
                        io::Error::from_raw_os_error(libc::ENOENT),
                    ))
                }
                Err(e) => return Err(Error::io("staged object missing", &p, e)),
            }
        }
        Ok(())
    }

    /// Empties and removes the staging directory through its descriptor (whatever is at
    /// its name now is left alone unless it is still that directory).
    fn clear_staging(&mut self) -> io::Result<()> {
        clear_staging(&self.root, &mut self.staging)
    }
}

/// [`Plan::clear_staging`] (a function of the fields it needs, for the borrow checker).
fn clear_staging(root: &Dir, staging: &mut Option<Staging>) -> io::Result<()> {
    {
        let Some(s) = staging.take() else {
            return Ok(());
        };
        drop(s.subs);
        for child in s.dir.list()? {
            remove_tree(&s.dir, &child)?;
        }
        if root
            .lstat(&s.name)?
            .is_some_and(|st| fsx::file_id(&st) == s.id)
        {
            root.unlink(&s.name, true)?;
        } else {
            // Moved away meanwhile (by whoever owns the destination): remove it where it is
            // now if that is still in the destination's top level, rather than leave an
            // empty staging directory to be put back later.
            for n in root.list()? {
                if root.lstat(&n)?.is_some_and(|st| fsx::file_id(&st) == s.id) {
                    let _ = root.unlink(&n, true);
                }
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Moves everything into place (see the module docs). Consumes the plan's staging.
    pub fn commit(&mut self) -> Result<CheckoutStats> {
        self.prepare()?;
        self.check_staged()?;
        let entries = self.manifest.entries();
        let root = &self.root;
        let mut stats = CheckoutStats::default();
        let mut remaining: Vec<usize> = self.needed.iter().map(|n| n.uses).collect();
        let replace: std::collections::HashSet<usize> = self.replace.iter().copied().collect();
        let durable = self.opts.local.durable;
        let dest = self.dest.clone();
        let io_err = |what: &str, rel: &str, e: io::Error| Error::io(what, &dest.join(rel), e);
        let chain_err = |rel: &str, e: io::Error| dir_error("cannot open", &dest.join(rel), e);

        // Directories along the current path (descriptors bounded, see `Chain`), with
        // (entry index, mode when entered) per level.
        let base = root
            .try_clone()
            .map_err(|e| Error::io("cannot open", &dest, e))?;
        let mut chain = Chain::new(base, self.max_depth);
        let mut levels: Vec<(usize, u32)> = Vec::new();
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
        let root_mode = open_for_work(root);
        let finish_dir = |idx: usize, dir: &Dir, cur: u32, opts: &CheckoutOptions| -> Result<()> {
            if durable {
                dir.sync()
                    .map_err(|e| io_err("cannot sync", entries.get(idx).rel(), e))?;
            }
            let want = mode_of(entries.get(idx), opts);
            if cur != want || current_mode(dir) != want {
                dir.chmod(want)
                    .map_err(|e| io_err("cannot chmod", entries.get(idx).rel(), e))?;
            }
            Ok(())
        };
        for i in 1..entries.len() {
            let e = entries.get(i);
            let parent_rel = parent_of(e.rel());
            while let Some(&(top, cur)) = levels.last() {
                if entries.get(top).rel() == parent_rel {
                    break;
                }
                levels.pop();
                let (_, dir) = chain
                    .pop()
                    .map_err(|err| chain_err(entries.get(top).rel(), err))?;
                finish_dir(top, &dir, cur, &self.opts)?;
            }
            let name = last_component(rel_bytes(e));
            let shown = dest.join(e.rel());
            let parent: &Dir = chain.top().map_err(|err| chain_err(parent_rel, err))?;
            if replace.contains(&i) {
                remove_tree(parent, name).map_err(|err| io_err("cannot replace", e.rel(), err))?;
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
                    let d = parent
                        .open_dir(name)
                        .map_err(|err| dir_error("cannot enter", &shown, err))?;
                    let cur = open_for_work(&d);
                    chain.push(name, d).map_err(|err| chain_err(e.rel(), err))?;
                    levels.push((i, cur));
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
                        // the file too (a cache object, another checkout, a file outside
                        // the destination): the file gets an inode of its own instead.
                        let tmp = format!("{STAGING_PREFIX}{}.relink.{i}", std::process::id());
                        let mut out = root
                            .create_new(tmp.as_bytes(), 0o600)
                            .map_err(|err| io_err("cannot create", e.rel(), err))?;
                        let copied = fsx::copy_hashing(&mut f, &mut out, e.size)
                            .map_err(|err| err.at(&shown, &dest.join(&tmp)));
                        let ok = matches!(copied, Ok((d, n)) if d == e.checksum && n == e.size);
                        if ok {
                            fsx::fchmod(&out, mode_of(e, &self.opts))
                                .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                            if durable {
                                out.sync_all()
                                    .map_err(|err| io_err("cannot sync", e.rel(), err))?;
                            }
                        }
                        let id = fsx::fd_id(&out);
                        drop(out);
                        if !ok {
                            let _ = root.unlink(tmp.as_bytes(), false);
                            copied?;
                            return Err(Error::new(
                                Code::InFlux,
                                format!("{} changed while it was checked out", shown.display()),
                            ));
                        }
                        let id = id.map_err(|err| io_err("cannot inspect", e.rel(), err))?;
                        move_into_place(root, tmp.as_bytes(), parent, name, id, &shown)?;
                    } else {
                        fsx::fchmod(&f, mode_of(e, &self.opts))
                            .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                    }
                    stats.files_kept += 1;
                }
                Action::Write => {
                    let k = self.object_of[i].expect("write has an object");
                    let staging = self
                        .staging
                        .as_ref()
                        .expect("objects needed, so staging exists");
                    let staged_path = self.staged_path(k).expect("prepared");
                    let want = self.staged[k].expect("checked");
                    let (sdir, staged_name) = self.staged_at(k);
                    let staged_name = staged_name.as_bytes();
                    // The staged object, opened and checked to be the file made for it.
                    let open_staged = || -> Result<fs::File> {
                        let f = sdir
                            .open_read(staged_name)
                            .map_err(|err| Error::io("cannot open staged", &staged_path, err))?;
                        match fsx::fd_id(&f) {
                            Ok(id) if id == want => Ok(f),
                            _ => Err(swapped(&staged_path)),
                        }
                    };
                    remaining[k] -= 1;
                    let mode = mode_of(e, &self.opts);
                    let link = self.opts.link;
                    // A hard link shares the object's inode and so its mode: it is only used
                    // where that mode is the file's; other files are copied.
                    let mode_fits = link != LinkMode::Hardlink
                        || sdir
                            .stat_at(staged_name, false)
                            .is_ok_and(|st| fsx::perm_bits(&st) == mode);
                    let tmp = format!("{STAGING_PREFIX}copy.{i}");
                    if remaining[k] == 0 && mode_fits {
                        let f = open_staged()?;
                        if link != LinkMode::Hardlink {
                            fsx::fchmod(&f, mode)
                                .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                        }
                        if durable {
                            f.sync_all()
                                .map_err(|err| io_err("cannot sync", e.rel(), err))?;
                        }
                        drop(f);
                        move_into_place(sdir, staged_name, parent, name, want, &shown)?;
                    } else if link == LinkMode::Hardlink && mode_fits {
                        // Another name for verified content: one more link.
                        sdir.link_to(staged_name, &staging.dir, tmp.as_bytes())
                            .map_err(|err| io_err("cannot hard-link", e.rel(), err))?;
                        move_into_place(&staging.dir, tmp.as_bytes(), parent, name, want, &shown)?;
                    } else {
                        // A copy (or a clone) of verified content: re-hashed as it is copied
                        // unless cloned.
                        let mut src = open_staged()?;
                        let mut out = staging
                            .dir
                            .create_new(tmp.as_bytes(), 0o600)
                            .map_err(|err| io_err("cannot create", e.rel(), err))?;
                        if link == LinkMode::Reflink && mode_fits {
                            fsx::clone_file(&src, &out)
                                .map_err(|err| io_err("cannot clone", e.rel(), err))?;
                        } else {
                            let (d, _) = fsx::copy_hashing(&mut src, &mut out, e.size)
                                .map_err(|err| err.at(&staged_path, &shown))?;
                            if d != e.checksum {
                                return Err(Error::new(
                                    Code::HashMismatch,
                                    format!("staged object for {} changed", shown.display()),
                                ));
                            }
                        }
                        fsx::fchmod(&out, mode)
                            .map_err(|err| io_err("cannot chmod", e.rel(), err))?;
                        if durable {
                            out.sync_all()
                                .map_err(|err| io_err("cannot sync", e.rel(), err))?;
                        }
                        let id = fsx::fd_id(&out)
                            .map_err(|err| io_err("cannot inspect", e.rel(), err))?;
                        drop(out);
                        move_into_place(&staging.dir, tmp.as_bytes(), parent, name, id, &shown)?;
                    }
                    stats.files_written += 1;
                    stats.bytes_written += e.size;
                }
            }
        }
        while let Some((idx, cur)) = levels.pop() {
            let (_, dir) = chain
                .pop()
                .map_err(|err| chain_err(entries.get(idx).rel(), err))?;
            finish_dir(idx, &dir, cur, &self.opts)?;
        }
        drop(chain);
        for rel in &self.extras {
            let shown = dest.join(std::ffi::OsStr::from_bytes(rel));
            let (parent_rel, name) = match rel.iter().rposition(|&b| b == b'/') {
                Some(k) => (&rel[..k], &rel[k + 1..]),
                None => (&rel[..0], &rel[..]),
            };
            // One directory open at a time, each by one name without following links.
            let mut dir = root
                .try_clone()
                .map_err(|e| Error::io("cannot open", &dest, e))?;
            if !parent_rel.is_empty() {
                for comp in parent_rel.split(|&b| b == b'/') {
                    dir = dir.open_dir(comp).map_err(|e| {
                        dir_error(
                            "cannot open",
                            &dest.join(std::ffi::OsStr::from_bytes(parent_rel)),
                            e,
                        )
                    })?;
                }
            }
            remove_tree(&dir, name).map_err(|e| Error::io("cannot remove", &shown, e))?;
            stats.removed += 1;
        }
        if let Some(path) = self.staging.as_ref().map(|s| s.path.clone()) {
            clear_staging(&self.root, &mut self.staging)
                .map_err(|e| Error::io("cannot remove", &path, e))?;
        }
        // The lock file goes before the destination gets its final (maybe read-only) mode;
        // the lock itself is held until the end.
        if let Some(l) = self.lock.as_mut() {
            l.unname();
        }
        finish_dir(0, &self.root, root_mode, &self.opts)?;
        if let Some(st) = self.stamps.take() {
            // Only what the plan found right and left alone; written files are too new
            // to record (the next run hashes them once, then trusts them).
            if let Some(fs) = &st.fs {
                let _ = statcache::save_stamps(&st.file, &st.root, fs, &st.found, st.start_ns);
            }
        }
        self.lock = None;
        self.finished = true;
        Ok(stats)
    }

    /// Removes the staging directory (and the destination if this plan created it and it is
    /// otherwise empty), and lets the destination go. Used when a fill fails: the
    /// destination is left as it was.
    pub fn abort(&mut self) {
        let _ = self.clear_staging();
        self.lock = None;
        if self.created_dest {
            let _ = fs::remove_dir(&self.dest);
            self.created_dest = false;
        }
        self.finished = true;
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        if !self.finished {
            self.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const EMPTY: &str = EMPTY_CHECKSUM;

    /// A `file://` store holding `files` (`(path, content)`) and the manifest for them
    /// (directories listed with placeholder sums: the checkout does not read them).
    fn store_with(store: &Path, dirs: &[&str], files: &[(&str, &[u8])]) -> Manifest {
        let mut lines = vec![format!("D 755 {EMPTY} 0 ./")];
        for d in dirs {
            lines.push(format!("D 755 {EMPTY} 0 ./{d}/"));
        }
        for (p, data) in files {
            let sum = *blake3::hash(data).as_bytes();
            let obj = object_path(store, &sum);
            fs::create_dir_all(obj.parent().unwrap()).unwrap();
            fs::write(&obj, data).unwrap();
            lines.push(format!("F 644 {} {} ./{p}", to_hex(&sum), data.len()));
        }
        Manifest::parse(&lines.join("\n")).unwrap()
    }

    fn open_fds() -> usize {
        fs::read_dir("/proc/self/fd")
            .map(|r| r.count())
            .unwrap_or(0)
    }

    #[test]
    fn chain_bounds_descriptors_and_refuses_a_swapped_level() {
        let t = tempfile::tempdir().unwrap();
        let depth = 3000;
        let base = Dir::open(t.path()).unwrap();
        let mut chain = Chain::new(base.try_clone().unwrap(), depth);
        let before = open_fds();
        let mut most = 0;
        for _ in 0..depth {
            let top = chain.top().unwrap();
            top.mkdir(b"d", 0o700).unwrap();
            let d = top.open_dir(b"d").unwrap();
            chain.push(b"d", d).unwrap();
            most = most.max(open_fds());
        }
        // Bounded: the window, the checkpoints, and nothing per level.
        assert!(most - before < 600, "{most} - {before}");
        // Climb back up: every level is re-opened from a held ancestor as needed.
        for _ in 0..depth - 40 {
            let (_, d) = chain.pop().unwrap();
            assert!(d.id().is_ok());
        }
        // Swap a released level for another directory: re-opening it is refused.
        let mut rel = PathBuf::from(t.path());
        for _ in 0..5 {
            rel.push("d");
        }
        fs::rename(&rel, t.path().join("moved")).unwrap();
        fs::create_dir(&rel).unwrap();
        let mut refused = false;
        while chain.len() > 0 {
            match chain.pop() {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::Other, "{e}");
                    refused = true;
                    break;
                }
            }
        }
        assert!(
            refused,
            "a swapped directory was re-opened as if it were the same"
        );
    }

    #[test]
    fn remove_tree_removes_deep_trees_without_following_links() {
        let _deep = crate::DEEP_TREE_TESTS
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        let base = Dir::open(t.path()).unwrap();
        base.mkdir(b"victim", 0o700).unwrap();
        let mut d = base.open_dir(b"victim").unwrap();
        for i in 0..2500 {
            if i % 500 == 0 {
                symlink(
                    &outside,
                    PathBuf::from(format!("/proc/self/fd/{}/link", d.raw())),
                )
                .unwrap();
                d.create_new(b"f", 0o600).unwrap();
            }
            d.mkdir(b"d", 0o500).unwrap();
            d = d.open_dir(b"d").unwrap();
        }
        drop(d);
        remove_tree(&base, b"victim").unwrap();
        assert!(!t.path().join("victim").exists());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
    }

    #[test]
    fn running_out_of_descriptors_is_an_io_error_not_an_unsafe_path() {
        let e = dir_error(
            "cannot open",
            Path::new("dest/a"),
            io::Error::from_raw_os_error(libc::EMFILE),
        );
        assert_eq!(e.code, Code::Io);
        assert_eq!(e.errno, Some(libc::EMFILE));
        let e = dir_error(
            "cannot open",
            Path::new("dest/a"),
            io::Error::from_raw_os_error(libc::ELOOP),
        );
        assert_eq!(e.code, Code::UnsafePath);
        assert!(e.message.contains("dest/a"), "{}", e.message);
    }

    #[test]
    fn a_second_checkout_waits_or_fails_and_the_lock_file_goes_when_done() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let dest = t.path().join("dest");
        let m = store_with(&store, &["a"], &[("a/x", b"x\n"), ("y", b"yy")]);
        let opts = CheckoutOptions::default();
        let mut first = plan(&m, &dest, &opts).unwrap();
        assert!(dest.join(LOCK_NAME).is_file());
        let err = plan(&m, &dest, &opts).unwrap_err();
        assert_eq!(err.code, Code::Conflict);
        assert!(
            err.message.contains(&dest.display().to_string()),
            "{}",
            err.message
        );
        // A waiting one gets the destination once the first is done.
        let told = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let told2 = told.clone();
        let waiting = CheckoutOptions {
            wait: true,
            on_wait: Some(WaitNotice(std::sync::Arc::new(move |_| {
                told2.fetch_add(1, Ordering::SeqCst);
            }))),
            ..CheckoutOptions::default()
        };
        let (m2, dest2) = (m.clone(), dest.clone());
        let second = std::thread::spawn(move || {
            let mut p = plan(&m2, &dest2, &waiting).unwrap();
            p.commit().unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!second.is_finished(), "the second checkout did not wait");
        first.fill_from_store(&store).unwrap();
        let stats = first.commit().unwrap();
        assert_eq!(stats.files_written, 2);
        let stats2 = second.join().unwrap();
        assert_eq!(stats2.files_written, 0);
        assert_eq!(told.load(Ordering::SeqCst), 1);
        assert!(!dest.join(LOCK_NAME).exists());
        assert_eq!(fs::read(dest.join("a/x")).unwrap(), b"x\n");
    }

    #[test]
    fn a_dry_run_plan_previews_without_locking_or_creating_anything() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let dest = t.path().join("dest");
        let m = store_with(&store, &["a"], &[("a/x", b"x\n"), ("y", b"yy")]);
        let opts = CheckoutOptions {
            dry_run: true,
            delete: true,
            ..CheckoutOptions::default()
        };
        let err = plan(&m, &dest, &opts).unwrap_err();
        assert_eq!(err.code, Code::NotFound);
        assert!(!dest.exists());
        fs::create_dir_all(dest.join("old")).unwrap();
        fs::write(dest.join("y"), b"yy").unwrap();
        let p = plan(&m, &dest, &opts).unwrap();
        assert!(!dest.join(LOCK_NAME).exists());
        let preview = p.preview();
        assert_eq!(preview.writes, vec![("a/x".to_string(), 2)]);
        assert_eq!(preview.removes, vec!["old".to_string()]);
        assert_eq!(preview.mkdirs, 1);
        drop(p);
        let mut names: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["old", "y"]);
    }

    #[test]
    fn a_link_at_the_lock_name_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let dest = t.path().join("dest");
        let outside = t.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        fs::create_dir(&dest).unwrap();
        symlink(&outside, dest.join(LOCK_NAME)).unwrap();
        let m = store_with(&store, &[], &[("y", b"yy")]);
        let err = plan(&m, &dest, &CheckoutOptions::default()).unwrap_err();
        assert_eq!(err.code, Code::UnsafePath, "{}", err.message);
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn a_swapped_staging_directory_does_not_redirect_writes() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let dest = t.path().join("dest");
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let m = store_with(&store, &["a"], &[("a/x", b"x\n"), ("y", b"yy")]);
        let mut p = plan(&m, &dest, &CheckoutOptions::default()).unwrap();
        p.prepare().unwrap();
        let staging = p.staging.as_ref().unwrap().path.clone();
        fs::rename(&staging, dest.join("moved")).unwrap();
        symlink(&outside, &staging).unwrap();
        p.fill_from_store(&store).unwrap();
        p.commit().unwrap();
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "written outside"
        );
        assert_eq!(fs::read(dest.join("a/x")).unwrap(), b"x\n");
        assert_eq!(fs::read(dest.join("y")).unwrap(), b"yy");
    }

    #[test]
    fn a_staged_file_swapped_for_a_hard_link_is_never_committed() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let dest = t.path().join("dest");
        let outside = t.path().join("outside");
        fs::write(&outside, b"yy").unwrap();
        let m = store_with(&store, &[], &[("y", b"yy")]);
        let mut p = plan(&m, &dest, &CheckoutOptions::default()).unwrap();
        let f = p.open_staged(0).unwrap();
        drop(f);
        let staged = p.staged_path(0).unwrap();
        fs::remove_file(&staged).unwrap();
        fs::hard_link(&outside, &staged).unwrap();
        let err = p.commit().unwrap_err();
        assert_eq!(err.code, Code::UnsafePath, "{}", err.message);
        p.abort();
        assert_eq!(fs::read(&outside).unwrap(), b"yy");
        assert!(!dest.join("y").exists());
    }

    #[test]
    fn a_sub_directory_swapped_for_a_link_before_commit_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let dest = t.path().join("dest");
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::create_dir_all(dest.join("a")).unwrap();
        let m = store_with(&store, &["a"], &[("a/x", b"x\n")]);
        let mut p = plan(&m, &dest, &CheckoutOptions::default()).unwrap();
        p.fill_from_store(&store).unwrap();
        fs::rename(dest.join("a"), dest.join("a.moved")).unwrap();
        symlink(&outside, dest.join("a")).unwrap();
        let err = p.commit().unwrap_err();
        assert_eq!(err.code, Code::UnsafePath, "{}", err.message);
        p.abort();
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "written outside"
        );
    }

    #[test]
    fn deep_and_long_trees_check_out() {
        let _deep = crate::DEEP_TREE_TESTS
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let dest = t.path().join("dest");
        let depth = 3000;
        let mut dirs = Vec::new();
        let mut p = String::new();
        for _ in 0..depth {
            if !p.is_empty() {
                p.push('/');
            }
            p.push('d');
            dirs.push(p.clone());
        }
        let deep_file = format!("{p}/f");
        assert!(deep_file.len() > 4096);
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let m = store_with(&store, &refs, &[(&deep_file, b"deep\n"), ("top", b"top")]);
        let mut plan1 = plan(&m, &dest, &CheckoutOptions::default()).unwrap();
        plan1.fill_from_store(&store).unwrap();
        assert_eq!(plan1.commit().unwrap().files_written, 2);
        // Again: everything is found right (read through the bounded chain too).
        let mut plan2 = plan(&m, &dest, &CheckoutOptions::default()).unwrap();
        assert_eq!(plan2.counts(), (0, 2, 0));
        plan2.commit().unwrap();
        let mut d = Dir::open(&dest).unwrap();
        for _ in 0..depth {
            d = d.open_dir(b"d").unwrap();
        }
        let mut s = String::new();
        io::Read::read_to_string(&mut d.open_read(b"f").unwrap(), &mut s).unwrap();
        assert_eq!(s, "deep\n");
        remove_tree(&Dir::open(t.path()).unwrap(), b"dest").unwrap();
    }
}
