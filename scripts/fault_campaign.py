#!/usr/bin/env python3
"""Fault campaign: push, verify and pull a mixed tree through a fault-injecting proxy.

For each backend (S3 on SeaweedFS, GCS on fake-gcs-server, B2 on the simulator; all on
127.0.0.1, started here and stopped by PID) and each fault rate, a deterministic mixed tree
(small and medium files, duplicates, empty files and directories, executables, a few
multi-MiB files that take the multipart / resumable / large-file paths) is pushed into a
fresh prefix through ``tests/servers/faultproxy.py``, verified, and pulled back into an empty
directory, all through the proxy. The proxy fails that share of requests with 503, 500, 429
(with ``Retry-After``), resets mid-request and mid-response, lost responses after the
upstream committed, and added latency.

Then, past the proxy, the restored tree is compared with the source byte for byte (and
mode), and every key in the store is re-read through the SDK and re-hashed: each object must
hash to its key, the objects must be exactly the manifest's, and no unfinished upload may
hold parts. A rate of 0 runs the same path through the proxy without faults, which is the
baseline for the time overhead.

Figures per backend and rate: wall time per phase, the stores' own request counters (what
``snapdir push --json`` reports as ``requests``: every HTTP attempt, SDK retries included),
the retries of snapdir's retry layer (``snapdir.stores`` log records), the requests the
proxy saw and the faults it injected by kind.

    python scripts/fault_campaign.py                  # full: ~2,000 files, rates 0, 10%, 20%
    python scripts/fault_campaign.py --quick --rates 0.15 --json out.json   # CI size

Exit status 0 when every run completed and checked out, 1 otherwise.

Known limit (fake-gcs-server, see ``tests/servers/README.md``): a resumable-upload chunk that
is re-sent is appended again by the server, so chunk PUTs (``upload_id=`` in the target) are
exempt from faults on GCS; the request that starts the upload and every other one are not.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import io
import json
import logging
import os
import random
import shutil
import stat
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import anyio  # noqa: E402
import snapdir  # noqa: E402
from servers.faultproxy import FaultKind, FaultProxy, start_fault_proxy  # noqa: E402
from snapdir._pull import pull_with_stats  # noqa: E402
from snapdir._push import push_with_stats  # noqa: E402
from snapdir._snapdir import blake3_hex  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
SCHEMES = ("s3", "gs", "b2")
FLAVOR = {"s3": "s3", "gs": "gcs", "b2": "b2"}
#: Every kind the proxy knows, latency included.
KINDS = tuple(k.value for k in FaultKind)
#: Files above this go multipart (S3), resumable (GCS) or as a B2 large file.
LARGE_THRESHOLD = 8 * MiB
PART_SIZE = 5 * MiB  # S3's minimum part; B2 raises it to the simulator's 5,000,000 minimum
GCS_CHUNK = 4 * MiB


@dataclass(frozen=True)
class Size:
    files: int
    big: tuple[int, ...]


FULL = Size(files=2000, big=(3 * MiB, 6 * MiB + 17, 12 * MiB + 5, 20 * MiB + 3))
QUICK = Size(files=150, big=(2 * MiB + 1, 9 * MiB + 7))


# -------------------------------------------------------------------------------------------
# The tree
# -------------------------------------------------------------------------------------------


def make_tree(root: Path, size: Size, seed: int) -> dict[str, int]:
    """A deterministic mixed tree: mostly small files, some medium, the ``big`` ones, ~5 %
    duplicates, ~2 % empty files, ~3 % executables, nested and empty directories."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    total = 0
    contents: list[bytes] = []
    dirs = [f"pkg{a}/mod{b}" for a in range(8) for b in range(6)] + ["", "deep/a/b/c/d/e"]
    for i in range(size.files):
        r = rng.random()
        if r < 0.02:
            data = b""
        elif r < 0.07 and contents:
            data = rng.choice(contents)
        elif r < 0.62:
            data = rng.randbytes(rng.randint(1, 4 * KiB))
        elif r < 0.94:
            data = rng.randbytes(rng.randint(4 * KiB, 64 * KiB))
        else:
            data = rng.randbytes(rng.randint(64 * KiB, 512 * KiB))
        contents.append(data)
        path = root / rng.choice(dirs) / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if rng.random() < 0.03 else 0o644)
        total += len(data)
    for j, n in enumerate(size.big):
        path = root / "assets" / f"big{j}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random.Random(seed * 1000 + j).randbytes(n))
        total += n
    for d in ("empty", "pkg0/empty/nested"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return {"files": size.files + len(size.big), "bytes": total}


def compare_trees(a: Path, b: Path) -> list[str]:
    """Differences between two trees: names, types, modes, bytes (read in full)."""
    problems: list[str] = []

    def listing(root: Path) -> dict[str, os.stat_result]:
        out: dict[str, os.stat_result] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                out[str(full.relative_to(root))] = full.lstat()
        return out

    la, lb = listing(a), listing(b)
    for rel in sorted(set(la) ^ set(lb)):
        problems.append(f"{rel}: only in {'source' if rel in la else 'restore'}")
    for rel in sorted(set(la) & set(lb)):
        sa, sb = la[rel], lb[rel]
        if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
            problems.append(f"{rel}: type differs")
        elif stat.S_ISREG(sa.st_mode):
            if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
                problems.append(f"{rel}: mode {sa.st_mode:o} != {sb.st_mode:o}")
            if not filecmp.cmp(a / rel, b / rel, shallow=False):
                problems.append(f"{rel}: bytes differ")
    return problems


# -------------------------------------------------------------------------------------------
# Backends
# -------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """A running server and how snapdir and the checker reach it."""

    scheme: str
    endpoint: str
    route_var: str  # the environment variable that points the store at an endpoint
    bucket: str
    keys: Callable[[str], Iterator[tuple[str, bytes]]]  # (key, bytes) under a prefix, raw
    leftovers: Callable[[str], list[str]]  # unfinished uploads that hold data
    stop: Callable[[], None]
    #: Requests the proxy may fault (``None``: all).
    path_regex: str | None = None

    def route(self, url: str) -> None:
        os.environ[self.route_var] = url


def _start_s3(workdir: Path) -> Backend:
    from servers.seaweed import start_seaweedfs

    server = start_seaweedfs(workdir / "seaweedfs")
    bucket = "campaign"
    client = server.client()
    client.create_bucket(Bucket=bucket)
    server.use_env(os.environ.__setitem__, os.environ.__delitem__, endpoint=False)
    os.environ.update(
        SNAPDIR_S3_MULTIPART_THRESHOLD=str(LARGE_THRESHOLD),
        SNAPDIR_S3_PART_SIZE=str(PART_SIZE),
    )

    def keys(prefix: str) -> Iterator[tuple[str, bytes]]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                yield str(item["Key"]), bytes(body.read())

    def leftovers(prefix: str) -> list[str]:
        out = []
        resp = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        for up in resp.get("Uploads", []):
            parts = client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            if parts.get("Parts"):
                out.append(str(up["Key"]))
        return out

    return Backend(
        "s3",
        server.endpoint_url,
        "SNAPDIR_S3_STORE_ENDPOINT_URL",
        bucket,
        keys,
        leftovers,
        server.stop,
    )


def _start_gs(workdir: Path) -> Backend:
    from servers.fakegcs import EMULATOR_ENV, start_fake_gcs
    from snapdir.stores.gcs import GcsStore

    server = start_fake_gcs(workdir / "fake-gcs")
    bucket = "campaign"
    client = server.client()
    client.create_bucket(bucket)
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        os.environ.pop(name, None)
    GcsStore.resumable_threshold = LARGE_THRESHOLD  # no environment knob: the class default
    GcsStore.chunk_size = GCS_CHUNK

    def keys(prefix: str) -> Iterator[tuple[str, bytes]]:
        for blob in client.list_blobs(bucket, prefix=prefix):
            yield str(blob.name), bytes(blob.download_as_bytes())

    return Backend(
        "gs",
        server.endpoint,
        EMULATOR_ENV,
        bucket,
        keys,
        lambda prefix: [],  # an unfinished resumable session holds nothing visible
        server.stop,
        path_regex=r"^(?![^?]*\?(?:.*&)?upload_id=)",
    )


def _start_b2(workdir: Path) -> Backend:
    from b2sdk.v2 import B2Api, InMemoryAccountInfo  # type: ignore[import-untyped,unused-ignore]
    from servers.b2sim import start_b2_simulator
    from snapdir.stores.b2 import B2Store

    server = start_b2_simulator()
    os.environ["B2_APPLICATION_KEY_ID"] = server.key_id
    os.environ["B2_APPLICATION_KEY"] = server.app_key
    B2Store.large_file_threshold = LARGE_THRESHOLD  # no environment knob: the class default
    B2Store.part_size = PART_SIZE
    api = B2Api(InMemoryAccountInfo())
    api.authorize_account(server.realm_url, server.key_id, server.app_key)
    handle = api.get_bucket_by_name(server.bucket_name)

    def keys(prefix: str) -> Iterator[tuple[str, bytes]]:
        for fv, _ in handle.ls(prefix, latest_only=False, recursive=True):
            if fv.action == "upload":  # every version: a retried upload adds one
                buf = io.BytesIO()
                api.download_file_by_id(fv.id_).save(buf)
                yield str(fv.file_name), buf.getvalue()

    def leftovers(prefix: str) -> list[str]:
        return [str(f.file_name) for f in handle.list_unfinished_large_files(prefix=prefix)]

    return Backend(
        "b2",
        server.realm_url,
        "SNAPDIR_B2_REALM",
        server.bucket_name,
        keys,
        leftovers,
        server.stop,
    )


STARTERS: dict[str, Callable[[Path], Backend]] = {
    "s3": _start_s3,
    "gs": _start_gs,
    "b2": _start_b2,
}


def check_store(backend: Backend, uri: str, expected: set[str] | None) -> list[str]:
    """Re-read and re-hash every key under the store's prefix, past the proxy. With
    ``expected`` (the push completed), the objects must be exactly those and a manifest must
    be there; without, only the bytes are checked."""
    prefix = snapdir.StoreUri(uri).prefix + "/"
    problems: list[str] = []
    objects: set[str] = set()
    manifests = 0
    for key, data in backend.keys(prefix):
        rel = key[len(prefix) :]
        if rel.startswith(".snapdir/journal/"):
            # The push's journal entry: well-formed, and naming a snapshot the store holds.
            try:
                from datetime import datetime, timezone

                from snapdir.lifecycle.journal import parse_key

                parse_key(rel, datetime.now(timezone.utc))
            except ValueError as e:
                problems.append(f"{key}: {e}")
            continue
        area, _, rest = rel.partition("/")
        parts = rest.split("/")
        if area not in (".objects", ".manifests") or [len(p) for p in parts] != [3, 3, 3, 55]:
            problems.append(f"{key}: not a snapdir key")
            continue
        digest = blake3_hex(data)
        if digest != "".join(parts):
            problems.append(f"{key}: {len(data)} bytes hashing to {digest}")
        if area == ".objects":
            objects.add(digest)
        else:
            manifests += 1
    if expected is not None and objects != expected:
        problems.append(
            f"objects: {len(expected - objects)} missing, {len(objects - expected)} extra"
        )
    if expected is not None and manifests < 1:
        problems.append("no manifest")
    problems += [f"unfinished upload holding data: {k}" for k in backend.leftovers(prefix)]
    return problems


# -------------------------------------------------------------------------------------------
# One run
# -------------------------------------------------------------------------------------------


class _RetryCounter(logging.Handler):
    """Counts the retry layer's "retry N in S s" records (one per retried store call)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retry" in record.getMessage():
            self.count += 1


@dataclass
class Phase:
    seconds: float
    attempts: int  # requests the proxy saw
    store_requests: int | None  # the store's own counter (push and pull report it)
    retries: int  # retries of snapdir's retry layer
    faults: int


@dataclass
class Run:
    backend: str
    rate: float
    seed: int
    ok: bool = False
    error: str = ""
    snapshot: str = ""
    phases: dict[str, Phase] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    proxy_requests: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases.values())

    @property
    def attempts(self) -> int:
        return sum(p.attempts for p in self.phases.values())

    @property
    def retries(self) -> int:
        return sum(p.retries for p in self.phases.values())


def one_run(
    backend: Backend,
    tree: Path,
    expected: set[str],
    rate: float,
    seed: int,
    retry_after: str,
    workdir: Path,
) -> Run:
    result = Run(backend.scheme, rate, seed)
    uri = f"{backend.scheme}://{backend.bucket}/campaign-{uuid.uuid4().hex[:8]}/store"
    restore = workdir / f"restore-{backend.scheme}-{int(rate * 100)}"
    proxy: FaultProxy = start_fault_proxy(
        backend.endpoint,
        rate=rate,
        kinds=KINDS,
        seed=seed,
        path_regex=backend.path_regex,
        latency_s=0.5,
        retry_after=retry_after,
        flavor=FLAVOR[backend.scheme],
    )
    counter = _RetryCounter()
    log = logging.getLogger("snapdir.stores")
    log.addHandler(counter)
    log.setLevel(logging.INFO)
    backend.route(proxy.url)
    sid = ""

    def phase(name: str, fn: Callable[[], Any]) -> Any:
        before, retries0, t0 = proxy.stats, counter.count, time.monotonic()
        try:
            return fn()
        finally:
            after = proxy.stats
            result.phases[name] = Phase(
                seconds=round(time.monotonic() - t0, 3),
                attempts=after.requests - before.requests,
                store_requests=None,
                retries=counter.count - retries0,
                faults=after.total_injected - before.total_injected,
            )

    try:
        pushed = phase("push", lambda: anyio.run(push_with_stats, tree, uri))
        result.phases["push"].store_requests = int(pushed["requests"])
        sid = str(pushed["id"])
        result.snapshot = sid
        if not phase("verify", lambda: anyio.run(snapdir.verify, snapdir.SnapshotId(sid), uri)):
            result.problems.append("verify reported damage")
        pulled = phase(
            "pull", lambda: anyio.run(pull_with_stats, snapdir.SnapshotId(sid), uri, restore)
        )
        result.phases["pull"].store_requests = int(pulled["requests"])
    except Exception as e:  # the run failed: record it, check what is there anyway
        result.error = f"{type(e).__name__}: {e}"
    finally:
        stats = proxy.stats
        proxy.stop()
        backend.route(backend.endpoint)
        log.removeHandler(counter)
        result.injected = dict(sorted(stats.injected.items()))
        result.proxy_requests = stats.requests
    if not result.error:
        result.problems += compare_trees(tree, restore)
        if anyio.run(snapdir.id, restore) != sid:
            result.problems.append("restored tree has another id")
    result.problems += check_store(backend, uri, expected if sid else None)
    shutil.rmtree(restore, ignore_errors=True)
    result.ok = not result.error and not result.problems
    return result


# -------------------------------------------------------------------------------------------
# Report
# -------------------------------------------------------------------------------------------


def table(runs: list[Run], tree: dict[str, int]) -> str:
    base = {r.backend: r.seconds for r in runs if r.rate == 0 and r.ok}
    lines = [
        f"tree: {tree['files']} files, {tree['bytes'] / MiB:.1f} MiB",
        "",
        "| backend | fault rate | push s | verify s | pull s | total s | overhead "
        "| HTTP attempts (store counter push+pull) | retry-layer retries "
        "| faults injected | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in runs:
        ph = r.phases
        sec = {k: f"{ph[k].seconds:.1f}" if k in ph else "-" for k in ("push", "verify", "pull")}
        over = "-"
        if r.backend in base and r.rate > 0 and r.ok:
            over = f"{(r.seconds / base[r.backend] - 1) * 100:+.0f} %"
        store = sum(p.store_requests or 0 for p in ph.values())
        kinds = ", ".join(f"{k} {v}" for k, v in r.injected.items())
        total = sum(r.injected.values())
        faults = f"{total} ({kinds})" if total else "0"
        result = "ok" if r.ok else f"FAILED: {r.error or '; '.join(r.problems[:3])}"
        lines.append(
            f"| {r.backend} | {r.rate * 100:.0f} % | {sec['push']} | {sec['verify']} "
            f"| {sec['pull']} | {r.seconds:.1f} | {over} | {r.attempts} ({store}) "
            f"| {r.retries} | {faults} | {result} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI size (~150 files)")
    parser.add_argument("--backends", default=",".join(SCHEMES), help="comma-separated")
    parser.add_argument(
        "--rates", default="0,0.1,0.2", help="comma-separated fault rates (0 = baseline)"
    )
    parser.add_argument("--seed", type=int, default=1, help="tree and fault seed")
    parser.add_argument(
        "--retry-after", default="1", help="Retry-After of injected 5xx/429 (seconds)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--workdir", metavar="DIR", help="keep the work files here")
    args = parser.parse_args(argv)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in SCHEMES for b in backends):
        parser.error(f"--backends: choose from {', '.join(SCHEMES)}")
    rates = [float(r) for r in args.rates.split(",")]
    if any(not 0.0 <= r <= 1.0 for r in rates):
        parser.error("--rates: each within [0, 1]")
    size = QUICK if args.quick else FULL
    # A run that cannot finish should fail in minutes, not the default ten.
    os.environ.setdefault("SNAPDIR_RETRY_MAX_SECONDS", "300")
    os.environ["SNAPDIR_NO_PROGRESS"] = "1"

    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        tree = workdir / "tree"
        if tree.exists():
            shutil.rmtree(tree)
        shape = make_tree(tree, size, args.seed)
        expected = {c for c, _ in anyio.run(snapdir.manifest, tree).objects()}
        print(
            f"tree: {shape['files']} files, {shape['bytes'] / MiB:.1f} MiB, "
            f"{len(expected)} objects",
            flush=True,
        )
        runs: list[Run] = []
        for scheme in backends:
            t0 = time.monotonic()
            backend = STARTERS[scheme](workdir)
            print(f"{scheme}: server up in {time.monotonic() - t0:.1f}s", flush=True)
            try:
                for i, rate in enumerate(rates):
                    r = one_run(
                        backend,
                        tree,
                        expected,
                        rate,
                        args.seed * 100 + i,
                        args.retry_after,
                        workdir,
                    )
                    runs.append(r)
                    status = "ok" if r.ok else f"FAILED {r.error} {r.problems[:5]}"
                    print(
                        f"{scheme} rate {rate:.2f}: {r.seconds:.1f}s, {r.attempts} attempts, "
                        f"{r.retries} retries, {sum(r.injected.values())} faults "
                        f"{dict(Counter(r.injected))}: {status}",
                        flush=True,
                    )
            finally:
                backend.stop()
        print()
        print(table(runs, shape))
        if args.json:
            payload = {
                "quick": args.quick,
                "tree": shape | {"objects": len(expected)},
                "runs": [asdict(r) | {"seconds": r.seconds, "attempts": r.attempts} for r in runs],
            }
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
