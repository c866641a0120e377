#!/usr/bin/env python3
"""Kill -9 trials of the recorder: a recording survives its recorder's crash.

Each trial starts ``snapdir record`` (the real command line, its own process group) on a
directory, waits for its first head, then writes a file every 20 ms (noting when each was
written) and sends SIGKILL to the recorder after a seeded random delay. Then it reads the
live recording back (every segment hash-checked, the chain verified: a torn segment is
refused, never accepted) and replays it into an empty directory. It passes when every file
written at least ``--grace`` seconds (default 1.0) before the kill is in the replay with its
exact content.

Usage::

    python scripts/record_kill_trials.py --trials 50 [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def trial(workdir: Path, seed: int, grace: float = 1.0) -> dict[str, Any]:
    import anyio
    from snapdir.recording import replay

    rnd = random.Random(seed)
    src, store_dir = workdir / "src", workdir / "store"
    src.mkdir(parents=True)
    store_dir.mkdir()
    store = f"file://{store_dir}"
    (src / "seed.txt").write_text(str(seed))
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", "record", str(src), "--store", store, "--name",
         "k", "--checkpoint-every", "1000s", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    heads = store_dir / ".snapdir" / "recordings" / "k" / "head"
    written: list[tuple[float, str, str]] = []
    try:
        deadline = time.monotonic() + 30
        while not (heads.is_dir() and any(heads.iterdir())):
            if time.monotonic() > deadline or proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"the recorder did not start: {err}")
            time.sleep(0.02)
        kill_after = rnd.uniform(0.3, 3.0)
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < kill_after:
            name, body = f"f{i:05d}.txt", f"{seed}:{i}:" + "x" * rnd.randint(0, 300)
            (src / name).write_text(body)
            written.append((time.monotonic(), name, body))
            i += 1
            time.sleep(0.02)
        killed_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    target = workdir / "replayed"
    rep = anyio.run(lambda: replay("k", store, target, mode="burst", verify="none"))
    must = [(n, b) for t, n, b in written if killed_at - t >= grace]
    lost = [n for n, b in must if not (target / n).is_file() or (target / n).read_text() != b]
    kept_recent = sum(1 for t, n, _ in written if killed_at - t < grace and (target / n).is_file())
    return {
        "seed": seed,
        "kill_after": round(killed_at - start, 3),
        "written": len(written),
        "required": len(must),
        "lost": lost,
        "kept_within_grace": kept_recent,
        "events_replayed": rep.events,
        "ok": not lost,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grace", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="record-kill-") as tmp:
        for k in range(args.trials):
            r = trial(Path(tmp) / f"t{k}", args.seed * 1000 + k, args.grace)
            results.append(r)
            if not args.json:
                print(
                    f"trial {k}: killed after {r['kill_after']} s, {r['written']} written, "
                    f"{r['required']} required, lost {len(r['lost'])}"
                    f"{'' if r['ok'] else ' FAILED'}",
                    flush=True,
                )
    failed = [r for r in results if not r["ok"]]
    summary = {"trials": len(results), "failed": len(failed), "results": results}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
