//! The one conversion from core errors to Python exceptions. The classes live in
//! `snapdir._errors` (Python), because some need two bases (`NotFoundError` is also a
//! `FileNotFoundError`), which a Rust-defined exception cannot have.

use pyo3::prelude::*;
use snapdir_core as core;

/// Builds the Python exception for `e` via `snapdir._errors._from_code(code, message, errno)`.
pub fn to_py_err(py: Python<'_>, e: core::Error) -> PyErr {
    let built = py
        .import("snapdir._errors")
        .and_then(|m| m.getattr("_from_code"))
        .and_then(|f| f.call1((e.code.as_str(), e.message.as_str(), e.errno)));
    match built {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}
