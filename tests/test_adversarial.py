"""Every case of the adversarial corpus (``adversarial.py``) through verify, fetch,
checkout, pull (plain, then forced with delete) and sync.

For each case and operation: either a refusal with one of the case's error classes, whose
message names the snapshot, the store or the path involved, or a success whose result is
right (the destination holds exactly the snapshot, special bits dropped). Whatever the
outcome: nothing outside the destinations changed (the jail's sentinel, its planted links
and the directory they point at), no file over 1 MiB appeared anywhere (1 TB claims), no
special bit was set, no staging or temporary file was left, and the cache and the sync
target hold only objects that hash to their keys and manifests whose objects are all there.

Three groups run out of process: the two manifests of millions of lines (peak RSS and time
measured), the objects that never end or claim a terabyte (on a small tmpfs with a time
limit, so a regression fills 64 MiB and fails, not the disk), and a few cases against the
S3 server, written key by key with boto3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from adversarial import BY_NAME, MISSING, OPS, Case, Report, cases, run_case
from servers.seaweed import S3Server
from storeutil import cli_env, tmpfs

HERE = Path(__file__).parent

#: The heavy cases run at this fraction of their size by default (300 000 entries, 375 000
#: comment lines); the full size (2 000 000 / 2 500 000 lines) is
#: ``python tests/adversarial.py NAME DIR``, figures in docs/reliability.md.
HEAVY_SCALE = 0.15
#: Peak RSS allowed: a fixed base plus 1000 bytes per manifest line (measured: about 550
#: at full size, the text held twice plus parsed entries), so a per-line blow-up fails.
HEAVY_BASE_MIB = 200
HEAVY_BYTES_PER_LINE = 1000
HEAVY_MAX_SECONDS = 120


def check(case: Case, r: Report) -> None:
    """The rules of the corpus for one case's run (module docstring)."""
    for op in OPS:
        res = r.results[op]
        want = case.expected(op)
        if op == "checkout" and not r.results["fetch"].ok:
            want = want + MISSING  # nothing was cached to check out
        if not want:
            assert res.ok, f"{case.name}: {op} failed: {res.cls} ({res.code}): {res.message}"
            continue
        assert not res.ok, f"{case.name}: {op} succeeded; expected {[c.__name__ for c in want]}"
        assert "<not a SnapdirError>" not in res.mro, f"{case.name}: {op}: {res.message}"
        assert any(c.__name__ in res.mro for c in want), (
            f"{case.name}: {op} raised {res.cls} ({res.code}), expected one of "
            f"{[c.__name__ for c in want]}: {res.message}"
        )
        msg = res.message
        named = [r.sid.lower(), r.sid, r.uri, r.uri.removeprefix("file://"), *r.names]
        assert any(n and n in msg for n in named) or "/jail/dest-" in msg, (
            f"{case.name}: {op}: the message names neither the snapshot, the store nor a "
            f"path: {msg}"
        )
    assert not r.outside_changed, f"{case.name}: something outside the jail changed"
    assert r.jail_changed == [], f"{case.name}: changed next to the destinations"
    assert r.big_files == [], f"{case.name}: files over 1 MiB appeared"
    assert r.special_bits == [], f"{case.name}: special bits were applied"
    assert r.leftovers == [], f"{case.name}: staging or temporary files left"
    assert r.cache_problems == [], f"{case.name}: wrong content in the cache"
    assert r.synced_problems == [], f"{case.name}: wrong content in the sync target"
    for op, problems in r.dest_problems.items():
        assert problems == [], f"{case.name}: {op} gave a wrong tree"
    if not r.results["fetch"].ok:
        assert not r.cached, f"{case.name}: a refused snapshot is in the cache"
    if not r.results["sync"].ok:
        assert not r.synced, f"{case.name}: a refused snapshot is in the sync target"
    if not r.results["checkout"].ok:
        assert not r.dest_changed["checkout"], f"{case.name}: a refused checkout wrote"
    if not r.results["pull"].ok and not r.results["pull_force"].ok:
        assert not r.dest_changed["pull"], f"{case.name}: a refused pull wrote"


def test_the_corpus_is_large_and_covers_every_outcome() -> None:
    all_cases = list(cases())
    assert len(all_cases) >= 35
    assert any(not c.refuse for c in all_cases), "some cases must succeed safely"
    assert sum(1 for c in all_cases if c.refuse) >= 30


@pytest.fixture
def cache() -> Path:
    """The per-test cache ``conftest.py`` points ``$SNAPDIR_CACHE_DIR`` at."""
    return Path(os.environ["SNAPDIR_CACHE_DIR"])


IN_PROCESS = [c.name for c in cases(heavy=False) if not c.sandboxed]


@pytest.mark.parametrize("name", IN_PROCESS)
def test_case(name: str, tmp_path: Path, cache: Path) -> None:
    case = BY_NAME[name]
    check(case, run_case(case, tmp_path, cache))


def run_out_of_process(
    name: str, base: Path, timeout: float, scale: float = 1.0
) -> tuple[Report, dict[str, Any]]:
    """``python adversarial.py NAME BASE``; returns the report and the child's figures
    (peak RSS, wall time of the case)."""
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    proc = subprocess.run(
        [sys.executable, str(HERE / "adversarial.py"), name, str(base), f"--scale={scale}"],
        capture_output=True,
        text=True,
        cwd=HERE,
        env=cli_env(SNAPDIR_CACHE_DIR=None, PYTHONPATH=os.pathsep.join([str(HERE), *pythonpath])),
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report_line, figures_line = proc.stdout.strip().splitlines()[-2:]
    figures: dict[str, Any] = json.loads(figures_line)
    return Report.from_json(report_line), figures


@pytest.mark.parametrize("name", [c.name for c in cases() if c.sandboxed])
def test_endless_and_sparse_objects(name: str, tmp_path: Path) -> None:
    """On a 64 MiB tmpfs within 30 s: copying the terabyte (or /dev/zero) would hit the
    limit and fail with an I/O error, or time out — both fail the test."""
    with tmpfs(tmp_path / "fs", "64m") as fs:
        report, _ = run_out_of_process(name, fs, timeout=30)
        check(BY_NAME[name], report)


HEAVY_LINES = {"million-comments": 2_500_000, "million-entries-then-bad": 2_000_000}


@pytest.mark.parametrize("name", [c.name for c in cases(heavy=True)])
def test_manifest_of_millions_of_lines(name: str, tmp_path: Path) -> None:
    report, figures = run_out_of_process(
        name, tmp_path, timeout=HEAVY_MAX_SECONDS * 2, scale=HEAVY_SCALE
    )
    check(BY_NAME[name], report)
    lines = HEAVY_LINES[name] * HEAVY_SCALE
    rss_mib = figures["maxrss_kib"] / 1024
    bound = HEAVY_BASE_MIB + lines * HEAVY_BYTES_PER_LINE / 2**20
    assert rss_mib < bound, f"peak RSS {rss_mib:.0f} MiB for {lines:.0f} lines"
    assert figures["seconds"] < HEAVY_MAX_SECONDS, f"{figures['seconds']:.0f} s"


def test_heavy_line_counts_are_the_cases() -> None:
    assert set(HEAVY_LINES) == {c.name for c in cases(heavy=True)}


# --- the same against an S3 server ----------------------------------------------------------

S3_CASES = [
    "dotdot-alone",
    "size-1tb",
    "manifest-truncated",
    "object-swapped",
    "special-bits-everywhere",
]


@pytest.fixture(scope="module")
def s3_bucket(seaweedfs: S3Server) -> Iterator[tuple[S3Server, Any, str]]:
    client = seaweedfs.client()
    bucket = f"snapdir-adversarial-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    yield seaweedfs, client, bucket
    client.close()


@pytest.fixture
def s3_env(
    s3_bucket: tuple[S3Server, Any, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, str]:
    server, client, bucket = s3_bucket
    server.use_env(monkeypatch.setenv, monkeypatch.delenv)
    return client, bucket


def test_s3_cases_are_portable() -> None:
    assert all(BY_NAME[n].portable and not BY_NAME[n].heavy for n in S3_CASES)


@pytest.mark.parametrize("name", S3_CASES)
def test_case_on_s3(name: str, tmp_path: Path, cache: Path, s3_env: tuple[Any, str]) -> None:
    """The hostile keys are written with boto3, byte for byte as the local case lays them
    out; the operations read them through the S3 store."""
    client, bucket = s3_env
    prefix = f"adv-{uuid.uuid4().hex[:10]}"

    def upload(store: Path) -> str:
        keys = 0
        for dirpath, _, names in os.walk(store):
            for n in names:
                p = Path(dirpath) / n
                key = f"{prefix}/{p.relative_to(store).as_posix()}"
                client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
                keys += 1
        assert keys > 0
        return f"s3://{bucket}/{prefix}"

    check(BY_NAME[name], run_case(BY_NAME[name], tmp_path, cache, upload))
