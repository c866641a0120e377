"""The ``snapdir`` command line.

Data goes to stdout, diagnostics to stderr. Exit status: 0 success, 1 runtime error,
2 usage error, 130 interrupted. Start-up is kept lean (argparse, no anyio, no cloud SDK at
import) because ``snapdir id`` is often run on every CI step.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from ._errors import SnapdirError

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

    Handler = Callable[[argparse.Namespace], int]

__all__ = ["main"]


@functools.cache
def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it ($COLUMNS, then the
    terminal on stdout, else 80), without importing shutil (and with it bz2, lzma, zlib);
    asked once per process."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, told its width: argparse builds one for every argument it
    adds, and left to itself each one asks ``shutil`` — an import that alone cost ~2.4 ms
    of every command's start."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(
            prog, indent_increment, max_help_position, _columns() - 2 if width is None else width
        )


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors name the program and exit 2 (argparse's own convention),
    and help formatted without importing shutil."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _out(text: str) -> None:
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")


def _emit_json(obj: Any) -> None:
    import json

    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def _warn_cli(message: str) -> None:
    print(f"snapdir: warning: {message}", file=sys.stderr)


def _print_warnings() -> None:
    """Every :class:`SnapdirWarning` of any command is printed as ``snapdir: warning: ...``
    (a push, stage or diff walks a directory too, not only ``manifest`` and ``id``), each
    one, not only the first from a place."""
    import warnings

    from ._errors import SnapdirWarning

    default = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, SnapdirWarning):
            _warn_cli(str(message))
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", SnapdirWarning)


def _walk_args(p: argparse.ArgumentParser, *, absolute: bool = True) -> None:
    p.add_argument("--no-follow", action="store_true", help="leave symbolic links out")
    if absolute:
        p.add_argument(
            "--absolute", action="store_true", help="print absolute paths (display only)"
        )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="RE",
        help="leave out entries whose ./-relative path matches RE (repeatable)",
    )
    p.add_argument(
        "--no-stat-cache",
        action="store_true",
        help="hash every file; neither read nor write the stat cache",
    )
    p.add_argument(
        "--rehash",
        action="store_true",
        help="re-read every file (ignore the stat cache) but rewrite the cache",
    )


def _walk(args: argparse.Namespace, path: str) -> Any:
    import warnings

    from ._errors import SnapdirWarning
    from ._manifest import walk_sync

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SnapdirWarning)
        m = walk_sync(
            path,
            no_follow=args.no_follow,
            absolute=getattr(args, "absolute", False),
            exclude=args.exclude,
            use_cache=not args.no_stat_cache,
            rehash=args.rehash,
        )
    for w in caught:
        _warn_cli(str(w.message))
    return m


def cmd_manifest(args: argparse.Namespace) -> int:
    m = _walk(args, args.path)
    if args.json:
        _emit_json(
            {
                "id": m.id,
                "entries": [
                    {
                        "type": e.path_type.name,
                        "permissions": e.permissions,
                        "checksum": e.checksum,
                        "size": e.size,
                        "path": e.path,
                    }
                    for e in m.entries
                ],
            }
        )
    else:
        _out(m.raw)
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    if args.path is None and not sys.stdin.isatty():
        from ._snapdir import Manifest

        text = sys.stdin.read()
        if not text.strip():
            raise SnapdirError(
                "no manifest on standard input (give a PATH to snapshot a directory)",
                code="INVALID_MANIFEST",
            )
        snap_id = Manifest.parse(text).id
    else:
        snap_id = _walk(args, args.path or ".").id
    if args.json:
        _emit_json({"id": snap_id})
    else:
        _out(snap_id)
    return 0


COMMANDS = frozenset(
    {"manifest", "id", "stage", "push", "fetch", "pull", "checkout", "sync", "diff"}
    | {"verify", "size"}
)


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
        return _Parser(add_help=False)  # detached: never parsed


def _command_in(argv: Sequence[str]) -> str | None:
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests); with ``only``, just that
    command's sub-parser is built."""
    from . import version

    parser = _Parser(
        prog="snapdir",
        description="Content-addressable directory snapshots (BLAKE3).",
    )
    parser.add_argument("--version", action="version", version=f"snapdir {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    sub = _Subcommands(subparsers, only)

    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-q", "--quiet", action="store_true", help="no diagnostics but errors")

    p = sub.add_parser("manifest", parents=[common], help="print the manifest of a directory")
    p.add_argument("path", nargs="?", default=".", metavar="PATH")
    _walk_args(p)
    p.set_defaults(handler=cmd_manifest)

    p = sub.add_parser(
        "id",
        parents=[common],
        help="print the snapshot id of a directory, or of a manifest on stdin",
    )
    p.add_argument("path", nargs="?", default=None, metavar="PATH")
    _walk_args(p)
    p.set_defaults(handler=cmd_id)

    if only is None or only not in ("manifest", "id"):
        from ._cli_store import register

        register(sub, common)
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
    _print_warnings()
    try:
        if getattr(args, "jobs", 1) < 1:
            parser.error("--jobs must be at least 1")
        return handler(args)
    except SnapdirError as e:
        from ._cli_store import UsageError

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
