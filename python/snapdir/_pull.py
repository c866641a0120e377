"""``pull`` (a snapshot from a store into a directory), ``checkout`` (from the local
cache) and ``fetch`` (from a store into the local cache).

Materialising is done by the Rust core in three steps (plan, fill, commit; see
``rust/snapdir-core/src/checkout.rs``): the whole manifest is validated and the destination
compared before anything is written, every object is verified in a private staging
directory, and only then is the tree changed, never following a link that is already there.

With ``link="hardlink"`` or ``link="reflink"`` the files are hard links to, or copy-on-write
clones of, the local cache's objects (the snapshot is fetched into the cache first); see
docs/checkout-links.md for the trade-offs.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Literal

from . import _snapdir
from ._common import (
    DEFAULT_JOBS,
    OpStats,
    announce_total,
    open_wrapped,
    transfer_objects,
    unwrap,
)
from ._manifest import ignore_rules, run_cancellable, stat_cache_dir
from ._types import LINK_MODES, SnapshotId, StoreUri

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .stores import Store
    from .stores._base import ProgressFn

__all__ = ["LINK_MODES", "LinkMode", "checkout", "fetch", "pull", "pull_with_stats"]

#: How a checkout gives files their content: ``"copy"`` (independent files, any store),
#: ``"hardlink"`` (links to the cache's objects: read-only use) or ``"reflink"``
#: (copy-on-write clones of the cache's objects, on Btrfs, XFS, ...).
LinkMode = Literal["copy", "hardlink", "reflink"]


def _check_link(link: str) -> None:
    if link not in LINK_MODES:
        from ._errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"link must be one of {', '.join(repr(m) for m in LINK_MODES)}, not {link!r}"
        )


async def pull_with_stats(
    snapshot_id: str,
    store: str | StoreUri | Store,
    dest: str | os.PathLike[str],
    *,
    force: bool = False,
    delete: bool = False,
    preserve_special_bits: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
    link: LinkMode = "copy",
    use_cache: bool = True,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> OpStats:
    """:func:`pull`, returning what it did."""
    from .stores import ObjectGet
    from .stores.file import FileStore

    _check_link(link)
    sid = SnapshotId(snapshot_id)
    fetch_requests = 0
    if link != "copy":
        # Links and clones point into the local cache: the snapshot goes there first
        # (verified, only what the cache lacks), then the files come from it.
        from ._cache import cache_store

        cache = cache_store()
        if not _is_store_at(open_wrapped(store, jobs), cache.root):
            fetched = await copy_snapshot(sid, store, cache, jobs=jobs, progress=progress)
            fetch_requests = int(fetched["requests"])
        store = cache
    st = open_wrapped(store, jobs)
    before = st.request_count()
    m = await st.get_manifest(sid)
    target = _absolute(dest)
    inner = unwrap(st)
    durable = isinstance(inner, FileStore) and inner.durable
    # One token for the plan's life: the plan keeps the token it is made with and its fill
    # watches that one, so each later step must cancel the same token.
    cancel = _snapdir.CancelToken()
    ig, no_ig, globs = ignore_rules(ignore_file, exclude_glob)
    plan = await run_cancellable(
        lambda token: _snapdir.plan_checkout(
            m,
            target,
            force,
            delete,
            preserve_special_bits,
            durable,
            token,
            None,
            link,
            stat_cache_dir(use_cache),
            ignore_file=ig,
            no_ignore_file=no_ig,
            exclude_glob=globs,
        ),
        cancel,
    )
    needed = plan.needed()
    announce_total(progress, len(needed), sum(n for _, n in needed))
    try:
        if isinstance(inner, FileStore):
            inner.require()
            await run_cancellable(lambda _t: plan.fill_from_store(inner.root), cancel)
        else:
            await run_cancellable(lambda _t: plan.prepare(), cancel)
            gets = []
            for i, (c, size) in enumerate(needed):
                staged = plan.staged_path(i)
                assert staged is not None
                if c == _snapdir.EMPTY_CHECKSUM and size == 0:
                    await run_cancellable(functools.partial(_touch_token, staged))
                else:
                    gets.append(ObjectGet(c, os.fspath(staged), size))
            await st.get_objects(gets, jobs=jobs, progress=progress)
        written, kept, nbytes, removed = await run_cancellable(lambda _t: plan.commit(), cancel)
    except BaseException:
        plan.abort()
        raise
    return OpStats(
        id=str(sid),
        files_written=written,
        files_kept=kept,
        files_unread=plan.unread(),
        bytes_written=nbytes,
        removed=removed,
        requests=st.request_count() - before + fetch_requests,
    )


def _is_store_at(store: Store, root: str) -> bool:
    """Whether ``store`` is the ``file://`` store at ``root`` (the cache itself)."""
    from .stores.file import FileStore

    inner = unwrap(store)
    if not isinstance(inner, FileStore):
        return False
    try:
        return os.path.samefile(inner.root, root)
    except OSError:
        return os.path.abspath(inner.root) == os.path.abspath(root)


def _absolute(p: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(p))


def _touch_token(path: str | os.PathLike[str], _token: object) -> None:
    with open(path, "wb"):
        pass


async def pull(
    snapshot_id: str,
    store: str | StoreUri | Store,
    dest: str | os.PathLike[str],
    *,
    force: bool = False,
    delete: bool = False,
    preserve_special_bits: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
    link: LinkMode = "copy",
    use_cache: bool = True,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> None:
    """Materialise snapshot ``snapshot_id`` from ``store`` into ``dest`` (created if needed).

        Files already right are not rewritten; local files that differ are an error listing them
        (:class:`ConflictError`) unless ``force``; extra local files are kept unless ``delete``.
    With ``delete``, local paths that ``dest``'s own ``.snapdirignore`` ignores are kept too
    (as a walk leaves them out); ``ignore_file`` and ``exclude_glob`` as for
    :func:`snapdir.manifest`.
        Nothing is written outside ``dest``; setuid/setgid/sticky bits are dropped unless
        ``preserve_special_bits``. If any object is missing or corrupt the destination is left
        as it was. File modification times are not restored (the manifest does not carry them).

        ``link="hardlink"`` or ``"reflink"`` fetch the snapshot into the local cache, then make
        each file a hard link to (read-only use: editing one in place edits the cache) or a
        copy-on-write clone of the cache's object; a file system that cannot is an error, not a
        silent copy (docs/checkout-links.md).

        A destination file whose size matches is read and hashed to tell whether it is right,
        unless a previous pull or checkout into ``dest`` found it right and its stat (device,
        inode, size, mtime, ctime, mode) has not changed since: the stat cache, as for
        :func:`snapdir.manifest` (docs/statcache.md). ``use_cache=False`` (or
        ``SNAPDIR_STAT_CACHE=0``) reads every such file.
    """
    await pull_with_stats(
        snapshot_id,
        store,
        dest,
        force=force,
        delete=delete,
        preserve_special_bits=preserve_special_bits,
        jobs=jobs,
        progress=progress,
        link=link,
        use_cache=use_cache,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
    )


async def checkout(
    snapshot_id: str,
    dest: str | os.PathLike[str],
    *,
    force: bool = False,
    delete: bool = False,
    preserve_special_bits: bool = False,
    progress: ProgressFn | None = None,
    link: LinkMode = "copy",
    use_cache: bool = True,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> None:
    """:func:`pull` from the local cache (after :func:`stage` or :func:`fetch`);
    ``link="hardlink"`` / ``"reflink"`` link or clone the cache's objects instead of copying
    them (docs/checkout-links.md)."""
    from ._cache import cache_store

    await pull(
        snapshot_id,
        cache_store(),
        dest,
        force=force,
        delete=delete,
        preserve_special_bits=preserve_special_bits,
        progress=progress,
        link=link,
        use_cache=use_cache,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
    )


async def fetch_with_stats(
    snapshot_id: str,
    store: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> OpStats:
    from ._cache import cache_store

    return await copy_snapshot(snapshot_id, store, cache_store(), jobs=jobs, progress=progress)


async def fetch(
    snapshot_id: str,
    store: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> None:
    """Copy a snapshot from ``store`` into the local cache (verified), for ``checkout``."""
    await fetch_with_stats(snapshot_id, store, jobs=jobs, progress=progress)


async def copy_snapshot(
    snapshot_id: str,
    src: str | StoreUri | Store,
    dst: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> OpStats:
    """Copy one snapshot between stores: objects first (verified), manifest last."""
    sid = SnapshotId(snapshot_id)
    s = open_wrapped(src, jobs)
    d = open_wrapped(dst, jobs)
    before = s.request_count() + d.request_count()
    m = await s.get_manifest(sid)
    copied = 0
    if not await d.has_manifest(sid):
        copied = await transfer_objects(s, d, m.objects(), jobs=jobs, progress=progress)
        await d.put_manifest(sid, m.raw)
    logical, _, nfiles, _ = _snapdir.manifest_size(m)
    return OpStats(
        id=str(sid),
        files=nfiles,
        bytes=logical,
        objects=len(m.objects()),
        copied=copied,
        requests=s.request_count() + d.request_count() - before,
    )
