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
    from .stores.file import FileStore

__all__ = ["cache_dir", "cache_store", "cache_uri", "make_private", "private_dir_problem"]


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


def cache_store() -> FileStore:
    """The cache as a :class:`~snapdir.stores.file.FileStore`. Its directory is created here
    (mode 0700) and must pass :func:`private_dir_problem`: objects and manifests in it are
    linked into checkouts and named by their checksums without being read again, so one
    that another user can write is refused with :class:`~snapdir.UnsafePathError`."""
    from ._errors import UnsafePathError
    from .stores.file import FileStore

    d = cache_dir()
    try:
        make_private(d)
    except OSError:
        # Nothing can be planted where we cannot even create a directory; the store's
        # own operations report what they cannot do there, as before.
        return FileStore(cache_uri())
    real = os.path.realpath(d)
    if os.path.lexists(real) and not os.path.isdir(real):
        # A file where the directory should be holds nothing anyone planted for us: the
        # store's operations fail on it as the I/O error it is ("not a directory").
        return FileStore(cache_uri())
    why = private_dir_problem(d)
    if why is not None:
        raise UnsafePathError(
            f"refusing to use the local cache {d}: {why}; another user could plant objects "
            "there (make it yours with chown/chmod go-w, or set SNAPDIR_CACHE_DIR)"
        )
    return FileStore(cache_uri())
