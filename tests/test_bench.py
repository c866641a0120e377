"""The benchmark harness checks itself: ``benches/bench.py --self-test-only``.

The benchmark is too long for the test suite, so its own checks run here instead: the tree
generator (determinism, block-wise large files, stamps), the measuring launcher (exit codes,
signals, peak RSS, timeouts), the tables and target verdicts, the 1 % change of the
incremental pull (apply, detect, repair), the command of every tool x operation, and the
option defaults.  No snapdir, peer or server is needed, and it takes a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benches" / "bench.py"


def test_bench_harness_self_test_passes() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--self-test-only"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "self-test: " in out.stdout
    assert ", 0 failed" in out.stdout
