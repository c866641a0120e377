"""What a user downloads carries the licence the metadata claims, and the install steps the
README gives are the ones this project's build really takes."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_license_file_is_the_apache_license_the_metadata_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert re.search(r'^license = \{ text = "Apache-2.0" \}$', PYPROJECT, re.M)
    cargo = (ROOT / "Cargo.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"$', cargo, re.M)


def test_release_wheels_strip_the_extension() -> None:
    maturin = PYPROJECT[PYPROJECT.index("[tool.maturin]") :]
    maturin = maturin[: maturin.index("\n[", 1)]
    assert re.search(r"^strip = true$", maturin, re.M)
    assert re.search(r'^profile = "release"$', maturin, re.M)


def test_readme_prerequisites_name_the_msrv() -> None:
    msrv = re.search(r'^rust-version = "([0-9.]+)"$', (ROOT / "Cargo.toml").read_text(), re.M)
    assert msrv is not None
    readme = (ROOT / "README.md").read_text()
    assert f"Rust ≥ {msrv.group(1)}" in readme
    assert "Python ≥ 3.10" in readme
    requires = re.search(r'^requires-python = ">=([0-9.]+)"$', PYPROJECT, re.M)
    assert requires is not None
    assert requires.group(1) == "3.10"


def test_sdist_carries_the_license(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "maturin", "sdist", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    (sdist,) = tmp_path.glob("snapdir-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        assert f"{top}/LICENSE" in names
        member = tar.extractfile(f"{top}/LICENSE")
        assert member is not None
        assert member.read() == (ROOT / "LICENSE").read_bytes()
