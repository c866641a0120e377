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

from .._registry import register, registered_schemes, resolve
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


def open_store(uri: str | StoreUri) -> Store:
    """Open the store at ``uri`` (cheap: no request is sent until an operation runs)."""
    u = StoreUri(uri)
    cls = resolve(u.scheme)
    store: Store = cls(u)
    return store
