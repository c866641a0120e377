"""What the run tests share: a fresh store URI on each backend's loopback server, a project
directory, and reading what a store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from storeutil_cloud import fresh_store_uri


def store_uri(scheme: str, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch) -> str:
    """A fresh store URI for ``scheme`` (see :func:`storeutil_cloud.fresh_store_uri`)."""
    return fresh_store_uri(scheme, request, mp, "snapdir-runs")


def project(tmp_path: Path) -> Path:
    """A project directory (``snapdir.toml`` marks its root) with an input tree."""
    root = tmp_path / "proj"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "snapdir.toml").write_text("")
    (root / "data" / "a.txt").write_text("alpha\n")
    (root / "data" / "sub" / "b.txt").write_text("beta\n")
    return root


def stored_bytes(store_dir: Path) -> list[tuple[str, bytes]]:
    """Every file of a ``file://`` store, with its content."""
    out = []
    for p in sorted(store_dir.rglob("*")):
        if p.is_file():
            out.append((str(p.relative_to(store_dir)), p.read_bytes()))
    return out


def run_async(fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)`` awaited on a fresh event loop (the tests' synchronous bodies)."""

    async def main() -> Any:
        return await fn(*args, **kw)

    return anyio.run(main)
