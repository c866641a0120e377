"""Local state is untrusted input (docs/statcache.md, "Who may write there" and "Untrusted
files"): the stat cache, the checkout stamps and the cache directory itself.

Whatever is in place of a cache file (FIFO, socket, device, symbolic link, directory), the
operation finishes promptly, in bounded memory, with the right answer. A cache directory
another user could write to is not believed. A record taken on another file system (other
``st_dev`` or ``f_fsid``) is not trusted. Every operation that reads local state runs in a
child process with a time limit, so a hang fails the test instead of the suite.

The crafted files come from ``scripts/local_state_campaign.py`` (its parsers and sealers
follow docs/statcache.md), which also runs here in its CI size.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
import snapdir
from snapdir import _snapdir
from snapdir._manifest import stat_cache_dir

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local_state_campaign.py"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="only root can give files away / mknod")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_state_campaign", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


camp = _load_script()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("localstate")
    os.chmod(base, 0o700)
    return camp.build_world(base)


@pytest.fixture
def cache(world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the world's good cache, used by this test's operations; the destination
    is put back to the snapshot's content first."""
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    c = work / "cache"
    shutil.copytree(world.good_cache, c, symlinks=True)
    camp.restore_dest(world)
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(c))
    monkeypatch.delenv("SNAPDIR_STAT_CACHE", raising=False)
    monkeypatch.delenv("SNAPDIR_NO_STAT_CACHE", raising=False)
    yield c
    shutil.rmtree(work, ignore_errors=True)


def run_child(world: Any, cache: Path, timeout: float = 60) -> dict[str, Any]:
    """``id`` of the tree and a forced incremental pull, in a child with a time limit."""
    env = dict(os.environ, SNAPDIR_CACHE_DIR=str(cache))
    t0 = time.monotonic()
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            camp.CHILD,
            str(world.tree),
            str(world.dest),
            world.store,
            world.snap,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stderr
    r: dict[str, Any] = json.loads(p.stdout)
    r["seconds"] = time.monotonic() - t0
    return r


def assert_right(world: Any, r: dict[str, Any]) -> None:
    assert r["id"] == world.expected_id
    for rel, data in camp.FILES.items():
        assert (world.dest / rel).read_bytes() == data, rel
    # Bounded: the interpreter and a few MiB, never a file read without end.
    assert r["maxrss_kb"] < 200 * 1024, r["maxrss_kb"]


def put_special(target: Path, kind: str, other: Path | None = None) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink()
    if kind == "fifo":
        os.mkfifo(target, 0o600)
    elif kind == "socket":
        camp.make_socket(target)
    elif kind == "devzero-link":
        os.symlink("/dev/zero", target)
    elif kind == "devzero-node":
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    elif kind == "directory":
        target.mkdir()
    elif kind == "link-to-valid":
        assert other is not None
        os.symlink(other, target)
    else:
        raise AssertionError(kind)


KINDS = [
    "fifo",
    "socket",
    "devzero-link",
    pytest.param("devzero-node", marks=needs_root),
    "directory",
    "link-to-valid",
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["walk", "stamps"])
@pytest.mark.parametrize("kind", KINDS)
def test_special_file_in_place_of_a_cache_file(
    world: Any, cache: Path, kind: str, which: str
) -> None:
    walk_file, stamps_file = camp.cache_files(cache)
    target = walk_file if which == "walk" else stamps_file
    # Through the link: a valid file of ours that lies (a walk's record with another
    # checksum); followed, it would give a wrong id.
    other = cache.parent / "elsewhere"
    shutil.copyfile(target, other)
    if which == "walk":
        camp.plant_lie(other)
    put_special(target, kind, other)
    r = run_child(world, cache)
    assert_right(world, r)
    assert r["seconds"] < 30
    if which == "walk":
        assert any("ignoring the cache file" in m for m in r["warnings"]), r["warnings"]
        # Whatever a rename can replace is replaced by a good file again (not a directory).
        if kind != "directory":
            assert stat.S_ISREG(os.lstat(walk_file).st_mode)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["fifo", "socket", "devzero-link", "link-to-valid"])
def test_special_file_in_place_of_the_statcache_directory(
    world: Any, cache: Path, kind: str
) -> None:
    sc = cache / "statcache"
    # Through the link: a directory others can write to, holding records that lie. (A link
    # to a private directory of ours is fine: the resolved path is what is checked.)
    other = cache.parent / "foreign"
    shutil.copytree(sc, other)
    for f in other.iterdir():
        camp.plant_lie(f)
    os.chmod(other, 0o777)
    put_special(sc, kind, other)
    r = run_child(world, cache)
    assert_right(world, r)
    assert r["unread"] == 0
    why = "writable by group or others" if kind == "link-to-valid" else "not a directory"
    assert any("not using the stat cache" in m and why in m for m in r["warnings"])


def _untrust(cache: Path, how: str) -> None:
    sc = cache / "statcache"
    if how == "nobody-cache":
        os.chown(cache, camp.NOBODY, camp.NOBODY)
    elif how == "nobody-statcache":
        os.chown(sc, camp.NOBODY, camp.NOBODY)
    elif how == "statcache-g+w":
        os.chmod(sc, 0o770)
    elif how == "cache-o+w":
        os.chmod(cache, 0o703)
    elif how == "parent-o+w":
        os.chmod(cache.parent, 0o777)
    else:
        raise AssertionError(how)


def _plant_lies(cache: Path) -> None:
    for f in camp.cache_files(cache):
        camp.plant_lie(f)


UNTRUSTED = [
    pytest.param("nobody-cache", marks=needs_root),
    pytest.param("nobody-statcache", marks=needs_root),
    "statcache-g+w",
    "cache-o+w",
    "parent-o+w",
]


def test_a_planted_record_in_a_trusted_directory_is_believed(world: Any, cache: Path) -> None:
    """The control for the next tests: the planted records do lie (the cache is trusted by
    design where only we can write), so their tests would fail if the directory's owner
    and mode were not checked."""
    _plant_lies(cache)
    r = run_child(world, cache)
    assert r["id"] != world.expected_id
    assert r["unread"] > 0
    assert any((world.dest / rel).read_bytes() != d for rel, d in camp.FILES.items())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", UNTRUSTED)
def test_an_untrusted_cache_directory_is_ignored_with_a_warning(
    world: Any, cache: Path, how: str
) -> None:
    _plant_lies(cache)
    _untrust(cache, how)
    r = run_child(world, cache)
    assert_right(world, r)
    assert r["unread"] == 0
    warned = [m for m in r["warnings"] if "not using the stat cache" in m]
    assert warned, r["warnings"]
    assert str(cache) in warned[0]
    assert ("owned by" in warned[0]) == how.startswith("nobody")


def test_a_sticky_world_writable_parent_is_trusted(world: Any, cache: Path) -> None:
    """Like /tmp: others cannot rename or remove what is ours in it."""
    os.chmod(cache.parent, 0o1777)
    prog = _snapdir.Progress()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc = stat_cache_dir()
    assert sc == str(cache / "statcache")
    _snapdir.walk(str(world.tree), False, False, [], None, prog, sc, False)
    assert prog.reused == len(camp.FILES)


@needs_root
@pytest.mark.parametrize("how", ["nobody-cache", "cache-o+w"])
def test_an_untrusted_object_cache_is_refused(world: Any, cache: Path, how: str) -> None:
    _untrust(cache, how)
    with pytest.raises(snapdir.UnsafePathError, match="refusing to use the local cache") as ei:
        anyio.run(lambda: snapdir.stage(world.tree))
    assert str(cache) in str(ei.value)
    dest = cache.parent / "linked"
    with pytest.raises(snapdir.UnsafePathError):
        anyio.run(lambda: snapdir.pull(world.snap, world.store, dest, link="hardlink"))
    assert not dest.exists()


def test_a_missing_cache_directory_is_created_private(
    world: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.umask(0o002)  # group-writable by default: ours must not be
    try:
        c = tmp_path / "new" / "deeper" / "cache"
        monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(c))
        assert stat_cache_dir() == str(c / "statcache")
        for d in (tmp_path / "new", c, c / "statcache"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    finally:
        os.umask(old)


@pytest.mark.parametrize("how", ["file-dev", "fsid", "fs-type"])
def test_a_record_from_another_file_system_is_not_trusted(
    world: Any, cache: Path, how: str
) -> None:
    """The lies of the control test, each re-sealed with another ``st_dev`` for the files,
    or another identity for the file system (same device number: another disk or image
    mounted in its place), or a type without a real ctime."""
    walk_file, stamps_file = camp.cache_files(cache)
    for f in (walk_file, stamps_file):
        camp.plant_lie(f)
    c = camp.StatCacheFile.parse(walk_file.read_bytes())
    s = camp.StampsFile.parse(stamps_file.read_bytes())
    if how == "file-dev":
        for _d, ch in c.file_recs():
            ch.rec[0] += 1
        for _rel, rec in s.recs:
            rec[0] += 1
    elif how == "fsid":
        for dv in [*c.devs, s.fs]:
            dv[2] = bytes(b ^ 0x5A for b in dv[2])
    else:
        for dv in [*c.devs, s.fs]:
            dv[1] = 0x4D44  # vfat
    walk_file.write_bytes(c.encode())
    stamps_file.write_bytes(s.encode())
    r = run_child(world, cache)
    assert_right(world, r)
    assert r["unread"] == 0


def test_an_older_cache_version_is_ignored_and_replaced(world: Any, cache: Path) -> None:
    walk_file, stamps_file = camp.cache_files(cache)
    c = camp.StatCacheFile.parse(walk_file.read_bytes())
    for _d, ch in c.file_recs():
        ch.rec[6] = bytes(32)
    c.version = 2
    walk_file.write_bytes(c.encode())
    s = camp.StampsFile.parse(stamps_file.read_bytes())
    s.version = 1
    stamps_file.write_bytes(s.encode())
    r = run_child(world, cache)
    assert_right(world, r)
    assert r["unread"] == 0
    assert camp.StatCacheFile.parse(walk_file.read_bytes()).version == 3


@pytest.mark.parametrize("value", ["1", "true", "yes", "on"])
def test_snapdir_no_stat_cache_turns_it_off(
    world: Any, cache: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    _plant_lies(cache)  # believed if read: the answers show whether the cache was used
    before = {p: p.read_bytes() for p in (cache / "statcache").iterdir()}
    monkeypatch.setenv("SNAPDIR_NO_STAT_CACHE", value)
    assert stat_cache_dir() is None
    r = run_child(world, cache)
    assert_right(world, r)
    assert r["unread"] == 0
    after = {p: p.read_bytes() for p in (cache / "statcache").iterdir()}
    assert after == before, "written although off"
    # The CLI too.
    out = subprocess.run(
        [sys.executable, "-m", "snapdir", "id", str(world.tree)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == world.expected_id
    # Other values leave it on.
    monkeypatch.setenv("SNAPDIR_NO_STAT_CACHE", "0")
    assert stat_cache_dir() == str(cache / "statcache")


@pytest.mark.timeout(600)
def test_quick_campaign(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "25", "--seed", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=580,
    )
    res = json.loads(out.read_text())
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert (res["wrong_ids"], res["wrong_already_right"], res["hangs"], res["crashes"]) == (
        0,
        0,
        0,
        0,
    )
    assert res["rounds"] == 25
    assert sum(sum(v.values()) for v in res["by_kind"].values()) == 25


@pytest.mark.parametrize("how", ["size", "symlink"])
def test_stamps_never_vouch_for_a_file_of_another_size_or_type(
    world: Any, cache: Path, how: str
) -> None:
    """Even a record that matches the file's current stat exactly (re-sealed, in a trusted
    directory) cannot make a pull keep a file of another size, or a symbolic link: those
    are told apart before any stamp is looked at."""
    _walk, stamps_file = camp.cache_files(cache)
    s = camp.StampsFile.parse(stamps_file.read_bytes())
    rel = "sub/b.bin"
    p = world.dest / rel
    if how == "size":
        with open(p, "ab") as f:
            f.write(b"more")
    else:
        right = world.dest / "right-content"
        right.write_bytes(camp.FILES[rel])
        p.unlink()
        os.symlink(right, p)
    st = os.lstat(p)
    for r, rec in s.recs:
        if r == rel.encode():
            rec[:6] = [
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_mode,
            ]
    stamps_file.write_bytes(s.encode())

    def unchanged(rel: bytes, rec: list[Any]) -> bool:
        st = os.lstat(world.dest / rel.decode())
        now = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]
        return bool(rec[:6] == now)

    # The other files whose records still match (earlier tests may have rewritten some).
    trusted = sum(unchanged(r, rec) for r, rec in s.recs if r != rel.encode())
    r = run_child(world, cache)
    if how == "symlink":
        os.unlink(world.dest / "right-content")
    assert_right(world, r)
    assert stat.S_ISREG(os.lstat(p).st_mode)
    assert r["unread"] == trusted


@needs_root
def test_records_are_only_trusted_on_file_systems_with_a_real_ctime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk's records and a pull's stamps are used on tmpfs (in the list of local file
    systems with a real ctime) and not on ramfs (not in it: every file is read there), on
    real mounts. The list is checked by ``statfs`` type, once per device."""
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(tmp_path / "cache"))
    mounts = {"tmpfs": tmp_path / "tmpfs", "ramfs": tmp_path / "ramfs"}
    for fstype, mnt in mounts.items():
        mnt.mkdir()
        opts = "size=16m,mode=0700" if fstype == "tmpfs" else "mode=0700"
        p = subprocess.run(
            ["mount", "-t", fstype, "-o", opts, fstype, str(mnt)], capture_output=True, text=True
        )
        assert p.returncode == 0, f"cannot mount {fstype} at {mnt}: {p.stderr}"
    try:
        store = f"file://{tmp_path / 'store'}"
        snaps = {}
        for fstype, mnt in mounts.items():
            for rel, data in camp.FILES.items():
                f = mnt / "tree" / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
            snaps[fstype] = anyio.run(snapdir.push, mnt / "tree", store)
            anyio.run(snapdir.pull, snaps[fstype], store, mnt / "dest")
        time.sleep(2.2)  # past the racy margin
        from snapdir._pull import pull_with_stats

        got = {}
        for fstype, mnt in mounts.items():
            sc = stat_cache_dir()
            for _ in range(2):
                prog = _snapdir.Progress()
                m, _w = _snapdir.walk(str(mnt / "tree"), False, False, [], None, prog, sc, False)
                assert m.id == snaps[fstype]
            unread = 0
            for _ in range(2):
                stats = anyio.run(pull_with_stats, snaps[fstype], store, mnt / "dest")
                unread = stats["files_unread"]
            got[fstype] = (prog.reused, prog.dirs_reused, unread)
        n = len(camp.FILES)
        assert got["tmpfs"] == (n, 3, n)
        assert got["ramfs"] == (0, 0, 0)
    finally:
        for mnt in mounts.values():
            subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
