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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;
use regex::RegexSet;

use crate::error::{display_path, escape_bytes, Code, Error, Result};
use crate::fsx::Dir;
use crate::hash::{hash_opened_mapped, HashOutcome, Stamp};
use crate::manifest::{Digest, Entry, Kind, Manifest};
use crate::statcache::{self, DirStamp, Fresh, FreshChild, FreshDir, FsId, OldDir, Rec, StatCache};

/// Counters a caller may poll from another thread to draw progress.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Files whose checksum came from the stat cache (counted in `files` too), not read.
    pub reused: AtomicU64,
    /// Directories whose listing came from the stat cache (not read again).
    pub dirs_reused: AtomicU64,
    /// Files and bytes found so far by the counting walk [`walk_counted`] runs beside a
    /// long walk, and whether it has finished: then they are the walk's totals.
    pub found_files: AtomicU64,
    pub found_bytes: AtomicU64,
    pub found_done: AtomicBool,
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
    /// Where the gitignore-style rules of the walk are read from (see [`Ignore`]).
    pub ignore_file: IgnoreFile,
    /// More rules in the same syntax, after the ignore file's (so they take precedence).
    pub exclude_glob: Vec<String>,
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
    /// Only count the regular files and their bytes into `progress`'s `found_*`: nothing
    /// is read, hashed or kept, and nothing is warned about (see [`walk_counted`]).
    pub count_only: bool,
}

/// Something that reads the regular files of a walk instead of the plain hasher. It must
/// behave like [`hash_opened`] (same checks, same errors), with whatever else it does.
pub trait Ingest: std::fmt::Debug + Send + Sync {
    /// `reopen` opens the same file again, as `opened` was (relative to its directory).
    fn file(
        &self,
        opened: io::Result<fs::File>,
        path: &Path,
        no_follow: bool,
        reopen: &dyn Fn() -> io::Result<fs::File>,
    ) -> Result<HashOutcome>;
}

impl WalkOptions {
    /// Compiles `exclude` patterns, naming the one that does not compile (and saying so when
    /// it looks like a glob, which `exclude_glob` takes).
    pub fn compile_exclude(patterns: &[String]) -> Result<Option<RegexSet>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        for p in patterns {
            regex::Regex::new(p).map_err(|e| {
                let hint = if looks_like_glob(p) {
                    format!(
                        " ({p:?} looks like a glob: use --exclude-glob '{p}' \
                         (exclude_glob= in Python); --exclude takes a regular expression)"
                    )
                } else {
                    String::new()
                };
                Error::new(
                    Code::InvalidArgument,
                    format!("invalid exclude pattern {p:?}: {e}{hint}"),
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

/// A pattern that is not a regular expression but reads as a glob: one starting with `*`
/// or `?` (nothing to repeat), or holding `**`.
fn looks_like_glob(p: &str) -> bool {
    p.starts_with(['*', '?']) || p.contains("**") || p.contains("/*")
}

/// The name of the ignore file read at the root of a walked tree.
pub const IGNORE_FILE: &str = ".snapdirignore";

/// Where a walk reads its ignore rules from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IgnoreFile {
    /// [`IGNORE_FILE`] at the root of the tree, when there is one.
    #[default]
    Default,
    /// This file (an error when it does not exist).
    Path(PathBuf),
    /// None.
    Off,
}

/// Gitignore-style rules (negation, anchoring, `**`, directory-only patterns), matched
/// against `./`-relative paths inside our own walk. An ignored directory is not descended.
#[derive(Debug, Clone)]
pub struct Ignore {
    matcher: Gitignore,
    /// What the rules were made of (the file's content, the globs): part of the stat
    /// cache key, so that changed rules never reuse a listing walked with other ones.
    key: Vec<u8>,
    /// The rules come from the tree's own [`IGNORE_FILE`]: that file is always kept.
    own: bool,
}

impl Ignore {
    /// The rules of `file` (relative to `root` for [`IgnoreFile::Default`]) then `globs`;
    /// `None` when there are none.
    pub fn load(root: &Path, file: &IgnoreFile, globs: &[String]) -> Result<Option<Ignore>> {
        let (path, required) = match file {
            IgnoreFile::Default => (Some(root.join(IGNORE_FILE)), false),
            IgnoreFile::Path(p) => (Some(p.clone()), true),
            IgnoreFile::Off => (None, false),
        };
        let text = match &path {
            None => None,
            Some(p) => match fs::read(p) {
                Ok(t) => Some(t),
                Err(e)
                    if !required
                        && matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                        ) =>
                {
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::new(
                        Code::NotFound,
                        format!("no such ignore file: {}", display_path(p)),
                    ))
                }
                Err(e) => return Err(Error::io("cannot read ignore file", p, e)),
            },
        };
        Ignore::from_parts(
            text.as_deref().zip(path.as_deref()),
            globs,
            *file == IgnoreFile::Default,
        )
    }

    /// The rules of `file` (its content, and its path for messages), then `globs`.
    pub fn from_parts(
        file: Option<(&[u8], &Path)>,
        globs: &[String],
        own: bool,
    ) -> Result<Option<Ignore>> {
        let mut b = GitignoreBuilder::new(".");
        let mut key = Vec::new();
        if let Some((text, path)) = file {
            key.extend_from_slice(b"file\0");
            key.extend_from_slice(&(text.len() as u64).to_le_bytes());
            key.extend_from_slice(text);
            let text = String::from_utf8_lossy(text);
            for (n, line) in text.split('\n').enumerate() {
                let line = line.strip_suffix('\r').unwrap_or(line);
                b.add_line(Some(path.to_path_buf()), line).map_err(|e| {
                    Error::new(
                        Code::InvalidArgument,
                        format!(
                            "invalid pattern on line {} of ignore file {}: {}",
                            n + 1,
                            display_path(path),
                            glob_error(&e)
                        ),
                    )
                })?;
            }
        }
        for g in globs {
            key.extend_from_slice(b"glob\0");
            key.extend_from_slice(&(g.len() as u64).to_le_bytes());
            key.extend_from_slice(g.as_bytes());
            b.add_line(None, g).map_err(|e| {
                Error::new(
                    Code::InvalidArgument,
                    format!("invalid exclude glob {g:?}: {}", glob_error(&e)),
                )
            })?;
        }
        let matcher = b.build().map_err(|e| {
            Error::new(
                Code::InvalidArgument,
                format!("invalid ignore rules: {}", glob_error(&e)),
            )
        })?;
        if matcher.is_empty() {
            return Ok(None);
        }
        Ok(Some(Ignore { matcher, key, own }))
    }

    /// Whether the rules leave out `rel` (`./`-relative, a directory's ending in `/` or not).
    pub fn is_ignored(&self, rel: &str, is_dir: bool) -> bool {
        let r = rel.strip_prefix("./").unwrap_or(rel).trim_end_matches('/');
        if r.is_empty() || (self.own && r == IGNORE_FILE) {
            return false;
        }
        self.matcher.matched(r, is_dir).is_ignore()
    }

    /// What the rules were made of (for cache keys).
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

/// An `ignore` error without the file and line it already names in its own way.
fn glob_error(e: &ignore::Error) -> String {
    let mut e = e;
    loop {
        match e {
            ignore::Error::WithPath { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                e = err
            }
            _ => return e.to_string(),
        }
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

/// Directories less deep than this fork one walk per sub-directory (in parallel, each on the
/// stack of the thread running it); deeper ones are walked by an explicit stack. Real trees
/// are rarely deeper, so they keep all their parallelism; a deeper one costs no stack.
const FORK_DEPTH: usize = 32;
/// Directories one explicit-stack walk keeps open; deeper ancestors are closed and reopened
/// through `..` when the walk climbs back (so 100,000 levels need no 100,000 descriptors).
const WINDOW: usize = 16;
/// The longest path (in bytes, `./` included) an entry may have in a manifest: eight times
/// `PATH_MAX`, about Windows' long-path limit. It bounds the manifest of a pathological chain
/// (one entry per level, each as long as its depth: a 100,000-level chain would be a 10 GB
/// manifest) while deep real trees fit with room to spare.
pub const MAX_PATH_BYTES: usize = 32 * 1024;

/// How the walk uses stack and descriptors (the constants above; tests vary them to drive
/// every level through one mechanism or the other).
#[derive(Debug, Clone, Copy)]
struct Tuning {
    fork_depth: usize,
    window: usize,
}

const TUNING: Tuning = Tuning {
    fork_depth: FORK_DEPTH,
    window: WINDOW,
};

struct Ctx<'a> {
    opts: &'a WalkOptions,
    /// The ignore rules of the walk (file and globs), if any.
    ignore: Option<Ignore>,
    /// The directory walked, as given (errors name paths below it).
    root: &'a Path,
    tuning: Tuning,
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
    /// Directory descriptors the walk holds now, and how many it may hold before every
    /// explicit-stack walk closes all but its current directory.
    open_dirs: AtomicUsize,
    dir_budget: usize,
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

    /// The path of `rel` (a `./`-relative manifest path) below the root, for messages.
    fn path_of(&self, rel: &str) -> PathBuf {
        let r = rel.strip_prefix("./").unwrap_or(rel).trim_end_matches('/');
        if r.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(r)
        }
    }

    fn warn(&self, message: String) {
        if self.opts.count_only {
            return; // the walk it counts for says it
        }
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }
}

/// A directory descriptor counted in [`Ctx::open_dirs`] while it is open.
struct Held<'c> {
    dir: Dir,
    count: &'c AtomicUsize,
}

impl<'c> Held<'c> {
    fn new(dir: Dir, count: &'c AtomicUsize) -> Held<'c> {
        count.fetch_add(1, Ordering::Relaxed);
        Held { dir, count }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many directory descriptors a walk may hold: a quarter of the soft `RLIMIT_NOFILE`
/// (the rest is for the files being hashed, the store and the embedding program).
fn dir_budget() -> usize {
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 256;
    }
    let soft = if rl.rlim_cur == libc::RLIM_INFINITY {
        1 << 20
    } else {
        rl.rlim_cur as u64
    };
    (soft / 4).clamp(8, 4096) as usize
}

struct Summary {
    checksum: Digest,
    size: u64,
    /// Same checksum and size as the cache remembers for this directory.
    same: bool,
}

/// Walks `root` into a manifest.
pub fn walk(root: &Path, opts: &WalkOptions) -> Result<Walked> {
    walk_tuned(root, opts, TUNING)
}

/// How long a walk runs before [`walk_counted`] starts counting beside it: a walk that
/// ends sooner needs no total. `SNAPDIR_PROGRESS_COUNT_AFTER` (seconds, 0 or more) sets
/// another.
const COUNT_AFTER: Duration = Duration::from_secs(1);

fn count_after() -> Duration {
    std::env::var("SNAPDIR_PROGRESS_COUNT_AFTER")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(COUNT_AFTER, Duration::from_secs_f64)
}

/// [`walk`], and, when it has `progress` and is still running after [`count_after`] mostly
/// reading files (not vouched for by the stat cache), a second walk beside it with the
/// same rules that only `stat`s (`count_only`), so that a progress bar gets its totals
/// (`found_*`, `found_done`) long before the walk ends — as restic's scanner does. The
/// counting walk is stopped when the walk ends, and any error of its own is ignored (the
/// bar then has no total, as before).
pub fn walk_counted(root: &Path, opts: &WalkOptions) -> Result<Walked> {
    let Some(progress) = opts.progress.clone().filter(|_| !opts.count_only) else {
        return walk(root, opts);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let scan = WalkOptions {
        count_only: true,
        stat_cache: None,
        rehash: false,
        ingest: None,
        absolute: false,
        cancel: Some(stop.clone()),
        progress: Some(progress.clone()),
        ..opts.clone()
    };
    let tree = root.to_path_buf();
    let stopped = stop.clone();
    let after = count_after();
    let counter = std::thread::Builder::new()
        .name("snapdir-count".into())
        .spawn(move || {
            let start = Instant::now();
            while start.elapsed() < after {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // A walk the stat cache carries is itself as fast as counting would be.
            let files = progress.files.load(Ordering::Relaxed);
            if progress.reused.load(Ordering::Relaxed) * 2 > files {
                return;
            }
            // One directory at a time, with few descriptors, on a thread pool of its own:
            // the walk it counts for keeps its budget of descriptors (a low `ulimit -n` is
            // its to spend) and of the shared pool, whose queue its hashing fills.
            let light = Tuning {
                fork_depth: 0,
                window: 4,
            };
            let Ok(pool) = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "snapdir-count".into())
                .build()
            else {
                return;
            };
            let counted = pool.install(|| walk_tuned(&tree, &scan, light));
            if counted.is_ok() && !stopped.load(Ordering::Relaxed) {
                progress.found_done.store(true, Ordering::Relaxed);
            }
        });
    let out = walk(root, opts);
    stop.store(true, Ordering::Relaxed);
    if let Ok(h) = counter {
        let _ = h.join();
    }
    out
}

fn walk_tuned(root: &Path, opts: &WalkOptions, tuning: Tuning) -> Result<Walked> {
    // Opened first and `fstat`ed: a root path longer than `PATH_MAX` is opened in pieces.
    let dir = Dir::open(root).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::new(
            Code::NotFound,
            format!("no such directory: {}", display_path(root)),
        ),
        Some(libc::ENOTDIR) => Error::new(
            Code::InvalidArgument,
            format!("not a directory: {}", display_path(root)),
        ),
        _ => open_error("cannot read", root, e),
    })?;
    let root_st = dir.stat().map_err(|e| Error::io("cannot stat", root, e))?;
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
    // The stat cache is keyed by the canonical root and the options that change the walk;
    // a root that cannot be resolved is walked without it.
    let start_ns = statcache::now_ns();
    let ignore = Ignore::load(root, &opts.ignore_file, &opts.exclude_glob)?;
    let cache_at = opts.stat_cache.as_ref().and_then(|dir| {
        let real = fs::canonicalize(root).ok()?;
        let patterns = opts.exclude.as_ref().map(|s| s.patterns()).unwrap_or(&[]);
        let rules = ignore.as_ref().map_or(&[][..], |i| i.key());
        let file = statcache::cache_file(dir, &real, opts.no_follow, patterns, rules);
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
        ignore,
        root,
        tuning,
        entries: Mutex::new(Vec::new()),
        warnings: Mutex::new(warnings),
        cache: loaded.as_ref(),
        collect: cache_at.is_some(),
        fresh: Mutex::new(Vec::new()),
        start_ns,
        devs: Mutex::new(Vec::new()),
        open_dirs: AtomicUsize::new(0),
        dir_budget: dir_budget(),
    };
    let held = Held::new(dir, &ctx.open_dirs);
    let root_summary = walk_dir(&ctx, held, "./".to_owned(), &root_st, 0, &[])?;
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
        mode: root_st.st_mode as u32 & 0o7777,
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

/// An error opening something: running out of descriptors is said as such (with what to do
/// about it), never mistaken for anything about the path itself.
fn open_error(what: &str, path: &Path, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => Error {
            code: Code::Io,
            message: format!(
                "{what} {}: {e}: out of file descriptors (raise the limit, e.g. `ulimit -n`)",
                display_path(path)
            ),
            errno: e.raw_os_error(),
        },
        _ => Error::io(what, path, e),
    }
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
    /// A sub-directory the explicit stack still has to walk: its manifest path and whether
    /// it is reached through a symbolic link. Replaced by `Dir` once walked.
    Descend(String, bool),
    Skipped,
}

/// One entry of a listing: its name, `d_type`, and what the stat cache remembers of it.
struct Listed {
    name: Vec<u8>,
    dtype: u8,
    /// The stat cache's record of the file, if it had one.
    old: Option<Rec>,
}

/// A directory on the explicit stack: listed, its files hashed, its sub-directories walked
/// one after the other.
struct Frame<'c> {
    /// `None` once closed to stay within the window (reopened through `..` when needed).
    dir: Option<Held<'c>>,
    /// Device and inode: what a reopened descriptor must be.
    id: (u64, u64),
    /// Entered through a symbolic link: its `..` is not the directory it was found in.
    via_link: bool,
    /// Its name in its parent (to reopen it by name when `..` cannot be used).
    name: Vec<u8>,
    rel: String,
    mode: u32,
    stamp: DirStamp,
    old: Option<OldDir>,
    listed: Vec<Listed>,
    children: Vec<Child>,
    /// Indexes into `children` of the sub-directories still to walk.
    descents: Vec<usize>,
    /// Index of this directory in its parent's `children`.
    slot: usize,
    depth: usize,
}

impl Frame<'_> {
    fn dir(&self) -> &Dir {
        &self
            .dir
            .as_ref()
            .expect("the current directory is open")
            .dir
    }
}

/// Walks the directory `dir` (manifest path `rel`, `depth` levels below the root) and
/// everything below it; `chain` holds the (device, inode) of its ancestors, for the loop
/// check of followed links. Returns its checksum and size; its own entry is the caller's.
fn walk_dir<'a, 'c>(
    ctx: &'c Ctx<'a>,
    dir: Held<'c>,
    rel: String,
    st: &libc::stat,
    depth: usize,
    chain: &[(u64, u64)],
) -> Result<Summary> {
    let top = list_dir(ctx, dir, rel, st, depth, false, Vec::new(), 0, chain, &[])?;
    let mut stack: Vec<Frame<'c>> = vec![top];
    loop {
        let k = stack.len() - 1;
        if let Some(slot) = stack[k].descents.pop() {
            let Child::Descend(sub_rel, via_link) =
                std::mem::replace(&mut stack[k].children[slot], Child::Skipped)
            else {
                unreachable!("descents index sub-directories")
            };
            let name = stack[k].listed[slot].name.to_vec();
            let (sub, sub_st) = open_sub(ctx, stack[k].dir(), &name, via_link, &sub_rel)?;
            let id = (sub_st.st_dev as u64, sub_st.st_ino as u64);
            if via_link && (chain.contains(&id) || stack.iter().any(|f| f.id == id)) {
                return Err(link_loop(&ctx.path_of(&sub_rel)));
            }
            let depth = stack[k].depth + 1;
            let frame = list_dir(
                ctx, sub, sub_rel, &sub_st, depth, via_link, name, slot, chain, &stack,
            )?;
            stack.push(frame);
            close_beyond_window(ctx, &mut stack);
            #[cfg(test)]
            tests::hooks::pushed(
                ctx.root,
                &stack[stack.len() - 1].rel,
                ctx.open_dirs.load(Ordering::Relaxed),
            );
            continue;
        }
        // Every sub-directory of the top one is walked: it is complete.
        let frame = stack.pop().expect("the stack is not empty");
        if stack.last().is_some_and(|p| p.dir.is_none()) {
            reopen_parent(ctx, &mut stack, &frame)?;
        }
        let (slot, mode) = (frame.slot, frame.mode);
        let (summary, rel) = finish_dir(ctx, frame)?;
        let Some(parent) = stack.last_mut() else {
            return Ok(summary);
        };
        parent.children[slot] = Child::Dir(summary.checksum, summary.size, summary.same);
        push_entry(
            ctx,
            Kind::Directory,
            mode,
            summary.checksum,
            summary.size,
            rel,
        );
    }
}

/// Closes the oldest descriptors of the stack beyond the window (all but the current
/// directory's when the whole walk holds more than its budget). The bottom one belongs to
/// the caller of [`walk_dir`] and stays open. The open frames are always the top of the
/// stack (frames are closed from below and reopened only at the top), so this looks at no
/// more than the window and the frames it closes, whatever the depth.
fn close_beyond_window(ctx: &Ctx<'_>, stack: &mut [Frame<'_>]) {
    let mut open = 0;
    for f in stack[1..].iter_mut().rev() {
        if f.dir.is_none() {
            break;
        }
        open += 1;
        let over = open > ctx.tuning.window.max(1)
            || (open > 1 && ctx.open_dirs.load(Ordering::Relaxed) > ctx.dir_budget);
        if over {
            f.dir = None;
        }
    }
}

/// Reopens the top of `stack`, whose descriptor was closed, from its just-finished child
/// `child` (still open): `openat(child, "..")` and a check that it is the directory left
/// (device and inode), as GNU fts does; another directory there means the tree moved while
/// it was read (`IN_FLUX`). A child entered through a link has another `..`: the parent is
/// then reopened by name from the nearest ancestor still open, every step checked alike.
fn reopen_parent<'c>(ctx: &'c Ctx<'_>, stack: &mut [Frame<'c>], child: &Frame<'c>) -> Result<()> {
    let p = stack.len() - 1;
    let moved = |rel: &str| {
        Error::in_flux(
            &ctx.path_of(rel),
            "it was moved while its sub-directories were read",
        )
    };
    let checked = |dir: Dir, frame: &Frame<'c>| -> Result<Held<'c>> {
        let st = dir
            .stat()
            .map_err(|e| Error::io("cannot stat", &ctx.path_of(&frame.rel), e))?;
        if (st.st_dev as u64, st.st_ino as u64) != frame.id {
            return Err(moved(&frame.rel));
        }
        Ok(Held::new(dir, &ctx.open_dirs))
    };
    if !child.via_link {
        let up = child
            .dir()
            .open_parent()
            .map_err(|e| open_error("cannot reopen", &ctx.path_of(&stack[p].rel), e))?;
        stack[p].dir = Some(checked(up, &stack[p])?);
        return Ok(());
    }
    // The bottom of the stack is never closed.
    let open = (0..p).rev().find(|&j| stack[j].dir.is_some()).unwrap_or(0);
    for m in open + 1..=p {
        let (above, below) = stack.split_at_mut(m);
        let f = &mut below[0];
        let dir = above[m - 1]
            .dir()
            .open_dir_at(&f.name, f.via_link)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => moved(&f.rel),
                _ => open_error("cannot reopen", &ctx.path_of(&f.rel), e),
            })?;
        f.dir = Some(checked(dir, f)?);
    }
    close_beyond_window(ctx, stack);
    Ok(())
}

/// Opens the sub-directory `name` of `dir` (manifest path `rel`) and `fstat`s it.
fn open_sub<'c>(
    ctx: &'c Ctx<'_>,
    dir: &Dir,
    name: &[u8],
    via_link: bool,
    rel: &str,
) -> Result<(Held<'c>, libc::stat)> {
    let sub = dir
        .open_dir_at(name, via_link)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::in_flux(&ctx.path_of(rel), "it vanished"),
            Some(libc::ENOTDIR) | Some(libc::ELOOP) => {
                Error::in_flux(&ctx.path_of(rel), "it is no longer a directory")
            }
            _ => open_error("cannot open", &ctx.path_of(rel), e),
        })?;
    let st = sub
        .stat()
        .map_err(|e| Error::io("cannot stat", &ctx.path_of(rel), e))?;
    Ok((Held::new(sub, &ctx.open_dirs), st))
}

fn link_loop(path: &Path) -> Error {
    Error::new(
        Code::InvalidArgument,
        format!(
            "symbolic link loop: {} points to a directory that contains it",
            display_path(path)
        ),
    )
}

/// Lists the open directory `dir` and visits its entries in parallel: files are hashed,
/// sub-directories walked (forked while shallow, else left to the explicit stack as
/// `Child::Descend`). `stack` holds the explicit-stack ancestors (for the loop check).
#[allow(clippy::too_many_arguments)]
fn list_dir<'a, 'c>(
    ctx: &'c Ctx<'a>,
    dir: Held<'c>,
    rel: String,
    st: &libc::stat,
    depth: usize,
    via_link: bool,
    name: Vec<u8>,
    slot: usize,
    chain: &[(u64, u64)],
    stack: &[Frame<'c>],
) -> Result<Frame<'c>> {
    check_cancel(ctx, &rel)?;
    let id = (st.st_dev as u64, st.st_ino as u64);
    // A directory whose own stamp is unchanged (and was settled) has the entries the cache
    // remembers: they are not read again. Each entry is still visited (`fstatat`).
    let stamp = DirStamp::of(st);
    // (Also with `rehash`: the next cache file must name the file systems it was taken on.)
    let (records_ok, listing_ok) = if ctx.collect {
        ctx.dev_trust(stamp.dev, &dir.dir)
    } else {
        (false, false)
    };
    let old = ctx.cache.filter(|_| records_ok).and_then(|c| c.dir(&rel));
    let reuse = old
        .as_ref()
        .filter(|o| listing_ok && o.listing_valid_for(&stamp));
    if let (Some(_), Some(p)) = (reuse, &ctx.opts.progress) {
        p.dirs_reused.fetch_add(1, Ordering::Relaxed);
    }
    let listed: Vec<Listed> = match reuse {
        Some(o) => (0..o.len())
            .map(|k| {
                let c = o.child(k);
                Listed {
                    name: c.name().to_vec(),
                    dtype: c.dtype(),
                    old: c.rec(),
                }
            })
            .collect(),
        None => {
            let mut l = dir.dir.list_typed().map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => Error::in_flux(&ctx.path_of(&rel), "it vanished"),
                _ => open_error("cannot list", &ctx.path_of(&rel), e),
            })?;
            if ctx.collect {
                l.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
            l.into_iter()
                .map(|(n, t)| {
                    let old = old.as_ref().and_then(|o| o.find(&n)).and_then(|c| c.rec());
                    Listed {
                        name: n,
                        dtype: t,
                        old,
                    }
                })
                .collect()
        }
    };
    // Forked walks below check links against this directory and its ancestors (few: only
    // shallow directories fork).
    let fork = depth + 1 < ctx.tuning.fork_depth;
    let mut own_chain = Vec::new();
    if fork {
        own_chain.reserve(chain.len() + stack.len() + 1);
        own_chain.extend_from_slice(chain);
        own_chain.extend(stack.iter().map(|f| f.id));
        own_chain.push(id);
    }
    let here = Here {
        dir: &dir.dir,
        rel: &rel,
        depth,
        fork,
        chain: &own_chain,
    };
    let children: Vec<Child> = listed
        .par_iter()
        .map(|l| visit(ctx, &here, &l.name, l.dtype, l.old))
        .collect::<Result<_>>()?;
    let descents: Vec<usize> = children
        .iter()
        .enumerate()
        .rev()
        .filter_map(|(k, c)| matches!(c, Child::Descend(..)).then_some(k))
        .collect();
    Ok(Frame {
        dir: Some(dir),
        id,
        via_link,
        name,
        rel,
        mode: st.st_mode as u32,
        stamp,
        old,
        listed,
        children,
        descents,
        slot,
        depth,
    })
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

/// Combines a directory's children (all walked) into its checksum and size; queues its
/// files' entries and its stat cache record. Returns its summary and manifest path.
fn finish_dir(ctx: &Ctx<'_>, frame: Frame<'_>) -> Result<(Summary, String)> {
    let Frame {
        listed,
        children,
        old,
        rel,
        stamp,
        ..
    } = frame;
    let mut sums = Vec::with_capacity(children.len());
    let mut size = 0u64;
    let mut files = Vec::new();
    let mut all_same = true;
    let mut n_contrib = 0u64;
    let mut kids = Vec::with_capacity(if ctx.collect { listed.len() } else { 0 });
    for (l, c) in listed.iter().zip(children) {
        let mut rec = None;
        match c {
            Child::File(e, r, same) => {
                sums.push(e.checksum);
                size = add_size(size, e.size, &ctx.path_of(&rel))?;
                all_same &= same;
                n_contrib += 1;
                rec = r;
                files.push(e);
            }
            Child::Dir(d, s, same) => {
                sums.push(d);
                size = add_size(size, s, &ctx.path_of(&rel))?;
                all_same &= same;
                n_contrib += 1;
            }
            Child::Descend(..) => unreachable!("every sub-directory is walked first"),
            Child::Skipped => {}
        }
        if ctx.collect {
            kids.push(FreshChild {
                name: &l.name,
                dtype: l.dtype,
                rec,
            });
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
    let checksum = match &old {
        Some(o) if all_same && o.n_contrib() == n_contrib && o.size() == size => o.digest(),
        _ => dir_checksum(&mut sums),
    };
    if ctx.collect {
        let fresh = FreshDir {
            rel: &rel,
            stamp,
            digest: checksum,
            size,
            n_contrib,
            children: kids,
        }
        .finish(old.as_ref(), ctx.start_ns);
        ctx.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fresh);
    }
    let summary = Summary {
        checksum,
        size,
        same: old
            .as_ref()
            .is_some_and(|o| o.digest() == checksum && o.size() == size),
    };
    Ok((summary, rel))
}

/// The directory whose entries [`visit`] looks at.
struct Here<'h> {
    dir: &'h Dir,
    rel: &'h str,
    depth: usize,
    /// Walk sub-directories right away (forked) rather than leave them to the stack.
    fork: bool,
    /// With `fork`: (device, inode) of this directory and all its ancestors.
    chain: &'h [(u64, u64)],
}

fn is_type(mode: libc::mode_t, t: libc::mode_t) -> bool {
    mode & libc::S_IFMT == t
}

/// What a `d_type` or `st_mode` that is neither file, directory nor link is called in a
/// warning.
fn special_kind(dtype: u8) -> &'static str {
    match dtype {
        libc::DT_FIFO => "FIFO",
        libc::DT_SOCK => "socket",
        libc::DT_CHR => "character device",
        libc::DT_BLK => "block device",
        _ => "special file",
    }
}

fn dtype_of(mode: libc::mode_t) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        _ => libc::DT_UNKNOWN,
    }
}

/// A path for a message that may be far longer than a screen: its start and its end.
fn shortened(path: &Path) -> String {
    let full = display_path(path);
    const KEEP: usize = 200;
    if full.len() <= 2 * KEEP + 16 {
        return full;
    }
    let mut head = KEEP;
    while !full.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = full.len() - KEEP;
    while !full.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}...{}", &full[..head], &full[tail..])
}

fn visit(
    ctx: &Ctx<'_>,
    here: &Here<'_>,
    name: &[u8],
    dtype: u8,
    old_rec: Option<Rec>,
) -> Result<Child> {
    let opts = ctx.opts;
    let dir = here.dir;
    // Only for messages: the root joined with the (valid) directory path and the raw name.
    let path = || {
        ctx.path_of(here.rel)
            .join(std::ffi::OsStr::from_bytes(name))
    };
    let vanished = |e: io::Error, what: &str| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::in_flux(&path(), "it vanished"),
        _ => open_error(what, &path(), e),
    };
    let mut dtype = dtype;
    // A `stat` already made of the entry (following a link when it is one followed).
    let mut known: Option<libc::stat> = None;
    if dtype == libc::DT_UNKNOWN {
        let st = dir
            .stat_at(name, false)
            .map_err(|e| vanished(e, "cannot stat"))?;
        known = Some(st);
        dtype = dtype_of(st.st_mode);
    }
    // Decide what the entry is, following a symlink when asked to. `special`: what a FIFO,
    // socket or device (or a followed link to one) is called: not content a snapshot can
    // hold, skipped with a warning.
    let mut special: Option<String> = None;
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
                Ok(st) => {
                    special = Some(format!(
                        "symbolic link to a {}",
                        special_kind(dtype_of(st.st_mode))
                    ));
                    (false, true)
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(Error::new(
                        Code::InvalidArgument,
                        format!("symbolic link loop at {}", display_path(&path())),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    ctx.warn(format!(
                        "skipping dangling symbolic link {}",
                        display_path(&path())
                    ));
                    return Ok(Child::Skipped);
                }
                Err(e) => return Err(open_error("cannot follow symbolic link", &path(), e)),
            }
        }
        other => {
            special = Some(special_kind(other).to_owned());
            (false, false)
        }
    };

    let valid = std::str::from_utf8(name)
        .ok()
        .filter(|s| !s.contains(['\n', '\r']));
    let shown = match valid {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => String::from_utf8_lossy(name),
    };
    let mut rel = String::with_capacity(here.rel.len() + shown.len() + 1);
    rel.push_str(here.rel);
    rel.push_str(&shown);
    if is_dir {
        rel.push('/');
    }
    if let Some(set) = &opts.exclude {
        if set.is_match(&rel) {
            return Ok(Child::Skipped);
        }
    }
    if let Some(ignore) = &ctx.ignore {
        if ignore.is_ignored(&rel, is_dir) {
            return Ok(Child::Skipped);
        }
    }
    if let Some(kind) = special {
        ctx.warn(format!(
            "skipping {kind} {} (a snapshot holds only files and directories)",
            escape_bytes(path().as_os_str().as_bytes())
        ));
        return Ok(Child::Skipped);
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
    if rel.len() > MAX_PATH_BYTES {
        return Err(Error::new(
            Code::InvalidArgument,
            format!(
                "cannot snapshot {}: its path in the snapshot would be {} bytes long \
                 ({} levels deep), more than the {MAX_PATH_BYTES} a snapshot path may have \
                 (exclude it or move it higher up)",
                shortened(&path()),
                rel.len(),
                here.depth + 1
            ),
        ));
    }

    if is_dir {
        if !here.fork {
            return Ok(Child::Descend(rel, via_link));
        }
        let (sub, st) = open_sub(ctx, dir, name, via_link, &rel)?;
        let id = (st.st_dev as u64, st.st_ino as u64);
        if via_link && here.chain.contains(&id) {
            return Err(link_loop(&path()));
        }
        let s = walk_dir(ctx, sub, rel.clone(), &st, here.depth + 1, here.chain)?;
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
        check_cancel(ctx, here.rel)?;
        if opts.count_only {
            let st = match known {
                Some(st) => Some(st),
                None => dir.stat_at(name, via_link).ok(),
            };
            if let (Some(st), Some(p)) = (st, &opts.progress) {
                if is_type(st.st_mode, libc::S_IFREG) {
                    p.found_files.fetch_add(1, Ordering::Relaxed);
                    p.found_bytes
                        .fetch_add(st.st_size as u64, Ordering::Relaxed);
                }
            }
            return Ok(Child::Skipped);
        }
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
        let open = || match dir.open_file_at(name, follow) {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) && !opts.no_follow => {
                dir.open_file_at(name, true)
            }
            other => other,
        };
        let outcome = match &opts.ingest {
            Some(ingest) => ingest.file(open(), &path(), opts.no_follow, &open)?,
            None => hash_opened_mapped(open(), &path(), opts.no_follow)?,
        };
        match outcome {
            HashOutcome::NotRegular => {
                // Listed as a file, something else when opened (replaced meanwhile).
                ctx.warn(format!(
                    "skipping {}: not a regular file when it was opened",
                    escape_bytes(path().as_os_str().as_bytes())
                ));
                Ok(Child::Skipped)
            }
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
    if ctx.opts.count_only {
        return;
    }
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

fn check_cancel(ctx: &Ctx<'_>, rel: &str) -> Result<()> {
    if let Some(c) = &ctx.opts.cancel {
        if c.load(Ordering::Relaxed) {
            return Err(Error::new(
                Code::Io,
                format!("interrupted while reading {}", shortened(&ctx.path_of(rel))),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Test-only callbacks run by the explicit stack, per walked root.
    pub(super) mod hooks {
        use std::path::{Path, PathBuf};
        use std::sync::Mutex;

        type Hook = Box<dyn Fn(&str, usize) + Send>;
        static PUSHED: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

        /// Runs `f(rel, open)` whenever a walk of `root` pushes a directory on its stack
        /// (`open`: directory descriptors the walk holds then).
        pub fn on_push(root: &Path, f: impl Fn(&str, usize) + Send + 'static) {
            PUSHED
                .lock()
                .unwrap()
                .push((root.to_path_buf(), Box::new(f)));
        }

        pub fn pushed(root: &Path, rel: &str, open: usize) {
            for (r, f) in PUSHED.lock().unwrap().iter() {
                if r == root {
                    f(rel, open);
                }
            }
        }
    }

    #[test]
    fn a_counting_walk_counts_every_file_with_every_tuning() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..5 {
            let sub = dir.path().join(format!("d{d}")).join("e");
            fs::create_dir_all(&sub).unwrap();
            for f in 0..7 {
                fs::write(sub.join(format!("f{f}")), vec![b'x'; f + 1]).unwrap();
            }
        }
        fs::write(dir.path().join("top"), b"1234").unwrap();
        for tuning in TUNINGS {
            let p = Arc::new(Progress::default());
            let opts = WalkOptions {
                count_only: true,
                progress: Some(p.clone()),
                ..Default::default()
            };
            let walked = walk_tuned(dir.path(), &opts, tuning);
            assert!(walked.is_ok(), "{tuning:?}: {:?}", walked.err());
            assert_eq!(p.found_files.load(Ordering::Relaxed), 36, "{tuning:?}");
            assert_eq!(
                p.found_bytes.load(Ordering::Relaxed),
                5 * 28 + 4,
                "{tuning:?}"
            );
            assert_eq!(p.files.load(Ordering::Relaxed), 0);
        }
    }

    /// Every way of walking: forks only, the explicit stack from the root on with one
    /// descriptor, and mixtures.
    const TUNINGS: [Tuning; 4] = [
        TUNING,
        Tuning {
            fork_depth: 0,
            window: 1,
        },
        Tuning {
            fork_depth: 2,
            window: 2,
        },
        Tuning {
            fork_depth: 1,
            window: 3,
        },
    ];

    /// `depth` nested directories `name` under `root`, with a file `f` holding its level in
    /// each, made through descriptors (the deep paths exceed `PATH_MAX`).
    fn chain(root: &Path, depth: usize, name: &[u8]) {
        let mut dir = Dir::open(root).unwrap();
        for k in 0..depth {
            write!(dir.create_new(b"f", 0o644).unwrap(), "{k}").unwrap();
            dir.mkdir(name, 0o755).unwrap();
            dir = dir.open_dir(name).unwrap();
        }
    }

    /// The manifest entries of [`chain`], computed bottom-up without walking.
    fn chain_entries(depth: usize, name: &str) -> Vec<(String, Digest, u64)> {
        let mut out = Vec::new();
        let mut below = (*blake3::hash(b"").as_bytes(), 0u64);
        for k in (0..depth).rev() {
            let rel = format!("./{}", format!("{name}/").repeat(k));
            let content = k.to_string();
            let f = *blake3::hash(content.as_bytes()).as_bytes();
            out.push((format!("{rel}{name}/"), below.0, below.1));
            out.push((format!("{rel}f"), f, content.len() as u64));
            below = (
                dir_checksum(&mut vec![f, below.0]),
                below.1 + content.len() as u64,
            );
        }
        out.push(("./".to_owned(), below.0, below.1));
        out.sort();
        out
    }

    fn triples(m: &Manifest) -> Vec<(String, Digest, u64)> {
        let mut v: Vec<_> = m
            .entries()
            .iter()
            .map(|e| (e.path.to_owned(), e.checksum, e.size))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_chain_deeper_than_the_stack_and_path_max_is_walked() {
        let _deep = crate::DEEP_TREE_TESTS
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // 3,000 levels: the recursive walk this replaced overflowed a test thread's stack
        // well before, and the deepest paths (6,000 bytes) exceed PATH_MAX.
        let dir = tempfile::tempdir().unwrap();
        chain(dir.path(), 3000, b"d");
        let expected = chain_entries(3000, "d");
        for tuning in TUNINGS {
            let w = walk_tuned(dir.path(), &WalkOptions::default(), tuning).unwrap();
            assert_eq!(triples(&w.manifest), expected, "{tuning:?}");
        }
    }

    /// Files, empty directories, links to files and to directories (one deep below a closed
    /// window, so climbing back from it reopens its parent by name), at several depths.
    fn bushy(root: &Path) {
        for d in [
            "a/b/c/d/e",
            "a/b/x",
            "a/y/z/w",
            "t/u/v",
            "empty",
            "q/empty2",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for (k, f) in [
            "top.txt",
            "a/1",
            "a/b/2",
            "a/b/c/3",
            "a/b/c/d/4",
            "a/b/c/d/e/5",
            "a/b/x/6",
            "a/y/z/w/7",
            "t/u/v/8",
            "t/9",
        ]
        .iter()
        .enumerate()
        {
            fs::write(root.join(f), format!("{k} {f}\n")).unwrap();
        }
        std::os::unix::fs::symlink("../../../../t", root.join("a/b/c/d/lt")).unwrap();
        std::os::unix::fs::symlink("../top.txt", root.join("q/lf")).unwrap();
    }

    #[test]
    fn every_mixture_of_forks_and_stack_gives_the_same_manifest_with_and_without_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        bushy(&root);
        let reference = walk_tuned(&root, &WalkOptions::default(), TUNING).unwrap();
        assert!(reference
            .manifest
            .entries()
            .iter()
            .any(|e| e.path == "./a/b/c/d/lt/u/v/8"));
        for (k, tuning) in TUNINGS.into_iter().enumerate() {
            let plain = walk_tuned(&root, &WalkOptions::default(), tuning).unwrap();
            assert_eq!(plain.manifest, reference.manifest, "{tuning:?}");
            // With a stat cache: written by the first walk, reused by the second.
            let opts = WalkOptions {
                stat_cache: Some(dir.path().join(format!("cache{k}"))),
                progress: Some(Arc::new(Progress::default())),
                ..WalkOptions::default()
            };
            for _ in 0..2 {
                let cached = walk_tuned(&root, &opts, tuning).unwrap();
                assert_eq!(cached.manifest, reference.manifest, "{tuning:?}");
            }
        }
    }

    #[test]
    fn a_link_loop_is_an_error_however_the_levels_are_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::os::unix::fs::symlink("../../../a", root.join("a/b/c/up")).unwrap();
        for tuning in TUNINGS {
            let err = walk_tuned(&root, &WalkOptions::default(), tuning).unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument, "{tuning:?}: {err}");
            assert!(err.message.contains("symbolic link loop"), "{err}");
            assert!(err.message.contains("a/b/c/up\""), "{err}");
        }
    }

    #[test]
    fn a_directory_moved_while_its_closed_parent_waits_is_in_flux() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("a/b/c/d/e/f")).unwrap();
        fs::write(root.join("a/b/c/d/e/f/x"), b"x").unwrap();
        let tuning = Tuning {
            fork_depth: 0,
            window: 2,
        };
        // Unmoved, it walks.
        walk_tuned(&root, &WalkOptions::default(), tuning).unwrap();
        // While `e` is read, `d` (open) is moved elsewhere: climbing back from `d` to `c`
        // (closed, beyond the window) through `..` lands in the root instead.
        let r = root.clone();
        hooks::on_push(&root, move |rel, _| {
            if rel == "./a/b/c/d/e/" {
                fs::rename(r.join("a/b/c/d"), r.join("moved")).unwrap();
            }
        });
        let err = walk_tuned(&root, &WalkOptions::default(), tuning).unwrap_err();
        assert_eq!(err.code, Code::InFlux, "{err}");
        assert!(err.message.contains("tree/a/b/c\""), "{err}");
    }

    #[test]
    fn the_walk_holds_a_bounded_number_of_directory_descriptors() {
        let _deep = crate::DEEP_TREE_TESTS
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        chain(dir.path(), 1000, b"d");
        let count = || {
            fs::read_dir("/proc/self/fd")
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let most = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let m = most.clone();
        hooks::on_push(dir.path(), move |_, open| {
            m.0.fetch_max(open, Ordering::Relaxed);
            m.1.fetch_max(count(), Ordering::Relaxed);
        });
        let before = count();
        let tuning = Tuning {
            fork_depth: 0,
            window: 4,
        };
        walk_tuned(dir.path(), &WalkOptions::default(), tuning).unwrap();
        let (held, in_process) = (
            most.0.load(Ordering::Relaxed),
            most.1.load(Ordering::Relaxed),
        );
        // The root and the four of the window, at every one of the 1,000 levels.
        assert_eq!(held, 5);
        // The process as a whole (other tests open and close theirs meanwhile; those with
        // a descriptor per level of a deep tree wait: DEEP_TREE_TESTS): far below one per
        // level.
        assert!(
            in_process < before + 300,
            "{in_process} descriptors open (before: {before})"
        );
    }

    #[test]
    fn fifos_sockets_and_links_to_them_are_skipped_with_a_warning_each() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/keep"), b"k").unwrap();
        let mk = |p: &Path| {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        };
        mk(&root.join("sub/pipe"));
        mk(&root.join("skipme"));
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        std::os::unix::fs::symlink("sub/pipe", root.join("to-pipe")).unwrap();
        let opts = WalkOptions {
            exclude: WalkOptions::compile_exclude(&["skipme".to_owned()]).unwrap(),
            ..WalkOptions::default()
        };
        let w = walk(&root, &opts).unwrap();
        let paths: Vec<_> = w.manifest.entries().iter().map(|e| e.path).collect();
        assert_eq!(paths, ["./", "./sub/", "./sub/keep"]);
        let all = w.warnings.join("\n");
        assert_eq!(w.warnings.len(), 3, "{all}");
        assert!(
            all.contains("FIFO \"") && all.contains("t/sub/pipe\""),
            "{all}"
        );
        assert!(
            all.contains("socket \"") && all.contains("t/sock\""),
            "{all}"
        );
        assert!(all.contains("symbolic link to a FIFO \""), "{all}");
        assert!(
            !all.contains("skipme"),
            "excluded entries are not warned about: {all}"
        );
    }

    fn paths_of(root: &Path, opts: &WalkOptions) -> Vec<String> {
        let w = walk(root, opts).unwrap();
        w.manifest
            .entries()
            .iter()
            .map(|e| e.path.to_owned())
            .collect()
    }

    #[test]
    fn the_ignore_file_has_gitignore_semantics_and_is_kept_itself() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        for d in ["build/x", "src/build", "a/b/logs", "docs/build"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "build/x/o",
            "src/build/o",
            "src/m.log",
            "src/keep.log",
            "a/b/logs/l",
            "a/n.tmp",
            "docs/build/i",
            "top.tmp",
            "tmp",
        ] {
            fs::write(root.join(f), f).unwrap();
        }
        fs::write(
            root.join(IGNORE_FILE),
            "# comment\n/build/\n*.log\n!keep.log\n**/logs\ntmp/\na/*.tmp\n.snapdirignore\n",
        )
        .unwrap();
        for tuning in TUNINGS {
            let w = walk_tuned(&root, &WalkOptions::default(), tuning).unwrap();
            let paths: Vec<_> = w
                .manifest
                .entries()
                .iter()
                .map(|e| e.path.to_owned())
                .collect();
            assert_eq!(
                paths,
                [
                    "./",
                    "./.snapdirignore",
                    "./a/",
                    "./a/b/",
                    "./docs/",
                    "./docs/build/",
                    "./docs/build/i",
                    "./src/",
                    "./src/build/",
                    "./src/build/o",
                    "./src/keep.log",
                    "./tmp",
                    "./top.tmp",
                ]
            );
        }
        // Off: everything; another file: its rules (the tree's own file is just a file).
        let off = WalkOptions {
            ignore_file: IgnoreFile::Off,
            ..WalkOptions::default()
        };
        assert_eq!(paths_of(&root, &off).len(), 20);
        let other = dir.path().join("other");
        fs::write(&other, "src\n").unwrap();
        let opts = WalkOptions {
            ignore_file: IgnoreFile::Path(other),
            exclude_glob: vec!["a/".into(), "docs".into(), "build".into(), "*.tmp".into()],
            ..WalkOptions::default()
        };
        assert_eq!(paths_of(&root, &opts), ["./", "./.snapdirignore", "./tmp"]);
        // Globs come after the file: they may re-include.
        let opts = WalkOptions {
            exclude_glob: vec!["!*.log".into()],
            ..WalkOptions::default()
        };
        assert!(paths_of(&root, &opts).contains(&"./src/m.log".to_owned()));
    }

    #[test]
    fn ignore_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = WalkOptions {
            ignore_file: IgnoreFile::Path(dir.path().join("nope")),
            ..WalkOptions::default()
        };
        let e = walk(dir.path(), &missing).unwrap_err();
        assert_eq!(e.code, Code::NotFound);
        assert!(e.message.contains("no such ignore file") && e.message.contains("nope"));
        fs::write(dir.path().join(IGNORE_FILE), "ok\n[z-a]\n").unwrap();
        let e = walk(dir.path(), &WalkOptions::default()).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(
            e.message.contains("line 2") && e.message.contains(IGNORE_FILE),
            "{}",
            e.message
        );
        let e = Ignore::from_parts(None, &["[z-a]".into()], false).unwrap_err();
        assert!(
            e.message.contains("invalid exclude glob \"[z-a]\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_glob_given_as_a_regex_says_so() {
        let e = WalkOptions::compile_exclude(&["*.bin".to_owned()]).unwrap_err();
        assert!(
            e.message
                .contains("looks like a glob: use --exclude-glob '*.bin'"),
            "{}",
            e.message
        );
        let e = WalkOptions::compile_exclude(&["(".to_owned()]).unwrap_err();
        assert!(!e.message.contains("glob"), "{}", e.message);
    }

    #[test]
    fn changed_ignore_rules_never_reuse_a_cached_listing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/a.bin"), b"a").unwrap();
        fs::write(root.join("d/b.txt"), b"b").unwrap();
        let opts = WalkOptions {
            stat_cache: Some(dir.path().join("cache")),
            ..WalkOptions::default()
        };
        assert_eq!(paths_of(&root, &opts).len(), 4);
        fs::write(root.join(IGNORE_FILE), "*.bin\n").unwrap();
        assert_eq!(
            paths_of(&root, &opts),
            ["./", "./.snapdirignore", "./d/", "./d/b.txt"]
        );
        // Same size, other rules: still not the cached walk.
        fs::write(root.join(IGNORE_FILE), "*.txt\n").unwrap();
        assert_eq!(
            paths_of(&root, &opts),
            ["./", "./.snapdirignore", "./d/", "./d/a.bin"]
        );
    }

    #[test]
    fn a_path_longer_than_a_snapshot_may_hold_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let name = vec![b'n'; 200];
        chain(dir.path(), 200, &name);
        let err = walk(dir.path(), &WalkOptions::default()).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{err}");
        assert!(err.message.contains(&MAX_PATH_BYTES.to_string()), "{err}");
        // The start and the end of the path, not all 32 KiB of it.
        let root = display_path(dir.path());
        assert!(err.message.contains(&root[..root.len() - 1]), "{err}");
        assert!(err.message.contains("nnn\": its path"), "{err}");
        assert!(err.message.len() < 1000, "{err}");
    }

    #[test]
    fn running_out_of_descriptors_is_said_as_such() {
        let e = open_error(
            "cannot open",
            Path::new("x/y"),
            io::Error::from_raw_os_error(libc::EMFILE),
        );
        assert_eq!(e.code, Code::Io);
        assert!(e.message.contains("out of file descriptors"), "{e}");
        assert_eq!(e.errno, Some(libc::EMFILE));
    }
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
