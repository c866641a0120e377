"""Commands that look without changing anything: ``diff`` (snapshots, stores, directories),
``verify`` (re-hash a store's objects) and ``size``."""

from __future__ import annotations

import sys

from ._common import UsageError, jobs_arg, need_store, run, store_arg
from ._output import MODE, NO, emit, emit_json, finish, info, reporter

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

COMMANDS = ("diff", "verify", "size")

DIFF_JSON = {
    "changed": "true when the sides differ",
    "entries": "one object per path shown: status (A, D, M, =), path, detail (what changed "
    "for M: content, type, mode; contents for a directory whose only change is below it, "
    "shown with --all)",
}

VERIFY_JSON = {
    "ok": "true when every object of every snapshot checked is intact",
    "snapshots": "how many snapshots were checked",
    "problems": "snapshot id -> {checksum: missing | corrupt}, or {manifest: CODE: message} "
    "when its manifest could not be read",
    "missing_objects": "(--all; else empty) object digests a root names that the store lacks",
    "journal_problems": "(--all; else empty) journal keys that do not parse, roots that "
    "name nothing",
    "expired_intents": "(--all; else empty) intent keys past their TTL (writers that died; "
    "gc removes them)",
    "live_intents": "(--all; else 0) intents of writers still at work",
    "stale_plans": "(--all; else empty) gc plan keys past their deadline (gc removes them)",
}
ALL_ONLY = ("missing_objects", "journal_problems", "expired_intents", "stale_plans")

SIZE_JSON = {
    "logical_bytes": "sum of the sizes of every file (duplicates counted)",
    "physical_bytes": "sum of the sizes of the distinct objects (what the store holds)",
    "files": "file entries",
    "objects": "distinct objects",
}


def cmd_diff(args: argparse.Namespace) -> int:
    from .._diff import diff_rows
    from .._types import DiffOptions

    if not args.from_ or not args.to:
        raise UsageError(
            "snapdir diff: --from REF and --to REF are required", code="INVALID_ARGUMENT"
        )
    opts = DiffOptions.from_refs(
        [_snapshot_ref(r) for r in args.from_], [_snapshot_ref(r) for r in args.to]
    )
    stores = [r.store for r in opts.from_ + opts.to if r.store is not None]
    # A directory whose only change is below it ("contents") is shown with --all: the
    # entries below it already say what changed.
    rep = reporter(args, "diff")
    try:
        changed, shown = run(
            lambda: diff_rows(opts, jobs=args.jobs, all=args.all, progress=rep), *stores
        )
    finally:
        finish(rep)
    if args.json:
        emit_json(
            {
                "changed": changed,
                "entries": [
                    {"status": e.status, "path": e.path, "detail": e.detail} for e in shown
                ],
            }
        )
    else:
        lines = [f"{e.status} {e.path}" + (f"  ({e.detail})" if e.detail else "") for e in shown]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
    return NO if (args.exit_code and changed) else 0


def _snapshot_ref(ref: str) -> str:
    """``URI#REF`` (a name, a prefix: any ref) as the ``URI@ID`` a diff takes."""
    if "://" not in ref or "#" not in ref:
        return ref
    from .._types import StoreUri
    from ._common import resolve_ref

    uri = StoreUri(ref.partition("#")[0])
    return f"{uri}@{resolve_ref(ref, uri)}"


def cmd_verify(args: argparse.Namespace) -> int:
    from .._errors import SnapdirError
    from .._verify import verify_failed, verify_report

    store = need_store(args)

    async def check() -> dict[str, dict[str, str]]:
        from .._common import open_wrapped

        ids = [args.id] if args.id else await open_wrapped(store, args.jobs).list_manifests()
        # One snapshot: a bar with its total; several: a running count of what is done.
        progress = rep if rep is None or args.id else rep.__call__
        out: dict[str, dict[str, str]] = {}
        for sid in ids:
            try:
                out[sid] = await verify_report(sid, store, jobs=args.jobs, progress=progress)
            except SnapdirError as e:
                if args.id:
                    raise
                out[sid] = {"manifest": f"{e.code}: {e}"}
        return out

    if args.all:
        if args.id:
            raise UsageError(
                "snapdir verify: --all and --id exclude each other", code="INVALID_ARGUMENT"
            )
        return _verify_all(args, store)
    if args.id:
        from ._common import resolve_ref

        args.id = MODE.context["id"] = resolve_ref(args.id, store)
    rep = reporter(args, "verify")
    try:
        report = run(check, store)
    finally:
        finish(rep)
    bad = {sid: p for sid, p in report.items() if p}
    if args.json:
        emit_json(
            {
                "ok": not bad,
                "snapshots": len(report),
                "problems": {sid: p for sid, p in bad.items()},
                **{k: [] for k in ALL_ONLY},
                "live_intents": 0,
            }
        )
    if bad:
        if not args.json:
            for sid, p in sorted(bad.items()):
                err = verify_failed(sid, store, p) if "manifest" not in p else None
                print(f"snapdir: error: {err if err else p['manifest']}", file=sys.stderr)
        return NO
    info(args, f"{len(report)} snapshot(s) verified in {store}")
    return 0


def _verify_all(args: argparse.Namespace, store: Any) -> int:
    """Every root -> manifest -> object (see :func:`snapdir.lifecycle.gc.check_roots`)."""
    from ..lifecycle.gc import check_roots

    r = run(lambda: check_roots(store, jobs=args.jobs), store)
    bad = {sid: p for sid, p in r.snapshots.items() if p}
    if args.json:
        emit_json(
            {
                "ok": r.ok,
                "snapshots": len(r.snapshots),
                "problems": bad,
                "missing_objects": r.missing_objects,
                "journal_problems": r.journal_problems,
                "expired_intents": r.expired_intents,
                "live_intents": r.live_intents,
                "stale_plans": r.stale_plans,
            }
        )
    else:
        for sid, p in sorted(bad.items()):
            what = p.get("manifest") or ", ".join(f"{c[:12]} {v}" for c, v in sorted(p.items()))
            print(f"snapdir: error: snapshot {sid}: {what}", file=sys.stderr)
        for c in r.missing_objects:
            print(f"snapdir: error: object {c} (a root) is missing", file=sys.stderr)
        for msg in r.journal_problems:
            print(f"snapdir: warning: {msg}", file=sys.stderr)
        if r.expired_intents:
            print(
                f"snapdir: warning: {len(r.expired_intents)} expired intent(s) "
                "(writers that died; gc removes them)",
                file=sys.stderr,
            )
        if r.stale_plans:
            print(
                f"snapdir: warning: {len(r.stale_plans)} stale gc plan(s) (gc removes them)",
                file=sys.stderr,
            )
    if not r.ok:
        return NO
    info(args, f"{len(r.snapshots)} rooted snapshot(s) verified in {store}")
    return 0


def cmd_size(args: argparse.Namespace) -> int:
    from .._verify import size

    store = need_store(args)
    if args.id is not None:
        from ._common import resolve_ref

        args.id = MODE.context["id"] = resolve_ref(args.id, store)
    rep = reporter(args, "size")
    try:
        s = run(lambda: size(store, args.id, jobs=args.jobs, progress=rep), store)
    finally:
        finish(rep)
    text = (
        f"logical_bytes {s.logical_bytes}\nphysical_bytes {s.physical_bytes}\n"
        f"files {s.files}\nobjects {s.objects}"
    )
    emit(args, text, s.as_dict())
    return 0


REF_FORMS = """\
A REF is one of:
  URI@ID     snapshot ID in the store at URI   (s3://bucket/ci@5e0f...)
  URI#REF    the snapshot a ref names there    (s3://bucket/ci#cal-kit@1.3.0)
  URI        every snapshot of the store, as one tree of their union
  PATH       a local directory, snapshotted on the fly (not written anywhere)
--from and --to may each be given several times: the refs of one side are merged.
Output: one line per path, "A" added, "D" deleted, "M" modified (with what changed), and
with --all "=" unchanged."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    from ._common import add_command

    p = add_command(
        sub,
        "diff",
        common,
        json=DIFF_JSON,
        help="compare snapshots, stores and directories",
        description="Compare what --from refers to with what --to refers to.",
        epilog=REF_FORMS,
    )
    p.add_argument(
        "--from",
        dest="from_",
        action="append",
        default=[],
        metavar="REF",
        help="the old side: URI@ID, URI#REF, URI or PATH (repeatable)",
    )
    p.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="REF",
        help="the new side: URI@ID, URI#REF, URI or PATH (repeatable)",
    )
    p.add_argument("--all", action="store_true", help="also list unchanged paths (=)")
    p.add_argument(
        "--exit-code", action="store_true", help="exit 1 when there are differences, else 0"
    )
    jobs_arg(p)
    p.set_defaults(handler=cmd_diff)

    p = add_command(
        sub,
        "verify",
        common,
        json=VERIFY_JSON,
        help="re-hash the objects of a snapshot (or of every snapshot of a store)",
        description="Re-hash every object of the snapshot (default: of every snapshot in the "
        "store; with --all: of every snapshot a root names). Exit 1 when an object is "
        "missing or corrupt.",
    )
    p.add_argument(
        "--id", default=None, metavar="REF", help="snapshot (id or ref) to verify (default: all)"
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="verify from the roots: every journalled (or otherwise rooted) snapshot's "
        "manifest and objects, the journal's keys; report expired intents and stale plans",
    )
    store_arg(p)
    jobs_arg(p)
    p.set_defaults(handler=cmd_verify)

    p = add_command(
        sub,
        "size",
        common,
        json=SIZE_JSON,
        help="sizes of a snapshot or a whole store",
        description="Logical bytes (every file), physical bytes (each distinct object once), "
        "files and objects of the snapshot, or of every snapshot in the store.",
    )
    p.add_argument(
        "--id",
        default=None,
        metavar="REF",
        help="the snapshot, id or ref (default: the whole store)",
    )
    store_arg(p)
    jobs_arg(p)
    p.set_defaults(handler=cmd_size)
