"""Record a directory's life into a store and replay it with its timing.

Submodules, from the bottom up: :mod:`.layout` (keys, reading a recording back and
verifying it), :mod:`.recorder` (:class:`Recorder`), :mod:`.replay` (:func:`replay`),
:mod:`.info` (``recording ls|info``), :mod:`.roots` (what a collector must keep). Loaded on
first use.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from .info import info, ls
    from .layout import load
    from .recorder import Recorder
    from .replay import ReplayReport, replay
    from .roots import gc_roots

__all__ = ["Recorder", "ReplayReport", "gc_roots", "info", "load", "ls", "replay"]

_LAZY = {
    "Recorder": ".recorder",
    "ReplayReport": ".replay",
    "replay": ".replay",
    "load": ".layout",
    "info": ".info",
    "ls": ".info",
    "gc_roots": ".roots",
}


def __getattr__(name: str) -> Any:
    from .._lazy import load

    return load(__name__, _LAZY, globals(), name)
