//! Hashing file contents. Small files are read in one `read` into a per-thread buffer (no
//! mmap: for a few KiB its set-up costs more than the copy). Large files that are only
//! hashed go through a read-only mapping ([`crate::mapped`]: no copy out of the page cache,
//! and a truncation while mapped is caught instead of killing the process with SIGBUS).
//! Large files that are also copied (a push hashes while it copies) are read in chunks while
//! the previous chunk is hashed on the rayon pool, so one huge file keeps every core busy.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::Digest;

/// Files at least this large are hashed with BLAKE3's multi-threaded update.
pub const PARALLEL_THRESHOLD: u64 = 1 << 20;
/// Chunk size of the pipelined reader (a power of two keeps BLAKE3's tree aligned).
pub const CHUNK: usize = 1 << 18;

thread_local! {
    static SMALL_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BIG_BUFS: RefCell<Option<(Vec<u8>, Vec<u8>)>> = const { RefCell::new(None) };
}

/// What we know about a file at the moment we opened it; compared again after reading, so a
/// file that changes while it is read is reported instead of silently mis-hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
}

impl Stamp {
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            mode: m.mode(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// The stamp of a `stat` result (the fields [`Stamp::of`] reads from `Metadata`).
    #[allow(clippy::unnecessary_cast)] // the field types differ between Linux and macOS
    pub fn of_stat(st: &libc::stat) -> Stamp {
        Stamp {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128,
            ctime_ns: st.st_ctime as i128 * 1_000_000_000 + st.st_ctime_nsec as i128,
            mode: st.st_mode as u32,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }

    /// Content-relevant equality: size and modification times.
    pub fn same_content(&self, other: &Stamp) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
    }
}

/// Opens `path` for reading without blocking on FIFOs, optionally refusing to follow a final
/// symlink. The caller checks the file type with `fstat`. A path longer than `PATH_MAX` is
/// opened piece by piece ([`crate::fsx::open_path`]).
pub fn open_nonblocking(path: &Path, no_follow: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path);
    match opened {
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            crate::fsx::open_path(path, libc::O_RDONLY | flags, 0).map(File::from)
        }
        other => other,
    }
}

/// Hashes everything `file` yields, feeding every chunk also to `sink` (used to copy while
/// hashing). Returns the digest and the number of bytes read.
pub fn hash_stream(
    file: &mut (impl Read + Send),
    size_hint: u64,
    sink: impl FnMut(&[u8]) -> io::Result<()> + Send,
) -> io::Result<(Digest, u64)> {
    hash_stream_opt(file, size_hint, false, sink)
}

/// [`hash_stream`]; with `exact`, a small file is read as exactly `size_hint` bytes (one
/// `read`, no extra call to see end-of-file). Only for callers that know the size and check
/// it again afterwards: the walker compares `fstat` before and after; verify, a checkout's
/// plan and the object checks compare the count returned (a file that grew returns one
/// byte more than `size_hint`).
pub fn hash_stream_opt(
    file: &mut (impl Read + Send),
    size_hint: u64,
    exact: bool,
    mut sink: impl FnMut(&[u8]) -> io::Result<()> + Send,
) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    if exact && size_hint < PARALLEL_THRESHOLD {
        return SMALL_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            // One `read` of size + 1 bytes: a local regular file answers with exactly `size`
            // bytes at end of file, so no second call is needed to see EOF; more bytes than
            // `size` (a /proc file, a file growing) show up as a count the caller rejects.
            let want = size_hint as usize;
            if buf.len() < want + 1 {
                buf.resize(want + 1, 0);
            }
            let mut n = loop {
                match file.read(&mut buf[..want + 1]) {
                    Ok(k) => break k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n > 0 && n < want {
                n += read_full(file, &mut buf[n..want + 1])?;
            }
            hasher.update(&buf[..n]);
            sink(&buf[..n])?;
            Ok((*hasher.finalize().as_bytes(), n as u64))
        });
    }
    if size_hint < PARALLEL_THRESHOLD {
        return SMALL_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            let want = (size_hint as usize).clamp(4096, 256 * 1024) + 1;
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let mut total = 0u64;
            loop {
                let n = read_full(file, &mut buf[..want])?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                sink(&buf[..n])?;
                total += n as u64;
                if n < want {
                    break;
                }
            }
            Ok((*hasher.finalize().as_bytes(), total))
        });
    }
    // Pipelined: chunk n is handed to the sink (a copy's write) and chunk n+1 read on one
    // side while chunk n is hashed across the pool on the other.
    // The two buffers are kept per thread: fresh ones would cost a page fault per 4 KiB
    // of every large file (the allocator returns big blocks to the kernel when freed).
    let (mut cur, mut next) = BIG_BUFS
        .with(|cell| cell.borrow_mut().take())
        .unwrap_or_else(|| (vec![0u8; CHUNK], vec![0u8; CHUNK]));
    let mut total = 0u64;
    let mut n = read_full(file, &mut cur)?;
    while n > 0 {
        let (read_next, ()) = rayon::join(
            || {
                sink(&cur[..n])?;
                if n == CHUNK {
                    read_full(file, &mut next)
                } else {
                    Ok(0)
                }
            },
            || {
                hasher.update_rayon(&cur[..n]);
            },
        );
        total += n as u64;
        n = read_next?;
        std::mem::swap(&mut cur, &mut next);
    }
    BIG_BUFS.with(|cell| *cell.borrow_mut() = Some((cur, next)));
    Ok((*hasher.finalize().as_bytes(), total))
}

/// Reads until `buf` is full or end of file.
pub fn read_full(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Result of hashing one regular file.
#[derive(Debug, Clone, Copy)]
pub struct Hashed {
    pub digest: Digest,
    pub stamp: Stamp,
}

/// Outcome of [`hash_file`] for something that is not a regular file at open time.
#[derive(Debug)]
pub enum HashOutcome {
    File(Hashed),
    /// Not a regular file any more (FIFO, socket, device): skipped by the walk.
    NotRegular,
}

/// Opens and hashes a regular file, checking that it did not change while it was read.
/// A file that vanished, shrank, grew, or was modified in the meantime is `IN_FLUX`.
pub fn hash_file(path: &Path, no_follow: bool) -> Result<HashOutcome> {
    hash_file_observed(path, no_follow, |_| {})
}

/// [`hash_file`], calling `observe` with every chunk read (tests use it to change the file
/// mid-read and prove the change is caught).
pub fn hash_file_observed(
    path: &Path,
    no_follow: bool,
    observe: impl FnMut(&[u8]) + Send,
) -> Result<HashOutcome> {
    hash_opened(open_nonblocking(path, no_follow), path, no_follow, observe)
}

/// Hashes a file opened by the caller (the walker opens relative to its directory), with the
/// same checks as [`hash_file`]; `path` is for messages.
pub fn hash_opened(
    opened: io::Result<File>,
    path: &Path,
    no_follow: bool,
    mut observe: impl FnMut(&[u8]) + Send,
) -> Result<HashOutcome> {
    hash_opened_into(opened, path, no_follow, |c| {
        observe(c);
        Ok(())
    })
}

/// [`hash_opened`], handing every chunk read to `sink` too (the `file://` push copies into
/// the store this way, so each byte is read once). An error of the sink stops the read and
/// is returned as a read error of `path`: a sink that must report its own failure keeps it
/// and replaces the error.
pub fn hash_opened_into(
    opened: io::Result<File>,
    path: &Path,
    no_follow: bool,
    sink: impl FnMut(&[u8]) -> io::Result<()> + Send,
) -> Result<HashOutcome> {
    hash_checked(opened, path, no_follow, |f, size| {
        hash_stream_opt(f, size, true, sink)
    })
}

/// [`hash_opened_into`] for a sink that keeps holes: a large file with holes is handed
/// over as [`crate::sparse::Piece`]s, its holes as counts of zeros that were not read (the
/// `file://` push leaves them as holes in the store); any other file as data.
pub fn hash_opened_pieces(
    opened: io::Result<File>,
    path: &Path,
    no_follow: bool,
    mut sink: impl FnMut(crate::sparse::Piece<'_>) -> io::Result<()> + Send,
) -> Result<HashOutcome> {
    use crate::sparse::{first_hole, hash_sparse, may_be_sparse, Piece};
    hash_checked(opened, path, no_follow, |f, size| {
        if size >= PARALLEL_THRESHOLD
            && may_be_sparse(&f.metadata()?)
            && first_hole(f, size).is_some()
        {
            return hash_sparse(f, size.saturating_add(1), &mut sink);
        }
        hash_stream_opt(f, size, true, |c| sink(Piece::Data(c)))
    })
}

/// [`hash_opened`] with nothing to observe: large files are hashed through a mapping
/// (see [`hash_sized`]). The walker uses it when it only hashes.
pub fn hash_opened_mapped(
    opened: io::Result<File>,
    path: &Path,
    no_follow: bool,
) -> Result<HashOutcome> {
    hash_checked(opened, path, no_follow, |f, size| hash_sized(f, size))
}

/// Hashes a file whose size the caller knows (and checks against the count returned):
/// through a mapping when it is large, else in one `read` of `size + 1` bytes. A file
/// truncated while it was mapped is an error of kind [`io::ErrorKind::UnexpectedEof`].
pub fn hash_sized(file: &File, size: u64) -> io::Result<(Digest, u64)> {
    if size >= crate::mapped::MAP_THRESHOLD {
        // Holes are hashed as zeros without being read: no page of cache for them, and a
        // file of holes hashes at the speed of BLAKE3 over zeros.
        if let Some(done) = crate::sparse::hash_if_sparse(file, size, size.saturating_add(1))? {
            return Ok(done);
        }
        if let Some(done) = crate::mapped::hash_mapped(file, size)? {
            return Ok(done);
        }
    }
    let mut limited = io::Read::take(file, size.saturating_add(1));
    hash_stream_opt(&mut limited, size, true, |_| Ok(()))
}

/// Hashes a whole file that should hold `size` bytes, as [`hash_sized`] does (mapped, holes
/// not read), and returns its real length as the count when that is not `size`: the caller's
/// comparison of the count with `size` then also catches a file that is longer than
/// expected (which [`hash_sized`] alone, hashing `size` bytes of a mapping, would not).
pub fn hash_whole(file: &File, size: u64) -> io::Result<(Digest, u64)> {
    let len = file.metadata()?.len();
    let (d, n) = hash_sized(file, size)?;
    Ok((d, if len == size { n } else { len }))
}

/// Opens, checks the type, hashes with `hash` and checks that nothing changed meanwhile
/// (the shared part of [`hash_opened_into`] and [`hash_opened_mapped`]).
fn hash_checked(
    opened: io::Result<File>,
    path: &Path,
    no_follow: bool,
    hash: impl FnOnce(&mut File, u64) -> io::Result<(Digest, u64)>,
) -> Result<HashOutcome> {
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::in_flux(path, "it vanished"))
        }
        Err(e) if no_follow && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::in_flux(path, "it became a symbolic link"))
        }
        Err(e) => return Err(Error::io("cannot open", path, e)),
    };
    let before = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if !before.file_type().is_file() {
        return Ok(HashOutcome::NotRegular);
    }
    let stamp = Stamp::of(&before);
    let (digest, n) = hash(&mut f, stamp.size).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::in_flux(path, "it was truncated while it was read")
        } else {
            Error::io("cannot read", path, e)
        }
    })?;
    let after = f
        .metadata()
        .map_err(|e| Error::io("cannot stat", path, e))?;
    if n != stamp.size || !stamp.same_content(&Stamp::of(&after)) {
        return Err(Error::in_flux(
            path,
            "its size or modification time changed",
        ));
    }
    Ok(HashOutcome::File(Hashed { digest, stamp }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_equals_plain() {
        let data: Vec<u8> = (0..(5 * CHUNK + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut r = &data[..];
        let mut copied = Vec::new();
        let (d, n) = hash_stream(&mut r, data.len() as u64, |c| {
            copied.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(n as usize, data.len());
        assert_eq!(copied, data);
        assert_eq!(&d, blake3::hash(&data).as_bytes());
        // A wrong (small) size hint still reads everything.
        let mut r = &data[..];
        let (d2, n2) = hash_stream(&mut r, 10, |_| Ok(())).unwrap();
        assert_eq!((d2, n2), (d, n));
    }

    #[test]
    fn change_during_read_is_in_flux() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        for size in [10usize, 3 * CHUNK] {
            let p = dir.path().join(format!("f{size}"));
            std::fs::write(&p, vec![7u8; size]).unwrap();
            let err = hash_file_observed(&p, false, |_| {
                let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
                f.write_all(b"more").unwrap();
            })
            .unwrap_err();
            assert_eq!(err.code, crate::Code::InFlux, "{err}");
            assert!(err.message.contains(&format!("f{size}")), "{err}");
        }
    }

    #[test]
    fn hash_whole_counts_a_file_longer_than_expected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("obj");
        let data = vec![3u8; 2 << 20]; // mapped
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let (d, n) = hash_whole(&f, data.len() as u64).unwrap();
        assert_eq!((&d, n), (blake3::hash(&data).as_bytes(), data.len() as u64));
        // Extended after it was stored: the first `size` bytes still hash to the key, the
        // count says the file is not the object.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .set_len(data.len() as u64 + 10)
            .unwrap();
        let (_, n) = hash_whole(&f, data.len() as u64).unwrap();
        assert_eq!(n, data.len() as u64 + 10);
    }

    #[test]
    fn vanished_file_is_in_flux_and_fifo_is_not_regular() {
        let dir = tempfile::tempdir().unwrap();
        let err = hash_file(&dir.path().join("gone"), false).unwrap_err();
        assert_eq!(err.code, crate::Code::InFlux);
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            hash_file(&fifo, false).unwrap(),
            HashOutcome::NotRegular
        ));
    }
}
