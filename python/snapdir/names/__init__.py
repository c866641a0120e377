"""Names and releases on a bare bucket: immutable versions (``cal-kit@1.3.0``), version
ranges resolved in one listing (``cal-kit@>=1.2,<2``), yanks, channels with a
compare-and-swap move, and lockfiles that pin content ids.

Submodules, from the bottom up: :mod:`.grammar` (names, versions, specs, refs),
:mod:`.layout` (keys and records in the store), :mod:`.cache` (the local record cache),
:mod:`.ops` (the operations), :mod:`.roots` (what the collector keeps), :mod:`.lockfile`,
:mod:`.login` (store credentials in the OS keyring). Nothing here imports the CLI;
submodules load on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from .lockfile import lock, lock_check, read_lock
    from .ops import (
        ChannelEntry,
        Resolved,
        channel_log,
        channel_set,
        refs,
        resolve,
        resolve_id,
        tag,
        unyank,
        yank,
    )
    from .roots import gc_roots

__all__ = [
    "ChannelEntry",
    "Resolved",
    "channel_log",
    "channel_set",
    "gc_roots",
    "lock",
    "lock_check",
    "read_lock",
    "refs",
    "resolve",
    "resolve_id",
    "tag",
    "unyank",
    "yank",
]

_LAZY = {
    "ChannelEntry": ".ops",
    "Resolved": ".ops",
    "channel_log": ".ops",
    "channel_set": ".ops",
    "refs": ".ops",
    "resolve": ".ops",
    "resolve_id": ".ops",
    "tag": ".ops",
    "unyank": ".ops",
    "yank": ".ops",
    "gc_roots": ".roots",
    "lock": ".lockfile",
    "lock_check": ".lockfile",
    "read_lock": ".lockfile",
}


def __getattr__(name: str) -> Any:
    from .._lazy import load

    return load(__name__, _LAZY, globals(), name)
