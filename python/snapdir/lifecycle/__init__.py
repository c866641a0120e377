"""A store's lifecycle: which snapshots it holds, which to keep, and what can be collected.

Submodules, from the bottom up: :mod:`.retention` (the ``forget`` policies, pure functions
over snapshot descriptions with restic's semantics). Nothing here imports the CLI.
"""

from __future__ import annotations

from .retention import Decision, Duration, Policy, Snapshot, apply_policy, group_key

__all__ = ["Decision", "Duration", "Policy", "Snapshot", "apply_policy", "group_key"]
