"""Commands that snapshot a directory: ``manifest``, ``id`` (no store, nothing written but
the stat cache), ``stage`` (into the local cache) and ``push`` (into a store)."""

from __future__ import annotations

import sys

from ._common import ignore_option, need_store, run, walk_args
from ._output import MODE, detail, emit, emit_json, finish, iec, info, out, reporter

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

COMMANDS = ("manifest", "id", "stage", "push")

MANIFEST_JSON = {
    "id": "the snapshot id",
    "entries": "one object per entry: type (File or Directory), permissions (the mode bits "
    'as an octal string, as the manifest text writes them: "755"), checksum, size, path',
}

PUSH_JSON = {
    "id": "the snapshot id",
    "files": "file entries in the snapshot",
    "objects": "distinct objects (files with the same content are one)",
    "uploaded": "objects written (the store lacked them)",
    "bytes_uploaded": "bytes of those objects",
    "noop": "true when the store already had the snapshot",
    "requests": "store requests made (0 for file://)",
    "bytes": "bytes of the snapshot's files (duplicates counted)",
    "journal": "the journal key of this push (null for stage and for a store without a journal)",
}

#: push's document: stage's, and what --dry-run adds.
PUSH_ONLY_JSON = {
    **PUSH_JSON,
    "manifest": "whether the manifest was (with --dry-run: would be) written",
    "dry_run": "true with --dry-run: the counts say what would be uploaded; nothing was "
    "(journal is then null)",
}


def _walk(args: argparse.Namespace, path: str) -> Any:
    from .._manifest import walk_sync

    MODE.context["path"] = path
    # Warnings (a dangling link left out) reach the user through the CLI's showwarning.
    return walk_sync(
        path,
        no_follow=args.no_follow,
        absolute=getattr(args, "absolute", False),
        exclude=args.exclude,
        use_cache=not args.no_stat_cache,
        rehash=args.rehash,
        ignore_file=ignore_option(args),
        exclude_glob=args.exclude_glob,
    )


def _manifest_of(args: argparse.Namespace) -> Any:
    """The manifest of PATH, or of the manifest text on stdin for ``-`` (only then is stdin
    read: ``snapdir id`` in a pipeline with no PATH snapshots ``.``, never waits)."""
    if args.path != "-":
        return _walk(args, args.path)
    from .._errors import SnapdirError
    from .._snapdir import Manifest

    MODE.context["path"] = "-"
    if args.verbose:
        print("snapdir: reading a manifest from standard input", file=sys.stderr, flush=True)
    text = sys.stdin.read()
    if not text.strip():
        raise SnapdirError("no manifest on standard input", code="INVALID_MANIFEST")
    return Manifest.parse(text)


def cmd_manifest(args: argparse.Namespace) -> int:
    m = _manifest_of(args)
    if args.json:
        emit_json(
            {
                "id": m.id,
                "entries": [
                    {
                        "type": e.path_type.name,
                        "permissions": f"{e.permissions:o}",
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
    m = _manifest_of(args)
    emit(args, m.id, {"id": m.id})
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .._push import push_with_stats

    if getattr(args, "id", None) is not None:
        return _push_staged(args)
    args.path = "." if args.path is None else args.path
    store = need_store(args) if args.command == "push" else None
    MODE.context["path"] = args.path
    if getattr(args, "dry_run", False):
        return _push_dry_run(args, store)
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
                ignore_file=ignore_option(args),
                exclude_glob=args.exclude_glob,
                journal=store is not None,
                time=getattr(args, "time", None),
                host=getattr(args, "host", None),
                labels=getattr(args, "label", ()),
            ),
            target,
        )
    finally:
        finish(rep)
    if s["noop"]:
        info(args, f"snapshot {s['id']} is already in {target.uri if store is None else store}")
    else:
        verb = "uploaded" if store is not None else "stored in the local cache"
        info(
            args,
            f"{verb} {s['uploaded']} of {s['objects']} objects ({iec(s['bytes_uploaded'])})",
        )
    if store is not None:
        s.update(manifest=bool(args.repair or not s["noop"]), dry_run=False)
    detail(args, s.fields)
    emit(args, str(s["id"]), dict(s.fields))
    return 0


def _push_dry_run(args: argparse.Namespace, store: Any) -> int:
    """``push --dry-run``: what would be uploaded, after the same existence checks."""
    from .._dryrun import preview_push, preview_push_staged
    from .._types import SnapshotId

    if getattr(args, "id", None) is not None:
        sid = SnapshotId(args.id)
        s = run(lambda: preview_push_staged(sid, store, jobs=args.jobs), store)
    else:
        s = run(
            lambda: preview_push(
                args.path,
                store,
                exclude=args.exclude,
                no_follow=args.no_follow,
                jobs=args.jobs,
                repair=args.repair,
                use_cache=not args.no_stat_cache,
                rehash=args.rehash,
                ignore_file=ignore_option(args),
                exclude_glob=args.exclude_glob,
            ),
            store,
        )
    if s["manifest"]:
        text = (
            f"would upload {s['uploaded']} of {s['objects']} objects "
            f"({iec(s['bytes_uploaded'])}), then write manifest {s['id']} and a journal entry"
        )
    else:
        text = (
            f"snapshot {s['id']} is already in {store}: would upload nothing, write only "
            "a journal entry"
        )
    detail(args, s.fields)
    emit(args, text, dict(s.fields))
    return 0


def _push_staged(args: argparse.Namespace) -> int:
    """``push --id ID``: the snapshot from the local cache, no directory walked."""
    from .._push import push_staged_with_stats
    from .._types import SnapshotId
    from ._common import UsageError

    if args.path is not None:
        raise UsageError(
            f"snapdir push: give a directory or --id, not both ({args.path!r} and --id)",
            code="INVALID_ARGUMENT",
        )
    if args.repair:
        raise UsageError("snapdir push: --repair re-hashes a directory's objects; not with --id")
    sid = SnapshotId(args.id)
    MODE.context["id"] = sid
    store = need_store(args)
    if args.dry_run:
        return _push_dry_run(args, store)
    rep = reporter(args, "push")
    try:
        s = run(
            lambda: push_staged_with_stats(
                sid,
                store,
                jobs=args.jobs,
                progress=rep,
                time=args.time,
                host=args.host,
                labels=args.label,
            ),
            store,
        )
    finally:
        finish(rep)
    if s["noop"]:
        info(args, f"snapshot {s['id']} is already in {store}")
    else:
        info(
            args,
            f"uploaded {s['uploaded']} of {s['objects']} objects ({iec(s['bytes_uploaded'])}) "
            "from the local cache",
        )
    s.update(manifest=not s["noop"], dry_run=False)
    detail(args, s.fields)
    emit(args, str(s["id"]), dict(s.fields))
    return 0


def _time(value: str) -> Any:
    import argparse

    from .._errors import InvalidArgumentError
    from ..lifecycle.journal import parse_time

    try:
        return parse_time(value)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    from ._common import add_command, jobs_arg, store_arg

    path_help = "directory to snapshot (default: the current one); - reads a manifest from stdin"
    for name, help_, desc in (
        (
            "manifest",
            "print the manifest of a directory",
            "Print the manifest of PATH: one line per entry (type, permissions, BLAKE3 "
            "checksum, size, path), in the format of snapdir 1.x (docs/format.md).",
        ),
        (
            "id",
            "print the snapshot id of a directory (or of a manifest on stdin)",
            "Print the snapshot id of PATH: 64 hex digits, the BLAKE3 hash of its manifest. "
            "Nothing is written but the stat cache.",
        ),
    ):
        fields = MANIFEST_JSON if name == "manifest" else {"id": "the snapshot id"}
        p = add_command(sub, name, common, help=help_, description=desc, json=fields)
        p.add_argument("path", nargs="?", default=".", metavar="PATH", help=path_help)
        walk_args(p)
        p.set_defaults(handler=cmd_manifest if name == "manifest" else cmd_id)

    for name, help_, desc in (
        (
            "stage",
            "snapshot a directory into the local cache; prints the id",
            "Snapshot PATH into the local cache ($SNAPDIR_CACHE_DIR), for a later checkout "
            "or push; prints the id on stdout.",
        ),
        (
            "push",
            "snapshot a directory into a store; prints only the id on stdout",
            "Snapshot PATH into the store: the objects it lacks, then the manifest (so a "
            "snapshot is never visible before its objects). Prints only the id on stdout.",
        ),
    ):
        fields = PUSH_ONLY_JSON if name == "push" else PUSH_JSON
        p = add_command(sub, name, common, help=help_, description=desc, json=fields)
        p.add_argument(
            "path",
            nargs="?",
            default=None,
            metavar="PATH",
            help="directory to snapshot (default: the current one)",
        )
        walk_args(p, absolute=False)
        if name == "push":
            store_arg(p)
            p.add_argument(
                "--id",
                metavar="ID",
                help="push snapshot ID from the local cache (put there by stage or fetch) "
                "instead of a directory: nothing is walked; not with PATH",
            )
            p.add_argument(
                "--time",
                type=_time,
                metavar="TIMESTAMP",
                help="record this time in the journal instead of the store's (ISO 8601, e.g. "
                "2024-05-01T10:00:00Z; no zone means UTC): for imports of old snapshots",
            )
            p.add_argument(
                "--host", metavar="H", help="record host H in the journal (default: this host)"
            )
            p.add_argument(
                "--label",
                action="append",
                default=[],
                metavar="L",
                help="attach label L to the journal entry (repeatable; like restic's tags)",
            )
            p.add_argument(
                "--dry-run",
                "-n",
                action="store_true",
                help="print what would be uploaded (objects the store lacks, bytes, whether "
                "the manifest would be written) and change nothing in the store",
            )
        p.add_argument(
            "--repair",
            action="store_true",
            help="re-hash the objects already there and re-upload missing or corrupt ones",
        )
        jobs_arg(p)
        p.set_defaults(handler=cmd_push)
