"""``pull`` (a snapshot from a store into a directory), ``checkout`` (from the local
cache) and ``fetch`` (from a store into the local cache).

Materialising is done by the Rust core in three steps (plan, fill, commit; see
``rust/snapdir-core/src/checkout.rs``): the whole manifest is validated and the destination
compared before anything is written, every object is verified in a private staging
directory, and only then is the tree changed, never following a link that is already there.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from . import _snapdir
from ._common import (
    DEFAULT_JOBS,
    OpStats,
    announce_total,
    open_wrapped,
    transfer_objects,
    unwrap,
)
from ._manifest import run_cancellable
from ._types import SnapshotId, StoreUri

if TYPE_CHECKING:
    from .stores import Store
    from .stores._base import ProgressFn

__all__ = ["checkout", "fetch", "pull", "pull_with_stats"]


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
) -> OpStats:
    """:func:`pull`, returning what it did."""
    from .stores import ObjectGet
    from .stores.file import FileStore

    sid = SnapshotId(snapshot_id)
    st = open_wrapped(store, jobs)
    before = st.request_count()
    m = await st.get_manifest(sid)
    target = _absolute(dest)
    inner = unwrap(st)
    durable = isinstance(inner, FileStore) and inner.durable
    # One token for the plan's life: the plan keeps the token it is made with and its fill
    # watches that one, so each later step must cancel the same token.
    cancel = _snapdir.CancelToken()
    plan = await run_cancellable(
        lambda token: _snapdir.plan_checkout(
            m, target, force, delete, preserve_special_bits, durable, token, None
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
        bytes_written=nbytes,
        removed=removed,
        requests=st.request_count() - before,
    )


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
) -> None:
    """Materialise snapshot ``snapshot_id`` from ``store`` into ``dest`` (created if needed).

    Files already right are not rewritten; local files that differ are an error listing them
    (:class:`ConflictError`) unless ``force``; extra local files are kept unless ``delete``.
    Nothing is written outside ``dest``; setuid/setgid/sticky bits are dropped unless
    ``preserve_special_bits``. If any object is missing or corrupt the destination is left
    as it was. File modification times are not restored (the manifest does not carry them).
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
    )


async def checkout(
    snapshot_id: str,
    dest: str | os.PathLike[str],
    *,
    force: bool = False,
    delete: bool = False,
    preserve_special_bits: bool = False,
    progress: ProgressFn | None = None,
) -> None:
    """:func:`pull` from the local cache (after :func:`stage` or :func:`fetch`)."""
    from ._cache import cache_store

    await pull(
        snapshot_id,
        cache_store(),
        dest,
        force=force,
        delete=delete,
        preserve_special_bits=preserve_special_bits,
        progress=progress,
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
    return OpStats(
        id=str(sid),
        objects=len(m.objects()),
        copied=copied,
        requests=s.request_count() + d.request_count() - before,
    )
