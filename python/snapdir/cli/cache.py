"""``cache``: manage the local cache (``$SNAPDIR_CACHE_DIR``) — ``cache du`` (what it holds),
``cache verify`` (re-hash it), ``cache clear`` (empty it) and ``cache prune`` (shrink it,
least recently used first). See :mod:`snapdir.cache_admin`."""

from __future__ import annotations

import sys

from ._output import NO, emit_json, info

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

COMMANDS = ("cache",)

DU_JSON = {
    "directory": "the cache directory",
    "bytes": "bytes of every file counted below",
    "objects": "objects (file contents)",
    "object_bytes": "their bytes",
    "manifests": "manifests (snapshots)",
    "manifest_bytes": "their bytes",
    "statcache_files": "stat cache files (walk records and checkout stamps)",
    "statcache_bytes": "their bytes",
    "stamps": "of the stat cache files, the checkout stamp files",
}

CLEAR_JSON = {k: f"{v} (removed)" for k, v in DU_JSON.items()}

VERIFY_JSON = {
    "ok": "true when nothing is damaged",
    "objects": "objects re-hashed",
    "manifests": "manifests re-hashed",
    "corrupt_objects": "checksums of objects whose content does not hash to them",
    "corrupt_manifests": "ids of manifests that do not hash to their id or do not parse",
    "missing_objects": "checksums a cached manifest names that the cache lacks",
    "incomplete_manifests": "ids of the manifests naming missing or corrupt objects",
    "purged": "true when --purge removed the damaged keys",
}

PRUNE_JSON = {
    "snapshots": "ids of the snapshots removed (least recently used first)",
    "objects": "objects removed",
    "statcache_files": "stat cache files removed",
    "bytes_freed": "bytes removed",
    "bytes_left": "bytes the cache holds afterwards",
    "dry_run": "true when nothing was removed",
}


def _size(value: str) -> int:
    import argparse

    from .._errors import InvalidArgumentError
    from ..cache_admin import parse_size

    try:
        return parse_size(value)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _duration(value: str) -> float:
    import argparse

    from .._errors import InvalidArgumentError
    from ..cache_admin import parse_duration

    try:
        return parse_duration(value)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _directory() -> str:
    """The cache directory; a file in its place is an I/O error naming it."""
    import os

    from .._cache import cache_dir
    from .._errors import SnapdirIOError
    from ._output import MODE

    d = cache_dir()
    MODE.context["path"] = d
    if os.path.lexists(d) and not os.path.isdir(d):
        raise SnapdirIOError(f"the local cache {d} is not a directory")
    return d


def _human(n: int) -> str:
    """IEC units, as the other summaries print them."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def cmd_du(args: argparse.Namespace) -> int:
    from ..cache_admin import usage

    u = usage(_directory())
    if args.json:
        emit_json(u.to_json())
    else:
        sys.stdout.write(
            f"{_human(u.bytes):>10}  {u.directory}\n"
            f"{_human(u.object_bytes):>10}  {u.objects} objects\n"
            f"{_human(u.manifest_bytes):>10}  {u.manifests} manifests\n"
            f"{_human(u.statcache_bytes):>10}  {u.statcache_files} stat cache files "
            f"({u.stamps} checkout stamps)\n"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..cache_admin import verify

    r = verify(_directory(), purge=args.purge)
    if args.json:
        emit_json(r.to_json())
    else:
        lines = [f"corrupt object {h}" for h in r.corrupt_objects]
        lines += [f"corrupt manifest {h}" for h in r.corrupt_manifests]
        lines += [f"missing object {h}" for h in r.missing_objects]
        lines += [f"incomplete snapshot {h}" for h in r.incomplete_manifests]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
    if not r.damaged:
        info(args, f"{r.objects} objects and {r.manifests} manifests intact")
    elif r.purged:
        info(args, "removed the damaged objects and manifests; fetch or stage them again")
    else:
        info(args, "the cache is damaged: run 'snapdir cache verify --purge' to remove it")
    return NO if r.damaged and not r.purged else 0


def cmd_clear(args: argparse.Namespace) -> int:
    from ..cache_admin import clear

    gone = clear(_directory(), wait=not args.no_wait)
    if args.json:
        emit_json(gone.to_json())
    info(
        args,
        f"removed {gone.objects} objects, {gone.manifests} manifests and "
        f"{gone.statcache_files} stat cache files ({_human(gone.bytes)}) from {gone.directory}",
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ..cache_admin import prune
    from ._common import UsageError

    if args.max_size is None and args.older_than is None:
        raise UsageError(
            "snapdir cache prune: give --max-size SIZE and/or --older-than DURATION",
            code="INVALID_ARGUMENT",
        )
    r = prune(
        _directory(),
        max_size=args.max_size,
        older_than=args.older_than,
        dry_run=args.dry_run,
        wait=not args.no_wait,
    )
    if args.json:
        emit_json(r.to_json())
    elif r.snapshots:
        verb = "would remove" if r.dry_run else "removed"
        sys.stdout.write("".join(f"{verb} {s}\n" for s in r.snapshots))
    info(
        args,
        f"{'would free' if r.dry_run else 'freed'} {_human(r.bytes_freed)}: "
        f"{len(r.snapshots)} snapshots, {r.objects} objects, {r.statcache_files} stat cache "
        f"files; {_human(r.bytes_left)} left",
    )
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``cache`` and its sub-commands to the CLI's sub-parsers."""
    from ._common import add_command, add_group

    actions = add_group(
        sub,
        "cache",
        common,
        help="manage the local cache: du, verify, clear, prune",
        description="Manage the local cache ($SNAPDIR_CACHE_DIR): what it holds, whether it "
        "is intact, emptying it, keeping it small. Operations using the cache hold a shared "
        "lock on it (docs/format.md); clear and prune wait for them.",
    )

    p = add_command(
        actions,
        "du",
        common,
        json=DU_JSON,
        help="what the cache holds: bytes, objects, manifests, stat cache files",
        description="Count what the local cache holds: objects, manifests and stat cache "
        "files, and their bytes. Reads directory entries only.",
    )
    p.set_defaults(handler=cmd_du)

    p = add_command(
        actions,
        "verify",
        common,
        json=VERIFY_JSON,
        help="re-hash every object and manifest of the cache",
        description="Re-hash every object and manifest of the local cache and report the "
        "corrupt ones, and the objects a cached manifest names that are missing. Exit "
        "status 1 when something is damaged (and not purged).",
    )
    p.add_argument(
        "--purge",
        action="store_true",
        help="remove the corrupt objects and manifests, and the manifests of incomplete "
        "snapshots (a later fetch or stage writes them again)",
    )
    p.set_defaults(handler=cmd_verify)

    p = add_command(
        actions,
        "clear",
        common,
        json=CLEAR_JSON,
        help="remove every object, manifest and stat cache file",
        description="Remove everything snapdir put in the local cache (objects, manifests, "
        "the stat cache) and nothing else; symbolic links are removed, never followed.",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="fail (status 3) instead of waiting while another operation uses the cache",
    )
    p.set_defaults(handler=cmd_clear)

    p = add_command(
        actions,
        "prune",
        common,
        json=PRUNE_JSON,
        help="shrink the cache, least recently used snapshots first",
        description="Remove snapshots from the local cache, least recently used first (each "
        "stage, fetch, checkout or push --id marks its snapshot used), with the objects no "
        "remaining snapshot names, and stat cache files by age.",
    )
    p.add_argument(
        "--max-size",
        type=_size,
        metavar="SIZE",
        help="remove until the cache holds at most SIZE bytes (10GiB, 500MiB, 2G, 0)",
    )
    p.add_argument(
        "--older-than",
        type=_duration,
        metavar="DURATION",
        help="remove what was not used for DURATION (7d, 12h, 1m)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would go; remove nothing")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="fail (status 3) instead of waiting while another operation uses the cache",
    )
    p.set_defaults(handler=cmd_prune)
