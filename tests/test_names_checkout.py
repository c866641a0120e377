"""``checkout`` takes refs: an id or prefix is looked up in the local cache as always; a name
is resolved in ``--store`` (or the store of ``URI#REF``), since the cache keeps content and
no names, and the snapshot it names is checked out of the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from storeutil import cli_env, run_cli, uri
from test_names import Backend, _trees, backend

__all__ = ["backend"]  # the fixture, shared with test_names


def _cli(env: dict[str, str], *argv: str, status: int = 0) -> Any:
    proc = run_cli(*argv, "--json", env=env)
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("backend", ["file", "s3"], indirect=True)
def test_checkout_by_range_channel_and_store_ref(backend: Backend, tmp_path: Path) -> None:
    env = cli_env(SNAPDIR_CACHE_DIR=str(tmp_path / "cache"))
    store = backend.store()
    t1, t2 = _trees(tmp_path, 2)
    p1 = _cli(env, "push", str(t1), "--store", store, "--tag", "kit@1.0.0")
    p2 = _cli(env, "push", str(t2), "--store", store, "--tag", "kit@1.1.0")
    _cli(env, "channel", "set", "kit@stable", "kit@1.0.0", "--store", store)
    for ref in ("kit@^1", "kit@stable"):
        _cli(env, "fetch", ref, "--store", store)

    out = tmp_path / "range"
    got = _cli(env, "checkout", "kit@>=1.0,<2", str(out), "--store", store)
    assert got["id"] == p2["id"]
    assert (out / "data.txt").read_text() == "content 1\n"
    out = tmp_path / "channel"
    assert _cli(env, "checkout", "--id", "kit@stable", str(out), "--store", store)["id"] == p1["id"]
    assert (out / "data.txt").read_text() == "content 0\n"
    out = tmp_path / "qualified"
    assert _cli(env, "checkout", f"{store}#kit@1.0.0", str(out))["id"] == p1["id"]
    assert (out / "data.txt").read_text() == "content 0\n"

    # an unknown name: not found (exit 4), naming the ref and the store
    proc = run_cli("checkout", "kit@^7", str(tmp_path / "x"), "--store", store, env=env)
    assert proc.returncode == 4, proc.stderr
    assert "^7" in proc.stderr
    assert store in proc.stderr
    proc = run_cli("checkout", "other@stable", str(tmp_path / "x"), "--store", store, env=env)
    assert proc.returncode == 4, proc.stderr
    assert "other@stable" in proc.stderr
    assert store in proc.stderr
    assert not (tmp_path / "x").exists()


def test_checkout_of_a_name_needs_a_store_and_a_cached_snapshot(tmp_path: Path) -> None:
    env = cli_env(SNAPDIR_CACHE_DIR=str(tmp_path / "cache"))
    store = uri(tmp_path / "store")
    (t1,) = _trees(tmp_path, 1)
    p1 = _cli(env, "push", str(t1), "--store", store, "--tag", "kit@1.0.0")

    # without a store a name is a usage error that says what to give
    proc = run_cli("checkout", "kit@1.0.0", str(tmp_path / "x"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "kit@1.0.0" in proc.stderr
    assert "--store" in proc.stderr
    err = _cli(env, "checkout", "kit", str(tmp_path / "x"), status=2)["error"]
    assert err["code"] == "INVALID_STORE"

    # resolved, but not in the cache: say so, and how to get it
    proc = run_cli("checkout", "kit@1.0.0", str(tmp_path / "x"), "--store", store, env=env)
    assert proc.returncode == 4, proc.stderr
    assert p1["id"] in proc.stderr
    assert "fetch" in proc.stderr
    assert "local cache" in proc.stderr
    assert not (tmp_path / "x").exists()

    # ids and prefixes still come from the cache alone: no store needed, none opened
    _cli(env, "fetch", p1["id"], "--store", store)
    gone = cli_env(SNAPDIR_CACHE_DIR=str(tmp_path / "cache"), SNAPDIR_STORE="file:///nonexistent")
    out = tmp_path / "by-prefix"
    assert _cli(gone, "checkout", p1["id"][:10], str(out))["id"] == p1["id"]
    assert (out / "data.txt").read_text() == "content 0\n"
