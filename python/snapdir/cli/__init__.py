"""The ``snapdir`` command line.

Data goes to stdout, diagnostics to stderr. Exit status: 0 success, 1 runtime error,
2 usage error, 130 interrupted. Start-up is kept lean (argparse, no anyio, no cloud SDK at
import) because ``snapdir id`` is often run on every CI step.

Layout: one module per command group, each registering its own sub-parsers
(:mod:`.snapshot`, :mod:`.transfer`, :mod:`.inspect`); :mod:`._common` holds the parser
and the options they share, :mod:`._output` what is printed. Only the group of the command
being run is imported.
"""

from __future__ import annotations

import os
import sys

from .._errors import SnapdirError
from ._common import Parser, UsageError

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    Handler = Callable[[argparse.Namespace], int]

__all__ = ["COMMANDS", "build_parser", "main"]

#: Each command and the module (of this package) that registers it, in the order of
#: ``snapdir --help``. Literal here so that choosing the module to import costs nothing.
GROUPS: dict[str, str] = {
    "manifest": "snapshot",
    "id": "snapshot",
    "stage": "snapshot",
    "push": "snapshot",
    "fetch": "transfer",
    "pull": "transfer",
    "checkout": "transfer",
    "sync": "transfer",
    "diff": "inspect",
    "verify": "inspect",
    "size": "inspect",
}

COMMANDS = frozenset(GROUPS)


class _Subcommands:
    """Adds only the sub-parser that will run: building all of them costs ~8 ms, paid on
    every ``snapdir id`` in a CI loop. Help and usage errors still see every command."""

    def __init__(self, sub: Any, only: str | None) -> None:
        self._sub = sub
        self._only = only

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if self._only is None or name == self._only:
            parser: argparse.ArgumentParser = self._sub.add_parser(name, **kwargs)
            return parser
        return Parser(add_help=False)  # detached: never parsed


def _command_in(argv: Sequence[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests); with ``only``, just that
    command's sub-parser is built (and just its module imported)."""
    import importlib

    from .. import version

    parser = Parser(
        prog="snapdir",
        description="Content-addressable directory snapshots (BLAKE3).",
    )
    parser.add_argument("--version", action="version", version=f"snapdir {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    sub = _Subcommands(subparsers, only)

    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-q", "--quiet", action="store_true", help="no diagnostics but errors")

    groups = [GROUPS[only]] if only in GROUPS else list(dict.fromkeys(GROUPS.values()))
    for group in groups:
        importlib.import_module(f"{__name__}.{group}").register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``snapdir`` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        # Building the parser imports the store commands: Ctrl-C this early is no error.
        parser = build_parser(_command_in(args_list))
        args = parser.parse_args(args_list)
    except KeyboardInterrupt:
        print("snapdir: interrupted", file=sys.stderr)
        return 130
    handler: Handler = args.handler
    try:
        if getattr(args, "jobs", 1) < 1:
            parser.error("--jobs must be at least 1")
        return handler(args)
    except SnapdirError as e:
        if isinstance(e, UsageError):
            parser.print_usage(sys.stderr)
            print(f"snapdir: error: {e}", file=sys.stderr)
            return 2
        print(f"snapdir: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("snapdir: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`snapdir manifest | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as e:
        print(f"snapdir: error: {e}", file=sys.stderr)
        return 1
