"""Retention has restic's semantics: the same timestamps, hosts, paths and labels, judged by
our policy engine and by the real ``restic forget --dry-run --json``, give the same kept set
and the same reasons, over every rule, on timelines chosen for their edges (ISO week 53,
leap days, month ends where Go's date arithmetic normalises, hour boundaries, snapshots
newer than the clock)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from snapdir import InvalidArgumentError
from snapdir.lifecycle import Duration, Policy, Snapshot, apply_policy

UTC = timezone.utc
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # after every timeline; restic uses its own clock


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def _timelines() -> list[tuple[str, str, list[tuple[datetime, frozenset[str]]]]]:
    """(host, timeline name, [(time, labels)]) — deterministic, distinct times per group."""
    rnd = random.Random(20261207)
    out: list[tuple[str, str, list[tuple[datetime, frozenset[str]]]]] = []

    def labels() -> frozenset[str]:
        return frozenset(rnd.sample(["nightly", "release", "ci"], rnd.randint(0, 2)))

    # Hourly-ish across a month end and a day change.
    t = _t("2021-06-29T20:00:00")
    hourly: list[tuple[datetime, frozenset[str]]] = []
    for _ in range(28):
        t += timedelta(minutes=rnd.randint(20, 150))
        hourly.append((t, labels()))
    out.append(("h1", "hourly", hourly))
    # Days with gaps across New Year 2020/21 (2020 has an ISO week 53).
    t = _t("2020-12-01T09:30:00")
    daily: list[tuple[datetime, frozenset[str]]] = []
    while len(daily) < 30:
        t += timedelta(hours=rnd.choice([5, 13, 24, 24, 30, 49, 75]), minutes=rnd.randint(0, 59))
        daily.append((t, labels()))
    out.append(("h1", "daily", daily))
    # Years, across the leap day 2020-02-29.
    years = [
        (_t(s), labels())
        for s in [
            "2017-12-31T23:59:00",
            "2018-01-01T00:01:00",
            "2018-06-15T12:00:00",
            "2019-02-28T10:00:00",
            "2019-03-01T10:00:00",
            "2019-12-30T08:00:00",
            "2020-02-28T10:00:00",
            "2020-02-29T10:00:00",
            "2020-03-01T10:00:00",
            "2020-12-31T10:00:00",
            "2021-01-03T10:00:00",
            "2021-01-04T10:00:00",
            "2021-02-28T22:00:00",
            "2022-01-02T10:00:00",
            "2022-07-04T10:00:00",
            "2023-01-01T10:00:00",
            "2023-12-31T10:00:00",
            "2024-02-29T10:00:00",
        ]
    ]
    out.append(("h1", "years", years))
    # Month ends: the newest is 2021-03-31, and one month before it is 2021-03-03 in Go.
    ends: list[tuple[datetime, frozenset[str]]] = [
        (_t(s), frozenset())
        for s in [
            "2021-01-31T12:00:00",
            "2021-02-27T12:00:00",
            "2021-02-28T12:00:00",
            "2021-03-02T23:00:00",
            "2021-03-03T11:00:00",
            "2021-03-03T13:00:00",
            "2021-03-04T01:00:00",
            "2021-03-17T12:00:00",
            "2021-03-30T12:00:00",
            "2021-03-31T12:00:00",
        ]
    ]
    out.append(("h1", "month-ends", ends))
    # The same path from a second host (its own group), and one snapshot dated ahead of the
    # clock in a third group (it must not become "the newest" for within rules).
    other = [(t + timedelta(minutes=7), lb) for t, lb in daily[::3]]
    out.append(("h2", "daily", other))
    future: list[tuple[datetime, frozenset[str]]] = [
        (_t("2021-05-01T10:00:00"), frozenset()),
        (_t("2021-05-20T10:00:00"), frozenset()),
    ]
    future.append((_t("2099-01-01T00:00:00"), frozenset()))
    out.append(("h3", "future", future))
    return out


# (restic flags, our policy)
POLICIES: list[tuple[list[str], Policy]] = [
    (["--keep-last", "3"], Policy(last=3)),
    (["--keep-hourly", "5"], Policy(hourly=5)),
    (["--keep-daily", "4"], Policy(daily=4)),
    (["--keep-weekly", "3"], Policy(weekly=3)),
    (["--keep-monthly", "2"], Policy(monthly=2)),
    (["--keep-yearly", "3"], Policy(yearly=3)),
    (["--keep-last", "1", "--keep-daily", "3", "--keep-weekly", "2"], Policy(1, daily=3, weekly=2)),
    (
        ["--keep-hourly", "2", "--keep-monthly", "3", "--keep-yearly", "10"],
        Policy(hourly=2, monthly=3, yearly=10),
    ),
    (["--keep-within", "2d"], Policy(within=Duration(days=2))),
    (["--keep-within", "1m"], Policy(within=Duration(months=1))),
    (["--keep-within", "1y2m3d4h"], Policy(within=Duration(1, 2, 3, 4))),
    (["--keep-within", "30h"], Policy(within=Duration(hours=30))),
    (["--keep-within-hourly", "10h"], Policy(within_hourly=Duration(hours=10))),
    (["--keep-within-daily", "7d"], Policy(within_daily=Duration(days=7))),
    (["--keep-within-weekly", "1m"], Policy(within_weekly=Duration(months=1))),
    (["--keep-within-monthly", "1y"], Policy(within_monthly=Duration(years=1))),
    (["--keep-within-yearly", "3y"], Policy(within_yearly=Duration(years=3))),
    (["--keep-tag", "release"], Policy(keep_labels=(("release",),))),
    (
        ["--keep-tag", "release,ci", "--keep-last", "2"],
        Policy(last=2, keep_labels=(("release", "ci"),)),
    ),
    (
        ["--keep-daily", "2", "--keep-within-weekly", "2m", "--keep-tag", "nightly"],
        Policy(daily=2, within_weekly=Duration(months=2), keep_labels=(("nightly",),)),
    ),
    (["--keep-last", "2", "--group-by", "host"], Policy(last=2, group_by=("host",))),
    (["--keep-last", "2", "--group-by", ""], Policy(last=2, group_by=())),
    (["--keep-weekly", "2", "--group-by", "path"], Policy(weekly=2, group_by=("path",))),
]


@dataclass(frozen=True)
class _Repo:
    root: Path
    env: dict[str, str]
    snapshots: list[Snapshot]


@pytest.fixture(scope="module")
def restic_repo(tmp_path_factory: pytest.TempPathFactory) -> _Repo:
    restic = shutil.which("restic")
    if restic is None:
        pytest.skip("restic is not installed (Debian: apt-get install restic)")
    root = tmp_path_factory.mktemp("restic")
    env = dict(
        os.environ,
        RESTIC_REPOSITORY=str(root / "repo"),
        RESTIC_PASSWORD="retention-parity",
        RESTIC_CACHE_DIR=str(root / "cache"),
        TZ="UTC",
    )
    subprocess.run([restic, "init", "-q"], env=env, check=True, capture_output=True)
    jobs = []
    snaps = []
    for host, name, times in _timelines():
        src = root / "src" / name
        src.mkdir(parents=True, exist_ok=True)
        (src / "f").write_text(name)
        for t, labels in times:
            cmd = [restic, "backup", "-q", "--host", host, "--time", f"{t:%Y-%m-%d %H:%M:%S}"]
            for lb in sorted(labels):
                cmd += ["--tag", lb]
            jobs.append([*cmd, str(src)])
            snaps.append(Snapshot(f"{host}|{src}|{t.isoformat()}", t, host, str(src), labels))

    def run(cmd: list[str]) -> None:
        subprocess.run(cmd, env=env, check=True, capture_output=True)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, jobs))
    return _Repo(root, env, snaps)


def _restic_verdicts(repo: _Repo, flags: list[str]) -> dict[str, tuple[str, ...] | None]:
    """key -> restic's reasons for a kept snapshot, None for a removed one."""
    r = subprocess.run(
        ["restic", "forget", "--dry-run", "--json", "--no-lock", *flags],
        env=repo.env,
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, tuple[str, ...] | None] = {}
    for group in json.loads(r.stdout):
        reasons = {_key(kr["snapshot"]): tuple(kr["matches"]) for kr in group["reasons"] or []}
        for sn in group["keep"] or []:
            out[_key(sn)] = reasons[_key(sn)]
        for sn in group["remove"] or []:
            out[_key(sn)] = None
    return out


def _key(sn: dict[str, object]) -> str:
    t = datetime.fromisoformat(str(sn["time"]).replace("Z", "+00:00")).astimezone(UTC)
    paths = sn["paths"]
    assert isinstance(paths, list)
    assert len(paths) == 1
    return f"{sn['hostname']}|{paths[0]}|{t.isoformat()}"


def _ours(repo: _Repo, policy: Policy) -> dict[str, tuple[str, ...] | None]:
    out: dict[str, tuple[str, ...] | None] = {}
    for d in apply_policy(repo.snapshots, policy, now=NOW):
        reasons = tuple(r.replace("has labels", "has tags") for r in d.reasons)
        out[d.snapshot.key] = reasons if d.keep else None
    return out


@pytest.mark.parametrize(("flags", "policy"), POLICIES, ids=[" ".join(f) for f, _ in POLICIES])
def test_same_verdicts_as_restic_forget(
    restic_repo: _Repo, flags: list[str], policy: Policy
) -> None:
    theirs = _restic_verdicts(restic_repo, flags)
    ours = _ours(restic_repo, policy)
    assert set(ours) == set(theirs)
    diff = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    assert diff == {}
    # every policy keeps something and (except pure label rules) forgets something
    assert any(v is not None for v in ours.values())
    assert any(v is None for v in ours.values())


def test_parity_covers_at_least_forty_policy_timeline_cases() -> None:
    groups = {(h, n) for h, n, _ in _timelines()}
    assert len(POLICIES) * len(groups) >= 40


def test_a_protected_snapshot_is_kept_by_any_policy() -> None:
    t0 = _t("2024-01-01T00:00:00")
    snaps = [Snapshot(f"s{i}", t0 + timedelta(days=i)) for i in range(5)]
    snaps.append(Snapshot("release", t0 - timedelta(days=400), protected=True))
    verdict = {d.snapshot.key: d for d in apply_policy(snaps, Policy(last=1), now=NOW)}
    assert verdict["release"].keep
    assert verdict["release"].reasons == ("protected (release name)",)
    assert [k for k, d in verdict.items() if d.keep] == ["s4", "release"]


def test_an_empty_policy_keeps_everything() -> None:
    snaps = [Snapshot(f"s{i}", _t("2024-01-01T00:00:00") + timedelta(hours=i)) for i in range(3)]
    assert all(d.keep for d in apply_policy(snaps, Policy(), now=NOW))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1y5m7d2h", Duration(1, 5, 7, 2)),
        ("36h", Duration(hours=36)),
        ("2d1y", Duration(years=1, days=2)),
        (" 7d ", Duration(days=7)),
    ],
)
def test_durations_parse_as_restic_writes_them(text: str, want: Duration) -> None:
    assert Duration.parse(text) == want


@pytest.mark.parametrize("text", ["", "7", "d", "7w", "1.5d", "7dd", "1y-"])
def test_bad_durations_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid duration"):
        Duration.parse(text)


def test_month_arithmetic_normalises_like_go() -> None:
    assert Duration(months=1).before(_t("2021-03-31T12:00:00")) == _t("2021-03-03T12:00:00")
    assert Duration(years=1).before(_t("2024-02-29T10:00:00")) == _t("2023-03-01T10:00:00")
    assert Duration(months=13, hours=5).before(_t("2021-01-31T03:00:00")) == _t(
        "2019-12-30T22:00:00"
    )


def test_times_without_a_zone_and_bad_groupings_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="time zone"):
        Snapshot("x", datetime(2024, 1, 1))
    with pytest.raises(InvalidArgumentError, match="unknown grouping"):
        Policy(group_by=("tags",))
    with pytest.raises(InvalidArgumentError, match="negative"):
        Policy(daily=-1)
