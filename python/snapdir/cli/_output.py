"""What the command line prints, and the exit status it ends with.

Data goes to stdout: text, or with ``--json`` exactly one JSON object (also on failure:
``{"error": {...}}``), always with ``"schema": 1`` and a ``"warnings"`` list. Diagnostics
go to stderr, only as ``snapdir: warning: ...`` / ``snapdir: error: ...``. The exit status
of an error is decided here, from its ``.code``, and nowhere else.

Every command module imports this one and nothing here imports a command module, so the
output contract lives in one place.
"""

from __future__ import annotations

import sys

from .._redact import redact_text

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = [
    "EXIT_STATUSES",
    "MODE",
    "Mode",
    "emit",
    "emit_json",
    "error_object",
    "iec",
    "info",
    "out",
    "report_error",
    "reporter",
    "status_of",
    "warn",
]

#: Version of the JSON documents the CLI prints; raised when a field changes meaning or
#: goes away (new fields do not raise it).
JSON_SCHEMA = 1

OK, NO, USAGE, CONFLICT, NOT_FOUND, FAILURE = 0, 1, 2, 3, 4, 5
INTERRUPTED, TERMINATED = 130, 143

#: The exit statuses of every command (printed by ``snapdir --help``, docs/cli.md).
EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (OK, "success (diff --exit-code: no differences; verify: every object intact)"),
    (
        NO,
        "the answer is no: diff --exit-code found differences, verify found corrupt "
        "or missing objects",
    ),
    (
        USAGE,
        "usage: unknown flag, missing or malformed argument (store URI, id, ref, "
        "pattern, number), detected before any I/O",
    ),
    (
        CONFLICT,
        "conflict: local changes would be overwritten (pull/checkout without --force), or "
        "the store is not managed (gc before adopt)",
    ),
    (NOT_FOUND, "not found: snapshot, object, path, store or bucket"),
    (
        FAILURE,
        "any other failure: I/O, network, permissions, credentials, a hash mismatch "
        "while transferring, a damaged manifest",
    ),
    (INTERRUPTED, "interrupted (SIGINT, Ctrl-C)"),
    (TERMINATED, "terminated (SIGTERM)"),
)

#: Error code -> exit status; any code not listed is FAILURE.
_STATUS_BY_CODE = {
    "USAGE": USAGE,
    "INVALID_ARGUMENT": USAGE,
    "INVALID_ID": USAGE,
    "INVALID_STORE": USAGE,
    "CONFLICT": CONFLICT,
    "NOT_MANAGED": CONFLICT,
    "NOT_FOUND": NOT_FOUND,
    "STORE_NOT_FOUND": NOT_FOUND,
}


class Mode:
    """How this run prints: set once from the global flags, read by every printer."""

    def __init__(self) -> None:
        self.json = False
        self.quiet = False
        self.verbose = False
        self.warnings: list[str] = []
        #: What the command works on (``path``, ``uri``, ``id``): named in a JSON error.
        self.context: dict[str, str] = {}

    def reset(self, *, json: bool = False, quiet: bool = False, verbose: bool = False) -> None:
        """A fresh run (``main()`` may be called more than once in one process)."""
        self.json, self.quiet, self.verbose = json, quiet, verbose
        self.warnings = []
        self.context = {}


MODE = Mode()


def out(text: str) -> None:
    """Write ``text`` to stdout, ending with exactly one newline."""
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")


def emit_json(obj: dict[str, Any]) -> None:
    """Write one JSON object on one line (keys sorted, so output is stable), with the schema
    version and the warnings of the run."""
    import json

    doc = dict(obj, schema=JSON_SCHEMA, warnings=list(MODE.warnings))
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")


def emit(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    """The command's result: ``obj`` as JSON with ``--json``, else ``text`` (if any)."""
    if args.json:
        emit_json(obj)
    elif text:
        out(text)


def warn(message: str) -> None:
    """A warning: into the JSON document's ``warnings`` with ``--json``, else on stderr
    (not with ``-q``)."""
    message = redact_text(message)  # an SDK's message may quote an endpoint, password and all
    if MODE.json:
        MODE.warnings.append(message)
    elif not MODE.quiet:
        print(f"snapdir: warning: {message}", file=sys.stderr)


def showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Replaces :func:`warnings.showwarning` while the CLI runs: a warning raised anywhere
    (a skipped dangling link deep in an operation) is printed as ``snapdir: warning: ...``,
    never in Python's ``file:line: Category: message`` form."""
    warn(str(message))


def info(args: argparse.Namespace, message: str) -> None:
    """A human-readable note on stderr (not with ``-q`` or ``--json``)."""
    if not args.quiet and not args.json:
        print(f"snapdir: {message}", file=sys.stderr)


def detail(args: argparse.Namespace, fields: dict[str, Any]) -> None:
    """With ``-v``: what an operation did, one ``name: value`` per line on stderr."""
    if args.verbose and not args.quiet:
        for k in sorted(fields):
            print(f"snapdir: {k}: {fields[k]}", file=sys.stderr)


def reporter(args: argparse.Namespace, label: str) -> Any:
    """A progress reporter on stderr, or ``None``: ``--progress`` / ``SNAPDIR_PROGRESS``
    (see :func:`snapdir._progress.resolve_mode`); ``-q`` and ``--no-progress`` mean none."""
    from .._progress import make_reporter, resolve_mode

    mode = resolve_mode(
        getattr(args, "progress", None), disabled=bool(args.no_progress or args.quiet)
    )
    return make_reporter(label, mode=mode)


def iec(n: float) -> str:
    """``n`` bytes in IEC units (``1.5 MiB``), as the progress reports print them."""
    from .._progress import iec as to_iec

    return to_iec(n)


def finish(rep: Any) -> None:
    if rep is not None:
        rep.close()


def error_code(exc: BaseException) -> str:
    """The stable code of an error (``NOT_FOUND``, ``IO_ERROR``, ...)."""
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    if isinstance(exc, FileNotFoundError):
        return "NOT_FOUND"
    if isinstance(exc, OSError):
        return "IO_ERROR"
    return "INTERNAL_ERROR"


def status_of(exc: BaseException) -> int:
    """The exit status for an error: by its code, see :data:`EXIT_STATUSES`."""
    return _STATUS_BY_CODE.get(error_code(exc), FAILURE)


def error_object(exc: BaseException) -> dict[str, Any]:
    """``{"code", "message"}`` plus what the error is about (``path``, ``uri``, ``id``): from
    the exception if it says, else what the command was working on."""
    message = str(exc) if error_code(exc) != "INTERNAL_ERROR" else f"{type(exc).__name__}: {exc}"
    err: dict[str, Any] = {"code": error_code(exc), "message": redact_text(message)}
    for key in ("path", "uri", "id"):
        value = getattr(exc, key, None)
        if key == "path" and value is None and isinstance(exc, OSError):
            value = exc.filename
        if value is None:
            value = MODE.context.get(key)
        if value is not None:
            err[key] = redact_text(str(value))
    return err


def report_error(exc: BaseException) -> int:
    """Print ``exc`` (stderr, and the JSON error document with ``--json``); its status."""
    err = error_object(exc)
    print(f"snapdir: error: {err['message']}", file=sys.stderr)
    if MODE.verbose:
        print(f"snapdir: error code: {err['code']}", file=sys.stderr)
        if err["code"] == "INTERNAL_ERROR":
            import traceback

            # Python's own traceback, masked (an SDK quotes its endpoint URL, password and all)
            sys.stderr.write(redact_text("".join(traceback.format_exception(exc))))
    if MODE.json:
        emit_json({"error": err})
    return status_of(exc)


def usage_error(message: str) -> None:
    """With ``--json``, the JSON document of a usage error argparse found (it prints the
    human one itself)."""
    if MODE.json:
        emit_json({"error": {"code": "USAGE", "message": redact_text(message)}})
