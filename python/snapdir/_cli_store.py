"""CLI commands that talk to stores: stage, push, fetch, pull, checkout, sync, diff, verify,
size. Registered into :mod:`snapdir.cli`; imported only when the CLI builds its parser."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._errors import InvalidArgumentError, SnapdirError


class UsageError(InvalidArgumentError):
    """A missing or contradictory command-line argument (exit status 2)."""


T = TypeVar("T")


def _run(fn: Callable[[], Coroutine[Any, Any, T]], *stores: object) -> T:
    """Run an operation: without an event loop when every store involved is local (see
    :func:`snapdir._manifest.run_local`), else under anyio."""
    if all(str(getattr(s, "uri", s)).startswith("file://") for s in stores):
        from ._manifest import run_local

        return run_local(fn)
    import anyio

    return anyio.run(fn)


def _store_arg(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "--store",
        default=os.environ.get("SNAPDIR_STORE"),
        metavar="URI",
        help="store URI (default: $SNAPDIR_STORE): file:///path, s3://, gs://, b2://",
    )
    p.set_defaults(store_required=required)


def _jobs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=32,
        metavar="N",
        help="concurrent transfers for cloud stores (default 32)",
    )


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (also SNAPDIR_NO_PROGRESS=1)"
    )


def _need_store(args: argparse.Namespace) -> str:
    if not args.store:
        raise UsageError(
            f"snapdir {args.command}: no store given: pass --store URI or set SNAPDIR_STORE",
            code="INVALID_STORE",
        )
    from ._types import StoreUri

    return StoreUri(args.store)


def _ids(args: argparse.Namespace, positional: list[str], want_dest: bool) -> tuple[str, str]:
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
    from ._types import SnapshotId

    return SnapshotId(sid), dest


def _reporter(args: argparse.Namespace, label: str) -> Any:
    from ._progress import make_reporter

    return make_reporter(label, enabled=not (args.no_progress or args.quiet))


def _finish(rep: Any) -> None:
    if rep is not None:
        rep.close()


def _emit(args: argparse.Namespace, text: str, obj: dict[str, Any]) -> None:
    from .cli import _emit_json, _out

    if args.json:
        _emit_json(obj)
    elif text:
        _out(text)


def _info(args: argparse.Namespace, message: str) -> None:
    if not args.quiet and not args.json:
        print(f"snapdir: {message}", file=sys.stderr)


def cmd_push(args: argparse.Namespace) -> int:
    from ._push import push_with_stats

    store = _need_store(args) if args.command == "push" else None
    rep = _reporter(args, args.command)
    try:
        if store is None:
            from ._cache import cache_store

            target: Any = cache_store()
        else:
            target = store
        s = _run(
            lambda: push_with_stats(
                args.path,
                target,
                exclude=args.exclude,
                no_follow=args.no_follow,
                jobs=args.jobs,
                progress=rep,
                repair=args.repair,
                use_cache=not args.no_stat_cache,
                rehash=args.rehash,
            ),
            target,
        )
    finally:
        _finish(rep)
    if s["noop"]:
        _info(args, f"snapshot {s['id']} is already in {target.uri if store is None else store}")
    else:
        _info(
            args,
            f"uploaded {s['uploaded']} of {s['objects']} objects ({s['bytes_uploaded']} bytes)",
        )
    _emit(args, str(s["id"]), dict(s.fields))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ._pull import fetch_with_stats

    store = _need_store(args)
    sid, _ = _ids(args, args.args, want_dest=False)
    rep = _reporter(args, "fetch")
    try:
        s = _run(lambda: fetch_with_stats(sid, store, jobs=args.jobs, progress=rep), store)
    finally:
        _finish(rep)
    _emit(args, "", dict(s.fields))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ._pull import pull_with_stats

    if args.command == "checkout":
        from ._cache import cache_store

        store: Any = cache_store()
    else:
        store = _need_store(args)
    sid, dest = _ids(args, args.args, want_dest=True)
    rep = _reporter(args, args.command)
    try:
        s = _run(
            lambda: pull_with_stats(
                sid,
                store,
                dest,
                force=args.force,
                delete=args.delete,
                preserve_special_bits=args.preserve_special_bits,
                jobs=getattr(args, "jobs", 32),
                progress=rep,
                link=args.link,
                use_cache=not args.no_stat_cache,
                wait=not args.no_wait,
            ),
            store,
        )
    finally:
        _finish(rep)
    _info(
        args,
        f"{s['files_written']} files written, {s['files_kept']} already right, "
        f"{s['removed']} removed in {dest}",
    )
    _emit(args, "", dict(s.fields))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from ._pull import copy_snapshot
    from ._types import StoreUri

    if not args.from_ or not args.to:
        raise UsageError("snapdir sync: --from URI and --to URI are required", code="INVALID_STORE")
    sid, _ = _ids(args, args.args, want_dest=False)
    rep = _reporter(args, "sync")
    try:
        s = _run(
            lambda: copy_snapshot(
                sid, StoreUri(args.from_), StoreUri(args.to), jobs=args.jobs, progress=rep
            ),
            args.from_,
            args.to,
        )
    finally:
        _finish(rep)
    _info(args, f"copied {s['copied']} of {s['objects']} objects")
    _emit(args, "", dict(s.fields))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from ._diff import diff
    from ._types import DiffOptions

    if not args.from_ or not args.to:
        raise UsageError(
            "snapdir diff: --from REF and --to REF are required", code="INVALID_ARGUMENT"
        )
    opts = DiffOptions.from_refs(args.from_, args.to)
    stores = [r.store for r in opts.from_ + opts.to if r.store is not None]
    entries = _run(lambda: diff(opts, jobs=args.jobs), *stores)
    shown = [e for e in entries if args.all or e.status != "="]
    changed = any(e.status != "=" for e in entries)
    if args.json:
        from .cli import _emit_json

        _emit_json(
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
    return 1 if (args.exit_code and changed) else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ._verify import verify_failed, verify_report

    store = _need_store(args)

    async def run() -> dict[str, dict[str, str]]:
        from ._common import open_wrapped

        ids = [args.id] if args.id else await open_wrapped(store, args.jobs).list_manifests()
        out: dict[str, dict[str, str]] = {}
        for sid in ids:
            try:
                out[sid] = await verify_report(sid, store, jobs=args.jobs)
            except SnapdirError as e:
                if args.id:
                    raise
                out[sid] = {"manifest": f"{e.code}: {e}"}
        return out

    if args.id:
        from ._types import SnapshotId

        args.id = SnapshotId(args.id)
    report = _run(run, store)
    bad = {sid: p for sid, p in report.items() if p}
    if args.json:
        from .cli import _emit_json

        _emit_json(
            {
                "ok": not bad,
                "snapshots": len(report),
                "problems": {sid: p for sid, p in bad.items()},
            }
        )
    if bad:
        if not args.json:
            for sid, p in sorted(bad.items()):
                err = verify_failed(sid, store, p) if "manifest" not in p else None
                print(f"snapdir: error: {err if err else p['manifest']}", file=sys.stderr)
        return 1
    _info(args, f"{len(report)} snapshot(s) verified in {store}")
    return 0


def cmd_size(args: argparse.Namespace) -> int:
    from ._verify import size

    store = _need_store(args)
    s = _run(lambda: size(store, args.id, jobs=args.jobs), store)
    text = (
        f"logical_bytes {s.logical_bytes}\nphysical_bytes {s.physical_bytes}\n"
        f"files {s.files}\nobjects {s.objects}"
    )
    _emit(args, text, s.as_dict())
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the store commands to the CLI's sub-parsers."""
    from ._types import LINK_MODES
    from .cli import _walk_args

    for name, help_ in (
        ("stage", "snapshot a directory into the local cache; prints the id"),
        ("push", "snapshot a directory into a store; prints only the id on stdout"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("path", nargs="?", default=".", metavar="PATH")
        _walk_args(p, absolute=False)
        if name == "push":
            _store_arg(p)
        p.add_argument(
            "--repair", action="store_true", help="re-check objects, re-upload missing/corrupt"
        )
        _jobs_arg(p)
        _progress_arg(p)
        p.set_defaults(handler=cmd_push)

    p = sub.add_parser("fetch", parents=[common], help="copy a snapshot into the local cache")
    p.add_argument("args", nargs="*", metavar="ID")
    p.add_argument("--id", default=None)
    _store_arg(p)
    _jobs_arg(p)
    _progress_arg(p)
    p.set_defaults(handler=cmd_fetch)

    for name, help_ in (
        ("pull", "materialise a snapshot from a store into a directory"),
        ("checkout", "materialise a snapshot from the local cache into a directory"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("args", nargs="*", metavar="ID DEST")
        p.add_argument("--id", default=None)
        if name == "pull":
            _store_arg(p)
        p.add_argument("--force", action="store_true", help="overwrite local files that differ")
        p.add_argument("--delete", action="store_true", help="remove files not in the snapshot")
        p.add_argument(
            "--preserve-special-bits",
            action="store_true",
            help="apply setuid/setgid/sticky bits from the manifest",
        )
        p.add_argument(
            "--link",
            choices=LINK_MODES,
            default="copy",
            help="copy files (default), hard-link the local cache's objects (read-only use: "
            "editing a file in place edits the cache) or clone them (reflink: Btrfs, XFS); "
            "see docs/checkout-links.md",
        )
        p.add_argument(
            "--no-stat-cache",
            action="store_true",
            help="hash every destination file of the right size; neither read nor write the "
            "stat cache",
        )
        p.add_argument(
            "--no-wait",
            action="store_true",
            help="fail at once (CONFLICT) if another pull or checkout is writing into DEST, "
            "instead of waiting for it",
        )
        _jobs_arg(p)
        _progress_arg(p)
        p.set_defaults(handler=cmd_pull)

    p = sub.add_parser("sync", parents=[common], help="copy a snapshot between stores")
    p.add_argument("args", nargs="*", metavar="ID")
    p.add_argument("--id", default=None)
    p.add_argument("--from", dest="from_", metavar="URI")
    p.add_argument("--to", metavar="URI")
    _jobs_arg(p)
    _progress_arg(p)
    p.set_defaults(handler=cmd_sync)

    p = sub.add_parser("diff", parents=[common], help="compare snapshots, stores, directories")
    p.add_argument("--from", dest="from_", action="append", default=[], metavar="REF")
    p.add_argument("--to", action="append", default=[], metavar="REF")
    p.add_argument("--all", action="store_true", help="also list unchanged paths (=)")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when there are differences")
    _jobs_arg(p)
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser("verify", parents=[common], help="re-hash a snapshot's objects")
    p.add_argument("--id", default=None, help="snapshot to verify (default: all in the store)")
    _store_arg(p)
    _jobs_arg(p)
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("size", parents=[common], help="sizes of a snapshot or a whole store")
    p.add_argument("--id", default=None)
    _store_arg(p)
    _jobs_arg(p)
    p.set_defaults(handler=cmd_size)
