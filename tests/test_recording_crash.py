"""kill -9 of the recorder: the live recording reads back (its chain verified) and replays
with every event older than about a second (a short run of
scripts/record_kill_trials.py; the full 50 trials are run by hand, see docs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "record_kill_trials.py"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("record_kill_trials", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["record_kill_trials"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_kill_9_keeps_everything_older_than_a_second(tmp_path: Path, seed: int) -> None:
    r = _script().trial(tmp_path, seed)
    assert r["ok"], r
    assert r["events_replayed"] >= 1
