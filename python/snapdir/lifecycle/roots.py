"""The collector's roots: everything that names content the store must keep.

The journal is one source; other features (release names, run records, recordings) keep
their own records and add their own source here: a ``"module:function"`` string in
:data:`ROOT_SOURCES`, naming ``async def gc_roots(store) -> tuple[set[str], set[str]]``
(snapshot ids, object digests). Sources are imported lazily, and one whose module does not
exist is skipped (a feature not installed names nothing); any other failure of a source
aborts the collection — a root that could not be read must never be taken for absent.

Each such feature writes its records under :func:`snapdir.lifecycle.intents.protect`, as
push does, so the collector's argument (docs/design/gc.md) covers it too.

A source that needs the journal too (run records are live while an output is journalled)
reads it with :func:`shared_listing`: within one :func:`collect_roots` call the journal is
listed once, by whichever source asks first, and shared (a context variable, so this layer
needs to know nothing of the sources). Each call lists it afresh: the collector's second
reading of the roots (C3) must see entries written since its first.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from ..stores import Store
    from ..stores._keys import KeyInfo

__all__ = ["ROOT_SOURCES", "RootSet", "collect_roots", "shared_listing"]

#: Every source of roots besides live intents, as ``"module:function"``.
ROOT_SOURCES: tuple[str, ...] = (
    "snapdir.lifecycle.journal:gc_roots",  # every journalled snapshot
    "snapdir.names.roots:gc_roots",  # every snapshot a release record or channel names
    "snapdir.runs.roots:gc_roots",  # a live run record's inputs and byproduct objects
    "snapdir.recording.roots:gc_roots",  # recordings: checkpoints, segments, contents
)

_HEX64 = re.compile(r"[0-9a-f]{64}")

#: The listings made during the :func:`collect_roots` call under way, by (store URI,
#: prefix); None outside one (every caller lists for itself).
_LISTINGS: ContextVar[dict[tuple[str, str], list[KeyInfo]] | None] = ContextVar(
    "snapdir_root_listings", default=None
)


async def shared_listing(store: object, prefix: str) -> list[KeyInfo]:
    """``store.list_keys(prefix)``, listed once per :func:`collect_roots` call however
    many sources ask for it (the journal: its own source, and the run records' liveness
    rule), and afresh outside one."""
    from ..stores._keys import KeyStore

    ks = cast("KeyStore", store)
    memo = _LISTINGS.get()
    if memo is None:
        return await ks.list_keys(prefix)
    key = (str(ks.uri), prefix)
    if key not in memo:
        memo[key] = await ks.list_keys(prefix)
    return memo[key]


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
    token = _LISTINGS.set({})
    try:
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
    finally:
        _LISTINGS.reset(token)
    return RootSet(snaps, objs, problems)
