"""``manifest()`` and ``id()``: walk and hash a directory.

The walk is one Rust call that releases the interpreter and hashes on all cores; here we
only move it off the event loop (anyio worker thread, so asyncio and trio both work) and
make cancellation prompt: a cancelled caller flips a token the walker checks per file.
"""

from __future__ import annotations

import os

from . import _snapdir
from ._errors import _warn

# Re-exported: they lived here, and the operations still import them from here.
from ._runtime import LOCAL_SYNC, run_blocking, run_cancellable, run_local
from ._snapdir import CancelToken, Manifest

__all__ = ["LOCAL_SYNC", "id", "manifest", "run_blocking", "run_cancellable", "run_local"]

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .stores._base import ProgressFn

    #: What the Rust walker takes for ignore rules: ``(ignore_file, no_ignore_file,
    #: exclude_glob)``.
    IgnoreRules = tuple[str | None, bool, list[str]]

#: The ignore file read at the root of a snapshotted tree (gitignore syntax).
IGNORE_FILE = ".snapdirignore"


def exclude_list(exclude: Sequence[str] | None) -> list[str]:
    """``exclude`` as the list the Rust walker takes (one pattern may be given as a str)."""
    if exclude is None:
        return []
    if isinstance(exclude, str):
        return [exclude]
    return list(exclude)


def ignore_rules(
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> IgnoreRules:
    """The ignore options as the Rust walker takes them. ``ignore_file``: ``True`` reads
    ``.snapdirignore`` at the root of the tree when there is one, ``False`` reads none, a
    path reads that file (which must exist); ``exclude_glob``: more patterns in the same
    (gitignore) syntax, one may be given as a str."""
    globs = exclude_list(exclude_glob)
    if ignore_file is True:
        return (None, False, globs)
    if ignore_file is False:
        return (None, True, globs)
    return (os.fspath(ignore_file), False, globs)


def stat_cache_dir(use_cache: bool = True) -> str | None:
    """The directory of stat cache files (``<cache>/statcache``), or ``None`` when the stat
    cache is off: ``use_cache=False``, ``SNAPDIR_STAT_CACHE`` set to ``0``/``false``/``no``/
    ``off``, or ``SNAPDIR_NO_STAT_CACHE`` set to ``1``/``true``/``yes``/``on``; or when the
    directory is one another user could write to (then with a :class:`SnapdirWarning`: a
    record planted there would make an id or an "already right" lie; docs/statcache.md)."""
    if not use_cache:
        return None
    if os.environ.get("SNAPDIR_STAT_CACHE", "").strip().lower() in ("0", "false", "no", "off"):
        return None
    if os.environ.get("SNAPDIR_NO_STAT_CACHE", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    from ._cache import cache_dir, make_private, private_dir_problem

    d = os.path.join(cache_dir(), "statcache")
    try:
        make_private(d)
    except OSError:
        return None  # an unwritable cache directory just means no cache (silently, as ever)
    why = private_dir_problem(d)
    if why is not None:
        _warn([f"not using the stat cache in {d}: {why} (every file is read)"], stacklevel=4)
        return None
    return d


def walk_sync(
    path: str | os.PathLike[str],
    *,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: Sequence[str] | None = None,
    cancel: CancelToken | None = None,
    stacklevel: int = 3,
    use_cache: bool = True,
    rehash: bool = False,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> Manifest:
    """Walk ``path`` in the calling thread (the CLI uses this: no event loop needed)."""
    ig, no_ig, globs = ignore_rules(ignore_file, exclude_glob)
    m, warnings = _snapdir.walk(
        os.fspath(path),
        no_follow,
        absolute,
        exclude_list(exclude),
        cancel,
        None,
        stat_cache_dir(use_cache),
        rehash,
        ignore_file=ig,
        no_ignore_file=no_ig,
        exclude_glob=globs,
    )
    _warn(warnings, stacklevel=stacklevel)
    return m


async def manifest(
    path: str | os.PathLike[str],
    *,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: Sequence[str] | None = None,
    use_cache: bool = True,
    rehash: bool = False,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> Manifest:
    """Walk ``path`` and return its :class:`Manifest`.

    Symbolic links are followed (recorded as their targets) unless ``no_follow``; dangling
    links are skipped with a :class:`SnapdirWarning`. ``exclude`` is a list of regular
    expressions searched in each entry's ``./``-relative path (directories end in ``/``).
    ``absolute`` renders paths from the absolute root (for display only).

    A ``.snapdirignore`` file at the root of ``path`` leaves out what it matches, with
    gitignore semantics (``#`` comments, ``!`` negation, a leading or inner ``/`` anchors to
    the root, ``**``, a trailing ``/`` matches only directories) on ``./``-relative paths; an
    ignored directory is not descended, and the ignore file itself stays in the snapshot.
    ``ignore_file`` names another file instead (it must exist), ``ignore_file=False`` reads
    none. ``exclude_glob`` adds patterns in the same syntax, after the file's.

    A file whose device, inode, size, mtime, ctime and mode are unchanged since it was last
    hashed is not read again: its checksum comes from the stat cache under
    :func:`snapdir.cache_dir` (docs/statcache.md). ``use_cache=False`` (or the environment
    variable ``SNAPDIR_NO_STAT_CACHE=1``) hashes every file and keeps no cache; ``rehash=True``
    re-reads every file but still rewrites the cache.

    ``progress(files, bytes)`` is told of the files hashed (or found in the stat cache) as
    the walk goes.
    """
    p = os.fspath(path)
    ex = exclude_list(exclude)
    ig, no_ig, globs = ignore_rules(ignore_file, exclude_glob)
    sc = stat_cache_dir(use_cache)

    def walk(token: CancelToken, counters: _snapdir.Progress | None) -> tuple[Manifest, list[str]]:
        return _snapdir.walk(
            p,
            no_follow,
            absolute,
            ex,
            token,
            counters,
            sc,
            rehash,
            ignore_file=ig,
            no_ignore_file=no_ig,
            exclude_glob=globs,
        )

    if progress is None:
        m, warnings = await run_cancellable(lambda token: walk(token, None))
    else:
        from .stores.file import run_with_progress

        m, warnings = await run_with_progress(walk, progress)
    _warn(warnings)
    return m


async def id(
    path: str | os.PathLike[str],
    *,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: Sequence[str] | None = None,
    use_cache: bool = True,
    rehash: bool = False,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> str:
    """The snapshot id (64 lowercase hex) of ``path``; same options as :func:`manifest`."""
    m = await manifest(
        path,
        no_follow=no_follow,
        absolute=absolute,
        exclude=exclude,
        use_cache=use_cache,
        rehash=rehash,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
    )
    return m.id
