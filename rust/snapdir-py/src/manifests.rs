//! Manifests read and compared without a Python object per entry: a stored manifest read
//! from a descriptor straight into the buffer it is kept in, and `diff` of two manifests.

use std::io::Read;

use pyo3::prelude::*;
use snapdir_core as core;

use crate::errors::to_py_err;
use crate::Manifest;

/// Reads the open file `fd` (at most `limit` bytes) and parses it as a stored manifest;
/// `None` when it holds more than `limit` bytes. The bytes become the manifest's storage
/// when they are canonical text (no second copy). The descriptor stays the caller's.
#[pyfunction]
fn manifest_from_fd(py: Python<'_>, fd: i32, limit: u64) -> PyResult<Option<Manifest>> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "invalid file descriptor {fd}"
        )));
    }
    // SAFETY: borrowed for this call only; ManuallyDrop keeps it from being closed here.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let parsed = py.detach(
        || -> std::io::Result<Option<core::Result<core::Manifest>>> {
            let hint = file.metadata().map(|m| m.len()).unwrap_or(0).min(limit);
            let mut data = Vec::with_capacity(usize::try_from(hint).unwrap_or(0) + 1);
            (&*file)
                .take(limit.saturating_add(1))
                .read_to_end(&mut data)?;
            if data.len() as u64 > limit {
                return Ok(None);
            }
            Ok(Some(core::Manifest::parse_owned(data)))
        },
    )?;
    match parsed {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(Manifest::wrap(m))),
        Some(Err(e)) => Err(to_py_err(py, e)),
    }
}

/// Bytes gathered in Rust memory as they download (a manifest from a cloud store), then
/// handed to the parser as they are: the manifest keeps this buffer as its storage, so a
/// stored manifest is held once while it is read and parsed, not as chunks, then joined
/// bytes, then text, then the parser's copy.
#[pyclass(frozen, module = "snapdir._snapdir")]
#[derive(Default)]
pub struct ByteBuffer {
    data: std::sync::Mutex<Vec<u8>>,
}

impl ByteBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl ByteBuffer {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Appends `data`.
    fn extend(&self, data: &[u8]) {
        self.lock().extend_from_slice(data);
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    /// A copy of the bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.lock())
    }

    /// Parses the bytes as a manifest (as `Manifest.parse`), taking them: the buffer is
    /// empty afterwards, whatever the outcome.
    fn take_manifest(&self, py: Python<'_>) -> PyResult<Manifest> {
        let data = std::mem::take(&mut *self.lock());
        py.detach(|| core::Manifest::parse_owned(data))
            .map(Manifest::wrap)
            .map_err(|e| to_py_err(py, e))
    }
}

/// Compares two manifests, `old` -> `new`: `(changed, [(status, path, detail)])` sorted by path (see
/// `snapdir.diff`). With `all` false only what the CLI shows by default is returned: no
/// unchanged paths (`=`) and no directories whose only change is below them (`contents`).
#[pyfunction]
fn diff_manifests(
    py: Python<'_>,
    old: &Manifest,
    new: &Manifest,
    all: bool,
) -> (bool, Vec<(&'static str, String, String)>) {
    let (a, b) = (old.inner.clone(), new.inner.clone());
    let (changed, rows) = py.detach(|| {
        let mut changed = false;
        let mut rows: Vec<(core::diff::Status, &str, core::diff::Detail)> = Vec::new();
        core::diff::diff(&a, &b, |s, p, d| {
            changed |= s != core::diff::Status::Same;
            let shown = s != core::diff::Status::Same && d != core::diff::Detail::Contents;
            if all || shown {
                rows.push((s, p, d));
            }
        });
        rows.sort_by(|x, y| x.1.as_bytes().cmp(y.1.as_bytes()));
        let rows: Vec<_> = rows
            .into_iter()
            .map(|(s, p, d)| (s.letter(), p.to_owned(), d.text()))
            .collect();
        (changed, rows)
    });
    (changed, rows)
}

/// Writes the stored form of `m` (its canonical text and one newline) to the open file
/// `fd`, without building the text as a Python string. The descriptor stays the caller's.
#[pyfunction]
fn manifest_write_fd(py: Python<'_>, m: &Manifest, fd: i32) -> PyResult<()> {
    use std::os::fd::FromRawFd;
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "invalid file descriptor {fd}"
        )));
    }
    // SAFETY: borrowed for this call only; ManuallyDrop keeps it from being closed here.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let inner = m.inner.clone();
    py.detach(|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *file);
        inner.write_stored(&mut w)?;
        std::io::Write::flush(&mut w)
    })?;
    Ok(())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ByteBuffer>()?;
    m.add_function(wrap_pyfunction!(manifest_from_fd, m)?)?;
    m.add_function(wrap_pyfunction!(diff_manifests, m)?)?;
    m.add_function(wrap_pyfunction!(manifest_write_fd, m)?)?;
    Ok(())
}
