"""Golden vectors from snapdir 1.12.0 (SPEC §1, §2): byte-for-byte manifest text and id."""

from __future__ import annotations

from pathlib import Path

import pytest
import reference
import snapdir
from golden import BACKENDS, GoldenCase, api_id, api_manifest, build_case, load_cases

CASES = load_cases()
IDS = [c.name for c in CASES]


def test_golden_file_has_cases() -> None:
    names = {c.name for c in CASES}
    assert {"empty-root", "basic", "ordering", "permissions", "binary-and-large"} <= names


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_ids_are_blake3_of_manifest_plus_newline(case: GoldenCase) -> None:
    assert reference.snapshot_id(case.manifest) == case.id


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_reproduces_golden(case: GoldenCase, tmp_path: Path) -> None:
    root = build_case(case, tmp_path / "root")
    text = reference.manifest_text(root)
    assert text == case.manifest
    assert reference.snapshot_id(text) == case.id
    assert reference.render(reference.parse(case.manifest)) == case.manifest


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_snapdir_manifest_reproduces_golden(case: GoldenCase, backend: str, tmp_path: Path) -> None:
    root = build_case(case, tmp_path / "root")
    m = api_manifest(root, backend)
    assert isinstance(m, snapdir.Manifest)
    assert m.raw == case.manifest
    assert m.id == case.id
    assert snapdir.id_from_manifest(m) == case.id


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_snapdir_id_reproduces_golden(case: GoldenCase, backend: str, tmp_path: Path) -> None:
    root = build_case(case, tmp_path / "root")
    assert api_id(root, backend) == case.id
    assert api_id(str(root), backend) == case.id


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parse_golden_manifest_round_trips(case: GoldenCase) -> None:
    m = snapdir.Manifest.parse(case.manifest)
    assert m.raw == case.manifest
    assert m.id == case.id
    assert snapdir.id_from_manifest(m) == case.id
    assert len(m) == len(case.manifest.split("\n"))
    expected = reference.parse(case.manifest)
    assert [
        (
            "D" if e.path_type == snapdir.PathType.Directory else "F",
            e.permissions,
            e.checksum,
            e.size,
            e.path,
        )
        for e in m.entries
    ] == [(e.kind, e.perms, e.checksum, e.size, e.path) for e in expected]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parse_golden_manifest_with_crlf_comments_and_shuffle(case: GoldenCase) -> None:
    lines = case.manifest.split("\n")
    noisy = "# a comment\r\n\r\n" + "\r\n".join(reversed(lines)) + "\r\n\r\n# trailing\r\n"
    m = snapdir.Manifest.parse(noisy)
    assert m.raw == case.manifest
    assert m.id == case.id
    assert snapdir.id_from_manifest(m) == case.id
