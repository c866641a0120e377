"""Plumbing shared by the operations: opening stores, moving objects between stores,
and the result records the CLI prints with ``--json``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._errors import HashMismatchError, InvalidArgumentError
from ._types import StoreUri
from .stores._base import announce_total

if TYPE_CHECKING:
    from .stores import Store
    from .stores._base import ProgressFn

__all__ = ["DEFAULT_JOBS", "OpStats", "open_wrapped", "transfer_objects", "unwrap"]

DEFAULT_JOBS = 32


class OpStats:
    """What an operation did, for ``--json`` output and benchmarks."""

    def __init__(self, **fields: Any) -> None:
        self.fields: dict[str, Any] = dict(fields)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)


def open_wrapped(uri: str | StoreUri | Store, jobs: int = DEFAULT_JOBS) -> Store:
    """Open a store by URI (or take an opened one) wrapped with retries and the
    concurrency limit; local stores are used as they are."""
    from .stores import Capability, Store, open_store

    if isinstance(uri, str):
        store: Store = open_store(uri)
    elif isinstance(uri, Store):
        store = uri
    else:
        raise InvalidArgumentError(f"not a store or store URI: {uri!r}", code="INVALID_STORE")
    if jobs < 1:
        raise InvalidArgumentError(f"jobs must be at least 1, not {jobs}", code="INVALID_ARGUMENT")
    if store.capabilities & Capability.LOCAL:
        return store
    from .stores._wrappers import wrap

    return wrap(store, jobs=jobs)


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def unwrap(store: Store) -> Store:
    """The innermost store of a wrapper chain.

    No import happens here: while the wrappers module is not loaded no store can be a
    wrapper, and a local operation (which never wraps) does not pay for loading it. (An
    import at call time could also fail after a process dropped its privileges.)"""
    wrappers = sys.modules.get("snapdir.stores._wrappers")
    return store if wrappers is None else wrappers.unwrap(store)


#: Up to this many distinct shards, list them one by one; beyond, list the whole store.
SHARD_LISTING_LIMIT = 64


async def missing_objects(
    store: Store, checksums: Sequence[str], *, jobs: int = DEFAULT_JOBS
) -> set[str]:
    """Which of ``checksums`` the store lacks, learnt by listing — never one request per
    object on a store that can list.

    A push touching few shards (``abc`` of ``.objects/abc/...``) lists just those: a few
    requests even on a store of millions of objects. A push touching many lists the whole
    ``.objects/`` prefix once (1 request per 1,000 keys; a single one for a new store)."""
    from .stores import Capability
    from .stores._base import for_each_limited

    fn = getattr(store, "missing_objects", None)
    if fn is not None:
        return set(await fn(checksums))
    wanted = set(checksums)
    if not wanted:
        return set()
    if store.capabilities & Capability.LIST_OBJECTS:
        shards = sorted({c[:3] for c in wanted})
        have: set[str] = set()
        if len(shards) <= SHARD_LISTING_LIMIT:

            async def one(shard: str) -> None:
                have.update(await store.list_objects(shard))

            await for_each_limited(shards, one, jobs)
        else:
            have = await store.list_objects()
        return wanted - have
    out: set[str] = set()

    async def probe(c: str) -> None:
        if not await store.has_object(c):
            out.add(c)

    await for_each_limited(sorted(wanted), probe, jobs)
    return out


#: Download directory of ``transfer_objects`` in a local destination store:
#: ``.snapdir-in-<pid>-<random>`` (the pid lets a later run tell a dead owner's apart).
DOWNLOAD_PREFIX = ".snapdir-in-"


def _clear_stale_downloads(root: str) -> None:
    """Remove download directories whose process is gone (a killed ``fetch`` or ``sync``
    leaves one holding partial objects that nothing else would ever remove), as ``pull``
    does with its staging directories. Those of live processes are left alone."""
    import shutil

    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if not name.startswith(DOWNLOAD_PREFIX):
            continue
        pid = name[len(DOWNLOAD_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: it exists
    return True


async def transfer_objects(
    src: Store,
    dst: Store,
    objects: Sequence[tuple[str, int]],
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> int:
    """Copy the objects ``dst`` lacks from ``src``; every byte is verified on the way
    (by ``src.get_object`` and again by ``dst.put_object``). Returns how many were copied."""
    import tempfile

    from .stores import Capability, ObjectPut
    from .stores._base import for_each_limited, to_thread
    from .stores.file import FileStore

    wanted = await missing_objects(dst, [c for c, _ in objects], jobs=jobs)
    todo = [(c, s) for c, s in objects if c in wanted]
    if not todo:
        return 0
    announce_total(progress, len(todo), sum(s for _, s in todo))
    s_in, d_in = unwrap(src), unwrap(dst)
    if isinstance(s_in, FileStore) and isinstance(d_in, FileStore):
        s_in.require()
        await d_in.put_objects(
            [ObjectPut(c, s_in.object_path(c), size) for c, size in todo],
            progress=progress,
            from_tree=False,
        )
        return len(todo)
    if isinstance(d_in, FileStore):
        os.makedirs(d_in.root, exist_ok=True)
        _clear_stale_downloads(d_in.root)
        tmpdir = tempfile.mkdtemp(prefix=f"{DOWNLOAD_PREFIX}{os.getpid()}-", dir=d_in.root)
    else:
        tmpdir = tempfile.mkdtemp(prefix="snapdir-sync-")
    try:

        async def one(obj: tuple[str, int]) -> None:
            c, size = obj
            tmp = os.path.join(tmpdir, c)
            await src.get_object(c, tmp)
            got = await to_thread(os.path.getsize, tmp)
            if got != size:  # the right bytes, but not what the manifest says: refuse, as
                _unlink_quiet(tmp)  # the file:// copy does, rather than cache an unusable set
                raise HashMismatchError(
                    f"object {c} in {src.uri} has {got} bytes but the manifest says {size}"
                )
            if isinstance(d_in, FileStore):
                await d_in.adopt_object(c, tmp)
            else:
                try:
                    await dst.put_object(c, tmp, size)
                finally:
                    _unlink_quiet(tmp)
            if progress is not None:
                progress(1, size)

        await for_each_limited(todo, one, jobs if not (dst.capabilities & Capability.LOCAL) else 8)
    finally:
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)
    return len(todo)
