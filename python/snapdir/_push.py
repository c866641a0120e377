"""``push`` (a directory into a store) and ``stage`` (into the local cache)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, cast

from . import _snapdir
from ._common import (
    DEFAULT_JOBS,
    OpStats,
    missing_objects,
    open_wrapped,
    unwrap,
)
from ._errors import InvalidArgumentError, _warn
from ._manifest import manifest as walk_manifest
from ._types import StoreUri
from .stores._base import announce_total, put_manifest_of

if TYPE_CHECKING:
    from datetime import datetime

    from .lifecycle.intents import Guard
    from .stores import Store
    from .stores._base import ProgressFn, TreePushStore

__all__ = ["push", "push_staged_with_stats", "push_with_stats", "stage"]


async def push_with_stats(
    path: str | os.PathLike[str],
    store: str | StoreUri | Store,
    *,
    exclude: Sequence[str] | None = None,
    no_follow: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
    repair: bool = False,
    use_cache: bool = True,
    rehash: bool = False,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
    journal: bool = True,
    time: datetime | None = None,
    host: str | None = None,
    labels: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> OpStats:
    """:func:`push`, returning what it did (id, objects uploaded, requests, the journal
    entry's key); ``tags`` (``name@version``) are recorded in the journal entry — the
    caller writes the release records after it (``push --tag``)."""
    from .lifecycle.journal import check_labels

    labels = check_labels(labels)  # a bad label is a usage error, found before any I/O
    if time is not None and (time.tzinfo is None or time.utcoffset() is None):
        raise InvalidArgumentError(f"push time {time.isoformat()} has no time zone")
    st = open_wrapped(store, jobs)
    root = os.fspath(path)
    source = os.path.abspath(root)  # noqa: ASYNC240 (one getcwd, no I/O on the tree)

    async def finish(stats: OpStats) -> None:
        """The journal entry: written inside the guard, before the intent goes."""
        if not journal:
            stats.update(journal=None)
            return
        from .lifecycle.ops import record_push

        key = await record_push(
            st,
            str(stats["id"]),
            path=source,
            files=int(stats["files"]),
            nbytes=int(stats["bytes"]),
            time=time,
            host=host,
            labels=labels,
            tags=tags,
        )
        stats.update(journal=key)

    return await _push_content(
        st,
        root,
        exclude=exclude,
        no_follow=no_follow,
        jobs=jobs,
        progress=progress,
        repair=repair,
        use_cache=use_cache,
        rehash=rehash,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
        finish=finish,
        guarded=journal,
    )


async def push_staged_with_stats(
    snapshot_id: str,
    store: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
    time: datetime | None = None,
    host: str | None = None,
    labels: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> OpStats:
    """Push a snapshot already in the local cache (put there by :func:`stage` or
    ``fetch``) to ``store`` without walking any directory: the objects the store lacks are
    copied from the cache (verified when read and when written), then the manifest, then
    the journal entry (as :func:`push_with_stats` writes it; its path is empty, the source
    directory being unknown). Raises :class:`~snapdir.NotFoundError` when the cache does
    not hold the snapshot. Returns the same fields as :func:`push_with_stats`."""
    from ._cache import cache_store
    from ._common import transfer_objects
    from ._types import SnapshotId
    from .lifecycle.intents import protect
    from .lifecycle.journal import check_labels
    from .lifecycle.ops import record_push

    labels = check_labels(labels)
    if time is not None and (time.tzinfo is None or time.utcoffset() is None):
        raise InvalidArgumentError(f"push time {time.isoformat()} has no time zone")
    sid = str(SnapshotId(snapshot_id))
    cache = cache_store()
    src, dst = open_wrapped(cache, jobs), open_wrapped(store, jobs)
    m = await src.get_manifest(sid)
    objects = sorted(set(m.objects()))
    sizes = dict(objects)

    async def reupload(objs: list[str], manifest: bool) -> None:
        await transfer_objects(src, dst, [(c, sizes[c]) for c in objs], jobs=jobs)
        if manifest:
            await put_manifest_of(dst, sid, m)

    async with protect(dst, snapshot_id=sid, manifest=m) as guard:
        before = dst.request_count()
        noop = await dst.has_manifest(sid)
        uploaded = nbytes_up = 0
        if not noop:
            lacking = await missing_objects(dst, [c for c, _ in objects], jobs=jobs)
            todo = [(c, n) for c, n in objects if c in lacking]
            uploaded = await transfer_objects(src, dst, todo, jobs=jobs, progress=progress)
            nbytes_up = sum(n for _, n in todo)
        await guard.settle(reupload)
        if not noop:
            await put_manifest_of(dst, sid, m)
        logical, _, nfiles, _ = _snapdir.manifest_size(m)
        requests = dst.request_count() - before
        key = await record_push(
            dst,
            sid,
            path="",
            files=nfiles,
            nbytes=logical,
            time=time,
            host=host,
            labels=labels,
            tags=tags,
        )
    return OpStats(
        id=sid,
        files=nfiles,
        objects=len(objects),
        uploaded=uploaded,
        bytes_uploaded=nbytes_up,
        noop=noop,
        requests=requests,
        bytes=logical,
        journal=key,
    )


async def _push_content(
    st: Store,
    root: str,
    *,
    exclude: Sequence[str] | None,
    no_follow: bool,
    jobs: int,
    progress: ProgressFn | None,
    repair: bool,
    use_cache: bool,
    rehash: bool,
    ignore_file: str | os.PathLike[str] | bool,
    exclude_glob: Sequence[str] | None,
    finish: Callable[[OpStats], Awaitable[None]],
    guarded: bool,
) -> OpStats:
    """Objects, then the manifest: the snapshot's content (see :func:`push`); then
    ``finish`` (the journal entry). With ``guarded``, all of it under an intent
    (:func:`snapdir.lifecycle.intents.protect`), written after the walk and before the
    store is asked what it has, so a concurrent collection can neither delete what this
    push counts on nor leave it deleted."""
    from .stores import Capability, ObjectPut

    # A store that takes a whole tree in one pass (the file store: walk and copy, each
    # file read once) is asked to; it runs unwrapped (see TreePushStore). A repair always
    # takes the general path: it must re-hash what is already there.
    inner = unwrap(st)
    if inner.capabilities & Capability.PUSH_TREE and not repair:
        return await _push_tree(
            cast("TreePushStore", inner),
            root,
            exclude=exclude,
            no_follow=no_follow,
            progress=progress,
            use_cache=use_cache,
            rehash=rehash,
            ignore_file=ignore_file,
            exclude_glob=exclude_glob,
            finish=finish,
            guard_store=st if guarded else None,
        )
    # The walk (hashing) is reported too: on a large tree it is a long first phase.
    m = await walk_manifest(
        root,
        exclude=exclude,
        no_follow=no_follow,
        use_cache=use_cache,
        rehash=rehash,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
        progress=progress,
    )
    sid = m.id
    stats = _new_stats(m)
    sources = m.object_sources()
    where = {c: (rel, size) for c, rel, size in sources}

    async def reupload(objs: list[str], manifest: bool) -> None:
        """Put back what a concurrent sweep removed (hashed again as it is read)."""
        puts = [ObjectPut(c, os.path.join(root, where[c][0]), where[c][1]) for c in objs]
        await st.put_objects(puts, jobs=jobs)
        if manifest:
            await put_manifest_of(st, sid, m)

    async with _guard(st if guarded else None, sid, m) as guard:
        before = st.request_count()
        if not repair and await st.has_manifest(sid):
            await guard.settle(reupload)
            stats.update(noop=True, requests=st.request_count() - before)
            await finish(stats)
            return stats
        bad: Collection[str] = ()
        lacking = await missing_objects(st, [c for c, _, _ in sources], jobs=jobs)
        todo = [s for s in sources if s[0] in lacking]
        if repair:
            bad = await st.verify_objects([(c, n) for c, _, n in sources if c not in lacking])
            todo += [s for s in sources if s[0] in bad]
        items = [ObjectPut(c, os.path.join(root, rel), size) for c, rel, size in todo]
        announce_total(progress, len(items), sum(it.size for it in items))
        await st.put_objects(
            [it for it in items if it.checksum not in bad], jobs=jobs, progress=progress
        )
        if bad:
            # A damaged object may have the right size, which an ordinary put accepts
            # without re-reading a large one: these are uploaded whatever is there.
            mend = [it for it in items if it.checksum in bad]
            await st.put_objects(mend, jobs=jobs, progress=progress, replace=True)
        await guard.settle(reupload)
        await put_manifest_of(st, sid, m)
        uploaded, nbytes = len(items), sum(it.size for it in items)
        stats.update(uploaded=uploaded, bytes_uploaded=nbytes, requests=st.request_count() - before)
        await finish(stats)
    return stats


def _guard(
    store: Store | None, snapshot_id: str, manifest: _snapdir.Manifest
) -> AbstractAsyncContextManager[Guard]:
    """An intent protecting the pending snapshot, or (no store: a push into the local
    cache, which keeps no journal and has no collector) a guard that does nothing."""
    from .lifecycle.intents import INTENT_TTL, Guard, protect

    if store is None:
        from contextlib import nullcontext

        return nullcontext(Guard(None, snapshot_id, manifest, (), INTENT_TTL, 0.2))
    return protect(store, snapshot_id=snapshot_id, manifest=manifest)


def _new_stats(m: _snapdir.Manifest) -> OpStats:
    logical, _, nfiles, nobjects = _snapdir.manifest_size(m)
    return OpStats(
        id=m.id,
        files=nfiles,
        bytes=logical,
        objects=nobjects,
        uploaded=0,
        bytes_uploaded=0,
        noop=False,
    )


async def _push_tree(
    store: TreePushStore,
    root: str,
    *,
    exclude: Sequence[str] | None,
    no_follow: bool,
    progress: ProgressFn | None,
    use_cache: bool,
    rehash: bool,
    ignore_file: str | os.PathLike[str] | bool,
    exclude_glob: Sequence[str] | None,
    finish: Callable[[OpStats], Awaitable[None]],
    guard_store: Store | None,
) -> OpStats:
    """A push into a store that walks and stores in one pass, then the manifest, last.

    The walk decides what the store lacks before the manifest (and so the intent) exists:
    the guard is written after it, and settles by checking *every* object again (a stat
    each on ``file://``), which covers a sweep that ran between the walk and the intent."""
    from ._manifest import exclude_list, ignore_rules, stat_cache_dir
    from .stores import ObjectPut

    before = store.request_count()
    done = await store.push_tree(
        root,
        exclude=exclude_list(exclude),
        no_follow=no_follow,
        stat_cache=stat_cache_dir(use_cache),
        rehash=rehash,
        progress=progress,
        ignore=ignore_rules(ignore_file, exclude_glob),
    )
    _warn(done.warnings, stacklevel=4)
    m = done.manifest
    stats = _new_stats(m)

    async def reupload(objs: list[str], manifest: bool) -> None:
        # Built only when needed: a push nothing was taken from never asks.
        where = {c: (rel, size) for c, rel, size in m.object_sources()}
        puts = [ObjectPut(c, os.path.join(root, where[c][0]), where[c][1]) for c in objs]
        await store.put_objects(puts)
        if manifest:
            await put_manifest_of(store, m.id, m)

    async with _guard(guard_store, m.id, m) as guard:
        await guard.settle(reupload, everything=True)
        if not done.noop:
            await put_manifest_of(store, m.id, m)
        stats.update(
            uploaded=done.written,
            bytes_uploaded=done.bytes_written,
            noop=done.noop and done.written == 0,
            requests=store.request_count() - before,
        )
        await finish(stats)
    return stats


async def push(
    path: str | os.PathLike[str],
    store: str | StoreUri | Store,
    *,
    exclude: Sequence[str] | None = None,
    no_follow: bool = False,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
    repair: bool = False,
    use_cache: bool = True,
    rehash: bool = False,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
    journal: bool = True,
    time: datetime | None = None,
    host: str | None = None,
    labels: Sequence[str] = (),
) -> str:
    """Snapshot ``path`` into ``store`` and return the snapshot id.

    Objects are uploaded before the manifest, so a snapshot whose manifest is present is
    complete. Every byte stored is hashed as it is sent: into a ``file://`` store the walk
    itself copies each file while hashing it (one read), elsewhere each file is hashed again
    while it is uploaded; a file that changes meanwhile fails the push with
    :class:`InFluxError` and no object with wrong content is stored. A
    snapshot already in the store is a no-op (one request); ``repair=True`` re-checks its
    objects and re-uploads missing or corrupt ones. ``use_cache`` and ``rehash`` control the
    stat cache as in :func:`snapdir.manifest` (uploads always read the files).

    Then it journals the push (docs/format.md, "Journal"): one create-only key naming the
    snapshot, the source ``path``, this ``host`` and user, and ``labels``, timed by the
    store (or at ``time``, for imports of old snapshots). That entry is what ``ls`` lists
    and what keeps the snapshot from a collector; ``journal=False`` leaves it out (the
    snapshot is then an orphan until ``adopt``).
    """
    s = await push_with_stats(
        path,
        store,
        exclude=exclude,
        no_follow=no_follow,
        jobs=jobs,
        progress=progress,
        repair=repair,
        use_cache=use_cache,
        rehash=rehash,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
        journal=journal,
        time=time,
        host=host,
        labels=labels,
    )
    return str(s["id"])


async def stage(
    path: str | os.PathLike[str],
    *,
    exclude: Sequence[str] | None = None,
    no_follow: bool = False,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
    rehash: bool = False,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> str:
    """Snapshot ``path`` into the local cache (see :func:`snapdir.cache_dir`); returns the id.
    ``use_cache`` and ``rehash`` control the stat cache as in :func:`snapdir.manifest`."""
    from ._cache import cache_store

    return await push(
        path,
        cache_store(),
        exclude=exclude,
        no_follow=no_follow,
        progress=progress,
        use_cache=use_cache,
        rehash=rehash,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
        journal=False,  # the local cache is a staging area, not a store anyone lists
    )
