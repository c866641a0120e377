//! Binding of `snapdir_core::names`: release versions and version specs (semver crate
//! precedence, our spec grammar), and resolution over a listed set of versions.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use snapdir_core::names::{parse_version, resolve, Spec};

/// The canonical form of a release version (`v1.2.3` -> `1.2.3`); ValueError if it is not
/// semver 2.0 without build metadata.
#[pyfunction]
pub fn version_canonical(text: &str) -> PyResult<String> {
    parse_version(text)
        .map(|v| v.to_string())
        .map_err(PyValueError::new_err)
}

/// Indices of `versions` (each valid) in ascending semver precedence; ValueError names the
/// first invalid one.
#[pyfunction]
pub fn version_order(versions: Vec<String>) -> PyResult<Vec<usize>> {
    let parsed = versions
        .iter()
        .map(|v| parse_version(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PyValueError::new_err)?;
    let mut idx: Vec<usize> = (0..parsed.len()).collect();
    idx.sort_by(|&a, &b| parsed[a].cmp_precedence(&parsed[b]));
    Ok(idx)
}

/// Check a version spec; ValueError says what is wrong. Returns the version it pins
/// exactly (`==1.2.3`), or None.
#[pyfunction]
pub fn spec_check(spec: &str) -> PyResult<Option<String>> {
    let s = Spec::parse(spec).map_err(PyValueError::new_err)?;
    Ok(s.exact().map(|v| v.to_string()))
}

/// Whether `version` matches `spec` (`pre`: admit every prerelease).
#[pyfunction]
#[pyo3(signature = (spec, version, pre=false))]
pub fn spec_matches(spec: &str, version: &str, pre: bool) -> PyResult<bool> {
    let s = Spec::parse(spec).map_err(PyValueError::new_err)?;
    let v = parse_version(version).map_err(PyValueError::new_err)?;
    Ok(s.matches(&v, pre))
}

/// The index of the highest of `versions` that `spec` matches (yanked ones only when the
/// spec pins that version with `==`), or None.
#[pyfunction]
#[pyo3(signature = (spec, versions, yanked, pre=false))]
pub fn spec_resolve(
    spec: &str,
    versions: Vec<String>,
    yanked: Vec<bool>,
    pre: bool,
) -> PyResult<Option<usize>> {
    let s = Spec::parse(spec).map_err(PyValueError::new_err)?;
    let parsed = versions
        .iter()
        .map(|v| parse_version(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PyValueError::new_err)?;
    Ok(resolve(&s, &parsed, &yanked, pre))
}

/// Add this module's functions to `_snapdir`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version_canonical, m)?)?;
    m.add_function(wrap_pyfunction!(version_order, m)?)?;
    m.add_function(wrap_pyfunction!(spec_check, m)?)?;
    m.add_function(wrap_pyfunction!(spec_matches, m)?)?;
    m.add_function(wrap_pyfunction!(spec_resolve, m)?)?;
    Ok(())
}
