"""Lazy exports for the package and its capability subpackages.

``import snapdir`` must stay cheap (the CLI's start-up is measured), so each package lists
the names it exports with the submodule defining them and imports that submodule only
when a name is first used. One loader serves every package so the rules (the error
message, caching the value in the package's globals) cannot drift between them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["load"]


def load(
    package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any], name: str
) -> Any:
    """``name`` from the submodule ``table`` names for it (relative to ``package``),
    cached in ``namespace`` so the next access skips this hook."""
    mod = table.get(name)
    if mod is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, package), name)
    namespace[name] = value
    return value
