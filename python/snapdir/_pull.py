"""``pull`` (a snapshot from a store into a directory), ``checkout`` (from the local
cache) and ``fetch`` (from a store into the local cache).

Materialising is done by the Rust core in three steps (plan, fill, commit; see
``rust/snapdir-core/src/checkout.rs``): the whole manifest is validated and the destination
compared before anything is written, every object is verified in a private staging
directory, and only then is the tree changed, never following a link that is already there.
The destination's owner may be someone else, swapping directories under it while this runs:
every write goes through descriptors (cloud downloads too, into files the core created in
staging and hands over as ``/proc/self/fd/<n>``), never through a path they could redirect.
One pull or checkout writes into a destination at a time (a lock in it, ``wait``).

With ``link="hardlink"`` or ``link="reflink"`` the files are hard links to, or copy-on-write
clones of, the local cache's objects (the snapshot is fetched into the cache first); see
docs/checkout-links.md for the trade-offs.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Literal

from . import _snapdir
from ._common import (
    DEFAULT_JOBS,
    OpStats,
    open_wrapped,
    transfer_objects,
    unwrap,
)
from ._errors import SnapdirError
from ._manifest import ignore_rules, run_cancellable, stat_cache_dir
from ._types import LINK_MODES, SnapshotId, StoreUri
from .stores._base import announce_total, put_manifest_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

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


async def plan_checkout(
    m: _snapdir.Manifest,
    target: str,
    *,
    force: bool,
    delete: bool,
    preserve_special_bits: bool,
    use_cache: bool,
    ignore_file: str | os.PathLike[str] | bool,
    exclude_glob: Sequence[str] | None,
    durable: bool = False,
    counters: _snapdir.Progress | None = None,
    link: str = "copy",
    wait: bool = False,
    cancel: _snapdir.CancelToken | None = None,
    dry_run: bool = False,
) -> _snapdir.CheckoutPlan:
    """The Rust checkout plan of ``m`` in ``target``, with the caller's ignore rules and the
    stat cache: one place, so a pull and its ``--dry-run`` preview compare a destination by
    exactly the same rules (a preview that planned differently would promise the wrong
    thing). ``dry_run`` plans without the destination's lock."""
    ig, no_ig, globs = ignore_rules(ignore_file, exclude_glob)
    return await run_cancellable(
        lambda token: _snapdir.plan_checkout(
            m,
            target,
            force,
            delete,
            preserve_special_bits,
            durable,
            token,
            counters,
            link,
            stat_cache_dir(use_cache),
            wait,
            _waiting,
            ignore_file=ig,
            no_ignore_file=no_ig,
            exclude_glob=globs,
            dry_run=dry_run,
        ),
        cancel,
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
    wait: bool = True,
    ignore_file: str | os.PathLike[str] | bool = True,
    exclude_glob: Sequence[str] | None = None,
) -> OpStats:
    """:func:`pull`, returning what it did."""
    from .names.ops import id_of
    from .stores.file import FileStore

    _check_link(link)
    sid = SnapshotId(await id_of(snapshot_id, store))
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
    # Likewise its counters: the Rust fill of a file:// pull advances them object by object.
    counters = _snapdir.Progress() if progress is not None else None
    plan = await plan_checkout(
        m,
        target,
        force=force,
        delete=delete,
        preserve_special_bits=preserve_special_bits,
        durable=durable,
        counters=counters,
        link=link,
        use_cache=use_cache,
        wait=wait,
        ignore_file=ignore_file,
        exclude_glob=exclude_glob,
        cancel=cancel,
    )
    needed = plan.needed()
    announce_total(progress, len(needed), sum(n for _, n in needed))
    try:
        if isinstance(inner, FileStore):
            inner.require()
            from .stores.file import run_with_progress

            root = inner.root
            await run_with_progress(
                lambda _t, _c: plan.fill_from_store(root),
                progress,
                counters=counters,
                token=cancel,
            )
        else:
            await run_cancellable(lambda _t: plan.prepare(), cancel)
            await _download_staged(plan, st, needed, jobs=jobs, progress=progress)
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


#: Staging files open at once during a download (descriptors: ``RLIMIT_NOFILE`` may be
#: 1,024, shared with the store's connections).
_STAGED_BATCH = 256


_FD_PATH = re.compile(r"/(proc/self|dev)/fd/([0-9]+)")


def _name_staged(message: str, staged: dict[str, str | None]) -> str:
    """``message`` with each ``/proc/self/fd/<n>`` replaced by the staging file it is."""
    return _FD_PATH.sub(lambda m: str(staged.get(m.group(2)) or m.group(0)), message)


def _fd_path(fd: int) -> str:
    """A path naming the open file ``fd`` itself (no name in the destination is resolved)."""
    return f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else f"/dev/fd/{fd}"


async def _download_staged(
    plan: _snapdir.CheckoutPlan,
    st: Store,
    needed: list[tuple[str, int]],
    *,
    jobs: int,
    progress: ProgressFn | None,
) -> None:
    """Download the objects a plan needs into its staging files, a batch at a time.

    The core creates each file exclusively through the staging directory's descriptor and
    hands it over open; the store writes to ``/proc/self/fd/<n>``, which reaches that very
    file whatever happens to the names in the destination meanwhile (its owner may swap
    the staging directory, or a file in it, for a link). Empty objects need no download."""
    from .stores import ObjectGet

    for start in range(0, len(needed), _STAGED_BATCH):
        batch = list(range(start, min(start + _STAGED_BATCH, len(needed))))
        fds = plan.open_staged(batch)
        try:
            gets = [
                ObjectGet(needed[i][0], _fd_path(fd), needed[i][1])
                for i, fd in zip(batch, fds, strict=True)
                if not (needed[i][0] == _snapdir.EMPTY_CHECKSUM and needed[i][1] == 0)
            ]
            await st.get_objects(gets, jobs=jobs, progress=progress)
        except SnapdirError as e:
            # Name the staging file, not the descriptor the store was given.
            staged = {str(fd): plan.staged_path(i) for i, fd in zip(batch, fds, strict=True)}
            if e.args and isinstance(e.args[0], str):
                e.args = (_name_staged(e.args[0], staged), *e.args[1:])
            raise
        finally:
            for fd in fds:
                os.close(fd)


def _waiting(message: str) -> None:
    """Say (once) that this pull waits for another one writing into its destination."""
    import warnings

    from ._errors import SnapdirWarning

    warnings.warn(message, SnapdirWarning, stacklevel=2)


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
    wait: bool = True,
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

    One pull or checkout writes into ``dest`` at a time: it holds a lock there
    (``.snapdir-staging.lock``, removed when done; docs/format.md). Another one waits for it
    (saying so once with a :class:`SnapdirWarning`), or with ``wait=False`` raises
    :class:`ConflictError` naming ``dest`` at once.
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
        wait=wait,
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
    wait: bool = True,
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
        wait=wait,
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
    from .names.ops import id_of

    sid = await id_of(snapshot_id, store)
    return await copy_snapshot(sid, store, cache_store(), jobs=jobs, progress=progress)


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
    manifest: _snapdir.Manifest | None = None,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> OpStats:
    """Copy one snapshot between stores: objects first (verified), manifest last.
    ``manifest``: the snapshot's, already read from ``src``; ``settle``: called after the
    objects and before the manifest (a sync's collection guard)."""
    sid = SnapshotId(snapshot_id)
    s = open_wrapped(src, jobs)
    d = open_wrapped(dst, jobs)
    before = s.request_count() + d.request_count()
    m = manifest if manifest is not None else await s.get_manifest(sid)
    copied = 0
    if not await d.has_manifest(sid):
        copied = await transfer_objects(s, d, m.objects(), jobs=jobs, progress=progress)
        if settle is not None:
            await settle()
        await put_manifest_of(d, sid, m)
    elif settle is not None:
        await settle()
    logical, _, nfiles, _ = _snapdir.manifest_size(m)
    return OpStats(
        id=str(sid),
        files=nfiles,
        bytes=logical,
        objects=len(m.objects()),
        copied=copied,
        requests=s.request_count() + d.request_count() - before,
    )
