"""Area `memory`: peak resident memory per manifest entry on snapshots of millions of entries.

Target (issue #13): at most 200 bytes per entry for `size`, `verify`, `diff`, `sync`, `pull`
and the no-op `id` / `push`, at 5,000,000 entries. Per entry is

    (peak RSS of the command - peak RSS of `snapdir version`) / entries

(`diff` compares two snapshots of that many entries each and is divided by the entries of
both, like the others by the entries the command holds). Peak RSS is ru_maxrss of the
command, measured by the launcher of benchcore.measure.

The store-side operations read a synthetic snapshot written straight into a `file://` store
(benches/memgen.py: a valid manifest whose files share four contents, 1,000 files per
directory); `pull` materialises it into a fresh directory, and the no-op `id` / `push` then
walk that tree (second run of each, with the stat cache of the first). The tree operations
run only up to --memory-tree-entries (default 1,000,000: a 5,000,000-file tree takes 5 M
inodes and a quarter of an hour to create here).

Peers on the same snapshot and tree: snapdir 1.12 (`verify`, `pull`, no-op `id` and `push`;
it has no size or diff) and restic (`check` ~ verify, `ls` ~ size, `restore` ~ pull, a second
`backup` ~ no-op push) into a repository of the pulled tree. A peer that fails or times out
is reported as such, never as a number.

    python benches/bench.py --areas memory --quick   # 20,000 entries, a minute
    python benches/bench.py --areas memory   # 1 M and 5 M -> docs/benchmarks-extra/memory.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import memgen
from benchcore import (
    OLD_ID,
    OLD_PULL,
    OLD_PUSH,
    OLD_VERIFY,
    REPO,
    RESTIC_PASSWORD,
    Completed,
    _without_local_paths,
    measure,
)
from benchrun import command_line, ensure_old_venv, find_ours, machine_info, md_table

TARGET_BYTES_PER_ENTRY = 200
OPS = ("size", "verify", "diff", "sync", "pull", "noop-id", "noop-push")
TREE_OPS = ("pull", "noop-id", "noop-push")


@dataclass
class Row:
    entries: int
    op: str
    tool: str
    peak_kib: int = 0
    base_kib: int = 0
    wall_s: float = 0.0
    failure: str = ""
    held: int = 0  # entries the command holds (both snapshots for diff)
    #: Stopped at the timeout: ``peak_kib`` is its peak so far, a lower bound.
    stopped: bool = False

    @property
    def per_entry(self) -> float | None:
        """Bytes an entry; for a stopped run, at least this much (its peak so far)."""
        if (self.failure and not self.stopped) or not self.held or not self.peak_kib:
            return None
        return max(0, self.peak_kib - self.base_kib) * 1024 / self.held

    def judge(self, run: Completed, timeout: float) -> None:
        """Record how ``run`` ended: stopped at ``timeout`` (its peak a lower bound), failed,
        or fine."""
        if run.timed_out and run.maxrss_kib:
            self.stopped = True
            self.failure = f"stopped after {timeout:.0f} s (its peak so far is a lower bound)"
        elif run.timed_out or run.returncode != 0:
            self.failure = f"{run.exit_text}: {run.stderr.strip()[-200:]}"


@dataclass
class MemoryBench:
    ours: str
    old_python: str | None
    restic: str | None
    sizes: Sequence[int]
    tree_max: int
    workdir: Path
    timeout: float
    log: Callable[[str], None] = print
    rows: list[Row] = field(default_factory=list)

    def run(self) -> None:
        self.base = {
            "snapdir": measure([self.ours, "version"], timeout=60).maxrss_kib,
            "snapdir-1.12": (
                measure([self.old_python, "-c", "import snapdir"], timeout=120).maxrss_kib
                if self.old_python
                else 0
            ),
            "restic": measure([self.restic, "version"], timeout=60).maxrss_kib
            if self.restic
            else 0,
        }
        for n in self.sizes:
            work = self.workdir / f"memory-{n}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                self._size(n, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _run(
        self, n: int, op: str, tool: str, argv: list[str], held: int, env: dict[str, str]
    ) -> Completed:
        self.log(f"memory: {n:,} entries: {op} ({tool}) ...")
        t0 = time.perf_counter()
        run = measure(argv, timeout=self.timeout, env=env)
        row = Row(n, op, tool, run.maxrss_kib, self.base[tool], run.wall_s, held=held)
        row.judge(run, self.timeout)
        self.rows.append(row)
        self.log(
            f"  {row.peak_kib / 1024:.0f} MiB peak, "
            + (f"{row.per_entry:.0f} B/entry" if row.per_entry is not None else "")
            + (f" {row.failure}" if row.failure else "")
            + f" ({time.perf_counter() - t0:.1f} s)"
        )
        return run

    def _size(self, n: int, work: Path) -> None:
        store = work / "store"
        sid, entries = memgen.write_store(store, n)
        sid2, _ = memgen.write_store(store, n, variant=1)
        uri = f"file://{store}"
        env = {**os.environ, "SNAPDIR_CACHE_DIR": str(work / "cache"), "SNAPDIR_NO_PROGRESS": "1"}
        ours = self.ours
        self._run(n, "size", "snapdir", [ours, "size", "--store", uri, "--id", sid], entries, env)
        self._run(
            n, "verify", "snapdir", [ours, "verify", "--store", uri, "--id", sid], entries, env
        )
        diff = [ours, "diff", "--from", f"{uri}@{sid}", "--to", f"{uri}@{sid2}"]
        self._run(n, "diff", "snapdir", diff, 2 * entries, env)
        sync = [ours, "sync", sid, "--from", uri, "--to", f"file://{work / 'copy'}"]
        self._run(n, "sync", "snapdir", sync, entries, env)
        shutil.rmtree(work / "copy", ignore_errors=True)
        if self.old_python:
            old_verify = [self.old_python, "-c", OLD_VERIFY, sid, uri]
            self._run(n, "verify", "snapdir-1.12", old_verify, entries, env)
        if n > self.tree_max:
            return
        tree = work / "tree"
        pull = [ours, "pull", "--store", uri, sid, str(tree)]
        if self._run(n, "pull", "snapdir", pull, entries, env).returncode != 0:
            return
        # The stat cache records no file changed less than 2 s before a walk starts (racy
        # timestamps, docs/statcache.md): wait, or the walk that fills it leaves out the
        # files just pulled and the "no-op" run reads them all again.
        time.sleep(3)
        for op, argv in (
            ("noop-id", [ours, "id", str(tree)]),
            ("noop-push", [ours, "push", "--store", uri, str(tree)]),
        ):
            measure(argv, timeout=self.timeout, env=env)  # fills the stat cache
            self._run(n, op, "snapdir", argv, entries, env)
        if self.old_python:
            old = self.old_python
            self._run(n, "noop-id", "snapdir-1.12", [old, "-c", OLD_ID, str(tree)], entries, env)
            self._run(
                n, "noop-push", "snapdir-1.12", [old, "-c", OLD_PUSH, str(tree), uri], entries, env
            )
            out = work / "old-pulled"
            self._run(
                n, "pull", "snapdir-1.12", [old, "-c", OLD_PULL, sid, uri, str(out)], entries, env
            )
            shutil.rmtree(out, ignore_errors=True)
        if self.restic:
            self._restic(n, work, tree, entries, env)

    def _restic(self, n: int, work: Path, tree: Path, entries: int, env: dict[str, str]) -> None:
        assert self.restic is not None
        repo = work / "restic"
        renv = {**env, "RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_REPOSITORY": str(repo)}
        r = self.restic
        if measure([r, "init"], timeout=600, env=renv).returncode != 0:
            self.rows.append(Row(n, "noop-push", "restic", failure="restic init failed"))
            return
        backup = [r, "backup", "--quiet", "."]
        first = measure(backup, timeout=self.timeout, env=renv, cwd=tree)
        if first.returncode != 0:
            self.rows.append(Row(n, "noop-push", "restic", failure=f"backup: {first.exit_text}"))
            return
        self._run_in(n, "noop-push", backup, entries, renv, tree)
        self._run_in(n, "size", [r, "ls", "--long", "latest"], entries, renv, work)
        self._run_in(n, "verify", [r, "check", "--read-data"], entries, renv, work)
        out = work / "restic-restored"
        self._run_in(n, "pull", [r, "restore", "latest", "--target", str(out)], entries, renv, work)
        shutil.rmtree(out, ignore_errors=True)

    def _run_in(
        self, n: int, op: str, argv: list[str], held: int, env: dict[str, str], cwd: Path
    ) -> None:
        self.log(f"memory: {n:,} entries: {op} (restic) ...")
        run = measure([*argv], timeout=self.timeout, env=env, cwd=cwd)
        row = Row(n, op, "restic", run.maxrss_kib, self.base["restic"], run.wall_s, held=held)
        row.judge(run, self.timeout)
        self.rows.append(row)

    def problems(self) -> list[str]:
        return [
            f"memory: {r.op} at {r.entries:,} entries: {r.failure}"
            for r in self.rows
            if r.tool == "snapdir" and r.failure
        ]


def _cell(row: Row | None) -> str:
    if row is None:
        return "-"
    if row.per_entry is None:
        return "failed"
    if row.stopped:
        peak = row.peak_kib / 1024
        return f">= {row.per_entry:.0f} B (>= {peak:.0f} MiB, stopped at {row.wall_s:.0f} s)"
    return f"{row.per_entry:.0f} B ({row.peak_kib / 1024:.0f} MiB, {row.wall_s:.1f} s)"


def render(
    mb: MemoryBench, machine: list[tuple[str, str]], version: str, started: dt.datetime
) -> str:
    by = {(r.entries, r.op, r.tool): r for r in mb.rows}
    lines = [
        "# Memory per manifest entry",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, {version}. Command: `{command_line()}`",
        "",
        "Peak RSS per entry = (peak RSS - peak RSS of the tool doing nothing) / entries held "
        f"(both snapshots for diff). Target for snapdir: at most {TARGET_BYTES_PER_ENTRY} B.",
        "Cells: bytes per entry (peak RSS, wall time). Ratio: snapdir 1.12 or restic per entry "
        "over ours. `>=`: the run was stopped at the timeout (`--timeout`), and its peak so "
        "far is a lower bound.",
        "",
    ]
    for n in mb.sizes:
        lines += [f"## {n:,} entries", ""]
        rows = []
        for op in OPS:
            ours, old, restic = (by.get((n, op, t)) for t in ("snapdir", "snapdir-1.12", "restic"))
            if ours is None and old is None and restic is None:
                continue
            verdict = ""
            if ours is not None and ours.per_entry is not None:
                verdict = "ok" if ours.per_entry <= TARGET_BYTES_PER_ENTRY else "over"

            def ratio(peer: Row | None, ours: Row | None = ours) -> str:
                if peer is None or ours is None or not peer.per_entry or not ours.per_entry:
                    return ""
                if ours.stopped:
                    return ""
                at_least = ">= " if peer.stopped else ""
                return f"{at_least}{peer.per_entry / ours.per_entry:.1f}x"

            rows.append(
                [op, _cell(ours), verdict, _cell(old), ratio(old), _cell(restic), ratio(restic)]
            )
        header = ["operation", "snapdir", "target", "snapdir 1.12", "ratio", "restic", "ratio"]
        lines += [md_table(header, rows, "lllllll"), ""]
    failures = [r for r in mb.rows if r.failure]
    if failures:
        lines += ["## Failures", ""]
        lines += [f"- {r.tool} {r.op} at {r.entries:,}: {r.failure}" for r in failures]
        lines.append("")
    lines += ["## Machine", "", md_table(["", ""], machine), ""]
    return _without_local_paths("\n".join(lines))


def run_area(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[str]:
    """Run the area as the options say, write its report; returns the problems found."""
    ours, note = find_ours(args.snapdir)
    if ours is None:
        return [f"memory: {note}"]
    old_python = None
    if not args.memory_no_peers:
        venv = (
            Path(args.snapdir112_venv) if args.snapdir112_venv else args.workdir / "venv-snapdir112"
        )
        old_python, why = ensure_old_venv(venv, log)
        if old_python is None:
            log(f"memory: snapdir 1.12 left out: {why}")
    restic = None if args.memory_no_peers else shutil.which("restic")
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.workdir)
    started = dt.datetime.now(dt.timezone.utc)
    mb = MemoryBench(
        ours=ours,
        old_python=old_python,
        restic=restic,
        sizes=args.memory_entries,
        tree_max=args.memory_tree_entries,
        workdir=args.workdir,
        timeout=args.timeout,
        log=log,
    )
    mb.run()
    from benchrun import tool_version

    report = render(mb, machine, tool_version([ours, "--version"]), started)
    print("\n" + report)
    args.memory_out.parent.mkdir(parents=True, exist_ok=True)
    args.memory_out.write_text(report)
    print(f"memory report written to {args.memory_out}")
    return mb.problems()


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory-entries",
        default=None,
        help="memory: comma-separated snapshot sizes in entries (default 1000000,5000000; "
        "quick 20000)",
    )
    p.add_argument(
        "--memory-tree-entries",
        type=int,
        default=1_000_000,
        help="memory: largest size at which pull and the no-op id/push run (they create "
        "a real tree of that many files; default 1000000)",
    )
    p.add_argument(
        "--memory-no-peers", action="store_true", help="memory: no snapdir 1.12, no restic"
    )
    p.add_argument(
        "--memory-out",
        type=Path,
        default=None,
        help="memory report (default docs/benchmarks-extra/memory.md; with --quick "
        "<workdir>/memory-quick.md)",
    )


def finish_options(args: argparse.Namespace) -> None:
    raw = args.memory_entries or ("20000" if args.quick else "1000000,5000000")
    args.memory_entries = [int(x.replace("_", "")) for x in raw.split(",") if x.strip()]
    if args.memory_out is None:
        args.memory_out = (
            args.workdir / "memory-quick.md"
            if args.quick
            else REPO / "docs" / "benchmarks-extra" / "memory.md"
        )
