"""Run configuration: ``snapdir.toml``, or ``[tool.snapdir]`` in ``pyproject.toml``.

Looked for in the project root (:func:`~.capture.find_root`: the nearest directory up from
the working directory with either file, or ``.git``). ``snapdir.toml`` wins when both
exist. Keys (all optional; anything else is an error, so that a typo is not silently a
run recorded without the environment it was meant to record)::

    store = "s3://bucket/runs"     # the store, when neither --store nor $SNAPDIR_STORE
    env = ["PATH", "LANG", "CUDA_*"]   # environment allowlist (globs)
    redact = ["*_DSN", "MY_PRIVATE"]   # more secret-looking variable names (globs)
    pre = ["pip freeze"]           # pre commands, their output kept as objects
    files = ["uv.lock"]            # files whose BLAKE3 is recorded
    git = true                     # record git state (default: when in a work tree)

Command-line flags add to the lists and override ``store`` and ``git``; ``--store`` and
``$SNAPDIR_STORE`` both beat the file.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .._errors import InvalidArgumentError

__all__ = ["RunConfig", "load_config"]

_LISTS = ("env", "redact", "pre", "files")
KEYS = ("store", "git", *_LISTS)


class RunConfig:
    """The run settings of a project (empty when it has no configuration)."""

    __slots__ = ("env", "files", "git", "path", "pre", "redact", "store")

    def __init__(self) -> None:
        self.path = ""
        self.store: str | None = None
        self.git: bool | None = None
        self.env: list[str] = []
        self.redact: list[str] = []
        self.pre: list[str] = []
        self.files: list[str] = []


def _toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgumentError(f"{path}: not valid TOML: {e}") from None


def parse_config(table: object, where: str) -> RunConfig:
    """Validate a configuration table (``where`` names it in errors)."""
    if not isinstance(table, dict):
        raise InvalidArgumentError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise InvalidArgumentError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})"
        )
    cfg = RunConfig()
    cfg.path = where
    store = table.get("store")
    if store is not None and not isinstance(store, str):
        raise InvalidArgumentError(f"{where}: store must be a string")
    cfg.store = store
    git = table.get("git")
    if git is not None and not isinstance(git, bool):
        raise InvalidArgumentError(f"{where}: git must be true or false")
    cfg.git = git
    for name in _LISTS:
        value = table.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgumentError(f"{where}: {name} must be a list of strings")
        setattr(cfg, name, list(value))
    return cfg


def load_config(root: str) -> RunConfig:
    """The configuration of the project at ``root`` (see the module docstring)."""
    path = os.path.join(root, "snapdir.toml")
    if os.path.isfile(path):
        return parse_config(_toml(path), path)
    path = os.path.join(root, "pyproject.toml")
    if os.path.isfile(path):
        tool = _toml(path).get("tool", {})
        if isinstance(tool, dict) and "snapdir" in tool:
            return parse_config(tool["snapdir"], f"{path} [tool.snapdir]")
    return RunConfig()
