"""What the command modules share: the parser class, the options several commands take,
resolving positional arguments, and running an operation with or without an event loop.

Nothing here imports a command module or :mod:`snapdir.cli` itself (the CLI's top).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from .._errors import InvalidArgumentError

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any, NoReturn, TypeVar

    from .._types import SnapshotId, StoreUri

    T = TypeVar("T")


class UsageError(InvalidArgumentError):
    """A missing or contradictory command-line argument (exit status 2)."""


@functools.cache
def columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it ($COLUMNS, then the
    terminal on stdout, else 80), without importing shutil (and with it bz2, lzma, zlib);
    asked once per process."""
    try:
        width = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        width = 0
    if width <= 0:
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            width = 0
    return width if width > 0 else 80


class Formatter(argparse.HelpFormatter):
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
            prog, indent_increment, max_help_position, columns() - 2 if width is None else width
        )


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors name the program and exit 2 (argparse's own convention),
    and help formatted without importing shutil."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def walk_args(p: argparse.ArgumentParser, *, absolute: bool = True) -> None:
    """The options of a directory walk (manifest, id, stage, push)."""
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


def store_arg(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "--store",
        default=os.environ.get("SNAPDIR_STORE"),
        metavar="URI",
        help="store URI (default: $SNAPDIR_STORE): file:///path, s3://, gs://, b2://",
    )
    p.set_defaults(store_required=required)


def jobs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=32,
        metavar="N",
        help="concurrent transfers for cloud stores (default 32)",
    )


def progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (also SNAPDIR_NO_PROGRESS=1)"
    )


def need_store(args: argparse.Namespace) -> StoreUri:
    if not args.store:
        raise UsageError(
            f"snapdir {args.command}: no store given: pass --store URI or set SNAPDIR_STORE",
            code="INVALID_STORE",
        )
    from .._types import StoreUri

    return StoreUri(args.store)


def ids(args: argparse.Namespace, positional: list[str], want_dest: bool) -> tuple[SnapshotId, str]:
    """Resolve ``[ID] [DEST]`` positionals against ``--id``."""
    rest = list(positional)
    sid = args.id
    if sid is None:
        if not rest:
            raise UsageError(
                f"snapdir {args.command}: no snapshot id given (ID argument or --id)",
                code="INVALID_ID",
            )
        sid = rest.pop(0)
    dest = ""
    if want_dest:
        if not rest:
            raise UsageError(
                f"snapdir {args.command}: no destination directory given", code="INVALID_ARGUMENT"
            )
        dest = rest.pop(0)
    if rest:
        raise UsageError(
            f"snapdir {args.command}: unexpected argument(s): {' '.join(rest)}",
            code="INVALID_ARGUMENT",
        )
    from .._types import SnapshotId

    return SnapshotId(sid), dest


def run(fn: Callable[[], Coroutine[Any, Any, T]], *stores: object) -> T:
    """Run an operation: without an event loop when every store involved is local (see
    :func:`snapdir._manifest.run_local`), else under anyio."""
    if all(str(getattr(s, "uri", s)).startswith("file://") for s in stores):
        from .._manifest import run_local

        return run_local(fn)
    import anyio

    return anyio.run(fn)
