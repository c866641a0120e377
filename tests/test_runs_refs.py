"""``--in PATH=REF``: an input pulled from a ref (a release, a channel, an id prefix) into
place before the command, recorded with its id, the ref as given and what it resolved to.

* On ``file://`` and S3: the ref is resolved against --store, pulled into a missing
  directory, recorded (in-toto ``resolvedDependencies`` annotations, the JSON result);
  a directory that already is the snapshot is used as it is; one holding anything else
  is never overwritten (exit 3); an unknown ref fails naming the ref and the store
  before anything runs.
* The API: ``run_command`` with a mapping, ``capture``, ``Run`` with ``"path=ref"``, and
  ``rerun`` carrying the ref into its own record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
from runsutil import project, store_uri
from runsutil import run_async as _run
from snapdir.names import channel_set, tag
from snapdir.runs.layout import read_record
from snapdir.runs.ops import _split_inputs, capture_context, rerun, run_command
from snapdir.stores import open_store
from storeutil import cli_env, run_cli

PY = sys.executable
COUNT = "open({counter!r}, 'a').write('x'); print(open('vendor/a.txt').read().strip())"


@pytest.fixture(params=["file", "s3"])
def uri2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_uri(str(request.param), request, monkeypatch)


async def _read(uri: str, digest: str) -> Any:
    st = open_store(uri)
    try:
        return await read_record(st, digest)
    finally:
        await st.aclose()


def _release(tmp_path: Path, uri: str, text: str, version: str) -> str:
    """Push a tree holding ``a.txt`` = ``text`` and name it ``kit@version``; its id."""
    src = tmp_path / f"release-{version}"
    src.mkdir()
    (src / "a.txt").write_text(text)
    sid = str(_run(snapdir.push, src, uri))
    _run(tag, uri, f"kit@{version}", sid)
    return sid


def _input_dep(rec: Any, path: str) -> dict[str, Any]:
    deps = rec.raw["predicate"]["buildDefinition"]["resolvedDependencies"]
    (dep,) = [d for d in deps if d["name"] == f"in:{path}"]
    return dict(dep)


def test_in_path_ref_is_pulled_recorded_and_never_clobbers(uri2: str, tmp_path: Path) -> None:
    root = project(tmp_path)
    _release(tmp_path, uri2, "one\n", "1.0.0")
    sid = _release(tmp_path, uri2, "two\n", "1.1.0")
    counter = tmp_path / "counter"
    counter.write_text("")
    script = COUNT.format(counter=str(counter))
    env = cli_env()
    argv = ["--json", "run", "--store", uri2, "--no-git", "--in", "data",
            "--in", "vendor=kit@^1", "--", PY, "-c", script]  # fmt: skip

    first = run_cli(*argv, cwd=root, env=env)
    assert first.returncode == 0, first.stderr
    assert (root / "vendor" / "a.txt").read_text() == "two\n"  # the newest 1.x, pulled
    assert counter.read_text() == "x"
    doc = json.loads(first.stdout)
    by_path = {i["path"]: i for i in doc["inputs"]}
    assert by_path["vendor"] == {
        "path": "vendor", "id": sid, "ref": "kit@^1", "release": "kit", "version": "1.1.0",
    }  # fmt: skip
    assert set(by_path["data"]) == {"path", "id"}  # a pushed path names no ref
    rec = _run(_read, uri2, doc["record"])
    assert ("vendor", sid) in rec.inputs
    assert rec.input_refs == {"vendor": {"ref": "kit@^1", "release": "kit", "version": "1.1.0"}}
    dep = _input_dep(rec, "vendor")
    assert dep["digest"] == {"snapdir": sid}
    assert dep["annotations"] == {
        "path": "vendor", "ref": "kit@^1", "release": "kit", "version": "1.1.0",
    }  # fmt: skip

    # already that snapshot: used as it is
    again = run_cli(*argv, cwd=root, env=env)
    assert again.returncode == 0, again.stderr
    assert counter.read_text() == "xx"

    # the user's own data there: left alone, nothing runs
    (root / "vendor" / "a.txt").write_text("mine\n")
    clash = run_cli(*argv, cwd=root, env=env)
    assert clash.returncode == 3, clash.stderr
    assert "not overwritten" in clash.stderr
    assert json.loads(clash.stdout)["error"]["code"] == "CONFLICT"
    assert (root / "vendor" / "a.txt").read_text() == "mine\n"
    assert counter.read_text() == "xx"

    # an unknown ref: named with the store, nothing pulled, pushed or run
    (root / "other").mkdir()
    unknown = [a.replace("vendor=kit@^1", "other=kit@^7") for a in argv]
    missing = run_cli(*unknown, cwd=root, env=env)
    assert missing.returncode == 4, missing.stderr
    assert "kit@^7" in missing.stderr
    assert uri2.split("://", 1)[1].split("/", 1)[0] in missing.stderr
    assert counter.read_text() == "xx"
    assert list((root / "other").iterdir()) == []


def test_api_forms_capture_track_and_rerun(tmp_path: Path) -> None:
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    sid = _release(tmp_path, uri, "one\n", "1.0.0")
    _run(channel_set, uri, "kit@stable", "kit@1.0.0")

    # a mapping: channel ref; the output made from it
    prog = (
        "import os; os.makedirs('out', exist_ok=True); "
        "open('out/b.txt', 'w').write(open('lib/a.txt').read().upper())"
    )
    r = _run(
        run_command, [PY, "-c", prog], store=uri, inputs={"lib": "kit@stable", "data": None},
        outputs=["out"], cwd=root, stream=False, git=False,
    )  # fmt: skip
    assert r.status == 0
    assert r.inputs["lib"] == sid
    assert r.input_refs == {
        "lib": {"ref": "kit@stable", "release": "kit", "version": "1.0.0", "channel": "stable"}
    }
    assert (root / "out" / "b.txt").read_text() == "ONE\n"

    # capture with an id prefix
    c = _run(capture_context, store=uri, inputs=[f"pinned={sid[:12]}"], cwd=root, git=False)
    assert c.inputs == {"pinned": sid}
    assert c.input_refs == {"pinned": {"ref": sid[:12]}}
    assert (root / "pinned" / "a.txt").read_text() == "one\n"

    # Run(...) with "path=ref": pulled when the block starts
    async def block() -> snapdir.RunResult:
        async with snapdir.Run(uri, inputs=["tracked=kit@1.0.0"], cwd=root, git=False) as run:
            assert (root / "tracked" / "a.txt").read_text() == "one\n"
        assert run.result is not None
        return run.result

    t = anyio.run(block)
    assert t.input_refs == {"tracked": {"ref": "kit@1.0.0", "release": "kit", "version": "1.0.0"}}
    assert (_run(_read, uri, t.record)).input_refs == t.input_refs

    # rerun pulls by id and carries the ref into its own record
    again = _run(rerun, r.record, store=uri, scratch=tmp_path / "scratch", stream=False)
    assert again.reproduced, again.differing
    assert (tmp_path / "scratch" / "lib" / "a.txt").read_text() == "one\n"
    made = _run(_read, uri, again.record)
    assert made.input_refs["lib"]["ref"] == "kit@stable"


def test_input_forms_are_checked(tmp_path: Path) -> None:
    assert _split_inputs(["a", "b=kit@>=1,<2", Path("c=d")]) == [
        ("a", None), ("b", "kit@>=1,<2"), ("c=d", None),
    ]  # fmt: skip
    assert _split_inputs({"x=y": "kit"}) == [("x=y", "kit")]
    for bad in (["=kit"], ["a="], "data"):
        with pytest.raises(snapdir.InvalidArgumentError):
            _split_inputs(bad)
    root = project(tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    out = run_cli("run", "--store", uri, "--in", "../up=kit@1", "--", "true", cwd=root)
    assert out.returncode == 2
    assert "inside the project root" in out.stderr
    assert not (tmp_path / "up").exists()


WRITE_OUT = (
    "import pathlib, sys; p = pathlib.Path('out'); p.mkdir(exist_ok=True); "
    "(p / 'r.txt').write_text(sys.argv[1]); sys.exit(int(sys.argv[2]))"
)


def test_run_tag_releases_the_one_output_of_a_successful_run(uri2: str, tmp_path: Path) -> None:
    """``run --tag NAME@VERSION`` releases the output (its record's message names the run);
    a taken version exits 3 before the command runs; several outputs are a usage error; a
    failed command's output is not released."""
    from snapdir.names import resolve

    root = project(tmp_path)
    env = cli_env()

    def run_tagged(release: str, text: str, code: int, *outs: str) -> Any:
        outs = outs or ("out",)
        argv = ["--json", "run", "--store", uri2, "--no-git", "--tag", release]
        for o in outs:
            argv += ["--out", o]
        return run_cli(*argv, "--", PY, "-c", WRITE_OUT, text, str(code), cwd=root, env=env)

    ok = run_tagged("model@1.0.0", "first", 0)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["tag"] == "model@1.0.0"
    got = _run(resolve, uri2, "model@1.0.0")
    assert got.id == doc["outputs"][0]["id"]
    assert got.record["message"] == f"run:{doc['record']}"

    # show and lineage take the release as a ref: the run that produced it
    shown = run_cli("--json", "show", "model@^1", "--store", uri2, env=env)
    assert shown.returncode == 0, shown.stderr
    assert [r["record"] for r in json.loads(shown.stdout)["records"]] == [doc["record"]]
    lin = run_cli("--json", "lineage", "model@1.0.0", "--store", uri2, env=env)
    assert lin.returncode == 0, lin.stderr
    assert doc["record"] in lin.stdout
    unknown = run_cli("show", "nothing@1.0.0", "--store", uri2, env=env)
    assert unknown.returncode == 4, unknown.stderr

    (root / "out" / "r.txt").unlink()
    taken = run_tagged("model@1.0.0", "second", 0)
    assert taken.returncode == 3, taken.stderr
    assert "model@1.0.0 already names" in taken.stderr
    assert not (root / "out" / "r.txt").exists()  # the command never ran

    two = run_tagged("model@2.0.0", "x", 0, "out", "other")
    assert two.returncode == 2, two.stderr
    assert "give exactly one --out" in two.stderr

    failed = run_tagged("model@3.0.0", "broken", 7)
    assert failed.returncode == 7, failed.stderr
    failed_doc = json.loads(failed.stdout)
    assert failed_doc["tag"] is None
    assert any("model@3.0.0 not tagged: the command exited 7" in w for w in failed_doc["warnings"])
    with pytest.raises(snapdir.NotFoundError):
        _run(resolve, uri2, "model@3.0.0")
