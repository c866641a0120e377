"""``record --from-snapshots``: a recording made from a series of snapshots (nightly
snapshots become a replayable stream).

Each snapshot after the first is diffed against the one before it; the differences become
events (their contents are the snapshots' own objects, already in the store) followed by a
checkpoint naming the snapshot. Times come from the store's journal when the snapshot is
journalled (its earliest entry), else one second apart.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgumentError
from .layout import check_name, head_key, keys_of, sealed_key

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["record_from_snapshots"]

_Node = tuple[str, int, str, int]  # kind, mode, checksum, size


def _nodes(m: Any) -> dict[str, _Node]:
    out: dict[str, _Node] = {}
    for e in m.entries:
        rel = e.path[2:].rstrip("/")
        kind = "d" if str(e.path_type) == "Directory" else "f"
        out[rel] = (kind, e.permissions, e.checksum, e.size)
    return out


def diff_events(old: dict[str, _Node], new: dict[str, _Node], t: int) -> list[dict[str, Any]]:
    """The events that turn tree ``old`` into tree ``new`` (both ``path -> node``; the root
    is ``""``)."""
    ev: list[dict[str, Any]] = []
    gone = [p for p in old if p and (p not in new or new[p][0] != old[p][0])]
    covered: set[str] = set()
    for p in sorted(gone, key=lambda r: (r.count("/"), r)):
        if any(p.startswith(c + "/") for c in covered):
            continue
        ev.append({"t": t, "k": "delete", "p": p})
        covered.add(p)
    if "" in new and (old.get("", ("d", -1))[1] != new[""][1]):
        ev.append({"t": t, "k": "chmod", "p": "", "m": new[""][1]})
    for p in sorted((p for p in new if p), key=lambda r: (r.count("/"), r)):
        kind, mode, checksum, size = new[p]
        had = (
            old.get(p)
            if p not in covered and not any(p.startswith(c + "/") for c in covered)
            else None
        )
        if had is not None and had[0] != kind:
            had = None
        if kind == "d":
            if had is None:
                ev.append({"t": t, "k": "mkdir", "p": p, "m": mode})
            elif had[1] != mode:
                ev.append({"t": t, "k": "chmod", "p": p, "m": mode})
            continue
        if had is None:
            ev.append({"t": t, "k": "create", "p": p, "m": mode, "h": checksum, "s": size})
        elif had[2] != checksum:
            ev.append({"t": t, "k": "write", "p": p, "m": mode, "h": checksum, "s": size})
        elif had[1] != mode:
            ev.append({"t": t, "k": "chmod", "p": p, "m": mode})
    return ev


async def record_from_snapshots(
    ids: Sequence[str], store: str | Store, *, name: str
) -> dict[str, Any]:
    """Make recording ``name`` from snapshots ``ids`` (in order); returns its summary."""
    from .._common import open_wrapped
    from .._snapdir import RecordingLog, blake3_hex, recording_encode_segment
    from .._types import SnapshotId
    from ..lifecycle.ops import ls

    if not ids:
        raise InvalidArgumentError("--from-snapshots needs at least one snapshot id")
    name = check_name(name)
    st = open_wrapped(store)
    ks = keys_of(st)
    if await ks.list_keys(f".snapdir/recordings/{name}/"):
        from .._errors import ConflictError

        raise ConflictError(f"a recording named {name!r} is already in {st.uri}")
    sids = [str(SnapshotId(i)) for i in ids]
    times: dict[str, datetime] = {}
    try:
        for info in await ls(st):
            if info.id not in times or info.time < times[info.id]:
                times[info.id] = info.time
    except Exception:  # a store without a journal: times are synthetic
        times = {}
    base = times.get(sids[0])
    events: list[dict[str, Any]] = []
    old: dict[str, _Node] = {}
    last = 0
    for k, sid in enumerate(sids):
        m = await st.get_manifest(sid)
        new = _nodes(m)
        when = times.get(sid)
        t = int((when - base).total_seconds() * 1e6) if when and base else k * 1_000_000
        t = max(last, t)
        last = t
        events += diff_events(old, new, t)
        events.append({"t": t, "k": "checkpoint", "id": sid})
        old = new
    counts: dict[str, int] = {}
    for e in events:
        counts[e["k"]] = counts.get(e["k"], 0) + 1
    started = (base or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")
    meta = {"name": name, "source": "", "host": "", "started": started,
            "from_snapshots": len(sids)}  # fmt: skip
    lines = [json.dumps(e, separators=(",", ":")) for e in events]
    seg = recording_encode_segment(name, 0, None, json.dumps(meta), lines)
    digest = blake3_hex(seg)
    RecordingLog(name, [(digest, seg)])
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="snapdir-fromsnap-") as tmp:
        path = os.path.join(tmp, "segment")
        with open(path, "wb") as f:  # noqa: ASYNC230 (local scratch)
            f.write(seg)
        await st.put_object(digest, path, len(seg))
    await ks.put_if_absent(head_key(name, 0, digest), b"")
    summary = {
        "schema": 1,
        "name": name,
        "source": "",
        "host": socket.gethostname(),
        "started": started,
        "duration": round(last / 1e6, 6),
        "segments": 1,
        "events": len(events),
        "by_kind": dict(sorted(counts.items())),
        "bytes": sum(e.get("s", 0) for e in events if e["k"] in ("create", "write")),
        "checkpoints": len(sids),
        "final_checkpoint": sids[-1],
        "overflows": 0,
    }
    await ks.put_if_absent(
        sealed_key(name, 0, digest), json.dumps(summary, sort_keys=True).encode() + b"\n"
    )
    return summary
