"""The ``file://`` store: exact on-disk layout (SPEC §4), object modes, atomicity (no
temporary files left), idempotent re-push, ``push(repair=True)``, durable mode and
concurrent writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import snapdir
from golden import build_case, load_cases
from snapdir.stores import Store
from snapdir.stores.file import FileStore
from snapdir.testing import StoreConformance
from storeutil import (
    BACKENDS,
    JOURNAL,
    b3,
    cli_env,
    content_state,
    journal_entry_id,
    journal_ids,
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


def store_files(store: Path) -> dict[str, bytes]:
    """Every regular file below ``store`` (relative path -> bytes)."""
    out: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(store):
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, store)] = Path(p).read_bytes()
    return out


def expected_layout(manifest_text: str, snapshot_id: str) -> set[str]:
    keys = {manifest_rel(snapshot_id)}
    for line in manifest_text.split("\n"):
        kind, _, checksum, _, _ = line.split(" ", 4)
        if kind == "F":
            keys.add(object_rel(checksum))
    return keys


def push(path: Path, store: str | FileStore, backend: str = "asyncio", **kw: bool) -> str:
    async def go() -> str:
        return await snapdir.push(path, store, **kw)  # type: ignore[arg-type]

    return run(go, backend)


def verify(snapshot_id: str, store: str | FileStore, backend: str = "asyncio") -> bool:
    async def go() -> bool:
        return await snapdir.verify(snapshot_id, store)

    return run(go, backend)


def assert_sound_store(store: Path) -> None:
    """Every object hashes to its key, every manifest to its id, nothing else lies around."""
    for rel, data in store_files(store).items():
        if rel.startswith(JOURNAL):
            journal_entry_id(rel, data)
            continue
        parts = rel.split(os.sep)
        assert len(parts) == 5, f"stray file in store: {rel}"
        assert parts[0] in (".objects", ".manifests"), rel
        assert [len(p) for p in parts[1:]] == [3, 3, 3, 55], rel
        assert b3(data) == "".join(parts[1:]), f"{rel} does not hash to its key"


# --- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["basic", "ordering", "binary-and-large", "empty-root"])
def test_layout_is_exactly_objects_and_manifest(tmp_path: Path, backend: str, case: str) -> None:
    gc = CASES[case]
    src = build_case(gc, tmp_path / "src")
    store = tmp_path / "store"
    sid = push(src, uri(store), backend)
    assert sid == gc.id
    files = store_files(store)
    journal = {rel: data for rel, data in files.items() if rel.startswith(JOURNAL)}
    assert [journal_entry_id(rel, data) for rel, data in journal.items()] == [gc.id]
    for rel in journal:
        del files[rel]
    assert set(files) == expected_layout(gc.manifest, gc.id)
    assert files[manifest_rel(gc.id)] == (gc.manifest + "\n").encode()
    assert b3(files[manifest_rel(gc.id)]) == gc.id
    for rel, data in files.items():
        if rel.startswith(".objects/"):
            assert b3(data) == rel.replace(".objects/", "").replace("/", "")
        mode = stat.S_IMODE(os.stat(store / rel).st_mode)
        assert mode == 0o644, f"{rel} has mode {mode:o}"
    assert verify(sid, uri(store), backend) is True


def test_example_keys_from_the_format_doc(tmp_path: Path) -> None:
    src = build_case(CASES["basic"], tmp_path / "src")
    store = tmp_path / "store"
    push(src, uri(store))
    assert (
        store / ".manifests/bcb/5e6/536/8d4ef92e244f2ae207ebe9e7a8618a62526e93e36337c7d062dc395"
    ).is_file()
    hello = store / ".objects/8e4/c7c/1b9/9dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99"
    assert hello.read_bytes() == b"hello\n"


MODES = {"exec": 0o755, "private": 0o600, "setuid": 0o4755, "setgid": 0o2750, "ro": 0o444}


def mode_tree(src: Path) -> Path:
    for name, mode in MODES.items():
        write(src / name, f"content of {name}\n", mode)
    return src


def assert_objects_0644(store: Path, sid: str) -> None:
    for name, mode in MODES.items():
        obj = store / object_rel(b3(f"content of {name}\n".encode()))
        got = stat.S_IMODE(os.stat(obj).st_mode)
        assert got == 0o644, f"object of {name} (source {mode:o}) stored with mode {got:o}"
    # the modes live in the manifest only
    text = (store / manifest_rel(sid)).read_text()
    for name, mode in MODES.items():
        checksum = b3(f"content of {name}\n".encode())
        assert f"F {mode:o} {checksum} " in text
    assert stat.S_IMODE(os.stat(store / manifest_rel(sid)).st_mode) == 0o644


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o000], ids=["022", "077", "002", "000"])
def test_objects_are_0644_whatever_the_source_mode_and_umask(tmp_path: Path, umask: int) -> None:
    """A fresh process per umask (the CLI), so each starts with that umask."""
    src = mode_tree(tmp_path / "src")
    store = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "snapdir", "push", str(src), "--store", uri(store)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        check=False,
        preexec_fn=lambda: os.umask(umask),
    )
    assert proc.returncode == 0, proc.stderr
    assert_objects_0644(store, proc.stdout.strip())


def test_objects_are_0644_after_the_umask_changes_in_process(tmp_path: Path) -> None:
    """A long-running program may change its umask between pushes."""
    store = tmp_path / "store"
    push(build_case(CASES["basic"], tmp_path / "warm"), uri(store))  # umask 022 here
    old = os.umask(0o077)
    try:
        sid = push(mode_tree(tmp_path / "src"), uri(store))
    finally:
        os.umask(old)
    assert_objects_0644(store, sid)


def test_no_temporary_files_are_left(tmp_path: Path, backend: str) -> None:
    src = tmp_path / "src"
    for i in range(200):
        write(src / f"d{i % 7}" / f"f{i}.txt", f"file {i}\n" * (i + 1))
    store = tmp_path / "store"
    sid = push(src, uri(store), backend)
    assert staging_leftovers(store) == []
    assert_sound_store(store)
    assert journal_ids(store) == [sid]
    content = {rel for rel in store_files(store) if not rel.startswith(JOURNAL)}
    assert content == expected_layout((store / manifest_rel(sid)).read_text()[:-1], sid)


# --- idempotence --------------------------------------------------------------------------


def test_repush_leaves_the_store_untouched(tmp_path: Path, backend: str) -> None:
    src = build_case(CASES["basic"], tmp_path / "src")
    store = tmp_path / "store"
    sid = push(src, uri(store), backend)
    before = content_state(store)
    assert push(src, uri(store), backend) == sid
    assert content_state(store) == before  # same inodes, same mtimes, same bytes
    assert journal_ids(store) == [sid, sid]
    # repair re-reads every object; sound ones stay as they are
    objects = tree_state(store / ".objects")
    assert push(src, uri(store), backend, repair=True) == sid
    assert tree_state(store / ".objects") == objects
    assert (store / manifest_rel(sid)).read_text() == CASES["basic"].manifest + "\n"


def test_second_snapshot_reuses_existing_objects(tmp_path: Path, backend: str) -> None:
    src = tmp_path / "src"
    for i in range(20):
        write(src / f"f{i}", f"{i}\n")
    store = tmp_path / "store"
    push(src, uri(store), backend)
    before = tree_state(store / ".objects")
    write(src / "new", "new\n")
    sid2 = push(src, uri(store), backend)
    after = tree_state(store / ".objects")
    for rel, node in before.items():
        if node.kind == "F":
            assert after[rel] == node, f"{rel} was rewritten"
    new_obj = object_rel(b3(b"new\n")).replace(".objects/", "")
    assert set(after) - set(before) >= {new_obj}
    assert verify(sid2, uri(store), backend)


# --- repair --------------------------------------------------------------------------------


def test_push_repair_restores_a_deleted_object(tmp_path: Path, backend: str) -> None:
    src = build_case(CASES["basic"], tmp_path / "src")
    store = tmp_path / "store"
    sid = push(src, uri(store), backend)
    obj = store / object_rel(b3(b"hello\n"))
    obj.unlink()
    with pytest.raises(snapdir.NotFoundError) as info:
        verify(sid, uri(store), backend)
    assert info.value.problems == {b3(b"hello\n"): "missing"}
    assert push(src, uri(store), backend, repair=True) == sid
    assert obj.read_bytes() == b"hello\n"
    assert stat.S_IMODE(obj.stat().st_mode) == 0o644
    assert verify(sid, uri(store), backend)
    assert staging_leftovers(store) == []


@pytest.mark.parametrize("damage", ["same-size", "truncated", "longer"])
def test_push_repair_replaces_a_corrupt_object(tmp_path: Path, backend: str, damage: str) -> None:
    src = build_case(CASES["basic"], tmp_path / "src")
    store = tmp_path / "store"
    sid = push(src, uri(store), backend)
    obj = store / object_rel(b3(b"hello\n"))
    bad = {"same-size": b"HELLO\n", "truncated": b"hel", "longer": b"hello\nworld\n"}[damage]
    os.chmod(obj, 0o644)
    obj.write_bytes(bad)
    others = {k: v for k, v in tree_state(store / ".objects").items() if v.kind == "F"}
    with pytest.raises(snapdir.HashMismatchError) as info:
        verify(sid, uri(store), backend)
    assert info.value.problems == {b3(b"hello\n"): "corrupt"}
    assert push(src, uri(store), backend, repair=True) == sid
    assert obj.read_bytes() == b"hello\n"
    assert verify(sid, uri(store), backend)
    after = tree_state(store / ".objects")
    hello_rel = object_rel(b3(b"hello\n")).replace(".objects/", "")
    for rel, node in others.items():
        if rel != hello_rel:
            assert after[rel] == node, f"sound object {rel} was rewritten by the repair"
    assert staging_leftovers(store) == []


# --- durable mode ------------------------------------------------------------------------


def test_durable_store_pushes_and_pulls(tmp_path: Path, backend: str) -> None:
    src = build_case(CASES["binary-and-large"], tmp_path / "src")
    store = FileStore(uri(tmp_path / "store"), durable=True)
    assert store.durable
    sid = push(src, store, backend)
    assert sid == CASES["binary-and-large"].id
    assert verify(sid, store, backend)
    dest = tmp_path / "dest"

    async def pull() -> None:
        await snapdir.pull(sid, store, dest)

    run(pull, backend)
    assert run(lambda: snapdir.id(dest), backend) == sid
    assert_sound_store(tmp_path / "store")


def test_durable_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPDIR_DURABLE", "1")
    assert FileStore(uri(tmp_path / "s")).durable
    assert not FileStore(uri(tmp_path / "s"), durable=False).durable
    monkeypatch.setenv("SNAPDIR_DURABLE", "0")
    assert not FileStore(uri(tmp_path / "s")).durable
    src = build_case(CASES["basic"], tmp_path / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "snapdir", "push", str(src), "--store", uri(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=cli_env(SNAPDIR_DURABLE="1"),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == CASES["basic"].id + "\n"
    assert verify(CASES["basic"].id, uri(tmp_path / "store"))
    assert_sound_store(tmp_path / "store")


# --- concurrent writers -----------------------------------------------------------------


def test_concurrent_pushes_of_overlapping_trees(tmp_path: Path) -> None:
    shared = {f"shared/{i:03}.bin": os.urandom(4096 + i) for i in range(150)}
    trees = []
    for t in range(2):
        root = tmp_path / f"tree{t}"
        for rel, data in shared.items():
            write(root / rel, data)
        for i in range(30):
            write(root / f"own{t}" / f"{i}.txt", f"tree {t} file {i}\n")
        write(root / "big.bin", b"B" * (1 << 20))  # same big object in both
        trees.append(root)
    store = uri(tmp_path / "store")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "snapdir", "push", str(root), "--store", store, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for root in trees * 2  # two processes per tree, four at once
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids.append(out.strip())
    assert ids[0] == ids[2]
    assert ids[1] == ids[3]
    assert ids[0] != ids[1]
    for sid in ids[:2]:
        assert verify(sid, store)
    assert_sound_store(tmp_path / "store")
    assert len(os.listdir(tmp_path / "store" / ".manifests")) >= 1
    objects = [k for k in store_files(tmp_path / "store") if k.startswith(".objects/")]
    assert len(objects) == 150 + 2 * 30 + 1  # one copy of each distinct content


# --- the shared conformance suite -----------------------------------------------------------


class TestFileStoreConformance(StoreConformance):
    """:mod:`snapdir.testing` run against the ``file://`` store. The store lives at
    ``<tmp>/around/store``; ``raw_keys`` lists everything under ``around`` so that a file
    written next to the store (outside its prefix) is caught too."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        # An empty store is an existing empty directory (a missing one is an error for
        # reads: a mistyped URI must not look like an empty store).
        (tmp_path / "around" / "store").mkdir(parents=True)
        return FileStore(uri(tmp_path / "around" / "store"))

    @staticmethod
    def _around(store: Store) -> Path:
        assert isinstance(store, FileStore)
        return Path(store.root).parent

    def key_root(self, store: Store) -> str:
        return "store/"

    def raw_keys(self, store: Store) -> set[str]:
        around = self._around(store)
        return {str(Path(p).relative_to(around)) for p in files_below_abs(around)}

    def read_raw(self, store: Store, key: str) -> bytes:
        return (self._around(store) / key).read_bytes()

    def raw_mode(self, store: Store, key: str) -> int | None:
        return stat.S_IMODE(os.stat(self._around(store) / key).st_mode)

    def corrupt(self, store: Store, checksum: str, data: bytes) -> None:
        assert isinstance(store, FileStore)
        write(Path(store.object_path(checksum)), data)

    def write_raw_manifest(self, store: Store, snapshot_id: str, data: bytes) -> None:
        assert isinstance(store, FileStore)
        write(Path(store.manifest_path(snapshot_id)), data)


def files_below_abs(root: Path) -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]
