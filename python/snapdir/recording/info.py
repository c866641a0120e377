"""``recording ls`` and ``recording info``: what a store's recordings are."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .layout import find, list_recordings, summary

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["describe", "info", "ls"]


async def ls(store: str | Store) -> list[dict[str, Any]]:
    """One row per recording: name, sealed, segments, and (when sealed) its summary's
    duration, events, bytes and checkpoints. Costs one listing plus one small read per
    sealed recording."""
    from .._common import open_wrapped

    st = open_wrapped(store)
    rows = []
    for listed in await list_recordings(st):
        seq, _ = listed.last() if listed.heads or listed.sealed else (-1, "")
        row: dict[str, Any] = {"name": listed.name, "sealed": listed.sealed is not None}
        row["segments"] = seq + 1
        s = await summary(st, listed)
        for k in ("started", "duration", "events", "bytes", "checkpoints", "source"):
            row[k] = s.get(k) if s else None
        rows.append(row)
    return rows


def describe(log: Any, sealed: bool) -> dict[str, Any]:
    """The facts of a verified recording (from its events, not from a summary a store
    could forge)."""
    outline = log.outline()
    by_kind: dict[str, int] = {}
    for _, kind, _ in outline:
        by_kind[kind] = by_kind.get(kind, 0) + 1
    nbytes = 0
    for text in log.events_json(0, len(outline)):
        e = json.loads(text)
        if e["k"] in ("create", "write"):
            nbytes += e["s"]
        elif e["k"] == "append":
            nbytes += e["s"] - e["o"]
    meta = json.loads(log.meta_json())
    cps = log.checkpoints()
    return {
        "name": meta.get("name"),
        "source": meta.get("source"),
        "host": meta.get("host"),
        "started": meta.get("started"),
        "sealed": sealed,
        "duration": (outline[-1][0] / 1e6) if outline else 0.0,
        "events": len(outline),
        "by_kind": dict(sorted(by_kind.items())),
        "bytes": nbytes,
        "segments": len(log.segments()),
        "checkpoints": [{"t": t / 1e6, "id": sid, "index": i} for i, t, sid in cps],
        "final_checkpoint": cps[-1][2] if cps else None,
    }


async def info(name: str, store: str | Store) -> dict[str, Any]:
    """:func:`describe` of recording ``name`` (or of the one a release ref
    ``NAME@RANGE`` names), read back and verified whole."""
    from .._common import open_wrapped
    from .naming import load_ref

    st = open_wrapped(store)
    name, log = await load_ref(st, name)
    listed = await find(st, name)
    return describe(log, listed.sealed is not None)
