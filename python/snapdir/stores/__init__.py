"""Stores, found by URI scheme.

Built-in backends are registered as lazy ``"module:Class"`` strings, so an SDK is imported
only when a store of its scheme is opened (``import snapdir`` never imports boto3). Third
parties add schemes through the entry-point group ``snapdir.stores``::

    [project.entry-points."snapdir.stores"]
    sftp = "mypackage.sftpstore:SftpStore"

A store class is constructed as ``cls(uri: StoreUri)`` and must satisfy
:class:`snapdir.stores.Store` (run :mod:`snapdir.testing` against it).
"""

from __future__ import annotations

import importlib
from typing import Any

from .._errors import InvalidArgumentError, StoreError
from .._types import StoreUri
from ._base import (
    BaseStore,
    Capability,
    ObjectGet,
    ObjectPut,
    Store,
    for_each_limited,
    manifest_key,
    object_key,
    parse_stored_manifest,
    split_key,
)

__all__ = [
    "BaseStore",
    "Capability",
    "ObjectGet",
    "ObjectPut",
    "Store",
    "for_each_limited",
    "manifest_key",
    "object_key",
    "open_store",
    "parse_stored_manifest",
    "register",
    "registered_schemes",
    "split_key",
]

#: Built-in backends: scheme -> ("module:Class", extra to install for its SDK or None).
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "file": ("snapdir.stores.file:FileStore", None),
    "s3": ("snapdir.stores.s3:S3Store", "s3"),
    "gs": ("snapdir.stores.gcs:GcsStore", "gcs"),
    "b2": ("snapdir.stores.b2:B2Store", "b2"),
}

_registry: dict[str, Any] = {}
_entry_points_loaded = False


def register(scheme: str, target: str | type) -> None:
    """Register a store class (or a lazy ``"module:Class"`` string) for ``scheme``."""
    _registry[scheme.lower()] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="snapdir.stores"):
        _registry.setdefault(ep.name.lower(), ep.value)


def registered_schemes() -> list[str]:
    """Every scheme a store can be opened for (built-in and plugged in)."""
    _load_entry_points()
    return sorted(set(_BUILTIN) | set(_registry))


def _resolve(scheme: str) -> type:
    target: Any = _registry.get(scheme)
    extra = None
    if target is None and scheme in _BUILTIN:
        target, extra = _BUILTIN[scheme]
    if target is None:
        _load_entry_points()
        target = _registry.get(scheme)
    if target is None:
        raise InvalidArgumentError(
            f"no store is registered for scheme {scheme!r} "
            f"(known: {', '.join(registered_schemes())})",
            code="INVALID_STORE",
        )
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except ImportError as e:
            hint = f" (pip install 'snapdir[{extra}]')" if extra else ""
            raise StoreError(
                f"the {scheme}:// store needs a package that is not installed: {e.name}{hint}"
            ) from e
        _registry[scheme] = target
    return target  # type: ignore[no-any-return]


def open_store(uri: str | StoreUri) -> Store:
    """Open the store at ``uri`` (cheap: no request is sent until an operation runs)."""
    u = StoreUri(uri)
    cls = _resolve(u.scheme)
    store: Store = cls(u)
    return store
