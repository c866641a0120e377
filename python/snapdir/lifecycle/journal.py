"""The journal: one small, create-only key per successful push, naming what the store holds.

A journal entry is a *root*: the snapshot it names is kept by the collector, listed by
``ls`` and judged by ``forget``. Everything ``ls`` shows is encoded in the entry's key, so
listing a store with 10,000 snapshots costs the list pages and nothing else (no GET per
entry). The key (docs/format.md, "Journal"):

``.snapdir/journal/<time>_<id>_<nonce>/<meta>[/<meta>…]``

* ``time`` — ``S`` for "the store's own timestamp of this key" (what a push writes: the
  listing carries that time, so recording it costs no request), or an explicit time
  (``push --time``, ``adopt``): UTC, microseconds, fixed width, ``20261207T162904.123456Z``;
* ``id`` — the snapshot id (64 lowercase hex);
* ``nonce`` — 16 random hex digits: two pushes of one snapshot in the same microsecond are
  two entries, and a retried create can recognise its own entry;
* ``meta`` — base64url (no padding) of a compact JSON object ``{"h": host, "u": user,
  "p": source path, "f": files, "b": bytes, "l": [labels]}`` (plus ``"r": record`` when a
  ``snapdir run`` made the snapshot: the name of its run record, and ``"t": [releases]``
  when the push tagged one: ``cal-kit@1.3.0``), cut into segments of at most
  200 characters (a file name's limit is 255 bytes), each written with an ``m`` in front.
  A path too long for the key is shortened in the key (``…`` marks where); the entry's
  content, the same JSON with ``"schema": 1``, ``"id"``, ``"time"`` and ``"tool"`` added,
  keeps it whole.

Keys read back are untrusted input: :func:`parse_key` checks every field and its bounds, and
a key that fails is reported, not guessed at.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone

from .._errors import InvalidArgumentError

__all__ = [
    "JOURNAL",
    "SnapshotInfo",
    "entry_body",
    "entry_key",
    "format_time",
    "parse_key",
    "parse_time",
]

JOURNAL = ".snapdir/journal/"
_HEAD = re.compile(r"(S|[0-9]{8}T[0-9]{6}\.[0-9]{6}Z)_([0-9a-f]{64})_([0-9a-f]{16})")
#: The time field of an entry that takes its time from the store's timestamp of the key.
STORE_TIME = "S"
_B64 = re.compile(r"m([A-Za-z0-9_-]{1,200})")
_META_SEGMENT = 200
_MAX_META = 4 * _META_SEGMENT
MAX_HOST = 253
MAX_USER = 64
MAX_LABEL = 64
MAX_LABELS = 16
_LABEL = re.compile(r"[^\x00-\x1f\x7f,]{1,64}")
_RUN = re.compile(r"[0-9a-f]{64}")


def format_time(t: datetime) -> str:
    """``20261207T162904.123456Z``: UTC, fixed width, sorts as it reads."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidArgumentError(f"time {t.isoformat()} has no time zone")
    return t.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def parse_time(text: str) -> datetime:
    """ISO 8601 as users write it (``2024-05-01``, ``2024-05-01T10:00``, with ``Z`` or an
    offset; no offset means UTC, not this machine's zone, so that two machines agree)."""
    s = text.strip()
    try:
        t = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
    except ValueError:
        raise InvalidArgumentError(
            f"invalid time {text!r}: expected ISO 8601, e.g. 2024-05-01T10:00:00Z"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


class SnapshotInfo:
    """One journalled snapshot, as ``ls`` lists it. ``key`` is the journal key: the root's
    identity (one snapshot id may have several entries: one per push); it is empty for an
    orphan (a manifest no entry names, listed by ``ls --orphans``).

    A plain class, not a dataclass: ``push`` builds one, and importing ``dataclasses``
    would add milliseconds to every CLI push."""

    __slots__ = (
        "bytes",
        "files",
        "host",
        "id",
        "key",
        "labels",
        "names",
        "path",
        "run",
        "tags",
        "time",
        "user",
    )

    id: str
    time: datetime
    host: str
    user: str
    path: str
    files: int
    bytes: int
    labels: tuple[str, ...]
    key: str
    #: The run record that produced the snapshot (64 hex), or "" for a plain push.
    run: str
    tags: tuple[str, ...]
    names: tuple[str, ...]

    def __init__(
        self,
        id: str,
        time: datetime,
        host: str = "",
        user: str = "",
        path: str = "",
        files: int = 0,
        bytes: int = 0,
        labels: tuple[str, ...] = (),
        key: str = "",
        run: str = "",
        tags: tuple[str, ...] = (),
        names: tuple[str, ...] | None = None,
    ) -> None:
        self.id = id
        self.run = run
        self.time = time
        self.host = host
        self.user = user
        self.path = path
        self.files = files
        self.bytes = bytes
        self.labels = labels
        self.key = key
        #: the releases (``name@version``) the push tagged, from ``push --tag``
        self.tags = tags
        #: the names known for the snapshot: the journal's own ``tags`` (free: they are in
        #: the key), or, after ``ls(names=True)``, every release and channel head of the
        #: store that names it (what the names say now, not what the push meant to write)
        self.names = tags if names is None else names

    def _fields(self) -> tuple[object, ...]:
        return (self.id, self.time, self.host, self.user, self.path, self.files, self.bytes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SnapshotInfo):
            return NotImplemented
        return (self._fields(), self.labels) == (other._fields(), other.labels)

    def __hash__(self) -> int:
        return hash((self._fields(), self.labels))

    def __repr__(self) -> str:
        return (
            f"SnapshotInfo(id={self.id!r}, time={self.time.isoformat()!r}, host={self.host!r}, "
            f"path={self.path!r}, files={self.files}, bytes={self.bytes}, "
            f"labels={self.labels!r})"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "host": self.host,
            "user": self.user,
            "path": self.path,
            "files": self.files,
            "bytes": self.bytes,
            "labels": list(self.labels),
            "key": self.key,
            "tags": list(self.tags),
            "names": list(self.names),
        }


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Labels as restic's tags: free text without commas or control characters, at most
    64 characters each and 16 in all; duplicates dropped, order kept."""
    out: list[str] = []
    for lb in labels:
        if not _LABEL.fullmatch(lb):
            raise InvalidArgumentError(
                f"invalid label {lb!r}: 1 to {MAX_LABEL} characters, no commas or control "
                "characters"
            )
        if lb not in out:
            out.append(lb)
    if len(out) > MAX_LABELS:
        raise InvalidArgumentError(f"at most {MAX_LABELS} labels, not {len(out)}")
    return tuple(out)


def _meta(info: SnapshotInfo, path: str) -> dict[str, object]:
    meta: dict[str, object] = {
        "h": info.host,
        "u": info.user,
        "p": path,
        "f": info.files,
        "b": info.bytes,
        "l": list(info.labels),
    }
    if info.run:
        meta["r"] = info.run
    if info.tags:
        meta["t"] = list(info.tags)
    return meta


#: A release as the journal records it (checked in full by :mod:`snapdir.names.grammar`
#: before a push writes it; here only its shape, for keys read back).
_TAG = re.compile(r"[a-z0-9][a-z0-9._/-]{0,199}@[0-9A-Za-z.-]{1,128}")
MAX_TAGS = 4


def _encode(obj: dict[str, object]) -> str:
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def entry_key(info: SnapshotInfo, nonce: str | None = None, *, explicit_time: bool = True) -> str:
    """The journal key for ``info`` (a fresh nonce unless one is given); without
    ``explicit_time`` the key says "store time" instead of ``info.time``."""
    if len(info.host) > MAX_HOST or len(info.user) > MAX_USER:
        raise InvalidArgumentError(
            f"host names are at most {MAX_HOST} characters and user names {MAX_USER}"
        )
    nonce = nonce or os.urandom(8).hex()
    path = info.path
    meta = _encode(_meta(info, path))
    while len(meta) > _MAX_META:
        # Keep the end of the path (the part that tells trees apart), mark the cut.
        path = "…" + path[len(path) // 8 + 1 :].lstrip("…")
        meta = _encode(_meta(info, path))
    # "m" first: a key segment may not start with base64url's "-" or "_"
    parts = ["m" + meta[i : i + _META_SEGMENT] for i in range(0, len(meta), _META_SEGMENT)]
    when = format_time(info.time) if explicit_time else STORE_TIME
    return f"{JOURNAL}{when}_{info.id}_{nonce}/" + "/".join(parts)


def entry_body(info: SnapshotInfo, tool: str, *, explicit_time: bool = True) -> bytes:
    """The entry's content: everything, the path unshortened (``time`` is null when the
    entry takes the store's timestamp)."""
    body = _meta(info, info.path)
    when = info.time.isoformat().replace("+00:00", "Z") if explicit_time else None
    body.update(schema=1, id=info.id, time=when, tool=tool)
    return json.dumps(body, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def parse_key(key: str, stored: datetime) -> SnapshotInfo:
    """The snapshot a journal key names; ``stored`` is the store's timestamp of the key
    (the entry's time unless the key names one). Raises :class:`InvalidArgumentError`
    naming the key for anything that is not exactly what :func:`entry_key` writes."""
    if not key.startswith(JOURNAL):
        raise InvalidArgumentError(f"not a journal key: {key!r}")
    head, _, rest = key[len(JOURNAL) :].partition("/")
    m = _HEAD.fullmatch(head)
    segments = rest.split("/") if rest else []
    chunks = [_B64.fullmatch(s) for s in segments]
    if m is None or not chunks or not all(chunks):
        raise InvalidArgumentError(f"malformed journal key {key!r}")
    b64 = "".join(c.group(1) for c in chunks if c is not None)
    if len(b64) > _MAX_META:
        raise InvalidArgumentError(f"journal key {key!r} is too long")
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        meta = json.loads(raw.decode())
        when = (
            stored
            if m.group(1) == STORE_TIME
            else datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
        )
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgumentError(f"malformed journal key {key!r}") from None
    fields = {"h", "u", "p", "f", "b", "l"}
    if not isinstance(meta, dict) or set(meta) - {"r", "t"} != fields:
        raise InvalidArgumentError(f"malformed journal key {key!r}: unexpected fields")
    run = meta.get("r", "")
    if not isinstance(run, str) or (run and not _RUN.fullmatch(run)):
        raise InvalidArgumentError(f"malformed journal key {key!r}: bad run record name")
    h, u, p, f, b, lbs = (meta[k] for k in ("h", "u", "p", "f", "b", "l"))
    tags = meta.get("t", [])
    if not (
        isinstance(tags, list)
        and len(tags) <= MAX_TAGS
        and all(isinstance(t, str) and _TAG.fullmatch(t) for t in tags)
    ):
        raise InvalidArgumentError(f"malformed journal key {key!r}: bad tags")
    ok = (
        isinstance(h, str)
        and len(h) <= MAX_HOST
        and isinstance(u, str)
        and len(u) <= MAX_USER
        and isinstance(p, str)
        and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**63 for n in (f, b))
        and isinstance(lbs, list)
        and all(isinstance(lb, str) for lb in lbs)
    )
    if not ok:
        raise InvalidArgumentError(f"malformed journal key {key!r}: bad field values")
    try:
        labels = check_labels(lbs)
    except InvalidArgumentError:
        raise InvalidArgumentError(f"malformed journal key {key!r}: bad labels") from None
    return SnapshotInfo(m.group(2), when, h, u, p, f, b, labels, key, run=run, tags=tuple(tags))


_ROOT_HEAD = re.compile(r"(?:S|[0-9]{8}T[0-9]{6}\.[0-9]{6}Z)_([0-9a-f]{64})_[0-9a-f]{16}")


async def gc_roots(store: object) -> tuple[set[str], set[str]]:
    """The collector's roots from the journal: the snapshot id of every entry. Leniently
    read on purpose: an entry whose metadata does not parse (a newer version's, or a
    damaged one) still keeps its snapshot — ``ls`` reports such keys, the collector must
    not take them for absent."""
    from .roots import shared_listing

    ids: set[str] = set()
    for k in await shared_listing(store, JOURNAL):
        head = k.key[len(JOURNAL) :].partition("/")[0]
        m = _ROOT_HEAD.fullmatch(head)
        if m is not None:
            ids.add(m.group(1))
    return ids, set()
