"""snapdir: content-addressable directory snapshots, with a Rust core.

``await snapdir.id("./data")`` gives the 64-hex BLAKE3 id of a tree; ``push`` / ``pull`` move
it through a store and back byte for byte. Importing this package is cheap: the async
machinery (anyio) and cloud SDKs are imported on first use.
"""

from __future__ import annotations

from ._errors import (
    CatalogError,
    ConflictError,
    HashMismatchError,
    InFluxError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    SnapdirIOError,
    SnapdirWarning,
    StoreError,
    UnsafePathError,
)
from ._manifest import id, manifest
from ._snapdir import Manifest, ManifestEntry, PathType
from ._snapdir import id_from_manifest as _id_from_manifest
from ._snapdir import manifest_size as _manifest_size
from ._snapdir import version as _version
from ._types import DiffEntry, DiffOptions, SizeStats, SnapshotId, StoreUri

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from ._cache import cache_dir
    from ._diff import diff
    from ._pull import checkout, fetch, pull
    from ._push import push, stage
    from ._sync import sync
    from ._verify import size, verify
    from .lifecycle.gc import gc
    from .names import (
        channel_log,
        channel_set,
        lock,
        refs,
        resolve,
        tag,
        unyank,
        yank,
    )
    from .recording import Recorder, ReplayReport, replay
    from .runs.api import Run, track
    from .runs.ops import RunResult, run_command

# Operations load on first use, so `import snapdir` (and every CLI start) stays cheap.
_LAZY = {
    "cache_dir": "._cache",
    "diff": "._diff",
    "checkout": "._pull",
    "fetch": "._pull",
    "gc": ".lifecycle.gc",
    "pull": "._pull",
    "push": "._push",
    "stage": "._push",
    "sync": "._sync",
    "size": "._verify",
    "verify": "._verify",
    "Run": ".runs.api",
    "track": ".runs.api",
    "RunResult": ".runs.ops",
    "run_command": ".runs.ops",
    "Recorder": ".recording",
    "ReplayReport": ".recording",
    "replay": ".recording",
    "channel_log": ".names",
    "channel_set": ".names",
    "lock": ".names",
    "refs": ".names",
    "resolve": ".names",
    "tag": ".names",
    "unyank": ".names",
    "yank": ".names",
}


def __getattr__(name: str) -> Any:
    from ._lazy import load

    return load(__name__, _LAZY, globals(), name)


__all__ = [
    "CatalogError",
    "ConflictError",
    "DiffEntry",
    "DiffOptions",
    "HashMismatchError",
    "InFluxError",
    "InvalidArgumentError",
    "Manifest",
    "ManifestEntry",
    "NotFoundError",
    "PathType",
    "Recorder",
    "ReplayReport",
    "Run",
    "RunResult",
    "SizeStats",
    "SnapdirError",
    "SnapdirIOError",
    "SnapdirWarning",
    "SnapshotId",
    "StoreError",
    "StoreUri",
    "UnsafePathError",
    "cache_dir",
    "channel_log",
    "channel_set",
    "checkout",
    "diff",
    "fetch",
    "gc",
    "id",
    "id_from_manifest",
    "lock",
    "manifest",
    "manifest_size",
    "pull",
    "push",
    "refs",
    "replay",
    "resolve",
    "run_command",
    "size",
    "stage",
    "sync",
    "tag",
    "track",
    "unyank",
    "verify",
    "version",
    "yank",
]

__version__: str = _version()


def version() -> str:
    """The snapdir version string."""
    return __version__


def id_from_manifest(m: Manifest | str) -> str:
    """The snapshot id of a :class:`Manifest` (or of manifest text): BLAKE3 of its canonical
    text plus a newline. Pure computation, no event loop needed."""
    return _id_from_manifest(m)


def manifest_size(m: Manifest) -> SizeStats:
    """:class:`SizeStats` of a manifest: logical bytes (every file), physical bytes (each
    distinct object once), file and object counts."""
    return SizeStats(*_manifest_size(m))
