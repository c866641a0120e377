//! Reading a changed file once.
//!
//! The recorder hands the file's previous state (size and hash) when it knows one. The file
//! is read once: the first `prev_size` bytes are hashed, and when they still hash to the
//! previous content only the new bytes are staged (an append); otherwise the whole content
//! is read again from the start and staged (a rewrite). The staged copy is hashed as it is
//! written, and the file's size, inode and modification time are compared before and after:
//! a file that changed meanwhile is reported as in flux, never recorded as good.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Code, Error, Result};
use crate::fsx::{kind_of, perm_bits, Dir, Kind};
use crate::manifest::{to_hex, Digest};

/// Whether a file's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep the bytes.
    All,
    /// Size and hash only (a placeholder).
    None,
    /// Keep text, make binary files (a NUL in the first 8 KiB) placeholders.
    Text,
}

/// What was found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Missing,
    Dir {
        mode: u32,
        ino: u64,
    },
    File(Captured),
    /// A symbolic link, device, socket or FIFO: not recorded.
    Other,
    Unreadable {
        errno: i32,
    },
    /// Changed while it was read: look again later.
    InFlux,
}

/// A captured file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub mode: u32,
    pub ino: u64,
    pub size: u64,
    pub full: Digest,
    /// Unchanged content (same size and hash as before).
    pub same: bool,
    /// Bytes not kept (placeholder).
    pub placeholder: bool,
    /// The staged object: digest, size, file, and the offset it starts at (0 for a whole
    /// file, the previous size for an append).
    pub staged: Option<(Digest, u64, PathBuf, u64)>,
}

fn stamp(st: &libc::stat) -> (u64, i64, i64, u64) {
    #[allow(clippy::unnecessary_cast)]
    (
        st.st_size as u64,
        st.st_mtime as i64,
        st.st_mtime_nsec as i64,
        st.st_ino as u64,
    )
}

fn fstat(f: &File) -> io::Result<libc::stat> {
    use std::os::fd::AsRawFd;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(f.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

struct Stager {
    file: File,
    path: PathBuf,
    hasher: blake3::Hasher,
    n: u64,
}

impl Stager {
    fn new(dir: &Path) -> io::Result<Stager> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let k = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".part-{}-{k}", std::process::id()));
        let file = File::create(&path)?;
        Ok(Stager {
            file,
            path,
            hasher: blake3::Hasher::new(),
            n: 0,
        })
    }
    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.hasher.update(b);
        self.n += b.len() as u64;
        self.file.write_all(b)
    }
    fn finish(self, dir: &Path) -> io::Result<(Digest, u64, PathBuf)> {
        let d = *self.hasher.finalize().as_bytes();
        let dest = dir.join(to_hex(&d));
        std::fs::rename(&self.path, &dest)?;
        Ok((d, self.n, dest))
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Captures `rel` below `root` (see the module docs); `prev` is the previous (size, hash).
pub fn capture(
    root: &Path,
    rel: &str,
    prev: Option<(u64, Digest)>,
    staging: &Path,
    keep: Keep,
) -> Result<Found> {
    let mut d = Dir::open(root).map_err(|e| Error::io("cannot open", root, e))?;
    let (dir, name) = match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    };
    if !dir.is_empty() {
        for comp in dir.split('/') {
            d = match d.open_dir(comp.as_bytes()) {
                Ok(s) => s,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                    ) =>
                {
                    return Ok(Found::Missing)
                }
                Err(e) => {
                    return Ok(Found::Unreadable {
                        errno: errno_of(&e),
                    })
                }
            };
        }
    }
    let name = name.as_bytes();
    let st = match d.lstat(name) {
        Ok(Some(st)) => st,
        Ok(None) => return Ok(Found::Missing),
        Err(e) => {
            return Ok(Found::Unreadable {
                errno: errno_of(&e),
            })
        }
    };
    #[allow(clippy::unnecessary_cast)]
    let ino = st.st_ino as u64;
    match kind_of(&st) {
        Kind::Dir { mode } => return Ok(Found::Dir { mode, ino }),
        Kind::File { .. } => {}
        _ => return Ok(Found::Other),
    }
    let mut f = match d.open_read(name) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Found::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Found::Other),
        Err(e) => {
            return Ok(Found::Unreadable {
                errno: errno_of(&e),
            })
        }
    };
    let read = |f: &mut File| -> io::Result<Option<Captured>> {
        let before = fstat(f)?;
        let mode = perm_bits(&before);
        let (size, ..) = stamp(&before);
        let mut buf = vec![0u8; 1 << 20];
        let mut full = blake3::Hasher::new();
        let mut got = 0u64;
        let mut placeholder = keep == Keep::None;
        let mut staged: Option<(Digest, u64, PathBuf, u64)> = None;
        let mut same = false;
        // Phase 1: the previous content, hashed only.
        let mut appending = false;
        if let Some((psize, phash)) = prev {
            if psize <= size {
                let mut pre = blake3::Hasher::new();
                let mut left = psize;
                while left > 0 {
                    let k = f.read(&mut buf[..left.min(1 << 20) as usize])?;
                    if k == 0 {
                        return Ok(None);
                    }
                    pre.update(&buf[..k]);
                    full.update(&buf[..k]);
                    left -= k as u64;
                }
                got = psize;
                if *pre.finalize().as_bytes() == phash {
                    appending = true;
                    same = psize == size;
                } else {
                    f.seek(SeekFrom::Start(0))?;
                    full = blake3::Hasher::new();
                    got = 0;
                }
            }
        }
        let offset = got;
        let mut stager: Option<Stager> = None;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            if got == offset && keep == Keep::Text && !appending && buf[..k.min(8192)].contains(&0)
            {
                placeholder = true;
            }
            full.update(&buf[..k]);
            got += k as u64;
            if !placeholder {
                if stager.is_none() {
                    stager = Some(Stager::new(staging)?);
                }
                stager.as_mut().unwrap().write(&buf[..k])?;
            }
        }
        let after = fstat(f)?;
        if stamp(&before) != stamp(&after) || got != size {
            if let Some(s) = stager {
                let _ = std::fs::remove_file(&s.path);
            }
            return Ok(None);
        }
        if !placeholder {
            let s = match stager {
                Some(s) => s,
                None => Stager::new(staging)?,
            };
            if same {
                let _ = std::fs::remove_file(&s.path);
            } else {
                let (d, n, p) = s.finish(staging)?;
                staged = Some((d, n, p, if appending { offset } else { 0 }));
            }
        }
        Ok(Some(Captured {
            mode,
            ino: 0,
            size,
            full: *full.finalize().as_bytes(),
            same,
            placeholder,
            staged,
        }))
    };
    match read(&mut f) {
        Ok(Some(mut c)) => {
            c.ino = ino;
            Ok(Found::File(c))
        }
        Ok(None) => Ok(Found::InFlux),
        Err(e) if e.raw_os_error().is_some() && !matches!(e.raw_os_error(), Some(libc::ENOSPC)) => {
            Ok(Found::Unreadable {
                errno: errno_of(&e),
            })
        }
        Err(e) => Err(Error::new(Code::Io, format!("cannot stage {rel:?}: {e}"))),
    }
}
