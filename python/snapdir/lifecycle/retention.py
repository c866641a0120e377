"""Retention policies for ``snapdir forget``, with the semantics of ``restic forget``.

Why restic's: it is what users of snapshot tools already know (``--keep-daily 7`` means the
same thing in both tools), and its rules are precise enough to be checked against restic
itself — the test suite runs the real ``restic forget --dry-run --json`` on the same
timestamps and compares the kept sets and the reasons. The rules, as restic 0.14 applies them
(``internal/restic/snapshot_policy.go``):

* Snapshots are split into groups (by host and path unless ``group_by`` says otherwise) and
  each group is judged on its own, newest first.
* ``last``, ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly`` each keep the newest
  snapshot of each of the N most recent hours/days/ISO weeks/months/years *that have a
  snapshot* (calendar buckets in the offset the time was recorded with).
* ``within`` keeps everything newer than the group's newest snapshot minus the duration;
  ``within_hourly`` … ``within_yearly`` keep one snapshot per bucket inside that window.
  "Newest" ignores snapshots later than ``now`` (a clock that ran ahead cannot pin the window).
* ``keep_labels``: a snapshot carrying every label of one of the lists is kept (the lists
  keep their order, which the reason repeats).
* A snapshot is kept if any rule keeps it; with no rule at all, everything is kept.

snapdir adds one rule restic does not have: a snapshot that holds a release name is
``protected`` and kept whatever the time rules say (a published release is never retired by
a schedule). Durations subtract calendar units first and then hours, exactly as Go's
``time.AddDate`` followed by ``Add`` does (``2021-03-31`` minus one month is ``2021-03-03``,
because February 31st normalises forward), so month-end windows match restic to the second.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .._errors import InvalidArgumentError

__all__ = ["Decision", "Duration", "Policy", "Snapshot", "apply_policy", "group_key"]

_DURATION_PART = re.compile(r"(-?[0-9]+)([ymdh])")
GROUP_FIELDS = ("host", "path", "label")


@dataclass(frozen=True)
class Duration:
    """A calendar duration as restic writes it: ``1y5m7d2h`` (years, months, days, hours)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``[N y][N m][N d][N h]`` in any order (a unit given twice: the last wins, as
        in restic). Raises :class:`InvalidArgumentError` naming the text otherwise."""
        s = text.strip()
        if not s:
            raise InvalidArgumentError(f"invalid duration {text!r}: it is empty")
        values = {"y": 0, "m": 0, "d": 0, "h": 0}
        pos = 0
        while pos < len(s):
            m = _DURATION_PART.match(s, pos)
            if m is None:
                raise InvalidArgumentError(
                    f"invalid duration {text!r}: expected a number and a unit (y, m, d or h) "
                    f"at {s[pos:]!r}, e.g. 1y6m, 7d or 36h"
                )
            values[m.group(2)] = int(m.group(1))
            pos = m.end()
        return cls(values["y"], values["m"], values["d"], values["h"])

    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def before(self, t: datetime) -> datetime:
        """``t`` minus this duration, the way Go's ``AddDate(-y, -m, -d).Add(-h)`` does it."""
        return _go_add_date(t, -self.years, -self.months, -self.days) - timedelta(hours=self.hours)

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{u}" for n, u in parts if n) or "0h"


def _go_add_date(t: datetime, years: int, months: int, days: int) -> datetime:
    """Go's ``time.AddDate``: add to the year, month and day fields, then normalise (a day
    past the month's end rolls into the next month), keeping the clock time and offset."""
    month0 = t.month - 1 + months
    year = t.year + years + month0 // 12
    first = t.replace(year=year, month=month0 % 12 + 1, day=1)
    return first + timedelta(days=t.day - 1 + days)


@dataclass(frozen=True)
class Snapshot:
    """What retention needs to know of one journalled snapshot. ``time`` must be
    timezone-aware (store time, with the offset it was recorded in)."""

    key: str
    time: datetime
    host: str = ""
    path: str = ""
    labels: frozenset[str] = frozenset()
    protected: bool = False

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise InvalidArgumentError(f"snapshot {self.key}: its time has no time zone")


@dataclass(frozen=True)
class Policy:
    """Which snapshots ``forget`` keeps; see the module docstring for each rule."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration = Duration()
    within_hourly: Duration = Duration()
    within_daily: Duration = Duration()
    within_weekly: Duration = Duration()
    within_monthly: Duration = Duration()
    within_yearly: Duration = Duration()
    keep_labels: tuple[tuple[str, ...], ...] = ()
    group_by: tuple[str, ...] = ("host", "path")

    def __post_init__(self) -> None:
        for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"--keep-{name} must not be negative")
        for g in self.group_by:
            if g not in GROUP_FIELDS:
                raise InvalidArgumentError(
                    f"unknown grouping {g!r} (use a comma list of {', '.join(GROUP_FIELDS)})"
                )

    def is_empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        windows = (
            self.within,
            self.within_hourly,
            self.within_daily,
            self.within_weekly,
            self.within_monthly,
            self.within_yearly,
        )
        return not any(counts) and all(w.is_zero() for w in windows) and not self.keep_labels


@dataclass(frozen=True)
class Decision:
    """The verdict on one snapshot: kept or not, and every rule that kept it (restic's
    wording, so a user can compare the two tools' reports line by line)."""

    snapshot: Snapshot
    keep: bool
    reasons: tuple[str, ...] = field(default=())


def _hour(t: datetime, _nr: int) -> int:
    return t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour


def _day(t: datetime, _nr: int) -> int:
    return t.year * 10_000 + t.month * 100 + t.day


def _week(t: datetime, _nr: int) -> int:
    iso = t.isocalendar()
    return iso[0] * 100 + iso[1]


def _month(t: datetime, _nr: int) -> int:
    return t.year * 100 + t.month


def _year(t: datetime, _nr: int) -> int:
    return t.year


def _always(_t: datetime, nr: int) -> int:
    return nr


Bucketer = Callable[[datetime, int], int]


def group_key(s: Snapshot, group_by: Sequence[str]) -> tuple[str, ...]:
    """The group a snapshot belongs to (restic's ``--group-by``)."""
    parts = []
    for g in group_by:
        if g == "host":
            parts.append(s.host)
        elif g == "path":
            parts.append(s.path)
        else:
            parts.append(",".join(sorted(s.labels)))
    return tuple(parts)


def apply_policy(snapshots: Iterable[Snapshot], policy: Policy, *, now: datetime) -> list[Decision]:
    """Judge every snapshot; the result is grouped, each group newest first (ties keep the
    input order, as restic's stable sort does). ``now`` is the store's time: a snapshot dated
    after it does not count as the newest."""
    groups: dict[tuple[str, ...], list[Snapshot]] = {}
    for s in snapshots:
        groups.setdefault(group_key(s, policy.group_by), []).append(s)
    out: list[Decision] = []
    for key in sorted(groups):
        out.extend(_apply_group(groups[key], policy, now))
    return out


def _apply_group(group: list[Snapshot], p: Policy, now: datetime) -> list[Decision]:
    ordered = sorted(group, key=lambda s: s.time, reverse=True)  # stable: ties keep order
    if p.is_empty():
        return [
            Decision(
                s, True, ("protected (release name)",) if s.protected else ("policy is empty",)
            )
            for s in ordered
        ]
    counts: list[tuple[int, Bucketer, str]] = [
        (p.last, _always, "last snapshot"),
        (p.hourly, _hour, "hourly snapshot"),
        (p.daily, _day, "daily snapshot"),
        (p.weekly, _week, "weekly snapshot"),
        (p.monthly, _month, "monthly snapshot"),
        (p.yearly, _year, "yearly snapshot"),
    ]
    remaining = [c for c, _, _ in counts]
    last_bucket = [-1] * len(counts)
    windows: list[tuple[Duration, Bucketer, str]] = [
        (p.within_hourly, _hour, "hourly within"),
        (p.within_daily, _day, "daily within"),
        (p.within_weekly, _week, "weekly within"),
        (p.within_monthly, _month, "monthly within"),
        (p.within_yearly, _year, "yearly within"),
    ]
    window_last = [-1] * len(windows)
    candidates = [s.time for s in ordered if s.time < now]
    latest = max(candidates) if candidates else None

    def inside(d: Duration, t: datetime) -> bool:
        # restic measures from the newest snapshot that is not in the future; with none,
        # from the zero time, so that every snapshot is inside.
        return latest is None or t > d.before(latest)

    decisions = []
    for nr, s in enumerate(ordered):
        reasons: list[str] = []
        if s.protected:
            reasons.append("protected (release name)")
        for labels in p.keep_labels:
            # restic's HasTags: every label of the list; an empty label matches "no labels"
            if all(lb in s.labels or (lb == "" and not s.labels) for lb in labels):
                reasons.append(f"has labels [{', '.join(labels)}]")
        if not p.within.is_zero() and inside(p.within, s.time):
            reasons.append(f"within {p.within}")
        for i, (_, bucket_of, why) in enumerate(counts):
            if remaining[i] > 0:
                b = bucket_of(s.time, nr)
                if b != last_bucket[i]:
                    last_bucket[i] = b
                    remaining[i] -= 1
                    reasons.append(why)
        for i, (d, bucket_of, why) in enumerate(windows):
            if not d.is_zero() and inside(d, s.time):
                b = bucket_of(s.time, nr)
                if b != window_last[i]:
                    window_last[i] = b
                    reasons.append(f"{why} {d}")
        decisions.append(Decision(s, bool(reasons), tuple(reasons)))
    return decisions
