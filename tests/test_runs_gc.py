"""A run's byproduct objects (stdout, stderr, the git diff, pre-command outputs) are
uploaded under a collection intent: a ``gc --grace 0`` that runs between their upload and
the record's write (driven by a hook at exactly that point, not by timing) deletes none of
them, while it does delete an unrooted object uploaded before it (so it really collected).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
import snapdir.runs.ops as ops
from runsutil import project, store_uri
from snapdir.lifecycle import adopt
from snapdir.lifecycle.gc import gc
from snapdir.runs.layout import read_record, write_record
from snapdir.stores import open_store

PY = sys.executable
PROG = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"


@pytest.fixture(params=["file", "s3"])
def uri2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_uri(str(request.param), request, monkeypatch)


async def _with_store(uri: str, fn: Any) -> Any:
    st = open_store(uri)
    try:
        return await fn(st)
    finally:
        await st.aclose()


def test_gc_between_upload_and_record_loses_nothing(
    uri2: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    stray = tmp_path / "stray"
    stray.write_bytes(b"nobody names me\n")
    stray_digest = snapdir._snapdir.blake3_hex(stray.read_bytes())

    async def prepare(st: Any) -> None:
        await snapdir.push(root / "data", st)  # a store with content, adopted: managed
        await adopt(st)
        await st.put_object(stray_digest, str(stray), stray.stat().st_size)

    anyio.run(_with_store, uri2, prepare)

    real = write_record
    collected: list[Any] = []

    async def collect_then_write(store: Any, data: bytes) -> Any:
        collected.append(await gc(store, grace=timedelta(0)))
        return await real(store, data)

    monkeypatch.setattr(ops, "write_record", collect_then_write)

    async def go() -> Any:
        return await ops.run_command(
            [PY, "-c", PROG], store=uri2, pre=["echo from pre"], cwd=root, stream=False,
            git=False, config=False,
        )  # fmt: skip

    r = anyio.run(go)
    assert r.status == 0
    (report,) = collected
    assert report.objects >= 1  # it collected: the stray object went
    monkeypatch.setattr(ops, "write_record", real)

    async def check(st: Any) -> tuple[Any, dict[str, bool]]:
        rec = await read_record(st, r.record)
        bps = rec.raw["predicate"]["runDetails"]["byproducts"]
        named = {b["name"]: b["digest"]["blake3"] for b in bps if "digest" in b}
        return rec, {n: await st.has_object(d) for n, d in named.items()} | {
            "stray": await st.has_object(stray_digest)
        }

    rec, present = anyio.run(_with_store, uri2, check)
    assert set(present) == {"stdout", "stderr", "pre-0", "stray"}
    assert present == {"stdout": True, "stderr": True, "pre-0": True, "stray": False}
    # the intent is gone, and the record keeps its objects from the next collection
    again = anyio.run(_with_store, uri2, lambda st: gc(st, grace=timedelta(0)))
    assert again.objects == 0
    assert anyio.run(_with_store, uri2, check)[1]["stdout"]
    if uri2.startswith("file://"):
        intents = Path(uri2[len("file://") :]) / ".snapdir" / "intents"
        assert not intents.exists() or os.listdir(intents) == []
    assert rec.stdout is not None
    assert rec.stdout.size == len(b"to stdout\n")
