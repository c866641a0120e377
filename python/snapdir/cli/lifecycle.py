"""A store's lifecycle: ``ls`` (what the journal says the store holds), ``forget`` (retire
snapshots by id or by a retention policy with restic's semantics), ``adopt`` (journal
the snapshots of a store written without one), ``du`` and ``gc`` (delete what no root
reaches, safely while others push)."""

from __future__ import annotations

import sys

from ._common import UsageError, need_store, run, store_arg
from ._output import emit_json, info

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..lifecycle.journal import SnapshotInfo

COMMANDS = ("ls", "forget", "adopt", "du", "gc", "policy")

ENTRY = (
    "id, time (ISO 8601, UTC), host, user, path (the pushed directory), files, bytes, "
    "labels, key (the journal key; empty for an orphan), tags (releases the push tagged), "
    "names (a list: the names known for the snapshot; the push's tags, or with ls --names "
    "every release that is not yanked and every channel head that points at it now)"
)
LS_JSON = {"snapshots": f"newest first, each: {ENTRY}"}
FORGET_JSON = {
    "dry_run": "true when nothing was removed",
    "kept": f"entries kept, each: {ENTRY}, reasons (the rules that kept it)",
    "removed": f"entries removed (or that would be), each: {ENTRY}, reasons",
}
DU_JSON = {
    "objects": "distinct objects in the store",
    "total_bytes": "bytes of every object, each once",
    "reachable_bytes": "bytes of the objects some journalled snapshot names",
    "unreachable_bytes": "the rest: what a collection would free",
    "snapshots": "journalled snapshots (distinct ids)",
    "refs": "the snapshot ids given, in full",
    "unique_bytes": "bytes only the given snapshots name: what forgetting them would free",
    "shared_bytes": "bytes the given snapshots share with the others",
}

POLICY_ENTRY = (
    "seq (its number in the store's policy log), time (store time, ISO 8601), by "
    "(user@host and tool that set it), policy (null when unset; else keep: the rules that are "
    "on, by restic's names (last, daily, within, ...); keep_labels; group_by)"
)
POLICY_SET_JSON = {"entry": f"the entry written: {POLICY_ENTRY}"}
POLICY_SHOW_JSON = {
    "entry": f"the policy in force (null when none was ever set): {POLICY_ENTRY}",
    "log": "with --log: every entry, oldest first",
}
GC_JSON = {
    "dry_run": "true when nothing was deleted (the counts say what would be)",
    "manifests": "ids of the manifests deleted (unreachable snapshots)",
    "objects": "how many objects were deleted",
    "bytes_freed": "bytes of the manifests and objects deleted",
    "kept_by_recheck": "candidates a root or intent reached after the plan was published",
    "expired_intents": "intent keys past their TTL (a writer that died), removed",
    "stale_plans": "plan keys past their deadline (a collector that died), removed",
    "roots": "snapshot ids and object digests named by roots",
    "problems": "roots whose content could not be read (e.g. a missing manifest)",
    "complete": "false when --max-delete or the deadline stopped the sweep early",
    "plan": "the plan key this run published (null when there was nothing to delete)",
    "requests": "requests sent to the store",
}

ADOPT_JSON = {
    "adopted": f"the entries written, each: {ENTRY}",
    "managed": "true: the store is marked managed",
}


def _size(n: int) -> str:
    """IEC units, as every summary line prints them."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _table(entries: list[SnapshotInfo], long: bool) -> str:
    rows = []
    for e in entries:
        when = e.time.strftime("%Y-%m-%d %H:%M:%S")
        sid = e.id if long else e.id[:12]
        labels = ",".join(e.labels)
        origin = "(orphan: no journal entry)" if not e.key else e.path
        names = " ".join(e.names)
        rows.append(
            f"{sid}  {when}  {e.host or '-':<12} {e.files:>8} {_size(e.bytes):>10}  "
            f"{origin}{'  [' + labels + ']' if labels else ''}"
            f"{'  (' + names + ')' if names else ''}"
        )
    return "\n".join(rows)


def cmd_ls(args: argparse.Namespace) -> int:
    from ..lifecycle.ops import ls

    store = need_store(args)
    entries = run(
        lambda: ls(
            store,
            since=args.since,
            host=args.host,
            path=args.path,
            label=args.label,
            orphans=args.orphans,
            names=args.names,
        ),
        store,
    )
    if args.json:
        emit_json({"snapshots": [e.to_json() for e in entries]})
    elif entries:
        sys.stdout.write(_table(entries, args.long) + "\n")
    info(args, f"{len(entries)} snapshot(s) in {store}")
    return 0


def _policy(args: argparse.Namespace) -> Any:
    from ..lifecycle.retention import Duration, Policy

    def window(value: str | None) -> Duration:
        return Duration.parse(value) if value else Duration()

    policy = Policy(
        last=args.keep_last or 0,
        hourly=args.keep_hourly or 0,
        daily=args.keep_daily or 0,
        weekly=args.keep_weekly or 0,
        monthly=args.keep_monthly or 0,
        yearly=args.keep_yearly or 0,
        within=window(args.keep_within),
        within_hourly=window(args.keep_within_hourly),
        within_daily=window(args.keep_within_daily),
        within_weekly=window(args.keep_within_weekly),
        within_monthly=window(args.keep_within_monthly),
        within_yearly=window(args.keep_within_yearly),
        keep_labels=tuple(tuple(lb.split(",")) for lb in args.keep_label),
        group_by=tuple(g.strip() for g in args.group_by.split(",") if g.strip()),
    )
    return None if policy.is_empty() else policy


def cmd_forget(args: argparse.Namespace) -> int:
    from ..lifecycle.ops import forget

    store = need_store(args)
    policy = _policy(args)  # a bad duration is a usage error, found before any request
    if args.policy == "store":
        if policy is not None:
            raise UsageError(
                "snapdir forget: --policy store applies the stored policy; give no --keep-* "
                "with it",
                code="INVALID_ARGUMENT",
            )
        policy = "store"
    if not args.ids and policy is None:
        raise UsageError(
            "snapdir forget: give snapshot ids or a policy (--keep-last, --keep-daily, "
            "--keep-within, ..., or --policy store)",
            code="INVALID_ARGUMENT",
        )
    verdicts = run(lambda: forget(store, args.ids, policy=policy, dry_run=args.dry_run), store)
    kept = [v for v in verdicts if v.keep]
    removed = [v for v in verdicts if not v.keep]
    if args.json:
        emit_json(
            {
                "dry_run": bool(args.dry_run),
                "kept": [v.to_json() for v in kept],
                "removed": [v.to_json() for v in removed],
            }
        )
    else:
        verb = "would remove" if args.dry_run else "removed"
        lines = [
            f"keep    {v.info.id[:12]}  {v.info.time:%Y-%m-%d %H:%M:%S}  {', '.join(v.reasons)}"
            for v in kept
        ]
        lines += [
            f"{verb:<7} {v.info.id[:12]}  {v.info.time:%Y-%m-%d %H:%M:%S}  {', '.join(v.reasons)}"
            for v in removed
        ]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
    info(
        args,
        f"{len(removed)} journal entr{'y' if len(removed) == 1 else 'ies'} "
        f"{'would be ' if args.dry_run else ''}removed, {len(kept)} kept "
        "(content stays until a collection)",
    )
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    from ..lifecycle.ops import du

    store = need_store(args)
    r = run(lambda: du(store, args.ids), store)
    if args.json:
        emit_json(r.to_json())
    else:
        lines = [
            f"total        {_size(r.total_bytes):>12}  {r.objects} objects, "
            f"{r.snapshots} snapshots",
            f"reachable    {_size(r.reachable_bytes):>12}",
            f"unreachable  {_size(r.unreachable_bytes):>12}  (a collection would free it)",
        ]
        if r.refs:
            lines += [
                f"unique       {_size(r.unique_bytes):>12}  (forgetting "
                f"{', '.join(i[:12] for i in r.refs)} would free it)",
                f"shared       {_size(r.shared_bytes):>12}",
            ]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_adopt(args: argparse.Namespace) -> int:
    from ..lifecycle.ops import adopt

    store = need_store(args)
    made = run(lambda: adopt(store, host=args.host or ""), store)
    if args.json:
        emit_json({"adopted": [e.to_json() for e in made], "managed": True})
    info(args, f"journalled {len(made)} snapshot(s); {store} is managed")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from ..lifecycle.gc import gc

    store = need_store(args)
    from ..lifecycle.gc import _grace, default_delay

    _grace(args.grace)  # a bad duration is a usage error, found before any request
    default_delay()
    r = run(
        lambda: gc(store, dry_run=args.dry_run, grace=args.grace, max_delete=args.max_delete),
        store,
    )
    if args.json:
        emit_json(r.to_json())
    else:
        verb = "would delete" if r.dry_run else "deleted"
        lines = [
            f"{verb} {len(r.manifests)} manifest(s) and {r.objects} object(s), "
            f"{_size(r.bytes_freed)}"
            + ("" if r.complete else " (stopped early: run gc again for the rest)")
        ]
        if r.kept_by_recheck:
            lines.append(f"kept {r.kept_by_recheck} candidate(s) a push named meanwhile")
        if r.expired_intents:
            lines.append(f"expired intents: {len(r.expired_intents)} (writers that died)")
        if r.stale_plans:
            lines.append(f"stale plans: {len(r.stale_plans)} (collectors that died)")
        for p in r.problems:
            lines.append(f"problem: {p}")
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


GC_HELP = """\
Safe while others push: every push writes an intent (its pending manifest) before it
asks the store what it has; the collector publishes its plan, waits, re-reads intents and
roots, and deletes only what still nothing reaches, before the plan's deadline; a push
that finds a plan naming its content waits for it and puts back what it removed. Only a
store marked managed (snapdir adopt) is collected: on any other, a gc that finds
something to delete exits 3 (NOT_MANAGED) before deleting anything. See
docs/design/gc.md."""


POLICY_HELP = """\
A snapshot is kept if any rule keeps it (restic forget's rules): --keep-last N the N newest;
--keep-hourly/daily/weekly/monthly/yearly N the newest of each of the last N hours/days/ISO
weeks/months/years that have one; --keep-within D everything newer than the newest snapshot
minus D; --keep-within-daily D (and -hourly, -weekly, ...) one a day within D; --keep-label
L,M those carrying every label listed. Durations: 1y6m, 7d, 36h. Snapshots are judged per
--group-by group (default host,path). forget removes journal entries only: the content stays
in the store."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    from ._common import add_command, add_group

    p = add_command(
        sub,
        "ls",
        common,
        json=LS_JSON,
        help="list what a store holds, from its journal",
        description="List the snapshots of a store, newest first: one line per push, from "
        "the store's journal (the list pages only), with the releases the push tagged in "
        "parentheses; --names shows every name the store gives it now instead.",
    )
    store_arg(p)
    p.add_argument(
        "--since",
        metavar="DURATION|DATE",
        help="only snapshots since then: a duration back from the store's time (7d, 12h, "
        "1y6m) or a date (2024-05-01, 2024-05-01T10:00:00Z)",
    )
    p.add_argument("--host", metavar="H", help="only snapshots pushed from host H")
    p.add_argument("--path", metavar="P", help="only snapshots of the directory P (absolute)")
    p.add_argument("--label", metavar="L", help="only snapshots carrying label L")
    p.add_argument("--long", action="store_true", help="full 64-hex ids")
    p.add_argument(
        "--orphans",
        action="store_true",
        help="also list manifests no journal entry names (snapdir 1.x pushes): see adopt",
    )
    p.add_argument(
        "--names",
        action="store_true",
        help="show the names the store gives each snapshot now (releases, channel heads; "
        "also those given after the push): one more listing, and a read per name record "
        "not yet in the local cache",
    )
    p.set_defaults(handler=cmd_ls)

    p = add_command(
        sub,
        "forget",
        common,
        json=FORGET_JSON,
        help="retire snapshots by id or by a retention policy (journal entries only)",
        description="Remove the journal entries of the given snapshots, or of those a "
        "retention policy does not keep. Content is removed later by a collection.",
        epilog=POLICY_HELP,
    )
    p.add_argument(
        "ids", nargs="*", metavar="ID", help="snapshot ids, or unique prefixes of 8+ hex digits"
    )
    store_arg(p)
    _add_keep_flags(p)
    p.add_argument(
        "--policy",
        choices=("store",),
        help="apply the policy stored in the store (see 'snapdir policy set'); not with --keep-*",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, remove nothing"
    )
    p.set_defaults(handler=cmd_forget)

    p = add_command(
        sub,
        "adopt",
        common,
        json=ADOPT_JSON,
        help="journal the snapshots of a store that has none (snapdir 1.x stores)",
        description="Write a journal entry for every manifest that no entry names (timed by "
        "the manifest's store timestamp) and mark the store managed.",
    )
    store_arg(p)
    p.add_argument("--host", metavar="H", help="host to record in the new entries (default: none)")
    p.set_defaults(handler=cmd_adopt)

    p = add_command(
        sub,
        "du",
        common,
        json=DU_JSON,
        help="what a store's bytes are spent on, and what forgetting would free",
        description="Total, reachable and unreachable bytes of the store; with IDs, the "
        "bytes only those snapshots name (what forgetting them would free) and the bytes "
        "they share with the others.",
    )
    p.add_argument(
        "ids", nargs="*", metavar="ID", help="snapshot ids, or unique prefixes of 8+ hex digits"
    )
    store_arg(p)
    p.set_defaults(handler=cmd_du)

    p = add_command(
        sub,
        "gc",
        common,
        json=GC_JSON,
        help="delete the manifests and objects no root reaches (safe while others push)",
        description="Collect a managed store: delete what no journal entry (or other root, "
        "or live intent) reaches, and report what was deleted and the bytes freed.",
        epilog=GC_HELP,
    )
    store_arg(p)
    p.add_argument(
        "--dry-run", action="store_true", help="report what would be deleted, delete nothing"
    )
    p.add_argument(
        "--grace",
        default=None,
        metavar="DURATION",
        help="spare content younger than this, in store time (default 1h; 0 for none)",
    )
    p.add_argument(
        "--max-delete",
        type=_count,
        default=None,
        metavar="N",
        help="delete at most N keys (manifests first); run again for the rest",
    )
    p.set_defaults(handler=cmd_gc)

    actions = add_group(
        sub,
        "policy",
        common,
        help="the retention policy kept in the store: set, show, unset",
        description="Keep one retention policy in the store so that every client prunes "
        "alike: 'forget --policy store' applies it. Every change is kept, in order, in the "
        "store's policy log (create-only writes: racing changes are both kept, in order).",
    )
    p = add_command(
        actions,
        "set",
        common,
        json=POLICY_SET_JSON,
        help="store a retention policy (the --keep-* rules of forget)",
        description="Store a retention policy: the same rules as forget's --keep-* flags.",
        epilog=POLICY_HELP,
    )
    store_arg(p)
    _add_keep_flags(p)
    p.set_defaults(handler=cmd_policy_set)
    p = add_command(
        actions,
        "show",
        common,
        json=POLICY_SHOW_JSON,
        help="print the stored retention policy",
        description="Print the retention policy in force (one list and one read).",
    )
    store_arg(p)
    p.add_argument("--log", action="store_true", help="every change, oldest first")
    p.set_defaults(handler=cmd_policy_show)
    p = add_command(
        actions,
        "unset",
        common,
        json=POLICY_SET_JSON,
        help="remove the stored retention policy (the log keeps it)",
        description="Record that the store has no retention policy any more; "
        "'forget --policy store' then refuses.",
    )
    store_arg(p)
    p.set_defaults(handler=cmd_policy_unset)


def _policy_text(entry: Any) -> str:
    if entry.policy is None:
        return f"#{entry.seq}  {entry.time:%Y-%m-%d %H:%M:%S}  unset  ({entry.by})"
    rules = entry.to_json()["policy"]
    keep = " ".join(f"--keep-{k.replace('_', '-')} {v}" for k, v in rules["keep"].items())
    keep += "".join(f" --keep-label {','.join(g)}" for g in rules["keep_labels"])
    keep += f" --group-by {','.join(rules['group_by'])}"
    return f"#{entry.seq}  {entry.time:%Y-%m-%d %H:%M:%S}  {keep}  ({entry.by})"


def cmd_policy_set(args: argparse.Namespace) -> int:
    from ..lifecycle.policy import set_policy

    store = need_store(args)
    policy = _policy(args)
    if policy is None:
        raise UsageError(
            "snapdir policy set: give at least one rule (--keep-last, --keep-daily, "
            "--keep-within, ...); 'policy unset' removes the policy",
            code="INVALID_ARGUMENT",
        )
    entry = run(lambda: set_policy(store, policy), store)
    if args.json:
        emit_json({"entry": entry.to_json()})
    else:
        sys.stdout.write(_policy_text(entry) + "\n")
    info(args, f"retention policy #{entry.seq} set in {store}")
    return 0


def cmd_policy_unset(args: argparse.Namespace) -> int:
    from ..lifecycle.policy import set_policy

    store = need_store(args)
    entry = run(lambda: set_policy(store, None), store)
    if args.json:
        emit_json({"entry": entry.to_json()})
    info(args, f"retention policy unset in {store} (#{entry.seq})")
    return 0


def cmd_policy_show(args: argparse.Namespace) -> int:
    from ..lifecycle.policy import get_policy, policy_log

    store = need_store(args)
    if args.log:
        log = run(lambda: policy_log(store), store)
        current = log[-1] if log else None
    else:
        log = []
        current = run(lambda: get_policy(store), store)
    if args.json:
        out: dict[str, object] = {"entry": None if current is None else current.to_json()}
        if args.log:
            out["log"] = [e.to_json() for e in log]
        emit_json(out)
    elif args.log:
        if log:
            sys.stdout.write("\n".join(_policy_text(e) for e in log) + "\n")
    elif current is not None:
        sys.stdout.write(_policy_text(current) + "\n")
    if current is None:
        info(args, f"no retention policy is stored in {store}")
    return 0


def _add_keep_flags(p: argparse.ArgumentParser) -> None:
    """The retention rules, shared by ``forget`` and ``policy set``."""
    for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        p.add_argument(
            f"--keep-{name}",
            type=_count,
            metavar="N",
            help=f"keep the {'N newest' if name == 'last' else 'newest of the last N ' + name}"
            f"{'' if name == 'last' else ' periods'} snapshots",
        )
    p.add_argument("--keep-within", metavar="D", help="keep everything within D of the newest")
    for name in ("hourly", "daily", "weekly", "monthly", "yearly"):
        p.add_argument(
            f"--keep-within-{name}",
            metavar="D",
            help=f"keep one {name} snapshot within D of the newest",
        )
    p.add_argument(
        "--keep-label",
        action="append",
        default=[],
        metavar="L[,M...]",
        help="keep snapshots carrying all these labels (repeatable)",
    )
    p.add_argument(
        "--group-by",
        default="host,path",
        metavar="FIELDS",
        help="judge snapshots per group of these fields: host, path, label (default "
        "host,path; '' for one group)",
    )


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a count (0 or more), not {value!r}")
    return n
