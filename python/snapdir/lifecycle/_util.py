"""What every lifecycle operation needs to reach a store: opening it (with the retry
wrappers), insisting on the key methods, and naming the user and tool in what it writes.
Kept apart from :mod:`.ops` so that the record modules (:mod:`.policy`, ...) that
:mod:`.ops` uses can use it too without an import circle."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from .._errors import StoreError
from .._types import StoreUri
from ..stores._keys import KeyStore, has_keys

if TYPE_CHECKING:
    from ..stores import Store


def _open(store: str | StoreUri | Store) -> Store:
    from .._common import open_wrapped

    return open_wrapped(store)


def _require_keys(store: Store, what: str) -> KeyStore:
    if not has_keys(store):
        raise StoreError(
            f"{store.uri}: {what} needs a store with create-only writes and listings with "
            "store times (every built-in store has them; this one does not declare them)"
        )
    return cast("KeyStore", store)


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()[:64]
    except (KeyError, OSError, ImportError):  # no passwd entry (a bare container)
        return ""


def _tool() -> str:
    from .._snapdir import version

    return f"snapdir {version()}"
