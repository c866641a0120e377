"""Commands that snapshot a directory: ``manifest``, ``id`` (no store, nothing written but
the stat cache), ``stage`` (into the local cache) and ``push`` (into a store)."""

from __future__ import annotations

import sys

from ._common import need_store, run, walk_args
from ._output import emit, emit_json, finish, info, out, reporter, warn

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

COMMANDS = ("manifest", "id", "stage", "push")


def _walk(args: argparse.Namespace, path: str) -> Any:
    import warnings

    from .._errors import SnapdirWarning
    from .._manifest import walk_sync

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
        warn(str(w.message))
    return m


def cmd_manifest(args: argparse.Namespace) -> int:
    m = _walk(args, args.path)
    if args.json:
        emit_json(
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
        out(m.raw)
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    from .._errors import SnapdirError

    if args.path is None and not sys.stdin.isatty():
        from .._snapdir import Manifest

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
        emit_json({"id": snap_id})
    else:
        out(snap_id)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .._push import push_with_stats

    store = need_store(args) if args.command == "push" else None
    rep = reporter(args, args.command)
    try:
        if store is None:
            from .._cache import cache_store

            target: Any = cache_store()
        else:
            target = store
        s = run(
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
        finish(rep)
    if s["noop"]:
        info(args, f"snapshot {s['id']} is already in {target.uri if store is None else store}")
    else:
        info(
            args,
            f"uploaded {s['uploaded']} of {s['objects']} objects ({s['bytes_uploaded']} bytes)",
        )
    emit(args, str(s["id"]), dict(s.fields))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    from ._common import jobs_arg, progress_arg, store_arg

    p = sub.add_parser("manifest", parents=[common], help="print the manifest of a directory")
    p.add_argument("path", nargs="?", default=".", metavar="PATH")
    walk_args(p)
    p.set_defaults(handler=cmd_manifest)

    p = sub.add_parser(
        "id",
        parents=[common],
        help="print the snapshot id of a directory, or of a manifest on stdin",
    )
    p.add_argument("path", nargs="?", default=None, metavar="PATH")
    walk_args(p)
    p.set_defaults(handler=cmd_id)

    for name, help_ in (
        ("stage", "snapshot a directory into the local cache; prints the id"),
        ("push", "snapshot a directory into a store; prints only the id on stdout"),
    ):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("path", nargs="?", default=".", metavar="PATH")
        walk_args(p, absolute=False)
        if name == "push":
            store_arg(p)
        p.add_argument(
            "--repair", action="store_true", help="re-check objects, re-upload missing/corrupt"
        )
        jobs_arg(p)
        progress_arg(p)
        p.set_defaults(handler=cmd_push)
