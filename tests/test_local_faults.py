"""Local faults: a full disk (a small private tmpfs), read-only file systems, files and
directories the user may not read or write (privileges dropped to ``nobody`` in a
subprocess). Each failure must be a clear error naming the path, leave stores and
destinations consistent, and a re-run after the fault is gone must succeed.

These tests mount tmpfs file systems, so they need root (they fail, never skip, without it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import snapdir
import storeutil
from servers.seaweed import S3Server
from storeutil import (
    cli_env,
    files_below,
    make_store,
    make_writable,
    manifest_for,
    manifest_rel,
    remount,
    run,
    run_op_as,
    staging_leftovers,
    tmpfs,
    tree_state,
    uri,
    write,
)

MiB = 1 << 20


def five_mib_tree(root: Path) -> Path:
    for i in range(5):
        write(root / f"big{i}.bin", os.urandom(MiB))
    for i in range(20):
        write(root / "small" / f"{i}.txt", f"small {i}\n")
    return root


def push(path: Path, store: Path) -> str:
    async def go() -> str:
        return await snapdir.push(path, uri(store))

    return run(go)


def pull(sid: str, store: Path, dest: Path, **kw: bool) -> None:
    async def go() -> None:
        await snapdir.pull(sid, uri(store), dest, force=kw.get("force", False))

    run(go)


def verify(sid: str, store: Path) -> bool:
    async def go() -> bool:
        return await snapdir.verify(sid, uri(store))

    return run(go)


def tree_id(path: Path) -> str:
    async def go() -> str:
        return await snapdir.id(path)

    return run(go)


def list_manifests(store: Path) -> list[str]:
    from snapdir.stores.file import FileStore

    return run(FileStore(uri(store)).list_manifests)


def assert_store_consistent(store: Path) -> None:
    """No temporary files; every manifest present verifies; every object is sound."""
    from storeutil import b3

    assert staging_leftovers(store) == []
    for sid in list_manifests(store) if store.exists() else []:
        assert verify(sid, store)
    for rel in files_below(store):
        if rel.startswith(".objects/"):
            key = rel[len(".objects/") :].replace("/", "")
            assert b3((store / rel).read_bytes()) == key, f"{rel} holds other bytes"


# --- disk full --------------------------------------------------------------------------------


def test_push_into_a_full_store_then_after_freeing_space(tmp_path: Path) -> None:
    src = five_mib_tree(tmp_path / "src")
    with tmpfs(tmp_path / "fs", "2m") as fs:
        store = fs / "store"
        with pytest.raises(snapdir.SnapdirError) as info:
            push(src, store)
        assert str(store) in str(info.value), "the error names where it could not write"
        assert isinstance(info.value, OSError) or "space" in str(info.value).lower()
        assert list_manifests(store) == [], "a manifest was written for an incomplete push"
        assert_store_consistent(store)
        remount(fs, "size=16m")
        sid = push(src, store)
        assert verify(sid, store)
        assert list_manifests(store) == [sid]
        assert_store_consistent(store)


def test_pull_into_a_full_disk_then_after_freeing_space(tmp_path: Path) -> None:
    src = five_mib_tree(tmp_path / "src")
    store = tmp_path / "store"
    sid = push(src, store)
    with tmpfs(tmp_path / "fs", "2m") as fs:
        dest = fs / "dest"
        with pytest.raises(snapdir.SnapdirError):
            pull(sid, store, dest)
        assert files_below(fs) == set(), f"partial files left: {sorted(files_below(fs))}"
        assert staging_leftovers(fs) == []
        remount(fs, "size=16m")
        pull(sid, store, dest)
        assert tree_id(dest) == sid
        assert staging_leftovers(fs) == []


def test_pull_into_a_full_disk_leaves_the_old_version(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "big0.bin", "old version\n")
    write(src / "small" / "0.txt", "small 0\n")
    store = tmp_path / "store"
    old = push(src, store)
    new = push(five_mib_tree(src), store)
    with tmpfs(tmp_path / "fs", "2m") as fs:
        dest = fs / "dest"
        pull(old, store, dest)
        before = tree_state(dest)
        with pytest.raises(snapdir.SnapdirError):
            pull(new, store, dest, force=True)
        assert tree_state(dest) == before
        assert staging_leftovers(fs) == []
        remount(fs, "size=16m")
        pull(new, store, dest, force=True)
        assert tree_id(dest) == new


def test_full_disk_error_on_pull_names_the_destination(tmp_path: Path) -> None:
    """The file system that is full is the destination's: the message must point there,
    not only at the store object being copied."""
    src = five_mib_tree(tmp_path / "src")
    store = tmp_path / "store"
    sid = push(src, store)
    with tmpfs(tmp_path / "fs", "2m") as fs:
        with pytest.raises(snapdir.SnapdirError) as info:
            pull(sid, store, fs / "dest")
        assert str(fs / "dest") in str(info.value), str(info.value)


# --- read-only file systems ---------------------------------------------------------------


def two_versions(tmp_path: Path) -> tuple[Path, str, str]:
    src = tmp_path / "src"
    write(src / "a.txt", "a\n")
    write(src / "d" / "b.txt", "b\n")
    store = tmp_path / "store"
    one = push(src, store)
    write(src / "a.txt", "a, second version\n")
    write(src / "d" / "c.txt", "c\n")
    two = push(src, store)
    return store, one, two


def test_pull_into_a_read_only_destination(tmp_path: Path) -> None:
    store, one, two = two_versions(tmp_path)
    with tmpfs(tmp_path / "fs", "8m") as fs:
        dest = fs / "dest"
        pull(one, store, dest)
        before = tree_state(dest)
        remount(fs, "ro")
        try:
            with pytest.raises(snapdir.SnapdirError) as info:
                pull(two, store, dest, force=True)
            assert str(dest) in str(info.value)
            assert tree_state(dest) == before
        finally:
            remount(fs, "rw")
        assert staging_leftovers(fs) == []
        pull(two, store, dest, force=True)
        assert tree_id(dest) == two


def test_up_to_date_pull_on_a_read_only_destination_is_a_no_op(tmp_path: Path) -> None:
    """Everything is already right, so nothing needs writing: the pull succeeds even where
    nothing can be written (a deployed tree on a read-only mount)."""
    store, one, _ = two_versions(tmp_path)
    with tmpfs(tmp_path / "fs", "8m") as fs:
        dest = fs / "dest"
        pull(one, store, dest)
        before = tree_state(dest)
        remount(fs, "ro")
        try:
            pull(one, store, dest)
        finally:
            remount(fs, "rw")
        assert tree_state(dest) == before


def test_read_only_store(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a.txt", "a\n")
    with tmpfs(tmp_path / "fs", "8m") as fs:
        store = fs / "store"
        sid = push(src, store)
        remount(fs, "ro")
        try:
            # reading works: verify, pull, size
            assert verify(sid, store)
            pull(sid, store, tmp_path / "dest")
            assert tree_id(tmp_path / "dest") == sid
            write(src / "new.txt", "new\n")
            with pytest.raises(snapdir.SnapdirError) as info:
                push(src, store)
            assert str(store) in str(info.value)
        finally:
            remount(fs, "rw")
        assert list_manifests(store) == [sid]
        assert_store_consistent(store)


# --- permissions (privileges dropped to nobody) ------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory ``nobody`` can traverse (tmp_path is 0700 for root)."""
    base = Path(tempfile.mkdtemp(prefix="snapdir-faults-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        make_writable(base)
        shutil.rmtree(base)


def world_writable_store(base: Path) -> Path:
    store = base / "store"
    store.mkdir()
    os.chmod(store, 0o777)
    return store


def test_push_of_an_unreadable_source_file(shared_dir: Path) -> None:
    src = shared_dir / "src"
    write(src / "ok.txt", "ok\n")
    secret = write(src / "sub" / "secret.bin", "secret\n", 0o000)
    for d in (src, src / "sub"):
        os.chmod(d, 0o755)
    store = world_writable_store(shared_dir)
    out = run_op_as("push", str(src), uri(store), unreadable=[str(secret)])
    assert out["euid"] == 65534
    assert out["precondition"], "nobody could still read the file"
    assert out["kind"] == "SnapdirError", out
    assert "secret.bin" in out["message"], out
    assert not (store / ".manifests").exists()


_PUT_AS_NOBODY = r"""
import json, os, sys
import anyio, anyio.to_thread, snapdir
from snapdir.stores import ObjectPut
from snapdir.stores.file import FileStore
store_uri, checksum, source, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
anyio.run(anyio.to_thread.run_sync, lambda: None)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
out = {"euid": os.geteuid()}
async def main():
    await FileStore(store_uri).put_objects([ObjectPut(checksum, source, size)])
try:
    anyio.run(main)
except snapdir.SnapdirError as e:
    out.update(kind="SnapdirError", cls=type(e).__name__, code=e.code, message=str(e))
except BaseException as e:
    out.update(kind="other", cls=type(e).__name__, message=str(e))
else:
    out.update(kind="ok")
print(json.dumps(out))
"""


def test_source_unreadable_between_walk_and_copy(shared_dir: Path) -> None:
    """A file that was readable when walked but not when copied: a clear error naming it
    (not a silent skip), and no object appears."""
    from storeutil import b3, object_rel

    src = shared_dir / "src"
    data = b"readable at walk time\n"
    f = write(src / "f.txt", data, 0o644)
    os.chmod(src, 0o755)
    store = world_writable_store(shared_dir)
    os.chmod(f, 0o000)
    proc = subprocess.run(
        [sys.executable, "-c", _PUT_AS_NOBODY, uri(store), b3(data), str(f), str(len(data))],
        capture_output=True,
        text=True,
        cwd="/",
        env=cli_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["euid"] == 65534
    assert out["kind"] == "SnapdirError", out
    assert str(f) in out["message"], out
    assert not (store / object_rel(b3(data))).exists()
    assert staging_leftovers(store) == []


def test_push_into_a_store_the_user_cannot_write(shared_dir: Path) -> None:
    src = shared_dir / "src"
    write(src / "a.txt", "a\n")
    os.chmod(src, 0o755)
    store = shared_dir / "store"
    store.mkdir(mode=0o755)
    out = run_op_as("push", str(src), uri(store), unwritable=[str(store)])
    assert out["precondition"]
    assert out["kind"] == "SnapdirError", out
    assert str(store) in out["message"], out
    assert files_below(store) == set()


def test_pull_from_a_store_the_user_cannot_read(shared_dir: Path) -> None:
    store = shared_dir / "store"
    text = manifest_for({"a.txt": (b"a\n", 0o644)}, {})
    sid = make_store(store, text, [b"a\n"])
    for dirpath, _, _ in os.walk(store):
        os.chmod(dirpath, 0o755)
    os.chmod(store / manifest_rel(sid), 0o600)
    dest_parent = shared_dir / "out"
    dest_parent.mkdir(mode=0o777)
    os.chmod(dest_parent, 0o777)
    out = run_op_as(
        "pull",
        sid,
        uri(store),
        str(dest_parent / "dest"),
        unreadable=[str(store / manifest_rel(sid))],
    )
    assert out["precondition"]
    assert out["kind"] == "SnapdirError", out
    assert sid in out["message"] or str(store) in out["message"], out
    assert not (dest_parent / "dest").exists()


def test_push_of_an_unreadable_source_file_succeeds_once_it_is_readable(
    shared_dir: Path,
) -> None:
    """The same user, the same command, after the file's mode is fixed: the push goes
    through and the store, which the failed run left without a manifest, verifies."""
    src = shared_dir / "src"
    write(src / "ok.txt", "ok\n")
    secret = write(src / "sub" / "secret.bin", "secret\n", 0o000)
    for d in (src, src / "sub"):
        os.chmod(d, 0o755)
    store = world_writable_store(shared_dir)
    failed = run_op_as("push", str(src), uri(store), unreadable=[str(secret)])
    assert failed["kind"] == "SnapdirError", failed
    assert str(secret) in failed["message"], failed
    os.chmod(secret, 0o644)
    out = run_op_as("push", str(src), uri(store))
    assert out["euid"] == 65534
    assert out["kind"] == "ok", out
    assert out["result"] == tree_id(src)
    assert list_manifests(store) == [out["result"]]
    assert_store_consistent(store)


# --- the stat cache on a full or read-only file system --------------------------------------


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_push_with_the_cache_directory_on_a_broken_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The stat cache is an optimisation: when it cannot be written the push still succeeds
    (and stores the right snapshot)."""
    src = tmp_path / "src"
    for i in range(200):
        write(src / f"d{i % 5}" / f"{i}.txt", f"file {i}\n")
    store = tmp_path / "store"
    with tmpfs(tmp_path / "fs", "64k") as fs:
        cache = fs / "cache"
        if fault == "full":
            cache.mkdir()
            with open(fs / "filler", "wb", buffering=0) as f:  # fill it to the last block
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
        else:
            remount(fs, "ro")
        monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(cache))
        try:
            sid = push(src, store)
        finally:
            remount(fs, "rw")
    monkeypatch.delenv("SNAPDIR_CACHE_DIR")
    assert sid == tree_id(src)
    assert verify(sid, store)
    assert_store_consistent(store)


# --- a source file that changes while it is pushed ------------------------------------------

BIG = 24 * MiB


class Mutator:
    """Changes one file, over and over, from a background thread: ``grow`` appends, ``shrink``
    truncates, ``rewrite`` overwrites bytes in place keeping the size and the mtime (which a
    size/mtime check alone cannot see). :meth:`step` makes one change now."""

    def __init__(self, path: Path, mode: str) -> None:
        import random
        import threading

        self.path = path
        self.mode = mode
        self.steps = 0
        self._rng = random.Random(7)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"mutate-{mode}", daemon=True)

    def step(self) -> None:
        if self.mode == "grow":
            with open(self.path, "ab") as f:
                f.write(self._rng.randbytes(16 * 1024))
        elif self.mode == "shrink":
            size = self.path.stat().st_size
            os.truncate(self.path, max(0, size - 64 * 1024))
        else:
            st = self.path.stat()
            with open(self.path, "r+b") as f:
                f.seek(self._rng.randrange(max(1, st.st_size - 4096)))
                f.write(self._rng.randbytes(4096))
            os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.steps += 1

    def _loop(self) -> None:
        import time

        while not self._stop.is_set():
            self.step()
            time.sleep(0.005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        assert not self._thread.is_alive()


@pytest.fixture(scope="module")
def s3_bucket(seaweedfs: S3Server) -> str:
    client = seaweedfs.client()
    name = f"local-faults-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=name)
    client.close()
    return name


def s3_env(mp: pytest.MonkeyPatch, server: S3Server) -> None:
    server.use_env(mp.setenv, mp.delenv)
    # The big file goes multipart: the check at its end guards the last part.
    mp.setenv("SNAPDIR_S3_MULTIPART_THRESHOLD", str(8 * MiB))
    mp.setenv("SNAPDIR_S3_PART_SIZE", str(5 * MiB))


def s3_problems(server: S3Server, store_uri: str) -> list[str]:
    """See :func:`storeutil.s3_store_problems` (through a client of ``server``)."""
    client = server.client()
    try:
        return storeutil.s3_store_problems(client, store_uri)
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["grow", "shrink", "rewrite"])
@pytest.mark.parametrize(
    ("backend", "when"),
    # A file:// push reads each file once (hashing and copying in one pass, or the copy
    # re-hashing what it writes), so there only "all along" is meaningful.
    [("file", "walk"), ("s3", "walk"), ("s3", "upload")],
)
def test_source_file_changing_while_it_is_pushed(
    backend: str,
    mode: str,
    when: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """A large file keeps changing during the push, from the start (``walk``: while it is
    hashed) or from the moment the walk returns (``upload``: while it is copied, the first
    change made before the copy begins). The push either fails with InFluxError naming the
    file or succeeds with a snapshot that verifies; it never stores bytes under a wrong key
    or a manifest without its objects. Once the file holds still, the same push succeeds and
    a pull gives the file back byte for byte."""
    import snapdir._push as push_module

    src = tmp_path / "src"
    write(src / "small.txt", "small\n")
    big = write(src / "data" / "big.bin", os.urandom(BIG))
    if backend == "s3":
        server: S3Server = request.getfixturevalue("seaweedfs")
        s3_env(monkeypatch, server)
        store_uri = f"s3://{request.getfixturevalue('s3_bucket')}/{os.urandom(4).hex()}/store"
    else:
        store_uri = uri(tmp_path / "store")
    mutator = Mutator(big, mode)
    original: Callable[..., Awaitable[snapdir.Manifest]] = getattr(  # noqa: B009
        push_module,
        "walk_manifest",  # (not re-exported, hence getattr)
    )

    async def walk_then_change(*args: Any, **kwargs: Any) -> snapdir.Manifest:
        m = await original(*args, **kwargs)
        mutator.step()
        mutator.start()
        return m

    if when == "walk":
        mutator.start()
    else:
        monkeypatch.setattr(push_module, "walk_manifest", walk_then_change)

    async def go() -> str:
        return await snapdir.push(src, store_uri, use_cache=False)

    outcome: str | BaseException
    try:
        outcome = run(go)
    except snapdir.SnapdirError as e:
        outcome = e
    finally:
        mutator.stop()
        monkeypatch.setattr(push_module, "walk_manifest", original)
    assert mutator.steps > 0
    if when == "upload":
        assert isinstance(outcome, snapdir.InFluxError), f"a change after the walk: {outcome!r}"
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, snapdir.InFluxError), repr(outcome)
        assert str(big) in str(outcome), str(outcome)

    def problems() -> list[str]:
        if backend == "s3":
            return s3_problems(server, store_uri)
        assert_store_consistent(tmp_path / "store")
        return []

    assert problems() == []
    sid = run(go)  # the file holds still now
    assert sid == tree_id(src)
    assert run(lambda: snapdir.verify(sid, store_uri))
    assert problems() == []
    dest = tmp_path / "dest"
    run(lambda: snapdir.pull(sid, store_uri, dest))
    assert (dest / "data" / "big.bin").read_bytes() == big.read_bytes()


# --- a cloud pull into a full disk ----------------------------------------------------------


def test_pull_from_s3_into_a_full_disk_then_after_freeing_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seaweedfs: S3Server, s3_bucket: str
) -> None:
    """The cloud download path (objects streamed by the SDK into staging files) on a full
    disk: an error naming the destination, no partial or staging files, the store untouched;
    once there is room the same pull succeeds."""
    s3_env(monkeypatch, seaweedfs)
    src = five_mib_tree(tmp_path / "src")
    store_uri = f"s3://{s3_bucket}/{os.urandom(4).hex()}/store"

    async def push_s3() -> str:
        return await snapdir.push(src, store_uri)

    sid = run(push_s3)
    with tmpfs(tmp_path / "fs", "2m") as fs:
        dest = fs / "dest"

        async def pull_s3() -> None:
            await snapdir.pull(sid, store_uri, dest)

        with pytest.raises(snapdir.SnapdirError) as info:
            run(pull_s3)
        assert str(dest) in str(info.value), str(info.value)
        assert files_below(fs) == set(), f"partial files left: {sorted(files_below(fs))}"
        assert staging_leftovers(fs) == []
        remount(fs, "size=16m")
        run(pull_s3)
        assert tree_id(dest) == sid
        assert staging_leftovers(fs) == []
    assert s3_problems(seaweedfs, store_uri) == []
