"""The README's examples run as tests, so they cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["SNAPDIR_NO_PROGRESS"] = "1"
    return env


def test_python_example_runs() -> None:
    (code,) = _blocks("python")
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=_env()
    )
    assert r.returncode == 0, r.stderr
    snap_id, _, stats = r.stdout.strip().partition(" ")
    assert re.fullmatch(r"[0-9a-f]{64}", snap_id), r.stdout
    assert stats.startswith("SizeStats(logical_bytes=")


def test_setup_command_one_runs(tmp_path: Path) -> None:
    setup = _blocks("sh")[0]
    (line,) = [ln for ln in setup.splitlines() if ln.startswith("pip install . && ")]
    command = line.removeprefix("pip install . && ")  # the package is installed already
    (tmp_path / "python").symlink_to(ROOT / "python")
    r = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, env=_env()
    )
    assert r.returncode == 0, r.stderr
    assert "pushed, pulled and verified" in r.stdout
    assert (tmp_path / ".demo-store" / ".manifests").is_dir()


def test_setup_command_two_is_what_ci_runs() -> None:
    setup = _blocks("sh")[0]
    (line,) = [ln for ln in setup.splitlines() if ln.startswith("pip install -e ")]
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, test = line.partition(" && ")
    assert install in ci
    assert test in ci


def test_ci_example_runs(tmp_path: Path) -> None:
    ci_block = _blocks("sh")[1]
    build = tmp_path / "build"
    (build / "sub").mkdir(parents=True)
    (build / "a.txt").write_text("a\n")
    (build / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    store = tmp_path / "store"
    script = "\n".join(
        ln
        for ln in ci_block.replace("/srv/snapshots", str(store)).splitlines()
        if "s3://" not in ln  # the cloud line runs against a real S3 server in its own tests
    )
    r = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=_env()
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "restore" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 40
    assert '"ok": true' in r.stdout
