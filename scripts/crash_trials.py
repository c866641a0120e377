#!/usr/bin/env python3
"""Crash-consistency trials: ``kill -9`` snapdir operations at random moments, then check
that nothing a user relies on was lost or corrupted (SPEC §4 invariants, §5 materialising).

Each trial starts one ``snapdir`` command (``push``, ``stage``, ``pull``, ``checkout``,
``fetch`` or ``sync``; the real command line, in its own process group), sends it SIGKILL
after a seeded random delay, and inspects what it left:

* every object in the target store hashes to its key and has mode 0644, every manifest
  hashes to its id and all of its objects are present and sound (objects are re-hashed,
  past snapdir); anything under ``.objects/`` or ``.manifests/`` that is not a well-formed
  key (a temporary file) is counted as a leftover, never accepted as an object;
* a pulled or checked-out destination holds, at every path, either the old file or the new
  one (content and mode) — never a torn or foreign file;
* the same command, run again without a kill, succeeds, and the result is exactly right:
  the store verifies (``snapdir verify``) and the snapshot pulls back byte for byte with
  its modes, or the destination is the source tree byte for byte, modes included, with no
  staging directory left.

Delays are calibrated per operation: it is timed uninterrupted first, the estimate follows
the machine's load (the median of the latest full runs the trials themselves measure), and
the kills are spread from before the interpreter has started to just after the command
would have finished (a kill that arrives after the exit counts as "after").  Targets start
either empty or holding the previous version of the tree (so a pull replaces, adds and
removes files, and a push shares most objects with what is there).  Against S3, the empty
objects SeaweedFS makes of PUTs cut after their headers are counted apart (see
:class:`S3Backend`).

Usage::

    python scripts/crash_trials.py                      # 200 trials per op on file://
    python scripts/crash_trials.py --s3-trials 30       # plus 30 per op against SeaweedFS
    python scripts/crash_trials.py --quick              # a few trials (what CI runs)

The last results are in docs/reliability.md.  ``--json PATH`` writes the results (with the
record of every trial that found a problem); ``PATH`` with ``.jsonl`` gets each operation's
as soon as it is done.  Exit status 1 if any invariant was violated or any re-run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from snapdir._snapdir import Manifest, blake3_hex

REPO = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * KiB
OPS = ("push", "stage", "pull", "checkout", "fetch", "sync")
#: ``stage`` and ``checkout`` only ever touch the local cache: they have no S3 variant.
S3_OPS = ("push", "pull", "fetch", "sync")
STAGING_PREFIX = ".snapdir-staging."
#: The lock file a pull or checkout holds in its destination (docs/format.md).
LOCK_NAME = ".snapdir-staging.lock"
HEX = frozenset("0123456789abcdef")
#: How a kill landed: before anything visible changed, with the target half done, after
#: the target was complete but before the exit, or after the process had already exited.
LANDED = ("before", "during", "late", "after")


# -------------------------------------------------------------------------------------------
# Trees
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeShape:
    files: int
    big: tuple[int, ...]  # sizes of the multi-MiB files


FULL_SHAPE = TreeShape(files=300, big=(2 * MiB + 17, 4 * MiB + 3, 7 * MiB + 123))
QUICK_SHAPE = TreeShape(files=60, big=(1 * MiB + 5, 6 * MiB + 7))


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def make_tree(root: Path, shape: TreeShape, rng: random.Random) -> None:
    """A tree of mixed sizes: mostly small files, some medium ones, a few multi-MiB ones,
    duplicates (one object, several files), an empty file and directory, executables,
    private files and a directory that is not 0755."""
    dirs = [Path(".")]
    for i in range(max(4, shape.files // 12)):
        parent = rng.choice(dirs)
        if len(parent.parts) < 4:
            dirs.append(parent / f"d{i:02d}")
    names: list[Path] = []
    for i in range(shape.files):
        r = rng.random()
        size = rng.randrange(0, 8 * KiB) if r < 0.85 else rng.randrange(8 * KiB, 256 * KiB)
        rel = rng.choice(dirs) / f"f{i:03d}.bin"
        mode = rng.choice((0o644, 0o644, 0o644, 0o755, 0o600))
        _write(root / rel, rng.randbytes(size), mode)
        names.append(rel)
    for n, size in enumerate(shape.big):
        _write(root / f"big{n}.dat", rng.randbytes(size), 0o644)
    for rel in rng.sample(names, 3):  # duplicates of existing content
        _write(root / f"{rel}.copy", (root / rel).read_bytes(), 0o644)
    _write(root / "empty.txt", b"", 0o644)
    (root / "empty-dir").mkdir()
    (root / "d00").mkdir(exist_ok=True)
    os.chmod(root / "d00", 0o750)


def mutate_tree(root: Path, rng: random.Random) -> None:
    """The next version: about a tenth of the files changed, some removed, some added, some
    modes changed, one big file rewritten, a directory removed and one added."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.stat().st_size > 0)
    for p in rng.sample(files, max(1, len(files) // 10)):
        _write(p, rng.randbytes(rng.randrange(1, 16 * KiB)), p.stat().st_mode & 0o7777)
    for p in rng.sample(files, max(1, len(files) // 20)):
        if p.exists():
            p.unlink()
    for p in rng.sample(files, max(1, len(files) // 30)):
        if p.exists():
            os.chmod(p, 0o755 if p.stat().st_mode & 0o100 == 0 else 0o644)
    for i in range(max(2, len(files) // 20)):
        _write(root / "added" / f"n{i:03d}.bin", rng.randbytes(rng.randrange(0, 32 * KiB)), 0o644)
    big = root / "big0.dat"
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0xFF
    _write(big, bytes(data), 0o644)
    shutil.rmtree(root / "empty-dir")
    (root / "new-empty-dir").mkdir()


Desc = dict[str, tuple[str, int, str]]


def describe(root: Path) -> tuple[Desc, list[str]]:
    """``{rel: (kind, mode, blake3)}`` of a tree (the root as ``"."``), and the staging
    directories found in it (which are not part of the tree)."""
    out: Desc = {}
    staging: list[str] = []
    if not root.exists():
        return out, staging
    out["."] = ("D", os.lstat(root).st_mode & 0o7777, "")
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for d in dirnames:
            rel = (here / d).relative_to(root).as_posix()
            if d.startswith(STAGING_PREFIX):
                staging.append(rel)
                continue
            keep.append(d)
            out[rel] = ("D", os.lstat(here / d).st_mode & 0o7777, "")
        dirnames[:] = keep
        for f in filenames:
            p = here / f
            if f == LOCK_NAME and here == root:
                # A killed pull's lock file: a leftover like its staging (the next removes it).
                staging.append(f)
                continue
            st = os.lstat(p)
            kind = "F" if os.path.isfile(p) and not os.path.islink(p) else "?"
            out[p.relative_to(root).as_posix()] = (
                kind,
                st.st_mode & 0o7777,
                blake3_hex(p.read_bytes()) if kind == "F" else "",
            )
    return out, staging


def check_mix(got: Desc, old: Desc, new: Desc) -> list[str]:
    """Every file is exactly the old or the new one; every directory is one of theirs."""
    bad = []
    for rel, (kind, mode, digest) in sorted(got.items()):
        if kind == "D":
            if old.get(rel, ("",))[0] != "D" and new.get(rel, ("",))[0] != "D":
                bad.append(f"unexpected directory {rel}")
            continue
        if (kind, mode, digest) not in (old.get(rel), new.get(rel)):
            bad.append(f"{rel} is neither the old nor the new file ({kind} {mode:o} {digest})")
    return bad


def diff_trees(got: Desc, want: Desc) -> list[str]:
    bad = []
    for rel in sorted(set(got) | set(want)):
        if got.get(rel) != want.get(rel):
            bad.append(f"{rel}: got {got.get(rel)}, want {want.get(rel)}")
    return bad


# -------------------------------------------------------------------------------------------
# Stores: everything in them, re-hashed past snapdir
# -------------------------------------------------------------------------------------------


@dataclass
class StoreState:
    objects: set[str] = field(default_factory=set)
    manifests: set[str] = field(default_factory=set)
    leftovers: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    #: Empty objects under a non-empty key: what SeaweedFS commits when a PUT's client dies
    #: after the headers (see ``S3Backend``). Never referenced by a manifest (that would be a
    #: violation), listed as missing by snapdir, and replaced by the re-run.
    empty: list[str] = field(default_factory=list)


def key_of(rel: str) -> str | None:
    """The digest a store key ``abc/def/ghi/<55 hex>`` names, else None."""
    parts = rel.split("/")
    if len(parts) != 4 or [len(p) for p in parts] != [3, 3, 3, 55]:
        return None
    h = "".join(parts)
    return h if set(h) <= HEX else None


#: ``(key relative to the store, a reader of its bytes, mode or None, a cache key or None)``
Item = tuple[str, Callable[[], bytes], int | None, Any]


def judge(
    items: Iterator[Item], state: StoreState, seen: dict[Any, str], server_empty: bool = False
) -> StoreState:
    """Check a store's items as SPEC §4 says. ``seen`` remembers the BLAKE3 of objects by
    cache key (an S3 ETag + size: the same bytes), so unchanged objects are not re-read.
    ``server_empty``: an empty object under another key is the server's (``StoreState``)."""
    manifests: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    for rel, read, mode, ckey in items:
        area, _, rest = rel.partition("/")
        key = key_of(rest) if area in (".objects", ".manifests") else None
        if key is None:
            state.leftovers.append(rel)
            continue
        if area == ".objects":
            if ckey is not None and (key, ckey) in seen:
                got, size = seen[(key, ckey)], ckey[1]
            else:
                data = read()
                got, size = blake3_hex(data), len(data)
                if ckey is not None:
                    seen[(key, ckey)] = got
            if got != key and size == 0 and server_empty:
                state.empty.append(key)
                continue
            if got != key:
                state.violations.append(f"object {key} holds {size} bytes hashing to {got}")
                continue
            if mode is not None and mode != 0o644:
                state.violations.append(f"object {key} has mode {mode:o}")
            state.objects.add(key)
            sizes[key] = size
        else:
            manifests[key] = read()
    for sid, data in manifests.items():
        try:
            m = Manifest.parse(data.decode())
        except Exception as e:
            state.violations.append(f"manifest {sid} does not parse: {e}")
            continue
        if m.id != sid:
            state.violations.append(f"manifest {sid} hashes to {m.id}")
            continue
        for c, n in m.objects():
            if sizes.get(c) != n:
                state.violations.append(f"manifest {sid} without its object {c}")
                break
        else:
            state.manifests.add(sid)
    return state


def file_store_state(root: Path) -> StoreState:
    state = StoreState()
    if not root.exists():
        return state

    def items() -> Iterator[Item]:
        for area in (".objects", ".manifests"):
            for dirpath, _, filenames in os.walk(root / area):
                for f in filenames:
                    p = Path(dirpath) / f
                    st = os.lstat(p)
                    read = p.read_bytes if os.path.isfile(p) else bytes
                    yield p.relative_to(root).as_posix(), read, st.st_mode & 0o7777, None

    judge(items(), state, {})
    for name in os.listdir(root):
        if name not in (".objects", ".manifests", "statcache"):
            state.leftovers.append(name)  # e.g. a download directory of an interrupted fetch
    return state


def _servers(name: str) -> Any:
    """A module of the loopback test servers (``tests/servers``)."""
    import importlib

    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(f"servers.{name}")


class S3Backend:
    """The SeaweedFS server, a raw boto3 client on it, and the environment of the CLI.

    SeaweedFS 4.48 commits a PUT whose client went away after sending the headers and no
    body byte as an empty object (a signed ``Content-Length: N`` request!); with part of
    the body sent it stores nothing. A kill can therefore leave empty objects under real
    keys. They are counted apart (``empty``): snapdir does not list them as present (so
    no manifest is written over them) and every read verifies, so they cost a re-upload."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str) -> None:
        s3_client = _servers("seaweed").s3_client
        self.endpoint = endpoint
        self.client = s3_client(endpoint, access_key, secret_key, region)
        self.bucket = f"crash-{os.getpid()}-{int(time.time())}"
        self.seen: dict[Any, str] = {}
        self.client.create_bucket(Bucket=self.bucket)
        self.env = {
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_DEFAULT_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "SNAPDIR_S3_STORE_ENDPOINT_URL": endpoint,
            # Files over 5 MiB go multipart (parts of 5 MiB): kills land between parts too.
            "SNAPDIR_S3_MULTIPART_THRESHOLD": str(1 * MiB),
            "SNAPDIR_S3_PART_SIZE": str(5 * MiB),
        }

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def state(self, prefix: str) -> StoreState:
        state = StoreState()
        listed: list[tuple[str, str, int]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix + "/"
        ):
            listed += [
                (str(it["Key"]), str(it["ETag"]), int(it["Size"]))
                for it in page.get("Contents", [])
            ]

        def reader(key: str) -> Callable[[], bytes]:
            def read() -> bytes:
                data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                return data

            return read

        def items() -> Iterator[Item]:
            for key, etag, size in listed:
                yield key[len(prefix) + 1 :], reader(key), None, (etag, size)

        judge(items(), state, self.seen, server_empty=True)
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix + "/")
        state.leftovers += [f"multipart upload of {u['Key']}" for u in uploads.get("Uploads", [])]
        return state


# -------------------------------------------------------------------------------------------
# One campaign
# -------------------------------------------------------------------------------------------


@dataclass
class Fixture:
    """Everything the trials copy from: two versions of a tree and stores holding them."""

    work: Path
    src1: Path
    src2: Path
    sid1: str
    sid2: str
    want1: Desc
    want2: Desc
    store12: Path  # file:// store with both snapshots
    store1: Path  # file:// store with v1 only
    cache1: Path  # a cache with v1 staged (and the stat cache filled for v2's tree)
    cache12: Path  # a cache with both staged (checkout's source)
    s3: S3Backend | None = None


@dataclass
class Result:
    op: str
    backend: str
    trials: int = 0
    landed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LANDED, 0))
    violations: int = 0
    rerun_failures: int = 0
    leftovers: int = 0  # trials after which temporary files or directories were left
    server_empty: int = 0  # trials after which the server showed empty objects (S3Backend)
    op_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("SNAPDIR_STORE", "PYTHONWARNINGS", "SNAPDIR_DURABLE"):
        env.pop(k, None)
    env["SNAPDIR_NO_PROGRESS"] = "1"
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapdir", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def must(cp: subprocess.CompletedProcess[str]) -> str:
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cp.args))} failed: {cp.stderr.strip()}")
    return cp.stdout.strip()


def build_fixture(
    work: Path, shape: TreeShape, seed: int, s3: S3Backend | None, settle: bool = True
) -> Fixture:
    rng = random.Random(seed)
    src1, src2 = work / "src1", work / "src2"
    make_tree(src1, shape, rng)
    shutil.copytree(src1, src2, symlinks=True)
    mutate_tree(src2, rng)
    if settle:
        time.sleep(2.5)  # older than the stat cache's racy margin, so it caches the files
    env = base_env()
    env["SNAPDIR_CACHE_DIR"] = str(work / "cache-setup")
    store12, store1 = work / "store12", work / "store1"
    sid1 = must(cli("push", str(src1), "--store", f"file://{store1}", "-q", env=env))
    must(cli("push", str(src1), "--store", f"file://{store12}", "-q", env=env))
    sid2 = must(cli("push", str(src2), "--store", f"file://{store12}", "-q", env=env))
    cache1, cache12 = work / "cache1", work / "cache12"
    env["SNAPDIR_CACHE_DIR"] = str(cache1)
    must(cli("stage", str(src1), "-q", env=env))
    must(cli("id", str(src2), env=env))  # fills the stat cache for the next stage
    env["SNAPDIR_CACHE_DIR"] = str(cache12)
    must(cli("stage", str(src1), "-q", env=env))
    must(cli("stage", str(src2), "-q", env=env))
    if s3 is not None:
        anyio.run(_sync, sid1, f"file://{store12}", s3.uri("base"))
        anyio.run(_sync, sid2, f"file://{store12}", s3.uri("base"))
    return Fixture(
        work,
        src1,
        src2,
        sid1,
        sid2,
        describe(src1)[0],
        describe(src2)[0],
        store12,
        store1,
        cache1,
        cache12,
        s3,
    )


async def _sync(sid: str, src: str, dst: str) -> None:
    from snapdir._sync import sync

    await sync(sid, src, dst)


async def _verify_all(uri: str) -> None:
    """``snapdir verify --store URI``: every snapshot in the store, every object re-hashed."""
    from snapdir._common import open_wrapped
    from snapdir._verify import verify

    for sid in await open_wrapped(uri).list_manifests():
        await verify(sid, uri)


async def _pull(sid: str, src: str, dst: str) -> None:
    from snapdir._pull import pull

    await pull(sid, src, dst)


@dataclass
class Setup:
    """One trial's command and how to judge what it did."""

    argv: list[str]
    env: dict[str, str]
    #: A store target (URI, state reader) or a tree target (its directory).
    store_uri: str | None = None
    store_state: Callable[[], StoreState] | None = None
    tree: Path | None = None
    old_tree: Desc = field(default_factory=dict)
    prints_id: bool = False


def prepare(fx: Fixture, op: str, backend: str, old: bool, tdir: Path, n: int) -> Setup:
    """Lay out trial ``n``'s target (empty, or holding v1) and say what to run."""
    env = base_env()
    env["TMPDIR"] = str(tdir / "tmp")
    (tdir / "tmp").mkdir(parents=True)
    env["SNAPDIR_CACHE_DIR"] = str(tdir / "cache")
    s3 = fx.s3
    if backend == "s3":
        assert s3 is not None
        env.update(s3.env)

    def file_target(template: Path, name: str) -> tuple[str, Callable[[], StoreState]]:
        path = tdir / name
        if old:
            shutil.copytree(template, path, symlinks=True)
        return f"file://{path}", lambda: file_store_state(path)

    def s3_target(prefix: str) -> tuple[str, Callable[[], StoreState]]:
        assert s3 is not None
        if old:
            anyio.run(_sync, fx.sid1, f"file://{fx.store1}", s3.uri(prefix))
        return s3.uri(prefix), lambda: s3.state(prefix)

    prefix = f"{op}-{n}"
    if op in ("push", "sync"):
        if backend == "s3" and (op == "push" or n % 3 != 1):
            uri, state = s3_target(prefix)
        else:
            uri, state = file_target(fx.store1, "store")
        if op == "push":
            env["SNAPDIR_CACHE_DIR"] = str(fx.work / "push-cache")  # a warm stat cache
            argv = ["push", str(fx.src2), "--store", uri, "-q"]
            return Setup(argv, env, uri, state, prints_id=True)
        # On S3, three directions in turn: file -> s3, s3 -> file, s3 -> s3.
        src = s3.uri("base") if s3 and backend == "s3" and n % 3 else f"file://{fx.store12}"
        return Setup(["sync", fx.sid2, "--from", src, "--to", uri, "-q"], env, uri, state)
    if op in ("stage", "fetch"):
        cache = tdir / "cache"
        if old:
            shutil.copytree(fx.cache1, cache, symlinks=True)
        state = lambda: file_store_state(cache)  # noqa: E731
        if op == "stage":
            return Setup(
                ["stage", str(fx.src2), "-q"], env, f"file://{cache}", state, prints_id=True
            )
        src = s3.uri("base") if backend == "s3" and s3 else f"file://{fx.store12}"
        return Setup(["fetch", fx.sid2, "--store", src, "-q"], env, f"file://{cache}", state)
    dest = tdir / "dest"
    if old:
        shutil.copytree(fx.src1, dest, symlinks=True)
    old_tree = describe(dest)[0]
    flags = ["--force", "--delete", "-q"]
    if op == "pull":
        src = s3.uri("base") if backend == "s3" and s3 else f"file://{fx.store12}"
        argv = ["pull", fx.sid2, str(dest), "--store", src, *flags]
    else:
        env["SNAPDIR_CACHE_DIR"] = str(fx.cache12)
        argv = ["checkout", fx.sid2, str(dest), *flags]
    return Setup(argv, env, tree=dest, old_tree=old_tree)


def run_killed(s: Setup, delay: float, err: Any) -> tuple[bool, int | None, float]:
    """Start the command, SIGKILL its process group after ``delay`` s. Returns whether the
    kill found it running, its exit status if it had exited, and how long it ran."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", *s.argv],
        env=s.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
        start_new_session=True,
    )
    try:
        try:
            proc.wait(timeout=delay)
            running = False
        except subprocess.TimeoutExpired:
            running = True
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return running, None if running else proc.returncode, time.monotonic() - t0


def leftover_files(tdir: Path) -> list[str]:
    tmp = tdir / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def one_trial(
    fx: Fixture, op: str, backend: str, n: int, delay: float, old: bool, res: Result
) -> dict[str, Any]:
    tdir = fx.work / "trials" / f"{op}-{backend}-{n}"
    s = prepare(fx, op, backend, old, tdir, n)
    broken: list[str] = []  # invariants violated by what the kill left
    failed: list[str] = []  # what the re-run did not get right
    before = s.store_state() if s.store_state else None
    with open(tdir / "stderr", "wb") as err:
        running, rc, ran = run_killed(s, delay, err)
    leftovers: list[str] = []
    empty: list[str] = []
    landed = "after"
    if not running and rc != 0:
        text = (tdir / "stderr").read_text(errors="replace").strip()[-400:]
        broken.append(f"exited {rc} without being killed: {text}")
    if s.store_state is not None:
        assert before is not None
        after = s.store_state()
        broken += after.violations
        leftovers += after.leftovers
        empty = after.empty
        foreign = after.manifests - before.manifests - {fx.sid2}
        if foreign:
            broken.append(f"unexpected manifests {sorted(foreign)}")
        if running:
            if fx.sid2 in after.manifests:
                landed = "late"
            elif after.objects == before.objects and after.manifests == before.manifests:
                landed = "before"
            else:
                landed = "during"
    else:
        assert s.tree is not None
        got, staging = describe(s.tree)
        leftovers += staging
        broken += check_mix(got, s.old_tree, fx.want2)
        if running:
            if got == fx.want2:
                landed = "late"
            elif got == s.old_tree:
                landed = "before"
            else:
                landed = "during"
    leftovers += leftover_files(tdir)
    t0 = time.monotonic()
    cp = cli(*s.argv, env=s.env)
    rerun_s = time.monotonic() - t0
    failed += rerun_and_check(fx, s, tdir, cp)
    res.trials += 1
    res.landed[landed] += 1
    res.violations += 1 if broken else 0
    res.rerun_failures += 1 if failed else 0
    res.leftovers += 1 if leftovers else 0
    res.server_empty += 1 if empty else 0
    record = {
        "op": op,
        "backend": backend,
        "trial": n,
        "old": old,
        "delay": round(delay, 4),
        "landed": landed,
        "leftovers": leftovers[:10],
        "empty_objects": empty,
        "violations": broken,
        "rerun": failed,
        "argv": s.argv,
        # A full uninterrupted run's duration, when this trial measured one: the command
        # exited before the kill, or the kill came before it changed anything (so the re-run
        # did everything).
        "full_run": ran if landed == "after" else rerun_s if landed == "before" else None,
    }
    if broken or failed:
        res.problems.append(json.dumps(record))
    else:
        shutil.rmtree(tdir, ignore_errors=True)
    return record


def rerun_and_check(
    fx: Fixture, s: Setup, tdir: Path, cp: subprocess.CompletedProcess[str]
) -> list[str]:
    """What is wrong with the result of the uninterrupted re-run ``cp``."""
    if cp.returncode != 0:
        return [f"re-run exited {cp.returncode}: {cp.stderr.strip()[-500:]}"]
    if s.prints_id and cp.stdout.strip() != fx.sid2:
        return [f"re-run printed {cp.stdout.strip()!r}, not {fx.sid2}"]
    if s.tree is not None:
        got, staging = describe(s.tree)
        bad = diff_trees(got, fx.want2) + staging
        return [f"destination != source: {bad[:5]}"] if bad else []
    assert s.store_state is not None
    assert s.store_uri is not None
    failed = []
    final = s.store_state()
    failed += final.violations
    failed += [f"empty object {c} left after the re-run" for c in final.empty]
    if fx.sid2 not in final.manifests:
        failed.append(f"{fx.sid2} missing after the re-run")
    back = tdir / "pulled-back"
    try:
        with _env(s.env):
            anyio.run(_verify_all, s.store_uri)
            anyio.run(_pull, fx.sid2, s.store_uri, str(back))
    except Exception as e:
        return [*failed, f"verify or pull back: {type(e).__name__}: {e}"]
    got, staging = describe(back)
    bad = diff_trees(got, fx.want2) + staging
    if bad:
        failed.append(f"pulled back != source: {bad[:5]}")
    return failed


@contextmanager
def _env(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def calibrate(fx: Fixture, op: str, backend: str, reps: int) -> list[float]:
    """The durations of ``reps`` uninterrupted runs (seconds), from an empty target."""
    times = []
    for r in range(reps):
        tdir = fx.work / "calibrate" / f"{op}-{backend}-{r}"
        s = prepare(fx, op, backend, False, tdir, 10_000 + r)
        t0 = time.monotonic()
        must(cli(*s.argv, env=s.env))
        times.append(time.monotonic() - t0)
        shutil.rmtree(tdir, ignore_errors=True)
    return times


def startup_seconds() -> float:
    t0 = time.monotonic()
    must(cli("--version", env=base_env()))
    return time.monotonic() - t0


def campaign(
    work: Path,
    trials: int,
    s3_trials: int,
    seed: int,
    shape: TreeShape,
    s3: S3Backend | None,
    ops: tuple[str, ...] = OPS,
    reps: int = 2,
    log: Callable[[str], None] = print,
    progress: Path | None = None,
) -> list[Result]:
    """Run the trials; returns one result per (operation, backend)."""
    # The quick mode does not wait for the files to settle (the stat cache then caches none).
    fx = build_fixture(work, shape, seed, s3, settle=shape != QUICK_SHAPE)
    start = startup_seconds()
    results = []
    plan = [(op, "file", trials) for op in ops if trials]
    if s3 is not None and s3_trials:
        plan += [(op, "s3", s3_trials) for op in ops if op in S3_OPS]
    for op, backend, count in plan:
        rng = random.Random(f"{seed}-{op}-{backend}")
        samples = calibrate(fx, op, backend, reps)
        res = Result(op, backend)
        t0 = time.monotonic()
        for n in range(count):
            # The duration follows the machine's load: the median of the last full runs.
            d = statistics.median(samples[-15:])
            # A quarter spread over the whole life of the process (interpreter start-up
            # included), the rest over the time it works; all up to just past its end.
            if rng.random() < 0.25:
                delay = rng.uniform(0.0, 1.1 * d)
            else:
                delay = rng.uniform(min(0.9 * start, d), 1.05 * d)
            rec = one_trial(fx, op, backend, n, delay, old=n % 2 == 1, res=res)
            if rec["full_run"] is not None:
                samples.append(rec["full_run"])
        res.op_seconds = d = statistics.median(samples)
        log(
            f"{op:8} {backend:4} {res.trials:4} trials in {time.monotonic() - t0:6.1f} s "
            f"(op {d * 1000:.0f} ms) landed {res.landed} violations {res.violations} "
            f"re-run failures {res.rerun_failures} leftovers {res.leftovers} "
            f"server-empty {res.server_empty}"
        )
        for p in res.problems[:5]:
            log(f"  PROBLEM {p}")
        results.append(res)
        if progress is not None:
            with open(progress, "a") as f:
                f.write(json.dumps(as_dict(res)) + "\n")
    return results


def as_dict(r: Result) -> dict[str, Any]:
    return {
        "op": r.op,
        "backend": r.backend,
        "trials": r.trials,
        "op_seconds": round(r.op_seconds, 3),
        "landed": r.landed,
        "violations": r.violations,
        "rerun_failures": r.rerun_failures,
        "leftovers": r.leftovers,
        "server_empty": r.server_empty,
        "problems": r.problems,
    }


def table(results: list[Result]) -> str:
    head = (
        "| op | backend | trials | op time | killed before | during | late | after (exited) "
        "| invariant violations | re-run failures | trials with leftovers "
        "| server empty objects |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r.op} | {r.backend} | {r.trials} | {r.op_seconds * 1000:.0f} ms "
        f"| {r.landed['before']} | {r.landed['during']} | {r.landed['late']} "
        f"| {r.landed['after']} | {r.violations} | {r.rerun_failures} | {r.leftovers} "
        f"| {r.server_empty} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--trials", type=int, default=200, help="trials per operation on file://")
    p.add_argument("--s3-trials", type=int, default=0, help="trials per operation on S3")
    p.add_argument("--seed", type=int, default=20261121)
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated operations")
    p.add_argument("--quick", action="store_true", help="a few trials on a small tree (CI)")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--s3-endpoint",
        default=None,
        help="use this S3 server (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
        "instead of starting SeaweedFS",
    )
    a = p.parse_args(argv)
    ops = tuple(o for o in a.ops.split(",") if o)
    unknown = set(ops) - set(OPS)
    if unknown:
        p.error(f"unknown operations: {sorted(unknown)}")
    if a.quick:
        a.trials = min(a.trials, 2)
        a.s3_trials = min(a.s3_trials, 1)
    shape = QUICK_SHAPE if a.quick else FULL_SHAPE
    work = a.workdir or Path(tempfile.mkdtemp(prefix="snapdir-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    server: Any = None
    s3: S3Backend | None = None
    t0 = time.monotonic()
    try:
        if a.s3_trials:
            if a.s3_endpoint:
                s3 = S3Backend(
                    a.s3_endpoint,
                    os.environ["AWS_ACCESS_KEY_ID"],
                    os.environ["AWS_SECRET_ACCESS_KEY"],
                    os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                )
            else:
                server = _servers("seaweed").start_seaweedfs(work / "seaweedfs")
                s3 = S3Backend(
                    server.endpoint_url, server.access_key, server.secret_key, server.region
                )
        with _env(s3.env if s3 else {}):
            results = campaign(
                work,
                a.trials,
                a.s3_trials,
                a.seed,
                shape,
                s3,
                ops,
                reps=1 if a.quick else 3,
                log=lambda m: print(m, file=sys.stderr, flush=True),
                progress=a.json.with_suffix(".jsonl") if a.json else None,
            )
    finally:
        if server is not None:
            server.stop()
    elapsed = time.monotonic() - t0
    print(table(results), end="")
    print(f"\n{sum(r.trials for r in results)} trials in {elapsed:.0f} s (seed {a.seed})")
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "seed": a.seed,
                    "seconds": round(elapsed, 1),
                    "results": [as_dict(r) for r in results],
                },
                indent=1,
            )
        )
    if a.workdir is None and not any(r.problems for r in results):
        shutil.rmtree(work, ignore_errors=True)
    bad = any(r.violations or r.rerun_failures for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
