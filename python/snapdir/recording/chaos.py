"""``replay --chaos SEED``: a reproducible perturbed replay, for testing watchers.

Between two checkpoints, events are shuffled within windows of ``window`` events, keeping
each path's causality: an event never moves before an earlier one on the same path, an
ancestor or a descendant (a rename counts for both its paths). Some rewrites, creations
and permission changes are applied twice (a watcher sees duplicate modifications).

Two more perturbations are asked for separately:

* ``children_first`` (``--chaos-children-first``): in each window, for every ``mkdir D``
  one event that makes something inside ``D`` (a ``create``, ``mkdir`` or ``placeholder``
  of ``D/...``, chosen by the seed among those no other event in between is related to,
  the ``mkdir`` of a directory between ``D`` and the child aside) is moved just before the
  ``mkdir``. The replayer then makes the missing directories on the way (mode 0700), so the
  child's path appears in the target first and its parent's ``mkdir`` event comes after it
  (reported to ``on_event`` in that order; applied as a change of mode to the directory
  already there) — the order a watcher meets when it scans a directory that filled before
  its watch was added, or when a remote tool reports events out of order.
* ``split_writes`` (``--chaos-split-writes N``): the replayer writes the content of every
  ``create``, ``write`` and ``append`` of at least N bytes in N chunks, each its own open,
  write and close (the last chunk takes the remainder). The kernel merges a notification
  only into an identical one just before it, so a watcher sees every chunk (N times
  open, modify, close-write) and meets the file part-written in between. The events and
  their order are unchanged by it.

The result is the same tree at every checkpoint, so a chaotic replay still verifies; the
same seed (and options) gives the same replay.
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


def _children_first(order: list[dict[str, Any]], rnd: random.Random) -> None:
    """Moves, for every ``mkdir D`` in ``order``, one event making something inside ``D``
    just before it (in place)."""
    i = 0
    while i < len(order):
        e = order[i]
        if e["k"] == "mkdir" and e.get("p"):
            pre = e["p"] + "/"
            cands = []
            for j in range(i + 1, len(order)):
                c = order[j]
                if c["k"] not in ("create", "mkdir", "placeholder") or not c["p"].startswith(pre):
                    continue
                # Only the mkdir of a directory between D and the child may be jumped over.
                if all(
                    not _conflict(c, b) or (b["k"] == "mkdir" and c["p"].startswith(b["p"] + "/"))
                    for b in order[i + 1 : j]
                ):
                    cands.append(j)
            if cands:
                order.insert(i, order.pop(rnd.choice(cands)))
                i += 1
        i += 1


def _shuffle(
    block: list[dict[str, Any]], rnd: random.Random, window: int, children_first: bool
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(block), window):
        chunk = block[start : start + window]
        times = sorted(e["t"] for e in chunk)
        left = list(chunk)
        order: list[dict[str, Any]] = []
        while left:
            ready = [i for i, e in enumerate(left) if not any(_conflict(e, f) for f in left[:i])]
            order.append(left.pop(rnd.choice(ready)))
        if children_first:
            _children_first(order, rnd)
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


def perturb(
    log: RecordingLog, seed: int, window: int = 8, *, children_first: bool = False
) -> RecordingLog:
    """A new (in-memory, verified) recording: ``log``'s events perturbed by ``seed``
    (``children_first``: see the module's documentation; the replayer must then make
    missing parents)."""
    from .._snapdir import RecordingLog, blake3_hex, recording_encode_segment

    rnd = random.Random(seed)
    events = [json.loads(t) for t in log.events_json(0, len(log))]
    out: list[dict[str, Any]] = []
    block: list[dict[str, Any]] = []
    for e in events:
        if e["k"] == "checkpoint":
            out += _shuffle(block, rnd, window, children_first)
            out.append(e)
            block = []
        else:
            block.append(e)
    out += _shuffle(block, rnd, window, children_first)
    last = 0
    for e in out:  # times stay non-decreasing across windows
        e["t"] = last = max(last, e["t"])
    meta = json.loads(log.meta_json())
    name = str(meta.get("name") or "chaos")
    lines = [json.dumps(e, separators=(",", ":")) for e in out]
    seg = recording_encode_segment(name, 0, None, json.dumps(meta), lines)
    return RecordingLog(name, [(blake3_hex(seg), seg)])
