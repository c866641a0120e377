"""A local cache of name records. Records are immutable (create-only keys, never
rewritten), so a record read once never needs reading again: a warm ``resolve`` costs
one listing and no GET.

The cache directory is untrusted like a store: a cached record is used only if it is no
larger than a record may be, has the size the listing gives for its key, and parses and
matches its key (:func:`.layout.parse_record`); otherwise it is read again from the store
and the cache entry replaced.
"""

from __future__ import annotations

import hashlib
import os

from .._errors import InvalidArgumentError
from .layout import MAX_RECORD, parse_record

__all__ = ["RecordCache"]


class RecordCache:
    """The cached records of one store (keyed by its URI)."""

    def __init__(self, uri: str, root: str | None = None) -> None:
        if root is None:
            from .._cache import cache_dir

            root = os.path.join(cache_dir(), "names")
        self.dir = os.path.join(root, hashlib.sha256(uri.encode()).hexdigest()[:32])

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, hashlib.sha256(key.encode()).hexdigest()[:40])

    def get(self, key: str, size: int) -> dict[str, object] | None:
        """The cached record of ``key`` if it is sound and of the listed ``size``."""
        try:
            with open(self._path(key), "rb") as f:
                data = f.read(MAX_RECORD + 1)
        except OSError:
            return None
        if len(data) != size:
            return None
        try:
            return parse_record(data, key)
        except InvalidArgumentError:
            return None

    def put(self, key: str, data: bytes) -> None:
        """Keep a record (already validated); a cache that cannot be written is no error."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            path = self._path(key)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            pass
