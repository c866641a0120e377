"""Small named keys in a store: what a store's lifecycle (journal, intents, names, policies)
is built from, beside the content-addressed objects and manifests.

Four optional store methods make it up, declared by :attr:`Capability.KEYS`:

* ``put_if_absent(key, data) -> bool`` — a **create-only** write: True when this call
  created the key, False when the key already existed (its content is then untouched).
  Backends use the service's own precondition (S3 ``If-None-Match: *``, GCS
  ``ifGenerationMatch=0``, ``link()`` on ``file://``); where a service has none (B2's native
  API) the backend documents its fallback. Exactly one of several racing writers wins.
* ``get_bytes(key, max_size=...) -> bytes`` — the content, refused (not truncated) past
  ``max_size``: a key is untrusted input, and a hostile store must not run a client out of
  memory.
* ``list_keys(prefix) -> list[KeyInfo]`` — every key under a ``/``-terminated prefix with
  its size and the store's own timestamp for it (S3/GCS/B2 upload time, a file's mtime),
  so that ages are measured in store time and never with a client's clock.
* ``delete_keys(keys)`` — delete in batches (S3 ``DeleteObjects``); a key already gone is no
  error, so a collector that is killed and started again simply repeats itself.
* ``store_time() -> datetime`` — "now" according to the store (an HTTP ``Date`` header, or a
  fresh file's mtime), for the same reason.

Keys are relative to the store's prefix. Records live under ``.snapdir/``; ``list_keys``
and ``delete_keys`` also accept ``.objects/`` and ``.manifests/`` keys (what a collector
lists and removes). Every key is validated here before any path or request is built from
it.

Whether a store's create-only write really is create-only is **probed**, not believed: the
first lifecycle operation on a store races a few writers on one fresh key
(:func:`probe_create_only`) and refuses to go on, with a clear message, if not exactly one
of them won — the test servers behind some backends have had bugs here, and a lost race
that overwrote a name would be silent data loss.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from .._errors import InvalidArgumentError, StoreError
from .._types import StoreUri

__all__ = [
    "RECORDS",
    "KeyInfo",
    "KeyStore",
    "check_key",
    "check_prefix",
    "ensure_create_only",
    "has_keys",
    "probe_create_only",
]

#: The namespace of lifecycle records under a store's prefix.
RECORDS = ".snapdir/"
_AREAS = (RECORDS, ".objects/", ".manifests/")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=,~_-]{0,254}")
MAX_KEY = 1024


class KeyInfo:
    """One listed key: its name relative to the store's prefix, its size, and the store's
    timestamp for it (timezone-aware, UTC)."""

    __slots__ = ("key", "size", "time")

    key: str
    size: int
    time: datetime

    def __init__(self, key: str, size: int, time: datetime) -> None:
        self.key = key
        self.size = size
        self.time = time.astimezone(timezone.utc)

    def __repr__(self) -> str:
        return f"KeyInfo({self.key!r}, {self.size}, {self.time.isoformat()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyInfo) and (self.key, self.size, self.time) == (
            other.key,
            other.size,
            other.time,
        )

    def __hash__(self) -> int:
        return hash((self.key, self.size, self.time))


def check_key(key: str, *, records_only: bool = True) -> str:
    """Validate a key: ``/``-separated segments of letters, digits and ``._@+=,~_-`` (not
    starting with a dot or dash), under ``.snapdir/`` (or, with ``records_only=False``, also
    ``.objects/`` and ``.manifests/``), at most 1,024 characters. Raises
    :class:`InvalidArgumentError` naming the key: nothing built from a bad key (a path, a
    request) ever exists."""
    areas = (RECORDS,) if records_only else _AREAS
    area = next((a for a in areas if key.startswith(a)), None)
    if area is None or len(key) > MAX_KEY or not key[len(area) :]:
        raise InvalidArgumentError(f"invalid store key {key!r} (expected {' or '.join(areas)}…)")
    for seg in key[len(area) :].split("/"):
        if not _SEGMENT.fullmatch(seg):
            raise InvalidArgumentError(f"invalid store key {key!r}: bad segment {seg!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: a valid key area ending in ``/`` (``.snapdir/journal/``)."""
    if prefix in _AREAS:
        return prefix
    if not prefix.endswith("/"):
        raise InvalidArgumentError(f"invalid listing prefix {prefix!r}: it must end with '/'")
    check_key(prefix[:-1], records_only=False)
    return prefix


@runtime_checkable
class KeyStore(Protocol):
    """The optional key methods (see the module docstring for each contract)."""

    uri: StoreUri

    async def put_if_absent(self, key: str, data: bytes) -> bool: ...

    async def get_bytes(self, key: str, *, max_size: int) -> bytes: ...

    async def list_keys(self, prefix: str) -> list[KeyInfo]: ...

    async def delete_keys(self, keys: Sequence[str]) -> None: ...

    async def store_time(self) -> datetime: ...


def has_keys(store: object) -> bool:
    """Whether ``store`` (or what it wraps) offers the key methods."""
    from ._base import Capability

    caps = getattr(store, "capabilities", Capability.NONE)
    return Capability.KEYS in caps and isinstance(store, KeyStore)


def _event_loop() -> bool:
    try:
        import sniffio

        sniffio.current_async_library()
    except Exception:  # sniffio.AsyncLibraryNotFoundError, or sniffio missing
        return False
    return True


async def probe_create_only(store: KeyStore, writers: int = 4) -> None:
    """Race ``writers`` create-only writes of one fresh key; exactly one must win and the
    key must hold the winner's bytes. Raises :class:`StoreError` naming the store otherwise
    (and removes the probe key either way)."""
    import anyio

    key = f"{RECORDS}probe/{os.urandom(12).hex()}"
    payloads = [f"probe {i} {os.urandom(8).hex()}".encode() for i in range(writers)]
    won: list[bool] = [False] * writers

    async def write(i: int) -> None:
        won[i] = await store.put_if_absent(key, payloads[i])

    try:
        if _event_loop():
            async with anyio.create_task_group() as tg:
                for i in range(writers):
                    tg.start_soon(write, i)
        else:
            # Driven without an event loop (local stores, see _manifest.run_local): nothing
            # can interleave, so the writes go one after the other; the create-only
            # semantics (later writers refused, first bytes kept) are still checked.
            for i in range(writers):
                await write(i)
        stored = await store.get_bytes(key, max_size=1024)
    finally:
        await store.delete_keys([key])
    winners = [i for i in range(writers) if won[i]]
    if len(winners) != 1 or stored != payloads[winners[0]]:
        raise StoreError(
            f"{store.uri} does not honour create-only writes ({len(winners)} of {writers} "
            "racing writers were told they created one key): names, journals and collection "
            "need them, and are refused on this store"
        )


#: Stores (by URI) whose create-only writes passed the probe in this process.
_PROBED: set[str] = set()


async def ensure_create_only(store: KeyStore) -> None:
    """Probe ``store`` once per process before an operation that relies on exactly one
    create-only writer winning (a version, a channel move, a policy change). Operations
    whose keys carry a random nonce (journal entries, intents) do not need it."""
    uri = str(store.uri)
    if uri in _PROBED:
        return
    await probe_create_only(store)
    _PROBED.add(uri)
