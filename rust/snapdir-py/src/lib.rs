//! The Python binding of snapdir-core: the private module `snapdir._snapdir`.
//!
//! It only converts types and maps errors. Every call that touches the file system converts
//! its arguments first, then releases the interpreter (`py.detach`) for the whole batch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::types::PyString;
use snapdir_core as core;

mod errors;
mod local;
mod manifests;
mod markset;
mod names;
mod recording;
use errors::to_py_err;

/// Kind of a manifest entry: `PathType.File` or `PathType.Directory`.
#[pyclass(frozen, eq, eq_int, hash, module = "snapdir")]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathType {
    File,
    Directory,
}

#[pymethods]
impl PathType {
    /// `"File"` or `"Directory"`.
    #[getter]
    fn name(&self) -> &'static str {
        match self {
            PathType::File => "File",
            PathType::Directory => "Directory",
        }
    }

    fn __str__(&self) -> &'static str {
        self.name()
    }
}

/// One line of a manifest. Immutable.
#[pyclass(frozen, eq, hash, module = "snapdir")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ManifestEntry {
    #[pyo3(get)]
    path: String,
    #[pyo3(get)]
    path_type: PathType,
    #[pyo3(get)]
    permissions: u32,
    #[pyo3(get)]
    checksum: String,
    #[pyo3(get)]
    size: u64,
}

#[pymethods]
impl ManifestEntry {
    fn __repr__(&self) -> String {
        format!(
            "ManifestEntry(path={:?}, path_type={}, permissions=0o{:o}, checksum='{}', size={})",
            self.path,
            self.path_type.name(),
            self.permissions,
            self.checksum,
            self.size
        )
    }
}

/// A validated snapshot manifest. Entries stay in Rust until `.entries` is read, so a
/// manifest of a million files costs no Python objects until you ask for them.
#[pyclass(frozen, module = "snapdir")]
pub struct Manifest {
    pub(crate) inner: Arc<core::Manifest>,
    raw: OnceLock<String>,
    id: OnceLock<String>,
}

impl Manifest {
    pub(crate) fn wrap(m: core::Manifest) -> Manifest {
        Manifest {
            inner: Arc::new(m),
            raw: OnceLock::new(),
            id: OnceLock::new(),
        }
    }

    /// The canonical text: the manifest's own storage when it is held as text (no copy),
    /// else rendered once and kept.
    fn raw_str(&self) -> &str {
        match self.inner.text() {
            Some(text) => text,
            None => self.raw.get_or_init(|| self.inner.render()),
        }
    }
}

#[pymethods]
impl Manifest {
    /// Parses manifest text (CRLF, blank lines and `#` comments accepted; lines re-sorted).
    /// Raises `InvalidArgumentError` (a `ValueError`) naming the first bad line.
    #[classmethod]
    fn parse(
        _cls: &Bound<'_, pyo3::types::PyType>,
        py: Python<'_>,
        text: &str,
    ) -> PyResult<Manifest> {
        let text = if text.len() > 64 * 1024 {
            let owned = text.as_bytes().to_vec();
            py.detach(|| core::Manifest::parse_owned(owned))
        } else {
            core::Manifest::parse(text)
        };
        text.map(Manifest::wrap).map_err(|e| to_py_err(py, e))
    }

    /// The canonical manifest text, lines joined by `\n`, no trailing newline.
    #[getter]
    fn raw(&self) -> &str {
        self.raw_str()
    }

    /// The snapshot id of this manifest (64 lowercase hex). Computed from the text when
    /// it was rendered already, else while rendering without keeping the text (a walk
    /// that only wants the id never holds a huge tree's manifest text).
    #[getter]
    fn id(&self) -> String {
        self.id
            .get_or_init(|| match self.raw.get() {
                Some(raw) => core::manifest::to_hex(&core::manifest::id_of_text(raw)),
                None => self.inner.id_hex(),
            })
            .clone()
    }

    /// The entries, sorted by path (built on each access).
    #[getter]
    fn entries(&self) -> Vec<ManifestEntry> {
        self.inner
            .entries()
            .iter()
            .map(|e| ManifestEntry {
                path: self.inner.display_path(&e).into_owned(),
                path_type: match e.kind {
                    core::Kind::File => PathType::File,
                    core::Kind::Directory => PathType::Directory,
                },
                permissions: e.mode,
                checksum: e.checksum_hex(),
                size: e.size,
            })
            .collect()
    }

    /// The distinct objects the snapshot references: `[(checksum, size)]`.
    fn objects(&self) -> Vec<(String, u64)> {
        self.inner
            .objects()
            .iter()
            .map(|(d, s)| (core::manifest::to_hex(d), *s))
            .collect()
    }

    /// For each distinct object, the first file holding it: `[(checksum, rel_path, size)]`
    /// where `rel_path` is relative to the snapshot root (no leading `./`).
    fn object_sources(&self) -> Vec<(String, String, u64)> {
        let mut seen = std::collections::HashSet::new();
        self.inner
            .entries()
            .iter()
            .filter(|e| e.kind == core::Kind::File && seen.insert(e.checksum))
            .map(|e| (e.checksum_hex(), e.rel().to_owned(), e.size))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<Manifest>() {
            Ok(o) => self.raw_str() == o.get().raw_str(),
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        u64::from_le_bytes(
            core::manifest::id_of_text(self.raw_str())[..8]
                .try_into()
                .unwrap_or([0; 8]),
        )
    }

    fn __repr__(&self) -> String {
        format!("Manifest(entries={}, id='{}')", self.inner.len(), self.id())
    }
}

/// A cancellation flag shared with a running walk or transfer.
#[pyclass(frozen, module = "snapdir._snapdir")]
#[derive(Default)]
pub struct CancelToken {
    pub(crate) flag: Arc<AtomicBool>,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Asks the operation to stop at its next file.
    fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Counters a running operation updates; poll them from another thread for a progress bar.
#[pyclass(frozen, module = "snapdir._snapdir")]
#[derive(Default)]
pub struct Progress {
    pub(crate) inner: Arc<core::walk::Progress>,
}

#[pymethods]
impl Progress {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    #[getter]
    fn files(&self) -> u64 {
        self.inner.files.load(Ordering::Relaxed)
    }

    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Files whose checksum came from the stat cache (included in `files`).
    #[getter]
    fn reused(&self) -> u64 {
        self.inner.reused.load(Ordering::Relaxed)
    }

    /// Files found so far by the counting walk beside a long walk.
    #[getter]
    fn found_files(&self) -> u64 {
        self.inner.found_files.load(Ordering::Relaxed)
    }

    /// Their bytes.
    #[getter]
    fn found_bytes(&self) -> u64 {
        self.inner.found_bytes.load(Ordering::Relaxed)
    }

    /// Whether the counting walk has finished: `found_*` are then the walk's totals.
    #[getter]
    fn found_done(&self) -> bool {
        self.inner.found_done.load(Ordering::Relaxed)
    }

    /// Directories whose listing came from the stat cache (not read again).
    #[getter]
    fn dirs_reused(&self) -> u64 {
        self.inner.dirs_reused.load(Ordering::Relaxed)
    }
}

/// Streaming BLAKE3, for Python-side transfers that must hash what they send or receive.
#[pyclass(frozen, module = "snapdir._snapdir")]
pub struct Hasher {
    inner: Mutex<blake3::Hasher>,
}

#[pymethods]
impl Hasher {
    #[new]
    fn new() -> Self {
        Hasher {
            inner: Mutex::new(blake3::Hasher::new()),
        }
    }

    /// Adds bytes; large buffers are hashed with the interpreter released.
    fn update(&self, py: Python<'_>, data: &[u8]) {
        let work = || {
            let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            h.update(data);
        };
        if data.len() >= 64 * 1024 {
            py.detach(work);
        } else {
            work();
        }
    }

    /// The digest so far, as 64 lowercase hex (the hasher can keep being updated).
    fn hexdigest(&self) -> String {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        h.finalize().to_hex().to_string()
    }
}

pub(crate) fn walk_options(
    no_follow: bool,
    absolute: bool,
    exclude: &[String],
    cancel: Option<&CancelToken>,
    progress: Option<&Progress>,
) -> core::Result<core::WalkOptions> {
    Ok(core::WalkOptions {
        no_follow,
        absolute,
        exclude: core::WalkOptions::compile_exclude(exclude)?,
        cancel: cancel.map(|c| c.flag.clone()),
        progress: progress.map(|p| p.inner.clone()),
        stat_cache: None,
        rehash: false,
        ingest: None,
        ..Default::default()
    })
}

/// Where the ignore rules come from: `ignore_file` (a path), none with `no_ignore_file`,
/// else the tree's own `.snapdirignore`.
pub(crate) fn ignore_source(
    ignore_file: Option<PathBuf>,
    no_ignore_file: bool,
) -> core::IgnoreFile {
    match (ignore_file, no_ignore_file) {
        (_, true) => core::IgnoreFile::Off,
        (Some(p), false) => core::IgnoreFile::Path(p),
        (None, false) => core::IgnoreFile::Default,
    }
}

/// Walks and hashes `path`; returns the manifest and the warnings (dangling links).
/// `stat_cache` is the directory of stat cache files (`None`: no cache); `rehash` re-reads
/// every file but still rewrites the cache.
#[pyfunction]
#[pyo3(signature = (path, no_follow=false, absolute=false, exclude=Vec::new(), cancel=None, progress=None, stat_cache=None, rehash=false, *, ignore_file=None, no_ignore_file=false, exclude_glob=Vec::new()))]
#[allow(clippy::too_many_arguments)]
fn walk(
    py: Python<'_>,
    path: PathBuf,
    no_follow: bool,
    absolute: bool,
    exclude: Vec<String>,
    cancel: Option<&CancelToken>,
    progress: Option<&Progress>,
    stat_cache: Option<PathBuf>,
    rehash: bool,
    ignore_file: Option<PathBuf>,
    no_ignore_file: bool,
    exclude_glob: Vec<String>,
) -> PyResult<(Manifest, Vec<String>)> {
    let mut opts = walk_options(no_follow, absolute, &exclude, cancel, progress)
        .map_err(|e| to_py_err(py, e))?;
    opts.stat_cache = stat_cache;
    opts.rehash = rehash;
    opts.ignore_file = ignore_source(ignore_file, no_ignore_file);
    opts.exclude_glob = exclude_glob;
    let walked = py
        .detach(|| core::walk_counted(&path, &opts))
        .map_err(|e| to_py_err(py, e))?;
    Ok((Manifest::wrap(walked.manifest), walked.warnings))
}

/// The snapshot id of a `Manifest` or of manifest text.
#[pyfunction]
fn id_from_manifest(py: Python<'_>, m: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(m) = m.cast::<Manifest>() {
        return Ok(m.get().id());
    }
    if let Ok(s) = m.cast::<PyString>() {
        let parsed = core::Manifest::parse(s.to_str()?).map_err(|e| to_py_err(py, e))?;
        return Ok(parsed.id_hex());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(
        "id_from_manifest() takes a Manifest or manifest text (str)",
    ))
}

/// `(logical_bytes, physical_bytes, files, objects)` of a manifest.
#[pyfunction]
fn manifest_size(m: &Manifest) -> (u128, u128, u64, u64) {
    m.inner.size_stats()
}

/// BLAKE3 of `data` as 64 lowercase hex.
#[pyfunction]
fn blake3_hex(py: Python<'_>, data: &[u8]) -> String {
    if data.len() >= 64 * 1024 {
        py.detach(|| blake3::hash(data).to_hex().to_string())
    } else {
        blake3::hash(data).to_hex().to_string()
    }
}

/// Writes `data` at `offset` of the open file `fd`, leaving all-zero 4 KiB blocks as holes
/// (for a file created empty and written at increasing offsets: a download; its writer
/// sets the length at the end). The descriptor stays the caller's.
#[pyfunction]
fn write_at_sparse(py: Python<'_>, fd: i32, offset: u64, data: &[u8]) -> PyResult<()> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "invalid file descriptor {fd}"
        )));
    }
    // SAFETY: borrowed for this call only; ManuallyDrop keeps it from being closed here.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let write = || core::sparse::write_at_sparse(&file, offset, data);
    let done = if data.len() >= 64 * 1024 {
        py.detach(write)
    } else {
        write()
    };
    done.map_err(PyErr::from)
}

/// The version of the core library.
#[pyfunction]
fn version() -> &'static str {
    core::VERSION
}

#[pymodule(gil_used = false)]
fn _snapdir(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PathType>()?;
    m.add_class::<ManifestEntry>()?;
    m.add_class::<Manifest>()?;
    m.add_class::<CancelToken>()?;
    m.add_class::<Progress>()?;
    m.add_class::<Hasher>()?;
    m.add_function(wrap_pyfunction!(walk, m)?)?;
    m.add_function(wrap_pyfunction!(id_from_manifest, m)?)?;
    m.add_function(wrap_pyfunction!(manifest_size, m)?)?;
    m.add_function(wrap_pyfunction!(blake3_hex, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(write_at_sparse, m)?)?;
    m.add_class::<local::CheckoutPlan>()?;
    m.add_function(wrap_pyfunction!(local::store_put_objects, m)?)?;
    m.add_function(wrap_pyfunction!(local::store_push_tree, m)?)?;
    m.add_function(wrap_pyfunction!(local::store_get_object, m)?)?;
    m.add_function(wrap_pyfunction!(local::store_verify_objects, m)?)?;
    m.add_function(wrap_pyfunction!(local::store_list, m)?)?;
    m.add_function(wrap_pyfunction!(local::store_missing_objects, m)?)?;
    m.add_function(wrap_pyfunction!(local::plan_checkout, m)?)?;
    manifests::register(m)?;
    recording::register(m)?;
    markset::register(m)?;
    m.add("EMPTY_CHECKSUM", core::manifest::EMPTY_CHECKSUM)?;
    names::register(m)?;
    Ok(())
}
