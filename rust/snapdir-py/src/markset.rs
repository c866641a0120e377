//! Binding of the collector's mark set (`snapdir_core::markset`): built from manifests,
//! hex digests and packed digests; membership and "which of these are unmarked" in bulk.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use snapdir_core as core;
use snapdir_core::manifest::{parse_hex, to_hex, Digest};

use crate::errors::to_py_err;
use crate::Manifest;

/// A set of 32-byte digests, sorted and deduplicated in Rust (32 bytes per digest).
#[pyclass(module = "snapdir._snapdir")]
#[derive(Default)]
pub struct MarkSet {
    inner: core::markset::MarkSet,
}

fn digests(py: Python<'_>, hexes: Vec<String>) -> PyResult<Vec<Digest>> {
    hexes
        .iter()
        .map(|h| {
            parse_hex(h).ok_or_else(|| {
                to_py_err(
                    py,
                    core::Error::new(
                        core::Code::InvalidArgument,
                        format!(
                            "invalid digest {:?}: expected 64 lowercase hex characters",
                            h
                        ),
                    ),
                )
            })
        })
        .collect()
}

#[pymethods]
impl MarkSet {
    #[new]
    fn new() -> MarkSet {
        MarkSet::default()
    }

    /// Marks the objects of a manifest's files.
    fn add_manifest(&mut self, m: &Manifest) {
        self.inner.add_manifest(&m.inner);
    }

    /// Marks 64-hex digests; raises `InvalidArgumentError` for one that is not.
    fn add_hex(&mut self, py: Python<'_>, hexes: Vec<String>) -> PyResult<()> {
        self.inner
            .add_hex(hexes.iter().map(String::as_str))
            .map_err(|e| to_py_err(py, e))
    }

    /// Marks packed 32-byte digests (a length not a multiple of 32 raises).
    fn add_packed(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.inner.add_packed(data).map_err(|e| to_py_err(py, e))
    }

    /// Of `hexes`, those not in the set, in their order.
    fn unmarked(&mut self, py: Python<'_>, hexes: Vec<String>) -> PyResult<Vec<String>> {
        let keys = digests(py, hexes)?;
        let idx = self.inner.unmarked(&keys);
        Ok(idx.into_iter().map(|i| to_hex(&keys[i])).collect())
    }

    /// Of `hexes`, those in the set, in their order.
    fn marked(&mut self, py: Python<'_>, hexes: Vec<String>) -> PyResult<Vec<String>> {
        let keys = digests(py, hexes)?;
        let idx = self.inner.unmarked(&keys);
        let mut out = Vec::with_capacity(keys.len() - idx.len());
        let mut skip = idx.into_iter().peekable();
        for (i, k) in keys.iter().enumerate() {
            if skip.peek() == Some(&i) {
                skip.next();
            } else {
                out.push(to_hex(k));
            }
        }
        Ok(out)
    }

    /// The digests, sorted, packed (32 bytes each).
    #[pyo3(name = "to_packed")]
    fn packed<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.packed())
    }

    /// The digests, sorted, as 64-hex strings.
    #[pyo3(name = "to_hex")]
    fn hexes(&mut self) -> Vec<String> {
        self.inner.digests().iter().map(|d| to_hex(d)).collect()
    }

    /// Bytes of memory the set holds.
    #[getter]
    fn heap_bytes(&self) -> usize {
        self.inner.heap_bytes()
    }

    fn __len__(&mut self) -> usize {
        self.inner.len()
    }

    fn __contains__(&mut self, hex: &str) -> PyResult<bool> {
        let d = parse_hex(hex).ok_or_else(|| PyValueError::new_err("not a 64-hex digest"))?;
        Ok(self.inner.contains(&d))
    }

    fn __repr__(&mut self) -> String {
        format!("MarkSet(len={})", self.inner.len())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<MarkSet>()
}
