"""The pusher's side of collection (docs/design/gc.md): *intents* and the sweep *plans* a
pusher must respect.

Anything that uploads content and then names it (a push, a sync, and the other features'
records) does so inside :func:`protect`::

    async with intents.protect(store, snapshot_id=sid, manifest=m) as guard:
        ...                              # existence checks, uploads
        await guard.settle(reupload)     # before the manifest / the root is written
        ...                              # write the roots (journal entry, name, record)

``protect`` writes an intent (create-only, ``.snapdir/intents/<nonce>``) that carries the
pending manifest (or raw object digests), then lists the sweep plans (``.snapdir/gc/``).
A collector that publishes a plan after that write sees the intent when it re-reads them
(and keeps what it names); a plan published before it is seen here, and ``settle`` waits
for each plan that names some of this content to finish (or to pass its deadline), then
puts back whatever of it the sweep removed. On leaving the block the intent is deleted —
after the roots were written, so a collector that no longer finds the intent finds the root.

Both keys are read back as untrusted input: sizes capped, every field checked.
"""

from __future__ import annotations

import json
import os
import re
import time as _time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, cast

from .._errors import InvalidArgumentError, NotFoundError, SnapdirError, StoreError
from ..stores._keys import KeyStore, has_keys
from .journal import format_time

if TYPE_CHECKING:
    from .. import _snapdir
    from ..stores import Store

__all__ = [
    "INTENTS",
    "INTENT_TTL",
    "PLANS",
    "Guard",
    "Intent",
    "Plan",
    "intent_body",
    "keep_alive",
    "parse_intent",
    "parse_plan",
    "plan_body",
    "plan_key",
    "protect",
    "read_plans",
]

INTENTS = ".snapdir/intents/"
PLANS = ".snapdir/gc/"
#: An intent older than this (store time) is expired: its writer is taken to be dead, a
#: collector no longer keeps what it names, and removes it. A live writer refreshes its
#: intent when half of it has passed (see :meth:`Guard.settle`).
INTENT_TTL = timedelta(hours=1)
#: The header line of an intent or a plan is small; more is a hostile store.
MAX_HEADER = 64 * 1024
#: Raw object digests an intent may carry besides a manifest.
MAX_INTENT_OBJECTS = 100_000
_NONCE = re.compile(r"[0-9a-f]{32}")
_PLAN = re.compile(r"([0-9]{8}T[0-9]{6}\.[0-9]{6}Z)_([0-9a-f]{32})")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _tool() -> str:
    from .._snapdir import version

    return f"snapdir {version()}"


def _max_intent() -> int:
    from ..stores._base import max_manifest_bytes

    return max_manifest_bytes() + MAX_HEADER + MAX_INTENT_OBJECTS * 70


# -- intents ---------------------------------------------------------------------------


class Intent:
    """A parsed intent: the snapshot it protects (with its manifest) and/or raw objects."""

    __slots__ = ("key", "manifest", "objects", "snapshot", "time")

    def __init__(
        self,
        key: str,
        time: datetime,
        snapshot: str | None,
        manifest: _snapdir.Manifest | None,
        objects: tuple[str, ...],
    ) -> None:
        self.key = key
        self.time = time
        self.snapshot = snapshot
        self.manifest = manifest
        self.objects = objects


def intent_body(snapshot_id: str | None, manifest: str | None, objects: Sequence[str]) -> bytes:
    """One JSON header line (``schema``, ``snapshot``, ``objects``, ``tool``), then the
    manifest text, if any."""
    body = intent_head(snapshot_id, manifest is not None, objects)
    return body + (manifest.encode() + b"\n" if manifest is not None else b"")


def intent_head(snapshot_id: str | None, with_manifest: bool, objects: Sequence[str]) -> bytes:
    """The header line of :func:`intent_body` (what precedes the manifest's stored form)."""
    objs = sorted(set(objects))
    if len(objs) > MAX_INTENT_OBJECTS or any(not _HEX64.fullmatch(o) for o in objs):
        raise InvalidArgumentError(
            f"an intent names at most {MAX_INTENT_OBJECTS} objects, each 64 lowercase hex"
        )
    if (snapshot_id is None) == with_manifest:
        raise InvalidArgumentError("an intent's snapshot id and manifest come together")
    head = {"schema": 1, "snapshot": snapshot_id, "objects": objs, "tool": _tool()}
    return json.dumps(head, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def parse_intent(key: str, stored: datetime, data: bytes) -> Intent:
    """An intent read back; :class:`InvalidArgumentError` naming the key for anything that
    is not what :func:`intent_body` writes (the manifest must hash to the id it claims)."""
    from .._snapdir import Manifest

    head_raw, nl, rest = data.partition(b"\n")
    try:
        if not nl or len(head_raw) > MAX_HEADER + MAX_INTENT_OBJECTS * 70:
            raise ValueError("no header line")
        head = json.loads(head_raw.decode())
        if not isinstance(head, dict) or head.get("schema") != 1:
            raise ValueError("unknown schema")
        sid, objs = head.get("snapshot"), head.get("objects")
        if not isinstance(objs, list) or len(objs) > MAX_INTENT_OBJECTS:
            raise ValueError("bad objects")
        if not all(isinstance(o, str) and _HEX64.fullmatch(o) for o in objs):
            raise ValueError("bad object digest")
        manifest = None
        if sid is not None:
            if not isinstance(sid, str) or not _HEX64.fullmatch(sid):
                raise ValueError("bad snapshot id")
            manifest = Manifest.parse(rest.decode())
            if manifest.id != sid:
                raise ValueError(f"its manifest hashes to {manifest.id}, not {sid}")
        elif rest:
            raise ValueError("content after the header without a snapshot id")
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"malformed intent {key!r}: {e}") from None
    return Intent(key, stored, sid, manifest, tuple(objs))


# -- plans -----------------------------------------------------------------------------


class Plan:
    """A published sweep plan: its deadline (store time; after it the collector deletes
    nothing more) and its candidates (what it may delete)."""

    __slots__ = ("deadline", "key", "manifests", "objects")

    def __init__(
        self, key: str, deadline: datetime, manifests: _snapdir.MarkSet, objects: _snapdir.MarkSet
    ) -> None:
        self.key = key
        self.deadline = deadline
        self.manifests = manifests
        self.objects = objects


def plan_key(deadline: datetime) -> str:
    """``.snapdir/gc/<deadline>_<nonce>``: the deadline is in the key, so that a listing
    alone tells which plans are stale."""
    return f"{PLANS}{format_time(deadline)}_{os.urandom(16).hex()}"


def plan_deadline(key: str) -> datetime | None:
    """The deadline a plan key names; None for a key that is not a plan's."""
    m = _PLAN.fullmatch(key[len(PLANS) :]) if key.startswith(PLANS) else None
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)


def plan_body(deadline: datetime, manifests: bytes, objects: bytes) -> bytes:
    """One JSON header line, then the packed, sorted 32-byte digests of the candidate
    manifests, then of the candidate objects (the counts are in the header)."""
    head = {
        "schema": 1,
        "deadline": deadline.isoformat().replace("+00:00", "Z"),
        "manifests": len(manifests) // 32,
        "objects": len(objects) // 32,
        "tool": _tool(),
    }
    return json.dumps(head, sort_keys=True).encode() + b"\n" + manifests + objects


def parse_plan(key: str, data: bytes) -> Plan:
    from .._snapdir import MarkSet

    deadline = plan_deadline(key)
    head_raw, nl, rest = data.partition(b"\n")
    try:
        if deadline is None or not nl or len(head_raw) > MAX_HEADER:
            raise ValueError("bad key or header")
        head = json.loads(head_raw.decode())
        nm, no = head.get("manifests"), head.get("objects")
        if not (isinstance(nm, int) and isinstance(no, int) and nm >= 0 and no >= 0):
            raise ValueError("bad counts")
        if len(rest) != 32 * (nm + no):
            raise ValueError("the digests do not match the counts")
        ms, os_ = MarkSet(), MarkSet()
        ms.add_packed(rest[: 32 * nm])
        os_.add_packed(rest[32 * nm :])
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"malformed gc plan {key!r}: {e}") from None
    return Plan(key, deadline, ms, os_)


def max_plan_bytes() -> int:
    """A plan names at most 100 million digests (3.2 GB would be a hostile store)."""
    return MAX_HEADER + 32 * 100_000_000


async def read_plans(store: KeyStore) -> list[Plan]:
    """Every plan in the store (a plan removed meanwhile is skipped: it is finished). A
    malformed plan is an error: what it would delete is unknown, so nothing can be
    settled against it."""
    out: list[Plan] = []
    for k in await store.list_keys(PLANS):
        try:
            data = await store.get_bytes(k.key, max_size=max_plan_bytes())
        except NotFoundError:
            continue
        out.append(parse_plan(k.key, data))
    return out


# -- the guard -------------------------------------------------------------------------

#: ``reupload(objects, manifest)``: put back these objects (and the manifest, if True).
Reupload = Callable[[list[str], bool], Awaitable[None]]


class Guard:
    """What :func:`protect` yields. ``settle`` before writing roots; ``waited`` (seconds
    spent waiting for sweeps) and ``reuploaded`` (objects put back) say what it cost."""

    def __init__(
        self,
        store: KeyStore | None,
        snapshot_id: str | None,
        manifest: str | _snapdir.Manifest | None,
        objects: Sequence[str],
        ttl: timedelta,
        poll: float,
    ) -> None:
        self._store = store
        self.snapshot_id = snapshot_id
        self._manifest = manifest
        self._objects = tuple(objects)
        self._ttl = ttl
        self._poll = poll
        self.key: str | None = None
        self._written = 0.0
        self.plans: list[Plan] = []
        self.waited = 0.0
        self.reuploaded = 0
        #: Intents written after the first (by :meth:`refresh` or ``settle``).
        self.refreshed = 0
        self._lapsed = False

    def _all_objects(self) -> list[str]:
        from .._snapdir import Manifest

        objs = set(self._objects)
        m = self._manifest
        if m is not None:
            objs.update(c for c, _ in (Manifest.parse(m) if isinstance(m, str) else m).objects())
        return sorted(objs)

    async def _write(self) -> None:
        """Write a fresh intent, then list the plans: the order the argument rests on."""
        assert self._store is not None
        from ..stores._base import put_if_absent_of

        m = self._manifest
        if isinstance(m, str) or m is None:
            body, pending = intent_body(self.snapshot_id, m, self._objects), None
        else:
            # The manifest's stored form follows the header: a `file://` store writes it
            # from the manifest (never as a Python string, see `put_if_absent_of`).
            body, pending = intent_head(self.snapshot_id, True, self._objects), m
        old = self.key
        for _ in range(3):
            key = f"{INTENTS}{os.urandom(16).hex()}"
            self._written = _time.monotonic()
            if await put_if_absent_of(self._store, key, body, pending):
                self.key = key
                break
        else:  # pragma: no cover (three 128-bit nonce collisions)
            raise StoreError(f"{self._store.uri}: could not create an intent")
        if old is not None:
            self.refreshed += 1
            await self._store.delete_keys([old])
        self.plans = await read_plans(self._store)

    async def refresh(self) -> None:
        """Replace the intent by a fresh one now (W1 and W2 again, the replacement
        ``settle`` makes half way to the TTL), for a writer that holds content longer than
        :data:`INTENT_TTL` (a run's command): see :func:`keep_alive`. Shielded from
        cancellation once started, so a cancelled refresh never leaves the new intent
        untracked (it would stay a root until it expired). A refresh later than the TTL
        makes the next ``settle`` check everything (a collector may have stopped honouring
        the old intent)."""
        if self._store is None:
            return
        if _time.monotonic() - self._written > self._ttl.total_seconds():
            self._lapsed = True
        from ..stores._keys import _event_loop

        if not _event_loop():
            await self._write()
            return
        import anyio

        with anyio.CancelScope(shield=True):
            await self._write()

    async def settle(self, reupload: Reupload, *, everything: bool = False) -> None:
        """Wait for every sweep plan seen since the intent was written that names some of
        this content, then put back (``reupload``) what of it is missing. ``everything``:
        check all the content, not only what plans named (for a writer that checked what
        the store has *before* its intent was written, such as the one-pass tree push).
        An intent half way to its TTL is first replaced by a fresh one (then everything
        is checked: a collector may have stopped honouring the old one)."""
        st = self._store
        if st is None:
            return
        if _time.monotonic() - self._written > self._ttl.total_seconds() / 2:
            await self._write()
            everything = True
        if self._lapsed:
            everything = True
        objs = self._all_objects()
        need_objects: set[str] = set(objs) if everything else set()
        need_manifest = everything and self.snapshot_id is not None
        for plan in self.plans:
            hit = plan.objects.marked(objs)
            hit_m = self.snapshot_id is not None and self.snapshot_id in plan.manifests
            if not hit and not hit_m:
                continue
            await self._wait(plan)
            need_objects.update(hit)
            need_manifest = need_manifest or hit_m
        if not need_objects and not need_manifest:
            return
        from .._common import missing_objects

        full = cast("Store", st)
        missing = sorted(await missing_objects(full, sorted(need_objects)))
        manifest_gone = bool(
            need_manifest
            and self.snapshot_id is not None
            and not await full.has_manifest(self.snapshot_id)
        )
        if missing or manifest_gone:
            await reupload(missing, manifest_gone)
            self.reuploaded += len(missing)

    async def _wait(self, plan: Plan) -> None:
        """Until the plan is removed (its sweep finished) or the store's clock passes its
        deadline (after which its collector deletes nothing more)."""
        from .._runtime import sleep

        assert self._store is not None
        start = _time.monotonic()
        delay = self._poll
        while True:
            keys = {k.key for k in await self._store.list_keys(PLANS)}
            if plan.key not in keys or await self._store.store_time() > plan.deadline:
                break
            await sleep(delay)
            delay = min(delay * 2, 2.0)
        self.waited += _time.monotonic() - start


async def keep_alive(
    guards: Sequence[Guard], every: float, *, renewed: Callable[[Guard], None] | None = None
) -> None:
    """Refresh every guard in ``guards`` (a list the caller may grow meanwhile) every
    ``every`` seconds (half the TTL) until cancelled: what keeps the intents of a writer
    that holds content for longer than :data:`INTENT_TTL` (a run's command) from expiring.
    Run it in a task group next to the work and cancel it before the guards settle (a
    refresh in flight finishes first: it is shielded). A refresh that fails (the store
    unreachable for a moment, a malformed plan) is tried again at the next tick; should the
    intent expire meanwhile, the guard's next ``settle`` checks everything and puts back
    what a collection removed (or raises what is wrong with the store). ``renewed(guard)``
    is called after each refresh."""
    from .._runtime import sleep

    while True:
        await sleep(every)
        for guard in list(guards):
            try:
                await guard.refresh()
            except (SnapdirError, OSError):
                continue
            if renewed is not None:
                renewed(guard)


def _create_local(store: Store) -> None:
    """A push creates a ``file://`` store that does not exist yet; its intent comes first,
    so the directory is made here (a record alone never creates a store)."""
    from .._common import unwrap
    from ..stores.file import FileStore

    inner = unwrap(store)
    if isinstance(inner, FileStore) and not os.path.isdir(inner.root):
        try:
            os.makedirs(inner.root, exist_ok=True)
        except OSError as e:
            from .._errors import SnapdirIOError

            raise SnapdirIOError(f"cannot create the store {inner.uri}: {e}") from e


async def _remove(ks: KeyStore, key: str) -> None:
    """Delete the intent, also when the push was cancelled (Ctrl-C, a task group's
    cancellation): shielded, so the delete is not cancelled before it is sent, and bounded,
    so a dead store cannot hold a cancelled caller for long (an intent left behind
    expires after :data:`INTENT_TTL` and is removed by the next collection)."""
    from ..stores._keys import _event_loop

    if not _event_loop():
        await ks.delete_keys([key])
        return
    import anyio

    with anyio.move_on_after(15, shield=True):
        await ks.delete_keys([key])


@asynccontextmanager
async def protect(
    store: Store,
    *,
    snapshot_id: str | None = None,
    manifest: str | _snapdir.Manifest | None = None,
    objects: Sequence[str] = (),
    ttl: timedelta = INTENT_TTL,
    poll: float = 0.2,
) -> AsyncIterator[Guard]:
    """Protect content from concurrent collection while it is uploaded and named (see the
    module docstring). ``manifest`` is the pending snapshot (its text, or the manifest
    itself, which a ``file://`` store then writes without a Python string of it;
    ``snapshot_id`` its id), ``objects`` raw digests uploaded outside a manifest. A store
    without the key methods keeps no journal and has no collector: the guard does nothing
    there."""
    if not has_keys(store):
        yield Guard(None, snapshot_id, manifest, objects, ttl, poll)
        return
    ks = cast("KeyStore", store)
    _create_local(store)
    # A read first: a store that does not exist fails here, as a push always failed on
    # it, before anything is written (some S3 servers, SeaweedFS among them, create a
    # missing bucket on the first PUT). The plans must be listed again after the intent.
    await ks.list_keys(PLANS)
    guard = Guard(ks, snapshot_id, manifest, objects, ttl, poll)
    await guard._write()
    ok = False
    try:
        yield guard
        ok = True
    finally:
        if guard.key is not None:
            if ok:
                await _remove(ks, guard.key)
            else:  # the error that got us here matters more than a failed cleanup
                import contextlib

                with contextlib.suppress(Exception):
                    await _remove(ks, guard.key)
