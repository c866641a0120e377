"""``verify`` (re-hash a snapshot's objects) and ``size`` (how big a snapshot or store is)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import DEFAULT_JOBS, open_wrapped
from ._errors import HashMismatchError, NotFoundError, SnapdirError
from ._types import SizeStats, SnapshotId, StoreUri

if TYPE_CHECKING:
    from .stores import Store
    from .stores._base import ProgressFn

__all__ = ["size", "verify", "verify_failed", "verify_report"]


def verify_failed(snapshot_id: str, store: object, problems: dict[str, str]) -> SnapdirError:
    """The error for a snapshot with missing or corrupt objects (``.problems`` lists them)."""
    corrupt = sorted(c for c, p in problems.items() if p == "corrupt")
    missing = sorted(c for c, p in problems.items() if p == "missing")
    parts = []
    if corrupt:
        parts.append(f"{len(corrupt)} corrupt object(s): {', '.join(corrupt[:10])}")
    if missing:
        parts.append(f"{len(missing)} missing object(s): {', '.join(missing[:10])}")
    msg = (
        f"snapshot {snapshot_id} in {store} is damaged: {'; '.join(parts)} "
        "(pushing a good copy of the tree again with repair rewrites them)"
    )
    if corrupt:
        return HashMismatchError(msg, problems=problems)
    return NotFoundError(msg, problems=problems)


async def verify_report(
    snapshot_id: str,
    store: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> dict[str, str]:
    """``{checksum: "missing" | "corrupt"}`` for the snapshot (raises if the manifest itself
    is missing or does not hash to its id). ``snapshot_id`` may be any ref (a name).
    ``progress`` is told of each object verified, when the store can say (its
    ``verify_objects`` takes ``progress=``)."""
    from .names.ops import id_of
    from .stores._base import accepts_progress, announce_total

    st = open_wrapped(store, jobs)
    sid = SnapshotId(await id_of(snapshot_id, st))
    m = await st.get_manifest(sid)
    objects = m.objects()
    if progress is None or not accepts_progress(st.verify_objects):
        return await st.verify_objects(objects, jobs=jobs)
    announce_total(progress, len(objects), sum(n for _, n in objects))
    # ``progress=`` is optional in the Store protocol: checked above.
    verify_objects: Any = st.verify_objects
    problems: dict[str, str] = await verify_objects(objects, jobs=jobs, progress=progress)
    return problems


async def verify(
    snapshot_id: str, store: str | StoreUri | Store, *, jobs: int = DEFAULT_JOBS
) -> bool:
    """Re-hash every object of the snapshot (streamed). Returns ``True`` or raises:
    :class:`HashMismatchError` if an object (or the manifest) is corrupt, :class:`NotFoundError`
    if one is missing; the exception's ``.problems`` maps checksums to what is wrong."""
    from .names.ops import id_of

    sid = str(SnapshotId(await id_of(snapshot_id, store)))
    problems = await verify_report(sid, store, jobs=jobs)
    if problems:
        raise verify_failed(sid, store, problems)
    return True


async def size(
    store: str | StoreUri | Store,
    id: str | None = None,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> SizeStats:
    """Sizes of snapshot ``id`` in ``store``, or of the whole store: logical bytes are every
    file of every snapshot, physical bytes each distinct object once. ``progress(files,
    bytes)`` is told of each snapshot's files and logical bytes once its manifest is read
    (a store of many snapshots reads many). For one snapshot, whose manifest is the whole
    wait, it is first told the manifest's bytes as they download (a cloud store's), then
    the snapshot's totals as a new phase."""
    from .names.ops import id_of
    from .stores._base import announce_total, manifest_read_progress

    st = open_wrapped(store, jobs)
    ids = [str(SnapshotId(await id_of(id, st)))] if id is not None else await st.list_manifests()
    seen: dict[str, int] = {}
    logical = files = 0
    one = id is not None
    for sid in ids:
        with manifest_read_progress(progress if one else None):
            m = await st.get_manifest(sid)
        for c, s in m.objects():
            seen[c] = s
        lg, _, nf, _ = _manifest_size(m)
        logical += lg
        files += nf
        if progress is not None:
            if one:
                announce_total(progress, nf, lg)
            progress(nf, lg)
    return SizeStats(logical, sum(seen.values()), files, len(seen))


def _manifest_size(m: object) -> tuple[int, int, int, int]:
    from ._snapdir import manifest_size

    return manifest_size(m)  # type: ignore[arg-type]
