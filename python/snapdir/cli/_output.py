"""What the command line prints: data on stdout (text or one JSON object), diagnostics on
stderr as ``snapdir: warning: ...`` / ``snapdir: error: ...``, progress bars, and the exit
status an error maps to.

Every command module imports this one and nothing here imports a command module, so the
output contract lives in one place.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = ["emit", "emit_json", "info", "out", "reporter", "warn"]


def out(text: str) -> None:
    """Write ``text`` to stdout, ending with exactly one newline."""
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")


def emit_json(obj: Any) -> None:
    """Write one JSON object on one line (keys sorted, so output is stable)."""
    import json

    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def emit(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    """The command's result: ``obj`` as JSON with ``--json``, else ``text`` (if any)."""
    if args.json:
        emit_json(obj)
    elif text:
        out(text)


def warn(message: str) -> None:
    print(f"snapdir: warning: {message}", file=sys.stderr)


def info(args: argparse.Namespace, message: str) -> None:
    """A human-readable note on stderr (not with ``-q`` or ``--json``)."""
    if not args.quiet and not args.json:
        print(f"snapdir: {message}", file=sys.stderr)


def reporter(args: argparse.Namespace, label: str) -> Any:
    """A progress bar on stderr, or ``None`` (``--no-progress``, ``-q``, not a terminal)."""
    from .._progress import make_reporter

    return make_reporter(label, enabled=not (args.no_progress or args.quiet))


def finish(rep: Any) -> None:
    if rep is not None:
        rep.close()
