"""Materialising snapshots safely (SPEC §5): hostile or broken stores, links already in the
destination, corrupt and missing objects, special bits, conflicts, interrupted pulls.

Stores are laid out by hand exactly as SPEC §4 describes, so a test can plant what an
attacker (or a failing disk) would: manifests with escaping paths, objects whose bytes do not
match their key. The rule checked throughout: a pull that fails writes nothing — the
destination is absent or exactly as it was (same inodes, same mtimes), nothing appears next
to it, and no staging directory is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import snapdir
from golden import build_case, load_cases
from storeutil import (
    BACKENDS,
    b3,
    cli_env,
    dline,
    fline,
    make_store,
    make_writable,
    manifest_for,
    object_rel,
    put_raw_object,
    run,
    run_op_as,
    staging_leftovers,
    text_id,
    tmpfs,
    tree_state,
    uri,
    write,
)

CASES = {c.name: c for c in load_cases()}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pull(
    sid: str,
    store: Path,
    dest: Path,
    backend: str = "asyncio",
    *,
    force: bool = False,
    delete: bool = False,
    preserve_special_bits: bool = False,
) -> None:
    async def go() -> None:
        await snapdir.pull(
            sid,
            uri(store),
            dest,
            force=force,
            delete=delete,
            preserve_special_bits=preserve_special_bits,
        )

    run(go, backend)


def tree_id(path: Path) -> str:
    async def go() -> str:
        return await snapdir.id(path)

    return run(go)


def push(path: Path, store: Path) -> str:
    async def go() -> str:
        return await snapdir.push(path, uri(store))

    return run(go)


class Area:
    """``<tmp>/area/dest`` (where pulls go), a sentinel directory next to it, and an
    ``<tmp>/outside`` directory that links in the destination point at."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.store = base / "store"
        self.area = base / "area"
        self.dest = self.area / "dest"
        self.outside = base / "outside"
        write(self.area / "sentinel" / "keep.txt", "sentinel\n")
        write(self.outside / "target.txt", "outside target\n", 0o640)
        write(self.outside / "x", "outside x\n")

    def snapshot(self) -> tuple[dict[str, object], dict[str, object]]:
        return dict(tree_state(self.area)), dict(tree_state(self.outside))


@pytest.fixture
def area(tmp_path: Path) -> Area:
    return Area(tmp_path)


# --- hostile manifests ----------------------------------------------------------------------

X = b"x\n"
ROOT = dline("./")

# name -> (manifest lines, expected error code). Every one is refused before any write.
HOSTILE: dict[str, tuple[list[str], str]] = {
    "dotdot": ([ROOT, fline("./../evil", X)], "UNSAFE_PATH"),
    "dotdot-inside": (
        [ROOT, dline("./a/"), fline("./a/../../evil", X)],
        "UNSAFE_PATH",
    ),
    "dotdot-dir": ([ROOT, dline("./../evil-dir/")], "UNSAFE_PATH"),
    "absolute": ([ROOT, fline("{base}/abs-evil", X)], "UNSAFE_PATH"),
    "absolute-dir": ([ROOT, dline("{base}/abs-evil-dir/")], "UNSAFE_PATH"),
    "no-dot-slash": ([ROOT, fline("evil", X)], "UNSAFE_PATH"),
    "double-slash": ([ROOT, dline("./a/"), fline("./a//b", X)], "UNSAFE_PATH"),
    "dot-component": ([ROOT, dline("./a/"), fline("./a/./b", X)], "UNSAFE_PATH"),
    "nul": ([ROOT, fline("./a\0b", X)], "UNSAFE_PATH"),
    "cr": ([ROOT, fline("./a\rb", X)], "UNSAFE_PATH"),
    "newline": ([ROOT, fline("./a\nb", X)], "INVALID_MANIFEST"),
    "file-with-slash": ([ROOT, fline("./a/", X)], "UNSAFE_PATH"),
    "dir-without-slash": ([ROOT, dline("./a")], "UNSAFE_PATH"),
    "duplicate": ([ROOT, fline("./a", X), fline("./a", X)], "INVALID_MANIFEST"),
    "duplicate-other-content": (
        [ROOT, fline("./a", X), fline("./a", b"other\n")],
        "INVALID_MANIFEST",
    ),
    "file-and-dir": ([ROOT, fline("./a", X), dline("./a/")], "INVALID_MANIFEST"),
    "under-a-file": ([ROOT, fline("./a", X), fline("./a/b", X)], "INVALID_MANIFEST"),
    "missing-parent": ([ROOT, fline("./p/b", X)], "INVALID_MANIFEST"),
    "missing-root": ([fline("./a", X)], "INVALID_MANIFEST"),
    "root-as-file": ([fline("./", X)], "UNSAFE_PATH"),
}
ACCEPTED_CODES = {"UNSAFE_PATH", "INVALID_MANIFEST"}


def hostile_text(name: str, base: Path) -> str:
    lines, _ = HOSTILE[name]
    return "\n".join(ln.replace("{base}", str(base)) for ln in lines)


def assert_nothing_written(area: Area, before: tuple[dict[str, object], dict[str, object]]) -> None:
    after = area.snapshot()
    assert after[0] == before[0], "the pull changed the destination or wrote next to it"
    assert after[1] == before[1], "the pull wrote outside the destination"
    assert not (area.base / "abs-evil").exists()
    assert not (area.base / "abs-evil-dir").exists()
    assert not (area.base / "evil").exists()
    assert not (area.area / "evil").exists()
    assert staging_leftovers(area.area) == []


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_manifest_is_refused_before_writing(area: Area, backend: str, name: str) -> None:
    text = hostile_text(name, area.base)
    sid = make_store(area.store, text, [X, b"other\n"])
    before = area.snapshot()
    with pytest.raises(snapdir.SnapdirError) as info:
        pull(sid, area.store, area.dest, backend)
    assert sid in str(info.value) or str(area.store) in str(info.value), "name the snapshot"
    assert_nothing_written(area, before)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_manifest_error_says_what_is_wrong(area: Area, name: str) -> None:
    """The stored text hashes to its id, so this is not a hash mismatch: it is an unsafe or
    invalid manifest (SPEC §6 / docs/format.md "Parsing"), a ValueError with that code."""
    text = hostile_text(name, area.base)
    sid = make_store(area.store, text, [X, b"other\n"])
    with pytest.raises(snapdir.SnapdirError) as info:
        pull(sid, area.store, area.dest)
    err = info.value
    assert isinstance(err, ValueError), f"{type(err).__name__} ({err.code}) is not a ValueError"
    assert isinstance(err, (snapdir.UnsafePathError, snapdir.InvalidArgumentError))
    assert err.code == HOSTILE[name][1]
    with pytest.raises(ValueError, match=sid):
        run(lambda: snapdir.verify(sid, uri(area.store)))


@pytest.mark.parametrize("name", ["dotdot", "absolute", "duplicate", "under-a-file"])
def test_hostile_manifest_into_an_existing_destination(area: Area, name: str) -> None:
    write(area.dest / "mine.txt", "my file\n")
    write(area.dest / "a", "local a\n")
    text = hostile_text(name, area.base)
    sid = make_store(area.store, text, [X])
    before = area.snapshot()
    with pytest.raises(snapdir.SnapdirError) as info:
        pull(sid, area.store, area.dest, force=True, delete=True)
    assert info.value.code in ACCEPTED_CODES | {"HASH_MISMATCH"}
    assert_nothing_written(area, before)


@pytest.mark.parametrize("name", ["dotdot", "absolute", "nul", "missing-parent"])
def test_hostile_manifest_under_a_wrong_id(area: Area, name: str) -> None:
    text = hostile_text(name, area.base)
    wrong = b3(b"some other snapshot")
    make_store(area.store, text, [X], snapshot_id=wrong)
    before = area.snapshot()
    with pytest.raises(snapdir.SnapdirError) as info:
        pull(wrong, area.store, area.dest)
    assert isinstance(info.value, (snapdir.HashMismatchError, ValueError))
    assert wrong in str(info.value)
    assert_nothing_written(area, before)


def test_manifest_that_does_not_hash_to_its_id(area: Area, backend: str) -> None:
    good = manifest_for({"a.txt": (b"a\n", 0o644)}, {})
    other = manifest_for({"a.txt": (b"b\n", 0o644)}, {})
    sid = make_store(area.store, other, [b"a\n", b"b\n"], snapshot_id=text_id(good))
    before = area.snapshot()
    with pytest.raises(snapdir.HashMismatchError) as info:
        pull(sid, area.store, area.dest, backend)
    assert sid in str(info.value)
    assert_nothing_written(area, before)
    with pytest.raises(snapdir.HashMismatchError):
        run(lambda: snapdir.verify(sid, uri(area.store)), backend)


def test_manifest_that_is_not_text(area: Area) -> None:
    sid = b3(b"binary")
    make_store(area.store, "", snapshot_id=sid, stored_text=b"\xff\xfe\x00binary\n")
    before = area.snapshot()
    with pytest.raises(snapdir.SnapdirError) as info:
        pull(sid, area.store, area.dest)
    assert sid in str(info.value)
    assert_nothing_written(area, before)


def test_crlf_and_comments_in_a_stored_manifest_still_verify(area: Area, backend: str) -> None:
    text = manifest_for({"a.txt": (b"a\n", 0o644), "d/b.txt": (b"b\n", 0o600)}, {"d": 0o750})
    stored = ("# written by hand\r\n" + text.replace("\n", "\r\n") + "\r\n\r\n").encode()
    sid = make_store(area.store, text, [b"a\n", b"b\n"], stored_text=stored)
    assert run(lambda: snapdir.verify(sid, uri(area.store)), backend) is True
    pull(sid, area.store, area.dest, backend)
    assert tree_id(area.dest) == sid
    assert (area.dest / "d" / "b.txt").read_bytes() == b"b\n"


# --- links already in the destination -----------------------------------------------------


def dir_link_store(area: Area) -> str:
    text = manifest_for({"sub/x": (b"from snapshot\n", 0o644)}, {"sub": 0o755})
    return make_store(area.store, text, [b"from snapshot\n"])


def test_link_to_an_outside_dir_is_a_conflict(area: Area, backend: str) -> None:
    sid = dir_link_store(area)
    area.dest.mkdir()
    (area.dest / "sub").symlink_to(area.outside)
    before = area.snapshot()
    with pytest.raises(snapdir.ConflictError) as info:
        pull(sid, area.store, area.dest, backend)
    assert "sub" in str(info.value)
    assert_nothing_written(area, before)


def test_link_to_an_outside_dir_is_replaced_with_force(area: Area, backend: str) -> None:
    sid = dir_link_store(area)
    area.dest.mkdir()
    (area.dest / "sub").symlink_to(area.outside)
    outside_before = tree_state(area.outside)
    pull(sid, area.store, area.dest, backend, force=True)
    assert not (area.dest / "sub").is_symlink()
    assert (area.dest / "sub").is_dir()
    assert (area.dest / "sub" / "x").read_bytes() == b"from snapshot\n"
    assert tree_state(area.outside) == outside_before
    assert (area.outside / "x").read_bytes() == b"outside x\n"
    assert tree_id(area.dest) == sid


def test_deep_path_through_a_link_is_never_followed(area: Area) -> None:
    text = manifest_for(
        {"a/b/c.txt": (b"deep\n", 0o644)},
        {"a": 0o755, "a/b": 0o755},
    )
    sid = make_store(area.store, text, [b"deep\n"])
    area.dest.mkdir()
    (area.dest / "a").symlink_to(area.outside)
    outside_before = tree_state(area.outside)
    with pytest.raises(snapdir.ConflictError):
        pull(sid, area.store, area.dest)
    assert tree_state(area.outside) == outside_before
    pull(sid, area.store, area.dest, force=True)
    assert tree_state(area.outside) == outside_before
    assert not (area.outside / "b").exists()
    assert tree_id(area.dest) == sid


def file_store(area: Area, data: bytes = b"from snapshot\n", mode: int = 0o644) -> str:
    return make_store(area.store, manifest_for({"f": (data, mode)}, {}), [data])


def test_link_at_a_file_path_is_a_conflict(area: Area, backend: str) -> None:
    sid = file_store(area)
    area.dest.mkdir()
    (area.dest / "f").symlink_to(area.outside / "target.txt")
    before = area.snapshot()
    with pytest.raises(snapdir.ConflictError) as info:
        pull(sid, area.store, area.dest, backend)
    assert "./f" in str(info.value)
    assert_nothing_written(area, before)


def test_link_at_a_file_path_is_replaced_with_force(area: Area, backend: str) -> None:
    sid = file_store(area)
    area.dest.mkdir()
    (area.dest / "f").symlink_to(area.outside / "target.txt")
    outside_before = tree_state(area.outside)
    pull(sid, area.store, area.dest, backend, force=True)
    assert not (area.dest / "f").is_symlink()
    assert (area.dest / "f").read_bytes() == b"from snapshot\n"
    assert tree_state(area.outside) == outside_before
    assert tree_id(area.dest) == sid


def test_link_to_a_file_with_the_same_content_is_not_chmodded_through(area: Area) -> None:
    """A link whose target already has the snapshot's content must not be "kept" and
    chmodded: that would change the mode of a file outside the destination."""
    data = b"outside target\n"
    sid = file_store(area, data, 0o4755)
    area.dest.mkdir()
    (area.dest / "f").symlink_to(area.outside / "target.txt")
    outside_before = tree_state(area.outside)
    try:
        pull(sid, area.store, area.dest, preserve_special_bits=True)
    except snapdir.ConflictError:
        pass
    else:
        assert not (area.dest / "f").is_symlink(), "a link was left where a file belongs"
    assert tree_state(area.outside) == outside_before
    assert stat.S_IMODE(os.stat(area.outside / "target.txt").st_mode) == 0o640


def test_dangling_link_at_a_file_path_creates_nothing_outside(area: Area) -> None:
    sid = file_store(area)
    area.dest.mkdir()
    (area.dest / "f").symlink_to(area.outside / "created-through-link")
    with pytest.raises(snapdir.ConflictError):
        pull(sid, area.store, area.dest)
    assert not (area.outside / "created-through-link").exists()
    pull(sid, area.store, area.dest, force=True)
    assert not (area.outside / "created-through-link").exists()
    assert (area.dest / "f").read_bytes() == b"from snapshot\n"
    assert not (area.dest / "f").is_symlink()


def test_delete_removes_an_extra_link_not_its_target(area: Area) -> None:
    sid = file_store(area)
    area.dest.mkdir()
    (area.dest / "extra-dir-link").symlink_to(area.outside)
    (area.dest / "extra-file-link").symlink_to(area.outside / "target.txt")
    outside_before = tree_state(area.outside)
    pull(sid, area.store, area.dest, delete=True)
    assert not os.path.lexists(area.dest / "extra-dir-link")
    assert not os.path.lexists(area.dest / "extra-file-link")
    assert tree_state(area.outside) == outside_before
    assert tree_id(area.dest) == sid


# --- corrupt, short and missing objects ----------------------------------------------------


def prior_and_next(area: Area) -> tuple[str, str]:
    """Two versions of a tree in the store: the destination holds the first, the second
    changes one file and adds 30."""
    src = area.base / "src"
    for i in range(30):
        write(src / "keep" / f"{i}.txt", f"kept {i}\n")
    write(src / "changed.txt", "version 1\n")
    first = push(src, area.store)
    write(src / "changed.txt", "version 2\n")
    for i in range(30):
        write(src / "new" / f"{i}.bin", os.urandom(1000 + i))
    second = push(src, area.store)
    pull(first, area.store, area.dest)
    return first, second


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-dest", "existing-dest"])
def test_corrupt_object_aborts_before_any_write(area: Area, backend: str, fresh: bool) -> None:
    _, second = prior_and_next(area)
    if fresh:
        shutil.rmtree(area.dest)
    obj = area.store / object_rel(b3(b"version 2\n"))
    obj.write_bytes(b"VERSION 2\n")  # same size, other bytes
    before = area.snapshot()
    with pytest.raises(snapdir.HashMismatchError) as info:
        pull(second, area.store, area.dest, backend, force=True)
    assert b3(b"version 2\n") in str(info.value)
    assert_nothing_written(area, before)


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-dest", "existing-dest"])
def test_missing_object_aborts_before_any_write(area: Area, backend: str, fresh: bool) -> None:
    _, second = prior_and_next(area)
    if fresh:
        shutil.rmtree(area.dest)
    (area.store / object_rel(b3(b"version 2\n"))).unlink()
    before = area.snapshot()
    with pytest.raises(snapdir.NotFoundError) as info:
        pull(second, area.store, area.dest, backend, force=True)
    assert isinstance(info.value, FileNotFoundError)
    assert b3(b"version 2\n") in str(info.value)
    assert_nothing_written(area, before)


def test_object_of_the_wrong_size(area: Area, backend: str) -> None:
    """The object hashes to its key, but the manifest claims another size."""
    data = b"short\n"
    text = "\n".join(
        [
            dline("./", b3(b3(data).encode()), 99),
            f"F 644 {b3(data)} 99 ./f",
        ]
    )
    sid = make_store(area.store, text, [data])
    before = area.snapshot()
    with pytest.raises(snapdir.HashMismatchError):
        pull(sid, area.store, area.dest, backend)
    assert_nothing_written(area, before)


def test_object_whose_bytes_do_not_hash_to_its_key(area: Area) -> None:
    data = b"the real content\n"
    text = manifest_for({"f": (data, 0o644), "g": (b"fine\n", 0o644)}, {})
    sid = make_store(area.store, text, [b"fine\n"])
    put_raw_object(area.store, b3(data), b"the fake content\n")
    before = area.snapshot()
    with pytest.raises(snapdir.HashMismatchError):
        pull(sid, area.store, area.dest)
    assert_nothing_written(area, before)
    with pytest.raises(snapdir.HashMismatchError) as info:
        run(lambda: snapdir.verify(sid, uri(area.store)))
    assert info.value.problems == {b3(data): "corrupt"}


def test_object_that_is_a_link_in_the_store(area: Area) -> None:
    """An object planted as a symlink is never trusted: a link to other bytes is refused;
    a link to the right bytes is either refused or read and verified like any object."""
    data = b"linked\n"
    (area.outside / "real").write_bytes(data)
    (area.outside / "wrong").write_bytes(b"wrong!\n")
    sid = make_store(area.store, manifest_for({"f": (data, 0o644)}, {}), [])
    obj = area.store / object_rel(b3(data))
    obj.parent.mkdir(parents=True)
    obj.symlink_to(area.outside / "wrong")
    before = area.snapshot()
    with pytest.raises(snapdir.SnapdirError):
        pull(sid, area.store, area.dest)
    assert_nothing_written(area, before)
    obj.unlink()
    obj.symlink_to(area.outside / "real")
    try:
        pull(sid, area.store, area.dest)
    except snapdir.SnapdirError:
        assert_nothing_written(area, before)
    else:
        assert (area.dest / "f").read_bytes() == data
        assert not (area.dest / "f").is_symlink()
    assert tree_state(area.outside) == before[1]


# --- special bits ---------------------------------------------------------------------------

SPECIAL_FILES = {
    "suid": 0o4755,
    "sgid": 0o2755,
    "both": 0o6750,
    "sticky-file": 0o1644,
    "plain": 0o640,
}
SPECIAL_DIRS = {"sticky": 0o1777, "sgid-dir": 0o2775, "plain-dir": 0o750}


def special_store(area: Area) -> str:
    files = {n: (f"{n}\n".encode(), m) for n, m in SPECIAL_FILES.items()}
    files.update({f"{d}/inner": (f"in {d}\n".encode(), 0o644) for d in SPECIAL_DIRS})
    text = manifest_for(files, SPECIAL_DIRS)
    return make_store(area.store, text, [d for d, _ in files.values()])


def modes_of(dest: Path) -> dict[str, int]:
    names = [*SPECIAL_FILES, *SPECIAL_DIRS]
    return {n: stat.S_IMODE(os.lstat(dest / n).st_mode) for n in names}


def test_special_bits_are_dropped_by_default(area: Area, backend: str) -> None:
    sid = special_store(area)
    pull(sid, area.store, area.dest, backend)
    want = {n: m & 0o777 for n, m in {**SPECIAL_FILES, **SPECIAL_DIRS}.items()}
    assert modes_of(area.dest) == want


def test_special_bits_are_applied_on_request(area: Area, backend: str) -> None:
    sid = special_store(area)
    pull(sid, area.store, area.dest, backend, preserve_special_bits=True)
    assert modes_of(area.dest) == {**SPECIAL_FILES, **SPECIAL_DIRS}
    assert tree_id(area.dest) == sid


def test_special_bits_are_dropped_on_existing_files_too(area: Area) -> None:
    """A local file with the right content but no setuid bit is chmodded to the manifest's
    mode without the special bits, not given them."""
    sid = special_store(area)
    pull(sid, area.store, area.dest)
    os.chmod(area.dest / "suid", 0o600)
    pull(sid, area.store, area.dest)
    assert stat.S_IMODE(os.stat(area.dest / "suid").st_mode) == 0o755


# --- the destination itself -----------------------------------------------------------------


def test_destination_that_is_a_file(area: Area, backend: str) -> None:
    sid = file_store(area)
    write(area.dest, "I am a file\n")
    before = area.snapshot()
    with pytest.raises(snapdir.SnapdirError) as info:
        pull(sid, area.store, area.dest, backend, force=True)
    assert str(area.dest) in str(info.value)
    assert_nothing_written(area, before)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can traverse (tmp_path is 0700 for root)."""
    base = Path(tempfile.mkdtemp(prefix="snapdir-pull-perm-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        make_writable(base)
        shutil.rmtree(base)


@pytest.mark.parametrize("exists", [False, True], ids=["parent-not-writable", "dest-not-writable"])
def test_destination_without_write_permission(shared_dir: Path, exists: bool) -> None:
    store = shared_dir / "store"
    text = manifest_for({"f": (b"f\n", 0o644), "d/g": (b"g\n", 0o644)}, {"d": 0o755})
    sid = make_store(store, text, [b"f\n", b"g\n"])
    for dirpath, _, _ in os.walk(store):
        os.chmod(dirpath, 0o755)
    parent = shared_dir / "parent"
    parent.mkdir(mode=0o755)
    dest = parent / "dest"
    if exists:
        write(dest / "old.txt", "old\n")
        os.chmod(dest, 0o755)
    before = tree_state(parent)
    out = run_op_as(
        "pull", sid, uri(store), str(dest), unwritable=[str(dest if exists else parent)]
    )
    assert out["euid"] == 65534
    assert out["precondition"], "the unprivileged process could write there anyway"
    assert out["kind"] == "SnapdirError", out
    assert str(dest) in out["message"], out
    assert tree_state(parent) == before


# --- the destination's existing content -----------------------------------------------------


def tree_store(area: Area) -> str:
    src = area.base / "src"
    write(src / "a.txt", "a\n")
    write(src / "run.sh", "#!/bin/sh\n", 0o755)
    write(src / "d" / "b.txt", "b\n")
    write(src / "d" / "e" / "c.txt", "c\n", 0o600)
    (src / "empty").mkdir()
    return push(src, area.store)


def test_extra_files_are_kept_or_deleted(area: Area, backend: str) -> None:
    sid = tree_store(area)
    write(area.dest / "extra.txt", "extra\n")
    write(area.dest / "d" / "extra.txt", "extra\n")
    write(area.dest / "extra-dir" / "deep" / "x", "x\n")
    (area.dest / "empty-extra").mkdir()
    pull(sid, area.store, area.dest, backend)
    for rel in ("extra.txt", "d/extra.txt", "extra-dir/deep/x", "empty-extra"):
        assert (area.dest / rel).exists(), f"{rel} was removed without delete=True"
    assert (area.dest / "a.txt").read_bytes() == b"a\n"
    pull(sid, area.store, area.dest, backend, delete=True)
    for rel in ("extra.txt", "d/extra.txt", "extra-dir", "empty-extra"):
        assert not (area.dest / rel).exists(), f"{rel} survived delete=True"
    assert tree_id(area.dest) == sid
    assert staging_leftovers(area.area) == []


def test_files_already_right_are_not_rewritten(area: Area, backend: str) -> None:
    sid = tree_store(area)
    pull(sid, area.store, area.dest, backend)
    before = tree_state(area.dest)
    time.sleep(0.01)
    pull(sid, area.store, area.dest, backend)
    pull(sid, area.store, area.dest, backend, force=True, delete=True)
    assert tree_state(area.dest) == before


def test_conflicts_are_listed_and_need_force(area: Area, backend: str) -> None:
    sid = tree_store(area)
    pull(sid, area.store, area.dest, backend)
    write(area.dest / "a.txt", "locally edited\n")
    write(area.dest / "d" / "e" / "c.txt", "cc\n", 0o600)  # same size, other bytes
    shutil.rmtree(area.dest / "empty")
    write(area.dest / "empty", "a file where a directory belongs\n")
    untouched = tree_state(area.dest / "d")["b.txt"]
    before = area.snapshot()
    with pytest.raises(snapdir.ConflictError) as info:
        pull(sid, area.store, area.dest, backend)
    msg = str(info.value)
    for rel in ("./a.txt", "./d/e/c.txt", "./empty"):
        assert rel in msg, f"{rel} is not listed in: {msg}"
    assert "./run.sh" not in msg
    assert_nothing_written(area, before)
    pull(sid, area.store, area.dest, backend, force=True)
    assert (area.dest / "a.txt").read_bytes() == b"a\n"
    assert (area.dest / "empty").is_dir()
    assert tree_state(area.dest / "d")["b.txt"] == untouched
    assert tree_id(area.dest) == sid


def test_mode_changes_are_applied_without_rewriting(area: Area, backend: str) -> None:
    sid = tree_store(area)
    pull(sid, area.store, area.dest, backend)
    os.chmod(area.dest / "run.sh", 0o644)
    os.chmod(area.dest / "a.txt", 0o600)
    os.chmod(area.dest / "d", 0o700)
    before = tree_state(area.dest)
    pull(sid, area.store, area.dest, backend)  # no force needed: the content is right
    after = tree_state(area.dest)
    assert after["run.sh"].mode == 0o755
    assert after["a.txt"].mode == 0o644
    assert after["d"].mode == 0o755
    for rel in ("run.sh", "a.txt"):
        assert after[rel].ino == before[rel].ino
        assert after[rel].digest == before[rel].digest
    assert tree_id(area.dest) == sid


# --- golden trees round-trip -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_round_trip(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    src = build_case(case, tmp_path / "src")
    store = tmp_path / "store"
    assert push(src, store) == case.id
    pull(case.id, store, tmp_path / "exact", preserve_special_bits=True)
    assert tree_id(tmp_path / "exact") == case.id
    pull(case.id, store, tmp_path / "plain")
    if any(line.split(" ")[1].__len__() == 4 for line in case.manifest.split("\n")):
        # special bits dropped: the tree is the manifest with them masked off
        masked = "\n".join(
            f"{k} {int(p, 8) & 0o777:o} {rest}"
            for k, p, rest in (line.split(" ", 2) for line in case.manifest.split("\n"))
        )
        assert tree_id(tmp_path / "plain") == snapdir.id_from_manifest(masked)
        assert tree_id(tmp_path / "plain") != case.id
    else:
        assert tree_id(tmp_path / "plain") == case.id
    make_writable(tmp_path / "exact")
    make_writable(tmp_path / "plain")


# --- interrupted pulls ----------------------------------------------------------------------

KILL_TREE_FILES = 3000


def big_tree(root: Path) -> None:
    for i in range(KILL_TREE_FILES):
        write(root / f"d{i % 30:02}" / f"f{i:05}", os.urandom(8192 + i % 97))
    for i in range(4):
        write(root / "large" / f"l{i}", os.urandom(8 << 20))


def assert_no_torn_files(dest: Path, manifest: snapdir.Manifest) -> None:
    """Every file under a real name is complete and verified (the content of its entry)."""
    want = {e.path[2:]: e.checksum for e in manifest.entries if e.path_type.name == "File"}
    for dirpath, dirnames, names in os.walk(dest):
        dirnames[:] = [d for d in dirnames if not d.startswith(".snapdir-staging.")]
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, dest)
            if rel == ".snapdir-staging.lock":
                continue  # a killed pull's lock file (the next pull removes it)
            assert rel in want, f"unexpected file {rel} after an interrupted pull"
            assert b3(Path(p).read_bytes()) == want[rel], f"{rel} is torn or wrong"


def kill_pull_when(sid: str, store: Path, dest: Path, ready: str) -> bool:
    """Start ``snapdir pull`` and SIGKILL it once ``ready`` is reached: ``"staging"`` (a
    staging directory exists: objects are being fetched) or ``"commit"`` (files are being
    moved into place). Returns whether it was killed while still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", "pull", sid, str(dest), "--store", uri(store), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                names = os.listdir(dest)
            except FileNotFoundError:
                names = []
            if ready == "staging" and any(n.startswith(".snapdir-staging.") for n in names):
                break
            if ready == "commit" and any(n.startswith("d") for n in names):
                break
            time.sleep(0.0005)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return alive


def test_interrupted_pull_resumes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "600m") as fs:
        src = fs / "src"
        big_tree(src)
        store = fs / "store"
        sid = push(src, store)
        manifest = run(lambda: snapdir.manifest(src))
        dest = fs / "dest"
        killed = []
        for ready in ("staging", "commit"):
            killed.append(kill_pull_when(sid, store, dest, ready))
            assert_no_torn_files(dest, manifest)
        assert any(killed), "the pull finished before it could be interrupted"
        pull(sid, store, dest)
        assert tree_id(dest) == sid
        assert staging_leftovers(dest) == []
