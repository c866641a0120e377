"""The managed local cache: ``push --id`` (a staged snapshot to a store, no walk), ``cache du``,
``cache verify [--purge]``, ``cache clear``, ``cache prune`` (least recently used first)
and the cache's lock (operations share it; clear and prune take it alone)."""

from __future__ import annotations

import fcntl
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from snapdir import cache_admin
from snapdir._cache import LOCK_FILE, cache_store
from snapdir._errors import InvalidArgumentError, SnapdirError
from snapdir.cli.snapshot import PUSH_ONLY_JSON
from storeutil import b3, cli_env, manifest_rel, object_rel, run_cli, uri, write

DAY = 86400.0


def cache() -> Path:
    return Path(os.environ["SNAPDIR_CACHE_DIR"])


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        write(root / rel, text)
    return root


def cli_json(*argv: str, status: int = 0) -> dict[str, Any]:
    proc = run_cli(*argv, "--json")
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def stage(root: Path) -> str:
    return str(cli_json("stage", str(root))["id"])


def age(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


# -- push --id ----------------------------------------------------------------------------


def test_push_id_sends_a_staged_snapshot_without_its_directory(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"a.txt": "a\n", "b/c.txt": "c\n", "b/same.txt": "a\n"})
    sid = stage(src)
    shutil.rmtree(src)  # nothing left to walk: the cache alone must do
    store = tmp_path / "store"
    doc = cli_json("push", "--id", sid, "--store", uri(store), "--label", "ci")
    assert set(doc) == {*PUSH_ONLY_JSON, "schema", "warnings"}
    assert doc["id"] == sid
    assert (doc["files"], doc["objects"], doc["uploaded"]) == (3, 2, 2)
    assert doc["bytes_uploaded"] == 4
    assert doc["bytes"] == 6
    assert doc["noop"] is False
    assert isinstance(doc["journal"], str)
    assert doc["journal"].startswith(".snapdir/journal/")
    assert (store / manifest_rel(sid)).is_file()
    assert (store / object_rel(b3(b"c\n"))).read_bytes() == b"c\n"
    listed = cli_json("ls", "--store", uri(store))["snapshots"]
    assert isinstance(listed, list)
    assert [(e["id"], e["labels"]) for e in listed] == [(sid, ["ci"])]
    out = tmp_path / "out"
    assert run_cli("pull", sid, str(out), "--store", uri(store)).returncode == 0
    assert (out / "b" / "same.txt").read_text() == "a\n"

    again = cli_json("push", "--id", sid, "--store", uri(store))
    assert (again["noop"], again["uploaded"], again["bytes_uploaded"]) == (True, 0, 0)


def test_push_id_copies_only_what_the_store_lacks(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"a.txt": "a\n", "b.txt": "b\n"})
    store = uri(tmp_path / "store")
    assert run_cli("push", str(tmp_path / "src"), "--store", store).returncode == 0
    write(src / "c.txt", "new\n")
    sid = stage(src)
    doc = cli_json("push", "--id", sid, "--store", store)
    assert (doc["uploaded"], doc["bytes_uploaded"], doc["objects"]) == (1, 4, 3)


def test_push_id_verifies_what_it_reads_from_the_cache(tmp_path: Path) -> None:
    sid = stage(tree(tmp_path / "src", {"a.txt": "a\n"}))
    obj = cache() / object_rel(b3(b"a\n"))
    obj.chmod(0o644)
    obj.write_bytes(b"b\n")
    store = tmp_path / "store"
    doc = cli_json("push", "--id", sid, "--store", uri(store), status=5)
    assert doc["error"]["code"] == "HASH_MISMATCH"
    assert not (store / manifest_rel(sid)).exists()  # never a snapshot without its objects


def test_push_id_not_in_the_cache_and_with_a_path(tmp_path: Path) -> None:
    missing = b3(b"nothing staged")
    store = uri(tmp_path / "store")
    proc = run_cli("push", "--id", missing, "--store", store)
    assert proc.returncode == 4, proc.stderr
    assert missing in proc.stderr
    proc = run_cli("push", str(tmp_path), "--id", missing, "--store", store)
    assert proc.returncode == 2, proc.stderr
    assert "not both" in proc.stderr
    assert not (tmp_path / "store").exists()


# -- du, verify, clear ---------------------------------------------------------------------


def test_du_counts_objects_manifests_and_stat_cache(tmp_path: Path) -> None:
    empty = cli_json("cache", "du")
    assert (empty["bytes"], empty["objects"], empty["manifests"]) == (0, 0, 0)
    sid = stage(tree(tmp_path / "src", {"a.txt": "aa\n", "b.txt": "bbb\n", "c.txt": "aa\n"}))
    dest = tmp_path / "co"
    for _ in range(2):  # the second checkout finds the files right and stamps them
        assert run_cli("checkout", sid, str(dest), "--force").returncode == 0
    doc = cli_json("cache", "du")
    manifest = (cache() / manifest_rel(sid)).stat().st_size
    statfiles = list((cache() / "statcache").iterdir())
    assert (doc["objects"], doc["object_bytes"]) == (2, 7)
    assert (doc["manifests"], doc["manifest_bytes"]) == (1, manifest)
    assert doc["statcache_files"] == len(statfiles) >= 2
    assert doc["stamps"] == len([p for p in statfiles if p.name.startswith("checkout-")]) >= 1
    assert doc["bytes"] == 7 + manifest + sum(p.stat().st_size for p in statfiles)
    assert doc["directory"] == str(cache())


def test_verify_reports_and_purges_damage(tmp_path: Path) -> None:
    sid = stage(tree(tmp_path / "src", {"a.txt": "a\n", "b.txt": "b\n"}))
    other = stage(tree(tmp_path / "other", {"c.txt": "c\n"}))
    ok = cli_json("cache", "verify")
    assert ok["ok"] is True
    assert (ok["objects"], ok["manifests"]) == (3, 2)

    bad = cache() / object_rel(b3(b"a\n"))
    bad.chmod(0o644)
    bad.write_bytes(b"rot\n")
    (cache() / object_rel(b3(b"c\n"))).unlink()
    doc = cli_json("cache", "verify", status=1)
    assert doc["corrupt_objects"] == [b3(b"a\n")]
    assert doc["missing_objects"] == [b3(b"c\n")]
    assert doc["incomplete_manifests"] == sorted([sid, other])
    assert doc["purged"] is False
    assert doc["ok"] is False
    assert bad.exists()  # reported, not touched

    purged = cli_json("cache", "verify", "--purge")
    assert purged["purged"] is True
    assert not bad.exists()
    assert not (cache() / manifest_rel(sid)).exists()
    assert (cache() / object_rel(b3(b"b\n"))).exists()  # intact content stays
    assert cli_json("cache", "verify")["ok"] is True
    assert stage(tmp_path / "src") == sid  # staging again repairs it
    assert cli_json("cache", "verify")["ok"] is True


def test_verify_finds_a_corrupt_manifest(tmp_path: Path) -> None:
    sid = stage(tree(tmp_path / "src", {"a.txt": "a\n"}))
    m = cache() / manifest_rel(sid)
    m.chmod(0o644)
    m.write_text(m.read_text().replace("a.txt", "z.txt"))
    proc = run_cli("cache", "verify")
    assert proc.returncode == 1
    assert f"corrupt manifest {sid}" in proc.stdout
    assert "cache verify --purge" in proc.stderr


def test_clear_removes_ours_and_nothing_else(tmp_path: Path) -> None:
    sid = stage(tree(tmp_path / "src", {"a.txt": "a\n"}))
    (cache() / "notes.txt").write_text("mine\n")
    write(cache() / ".snapdir-in-999999999-x" / "partial", "half")  # a killed fetch's
    outside = tree(tmp_path / "outside", {"keep.txt": "keep\n"})
    os.symlink(outside, cache() / "statcache" / "link-to-outside")
    doc = cli_json("cache", "clear")
    assert (doc["objects"], doc["manifests"]) == (1, 1)
    assert sorted(p.name for p in cache().iterdir()) == [LOCK_FILE, "notes.txt"]
    assert (outside / "keep.txt").read_text() == "keep\n"
    assert run_cli("checkout", sid, str(tmp_path / "co")).returncode == 4


def test_clear_never_follows_a_link_in_place_of_our_directory(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", {"x/y": "precious\n"})
    cache().mkdir(exist_ok=True)
    os.symlink(outside, cache() / ".objects")
    cache_admin.clear()
    assert not os.path.lexists(cache() / ".objects")
    assert (outside / "x" / "y").read_text() == "precious\n"


# -- prune ----------------------------------------------------------------------------------


def test_prune_older_than_keeps_what_recent_snapshots_share(tmp_path: Path) -> None:
    old = stage(tree(tmp_path / "old", {"shared.txt": "shared\n", "gone.txt": "gone\n"}))
    new = stage(tree(tmp_path / "new", {"shared.txt": "shared\n", "new.txt": "new\n"}))
    age(cache() / manifest_rel(old), 10)
    for p in (cache() / "statcache").iterdir():
        age(p, 10)
    orphan = write(cache() / object_rel(b3(b"orphan\n")), "orphan\n")
    age(orphan, 10)
    doc = cli_json("cache", "prune", "--older-than", "7d")
    assert doc["snapshots"] == [old]
    assert doc["objects"] == 2  # gone.txt's object and the orphan
    assert doc["statcache_files"] == 2
    assert not (cache() / object_rel(b3(b"gone\n"))).exists()
    assert not orphan.exists()
    assert (cache() / object_rel(b3(b"shared\n"))).exists()
    assert cli_json("cache", "verify")["ok"] is True
    assert run_cli("checkout", new, str(tmp_path / "co")).returncode == 0
    assert cli_json("cache", "du")["bytes"] == doc["bytes_left"]


def test_prune_max_size_removes_the_least_recently_used_first(tmp_path: Path) -> None:
    ids = [stage(tree(tmp_path / f"t{i}", {"f": f"{i}\n" * 1000})) for i in range(3)]
    for i, sid in enumerate(ids):
        age(cache() / manifest_rel(sid), 10 - i)  # t0 oldest, t2 newest
    # Using t0 makes it the most recent: checkout, fetch and push --id all count.
    assert run_cli("checkout", ids[0], str(tmp_path / "co")).returncode == 0
    before = cache_admin.usage()
    dry = cli_json("cache", "prune", "--max-size", str(before.bytes - 1), "--dry-run")
    assert dry["snapshots"] == [ids[1]]
    assert dry["dry_run"] is True
    assert (cache() / manifest_rel(ids[1])).exists()
    doc = cli_json("cache", "prune", "--max-size", str(before.bytes - 1))
    assert doc["snapshots"] == [ids[1]]
    assert not (cache() / manifest_rel(ids[1])).exists()
    assert not (cache() / object_rel(b3(b"1\n" * 1000))).exists()
    assert cache_admin.usage().bytes == doc["bytes_left"] <= before.bytes - 1
    zero = cli_json("cache", "prune", "--max-size", "0")
    assert sorted(zero["snapshots"]) == sorted([ids[0], ids[2]])
    assert cache_admin.usage().bytes == 0


def test_fetch_stage_checkout_and_push_id_mark_a_snapshot_used(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    src = tree(tmp_path / "src", {"a": "a\n"})
    assert run_cli("push", str(src), "--store", store).returncode == 0
    sid = stage(src)
    m = cache() / manifest_rel(sid)
    for argv in (
        ["fetch", sid, "--store", store],
        ["push", "--id", sid, "--store", store],
        ["stage", str(src)],
        ["checkout", sid, str(tmp_path / "co"), "--force"],
    ):
        age(m, 10)
        assert run_cli(*argv).returncode == 0
        assert time.time() - m.stat().st_mtime < 60, argv


# -- locking --------------------------------------------------------------------------------


def test_an_operation_holds_the_lock_clear_and_prune_wait(tmp_path: Path) -> None:
    stage(tree(tmp_path / "src", {"a.txt": "a\n"}))
    store = cache_store()  # an operation in progress holds a shared lock
    lock = cache() / LOCK_FILE
    fd = os.open(lock, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # another operation may share it
        fcntl.flock(fd, fcntl.LOCK_UN)
        proc = run_cli("cache", "clear", "--no-wait", "--json")
        assert proc.returncode == 3, proc.stderr
        assert json.loads(proc.stdout)["error"]["code"] == "CONFLICT"
        assert str(lock) in proc.stderr
        assert (cache() / ".objects").is_dir()
        waiting = subprocess.Popen(
            [sys.executable, "-m", "snapdir", "cache", "prune", "--max-size", "0", "--json"],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(1.5)
            assert waiting.poll() is None  # blocked on the lock
            assert (cache() / ".objects").is_dir()
            del store
            gc.collect()  # the operation ends: its lock goes with its store
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        assert waiting.returncode == 0, err
        assert json.loads(out)["bytes_left"] == 0
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and prune let go of it
    finally:
        os.close(fd)


def test_the_lock_file_is_never_followed(tmp_path: Path) -> None:
    cache().mkdir(exist_ok=True)
    target = tmp_path / "elsewhere"
    os.symlink(target, cache() / LOCK_FILE)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        cache_admin.clear()
    assert not target.exists()


# -- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("10GiB", 10 * 2**30),
        ("500MiB", 500 * 2**20),
        ("1.5KiB", 1536),
        ("2G", 2 * 10**9),
        ("4096", 4096),
        ("0", 0),
        ("7 kib", 7 * 1024),
    ],
)
def test_parse_size(text: str, n: int) -> None:
    assert cache_admin.parse_size(text) == n


@pytest.mark.parametrize("text", ["", "10XB", "-1", "GiB", "1e3"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid size"):
        cache_admin.parse_size(text)


def test_parse_duration() -> None:
    assert cache_admin.parse_duration("7d") == 7 * DAY
    assert cache_admin.parse_duration("12h") == 12 * 3600
    for bad in ("", "0d", "soon", "7w"):
        with pytest.raises(InvalidArgumentError):
            cache_admin.parse_duration(bad)


def test_prune_needs_a_limit() -> None:
    with pytest.raises(SnapdirError):
        cache_admin.prune()
