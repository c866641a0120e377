"""Recordings: ``record`` (watch a directory, record its life into a store), ``replay``
(play it back into a directory with its timing) and ``recording ls|info``."""

from __future__ import annotations

import sys

from ._common import UsageError, need_store, store_arg
from ._output import emit_json, info

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

RECORD_JSON = {
    "name": "the recording's name",
    "source": "the recorded directory (absolute)",
    "host": "the recording host",
    "started": "when recording started (ISO 8601, UTC)",
    "duration": "seconds recorded",
    "segments": "event segments written",
    "events": "events recorded",
    "by_kind": "events per kind (mkdir, create, write, append, truncate, rename, delete, "
    "chmod, unreadable, placeholder, checkpoint)",
    "bytes": "content bytes stored for events (before deduplication)",
    "checkpoints": "checkpoints taken (ordinary snapshots)",
    "final_checkpoint": "the last checkpoint's snapshot id: the directory when sealed",
    "overflows": "times the OS dropped notifications (each one reconciled by a walk)",
    "tag": "the release NAME@VERSION naming the final checkpoint (--tag), or null",
}
REPLAY_JSON = {
    "name": "the recording replayed",
    "mode": "dev, fast, exact or burst",
    "speed": "recording seconds per replay second (null: burst)",
    "max_delay": "the longest wait between two events, seconds (null: none)",
    "events": "events replayed",
    "placeholders": "placeholder files written (bytes never recorded; not failures)",
    "unreadable": "events of files that could not be read when recorded (skipped)",
    "duration": "seconds the timed part took",
    "lateness": "how late events started, seconds: {events, p50, p99, max, last}",
    "verified": "true: the target equals the final checkpoint (null: not checked)",
    "checkpoints_verified": "checkpoints the target was checked against",
    "final_checkpoint": "the last checkpoint replayed",
    "target_id": "the target's snapshot id when verified",
}
LS_JSON = {
    "recordings": "each: name, sealed, segments, and from the sealed record: started, "
    "duration, events, bytes, checkpoints, source (null while live)"
}
INFO_JSON = {
    "name": "the recording",
    "source": "the recorded directory",
    "host": "the recording host",
    "started": "when recording started",
    "sealed": "false while recording (or after a crash: the live head is used)",
    "duration": "seconds from the start to the last event",
    "events": "events",
    "by_kind": "events per kind",
    "bytes": "content bytes of create, write and append events",
    "segments": "segments in the verified chain",
    "checkpoints": "each: t (seconds), id, index (event number)",
    "final_checkpoint": "the last checkpoint's snapshot id",
}


#: What a REC argument is, wherever a command reads a recording back.
REC_HELP = "the recording's name, or a release made by record --tag (NAME@RANGE, NAME@CHANNEL)"


def _seconds(value: str) -> float:
    import argparse

    from ..recording.recorder import parse_duration

    try:
        secs = parse_duration(value)
    except Exception:
        secs = None
    if secs is None or secs < 0:
        raise argparse.ArgumentTypeError(f"expected a duration (10s, 5m, 1.5), not {value!r}")
    return secs


def _positive(value: str) -> float:
    import argparse

    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {value!r}")
    return x


def _exts(value: str) -> list[str]:
    return [e for e in value.split(",") if e.strip()]


def _anyio_run(fn: Any) -> Any:
    import anyio

    return anyio.run(fn)


def cmd_record(args: argparse.Namespace) -> int:
    import signal

    from ..recording.recorder import Recorder, parse_every

    store = need_store(args)
    parse_every(args.checkpoint_every)  # a bad interval is a usage error, before any I/O
    if args.from_snapshots:
        from ..recording.snapshots import record_from_snapshots

        if args.dir is not None or not args.name:
            raise UsageError(
                "snapdir record --from-snapshots ID...: needs --name and no DIR",
                code="INVALID_ARGUMENT",
            )

        async def made() -> dict[str, Any]:
            from .._common import open_wrapped
            from ..recording.naming import check_tag_free, tag_final

            st = open_wrapped(store)
            release = None if args.tag is None else await check_tag_free(st, args.tag)
            s = await record_from_snapshots(args.from_snapshots, st, name=args.name)
            if release is not None:
                await tag_final(st, release, s["name"], s["final_checkpoint"])
            return {**s, "tag": release}

        s = _anyio_run(made)
        if args.json:
            emit_json({k: v for k, v in s.items() if k != "schema"})
        else:
            sys.stdout.write(f"{s['name']}: {s['events']} events from {s['checkpoints']} "
                             "snapshots\n")  # fmt: skip
        return 0
    if args.dir is None:
        raise UsageError("snapdir record: give DIR (or --from-snapshots)", code="INVALID_ARGUMENT")
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    async def go() -> dict[str, Any]:
        rec = Recorder(
            args.dir,
            store,
            name=args.name,
            poll=args.poll,
            checkpoint_every=args.checkpoint_every,
            content=args.content,
            placeholder=args.placeholder,
            force_text_ext=[e for v in args.force_text_ext for e in v],
            force_binary_ext=[e for v in args.force_binary_ext for e in v],
            skip_unreadable=args.skip_unreadable,
            tag=args.tag,
        )
        await rec.start()
        info(args, f"recording {rec.dir_name()} as {rec.name!r} into {store} (Ctrl-C seals)")
        try:
            await rec.run(
                duration=args.duration, until_idle=args.until_idle, stop_flag=lambda: stop["now"]
            )
        finally:
            summary = await rec.seal()
        return summary

    try:
        summary = _anyio_run(go)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if args.json:
        emit_json({k: v for k, v in summary.items() if k != "schema"})
    else:
        sys.stdout.write(
            f"{summary['name']}: {summary['events']} events in {summary['duration']:.1f} s, "
            f"{summary['checkpoints']} checkpoints, final {summary['final_checkpoint']}\n"
        )
    if summary["overflows"]:
        info(args, f"the OS dropped notifications {summary['overflows']} time(s); reconciled")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ..recording.replay import replay

    store = need_store(args)
    if args.start is not None and args.at is not None:
        raise UsageError("snapdir replay: give --from or --at, not both", code="INVALID_ARGUMENT")
    mode = args.mode or "fast"
    rep = _anyio_run(
        lambda: replay(
            args.recording,
            store,
            args.target,
            mode=mode,
            speed=args.speed,
            max_delay=args.max_delay,
            start=args.start,
            at=args.at,
            until=args.until,
            verify=args.verify,
            placeholder=args.placeholder,
            into_existing=args.into_existing,
            skip_unreadable=args.skip_unreadable,
            chaos=args.chaos,
            chaos_children_first=args.chaos_children_first,
            chaos_split_writes=args.chaos_split_writes,
        )
    )
    doc = rep.to_json()
    if args.json:
        emit_json(doc)
    else:
        lat = doc["lateness"]
        ver = {True: "verified", None: "not verified"}[doc["verified"]]
        sys.stdout.write(
            f"{doc['events']} events in {doc['duration']:.3f} s ({mode}); lateness p50 "
            f"{lat['p50'] * 1e3:.2f} ms, p99 {lat['p99'] * 1e3:.2f} ms, max "
            f"{lat['max'] * 1e3:.2f} ms; {doc['placeholders']} placeholder(s); {ver}\n"
        )
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from ..recording.info import ls

    store = need_store(args)
    rows = _anyio_run(lambda: ls(store))
    if args.json:
        emit_json({"recordings": rows})
    else:
        for r in rows:
            state = "sealed" if r["sealed"] else "live"
            dur = f"{r['duration']:.1f} s" if r["duration"] is not None else "-"
            ev = r["events"] if r["events"] is not None else "-"
            sys.stdout.write(f"{r['name']}  {state:<6} {dur:>10} {ev!s:>8} events\n")
        info(args, f"{len(rows)} recording(s) in {store}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..recording.info import info as rec_info

    store = need_store(args)
    doc = _anyio_run(lambda: rec_info(args.recording, store))
    if args.json:
        emit_json(doc)
    else:
        kinds = ", ".join(f"{k} {v}" for k, v in doc["by_kind"].items())
        sys.stdout.write(
            f"{doc['name']} ({'sealed' if doc['sealed'] else 'live'}) from {doc['source']}\n"
            f"  {doc['events']} events over {doc['duration']:.3f} s: {kinds}\n"
            f"  {doc['bytes']} content bytes, {doc['segments']} segments, "
            f"{len(doc['checkpoints'])} checkpoints, final {doc['final_checkpoint']}\n"
        )
    return 0


IMPORT_JSON = {k: v for k, v in RECORD_JSON.items() if k != "overflows"} | {
    "overflows": "always 0 for an import"
}
EXPORT_JSON = {
    "events": "epuplayer events written",
    "chunks": "binary chunks written",
    "output": "the archive written",
}


def cmd_import(args: argparse.Namespace) -> int:
    from ..recording.epuplayer import import_epuplayer

    store = need_store(args)
    summary = _anyio_run(lambda: import_epuplayer(args.file, store, name=args.name))
    if args.json:
        emit_json({k: v for k, v in summary.items() if k != "schema"})
    else:
        sys.stdout.write(
            f"{summary['name']}: {summary['events']} events imported, final "
            f"{summary['final_checkpoint']}\n"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..recording.epuplayer import export_epuplayer

    store = need_store(args)
    r = _anyio_run(lambda: export_epuplayer(args.recording, store, args.output))
    if args.json:
        emit_json(r)
    else:
        info(args, f"{r['events']} events, {r['chunks']} chunks written to {r['output']}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``record``, ``replay`` and ``recording`` to the CLI's sub-parsers."""
    from ._common import add_command, add_group

    p = add_command(
        sub,
        "record",
        common,
        json=RECORD_JSON,
        help="record a directory's life (creates, appends, renames...) into a store",
        description="Watch DIR (the OS's notifications, reconciled by a walk at every "
        "checkpoint and on overflow; or a walk every --poll interval) and record every "
        "change into the store: events in hash-chained segments flushed at least every "
        "second, contents and checkpoints as ordinary objects and snapshots. SIGINT or "
        "SIGTERM seals the recording (final checkpoint, sealed record, journal entry "
        "labelled recording:NAME) and exits 0.",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="the directory to record")
    p.add_argument(
        "--from-snapshots",
        nargs="+",
        metavar="ID",
        help="make the recording from these snapshots (in order) instead of watching DIR",
    )
    store_arg(p)
    p.add_argument("--name", metavar="NAME", help="the recording's name (default: DIR-TIME)")
    p.add_argument(
        "--tag",
        metavar="NAME@VERSION",
        help="when sealed, tag the final checkpoint this release (its record's message "
        "names the recording: replay NAME@RANGE finds it); the version must be free",
    )
    p.add_argument(
        "--poll",
        type=_seconds,
        metavar="INTERVAL",
        help="walk every INTERVAL instead of using notifications (network shares)",
    )
    p.add_argument(
        "--checkpoint-every",
        metavar="DURATION|N",
        default="60s",
        help="a checkpoint every DURATION (30s, 5m) or every N events (default 60s)",
    )
    p.add_argument(
        "--content",
        choices=("all", "text", "none"),
        default="all",
        help="keep every file's bytes (all), only text files' (binary become "
        "placeholders), or none",
    )
    p.add_argument(
        "--placeholder",
        action="append",
        default=[],
        metavar="GLOB",
        help="record files matching GLOB as placeholders: size and hash, no bytes (repeatable)",
    )
    p.add_argument(
        "--force-text-ext",
        type=_exts,
        action="append",
        default=[],
        metavar="EXT,...",
        help="always keep the bytes of files with these extensions",
    )
    p.add_argument(
        "--force-binary-ext",
        type=_exts,
        action="append",
        default=[],
        metavar="EXT,...",
        help="always record files with these extensions as placeholders",
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave unreadable files out instead of recording an unreadable event",
    )
    p.add_argument("--duration", type=_seconds, metavar="D", help="stop after D (10s, 5m)")
    p.add_argument(
        "--until-idle", type=_seconds, metavar="D", help="stop after D without any change"
    )
    p.set_defaults(handler=cmd_record)

    p = add_command(
        sub,
        "replay",
        common,
        json=REPLAY_JSON,
        help="replay a recording into a directory with its timing",
        description="Apply the events of recording REC to TARGET on an absolute schedule "
        "(t0 + (t_i - t_0) / speed, each gap capped by the max delay). Modes: --dev-mode "
        "(1000x, max delay 0.1 s), --fast (100x, 1 s; the default), --exact (1x), --burst "
        "(no waiting). Content is checked against its hash before it is written; nothing is "
        "written outside TARGET, no symbolic link is followed, setuid bits are dropped.",
    )
    p.add_argument(
        "recording",
        metavar="REC",
        help=REC_HELP,
    )
    p.add_argument("target", metavar="TARGET", help="the directory to replay into")
    store_arg(p)
    modes = p.add_mutually_exclusive_group()
    for flag, mode in (
        ("--dev-mode", "dev"),
        ("--fast", "fast"),
        ("--exact", "exact"),
        ("--burst", "burst"),
    ):
        modes.add_argument(flag, dest="mode", action="store_const", const=mode, help=f"{mode} mode")
    p.add_argument("--speed", type=_positive, metavar="X", help="recording seconds per second")
    p.add_argument(
        "--max-delay", type=_seconds, metavar="SECONDS", help="the longest wait between events"
    )
    p.add_argument(
        "--from",
        dest="start",
        type=_seconds,
        metavar="T",
        help="apply what happened before T at once, replay the rest with its timing",
    )
    p.add_argument("--at", type=_seconds, metavar="T", help="only bring TARGET to its state at T")
    p.add_argument("--until", type=_seconds, metavar="T", help="stop at T")
    p.add_argument(
        "--verify",
        choices=("end", "each", "none"),
        default="end",
        help="check the target against the final checkpoint (end, default), every "
        "checkpoint and file (each), or not",
    )
    p.add_argument(
        "--placeholder",
        choices=("zeros", "sparse"),
        default="zeros",
        help="write placeholders as zeros (default) or sparse files of their size",
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="replay a recording that has unreadable events (they are skipped)",
    )
    p.add_argument("--into-existing", action="store_true", help="replay into a non-empty TARGET")
    p.add_argument(
        "--chaos",
        type=int,
        metavar="SEED",
        help="a reproducible perturbed replay: events reordered within windows (each "
        "path's causality kept), some modifications duplicated",
    )
    p.add_argument(
        "--chaos-children-first",
        action="store_true",
        help="with --chaos: in each window, one event making something inside a new "
        "directory is applied before that directory's mkdir (missing parents are made "
        "on the way, mode 0700; the mkdir then sets the mode)",
    )
    p.add_argument(
        "--chaos-split-writes",
        type=int,
        default=1,
        metavar="N",
        help="with --chaos: write every create, write and append of at least N bytes in N "
        "chunks, each its own open, write and close, so a watcher sees each chunk "
        "(1 to 1024; default 1: whole)",
    )
    p.set_defaults(handler=cmd_replay)

    actions = add_group(
        sub,
        "recording",
        common,
        help="list, describe, import and export recordings: ls, info, import, export",
        description="The recordings in a store: ls lists them, info verifies one and "
        "describes it, import reads an epuplayer archive, export writes one.",
    )
    p = add_command(
        actions,
        "ls",
        common,
        json=LS_JSON,
        help="list the recordings in a store",
        description="List the store's recordings: name, sealed or live, segments, and "
        "the sealed record's duration and counts.",
    )
    store_arg(p)
    p.set_defaults(handler=cmd_ls)
    p = add_command(
        actions,
        "info",
        common,
        json=INFO_JSON,
        help="read a recording back, verify it, and describe it",
        description="Read recording REC back (every segment, the hash chain, every "
        "event verified) and print its duration, events by kind, bytes and checkpoints.",
    )
    p.add_argument("recording", metavar="REC", help=REC_HELP)
    store_arg(p)
    p.set_defaults(handler=cmd_info)
    p = add_command(
        actions,
        "import",
        common,
        json=IMPORT_JSON,
        help="import an epuplayer recording (tar.gz)",
        description="Read an epuplayer archive member by member (no extraction: every "
        "member, path and content hash checked) and store it as a recording, with its "
        "final state as a checkpoint.",
    )
    p.add_argument("file", metavar="FILE", help="the epuplayer .tar.gz")
    store_arg(p)
    p.add_argument("--name", metavar="NAME", help="the recording's name")
    p.set_defaults(handler=cmd_import)
    p = add_command(
        actions,
        "export",
        common,
        json=EXPORT_JSON,
        help="write a recording in epuplayer's format",
        description="Write recording REC as an archive epuplayer replays (--format "
        "epuplayer, the only format).",
    )
    p.add_argument("recording", metavar="REC", help=REC_HELP)
    store_arg(p)
    p.add_argument("--format", choices=("epuplayer",), default="epuplayer", help="epuplayer")
    p.add_argument("-o", "--output", required=True, metavar="F", help="the archive to write")
    p.set_defaults(handler=cmd_export)
