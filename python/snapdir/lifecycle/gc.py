"""The collector: delete the manifests and objects no root reaches, safely while others
push (the protocol and its argument: docs/design/gc.md).

1. Mark: list the intents (live ones are roots; expired ones are reported and removed),
   *then* the roots (journal and :data:`snapdir.lifecycle.roots.ROOT_SOURCES`) — in this
   order, because a writer writes its root before it deletes its intent. Read every root
   manifest (verified) into the mark set (Rust, 32 bytes a digest).
2. List ``.manifests/`` and ``.objects/``: the candidates are unmarked and older than the
   grace period (store time). An unrooted manifest the grace period spares is read and
   its objects marked: a manifest in the store is always whole (a push that finds it
   uploads nothing).
3. If there are candidates, refuse a store that is not managed (``adopt``): only in a
   managed one is "not journalled" the same as "not needed". Nothing has been deleted
   yet, and a collection that finds nothing to delete deletes nothing either way, so it
   does not ask (its cost: the list pages alone).
4. Publish the plan (create-only, its deadline in the key), wait ``delay``, list intents
   and roots again and unmark what they now reach.
5. Delete manifests first, then objects, in batches, never after the deadline (less a
   margin for a request in flight); then remove the plan, stale plans and expired intents.

A collector killed at any point leaves every rooted snapshot whole (nothing rooted is ever
a candidate, and a manifest goes before its objects) and the next run repeats what is left
(deletes are idempotent).
"""

from __future__ import annotations

import time as _time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .._errors import ConflictError, InvalidArgumentError, NotFoundError, SnapdirError
from .._types import StoreUri
from ..stores._keys import KeyInfo, KeyStore
from .intents import INTENT_TTL, INTENTS, PLANS, Intent, parse_intent, plan_body, plan_deadline

if TYPE_CHECKING:
    from .. import _snapdir
    from ..stores import Store
    from .retention import Duration

__all__ = ["GcReport", "gc"]

#: Keys deleted per request (S3's DeleteObjects maximum).
BATCH = 1000
#: Default grace: content younger than this (store time) is never a candidate. The protocol
#: does not need it; it protects writers that do not write intents (older snapdir
#: versions pushing into a managed store) for that long.
DEFAULT_GRACE = timedelta(hours=1)
#: How long a collection may delete for, after its plan is published.
DEFAULT_BUDGET = timedelta(minutes=10)
#: Seconds between publishing the plan and re-reading intents and roots (the default of
#: ``delay``; the environment variable overrides it for the CLI).
DEFAULT_DELAY = 2.0
DELAY_ENV = "SNAPDIR_GC_DELAY"


def default_delay() -> float:
    """``$SNAPDIR_GC_DELAY`` (seconds, 0 or more), else :data:`DEFAULT_DELAY`."""
    import os

    raw = os.environ.get(DELAY_ENV, "").strip()
    if not raw:
        return DEFAULT_DELAY
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value > 3600:
        raise InvalidArgumentError(f"{DELAY_ENV} must be seconds from 0 to 3600, not {raw!r}")
    return value


class GcReport:
    """What a collection did (or, with ``dry_run``, would do)."""

    __slots__ = (
        "bytes_freed",
        "complete",
        "dry_run",
        "expired_intents",
        "kept_by_recheck",
        "manifests",
        "objects",
        "plan",
        "problems",
        "requests",
        "roots",
        "stale_plans",
    )

    dry_run: bool
    manifests: list[str]
    objects: int
    bytes_freed: int
    kept_by_recheck: int
    expired_intents: list[str]
    stale_plans: list[str]
    roots: int
    problems: list[str]
    complete: bool
    plan: str | None
    requests: int

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return (
            f"GcReport(manifests={len(self.manifests)}, objects={self.objects}, "
            f"bytes_freed={self.bytes_freed}, dry_run={self.dry_run}, complete={self.complete})"
        )


def _hex_of(key: str, area: str) -> str | None:
    from ..stores._base import hex_from_key

    return hex_from_key(key[len(area) :])


def _grace(value: Duration | timedelta | str | None) -> Duration | timedelta:
    from .retention import Duration

    if value is None:
        return DEFAULT_GRACE
    if isinstance(value, str):
        v = value.strip()
        return timedelta(0) if v in ("0", "0s") else Duration.parse(v)
    return value


def _before(now: datetime, grace: Duration | timedelta) -> datetime:
    return now - grace if isinstance(grace, timedelta) else grace.before(now)


class _Marker:
    """The mark set and the manifests read into it, shared by both marking rounds."""

    def __init__(self, st: Store) -> None:
        from .._snapdir import MarkSet

        self.st = st
        self.objects: _snapdir.MarkSet = MarkSet()
        self.snapshots: set[str] = set()
        self.intents: set[str] = set()
        self.problems: list[str] = []
        self._cache: Store | bool | None = None

    def add_intent(self, it: Intent) -> None:
        self.intents.add(it.key)
        if it.manifest is not None and it.snapshot is not None:
            self.snapshots.add(it.snapshot)
            self.objects.add_manifest(it.manifest)
        self.objects.add_hex(list(it.objects))

    def _local_cache(self) -> Store | None:
        """The local cache, where root manifests are kept between collections (a manifest
        is immutable and verified against its id when read back), so that a collection
        that finds nothing new costs the list pages and no GET per snapshot. None for a
        ``file://`` store (reading it is as cheap) or a cache that cannot be used."""
        if self._cache is False:
            return None
        if self._cache is None:
            self._cache = False
            if not str(self.st.uri).startswith("file://"):
                try:
                    from .._cache import cache_store

                    self._cache = cache_store()
                except (SnapdirError, OSError):
                    pass
        return self._cache if not isinstance(self._cache, bool) else None

    async def _manifest(self, sid: str) -> _snapdir.Manifest:
        import contextlib

        cache = self._local_cache()
        if cache is not None:
            with contextlib.suppress(SnapdirError, OSError):
                return await cache.get_manifest(sid)
        m = await self.st.get_manifest(sid)
        if cache is not None:
            with contextlib.suppress(SnapdirError, OSError):
                await cache.put_manifest(sid, m.raw)
        return m

    async def add_snapshot(self, sid: str) -> None:
        if sid in self.snapshots:
            return
        self.snapshots.add(sid)
        try:
            m = await self._manifest(sid)
        except NotFoundError:
            self.problems.append(f"root {sid}: its manifest is missing")
            return
        except SnapdirError as e:
            # A root whose manifest cannot be read cannot say what it needs: the
            # collection stops rather than guess.
            raise type(e)(f"root {sid}: {e}", code=e.code) from e
        self.objects.add_manifest(m)

    async def add_spared(self, sid: str) -> None:
        """Mark the objects of an unrooted manifest the grace period spares: a manifest
        left in the store must stay whole, since a push of the same snapshot finds it and
        uploads nothing (a young manifest may name objects older than the grace). Gone
        meanwhile: nothing to keep whole."""
        if sid in self.snapshots:
            return
        self.snapshots.add(sid)
        try:
            m = await self._manifest(sid)
        except NotFoundError:
            return
        except SnapdirError as e:
            raise type(e)(f"manifest {sid} (spared by the grace period): {e}", code=e.code) from e
        self.objects.add_manifest(m)


async def _read_intents(
    ks: KeyStore, marker: _Marker, now: datetime, ttl: timedelta
) -> list[KeyInfo]:
    """Mark every live intent not read yet; returns the expired ones. A malformed intent
    stops the collection: what it protects is unknown."""
    from .intents import _max_intent

    expired: list[KeyInfo] = []
    for k in await ks.list_keys(INTENTS):
        if k.time < now - ttl:
            expired.append(k)
            continue
        if k.key in marker.intents:
            continue
        try:
            data = await ks.get_bytes(k.key, max_size=_max_intent())
        except NotFoundError:
            continue  # finished meanwhile: its writer's root is listed after this
        marker.add_intent(parse_intent(k.key, k.time, data))
    return expired


async def _read_roots(marker: _Marker) -> int:
    from .roots import collect_roots

    roots = await collect_roots(marker.st)
    marker.problems.extend(roots.problems)
    for sid in sorted(roots.snapshots):
        await marker.add_snapshot(sid)
    marker.objects.add_hex(sorted(roots.objects))
    return len(roots.snapshots) + len(roots.objects)


async def gc(
    store: str | StoreUri | Store,
    *,
    dry_run: bool = False,
    grace: Duration | timedelta | str | None = None,
    max_delete: int | None = None,
    delay: float | None = None,
    budget: timedelta = DEFAULT_BUDGET,
    intent_ttl: timedelta = INTENT_TTL,
    on_phase: Callable[[str], Awaitable[None]] | None = None,
) -> GcReport:
    """Delete what no root reaches (see the module docstring). ``grace``: spare content
    younger than this (store time; default 1 hour; ``timedelta(0)`` or ``"0"`` for
    none). ``max_delete``: delete at most this many keys (manifests first). ``delay``:
    seconds between publishing the plan and re-reading the roots (default
    ``$SNAPDIR_GC_DELAY`` or 2; a margin for stores whose listings lag: the argument
    does not need it on a store whose listings are linearizable).
    ``budget``: the plan's deadline, from its publication. ``on_phase`` is called with
    each phase's name (tests use it to interleave). Raises :class:`ConflictError` for a
    store that is not managed (run ``adopt``) when there is anything to collect."""
    from .._common import open_wrapped
    from ._util import _require_keys
    from .ops import is_managed

    g = _grace(grace)  # a bad duration is a usage error, before any request
    wait = default_delay() if delay is None else delay
    if max_delete is not None and max_delete < 0:
        raise InvalidArgumentError(f"max_delete must be 0 or more, not {max_delete}")

    async def phase(name: str) -> None:
        if on_phase is not None:
            await on_phase(name)

    st = open_wrapped(store)
    ks = _require_keys(st, "gc")
    before = st.request_count()
    now = await ks.store_time()
    marker = _Marker(st)
    await phase("mark")
    expired = await _read_intents(ks, marker, now, intent_ttl)
    nroots = await _read_roots(marker)
    await phase("list")
    # An HTTP Date is floored to its second: the store's "now" is up to a second later
    # than it says, and content from that second is as old as grace 0 asks.
    latest = now + timedelta(seconds=1, microseconds=-1) if now.microsecond == 0 else now
    cutoff = _before(latest, g)
    manifests: dict[str, KeyInfo] = {}
    spared: list[str] = []
    for k in await ks.list_keys(".manifests/"):
        sid = _hex_of(k.key, ".manifests/")
        if sid is not None and sid not in marker.snapshots:
            if k.time <= cutoff:
                manifests[sid] = k
            else:
                spared.append(sid)
    for sid in sorted(spared):  # whole, or not there: never a manifest without objects
        await marker.add_spared(sid)
    listed: dict[str, KeyInfo] = {}
    for k in await ks.list_keys(".objects/"):
        c = _hex_of(k.key, ".objects/")
        if c is not None and k.time <= cutoff:
            listed[c] = k
    objects = {c: listed[c] for c in marker.objects.unmarked(sorted(listed))}
    # Asked only now, when there is something to delete (or to show): a collection that
    # finds nothing costs its list pages alone, and deletes nothing whatever the answer.
    if (manifests or objects) and not await is_managed(ks):
        raise ConflictError(
            f"{st.uri} is not managed: a collection could delete snapshots no journal "
            "names (snapdir 1.x pushes); run `snapdir adopt` on it first",
            code="NOT_MANAGED",
        )
    stale = [
        k.key
        for k in await ks.list_keys(PLANS)
        if (d := plan_deadline(k.key)) is not None and d < now
    ]

    def report(**kw: object) -> GcReport:
        base: dict[str, object] = dict(
            dry_run=dry_run,
            manifests=[],
            objects=0,
            bytes_freed=0,
            kept_by_recheck=0,
            expired_intents=[k.key for k in expired],
            stale_plans=stale,
            roots=nroots,
            problems=marker.problems,
            complete=True,
            plan=None,
        )
        base.update(kw)
        base["requests"] = st.request_count() - before
        return GcReport(**base)

    if dry_run:
        return report(
            manifests=sorted(manifests),
            objects=len(objects),
            bytes_freed=sum(k.size for k in (*manifests.values(), *objects.values())),
        )
    cleanup = [*stale, *(k.key for k in expired)]
    if not manifests and not objects:
        if cleanup:
            await ks.delete_keys(cleanup)
        return report()

    # -- publish the plan, wait, mark again --------------------------------------------
    from .._snapdir import MarkSet

    await phase("plan")
    started = _time.monotonic()
    published = await ks.store_time()
    deadline = published + budget
    cm, co = MarkSet(), MarkSet()
    cm.add_hex(sorted(manifests))
    co.add_hex(sorted(objects))
    from .intents import plan_key

    key = plan_key(deadline)
    if not await ks.put_if_absent(key, plan_body(deadline, cm.to_packed(), co.to_packed())):
        raise ConflictError(f"{st.uri}: plan {key} exists already")  # pragma: no cover
    # Stop issuing deletes well before the deadline: a request sent just before it may
    # still be in flight (retried) after it.
    margin = max(budget.total_seconds() / 4, 1.0)
    stop_at = started + budget.total_seconds() - margin
    if wait > 0:
        from .._runtime import sleep

        await sleep(wait)
    await phase("recheck")
    # Intents are judged against the time the plan was published: an earlier "now" lets
    # fewer of them expire (the safe side), and costs no request.
    await _read_intents(ks, marker, published, intent_ttl)
    await _read_roots(marker)
    n_before = len(manifests) + len(objects)
    manifests = {s: k for s, k in manifests.items() if s not in marker.snapshots}
    objects = {c: objects[c] for c in marker.objects.unmarked(sorted(objects))}
    kept = n_before - len(manifests) - len(objects)

    # -- sweep -------------------------------------------------------------------------
    limit = n_before if max_delete is None else max_delete
    complete = limit >= len(manifests) + len(objects)
    gone_m: list[str] = []
    gone_o = 0
    freed = 0

    async def sweep(items: Sequence[tuple[str, KeyInfo]], into: Callable[[str], None]) -> bool:
        nonlocal freed
        for i in range(0, len(items), BATCH):
            if _time.monotonic() > stop_at:
                return False
            batch = items[i : i + BATCH]
            await ks.delete_keys([k.key for _, k in batch])
            for name, k in batch:
                into(name)
                freed += k.size
        return True

    def count_object(_c: str) -> None:
        nonlocal gone_o
        gone_o += 1

    await phase("delete-manifests")
    todo_m = sorted(manifests.items())[:limit]
    on_time = await sweep(todo_m, gone_m.append)
    if on_time:
        await phase("delete-objects")
        todo_o = sorted(objects.items())[: limit - len(todo_m)]
        on_time = await sweep(todo_o, count_object)
    await phase("finish")
    await ks.delete_keys([key, *cleanup])
    return report(
        manifests=gone_m,
        objects=gone_o,
        bytes_freed=freed,
        kept_by_recheck=kept,
        complete=complete and on_time,
        plan=key,
    )


class RootCheck:
    """What ``verify --all`` found: per root snapshot its problems (``{checksum: missing |
    corrupt}``, or ``{"manifest": "CODE: message"}``), object roots missing, journal keys
    that do not parse, and the intents and plans left behind."""

    __slots__ = (
        "expired_intents",
        "journal_problems",
        "live_intents",
        "missing_objects",
        "snapshots",
        "stale_plans",
    )

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    snapshots: dict[str, dict[str, str]]
    missing_objects: list[str]
    journal_problems: list[str]
    expired_intents: list[str]
    live_intents: int
    stale_plans: list[str]

    @property
    def ok(self) -> bool:
        """Every root's content is there and intact (leftover intents and plans are
        reported, not failures: the next collection removes them)."""
        return not self.missing_objects and not any(self.snapshots.values())


async def check_roots(
    store: str | StoreUri | Store, *, jobs: int = 32, intent_ttl: timedelta = INTENT_TTL
) -> RootCheck:
    """Every root → its manifest → its objects (re-hashed), the journal's keys parsed
    strictly, expired intents and stale plans listed (``snapdir verify --all``)."""
    from .._common import open_wrapped
    from .._verify import verify_report
    from ._util import _require_keys
    from .journal import JOURNAL, parse_key
    from .roots import collect_roots

    st = open_wrapped(store, jobs)
    ks = _require_keys(st, "verify --all")
    now = await ks.store_time()
    intents = await ks.list_keys(INTENTS)
    expired = [k.key for k in intents if k.time < now - intent_ttl]
    roots = await collect_roots(st)
    problems = list(roots.problems)
    for k in await ks.list_keys(JOURNAL):
        try:
            parse_key(k.key, k.time)
        except InvalidArgumentError as e:
            problems.append(str(e))
    out: dict[str, dict[str, str]] = {}
    for sid in sorted(roots.snapshots):
        try:
            out[sid] = await verify_report(sid, st, jobs=jobs)
        except SnapdirError as e:
            out[sid] = {"manifest": f"{e.code}: {e}"}
    from .._common import missing_objects

    missing = sorted(await missing_objects(st, sorted(roots.objects), jobs=jobs))
    stale = [
        k.key
        for k in await ks.list_keys(PLANS)
        if (d := plan_deadline(k.key)) is not None and d < now
    ]
    return RootCheck(
        snapshots=out,
        missing_objects=missing,
        journal_problems=problems,
        expired_intents=expired,
        live_intents=len(intents) - len(expired),
        stale_plans=stale,
    )
