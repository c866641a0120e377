"""Concurrent writers and readers on one store (SPEC §4: idempotent, race-safe writes).

Every test starts real ``snapdir`` processes at once and then checks, past snapdir, that
the store holds exactly what it should: every object hashes to its key, no temporary file
or unfinished upload is left, every snapshot verifies (``snapdir verify``) and pulls back
byte for byte, modes included.

* 8 processes pushing overlapping trees (shared files, among them one uploaded in parts on
  S3, plus files of their own) into one ``file://`` and one S3 store, while two pulls of a
  snapshot already there read from the same store into two destinations;
* 8 processes pushing the identical tree at once (every object and the manifest raced);
* 8 pulls at once of the 8 new snapshots, and two ``checkout`` runs from one cache;
* two ``stage`` runs of one tree at once sharing the stat cache: both ids right, and the
  cache they left is sound (a third walk reuses it and still sees a change).

The S3 server is the pytest fixture ``seaweedfs`` (SeaweedFS on loopback).
"""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import snapdir
from servers.seaweed import S3Server
from snapdir import _snapdir
from snapdir._cache import LOCK_FILE
from snapdir._manifest import stat_cache_dir
from snapdir._snapdir import blake3_hex
from storeutil import JOURNAL, cli_env, journal_entry_id

KiB = 1024
MiB = 1024 * KiB
WRITERS = 8
#: Above the lowered multipart threshold and the 5 MiB part size: two parts on S3.
BIG = 5 * MiB + 123 * KiB


# -------------------------------------------------------------------------------------------
# Trees and what a store should hold
# -------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def make_trees(base: Path, n: int, *, identical: bool = False) -> list[Path]:
    """``n`` trees sharing most files (same paths and bytes, one of them BIG) and, unless
    ``identical``, each with files of its own and one shared path with its own bytes."""
    rng = random.Random(6)
    shared = {f"s/{i:02d}.bin": rng.randbytes(rng.randrange(0, 24 * KiB)) for i in range(30)}
    shared["big.dat"] = rng.randbytes(BIG)
    shared["s/empty"] = b""
    trees = []
    for t in range(n):
        root = base / f"tree{t}"
        for rel, data in shared.items():
            _write(root / rel, data, 0o755 if rel.endswith("3.bin") else 0o644)
        if not identical:
            for i in range(8):
                _write(root / f"own/{i}.bin", rng.randbytes(rng.randrange(1, 64 * KiB)))
            _write(root / "s/00.bin", f"tree {t}".encode())
        (root / "empty-dir").mkdir()
        trees.append(root)
    return trees


Desc = dict[str, tuple[str, int, str]]


def describe(root: Path) -> Desc:
    """``{rel: (kind, mode, blake3)}`` of a tree, the root as ``"."``."""
    out: Desc = {".": ("D", os.stat(root).st_mode & 0o7777, "")}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[p.relative_to(root).as_posix()] = ("D", os.lstat(p).st_mode & 0o7777, "")
        for f in filenames:
            p = Path(dirpath) / f
            mode = os.lstat(p).st_mode & 0o7777
            out[p.relative_to(root).as_posix()] = ("F", mode, blake3_hex(p.read_bytes()))
    return out


def tree_id(root: Path) -> str:
    return anyio.run(functools.partial(snapdir.id, root, use_cache=False))


def objects_of(trees: list[Path]) -> set[str]:
    out = set()
    for t in trees:
        m = anyio.run(functools.partial(snapdir.manifest, t, use_cache=False))
        out |= {c for c, _ in m.objects()}
    return out


def key_of(rel: str) -> str | None:
    parts = rel.split("/")
    if [len(p) for p in parts] != [3, 3, 3, 55]:
        return None
    h = "".join(parts)
    return h if all(c in "0123456789abcdef" for c in h) else None


def check_items(items: Iterator[tuple[str, bytes]]) -> tuple[set[str], set[str]]:
    """Objects and manifests of a store from its ``(key, bytes)``; fails on anything that
    is not a well-formed key, an object not hashing to its key, a manifest not hashing to
    its id or missing one of its objects."""
    objects: dict[str, int] = {}
    manifests: dict[str, bytes] = {}
    for rel, data in items:
        if rel.startswith(JOURNAL):
            journal_entry_id(rel, data)
            continue
        area, _, rest = rel.partition("/")
        key = key_of(rest)
        assert area in (".objects", ".manifests"), f"stray key {rel}"
        assert key is not None, f"stray key {rel} (a temporary file?)"
        if area == ".objects":
            assert blake3_hex(data) == key, f"object {key} does not hash to its key"
            objects[key] = len(data)
        else:
            manifests[key] = data
    for sid, data in manifests.items():
        m = snapdir.Manifest.parse(data.decode())
        assert m.id == sid
        for c, n in m.objects():
            assert objects.get(c) == n, f"manifest {sid} without its object {c}"
    return set(objects), set(manifests)


def file_items(root: Path) -> Iterator[tuple[str, bytes]]:
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            if rel.startswith("statcache/"):
                continue
            if rel.startswith(".objects/"):
                assert os.stat(p).st_mode & 0o7777 == 0o644, f"{rel} is not 0644"
            yield rel, p.read_bytes()


# -------------------------------------------------------------------------------------------
# Stores under test
# -------------------------------------------------------------------------------------------


@dataclass
class Target:
    uri: str
    env: dict[str, str]
    items: Callable[[], Iterator[tuple[str, bytes]]]
    #: Unfinished multipart uploads (S3), which would hold data nobody can see.
    pending: Callable[[], list[str]]


def file_target(tmp_path: Path) -> Target:
    root = tmp_path / "store"
    return Target(f"file://{root}", cli_env(), lambda: file_items(root), list)


def s3_target(server: S3Server) -> Target:
    client = server.client()
    bucket = f"concurrency-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    env = cli_env(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION=server.region,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_PROFILE=None,
        AWS_SESSION_TOKEN=None,
        SNAPDIR_S3_STORE_ENDPOINT_URL=server.endpoint_url,
        SNAPDIR_S3_MULTIPART_THRESHOLD=str(1 * MiB),
        SNAPDIR_S3_PART_SIZE=str(5 * MiB),
    )

    def items() -> Iterator[tuple[str, bytes]]:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for it in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=it["Key"])["Body"]
                yield str(it["Key"])[len("s/") :], body.read()

    def pending() -> list[str]:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [str(u["Key"]) for u in uploads]

    return Target(f"s3://{bucket}/s", env, items, pending)


@pytest.fixture(params=["file", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "file":
        return file_target(tmp_path)
    return s3_target(request.getfixturevalue("seaweedfs"))


# -------------------------------------------------------------------------------------------
# Processes
# -------------------------------------------------------------------------------------------


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "snapdir", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    """Wait for every process; each must succeed. Their standard outputs."""
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, f"{p.args!r} failed: {err}"
        outs.append(out.strip())
    return outs


def cli(*args: str, env: dict[str, str]) -> str:
    return finish([start(*args, env=env)])[0]


def assert_store(t: Target, want_ids: set[str], want_objects: set[str]) -> None:
    objects, manifests = check_items(t.items())
    assert manifests == want_ids
    assert objects == want_objects
    assert t.pending() == []
    report = json.loads(cli("verify", "--store", t.uri, "--json", env=t.env))
    assert report == {
        "ok": True,
        "snapshots": len(want_ids),
        "problems": {},
        "schema": 1,
        "warnings": [],
        # (what verify --all reports; empty without it)
        "missing_objects": [],
        "journal_problems": [],
        "expired_intents": [],
        "live_intents": 0,
        "stale_plans": [],
    }


def pull_back(t: Target, sid: str, dest: Path) -> Desc:
    cli("pull", sid, str(dest), "--store", t.uri, "-q", env=t.env)
    return describe(dest)


# -------------------------------------------------------------------------------------------
# Tests
# -------------------------------------------------------------------------------------------


def test_eight_pushes_of_overlapping_trees_while_two_pulls_read(
    target: Target, tmp_path: Path
) -> None:
    trees = make_trees(tmp_path / "trees", WRITERS + 1)
    old, trees = trees[0], trees[1:]
    old_id = cli("push", str(old), "--store", target.uri, "-q", env=target.env)
    want = {tree_id(t): t for t in trees}
    assert len(want) == WRITERS

    pushes = [start("push", str(t), "--store", target.uri, "-q", env=target.env) for t in trees]
    dests = [tmp_path / "pulled-a", tmp_path / "pulled-b"]
    pulls = [
        start("pull", old_id, str(d), "--store", target.uri, "-q", env=target.env) for d in dests
    ]
    running_together = any(p.poll() is None for p in pushes)
    assert finish(pushes) == list(want)
    finish(pulls)
    assert running_together, "the pushes ended before the pulls started: no overlap tested"

    assert_store(target, {old_id, *want}, objects_of([old, *trees]))
    for d in dests:
        assert describe(d) == describe(old)
    # And 8 pulls at once, each into a destination of its own.
    backs = [tmp_path / f"back{i}" for i in range(WRITERS)]
    finish(
        [
            start("pull", sid, str(b), "--store", target.uri, "-q", env=target.env)
            for sid, b in zip(want, backs, strict=True)
        ]
    )
    for b, tree in zip(backs, want.values(), strict=True):
        assert describe(b) == describe(tree)


def test_eight_pushes_of_the_identical_tree(target: Target, tmp_path: Path) -> None:
    (tree,) = make_trees(tmp_path / "trees", 1, identical=True)
    sid = tree_id(tree)
    pushes = [
        start("push", str(tree), "--store", target.uri, "-q", env=target.env)
        for _ in range(WRITERS)
    ]
    assert finish(pushes) == [sid] * WRITERS
    assert_store(target, {sid}, objects_of([tree]))
    assert pull_back(target, sid, tmp_path / "back") == describe(tree)


def _walk(root: Path) -> tuple[snapdir.Manifest, int, int]:
    """Manifest through the stat cache, files counted, files whose checksum it reused."""
    prog = _snapdir.Progress()
    m, _ = _snapdir.walk(str(root), False, False, [], None, prog, stat_cache_dir(True), False)
    return m, prog.files, prog.reused


def test_two_stages_of_one_tree_at_once_share_the_stat_cache(tmp_path: Path) -> None:
    (tree,) = make_trees(tmp_path / "trees", 1)
    sid = tree_id(tree)
    time.sleep(2.2)  # past the stat cache's racy margin: the stages may cache every file
    cache = Path(os.environ["SNAPDIR_CACHE_DIR"])
    env = cli_env(SNAPDIR_CACHE_DIR=str(cache))
    stages = [start("stage", str(tree), "-q", env=env) for _ in range(2)]
    assert finish(stages) == [sid, sid]
    assert cli("stage", str(tree), "-q", env=env) == sid

    # the cache's lock file (docs/format.md, "The local cache") is not a key
    objects, manifests = check_items((r, d) for r, d in file_items(cache) if r != LOCK_FILE)
    assert manifests == {sid}
    assert objects == objects_of([tree])
    assert json.loads(cli("verify", "--store", f"file://{cache}", "--json", env=env))["ok"]
    # The cache the racing stages left is whole and right: it is used for every file, and
    # a change it must not hide (same size, same mtime) is still seen.
    m, files, reused = _walk(tree)
    assert (m.id, reused) == (sid, files)
    victim = tree / "s/01.bin"
    st = victim.stat()
    victim.write_bytes(bytes(b ^ 1 for b in victim.read_bytes()))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    new = tree_id(tree)
    assert new != sid
    assert cli("stage", str(tree), "-q", env=env) == new


def test_checkouts_from_one_cache_into_two_destinations_at_once(tmp_path: Path) -> None:
    trees = make_trees(tmp_path / "trees", 1)
    sid = cli("stage", str(trees[0]), "-q", env=cli_env())
    dests = [tmp_path / "a", tmp_path / "b"]
    finish([start("checkout", sid, str(d), "-q", env=cli_env()) for d in dests])
    for d in dests:
        assert describe(d) == describe(trees[0])
