"""Trees at the edges of what a file system allows: nested 100,000 levels deep, paths longer
than PATH_MAX, and entries that are not files (FIFOs, sockets, devices).

Deep trees are built and removed without recursion (directory descriptors in a loop;
``rm -rf`` for the rest): Python's recursive ``shutil.rmtree`` would fail first.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import snapdir
from blake3 import blake3

EMPTY = blake3(b"").hexdigest()
T = TypeVar("T")


def snapdir_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process: a crash there shows as a signal, not as a dead test run."""
    r = subprocess.run(
        [sys.executable, "-m", "snapdir", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode >= 0, f"snapdir {args[0]} died of signal {-r.returncode}: {r.stderr}"
    if check:
        assert r.returncode == 0, r.stderr
    return r


def build_chain(root: Path, depth: int, name: str = "d", files: bool = True) -> None:
    """``root/name/name/...`` ``depth`` levels deep, with a file ``f`` holding its level at
    every level when ``files``; each step relative to the previous directory's descriptor."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for k in range(depth):
            if files:
                f = os.open("f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                os.write(f, str(k).encode())
                os.close(f)
            os.mkdir(name, 0o755, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)


def chain_manifest(depth: int, name: str = "d") -> str:
    """The manifest of :func:`build_chain` (mode 0755/0644), computed bottom-up without
    walking anything."""
    lines = []
    below, below_size = EMPTY, 0
    for k in reversed(range(depth)):
        rel = "./" + f"{name}/" * k
        content = str(k).encode()
        f = blake3(content).hexdigest()
        lines.append(f"D 755 {below} {below_size} {rel}{name}/")
        lines.append(f"F 644 {f} {len(content)} {rel}f")
        below = blake3("".join(sorted({f, below})).encode()).hexdigest()
        below_size += len(content)
    lines.append(f"D 755 {below} {below_size} ./")
    return "\n".join(sorted(lines, key=lambda line: line.split(" ", 4)[4].encode()))


def remove_chain(root: Path, name: str = "d") -> None:
    """Removes a tree made by :func:`build_chain`: down to its bottom one descriptor at a
    time, then up through ``..``, removing each level (much faster than ``rm -rf``)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    while True:
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            break
        os.close(fd)
        fd, depth = sub, depth + 1
    for _ in range(depth + 1):
        for entry in os.listdir(fd):
            if entry != name:
                os.unlink(entry, dir_fd=fd)
        if _ == depth:
            break
        up = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = up
        os.rmdir(name, dir_fd=fd)
    os.close(fd)
    os.rmdir(root)


def remove(path: Path) -> None:
    # GNU rm walks with fts: any depth, any path length.
    subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.fixture(scope="module")
def fast_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where to build the deep trees: a tmpfs when there is one (making and removing
    100,000 directories there takes seconds, on a busy disk minutes), else pytest's."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="snapdir-test-", dir=shm))
        yield d
        remove(d)
    else:
        yield tmp_path_factory.mktemp("deep")


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied with ``rm -rf`` afterwards (pytest's own clean-up recurses)."""
    yield tmp_path
    for p in tmp_path.iterdir():
        remove(p)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- 100,000 levels -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def abyss(fast_tmp: Path) -> Iterator[Path]:
    """A tree nested 100,000 directories deep (paths of 200,000 bytes)."""
    build_chain(fast_tmp / "abyss", 100_000, files=False)
    yield fast_tmp / "abyss"
    remove_chain(fast_tmp / "abyss")


def test_100000_levels_fail_clearly_in_every_command(abyss: Path, tmp_path: Path) -> None:
    # Its manifest would hold 100,000 paths of up to 200,000 bytes (10 GB): every command
    # that walks it stops at the snapshot path limit with an error naming where, never a
    # crash (which is what the recursive walk did at about 2,000 levels).
    store = f"file://{tmp_path / 'store'}"
    for args in (
        ["id", str(abyss)],
        ["manifest", str(abyss)],
        ["push", str(abyss), "--store", store],
        ["diff", "--from", str(abyss), "--to", str(abyss)],
    ):
        r = snapdir_cli(*args, check=False)
        assert r.returncode != 0, args
        err = r.stderr
        for part in ("cannot snapshot", "32768", str(abyss), "d/d/d"):
            assert part in err, (args, err)
        assert len(err) < 2000, (args, err)
    with pytest.raises(snapdir.InvalidArgumentError, match="levels deep"):
        run(snapdir.id(abyss))
    assert not (tmp_path / "store" / ".manifests").exists() or not any(
        (tmp_path / "store" / ".manifests").rglob("*")
    )


def test_100000_levels_below_an_exclusion_are_never_visited(abyss: Path) -> None:
    # Excluding the chain below some depth makes the same tree a snapshot like any other.
    m = run(snapdir.manifest(abyss, exclude=["^" + "./" + "d/" * 50]))
    assert isinstance(m, snapdir.Manifest)
    assert len(m.entries) == 50
    assert m.entries[-1].path == "./" + "d/" * 49


# --- deep and long, working -------------------------------------------------------------------


DEPTH = 5_000  # 2.5 x where the recursive walk crashed; paths of 10,000 bytes


@pytest.fixture(scope="module")
def deep(fast_tmp: Path) -> Iterator[Path]:
    build_chain(fast_tmp / "deep", DEPTH)
    yield fast_tmp / "deep"
    remove_chain(fast_tmp / "deep")


def test_deep_tree_id_manifest_push_verify_size_diff(deep: Path, fast_tmp: Path) -> None:
    expected = chain_manifest(DEPTH)
    expected_id = blake3((expected + "\n").encode()).hexdigest()
    m = run(snapdir.manifest(deep))
    assert isinstance(m, snapdir.Manifest)
    assert m.raw == expected
    assert snapdir_cli("id", str(deep)).stdout.strip() == expected_id
    assert snapdir_cli("manifest", str(deep)).stdout.rstrip("\n") == expected

    store = f"file://{fast_tmp / 'store'}"
    assert snapdir_cli("push", str(deep), "--store", store).stdout.strip() == expected_id
    # Again: nothing changed (the stat cache vouches for every file).
    assert snapdir_cli("push", str(deep), "--store", store).stdout.strip() == expected_id
    # Into an empty store with a warm stat cache: the files the cache vouched for are read
    # again for the store by their paths, 10,000 bytes long.
    store2 = f"file://{fast_tmp / 'store2'}"
    assert snapdir_cli("push", str(deep), "--store", store2).stdout.strip() == expected_id
    for s in (store, store2):
        snapdir_cli("verify", "--id", expected_id, "--store", s)
        size = json.loads(snapdir_cli("size", "--json", "--id", expected_id, "--store", s).stdout)
        assert size["files"] == DEPTH, size
        assert size["logical_bytes"] == sum(len(str(k)) for k in range(DEPTH)), size
    diff = snapdir_cli("diff", "--json", "--from", str(deep), "--to", f"{store}@{expected_id}")
    assert json.loads(diff.stdout) == {
        "changed": False,
        "entries": [],
        "schema": 1,
        "warnings": [],
    }


def test_deep_tree_walks_with_few_file_descriptors(deep: Path) -> None:
    # With 64 descriptors, 5,000 levels still walk: the walk keeps a window of open
    # directories and reopens ancestors through "..".
    code = (
        "import asyncio, resource, sys, snapdir\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit("
        "resource.RLIMIT_NOFILE)[1]))\n"
        "print(asyncio.run(snapdir.id(sys.argv[1], use_cache=False)))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(deep)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    expected = chain_manifest(DEPTH)
    assert r.stdout.strip() == blake3((expected + "\n").encode()).hexdigest()


def test_running_out_of_descriptors_is_reported_as_such(tmp_path: Path) -> None:
    root = tmp_path / "t"
    build_chain(root, 5)
    code = (
        "import asyncio, os, resource, sys, snapdir\n"
        "async def main():\n"
        "    top = max(int(n) for n in os.listdir('/proc/self/fd'))\n"
        "    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        # Room for the root only: its first sub-directory cannot be opened.
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (top + 3, hard))\n"
        "    try:\n"
        "        await snapdir.id(sys.argv[1], use_cache=False)\n"
        "    except snapdir.SnapdirError as e:\n"
        "        print(type(e).__name__, e.code, e.errno, e)\n"
        "asyncio.run(main())\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("SnapdirIOError IO_ERROR 24 "), out
    assert "out of file descriptors" in out, out
    assert str(root) in out, out


# --- paths longer than PATH_MAX ---------------------------------------------------------------


def test_paths_longer_than_path_max_walk_and_push(scratch: Path) -> None:
    root = scratch / "long"
    root.mkdir()
    name = "n" * 250
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(30):  # 30 x 251 bytes: 7,530-byte paths
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        for f, data in (("a", b"alpha"), ("b", b"beta" * 10_000)):
            h = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(h, data)
            os.close(h)
        os.symlink("a", "to-a", dir_fd=fd)
    finally:
        os.close(fd)
    m = run(snapdir.manifest(root))
    assert isinstance(m, snapdir.Manifest)
    deepest = "./" + f"{name}/" * 30
    assert len(deepest) > 4096
    files = {e.path: e for e in m.entries if e.path.startswith(deepest) and e.path != deepest}
    assert set(files) == {deepest + "a", deepest + "b", deepest + "to-a"}
    assert files[deepest + "a"].checksum == blake3(b"alpha").hexdigest()
    assert files[deepest + "to-a"].checksum == blake3(b"alpha").hexdigest()
    assert files[deepest + "b"].size == 40_000

    for s in ("s1", "s2"):  # the second with a warm stat cache: files reread by path
        store = f"file://{scratch / s}"
        assert snapdir_cli("push", str(root), "--store", store).stdout.strip() == m.id
        snapdir_cli("verify", "--id", m.id, "--store", store)
        objects = scratch / s / ".objects"
        n = sum(1 for p in objects.rglob("*") if p.is_file())
        assert n == 2  # alpha (twice in the tree, once stored) and beta


# --- FIFOs, sockets, devices -------------------------------------------------------------------


def test_fifos_sockets_and_devices_are_skipped_with_a_warning_naming_each(
    tmp_path: Path,
) -> None:
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    (root / "keep.txt").write_text("kept\n")
    os.mkfifo(root / "sub" / "pipe")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    assert len(os.fsencode(root / "sock")) < 100
    sock.bind(str(root / "sock"))
    expected = {"FIFO": root / "sub" / "pipe", "socket": root / "sock"}
    if os.geteuid() == 0:
        os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected["character device"] = root / "null"
    try:
        # Twice: the second walk reuses the listings from the stat cache, and warns again.
        for _ in range(2):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                m = run(snapdir.manifest(root))
            assert isinstance(m, snapdir.Manifest)
            assert [e.path for e in m.entries] == ["./", "./keep.txt", "./sub/"]
            messages = [str(w.message) for w in caught if w.category is snapdir.SnapdirWarning]
            assert len(messages) == len(expected), messages
            for kind, path in expected.items():
                assert any(f'skipping {kind} "{path}"' in msg for msg in messages), messages
        # The CLI prints them; a push warns too.
        r = snapdir_cli("push", str(root), "--store", f"file://{tmp_path / 'store'}")
        assert r.stdout.strip() == m.id
        for kind, path in expected.items():
            assert f'snapdir: warning: skipping {kind} "{path}"' in r.stderr, r.stderr
        # An excluded one is not warned about.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(snapdir.id(root, exclude=["pipe$", "sock$", "null$"]))
        assert not [w for w in caught if w.category is snapdir.SnapdirWarning]
    finally:
        sock.close()
