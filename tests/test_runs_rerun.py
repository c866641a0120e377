"""``snapdir rerun``: three deterministic pipelines reproduce (same output ids), a
nondeterministic one is reported with exactly its differing paths; the comparison is
recorded; nothing runs unless confirmed; a hostile record cannot place files outside the
scratch directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest
import snapdir
import snapdir.runs
from runsutil import project, store_uri
from snapdir.runs.ops import reruns_of
from storeutil import run_cli

PY = sys.executable

#: (name, inputs, outputs, cwd under the project, program)
PIPELINES = [
    (
        "sort-lines",
        ["data"],
        ["out"],
        ".",
        "import os; os.makedirs('out', exist_ok=True); "
        "lines = open('data/a.txt').read().split() + open('data/sub/b.txt').read().split(); "
        "open('out/sorted.txt', 'w').write('\\n'.join(sorted(lines)))",
    ),
    (
        "nested-outputs-two-dirs",
        ["data"],
        ["out", "report"],
        ".",
        "import os, hashlib; os.makedirs('out/deep/er', exist_ok=True); os.makedirs('report', "
        "exist_ok=True)\n"
        "for i in range(20):\n"
        "    open(f'out/deep/er/{i}.bin', 'wb').write(hashlib.sha256(str(i).encode()).digest())\n"
        "open('report/summary.txt', 'w').write('20 files')\n"
        "os.chmod('report/summary.txt', 0o600)",
    ),
    (
        "in-a-subdirectory",
        ["data"],
        ["work/result"],
        "work",
        "import os; os.makedirs('result', exist_ok=True); "
        "open('result/count.txt', 'w').write(str(len(open('../data/a.txt').read())))",
    ),
]

NONDETERMINISTIC = (
    "import os; os.makedirs('out', exist_ok=True); "
    "open('out/stable.txt', 'w').write('same every time'); "
    "open('out/random.txt', 'w').write(os.urandom(16).hex())"
)


@pytest.fixture(params=["file", "s3"])
def uri(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_uri(str(request.param), request, monkeypatch)


def _record(
    uri: str, root: Path, cwd: str, program: str, inputs: list[str], outputs: list[str]
) -> tuple[str, dict[str, str]]:
    (root / cwd).mkdir(parents=True, exist_ok=True)
    args = ["--json", "run", "--store", uri, "--no-git"]
    for i in inputs:
        args += ["--in", f"{'../' * (cwd != '.')}{i}"]
    for o in outputs:
        args += ["--out", o if cwd == "." else o.split("/", 1)[1]]
    proc = run_cli(*args, "--", PY, "-c", program, cwd=root / cwd)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return doc["record"], {o["path"]: o["id"] for o in doc["outputs"]}


@pytest.mark.parametrize("pipeline", PIPELINES, ids=[p[0] for p in PIPELINES])
def test_deterministic_pipelines_reproduce(
    uri: str, tmp_path: Path, pipeline: tuple[str, list[str], list[str], str, str]
) -> None:
    _, inputs, outputs, cwd, program = pipeline
    root = project(tmp_path)
    record, ids = _record(uri, root, cwd, program, inputs, outputs)
    assert sorted(ids) == sorted(outputs)
    scratch = tmp_path / "scratch"
    proc = run_cli("--json", "rerun", record, "--store", uri, "--yes", "--scratch", str(scratch))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["reproduced"] is True
    assert doc["differing"] == []
    assert {o["path"]: o["id"] for o in doc["outputs"]} == ids
    assert doc["of"] == record
    # the comparison is recorded, under the original
    (cmp_rec,) = anyio.run(reruns_of, uri, record)
    assert cmp_rec.digest == doc["record"]
    assert (cmp_rec.rerun_of, cmp_rec.reproduced) == (record, True)


def test_a_nondeterministic_run_reports_its_differing_paths(uri: str, tmp_path: Path) -> None:
    root = project(tmp_path)
    record, _ = _record(uri, root, ".", NONDETERMINISTIC, ["data"], ["out"])
    proc = run_cli("rerun", record[:16], "--store", uri, "--yes")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == ["out/random.txt"]
    assert "NOT reproduced" in proc.stderr
    (cmp_rec,) = anyio.run(reruns_of, uri, record)
    assert (cmp_rec.reproduced, cmp_rec.differing) == (False, ["out/random.txt"])
    shown = run_cli("show", cmp_rec.digest, "--store", uri)
    assert "NOT reproduced" in shown.stdout


def test_nothing_runs_without_confirmation(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    counter = tmp_path / "counter"
    program = f"open({str(counter)!r}, 'a').write('x')"
    record, _ = _record(uri, root, ".", program, [], [])
    assert counter.read_text() == "x"
    # not on a terminal, no --yes: refused before anything runs
    proc = run_cli("rerun", record, "--store", uri)
    assert proc.returncode == 2
    assert "--yes" in proc.stderr
    assert counter.read_text() == "x"

    # through the API, a confirm() that says no
    async def declined() -> None:
        await snapdir.runs.rerun(record, store=uri, confirm=lambda rec: False, stream=False)

    with pytest.raises(snapdir.InvalidArgumentError, match="not confirmed"):
        anyio.run(declined)
    assert counter.read_text() == "x"
    seen = []

    async def accepted() -> snapdir.runs.RerunResult:
        def ok(rec: snapdir.runs.RunRecord) -> bool:
            seen.append(rec.argv)
            return True

        return await snapdir.runs.rerun(record, store=uri, confirm=ok, stream=False)

    res = anyio.run(accepted)
    assert res.reproduced
    assert seen == [[PY, "-c", program]]
    assert counter.read_text() == "xx"


def test_a_scratch_directory_must_be_empty(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    record, _ = _record(uri, root, ".", "pass", [], [])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    proc = run_cli("rerun", record, "--store", uri, "--yes", "--scratch", str(busy))
    assert proc.returncode == 2
    assert (busy / "mine.txt").read_text() == "keep me"


def test_a_hostile_record_cannot_reach_outside_the_scratch_directory(tmp_path: Path) -> None:
    """A record (stored under its true hash) whose input would be pulled to ``../`` of the
    scratch directory is refused as a whole: nothing is pulled, nothing runs."""
    from snapdir._snapdir import blake3_hex
    from snapdir.runs.layout import REC
    from snapdir.runs.record import canonical, statement

    uri = f"file://{tmp_path / 'store'}"
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "planted.txt").write_text("gotcha")
    payload_id = anyio.run(snapdir.push, payload, uri)
    body = canonical(statement(
        kind="run", argv=["touch", str(tmp_path / "ran")], cwd=".", internal={},
        inputs=[("../escaped", payload_id)], outputs=[], dependencies=[],
        started="", finished="", invocation="0", byproducts=[], version="test",
    ))  # fmt: skip
    record = blake3_hex(body)
    (tmp_path / "store" / REC).mkdir(parents=True)
    (tmp_path / "store" / REC / record).write_bytes(body)
    scratch = tmp_path / "scratch" / "inner"
    proc = run_cli("--json", "rerun", record, "--store", uri, "--yes", "--scratch", str(scratch))
    assert proc.returncode == 5, proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "INVALID_RECORD"
    assert not (tmp_path / "scratch" / "escaped").exists()
    assert not (tmp_path / "ran").exists()
