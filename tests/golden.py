"""Golden vectors (tests/fixtures/golden_manifests.json): loading and building their trees.

Also the small shared helpers the snapshot-core tests use to call the async API from sync
tests under a chosen anyio backend.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from blake3 import blake3

if TYPE_CHECKING:
    import snapdir

GOLDEN_FILE = Path(__file__).parent / "fixtures" / "golden_manifests.json"
BACKENDS = ("asyncio", "trio")


@dataclass(frozen=True)
class GoldenCase:
    name: str
    dirs: list[dict[str, Any]]
    files: list[dict[str, Any]]
    root_mode: int
    manifest: str
    id: str


def load_cases() -> list[GoldenCase]:
    data = json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))
    return [
        GoldenCase(
            name=c["name"],
            dirs=c["dirs"],
            files=c["files"],
            root_mode=int(c.get("root_mode", "755"), 8),
            manifest=c["manifest"],
            id=c["id"],
        )
        for c in data["cases"]
    ]


def content_bytes(spec: dict[str, Any]) -> bytes:
    """The bytes of a golden file's ``content`` recipe."""
    if "text" in spec:
        return str(spec["text"]).encode("utf-8")
    if "b64" in spec:
        return base64.b64decode(spec["b64"], validate=True)
    if "fill" in spec:
        return bytes([int(spec["fill"])]) * int(spec["size"])
    if "xof" in spec:
        return blake3(str(spec["xof"]).encode("utf-8")).digest(length=int(spec["size"]))
    raise ValueError(f"unknown content recipe {spec!r}")


def build_case(case: GoldenCase, root: Path) -> Path:
    """Materialize ``case`` under ``root`` (created if needed) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for d in case.dirs:
        (root / d["path"]).mkdir(parents=True, exist_ok=True)
    for f in case.files:
        target = root / f["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content_bytes(f["content"]))
        os.chmod(target, int(f["mode"], 8))
    for d in sorted(case.dirs, key=lambda d: str(d["path"]).count("/"), reverse=True):
        os.chmod(root / d["path"], int(d["mode"], 8))
    os.chmod(root, case.root_mode)
    return root


def make_writable(root: Path) -> None:
    """Give the owner rwx on every directory below ``root`` so the tree can be removed."""
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
    os.chmod(root, 0o755)


# --- calling the async API from sync tests -------------------------------------------------


def api_manifest(
    path: str | os.PathLike[str],
    backend: str = "asyncio",
    *,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: Sequence[str] | None = None,
) -> snapdir.Manifest:
    """``await snapdir.manifest(...)`` run to completion under ``backend``."""
    import snapdir

    async def go() -> snapdir.Manifest:
        return await snapdir.manifest(
            path,
            no_follow=no_follow,
            absolute=absolute,
            exclude=None if exclude is None else list(exclude),
        )

    return anyio.run(go, backend=backend)


def api_id(
    path: str | os.PathLike[str],
    backend: str = "asyncio",
    *,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: Sequence[str] | None = None,
) -> str:
    """``await snapdir.id(...)`` run to completion under ``backend``."""
    import snapdir

    async def go() -> str:
        result: str = await snapdir.id(
            path,
            no_follow=no_follow,
            absolute=absolute,
            exclude=None if exclude is None else list(exclude),
        )
        return result

    result: str = anyio.run(go, backend=backend)
    return result
