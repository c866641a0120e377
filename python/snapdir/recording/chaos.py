"""``replay --chaos SEED``: a reproducible perturbed replay, for testing watchers.

Between two checkpoints, events are shuffled within windows of ``window`` events, keeping
each path's causality: an event never moves before an earlier one on the same path, an
ancestor or a descendant (a rename counts for both its paths). Some rewrites, creations
and permission changes are applied twice (a watcher sees duplicate modifications). The
result is the same tree at every checkpoint, so a chaotic replay still verifies; the same
seed gives the same replay.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._snapdir import RecordingLog

__all__ = ["perturb"]


def _paths(e: dict[str, Any]) -> list[str]:
    return [p for p in (e.get("p"), e.get("d")) if p is not None]


def _related(a: str, b: str) -> bool:
    return a == b or not a or not b or a.startswith(b + "/") or b.startswith(a + "/")


def _conflict(x: dict[str, Any], y: dict[str, Any]) -> bool:
    return any(_related(a, b) for a in _paths(x) for b in _paths(y))


def _shuffle(block: list[dict[str, Any]], rnd: random.Random, window: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(block), window):
        chunk = block[start : start + window]
        times = sorted(e["t"] for e in chunk)
        left = list(chunk)
        order: list[dict[str, Any]] = []
        while left:
            ready = [i for i, e in enumerate(left) if not any(_conflict(e, f) for f in left[:i])]
            order.append(left.pop(rnd.choice(ready)))
        dup: list[dict[str, Any]] = []
        for e in order:
            dup.append(e)
            if e["k"] in ("create", "write", "chmod") and rnd.random() < 0.2:
                again = dict(e)
                if again["k"] == "create":
                    again["k"] = "write"
                dup.append(again)
        times += [times[-1]] * (len(dup) - len(times))
        for e, t in zip(dup, times, strict=False):
            e["t"] = t
        out += dup
    return out


def perturb(log: RecordingLog, seed: int, window: int = 8) -> RecordingLog:
    """A new (in-memory, verified) recording: ``log``'s events perturbed by ``seed``."""
    from .._snapdir import RecordingLog, blake3_hex, recording_encode_segment

    rnd = random.Random(seed)
    events = [json.loads(t) for t in log.events_json(0, len(log))]
    out: list[dict[str, Any]] = []
    block: list[dict[str, Any]] = []
    for e in events:
        if e["k"] == "checkpoint":
            out += _shuffle(block, rnd, window)
            out.append(e)
            block = []
        else:
            block.append(e)
    out += _shuffle(block, rnd, window)
    last = 0
    for e in out:  # times stay non-decreasing across windows
        e["t"] = last = max(last, e["t"])
    meta = json.loads(log.meta_json())
    name = str(meta.get("name") or "chaos")
    lines = [json.dumps(e, separators=(",", ":")) for e in out]
    seg = recording_encode_segment(name, 0, None, json.dumps(meta), lines)
    return RecordingLog(name, [(blake3_hex(seg), seg)])
