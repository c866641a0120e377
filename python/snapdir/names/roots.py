"""What names keep alive: the roots a collector must not collect."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["gc_roots"]


async def gc_roots(store: Store) -> tuple[set[str], set[str]]:
    """``(snapshot ids, object digests)`` that names keep: every id a release record or any
    channel entry names (a channel's history stays resolvable by its log). Records are
    small keys, not objects, so the second set is empty. Raises on a store whose names
    cannot be read (two version keys of equal precedence), so that a collector stops
    rather than collect what a broken name might hold."""
    from .ops import named_ids

    return await named_ids(store), set()
