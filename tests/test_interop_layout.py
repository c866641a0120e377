"""``file://`` stores are interchangeable with snapdir 1.x (SPEC §4) for trees of regular
files and directories.

A store is laid out here by hand the way 1.x writes it — objects under
``.objects/abc/def/ghi/<rest>`` holding the plain file bytes (1.x keeps the source file's
mode on them), the manifest text plus one newline under ``.manifests/...`` — from the golden
vectors produced by snapdir 1.12.0, and we must read it. In the other direction, our push of
a golden tree must produce exactly the keys 1.x would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import snapdir
from golden import GoldenCase, build_case, content_bytes, load_cases, make_writable
from snapdir.stores import open_store
from storeutil import (
    BACKENDS,
    b3,
    content_state,
    files_below,
    journal_ids,
    manifest_rel,
    object_rel,
    run,
    run_cli,
    uri,
)

CASES = {c.name: c for c in load_cases()}


def lay_out_like_1x(case: GoldenCase, store: Path) -> None:
    """Write ``case`` into ``store`` as snapdir 1.x does, by hand."""
    for f in case.files:
        data = content_bytes(f["content"])
        obj = store / object_rel(b3(data))
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
        # 1.x keeps the source mode on objects (one of the differences we do not copy), so
        # objects in a 1.x store may be executable or private; reading must not care.
        os.chmod(obj, int(f["mode"], 8) & 0o777 | 0o400)
    m = store / manifest_rel(case.id)
    m.parent.mkdir(parents=True, exist_ok=True)
    m.write_bytes((case.manifest + "\n").encode())
    os.chmod(m, 0o644)


def expected_keys(case: GoldenCase) -> set[str]:
    keys = {manifest_rel(case.id)}
    for line in case.manifest.split("\n"):
        kind, _, checksum, _, _ = line.split(" ", 4)
        if kind == "F":
            keys.add(object_rel(checksum))
    return keys


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("name", sorted(CASES))
def test_expected_keys_match_the_hand_layout(tmp_path: Path, name: str) -> None:
    """Sanity of the oracle: the keys derived from the manifest are what the hand layout
    wrote (every object of a golden tree is named by an F line)."""
    case = CASES[name]
    lay_out_like_1x(case, tmp_path / "store")
    assert files_below(tmp_path / "store") == expected_keys(case)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_1x_store_is_pullable_and_verifiable(tmp_path: Path, backend: str, name: str) -> None:
    case = CASES[name]
    store = tmp_path / "store"
    lay_out_like_1x(case, store)
    dest = tmp_path / "dest"

    async def go() -> tuple[bool, list[str], str]:
        ok = await snapdir.verify(case.id, uri(store))
        await snapdir.pull(case.id, uri(store), dest, preserve_special_bits=True)
        listed = await open_store(uri(store)).list_manifests()
        return ok, listed, await snapdir.id(dest)

    ok, listed, pulled_id = run(go, backend)
    assert ok is True
    assert listed == [case.id]
    assert pulled_id == case.id
    for f in case.files:
        assert (dest / f["path"]).read_bytes() == content_bytes(f["content"])
    make_writable(dest)


def test_a_1x_store_with_the_cli(tmp_path: Path) -> None:
    case = CASES["basic"]
    store = tmp_path / "store"
    lay_out_like_1x(case, store)
    proc = run_cli("verify", "--store", uri(store), "--json")
    assert proc.returncode == 0, proc.stderr
    src = build_case(case, tmp_path / "src")
    same = run_cli("diff", "--from", f"{uri(store)}@{case.id}", "--to", str(src), "--exit-code")
    assert same.returncode == 0, (same.stdout, same.stderr)
    size = run_cli("size", "--store", uri(store), "--json")
    assert size.returncode == 0, size.stderr
    assert '"logical_bytes": 43' in size.stdout


def test_our_push_into_a_1x_store_is_a_no_op(tmp_path: Path) -> None:
    case = CASES["basic"]
    store = tmp_path / "store"
    lay_out_like_1x(case, store)
    before = content_state(store)
    src = build_case(case, tmp_path / "src")

    async def go() -> str:
        return await snapdir.push(src, uri(store))

    assert run(go) == case.id
    assert content_state(store) == before  # 1.x's keys untouched
    assert journal_ids(store) == [case.id]  # and the push is journalled beside them


@pytest.mark.parametrize("name", sorted(CASES))
def test_our_push_writes_exactly_the_1x_keys(tmp_path: Path, backend: str, name: str) -> None:
    case = CASES[name]
    src = build_case(case, tmp_path / "src")
    store = tmp_path / "store"

    async def go() -> str:
        return await snapdir.push(src, uri(store))

    assert run(go, backend) == case.id
    assert journal_ids(store) == [case.id]
    assert {f for f in files_below(store) if not f.startswith(".snapdir/")} == expected_keys(case)
    assert (store / manifest_rel(case.id)).read_bytes() == (case.manifest + "\n").encode()
    for f in case.files:
        data = content_bytes(f["content"])
        assert (store / object_rel(b3(data))).read_bytes() == data
    # and a hand-made 1.x layout of the same case is byte-identical (modes aside)
    lay_out_like_1x(case, tmp_path / "hand")
    for rel in expected_keys(case):
        assert (store / rel).read_bytes() == (tmp_path / "hand" / rel).read_bytes()
    make_writable(src)
