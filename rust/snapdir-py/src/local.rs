//! Bindings of the local store and checkout code: each call is one batch, run detached.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use snapdir_core as core;
use snapdir_core::manifest::{parse_hex, to_hex, Digest};
use snapdir_core::store::{LocalOptions, Origin, Problem, PutItem};

use crate::errors::to_py_err;
use crate::{CancelToken, Manifest, Progress};

fn digest(py: Python<'_>, hex: &str) -> PyResult<Digest> {
    parse_hex(hex).ok_or_else(|| {
        to_py_err(
            py,
            core::Error::new(
                core::Code::InvalidId,
                format!("invalid checksum {hex:?}: expected 64 lowercase hex characters"),
            ),
        )
    })
}

fn local_opts(
    durable: bool,
    repair: bool,
    cancel: Option<&CancelToken>,
    progress: Option<&Progress>,
) -> LocalOptions {
    LocalOptions {
        durable,
        repair,
        cancel: cancel.map(|c| c.flag.clone()),
        progress: progress.map(|p| p.inner.clone()),
    }
}

/// Puts `(checksum, source_path, size)` objects into the `file://` store at `root`.
/// `from_tree`: sources are files being pushed (a mismatch is `IN_FLUX`), else objects of
/// another store (a mismatch is `HASH_MISMATCH`). Returns (written, present, repaired, bytes).
#[pyfunction]
#[pyo3(signature = (root, items, from_tree=true, durable=false, repair=false, cancel=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn store_put_objects(
    py: Python<'_>,
    root: PathBuf,
    items: Vec<(String, PathBuf, u64)>,
    from_tree: bool,
    durable: bool,
    repair: bool,
    cancel: Option<&CancelToken>,
    progress: Option<&Progress>,
) -> PyResult<(u64, u64, u64, u64)> {
    let items = items
        .into_iter()
        .map(|(h, source, size)| {
            Ok(PutItem {
                checksum: digest(py, &h)?,
                source,
                size,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let opts = local_opts(durable, repair, cancel, progress);
    let origin = if from_tree {
        Origin::Tree
    } else {
        Origin::Store
    };
    let s = py
        .detach(|| core::store::put_objects(&root, &items, origin, &opts))
        .map_err(|e| to_py_err(py, e))?;
    Ok((s.written, s.present, s.repaired, s.bytes_written))
}

/// Snapshots the directory `path` into the `file://` store at `root`, copying each file
/// into the store while it is hashed (see `snapdir_core::store::push_tree`). Returns
/// `(manifest, warnings, written, present, bytes, noop)`; the manifest is the caller's to
/// write, last.
#[pyfunction]
#[pyo3(signature = (root, path, no_follow=false, exclude=Vec::new(), stat_cache=None, rehash=false, durable=false, cancel=None, progress=None, *, ignore_file=None, no_ignore_file=false, exclude_glob=Vec::new()))]
#[allow(clippy::too_many_arguments)]
pub fn store_push_tree(
    py: Python<'_>,
    root: PathBuf,
    path: PathBuf,
    no_follow: bool,
    exclude: Vec<String>,
    stat_cache: Option<PathBuf>,
    rehash: bool,
    durable: bool,
    cancel: Option<&CancelToken>,
    progress: Option<&Progress>,
    ignore_file: Option<PathBuf>,
    no_ignore_file: bool,
    exclude_glob: Vec<String>,
) -> PyResult<(Manifest, Vec<String>, u64, u64, u64, bool)> {
    let mut wo = crate::walk_options(no_follow, false, &exclude, cancel, progress)
        .map_err(|e| to_py_err(py, e))?;
    wo.stat_cache = stat_cache;
    wo.rehash = rehash;
    wo.ignore_file = crate::ignore_source(ignore_file, no_ignore_file);
    wo.exclude_glob = exclude_glob;
    let opts = local_opts(durable, false, cancel, progress);
    let out = py
        .detach(|| core::store::push_tree(&root, &path, &wo, &opts))
        .map_err(|e| to_py_err(py, e))?;
    let s = out.stats;
    Ok((
        Manifest::wrap(out.walked.manifest),
        out.walked.warnings,
        s.written,
        s.present,
        s.bytes_written,
        out.noop,
    ))
}

/// Copies one object of the store at `root` to `dest`, verified; returns its size.
#[pyfunction]
pub fn store_get_object(
    py: Python<'_>,
    root: PathBuf,
    checksum: &str,
    dest: PathBuf,
) -> PyResult<u64> {
    let d = digest(py, checksum)?;
    py.detach(|| core::store::get_object(&root, &d, &dest))
        .map_err(|e| to_py_err(py, e))
}

/// Re-hashes `(checksum, size)` objects; returns `[(checksum, "missing" | "corrupt")]`.
#[pyfunction]
#[pyo3(signature = (root, items, cancel=None, progress=None))]
pub fn store_verify_objects(
    py: Python<'_>,
    root: PathBuf,
    items: Vec<(String, u64)>,
    cancel: Option<&CancelToken>,
    progress: Option<&Progress>,
) -> PyResult<Vec<(String, &'static str)>> {
    let items = items
        .into_iter()
        .map(|(h, s)| Ok((digest(py, &h)?, s)))
        .collect::<PyResult<Vec<_>>>()?;
    let opts = local_opts(false, false, cancel, progress);
    let bad = py
        .detach(|| core::store::verify_objects(&root, &items, &opts))
        .map_err(|e| to_py_err(py, e))?;
    Ok(bad
        .into_iter()
        .map(|(d, p)| {
            (
                to_hex(&d),
                match p {
                    Problem::Missing => "missing",
                    Problem::Corrupt => "corrupt",
                },
            )
        })
        .collect())
}

/// The checksums of `checksums` the store at `root` has no object file for.
#[pyfunction]
pub fn store_missing_objects(
    py: Python<'_>,
    root: PathBuf,
    checksums: Vec<String>,
) -> PyResult<Vec<String>> {
    let digests = checksums
        .iter()
        .map(|h| digest(py, h))
        .collect::<PyResult<Vec<_>>>()?;
    let missing = py.detach(|| core::store::missing_objects(&root, &digests));
    Ok(missing.iter().map(|d| to_hex(d)).collect())
}

/// The keys under `.objects` or `.manifests` of the store at `root`, sorted.
#[pyfunction]
pub fn store_list(py: Python<'_>, root: PathBuf, kind: &str) -> PyResult<Vec<String>> {
    let kind = match kind {
        "objects" => ".objects",
        "manifests" => ".manifests",
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "kind must be 'objects' or 'manifests'",
            ))
        }
    };
    let keys = py
        .detach(|| core::store::list_keys(&root, kind))
        .map_err(|e| to_py_err(py, e))?;
    Ok(keys.iter().map(|d| to_hex(d)).collect())
}

/// A checked plan to materialise a snapshot into a directory (see `checkout.rs`).
#[pyclass(frozen, module = "snapdir._snapdir")]
pub struct CheckoutPlan {
    inner: Mutex<core::checkout::Plan>,
}

impl CheckoutPlan {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut core::checkout::Plan) -> core::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut g)
        })
        .map_err(|e| to_py_err(py, e))
    }
}

#[pymethods]
impl CheckoutPlan {
    /// The objects still to fetch: `[(checksum, size)]`, index `i` goes to `staged_path(i)`.
    fn needed(&self) -> Vec<(String, u64)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.needed()
            .iter()
            .map(|n| (to_hex(&n.checksum), n.size))
            .collect()
    }

    /// What a commit would do (`--dry-run`): `(writes [(path, size)], removes [path],
    /// files whose mode to fix, directories to create)`.
    #[allow(clippy::type_complexity)]
    fn preview(&self) -> (Vec<(String, u64)>, Vec<String>, usize, usize) {
        let p = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .preview();
        (p.writes, p.removes, p.chmods, p.mkdirs)
    }

    /// `(files to write, files kept, extra paths to remove)`.
    fn counts(&self) -> (usize, usize, usize) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts()
    }

    /// How many kept files were trusted without being read (the stat cache).
    fn unread(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unread()
    }

    /// Creates the destination and the staging directory.
    fn prepare(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |p| p.prepare())
    }

    /// Creates the staging files of objects `indices` (exclusively, through the staging
    /// directory's descriptor) and returns them open for writing, as raw descriptors the
    /// caller closes: a store writes to `/proc/self/fd/<fd>`, never to a path in the
    /// destination that its owner could swap for a link.
    fn open_staged(&self, py: Python<'_>, indices: Vec<usize>) -> PyResult<Vec<i32>> {
        use std::os::fd::IntoRawFd;
        self.with(py, |p| {
            let files = indices
                .into_iter()
                .map(|i| p.open_staged(i))
                .collect::<core::Result<Vec<_>>>()?;
            Ok(files.into_iter().map(|f| f.into_raw_fd()).collect())
        })
    }

    /// Where object `i` is staged (after `prepare`), for messages: it is written through
    /// `open_staged`, never by this path.
    fn staged_path(&self, i: usize) -> Option<PathBuf> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .staged_path(i)
    }

    /// Fills staging from the `file://` store at `root` (verified copies).
    fn fill_from_store(&self, py: Python<'_>, root: PathBuf) -> PyResult<()> {
        self.with(py, |p| p.fill_from_store(&root))
    }

    /// Moves everything into place; returns (files written, kept, bytes written, removed).
    fn commit(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64)> {
        self.with(py, |p| {
            p.commit()
                .map(|s| (s.files_written, s.files_kept, s.bytes_written, s.removed))
        })
    }

    /// Removes staging (and a destination this plan created); the destination is as before.
    fn abort(&self, py: Python<'_>) {
        let _ = self.with(py, |p| {
            p.abort();
            Ok(())
        });
    }
}

/// Compares `dest` with `manifest` (read-only) and returns a plan, or raises
/// `ConflictError` listing local files that differ (unless `force`). `link` ("copy",
/// "hardlink", "reflink") says how `fill_from_store` gives files their content;
/// `stat_cache` (the stat cache directory, `None`: off) lets it trust destination files a
/// previous checkout found right and that have not changed since. The plan holds the
/// destination's lock until it is committed or aborted; if another checkout holds it,
/// `wait` waits (calling `on_wait(message)` once) or raises `ConflictError` at once. With
/// `delete`, local paths the ignore rules leave out (the destination's `.snapdirignore`
/// unless `ignore_file` or `no_ignore_file`, then `exclude_glob`) are kept.
#[pyfunction]
#[pyo3(signature = (manifest, dest, force=false, delete=false, preserve_special_bits=false, durable=false, cancel=None, progress=None, link="copy", stat_cache=None, wait=true, on_wait=None, *, ignore_file=None, no_ignore_file=false, exclude_glob=Vec::new(), dry_run=false))]
#[allow(clippy::too_many_arguments)]
pub fn plan_checkout(
    py: Python<'_>,
    manifest: &Manifest,
    dest: PathBuf,
    force: bool,
    delete: bool,
    preserve_special_bits: bool,
    durable: bool,
    cancel: Option<&CancelToken>,
    progress: Option<&Progress>,
    link: &str,
    stat_cache: Option<PathBuf>,
    wait: bool,
    on_wait: Option<Py<PyAny>>,
    ignore_file: Option<PathBuf>,
    no_ignore_file: bool,
    exclude_glob: Vec<String>,
    dry_run: bool,
) -> PyResult<CheckoutPlan> {
    let m = manifest.inner.clone();
    let link = core::checkout::LinkMode::parse(link).map_err(|e| to_py_err(py, e))?;
    let keep = if delete {
        let source = crate::ignore_source(ignore_file, no_ignore_file);
        core::Ignore::load(&dest, &source, &exclude_glob).map_err(|e| to_py_err(py, e))?
    } else {
        None
    };
    let opts = core::checkout::CheckoutOptions {
        force,
        delete,
        keep,
        preserve_special_bits,
        link,
        stat_cache,
        local: local_opts(durable, false, cancel, progress),
        wait,
        // Told (once) when another checkout holds the destination and this one waits.
        on_wait: on_wait.map(|f| {
            core::checkout::WaitNotice(std::sync::Arc::new(move |msg: &str| {
                Python::attach(|py| {
                    if let Err(e) = f.call1(py, (msg,)) {
                        e.write_unraisable(py, None);
                    }
                });
            }))
        }),
        dry_run,
    };
    let plan = py
        .detach(|| core::checkout::plan_shared(m, &dest, &opts))
        .map_err(|e| to_py_err(py, e))?;
    Ok(CheckoutPlan {
        inner: Mutex::new(plan),
    })
}
