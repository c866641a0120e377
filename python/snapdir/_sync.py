"""``sync``: copy one snapshot from a store to another."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import DEFAULT_JOBS, OpStats, open_wrapped
from ._pull import copy_snapshot
from ._types import StoreUri

if TYPE_CHECKING:
    from .stores import Store
    from .stores._base import ProgressFn

__all__ = ["sync", "sync_with_stats"]


async def sync(
    snapshot_id: str,
    src: str | StoreUri | Store,
    dst: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> None:
    """Copy snapshot ``snapshot_id`` from ``src`` to ``dst``. Only objects ``dst`` lacks are
    sent, each verified when read and when written; the manifest goes last, so ``dst`` never
    shows an incomplete snapshot. A snapshot already in ``dst`` is left as it is. Then the
    snapshot's journal entries are copied (see :func:`snapdir.lifecycle.ops.copy_journal`),
    so ``dst`` lists it as ``src`` does and keeps it from its collector, and last the
    release records that name it (:func:`snapdir.names.ops.copy_names`, create-only)."""
    await sync_with_stats(snapshot_id, src, dst, jobs=jobs, progress=progress)


async def sync_with_stats(
    snapshot_id: str,
    src: str | StoreUri | Store,
    dst: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> OpStats:
    """:func:`sync`, returning what it did (objects copied, journal entries created).

    The copy and the journal entries are written under a collection guard on ``dst``
    (:func:`snapdir.lifecycle.intents.protect`), as a push is."""
    from ._common import transfer_objects
    from ._types import SnapshotId
    from .lifecycle.intents import protect
    from .lifecycle.ops import copy_journal
    from .names.ops import copy_names, id_of
    from .stores._base import put_manifest_of

    s, d = open_wrapped(src, jobs), open_wrapped(dst, jobs)
    sid = str(SnapshotId(await id_of(snapshot_id, s)))
    m = await s.get_manifest(sid)
    sizes = dict(m.objects())

    async def reupload(objs: list[str], manifest: bool) -> None:
        await transfer_objects(s, d, [(c, sizes[c]) for c in objs], jobs=jobs)
        if manifest:
            await put_manifest_of(d, sid, m)

    async with protect(d, snapshot_id=sid, manifest=m) as guard:
        stats = await copy_snapshot(
            sid,
            s,
            d,
            jobs=jobs,
            progress=progress,
            manifest=m,
            settle=lambda: guard.settle(reupload),
        )
        made = await copy_journal(s, d, sid, files=int(stats["files"]), nbytes=int(stats["bytes"]))
        # Names last: a release record in the target only ever names a complete snapshot.
        names = await copy_names(s, d, [sid])
    stats.update(journal=made, names=names)
    return stats
