//! Directory-relative file operations (`openat` family) that never follow a symbolic link.
//!
//! Materialising a snapshot from an untrusted store must not be redirected by a link that
//! already sits in the destination: every step below resolves one name inside an already
//! opened directory, with `O_NOFOLLOW`, so the kernel refuses to cross a link.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
unsafe fn errno_ptr() -> *mut libc::c_int {
    unsafe { libc::__error() }
}

#[cfg(not(any(target_os = "macos", target_os = "ios", target_os = "freebsd")))]
unsafe fn errno_ptr() -> *mut libc::c_int {
    unsafe { libc::__errno_location() }
}

/// `O_NOFOLLOW` unless a final link may be followed.
fn nofollow(follow: bool) -> libc::c_int {
    if follow {
        0
    } else {
        libc::O_NOFOLLOW
    }
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// What a name in a directory is, without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File { size: u64, mode: u32 },
    Dir { mode: u32 },
    Symlink,
    Other,
}

/// `st_mode & 0o7777` (mode_t is u16 on macOS, u32 on Linux).
#[allow(clippy::unnecessary_cast)]
pub fn perm_bits(st: &libc::stat) -> u32 {
    st.st_mode as u32 & 0o7777
}

/// What an `lstat` result is.
// mode_t is u16 on macOS and u32 on Linux: the casts are needed on one of them.
#[allow(clippy::unnecessary_cast)]
pub fn kind_of(st: &libc::stat) -> Kind {
    let mode = st.st_mode as u32;
    match mode & libc::S_IFMT as u32 {
        m if m == libc::S_IFREG as u32 => Kind::File {
            size: st.st_size as u64,
            mode: mode & 0o7777,
        },
        m if m == libc::S_IFDIR as u32 => Kind::Dir {
            mode: mode & 0o7777,
        },
        m if m == libc::S_IFLNK as u32 => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// The longest path handed to the kernel in one `open`/`openat`: below `PATH_MAX` (4,096
/// bytes with its NUL on Linux, 1,024 on macOS, where `open_path` then simply fails as before).
const PATH_CHUNK: usize = 4000;

/// Flags for the directories passed through on the way to a long path's last component:
/// they only need to be searched, not read (`O_PATH` also works in a directory the walker
/// may enter but not list, as a path lookup would).
#[cfg(target_os = "linux")]
const PASS_THROUGH: libc::c_int = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
#[cfg(not(target_os = "linux"))]
const PASS_THROUGH: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;

/// `open(path, flags, mode)` that also works for a path longer than `PATH_MAX` (as `tar` and
/// `rsync` do): such a path is resolved in pieces of fewer than 4,000 bytes cut at `/`, each
/// relative to the directory the previous piece opened. Every piece is resolved as the whole
/// path would have been (links in the middle are followed; `flags` apply to the last piece).
pub fn open_path(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    let mut at: Option<OwnedFd> = None;
    let mut rest = bytes;
    while rest.len() >= PATH_CHUNK {
        // Cut at the last `/` of the window (names are at most 255 bytes, so there is one).
        let cut = rest[..PATH_CHUNK]
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
        // An absolute path's first piece keeps its leading `/`.
        let piece = if cut == 0 { &rest[..1] } else { &rest[..cut] };
        let dirfd = at.as_ref().map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
        let c = cstr(piece)?;
        let fd = check(unsafe { libc::openat(dirfd, c.as_ptr(), PASS_THROUGH) })?;
        at = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        rest = &rest[cut + 1..];
        while let [b'/', tail @ ..] = rest {
            rest = tail;
        }
    }
    if rest.is_empty() {
        rest = b".";
    }
    let dirfd = at.as_ref().map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let c = cstr(rest)?;
    let fd = check(unsafe { libc::openat(dirfd, c.as_ptr(), flags, mode as libc::c_uint) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// (device, inode): which file a descriptor or a name refers to.
pub type FileId = (u64, u64);

/// The [`FileId`] of a `stat` result.
#[allow(clippy::unnecessary_cast)]
pub fn file_id(st: &libc::stat) -> FileId {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The [`FileId`] of an open file.
pub fn fd_id(f: &impl AsRawFd) -> io::Result<FileId> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(f.as_raw_fd(), &mut st) })?;
    Ok(file_id(&st))
}

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens a directory by path (following links: the caller chose this path); a path
    /// longer than `PATH_MAX` is opened piece by piece ([`open_path`]).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = open_path(
            path,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )?;
        Ok(Dir { fd })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A second descriptor for the same open directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
        })
    }

    /// (device, inode) of the directory itself: what a later re-open is checked against.
    pub fn id(&self) -> io::Result<FileId> {
        Ok(file_id(&self.stat()?))
    }

    /// `openat(self, name, flags, mode)` as a file (the caller picks the flags).
    pub fn open_flags(&self, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<File> {
        Ok(File::from(self.openat(
            name,
            flags | libc::O_CLOEXEC,
            mode,
        )?))
    }

    /// Gives the file at `src` (a path outside the destination, e.g. a cache object) the
    /// name `name` in this directory (a hard link; fails if `name` exists).
    pub fn link_from(&self, src: &Path, name: &[u8]) -> io::Result<()> {
        let (a, b) = (cstr(src.as_os_str().as_bytes())?, cstr(name)?);
        check(unsafe { libc::linkat(libc::AT_FDCWD, a.as_ptr(), self.raw(), b.as_ptr(), 0) })
            .map(|_| ())
    }

    /// Opens the sub-directory `name`, refusing links.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<Dir> {
        self.open_dir_at(name, false)
    }

    /// Opens the sub-directory `name`, following a final link when `follow`.
    pub fn open_dir_at(&self, name: &[u8], follow: bool) -> io::Result<Dir> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let fd = self.openat(name, flags | nofollow(follow), 0)?;
        Ok(Dir { fd })
    }

    /// Opens `name` for reading without blocking on FIFOs; refuses a final link unless
    /// `follow`.
    pub fn open_file_at(&self, name: &[u8], follow: bool) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC;
        Ok(File::from(self.openat(
            name,
            flags | nofollow(follow),
            0,
        )?))
    }

    /// `fstatat` of `name` (following a final link when `follow`).
    pub fn stat_at(&self, name: &[u8], follow: bool) -> io::Result<libc::stat> {
        let c = cstr(name)?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        check(unsafe { libc::fstatat(self.raw(), c.as_ptr(), &mut st, flags) })?;
        Ok(st)
    }

    /// The directory containing this one (`openat(self, "..")`): how a deep walk gets back
    /// to an ancestor whose descriptor it closed. The caller checks that it is the one it
    /// left (a directory moved meanwhile has another parent).
    pub fn open_parent(&self) -> io::Result<Dir> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let fd = self.openat(b"..", flags, 0)?;
        Ok(Dir { fd })
    }

    /// `fstat` of the directory itself.
    pub fn stat(&self) -> io::Result<libc::stat> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(self.raw(), &mut st) })?;
        Ok(st)
    }

    /// The entries of this directory with their `d_type` (`DT_UNKNOWN` where the file system
    /// does not say).
    pub fn list_typed(&self) -> io::Result<Vec<(Vec<u8>, u8)>> {
        let fd = check(unsafe { libc::fcntl(self.raw(), libc::F_DUPFD_CLOEXEC, 0) })?;
        let dirp = unsafe { libc::fdopendir(fd) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(e);
        }
        unsafe { libc::rewinddir(dirp) };
        let mut out = Vec::new();
        loop {
            unsafe { *errno_ptr() = 0 };
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                let errno = unsafe { *errno_ptr() };
                unsafe { libc::closedir(dirp) };
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                break;
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                out.push((name.to_vec(), unsafe { (*ent).d_type }));
            }
        }
        Ok(out)
    }

    /// Opens the regular file `name` for reading, refusing links (and not blocking on FIFOs).
    pub fn open_read(&self, name: &[u8]) -> io::Result<File> {
        self.open_file_at(name, false)
    }

    /// Creates `name` exclusively (fails if anything exists there, link or not).
    pub fn create_new(&self, name: &[u8], mode: u32) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        Ok(File::from(self.openat(
            name,
            flags | libc::O_CLOEXEC,
            mode,
        )?))
    }

    /// `openat(self, name, flags, mode)` as an owned descriptor.
    fn openat(&self, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let c = cstr(name)?;
        let fd =
            check(unsafe { libc::openat(self.raw(), c.as_ptr(), flags, mode as libc::c_uint) })?;
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        let c = cstr(name)?;
        check(unsafe { libc::mkdirat(self.raw(), c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
    }

    /// `lstat` of `name` in this directory.
    pub fn kind(&self, name: &[u8]) -> io::Result<Kind> {
        Ok(self.lstat(name)?.as_ref().map_or(Kind::Missing, kind_of))
    }

    /// `lstat` of `name` in this directory; `None` when there is no such entry.
    pub fn lstat(&self, name: &[u8]) -> io::Result<Option<libc::stat>> {
        let c = cstr(name)?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r =
            unsafe { libc::fstatat(self.raw(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(st))
    }

    /// Renames `from` in this directory to `to` in `dest` (replacing a file or link there).
    pub fn rename_to(&self, from: &[u8], dest: &Dir, to: &[u8]) -> io::Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        check(unsafe { libc::renameat(self.raw(), a.as_ptr(), dest.raw(), b.as_ptr()) }).map(|_| ())
    }

    /// Gives the file `from` in this directory a second name `to` in `dest` (a hard link;
    /// fails if `to` exists). Links are not followed.
    pub fn link_to(&self, from: &[u8], dest: &Dir, to: &[u8]) -> io::Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        check(unsafe { libc::linkat(self.raw(), a.as_ptr(), dest.raw(), b.as_ptr(), 0) })
            .map(|_| ())
    }

    /// Removes a file or link (`is_dir == false`) or an empty directory.
    pub fn unlink(&self, name: &[u8], is_dir: bool) -> io::Result<()> {
        let c = cstr(name)?;
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), flags) }).map(|_| ())
    }

    /// Removes whatever `name` is; directories recursively, never following links.
    pub fn remove_all(&self, name: &[u8]) -> io::Result<()> {
        match self.kind(name)? {
            Kind::Missing => Ok(()),
            Kind::Dir { .. } => {
                let sub = self.open_dir(name)?;
                let _ = sub.chmod(0o700);
                for child in sub.list()? {
                    sub.remove_all(&child)?;
                }
                self.unlink(name, true)
            }
            _ => self.unlink(name, false),
        }
    }

    /// The names in this directory (without `.` and `..`).
    pub fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        // Duplicate the descriptor: read_dir consumes a path, so go through /proc-free fdopendir.
        let fd = check(unsafe { libc::fcntl(self.raw(), libc::F_DUPFD_CLOEXEC, 0) })?;
        let dirp = unsafe { libc::fdopendir(fd) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(e);
        }
        unsafe { libc::rewinddir(dirp) };
        let mut out = Vec::new();
        loop {
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                break;
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                out.push(name.to_vec());
            }
        }
        unsafe { libc::closedir(dirp) };
        Ok(out)
    }

    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        check(unsafe { libc::fchmod(self.raw(), mode as libc::mode_t) }).map(|_| ())
    }

    pub fn sync(&self) -> io::Result<()> {
        check(unsafe { libc::fsync(self.raw()) }).map(|_| ())
    }
}

/// `fchmod` of an open file.
pub fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) }).map(|_| ())
}

/// A failed copy, saying which side failed (so a full disk is blamed on the destination).
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    /// The core error, naming the side that failed.
    pub fn at(self, src: &Path, dst: &Path) -> crate::Error {
        match self {
            CopyError::Read(e) => crate::Error::io("cannot read", src, e),
            CopyError::Write(e) => crate::Error::io("cannot write", dst, e),
        }
    }
}

/// Copies everything from `src` to `dst` while hashing it; returns (digest, bytes).
/// All-zero blocks are left as holes where `dst` is new (see [`crate::sparse::HoleWriter`]):
/// a sparse object stays sparse in every copy.
pub fn copy_hashing(
    src: &mut (impl std::io::Read + Send),
    dst: &mut File,
    size_hint: u64,
) -> Result<([u8; 32], u64), CopyError> {
    copy_hashing_cancellable(src, dst, size_hint, None)
}

/// [`copy_hashing`] that gives up between chunks once `cancel` is set, so that Ctrl-C does
/// not wait for a multi-GiB object to be copied to the end; the error is a write error of
/// kind `Interrupted`.
pub fn copy_hashing_cancellable(
    src: &mut (impl std::io::Read + Send),
    dst: &mut File,
    size_hint: u64,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<([u8; 32], u64), CopyError> {
    let mut out = crate::sparse::HoleWriter::new(dst).map_err(CopyError::Write)?;
    let out_file: &File = dst;
    let mut write_error: Option<io::Error> = None;
    let r = crate::hash::hash_stream(src, size_hint, |chunk| {
        if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            write_error = Some(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        out.write(out_file, chunk).map_err(|e| {
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

/// An unnamed file in `dir` (Linux `O_TMPFILE`), mode 0644, or `None` where the file system
/// or kernel does not support it (the caller then uses a temporary name).
pub fn open_unnamed(dir: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
            return None;
        }
        let c = cstr(dir.as_os_str().as_bytes()).ok()?;
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            return None;
        }
        let f = unsafe { File::from_raw_fd(fd) };
        // Always: the umask may change at any time in the process (it is not ours).
        if fchmod(&f, 0o644).is_err() {
            return None;
        }
        Some(f)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// Gives an [`open_unnamed`] file the name `dst` (fails with `AlreadyExists` if taken).
pub fn link_unnamed(f: &File, dst: &Path) -> io::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", f.as_raw_fd());
    let (a, b) = (
        cstr(proc_path.as_bytes())?,
        cstr(dst.as_os_str().as_bytes())?,
    );
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(|_| ())
}

/// Makes `dst` share `src`'s data blocks (copy-on-write: Linux `FICLONE`, as
/// `cp --reflink=always`). Fails with `EOPNOTSUPP`/`EXDEV`/`EINVAL` where the file system
/// cannot (ext4, tmpfs, two file systems); see [`clone_unsupported`].
pub fn clone_file(src: &File, dst: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // _IOW(0x94, 9, int)
        const FICLONE: libc::c_ulong = 0x4004_9409;
        check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) }).map(|_| ())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (src, dst);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}

/// Whether a failed [`clone_file`] means "this file system (pair) cannot clone", as opposed
/// to an I/O error.
pub fn clone_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY | libc::ENOSYS)
    )
}

/// A readable name for the file system holding `path` ("ext4", "xfs", "tmpfs", ... or its
/// magic number), for messages that explain why a link or clone is impossible there.
pub fn fs_name(path: &Path) -> String {
    #[cfg(target_os = "linux")]
    {
        let Ok(c) = cstr(path.as_os_str().as_bytes()) else {
            return "unknown".to_owned();
        };
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut sfs) } != 0 {
            return "unknown".to_owned();
        }
        #[allow(clippy::unnecessary_cast)]
        let magic = sfs.f_type as i64;
        match magic {
            0xEF53 => "ext2/3/4".to_owned(),
            0x5846_5342 => "xfs".to_owned(),
            0x9123_683E => "btrfs".to_owned(),
            0x0102_1994 => "tmpfs".to_owned(),
            0x2FC1_2FC1 => "zfs".to_owned(),
            0xF2F5_2010 => "f2fs".to_owned(),
            0xCA45_1A4E => "bcachefs".to_owned(),
            0x794C_7630 => "overlayfs".to_owned(),
            0x6969 => "nfs".to_owned(),
            0xFF53_4D42 => "cifs".to_owned(),
            0x6573_5546 => "fuse".to_owned(),
            0x4d44 => "vfat".to_owned(),
            m => format!("file system 0x{m:x}"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        "unknown".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn open_path_opens_paths_longer_than_path_max() {
        let dir = tempfile::tempdir().unwrap();
        let name = "n".repeat(250);
        let mut deep = dir.path().to_path_buf();
        for _ in 0..40 {
            deep.push(&name);
        }
        // Made level by level: a whole-path mkdir would fail like the open below.
        let mut d = Dir::open(dir.path()).unwrap();
        for _ in 0..40 {
            d.mkdir(name.as_bytes(), 0o755).unwrap();
            d = d.open_dir(name.as_bytes()).unwrap();
        }
        d.create_new(b"f", 0o644)
            .unwrap()
            .write_all(b"deep")
            .unwrap();
        let file = deep.join("f");
        assert!(file.as_os_str().len() > 10_000);
        // One `open` of the whole path cannot; piece by piece can, with the flags given.
        let whole = std::fs::File::open(&file).unwrap_err();
        assert_eq!(whole.raw_os_error(), Some(libc::ENAMETOOLONG));
        let mut s = String::new();
        File::from(open_path(&file, libc::O_RDONLY | libc::O_CLOEXEC, 0).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "deep");
        let mut h = crate::hash::open_nonblocking(&file, true).unwrap();
        s.clear();
        h.read_to_string(&mut s).unwrap();
        assert_eq!(s, "deep");
        assert!(Dir::open(&deep).is_ok());
        let missing = open_path(&deep.join("nope"), libc::O_RDONLY, 0).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
    }
}
