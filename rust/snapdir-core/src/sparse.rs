//! Sparse files: holes are read as what they are and written as what they were.
//!
//! A file of holes (a VM image, a preallocated database, `truncate -s 10G`) is mostly
//! nothing on disk; read front to back it is gigabytes of zeros that the page cache must
//! materialise, and written front to back it allocates every one of them. Two pieces keep
//! it sparse through hashing, the store, the cache and a pull:
//!
//! * reading: [`hash_sparse`] asks the file system where the data is (`SEEK_DATA` /
//!   `SEEK_HOLE`) and reads only that; a hole is hashed from a static buffer of zeros (BLAKE3
//!   must still see every zero byte: the digest is the digest of the content, holes or not),
//!   without a read, a page fault or a page of cache;
//! * writing: [`HoleWriter`] writes a stream at increasing offsets and skips every
//!   all-zero block (aligned to [`BLOCK`] in the file) instead of writing it, then sets the
//!   length at the end. It sees only bytes, so an object downloaded from a cloud store, or
//!   a source file whose holes were filled with zeros, is written sparse just the same.
//!
//! Neither changes a byte of content: only which ranges of the destination are left
//! unallocated.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::manifest::Digest;

/// A range of zeros this long (aligned to it in the file) is left as a hole. File systems
/// allocate in blocks of 4 KiB (ext4, XFS, btrfs, tmpfs pages): a smaller zero range inside
/// a written block would be allocated anyway.
pub const BLOCK: u64 = 4096;

/// Zeros to hash a hole from. In `.bss`, never written: every page of it is the kernel's
/// one zero page, so hashing a hole reads the same few KiB of cache again and again.
static ZEROS: [u8; 4 << 20] = [0u8; 4 << 20];

/// Data extents are read this much at a time.
const READ_CHUNK: usize = 1 << 20;

/// Whether every byte of `b` is zero. The first bytes decide for nearly every block of
/// real data; a block that starts with zeros is OR-folded whole (no early exit, so the
/// compiler vectorises it).
pub fn is_zero(b: &[u8]) -> bool {
    let head = b.len().min(16);
    if b[..head].iter().any(|&x| x != 0) {
        return false;
    }
    b[head..].iter().fold(0u8, |acc, &x| acc | x) == 0
}

/// Writes a stream of bytes at increasing offsets of a file, leaving a hole wherever a
/// whole aligned [`BLOCK`] of the stream is zero, and giving the file its length in
/// [`HoleWriter::finish`] (a stream that ends in zeros ends in a hole).
///
/// A hole is only ever left where the file reads zero already: from the end of the file
/// onwards. A writer started anywhere else (or on a file opened with `O_APPEND`, where a
/// positioned write would not land where it should) writes every byte as before.
#[derive(Debug)]
pub struct HoleWriter {
    /// Where the next byte of the stream goes in the file.
    pos: u64,
    /// Holes may be left (see above); otherwise a plain sequential writer.
    sparse: bool,
}

impl HoleWriter {
    /// A writer that continues `file` at its current position (offset 0 for a new file).
    pub fn new(file: &File) -> io::Result<HoleWriter> {
        let pos = (&mut &*file).stream_position()?;
        let len = file.metadata()?.len();
        // SAFETY: F_GETFL only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        let sparse = pos == len && flags >= 0 && flags & libc::O_APPEND == 0;
        Ok(HoleWriter { pos, sparse })
    }

    /// A writer for a file known to read zero from `pos` on (a file created empty and
    /// written only by this writer): the descriptor's position is not used.
    pub fn at(pos: u64) -> HoleWriter {
        HoleWriter { pos, sparse: true }
    }

    /// Bytes of the stream placed so far, counted from offset 0 of the file.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes `data` at the current position, skipping all-zero aligned blocks.
    pub fn write(&mut self, file: &File, data: &[u8]) -> io::Result<()> {
        if !self.sparse {
            (&mut &*file).write_all(data)?;
            self.pos += data.len() as u64;
            return Ok(());
        }
        // Runs of blocks that are not all zero are written with one call each.
        let mut run: Option<usize> = None;
        let mut i = 0usize;
        while i < data.len() {
            let off = self.pos + i as u64;
            let end = data.len().min(i + (BLOCK - off % BLOCK) as usize);
            if is_zero(&data[i..end]) {
                if let Some(s) = run.take() {
                    file.write_all_at(&data[s..i], self.pos + s as u64)?;
                }
            } else if run.is_none() {
                run = Some(i);
            }
            i = end;
        }
        if let Some(s) = run {
            file.write_all_at(&data[s..], self.pos + s as u64)?;
        }
        self.pos += data.len() as u64;
        Ok(())
    }

    /// `n` zero bytes: a hole (or, for a writer that cannot leave holes, zeros written).
    pub fn skip(&mut self, file: &File, mut n: u64) -> io::Result<()> {
        if self.sparse {
            self.pos += n;
            return Ok(());
        }
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.write(file, &ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Gives the file the length of everything written (a trailing hole is not written,
    /// so only the length says it is there) and leaves its position at the end.
    pub fn finish(&self, file: &File) -> io::Result<()> {
        if self.sparse {
            if file.metadata()?.len() < self.pos {
                file.set_len(self.pos)?;
            }
            (&mut &*file).seek(io::SeekFrom::Start(self.pos))?;
        }
        Ok(())
    }
}

/// One piece of a file read by [`hash_sparse`].
#[derive(Debug)]
pub enum Piece<'a> {
    /// Bytes read from a data extent.
    Data(&'a [u8]),
    /// A hole: this many zero bytes, not read.
    Zeros(u64),
}

/// Whether the file with this metadata may have holes: fewer blocks allocated than its
/// size needs. (A compressed or deduplicated file may say so too; [`hash_sparse`] then
/// finds no hole and the caller reads it as usual.)
pub fn may_be_sparse(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.blocks().saturating_mul(512) < meta.size()
}

/// `lseek(fd, off, whence)` for `SEEK_DATA` / `SEEK_HOLE`: `None` for `ENXIO` (no data at
/// or after `off`).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn seek_extent(file: &File, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let Ok(o) = libc::off_t::try_from(off) else {
        return Ok(None);
    };
    // SAFETY: lseek on a descriptor we hold; it only moves the file offset, which the
    // sparse reader does not use (it reads with pread).
    let r = unsafe { libc::lseek(file.as_raw_fd(), o, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as u64))
}

/// The first hole of `file` before `size`, or `None` when it has none (or the system cannot
/// tell: `SEEK_HOLE` unsupported). A data-only file is read as usual by the caller.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub fn first_hole(file: &File, size: u64) -> Option<u64> {
    match seek_extent(file, 0, libc::SEEK_HOLE) {
        Ok(Some(h)) if h < size => Some(h),
        _ => None,
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub fn first_hole(_file: &File, _size: u64) -> Option<u64> {
    None
}

/// Hashes (BLAKE3) the first `limit` bytes of `file` (or all of it when shorter), reading
/// only its data extents and hashing its holes as zeros; every piece also goes to `sink`
/// in order. Returns the digest and the number of bytes (a caller that passes its
/// expected size + 1 as `limit` sees a file that is longer than expected as a count one
/// too high, as with a bounded read).
///
/// The length is taken from `fstat` when the call begins and the extents as they are met:
/// a file changed meanwhile hashes to something else, which the callers check (the walk's
/// before/after `fstat`, a key that does not match).
pub fn hash_sparse(
    file: &File,
    limit: u64,
    mut sink: impl FnMut(Piece<'_>) -> io::Result<()>,
) -> io::Result<(Digest, u64)> {
    let len = file.metadata()?.len();
    let end = len.min(limit);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut off = 0u64;
    while off < end {
        let data = next_data(file, off)?.unwrap_or(end).min(end);
        // A hole, hashed (and handed to the sink) a buffer of zeros at a time: a sink that
        // checks for cancellation sees a long hole in pieces too.
        while off < data {
            let k = (data - off).min(ZEROS.len() as u64);
            hasher.update_rayon(&ZEROS[..k as usize]);
            sink(Piece::Zeros(k))?;
            off += k;
        }
        if off >= end {
            break;
        }
        let stop = next_hole(file, off)?.unwrap_or(end).min(end);
        while off < stop {
            // Reads stay aligned to READ_CHUNK in the file, so BLAKE3's chunks do too.
            let want = (stop - off).min(READ_CHUNK as u64 - off % READ_CHUNK as u64) as usize;
            let n = read_at(file, &mut buf[..want], off)?;
            if n == 0 {
                // Shorter than it was a moment ago: what was read is all there is.
                return Ok((*hasher.finalize().as_bytes(), off));
            }
            hasher.update_rayon(&buf[..n]);
            sink(Piece::Data(&buf[..n]))?;
            off += n as u64;
        }
    }
    Ok((*hasher.finalize().as_bytes(), off))
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn next_data(file: &File, off: u64) -> io::Result<Option<u64>> {
    seek_extent(file, off, libc::SEEK_DATA)
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn next_hole(file: &File, off: u64) -> io::Result<Option<u64>> {
    seek_extent(file, off, libc::SEEK_HOLE)
}

// Without SEEK_DATA / SEEK_HOLE everything is data ([`first_hole`] says `None`, so callers
// do not get here anyway).
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn next_data(_file: &File, off: u64) -> io::Result<Option<u64>> {
    Ok(Some(off))
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn next_hole(_file: &File, _off: u64) -> io::Result<Option<u64>> {
    Ok(None)
}

/// `pread` until `buf` is full or end of file.
fn read_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// If `file` has a hole before `size`: its digest and length, hashed by [`hash_sparse`]
/// without reading the holes. `None`: no hole (or no way to tell), hash it as usual.
pub fn hash_if_sparse(file: &File, size: u64, limit: u64) -> io::Result<Option<(Digest, u64)>> {
    let meta = file.metadata()?;
    if !may_be_sparse(&meta) || first_hole(file, size).is_none() {
        return Ok(None);
    }
    hash_sparse(file, limit, |_| Ok(())).map(Some)
}

/// Copies the first `limit` bytes of `src` to `dst` (a new, empty file) while hashing
/// them, keeping holes: the holes of a sparse source are neither read nor written, and
/// all-zero blocks of its data are not written either (see [`HoleWriter`]). Returns the
/// digest and the number of bytes, as [`crate::fsx::copy_hashing`] does (which it is,
/// for a source without holes). `cancel` is checked between pieces.
pub fn copy_file_hashing(
    src: &mut File,
    dst: &mut File,
    size_hint: u64,
    limit: u64,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<([u8; 32], u64), crate::fsx::CopyError> {
    use crate::fsx::CopyError;
    let meta = src.metadata().map_err(CopyError::Read)?;
    if !may_be_sparse(&meta) || first_hole(src, meta.len().min(limit)).is_none() {
        let mut bounded = io::Read::take(src, limit);
        return crate::fsx::copy_hashing_cancellable(&mut bounded, dst, size_hint, cancel);
    }
    let mut out = HoleWriter::new(dst).map_err(CopyError::Write)?;
    let mut write_error: Option<io::Error> = None;
    let out_file: &File = dst;
    let r = hash_sparse(src, limit, |piece| {
        if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            write_error = Some(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let done = match piece {
            Piece::Data(b) => out.write(out_file, b),
            Piece::Zeros(n) => out.skip(out_file, n),
        };
        done.map_err(|e| {
            let kind = e.kind();
            write_error = Some(e);
            io::Error::from(kind)
        })
    });
    match (r, write_error) {
        (Ok(v), _) => {
            out.finish(out_file).map_err(CopyError::Write)?;
            Ok(v)
        }
        (Err(_), Some(w)) => Err(CopyError::Write(w)),
        (Err(e), None) => Err(CopyError::Read(e)),
    }
}

/// Writes `data` at offset `pos` of the open file `fd` as [`HoleWriter`] would (all-zero
/// aligned blocks left as holes). For a file created empty and written only at increasing
/// offsets: a download, whose writer gives the file its length at the end.
pub fn write_at_sparse(file: &File, pos: u64, data: &[u8]) -> io::Result<()> {
    HoleWriter::at(pos).write(file, data)
}

/// The bytes a file occupies on disk (its allocated blocks).
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.blocks().saturating_mul(512)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sparse_file(dir: &std::path::Path, name: &str, size: u64, data: &[(u64, &[u8])]) -> File {
        let p = dir.join(name);
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.set_len(size).unwrap();
        for (at, bytes) in data {
            f.write_all_at(bytes, *at).unwrap();
        }
        f.sync_all().unwrap();
        f
    }

    fn dense(size: u64, data: &[(u64, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; size as usize];
        for (at, bytes) in data {
            v[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
        }
        v
    }

    /// Whether this directory's file system keeps holes (tmpfs, ext4, xfs, btrfs do).
    fn keeps_holes(dir: &std::path::Path) -> bool {
        let f = sparse_file(dir, "probe", 64 << 20, &[]);
        let ok = allocated(&f.metadata().unwrap()) < (1 << 20);
        std::fs::remove_file(dir.join("probe")).unwrap();
        ok
    }

    #[test]
    fn zero_blocks_are_holes_and_data_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        let f = File::create(&p).unwrap();
        let mut w = HoleWriter::new(&f).unwrap();
        // Unaligned pieces: zeros, a data block straddling a block boundary, more zeros,
        // and a stream that ends in zeros (so only the length says where it ends).
        let mut stream = vec![0u8; 8 << 20];
        stream[(3 << 20) + 4000..(3 << 20) + 4200].fill(7);
        stream[5 << 20] = 1;
        for piece in stream.chunks(12_345) {
            w.write(&f, piece).unwrap();
        }
        w.skip(&f, 2 << 20).unwrap();
        w.finish(&f).unwrap();
        drop(f);
        let mut want = stream.clone();
        want.extend(vec![0u8; 2 << 20]);
        assert_eq!(std::fs::read(&p).unwrap(), want);
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 10 << 20);
        if keeps_holes(dir.path()) {
            // Three blocks of data (one run straddles a boundary): far below 10 MiB.
            assert!(
                allocated(&meta) <= 64 << 10,
                "{} allocated",
                allocated(&meta)
            );
        }
    }

    #[test]
    fn a_writer_that_cannot_leave_holes_writes_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, vec![9u8; 3 * BLOCK as usize]).unwrap();
        // Positioned at 0 over old bytes: zeros must overwrite them, not leave them.
        let f = File::options().write(true).open(&p).unwrap();
        let mut w = HoleWriter::new(&f).unwrap();
        w.write(&f, &[0u8; BLOCK as usize]).unwrap();
        w.skip(&f, BLOCK).unwrap();
        w.finish(&f).unwrap();
        drop(f);
        let got = std::fs::read(&p).unwrap();
        assert!(got[..2 * BLOCK as usize].iter().all(|&b| b == 0));
        assert!(got[2 * BLOCK as usize..].iter().all(|&b| b == 9));
        // Opened for appending: a positioned write would land at the end, so none is used.
        let f = File::options().append(true).open(&p).unwrap();
        let mut w = HoleWriter::new(&f).unwrap();
        w.write(&f, &[0u8; 10]).unwrap();
        w.finish(&f).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 * BLOCK + 10);
    }

    #[test]
    fn a_sparse_file_hashes_as_its_bytes_and_is_copied_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let size = 64u64 << 20;
        let extents: &[(u64, &[u8])] =
            &[(0, b"head"), (5 << 20, &[3u8; 10_000]), (size - 3, b"end")];
        let mut src = sparse_file(dir.path(), "src", size, extents);
        let want = dense(size, extents);
        let digest = *blake3::hash(&want).as_bytes();
        let holes = keeps_holes(dir.path());
        if holes {
            assert!(first_hole(&src, size).is_some());
            let (d, n) = hash_if_sparse(&src, size, size + 1)
                .unwrap()
                .expect("sparse");
            assert_eq!((d, n), (digest, size));
        }
        // The pieces are the file's bytes, holes as zeros.
        let mut rebuilt = Vec::new();
        let (d, n) = hash_sparse(&src, size + 1, |p| {
            match p {
                Piece::Data(b) => rebuilt.extend_from_slice(b),
                Piece::Zeros(k) => rebuilt.resize(rebuilt.len() + k as usize, 0),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!((d, n), (digest, size));
        assert!(rebuilt == want);
        // A limit below the size stops there (a bounded read).
        let (_, n) = hash_sparse(&src, 1000, |_| Ok(())).unwrap();
        assert_eq!(n, 1000);
        // Copied: same bytes, and (where the file system keeps holes) as sparse.
        let dst_path = dir.path().join("dst");
        let mut dst = File::create(&dst_path).unwrap();
        let (d, n) = copy_file_hashing(&mut src, &mut dst, size, size + 1, None).unwrap();
        assert_eq!((d, n), (digest, size));
        drop(dst);
        let mut back = Vec::new();
        File::open(&dst_path)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == want);
        if holes {
            let a = allocated(&std::fs::metadata(&dst_path).unwrap());
            assert!(a <= 1 << 20, "{a} bytes allocated for {size}");
        }
    }

    #[test]
    fn a_cancelled_sparse_copy_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = sparse_file(dir.path(), "src", 32 << 20, &[(1 << 20, b"x")]);
        let mut dst = File::create(dir.path().join("dst")).unwrap();
        let cancel = std::sync::atomic::AtomicBool::new(true);
        let err = copy_file_hashing(&mut src, &mut dst, 32 << 20, 32 << 20, Some(&cancel));
        if keeps_holes(dir.path()) {
            assert!(
                matches!(err, Err(crate::fsx::CopyError::Write(e)) if e.kind() == io::ErrorKind::Interrupted)
            );
        }
    }

    #[test]
    fn is_zero_finds_a_single_byte_anywhere() {
        let mut b = vec![0u8; 4096];
        assert!(is_zero(&b));
        for at in [0, 15, 16, 17, 2048, 4095] {
            b[at] = 1;
            assert!(!is_zero(&b), "{at}");
            b[at] = 0;
        }
        assert!(is_zero(&[]));
        assert!(!is_zero(&[0, 0, 1]));
    }
}
