//! One error type for the whole core. The binding maps [`Code`] to a Python exception class;
//! every message names the path, key or id involved.

use std::fmt;
use std::io;
use std::path::Path;

/// Machine-readable error category (SPEC §6). Stable strings, see [`Code::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    HashMismatch,
    Store,
    InFlux,
    Catalog,
    InvalidId,
    InvalidStore,
    InvalidManifest,
    InvalidArgument,
    UnsafePath,
    NotFound,
    Conflict,
    Io,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::HashMismatch => "HASH_MISMATCH",
            Code::Store => "STORE_ERROR",
            Code::InFlux => "IN_FLUX",
            Code::Catalog => "CATALOG_ERROR",
            Code::InvalidId => "INVALID_ID",
            Code::InvalidStore => "INVALID_STORE",
            Code::InvalidManifest => "INVALID_MANIFEST",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::UnsafePath => "UNSAFE_PATH",
            Code::NotFound => "NOT_FOUND",
            Code::Conflict => "CONFLICT",
            Code::Io => "IO_ERROR",
        }
    }
}

/// An error with its category and a message that names what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub message: String,
    /// The OS error number, when the error came from the operating system.
    pub errno: Option<i32>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            errno: None,
        }
    }

    /// Wraps an OS error about `path`, choosing the code from its kind: a missing path is
    /// `NOT_FOUND`, everything else `IO_ERROR`.
    pub fn io(what: &str, path: &Path, err: io::Error) -> Self {
        let code = match err.kind() {
            io::ErrorKind::NotFound => Code::NotFound,
            _ => Code::Io,
        };
        Error {
            code,
            message: format!("{what} {}: {err}", display_path(path)),
            errno: err.raw_os_error(),
        }
    }

    /// Like [`Error::io`], but a path that vanished or changed is `IN_FLUX`: used while
    /// walking, where a file listed by `readdir` and gone by `open` is a tree in motion.
    pub fn in_flux(path: &Path, why: &str) -> Self {
        Error::new(
            Code::InFlux,
            format!(
                "{} changed while it was being read ({why}); re-run when the tree is quiet",
                display_path(path)
            ),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Renders a path for a message: quoted, with anything that is not printable UTF-8 escaped
/// (`\n`, `\r`, `\t`, `\xNN` for bytes that are not UTF-8), so a hostile name can neither
/// hide nor forge lines in a log.
pub fn display_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    escape_bytes(path.as_os_str().as_bytes())
}

/// See [`display_path`].
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_hostile_bytes() {
        assert_eq!(escape_bytes(b"a\nb"), "\"a\\nb\"");
        assert_eq!(escape_bytes(b"x\xffy"), "\"x\\xffy\"");
        assert_eq!(escape_bytes(b"caf\xc3\xa9"), "\"caf\u{e9}\"");
        assert_eq!(escape_bytes(b"\x1b[2J"), "\"\\u{1b}[2J\"");
    }
}
