"""The name operations: ``tag``, ``resolve``, ``refs``, ``yank``/``unyank``, channel moves
and their log, and the copy of names that ``sync`` makes. They use only the small-key
methods of a store (:mod:`snapdir.stores._keys`): create-only writes, one listing per name,
size-capped reads — so they work alike on every backend and need no server.

Cost of a resolve (``cal-kit@>=1.2,<2`` among 500 versions): one listing of the name's
prefix (versions, yank markers and channels together) and one GET of the chosen release
record; none when the record is in the local cache (records are immutable).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from .._errors import ConflictError, InvalidArgumentError, NotFoundError, StoreError, _warn
from .._types import StoreUri
from ..stores._keys import KeyStore, ensure_create_only, has_keys
from .cache import RecordCache
from .grammar import NameRef, check_name, parse_channel, parse_ref, parse_tag
from .layout import (
    MAX_MESSAGE,
    MAX_RECORD,
    MAX_SEQ,
    MAX_YANKS,
    NAMES,
    Listing,
    channel_key,
    dump,
    name_prefix,
    parse_listing,
    parse_record,
    version_key,
    yank_key,
)

if TYPE_CHECKING:
    from ..stores import Store

__all__ = [
    "ChannelEntry",
    "Resolved",
    "channel_log",
    "channel_set",
    "check_version_free",
    "copy_names",
    "id_of",
    "names_by_id",
    "refs",
    "resolve",
    "resolve_id",
    "tag",
    "unyank",
    "yank",
]

#: How often a writer that lost a race re-reads and tries the next sequence number.
_RETRIES = 64


class Resolved:
    """What a ref resolved to: the snapshot ``id``, and for a name its ``name``,
    ``version`` (empty for a channel entry that named no version), ``record`` (the release
    record, or the channel entry), ``yanked`` and ``channel``."""

    __slots__ = ("channel", "created", "id", "name", "record", "store", "version", "yanked")

    def __init__(
        self,
        id: str,
        *,
        name: str = "",
        version: str = "",
        record: dict[str, object] | None = None,
        yanked: bool = False,
        channel: str = "",
        store: str = "",
    ) -> None:
        self.id = id
        self.name = name
        self.version = version
        self.record = record or {}
        self.yanked = yanked
        self.channel = channel
        self.store = store
        #: tag: whether this call created the release (False: it already was so)
        self.created = False

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "channel": self.channel,
            "yanked": self.yanked,
            "record": dict(self.record),
        }

    def __repr__(self) -> str:
        what = f"{self.name}@{self.version or self.channel}" if self.name else "id"
        return f"Resolved({what} -> {self.id[:12]})"


class ChannelEntry:
    """One move of a channel: ``seq`` (1 = the first), the ``id`` it points at, the
    ``version`` it was given as (if a release), when, by whom, and the message."""

    __slots__ = ("by", "channel", "created", "id", "key", "message", "name", "seq", "version")

    def __init__(self, doc: dict[str, object], key: str) -> None:
        self.name = str(doc["name"])
        self.channel = str(doc["channel"])
        self.seq = cast("int", doc["seq"])
        self.id = str(doc["id"])
        self.version = str(doc["version"])
        self.created = str(doc["created"])
        self.by = str(doc["by"])
        self.message = str(doc["message"])
        self.key = key

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        return f"ChannelEntry({self.name}@{self.channel} #{self.seq} -> {self.id[:12]})"


def _open(store: str | StoreUri | Store) -> Store:
    from .._common import open_wrapped

    return open_wrapped(store)


def _keys(store: Store, what: str) -> KeyStore:
    if not has_keys(store):
        raise StoreError(
            f"{store.uri}: {what} needs a store with create-only writes and listings (every "
            "built-in store has them; this one does not declare them)"
        )
    return cast("KeyStore", store)


async def _probe(ks: KeyStore) -> None:
    """Check once per process and store that create-only writes are honoured: a name that
    two writers could both create would be silently overwritten."""
    await ensure_create_only(ks)


def _by() -> str:
    import socket

    try:
        import getpass

        user = getpass.getuser()
    except (KeyError, OSError, ImportError):
        user = ""
    return f"{user}@{socket.gethostname()}"[:256]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _message(message: str) -> str:
    if len(message) > MAX_MESSAGE or any(ord(c) < 0x20 and c not in "\n\t" for c in message):
        raise InvalidArgumentError(
            f"a message is at most {MAX_MESSAGE} characters, without control characters",
            code="INVALID_ARGUMENT",
        )
    return message


class _Names:
    """One store's names, read through the record cache."""

    def __init__(self, store: Store, what: str) -> None:
        self.store = store
        self.ks = _keys(store, what)
        self.cache = RecordCache(str(store.uri))

    async def listing(self, name: str) -> Listing:
        keys = await self.ks.list_keys(name_prefix(name))
        lst = parse_listing(((k.key, k.size) for k in keys), only=name).get(name, Listing(name))
        if lst.problems:
            _warn([f"{self.store.uri}: {p} (ignored)" for p in lst.problems[:20]])
        return lst

    async def all(self) -> dict[str, Listing]:
        keys = await self.ks.list_keys(NAMES)
        out = parse_listing((k.key, k.size) for k in keys)
        problems = [p for lst in out.values() for p in lst.problems]
        if problems:
            _warn([f"{self.store.uri}: {p} (ignored)" for p in problems[:20]])
        out.pop("", None)
        return out

    async def record(self, key: str, size: int) -> dict[str, object]:
        cached = self.cache.get(key, size)
        if cached is not None:
            return cached
        data = await self.ks.get_bytes(key, max_size=MAX_RECORD)
        doc = parse_record(data, key)
        self.cache.put(key, data)
        return doc

    async def create(self, key: str, data: bytes) -> bool:
        created = await self.ks.put_if_absent(key, data)
        if created:
            self.cache.put(key, data)
        return created


def _pick(lst: Listing, spec: str, pre: bool, uri: str) -> str:
    from .._snapdir import spec_resolve

    versions = [v for v, (_, size) in lst.versions.items() if size >= 0]
    idx = spec_resolve(spec, versions, [lst.yanked(v) for v in versions], pre)
    if idx is None:
        if not versions:
            raise NotFoundError(f"no release named {lst.name!r} in {uri}")
        raise NotFoundError(f"no release of {lst.name} matches {spec!r} in {uri}")
    return versions[idx]


async def _resolve_name(names: _Names, ref: NameRef, pre: bool) -> Resolved:
    lst = await names.listing(ref.name)
    uri = str(names.store.uri)
    if ref.kind == "channel":
        head = lst.head(ref.channel)
        if head is None:
            raise NotFoundError(f"no channel {ref.name}@{ref.channel} in {uri}")
        doc = await names.record(head[1], head[2])
        version = str(doc["version"])
        return Resolved(
            str(doc["id"]),
            name=ref.name,
            version=version,
            record=doc,
            yanked=bool(version) and lst.yanked(version),
            channel=ref.channel,
            store=uri,
        )
    version = _pick(lst, ref.spec, pre, uri)
    key, size = lst.versions[version]
    doc = await names.record(key, size)
    yanked = lst.yanked(version)
    if yanked:
        marks = lst.yanks[version]
        reason = ""
        with contextlib.suppress(InvalidArgumentError, StoreError, NotFoundError):
            # the newest marker's reason: one more GET, only for a yanked release
            reason = str((await names.record(marks[-1][2], marks[-1][3]))["reason"])
        _warn([f"{ref.name}@{version} is yanked" + (f": {reason}" if reason else "")])
    return Resolved(
        str(doc["id"]), name=ref.name, version=version, record=doc, yanked=yanked, store=uri
    )


def _store_of(store: str | StoreUri | Store | None, ref: NameRef) -> str | StoreUri | Store:
    if ref.store is not None:
        qualified = StoreUri(ref.store)
        if store is not None and StoreUri(str(getattr(store, "uri", store))) != qualified:
            raise InvalidArgumentError(
                f"ref {ref.text!r} names store {qualified}, not {getattr(store, 'uri', store)}",
                code="INVALID_ARGUMENT",
            )
        return store if store is not None else qualified
    if store is None:
        raise InvalidArgumentError(
            f"ref {ref.text!r} needs a store (--store, or URI#REF)", code="INVALID_STORE"
        )
    return store


async def resolve(
    store: str | StoreUri | Store | None, spec: str, *, pre: bool = False
) -> Resolved:
    """Resolve a ref (``cal-kit@>=1.2,<2``, ``cal-kit@stable``, ``cal-kit``, an id or a
    unique id prefix, or ``URI#REF``) in ``store``. ``pre`` admits prereleases. A yanked
    release is only chosen by an exact ``==`` pin (with a warning). Raises
    :class:`NotFoundError` when nothing matches."""
    ref = parse_ref(spec)
    st = _open(_store_of(store, ref))
    if ref.kind == "id":
        return Resolved(ref.id, store=str(st.uri))
    if ref.kind == "prefix":
        return Resolved(await _by_prefix(st, ref.id), store=str(st.uri))
    return await _resolve_name(_Names(st, "resolve"), ref, pre)


async def _by_prefix(st: Store, prefix: str) -> str:
    matches = sorted(m for m in await st.list_manifests() if m.startswith(prefix))
    if not matches:
        raise NotFoundError(f"no snapshot {prefix}… in {st.uri}")
    if len(matches) > 1:
        raise InvalidArgumentError(
            f"{prefix} is ambiguous in {st.uri}: {', '.join(m[:16] for m in matches[:5])}",
            code="INVALID_ID",
        )
    return matches[0]


async def resolve_id(
    store: str | StoreUri | Store | None, ref: str, *, pre: bool = False, check: bool = True
) -> str:
    """The snapshot id a ref names (what every command that takes an id calls). With
    ``check``, a name whose record points at a missing manifest is :class:`NotFoundError`
    naming both (a plain id is left to the operation, which says so itself)."""
    r = await resolve(store, ref, pre=pre)
    parsed = parse_ref(ref)
    if check and parsed.kind != "id":
        st = _open(_store_of(store, parsed))
        if not await st.has_manifest(r.id):
            raise NotFoundError(f"{ref} names snapshot {r.id}, whose manifest is not in {st.uri}")
    return r.id


async def id_of(ref: str, store: str | StoreUri | Store) -> str:
    """What the operations that take a snapshot call first: a 64-hex id as it is (no
    request), any other ref (a prefix, ``name@SPEC``, ``name@channel``, ``URI#REF``)
    resolved in ``store``."""
    text = str(ref).strip()
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text
    return await resolve_id(store, text)


@asynccontextmanager
async def _held(st: Store, sid: str, what: str) -> AsyncIterator[None]:
    """Hold snapshot ``sid`` against a concurrent collection while a name for it is written
    (docs/design/gc.md): an intent carrying its manifest, settled before the name is
    written. A name cannot put back content a sweep removed meanwhile, so that case is an
    error and no name is written."""
    from ..lifecycle.intents import protect

    m = await st.get_manifest(sid)

    async def lost(objects: list[str], manifest: bool) -> None:
        raise NotFoundError(
            f"snapshot {sid} in {st.uri} was collected while {what} was being written "
            f"({len(objects)} object(s){' and its manifest' if manifest else ''} gone): "
            "push it again, then name it"
        )

    async with protect(st, snapshot_id=sid, manifest=m) as guard:
        await guard.settle(lost)
        yield


async def tag(
    store: str | StoreUri | Store, release: str, ref: str, *, message: str = ""
) -> Resolved:
    """Name snapshot ``ref`` (an id, a prefix or another name) ``release``
    (``name@1.3.0``). Immutable: the same id again is a no-op success; another id for an
    existing version raises :class:`ConflictError` and changes nothing. Exactly one of
    several racing taggers of one version wins (a create-only write)."""
    name, version = parse_tag(release)
    _message(message)
    st = _open(store)
    names = _Names(st, "tag")
    sid = await resolve_id(st, ref, check=False)
    if not await st.has_manifest(sid):
        raise NotFoundError(f"no snapshot {sid} in {st.uri}: nothing to tag {name}@{version}")
    await _probe(names.ks)
    key = version_key(name, version)
    doc: dict[str, object] = {
        "schema": 1,
        "id": sid,
        "name": name,
        "version": version,
        "created": _now(),
        "by": _by(),
        "message": message,
    }
    data = dump(doc)
    async with _held(st, sid, f"{name}@{version}"):
        created = await names.create(key, data)
    if created:
        made = Resolved(sid, name=name, version=version, record=doc, store=str(st.uri))
        made.created = True
        return made
    existing = parse_record(await names.ks.get_bytes(key, max_size=MAX_RECORD), key)
    if existing["id"] == sid:
        return Resolved(sid, name=name, version=version, record=existing, store=str(st.uri))
    raise ConflictError(
        f"{name}@{version} already names {existing['id']} in {st.uri}; a version is never "
        f"moved (not tagging {sid}: tag a new version instead)"
    )


async def _mark(store: str | StoreUri | Store, release: str, action: str, reason: str) -> bool:
    name, version = parse_tag(release)
    _message(reason)
    st = _open(store)
    names = _Names(st, action)
    await _probe(names.ks)
    for _ in range(_RETRIES):
        lst = await names.listing(name)
        if version not in lst.versions or lst.versions[version][1] < 0:
            raise NotFoundError(f"no release {name}@{version} in {st.uri}")
        if lst.yanked(version) == (action == "yank"):
            return False  # already so: nothing to write
        seq = lst.yank_seq(version) + 1
        if seq > MAX_YANKS:
            raise StoreError(f"{name}@{version} has been yanked and unyanked too often")
        key = yank_key(name, version, seq, action)
        doc: dict[str, object] = {
            "schema": 1,
            "name": name,
            "version": version,
            "seq": seq,
            "action": action,
            "reason": reason,
            "created": _now(),
            "by": _by(),
        }
        if await names.create(key, dump(doc)):
            return True
    raise ConflictError(f"{name}@{version}: gave up after {_RETRIES} lost races")


async def yank(store: str | StoreUri | Store, release: str, reason: str) -> bool:
    """Yank a release (PEP 592): ranges and bare names skip it, an exact ``==`` pin still
    resolves it, with a warning. True if this call yanked it (False: it already was)."""
    if not reason.strip():
        raise InvalidArgumentError("a yank needs a reason", code="INVALID_ARGUMENT")
    return await _mark(store, release, "yank", reason)


async def unyank(store: str | StoreUri | Store, release: str, reason: str = "") -> bool:
    """Undo a yank (a newer marker; the history stays). True if this call unyanked it."""
    return await _mark(store, release, "unyank", reason)


async def channel_set(
    store: str | StoreUri | Store,
    target: str,
    ref: str,
    *,
    expect: str | None = None,
    expect_seq: int | None = None,
    message: str = "",
) -> ChannelEntry:
    """Point channel ``target`` (``name@stable``) at ``ref``: a create-only write of the
    channel's next entry. With ``expect`` (a ref), the channel must point at that snapshot
    now, and must not move between this read and the write (the write of the next sequence
    number fails if anyone else wrote it): :class:`ConflictError` otherwise. Without it a
    lost race is retried on the new head.

    ``expect`` compares snapshots, so a channel moved A -> B -> A meanwhile still reads as
    "A" (the ABA problem). ``expect_seq`` compares the move's sequence number instead (0:
    the channel must not exist yet): the head must be move ``expect_seq`` and this write
    becomes move ``expect_seq + 1`` or nothing — a compare-and-swap no later move can
    fake, since every move takes the next number. Both may be given."""
    name, channel = parse_channel(target)
    _message(message)
    if expect_seq is not None and (
        not isinstance(expect_seq, int)
        or isinstance(expect_seq, bool)
        or not 0 <= expect_seq < MAX_SEQ
    ):
        raise InvalidArgumentError(
            f"expect_seq must be a move number from 0 to {MAX_SEQ - 1}, not {expect_seq!r}",
            code="INVALID_ARGUMENT",
        )
    st = _open(store)
    names = _Names(st, "channel set")
    parsed = parse_ref(ref)
    r = await _resolve_ref_in(st, names, parsed)
    if not await st.has_manifest(r.id):
        raise NotFoundError(f"{ref} names snapshot {r.id}, whose manifest is not in {st.uri}")
    want = None if expect is None else (await _resolve_ref_in(st, names, parse_ref(expect))).id
    await _probe(names.ks)
    for _ in range(_RETRIES):
        lst = await names.listing(name)
        head = lst.head(channel)
        now_seq = 0 if head is None else head[0]
        if expect_seq is not None and now_seq != expect_seq:
            why = "it moved meanwhile" if now_seq > expect_seq else "there is no such move"
            raise ConflictError(
                f"{name}@{channel} is at move #{now_seq}, not #{expect_seq}: {why} (re-read "
                "it with channel log and try again)"
            )
        current = None
        if want is not None and head is not None:
            current = str((await names.record(head[1], head[2]))["id"])
        if want is not None and current != want:
            raise ConflictError(
                f"{name}@{channel} points at {current or 'nothing'}, not {want}: it moved "
                "meanwhile (re-read it and try again)"
            )
        seq = 1 if head is None else head[0] + 1
        doc: dict[str, object] = {
            "schema": 1,
            "name": name,
            "channel": channel,
            "seq": seq,
            "id": r.id,
            "version": r.version if r.name == name else "",
            "created": _now(),
            "by": _by(),
            "message": message,
        }
        key = channel_key(name, channel, seq)
        async with _held(st, r.id, f"{name}@{channel}"):
            created = await names.create(key, dump(doc))
        if created:
            return ChannelEntry(doc, key)
        if want is not None or expect_seq is not None:
            raise ConflictError(
                f"{name}@{channel} moved meanwhile (another writer took move #{seq})"
            )
    raise ConflictError(f"{name}@{channel}: gave up after {_RETRIES} lost races")


async def _resolve_ref_in(st: Store, names: _Names, ref: NameRef) -> Resolved:
    if ref.store is not None and StoreUri(ref.store) != st.uri:
        raise InvalidArgumentError(
            f"ref {ref.text!r} names another store than {st.uri}", code="INVALID_ARGUMENT"
        )
    if ref.kind == "id":
        return Resolved(ref.id)
    if ref.kind == "prefix":
        return Resolved(await _by_prefix(st, ref.id))
    return await _resolve_name(names, ref, False)


async def channel_log(store: str | StoreUri | Store, target: str) -> list[ChannelEntry]:
    """Every move of a channel, newest first (one listing, a GET per entry not cached)."""
    name, channel = parse_channel(target)
    st = _open(store)
    names = _Names(st, "channel log")
    lst = await names.listing(name)
    out = []
    for _seq, key, size in lst.channels.get(channel, []):
        out.append(ChannelEntry(await names.record(key, size), key))
    if not out:
        raise NotFoundError(f"no channel {name}@{channel} in {st.uri}")
    return out


async def refs(
    store: str | StoreUri | Store, name: str | None = None, *, yanked: bool = False
) -> list[dict[str, Any]]:
    """The names of a store (or one), each ``{"name", "versions": [{"version", "id",
    "yanked", "reason"}...] (ascending precedence), "channels": {channel: {"id", "version",
    "seq"}}}``. Yanked versions are listed only with ``yanked``."""
    from .._snapdir import version_order

    st = _open(store)
    names = _Names(st, "refs")
    if name is not None:
        listings = {check_name(name): await names.listing(name)}
    else:
        listings = await names.all()
    out: list[dict[str, Any]] = []
    for n in sorted(listings):
        lst = listings[n]
        good = [v for v, (_, size) in lst.versions.items() if size >= 0]
        versions: list[dict[str, object]] = []
        for i in version_order(good):
            v = good[i]
            is_yanked = lst.yanked(v)
            if is_yanked and not yanked:
                continue
            key, size = lst.versions[v]
            doc = await names.record(key, size)
            entry: dict[str, object] = {"version": v, "id": doc["id"], "yanked": is_yanked}
            if is_yanked:
                mark = lst.yanks[v][-1]
                entry["reason"] = (await names.record(mark[2], mark[3]))["reason"]
            versions.append(entry)
        channels: dict[str, object] = {}
        for ch in sorted(lst.channels):
            head = lst.channels[ch][0]
            doc = await names.record(head[1], head[2])
            channels[ch] = {"id": doc["id"], "version": doc["version"], "seq": head[0]}
        if versions or channels or name is not None:
            out.append({"name": n, "versions": versions, "channels": channels})
    if name is not None and not listings[name].versions and not listings[name].channels:
        raise NotFoundError(f"no name {name!r} in {st.uri}")
    return out


async def is_yanked(store: str | StoreUri | Store, name: str, version: str) -> bool:
    """Whether release ``name@version`` is yanked now (one listing)."""
    lst = await _Names(_open(store), "names").listing(check_name(name))
    return lst.yanked(version)


async def named_ids(store: Store) -> set[str]:
    """Every snapshot id a release record or a channel's entries name (gc roots, and the
    snapshots retention never forgets by a time rule)."""
    if not has_keys(store):
        return set()
    names = _Names(store, "names")
    ids: set[str] = set()
    for lst in (await names.all()).values():
        for key, size in lst.versions.values():
            if size >= 0:
                ids.add(str((await names.record(key, size))["id"]))
        for entries in lst.channels.values():
            for _seq, key, size in entries:
                ids.add(str((await names.record(key, size))["id"]))
    return ids


#: How many records ``names_by_id`` reads at once (a cold cache on a cloud store).
_READERS = 16


async def names_by_id(store: Store) -> dict[str, list[str]]:
    """What ``ls --names`` shows: snapshot id -> the names that point at it now, each
    name's releases in ascending precedence (yanked ones left out, as ``refs`` does), then
    its channels (their heads only). One listing of the names, and one GET per record the
    local cache lacks (records are immutable: a warm cache reads none). A record that does
    not validate is reported and left out, so one hostile key cannot hide the others."""
    import anyio

    from .._snapdir import version_order
    from ..stores import Capability

    if not has_keys(store):
        return {}
    names = _Names(store, "ls --names")
    listings = await names.all()
    wanted: list[tuple[str, str, int]] = []  # (label, key, size) in display order
    for n in sorted(listings):
        lst = listings[n]
        good = [v for v, (_, size) in lst.versions.items() if size >= 0 and not lst.yanked(v)]
        for i in version_order(good):
            key, size = lst.versions[good[i]]
            wanted.append((f"{n}@{good[i]}", key, size))
        for ch in sorted(lst.channels):
            _seq, key, size = lst.channels[ch][0]
            wanted.append((f"{n}@{ch}", key, size))
    found: list[str | None] = [None] * len(wanted)
    bad: list[str] = []
    local = bool(store.capabilities & Capability.LOCAL)
    limit = None if local else anyio.CapacityLimiter(_READERS)

    async def read(i: int, key: str, size: int) -> None:
        try:
            if limit is None:
                found[i] = str((await names.record(key, size))["id"])
            else:
                async with limit:
                    found[i] = str((await names.record(key, size))["id"])
        except (InvalidArgumentError, NotFoundError) as e:
            bad.append(str(e))

    if local:
        # in place, one after the other: a local store is read without an event loop
        for i, (_label, key, size) in enumerate(wanted):
            await read(i, key, size)
    else:
        async with anyio.create_task_group() as tg:
            for i, (_label, key, size) in enumerate(wanted):
                tg.start_soon(read, i, key, size)
    if bad:
        _warn([f"{store.uri}: {m} (ignored)" for m in sorted(bad)[:20]])
    out: dict[str, list[str]] = {}
    for (label, _key, _size), sid in zip(wanted, found, strict=True):
        if sid is not None:
            out.setdefault(sid, []).append(label)
    return out


async def copy_names(src: Store, dst: Store, snapshot_ids: Sequence[str]) -> list[str]:
    """After a sync: give ``dst`` the release records (and their yank markers) of ``src``
    that name the copied snapshots — the same records, create-only, after the content and the
    journal. A version ``dst`` already gives another id is left alone, with a warning.
    Returns the keys created."""
    if not (has_keys(src) and has_keys(dst)):
        return []
    wanted = set(snapshot_ids)
    s, d = _Names(src, "sync"), _Names(dst, "sync")
    made: list[str] = []
    for lst in (await s.all()).values():
        for version, (key, size) in sorted(lst.versions.items()):
            if size < 0:
                continue
            doc = await s.record(key, size)
            if doc["id"] not in wanted:
                continue
            data = dump(doc)
            if await d.create(key, data):
                made.append(key)
            else:
                there = parse_record(await d.ks.get_bytes(key, max_size=MAX_RECORD), key)
                if there["id"] != doc["id"]:
                    _warn(
                        [
                            f"{dst.uri}: {lst.name}@{version} already names {there['id']}, "
                            f"not {doc['id']} as in {src.uri} (left alone)"
                        ]
                    )
                    continue
            for _seq, _action, mkey, msize in lst.yanks.get(version, []):
                mdoc = await s.record(mkey, msize)
                if await d.create(mkey, dump(mdoc)):
                    made.append(mkey)
    return made


async def check_version_free(store: Store, release: str) -> str:
    """Checks ``release`` (``NAME@VERSION``) before the work whose result it will name
    (a recording, a run): well formed, and the version not taken, so a taken version
    fails before anything runs rather than at the end. Returns it canonical; a version
    taken meanwhile still fails at :func:`tag` (create-only)."""
    name, version = parse_tag(release)
    try:
        got = await resolve(store, f"{name}@=={version}", pre=True)
    except NotFoundError:
        return f"{name}@{version}"
    except StoreError as e:
        if e.code != "STORE_NOT_FOUND":  # a new local store: nothing is named in it yet
            raise
        return f"{name}@{version}"
    raise ConflictError(f"{name}@{version} already names {got.id} in {store.uri}")
