"""The fault campaign (``scripts/fault_campaign.py``) in its CI size.

The script starts SeaweedFS, fake-gcs-server and the B2 simulator on 127.0.0.1, pushes,
verifies and pulls a mixed tree (~150 files, two multi-MiB ones) through the fault proxy at a
15 % fault rate, compares the restored tree byte for byte and re-hashes every stored key past
the proxy. The full campaign (~2,000 files, 10 % and 20 %) is run by hand; its figures are
in docs/reliability.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from storeutil import cli_env

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fault_campaign.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_campaign", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_campaign_on_every_backend(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--rates",
            "0.15",
            "--retry-after",
            "0",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    results = json.loads(out.read_text())
    runs = results["runs"]
    assert [r["backend"] for r in runs] == ["s3", "gs", "b2"]
    for r in runs:
        summary = json.dumps(r)
        assert r["ok"], summary
        assert not r["error"], summary
        assert not r["problems"], summary
        assert set(r["phases"]) == {"push", "verify", "pull"}, summary
        injected = r["injected"]
        assert sum(injected.values()) >= 20, f"too few faults to mean anything: {summary}"
        assert len(injected) >= 5, f"too few kinds of fault: {summary}"
        # The faults were there to be ridden out: more attempts than a clean run needs.
        clean_minimum = results["tree"]["objects"] * 2  # an upload and a download each
        assert r["attempts"] > clean_minimum, summary


def test_the_checker_sees_a_changed_byte_and_mode(tmp_path: Path) -> None:
    """The byte-for-byte comparison the campaign relies on is not vacuous."""
    campaign = _load_script()
    a, b = tmp_path / "a", tmp_path / "b"
    campaign.make_tree(a, campaign.Size(files=40, big=(1000,)), seed=3)
    campaign.make_tree(b, campaign.Size(files=40, big=(1000,)), seed=3)
    assert campaign.compare_trees(a, b) == []
    target = next(p for p in sorted(b.rglob("*.bin")) if p.stat().st_size > 10)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    (b / "assets" / "big0.bin").chmod(0o600)
    (b / "extra").write_bytes(b"")
    problems = campaign.compare_trees(a, b)
    rel = str(target.relative_to(b))
    assert f"{rel}: bytes differ" in problems
    assert any(p.startswith("assets/big0.bin: mode") for p in problems), problems
    assert "extra: only in restore" in problems
