"""Where runs live in a store (docs/format.md, "Runs").

Every key is a create-only small key (:mod:`snapdir.stores._keys`), so two machines that
record runs into one store at once never overwrite each other, and a record, once named,
never changes:

* ``.snapdir/runs/rec/<record>`` — the record itself (canonical JSON, at most 1 MiB); the
  name is the BLAKE3 of the content, checked on every read. ``runs`` lists this prefix
  (the store's timestamps order them).
* ``.snapdir/runs/out/<snapshot id>/<record>`` — "what produced this tree": one list.
* ``.snapdir/runs/in/<snapshot id>/<record>`` — "what used this tree": one list.
* ``.snapdir/runs/cache/<cache key>/<record>`` — the run cache (``--reuse``).
* ``.snapdir/runs/rerun/<record>/<comparison record>`` — the reruns of a record.

Index keys hold the record's name and a newline (their name already says everything); the
captured stdout, stderr, git diff and pre-command outputs are ordinary objects
(``.objects/``, BLAKE3-named), so a large output is streamed, deduplicated and verified
like any file of a snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, cast

from .._errors import InvalidArgumentError, NotFoundError, StoreError, _warn
from ..stores._keys import KeyStore, check_key, has_keys
from .record import MAX_RECORD, InvalidRecordError, RunRecord, parse_record

if TYPE_CHECKING:
    from ..stores import Store

__all__ = [
    "CACHE",
    "IN",
    "OUT",
    "REC",
    "RERUN",
    "RUNS",
    "keys_of",
    "list_records",
    "read_record",
    "records_under",
    "resolve",
    "write_record",
]

RUNS = ".snapdir/runs/"
REC = RUNS + "rec/"
OUT = RUNS + "out/"
IN = RUNS + "in/"
CACHE = RUNS + "cache/"
RERUN = RUNS + "rerun/"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def keystore(store: Store) -> KeyStore:
    if not has_keys(store):
        raise StoreError(
            f"{store.uri}: runs need a store with create-only writes and listings (every "
            "built-in store has them; this one does not declare them)"
        )
    return cast("KeyStore", store)


def keys_of(rec: RunRecord) -> list[str]:
    """The index keys of a record (the record's own key first)."""
    d = rec.digest
    keys = [REC + d]
    keys += [f"{OUT}{sid}/{d}" for sid in dict.fromkeys(i for _, i in rec.outputs)]
    keys += [f"{IN}{sid}/{d}" for sid in dict.fromkeys(i for _, i in rec.inputs)]
    if rec.cache_key and rec.status == 0:
        keys.append(f"{CACHE}{rec.cache_key}/{d}")
    if rec.rerun_of:
        keys.append(f"{RERUN}{rec.rerun_of}/{d}")
    return [check_key(k) for k in keys]


async def write_record(store: Store, body: bytes) -> RunRecord:
    """Store a record and its index keys; returns it parsed (the check every reader
    makes, made once by the writer too). Writing the same record twice is a no-op."""
    from .._snapdir import blake3_hex

    digest = blake3_hex(body)
    rec = parse_record(body, digest)
    ks = keystore(store)
    # The record first: an index key never names a record that is not there.
    keys = keys_of(rec)
    await ks.put_if_absent(keys[0], body)
    line = (digest + "\n").encode()
    for k in keys[1:]:
        await ks.put_if_absent(k, line)
    return rec


async def read_record(store: Store, digest: str) -> RunRecord:
    """A record by name, validated (:func:`~.record.parse_record`)."""
    if not _HEX64.fullmatch(digest):
        raise InvalidArgumentError(f"invalid record name {digest!r}: expected 64 hex digits")
    data = await keystore(store).get_bytes(REC + digest, max_size=MAX_RECORD)
    return parse_record(data, digest)


async def list_records(store: Store) -> list[tuple[str, datetime]]:
    """Every record name with the store's time of it, newest first."""
    infos = await keystore(store).list_keys(REC)
    out = [(k.key[len(REC) :], k.time) for k in infos if _HEX64.fullmatch(k.key[len(REC) :])]
    out.sort(key=lambda t: (t[1], t[0]), reverse=True)
    return out


async def records_under(store: Store, prefix: str) -> list[str]:
    """The record names an index prefix lists (``OUT + id + "/"``), newest first; a
    malformed key is skipped."""
    check_key(prefix[:-1])
    infos = await keystore(store).list_keys(prefix)
    found = [(k.time, k.key[len(prefix) :]) for k in infos]
    found.sort(reverse=True)
    return [d for _, d in found if _HEX64.fullmatch(d)]


async def read_many(store: Store, digests: Sequence[str]) -> list[RunRecord]:
    """Records by name; one that is missing or invalid is reported as a warning and left
    out (a hostile or damaged store must not stop a listing)."""
    out: list[RunRecord] = []
    bad: list[str] = []
    for d in dict.fromkeys(digests):
        try:
            out.append(await read_record(store, d))
        except (InvalidRecordError, NotFoundError, InvalidArgumentError) as e:
            bad.append(f"{store.uri}: {e} (ignored)")
    if bad:
        _warn(bad[:20])
    return out


async def resolve(store: Store, text: str) -> list[RunRecord]:
    """``show``'s argument: a record name (or a unique prefix of 8+ hex digits), else a
    snapshot id, naming the runs that produced it."""
    t = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", t):
        raise InvalidArgumentError(
            f"invalid record or snapshot id {text!r}: expected 8 to 64 hex digits",
            code="INVALID_ID",
        )
    if len(t) == 64:
        try:
            return [await read_record(store, t)]
        except NotFoundError:
            produced = await records_under(store, f"{OUT}{t}/")
            if not produced:
                raise NotFoundError(f"no run record and no run output {t} in {store.uri}") from None
            return await read_many(store, produced)
    matches = [d for d, _ in await list_records(store) if d.startswith(t)]
    if not matches:
        raise NotFoundError(f"no run record starting with {t} in {store.uri}")
    if len(matches) > 1:
        raise InvalidArgumentError(f"{t} names {len(matches)} run records: give more digits")
    return [await read_record(store, matches[0])]
