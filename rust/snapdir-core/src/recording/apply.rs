//! Applying recorded events inside a target directory.
//!
//! The target's safety is the pull's: every path is resolved one name at a time from the
//! opened target with `O_NOFOLLOW` (an existing symbolic link is never followed, so nothing
//! is written outside the target), permissions are applied without setuid, setgid or sticky
//! bits, and content is checked against its hash before it is written.
//!
//! Two perturbations serve `replay --chaos` (both off unless asked for, see
//! [`Target::set_chaos`]): missing parent directories made on the way (so an event for a
//! child can be applied before its parent's `mkdir`), and content written in chunks, each
//! one its own open, write and close, so a watcher sees every chunk (the kernel merges a
//! notification only into an identical one just before it).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::events::{Event, Op};
use crate::error::{display_path, Code, Error, Result};
use crate::fsx::{fchmod, Dir, Kind};
use crate::manifest::{to_hex, Digest};

/// How placeholders are materialised: written zeros, or a sparse file of the same size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    Zeros,
    Sparse,
}

/// What one applied event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    Placeholder,
    Unreadable,
    Checkpoint,
}

/// An opened target directory.
pub struct Target {
    root: Dir,
    path: PathBuf,
    objects: PathBuf,
    store_layout: bool,
    placeholders: Placeholders,
    verify_each: bool,
    make_parents: bool,
    split_writes: u64,
}

/// The most chunks one write is split into.
pub const MAX_SPLIT: u64 = 1024;

const MODE_MASK: u32 = 0o777;
const SMALL: u64 = 8 << 20;

fn unsafe_path(target: &Path, rel: &str, e: io::Error) -> Error {
    let code = match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => Code::UnsafePath,
        Some(libc::ENOENT) => Code::NotFound,
        _ => Code::Io,
    };
    Error {
        code,
        message: format!(
            "replay of {} in {}: {e}{}",
            crate::error::escape_bytes(rel.as_bytes()),
            display_path(target),
            if code == Code::UnsafePath {
                " (a symbolic link or a file where a directory is expected is never followed)"
            } else {
                ""
            }
        ),
        errno: e.raw_os_error(),
    }
}

/// An object's verified content.
enum Content {
    Bytes(Vec<u8>),
    File(File),
}

impl Content {
    fn write_to(self, out: &mut File) -> io::Result<()> {
        match self {
            Content::Bytes(b) => out.write_all(&b),
            Content::File(mut f) => io::copy(&mut f, out).map(|_| ()),
        }
    }

    /// Writes the first `n` bytes not written yet.
    fn write_part(&mut self, out: &mut File, done: u64, n: u64) -> io::Result<()> {
        match self {
            Content::Bytes(b) => out.write_all(&b[done as usize..(done + n) as usize]),
            Content::File(f) => {
                let k = io::copy(&mut f.take(n), out)?;
                if k != n {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                Ok(())
            }
        }
    }
}

fn hash_file(f: &mut File) -> io::Result<(Digest, u64)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((*h.finalize().as_bytes(), n))
}

impl Target {
    /// Opens `path` (which must exist) as the target; objects are read from
    /// `objects/<hex>`, or with `store_layout` from a local store's own layout under
    /// `objects` (verified all the same).
    pub fn open(
        path: &Path,
        objects: &Path,
        store_layout: bool,
        placeholders: Placeholders,
        verify_each: bool,
    ) -> Result<Target> {
        let root = Dir::open(path).map_err(|e| Error::io("cannot open target", path, e))?;
        Ok(Target {
            root,
            path: path.to_owned(),
            objects: objects.to_owned(),
            store_layout,
            placeholders,
            verify_each,
            make_parents: false,
            split_writes: 1,
        })
    }

    /// `replay --chaos`: with `make_parents`, a missing parent directory of an event's path
    /// is made (mode 0700, as `mkdir` starts; the parent's own `mkdir` event sets its mode
    /// when it comes); with `split_writes` above 1, content of at least that many bytes is
    /// written in that many chunks (at most [`MAX_SPLIT`]), each its own open, write and
    /// close.
    pub fn set_chaos(&mut self, make_parents: bool, split_writes: u64) {
        self.make_parents = make_parents;
        self.split_writes = split_writes.clamp(1, MAX_SPLIT);
    }

    /// The directory holding `rel` and its last name.
    fn parent<'a>(&self, rel: &'a str) -> Result<(Dir, &'a [u8])> {
        let (dir, name) = match rel.rfind('/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => ("", rel),
        };
        let mut d = self
            .root
            .try_clone()
            .map_err(|e| unsafe_path(&self.path, rel, e))?;
        if !dir.is_empty() {
            for comp in dir.split('/') {
                let c = comp.as_bytes();
                d = match d.open_dir(c) {
                    Err(e) if self.make_parents && e.raw_os_error() == Some(libc::ENOENT) => {
                        d.mkdir(c, 0o700).and_then(|_| d.open_dir(c))
                    }
                    other => other,
                }
                .map_err(|e| unsafe_path(&self.path, rel, e))?;
            }
        }
        Ok((d, name.as_bytes()))
    }

    /// Where object `obj` is: `objects/<hex>` (a staging directory) or, for a local store
    /// read in place, `objects/.objects/abc/def/ghi/<rest>`.
    fn object_path(&self, obj: &Digest) -> PathBuf {
        let h = to_hex(obj);
        if self.store_layout {
            self.objects
                .join(".objects")
                .join(&h[0..3])
                .join(&h[3..6])
                .join(&h[6..9])
                .join(&h[9..])
        } else {
            self.objects.join(h)
        }
    }

    /// Reads an object, checking it against `obj` before any byte is written: small ones
    /// whole into memory (read once), large ones hashed first and then streamed.
    fn object(&self, obj: &Digest, size: u64, rel: &str) -> Result<Content> {
        let p = self.object_path(obj);
        let err = |e: io::Error| Error::io("cannot read the object for", &p, e);
        let mut f = File::open(&p).map_err(err)?;
        let mismatch = |got: &Digest, n: u64| {
            Error::new(
                Code::HashMismatch,
                format!(
                    "content for {} does not match its recorded hash {} ({n} bytes, {size} \
                     expected; got {})",
                    crate::error::escape_bytes(rel.as_bytes()),
                    to_hex(obj),
                    to_hex(got)
                ),
            )
        };
        if size <= SMALL {
            let mut buf = Vec::with_capacity(size as usize + 1);
            (&mut f)
                .take(SMALL + 1)
                .read_to_end(&mut buf)
                .map_err(err)?;
            let got = *blake3::hash(&buf).as_bytes();
            if got != *obj || buf.len() as u64 != size {
                return Err(mismatch(&got, buf.len() as u64));
            }
            return Ok(Content::Bytes(buf));
        }
        let (got, n) = hash_file(&mut f).map_err(err)?;
        if got != *obj || n != size {
            return Err(mismatch(&got, n));
        }
        f.seek(SeekFrom::Start(0)).map_err(err)?;
        Ok(Content::File(f))
    }

    fn open_write(&self, d: &Dir, name: &[u8], rel: &str, extra: libc::c_int) -> Result<File> {
        let flags = libc::O_WRONLY | libc::O_NOFOLLOW | extra;
        d.open_flags(name, flags, 0o600)
            .map_err(|e| unsafe_path(&self.path, rel, e))
    }

    /// Writes `src` (`size` bytes) to `out` (`name`, opened), whole or in chunks, each
    /// chunk after the first through a new `O_APPEND` handle. Returns the last handle.
    fn write_content(
        &self,
        (d, name, rel): (&Dir, &[u8], &str),
        mut out: File,
        mut src: Content,
        size: u64,
    ) -> Result<File> {
        let io = |err: io::Error| unsafe_path(&self.path, rel, err);
        let n = self.split_writes;
        if n <= 1 || size < n {
            src.write_to(&mut out).map_err(io)?;
            return Ok(out);
        }
        let mut done = 0;
        for i in 0..n {
            if i > 0 {
                drop(out);
                out = self.open_write(d, name, rel, libc::O_APPEND)?;
            }
            let k = if i + 1 == n { size - done } else { size / n };
            src.write_part(&mut out, done, k).map_err(io)?;
            done += k;
        }
        Ok(out)
    }

    fn check_full(&self, d: &Dir, name: &[u8], rel: &str, full: &Digest) -> Result<()> {
        let mut f = d
            .open_file_at(name, false)
            .map_err(|e| unsafe_path(&self.path, rel, e))?;
        let (got, _) = hash_file(&mut f).map_err(|e| unsafe_path(&self.path, rel, e))?;
        if got != *full {
            return Err(Error::new(
                Code::HashMismatch,
                format!(
                    "after replay, {} does not hash to the recorded {}",
                    crate::error::escape_bytes(rel.as_bytes()),
                    to_hex(full)
                ),
            ));
        }
        Ok(())
    }

    /// Applies one event.
    pub fn apply(&self, e: &Event) -> Result<Applied> {
        let rel = e.path.as_str();
        let io = |err: io::Error| unsafe_path(&self.path, rel, err);
        match &e.op {
            Op::Checkpoint { .. } => return Ok(Applied::Checkpoint),
            Op::Unreadable { .. } => return Ok(Applied::Unreadable),
            Op::Chmod { mode } if rel.is_empty() => {
                self.root.chmod(mode & MODE_MASK).map_err(io)?;
                return Ok(Applied::Done);
            }
            _ => {}
        }
        let (d, name) = self.parent(rel)?;
        match &e.op {
            Op::Mkdir { mode } => {
                match d.kind(name).map_err(io)? {
                    Kind::Dir { .. } => {}
                    Kind::Missing => d.mkdir(name, 0o700).map_err(io)?,
                    _ => d
                        .remove_all(name)
                        .and_then(|_| d.mkdir(name, 0o700))
                        .map_err(io)?,
                }
                d.open_dir(name)
                    .and_then(|s| s.chmod(mode & MODE_MASK))
                    .map_err(io)?;
            }
            Op::Create { mode, obj, size } | Op::Write { mode, obj, size } => {
                let src = self.object(obj, *size, rel)?;
                let out = self.open_write(&d, name, rel, libc::O_CREAT | libc::O_TRUNC)?;
                let out = self.write_content((&d, name, rel), out, src, *size)?;
                fchmod(&out, mode & MODE_MASK).map_err(io)?;
                drop(out);
                if self.verify_each {
                    self.check_full(&d, name, rel, obj)?;
                }
            }
            Op::Append {
                obj,
                offset,
                size,
                full,
            } => {
                let src = self.object(obj, size - offset, rel)?;
                let out = self.open_write(&d, name, rel, libc::O_APPEND)?;
                let have = out.metadata().map_err(io)?.len();
                if have != *offset {
                    return Err(Error::new(
                        Code::Conflict,
                        format!(
                            "cannot append to {}: it has {have} bytes, the recording expects {offset}",
                            crate::error::escape_bytes(rel.as_bytes())
                        ),
                    ));
                }
                let out = self.write_content((&d, name, rel), out, src, size - offset)?;
                drop(out);
                if self.verify_each {
                    self.check_full(&d, name, rel, full)?;
                }
            }
            Op::Truncate { size, full } => {
                let out = self.open_write(&d, name, rel, 0)?;
                out.set_len(*size).map_err(io)?;
                drop(out);
                if self.verify_each {
                    self.check_full(&d, name, rel, full)?;
                }
            }
            Op::Rename { to } => {
                if d.lstat(name).map_err(io)?.is_none() {
                    return Err(Error::new(
                        Code::Conflict,
                        format!(
                            "cannot rename {}: it does not exist in the target",
                            crate::error::escape_bytes(rel.as_bytes())
                        ),
                    ));
                }
                let (d2, name2) = self.parent(to)?;
                if let Kind::Dir { .. } = d2.kind(name2).map_err(io)? {
                    d2.remove_all(name2).map_err(io)?;
                }
                d.rename_to(name, &d2, name2).map_err(io)?;
            }
            Op::Delete => d.remove_all(name).map_err(io)?,
            Op::Chmod { mode } => match d.kind(name).map_err(io)? {
                Kind::Dir { .. } => d
                    .open_dir(name)
                    .and_then(|s| s.chmod(mode & MODE_MASK))
                    .map_err(io)?,
                Kind::File { .. } => {
                    let f = d
                        .open_flags(
                            name,
                            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                            0,
                        )
                        .map_err(io)?;
                    fchmod(&f, mode & MODE_MASK).map_err(io)?;
                }
                Kind::Missing => return Err(io(io::Error::from_raw_os_error(libc::ENOENT))),
                _ => return Err(io(io::Error::from_raw_os_error(libc::ELOOP))),
            },
            Op::Placeholder { mode, size, .. } => {
                let mut out = self.open_write(&d, name, rel, libc::O_CREAT | libc::O_TRUNC)?;
                match self.placeholders {
                    Placeholders::Sparse => out.set_len(*size).map_err(io)?,
                    Placeholders::Zeros => {
                        let zeros = vec![0u8; 1 << 20];
                        let mut left = *size;
                        while left > 0 {
                            let k = left.min(zeros.len() as u64) as usize;
                            out.write_all(&zeros[..k]).map_err(io)?;
                            left -= k as u64;
                        }
                    }
                }
                fchmod(&out, mode & MODE_MASK).map_err(io)?;
                let got = out.metadata().map_err(io)?.len();
                if got != *size {
                    return Err(Error::new(
                        Code::Io,
                        format!("placeholder {rel:?} has {got} bytes, not {size}"),
                    ));
                }
                return Ok(Applied::Placeholder);
            }
            Op::Checkpoint { .. } | Op::Unreadable { .. } => unreachable!(),
        }
        Ok(Applied::Done)
    }
}
