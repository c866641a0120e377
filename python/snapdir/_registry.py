"""Which store class serves which URI scheme: the built-in backends (as lazy
``"module:Class"`` strings, so no SDK is imported until a store of its scheme is opened),
classes registered at run time, and third-party ones from the entry-point group
``snapdir.stores``.

It sits below :mod:`snapdir._types` (a :class:`~snapdir.StoreUri` accepts every scheme
registered here) and imports no store: :mod:`snapdir.stores` builds on it, not the reverse.
"""

from __future__ import annotations

from ._errors import InvalidArgumentError, StoreError

# `typing` costs ~5 ms at start-up; annotations only need it for the type checker.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

__all__ = ["register", "registered_schemes", "resolve"]

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


def resolve(scheme: str) -> type:
    """The store class for ``scheme`` (its module imported now if it was registered lazily)."""
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
        import importlib

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
