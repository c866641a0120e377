"""The benchmark harness checks itself: ``benches/bench.py --self-test-only``.

The benchmark is too long for the test suite, so its own checks run here instead: the tree
generator (determinism, block-wise large files, stamps), the measuring launcher (exit codes,
signals, peak RSS, timeouts), the tables and target verdicts, the 1 % change of the
incremental pull (apply, detect, repair), the command of every tool x operation, and the
option defaults.  No snapdir, peer or server is needed for those, and they take a few
seconds.  The lifecycle area then checks itself end to end with a tiny store (25 journalled
snapshots on SeaweedFS, 3 restic snapshots) when snapdir, boto3, SeaweedFS and restic are at
hand, as in the development venv (required under SNAPDIR_TEST_NO_SKIP=1).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench.py"


@pytest.fixture(scope="module")
def self_test() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), "--self-test-only"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bench_harness_self_test_passes(self_test: subprocess.CompletedProcess[str]) -> None:
    assert self_test.returncode == 0, self_test.stdout + self_test.stderr
    assert "self-test: " in self_test.stdout
    assert ", 0 failed" in self_test.stdout


def test_lifecycle_area_checks_itself_end_to_end(
    self_test: subprocess.CompletedProcess[str],
) -> None:
    """The lifecycle area's self-test ran its tiny store through SeaweedFS and restic."""
    out = self_test.stdout
    lines = [line for line in out.splitlines() if line.startswith("self-test (lifecycle)")]
    assert lines, out + self_test.stderr
    assert not any("skipped" in line for line in lines), lines
    assert lines[-1].endswith(", 0 failed"), lines
