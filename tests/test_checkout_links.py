"""Hard-link and reflink checkouts from the local cache (docs/checkout-links.md).

Reflinks need a file system that clones: the test makes one, an XFS image with
``reflink=1`` loop-mounted for the module (root and ``mkfs.xfs`` needed; ``.ci/run``
installs xfsprogs). Where that is impossible the test is skipped, which CI
(``SNAPDIR_TEST_NO_SKIP=1``) turns into a failure. ``/dev/shm`` (tmpfs) is the file system
that cannot clone and a second device for cross-device links.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import snapdir
from snapdir import _snapdir
from snapdir._cache import cache_dir
from snapdir._pull import pull_with_stats
from snapdir.stores.file import FileStore


def build(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha" * 100)
    (root / "sub" / "same.txt").write_bytes(b"alpha" * 100)  # same object as a.txt
    (root / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "suid").write_bytes(b"setuid program")
    os.chmod(root / "suid", 0o4755)


def stage(root: Path) -> str:
    return asyncio.run(snapdir.stage(root))


def tree_id(root: Path) -> str:
    return asyncio.run(snapdir.id(root, use_cache=False))


def object_of(checksum: str) -> Path:
    return Path(FileStore("file://" + cache_dir()).object_path(checksum))


def entries(root: Path) -> dict[str, snapdir.ManifestEntry]:
    m = asyncio.run(snapdir.manifest(root, use_cache=False))
    return {e.path: e for e in m.entries}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    build(root)
    return root


def shm_dir() -> Path:
    """A fresh directory on /dev/shm (tmpfs: cannot clone; another device than /tmp)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine")
    return Path(tempfile.mkdtemp(prefix="snapdir-links-", dir="/dev/shm"))


@pytest.fixture
def shm() -> Iterator[Path]:
    d = shm_dir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A loop-mounted XFS with reflink support, for the module."""
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None or shutil.which("mount") is None:
        pytest.skip("a reflink file system needs root and mkfs.xfs (Debian: xfsprogs)")
    base = tmp_path_factory.mktemp("xfs")
    img, mnt = base / "xfs.img", base / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(320 << 20)  # sparse; XFS wants at least 300 MiB
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(img)], check=True)
    r = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot loop-mount an XFS image: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_hardlink_checkout_links_the_cache_objects(src: Path, tmp_path: Path) -> None:
    sid = stage(src)
    dest = tmp_path / "dest"
    asyncio.run(snapdir.checkout(sid, dest, link="hardlink"))
    want = entries(src)
    got = entries(dest)
    # Same tree, except the setuid bit, which is never applied unless asked for.
    assert got["./suid"].permissions == 0o755
    assert want["./suid"].permissions == 0o4755
    del want["./suid"], got["./suid"]
    assert got == want
    for rel in ("a.txt", "sub/same.txt", "sub/b.bin"):
        st = (dest / rel).stat()
        obj = object_of(entries(dest)["./" + rel].checksum)
        assert st.st_ino == obj.stat().st_ino, rel
        assert st.st_nlink >= 2, rel
    assert (dest / "a.txt").stat().st_ino == (dest / "sub" / "same.txt").stat().st_ino
    # Modes other than the objects' 0644 are copies: a link would change the object's mode.
    # Empty files are always created (nothing to share).
    for rel in ("run.sh", "suid", "empty"):
        assert (dest / rel).stat().st_nlink == 1, rel
    assert object_of(entries(dest)["./run.sh"].checksum).stat().st_mode & 0o7777 == 0o644
    # Files already right are not rewritten.
    s = asyncio.run(pull_with_stats(sid, "file://" + cache_dir(), dest, link="hardlink"))
    assert (s["files_written"], s["files_kept"]) == (0, 6)


def test_mode_change_never_goes_through_a_link(src: Path, tmp_path: Path) -> None:
    sid = stage(src)
    dest = tmp_path / "dest"
    asyncio.run(snapdir.checkout(sid, dest, link="hardlink"))
    obj = object_of(entries(src)["./a.txt"].checksum)
    # The next snapshot has the same content with another mode: the checkout must not
    # chmod the shared inode (the cache object, and every other checkout linked to it).
    os.chmod(src / "a.txt", 0o600)
    sid2 = stage(src)
    asyncio.run(snapdir.checkout(sid2, dest))
    assert (dest / "a.txt").stat().st_mode & 0o7777 == 0o600
    assert (dest / "a.txt").stat().st_ino != obj.stat().st_ino
    assert obj.stat().st_mode & 0o7777 == 0o644
    assert (dest / "sub" / "same.txt").stat().st_ino == obj.stat().st_ino
    os.chmod(dest / "suid", 0o4755)  # not applied by the checkout (not asked for)
    assert tree_id(dest) == sid2


def test_editing_a_hardlinked_file_in_place_is_detected(src: Path, tmp_path: Path) -> None:
    sid = stage(src)
    dest = tmp_path / "dest"
    asyncio.run(snapdir.checkout(sid, dest, link="hardlink"))
    with open(dest / "sub" / "b.bin", "r+b") as f:  # in place: the cache object changes too
        f.write(b"X")
    store = "file://" + cache_dir()
    with pytest.raises(snapdir.SnapdirError):
        asyncio.run(snapdir.verify(sid, store))
    # The next use of the object finds it, and the new destination is not created.
    for link in ("hardlink", "copy"):
        other = tmp_path / f"other-{link}"
        with pytest.raises(snapdir.HashMismatchError) as ei:
            asyncio.run(snapdir.checkout(sid, other, link=link))
        assert entries(src)["./sub/b.bin"].checksum in str(ei.value)
        assert not other.exists()
    # A push into the cache with repair rewrites the object from the good tree.
    asyncio.run(snapdir.push(src, store, repair=True))
    asyncio.run(snapdir.verify(sid, store))


def test_hardlink_across_file_systems_is_an_error(src: Path, shm: Path) -> None:
    sid = stage(src)  # cache on the test's tmp directory, destination on tmpfs
    assert os.stat(cache_dir()).st_dev != shm.stat().st_dev
    dest = shm / "dest"
    with pytest.raises(snapdir.SnapdirError) as ei:
        asyncio.run(snapdir.checkout(sid, dest, link="hardlink"))
    assert isinstance(ei.value, OSError)
    assert ei.value.errno == errno.EXDEV
    assert "tmpfs" in str(ei.value)
    assert str(dest) in str(ei.value)
    assert not dest.exists()


def test_reflink_where_the_file_system_cannot_clone_is_an_error(
    src: Path, shm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(shm / "cache"))
    sid = stage(src)
    dest = shm / "dest"
    with pytest.raises(snapdir.SnapdirError) as ei:
        asyncio.run(snapdir.checkout(sid, dest, link="reflink"))
    assert isinstance(ei.value, OSError)
    assert ei.value.errno == errno.EOPNOTSUPP
    assert "(tmpfs)" in str(ei.value)
    assert not dest.exists()
    # The same checkout with copies works.
    asyncio.run(snapdir.checkout(sid, dest, link="copy"))
    assert entries(dest)["./sub/b.bin"] == entries(src)["./sub/b.bin"]


def test_reflink_checkout_on_a_cloning_file_system(
    src: Path, xfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(xfs / "cache"))
    shutil.rmtree(xfs / "cache", ignore_errors=True)
    sid = stage(src)
    dest = xfs / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    asyncio.run(snapdir.checkout(sid, dest, link="reflink"))
    assert entries(dest)["./run.sh"].permissions == 0o755
    assert entries(dest)["./suid"].permissions == 0o755
    os.chmod(dest / "suid", 0o4755)
    assert tree_id(dest) == sid
    os.chmod(dest / "suid", 0o755)
    # Clones: own inodes sharing the object's blocks.
    b = dest / "sub" / "b.bin"
    obj = object_of(entries(src)["./sub/b.bin"].checksum)
    assert b.stat().st_ino != obj.stat().st_ino
    assert b.stat().st_nlink == 1
    frag = subprocess.run(["filefrag", "-v", str(b)], capture_output=True, text=True, check=True)
    assert "shared" in frag.stdout
    # Editing a clone in place leaves the cache intact.
    with open(b, "r+b") as f:
        f.write(b"X")
    asyncio.run(snapdir.verify(sid, "file://" + cache_dir()))
    # A pull from another store goes through the cache: fetched there, then cloned.
    store = xfs / "store"
    shutil.rmtree(store, ignore_errors=True)
    asyncio.run(snapdir.push(src, f"file://{store}"))
    shutil.rmtree(xfs / "cache")
    dest2 = xfs / "dest2"
    shutil.rmtree(dest2, ignore_errors=True)
    asyncio.run(snapdir.pull(sid, f"file://{store}", dest2, link="reflink"))
    assert asyncio.run(FileStore("file://" + cache_dir()).has_manifest(sid))
    assert (
        "shared"
        in subprocess.run(
            ["filefrag", "-v", str(dest2 / "sub" / "b.bin")], capture_output=True, text=True
        ).stdout
    )


def test_pull_with_links_fetches_into_the_cache(src: Path, tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    sid = asyncio.run(snapdir.push(src, store, use_cache=False))
    dest = tmp_path / "dest"
    s = asyncio.run(pull_with_stats(sid, store, dest, link="hardlink"))
    assert s["files_written"] == 6
    obj = object_of(entries(src)["./a.txt"].checksum)
    assert (dest / "a.txt").stat().st_ino == obj.stat().st_ino
    store_obj = Path(FileStore(store).object_path(entries(src)["./a.txt"].checksum))
    assert (dest / "a.txt").stat().st_ino != store_obj.stat().st_ino


def test_invalid_link_mode(src: Path, tmp_path: Path) -> None:
    sid = stage(src)
    with pytest.raises(snapdir.InvalidArgumentError):
        asyncio.run(snapdir.checkout(sid, tmp_path / "d", link="symlink"))  # type: ignore[arg-type]
    with pytest.raises(snapdir.InvalidArgumentError):
        _snapdir.plan_checkout(
            asyncio.run(snapdir.manifest(src)), str(tmp_path / "d"), link="symlink"
        )


def test_cli_link_flag(src: Path, tmp_path: Path, shm: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "snapdir", *args], capture_output=True, text=True
        )

    sid = stage(src)
    r = cli("checkout", "--link", "hardlink", sid, str(tmp_path / "d1"))
    assert r.returncode == 0, r.stderr
    obj = object_of(entries(src)["./a.txt"].checksum)
    assert (tmp_path / "d1" / "a.txt").stat().st_ino == obj.stat().st_ino
    r = cli("pull", "--store", "file://" + cache_dir(), "--link", "copy", sid, str(tmp_path / "d2"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d2" / "a.txt").stat().st_nlink == 1
    r = cli("checkout", "--link", "hardlink", sid, str(shm / "d3"))
    assert r.returncode != 0
    assert "cross-device" in r.stderr.lower() or "file system" in r.stderr
    r = cli("checkout", "--link", "symlink", sid, str(tmp_path / "d4"))
    assert r.returncode == 2
    assert "invalid choice" in r.stderr
