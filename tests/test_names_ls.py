"""``ls`` shows names. By default only what the journal key already holds (the releases a
push tagged), so listing stays the list pages and nothing else; ``ls --names`` adds what
the store's names say now (tags given after the push, channel heads), for one more listing
and one GET per name record the local cache lacks (none when warm). The output on every
backend; the request counts on S3 and file://; a hostile record is reported, not shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
from snapdir.lifecycle.ops import ls
from snapdir.names import ops
from snapdir.stores import open_store
from storeutil import cli_env, run, run_cli, uri
from test_names import Backend, _Counted, _push_all, _trees, backend

__all__ = ["backend"]  # the fixture, shared with test_names


def _json(*argv: str, status: int = 0) -> Any:
    proc = run_cli(*argv, "--json", env=cli_env())
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def test_ls_shows_names_on_every_backend(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    t1, t2, t3 = _trees(tmp_path, 3)
    p1 = _json("push", str(t1), "--store", store, "--tag", "kit@1.0.0")
    p2 = _json("push", str(t2), "--store", store)
    p3 = _json("push", str(t3), "--store", store)
    # names given after the push: a tag of an existing id, a channel, a yanked release
    _json("tag", p2["id"], "kit@1.1.0", "--store", store)
    _json("channel", "set", "kit@stable", "kit@1.1.0", "--store", store)
    _json("tag", p3["id"], "kit@0.9.0", "--store", store)
    _json("yank", "kit@0.9.0", "--reason", "broken", "--store", store)

    plain = {s["id"]: s for s in _json("ls", "--store", store)["snapshots"]}
    assert {i: s["names"] for i, s in plain.items()} == {
        p1["id"]: ["kit@1.0.0"],
        p2["id"]: [],
        p3["id"]: [],
    }
    assert plain[p1["id"]]["tags"] == ["kit@1.0.0"]
    named = {s["id"]: s for s in _json("ls", "--names", "--store", store)["snapshots"]}
    assert {i: s["names"] for i, s in named.items()} == {
        p1["id"]: ["kit@1.0.0"],
        p2["id"]: ["kit@1.1.0", "kit@stable"],
        p3["id"]: [],  # yanked: left out, as refs does
    }
    assert named[p2["id"]]["tags"] == []  # the journal's own record is unchanged

    text = run_cli("ls", "--names", "--store", store, env=cli_env())
    assert text.returncode == 0, text.stderr
    line = next(ln for ln in text.stdout.splitlines() if ln.startswith(p2["id"][:12]))
    assert line.endswith("(kit@1.1.0 kit@stable)")
    short = run_cli("ls", "--store", store, env=cli_env())
    line = next(ln for ln in short.stdout.splitlines() if ln.startswith(p1["id"][:12]))
    assert line.endswith("(kit@1.0.0)")
    assert "kit@stable" not in short.stdout


def _requests(st: Any) -> int:
    count = getattr(st, "request_count", None)
    return int(count()) if count is not None else 0


@pytest.mark.parametrize("backend", ["file", "s3"], indirect=True)
def test_ls_names_request_counts(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default ls: the journal's list page only. --names cold: one more list and a GET per
    record (two releases, one channel head, one release of another name); warm: the two
    list pages and no GET."""
    store = backend.store()
    a, b, c = run(lambda: _push_all(store, _trees(tmp_path, 3)))

    async def name() -> None:
        await ops.tag(store, "kit@1.0.0", a)
        await ops.tag(store, "kit@2.0.0", b)
        await ops.channel_set(store, "kit@stable", a)
        await ops.tag(store, "lab/other@0.1.0", c)

    run(name)
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(tmp_path / "fresh-cache"))

    def counted(names: bool) -> tuple[int, int, int, dict[str, tuple[str, ...]]]:
        async def go() -> tuple[int, int, int, dict[str, tuple[str, ...]]]:
            st = open_store(store)
            c = _Counted(st)
            before = _requests(st)
            got = await ls(st, names=names)
            requests = _requests(st) - before
            await st.aclose()
            return c.lists, c.gets, requests, {e.id: e.names for e in got}

        return anyio.run(go)

    plain = counted(False)
    assert plain[:2] == (1, 0), plain
    assert plain[3] == {a: (), b: (), c: ()}
    cold = counted(True)
    assert cold[:2] == (2, 4), cold
    assert cold[3] == {a: ("kit@1.0.0", "kit@stable"), b: ("kit@2.0.0",), c: ("lab/other@0.1.0",)}
    warm = counted(True)
    assert warm[:2] == (2, 0), warm
    assert warm[3] == cold[3]
    if backend.scheme == "s3":
        # one list page each, one GET per record; nothing else
        assert (plain[2], cold[2], warm[2]) == (1, 2 + 4, 2)


def test_ls_names_reports_a_hostile_record_and_shows_the_rest(tmp_path: Path) -> None:
    from snapdir.names.layout import version_key

    store = uri(tmp_path / "store")
    a, b = run(lambda: _push_all(store, _trees(tmp_path, 2)))
    run(lambda: ops.tag(store, "kit@1.0.0", a))
    # a record planted by someone else: it names b but claims another version
    bad = {"schema": 1, "id": b, "name": "kit", "version": "9.9.9", "created": "", "by": "",
           "message": ""}  # fmt: skip
    path = tmp_path / "store" / version_key("kit", "2.0.0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bad))
    with pytest.warns(snapdir.SnapdirWarning, match="does not match its key"):
        got = {e.id: e.names for e in run(lambda: ls(store, names=True))}
    assert got == {a: ("kit@1.0.0",), b: ()}
