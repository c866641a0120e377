"""What run records keep alive, for the collector.

A record is *live* while any of its subjects (output trees) is journalled (any journal
key naming it, read as the journal's own root source reads them), or, for a
record without outputs (a capture, a failed run), for as long as its index key exists. A
live record keeps alive the objects it names (captured stdout and stderr, the git diff,
pre-command outputs) and its input trees, so that ``lineage`` and ``rerun`` still work on
whatever outlives the runs that made it. The records themselves are small keys under
``.snapdir/runs/`` (never collected as objects).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .layout import list_records, read_many

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["gc_roots"]


async def gc_roots(store: str | Store) -> tuple[set[str], set[str]]:
    """``(snapshot ids, object digests)`` that run records keep alive (see the module
    docstring). An unreadable record is reported as a warning and keeps nothing (it
    cannot be believed)."""
    from .._common import open_wrapped
    from ..lifecycle.journal import gc_roots as journal_roots
    from .layout import keystore

    store = open_wrapped(store)
    names = [d for d, _ in await list_records(store)]
    if not names:
        return set(), set()
    # The journal's own root reading: leniently parsed (an entry this version cannot read
    # still makes its run live), and inside a collection the listing the journal source
    # already made (lifecycle.roots.shared_listing), not a second one.
    journalled, _ = await journal_roots(keystore(store))
    snapshots: set[str] = set()
    objects: set[str] = set()
    for rec in await read_many(store, names):
        subjects = {i for _, i in rec.outputs}
        if subjects and not subjects & journalled:
            continue
        snapshots |= {i for _, i in rec.inputs}
        snapshots |= subjects
        objects |= rec.objects()
        for bp in rec.raw.get("predicate", {}).get("runDetails", {}).get("byproducts", []):
            if isinstance(bp, dict) and str(bp.get("name", "")).startswith("pre-"):
                digest = (
                    bp.get("digest", {}).get("blake3")
                    if isinstance(bp.get("digest"), dict)
                    else None
                )
                if isinstance(digest, str) and len(digest) == 64:
                    objects.add(digest)
    return snapshots, objects
