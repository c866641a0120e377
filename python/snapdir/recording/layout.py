"""Where a recording lives in a store, and reading one back (docs/format.md, "Recordings").

Segments and file contents are ordinary content-addressed objects; checkpoints are ordinary
snapshots. A recording's own keys are small create-only records under
``.snapdir/recordings/<name>/``:

* ``head/<seq>_<digest>`` (empty): written after segment ``seq`` (object ``digest``) is
  stored, at least once a second while events arrive. The highest is the live head.
* ``sealed/<seq>_<digest>``: written once when the recording is sealed, naming its last
  segment; its content is a JSON summary.

A recording read back is untrusted input: keys are parsed strictly, every segment is
bounded in size, and the chain is verified in Rust (:class:`snapdir._snapdir.RecordingLog`)
before any event is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from .._errors import InvalidArgumentError, NotFoundError, StoreError
from ..stores._keys import KeyStore, has_keys

if TYPE_CHECKING:
    from .._snapdir import RecordingLog
    from ..stores import Store

__all__ = [
    "PREFIX",
    "Listed",
    "check_name",
    "head_key",
    "list_recordings",
    "load",
    "read_object",
    "sealed_key",
]

PREFIX = ".snapdir/recordings/"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ENTRY = re.compile(r"(head|sealed)/([0-9]{10})_([0-9a-f]{64})")
#: The largest segment object read (as the Rust side's bound).
MAX_SEGMENT = 64 << 20
#: The largest sealed summary read.
MAX_SUMMARY = 1 << 20
#: The most segments one recording may have (a day at one segment a second, ten times over).
MAX_SEGMENTS = 1_000_000


def check_name(name: str) -> str:
    """A recording name: letters, digits, ``._-``, not starting with a dot or dash, at most
    128 characters."""
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid recording name {name!r}: 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def head_key(name: str, seq: int, digest: str) -> str:
    return f"{PREFIX}{name}/head/{seq:010d}_{digest}"


def sealed_key(name: str, seq: int, digest: str) -> str:
    return f"{PREFIX}{name}/sealed/{seq:010d}_{digest}"


def keys_of(store: Store) -> KeyStore:
    if not has_keys(store):
        raise StoreError(f"{store.uri}: recordings need a store with the key methods")
    return cast("KeyStore", store)


async def read_object(store: Store, digest: str, max_size: int, tmp: str) -> bytes:
    """An object's bytes (verified by the store as it downloads), refused past
    ``max_size``."""
    dest = os.path.join(tmp, digest)
    await store.get_object(digest, dest)
    try:
        size = os.path.getsize(dest)  # noqa: ASYNC240 (a local stat of our own download)
        if size > max_size:
            raise StoreError(
                f"{store.uri}: object {digest} is {size} bytes, more than the {max_size} a "
                "recording segment may have"
            )
        with open(dest, "rb") as f:  # noqa: ASYNC230 (bounded, local)
            return f.read()
    finally:
        os.unlink(dest)


class Listed:
    """One recording as its keys show it: heads (seq → digest), whether it is sealed and
    the sealed record's key."""

    __slots__ = ("heads", "name", "sealed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.heads: dict[int, str] = {}
        self.sealed: tuple[int, str, str] | None = None

    def last(self) -> tuple[int, str]:
        """The head the recording ends at: the sealed one, else the highest."""
        if self.sealed is not None:
            return self.sealed[0], self.sealed[1]
        if not self.heads:
            raise NotFoundError(f"recording {self.name!r} has no segment yet")
        seq = max(self.heads)
        return seq, self.heads[seq]


def _parse(name: str, keys: Sequence[str]) -> Listed:
    out = Listed(name)
    base = f"{PREFIX}{name}/"
    for key in keys:
        m = _ENTRY.fullmatch(key[len(base) :])
        if m is None:
            raise StoreError(f"malformed recording key {key!r}")
        seq, digest = int(m.group(2)), m.group(3)
        if m.group(1) == "head":
            if out.heads.get(seq, digest) != digest:
                raise StoreError(f"recording {name!r} has two different heads for segment {seq}")
            out.heads[seq] = digest
        else:
            if out.sealed is not None and out.sealed[:2] != (seq, digest):
                raise StoreError(f"recording {name!r} is sealed twice, differently")
            out.sealed = (seq, digest, key)
    return out


async def list_recordings(store: Store) -> list[Listed]:
    """Every recording in the store, by name."""
    ks = keys_of(store)
    by: dict[str, list[str]] = {}
    for info in await ks.list_keys(PREFIX):
        rest = info.key[len(PREFIX) :]
        name = rest.split("/", 1)[0]
        if not _NAME.fullmatch(name):
            raise StoreError(f"malformed recording key {info.key!r}")
        by.setdefault(name, []).append(info.key)
    return [_parse(n, ks_) for n, ks_ in sorted(by.items())]


async def find(store: Store, name: str) -> Listed:
    """The keys of recording ``name``; :class:`NotFoundError` if it has none."""
    check_name(name)
    ks = keys_of(store)
    keys = [i.key for i in await ks.list_keys(f"{PREFIX}{name}/")]
    if not keys:
        raise NotFoundError(f"no recording {name!r} in {store.uri}")
    return _parse(name, keys)


async def summary(store: Store, listed: Listed) -> dict[str, Any] | None:
    """The sealed record's JSON summary (None while the recording is live)."""
    if listed.sealed is None:
        return None
    ks = keys_of(store)
    raw = await ks.get_bytes(listed.sealed[2], max_size=MAX_SUMMARY)
    try:
        obj = json.loads(raw)
    except ValueError:
        raise StoreError(f"recording {listed.name!r}: its sealed record is not JSON") from None
    if not isinstance(obj, dict):
        raise StoreError(f"recording {listed.name!r}: its sealed record is not an object")
    return obj


async def load(store: Store, name: str, *, jobs: int = 16) -> RecordingLog:
    """Read and verify recording ``name``: from its last head back along the chain of
    ``prev`` digests to segment 0, then verified whole (hashes, chain, every event)."""
    from .._snapdir import RecordingLog, recording_peek_header
    from ..stores._base import for_each_limited

    listed = await find(store, name)
    seq, digest = listed.last()
    if seq + 1 > MAX_SEGMENTS:
        raise StoreError(f"recording {name!r} claims {seq + 1} segments, more than allowed")
    fetched: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="snapdir-rec-") as tmp:
        wanted = [d for s, d in listed.heads.items() if s <= seq]

        async def one(d: str) -> None:
            with contextlib.suppress(NotFoundError):
                fetched[d] = await read_object(store, d, MAX_SEGMENT, tmp)

        await for_each_limited(wanted, one, jobs)
        chain: list[tuple[str, bytes]] = []
        cur: str | None = digest
        expect = seq
        while cur is not None:
            data = fetched.get(cur)
            if data is None:
                try:
                    data = await read_object(store, cur, MAX_SEGMENT, tmp)
                except NotFoundError:
                    raise NotFoundError(
                        f"recording {name!r}: segment {expect} ({cur}) is missing from the store"
                    ) from None
            got_seq, prev = recording_peek_header(data)
            if got_seq != expect or (prev is None) != (expect == 0):
                raise StoreError(f"recording {name!r}: segment {cur} breaks the chain")
            chain.append((cur, data))
            cur, expect = prev, expect - 1
    chain.reverse()
    return RecordingLog(name, chain)
