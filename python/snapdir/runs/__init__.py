"""Runs and provenance: ``snapdir run -- CMD`` records what went in, what came out and
how, as an in-toto Statement with SLSA provenance, and can run it again with a verdict.

Submodules, from the bottom up: :mod:`.secrets` (what may be recorded, masking),
:mod:`.record` (the statement, its canonical bytes, the validating parser),
:mod:`.config` (``snapdir.toml``), :mod:`.capture` (context), :mod:`.child` (running the
command, live output, signals), :mod:`.layout` (keys in a store), :mod:`.ops` (run,
capture, rerun, listing, lineage), :mod:`.roots` (what records keep from the collector),
:mod:`.api` (``Run`` and ``track``). Nothing here imports the CLI; submodules load on first
use.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from .api import Run, track
    from .ops import RerunResult, RunResult, capture_context, lineage, rerun, run_command
    from .record import RunRecord
    from .roots import gc_roots

__all__ = [
    "RerunResult",
    "Run",
    "RunRecord",
    "RunResult",
    "capture_context",
    "gc_roots",
    "lineage",
    "rerun",
    "run_command",
    "track",
]

_LAZY = {
    "Run": ".api",
    "track": ".api",
    "RerunResult": ".ops",
    "RunResult": ".ops",
    "capture_context": ".ops",
    "lineage": ".ops",
    "rerun": ".ops",
    "run_command": ".ops",
    "RunRecord": ".record",
    "gc_roots": ".roots",
}


def __getattr__(name: str) -> Any:
    from .._lazy import load

    return load(__name__, _LAZY, globals(), name)
