"""The stat cache of pull/checkout: a destination file that a previous pull found right and
whose stat has not changed since is kept without being read; every change is still seen.

Files younger than the racy margin (2 s) are never recorded, so the destinations these tests
edit are pulled once per module, aged by one sleep, then pulled once more (which records
them) before each test gets its own.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import snapdir
from snapdir._common import OpStats
from snapdir._pull import pull_with_stats

#: name -> content; one file is large enough to be hashed through a mapping (>= 1 MiB).
FILES = {
    "a.txt": b"alpha\n",
    "dir/b.bin": bytes(range(256)) * 64,
    "dir/sub/c.txt": b"gamma" * 1000,
    "big.bin": os.urandom(3 << 20),
    "empty": b"",
}
#: The tests that each edit a destination of their own.
CASES = ("unchanged", "same-size", "new-inode", "chmod", "corrupt-cache", "off", "cli")


@dataclass
class World:
    store: str
    snap: str
    cache: Path
    dests: dict[str, Path]


def _pull(w: World, dest: Path, **kw: object) -> OpStats:
    async def go() -> OpStats:
        return await pull_with_stats(w.snap, w.store, dest, **kw)  # type: ignore[arg-type]

    return anyio.run(go)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("pullcache")
    src = base / "src"
    for rel, data in FILES.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    cache = base / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SNAPDIR_CACHE_DIR", str(cache))
        store = f"file://{base / 'store'}"
        snap = anyio.run(lambda: snapdir.push(src, store))
        w = World(store, snap, cache, {c: base / f"dest-{c}" for c in CASES})
        for dest in w.dests.values():
            assert _pull(w, dest)["files_written"] == len(FILES)
        time.sleep(2.2)  # past the racy margin: the next pull may record these files
        for dest in w.dests.values():
            s = _pull(w, dest)
            assert (s["files_kept"], s["files_unread"]) == (len(FILES), 0)
        yield w


@pytest.fixture
def w(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(world.cache))
    monkeypatch.delenv("SNAPDIR_STAT_CACHE", raising=False)
    return world


def _assert_is_snapshot(dest: Path) -> None:
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data, rel


def test_unchanged_files_are_kept_without_being_read(w: World) -> None:
    dest = w.dests["unchanged"]
    s = _pull(w, dest)
    assert (s["files_written"], s["files_kept"], s["files_unread"]) == (0, len(FILES), len(FILES))
    # Still so the next time (what was trusted is recorded again).
    assert _pull(w, dest)["files_unread"] == len(FILES)
    _assert_is_snapshot(dest)


def test_same_size_change_with_restored_mtime_is_seen(w: World) -> None:
    dest = w.dests["same-size"]
    target = dest / "dir" / "b.bin"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -r`: only ctime differs
    assert target.stat().st_mtime_ns == st.st_mtime_ns
    assert target.stat().st_size == st.st_size
    with pytest.raises(snapdir.ConflictError) as info:
        _pull(w, dest)
    assert "dir/b.bin" in str(info.value)
    s = _pull(w, dest, force=True)
    assert (s["files_written"], s["files_unread"]) == (1, len(FILES) - 1)
    _assert_is_snapshot(dest)


def test_a_file_replaced_by_a_new_inode_is_read_again(w: World) -> None:
    dest = w.dests["new-inode"]
    target = dest / "big.bin"
    st = target.stat()
    tmp = dest / "big.bin.new"
    shutil.copyfile(target, tmp)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, target)
    assert target.stat().st_ino != st.st_ino
    s = _pull(w, dest)
    # Same content: kept, but only after reading it.
    assert (s["files_written"], s["files_kept"], s["files_unread"]) == (
        0,
        len(FILES),
        len(FILES) - 1,
    )
    _assert_is_snapshot(dest)


def test_a_mode_change_is_read_again_and_repaired(w: World) -> None:
    dest = w.dests["chmod"]
    target = dest / "a.txt"
    mode = stat.S_IMODE(target.stat().st_mode)
    target.chmod(0o600)
    s = _pull(w, dest)
    assert (s["files_written"], s["files_unread"]) == (0, len(FILES) - 1)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    _assert_is_snapshot(dest)


def test_a_damaged_stamps_file_is_ignored(w: World) -> None:
    dest = w.dests["corrupt-cache"]
    files = sorted((w.cache / "statcache").glob("checkout-*"))
    assert files, "no stamps file was written"
    mine = [f for f in files if f.stat().st_size > 0]
    before = {f: f.read_bytes() for f in mine}
    try:
        for f in mine:
            data = bytearray(before[f])
            data[-1] ^= 0x01
            f.write_bytes(bytes(data))
        s = _pull(w, dest)
        assert (s["files_kept"], s["files_unread"]) == (len(FILES), 0)
        _assert_is_snapshot(dest)
    finally:
        for f, good in before.items():
            f.write_bytes(good)


def test_the_cache_can_be_turned_off(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = w.dests["off"]
    assert _pull(w, dest, use_cache=False)["files_unread"] == 0
    monkeypatch.setenv("SNAPDIR_STAT_CACHE", "0")
    assert _pull(w, dest)["files_unread"] == 0
    monkeypatch.delenv("SNAPDIR_STAT_CACHE")
    assert _pull(w, dest)["files_unread"] == len(FILES)


def test_cli_pull_reports_and_honours_no_stat_cache(w: World) -> None:
    import json
    import subprocess
    import sys

    dest = w.dests["cli"]
    env = dict(os.environ, SNAPDIR_CACHE_DIR=str(w.cache))
    base = [sys.executable, "-m", "snapdir", "pull", w.snap, str(dest), "--store", w.store]
    out = subprocess.run([*base, "--json"], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout)["files_unread"] == len(FILES)
    out = subprocess.run(
        [*base, "--json", "--no-stat-cache"], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(out.stdout)["files_unread"] == 0
