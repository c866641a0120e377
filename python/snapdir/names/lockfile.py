"""Lockfiles: what a set of refs resolved to, pinned by content id (and the store and the
release record), not by version — so that ``pull --locked`` gets exactly those bytes even
if a version were ever re-tagged elsewhere, and ``lock --check`` sees drift and yanks.

A lockfile is JSON (docs/format.md, "Lockfiles")::

    {"schema": 1, "tool": "snapdir 2.0.0",
     "entries": [{"ref": "cal-kit@^1.2", "store": "s3://b/p", "id": "<64 hex>",
                  "name": "cal-kit", "version": "1.3.0", "channel": "", "record": {...}}]}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._errors import InvalidArgumentError
from .._types import StoreUri

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["MAX_LOCK", "lock", "lock_check", "read_lock", "write_lock"]

MAX_LOCK = 4 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY = {"ref", "store", "id", "name", "version", "channel", "record"}


async def lock(
    store: str | StoreUri | Store | None, specs: Sequence[str], *, pre: bool = False
) -> dict[str, object]:
    """Resolve every ref in ``specs`` (in ``store``, or the store each ``URI#REF`` names)
    and return the lockfile document."""
    from .._snapdir import version
    from .ops import resolve

    if not specs:
        raise InvalidArgumentError("lock needs at least one ref", code="INVALID_ARGUMENT")
    entries = []
    for spec in specs:
        r = await resolve(store, spec, pre=pre)
        entries.append(
            {
                "ref": spec.partition("#")[2] if "#" in spec else spec,
                "store": r.store,
                "id": r.id,
                "name": r.name,
                "version": r.version,
                "channel": r.channel,
                "record": r.record,
            }
        )
    return {"schema": 1, "tool": f"snapdir {version()}", "entries": entries}


def write_lock(doc: dict[str, object], path: str) -> None:
    """Write a lockfile atomically (a reader never sees half of one)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_lock(path: str) -> list[dict[str, object]]:
    """The entries of a lockfile, validated (it may come from anywhere)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LOCK + 1)
    except FileNotFoundError:
        from .._errors import NotFoundError

        raise NotFoundError(f"no lockfile {path}") from None
    if len(data) > MAX_LOCK:
        raise InvalidArgumentError(f"{path}: lockfile larger than {MAX_LOCK} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgumentError(f"{path}: not a lockfile (invalid JSON)") from None
    if (
        not isinstance(doc, dict)
        or doc.get("schema") != 1
        or not isinstance(doc.get("entries"), list)
    ):
        raise InvalidArgumentError(f"{path}: not a lockfile (schema 1 with entries expected)")
    out = []
    for i, e in enumerate(doc["entries"]):
        ok = (
            isinstance(e, dict)
            and set(e) == _ENTRY
            and isinstance(e["id"], str)
            and _HEX64.fullmatch(e["id"]) is not None
            and all(isinstance(e[k], str) for k in _ENTRY - {"record"})
            and isinstance(e["record"], dict)
        )
        if not ok:
            raise InvalidArgumentError(f"{path}: entry {i} is malformed")
        StoreUri(e["store"])
        out.append(e)
    return out


async def lock_check(path: str, *, pre: bool = False) -> list[dict[str, object]]:
    """Resolve every entry of a lockfile again: the problems, each ``{"ref", "store",
    "locked", "now", "problem"}`` with problem ``drift`` (the ref names another snapshot
    now), ``yanked`` (the locked release is yanked) or ``gone`` (it resolves to nothing).
    An empty list: the lockfile is current."""
    from .._errors import NotFoundError
    from .ops import is_yanked, resolve

    problems: list[dict[str, object]] = []
    for e in read_lock(path):
        ref, store, locked = str(e["ref"]), str(e["store"]), str(e["id"])
        base = {"ref": ref, "store": store, "locked": locked}
        if e["name"] and e["version"] and await is_yanked(store, str(e["name"]), str(e["version"])):
            problems.append({**base, "now": "", "problem": "yanked"})
            continue
        try:
            now = await resolve(store, ref, pre=pre)
        except NotFoundError:
            problems.append({**base, "now": "", "problem": "gone"})
            continue
        if now.id != locked:
            problems.append({**base, "now": now.id, "problem": "drift"})
    return problems
