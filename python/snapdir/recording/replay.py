"""Replaying a recording into a directory with its timing.

The events are applied in Rust (:class:`snapdir._snapdir.Replayer`) on an absolute
schedule, ``start + Σ min((t_i - t_{i-1}) / speed, max_delay)``; the modes are
epuplayer's: ``dev`` (1000x, at most 0.1 s between events), ``fast`` (100x, at most 1 s:
the default), ``exact`` (1x) and ``burst`` (no waiting). Content objects are fetched first
(verified by the store), checked again against their hash before they are written, and
written only inside the target, as a pull writes (no symbolic link followed, no setuid).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import ConflictError, HashMismatchError, InvalidArgumentError, UnsafePathError
from .naming import load_ref

if TYPE_CHECKING:
    from .._snapdir import RecordingLog
    from ..stores import Store

__all__ = ["MAX_SPLIT_WRITES", "MODES", "ReplayReport", "replay"]

#: The most chunks ``--chaos-split-writes`` splits one write into (the Rust side's bound).
MAX_SPLIT_WRITES = 1024

#: mode → (speed, max delay in seconds); inf = no cap / no waiting.
MODES: dict[str, tuple[float, float]] = {
    "dev": (1000.0, 0.1),
    "fast": (100.0, 1.0),
    "exact": (1.0, float("inf")),
    "burst": (float("inf"), 0.0),
}


class ReplayReport:
    """What a replay did: events applied, placeholders written, unreadable events skipped,
    how late events started (seconds: p50, p99, max, last), and what was verified."""

    __slots__ = (
        "checkpoints_verified",
        "duration",
        "events",
        "final_checkpoint",
        "lateness",
        "max_delay",
        "mode",
        "name",
        "placeholders",
        "speed",
        "target_id",
        "unreadable",
        "verified",
    )

    def __init__(self, **kw: Any) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    name: str
    mode: str
    speed: float
    max_delay: float
    events: int
    placeholders: int
    unreadable: int
    duration: float
    lateness: dict[str, float]
    verified: bool | None
    checkpoints_verified: int
    final_checkpoint: str | None
    target_id: str | None

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if x == float("inf") else x

        return {
            "name": self.name,
            "mode": self.mode,
            "speed": num(self.speed),
            "max_delay": num(self.max_delay),
            "events": self.events,
            "placeholders": self.placeholders,
            "unreadable": self.unreadable,
            "duration": round(self.duration, 6),
            "lateness": self.lateness,
            "verified": self.verified,
            "checkpoints_verified": self.checkpoints_verified,
            "final_checkpoint": self.final_checkpoint,
            "target_id": self.target_id,
        }

    def __repr__(self) -> str:
        return f"ReplayReport({self.to_json()!r})"


def _index_at(outline: list[tuple[int, str, str]], t_us: int) -> int:
    """The first event recorded at or after ``t_us``."""
    import bisect

    return bisect.bisect_left([o[0] for o in outline], t_us)


def _prepare_target(target: str, into_existing: bool) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        os.makedirs(target)
        return
    import stat

    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(
            f"replay target {target!r} is not a directory (links are not followed)"
        )
    if os.listdir(target) and not into_existing:
        raise ConflictError(
            f"replay target {target!r} is not empty: pass --into-existing to replay into it"
        )


async def _matches(
    target: str, checkpoint: str, store: Store, placeholders: set[str], extra_ok: bool
) -> tuple[bool, str]:
    """Whether the target equals snapshot ``checkpoint``: the same id, or failing that the
    same entries with these exceptions: placeholder files are compared by size and mode
    only (their bytes were never kept), special permission bits are not compared (a replay
    drops them), and with ``extra_ok`` (a replay into an existing directory) paths the
    snapshot does not name are not compared."""
    from .._manifest import manifest

    m = await manifest(target, use_cache=False)
    from .._snapdir import id_from_manifest

    tid = id_from_manifest(m)
    if tid == checkpoint:
        return True, tid
    want = await store.get_manifest(checkpoint)
    a = {e.path: e for e in m.entries}
    b = {e.path: e for e in want.entries}
    if not set(b) <= set(a) or (set(a) != set(b) and not extra_ok):
        return False, tid
    for p, e in b.items():
        g = a[p]
        # setuid, setgid and sticky bits are never replayed (as pull drops them)
        if (g.path_type, g.permissions) != (e.path_type, e.permissions & 0o777):
            return False, tid
        if str(e.path_type) == "Directory" and extra_ok:
            continue
        if str(e.path_type) == "File":
            if p[2:] in placeholders:
                if g.size != e.size:
                    return False, tid
            elif (g.checksum, g.size) != (e.checksum, e.size):
                return False, tid
    return True, tid


async def replay(
    rec: str | RecordingLog,
    store: str | Store,
    target: str | os.PathLike[str],
    *,
    mode: str = "fast",
    speed: float | None = None,
    max_delay: float | None = None,
    start: float | None = None,
    at: float | None = None,
    until: float | None = None,
    verify: str = "end",
    placeholder: str = "zeros",
    into_existing: bool = False,
    skip_unreadable: bool = False,
    on_event: Callable[[dict[str, Any]], Any] | None = None,
    chaos: int | None = None,
    chaos_children_first: bool = False,
    chaos_split_writes: int = 1,
    jobs: int = 16,
) -> ReplayReport:
    """Replay recording ``rec`` (a name in ``store``, or a release ref such as
    ``NAME@RANGE`` made by ``record --tag``) into ``target``.

    ``start`` (``--from``): apply what happened before that many seconds into the
    recording at once, then replay the rest with its timing; ``at``: only bring the target
    to its state at that time; ``until``: stop there. ``verify``: ``end`` (the target's
    id equals the last checkpoint replayed, placeholders compared by size), ``each`` (every
    checkpoint, and every file's hash after each write) or ``none``. ``on_event`` is
    called with each event (a dict) after it is applied. ``chaos``: a seed for a
    reproducible perturbed replay (:mod:`snapdir.recording.chaos`), with
    ``chaos_children_first`` (some children applied before their parent's ``mkdir``) and
    ``chaos_split_writes`` (content written in that many chunks) as further
    perturbations."""
    from .._common import open_wrapped
    from .._snapdir import Replayer
    from ..stores._base import ObjectGet

    if mode not in MODES:
        raise InvalidArgumentError(f"invalid replay mode {mode!r}: {', '.join(MODES)}")
    if verify not in ("end", "each", "none"):
        raise InvalidArgumentError(f"invalid --verify {verify!r}: end, each or none")
    if placeholder not in ("zeros", "sparse"):
        raise InvalidArgumentError(f"invalid placeholder mode {placeholder!r}: zeros or sparse")
    if start is not None and at is not None:
        raise InvalidArgumentError("give --from or --at, not both")
    if (chaos_children_first or chaos_split_writes != 1) and chaos is None:
        raise InvalidArgumentError(
            "--chaos-children-first and --chaos-split-writes need --chaos SEED"
        )
    if not 1 <= chaos_split_writes <= MAX_SPLIT_WRITES:
        raise InvalidArgumentError(
            f"invalid --chaos-split-writes {chaos_split_writes}: 1 to {MAX_SPLIT_WRITES}"
        )
    spd, delay = MODES[mode]
    spd = spd if speed is None else float(speed)
    delay = delay if max_delay is None else float(max_delay)
    if spd <= 0 or delay < 0:
        raise InvalidArgumentError("speed must be above 0 and max delay 0 or more")
    st = open_wrapped(store, jobs)
    if not isinstance(rec, str):
        log = rec
    else:
        _, log = await load_ref(st, rec)
    if chaos is not None:
        from .chaos import perturb

        log = perturb(log, chaos, children_first=chaos_children_first)
    dest = os.path.abspath(os.fspath(target))  # noqa: ASYNC240 (no I/O)
    _prepare_target(dest, into_existing)
    outline = log.outline()
    n = len(outline)
    end = n if until is None else _index_at(outline, int(until * 1e6) + 1)
    first_timed = 0
    if at is not None:
        end = min(end, _index_at(outline, int(at * 1e6) + 1))
        first_timed = end
    elif start is not None:
        first_timed = min(end, _index_at(outline, int(start * 1e6)))
    placeholders = {p for _, k, p in outline[:end] if k == "placeholder"}
    unreadable_paths = [p for _, k, p in outline[:end] if k == "unreadable"]
    if unreadable_paths and not skip_unreadable:
        raise InvalidArgumentError(
            f"the recording has {len(unreadable_paths)} unreadable file(s) (first: "
            f"{unreadable_paths[0]!r}); pass --skip-unreadable to replay without them"
        )
    checkpoints = [c for c in log.checkpoints() if c[0] < end]
    objdir = tempfile.mkdtemp(prefix="snapdir-replay-")
    began = time.monotonic()
    try:
        from .._common import unwrap
        from ..stores.file import FileStore

        inner = unwrap(st)
        if isinstance(inner, FileStore):
            # Read in place: every object is hashed before it is written anyway.
            source, in_place = inner.root, True
        else:
            objects = log.objects(0, end)
            await st.get_objects(
                [ObjectGet(d, os.path.join(objdir, d), size) for d, size in objects], jobs=jobs
            )
            source, in_place = objdir, False
        r = Replayer(
            log,
            dest,
            source,
            spd,
            delay,
            placeholder,
            verify == "each",
            in_place,
            chaos_children_first,
            chaos_split_writes,
        )
        ph = unread = 0
        verified_cps = 0
        i = 0
        if first_timed:
            i, a, b = r.run(0, first_timed, False, False)
            ph, unread = ph + a, unread + b
        r.restart()
        began = time.monotonic()
        step = 1 if on_event is not None else n + 1
        cp_index = {c[0]: c[2] for c in checkpoints}
        while i < end:
            j, a, b = r.run(i, end, True, verify == "each", step)
            ph, unread = ph + a, unread + b
            if on_event is not None:
                for text in log.events_json(i, j):
                    on_event(json.loads(text))
            if verify == "each" and (j - 1) in cp_index:
                t = time.monotonic()
                ok, got = await _matches(dest, cp_index[j - 1], st, placeholders, into_existing)
                if not ok:
                    raise HashMismatchError(
                        f"replay of {_name(log)}: the target ({got}) differs from checkpoint "
                        f"{cp_index[j - 1]} after event {j - 1}"
                    )
                verified_cps += 1
                r.shift(time.monotonic() - t)
            i = j
        duration = time.monotonic() - began
        final = checkpoints[-1][2] if checkpoints else None
        verified: bool | None = None
        tid: str | None = None
        # The end is verifiable when nothing was replayed after the last checkpoint.
        tail_ok = bool(checkpoints) and all(
            k == "checkpoint" for _, k, _ in outline[checkpoints[-1][0] : end]
        )
        if verify != "none" and tail_ok and final is not None:
            ok, tid = await _matches(dest, final, st, placeholders, into_existing)
            if not ok:
                raise HashMismatchError(
                    f"replay of {_name(log)}: the target ({tid}) differs from the final "
                    f"checkpoint {final}"
                )
            verified = True
        cnt, p50, p99, mx, last = r.lateness()
        return ReplayReport(
            name=_name(log),
            mode=mode,
            speed=spd,
            max_delay=delay,
            events=end,
            placeholders=ph,
            unreadable=unread,
            duration=duration,
            lateness={"events": cnt, "p50": p50, "p99": p99, "max": mx, "last": last},
            verified=verified,
            checkpoints_verified=verified_cps + (1 if verified and verify != "each" else 0),
            final_checkpoint=final,
            target_id=tid,
        )
    finally:
        shutil.rmtree(objdir, ignore_errors=True)


def _name(log: RecordingLog) -> str:
    meta = json.loads(log.meta_json())
    return str(meta.get("name", "")) or "recording"
