"""The ``snapdir`` command line.

Data goes to stdout, diagnostics to stderr; the exit status says which kind of failure
(see :data:`._output.EXIT_STATUSES`). Start-up is kept lean (argparse, no anyio, no cloud
SDK at import) because ``snapdir id`` is often run on every CI step.

Layout: one module per command group, each registering its own sub-parsers
(:mod:`.snapshot`, :mod:`.transfer`, :mod:`.inspect`, :mod:`.lifecycle`, :mod:`.names`,
:mod:`.cache`, :mod:`.runs` records and reruns commands, :mod:`.recording` records and
replays directories, :mod:`.completion` makes the scripts of ``completion``); :mod:`._common`
holds the parser
and the options they share, :mod:`._output` what is printed. Only the group of the command
being run is imported.
"""

from __future__ import annotations

import os
import sys

from . import _output
from ._common import Parser, add_command, global_args

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    Handler = Callable[[argparse.Namespace], int]

__all__ = ["COMMANDS", "build_parser", "main", "subcommands"]

#: Each command and the module (of this package) that registers it, in the order of
#: ``snapdir --help``. Literal here so that choosing the module to import costs nothing.
#: ``version`` and ``completion`` (which needs the whole parser) are registered here.
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
    "ls": "lifecycle",
    "forget": "lifecycle",
    "adopt": "lifecycle",
    "du": "lifecycle",
    "gc": "lifecycle",
    "policy": "lifecycle",
    "tag": "names",
    "resolve": "names",
    "refs": "names",
    "yank": "names",
    "unyank": "names",
    "channel": "names",
    "lock": "names",
    "login": "names",
    "logout": "names",
    "cache": "cache",
    "run": "runs",
    "capture": "runs",
    "show": "runs",
    "runs": "runs",
    "lineage": "runs",
    "rerun": "runs",
    "record": "recording",
    "replay": "recording",
    "recording": "recording",
    "completion": "",
    "version": "",
}

COMMANDS = frozenset(GROUPS)

#: The shells ``completion`` writes scripts for.
SHELLS = ("bash", "zsh", "fish")


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
    """The command named in ``argv``: its first word that is not a flag or the value of
    ``--progress`` (the one global flag that takes one)."""
    after_progress = False
    for a in argv:
        if a == "--":
            return None
        if after_progress:
            after_progress = False
            continue
        if a == "--progress":
            after_progress = True
            continue
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def _wants(argv: Sequence[str], *flags: str) -> bool:
    """Whether a global flag is in ``argv`` — known before parsing, so that a usage error
    is already printed the way the flags ask (one JSON object with ``--json``)."""
    for a in argv:
        if a == "--":
            return False
        if a in flags:
            return True
    return False


def cmd_version(args: argparse.Namespace) -> int:
    from .. import version

    _output.emit(args, f"snapdir {version()}", {"version": version()})
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    text = script(args.shell, build_parser())
    if args.json:
        _output.emit_json({"shell": args.shell, "script": text})
    else:
        sys.stdout.write(text)
    return 0


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests); with ``only``, just that
    command's sub-parser is built (and just its module imported)."""
    from .. import version

    full = only not in GROUPS
    if full:
        from ._help import epilog

    parser = Parser(
        prog="snapdir",
        description="Content-addressable directory snapshots (BLAKE3), for CI: snapshot a "
        "directory, move it through a store (file://, s3://, gs://, b2://), restore it "
        "byte for byte.",
        epilog=epilog() if full else None,
    )
    parser.add_argument("--version", action="version", version=f"snapdir {version()}")
    global_args(parser, in_command=False)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=Parser, title="commands"
    )
    subparsers.required = True
    sub = _Subcommands(subparsers, only)

    common = Parser(add_help=False)
    global_args(common, in_command=True)

    groups = list(dict.fromkeys(GROUPS.values())) if only is None or full else [GROUPS[only]]
    for group in groups:
        if group:
            # __import__ rather than importlib.import_module: the C import path, which
            # `python -X importtime` sees (import_module's pure-Python one it does not).
            __import__(f"{__name__}.{group}", fromlist=["register"]).register(sub, common)
    p = add_command(
        sub,
        "completion",
        common,
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a completion script for SHELL, generated from the commands and "
        "flags of this snapdir. bash: source <(snapdir completion bash); zsh: source "
        "<(snapdir completion zsh) after compinit; fish: snapdir completion fish | source.",
        json={"shell": "the shell", "script": "the completion script"},
    )
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    p.set_defaults(handler=cmd_completion)
    p = add_command(
        sub,
        "version",
        common,
        help="print the version (as --version)",
        description="Print the version of snapdir, as --version does.",
        json={"version": "the version string"},
    )
    p.set_defaults(handler=cmd_version)
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The command parsers of ``parser`` (from :func:`build_parser`) by name, in order (for
    documentation and tests)."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so that it unwinds as Ctrl-C does: the
    Rust side is told to stop, staging directories and partial downloads are removed."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``snapdir`` console script; returns the exit status."""
    import signal
    import warnings

    args_list = list(sys.argv[1:] if argv is None else argv)
    _output.MODE.reset(
        json=_wants(args_list, "--json"),
        quiet=_wants(args_list, "-q", "--quiet"),
        verbose=_wants(args_list, "-v", "--verbose"),
    )
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (main() called from a test or a tool)
        previous = None
    try:
        with warnings.catch_warnings():
            # Every warning, from anywhere, printed as `snapdir: warning: ...` (or collected
            # into the JSON document): never Python's `file:line: Category: message`.
            warnings.showwarning = _output.showwarning
            from .._errors import SnapdirWarning

            warnings.simplefilter("always", SnapdirWarning)
            return _run(args_list)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args_list: list[str]) -> int:
    try:
        # Building the parser imports the store commands: Ctrl-C this early is no error.
        parser = build_parser(_command_in(args_list))
        args, extra = parser.parse_known_args(args_list)
        if extra:
            # Named by the command they were given to, with its usage (argparse would
            # report them against the top-level parser).
            subcommands(parser).get(args.command, parser).error(
                f"unrecognized arguments: {' '.join(extra)}"
            )
    except KeyboardInterrupt as e:
        return _interrupted(e)
    # The flags as parsed (``-qv`` is two of them) rule from here on.
    _output.MODE.json, _output.MODE.quiet = args.json, args.quiet
    _output.MODE.verbose = args.verbose
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except BrokenPipeError:
        # The reader went away (`snapdir manifest | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _output.FAILURE
    except Exception as e:
        from ._common import UsageError

        if isinstance(e, UsageError):
            parser.print_usage(sys.stderr)
        return _output.report_error(e)


def _interrupted(e: KeyboardInterrupt) -> int:
    what, status = ("terminated", _output.TERMINATED)
    if not isinstance(e, _Terminated):
        what, status = ("interrupted", _output.INTERRUPTED)
    print(f"snapdir: {what}", file=sys.stderr)
    if _output.MODE.json:
        _output.emit_json({"error": {"code": what.upper(), "message": what}})
    return status
