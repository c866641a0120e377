"""A retention policy kept in the store, so that every client prunes alike.

Without it, each CI job or laptop that runs ``forget`` brings its own ``--keep-*`` flags,
and the store keeps whatever the most forgetful of them decided. ``snapdir policy set``
writes the policy once, in the store; ``forget --policy store`` applies it.

Layout (docs/format.md, "Retention policy"): an append-only log of create-only keys

``.snapdir/policy/<seq>``

with ``seq`` a 10-digit, zero-padded decimal from 0000000001. The policy in force is the
entry with the highest sequence number; its body is a small JSON object (``schema``,
``keep`` with restic's rule names, ``keep_labels``, ``group_by``, ``by``) — or
``{"schema": 1, "unset": true}`` for "no policy". Every change is a create-only write of
the next number, so two clients changing the policy at once cannot overwrite each other:
the loser of a race sees that its number was taken and writes the next one, and the log
keeps both, in order (``policy show --log``). Nothing is ever rewritten or deleted, which
is also why a client without delete permission can set a policy.

Entries read back are untrusted input: sizes are capped, every field is checked, and an
entry that fails names its key.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from .._errors import InvalidArgumentError, StoreError
from .._types import StoreUri
from ..stores._keys import KeyStore
from ._util import _open, _require_keys, _tool, _user
from .retention import GROUP_FIELDS, Duration, Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..stores import Store

__all__ = [
    "POLICY",
    "PolicyEntry",
    "get_policy",
    "policy_from_json",
    "policy_log",
    "policy_to_json",
    "set_policy",
]

POLICY = ".snapdir/policy/"
_SEQ = re.compile(r"[0-9]{10}")
_MAX_ENTRY = 64 * 1024
_MAX_SEQ = 10**10 - 1
_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_WINDOWS: tuple[str, ...] = (
    "within",
    "within_hourly",
    "within_daily",
    "within_weekly",
    "within_monthly",
)
_WINDOWS += ("within_yearly",)
_MAX_COUNT = 10**9
_MAX_LABELS = 64


class PolicyEntry:
    """One entry of the policy log: its sequence number, the store's time for it, who
    wrote it, and the policy (``None`` for an ``unset``)."""

    __slots__ = ("by", "key", "policy", "seq", "time")

    def __init__(self, seq: int, key: str, time: datetime, policy: Policy | None, by: str) -> None:
        self.seq = seq
        self.key = key
        self.time = time
        self.policy = policy
        self.by = by

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "by": self.by,
            "policy": None if self.policy is None else policy_to_json(self.policy),
        }

    def __repr__(self) -> str:
        return f"PolicyEntry({self.seq}, {self.policy!r})"


def policy_to_json(policy: Policy) -> dict[str, object]:
    """The policy as the JSON object the log stores (rules that are off are left out)."""
    keep: dict[str, object] = {}
    for name in _COUNTS:
        if getattr(policy, name):
            keep[name] = getattr(policy, name)
    for name in _WINDOWS:
        d: Duration = getattr(policy, name)
        if not d.is_zero():
            keep[name] = str(d)
    return {
        "keep": keep,
        "keep_labels": [list(group) for group in policy.keep_labels],
        "group_by": list(policy.group_by),
    }


def policy_from_json(obj: object, where: str) -> Policy:
    """Check and build a policy from its stored JSON; ``where`` names the key in errors."""

    def bad(why: str) -> StoreError:
        return StoreError(f"retention policy {where} is invalid: {why}")

    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    keep = obj.get("keep", {})
    labels = obj.get("keep_labels", [])
    group_by = obj.get("group_by", ["host", "path"])
    if not isinstance(keep, dict):
        raise bad("'keep' is not an object")
    unknown = set(keep) - set(_COUNTS) - set(_WINDOWS)
    if unknown:
        raise bad(f"unknown rule(s) {', '.join(sorted(map(str, unknown)))}")
    fields: dict[str, object] = {}
    for name in _COUNTS:
        value = keep.get(name, 0)
        if type(value) is not int or not 0 <= value <= _MAX_COUNT:
            raise bad(f"keep.{name} must be a count from 0 to {_MAX_COUNT}")
        fields[name] = value
    for name in _WINDOWS:
        value = keep.get(name, "0h")
        if not isinstance(value, str) or len(value) > 64:
            raise bad(f"keep.{name} must be a duration such as 7d")
        try:
            fields[name] = Duration.parse(value)
        except InvalidArgumentError as exc:
            raise bad(str(exc)) from None
    if (
        not isinstance(labels, list)
        or len(labels) > _MAX_LABELS
        or not all(
            isinstance(g, list)
            and 0 < len(g) <= _MAX_LABELS
            and all(isinstance(lb, str) and 0 < len(lb) <= 64 for lb in g)
            for g in labels
        )
    ):
        raise bad("'keep_labels' must be a list of lists of labels")
    if not isinstance(group_by, list) or not all(g in GROUP_FIELDS for g in group_by):
        raise bad(f"'group_by' must be a list of {', '.join(GROUP_FIELDS)}")
    try:
        return Policy(
            keep_labels=tuple(tuple(g) for g in labels),
            group_by=tuple(group_by),
            **fields,  # type: ignore[arg-type]
        )
    except InvalidArgumentError as exc:
        raise bad(str(exc)) from None


def _key(seq: int) -> str:
    return f"{POLICY}{seq:010d}"


def _keys(store: Store) -> KeyStore:
    return _require_keys(store, "a stored retention policy")


async def _listed(store: Store) -> list[tuple[int, str, datetime]]:
    ks = _keys(store)
    out: list[tuple[int, str, datetime]] = []
    for k in await ks.list_keys(POLICY):
        name = k.key[len(POLICY) :]
        if not _SEQ.fullmatch(name) or int(name) == 0:
            raise StoreError(
                f"{store.uri}: unexpected key {k.key!r} in the retention policy log "
                "(expected .snapdir/policy/ and a 10-digit sequence number)"
            )
        out.append((int(name), k.key, k.time))
    out.sort()
    return out


async def _read(store: Store, seq: int, key: str, time: datetime) -> PolicyEntry:
    ks = _keys(store)
    where = f"{store.uri} {key}"
    raw = await ks.get_bytes(key, max_size=_MAX_ENTRY)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise StoreError(f"retention policy {where} is not JSON") from None
    if not isinstance(obj, dict) or obj.get("schema") != 1:
        raise StoreError(f"retention policy {where}: unknown schema (expected 1)")
    by = obj.get("by", "")
    if not isinstance(by, str) or len(by) > 512:
        raise StoreError(f"retention policy {where}: 'by' must be a short string")
    if obj.get("unset") is True:
        return PolicyEntry(seq, key, time, None, by)
    return PolicyEntry(seq, key, time, policy_from_json(obj, where), by)


async def policy_log(store: str | StoreUri | Store) -> list[PolicyEntry]:
    """Every change of the stored policy, oldest first (one list, one GET per entry)."""
    st = _open(store)
    return [await _read(st, seq, key, t) for seq, key, t in await _listed(st)]


async def get_policy(store: str | StoreUri | Store) -> PolicyEntry | None:
    """The entry in force (the newest), or ``None`` when no policy was ever set. An entry
    whose policy is ``None`` means it was unset. Costs one list and one GET."""
    st = _open(store)
    listed = await _listed(st)
    if not listed:
        return None
    return await _read(st, *listed[-1])


async def set_policy(
    store: str | StoreUri | Store, policy: Policy | None, *, attempts: int = 100
) -> PolicyEntry:
    """Make ``policy`` the store's policy (``None``: unset it), by a create-only write of the
    next sequence number; a writer that loses the race for a number tries the next one.
    Returns the entry written."""
    import socket

    from ..stores._keys import ensure_create_only

    if policy is not None and policy.is_empty():
        raise InvalidArgumentError(
            "a stored policy needs at least one rule (--keep-last, --keep-daily, "
            "--keep-within, ...); use 'policy unset' to remove it"
        )
    st = _open(store)
    ks = _keys(st)
    # Sequence numbers are only a log if a taken number really is refused.
    await ensure_create_only(ks)
    by = f"{_user()}@{socket.gethostname()[:253]} ({_tool()})"
    body: dict[str, object] = {"schema": 1, "by": by}
    if policy is None:
        body["unset"] = True
    else:
        body.update(policy_to_json(policy))
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    listed = await _listed(st)
    seq = listed[-1][0] + 1 if listed else 1
    for _ in range(attempts):
        if seq > _MAX_SEQ:
            raise StoreError(f"{st.uri}: the retention policy log is full")
        if await ks.put_if_absent(_key(seq), data):
            for s, key, t in await _listed(st):
                if s == seq:
                    return PolicyEntry(seq, key, t, policy, by)
            raise StoreError(f"{st.uri}: policy entry {_key(seq)} vanished after it was written")
        seq += 1
    raise StoreError(f"{st.uri}: could not write the retention policy ({attempts} racing writers)")
