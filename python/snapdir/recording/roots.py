"""What a collector must keep for the store's recordings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .layout import list_recordings, load

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["gc_roots"]


async def gc_roots(store: Store) -> tuple[set[str], set[str]]:
    """``(snapshot ids, object digests)`` every recording in ``store`` needs: its
    checkpoints, and its segments and content objects. Each recording is read back and
    verified; one that fails raises (a collector must not guess what a broken recording
    would have kept)."""
    import json

    snapshots: set[str] = set()
    objects: set[str] = set()
    for listed in await list_recordings(store):
        if not listed.heads and listed.sealed is None:
            continue
        log = await load(store, listed.name)
        objects.update(log.segments())
        snapshots.update(sid for _, _, sid in log.checkpoints())
        objects.update(d for d, _ in log.objects(0, len(log)))
        for text in log.events_json(0, len(log)):
            e = json.loads(text)
            if e["k"] in ("create", "write", "append"):
                objects.add(e["h"])
    return snapshots, objects
