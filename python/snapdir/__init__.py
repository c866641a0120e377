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
    "SizeStats",
    "SnapdirError",
    "SnapdirIOError",
    "SnapdirWarning",
    "SnapshotId",
    "StoreError",
    "StoreUri",
    "UnsafePathError",
    "id",
    "id_from_manifest",
    "manifest",
    "manifest_size",
    "version",
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
