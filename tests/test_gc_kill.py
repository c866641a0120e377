"""``kill -9`` of ``snapdir gc`` at random points (``scripts/gc_kill_trials.py``) in its CI
size: 10 trials on ``file://``. After each kill the store verifies from its roots, the next
``gc`` completes and nothing unreachable is left. The 100-trial run is made by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gc_kill_trials.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gc_kill_trials", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ten_kills_of_gc(tmp_path: Path) -> None:
    summary = _load_script().main(["--trials", "10", "--files", "120", "--snapshots", "4"])
    assert summary["trials"] == 10
    assert summary["store"]["manifests"] == 4  # the template's size follows the options
    assert summary["failed"] == [], summary["failed"]
    # The kills land on both sides of the sweep, not only before it starts.
    assert summary["left"]["none"] < 10
