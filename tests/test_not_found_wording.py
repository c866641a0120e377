"""A missing snapshot or object reads the same on every backend ("snapshot ID not found in
URI"), from the API and from the CLI, so scripts and people need not know which SDK
answered."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from snapdir._common import open_wrapped
from snapdir._errors import NotFoundError
from storeutil import run_cli, uri, write
from test_cloud_ops import Clouds, b2_raw, clouds, gs_raw, s3_raw  # noqa: F401

MISSING = "0123456789abcdef" * 4


@pytest.fixture(params=("file", "s3", "gs", "b2"))
def store_uri(request: pytest.FixtureRequest, tmp_path: Path, clouds: Clouds) -> str:  # noqa: F811
    if request.param == "file":
        return uri(tmp_path / "store")
    return clouds.get(str(request.param)).fresh("missing")


def test_missing_snapshot_and_object_read_alike(store_uri: str, tmp_path: Path) -> None:
    write(tmp_path / "src" / "f", "present")
    pushed = run_cli("push", str(tmp_path / "src"), "--store", store_uri)
    assert pushed.returncode == 0, pushed.stderr
    store = open_wrapped(store_uri)

    async def manifest() -> None:
        await store.get_manifest(MISSING)

    async def obj() -> None:
        await store.get_object(MISSING, str(tmp_path / "dest"))

    with pytest.raises(NotFoundError) as err:
        anyio.run(manifest)
    assert str(err.value) == f"snapshot {MISSING} not found in {store.uri}"
    assert err.value.code == "NOT_FOUND"
    with pytest.raises(NotFoundError) as err:
        anyio.run(obj)
    assert str(err.value) == f"object {MISSING} not found in {store.uri}"
    assert not os.path.exists(tmp_path / "dest")

    proc = run_cli("pull", MISSING, str(tmp_path / "out"), "--store", store_uri)
    assert proc.returncode == 4
    assert f"snapshot {MISSING} not found in {store.uri}" in proc.stderr
