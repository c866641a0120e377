"""A store's lifecycle: what it holds (the journal), which snapshots to keep (retention),
and what can be collected.

Submodules, from the bottom up: :mod:`.retention` (the ``forget`` policies, pure functions
with restic's semantics), :mod:`.journal` (the journal's keys and entries), :mod:`.ops` (the
operations: ``ls``, ``adopt``, ``forget``, and the journal write every push makes),
:mod:`.policy` (the retention policy kept in the store), :mod:`.intents` (what a writer
does so that a concurrent collection cannot lose its content), :mod:`.roots` (every source
of roots) and :mod:`.gc` (the collector). Nothing
here imports the CLI; submodules load on first use, so a push that only writes a journal
entry does not pay for the rest.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from .gc import GcReport, gc
    from .journal import SnapshotInfo
    from .ops import adopt, du, forget, ls
    from .policy import PolicyEntry, get_policy, policy_log, set_policy
    from .retention import Decision, Duration, Policy, Snapshot, apply_policy
    from .roots import RootSet, collect_roots

__all__ = [
    "Decision",
    "Duration",
    "GcReport",
    "Policy",
    "PolicyEntry",
    "RootSet",
    "Snapshot",
    "SnapshotInfo",
    "adopt",
    "apply_policy",
    "collect_roots",
    "du",
    "forget",
    "gc",
    "get_policy",
    "ls",
    "policy_log",
    "set_policy",
]

_LAZY = {
    "Decision": ".retention",
    "Duration": ".retention",
    "Policy": ".retention",
    "Snapshot": ".retention",
    "apply_policy": ".retention",
    "SnapshotInfo": ".journal",
    "GcReport": ".gc",
    "gc": ".gc",
    "RootSet": ".roots",
    "collect_roots": ".roots",
    "adopt": ".ops",
    "du": ".ops",
    "forget": ".ops",
    "ls": ".ops",
    "PolicyEntry": ".policy",
    "get_policy": ".policy",
    "policy_log": ".policy",
    "set_policy": ".policy",
}


def __getattr__(name: str) -> Any:
    from .._lazy import load

    return load(__name__, _LAZY, globals(), name)
