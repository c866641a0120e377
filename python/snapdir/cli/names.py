"""Names and releases: ``tag`` (an immutable version), ``resolve`` (a ref to an id),
``refs`` (what names a store holds), ``yank``/``unyank``, ``channel set``/``channel log``,
``lock`` (pin refs to content ids), and ``login``/``logout`` (store credentials in the OS
keyring)."""

from __future__ import annotations

import sys

from ._common import UsageError, need_store, store_arg
from ._output import MODE, NO, emit, emit_json, info, warn

TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine
    from typing import Any, TypeVar

    T = TypeVar("T")

COMMANDS = ("tag", "resolve", "refs", "yank", "unyank", "channel", "lock", "login", "logout")

RESOLVED = (
    "id (the snapshot id), name, version (empty for an id ref), channel (for name@channel), "
    "yanked, record (the release record or channel entry: id, name, version, created, by, "
    "message)"
)
TAG_JSON = {
    "id": "the snapshot id tagged",
    "name": "the name",
    "version": "the version (canonical: a leading v dropped)",
    "created": "false when the same id already had this version (a no-op)",
    "record": "the release record: id, name, version, created, by, message",
}
RESOLVE_JSON = {
    "id": "the snapshot id",
    "name": "the name (empty for an id ref)",
    "version": "the version chosen",
    "channel": "the channel, for name@channel",
    "yanked": "true when an exact pin chose a yanked release",
    "record": "the release record (or channel entry)",
}
REFS_JSON = {
    "names": "each: name, versions (ascending precedence; each version, id, yanked, and "
    "reason when yanked), channels (channel -> id, version, seq)",
}
YANK_JSON = {
    "name": "the name",
    "version": "the version",
    "changed": "false when it already was so",
}
CHANNEL_ENTRY = "name, channel, seq (the move's number, 1 = the first: what channel set "
CHANNEL_ENTRY += "--expect-seq takes), id, version (when set to a release "
CHANNEL_ENTRY += "of the same name), created, by, message, key"
CHANNEL_SET_JSON = {"entry": f"the move written: {CHANNEL_ENTRY}"}
CHANNEL_LOG_JSON = {"log": f"every move, newest first, each: {CHANNEL_ENTRY}"}
LOCK_JSON = {
    "entries": "each: ref, store, id, name, version, channel, record",
    "problems": "lock --check: each ref, store, locked (id), now (id), problem (drift, "
    "yanked or gone)",
    "path": "the lockfile written or checked",
}


def run(fn: Callable[[], Coroutine[Any, Any, T]], *stores: object) -> T:
    """Under anyio, also for file:// stores: the first write to a store races a few
    create-only writers to probe it (see ``ensure_create_only``) concurrently, on a loop."""
    import anyio

    return anyio.run(fn)


def _store(args: argparse.Namespace) -> Any:
    """--store, or None when every ref names its store (URI#REF)."""
    if args.store:
        return need_store(args)
    return None


def cmd_tag(args: argparse.Namespace) -> int:
    from ..names.ops import tag

    store = need_store(args)
    message = args.message or ""
    r = run(lambda: tag(store, args.release, args.ref, message=message), store)
    created = r.created
    emit(
        args,
        r.id,
        {
            "id": r.id,
            "name": r.name,
            "version": r.version,
            "created": created,
            "record": r.record,
        },
    )
    info(args, f"{r.name}@{r.version} -> {r.id[:12]}" + ("" if created else " (already so)"))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from ..names.ops import resolve

    store = _store(args)
    r = run(lambda: resolve(store, args.spec, pre=args.pre), *([store] if store else []))
    emit(args, r.id, r.to_json())
    return 0


def cmd_refs(args: argparse.Namespace) -> int:
    from ..names.ops import refs

    store = need_store(args)
    names: list[dict[str, Any]] = run(lambda: refs(store, args.name, yanked=args.yanked), store)
    if args.json:
        emit_json({"names": names})
        return 0
    lines = []
    for n in names:
        for v in n["versions"]:
            mark = f"  (yanked: {v.get('reason', '')})" if v["yanked"] else ""
            lines.append(f"{n['name']}@{v['version']}  {str(v['id'])[:12]}{mark}")
        for ch, c in n["channels"].items():
            what = f"  ({c['version']})" if c["version"] else ""
            lines.append(f"{n['name']}@{ch}  {str(c['id'])[:12]}{what}  #{c['seq']}")
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_yank(args: argparse.Namespace) -> int:
    from ..names.grammar import parse_tag
    from ..names.ops import unyank, yank

    store = need_store(args)
    name, version = parse_tag(args.release)
    if args.command == "yank":
        changed = run(lambda: yank(store, args.release, args.reason or ""), store)
    else:
        changed = run(lambda: unyank(store, args.release, args.reason or ""), store)
    emit(args, "", {"name": name, "version": version, "changed": changed})
    state = "yanked" if args.command == "yank" else "not yanked"
    info(args, f"{name}@{version} {'is now' if changed else 'already was'} {state}")
    return 0


def cmd_channel_set(args: argparse.Namespace) -> int:
    from ..names.ops import channel_set

    store = need_store(args)
    e = run(
        lambda: channel_set(
            store,
            args.target,
            args.ref,
            expect=args.expect,
            expect_seq=args.expect_seq,
            message=args.message or "",
        ),
        store,
    )
    emit(args, e.id, {"entry": e.to_json()})
    info(args, f"{e.name}@{e.channel} -> {e.id[:12]} (move #{e.seq})")
    return 0


def _move_number(value: str) -> int:
    """``--expect-seq``: a move number, refused while parsing (exit status 2)."""
    import argparse

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a move number: {value!r}") from None
    if not 0 <= n < 999_999_999_999:
        raise argparse.ArgumentTypeError(f"a move number is 0 or more, not {n}")
    return n


def cmd_channel_log(args: argparse.Namespace) -> int:
    from ..names.ops import channel_log

    store = need_store(args)
    log = run(lambda: channel_log(store, args.target), store)
    if args.json:
        emit_json({"log": [e.to_json() for e in log]})
    else:
        sys.stdout.write(
            "\n".join(
                f"#{e.seq}  {e.id[:12]}  {e.version or '-':<12} {e.created}  {e.by}"
                + (f"  {e.message}" if e.message else "")
                for e in log
            )
            + "\n"
        )
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from ..names.lockfile import lock, lock_check, write_lock

    path = args.output
    MODE.context["path"] = path
    if args.check:
        if args.specs:
            raise UsageError("snapdir lock --check takes no refs", code="INVALID_ARGUMENT")
        problems = run(lambda: lock_check(path, pre=args.pre), *_lock_stores(path))
        if args.json:
            emit_json({"path": path, "problems": problems, "entries": []})
        for p in problems:
            warn(f"{p['ref']} ({p['store']}): {p['problem']}: locked {str(p['locked'])[:12]}"
                 + (f", now {str(p['now'])[:12]}" if p["now"] else ""))  # fmt: skip
        if problems:
            return NO
        info(args, f"{path} is current")
        return 0
    if not args.specs:
        raise UsageError("snapdir lock: give at least one REF", code="INVALID_ARGUMENT")
    store = _store(args)
    doc = run(lambda: lock(store, args.specs, pre=args.pre), *([store] if store else []))
    write_lock(doc, path)
    entries: list[Any] = doc["entries"]  # type: ignore[assignment]
    if args.json:
        emit_json({"path": path, "entries": entries, "problems": []})
    info(args, f"wrote {path} ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'})")
    return 0


def _lock_stores(path: str) -> list[str]:
    try:
        from ..names.lockfile import read_lock

        return [str(e["store"]) for e in read_lock(path)]
    except Exception:  # reported by the check itself
        return []


LOGIN_JSON = {
    "store": "the account the credentials are kept under (scheme://bucket)",
    "changed": "false when logout found nothing kept",
}


def cmd_login(args: argparse.Namespace) -> int:
    from ..names.login import login, logout

    if args.command == "login":
        if args.secret_stdin and args.secret_file:
            raise UsageError("snapdir login: --secret-stdin or --secret-file, not both")
        if args.uri.startswith("gs://"):
            return _login_gcs(args)
        if not args.key_id:
            raise UsageError(
                "snapdir login: an S3 or B2 login needs --key-id", code="INVALID_ARGUMENT"
            )
        if args.secret_file:
            with open(args.secret_file) as f:
                secret = f.readline().rstrip("\n")
        elif args.secret_stdin:
            secret = sys.stdin.readline().rstrip("\n")
        else:
            import getpass

            secret = getpass.getpass(f"secret for {args.uri}: ")
        store = login(args.uri, args.key_id, secret)
        emit(args, "", {"store": store, "changed": True})
        info(args, f"credentials for {store} kept in the OS keyring")
    else:
        store, changed = logout(args.uri)
        emit(args, "", {"store": store, "changed": changed})
        info(args, f"{'removed the' if changed else 'no'} credentials for {store}")
    return 0


def _login_gcs(args: argparse.Namespace) -> int:
    """``login gs://bucket``: keep a service-account key file's content (read whole from
    --secret-file or stdin; never from a prompt, it is many lines)."""
    from ..names.login import MAX_SERVICE_ACCOUNT, login

    if args.key_id:
        raise UsageError(
            "snapdir login gs://...: no --key-id (the key file names its account)",
            code="INVALID_ARGUMENT",
        )
    if args.secret_file:
        with open(args.secret_file) as f:
            text = f.read(MAX_SERVICE_ACCOUNT + 1)
    elif args.secret_stdin:
        text = sys.stdin.read(MAX_SERVICE_ACCOUNT + 1)
    else:
        raise UsageError(
            "snapdir login gs://...: give the service-account key file with --secret-file "
            "FILE (or on stdin with --secret-stdin)",
            code="INVALID_ARGUMENT",
        )
    store = login(args.uri, "", text)
    emit(args, "", {"store": store, "changed": True})
    info(args, f"service-account key for {store} kept in the OS keyring")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add this module's commands to the CLI's sub-parsers."""
    from ._common import add_command, add_group

    p = add_command(
        sub,
        "tag",
        common,
        json=TAG_JSON,
        help="name a snapshot with an immutable version (name@1.2.3)",
        description="Give snapshot REF (an id, a unique prefix of 8+ hex digits, or another "
        "name) the release NAME@VERSION. A version is never moved: the same id again is a "
        "no-op, another id exits 3 (conflict) and changes nothing.",
    )
    p.add_argument("ref", metavar="REF", help="the snapshot: id, prefix or name ref")
    p.add_argument("release", metavar="NAME@VERSION", help="e.g. cal-kit@1.3.0 (semver)")
    store_arg(p)
    p.add_argument("-m", "--message", metavar="MSG", help="a note kept in the release record")
    p.set_defaults(handler=cmd_tag)

    p = add_command(
        sub,
        "resolve",
        common,
        json=RESOLVE_JSON,
        help="print the snapshot id a ref names (name@^1.2, name@stable, ...)",
        description="Resolve REF: an id, a unique prefix, name@1.2.3, name@SPEC "
        "(== != >= <= > < ~= ^ ~, 1.2.*, comma = and), name@channel, name (its highest "
        "release), or URI#REF. One listing and at most one read.",
    )
    p.add_argument("spec", metavar="REF", help="what to resolve")
    store_arg(p, required=False)
    p.add_argument("--pre", action="store_true", help="let ranges choose prereleases")
    p.set_defaults(handler=cmd_resolve)

    p = add_command(
        sub,
        "refs",
        common,
        json=REFS_JSON,
        help="list a store's names: versions and channels",
        description="List the names of the store (or NAME's): versions in ascending "
        "precedence with their ids, and where each channel points.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="only this name")
    store_arg(p)
    p.add_argument("--yanked", action="store_true", help="also list yanked versions")
    p.set_defaults(handler=cmd_refs)

    for name, help_, desc in (
        (
            "yank",
            "yank a release: ranges skip it, an exact pin still resolves it",
            "Mark NAME@VERSION yanked (PEP 592): ranges and bare names no longer choose it; "
            "name@==VERSION still resolves, with a warning. Nothing is deleted.",
        ),
        (
            "unyank",
            "undo a yank",
            "Make a yanked NAME@VERSION eligible again (a newer marker: the history stays).",
        ),
    ):
        p = add_command(sub, name, common, json=YANK_JSON, help=help_, description=desc)
        p.add_argument("release", metavar="NAME@VERSION", help="the release")
        store_arg(p)
        p.add_argument(
            "--reason",
            metavar="TEXT",
            required=name == "yank",
            help="why (kept in the marker; shown when an exact pin resolves it)",
        )
        p.set_defaults(handler=cmd_yank)

    actions = add_group(
        sub,
        "channel",
        common,
        help="move a channel (name@stable) or print its log",
        description="A channel is a movable pointer (cal-kit@stable) whose every move is kept: "
        "set moves it (with --expect: a compare-and-swap), log prints the moves.",
    )
    p = add_command(
        actions,
        "set",
        common,
        json=CHANNEL_SET_JSON,
        help="point a channel at a snapshot",
        description="Point NAME@CHANNEL at REF (a create-only write of its next move). With "
        "--expect REF: only if it points at that snapshot now and nobody moves it meanwhile, "
        "else exit 3. With --expect-seq N: only if its newest move is #N (see channel log), "
        "a compare-and-swap on the move number that also sees a move away and back. The id "
        "is printed; the move's number is in the JSON entry (seq) and on stderr.",
    )
    p.add_argument("target", metavar="NAME@CHANNEL", help="e.g. cal-kit@stable")
    p.add_argument("ref", metavar="REF", help="the snapshot to point at (id, prefix, name ref)")
    store_arg(p)
    p.add_argument("--expect", metavar="REF", help="the snapshot it must point at now")
    p.add_argument(
        "--expect-seq",
        type=_move_number,
        metavar="N",
        help="the move it must be at now (its #N in channel log; 0: the channel must not "
        "exist yet): this write becomes move N+1 or nothing (exit 3). Unlike --expect, a "
        "channel moved A->B->A meanwhile is seen to have moved",
    )
    p.add_argument("-m", "--message", metavar="MSG", help="a note kept in the move")
    p.set_defaults(handler=cmd_channel_set)
    p = add_command(
        actions,
        "log",
        common,
        json=CHANNEL_LOG_JSON,
        help="every move of a channel, newest first",
        description="Print every move of NAME@CHANNEL, newest first: sequence number, id, "
        "version, time, who, message.",
    )
    p.add_argument("target", metavar="NAME@CHANNEL", help="e.g. cal-kit@stable")
    store_arg(p)
    p.set_defaults(handler=cmd_channel_log)

    p = add_command(
        sub,
        "lock",
        common,
        json=LOCK_JSON,
        help="pin refs to content ids in a lockfile; --check it",
        description="Resolve each REF and write a lockfile pinning its content id, store "
        "and release record (pull --locked reads it). With --check, resolve the lockfile's "
        "refs again: exit 1 if one now names another snapshot or a locked release is "
        "yanked.",
    )
    p.add_argument("specs", nargs="*", metavar="REF", help="refs to pin (name@^1.2, ...)")
    store_arg(p, required=False)
    p.add_argument(
        "-o", "--output", default="snapdir.lock", metavar="FILE", help="(default snapdir.lock)"
    )
    p.add_argument("--check", action="store_true", help="check FILE instead of writing it")
    p.add_argument("--pre", action="store_true", help="let ranges choose prereleases")
    p.set_defaults(handler=cmd_lock)

    p = add_command(
        sub,
        "login",
        common,
        json=LOGIN_JSON,
        help="keep a store's credentials in the OS keyring",
        description="Keep the key id and secret for the store's bucket (S3, B2), or a "
        "service-account key file (GCS), in the OS keyring (the [keyring] extra). Commands "
        "use them when the environment has none (order: environment "
        "(GOOGLE_APPLICATION_CREDENTIALS for GCS) > keyring > the SDK's own chain); they "
        "are never written to a store, a record, a file or output. The S3/B2 secret is read "
        "from a prompt, from stdin (--secret-stdin) or from a file (--secret-file); a GCS "
        "key file from --secret-file or stdin, checked before it is kept.",
    )
    p.add_argument(
        "uri", metavar="URI", help="the store (s3://bucket/..., b2://bucket/..., gs://bucket/...)"
    )
    p.add_argument(
        "--key-id", metavar="ID", help="access key id (S3) / key id (B2); required for them"
    )
    p.add_argument("--secret-stdin", action="store_true", help="read the secret from stdin")
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="read the secret from FILE's first line (GCS: the whole service-account key file)",
    )
    p.set_defaults(handler=cmd_login)

    p = add_command(
        sub,
        "logout",
        common,
        json=LOGIN_JSON,
        help="remove a store's key pair from the OS keyring",
        description="Remove what login kept for the store's bucket.",
    )
    p.add_argument("uri", metavar="URI", help="the store")
    p.set_defaults(handler=cmd_login)
