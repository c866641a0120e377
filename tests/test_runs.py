"""``snapdir run`` and its records, end to end: real child processes, real signals, real
stores.

* The store layout (record, index keys, journal entry, objects) on all four backends, read
  back through the validating parser, listed, shown and followed by lineage.
* The command line: live output (the first line arrives while the child still runs),
  exit status passthrough, a killed child's 128 + signal, SIGINT and SIGTERM forwarded,
  --timeout, the JSON document, capture, show, runs, lineage --dot.
* Memory: 64 MiB of child stdout captured with a peak RSS far below it (the benchmark does
  1 GiB).
* The run cache: a --reuse hit runs the command zero times (a counter file says so) and
  puts the outputs back; another command line is a miss.
* Configuration (snapdir.toml, [tool.snapdir]; unknown keys refused), the Run and track
  API, and records planted by a hostile store.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
from runsutil import project, store_uri
from runsutil import run_async as _run
from snapdir._snapdir import blake3_hex
from snapdir.lifecycle import ls
from snapdir.runs.layout import IN, OUT, REC, list_records, read_record, records_under
from snapdir.runs.ops import lineage, list_runs
from snapdir.runs.record import InvalidRecordError, parse_record
from snapdir.runs.roots import gc_roots
from snapdir.stores import open_store
from storeutil import cli_env, run_cli

PY = sys.executable


@pytest.fixture(params=["file", "s3", "gs", "b2"])
def any_uri(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_uri(str(request.param), request, monkeypatch)


@pytest.fixture(params=["file", "s3"])
def uri2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_uri(str(request.param), request, monkeypatch)


async def _with_store(uri: str, fn: Any, *args: Any) -> Any:
    st = open_store(uri)
    try:
        return await fn(st, *args)
    finally:
        await st.aclose()


PIPELINE = (
    "import os, pathlib; os.makedirs('out', exist_ok=True); "
    "t = pathlib.Path('data/a.txt').read_text(); "
    "pathlib.Path('out/upper.txt').write_text(t.upper()); print('made', len(t))"
)


def test_store_layout_on_every_backend(any_uri: str, tmp_path: Path) -> None:
    root = project(tmp_path)
    r = _run(
        snapdir.run_command,
        [PY, "-c", PIPELINE],
        store=any_uri,
        inputs=["data"],
        outputs=["out"],
        cwd=root,
        stream=False,
        git=False,
    )
    assert r.status == 0
    assert r.exit_code == 0
    assert r.signal is None
    (in_id,) = r.inputs.values()
    (out_id,) = r.outputs.values()
    assert set(r.inputs) == {"data"}
    assert set(r.outputs) == {"out"}
    assert in_id == _run(snapdir.id, root / "data")
    assert out_id == _run(snapdir.id, root / "out")

    rec = anyio.run(_with_store, any_uri, read_record, r.record)
    assert rec.argv == [PY, "-c", PIPELINE]
    assert rec.inputs == [("data", in_id)]
    assert rec.outputs == [("out", out_id)]
    assert rec.status == 0
    assert rec.stdout is not None
    assert rec.stdout.size == len(b"made 6\n")
    # "what produced X" and "what used X" are one list each
    assert anyio.run(_with_store, any_uri, records_under, f"{OUT}{out_id}/") == [r.record]
    assert anyio.run(_with_store, any_uri, records_under, f"{IN}{in_id}/") == [r.record]
    names = anyio.run(_with_store, any_uri, list_records)
    assert [n for n, _ in names] == [r.record]
    # the output's journal entry names the run
    (entry,) = _run(ls, any_uri)
    assert (entry.id, entry.run) == (out_id, r.record)
    # the stdout object is in the store, byte for byte
    dest = tmp_path / "stdout"
    anyio.run(_with_store, any_uri, _get_object, rec.stdout.digest, str(dest))
    assert dest.read_bytes() == b"made 6\n"
    # listing and lineage read it back
    ((listed, _),) = _run(list_runs, any_uri)
    assert listed.digest == r.record
    g = _run(lineage, any_uri, out_id)
    assert set(g.runs) == {r.record}
    assert g.edges == {(in_id, r.record), (r.record, out_id)}
    # the collector's roots: the input and output trees, the stdout object
    snaps, objects = anyio.run(_with_store, any_uri, gc_roots)
    assert {in_id, out_id} <= snaps
    assert rec.stdout.digest in objects


async def _get_object(st: Any, digest: str, dest: str) -> None:
    await st.get_object(digest, dest)


def test_record_is_an_in_toto_statement_with_slsa_provenance(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    r = _run(
        snapdir.run_command,
        [PY, "-c", PIPELINE],
        store=uri,
        inputs=["data"],
        outputs=["out"],
        cwd=root,
        stream=False,
        env=["LANG", "NOT_SET_ANYWHERE"],
        files=["snapdir.toml"],
        git=False,
    )
    raw = (tmp_path / "store" / REC / r.record).read_bytes()
    assert blake3_hex(raw) == r.record
    doc = json.loads(raw)
    # canonical: sorted keys, no white space
    assert (
        raw == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [{"name": "out", "digest": {"snapdir": r.outputs["out"]}}]
    bd = doc["predicate"]["buildDefinition"]
    assert bd["externalParameters"] == {"argv": [PY, "-c", PIPELINE], "cwd": ".", "kind": "run"}
    names = [d["name"] for d in bd["resolvedDependencies"]]
    assert names[:1] == ["in:data"]
    assert "file:snapdir.toml" in names
    assert "executable" in names
    assert "NOT_SET_ANYWHERE" not in bd["internalParameters"]["env"]
    details = doc["predicate"]["runDetails"]
    result = next(b for b in details["byproducts"] if b["name"] == "result")["annotations"]
    assert result["status"] == 0
    assert result["maxRssBytes"] > 0
    assert isinstance(result["durationMs"], int)
    assert details["metadata"]["startedOn"] <= details["metadata"]["finishedOn"]


def test_cli_run_streams_live_and_passes_the_status_through(tmp_path: Path) -> None:
    """The first line reaches snapdir's stdout while the child is still running: the
    child waits for the test to answer on its stdin before it writes the rest."""
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    child = (
        "import sys; print('first', flush=True); sys.stdin.readline(); print('second'); sys.exit(3)"
    )
    with subprocess.Popen(
        [PY, "-m", "snapdir", "run", "--store", uri, "--no-git", "--", PY, "-c", child],
        cwd=root,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdin is not None
            assert proc.stdout.readline() == b"first\n"  # the child is blocked on stdin here
            assert proc.poll() is None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            rest = proc.stdout.read()
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rest == b"second\n"
    assert proc.returncode == 3


def test_cli_run_json_and_a_killed_child(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    proc = run_cli(
        "--json", "run", "--store", uri, "--no-git", "--", PY, "-c",
        "import os, signal; print('x'); os.kill(os.getpid(), signal.SIGKILL)",
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
    doc = json.loads(proc.stdout)  # the child's stdout went to stderr
    assert "x" in proc.stderr
    assert (doc["status"], doc["signal"], doc["exit_code"]) == (137, 9, None)
    shown = run_cli("show", doc["record"][:10], "--store", uri)
    assert shown.returncode == 0, shown.stderr
    assert "status    137 (signal 9)" in shown.stdout
    listed = json.loads(run_cli("runs", "--store", uri, "--json").stdout)
    assert [r["record"] for r in listed["runs"]] == [doc["record"]]


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_are_forwarded_and_the_run_recorded(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    child = "import sys, time; print('ready', flush=True); time.sleep(120)"
    with subprocess.Popen(
        [PY, "-m", "snapdir", "--json", "run", "--store", uri, "--no-git", "--", PY, "-c", child],
        cwd=root,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stderr is not None
            assert proc.stderr.readline() == b"ready\n"  # --json: the child's stdout on stderr
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == status
    doc = json.loads(out)
    assert (doc["signal"], doc["status"]) == (int(sig), status)


def test_timeout_stops_the_command(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    proc = run_cli(
        "run", "--store", uri, "--no-git", "--timeout", "1s", "--", PY, "-c",
        "import time; time.sleep(120)", cwd=root,
    )  # fmt: skip
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr


def test_64_mib_of_stdout_with_a_small_peak_rss(tmp_path: Path) -> None:
    """The output is teed to a file while it is hashed: snapdir's peak RSS stays far below
    the output's size. Measured by a small launcher process: Linux counts a parent's RSS at
    fork into its child's ``ru_maxrss``, so pytest (100+ MB) cannot launch it itself."""
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    size = 64 << 20
    launcher = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "_, st, ru = os.wait4(p.pid, 0)\n"
        "p.returncode = os.waitstatus_to_exitcode(st)\n"
        "print(p.returncode, ru.ru_maxrss * 1024)\n"
    )
    proc = subprocess.run(
        [PY, "-S", "-c", launcher, PY, "-m", "snapdir", "--json", "run", "--store", uri,
         "--no-git", "--", "head", "-c", str(size), "/dev/urandom"],
        cwd=root, env=cli_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    status, peak = (int(x) for x in proc.stdout.split())
    assert status == 0, proc.stderr
    assert peak < 64 << 20, f"peak RSS {peak >> 20} MiB"
    (rec_name,) = (p.name for p in (tmp_path / "store" / REC).iterdir())
    rec = parse_record((tmp_path / "store" / REC / rec_name).read_bytes(), rec_name)
    # --json shows the child's stdout on snapdir's stderr; it is still stored as stdout
    assert rec.stdout is not None
    assert rec.stdout.size == size
    assert (tmp_path / "store" / ".objects").exists()


def test_reuse_hit_runs_the_command_zero_times(uri2: str, tmp_path: Path) -> None:
    root = project(tmp_path)
    counter = tmp_path / "counter"
    counter.write_text("")
    script = (
        f"import os, pathlib; open({str(counter)!r}, 'a').write('x'); os.makedirs('out', "
        "exist_ok=True); pathlib.Path('out/r.txt').write_text(open('data/a.txt').read() * 2); "
        "print('computed')"
    )
    argv = ["run", "--store", uri2, "--no-git", "--in", "data", "--out", "out", "--reuse", "--",
            PY, "-c", script]  # fmt: skip
    env = cli_env()
    first = run_cli(*argv, cwd=root, env=env)
    assert first.returncode == 0, first.stderr
    assert counter.read_text() == "x"
    (root / "out" / "r.txt").unlink()
    second = run_cli("--json", *argv, cwd=root, env=env)
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["reused"] is True
    assert counter.read_text() == "x"  # not run again
    assert (root / "out" / "r.txt").read_text() == "alpha\n" * 2  # put back from the store
    assert "computed" in second.stderr  # the stored stdout, replayed
    # another command line is another key (DVC once left the command out of it)
    third = run_cli(*argv[:-1], script + " # changed", cwd=root, env=env)
    assert third.returncode == 0, third.stderr
    assert counter.read_text() == "xx"
    # another input is another key
    (root / "data" / "a.txt").write_text("gamma\n")
    fourth = run_cli(*argv, cwd=root, env=env)
    assert fourth.returncode == 0, fourth.stderr
    assert counter.read_text() == "xxx"


def test_capture_show_and_lineage_dot(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    cap = run_cli("--json", "capture", "--store", uri, "--in", "data", "--no-git",
                  "--pre", "echo pre-output", cwd=root)  # fmt: skip
    assert cap.returncode == 0, cap.stderr
    doc = json.loads(cap.stdout)
    in_id = doc["inputs"][0]["id"]
    run1 = run_cli("--json", "run", "--store", uri, "--no-git", "--in", "data", "--out", "out",
                   "--", PY, "-c", PIPELINE, cwd=root)  # fmt: skip
    out_id = json.loads(run1.stdout)["outputs"][0]["id"]
    dot = run_cli("lineage", in_id, "--store", uri, "--down", "--dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("digraph lineage {")
    assert f'"{in_id}" ->' in dot.stdout
    assert f'-> "{out_id}";' in dot.stdout
    up = json.loads(run_cli("lineage", out_id, "--store", uri, "--up", "--json").stdout)
    assert {(e["from"], e["to"]) for e in up["edges"]} >= {(in_id, up["runs"][0]["record"])}
    by_output = run_cli("show", out_id, "--store", uri)
    assert by_output.returncode == 0
    assert "output    " + out_id in by_output.stdout
    shown = json.loads(run_cli("show", doc["record"], "--store", uri, "--json").stdout)
    pre = shown["records"][0]["statement"]["predicate"]
    assert pre["buildDefinition"]["externalParameters"]["kind"] == "capture"
    assert [b["name"] for b in pre["runDetails"]["byproducts"]] == ["pre-0"]


def test_config_files_and_unknown_keys(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    (root / "snapdir.toml").write_text(f'store = "{uri}"\nenv = ["RUN_ME"]\ngit = false\n')
    env = cli_env(RUN_ME="visible", OTHER="hidden")
    proc = run_cli("--json", "run", "--", "true", cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(run_cli("show", json.loads(proc.stdout)["record"], "--store", uri,
                             "--json").stdout)["records"][0]  # fmt: skip
    assert rec["statement"]["predicate"]["buildDefinition"]["internalParameters"]["env"] == {
        "RUN_ME": "visible"
    }
    (root / "snapdir.toml").write_text('stor = "typo"\n')
    bad = run_cli("--json", "run", "--store", uri, "--", "true", cwd=root)
    assert bad.returncode == 2
    assert "unknown key(s) stor" in json.loads(bad.stdout)["error"]["message"]
    # [tool.snapdir] in pyproject.toml, when there is no snapdir.toml
    (root / "snapdir.toml").unlink()
    (root / "pyproject.toml").write_text('[tool.snapdir]\nenv = ["RUN_ME"]\nbogus = 1\n')
    bad = run_cli("run", "--store", uri, "--", "true", cwd=root)
    assert bad.returncode == 2
    assert "bogus" in bad.stderr


def test_paths_outside_the_project_are_refused(tmp_path: Path) -> None:
    root = project(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    uri = f"file://{tmp_path / 'store'}"
    proc = run_cli("run", "--store", uri, "--in", "../elsewhere", "--", "true", cwd=root)
    assert proc.returncode == 2
    assert "inside the project root" in proc.stderr


def test_run_and_track_api(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"

    async def block() -> snapdir.RunResult:
        async with snapdir.Run(uri, inputs=["data"], outputs=["data"], cwd=root) as run:
            run.log("accuracy", 0.93)
            run.log("epochs", 3)
        assert run.result is not None
        return run.result

    res = anyio.run(block)
    rec = _run(_with_store, uri, read_record, res.record)
    assert rec.kind == "track"
    assert rec.raw["predicate"]["buildDefinition"]["internalParameters"]["metrics"] == {
        "accuracy": 0.93,
        "epochs": 3,
    }

    async def failing() -> None:
        async with snapdir.Run(uri, cwd=root):
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        anyio.run(failing)

    @snapdir.track(uri, cwd=root)
    def add(a: int, b: int, *, big: str) -> int:
        return a + b

    assert add(1, 2, big="y" * 1000) == 3

    @snapdir.track(uri, cwd=root)
    async def mul(a: int) -> int:
        return a * 2

    assert anyio.run(mul, 4) == 8
    recs = [r for r, _ in _run(list_runs, uri)]
    assert len(recs) == 4
    calls = [r.raw["predicate"]["buildDefinition"]["internalParameters"].get("call") for r in recs]
    add_call = next(c for c in calls if c and c["function"].endswith("add"))
    assert add_call["args"] == ["1", "2"]
    assert len(add_call["kwargs"]["big"]) == 200  # repr, truncated
    results = [
        next(b for b in r.raw["predicate"]["runDetails"]["byproducts"] if b["name"] == "result")
        for r in recs
    ]
    assert any(b["annotations"].get("exception") == "ValueError: boom" for b in results)


def test_planted_records_are_refused(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    r = _run(snapdir.run_command, ["true"], store=uri, cwd=root, stream=False, git=False)
    good = (tmp_path / "store" / REC / r.record).read_bytes()
    with pytest.raises(InvalidRecordError, match="does not hash"):
        parse_record(good.replace(b'"true"', b'"rm -rf /"'), r.record)
    with pytest.raises(InvalidRecordError, match="larger than"):
        parse_record(b" " * (2 << 20), r.record)
    evil = json.loads(good)
    evil["subject"] = [{"name": "../../etc", "digest": {"snapdir": "0" * 64}}]
    body = json.dumps(evil, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(InvalidRecordError, match="unsafe path"):
        parse_record(body, blake3_hex(body))
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidRecordError, match="not JSON"):
        parse_record(deep, blake3_hex(deep))
    # planted under a name it does not hash to: listed runs skip it with a warning
    bogus = tmp_path / "store" / REC / ("f" * 64)
    bogus.write_bytes(good)
    listed = run_cli("runs", "--store", uri)
    assert listed.returncode == 0
    assert "does not hash" in listed.stderr
    assert r.record[:12] in listed.stdout
    shown = run_cli("show", "f" * 64, "--store", uri)
    assert shown.returncode == 5
    assert "does not hash" in shown.stderr


def test_a_journal_key_with_a_bad_run_field_is_refused() -> None:
    """The journal's optional run field: 64 hex digits, checked when a key is read."""
    from datetime import datetime, timezone

    from snapdir import InvalidArgumentError
    from snapdir.lifecycle.journal import SnapshotInfo, entry_key, parse_key

    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    info = SnapshotInfo("a" * 64, now, "h", "u", "/p", 1, 2, (), run="b" * 64)
    key = entry_key(info)
    assert parse_key(key, now).run == "b" * 64
    assert parse_key(entry_key(SnapshotInfo("a" * 64, now)), now).run == ""
    bad = SnapshotInfo("a" * 64, now, "h", "u", "/p", 1, 2, (), run="not-a-record")
    with pytest.raises(InvalidArgumentError, match="bad run record name"):
        parse_key(entry_key(bad), now)
