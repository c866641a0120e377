"""snapdir's operations end to end against real cloud-protocol servers on loopback.

Every test runs the public API (``snapdir.push`` / ``pull`` / ``sync`` / ``verify`` /
``diff``) or the ``snapdir`` command line against the S3, GCS and B2 stores, each pointed at
its loopback server (SeaweedFS, fake-gcs-server, the B2 simulator; see
``tests/servers/README.md``) through the environment variables a user would set:

* the README's quick start, with a small but complete project tree (nested directories, an
  empty file, an empty directory, an executable, a file above the store's multipart /
  resumable / large-file threshold); ``sync`` from each backend to a B2 archive and along
  s3 -> b2 -> gs (spelled ``gcs://``) -> file, verified at every hop;
* the CLI flows (``push`` prints only the id, ``pull``, ``verify --json``,
  ``diff --exit-code``);
* request economics: what a no-op push, a push into an empty store, a push of a one-file
  change and a pull cost, counted by the stores' ``request_count()``;
* faults: push, pull, sync and verify through a proxy that breaks 15% of requests, and then
  every key in the store re-hashed through the SDK, past the store;
* errors: a missing bucket, missing credentials, a missing snapshot, an unreachable endpoint.

Nothing here talks to anything but 127.0.0.1. The servers are the session fixtures of
``servers.fixtures``; if one cannot start its tests error out (they are never skipped).
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import os
import random
import socket
import stat
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import pytest
import snapdir
from servers.b2sim import B2Server
from servers.fakegcs import EMULATOR_ENV, GcsServer
from servers.faultproxy import FaultProxy, start_fault_proxy
from servers.seaweed import S3Server
from snapdir._common import OpStats
from snapdir._pull import copy_snapshot, pull_with_stats
from snapdir._push import push_with_stats
from snapdir._snapdir import blake3_hex
from snapdir.stores import _wrappers
from snapdir.stores.b2 import B2Store
from snapdir.stores.gcs import GcsStore
from snapdir.stores.s3 import S3Store
from storeutil import JOURNAL, cli_env, journal_entry_id, run_cli

T = TypeVar("T")

KiB = 1024
MiB = 1024 * KiB
SCHEMES = ("s3", "gs", "b2")
#: Above every lowered threshold below: S3 multipart (2 parts of 5 MiB + rest), GCS resumable
#: (6 chunks of 1 MiB), B2 large file (2 parts: the simulator's 5,000,000-byte minimum + rest).
BIG = 5 * MiB + 300 * KiB + 7
LOWERED_THRESHOLD = 1 * MiB
#: Requests a store may send once, before its first storage request: B2 authorises the key
#: (``b2_authorize_account``) and may look up the bucket id (``b2_list_buckets``).
SETUP_REQUESTS = {"s3": 0, "gs": 0, "b2": 2}
FAULT_KINDS = ("503", "500", "429", "reset_request", "reset_response", "lost_response")
PROXY_FLAVOR = {"s3": "s3", "gs": "gcs", "b2": "b2"}


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def run(fn: Callable[..., Awaitable[T]], *args: Any, backend: str = "asyncio", **kw: Any) -> T:
    """Run ``fn(*args, **kw)`` to completion in a fresh event loop."""
    return anyio.run(functools.partial(fn, *args, **kw), backend=backend)


def tree_id(path: Path) -> str:
    return run(snapdir.id, path)


# -------------------------------------------------------------------------------------------
# Raw access to each server, past the store (for checking what was really stored)
# -------------------------------------------------------------------------------------------


class Raw(Protocol):
    bucket: str

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every stored (key, bytes) under ``prefix``; every version where there are several."""
        ...

    def leftovers(self, prefix: str) -> list[str]:
        """Unfinished uploads under ``prefix`` that hold data (parts)."""
        ...


class _S3Raw:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = str(item["Key"])
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                out.append((key, bytes(body.read())))
        return out

    def leftovers(self, prefix: str) -> list[str]:
        # An upload whose CreateMultipartUpload answer was lost is invisible to the client
        # and holds no parts (a bucket lifecycle rule reaps it); one holding parts costs
        # storage and must have been aborted.
        resp = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        out: list[str] = []
        for up in resp.get("Uploads", []):
            parts = self.client.list_parts(
                Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
            )
            if parts.get("Parts"):
                out.append(f"{up['Key']} (upload {up['UploadId']})")
        return out


class _GcsRaw:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        return [
            (str(b.name), bytes(b.download_as_bytes()))
            for b in self.client.list_blobs(self.bucket, prefix=prefix)
        ]

    def leftovers(self, prefix: str) -> list[str]:
        return []  # a resumable session that was never finalised holds nothing visible


class _B2Raw:
    def __init__(self, api: Any, bucket: str) -> None:
        self.api = api
        self.bucket = bucket
        self.handle = api.get_bucket_by_name(bucket)

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for fv, _ in self.handle.ls(prefix, latest_only=False, recursive=True):
            if fv.action != "upload":
                continue
            buf = io.BytesIO()
            self.api.download_file_by_id(fv.id_).save(buf)
            out.append((str(fv.file_name), buf.getvalue()))
        return out

    def leftovers(self, prefix: str) -> list[str]:
        return [str(f.file_name) for f in self.handle.list_unfinished_large_files(prefix=prefix)]


@pytest.fixture(scope="module")
def s3_raw(seaweedfs: S3Server) -> Iterator[_S3Raw]:
    client = seaweedfs.client()
    bucket = f"snapdir-ops-{_uid()}"
    client.create_bucket(Bucket=bucket)
    yield _S3Raw(client, bucket)
    client.close()


@pytest.fixture(scope="module")
def gs_raw(fake_gcs: GcsServer) -> _GcsRaw:
    client = fake_gcs.client()
    bucket = f"snapdir-ops-{_uid()}"
    client.create_bucket(bucket)
    return _GcsRaw(client, bucket)


@pytest.fixture(scope="module")
def b2_raw(b2_simulator: B2Server) -> _B2Raw:
    return _B2Raw(b2_simulator.api(), b2_simulator.bucket_name)


# -------------------------------------------------------------------------------------------
# One backend, configured through the environment as a user would
# -------------------------------------------------------------------------------------------


@dataclass
class Cloud:
    scheme: str
    endpoint: str  # the real server (fault proxies go in front of it)
    raw: Raw
    mp: pytest.MonkeyPatch
    #: Calls of the store's large-object path (multipart / resumable / large file).
    large: list[str] = field(default_factory=list)

    @property
    def bucket(self) -> str:
        return self.raw.bucket

    def fresh(self, name: str = "store") -> str:
        """A store URI under a prefix no other test uses."""
        return f"{self.scheme}://{self.bucket}/ops-{_uid()}/{name}"

    def route(self, url: str) -> None:
        """Send this backend's traffic to ``url`` (a fault proxy, a dead port, the server)."""
        var = {
            "s3": "SNAPDIR_S3_STORE_ENDPOINT_URL",
            "gs": EMULATOR_ENV,
            "b2": "SNAPDIR_B2_REALM",
        }[self.scheme]
        self.mp.setenv(var, url)

    @property
    def setup_requests(self) -> int:
        return SETUP_REQUESTS[self.scheme]


def _spy(cloud: Cloud, cls: type, name: str) -> None:
    original = getattr(cls, name)

    if inspect.iscoroutinefunction(original):

        async def spy_async(*args: Any, **kwargs: Any) -> Any:
            cloud.large.append(name)
            return await original(*args, **kwargs)

        cloud.mp.setattr(cls, name, spy_async)
    else:

        def spy(*args: Any, **kwargs: Any) -> Any:
            cloud.large.append(name)
            return original(*args, **kwargs)

        cloud.mp.setattr(cls, name, spy)


class Clouds:
    """Opens backends on demand (so a test of one backend starts only its server) and sets
    their environment with ``monkeypatch``: credentials, endpoint, lowered thresholds."""

    def __init__(self, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch) -> None:
        self._request = request
        self._mp = mp
        self._open: dict[str, Cloud] = {}

    def get(self, scheme: str) -> Cloud:
        if scheme in self._open:
            return self._open[scheme]
        mp = self._mp
        fx = self._request.getfixturevalue
        cloud: Cloud
        if scheme == "s3":
            s3: S3Server = fx("seaweedfs")
            # Nothing from this machine: no ~/.aws files, no instance-metadata lookups.
            s3.use_env(mp.setenv, mp.delenv, endpoint=False)
            mp.setenv("SNAPDIR_S3_MULTIPART_THRESHOLD", str(LOWERED_THRESHOLD))
            mp.setenv("SNAPDIR_S3_PART_SIZE", str(5 * MiB))
            cloud = Cloud("s3", s3.endpoint_url, fx("s3_raw"), mp)
            _spy(cloud, S3Store, "_put_multipart")
        elif scheme == "gs":
            gcs: GcsServer = fx("fake_gcs")
            for name in (
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_CLOUD_PROJECT",
                "CLOUDSDK_CONFIG",
            ):
                mp.delenv(name, raising=False)
            # No environment knob for these (GcsStore(uri, resumable_threshold=...) is the
            # API); the class defaults are what a store opened by URI uses.
            mp.setattr(GcsStore, "resumable_threshold", LOWERED_THRESHOLD)
            mp.setattr(GcsStore, "chunk_size", 1 * MiB)
            cloud = Cloud("gs", gcs.endpoint, fx("gs_raw"), mp)
            _spy(cloud, GcsStore, "_put_resumable")
        elif scheme == "b2":
            b2: B2Server = fx("b2_simulator")
            mp.setenv("B2_APPLICATION_KEY_ID", b2.key_id)
            mp.setenv("B2_APPLICATION_KEY", b2.app_key)
            mp.setattr(B2Store, "large_file_threshold", LOWERED_THRESHOLD)
            mp.setattr(B2Store, "part_size", LOWERED_THRESHOLD)  # raised to the 5 MB minimum
            cloud = Cloud("b2", b2.realm_url, fx("b2_raw"), mp)
            _spy(cloud, B2Store, "_put_large")
        else:  # pragma: no cover
            raise ValueError(scheme)
        cloud.route(cloud.endpoint)
        self._open[scheme] = cloud
        return cloud


@pytest.fixture
def clouds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Clouds:
    return Clouds(request, monkeypatch)


@pytest.fixture(params=SCHEMES)
def cloud(request: pytest.FixtureRequest, clouds: Clouds) -> Cloud:
    return clouds.get(str(request.param))


def _fast_retries(mp: pytest.MonkeyPatch, *, give_up_after: float, sdk_sleep_cap: float) -> None:
    """Shorter waits between retries, so fault tests take seconds, not minutes: the retry
    wrapper every operation uses backs off from 20 ms to at most 0.5 s and gives up after
    ``give_up_after`` seconds (default: 0.2 s to 30 s, for 10 minutes); b2sdk's own retry
    sleeps (1 s, 1.5 s, 2.25 s, ...) are capped at ``sdk_sleep_cap``. What is retried, and
    how often, is unchanged."""
    import time

    import b2sdk._internal.b2http as b2http  # type: ignore[import-untyped,unused-ignore]

    policy = _wrappers.RetryPolicy(base_delay=0.02, max_delay=0.5, max_elapsed=give_up_after)
    mp.setattr(_wrappers, "wrap", functools.partial(_wrappers.wrap, retry=policy))

    class _CappedSleep:
        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(min(seconds, sdk_sleep_cap))

    mp.setattr(b2http, "time", _CappedSleep)


# -------------------------------------------------------------------------------------------
# Trees
# -------------------------------------------------------------------------------------------


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def make_project(root: Path, *, big: bool = True) -> Path:
    """A small project: nested directories, an empty file, an empty directory, an executable,
    a name with spaces, two files with the same content, and (``big``) a file above every
    lowered multipart / resumable / large-file threshold."""
    _write(root / "README.md", b"# demo\n\nA project to snapshot.\n")
    _write(root / "src/pkg/__init__.py", b"")
    _write(root / "src/pkg/core.py", b"def answer() -> int:\n    return 42\n")
    _write(root / "src/pkg/data/table.bin", _data(20 * KiB + 3, 1))
    _write(root / "docs/guide/intro.md", b"Hello.\n")
    _write(root / "docs/guide/copy of intro.md", b"Hello.\n")
    _write(root / "bin/run.sh", b'#!/bin/sh\nexec python -m pkg "$@"\n', 0o755)
    (root / "var/cache/empty").mkdir(parents=True)
    if big:
        _write(root / "assets/big.bin", _data(BIG, 2))
    return root


def make_flat(root: Path, count: int, seed: int) -> Path:
    """``count`` files of distinct content (a few hundred bytes to a few KiB each)."""
    rng = random.Random(seed)
    for i in range(count):
        _write(root / f"d{i % 7}" / f"f{i:04d}.dat", rng.randbytes(rng.randint(100, 4 * KiB)))
    return root


def check_restored(src: Path, dest: Path, snap_id: str) -> None:
    assert tree_id(dest) == snap_id
    assert stat.S_IMODE((dest / "bin/run.sh").stat().st_mode) == 0o755
    assert (dest / "src/pkg/__init__.py").stat().st_size == 0
    assert (dest / "var/cache/empty").is_dir()
    assert list((dest / "var/cache/empty").iterdir()) == []
    if (src / "assets/big.bin").exists():
        assert (dest / "assets/big.bin").read_bytes() == (src / "assets/big.bin").read_bytes()


def check_store(cloud: Cloud, uri: str) -> tuple[int, int]:
    """Read every key under the store's prefix through the SDK (past snapdir) and re-hash it:
    each object's bytes must hash to its key, each manifest to its id, each journal entry
    must be well-formed, nothing else may be there, and no unfinished upload may hold parts.
    Returns (objects, manifests)."""
    prefix = snapdir.StoreUri(uri).prefix + "/"
    bad: list[str] = []
    counts = {".objects": 0, ".manifests": 0}
    for key, data in cloud.raw.items(prefix):
        if key[len(prefix) :].startswith(JOURNAL):
            journal_entry_id(key[len(prefix) :], data)
            continue
        area, _, rest = key[len(prefix) :].partition("/")
        parts = rest.split("/")
        if area not in counts or [len(p) for p in parts] != [3, 3, 3, 55]:
            bad.append(f"{key}: not a snapdir key")
            continue
        counts[area] += 1
        digest = blake3_hex(data)
        if digest != "".join(parts):
            bad.append(f"{key}: {len(data)} bytes hashing to {digest}")
    assert not bad, f"{uri} holds wrong keys: {bad}"
    leftovers = cloud.raw.leftovers(prefix)
    assert not leftovers, f"{uri} has unfinished uploads holding data: {leftovers}"
    return counts[".objects"], counts[".manifests"]


def _closed_port() -> socket.socket:
    """A loopback port that is bound but not listening: connections are refused at once
    (kept bound, so nothing else can take it while the test runs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    return proc


# -------------------------------------------------------------------------------------------
# 1. The quick start
# -------------------------------------------------------------------------------------------


def test_quick_start(cloud: Cloud, clouds: Clouds, tmp_path: Path) -> None:
    """The README's quick start on each backend, syncing to a B2 archive."""
    project = make_project(tmp_path / "project")
    restore = tmp_path / "restore"
    uri = cloud.fresh("snapshots")
    archive_uri = clouds.get("b2").fresh("archive/snaps")

    async def quick_start() -> str:
        store = snapdir.StoreUri(uri)
        snap_id = await snapdir.push(project, store)
        await snapdir.pull(snapdir.SnapshotId(snap_id), store, restore)
        await snapdir.sync(snapdir.SnapshotId(snap_id), store, snapdir.StoreUri(archive_uri))
        return snap_id

    snap_id = run(quick_start)
    assert snap_id == tree_id(project)
    check_restored(project, restore, snap_id)
    assert run(snapdir.verify, snap_id, uri) is True
    assert run(snapdir.verify, snap_id, archive_uri) is True
    assert cloud.large, "the big file went through the multipart/resumable/large-file path"
    # 8 files, 7 distinct contents (two copies of intro.md), one manifest
    assert check_store(cloud, uri) == (7, 1)
    assert check_store(clouds.get("b2"), archive_uri) == (7, 1)


def test_sync_across_backends(clouds: Clouds, tmp_path: Path) -> None:
    """s3 -> b2 -> gs (spelled gcs://) -> file, verified at every hop, under trio."""
    s3, b2, gs = clouds.get("s3"), clouds.get("b2"), clouds.get("gs")
    project = make_project(tmp_path / "project")
    a, b, c = s3.fresh(), b2.fresh(), gs.fresh()
    c_alias = "gcs://" + c[len("gs://") :]
    d = f"file://{tmp_path / 'local-store'}"
    restore = tmp_path / "restore"
    assert snapdir.StoreUri(c_alias) == c

    async def chain() -> tuple[str, list[int]]:
        sid = snapdir.SnapshotId(await snapdir.push(project, a))
        copied = []
        for src, dst in ((a, b), (b, c_alias), (c_alias, d)):
            stats: OpStats = await copy_snapshot(sid, src, dst)
            copied.append(stats["copied"])
            assert await snapdir.verify(sid, dst) is True
        assert await snapdir.verify(sid, c) is True  # the same store by its gs:// name
        await snapdir.pull(sid, d, restore)
        # a second sync finds the snapshot there and copies nothing
        again: OpStats = await copy_snapshot(sid, b, c_alias)
        copied.append(again["copied"])
        return sid, copied

    sid, copied = run(chain, backend="trio")
    assert copied == [7, 7, 7, 0]
    check_restored(project, restore, sid)
    for cloud, uri in ((s3, a), (b2, b), (gs, c)):
        assert check_store(cloud, uri) == (7, 1)
    assert s3.large, "s3 multipart"
    assert b2.large, "b2 large file"
    assert gs.large, "gs resumable upload"


def test_gcs_alias(clouds: Clouds, tmp_path: Path) -> None:
    """``gcs://`` is accepted wherever a store URI is, and is the same store as ``gs://``."""
    gs = clouds.get("gs")
    project = make_project(tmp_path / "project", big=False)
    uri = gs.fresh()
    alias = "gcs://" + uri[len("gs://") :]
    sid = run(snapdir.push, project, alias)
    assert run(push_with_stats, project, uri)["noop"] is True
    run(snapdir.pull, sid, alias, tmp_path / "restore")
    check_restored(project, tmp_path / "restore", sid)
    verified = ok(run_cli("verify", "--id", sid, "--store", alias, "--json", env=cli_env()))
    assert json.loads(verified.stdout)["ok"] is True
    diff = run_cli("diff", "--from", f"{alias}@{sid}", "--to", f"{uri}@{sid}", "--exit-code")
    assert diff.returncode == 0, diff.stderr


# -------------------------------------------------------------------------------------------
# 2. The command line
# -------------------------------------------------------------------------------------------


def test_cli(cloud: Cloud, tmp_path: Path) -> None:
    """push prints only the id; pull; verify --json; diff --exit-code 0, then 1."""
    dist = make_project(tmp_path / "dist", big=False)
    sid = tree_id(dist)
    store = cloud.fresh("builds")
    env = cli_env()

    pushed = ok(run_cli("push", "./dist", "--store", store, cwd=tmp_path, env=env))
    assert pushed.stdout == sid + "\n"

    dest = tmp_path / "restore"
    pulled = ok(run_cli("pull", sid, str(dest), "--store", store, env=env))
    assert pulled.stdout == ""
    check_restored(dist, dest, sid)

    verified = ok(run_cli("verify", "--id", sid, "--store", store, "--json", env=env))
    assert json.loads(verified.stdout) == {
        "ok": True,
        "problems": {},
        "snapshots": 1,
        "schema": 1,
        "warnings": [],
        # (what verify --all reports; empty without it)
        "missing_objects": [],
        "journal_problems": [],
        "expired_intents": [],
        "live_intents": 0,
        "stale_plans": [],
    }

    ref = f"{store}@{sid}"
    same = run_cli("diff", "--from", ref, "--to", str(dest), "--exit-code", env=env)
    assert (same.returncode, same.stdout) == (0, ""), same.stderr

    (dest / "src/pkg/core.py").write_bytes(b"def answer() -> int:\n    return 43\n")
    changed = run_cli("diff", "--from", ref, "--to", str(dest), "--exit-code", env=env)
    assert changed.returncode == 1, changed.stderr
    assert changed.stdout.splitlines() == ["M ./src/pkg/core.py  (content)"]
    assert check_store(cloud, store) == (6, 1)


# -------------------------------------------------------------------------------------------
# 3. Request economics
# -------------------------------------------------------------------------------------------


def test_noop_push_costs_at_most_two_requests(cloud: Cloud, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", big=False)
    uri = cloud.fresh()
    sid = run(snapdir.push, project, uri)
    again = run(push_with_stats, project, uri)
    assert again["noop"] is True
    assert again["requests"] <= 2, f"a no-op push sent {again['requests']} requests"
    proc = ok(run_cli("push", str(project), "--store", uri, "--json", env=cli_env()))
    report = json.loads(proc.stdout)
    assert (report["id"], report["noop"]) == (sid, True)
    assert report["requests"] <= 2, f"a no-op `snapdir push` sent {report['requests']} requests"


def test_push_into_an_empty_store_costs_one_request_per_upload(
    cloud: Cloud, tmp_path: Path
) -> None:
    """N new files: N uploads plus a small constant (manifest check, one listing, manifest);
    never a HEAD per file. Jobs are 8, so B2 needs at most 8 upload URLs."""
    count = 120
    tree = make_flat(tmp_path / "tree", count, seed=11)
    m = run(snapdir.manifest, tree)
    shards = {c[:3] for c, _ in m.objects()}
    assert len(shards) > 64, "enough shards that the whole prefix is listed once"
    jobs = 8
    st = run(push_with_stats, tree, cloud.fresh(), jobs=jobs)
    assert st["uploaded"] == count
    upload_urls = jobs if cloud.scheme == "b2" else 0
    bound = count + 4 + cloud.setup_requests + upload_urls
    assert st["requests"] <= bound, f"{st['requests']} requests to upload {count} objects"


def test_push_of_a_one_file_change_costs_a_few_requests(cloud: Cloud, tmp_path: Path) -> None:
    """A store holding ~200 objects; the next build differs in one file: a listing, one
    upload and the manifest — O(1), whatever the store holds."""
    tree = make_flat(tmp_path / "tree", 200, seed=12)
    uri = cloud.fresh()
    first = run(push_with_stats, tree, uri)
    assert first["uploaded"] == 200
    (tree / "d3" / "f0010.dat").write_bytes(b"the one change")
    st = run(push_with_stats, tree, uri)
    assert (st["noop"], st["uploaded"]) == (False, 1)
    assert st["requests"] <= 10, f"{st['requests']} requests for a one-file change"
    assert check_store(cloud, uri) == (201, 2)


def test_pull_costs_one_get_per_object(cloud: Cloud, tmp_path: Path) -> None:
    """Into an empty directory: the manifest plus one GET per distinct non-empty object
    (duplicates are fetched once, the empty file not at all); into a directory that already
    matches: the manifest only."""
    tree = make_flat(tmp_path / "tree", 30, seed=13)
    _write(tree / "dup-a", b"same bytes")
    _write(tree / "dup-b", b"same bytes")
    _write(tree / "empty", b"")
    _write(tree / "big.bin", _data(BIG, 3))
    uri = cloud.fresh()
    sid = run(snapdir.push, tree, uri)
    distinct_non_empty = 30 + 1 + 1
    dest = tmp_path / "dest"
    st = run(pull_with_stats, sid, uri, dest)
    assert tree_id(dest) == sid
    bound = distinct_non_empty + 1 + cloud.setup_requests
    assert st["requests"] <= bound, f"{st['requests']} requests to pull {distinct_non_empty}"
    again = run(pull_with_stats, sid, uri, dest)
    assert again["files_written"] == 0
    assert again["requests"] <= 1 + cloud.setup_requests


# -------------------------------------------------------------------------------------------
# 4. Faults
# -------------------------------------------------------------------------------------------


def make_fault_tree(root: Path, *, big: bool) -> Path:
    """~50 files: small ones of assorted sizes, duplicates, an empty file, a nested empty
    directory, and (``big``) one file above the multipart / large-file threshold."""
    rng = random.Random(21)
    for i in range(44):
        _write(root / f"pkg{i % 5}" / f"mod{i}.bin", rng.randbytes(rng.randint(1, 48 * KiB)))
    for i in range(3):
        _write(root / "same" / f"copy{i}.txt", b"duplicate content\n")
    _write(root / "empty.txt", b"")
    (root / "nested/empty/dir").mkdir(parents=True)
    _write(root / "tool.sh", b"#!/bin/sh\necho hi\n", 0o755)
    if big:
        _write(root / "big.bin", _data(BIG, 4))
    return root


def test_operations_complete_through_faults(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """push, pull, sync and verify through a proxy that fails 15% of requests (5xx and 429
    carrying ``Retry-After: 0``, resets mid-request and mid-response, lost responses) all
    complete, and the store then holds only correct objects, re-hashed through the SDK.

    gs: no file above the resumable threshold (fake-gcs-server appends a re-sent chunk, see
    tests/servers/README.md), so every upload is a single request there.
    ``SNAPDIR_TEST_FAULT_SEED`` varies which requests fail."""
    _fast_retries(monkeypatch, give_up_after=120.0, sdk_sleep_cap=0.1)
    seed = 4242 + int(os.environ.get("SNAPDIR_TEST_FAULT_SEED", "0"))
    big = cloud.scheme != "gs"
    tree = make_fault_tree(tmp_path / "tree", big=big)
    src, dst = cloud.fresh("src"), cloud.fresh("dst")
    proxy: FaultProxy = start_fault_proxy(
        cloud.endpoint,
        rate=0.15,
        kinds=FAULT_KINDS,
        seed=seed,
        retry_after="0",
        flavor=PROXY_FLAVOR[cloud.scheme],
    )
    try:
        cloud.route(proxy.url)

        async def everything() -> str:
            sid = snapdir.SnapshotId(await snapdir.push(tree, src))
            await snapdir.pull(sid, src, tmp_path / "restore")
            await snapdir.sync(sid, src, dst)
            assert await snapdir.verify(sid, src) is True
            assert await snapdir.verify(sid, dst) is True
            return sid

        sid = run(everything)
    finally:
        proxy.stop()
        cloud.route(cloud.endpoint)
    stats = proxy.stats
    summary = f"{stats.total_injected} faults injected in {stats.requests} requests: " + ", ".join(
        f"{k} {v}" for k, v in sorted(stats.injected.items())
    )
    assert stats.total_injected >= 15, f"too few faults to mean anything: {summary}"
    assert sid == tree_id(tree), summary
    assert tree_id(tmp_path / "restore") == sid, summary
    objects = 44 + 1 + 1 + 1 + (1 if big else 0)
    assert check_store(cloud, src) == (objects, 1), summary
    assert check_store(cloud, dst) == (objects, 1), summary
    if big:
        assert cloud.large, summary
    assert run(snapdir.verify, sid, dst) is True


# -------------------------------------------------------------------------------------------
# 5. Errors
# -------------------------------------------------------------------------------------------

MISSING_BUCKET_CASES = [(scheme, op) for scheme in SCHEMES for op in ("push", "pull", "cli")]


@pytest.mark.parametrize(("cloud", "op"), MISSING_BUCKET_CASES, indirect=["cloud"])
def test_missing_bucket_is_a_store_error(cloud: Cloud, op: str, tmp_path: Path) -> None:
    """A StoreError naming the URI (not a NotFoundError: the snapshot is not the problem);
    exit status 4 from the CLI (its code says the store is missing). Nothing is written
    locally."""
    project = make_project(tmp_path / "project", big=False)
    uri = f"{cloud.scheme}://snapdir-no-such-bucket-{_uid()}/snaps"
    dest = tmp_path / "dest"
    if op == "cli":
        proc = run_cli("push", str(project), "--store", uri, env=cli_env())
        assert proc.returncode == 4, proc.stderr
        assert proc.stdout == ""
        assert uri in proc.stderr
        return
    call = (
        functools.partial(run, snapdir.push, project, uri)
        if op == "push"
        else functools.partial(run, snapdir.pull, "a" * 64, uri, dest)
    )
    with pytest.raises(snapdir.StoreError) as info:
        call()
    assert not isinstance(info.value, snapdir.NotFoundError), str(info.value)
    assert uri in str(info.value), f"the message names the store: {info.value}"
    assert not dest.exists()


S3_SECRET = "s3-secret-must-not-leak-0123456789"
B2_SECRET = "K005b2-secret-must-not-leak-0123"

CREDENTIAL_CASES = [
    # (scheme, variables to set (None: unset), the variable the message must name)
    ("s3", {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": S3_SECRET}, "AWS_ACCESS_KEY_ID"),
    (
        "s3",
        {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": None},
        "AWS_SECRET_ACCESS_KEY",
    ),
    ("s3", {"AWS_SECRET_ACCESS_KEY": S3_SECRET}, "AWS_SECRET_ACCESS_KEY"),  # a wrong secret
    (
        "b2",
        {"B2_APPLICATION_KEY_ID": None, "B2_APPLICATION_KEY": B2_SECRET},
        "B2_APPLICATION_KEY_ID",
    ),
    ("b2", {"B2_APPLICATION_KEY": None}, "B2_APPLICATION_KEY"),
    ("b2", {"B2_APPLICATION_KEY": B2_SECRET}, "B2_APPLICATION_KEY"),  # a wrong key
]


@pytest.mark.parametrize(
    ("scheme", "variables", "named"),
    CREDENTIAL_CASES,
    ids=[
        "s3-no-key-id",
        "s3-no-secret",
        "s3-wrong-secret",
        "b2-no-key-id",
        "b2-no-key",
        "b2-wrong-key",
    ],
)
def test_credentials_errors_name_the_variable_and_hide_the_secret(
    scheme: str,
    variables: dict[str, str | None],
    named: str,
    clouds: Clouds,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    cloud = clouds.get(scheme)
    project = make_project(tmp_path / "project", big=False)
    uri = cloud.fresh()
    for name, value in variables.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(snapdir.StoreError) as info:
        run(snapdir.push, project, uri)
    message = str(info.value)
    assert named in message, message
    assert S3_SECRET not in message, message
    assert B2_SECRET not in message, message
    proc = run_cli("push", str(project), "--store", uri, env=cli_env())
    assert proc.returncode == 5, proc.stderr
    assert named in proc.stderr
    assert S3_SECRET not in proc.stderr + proc.stdout
    assert B2_SECRET not in proc.stderr + proc.stdout


def test_missing_snapshot_is_not_found(cloud: Cloud, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", big=False)
    uri = cloud.fresh()
    run(snapdir.push, project, uri)
    missing = "0123456789abcdef" * 4
    with pytest.raises(snapdir.NotFoundError) as info:
        run(snapdir.pull, missing, uri, tmp_path / "dest")
    assert isinstance(info.value, FileNotFoundError)
    assert uri in str(info.value)
    assert missing in str(info.value).replace("/", ""), "names the snapshot or its key"
    assert not (tmp_path / "dest").exists()
    with pytest.raises(snapdir.NotFoundError):
        run(snapdir.verify, missing, uri)
    proc = run_cli("pull", missing, str(tmp_path / "dest"), "--store", uri, env=cli_env())
    assert proc.returncode == 4
    assert missing in proc.stderr.replace("/", "")


def test_diff_against_an_unreachable_endpoint_is_an_error(
    cloud: Cloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Never an empty side: a snapshot ref or a whole-store ref on a closed port fails.
    (Retries give up after 1 s here; by default they would go on for 10 minutes.)"""
    from snapdir.cli import main

    _fast_retries(monkeypatch, give_up_after=1.0, sdk_sleep_cap=0.0)
    project = make_project(tmp_path / "project", big=False)
    uri = cloud.fresh()
    sid = run(snapdir.push, project, uri)
    dead = _closed_port()
    try:
        cloud.route(f"http://127.0.0.1:{dead.getsockname()[1]}")
        # a snapshot on the "from" side, a whole store (every snapshot) on the "to" side
        for sides in (([f"{uri}@{sid}"], [str(project)]), ([str(project)], [uri])):
            opts = snapdir.DiffOptions.from_refs(*sides)
            with pytest.raises(snapdir.StoreError) as info:
                run(snapdir.diff, opts)
            assert uri in str(info.value)
        capsys.readouterr()
        status = main(["diff", "--from", f"{uri}@{sid}", "--to", str(project), "--exit-code"])
        out, err = capsys.readouterr()
        assert status == 5  # an unreachable store: not a difference (1)
        assert out == ""
        assert err.startswith("snapdir: error: ")
        assert uri in err
    finally:
        dead.close()
