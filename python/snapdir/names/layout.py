"""Where names live in a store, and what their keys and records hold (docs/format.md,
"Names").

Everything of a name is under one prefix, so one listing returns its versions, yank
state and channels together::

    .snapdir/names/<name, '/' written '+'>/
        v/<version>                    release record (JSON), create-only, immutable
        y/<version>/<seq>-<yank|unyank> a yank or unyank marker (JSON), create-only
        c/<channel>/<999999999999-seq>  a channel move (JSON), create-only: newest first

Only create-only writes are made: a version key cannot be overwritten, a yank is undone
by a newer marker, a channel moves by creating its next entry — which is also what makes
``--expect`` a compare-and-swap (two movers from one head race for one key).

Everything read is untrusted: a key that is not exactly what this module writes is
reported and left out; records are capped in size, must be flat JSON objects with
exactly the known fields, and must agree with their key (name, version, channel, seq).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from .._errors import InvalidArgumentError
from .grammar import check_channel, check_name, check_version

__all__ = [
    "MAX_RECORD",
    "NAMES",
    "Listing",
    "channel_key",
    "name_prefix",
    "parse_listing",
    "parse_record",
    "version_key",
    "yank_key",
]

NAMES = ".snapdir/names/"
#: A record is a few hundred bytes; anything past this is a hostile store.
MAX_RECORD = 16 * 1024
MAX_MESSAGE = 4096
MAX_SEQ = 999_999_999_999
MAX_YANKS = 9999
_HEX64 = re.compile(r"[0-9a-f]{64}")
_YANK = re.compile(r"([0-9]{4})-(yank|unyank)")
_CSEQ = re.compile(r"[0-9]{12}")

RELEASE_FIELDS = frozenset({"schema", "id", "name", "version", "created", "by", "message"})
YANK_FIELDS = frozenset({"schema", "name", "version", "seq", "action", "reason", "created", "by"})
CHANNEL_FIELDS = frozenset(
    {"schema", "name", "channel", "seq", "id", "version", "created", "by", "message"}
)


def encode_name(name: str) -> str:
    """A name as one key segment (``lab/cal-kit`` -> ``lab+cal-kit``): ``+`` is in no name,
    so a name's prefix never holds another name's keys."""
    return check_name(name).replace("/", "+")


def name_prefix(name: str) -> str:
    return f"{NAMES}{encode_name(name)}/"


def version_key(name: str, version: str) -> str:
    return f"{name_prefix(name)}v/{version}"


def yank_key(name: str, version: str, seq: int, action: str) -> str:
    return f"{name_prefix(name)}y/{version}/{seq:04d}-{action}"


def channel_key(name: str, channel: str, seq: int) -> str:
    return f"{name_prefix(name)}c/{channel}/{MAX_SEQ - seq:012d}"


class Listing:
    """One name as a listing shows it: ``versions`` (canonical version -> (key, size)),
    the yank markers (version -> [(seq, action, key, size)], oldest first), the channels
    (channel -> [(seq, key, size)], newest first), and ``problems`` (what was left out)."""

    __slots__ = ("channels", "name", "problems", "versions", "yanks")

    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[str, tuple[str, int]] = {}
        self.yanks: dict[str, list[tuple[int, str, str, int]]] = {}
        self.channels: dict[str, list[tuple[int, str, int]]] = {}
        self.problems: list[str] = []

    def yanked(self, version: str) -> bool:
        marks = self.yanks.get(version) or []
        return bool(marks) and marks[-1][1] == "yank"

    def yank_seq(self, version: str) -> int:
        marks = self.yanks.get(version)
        return marks[-1][0] if marks else 0

    def head(self, channel: str) -> tuple[int, str, int] | None:
        entries = self.channels.get(channel)
        return entries[0] if entries else None


def _decode_name(segment: str) -> str:
    return check_name(segment.replace("+", "/"))


def parse_listing(keys: Iterable[tuple[str, int]], only: str | None = None) -> dict[str, Listing]:
    """Names from a listing of ``.snapdir/names/`` (or of one name's prefix, ``only``):
    every key is checked; one that is not what :mod:`.layout` writes goes to the name's
    ``problems`` (or is raised, for two version keys of equal precedence)."""
    out: dict[str, Listing] = {}
    stray: list[str] = []
    for key, size in keys:
        rest = key[len(NAMES) :] if key.startswith(NAMES) else None
        parts = rest.split("/") if rest else []
        try:
            name = _decode_name(parts[0]) if parts else ""
        except InvalidArgumentError:
            stray.append(key)
            continue
        if only is not None and name != only:
            stray.append(key)
            continue
        lst = out.setdefault(name, Listing(name))
        kind = parts[1] if len(parts) > 1 else ""
        if kind == "v" and len(parts) == 3:
            _add_version(lst, parts[2], key, size)
        elif kind == "y" and len(parts) == 4 and (m := _YANK.fullmatch(parts[3])):
            try:
                v = check_version(parts[2])
            except InvalidArgumentError:
                lst.problems.append(f"{key}: not a version")
                continue
            if v != parts[2]:
                lst.problems.append(f"{key}: not a canonical version")
                continue
            lst.yanks.setdefault(v, []).append((int(m.group(1)), m.group(2), key, size))
        elif kind == "c" and len(parts) == 4 and _CSEQ.fullmatch(parts[3]):
            try:
                ch = check_channel(parts[2])
            except InvalidArgumentError:
                lst.problems.append(f"{key}: not a channel")
                continue
            seq = MAX_SEQ - int(parts[3])
            if seq < 1:
                lst.problems.append(f"{key}: sequence 0")
                continue
            lst.channels.setdefault(ch, []).append((seq, key, size))
        else:
            lst.problems.append(f"{key}: not a name key")
    for lst in out.values():
        for marks in lst.yanks.values():
            marks.sort()
        for entries in lst.channels.values():
            entries.sort(reverse=True)
    if stray and out:
        next(iter(out.values())).problems.extend(f"{k}: not a name key" for k in stray[:20])
    elif stray:
        bad = Listing("")
        bad.problems.extend(f"{k}: not a name key" for k in stray[:20])
        out[""] = bad
    return out


def _add_version(lst: Listing, segment: str, key: str, size: int) -> None:
    """A version key: canonical, or an error naming both keys when another key of equal
    precedence is already there (``v1.2.3`` beside ``1.2.3``, ``1.2.3+b`` beside ``1.2.3``)."""
    lenient = segment.split("+", 1)[0]
    try:
        v = check_version(lenient)
    except InvalidArgumentError:
        lst.problems.append(f"{key}: not a version")
        return
    other = lst.versions.get(v)
    if other is not None:
        raise InvalidArgumentError(
            f"{lst.name}: two version keys of equal precedence: {other[0]} and {key} "
            "(written by something other than snapdir; remove one)",
            code="INVALID_ARGUMENT",
        )
    if v != segment:
        # keep it for the equal-precedence check, but never resolve to it
        lst.versions[v] = (key, -1)
        lst.problems.append(f"{key}: not a canonical version key")
        return
    lst.versions[v] = (key, size)


def _load(data: bytes, key: str, fields: frozenset[str]) -> dict[str, object]:
    if len(data) > MAX_RECORD:
        raise InvalidArgumentError(f"{key}: record larger than {MAX_RECORD} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgumentError(f"{key}: record is not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) != fields:
        raise InvalidArgumentError(f"{key}: record has unexpected fields")
    if doc.get("schema") != 1:
        raise InvalidArgumentError(f"{key}: record schema is not 1")
    for k, v in doc.items():
        if k in ("schema", "seq"):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_SEQ:
                raise InvalidArgumentError(f"{key}: record field {k} is not a count")
        elif not isinstance(v, str) or len(v) > MAX_MESSAGE:
            raise InvalidArgumentError(f"{key}: record field {k} is not a short string")
    return doc


def parse_record(data: bytes, key: str) -> dict[str, object]:
    """A record read from ``key``: validated, and checked against the key. Raises
    :class:`InvalidArgumentError` naming the key."""
    rest = key[len(NAMES) :].split("/")
    name = _decode_name(rest[0])
    kind = rest[1]
    if kind == "v":
        doc = _load(data, key, RELEASE_FIELDS)
        ok = doc["name"] == name and doc["version"] == rest[2]
    elif kind == "y":
        doc = _load(data, key, YANK_FIELDS)
        seq, _, action = rest[3].partition("-")
        ok = (
            doc["name"] == name
            and doc["version"] == rest[2]
            and doc["seq"] == int(seq)
            and doc["action"] == action
        )
    elif kind == "c":
        doc = _load(data, key, CHANNEL_FIELDS)
        ok = (
            doc["name"] == name
            and doc["channel"] == rest[2]
            and doc["seq"] == MAX_SEQ - int(rest[3])
        )
    else:
        raise InvalidArgumentError(f"{key}: not a record key")
    if not ok:
        raise InvalidArgumentError(f"{key}: record does not match its key")
    rid = doc.get("id")
    if rid is not None and not (isinstance(rid, str) and _HEX64.fullmatch(rid)):
        raise InvalidArgumentError(f"{key}: record id is not 64 lowercase hex digits")
    if kind == "c" and doc["version"] != "":
        try:
            if check_version(str(doc["version"])) != doc["version"]:
                raise InvalidArgumentError("not canonical")
        except InvalidArgumentError:
            raise InvalidArgumentError(f"{key}: record version is not a version") from None
    return doc


def dump(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False).encode() + b"\n"
