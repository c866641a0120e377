"""Commands that move snapshots: ``fetch`` (store -> local cache), ``pull`` (store ->
directory), ``checkout`` (local cache -> directory) and ``sync`` (store -> store)."""

from __future__ import annotations

from ._common import (
    UsageError,
    ids,
    ignore_args,
    ignore_option,
    jobs_arg,
    ref_store,
    run,
    store_arg,
)
from ._output import MODE, detail, emit, finish, iec, info, out, reporter

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

COMMANDS = ("fetch", "pull", "checkout", "sync")

COPY_JSON = {
    "id": "the snapshot id",
    "files": "file entries in the snapshot",
    "bytes": "bytes of those files (duplicates counted)",
    "objects": "distinct objects of the snapshot",
    "copied": "objects copied (the target lacked them)",
    "requests": "store requests made (0 for file:// stores)",
}

SYNC_JSON = {
    **COPY_JSON,
    "journal": "journal keys created in the target (the source's entries for the snapshot, "
    "or one new entry; none when the target already had them); with --dry-run those of "
    "the source's entries that would be copied (a new entry is not listed)",
    "bytes_copied": "--dry-run: bytes of the objects that would be copied (null otherwise)",
    "manifest": "--dry-run: whether the manifest would be copied (null otherwise)",
    "dry_run": "true with --dry-run: the counts say what would be copied; nothing was",
    "names": "name keys created in the target: the source's release records (and yank "
    "markers) that name the snapshot, written last; null with --dry-run",
}

PULL_JSON = {
    "id": "the snapshot id",
    "files_written": "files written into the destination",
    "files_kept": "files already right, left alone",
    "files_unread": "of those, files found right by the stat cache without reading them",
    "bytes_written": "bytes of the files written",
    "removed": "entries removed (--delete)",
    "requests": "store requests made (0 for file://)",
    "objects_fetched": "--dry-run: distinct objects that would be read from the store "
    "(null otherwise)",
    "bytes_fetched": "--dry-run: bytes of those objects (null otherwise)",
    "write": "--dry-run: paths of the files that would be written, relative to DEST "
    "(null otherwise)",
    "remove": "--dry-run: paths that --delete would remove, relative to DEST (null otherwise)",
    "dry_run": "true with --dry-run: the counts say what would be written and removed; nothing was",
}

#: Fields of pull's and checkout's document that only --dry-run fills in.
_PULL_PREVIEW = ("objects_fetched", "bytes_fetched", "write", "remove")


def cmd_fetch(args: argparse.Namespace) -> int:
    from .._pull import fetch_with_stats

    store = ref_store(args, args.args)
    sid, _ = ids(args, args.args, want_dest=False, store=store)
    rep = reporter(args, "fetch")
    try:
        s = run(lambda: fetch_with_stats(sid, store, jobs=args.jobs, progress=rep), store)
    finally:
        finish(rep)
    detail(args, s.fields)
    emit(args, "", dict(s.fields))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .._pull import pull_with_stats

    if args.command == "checkout":
        store, sid, dest = _checkout_ref(args)
    elif getattr(args, "locked", None):
        store, sid, dest = _locked(args)
    else:
        store = ref_store(args, args.args)
        sid, dest = ids(args, args.args, want_dest=True, store=store)
    if args.dry_run:
        return _pull_dry_run(args, sid, store, dest)
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
                wait=not args.no_wait,
                ignore_file=ignore_option(args),
                exclude_glob=args.exclude_glob,
            ),
            store,
        )
    finally:
        finish(rep)
    info(
        args,
        f"{s['files_written']} files written ({iec(s['bytes_written'])}), "
        f"{s['files_kept']} already right, {s['removed']} removed in {dest}",
    )
    s.update(dry_run=False, **dict.fromkeys(_PULL_PREVIEW))
    detail(args, s.fields)
    emit(args, "", dict(s.fields))
    return 0


def _pull_dry_run(args: argparse.Namespace, sid: Any, store: Any, dest: str) -> int:
    """``pull``/``checkout --dry-run``: what would be written and removed in DEST (paths to
    remove always listed, paths to write with -v), changing nothing there."""
    from .._dryrun import preview_pull

    s = run(
        lambda: preview_pull(
            sid,
            store,
            dest,
            force=args.force,
            delete=args.delete,
            preserve_special_bits=args.preserve_special_bits,
            jobs=getattr(args, "jobs", 32),
            use_cache=not args.no_stat_cache,
            ignore_file=ignore_option(args),
            exclude_glob=args.exclude_glob,
        ),
        store,
    )
    if args.json:
        emit(args, "", dict(s.fields))
        return 0
    if args.verbose:
        for path in s["write"]:
            out(f"write {path}")
    for path in s["remove"]:
        out(f"remove {path}")
    out(
        f"would write {s['files_written']} files ({iec(s['bytes_written'])}), reading "
        f"{s['objects_fetched']} objects ({iec(s['bytes_fetched'])}); keep "
        f"{s['files_kept']}; remove {s['removed']} in {dest}"
    )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from .._sync import sync_with_stats
    from .._types import StoreUri

    if not args.from_ or not args.to:
        raise UsageError("snapdir sync: --from URI and --to URI are required", code="INVALID_STORE")
    src, dst = StoreUri(args.from_), StoreUri(args.to)
    MODE.context["uri"] = src
    sid, _ = ids(args, args.args, want_dest=False, store=src)
    if args.dry_run:
        from .._dryrun import preview_sync

        s = run(lambda: preview_sync(sid, src, dst, jobs=args.jobs), src, dst)
        what = "and the manifest" if s["manifest"] else "(the target has the manifest)"
        text = (
            f"would copy {s['copied']} of {s['objects']} objects ({iec(s['bytes_copied'])}) "
            f"{what}, and {len(s['journal'])} journal entries, to {dst}"
        )
        if "names" not in s.fields:
            s.update(names=None)  # which names would be copied is not previewed
        detail(args, s.fields)
        emit(args, text, dict(s.fields))
        return 0
    rep = reporter(args, "sync")
    try:
        s = run(lambda: sync_with_stats(sid, src, dst, jobs=args.jobs, progress=rep), src, dst)
    finally:
        finish(rep)
    info(args, f"copied {s['copied']} of {s['objects']} objects")
    s.update(bytes_copied=None, manifest=None, dry_run=False)
    if s["names"]:
        info(args, f"copied {len(s['names'])} name record(s)")
    detail(args, s.fields)
    emit(args, "", dict(s.fields))
    return 0


def _checkout_ref(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``checkout REF DEST``: an id or an id prefix is looked up in the local cache, as
    always (no store, no request); a name (``name@1.2``, ``name@^1``, ``name@stable``) is
    resolved in ``--store`` (or the store of ``URI#REF``), since the cache keeps content,
    not names — then the snapshot it names is checked out of the cache."""
    from .._cache import cache_store
    from .._errors import InvalidArgumentError, NotFoundError
    from ..names.grammar import parse_ref

    cache: Any = cache_store()
    raw = args.id if args.id is not None else next(iter(args.args), "")
    try:
        ref = parse_ref(raw)
        named = ref.store is not None or ref.is_name
    except InvalidArgumentError:
        named = False  # reported as a bad id by the cache path below
    if not named:
        MODE.context["uri"] = cache.uri
        sid, dest = ids(args, args.args, want_dest=True, store=cache)
        return cache, sid, dest
    if not args.store and ref.store is None:
        raise UsageError(
            f"snapdir checkout: {raw!r} is a name, and the local cache keeps no names: give "
            "--store URI (or URI#REF) to resolve it there",
            code="INVALID_STORE",
        )
    where = ref_store(args, args.args)
    sid, dest = ids(args, args.args, want_dest=True, store=where)
    MODE.context["uri"] = cache.uri
    if not run(lambda: cache.has_manifest(sid), cache):
        raise NotFoundError(
            f"{raw} names snapshot {sid} in {where}, which is not in the local cache: "
            f"fetch it first (snapdir fetch {sid} --store {where}), or pull it"
        )
    return cache, sid, dest


def _locked(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``pull --locked FILE [NAME] DEST``: the store and content id the lockfile pins (the
    only entry, or NAME's)."""
    from .._types import SnapshotId, StoreUri
    from ..names.lockfile import read_lock

    entries = read_lock(args.locked)
    rest = list(args.args)
    if args.id is not None or not 1 <= len(rest) <= 2:
        raise UsageError(
            "snapdir pull --locked FILE [NAME] DEST: the entry's name (if the lockfile has "
            "several) and the destination",
            code="INVALID_ARGUMENT",
        )
    dest = rest.pop()
    if rest:
        chosen = [e for e in entries if e["name"] == rest[0] or e["ref"] == rest[0]]
    else:
        chosen = entries if len(entries) == 1 else []
    if len(chosen) != 1:
        names = ", ".join(str(e["ref"]) for e in entries)
        raise UsageError(
            f"snapdir pull --locked: name one entry of {args.locked} ({names})",
            code="INVALID_ARGUMENT",
        )
    store = StoreUri(str(chosen[0]["store"]))  # the lockfile pins the store too
    sid = SnapshotId(str(chosen[0]["id"]))
    MODE.context.update(uri=store, id=sid, path=dest)
    return store, sid, dest


def _id_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--id",
        default=None,
        metavar="REF",
        help="the snapshot (id, prefix of 8+ hex, name@VERSION, name@SPEC, name@channel, "
        "name, URI#REF), instead of the REF argument",
    )


def _dry_run_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--dry-run", "-n", action="store_true", help=help)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    from .._types import LINK_MODES
    from ._common import add_command

    p = add_command(
        sub,
        "fetch",
        common,
        json=COPY_JSON,
        help="copy a snapshot from a store into the local cache",
        description="Copy snapshot ID (its manifest and the objects the cache lacks) from "
        "the store into the local cache, for a later offline checkout.",
    )
    p.add_argument(
        "args", nargs="*", metavar="REF", help="the snapshot: id, prefix, name ref (or give --id)"
    )
    _id_arg(p)
    store_arg(p)
    jobs_arg(p)
    p.set_defaults(handler=cmd_fetch)

    for name, help_, desc in (
        (
            "pull",
            "materialise a snapshot from a store into a directory",
            "Make DEST hold exactly snapshot ID from the store: files that differ are "
            "refused (exit 3) unless --force, files not in the snapshot kept unless --delete. "
            "Files already right are not rewritten.",
        ),
        (
            "checkout",
            "materialise a snapshot from the local cache into a directory",
            "As pull, from the local cache ($SNAPDIR_CACHE_DIR; see stage and fetch). An id "
            "or id prefix is looked up in the cache; a name (name@VERSION, name@SPEC, "
            "name@channel, name) is resolved in --store or the store of URI#REF, and the "
            "snapshot it names must be in the cache.",
        ),
    ):
        p = add_command(sub, name, common, help=help_, description=desc, json=PULL_JSON)
        p.add_argument(
            "args",
            nargs="*",
            metavar="REF DEST",
            help="the snapshot (id, prefix, name@VERSION, name@SPEC, name@channel, name, "
            "URI#REF; or give --id) and the destination directory",
        )
        _id_arg(p)
        if name == "checkout":
            store_arg(p, required=False)
        if name == "pull":
            store_arg(p)
            p.add_argument(
                "--locked",
                metavar="FILE",
                help="pull the content id a lockfile pins (args: [NAME] DEST; see lock)",
            )
        p.add_argument(
            "--force", action="store_true", help="overwrite local files that differ (else exit 3)"
        )
        p.add_argument(
            "--delete",
            action="store_true",
            help="remove files not in the snapshot, except those DEST's .snapdirignore ignores",
        )
        ignore_args(p, delete=True)
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
        _dry_run_arg(
            p,
            "print what would be written and removed in DEST (with counts and "
            "bytes; -v lists every file) and change nothing there",
        )
        jobs_arg(p)
        p.set_defaults(handler=cmd_pull)

    p = add_command(
        sub,
        "sync",
        common,
        json=SYNC_JSON,
        help="copy a snapshot between stores",
        description="Copy snapshot ID from one store to another: the objects the target "
        "lacks (each verified on the way), then the manifest, then its journal entries.",
    )
    p.add_argument(
        "args", nargs="*", metavar="REF", help="the snapshot: id, prefix, name ref (or give --id)"
    )
    _id_arg(p)
    p.add_argument("--from", dest="from_", metavar="URI", help="the store to copy from")
    p.add_argument("--to", metavar="URI", help="the store to copy into")
    _dry_run_arg(
        p,
        "print what would be copied (objects, bytes, manifest, journal "
        "entries) and change nothing in either store",
    )
    jobs_arg(p)
    p.set_defaults(handler=cmd_sync)
