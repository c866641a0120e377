"""kill -9 of the recorder: the live recording reads back (its chain verified) and replays
with every event older than about a second (a short run of
scripts/record_kill_trials.py; the full 50 trials are run by hand, see docs)."""

from __future__ import annotations

import importlib.util
import os
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


def test_a_killed_recorders_staging_directory_is_removed_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import tempfile

    from snapdir.recording.recorder import STAGING_PREFIX, staging_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its PID no longer exists
    dead = tmp_path / f"{STAGING_PREFIX}{gone.pid}-abc"
    (dead / "segment-1").parent.mkdir()
    (dead / "segment-1").write_bytes(b"scratch")
    live = tmp_path / f"{STAGING_PREFIX}1-live"  # PID 1 exists
    live.mkdir()
    odd = tmp_path / f"{STAGING_PREFIX}notapid"
    odd.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    link = tmp_path / f"{STAGING_PREFIX}{gone.pid}-link"
    link.symlink_to(target)

    fresh = Path(staging_dir())

    assert not dead.exists()
    assert live.is_dir()
    assert odd.is_dir()
    assert link.is_symlink()
    assert (target / "keep").read_text() == "x"
    assert fresh.parent == tmp_path
    assert fresh.name.startswith(f"{STAGING_PREFIX}{os.getpid()}-")
