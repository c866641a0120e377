"""The collector's roots: everything that names content the store must keep.

The journal is one source; other features (release names, run records, recordings) keep
their own records and add their own source here: a ``"module:function"`` string in
:data:`ROOT_SOURCES`, naming ``async def gc_roots(store) -> tuple[set[str], set[str]]``
(snapshot ids, object digests). Sources are imported lazily, and one whose module does not
exist is skipped (a feature not installed names nothing); any other failure of a source
aborts the collection — a root that could not be read must never be taken for absent.

Each such feature writes its records under :func:`snapdir.lifecycle.intents.protect`, as
push does, so the collector's argument (docs/design/gc.md) covers it too.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["ROOT_SOURCES", "RootSet", "collect_roots"]

#: Every source of roots besides live intents, as ``"module:function"``.
ROOT_SOURCES: tuple[str, ...] = (
    "snapdir.lifecycle.journal:gc_roots",  # every journalled snapshot
    "snapdir.names.roots:gc_roots",  # every snapshot a release record or channel names
    "snapdir.runs.roots:gc_roots",  # a live run record's inputs and byproduct objects
    "snapdir.recording.roots:gc_roots",  # recordings: checkpoints, segments, contents
)

_HEX64 = re.compile(r"[0-9a-f]{64}")

RootFn = Callable[[object], Awaitable[tuple[set[str], set[str]]]]


class RootSet:
    """Snapshot ids and object digests the store's roots name; ``problems``: what a source
    returned that is not a digest (reported, and naming nothing)."""

    __slots__ = ("objects", "problems", "snapshots")

    def __init__(self, snapshots: set[str], objects: set[str], problems: list[str]) -> None:
        self.snapshots = snapshots
        self.objects = objects
        self.problems = problems

    def __repr__(self) -> str:
        return (
            f"RootSet(snapshots={len(self.snapshots)}, objects={len(self.objects)}, "
            f"problems={len(self.problems)})"
        )


def _load(spec: str) -> RootFn | None:
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (e.name == mod_name or mod_name.startswith(e.name + ".")):
            return None  # the feature is not there: it names nothing
        raise
    return cast("RootFn", getattr(mod, fn_name))


async def collect_roots(store: Store) -> RootSet:
    """The union of every source's roots (see the module docstring)."""
    snaps: set[str] = set()
    objs: set[str] = set()
    problems: list[str] = []
    for spec in ROOT_SOURCES:
        fn = _load(spec)
        if fn is None:
            continue
        s, o = await fn(store)
        for what, got, into in (("snapshot id", s, snaps), ("object digest", o, objs)):
            for d in got:
                if isinstance(d, str) and _HEX64.fullmatch(d):
                    into.add(d)
                else:
                    problems.append(f"{spec}: not a {what}: {str(d)[:80]!r}")
    return RootSet(snaps, objs, problems)
