"""Managing the local cache (``snapdir cache ...``): what it holds (:func:`usage`), whether
it is intact (:func:`verify`), emptying it (:func:`clear`) and keeping it small
(:func:`prune`).

The cache is a ``file://`` store (``.objects/``, ``.manifests/``, docs/format.md "Stores")
plus the stat cache's files under ``statcache/`` (docs/statcache.md). Nothing else in the
directory is ours, and nothing else is touched. Symbolic links are never followed: one found
where a directory of ours should be is removed as a link, never entered.

Locking: every operation that uses the cache holds a shared ``flock`` on ``<cache>/.lock``
(:func:`snapdir._cache.cache_store`); :func:`prune`, :func:`clear` and ``verify(purge=True)``
take it exclusively, so they wait for running operations and none starts meanwhile.

Recency: the cache stamps a manifest (mtime) each time it serves that snapshot (``stage``,
``fetch``, ``checkout``, ``pull --link``, ``push --id``). :func:`prune` removes whole
snapshots, least recently used first; an object goes with the last snapshot that names it.
Objects no manifest names (an interrupted ``stage``) and stat cache files count by their own
mtime (a stat cache file is rewritten by every walk that uses it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ._cache import LOCK_FILE, cache_dir, cache_lock
from ._errors import InvalidArgumentError, SnapdirError

__all__ = [
    "CacheUsage",
    "PruneReport",
    "VerifyReport",
    "clear",
    "parse_duration",
    "parse_size",
    "prune",
    "usage",
    "verify",
]

#: The directories of the cache that are ours (everything :func:`clear` removes).
OURS = (".objects", ".manifests", "statcache")

_HEX = re.compile(r"[0-9a-f]+")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTPE]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5}


def parse_size(text: str) -> int:
    """Bytes from ``10GiB``, ``500MiB``, ``1.5G`` (decimal: 10**9), ``4096`` or ``0``.
    IEC units (KiB, MiB, GiB, TiB, PiB) are powers of 1024. Raises
    :class:`~snapdir.InvalidArgumentError` naming the text otherwise."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise InvalidArgumentError(
            f"invalid size {text!r}: a number of bytes with an optional unit, e.g. 10GiB, "
            "500MiB, 2G"
        )
    unit = (m.group(2) or "").upper()
    if unit.endswith("IB"):
        factor = 1024 ** ("KMGTPE".index(unit[0]) + 1)
    else:
        factor = _UNITS.get(unit.rstrip("B") if unit != "B" else "B", 0)
    if not factor:
        raise InvalidArgumentError(f"invalid size {text!r}: unknown unit {m.group(2)!r}")
    return int(float(m.group(1)) * factor)


def parse_duration(text: str) -> float:
    """Seconds from a duration as ``forget --keep-within`` takes it (``7d``, ``12h``,
    ``1y6m``; months and years as calendar steps back from now). Raises
    :class:`~snapdir.InvalidArgumentError` naming the text otherwise."""
    from datetime import datetime, timezone

    from .lifecycle.retention import Duration

    d = Duration.parse(text)
    if d.is_zero():
        raise InvalidArgumentError(f"invalid duration {text!r}: it is zero")
    now = datetime.now(timezone.utc)
    return (now - d.before(now)).total_seconds()


def _root(directory: str | None) -> str:
    return os.path.abspath(directory) if directory else cache_dir()


def _is_dir(path: str) -> bool:
    """A real directory (not a link to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _files(top: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(relative path without '/', full path, lstat)`` of every regular file below
    ``top``, never following a link (links and other non-files are skipped)."""
    if not _is_dir(top):
        return
    stack = [(top, "")]
    while stack:
        d, rel = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue
        with it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((e.path, rel + e.name))
                elif stat.S_ISREG(st.st_mode):
                    yield rel + e.name, e.path, st


def _hashed(top: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """The keyed files of ``.objects`` or ``.manifests``: ``(hash, path, lstat)``; anything
    else there (a temporary file of an interrupted write) is left out."""
    for name, path, st in _files(top):
        if len(name) == 64 and _HEX.fullmatch(name):
            yield name, path, st


@dataclass
class CacheUsage:
    """What the cache holds (:func:`usage`); ``bytes`` is the sum of the file sizes."""

    directory: str
    bytes: int = 0
    objects: int = 0
    object_bytes: int = 0
    manifests: int = 0
    manifest_bytes: int = 0
    statcache_files: int = 0
    statcache_bytes: int = 0
    stamps: int = 0

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def usage(directory: str | None = None) -> CacheUsage:
    """Count the cache at ``directory`` (default: :func:`snapdir.cache_dir`): objects,
    manifests and stat cache files (``stamps``: of those, the checkout stamp files), with
    their bytes. A cache that does not exist is empty. Reads nothing but directory
    entries."""
    root = _root(directory)
    u = CacheUsage(root)
    for _, _, st in _hashed(os.path.join(root, ".objects")):
        u.objects += 1
        u.object_bytes += st.st_size
    for _, _, st in _hashed(os.path.join(root, ".manifests")):
        u.manifests += 1
        u.manifest_bytes += st.st_size
    for name, _, st in _files(os.path.join(root, "statcache")):
        u.statcache_files += 1
        u.statcache_bytes += st.st_size
        u.stamps += name.startswith("checkout-")
    u.bytes = u.object_bytes + u.manifest_bytes + u.statcache_bytes
    return u


@contextlib.contextmanager
def _locked(root: str, wait: bool, *, exclusive: bool = True) -> Iterator[None]:
    """The cache's lock (exclusively, or shared); a ``CONFLICT`` error when ``wait`` is
    false and another process holds it in a conflicting way."""
    import gc

    if not _is_dir(root):
        yield
        return
    gc.collect()  # a finished operation's store, still held by a cycle, releases its lock
    fd = cache_lock(root, exclusive=exclusive, wait=wait)
    if fd is None:
        raise SnapdirError(
            f"the local cache {root} is in use by another operation (its lock "
            f"{os.path.join(root, LOCK_FILE)} is held); try again later",
            code="CONFLICT",
        )
    try:
        yield
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_tree(path: str) -> None:
    """Remove ``path``: a link or a file is unlinked (never followed), a directory removed
    with everything in it (:func:`shutil.rmtree` does not follow links inside)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def clear(directory: str | None = None, *, wait: bool = True) -> CacheUsage:
    """Remove everything snapdir put in the cache — objects, manifests, the stat cache, the
    download directories a killed ``fetch`` left — and nothing else (other files in the
    directory, and the lock file, stay). Holds the
    cache's lock exclusively (``wait=False``: a ``CONFLICT`` error instead of waiting for
    a running operation). Returns what was removed."""
    root = _root(directory)
    from ._common import DOWNLOAD_PREFIX

    with _locked(root, wait):
        gone = usage(root)
        for name in OURS:
            _remove_tree(os.path.join(root, name))
        # Download directories of fetches: none is running while the lock is ours.
        for name in os.listdir(root) if _is_dir(root) else ():
            if name.startswith(DOWNLOAD_PREFIX):
                _remove_tree(os.path.join(root, name))
    return gone


@dataclass
class VerifyReport:
    """What :func:`verify` found: damaged keys by kind (``corrupt``, ``missing``) and what
    was removed with ``purge``."""

    objects: int = 0
    manifests: int = 0
    corrupt_objects: list[str] = field(default_factory=list)
    corrupt_manifests: list[str] = field(default_factory=list)
    missing_objects: list[str] = field(default_factory=list)
    incomplete_manifests: list[str] = field(default_factory=list)
    purged: bool = False

    @property
    def damaged(self) -> bool:
        return bool(
            self.corrupt_objects
            or self.corrupt_manifests
            or self.missing_objects
            or self.incomplete_manifests
        )

    def to_json(self) -> dict[str, object]:
        return {**self.__dict__, "ok": not self.damaged}


def verify(directory: str | None = None, *, purge: bool = False) -> VerifyReport:
    """Re-hash every object and manifest of the cache. Reports corrupt objects (content
    that does not hash to its key), corrupt manifests (likewise, or unparseable), and the
    objects a cached manifest names that the cache lacks (``missing_objects``, the
    manifests naming them in ``incomplete_manifests``). With ``purge`` the corrupt keys and
    incomplete manifests are removed (under the exclusive lock; without ``purge`` a shared
    one keeps ``prune`` away while reading), so the next ``fetch`` or ``stage`` writes them
    again."""
    from ._runtime import run_cancellable, run_local
    from ._snapdir import store_verify_objects
    from .stores._base import parse_stored_manifest

    root = _root(directory)
    r = VerifyReport()
    # Shared while reading (a prune cannot remove keys under our feet), exclusive to purge.
    with _locked(root, True, exclusive=purge):
        objects = {h: (p, st.st_size) for h, p, st in _hashed(os.path.join(root, ".objects"))}
        r.objects = len(objects)
        if objects:
            items = [(h, size) for h, (_, size) in sorted(objects.items())]
            # In a thread the caller joins, with a cancellation token: Ctrl-C stops the
            # Rust side at its next object.
            bad = dict(
                run_local(
                    lambda: run_cancellable(
                        lambda token: store_verify_objects(root, items, token, None)
                    )
                )
            )
            r.corrupt_objects = sorted(h for h, why in bad.items() if why == "corrupt")
        broken = set(r.corrupt_objects)
        missing: set[str] = set()
        for sid, path, _ in sorted(_hashed(os.path.join(root, ".manifests"))):
            r.manifests += 1
            try:
                with open(path, "rb") as f:
                    m = parse_stored_manifest(f.read(), sid, "file://" + root)
            except (SnapdirError, OSError):
                r.corrupt_manifests.append(sid)
                continue
            lacking = {c for c, _ in m.objects() if c not in objects or c in broken}
            if lacking:
                r.incomplete_manifests.append(sid)
                missing |= lacking - broken
        r.missing_objects = sorted(missing)
        if purge and r.damaged:
            for h in r.corrupt_objects:
                _remove(objects[h][0])
            for sid in r.corrupt_manifests + r.incomplete_manifests:
                _remove(_key_path(root, ".manifests", sid))
            r.purged = True
    return r


def _key_path(root: str, kind: str, h: str) -> str:
    return os.path.join(root, kind, h[0:3], h[3:6], h[6:9], h[9:])


@dataclass
class PruneReport:
    """What :func:`prune` removed (or, with ``dry_run``, would remove)."""

    snapshots: list[str] = field(default_factory=list)
    objects: int = 0
    statcache_files: int = 0
    bytes_freed: int = 0
    bytes_left: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def prune(
    directory: str | None = None,
    *,
    max_size: int | None = None,
    older_than: float | None = None,
    dry_run: bool = False,
    wait: bool = True,
    now: float | None = None,
) -> PruneReport:
    """Make the cache smaller, least recently used first. ``older_than`` (seconds): remove
    every snapshot not used for that long, with the objects no remaining snapshot names, and
    unnamed objects and stat cache files not written for that long. ``max_size`` (bytes):
    then remove the least recently used of those (snapshots, unnamed objects, stat cache
    files) until the cache holds at most that many bytes. A snapshot goes as a whole,
    manifest first, so the cache never holds an incomplete one. Holds the cache's lock
    exclusively (see the module's documentation). A damaged manifest is left alone (see
    :func:`verify`)."""
    if max_size is None and older_than is None:
        raise InvalidArgumentError("cache prune needs --max-size or --older-than")
    if max_size is not None and max_size < 0:
        raise InvalidArgumentError(f"invalid size {max_size}: it is negative")
    from ._snapdir import Manifest

    root = _root(directory)
    t_now = time.time() if now is None else now
    report = PruneReport(dry_run=dry_run)
    with _locked(root, wait):
        objects = {h: (p, st) for h, p, st in _hashed(os.path.join(root, ".objects"))}
        refs: dict[str, int] = dict.fromkeys(objects, 0)
        # Units that can go, each (last use, kind, key, path, bytes, objects it names).
        units: list[tuple[float, str, str, str, int, list[str]]] = []
        for sid, path, st in _hashed(os.path.join(root, ".manifests")):
            try:
                with open(path, "rb") as f:
                    named = sorted({c for c, _ in Manifest.parse(f.read().decode()).objects()})
            except (SnapdirError, OSError, UnicodeDecodeError, ValueError):
                continue
            named = [c for c in named if c in objects]
            for c in named:
                refs[c] += 1
            units.append((st.st_mtime, "snapshot", sid, path, st.st_size, named))
        for h, (path, st) in objects.items():
            if not refs[h]:
                units.append((st.st_mtime, "object", h, path, st.st_size, []))
        for name, path, st in _files(os.path.join(root, "statcache")):
            units.append((st.st_mtime, "statcache", name, path, st.st_size, []))
        units.sort(key=lambda u: (u[0], u[1], u[2]))
        total = sum(st.st_size for _, st in objects.values()) + sum(
            u[4] for u in units if u[1] != "object"
        )

        def drop(unit: tuple[float, str, str, str, int, list[str]]) -> int:
            _, kind, key, path, size, named = unit
            freed = size
            if not dry_run:
                _remove(path)
            if kind == "snapshot":
                report.snapshots.append(key)
                for c in named:
                    refs[c] -= 1
                    if not refs[c]:
                        freed += objects[c][1].st_size
                        report.objects += 1
                        if not dry_run:
                            _remove(objects[c][0])
            elif kind == "object":
                report.objects += 1
            else:
                report.statcache_files += 1
            return freed

        kept = []
        for unit in units:
            if older_than is not None and unit[0] < t_now - older_than:
                freed = drop(unit)
                report.bytes_freed += freed
                total -= freed
            else:
                kept.append(unit)
        if max_size is not None:
            for unit in kept:
                if total <= max_size:
                    break
                freed = drop(unit)
                report.bytes_freed += freed
                total -= freed
        report.bytes_left = total
    return report
