#!/usr/bin/env python3
"""Benchmark suite for snapdir: our CLI against the limits and the peers, in one run.

Limits: a bare stat walk (`find -printf`), b3sum (hashing), `cp -r` (local copy).  Peers:
tar (archive), rclone (local copy/sync, and S3), restic (backup repository), snapdir 1.12.
Operations: id, no-op id, no-op push, push to an empty store, pull to an empty dir,
incremental pull (1 % changed), verify; S3 push/pull against SeaweedFS on loopback.
Standard library only (the s3-* operations also need boto3 and SeaweedFS: see s3bench.py).
See benches/README.md for what is measured and how.

This is the one entry point of the areas, each in its own module:

    bench_id.py         id: the stat walk, `id`, the no-op id
    bench_transfer.py   transfer: copy, push, pull, incremental pull, verify (`file://`)
    bench_s3.py         s3: push and pull on SeaweedFS (server, counter, rclone: s3bench.py)
    bench_lifecycle.py  lifecycle: `ls` / `forget` on a store of 10,000 journalled snapshots
    bench_memory.py     memory: peak RSS per manifest entry at 1 M and 5 M entries (memgen.py)
    bench_runs.py       runs: `snapdir run` overhead, first output byte, 1 GiB of output; Capsula
    bench_recording.py  recording: record / replay against epuplayer ($EPUPLAYER_PYTHON)
    bench_names.py      names: `resolve` of a range among 500 versions, file:// and S3
    benchcore.py        trees, the measuring launcher, tools, operations, shared checks
    benchrun.py         the run of the tree areas, tables, report, self-test, options

    python benches/bench.py                      # everything (make bench) -> docs/benchmarks.md
    python benches/bench.py --quick --self-test  # tiny trees, 1 round (make bench-quick)
    python benches/bench.py --trees mixed --ops noop-id,walk --repeat 3
    python benches/bench.py --areas id,s3        # the operations of some areas
    python benches/bench.py --areas lifecycle    # -> docs/benchmarks-extra/lifecycle.md
    python benches/bench.py --areas memory       # -> docs/benchmarks-extra/memory.md
    python benches/bench.py --areas runs --capsula VENV   # -> docs/benchmarks-extra/runs.md
    python benches/bench.py --areas recording    # -> docs/benchmarks-extra/recording.md
    python benches/bench.py --areas names        # -> docs/benchmarks-extra/names.md

The script never fails because something is slow: it exits non-zero only when a
tool that is present is broken (a failed run, bad output, or - for our snapdir -
an unclean exit), or when --self-test finds a bug in the harness itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence

import bench_lifecycle
import bench_memory
import bench_names
import bench_recording
import bench_runs
from benchcore import (
    FULL_RECIPES,
    QUICK_RECIPES,
    _without_local_paths,
)
from benchrun import (
    OPERATIONS,
    Bench,
    command_line,
    machine_info,
    parse_args,
    render_report,
    resolve_tools,
    self_test,
)
from benchtrees import (
    ensure_tree,
)

# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    # No core files from crashing children (snapdir 1.12 crashes at exit): they would slow the
    # next run and litter the working directory.
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    # SIGTERM unwinds like Ctrl-C, so `finally` blocks stop SeaweedFS and the measured child.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    failed_self_test = False
    if args.self_test or args.self_test_only:
        failed_self_test = bool(self_test())
        failed_self_test = bool(bench_lifecycle.self_test()) or failed_self_test
        if args.self_test_only:
            return 1 if failed_self_test else 0

    problems = run_trees(args, started, t0) if args.op_names else []
    if args.lifecycle:
        problems += bench_lifecycle.run_area(args)
    if args.memory:
        problems += bench_memory.run_area(args)
    if args.runs:
        problems += bench_runs.run_area(args)
    if args.recording:
        problems += bench_recording.run_area(args)
    if args.names:
        problems += bench_names.run_area(args)
    for msg in problems:
        print(f"ERROR: {msg}", file=sys.stderr)
    if failed_self_test:
        print("ERROR: the self-test failed", file=sys.stderr)
    return 1 if problems or failed_self_test else 0


def run_trees(args: argparse.Namespace, started: dt.datetime, t0: float) -> list[str]:
    """The tree areas (id, transfer, s3): every operation of --ops on every tree, one report."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.workdir)  # before we load the machine ourselves
    recipes = QUICK_RECIPES if args.quick else FULL_RECIPES
    trees_dir = args.workdir / "trees"
    trees = [ensure_tree(recipes[k], trees_dir) for k in args.tree_kinds]
    by_kind = {t.recipe.kind: t for t in trees}
    exit_tree = by_kind.get("mixed") or (
        ensure_tree(recipes["mixed"], trees_dir) if args.exit_runs > 0 else None
    )

    tools = resolve_tools(args, print)
    ops = [op for name in args.op_names for op in OPERATIONS if op.name == name]
    bench = Bench(args, tools, trees, ops, exit_tree)
    bench.run()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine.insert(
        next(i for i, (k, _v) in enumerate(machine) if k == "load average at start") + 1,
        ("load average at end", f"{load} (1, 5, 15 min; counts the benchmark's own threads)"),
    )

    report = _without_local_paths(
        render_report(bench, machine, command_line(), started, time.perf_counter() - t0)
    )
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"report written to {args.out}")
    return bench.problems()


if __name__ == "__main__":
    sys.exit(main())
