"""The local cache: a ``file://`` store used by ``stage``, ``fetch`` and ``checkout``.

Location: ``$SNAPDIR_CACHE_DIR``, else ``$XDG_CACHE_HOME/snapdir``, else
``~/.cache/snapdir`` (SPEC §4).
"""

from __future__ import annotations

import os

from ._types import StoreUri

# `typing` costs ~4 ms at start-up and this module is on the path of every `snapdir id`
# (the stat cache lives in the cache directory); annotations only need it for the type
# checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from .stores.file import FileStore

__all__ = ["cache_dir", "cache_store", "cache_uri"]


def cache_dir() -> str:
    """The cache directory (not created here)."""
    explicit = os.environ.get("SNAPDIR_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "snapdir")
    return os.path.join(os.path.expanduser("~"), ".cache", "snapdir")


def cache_uri() -> StoreUri:
    return StoreUri("file://" + cache_dir())


def cache_store() -> FileStore:
    """The cache as a :class:`~snapdir.stores.file.FileStore` (created on first write)."""
    from .stores.file import FileStore

    return FileStore(cache_uri())
