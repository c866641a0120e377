"""The lifecycle operations: the journal write every push makes, ``ls``, ``adopt`` and
``forget``. They talk to a store only through the small-key methods of
:mod:`snapdir.stores._keys` (create-only writes, listing with store times, batch deletes),
so they work alike on every backend, and every time they compare is store time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal, cast

from .._errors import InvalidArgumentError, NotFoundError, StoreError, _warn
from .._types import SnapshotId, StoreUri
from ..stores._keys import KeyStore, has_keys
from ._util import _open, _require_keys, _tool, _user
from .journal import JOURNAL, SnapshotInfo, check_labels, entry_body, entry_key, parse_key

if TYPE_CHECKING:
    from ..stores import Store
    from .retention import Duration, Policy

__all__ = [
    "DuReport",
    "ForgetVerdict",
    "adopt",
    "copy_journal",
    "du",
    "forget",
    "is_managed",
    "ls",
    "record_push",
]

#: Marks a store whose every snapshot is journalled (``adopt`` writes it): only then may a
#: collector treat "not named by the journal" as "unreachable".
MANAGED = ".snapdir/managed"
#: A journal entry's content is small; more is a hostile store.
MAX_ENTRY = 64 * 1024


async def record_push(
    store: Store,
    snapshot_id: str,
    *,
    path: str,
    files: int,
    nbytes: int,
    time: datetime | None = None,
    host: str | None = None,
    labels: Sequence[str] = (),
    run: str = "",
    tags: Sequence[str] = (),
) -> str | None:
    """Write the journal entry of a successful push: one create-only write, whose store
    timestamp is the entry's time unless ``time`` is given; ``tags`` are the releases the
    push names (``push --tag``, written after this). Returns the entry's key; None
    for a store without the key methods (a third-party store that does not declare them
    keeps no journal). ``run``: the name of the run record that produced the snapshot."""
    if not has_keys(store):
        return None
    import socket

    ks = cast("KeyStore", store)
    from datetime import timezone

    info = SnapshotInfo(
        str(SnapshotId(snapshot_id)),
        time if time is not None else datetime.now(timezone.utc),  # not recorded: see below
        host if host is not None else socket.gethostname(),
        _user(),
        path,
        files,
        nbytes,
        check_labels(labels),
        run=run,
        tags=tuple(tags),
    )
    explicit = time is not None  # otherwise the key's store timestamp is the entry's time
    body = entry_body(info, _tool(), explicit_time=explicit)
    for _ in range(3):  # a nonce collision is a 1-in-2**64 event; a retry costs nothing
        key = entry_key(info, explicit_time=explicit)
        if await ks.put_if_absent(key, body):
            return key
    raise StoreError(f"{store.uri}: could not create a journal entry for {snapshot_id}")


async def copy_journal(
    src: Store, dst: Store, snapshot_id: str, *, files: int = 0, nbytes: int = 0
) -> list[str]:
    """After a sync: give ``dst`` the journal entries ``src`` has for the snapshot (same
    time, host, user, path and labels; the time written out, since the copy's own store
    timestamp is not the push's), or, if ``src`` has none, one entry timed by ``dst``
    (``files``/``nbytes`` describe the snapshot then).
    Keys are derived from the source's (same nonce), so a second sync creates nothing.
    Returns the keys created; none for a ``dst`` without the key methods."""
    if not has_keys(dst):
        return []
    kd = cast("KeyStore", dst)
    sid = str(SnapshotId(snapshot_id))
    entries = (
        [e for e in await _journal(cast("KeyStore", src)) if e.id == sid] if has_keys(src) else []
    )
    made: list[str] = []
    if not entries:
        key = await record_push(dst, sid, path="", files=files, nbytes=nbytes)
        return [key] if key else []
    tool = _tool()
    for e in entries:
        key = _copied_key(e)
        if await kd.put_if_absent(key, entry_body(e, tool)):
            made.append(key)
    return made


def _copied_key(e: SnapshotInfo) -> str:
    """The key a copy of entry ``e`` gets in another store (same nonce, time written out)."""
    nonce = e.key.split("/")[2].rsplit("_", 1)[1]
    return entry_key(e, nonce, explicit_time=True)


async def journal_keys_for(src: Store, dst: Store, snapshot_id: str) -> list[str]:
    """The keys :func:`copy_journal` would create in ``dst`` for the entries ``src`` has
    for the snapshot (for ``sync --dry-run``); empty when ``src`` has none (a new entry
    is made then) or ``dst`` keeps no journal. Reads only."""
    if not has_keys(dst) or not has_keys(src):
        return []
    sid = str(SnapshotId(snapshot_id))
    keys = [_copied_key(e) for e in await _journal(cast("KeyStore", src)) if e.id == sid]
    if not keys:
        return []
    try:
        have = {k.key for k in await cast("KeyStore", dst).list_keys(JOURNAL)}
    except StoreError as e:
        if e.code != "STORE_NOT_FOUND":  # a file:// target a sync would create
            raise
        have = set()
    return [k for k in keys if k not in have]


async def _journal(store: KeyStore) -> list[SnapshotInfo]:
    """Every well-formed journal entry; a malformed key (a hostile or broken store) is
    reported as a warning naming it, and left out."""
    keys = await store.list_keys(JOURNAL)
    out: list[SnapshotInfo] = []
    bad: list[str] = []
    for k in keys:
        try:
            out.append(parse_key(k.key, k.time))
        except InvalidArgumentError as e:
            bad.append(str(e))
    if bad:
        _warn([f"{store.uri}: {m} (ignored)" for m in bad[:20]])
    return out


def _since(value: datetime | str) -> tuple[datetime | None, Duration | None]:
    """``--since``: a fixed time, or a duration to take back from the store's time —
    validated here, before any request, so a typo is a usage error."""
    if isinstance(value, datetime):
        return value, None
    from .journal import parse_time
    from .retention import Duration

    try:
        return None, Duration.parse(value)
    except InvalidArgumentError:
        pass
    try:
        return parse_time(value), None
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"invalid --since {value!r}: a duration (7d, 12h, 1y6m) or a date "
            "(2024-05-01, 2024-05-01T10:00:00Z)"
        ) from None


async def ls(
    store: str | StoreUri | Store,
    *,
    since: datetime | str | None = None,
    host: str | None = None,
    path: str | None = None,
    label: str | None = None,
    orphans: bool = False,
    names: bool = False,
) -> list[SnapshotInfo]:
    """What the store holds, newest first, from its journal: the list pages and nothing
    else. Each entry's ``names`` are the releases its push tagged (the journal key holds
    them); with ``names``, they are instead what the store's names say now — every release
    (not yanked) and channel head that points at the snapshot, tags given after the push
    included — at the cost of one more listing and one GET per name record the local
    cache lacks (none when warm: records are immutable). Filters: ``since`` (a datetime,
    a date, or a duration back from the store's time), ``host``, ``path`` (the source
    path, absolute), ``label``. ``orphans`` also lists manifests no entry names
    (snapshots written by snapdir 1.x, or before the journal), with an empty ``key`` and
    the manifest's store time."""
    when, back = _since(since) if since is not None else (None, None)
    st = _open(store)
    ks = _require_keys(st, "ls")
    entries = await _journal(ks)
    if back is not None:
        when = back.before(await ks.store_time())
    if when is not None:
        entries = [e for e in entries if e.time >= when]
    if host is not None:
        entries = [e for e in entries if e.host == host]
    if path is not None:
        entries = [e for e in entries if e.path == path]
    if label is not None:
        entries = [e for e in entries if label in e.labels]
    if orphans:
        named = {e.id for e in await _journal(ks)}
        for k in await ks.list_keys(".manifests/"):
            sid = k.key[len(".manifests/") :].replace("/", "")
            if sid not in named:
                entries.append(SnapshotInfo(sid, k.time))
    if names:
        from ..names.ops import names_by_id

        by_id = await names_by_id(st)
        for e in entries:
            e.names = tuple(by_id.get(e.id, ()))
    entries.sort(key=lambda e: (e.time, e.key), reverse=True)
    return entries


async def is_managed(store: KeyStore) -> bool:
    """Whether ``adopt`` has journalled this store's snapshots (see :data:`MANAGED`)."""
    from .._errors import NotFoundError

    try:
        await store.get_bytes(MANAGED, max_size=MAX_ENTRY)
    except NotFoundError:
        return False
    return True


async def adopt(store: str | StoreUri | Store, *, host: str = "") -> list[SnapshotInfo]:
    """Journal every manifest that no entry names (time: the manifest's store time; files
    and bytes: counted from the manifest, which is read and verified), then mark the store
    managed. Idempotent: a second run journals nothing and keeps the mark."""
    from .._snapdir import manifest_size

    st = _open(store)
    ks = _require_keys(st, "adopt")
    named = {e.id for e in await _journal(ks)}
    made: list[SnapshotInfo] = []
    for k in await ks.list_keys(".manifests/"):
        sid = k.key[len(".manifests/") :].replace("/", "")
        if sid in named:
            continue
        m = await st.get_manifest(sid)
        logical, _, nfiles, _ = manifest_size(m)
        key = await record_push(
            st, sid, path="", files=nfiles, nbytes=logical, time=k.time, host=host
        )
        if key is not None:
            made.append(SnapshotInfo(sid, k.time, host, _user(), "", nfiles, logical, (), key))
    if not await is_managed(ks):
        import json

        since = (await ks.store_time()).isoformat().replace("+00:00", "Z")
        body = json.dumps({"schema": 1, "managed_since": since, "tool": _tool()}, sort_keys=True)
        await ks.put_if_absent(MANAGED, body.encode() + b"\n")
    return made


class ForgetVerdict:
    """What ``forget`` decided for one journal entry, and why."""

    __slots__ = ("info", "keep", "reasons")

    def __init__(self, info: SnapshotInfo, keep: bool, reasons: tuple[str, ...]) -> None:
        self.info = info
        self.keep = keep
        self.reasons = reasons

    def to_json(self) -> dict[str, object]:
        return {**self.info.to_json(), "keep": self.keep, "reasons": list(self.reasons)}

    def __repr__(self) -> str:
        return f"ForgetVerdict({self.info.id[:12]}, keep={self.keep}, reasons={self.reasons})"


async def forget(
    store: str | StoreUri | Store,
    ids: Sequence[str] = (),
    *,
    policy: Policy | Literal["store"] | None = None,
    dry_run: bool = False,
) -> list[ForgetVerdict]:
    """Remove roots (journal entries), never content (``gc`` removes what no root reaches).

    ``ids`` (full ids, or unique prefixes of at least 8 hex digits) forget every entry of
    those snapshots; ``policy`` judges every entry with restic's rules (``"store"``: the
    policy stored in the store, see :mod:`.policy`). Both together: an entry is removed if
    either removes it. With ``dry_run`` nothing is deleted. Returns a verdict for every
    entry considered."""
    from .retention import Snapshot, apply_policy

    if not ids and policy is None:
        raise InvalidArgumentError("forget needs snapshot ids or a policy (--keep-*)")
    st = _open(store)
    ks = _require_keys(st, "forget")
    rules: Policy | None
    if policy == "store":
        from .policy import get_policy

        stored = await get_policy(st)
        if stored is None or stored.policy is None:
            raise NotFoundError(
                f"{st.uri} has no stored retention policy"
                f"{'' if stored is None else ' (it was unset)'}: set one with "
                "'snapdir policy set --store URI --keep-...'"
            )
        rules = stored.policy
    else:
        rules = policy
    entries = await _journal(ks)
    by_key = {e.key: e for e in entries}
    doomed: dict[str, tuple[str, ...]] = {}
    for raw in ids:
        sid = _resolve(raw, {e.id for e in entries}, st.uri)
        for e in entries:
            if e.id == sid:
                doomed[e.key] = ("forgotten by id",)
    verdicts: list[ForgetVerdict] = []
    if rules is not None:
        from ..names.roots import gc_roots

        # A snapshot a release names is never forgotten by a rule (only by its id).
        named, _ = await gc_roots(st)
        snaps = [Snapshot(e.key, e.time, e.host, e.path, frozenset(e.labels)) for e in entries]
        for d in apply_policy(snaps, rules, now=await ks.store_time()):
            info = by_key[d.snapshot.key]
            if d.snapshot.key in doomed:
                verdicts.append(ForgetVerdict(info, False, doomed.pop(d.snapshot.key)))
            elif not d.keep and info.id in named:
                verdicts.append(ForgetVerdict(info, True, ("holds a release name",)))
            else:
                verdicts.append(ForgetVerdict(info, d.keep, d.reasons))
    else:
        verdicts = [ForgetVerdict(e, e.key not in doomed, doomed.get(e.key, ())) for e in entries]
    if not dry_run:
        gone = [v.info.key for v in verdicts if not v.keep]
        if gone:
            await ks.delete_keys(gone)
    return verdicts


class DuReport:
    """What a store's bytes are spent on (see :func:`du`)."""

    __slots__ = (
        "objects",
        "reachable_bytes",
        "refs",
        "shared_bytes",
        "snapshots",
        "total_bytes",
        "unique_bytes",
        "unreachable_bytes",
    )

    objects: int
    total_bytes: int
    reachable_bytes: int
    unreachable_bytes: int
    snapshots: int
    refs: list[str]
    unique_bytes: int
    shared_bytes: int

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"DuReport({self.to_json()})"


async def du(store: str | StoreUri | Store, refs: Sequence[str] = ()) -> DuReport:
    """Account for a store's bytes: ``total_bytes`` (every object, each once),
    ``reachable_bytes`` (objects some journalled snapshot names) and ``unreachable_bytes``
    (the rest: what a collection would free). With ``refs`` (snapshot ids or unique
    prefixes of 8+ hex digits), ``unique_bytes`` are the bytes only those snapshots name —
    what forgetting them (and collecting) would free — and ``shared_bytes`` the bytes they
    share with the other snapshots. Every manifest read is verified."""
    st = _open(store)
    ks = _require_keys(st, "du")
    entries = await _journal(ks)
    chosen = {_resolve(r, {e.id for e in entries}, st.uri) for r in refs}
    listed = await ks.list_keys(".objects/")
    sizes = {k.key[len(".objects/") :].replace("/", ""): k.size for k in listed}
    named_by_others: set[str] = set()
    named_by_refs: set[str] = set()
    for sid in sorted({e.id for e in entries}):
        m = await st.get_manifest(sid)
        target = named_by_refs if sid in chosen else named_by_others
        target.update(c for c, _ in m.objects())
    reachable = named_by_refs | named_by_others
    total = sum(sizes.values())
    reachable_bytes = sum(sizes.get(c, 0) for c in reachable)
    unique = named_by_refs - named_by_others
    return DuReport(
        objects=len(sizes),
        total_bytes=total,
        reachable_bytes=reachable_bytes,
        unreachable_bytes=total - reachable_bytes,
        snapshots=len({e.id for e in entries}),
        refs=sorted(chosen),
        unique_bytes=sum(sizes.get(c, 0) for c in unique),
        shared_bytes=sum(sizes.get(c, 0) for c in named_by_refs & named_by_others),
    )


def _resolve(ref: str, ids: set[str], uri: object) -> str:
    """A full id, or a unique prefix of 8+ hex digits, among ``ids``."""
    from .._errors import NotFoundError

    r = ref.strip().lower()
    if len(r) < 8 or len(r) > 64 or any(c not in "0123456789abcdef" for c in r):
        raise InvalidArgumentError(f"invalid snapshot id {ref!r}: 8 to 64 hex digits")
    matches = sorted(i for i in ids if i.startswith(r))
    if not matches:
        raise NotFoundError(f"no journalled snapshot {ref} in {uri}")
    if len(matches) > 1:
        raise InvalidArgumentError(f"{ref} is ambiguous in {uri}: {', '.join(matches[:5])}")
    return matches[0]
