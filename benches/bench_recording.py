#!/usr/bin/env python3
"""Recording area: `snapdir record` / `snapdir replay` against epuplayer's own replayer, in
the same run, on the same events.

* burst: 10,000 EPU-like events (creates of small XML files, appends, deletes across 50
  directories), written as an epuplayer archive; epuplayer replays the archive in burst
  mode, we replay the same events after `recording import` (verified at the end);
* exact: 1,000 events over 10 s; our lateness p50/p99/max/last against epuplayer's
  overrun (its wall time minus 10 s);
* overflow: a writer doing 50,000 operations as fast as it can while `record` is stopped
  (SIGSTOP, then SIGCONT): inotify's queue (16,384 events by default) overflows for certain;
  the overflow must be reported and the final checkpoint must equal `snapdir id DIR`; then
  the same with `--poll`;
* dedup: a 100 MB file rewritten 10 times identically, then appended to: store growth
  against the distinct contents the file went through.

    python benches/bench_recording.py [--quick] [--epuplayer PYTHON] [--out FILE]
    python benches/bench.py --areas recording

epuplayer runs from its own environment (its wheel needs Python 3.12): pass its
interpreter with --epuplayer (default: $EPUPLAYER_PYTHON); without one its rows are left
out. The script never fails because something is slow.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

XML = (
    '<?xml version="1.0"?>\n'
    "<MicroscopeImage><uniqueID>{i}</uniqueID><pad>{pad}</pad></MicroscopeImage>\n"
)


def epu_archive(path: Path, events: int, span: float, seed: int = 7) -> int:
    """An epuplayer archive of ``events`` EPU-like events spread evenly over ``span``
    seconds; returns the event count written."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    live: list[str] = []
    t0 = 1_700_000_000.0
    step = span / max(1, events - 1)

    def ev(kind: str, p: str, **kw: Any) -> None:
        base = {"timestamp": t0 + len(out) * step, "event_type": kind, "src_path": p,
                "dest_path": None, "is_directory": False, "content": None, "size": None,
                "content_hash": None, "binary_chunk_id": None, "operation_data": None,
                "file_position": None, "is_placeholder": False}  # fmt: skip
        base.update(kw)
        out.append(base)

    for d in range(min(50, events)):
        ev("created", f"GridSquare_{d}", is_directory=True)
    i = 0
    while len(out) < events:
        r = rnd.random()
        if r < 0.6 or not live:
            p = f"GridSquare_{i % 50}/FoilHole_{i}.xml"
            body = XML.format(i=i, pad="x" * rnd.randint(50, 400)).encode()
            files[p] = body
            live.append(p)
            ev("created", p, content=body.decode(), size=len(body),
               content_hash=hashlib.sha256(body).hexdigest())  # fmt: skip
            i += 1
        elif r < 0.85:
            p = rnd.choice(live)
            add = f"<!-- {rnd.random()} -->\n".encode()
            pos = len(files[p])
            files[p] += add
            ev("appended", p, content=add.decode(), size=len(files[p]), file_position=pos,
               content_hash=hashlib.sha256(files[p]).hexdigest(),
               operation_data={"append_size": len(add)})  # fmt: skip
        else:
            p = live.pop(rnd.randrange(len(live)))
            del files[p]
            ev("deleted", p)
    doc = {"metadata": {"recorded_at": "2026-01-01T00:00:00", "watch_dir": "/epu",
                        "total_events": len(out), "version": "2.0", "platform": "linux"},
           "events": out}  # fmt: skip
    data = json.dumps(doc).encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("recording.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return len(out)


def run(argv: list[str], **kw: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    return time.perf_counter() - t, proc


def ours(*args: str) -> list[str]:
    return [sys.executable, "-m", "snapdir", *args]


def check(proc: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}


def bench_burst(work: Path, epu: str | None, events: int) -> dict[str, Any]:
    archive = work / "burst.tar.gz"
    n = epu_archive(archive, events, span=events * 0.001)
    store = f"file://{work / 'store'}"
    (work / "store").mkdir(exist_ok=True)
    check(run(ours("--json", "recording", "import", str(archive), "--store", store,
                   "--name", "burst"))[1], "import")  # fmt: skip
    wall, proc = run(ours("--json", "replay", "burst", str(work / "ours"), "--store", store,
                          "--burst"))  # fmt: skip
    doc = check(proc, "replay --burst")
    row: dict[str, Any] = {"events": n, "ours_wall": wall, "ours_replay": doc["duration"],
                           "verified": doc["verified"]}  # fmt: skip
    if epu:
        ewall, eproc = run([epu, "-m", "smartem_epuplayer", "replay", str(archive),
                            str(work / "epu"), "--burst"])  # fmt: skip
        row["epu_wall"] = ewall if eproc.returncode == 0 else None
        row["epu_verify_errors"] = "Integrity verification found" in eproc.stdout
    return row


def bench_exact(work: Path, epu: str | None, events: int, span: float) -> dict[str, Any]:
    archive = work / "exact.tar.gz"
    epu_archive(archive, events, span=span, seed=11)
    store = f"file://{work / 'store'}"
    (work / "store").mkdir(exist_ok=True)
    check(run(ours("--json", "recording", "import", str(archive), "--store", store,
                   "--name", "exact"))[1], "import")  # fmt: skip
    _wall, proc = run(ours("--json", "replay", "exact", str(work / "ours-exact"), "--store",
                          store, "--exact"))  # fmt: skip
    doc = check(proc, "replay --exact")
    row: dict[str, Any] = {"events": events, "span": span, "ours": doc["lateness"],
                           "ours_duration": doc["duration"]}  # fmt: skip
    if epu:
        _ewall, eproc = run([epu, "-m", "smartem_epuplayer", "replay", str(archive),
                            str(work / "epu-exact"), "--exact"])  # fmt: skip
        # epuplayer prints its own replay time: "Replay completed in X.Xs!"
        took = None
        for line in eproc.stdout.splitlines():
            if line.startswith("Replay completed in "):
                took = float(line.split()[3].rstrip("s!"))
        row["epu_duration"] = took
        row["epu_overrun"] = None if took is None else took - span
    return row


WRITER = r"""
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
live = []
for i in range(n):
    k = i % 10
    if k < 6 or not live:
        p = os.path.join(root, f"d{i % 50}", f"f{i}.xml")
        with open(p, "w") as f:
            f.write(f"<x>{i}</x>\\n")
        live.append(p)
    elif k < 8:
        with open(live[-1], "a") as f:
            f.write("more\\n")
    else:
        os.unlink(live.pop(0))
with open(os.path.join(root, "sentinel"), "w") as f:
    f.write("written last\\n")
"""


def max_queued_events() -> int | None:
    try:
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            return int(f.read())
    except OSError:
        return None


def bench_overflow(work: Path, ops: int, poll: float | None) -> dict[str, Any]:
    """`snapdir record` in its own process, stopped (SIGSTOP) while the writer runs and
    continued after: the kernel's queue overflows for certain (its events pile up unread),
    and the overflow must be reported and reconciled. The writer's last file is a sentinel
    whose own notification is dropped with the overflow: once it is in the recording the
    walk has run, and the recorder is sealed (SIGINT)."""
    import signal

    import anyio
    import snapdir
    from snapdir._common import open_wrapped
    from snapdir.recording import load

    tag = "poll" if poll else "notify"
    src = work / f"writer-{tag}"
    for d in range(50):  # a directory made while the recorder is stopped has no watch yet
        (src / f"d{d}").mkdir(parents=True)
    (work / f"store-{tag}").mkdir()
    store = f"file://{work / f'store-{tag}'}"
    name = f"overflow-{tag}"
    argv = ours("--json", "record", str(src), "--store", store, "--name", name,
                "--checkpoint-every", "1h") + (["--poll", str(poll)] if poll else [])  # fmt: skip
    rec = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        head = work / f"store-{tag}" / ".snapdir" / "recordings" / name / "head"
        deadline = time.monotonic() + 60
        while not (head.is_dir() and any(head.iterdir())):
            if rec.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"record did not start: {rec.communicate()[1][-2000:]}")
            time.sleep(0.05)
        os.kill(rec.pid, signal.SIGSTOP)
        t = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-c", WRITER, str(src), str(ops)], check=True)
        finally:
            writer_s = time.perf_counter() - t
            os.kill(rec.pid, signal.SIGCONT)
        t = time.perf_counter()
        wrapped = open_wrapped(store)
        while not any(p == "sentinel" for _, _, p in anyio.run(load, wrapped, name).outline()):
            if rec.poll() is not None or time.perf_counter() - t > 600:
                raise RuntimeError("the recorder never recorded the writer's last file")
            time.sleep(0.1)
        caught_up = time.perf_counter() - t
        rec.send_signal(signal.SIGINT)
        out, err = rec.communicate(timeout=600)
    finally:
        if rec.poll() is None:
            os.kill(rec.pid, signal.SIGCONT)
            rec.kill()
            rec.communicate()
    s = check(subprocess.CompletedProcess(argv, rec.returncode, out, err), f"record ({tag})")
    actual = anyio.run(snapdir.id, src)
    return {"mode": tag, "ops": ops, "events": s["events"], "overflows": s["overflows"],
            "writer_seconds": writer_s, "caught_up_seconds": caught_up,
            "max_queued_events": max_queued_events(), "final": s["final_checkpoint"],
            "id": actual, "equal": s["final_checkpoint"] == actual}  # fmt: skip


def bench_dedup(work: Path, size: int) -> dict[str, Any]:
    import anyio
    from snapdir.recording import Recorder

    src = work / "big"
    src.mkdir()
    storedir = work / "store-dedup"
    storedir.mkdir()
    data = random.Random(3).randbytes(size)
    (src / "big.bin").write_bytes(data)

    def du() -> int:
        return sum(p.stat().st_size for p in storedir.rglob("*") if p.is_file())

    async def go() -> int:
        async with Recorder(src, f"file://{storedir}", name="dedup") as rec:
            before = du()
            for _ in range(10):
                with open(src / "big.bin", "wb") as f:  # noqa: ASYNC230
                    f.write(data)
                await rec.run(duration=0.3)
            with open(src / "big.bin", "ab") as f:  # noqa: ASYNC230
                f.write(b"appended" * 1000)
            await rec.run(duration=0.3)
        return before

    before = anyio.run(go)
    growth = du() - before
    final = size + 8000
    return {"size": size, "growth_after_start": growth, "total": du(),
            "written_unique": size + 8000,
            "distinct_contents": size + final, "ratio_distinct": du() / (size + final),
            "ratio_final_only": du() / final}  # fmt: skip


def render(res: dict[str, Any], command: str) -> str:
    b, e = res["burst"], res["exact"]
    lines = ["# Recording and replay", "", f"Command: `{command}`", "",
             "## Burst replay (EPU-like events)", "",
             "| tool | events | wall (s) | verified |", "|---|---|---|---|",
             f"| snapdir replay --burst | {b['events']} | {b['ours_wall']:.3f} "
             f"(replay {b['ours_replay']:.3f}) | {b['verified']} |"]  # fmt: skip
    if b.get("epu_wall"):
        lines.append(f"| epuplayer --burst | {b['events']} | {b['epu_wall']:.3f} | "
                     f"{'errors reported' if b['epu_verify_errors'] else 'passed'} |")  # fmt: skip
        lines += ["", f"Ratio: {b['epu_wall'] / b['ours_wall']:.1f}x"]
    lat = e["ours"]
    lines += ["", f"## Exact mode ({e['events']} events over {e['span']} s)", "",
              f"snapdir: lateness p50 {lat['p50'] * 1e3:.2f} ms, p99 {lat['p99'] * 1e3:.2f} "
              f"ms, max {lat['max'] * 1e3:.2f} ms, last {lat['last'] * 1e3:.2f} ms "
              f"(replay took {e['ours_duration']:.3f} s)."]  # fmt: skip
    if e.get("epu_overrun") is not None:
        lines.append(f"epuplayer: took {e['epu_duration']:.2f} s ({e['epu_overrun']:+.2f} s).")
    q = res["overflow"][0]["max_queued_events"]
    lines += ["", "## Overflowing writer", "",
              f"The recorder is stopped (SIGSTOP) while the writer runs, continued after "
              f"(inotify's queue: {q} events).", "",
              "| source | ops | writer (s) | caught up (s) | events | overflows | "
              "final checkpoint == snapdir id |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for o in res["overflow"]:
        lines.append(f"| {o['mode']} | {o['ops']} | {o['writer_seconds']:.2f} | "
                     f"{o['caught_up_seconds']:.2f} | {o['events']} | {o['overflows']} | "
                     f"{o['equal']} |")  # fmt: skip
    d = res["dedup"]
    lines += ["", "## Store growth", "",
              f"A {d['size'] / 1e6:.0f} MB file rewritten 10 times identically, then appended: "
              f"store {d['total'] / 1e6:.1f} MB in all, "
              f"{d['ratio_distinct']:.3f} x the distinct contents it went through "
              f"({d['distinct_contents'] / 1e6:.1f} MB: the first and the appended version); "
              f"{d['ratio_final_only']:.3f} x the final file alone. While recording (after "
              f"the start checkpoint) the store grew by {d['growth_after_start'] / 1e6:.3f} MB, "
              f"{d['growth_after_start'] / d['written_unique']:.4f} x the unique bytes written "
              f"meanwhile ({d['written_unique'] / 1e6:.3f} MB: one rewrite's content and the "
              f"appended bytes)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a check that it runs)")
    ap.add_argument("--epuplayer", default=os.environ.get("EPUPLAYER_PYTHON"),
                    help="epuplayer's Python interpreter")  # fmt: skip
    ap.add_argument("--out", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    q = args.quick
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        work = Path(tmp)
        res = {
            "burst": bench_burst(work / "b", args.epuplayer, 1000 if q else 10_000)
            if (work / "b").mkdir() is None
            else {},
            "exact": bench_exact(work / "e", args.epuplayer, 100 if q else 1000, 1.0 if q else 10.0)
            if (work / "e").mkdir() is None
            else {},
            "overflow": [
                bench_overflow(work, 10_000 if q else 50_000, None),
                bench_overflow(work, 10_000 if q else 50_000, 0.5),
            ],
            "dedup": bench_dedup(work, (10 if q else 100) * 1_000_000),
        }
        # The report before the clean-up: removing 50,000 files on a busy disk takes a while.
        report = render(res, " ".join(["python", *sys.argv]))
        print(report)
        print(json.dumps(res, default=str), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_area(args: argparse.Namespace) -> list[str]:
    """`bench.py --areas recording`: the full run, report in docs/benchmarks-extra."""
    out = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-extra" / "recording.md"
    argv = ["--out", str(out)] + (["--quick"] if getattr(args, "quick", False) else [])
    try:
        main(argv)
    except RuntimeError as exc:
        return [f"recording: {exc}"]
    return []


if __name__ == "__main__":
    sys.exit(main())
