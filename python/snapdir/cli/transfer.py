"""Commands that move snapshots: ``fetch`` (store -> local cache), ``pull`` (store ->
directory), ``checkout`` (local cache -> directory) and ``sync`` (store -> store)."""

from __future__ import annotations

from ._common import UsageError, ids, jobs_arg, need_store, progress_arg, run, store_arg
from ._output import emit, finish, info, reporter

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

COMMANDS = ("fetch", "pull", "checkout", "sync")


def cmd_fetch(args: argparse.Namespace) -> int:
    from .._pull import fetch_with_stats

    store = need_store(args)
    sid, _ = ids(args, args.args, want_dest=False)
    rep = reporter(args, "fetch")
    try:
        s = run(lambda: fetch_with_stats(sid, store, jobs=args.jobs, progress=rep), store)
    finally:
        finish(rep)
    emit(args, "", dict(s.fields))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .._pull import pull_with_stats

    if args.command == "checkout":
        from .._cache import cache_store

        store: Any = cache_store()
    else:
        store = need_store(args)
    sid, dest = ids(args, args.args, want_dest=True)
    rep = reporter(args, args.command)
    try:
        s = run(
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
            ),
            store,
        )
    finally:
        finish(rep)
    info(
        args,
        f"{s['files_written']} files written, {s['files_kept']} already right, "
        f"{s['removed']} removed in {dest}",
    )
    emit(args, "", dict(s.fields))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from .._pull import copy_snapshot
    from .._types import StoreUri

    if not args.from_ or not args.to:
        raise UsageError("snapdir sync: --from URI and --to URI are required", code="INVALID_STORE")
    sid, _ = ids(args, args.args, want_dest=False)
    rep = reporter(args, "sync")
    try:
        s = run(
            lambda: copy_snapshot(
                sid, StoreUri(args.from_), StoreUri(args.to), jobs=args.jobs, progress=rep
            ),
            args.from_,
            args.to,
        )
    finally:
        finish(rep)
    info(args, f"copied {s['copied']} of {s['objects']} objects")
    emit(args, "", dict(s.fields))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    from .._types import LINK_MODES

    p = sub.add_parser("fetch", parents=[common], help="copy a snapshot into the local cache")
    p.add_argument("args", nargs="*", metavar="ID")
    p.add_argument("--id", default=None)
    store_arg(p)
    jobs_arg(p)
    progress_arg(p)
    p.set_defaults(handler=cmd_fetch)

    for name, help_ in (
        ("pull", "materialise a snapshot from a store into a directory"),
        ("checkout", "materialise a snapshot from the local cache into a directory"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("args", nargs="*", metavar="ID DEST")
        p.add_argument("--id", default=None)
        if name == "pull":
            store_arg(p)
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
        jobs_arg(p)
        progress_arg(p)
        p.set_defaults(handler=cmd_pull)

    p = sub.add_parser("sync", parents=[common], help="copy a snapshot between stores")
    p.add_argument("args", nargs="*", metavar="ID")
    p.add_argument("--id", default=None)
    p.add_argument("--from", dest="from_", metavar="URI")
    p.add_argument("--to", metavar="URI")
    jobs_arg(p)
    progress_arg(p)
    p.set_defaults(handler=cmd_sync)
