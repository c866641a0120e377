"""Runs and provenance: ``run`` (record a command: inputs, outputs, context, live output),
``capture`` (the context alone), ``show``, ``runs``, ``lineage`` and ``rerun`` (run a record
again in a scratch directory, with a verdict)."""

from __future__ import annotations

import os
import sys

from ._common import UsageError, need_store, run, store_arg
from ._output import emit_json, info

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..runs.record import RunRecord

COMMANDS = ("run", "capture", "show", "runs", "lineage", "rerun")

RESULT_JSON = {
    "record": "the run record's name (BLAKE3 of its canonical JSON, 64 hex)",
    "status": "the command's exit status (128 + signal when a signal killed it); also "
    "snapdir's own",
    "exit_code": "the exit code, or null when a signal killed the command",
    "signal": "the signal that killed the command, or null",
    "inputs": "the inputs, each: path (relative to the project root), id; one pulled from "
    "a ref (--in PATH=REF) also: ref (as given), release, version, channel (what it "
    "resolved to, when a name)",
    "outputs": "the outputs, each: path, id",
    "stdout": "the stored stdout object (BLAKE3; secrets masked)",
    "stderr": "the stored stderr object",
    "reused": "true when --reuse found the run in the run cache (the command did not run)",
    "journal": "the journal entries written for the outputs",
    "tag": "the release the output was tagged (--tag NAME@VERSION), or null (not given, or "
    "the command failed)",
}
SUMMARY = (
    "record, kind (run, capture, rerun, track), argv, cwd, started, finished, status, "
    "exit_code, signal, host, inputs, outputs, stdout, stderr ({digest, size}), rerun_of, "
    "reproduced, differing"
)
SHOW_JSON = {"records": "the records shown, each: record (its name), statement (the whole "
             "in-toto statement, docs/format.md)"}  # fmt: skip
RUNS_JSON = {"runs": f"newest first, each: {SUMMARY}, stored (the store's time)"}
LINEAGE_JSON = {
    "ref": "the snapshot id asked about",
    "runs": f"the runs found, each: {SUMMARY}",
    "edges": "each: from, to (input tree -> record -> output tree)",
}
RERUN_JSON = {
    "record": "the comparison's own record",
    "of": "the record run again",
    "reproduced": "true when every output has its recorded id (exit status 0; else 1)",
    "differing": "paths (relative to the project root) whose content differs",
    "outputs": "the outputs of the rerun, each: path, id",
    "status": "the command's exit status in the rerun",
    "scratch": "the directory it ran in (kept)",
}


def _duration(value: str) -> float:
    """``--timeout``: 90, 90s, 15m, 2h."""
    import argparse

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    v = value.strip().lower()
    mult = units.get(v[-1:])
    try:
        n = float(v[:-1] if mult else v)
    except ValueError:
        n = -1.0
    if not n > 0:
        raise argparse.ArgumentTypeError(f"expected a duration (90, 90s, 15m, 2h), not {value!r}")
    return n * (mult or 1)


def _context_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--in",
        dest="inputs",
        action="append",
        default=[],
        metavar="PATH[=REF]",
        help="an input directory: snapshotted and pushed before the command; PATH=REF "
        "pulls REF (an id, a prefix, name@SPEC, name@CHANNEL) from --store into PATH first "
        "(PATH missing, empty, or already that snapshot: never overwritten) and records the "
        "ref and the version it resolved to (repeatable)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="VAR",
        help="record this environment variable (glob allowed: 'LC_*'; repeatable); secret-"
        "looking ones are recorded as <redacted len=N>",
    )
    p.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="GLOB",
        help="also treat variables named so as secrets (repeatable)",
    )
    git = p.add_mutually_exclusive_group()
    git.add_argument(
        "--git",
        dest="git",
        action="store_const",
        const=True,
        default=None,
        help="record git commit, branch, remotes and the dirty diff (default: when in a "
        "work tree); an error outside one",
    )
    git.add_argument("--no-git", dest="git", action="store_const", const=False, help="no git")
    p.add_argument(
        "--pre",
        action="append",
        default=[],
        metavar="CMD",
        help="a shell command run first, its output kept as an object (repeatable)",
    )
    p.add_argument(
        "--file",
        dest="files",
        action="append",
        default=[],
        metavar="PATH",
        help="record this file's BLAKE3 (a lock file; repeatable)",
    )


def _store(args: argparse.Namespace) -> str | None:
    if args.store:
        return str(need_store(args))
    return None  # the configuration may name one


def cmd_run(args: argparse.Namespace) -> int:
    from ..runs.ops import run_command

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("snapdir run: no command given (snapdir run [options] -- CMD ...)")
    store = _store(args)
    result = run(
        lambda: run_command(
            argv,
            store=store,
            inputs=args.inputs,
            outputs=args.outputs,
            env=args.env,
            redact=args.redact,
            pre=args.pre,
            files=args.files,
            git=args.git,
            timeout=args.timeout,
            reuse=args.reuse,
            tag=args.tag,
            _inline=True,
            # stdout carries exactly one JSON document with --json: the command's own
            # output goes to stderr then
            _stdout=2 if args.json else 1,
        ),
        store or "",
    )
    if args.json:
        emit_json(result.to_json())
    else:
        how = "reused" if result.reused else "recorded"
        info(args, f"{how} run {result.record} (status {result.status})")
        if result.tag:
            info(args, f"released the output as {result.tag}")
    return int(result.status) if 0 <= result.status <= 255 else 1


def cmd_capture(args: argparse.Namespace) -> int:
    from ..runs.ops import capture_context

    store = _store(args)
    result = run(
        lambda: capture_context(
            store=store,
            inputs=args.inputs,
            env=args.env,
            redact=args.redact,
            pre=args.pre,
            files=args.files,
            git=args.git,
        ),
        store or "",
    )
    if args.json:
        emit_json(result.to_json())
    else:
        sys.stdout.write(result.record + "\n")
    return 0


def _size(n: int) -> str:
    from .lifecycle import _size as size

    return size(n)


def _show_text(rec: RunRecord) -> str:
    import shlex

    pred = rec.raw["predicate"]
    internal = pred["buildDefinition"].get("internalParameters", {})
    lines = [
        f"record    {rec.digest}",
        f"kind      {rec.kind}",
    ]
    if rec.argv:
        lines.append(f"command   {shlex.join(rec.argv)}")
    lines.append(f"cwd       {rec.cwd}")
    lines.append(f"started   {rec.started}")
    lines.append(f"finished  {rec.finished}")
    if rec.status is not None:
        how = f"signal {rec.signal}" if rec.signal is not None else f"exit code {rec.exit_code}"
        lines.append(f"status    {rec.status} ({how})")
    if rec.host:
        lines.append(f"host      {rec.host}")
    for p, i in rec.inputs:
        lines.append(f"input     {i}  {p}")
    for p, i in rec.outputs:
        lines.append(f"output    {i}  {p}")
    for name, s in (("stdout", rec.stdout), ("stderr", rec.stderr), ("git diff", rec.diff)):
        if s is not None:
            lines.append(f"{name:<9} {s.digest}  {_size(s.size)}")
    for dep in pred["buildDefinition"].get("resolvedDependencies", []):
        if not isinstance(dep, dict):
            continue
        name = str(dep.get("name", ""))
        digest = dep.get("digest", {})
        if name == "git" and isinstance(digest, dict):
            ann = dep.get("annotations", {}) if isinstance(dep.get("annotations"), dict) else {}
            dirty = " (dirty)" if ann.get("dirty") else ""
            lines.append(f"git       {digest.get('gitCommit', '')} {ann.get('branch', '')}{dirty}")
        elif name.startswith("file:") or name == "executable":
            uri = dep.get("uri", name)
            d = digest.get("blake3", "") if isinstance(digest, dict) else ""
            lines.append(f"{'file' if name != 'executable' else 'program':<9} {d}  {uri}")
    env = internal.get("env", {})
    if isinstance(env, dict):
        for k in sorted(env):
            lines.append(f"env       {k}={env[k]}")
    if rec.rerun_of:
        verdict = "reproduced" if rec.reproduced else "NOT reproduced"
        lines.append(f"rerun of  {rec.rerun_of}: {verdict}")
        lines += [f"differs   {p}" for p in rec.differing]
    # Every string came from a store: no terminal control characters reach the screen.
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in "\n".join(lines))


def cmd_show(args: argparse.Namespace) -> int:
    from ..runs.layout import resolve

    store = need_store(args)
    ref = _record_or_snapshot(args.ref, store)

    async def go() -> list[RunRecord]:
        from .._common import open_wrapped

        return await resolve(open_wrapped(store), ref)

    recs = run(go, store)
    if args.json:
        emit_json({"records": [{"record": r.digest, "statement": r.raw} for r in recs]})
    else:
        sys.stdout.write("\n\n".join(_show_text(r) for r in recs) + "\n")
    return 0


def _record_or_snapshot(ref: str, store: str) -> str:
    """``show`` and ``lineage`` take a record or snapshot id (or a prefix of 8+ hex
    digits) as it is, and any other ref (name@VERSION, name@SPEC, name@channel, URI#REF)
    as the snapshot it names in ``store``."""
    from ._common import resolve_ref

    text = ref.strip()
    if 8 <= len(text) <= 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text
    return str(resolve_ref(text, store))


def _clean(s: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in s)


def cmd_runs(args: argparse.Namespace) -> int:
    import shlex

    from ..runs.ops import list_runs

    store = need_store(args)
    found = run(lambda: list_runs(store, since=args.since), store)
    if args.json:
        emit_json(
            {
                "runs": [
                    dict(r.summary(), stored=t.isoformat().replace("+00:00", "Z")) for r, t in found
                ]
            }
        )
    else:
        for r, t in found:
            name = r.digest if args.long else r.digest[:12]
            status = "-" if r.status is None else str(r.status)
            what = shlex.join(r.argv) if r.argv else f"({r.kind})"
            sys.stdout.write(_clean(f"{name}  {t:%Y-%m-%d %H:%M:%S}  {status:>3}  {what}") + "\n")
    info(args, f"{len(found)} run(s) in {store}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    import shlex

    from ..runs.ops import lineage

    store = need_store(args)
    up = args.up or not args.down
    down = args.down or not args.up
    ref = _record_or_snapshot(args.ref, store)
    g = run(lambda: lineage(store, ref, up=up, down=down), store)
    if args.json:
        emit_json(g.to_json())
    elif args.dot:
        sys.stdout.write(g.dot())
    else:
        lines = []
        for d in sorted(g.runs, key=lambda d: (g.runs[d].started, d)):
            r = g.runs[d]
            ins = ", ".join(f"{p}={i[:12]}" for p, i in r.inputs) or "-"
            outs = ", ".join(f"{p}={i[:12]}" for p, i in r.outputs) or "-"
            what = shlex.join(r.argv) if r.argv else f"({r.kind})"
            lines.append(_clean(f"{d[:12]}  {r.started}  {ins} -> [{what}] -> {outs}"))
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
        info(args, f"{len(g.runs)} run(s) linked to {g.start[:12]}")
    return 0


def _ask(rec: RunRecord) -> bool:
    """Show what would run and ask on the terminal (a record is untrusted data)."""
    import shlex

    print("snapdir: this record runs:", file=sys.stderr)
    print(f"  {_clean(shlex.join(rec.argv))}", file=sys.stderr)
    print(f"  in {_clean(rec.cwd)} (under the scratch directory)", file=sys.stderr)
    for p, i in rec.inputs:
        print(f"  input {_clean(p)} = {i}", file=sys.stderr)
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write("run it? [y/N] ")
            tty.flush()
            answer = tty.readline()
    except OSError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_rerun(args: argparse.Namespace) -> int:
    from ..runs.ops import rerun

    store = need_store(args)
    if not args.yes and not os.isatty(0):
        raise UsageError(
            "snapdir rerun: not on a terminal, so it cannot ask before running the record's "
            "command: read it with 'snapdir show', then pass --yes"
        )
    res = run(
        lambda: rerun(
            args.record,
            store=store,
            scratch=args.scratch,
            confirm=None if args.yes else _ask,
            timeout=args.timeout,
            _inline=True,
            _stdout=2 if args.json else 1,
        ),
        store,
    )
    if args.json:
        emit_json(res.to_json())
    else:
        if res.reproduced:
            info(args, f"reproduced {res.of[:12]}: every output has its recorded id")
        else:
            for p in res.differing:
                sys.stdout.write(_clean(p) + "\n")
            info(args, f"NOT reproduced: {len(res.differing)} path(s) differ")
        info(args, f"comparison recorded as {res.record}; outputs in {res.scratch}")
    return 0 if res.reproduced else 1


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    import argparse

    from ._common import add_command

    p = add_command(
        sub,
        "run",
        common,
        json=RESULT_JSON,
        help="run a command and record how: inputs, outputs, context, output (provenance)",
        description="Snapshot and push the inputs, run CMD with its output streamed live "
        "and stored (secrets masked), push the outputs, and write a provenance record "
        "(in-toto/SLSA) naming all of it. The exit status is the command's (128 + signal "
        "when killed); signals are forwarded to it. With --json the command's stdout is shown "
        "on stderr: stdout carries the JSON document.",
        epilog="Configuration: snapdir.toml or [tool.snapdir] in pyproject.toml (store, env, "
        "redact, pre, files, git); see docs/format.md, Runs.",
    )
    store_arg(p, required=False)
    _context_args(p)
    p.add_argument(
        "--out",
        dest="outputs",
        action="append",
        default=[],
        metavar="PATH",
        help="an output directory: snapshotted and pushed after the command (repeatable)",
    )
    p.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="stop the command after this long (SIGTERM, SIGKILL 5 s later): 90s, 15m, 2h",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="if the run cache has this exact run (command, cwd, input ids, allowlisted "
        "environment, executable), materialise its outputs instead of running it",
    )
    p.add_argument(
        "--tag",
        metavar="NAME@VERSION",
        help="release the (one) output under this name when the command succeeds; the "
        "version is checked free before anything runs (a taken one: exit 3)",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")
    p.set_defaults(handler=cmd_run)

    p = add_command(
        sub,
        "capture",
        common,
        json=RESULT_JSON,
        help="record the context alone (environment, git, inputs), no command",
        description="Write a record of the context without running anything: platform, "
        "allowlisted environment, git state, pre-command outputs, file digests and inputs.",
    )
    store_arg(p, required=False)
    _context_args(p)
    p.set_defaults(handler=cmd_capture)

    p = add_command(
        sub,
        "show",
        common,
        json=SHOW_JSON,
        help="print a run record (or the runs that produced a snapshot)",
        description="Print a run record, readable: given a record name (or 8+ hex digits of "
        "one), that record; given a snapshot id, the records of the runs that produced it.",
    )
    p.add_argument(
        "ref",
        metavar="RECORD|REF",
        help="a record name, or a snapshot ref (id, prefix, name@VERSION, name@SPEC, "
        "name@channel, URI#REF): the runs that produced or used it",
    )
    store_arg(p)
    p.set_defaults(handler=cmd_show)

    p = add_command(
        sub,
        "runs",
        common,
        json=RUNS_JSON,
        help="list the runs recorded in a store, newest first",
        description="List every run record of the store, newest first (by the store's time).",
    )
    store_arg(p)
    p.add_argument(
        "--since",
        metavar="DURATION|DATE",
        help="only runs since then: a duration back from the store's time (7d, 12h) or a date",
    )
    p.add_argument("--long", action="store_true", help="full 64-hex record names")
    p.set_defaults(handler=cmd_runs)

    p = add_command(
        sub,
        "lineage",
        common,
        json=LINEAGE_JSON,
        help="what produced a snapshot, and what used it",
        description="Follow run records from a snapshot: up (the runs that produced it, "
        "their inputs, and so on) and down (the runs that used it, their outputs, ...). One "
        "listing per snapshot visited.",
    )
    p.add_argument(
        "ref",
        metavar="REF",
        help="a snapshot ref (id, prefix, name@VERSION, name@SPEC, name@channel, URI#REF)",
    )
    store_arg(p)
    p.add_argument("--up", action="store_true", help="only what produced it")
    p.add_argument("--down", action="store_true", help="only what used it")
    p.add_argument("--dot", action="store_true", help="print a Graphviz graph")
    p.set_defaults(handler=cmd_lineage)

    p = add_command(
        sub,
        "rerun",
        common,
        json=RERUN_JSON,
        help="run a recorded command again and say whether it reproduces",
        description="Show a record's command and ask before running it (a record from a "
        "store is untrusted data; --yes skips the question), pull its inputs by id into a "
        "scratch directory, run it there, push the outputs and compare their ids. Exit "
        "status 0 when reproduced, 1 with the differing paths when not; the comparison is "
        "recorded.",
    )
    p.add_argument("record", metavar="RECORD", help="a record name, or 8+ hex digits of one")
    store_arg(p)
    p.add_argument(
        "--scratch", metavar="DIR", help="run in DIR (empty or new; default: a temporary one)"
    )
    p.add_argument("--yes", action="store_true", help="run without asking")
    p.add_argument("--timeout", type=_duration, metavar="DURATION", help="as for run")
    p.set_defaults(handler=cmd_rerun)
