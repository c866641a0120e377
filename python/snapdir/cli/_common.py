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
from .._redact import redact_text
from ._output import MODE, usage_error

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any, NoReturn, TypeVar

    from .._types import SnapshotId, StoreUri

    T = TypeVar("T")


#: The values of ``--progress`` (as :data:`snapdir._progress.MODES`, which is not imported
#: here: most commands never report progress).
PROGRESS_MODES = ("auto", "bar", "plain", "none")


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

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # A description or epilog laid out in lines (tables, examples) is kept as written;
        # a single paragraph is wrapped to the terminal.
        if "\n" in text:
            return "\n".join(indent + line if line else line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors name the program and exit 2 (argparse's own convention),
    and help formatted without importing shutil."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        usage_error(f"{self.prog}: {message}")
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact_text(message)}\n")


def global_args(p: argparse.ArgumentParser, *, in_command: bool) -> None:
    """The flags every command takes, before or after its name (``snapdir --json id`` and
    ``snapdir id --json``). The top-level parser holds the defaults; a command's copy
    leaves the value alone unless given (argparse would otherwise overwrite what was set
    before the command name with the sub-parser's default)."""
    default: Any = argparse.SUPPRESS if in_command else False
    p.add_argument(
        "--json",
        action="store_true",
        default=default,
        help='print one JSON object on stdout (also on failure), with "schema": 1',
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no warnings, notes or progress bars on stderr; errors only",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="more detail on stderr: what an operation did, error codes",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        default=default,
        help="no progress reports (as --progress=none; also SNAPDIR_NO_PROGRESS=1)",
    )
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        metavar="MODE",
        default=argparse.SUPPRESS if in_command else None,
        help="progress on stderr, MODE one of: bar (redrawn in place), plain (a status line "
        "every 10 s, for logs), none; auto (default, also $SNAPDIR_PROGRESS): bar on a "
        "terminal, else plain",
    )


#: Fields of every JSON document the CLI prints.
COMMON_JSON: dict[str, str] = {
    "schema": "1: the version of these documents (raised only when a field changes meaning)",
    "warnings": "what was skipped or worth knowing (list of strings; also on failure)",
}

#: The JSON document of a failure (any command, any status but 0 and 1).
ERROR_JSON: dict[str, str] = {
    "error.code": "stable category: USAGE, INVALID_ID, INVALID_STORE, INVALID_ARGUMENT, "
    "CONFLICT, NOT_MANAGED, NOT_FOUND, STORE_NOT_FOUND, STORE_ERROR, HASH_MISMATCH, "
    "IO_ERROR, IN_FLUX, INVALID_MANIFEST, UNSAFE_PATH, INTERRUPTED, TERMINATED, ...",
    "error.message": "what went wrong, for a human",
    "error.path": "the local path the command worked on (when there is one)",
    "error.uri": "the store (when there is one)",
    "error.id": "the snapshot id (when there is one)",
}


def add_command(
    sub: Any,
    name: str,
    common: argparse.ArgumentParser,
    *,
    help: str,
    description: str,
    json: dict[str, str],
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A sub-parser for command ``name``; ``json`` names (and describes) every field of the
    document it prints with ``--json``, listed in its help and in docs/cli.md and checked
    against real output by the tests."""
    fields = ", ".join(json)
    text = (epilog + "\n\n" if epilog else "") + f"--json prints {{{fields}}}; see docs/cli.md"
    p: argparse.ArgumentParser = sub.add_parser(
        name, parents=[common], help=help, description=description, epilog=text
    )
    p.set_defaults(json_fields=json)
    return p


def add_group(
    sub: Any, name: str, common: argparse.ArgumentParser, *, help: str, description: str
) -> Any:
    """A command group (``cache``, ``policy``, ``channel``, ``recording``): its parser and
    the sub-parsers its actions are added to with :func:`add_command`. An action is
    required, and the chosen one lands in ``<name>_command``, so every group parses and
    reports a missing action the same way."""
    top = sub.add_parser(name, parents=[common], help=help, description=description)
    actions = top.add_subparsers(
        dest=f"{name}_command", metavar="ACTION", parser_class=Parser, title="actions"
    )
    actions.required = True
    return actions


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
    ignore_args(p)
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


def ignore_args(p: argparse.ArgumentParser, *, delete: bool = False) -> None:
    """The ignore rules: ``.snapdirignore`` (gitignore syntax), another file, globs. With
    ``delete`` (pull, checkout) they say which extra destination paths --delete keeps."""
    what = "keep with --delete the destination paths" if delete else "leave out entries"
    p.add_argument(
        "--exclude-glob",
        action="append",
        default=[],
        metavar="GLOB",
        help=f"{what} matching GLOB, in .snapdirignore (gitignore) syntax (repeatable)",
    )
    p.add_argument(
        "--ignore-file",
        metavar="FILE",
        help="read the ignore rules from FILE instead of the tree's own .snapdirignore",
    )
    p.add_argument(
        "--no-ignore-file",
        action="store_true",
        help="read no ignore file (.snapdirignore is then an ordinary file)",
    )


def ignore_option(args: argparse.Namespace) -> str | bool:
    """``ignore_file=`` of the API from --ignore-file / --no-ignore-file."""
    if args.no_ignore_file and args.ignore_file is not None:
        raise UsageError("--ignore-file and --no-ignore-file cannot be given together")
    if args.no_ignore_file:
        return False
    return args.ignore_file if args.ignore_file is not None else True


def store_arg(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "--store",
        default=os.environ.get("SNAPDIR_STORE"),
        metavar="URI",
        help="store URI (default: $SNAPDIR_STORE): file:///path, s3://, gs://, b2://",
    )
    p.set_defaults(store_required=required)


def _jobs(value: str) -> int:
    """``--jobs``: a whole number of at least 1, refused while parsing (exit status 2)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def jobs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs",
        "-j",
        type=_jobs,
        default=32,
        metavar="N",
        help="concurrent transfers for cloud stores (default 32)",
    )


def need_store(args: argparse.Namespace) -> StoreUri:
    if not args.store:
        raise UsageError(
            f"snapdir {args.command}: no store given: pass --store URI or set SNAPDIR_STORE",
            code="INVALID_STORE",
        )
    from .._types import StoreUri

    uri = StoreUri(args.store)
    MODE.context["uri"] = uri
    if uri.startswith(("s3://", "b2://", "gs://")):
        # the environment first, then what `snapdir login` kept, then the SDK's chain
        from ..names.login import use_keyring

        use_keyring(uri)
    return uri


def ref_store(args: argparse.Namespace, positional: list[str]) -> StoreUri:
    """The store of a command that takes a ref: ``--store``, else the URI of a
    store-qualified ``URI#REF`` given as the ref."""
    if not args.store:
        ref = args.id if getattr(args, "id", None) is not None else next(iter(positional), "")
        if "://" in ref and "#" in ref:
            args.store = ref.partition("#")[0]
    return need_store(args)


def resolve_ref(ref: str, store: object) -> SnapshotId:
    """A ref (a 64-hex id, a unique prefix of 8+ hex digits, name@VERSION, name@SPEC,
    name@channel, name, or URI#REF) to the snapshot id it names in ``store``; a plain id
    costs nothing."""
    from .._types import SnapshotId

    text = ref.strip()
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return SnapshotId(text)
    from ..names.grammar import parse_ref
    from ..names.ops import resolve_id

    try:
        parse_ref(text)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(str(e), code="INVALID_ID") from None
    return SnapshotId(run(lambda: resolve_id(store, text), store))  # type: ignore[arg-type]


def ids(
    args: argparse.Namespace, positional: list[str], want_dest: bool, store: object = None
) -> tuple[SnapshotId, str]:
    """Resolve ``[REF] [DEST]`` positionals against ``--id``; a ref that is not a plain id
    is resolved in ``store``."""
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

    snapshot_id = SnapshotId(sid) if store is None else resolve_ref(sid, store)
    MODE.context["id"] = snapshot_id
    if dest:
        MODE.context["path"] = dest
    return snapshot_id, dest


def run(fn: Callable[[], Coroutine[Any, Any, T]], *stores: object) -> T:
    """Run an operation: without an event loop when every store involved is local (see
    :func:`snapdir._manifest.run_local`), else under anyio."""
    if all(str(getattr(s, "uri", s)).startswith("file://") for s in stores):
        from .._manifest import run_local

        return run_local(fn)
    import anyio

    return anyio.run(fn)
