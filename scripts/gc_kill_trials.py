#!/usr/bin/env python3
"""``kill -9`` of ``snapdir gc`` at random points: after each kill the store verifies from
its roots (``snapdir verify --all``) and the next ``gc`` completes and leaves nothing
unreachable behind.

A template ``file://`` store is built once: a few snapshots that share objects, adopted,
half of them forgotten (about 1,200 unreachable objects and their manifests). Each trial
copies it, runs the real ``snapdir gc --grace 0`` (``SNAPDIR_GC_DELAY=0``, in its own
process group) and sends SIGKILL after a random delay spread over the time an
uninterrupted run takes (calibrated first, so kills land before the interpreter starts,
while it marks, while it deletes manifests or objects, and after it exits). Then:

* ``snapdir verify --all`` must exit 0 (every rooted snapshot whole, re-hashed);
* ``snapdir gc --grace 0`` must exit 0 and report ``complete``;
* a dry run after it must find nothing to delete;
* the rooted snapshots are the same as before.

Each trial is classified by what the killed run left: ``none`` (nothing deleted),
``manifests`` (some manifests gone, every object there), ``objects`` (some objects gone
too), ``all`` (it finished). Usage::

    python scripts/gc_kill_trials.py --trials 100

Exit status 1 if any trial found a problem.
"""

from __future__ import annotations

import argparse
import contextlib
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
from pathlib import Path
from typing import Any


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(SNAPDIR_GC_DELAY="0", SNAPDIR_NO_PROGRESS="1")
    return env


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapdir", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
        check=False,
    )


def _count(root: Path, area: str) -> int:
    return sum(1 for p in (root / area).rglob("*") if p.is_file())


def build_template(root: Path, *, snapshots: int = 6, files: int = 200, seed: int = 1) -> Path:
    """``snapshots`` trees of ``files`` small files, half of each shared with the others;
    pushed, adopted, every other one forgotten."""
    rnd = random.Random(seed)
    shared = [rnd.randbytes(rnd.randint(10, 400)) for _ in range(files)]
    store = root / "template"
    uri = "file://" + str(store)
    ids = []
    for i in range(snapshots):
        tree = root / f"tree-{i}"
        for j in range(files):
            p = tree / f"d{j % 7}" / f"f{j}"
            p.parent.mkdir(parents=True, exist_ok=True)
            data = shared[j] if j % 2 else rnd.randbytes(rnd.randint(10, 400))
            p.write_bytes(data)
        out = _cli("push", str(tree), "--store", uri, "-q")
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        ids.append(out.stdout.strip())
    if _cli("adopt", "--store", uri).returncode != 0:
        raise RuntimeError("adopt failed")
    forgotten = ids[::2]
    if _cli("forget", *forgotten, "--store", uri).returncode != 0:
        raise RuntimeError("forget failed")
    return store


def _rooted(uri: str) -> list[str]:
    out = _cli("ls", "--store", uri, "--json", "--long")
    return sorted(s["id"] for s in json.loads(out.stdout)["snapshots"])


def trial(template: Path, work: Path, delay: float) -> dict[str, Any]:
    store = work / "store"
    if store.exists():
        shutil.rmtree(store)
    shutil.copytree(template, store, symlinks=True)
    uri = "file://" + str(store)
    m0, o0 = _count(store, ".manifests"), _count(store, ".objects")
    rec: dict[str, Any] = {"delay": round(delay, 4), "problems": []}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", "gc", "--store", uri, "--grace", "0", "-q"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):  # it finished before the kill
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    m1, o1 = _count(store, ".manifests"), _count(store, ".objects")
    rec["left"] = (
        "none"
        if (m1, o1) == (m0, o0)
        else "manifests"
        if o1 == o0
        else "all"
        if proc.returncode == 0
        else "objects"
    )
    before = _rooted(uri)
    v = _cli("verify", "--all", "--store", uri, "--json")
    if v.returncode != 0:
        rec["problems"].append(f"verify --all after the kill: {v.returncode} {v.stdout[-400:]}")
    g = _cli("gc", "--store", uri, "--grace", "0", "--json")
    if g.returncode != 0 or not json.loads(g.stdout or "{}").get("complete"):
        rec["problems"].append(f"the next gc: {g.returncode} {g.stdout[-400:]} {g.stderr[-400:]}")
    dry = _cli("gc", "--store", uri, "--grace", "0", "--dry-run", "--json")
    doc = json.loads(dry.stdout or "{}")
    if dry.returncode != 0 or doc.get("manifests") or doc.get("objects"):
        rec["problems"].append(f"left unreachable content: {dry.stdout[-400:]}")
    v2 = _cli("verify", "--all", "--store", uri, "--json")
    if v2.returncode != 0:
        rec["problems"].append(f"verify --all after the next gc: {v2.stdout[-400:]}")
    if _rooted(uri) != before:
        rec["problems"].append("the rooted snapshots changed")
    return rec


def calibrate(template: Path, work: Path, runs: int = 3, *, dry_run: bool = False) -> float:
    """Seconds an uninterrupted ``snapdir gc`` takes on a copy of the template (the
    median of ``runs``: on a loaded machine one run alone says little)."""
    took = []
    for _ in range(runs):
        store = work / "calibrate"
        shutil.copytree(template, store, symlinks=True)
        start = time.monotonic()
        flags = ["--dry-run"] if dry_run else []
        out = _cli("gc", "--store", "file://" + str(store), "--grace", "0", "-q", *flags)
        took.append(time.monotonic() - start)
        shutil.rmtree(store)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
    return statistics.median(took)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--files", type=int, default=200, help="files per snapshot")
    ap.add_argument(
        "--snapshots",
        type=int,
        default=6,
        help="snapshots in the template store (every other one forgotten); with --files, "
        "the store's size: about snapshots * files / 2 unreachable objects",
    )
    ap.add_argument("--json", metavar="PATH", help="write the results here")
    args = ap.parse_args(argv)
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="gc-kill-") as tmp:
        root = Path(tmp)
        template = build_template(root, snapshots=args.snapshots, files=args.files, seed=args.seed)
        size = {"manifests": _count(template, ".manifests"),
                "objects": _count(template, ".objects")}  # fmt: skip
        span = calibrate(template, root)
        # Most of a run is the interpreter starting and the marking; the kills that
        # matter land in the sweep, so most delays are drawn from the run's last part
        # (from when a dry run, which stops before the sweep, would have finished).
        mark = calibrate(template, root, dry_run=True)
        print(f"calibrated: a run {span:.2f} s, a dry run {mark:.2f} s", file=sys.stderr)
        results = []
        for i in range(args.trials):
            results.append(
                trial(
                    template,
                    root / "trial",
                    rnd.uniform(0.0, span)
                    if i % 5 == 0
                    else rnd.uniform(0.9 * min(mark, span), 1.05 * max(mark, span)),
                )
            )
            last = results[-1]
            print(f"trial {i + 1}: {last['delay']} s, left {last['left']}, "
                  f"{len(last['problems'])} problems {last['problems']}"[:2000],
                  file=sys.stderr, flush=True)  # fmt: skip
    summary: dict[str, Any] = {
        "trials": len(results),
        "store": size,
        "uninterrupted_seconds": round(span, 3),
        "dry_run_seconds": round(mark, 3),
        "left": {
            k: sum(1 for r in results if r["left"] == k)
            for k in ("none", "manifests", "objects", "all")
        },
        "failed": [r for r in results if r["problems"]],
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": results}, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
