"""The operations end to end, under asyncio and trio: push (including sources that change
while they are pushed), diff, verify, size, sync, fetch/stage + checkout via the cache."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import snapdir
from golden import build_case, load_cases
from snapdir.stores import ObjectPut
from snapdir.stores.file import FileStore
from storeutil import (
    BACKENDS,
    b3,
    content_state,
    journal_ids,
    make_store,
    manifest_for,
    manifest_rel,
    object_rel,
    run,
    staging_leftovers,
    tree_state,
    uri,
    write,
)

CASES = {c.name: c for c in load_cases()}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def push(path: Path, store: str, backend: str = "asyncio") -> str:
    async def go() -> str:
        return await snapdir.push(path, store)

    return run(go, backend)


def verify(sid: str, store: str, backend: str = "asyncio") -> bool:
    async def go() -> bool:
        return await snapdir.verify(sid, store)

    return run(go, backend)


def tree_id(path: Path, backend: str = "asyncio") -> str:
    async def go() -> str:
        return await snapdir.id(path)

    return run(go, backend)


def store_is_sound(store: Path) -> None:
    """Every stored object hashes to its key; no temporary files."""
    assert staging_leftovers(store) == []
    objects = store / ".objects"
    if not objects.exists():
        return
    for dirpath, _, names in os.walk(objects):
        for n in names:
            p = Path(dirpath) / n
            key = str(p.relative_to(objects)).replace("/", "")
            assert b3(p.read_bytes()) == key, f"object {key} holds other bytes"


# --- push: sources that change ----------------------------------------------------------------


@pytest.mark.parametrize("change", ["same-size", "grew", "shrank", "vanished"])
def test_put_objects_with_a_stale_checksum_is_in_flux(
    tmp_path: Path, backend: str, change: str
) -> None:
    src = tmp_path / "src"
    big = write(src / "big.bin", os.urandom(1 << 20))
    write(src / "other.txt", "other\n")

    async def walk() -> snapdir.Manifest:
        return await snapdir.manifest(src)

    m = run(walk, backend)
    (entry,) = [e for e in m.entries if e.path == "./big.bin"]
    data = big.read_bytes()
    if change == "same-size":
        big.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif change == "grew":
        big.write_bytes(data + b"more")
    elif change == "shrank":
        big.write_bytes(data[:1000])
    else:
        big.unlink()
    store_dir = tmp_path / "store"
    store = FileStore(uri(store_dir))

    async def put() -> None:
        await store.put_objects([ObjectPut(entry.checksum, str(big), entry.size)])

    with pytest.raises(snapdir.InFluxError) as info:
        run(put, backend)
    assert str(big) in str(info.value)
    assert not (store_dir / object_rel(entry.checksum)).exists()
    store_is_sound(store_dir)
    assert not (store_dir / ".manifests").exists()


class Rewriter(threading.Thread):
    """Keeps rewriting ``path`` with alternating contents until stopped."""

    def __init__(self, path: Path, contents: list[bytes], how: str) -> None:
        super().__init__(daemon=True)
        self.path, self.contents, self.how = path, contents, how
        self.stop = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        # the replacement is prepared outside the tree (the walk must not see it)
        tmp = self.path.parent.parent / (self.path.name + ".new")
        while not self.stop.is_set():
            data = self.contents[self.rounds % len(self.contents)]
            if self.how == "in-place":
                with open(self.path, "r+b") as f:
                    for off in range(0, len(data), 1 << 18):
                        f.write(data[off : off + (1 << 18)])
            else:  # atomic replacement: every read sees one whole version
                tmp.write_bytes(data)
                os.replace(tmp, self.path)
            self.rounds += 1
            time.sleep(0.001)


def attempt(src: Path, store_dir: Path, backend: str) -> tuple[str, str]:
    """One push: ``("ok", id)`` or ``("in-flux", message)``."""
    try:
        return "ok", push(src, uri(store_dir), backend)
    except snapdir.InFluxError as e:
        return "in-flux", str(e)


@pytest.mark.parametrize("how", ["in-place", "replace"])
def test_push_of_a_file_being_rewritten_never_stores_wrong_bytes(
    tmp_path: Path, backend: str, how: str
) -> None:
    src = tmp_path / "src"
    size = 6 << 20
    contents = [os.urandom(size), os.urandom(size)]
    big = write(src / "big.bin", contents[0])
    for i in range(20):
        write(src / f"small{i}.txt", f"{i}\n")
    store_dir = tmp_path / "store"
    outcomes: list[str] = []
    writer = Rewriter(big, contents, how)
    writer.start()
    try:
        for _ in range(6):
            outcome, detail = attempt(src, store_dir, backend)
            outcomes.append(outcome)
            if outcome == "in-flux":
                assert "big.bin" in detail
                continue
            text = (store_dir / manifest_rel(detail)).read_text()
            (line,) = [ln for ln in text.split("\n") if ln.endswith(" ./big.bin")]
            assert line.split(" ")[2] in {b3(c) for c in contents}, "torn content"
            assert verify(detail, uri(store_dir), backend)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.rounds > 0
    store_is_sound(store_dir)
    # A manifest exists only for a push that succeeded (one per version of big.bin at
    # most), and every one is complete and sound.
    ids: list[str] = []
    if (store_dir / ".manifests").exists():
        ids = run(FileStore(uri(store_dir)).list_manifests, backend)
    assert (len(ids) > 0) == ("ok" in outcomes)
    assert len(ids) <= len(contents)
    for sid in ids:
        assert verify(sid, uri(store_dir), backend)


def test_noop_push_touches_nothing_even_after_mtimes_change(tmp_path: Path, backend: str) -> None:
    src = build_case(CASES["basic"], tmp_path / "src")
    store = tmp_path / "store"
    sid = push(src, uri(store), backend)
    before = content_state(store)
    later = time.time() + 100
    for dirpath, _, names in os.walk(src):
        for n in names:
            os.utime(os.path.join(dirpath, n), (later, later))
    assert push(src, uri(store), backend) == sid
    assert content_state(store) == before
    assert journal_ids(store) == [sid, sid]  # the second push is journalled all the same


# --- diff -------------------------------------------------------------------------------------


def diff(from_: list[str], to: list[str], backend: str = "asyncio") -> list[snapdir.DiffEntry]:
    async def go() -> list[snapdir.DiffEntry]:
        return await snapdir.diff(snapdir.DiffOptions.from_refs(from_, to))

    return run(go, backend)


def two_trees(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        write(root / "same.txt", "same\n")
        write(root / "sub" / "kept.txt", "kept\n")
    write(a / "mod.txt", "one\n")
    write(b / "mod.txt", "two\n")
    write(a / "mode.sh", "m\n", 0o644)
    write(b / "mode.sh", "m\n", 0o755)
    write(a / "gone.txt", "gone\n")
    write(b / "new.txt", "new\n")
    (a / "dmode").mkdir(mode=0o755)
    (b / "dmode").mkdir(mode=0o700)
    os.chmod(b / "dmode", 0o700)
    write(a / "both-mod", "content\n", 0o644)
    write(b / "both-mod", "changed\n", 0o600)
    return a, b


EXPECTED_AB = [
    ("M", "./", "contents"),  # its own mode is the same; what is below changed
    ("M", "./both-mod", "content"),
    ("M", "./dmode/", "mode 755->700"),
    ("D", "./gone.txt", ""),
    ("M", "./mod.txt", "content"),
    ("M", "./mode.sh", "mode 644->755"),
    ("A", "./new.txt", ""),
    ("=", "./same.txt", ""),
    ("=", "./sub/", ""),
    ("=", "./sub/kept.txt", ""),
]


def as_tuples(entries: list[snapdir.DiffEntry]) -> list[tuple[str, str, str]]:
    return [(e.status, e.path, e.detail) for e in entries]


def test_diff_statuses_between_directories(tmp_path: Path, backend: str) -> None:
    a, b = two_trees(tmp_path)
    assert as_tuples(diff([str(a)], [str(b)], backend)) == EXPECTED_AB
    # reversed: A <-> D, mode details reversed
    rev = as_tuples(diff([str(b)], [str(a)], backend))
    assert ("A", "./gone.txt", "") in rev
    assert ("D", "./new.txt", "") in rev
    assert ("M", "./mode.sh", "mode 755->644") in rev
    same = as_tuples(diff([str(a)], [str(a)], backend))
    assert all(s == "=" for s, _, _ in same)
    assert len(same) == len(EXPECTED_AB) - 1  # new.txt exists only in b


def test_diff_between_store_snapshot_and_directory(tmp_path: Path, backend: str) -> None:
    a, b = two_trees(tmp_path)
    store = uri(tmp_path / "store")
    sid_a = push(a, store, backend)
    sid_b = push(b, store, backend)
    assert as_tuples(diff([f"{store}@{sid_a}"], [str(b)], backend)) == EXPECTED_AB
    assert as_tuples(diff([f"{store}@{sid_a}"], [f"{store}@{sid_b}"], backend)) == EXPECTED_AB
    # a plain URI is every snapshot of the store: each path of b agrees with some version,
    # and what only a had is deleted
    union = as_tuples(diff([store], [str(b)], backend))
    assert [e for e in union if e[0] != "="] == [("D", "./gone.txt", "")]
    assert {p for _, p, _ in union} == {p for _, p, _ in EXPECTED_AB}


def test_diff_type_change_file_to_dir(tmp_path: Path, backend: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "t", "a file\n")
    write(b / "t" / "inner", "inside a dir\n")
    write(a / "same", "s\n")
    write(b / "same", "s\n")
    got = as_tuples(diff([str(a)], [str(b)], backend))
    t_entries = [e for e in got if e[1] in ("./t", "./t/")]
    assert len(t_entries) == 1, f"a type change is one M entry, not {t_entries}"
    assert t_entries[0][0] == "M"
    assert t_entries[0][2] == "type"
    assert ("A", "./t/inner", "") in got
    assert ("=", "./same", "") in got


def test_diff_with_an_unreachable_store_is_an_error(tmp_path: Path, backend: str) -> None:
    write(tmp_path / "d" / "f", "f\n")
    missing = "file:///nonexistent/snapdir-store"
    for from_, to in (([missing], [str(tmp_path / "d")]), ([str(tmp_path / "d")], [missing])):
        with pytest.raises(snapdir.SnapdirError) as info:
            diff(from_, to, backend)
        assert "/nonexistent/snapdir-store" in str(info.value)
    sid = b3(b"whatever")
    with pytest.raises(snapdir.SnapdirError):
        diff([f"{missing}@{sid}"], [str(tmp_path / "d")], backend)


def test_diff_with_a_missing_snapshot_is_not_found(tmp_path: Path, backend: str) -> None:
    write(tmp_path / "d" / "f", "f\n")
    store = uri(tmp_path / "store")
    push(tmp_path / "d", store, backend)
    missing = b3(b"not there")
    with pytest.raises(snapdir.NotFoundError) as info:
        diff([f"{store}@{missing}"], [str(tmp_path / "d")], backend)
    assert missing in str(info.value)


def test_diff_with_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "d" / "f", "f\n")
    with pytest.raises(snapdir.SnapdirError) as info:
        diff([str(tmp_path / "nope")], [str(tmp_path / "d")])
    assert str(tmp_path / "nope") in str(info.value)


# --- verify and size ------------------------------------------------------------------------


def test_verify_good_missing_and_corrupt(tmp_path: Path, backend: str) -> None:
    files = {f"f{i}": (f"content {i}\n".encode(), 0o644) for i in range(6)}
    text = manifest_for(files, {})
    store_dir = tmp_path / "store"
    sid = make_store(store_dir, text, [d for d, _ in files.values()])
    store = uri(store_dir)
    assert verify(sid, store, backend) is True

    c_missing, c_corrupt = b3(b"content 1\n"), b3(b"content 2\n")
    (store_dir / object_rel(c_missing)).unlink()
    with pytest.raises(snapdir.NotFoundError) as info:
        verify(sid, store, backend)
    assert info.value.problems == {c_missing: "missing"}
    assert c_missing in str(info.value)

    (store_dir / object_rel(c_corrupt)).write_bytes(b"content X\n")
    with pytest.raises(snapdir.HashMismatchError) as info2:
        verify(sid, store, backend)
    assert info2.value.problems == {
        c_missing: "missing",
        c_corrupt: "corrupt",
    }
    assert c_corrupt in str(info2.value)

    # a truncated object is corrupt too
    c_short = b3(b"content 3\n")
    (store_dir / object_rel(c_short)).write_bytes(b"content")
    with pytest.raises(snapdir.HashMismatchError) as info3:
        verify(sid, store, backend)
    assert info3.value.problems[c_short] == "corrupt"


def test_verify_of_a_missing_snapshot_or_store(tmp_path: Path, backend: str) -> None:
    write(tmp_path / "d" / "f", "f\n")
    store = uri(tmp_path / "store")
    push(tmp_path / "d", store, backend)
    missing = b3(b"nope")
    with pytest.raises(snapdir.NotFoundError) as info:
        verify(missing, store, backend)
    assert missing in str(info.value)
    with pytest.raises(snapdir.SnapdirError) as info2:
        verify(missing, uri(tmp_path / "no-store"), backend)
    assert str(tmp_path / "no-store") in str(info2.value)


def size(store: str, sid: str | None = None, backend: str = "asyncio") -> snapdir.SizeStats:
    async def go() -> snapdir.SizeStats:
        return await snapdir.size(store, sid)

    return run(go, backend)


def test_size_of_a_snapshot_and_of_a_store(tmp_path: Path, backend: str) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    shared = os.urandom(1000)
    for root in (one, two):
        write(root / "shared.bin", shared)
        write(root / "copy-of-shared.bin", shared)
    write(one / "only-one", b"1" * 10)
    write(two / "only-two", b"2" * 20)
    write(two / "empty", b"")
    store = uri(tmp_path / "store")
    sid1 = push(one, store, backend)
    sid2 = push(two, store, backend)
    assert size(store, sid1, backend) == snapdir.SizeStats(2010, 1010, 3, 2)
    assert size(store, sid2, backend) == snapdir.SizeStats(2020, 1020, 4, 3)
    whole = size(store, None, backend)
    # logical: every file of every snapshot; physical: each distinct object once
    assert whole == snapdir.SizeStats(4030, 1030, 7, 4)
    m = run(lambda: snapdir.manifest(two), backend)
    assert snapdir.manifest_size(m) == snapdir.SizeStats(2020, 1020, 4, 3)


def test_size_of_an_empty_or_missing_store(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert size(uri(tmp_path / "empty")) == snapdir.SizeStats(0, 0, 0, 0)
    with pytest.raises(snapdir.SnapdirError):
        size(uri(tmp_path / "missing"))
    with pytest.raises(snapdir.NotFoundError):
        size(uri(tmp_path / "empty"), b3(b"x"))


# --- sync -------------------------------------------------------------------------------------


def sync(sid: str, src: str, dst: str, backend: str = "asyncio") -> None:
    async def go() -> None:
        await snapdir.sync(sid, src, dst)

    run(go, backend)


def test_sync_file_to_file(tmp_path: Path, backend: str) -> None:
    src_tree = build_case(CASES["binary-and-large"], tmp_path / "tree")
    a, b = tmp_path / "a", tmp_path / "b"
    sid = push(src_tree, uri(a), backend)
    sync(sid, uri(a), uri(b), backend)
    assert verify(sid, uri(b), backend)
    assert (b / manifest_rel(sid)).read_bytes() == (a / manifest_rel(sid)).read_bytes()
    for dirpath, _, names in os.walk(a):
        for n in names:
            rel = Path(dirpath, n).relative_to(a)
            if rel.parts[0] == ".snapdir":
                continue
            assert (b / rel).read_bytes() == (a / rel).read_bytes()
            assert (b / rel).stat().st_mode & 0o777 == 0o644
    assert journal_ids(b) == journal_ids(a) == [sid]  # the entry came along
    store_is_sound(b)
    before = tree_state(b)
    sync(sid, uri(a), uri(b), backend)  # already there: nothing rewritten, not even the entry
    assert tree_state(b) == before


def test_sync_refuses_a_corrupt_source(tmp_path: Path, backend: str) -> None:
    src_tree = build_case(CASES["basic"], tmp_path / "tree")
    a, b = tmp_path / "a", tmp_path / "b"
    sid = push(src_tree, uri(a), backend)
    bad = b3(b"hello\n")
    (a / object_rel(bad)).write_bytes(b"HELLO\n")
    with pytest.raises(snapdir.HashMismatchError):
        sync(sid, uri(a), uri(b), backend)
    assert not (b / manifest_rel(sid)).exists(), "a manifest was written for a broken copy"
    assert not (b / object_rel(bad)).exists()
    store_is_sound(b)


def test_sync_of_a_missing_object(tmp_path: Path) -> None:
    src_tree = build_case(CASES["basic"], tmp_path / "tree")
    a, b = tmp_path / "a", tmp_path / "b"
    sid = push(src_tree, uri(a))
    (a / object_rel(b3(b"hello\n"))).unlink()
    with pytest.raises(snapdir.NotFoundError):
        sync(sid, uri(a), uri(b))
    assert not (b / manifest_rel(sid)).exists()


# --- fetch / stage / checkout through the cache ----------------------------------------------


def private_cache(tmp_path: Path) -> Path:
    """The per-test cache tests/conftest.py sets up (never the user's real cache)."""
    cache = Path(os.environ["SNAPDIR_CACHE_DIR"])
    assert snapdir.cache_dir() == str(cache)
    assert "pytest" in str(cache)
    return cache


def test_fetch_then_checkout(tmp_path: Path, backend: str) -> None:
    src = build_case(CASES["ordering"], tmp_path / "src")
    store = uri(tmp_path / "store")
    sid = push(src, store, backend)
    cache = private_cache(tmp_path)

    async def go() -> None:
        await snapdir.fetch(sid, store)
        await snapdir.checkout(sid, tmp_path / "dest")

    run(go, backend)
    assert (cache / manifest_rel(sid)).is_file()
    assert verify(sid, uri(cache), backend)
    assert tree_id(tmp_path / "dest", backend) == sid
    # the cache alone is enough now
    shutil.rmtree(tmp_path / "store")

    async def again() -> None:
        await snapdir.checkout(sid, tmp_path / "dest2")

    run(again, backend)
    assert tree_id(tmp_path / "dest2", backend) == sid


def test_stage_then_checkout(tmp_path: Path, backend: str) -> None:
    src = build_case(CASES["basic"], tmp_path / "src")
    cache = private_cache(tmp_path)

    async def go() -> str:
        sid = await snapdir.stage(src)
        await snapdir.checkout(sid, tmp_path / "dest")
        return sid

    sid = run(go, backend)
    assert sid == CASES["basic"].id
    assert (cache / manifest_rel(sid)).is_file()
    assert tree_id(tmp_path / "dest", backend) == sid


def test_checkout_of_a_snapshot_not_in_the_cache(tmp_path: Path) -> None:
    missing = b3(b"never staged")

    async def go() -> None:
        await snapdir.checkout(missing, tmp_path / "dest")

    with pytest.raises(snapdir.SnapdirError) as info:
        run(go)
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "dest").exists()
