"""Area `runs`: what recording a command costs, beside Capsula 0.8.

Measured, each a new process, on a `file://` store in the work directory:

* **overhead**: `snapdir run --store file://… --no-git -- true` against `true` alone, median
  of N (default 20); Capsula's `capsula run -- true` with a comparable capture (cwd,
  platform, CPU, one environment variable, the time watcher; JSON reports), same N. Target:
  at most 150 ms over `true`, and less than Capsula.
* **first output byte**: the child writes `time.monotonic()` and keeps running; the harness
  timestamps the line as it arrives on snapdir's stdout (a pipe). Target: 50 ms. Capsula
  shows the output when the command ends: its column is the child's whole run.
* **large output**: SIZE bytes of text lines (`yes … | head -c SIZE`) through `snapdir run`
  (default 1 GiB), peak RSS of snapdir (from `wait4`, which reports the largest of snapdir
  and its children) and wall time. Target: 64 MB. Capsula keeps the output in memory; it is run at
  min(SIZE, 4 MiB) (it takes minutes per 16 MiB), and the size is shown.

Capsula is never imported: the harness runs its `capsula` executable from its own venv,
found with `--capsula PATH` (the executable, or a venv directory); without it, its column
says so.

    python benches/bench.py --areas runs --capsula /path/to/venv-capsula
    python benches/bench_runs.py --quick                 # 5 rounds, 64 MiB
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchcore import REPO, _without_local_paths
from benchrun import command_line, find_ours, fmt_s, machine_info, md_table, tool_version

OVERHEAD_TARGET_S = 0.150
FIRST_BYTE_TARGET_S = 0.050
RSS_TARGET = 64 * 1000 * 1000
CAPSULA_MAX_BYTES = 4 << 20

CAPSULA_TOML = """\
[pre-run]
contexts = [
    { type = "CwdContext" },
    { type = "CpuContext" },
    { type = "PlatformContext" },
    { type = "EnvVarContext", name = "HOME" },
]
reporters = [{ type = "JsonDumpReporter" }]

[in-run]
watchers = [{ type = "UncaughtExceptionWatcher" }, { type = "TimeWatcher" }]
reporters = [{ type = "JsonDumpReporter" }]

[post-run]
reporters = [{ type = "JsonDumpReporter" }]
"""

FIRST_LINE = (
    "import sys, time; sys.stdout.write(repr(time.monotonic()) + '\\n'); sys.stdout.flush(); "
    "time.sleep(0.3)"
)


def text_output(size: int) -> list[str]:
    """A command writing ``size`` bytes of text lines (Capsula decodes output as text)."""
    return ["sh", "-c", f"yes 0123456789abcdef0123456789abcdef | head -c {size}"]


def find_capsula(spec: str | None) -> tuple[str | None, str]:
    if not spec:
        return None, "not measured: pass --capsula PATH (its venv or its executable)"
    p = Path(spec)
    for cand in (p, p / "bin" / "capsula"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand), ""
    return None, f"not measured: no capsula executable at {spec}"


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, int]:
    """Run to completion with output discarded: (seconds, exit status, peak RSS bytes)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, proc.returncode, usage.ru_maxrss * 1024


def first_byte(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> float | None:
    """Seconds from the child's write of its first line to its arrival on our pipe."""
    with subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        got = None
        for line in proc.stdout:
            now = time.monotonic()
            try:
                got = now - float(line.decode().strip())
                break
            except ValueError:
                continue  # a tool's own line before the child's
        proc.stdout.read()
        proc.wait()
    return got


class Runs:
    def __init__(self, ours: str, capsula: str | None, rounds: int, size: int, workdir: Path,
                 log: Callable[[str], None]) -> None:  # fmt: skip
        self.ours = ours
        self.capsula = capsula
        self.rounds = rounds
        self.size = size
        self.log = log
        self.work = Path(tempfile.mkdtemp(prefix="runs-bench-", dir=workdir))
        self.proj = self.work / "proj"
        self.proj.mkdir()
        (self.proj / "pyproject.toml").write_text("")  # the project root, for both tools
        (self.proj / "capsula.toml").write_text(CAPSULA_TOML)
        self.store = f"file://{self.work / 'store'}"
        self.env = {k: v for k, v in os.environ.items() if k != "SNAPDIR_STORE"}
        self.results: dict[str, object] = {}

    def ours_run(self, *cmd: str) -> list[str]:
        return [self.ours, "run", "--store", self.store, "--no-git", "--", *cmd]

    def capsula_run(self, *cmd: str) -> list[str]:
        assert self.capsula is not None
        return [self.capsula, "run", "--vault-dir", str(self.work / "vault"), "--", *cmd]

    def median_of(self, argv: Sequence[str]) -> tuple[float, list[float]]:
        times = []
        for _ in range(self.rounds):
            t, status, _ = timed(argv, self.proj, self.env)
            if status != 0:
                raise RuntimeError(f"{argv[0]} exited {status}")
            times.append(t)
        return statistics.median(times), times

    def run(self) -> None:
        true = shutil.which("true") or "true"
        self.log(f"runs: overhead, {self.rounds} rounds each")
        self.results["true"] = self.median_of([true])[0]
        timed(self.ours_run(true), self.proj, self.env)  # warm: byte-compile, first store
        self.results["ours"] = self.median_of(self.ours_run(true))[0]
        # what any snapdir command pays before doing anything: the interpreter and the CLI
        self.results["start"] = self.median_of([self.ours, "--version"])[0]
        if self.capsula:
            timed(self.capsula_run(true), self.proj, self.env)
            self.results["capsula"] = self.median_of(self.capsula_run(true))[0]
        self.log("runs: first output byte")
        lat = [first_byte(self.ours_run(sys.executable, "-c", FIRST_LINE), self.proj, self.env)
               for _ in range(min(self.rounds, 10))]  # fmt: skip
        self.results["first_byte"] = [x for x in lat if x is not None]
        if self.capsula:
            cap = [
                first_byte(self.capsula_run(sys.executable, "-c", FIRST_LINE), self.proj, self.env)
                for _ in range(min(self.rounds, 3))
            ]
            self.results["capsula_first_byte"] = [x for x in cap if x is not None]
        self.log(f"runs: {self.size >> 20} MiB of stdout")
        t, status, rss = timed(self.ours_run(*text_output(self.size)), self.proj, self.env)
        if status != 0:
            raise RuntimeError(f"snapdir run of a large output exited {status}")
        self.results["big"] = (t, rss)
        if self.capsula:
            csize = min(self.size, CAPSULA_MAX_BYTES)
            t, status, rss = timed(self.capsula_run(*text_output(csize)), self.proj, self.env)
            self.results["capsula_big"] = (t, rss, csize, status)

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def render(r: Runs, machine: list[tuple[str, str]], cmd: str, version: str, cap_note: str,
           started: dt.datetime, took: float) -> str:  # fmt: skip
    res = r.results
    base = float(res["true"])  # type: ignore[arg-type]
    ours = float(res["ours"])  # type: ignore[arg-type]
    lines = [
        "# Runs: what recording a command costs",
        "",
        f"Made {started:%Y-%m-%d %H:%M} UTC in {fmt_s(took)} s by `{cmd}` ({version}).",
        "",
        md_table(["machine", ""], machine),
        "",
        f"## Overhead over `true` (median of {r.rounds})",
        "",
    ]
    rows = [
        ["`true`", ms(base), "", ""],
        ["`snapdir run --store file://… --no-git -- true`", ms(ours), ms(ours - base),
         "yes" if ours - base <= OVERHEAD_TARGET_S else "NO"],
    ]  # fmt: skip
    start = float(res["start"])  # type: ignore[arg-type]
    rows.append(["`snapdir --version` (the CLI's start alone)", ms(start), ms(start - base), ""])
    cap = res.get("capsula")
    if cap is not None:
        c = float(cap)  # type: ignore[arg-type]
        rows.append(["`capsula run -- true` (Capsula 0.8)", ms(c), ms(c - base), ""])
    else:
        rows.append(["Capsula 0.8", cap_note, "", ""])
    lines += [md_table(["command", "median", "over `true`", "≤ 150 ms"], rows, "lrrl"), ""]
    if cap is not None:
        better = "yes" if ours < float(cap) else "NO"  # type: ignore[arg-type]
        lines += [f"snapdir adds less than Capsula: **{better}**.", ""]
    fb: list[float] = res["first_byte"]  # type: ignore[assignment]
    lines += ["## First output byte (child writes → snapdir's stdout)", ""]
    frows = [["snapdir run", ms(statistics.median(fb)), ms(max(fb)), str(len(fb)),
              "yes" if max(fb) <= FIRST_BYTE_TARGET_S else "NO"]]  # fmt: skip
    cfb: list[float] | None = res.get("capsula_first_byte")  # type: ignore[assignment]
    if cfb:
        frows.append(["capsula run", ms(statistics.median(cfb)), ms(max(cfb)), str(len(cfb)),
                      "(output shown when the command ends)"])  # fmt: skip
    lines += [md_table(["tool", "median", "max", "runs", "≤ 50 ms"], frows, "lrrrl"), ""]
    t, rss = res["big"]  # type: ignore[misc]
    lines += [f"## Large output: {r.size >> 20} MiB of child stdout", ""]
    brows = [["snapdir run", f"{r.size >> 20} MiB", fmt_s(t) + " s", f"{rss / 1e6:.1f} MB",
              "yes" if rss <= RSS_TARGET else "NO"]]  # fmt: skip
    cb = res.get("capsula_big")
    if cb is not None:
        ct, crss, csize, cstatus = cb  # type: ignore[misc]
        note = "" if cstatus == 0 else f"(exit {cstatus})"
        brows.append(["capsula run", f"{csize >> 20} MiB", fmt_s(ct) + " s",
                      f"{crss / 1e6:.1f} MB", note])  # fmt: skip
    lines += [md_table(["tool", "output", "wall", "peak RSS", "≤ 64 MB"], brows, "llrrl"), ""]
    lines += [
        "Peak RSS is `wait4`'s: the largest of the tool and its children (`sh`, `yes`, `head`: a "
        "few MB each), and never less than the harness's own RSS when it started the tool "
        "(Linux carries a parent's high-water mark into its child).",
        "",
    ]
    return "\n".join(lines)


def run_area(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[str]:
    """Run the area as the options say, write its report; returns the problems found."""
    ours, note = find_ours(args.snapdir)
    if ours is None:
        return [f"runs: {note}"]
    capsula, cap_note = find_capsula(args.capsula)
    if capsula is None:
        log(f"runs: Capsula {cap_note}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.workdir)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    size = args.runs_bytes if args.runs_bytes else ((64 << 20) if args.quick else (1 << 30))
    rounds = 5 if args.quick else 20
    r = Runs(ours, capsula, rounds, size, args.workdir, log)
    try:
        r.run()
    except RuntimeError as exc:
        return [f"runs: {exc}"]
    finally:
        r.cleanup()
    version = tool_version([ours, "--version"])
    report = _without_local_paths(
        render(r, machine, command_line(), version, cap_note, started, time.perf_counter() - t0)
    )
    print("\n" + report)
    out = args.runs_out or (
        args.workdir / "runs-quick.md"
        if args.quick
        else REPO / "docs" / "benchmarks-extra" / "runs.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    log(f"report written to {out}")
    return []


def add_args(p: argparse.ArgumentParser) -> None:
    """This area's options (the entry's parser and this module's own)."""
    p.add_argument(
        "--capsula",
        default=None,
        metavar="PATH",
        help="runs: Capsula 0.8's venv or `capsula` executable (else not measured)",
    )
    p.add_argument(
        "--runs-bytes",
        type=int,
        default=None,
        metavar="N",
        help="runs: bytes of child stdout for the large-output row (default 1 GiB; quick 64 MiB)",
    )
    p.add_argument("--runs-out", type=Path, default=None,
                   help="runs report (default docs/benchmarks-extra/runs.md; with --quick "
                   "<workdir>/runs-quick.md)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the runs area alone")
    p.add_argument("--snapdir", default="snapdir")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "snapdir-bench")
    add_args(p)
    args = p.parse_args(argv)
    args.workdir = args.workdir.resolve()
    problems = run_area(args)
    for m in problems:
        print(f"ERROR: {m}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
