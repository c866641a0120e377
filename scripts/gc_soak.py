#!/usr/bin/env python3
"""Soak: concurrent pushers, a forgetter and a ``gc --grace 0`` loop on one store, then
the checks the collector's argument promises (docs/design/gc.md).

For ``--minutes M``, on one store of the chosen backend (a loopback server the script
starts: SeaweedFS, fake-gcs-server or the B2 simulator; or a ``file://`` directory):

* 8 pushers (``--pushers``) each push fresh trees of ~12 files, about half of them drawn
  from a pool of objects every pusher shares, and now and then push again a tree whose
  snapshot the forgetter forgot (a no-op push of content a sweep is deleting);
* a forgetter forgets a random journalled snapshot every ~0.3 s (each at most once);
* a collector runs ``gc(grace=0)`` in a loop (delay 0 to 0.2 s).

At the end: every snapshot whose push reported success and that was not forgotten after it
(or was pushed again after being forgotten) verifies, and ``verify --all`` finds nothing
missing. Then everything but one snapshot is forgotten and one ``gc`` must free at least
99 % of the unreachable bytes (as ``du`` counts them). Prints a JSON summary; exit status 1
if a check failed. Usage::

    python scripts/gc_soak.py --backend s3 --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def soak(
    uri: str, seconds: float, work: Path, *, pushers: int = 8, seed: int = 1
) -> dict[str, Any]:
    """Run the soak against ``uri`` for ``seconds``; returns the summary (``ok`` says
    whether every check passed)."""
    import anyio
    import snapdir
    from snapdir._push import push_with_stats
    from snapdir.lifecycle import adopt, du, forget, ls
    from snapdir.lifecycle.gc import check_roots, gc

    rnd = random.Random(seed)
    pool = [rnd.randbytes(rnd.randint(200, 6000)) for _ in range(60)]
    trees: dict[str, Path] = {}  # snapshot id -> its tree on disk
    live: set[str] = set()  # pushed successfully and not forgotten since
    forgotten: set[str] = set()
    stats: dict[str, Any] = dict(
        pushes=0, noop_pushes=0, push_errors=[], forgets=0, gc_runs=0, gc_errors=[],
        deleted_manifests=0, deleted_objects=0,
    )  # fmt: skip
    stop = anyio.Event()
    deadline = time.monotonic() + seconds

    # The store exists and is managed before anyone collects.
    first = work / "seed"
    first.mkdir(parents=True)
    (first / "seed.txt").write_bytes(b"seed\n")
    sid0 = await snapdir.push(first, uri)
    trees[sid0] = first
    live.add(sid0)
    await adopt(uri)

    async def pusher(i: int) -> None:
        r = random.Random(seed * 100 + i)
        n = 0
        while not stop.is_set():
            n += 1
            again = sorted(s for s in forgotten if s in trees)
            if again and r.random() < 0.03:
                sid = r.choice(again)
                tree = trees[sid]
            else:
                tree = work / f"p{i}" / f"t{n}"
                for j in range(12):
                    p = tree / f"d{j % 3}" / f"f{j}"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(r.choice(pool) if j % 2 else r.randbytes(r.randint(100, 4000)))
                sid = ""
            try:
                st = await push_with_stats(tree, uri)
            except Exception as e:
                stats["push_errors"].append(f"{type(e).__name__}: {e}"[:300])
                continue
            got = str(st["id"])
            assert not sid or got == sid
            trees[got] = tree
            stats["pushes"] += 1
            stats["noop_pushes"] += bool(st["noop"])
            forgotten.discard(got)
            live.add(got)

    async def forgetter() -> None:
        """Each snapshot is forgotten at most once; only once that is done may a pusher
        push it again (so its new entry is never the one a forget removes)."""
        r = random.Random(seed + 7)
        ever: set[str] = {sid0}
        while not stop.is_set():
            await anyio.sleep(r.uniform(0.1, 0.5))
            candidates = sorted(live - ever)
            if not candidates:
                continue
            sid = r.choice(candidates)
            ever.add(sid)
            live.discard(sid)  # from now on it may go, whatever its entries say
            await forget(uri, [sid])
            forgotten.add(sid)
            stats["forgets"] += 1

    async def collector() -> None:
        r = random.Random(seed + 11)
        while not stop.is_set():
            try:
                rep = await gc(uri, grace="0", delay=r.uniform(0, 0.2))
            except Exception as e:
                stats["gc_errors"].append(f"{type(e).__name__}: {e}"[:300])
                await anyio.sleep(0.5)
                continue
            stats["gc_runs"] += 1
            stats["deleted_manifests"] += len(rep.manifests)
            stats["deleted_objects"] += rep.objects

    async def timer() -> None:
        await anyio.sleep(max(0.0, deadline - time.monotonic()))
        stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(timer)
        tg.start_soon(forgetter)
        tg.start_soon(collector)
        for i in range(pushers):
            tg.start_soon(pusher, i)

    # -- checks ---------------------------------------------------------------------------
    # ``verify --all`` re-hashes every rooted snapshot once; a live snapshot it did not
    # see as a root (which should not happen) is verified on its own.
    check = await check_roots(uri)
    broken = [f"{sid}: {check.snapshots[sid]}"[:300] for sid in sorted(live)
              if check.snapshots.get(sid)]  # fmt: skip
    unrooted = sorted(live - set(check.snapshots))
    for sid in unrooted:
        try:
            await snapdir.verify(sid, uri)
        except snapdir.SnapdirError as e:
            broken.append(f"{sid}: {e}"[:300])
    stats["live_unrooted"] = len(unrooted)
    stats["live_snapshots"] = len(live)
    stats["broken_snapshots"] = broken
    stats["missing_objects"] = len(check.missing_objects) + sum(
        1 for p in check.snapshots.values() for v in p.values() if v == "missing"
    )
    # -- everything but one forgotten: one gc frees >= 99 % of the unreachable bytes ------
    keep = sid0
    others = sorted({e.id for e in await ls(uri)} - {keep})
    if others:
        await forget(uri, others)
    before = await du(uri)
    final = await gc(uri, grace="0", delay=0)
    after = await du(uri)
    freed = before.unreachable_bytes - after.unreachable_bytes
    stats["unreachable_before"] = before.unreachable_bytes
    stats["unreachable_after"] = after.unreachable_bytes
    stats["freed_fraction"] = (
        (freed / before.unreachable_bytes) if before.unreachable_bytes else 1.0
    )
    stats["final_gc"] = {"manifests": len(final.manifests), "objects": final.objects,
                         "requests": final.requests}  # fmt: skip
    stats["ok"] = (
        not broken
        and stats["missing_objects"] == 0
        and check.ok
        and not stats["push_errors"]
        and not stats["gc_errors"]
        and stats["freed_fraction"] >= 0.99
        and await snapdir.verify(keep, uri)
    )
    return stats


def _start(backend: str, tmp: Path) -> tuple[str, Any]:
    """Start the backend's loopback server, configure the environment; (store URI, server)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from gcutil import Env, configure

    server: Any = None
    if backend == "s3":
        from servers.seaweed import start_seaweedfs

        server = start_seaweedfs(tmp / "seaweedfs")
    elif backend in ("gs", "gcs"):
        from servers.fakegcs import start_fake_gcs

        server = start_fake_gcs(tmp / "fake-gcs")
    elif backend == "b2":
        from servers.b2sim import start_b2_simulator

        server = start_b2_simulator()
    name = "gs" if backend == "gcs" else backend
    return configure(name, server, Env(), tmp).fresh(), server


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["file", "s3", "gcs", "gs", "b2"], default="file")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--pushers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=20261207)
    args = ap.parse_args(argv)
    import anyio

    with tempfile.TemporaryDirectory(prefix="gc-soak-") as tmp:
        root = Path(tmp)
        (root / "seaweedfs").mkdir()
        (root / "fake-gcs").mkdir()
        uri, server = _start(args.backend, root)
        try:
            summary = anyio.run(
                lambda: soak(
                    uri, args.minutes * 60, root / "work", pushers=args.pushers, seed=args.seed
                )
            )
        finally:
            if server is not None:
                server.stop()
    summary["backend"] = args.backend
    summary["minutes"] = args.minutes
    print(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    os.environ.setdefault("SNAPDIR_NO_PROGRESS", "1")
    sys.exit(0 if main()["ok"] else 1)
