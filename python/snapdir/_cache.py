"""The local cache: a ``file://`` store used by ``stage``, ``fetch`` and ``checkout``, and the
stat cache's files under ``<cache>/statcache``.

Location: ``$SNAPDIR_CACHE_DIR``, else ``$XDG_CACHE_HOME/snapdir``, else
``~/.cache/snapdir`` (SPEC §4).

What is in there is believed without being read again (a stat cache record stands for a
file's checksum; a cached object may be hard-linked into a checkout), so the directory must
be one nobody else can write to, as ssh requires of ``~/.ssh``: it and every directory above
it must be owned by this user or root, and not writable by group or others (a directory
above may be world-writable with the sticky bit, like ``/tmp``: others cannot then rename or
remove what is ours in it). An untrusted stat cache directory is ignored with a warning
(every file is hashed: the answer stays right); an untrusted object cache is refused with
:class:`~snapdir.UnsafePathError` (docs/statcache.md, "Who may write there").
"""

from __future__ import annotations

import contextlib
import os
import stat

from ._types import StoreUri

# `typing` costs ~4 ms at start-up and this module is on the path of every `snapdir id`
# (the stat cache lives in the cache directory); annotations only need it for the type
# checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from .stores.file import FileStore

__all__ = [
    "LOCK_FILE",
    "cache_dir",
    "cache_lock",
    "cache_store",
    "cache_uri",
    "make_private",
    "private_dir_problem",
]

#: The lock file in the cache directory (docs/format.md, "The local cache"): every
#: operation that uses the cache's objects holds a shared ``flock`` on it, ``cache prune``
#: and ``cache clear`` an exclusive one, so they never remove what a running operation uses.
LOCK_FILE = ".lock"


def cache_dir() -> str:
    """The cache directory (not created here)."""
    explicit = os.environ.get("SNAPDIR_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "snapdir")
    return os.path.join(os.path.expanduser("~"), ".cache", "snapdir")


def cache_uri() -> StoreUri:
    return StoreUri("file://" + cache_dir())


def _who(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def make_private(path: str) -> None:
    """Creates the missing directories of ``path`` with mode 0700 (``os.makedirs`` would
    give the intermediate ones the umask's mode, group-writable under ``umask 002``)."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        # Made meanwhile by someone else: checked afterwards like any other.
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)


def private_dir_problem(path: str) -> str | None:
    """Why the directory ``path`` must not hold state we trust, or ``None`` when it may.

    The caller makes it first (:func:`make_private`), so what is checked is what will be
    used (checking the nearest existing directory instead would leave a window in which
    another user creates the rest). Then ``path`` (resolved) must be a directory owned by
    this user or root and not writable by group or others, and so must every directory
    above it up to ``/`` (any of them could otherwise be renamed away and replaced), except
    that one above may be writable by others when it has the sticky bit (``/tmp``: others
    cannot then rename or remove what is ours in it). As ssh's StrictModes, the resolved
    path is checked: a symbolic link on the way leads to the directories that matter.
    """
    me = os.geteuid()
    real = os.path.realpath(path)
    p = real
    leaf = True
    while True:
        try:
            st = os.lstat(p)
        except OSError as e:
            return f"cannot inspect {p}: {e.strerror or e}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{p} is not a directory"
        if st.st_uid not in (me, 0):
            return f"{p} is owned by {_who(st.st_uid)}, not by this user ({_who(me)}) or root"
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (leaf or not st.st_mode & stat.S_ISVTX):
            return f"{p} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        leaf = False
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def cache_lock(directory: str, *, exclusive: bool = False, wait: bool = True) -> int | None:
    """Open (creating it, mode 0600) the lock file of the cache at ``directory`` and
    ``flock`` it: shared, or ``exclusive``. Returns the descriptor (closing it releases the
    lock), or ``None`` when ``wait`` is false and another process holds a conflicting lock.
    The file is opened with ``O_NOFOLLOW``: a symbolic link planted there is refused."""
    import fcntl

    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    how = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, how if wait else how | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _cache_file_store() -> FileStore:
    """The cache's store: a :class:`~snapdir.stores.file.FileStore` whose manifests are
    stamped (mtime and atime set to now) whenever the cache serves or is asked for one, so
    that ``cache prune`` removes the least recently used snapshots first (atime alone is
    not kept on ``noatime`` mounts, is coarse under ``relatime``, and re-hashing the cache
    would refresh it)."""
    from .stores.file import FileStore

    class CacheStore(FileStore):
        def _used(self, snapshot_id: str) -> None:
            # Best effort, one utime per snapshot (never per object: objects may be
            # hard-linked into checkouts, whose files' times must not change).
            with contextlib.suppress(OSError):
                os.utime(self.manifest_path(snapshot_id))

        async def has_manifest(self, snapshot_id: str) -> bool:
            found = await super().has_manifest(snapshot_id)
            if found:
                self._used(snapshot_id)
            return found

        async def get_manifest(self, snapshot_id: str) -> Any:
            m = await super().get_manifest(snapshot_id)
            self._used(snapshot_id)
            return m

        async def push_tree(self, path: str, **kwargs: Any) -> Any:
            # `stage`: a snapshot staged again is used again (a new one is written after).
            pushed = await super().push_tree(path, **kwargs)
            self._used(pushed.manifest.id)
            return pushed

    return CacheStore(cache_uri())


def _hold_lock(store: FileStore, directory: str) -> FileStore:
    """Tie a shared lock on the cache to ``store``'s life: taken now, released when the
    store object goes (an operation's store lives as long as the operation)."""
    import weakref

    try:
        fd = cache_lock(directory)
    except OSError:
        return store  # an unwritable cache: its operations report what they cannot do
    if fd is not None:
        weakref.finalize(store, os.close, fd)
    return store


def cache_store() -> FileStore:
    """The cache as a :class:`~snapdir.stores.file.FileStore`. Its directory is created here
    (mode 0700) and must pass :func:`private_dir_problem`: objects and manifests in it are
    linked into checkouts and named by their checksums without being read again, so one
    that another user can write is refused with :class:`~snapdir.UnsafePathError`.

    The store holds a shared lock on the cache (:func:`cache_lock`) for as long as it
    exists, and stamps the manifests it serves (their times order ``cache prune``)."""
    from ._errors import UnsafePathError

    d = cache_dir()
    try:
        make_private(d)
    except OSError:
        # Nothing can be planted where we cannot even create a directory; the store's
        # own operations report what they cannot do there, as before.
        return _cache_file_store()
    real = os.path.realpath(d)
    if os.path.lexists(real) and not os.path.isdir(real):
        # A file where the directory should be holds nothing anyone planted for us: the
        # store's operations fail on it as the I/O error it is ("not a directory").
        return _cache_file_store()
    why = private_dir_problem(d)
    if why is not None:
        raise UnsafePathError(
            f"refusing to use the local cache {d}: {why}; another user could plant objects "
            "there (make it yours with chown/chmod go-w, or set SNAPDIR_CACHE_DIR)"
        )
    return _hold_lock(_cache_file_store(), d)
