"""``--dry-run`` of push, pull, checkout and sync: what the operation would transfer,
write and remove, learnt with the same read-only steps it starts with (the walk, the
store's existence checks, the destination comparison), and nothing written to the store
or the destination.

Each function returns the :class:`OpStats` of the real operation (the same fields,
counting what *would* be done) with ``dry_run=True``. The walk of a push may update the
local stat cache, as ``snapdir id`` does; that is neither the store nor the tree.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import _snapdir
from ._common import DEFAULT_JOBS, OpStats, missing_objects, open_wrapped
from ._types import SnapshotId, StoreUri

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .stores import Store

__all__ = ["preview_pull", "preview_push", "preview_push_staged", "preview_sync"]


async def preview_push(
    path: str | os.PathLike[str],
    store: str | StoreUri | Store,
    *,
    exclude: Sequence[str] | None = None,
    no_follow: bool = False,
    jobs: int = DEFAULT_JOBS,
    repair: bool = False,
    use_cache: bool = True,
    rehash: bool = False,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> OpStats:
    """What :func:`snapdir.push` would upload: the objects the store lacks (after the
    same existence checks; with ``repair``, also those it holds damaged), and whether the
    manifest would be written (not when the store has the snapshot)."""
    from ._manifest import manifest as walk_manifest

    m = await walk_manifest(
        os.fspath(path),
        exclude=exclude,
        no_follow=no_follow,
        use_cache=use_cache,
        rehash=rehash,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
    )
    return await _preview_upload(m, open_wrapped(store, jobs), jobs, repair)


async def preview_push_staged(
    snapshot_id: str, store: str | StoreUri | Store, *, jobs: int = DEFAULT_JOBS
) -> OpStats:
    """What ``push --id`` would upload from the local cache."""
    from ._cache import cache_store

    m = await open_wrapped(cache_store(), jobs).get_manifest(SnapshotId(snapshot_id))
    return await _preview_upload(m, open_wrapped(store, jobs), jobs, False)


async def _preview_upload(m: _snapdir.Manifest, st: Store, jobs: int, repair: bool) -> OpStats:
    logical, _, nfiles, nobjects = _snapdir.manifest_size(m)
    before = st.request_count()
    present = await st.has_manifest(m.id)
    todo: list[tuple[str, int]] = []
    if repair or not present:
        objects = m.objects()
        lacking = await missing_objects(st, [c for c, _ in objects], jobs=jobs)
        todo = [(c, n) for c, n in objects if c in lacking]
        if repair:
            bad = set(await st.verify_objects([(c, n) for c, n in objects if c not in lacking]))
            todo += [(c, n) for c, n in objects if c in bad]
    return OpStats(
        id=m.id,
        files=nfiles,
        bytes=logical,
        objects=nobjects,
        uploaded=len(todo),
        bytes_uploaded=sum(n for _, n in todo),
        noop=present and not todo,
        manifest=not present or repair,
        journal=None,
        requests=st.request_count() - before,
        dry_run=True,
    )


async def preview_pull(
    snapshot_id: str,
    store: str | StoreUri | Store,
    dest: str | os.PathLike[str],
    *,
    force: bool = False,
    delete: bool = False,
    preserve_special_bits: bool = False,
    jobs: int = DEFAULT_JOBS,
    use_cache: bool = True,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> OpStats:
    """What :func:`snapdir.pull` would do in ``dest``: the files it would write (and
    their bytes), the objects it would read from the store for them, what it would
    remove (``delete``), the modes it would fix. Local changes it would refuse to
    overwrite raise :class:`ConflictError` as the pull would (unless ``force``). The
    destination is compared without its lock and is not created when missing."""
    from ._pull import plan_checkout

    sid = SnapshotId(snapshot_id)
    st = open_wrapped(store, jobs)
    before = st.request_count()
    m = await st.get_manifest(sid)
    target = os.path.abspath(os.fspath(dest))  # noqa: ASYNC240 (one getcwd)
    kept = unread = 0
    removes: list[str] = []
    if os.path.isdir(target):  # noqa: ASYNC240 (one stat)
        plan = await plan_checkout(
            m,
            target,
            force=force,
            delete=delete,
            preserve_special_bits=preserve_special_bits,
            use_cache=use_cache,
            ignore_file=ignore_file,
            exclude_glob=exclude_glob,
            dry_run=True,
        )
        writes, removes, _, _ = plan.preview()
        needed = plan.needed()
        _, kept, _ = plan.counts()
        unread = plan.unread()
        plan.abort()
    else:
        # Nothing there yet: every file is written, every object read.
        entries = m.entries
        writes = [(e.path[2:], e.size) for e in entries if e.path_type.name == "File"]
        needed = m.objects()
    return OpStats(
        id=str(sid),
        files_written=len(writes),
        files_kept=kept,
        files_unread=unread,
        bytes_written=sum(n for _, n in writes),
        removed=len(removes),
        requests=st.request_count() - before,
        objects_fetched=len(needed),
        bytes_fetched=sum(n for _, n in needed),
        write=[p for p, _ in writes],
        remove=removes,
        dry_run=True,
    )


async def preview_sync(
    snapshot_id: str,
    src: str | StoreUri | Store,
    dst: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
) -> OpStats:
    """What :func:`snapdir.sync` would copy: the objects the target lacks and the
    manifest (nothing when the target has the snapshot), and the source's journal
    entries for it that the target lacks (a source without any gets one new entry in
    the target, not counted here)."""
    from .lifecycle.ops import journal_keys_for

    sid = SnapshotId(snapshot_id)
    s, d = open_wrapped(src, jobs), open_wrapped(dst, jobs)
    before = s.request_count() + d.request_count()
    m = await s.get_manifest(sid)
    todo: list[tuple[str, int]] = []
    present = await d.has_manifest(sid)
    if not present:
        lacking = await missing_objects(d, [c for c, _ in m.objects()], jobs=jobs)
        todo = [(c, n) for c, n in m.objects() if c in lacking]
    keys = await journal_keys_for(s, d, str(sid))
    logical, _, nfiles, _ = _snapdir.manifest_size(m)
    return OpStats(
        id=str(sid),
        files=nfiles,
        bytes=logical,
        objects=len(m.objects()),
        copied=len(todo),
        bytes_copied=sum(n for _, n in todo),
        manifest=not present,
        requests=s.request_count() + d.request_count() - before,
        journal=keys,
        dry_run=True,
    )
