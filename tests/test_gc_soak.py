"""The soak (``scripts/gc_soak.py``) in its CI size, on every backend: 8 pushers sharing
about half their objects, a forgetter and a ``gc --grace 0`` loop for ~20 s; every
snapshot whose push reported success (and that was not forgotten) verifies, no object is
missing, and after everything but one snapshot is forgotten one ``gc`` frees at least
99 % of the unreachable bytes. The 10-minute runs are made by hand (the script)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest
from gcutil import BACKENDS, Backend, open_backend

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gc_soak.py"
SECONDS = 20.0


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Backend:
    """A fresh store factory on each backend (the loopback servers)."""
    return open_backend(str(request.param), request, monkeypatch, tmp_path)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gc_soak", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_soak(backend: Backend, tmp_path: Path) -> None:
    soak = _load_script().soak
    uri = backend.fresh()
    summary = anyio.run(lambda: soak(uri, SECONDS, tmp_path / "work"))
    assert summary["push_errors"] == [], summary
    assert summary["gc_errors"] == [], summary
    assert summary["broken_snapshots"] == [], summary
    assert summary["missing_objects"] == 0, summary
    assert summary["freed_fraction"] >= 0.99, summary
    assert summary["pushes"] >= 8, summary
    assert summary["gc_runs"] >= 2, summary
    assert summary["forgets"] >= 1, summary
    assert summary["deleted_objects"] >= 1, summary
    assert summary["ok"], summary
