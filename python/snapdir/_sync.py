"""``sync``: copy one snapshot from a store to another."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import DEFAULT_JOBS
from ._pull import copy_snapshot
from ._types import StoreUri

if TYPE_CHECKING:
    from .stores import Store
    from .stores._base import ProgressFn

__all__ = ["sync"]


async def sync(
    snapshot_id: str,
    src: str | StoreUri | Store,
    dst: str | StoreUri | Store,
    *,
    jobs: int = DEFAULT_JOBS,
    progress: ProgressFn | None = None,
) -> None:
    """Copy snapshot ``snapshot_id`` from ``src`` to ``dst``. Only objects ``dst`` lacks are
    sent, each verified when read and when written; the manifest goes last, so ``dst`` never
    shows an incomplete snapshot. A snapshot already in ``dst`` is left as it is."""
    await copy_snapshot(snapshot_id, src, dst, jobs=jobs, progress=progress)
