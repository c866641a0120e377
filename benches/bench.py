#!/usr/bin/env python3
"""Benchmark suite for snapdir: our CLI against b3sum, cp -r and snapdir 1.12.

Standard library only.  See benches/README.md for what is measured and how.

    python benches/bench.py [--quick] [--trees mixed,small,huge] [--repeat N]
                            [--ops id|all|id,push,pull,verify] [--out docs/benchmarks.md]

The script never fails because something is slow: it exits non-zero only when a
tool that is present is broken (a failed run, bad output, or - for our snapdir -
an unclean exit), or when --self-test finds a bug in the harness itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 1  # bump when the way trees are generated changes
SEED = "snapdir-bench"
KIB = 1024
MIB = 1024 * 1024
ID_RE = re.compile(r"\b[0-9a-f]{64}\b")

# Tool keys.  Order is the column/row order in the report.
OURS = "snapdir"
B3SUM = "b3sum"
OLD = "snapdir-1.12"
CP = "cp"
ALL_TOOLS = (OURS, B3SUM, OLD, CP)
OLD_VERSION = "1.12.0"


# --------------------------------------------------------------------------- trees


@dataclass(frozen=True)
class FileGroup:
    """``count`` files of ``min_size``..``max_size`` bytes spread over ``dirs`` directories."""

    name: str
    count: int
    dirs: int
    min_size: int
    max_size: int

    def describe(self) -> str:
        if self.min_size == self.max_size:
            size = human_size(self.min_size)
        else:
            size = f"{self.min_size}-{self.max_size} B"
        return f"{self.count:,} x {size} in {self.dirs} dir{'s' if self.dirs > 1 else ''}"


@dataclass(frozen=True)
class Recipe:
    name: str  # directory name under <workdir>/trees
    kind: str  # mixed | small | huge: what the targets refer to
    groups: tuple[FileGroup, ...]
    seed: str = SEED

    def stamp(self) -> dict[str, object]:
        return {
            "generator": GENERATOR_VERSION,
            "name": self.name,
            "seed": self.seed,
            "groups": [vars(g) for g in self.groups],
        }

    def describe(self) -> str:
        return " + ".join(g.describe() for g in self.groups)

    @property
    def file_count(self) -> int:
        return sum(g.count for g in self.groups)


FULL_RECIPES: dict[str, Recipe] = {
    "mixed": Recipe(
        "mixed",
        "mixed",
        (
            FileGroup("small", 2_000, 20, 4 * KIB, 4 * KIB),
            FileGroup("large", 20, 1, 20 * MIB, 20 * MIB),
        ),
    ),
    "small": Recipe("small", "small", (FileGroup("small", 20_000, 100, 4 * KIB, 4 * KIB),)),
    "huge": Recipe("huge-count", "huge", (FileGroup("tiny", 200_000, 200, 0, 64),)),
}
QUICK_RECIPES: dict[str, Recipe] = {
    "mixed": Recipe(
        "mixed-quick",
        "mixed",
        (FileGroup("small", 200, 5, 4 * KIB, 4 * KIB), FileGroup("large", 4, 1, 2 * MIB, 2 * MIB)),
    ),
    "small": Recipe("small-quick", "small", (FileGroup("small", 2_000, 20, 4 * KIB, 4 * KIB),)),
    "huge": Recipe("huge-count-quick", "huge", (FileGroup("tiny", 5_000, 10, 0, 64),)),
}
TREE_ALIASES = {"mixed": "mixed", "small": "small", "huge": "huge", "huge-count": "huge"}


@dataclass(frozen=True)
class Tree:
    recipe: Recipe
    path: Path
    files: int
    total_bytes: int

    @property
    def name(self) -> str:
        return self.recipe.name


def _stream(key: str, length: int) -> bytes:
    """Deterministic pseudo-random bytes: SHAKE-256 is fully specified, so never changes."""
    return hashlib.shake_256(f"{SEED}/{key}".encode()).digest(length) if length else b""


def _write_group(root: Path, seed: str, group: FileGroup) -> int:
    """Write one group of files; returns the number of bytes written."""
    base = root / group.name
    dirs = [base / f"d{d:03d}" for d in range(group.dirs)]
    for d in dirs:
        d.mkdir(parents=True)
    span = group.max_size - group.min_size + 1
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    written = 0
    # Batches bound memory: at most ~64 MiB of content is held at once.
    per_batch = max(1, min(group.count, (64 * MIB) // max(group.max_size, 1)))
    for start in range(0, group.count, per_batch):
        stop = min(group.count, start + per_batch)
        key = f"{seed}/{group.name}/{start}"
        if span == 1:
            sizes = [group.max_size] * (stop - start)
        else:
            sizes = [group.min_size + b % span for b in _stream(key + "/sizes", stop - start)]
        data = memoryview(_stream(key, sum(sizes)))
        offset = 0
        for i, size in zip(range(start, stop), sizes, strict=True):
            fd = os.open(dirs[i % group.dirs] / f"f{i:06d}.bin", flags, 0o644)
            try:
                chunk = data[offset : offset + size]
                while chunk:
                    n = os.write(fd, chunk)
                    chunk = chunk[n:]
            finally:
                os.close(fd)
            offset += size
        written += offset
    return written


def ensure_tree(recipe: Recipe, trees_dir: Path, log: Callable[[str], None] = print) -> Tree:
    """Generate the tree for ``recipe`` unless a tree with the same recipe stamp exists."""
    path = trees_dir / recipe.name
    stamp_path = trees_dir / f"{recipe.name}.recipe.json"  # beside the tree: not hashed
    wanted = recipe.stamp()
    if stamp_path.is_file() and path.is_dir():
        try:
            stamp = json.loads(stamp_path.read_text())
        except ValueError:
            stamp = {}
        if stamp.get("recipe") == wanted:
            log(f"tree {recipe.name}: reusing {path} (recipe stamp matches)")
            return Tree(recipe, path, int(stamp["files"]), int(stamp["bytes"]))
    log(f"tree {recipe.name}: generating {recipe.describe()} ...")
    stamp_path.unlink(missing_ok=True)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    old_umask = os.umask(0o022)
    try:
        total = sum(_write_group(path, recipe.seed, g) for g in recipe.groups)
    finally:
        os.umask(old_umask)
    os.sync()  # do not let write-back of the new tree run into the first measurement
    stamp_path.write_text(
        json.dumps({"recipe": wanted, "files": recipe.file_count, "bytes": total}, indent=1)
    )
    log(
        f"tree {recipe.name}: {recipe.file_count:,} files, {human_size(total)} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return Tree(recipe, path, recipe.file_count, total)


def scan_tree(path: Path) -> tuple[int, int]:
    """(regular files, bytes) under ``path``."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            size += st.st_size
    return files, size


def tree_digest(path: Path) -> str:
    """Digest of relative paths and contents (self-test: determinism of the generator)."""
    h = hashlib.blake2b()
    for dirpath, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            p = Path(dirpath, name)
            h.update(str(p.relative_to(path)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Completed:
    """One finished child process."""

    wall_s: float
    maxrss_kib: int  # ru_maxrss of the child (max over it and its waited-for descendants)
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def exit_text(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.returncode < 0:
            try:
                return f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"killed by signal {-self.returncode}"
        return f"exit {self.returncode}"


# The measured command is started by this tiny launcher rather than by the harness itself.
# Linux carries the memory high-water mark of the process image replaced by execve() into the
# new program's ru_maxrss (and a fork copies the parent's resident anonymous pages), so a child
# forked straight from this ~30 MB harness would never report less than ~30 MB.  The launcher is
# a bare `python -S -I` (a few MB); it forks and execs the command, times fork..wait4 itself (so
# its own start-up is not timed) and writes "wall maxrss_kib wait_status" to a file.  Since
# ru_maxrss is a maximum, every peak above the launcher's floor is exact; see rss_floor().
LAUNCHER = """\
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as exc:
        os.write(2, f"launcher: cannot run {sys.argv[2]!r}: {exc}\\n".encode())
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    f.write(f"{wall!r} {usage.ru_maxrss} {status}")
"""


def measure(argv: Sequence[str], *, timeout: float, cwd: Path | None = None) -> Completed:
    """Run ``argv``: wall time of fork..wait4, peak RSS from os.wait4's rusage of the child."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="snapdir-bench-") as tmp,
    ):
        result = Path(tmp, "result")
        timed_out = threading.Event()
        lock = threading.Lock()
        reaped = False
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", LAUNCHER, str(result), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            start_new_session=True,  # the launcher and the command: one process group
        )

        def kill() -> None:
            with lock:
                if not reaped:  # a zombie keeps its pid until reaped: no pid reuse race
                    timed_out.set()
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _pid, launcher_status, _usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: do not leave the command running in its own session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise
        outer_wall = time.perf_counter() - t0
        with lock:
            reaped = True
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(launcher_status)  # Popen: already reaped
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        try:
            wall_text, rss_text, status_text = result.read_text().split()
            wall, maxrss, code = (
                float(wall_text),
                int(rss_text),
                os.waitstatus_to_exitcode(int(status_text)),
            )
        except (OSError, ValueError):  # killed (timeout) or the launcher itself failed
            wall, maxrss, code = outer_wall, 0, proc.returncode or -signal.SIGKILL
        return Completed(wall, maxrss, code, stdout, stderr, timed_out.is_set())


def rss_floor() -> int:
    """ru_maxrss (KiB) that `true` shows: the smallest peak RSS this harness can report."""
    return measure(["true"], timeout=60).maxrss_kib


# --------------------------------------------------------------------------- tools and operations


@dataclass(frozen=True)
class Tool:
    key: str
    label: str
    available: bool
    note: str = ""  # why it is missing, or what it is
    version: str = ""
    exe: str = ""  # binary or interpreter used to run it
    tolerate_unclean_exit: bool = False  # snapdir 1.12: crashes at interpreter exit


@dataclass
class Job:
    """Everything a command builder or check needs for one run."""

    tree: Tree
    scratch: Path  # fresh and empty for every run, removed afterwards (not timed)
    tools: dict[str, Tool]
    threads: int
    store: Path | None = None  # prepared store of this tool (pull, verify)
    snapshot_id: str | None = None  # id of the tree in ``store``

    def exe(self, key: str) -> str:
        return self.tools[key].exe


Check = Callable[[Job, Completed, bool], str | None]  # (job, run, thorough) -> error or None


def _no_check(_job: Job, _run: Completed, _thorough: bool) -> None:
    return None


def _no_setup(_job: Job) -> None:
    return None


@dataclass(frozen=True)
class Step:
    """How one tool performs one operation."""

    tool: str
    command: Callable[[Job], list[str]]
    setup: Callable[[Job], None] = _no_setup  # runs before the timer starts
    check: Check = _no_check
    needs_store: bool = False  # pull/verify: a store filled by this tool's push (untimed)
    teardown: Callable[[Job], None] = _no_setup  # before the scratch dir is removed


@dataclass(frozen=True)
class Ratio:
    num: str
    den: str


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    steps: tuple[Step, ...]
    ratios: tuple[Ratio, ...]
    notes: str = ""


@dataclass(frozen=True)
class Target:
    op: str
    kind: str  # tree kind (mixed/small/huge) or "*"
    num: str
    den: str | None  # None: an absolute peak-RSS bound on ``num``
    bound: float  # ratio of median times, or bytes for RSS

    def applies(self, op: str, kind: str) -> bool:
        return self.op == op and self.kind in ("*", kind)

    def text(self) -> str:
        if self.den is None:
            return f"<= {self.bound / 1e6:g} MB"
        return f"<= {self.bound:g}x"


TARGETS: tuple[Target, ...] = (
    Target("id", "mixed", OURS, B3SUM, 1.1),
    Target("id", "mixed", OURS, OLD, 0.6),
    Target("id", "small", OURS, B3SUM, 1.0),
    Target("id", "huge", OURS, None, 150e6),
    Target("push", "*", OURS, CP, 1.5),
    Target("push", "*", OURS, OLD, 0.6),
    Target("pull", "*", OURS, CP, 1.5),
)

OLD_ID = "import asyncio,snapdir,sys; print(asyncio.run(snapdir.id(sys.argv[1])), flush=True)"
OLD_PUSH = (
    "import asyncio,snapdir,sys; "
    "print(asyncio.run(snapdir.push(sys.argv[1], snapdir.StoreUri(sys.argv[2]))), flush=True)"
)
OLD_PULL = (
    "import asyncio,snapdir,sys; "
    "asyncio.run(snapdir.pull(snapdir.SnapshotId(sys.argv[1]), snapdir.StoreUri(sys.argv[2]), "
    "sys.argv[3])); print('pulled', flush=True)"
)
OLD_VERIFY = (
    "import asyncio,snapdir,sys; "
    "ok = asyncio.run(snapdir.verify(snapdir.SnapshotId(sys.argv[1]), "
    "snapdir.StoreUri(sys.argv[2]))); print(ok, flush=True); sys.exit(0 if ok else 1)"
)
B3SUM_SH = 'find "$1" -type f -print0 | xargs -0 "$2" --num-threads="$3"'


def uri(path: Path) -> str:
    return path.resolve().as_uri()


def last_id(text: str) -> str | None:
    found = ID_RE.findall(text)
    return found[-1] if found else None


def check_id(job: Job, run: Completed, _thorough: bool) -> str | None:
    got = last_id(run.stdout)
    if got is None:
        return f"no 64-hex snapshot id in output {run.stdout.strip()[-200:]!r}"
    return None


def check_b3sum(job: Job, run: Completed, thorough: bool) -> str | None:
    if thorough:
        lines = sum(1 for line in run.stdout.splitlines() if line.strip())
        if lines != job.tree.files:
            return f"b3sum printed {lines} lines for {job.tree.files} files"
    return None


def check_copy(sub: str) -> Check:
    def check(job: Job, run: Completed, thorough: bool) -> str | None:
        if thorough:
            files, size = scan_tree(job.scratch / sub)
            if (files, size) != (job.tree.files, job.tree.total_bytes):
                return (
                    f"{sub} has {files} files / {size} bytes, "
                    f"tree has {job.tree.files} / {job.tree.total_bytes}"
                )
        return None

    return check


def check_store(job: Job, run: Completed, thorough: bool) -> str | None:
    if thorough and not any((job.scratch / "store").iterdir()):
        return "push left the store empty"
    return None


def check_true(job: Job, run: Completed, _thorough: bool) -> str | None:
    return None if run.stdout.strip().endswith("True") else f"verify said {run.stdout.strip()!r}"


def mkdirs(*names: str) -> Callable[[Job], None]:
    def setup(job: Job) -> None:
        for name in names:
            (job.scratch / name).mkdir()

    return setup


def _ours(job: Job, *args: str) -> list[str]:
    return [job.exe(OURS), *args]


def _old(job: Job, code: str, *args: str) -> list[str]:
    return [job.exe(OLD), "-c", code, *args]


def _b3sum(job: Job, target: Path) -> list[str]:
    return ["sh", "-c", B3SUM_SH, "sh", str(target), job.exe(B3SUM), str(job.threads)]


def _cp(job: Job) -> list[str]:
    return [job.exe(CP), "-r", str(job.tree.path), str(job.scratch / "copy")]


def _sid(job: Job) -> str:
    assert job.snapshot_id is not None
    return job.snapshot_id


def _store(job: Job) -> Path:
    assert job.store is not None
    return job.store


def _push_step_for(tool: str) -> Step:
    for op in OPERATIONS:
        if op.name == "push":
            for step in op.steps:
                if step.tool == tool:
                    return step
    raise KeyError(tool)


STANDARD_RATIOS = (Ratio(OURS, B3SUM), Ratio(OURS, OLD), Ratio(OURS, CP), Ratio(OLD, B3SUM))
TRANSFER_RATIOS = (Ratio(OURS, CP), Ratio(OURS, OLD), Ratio(OLD, CP))

# To add an operation, append an Operation here and name it in OP_GROUPS.
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "id",
        "snapshot id (`snapdir id TREE`)",
        (
            Step(OURS, lambda j: _ours(j, "id", str(j.tree.path)), check=check_id),
            Step(B3SUM, lambda j: _b3sum(j, j.tree.path), check=check_b3sum),
            Step(OLD, lambda j: _old(j, OLD_ID, str(j.tree.path)), check=check_id),
            Step(CP, _cp, check=check_copy("copy")),
        ),
        STANDARD_RATIOS,
        "b3sum is the hashing speed limit we compare against; cp -r is the local-copy limit.",
    ),
    Operation(
        "push",
        "push to an empty `file://` store",
        (
            Step(
                OURS,
                lambda j: _ours(j, "push", str(j.tree.path), "--store", uri(j.scratch / "store")),
                setup=mkdirs("store"),
                check=check_store,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PUSH, str(j.tree.path), uri(j.scratch / "store")),
                setup=mkdirs("store"),
                check=lambda j, r, t: check_id(j, r, t) or check_store(j, r, t),
            ),
            Step(CP, _cp, check=check_copy("copy")),
        ),
        TRANSFER_RATIOS,
        "Each push goes to a fresh empty store directory (created before the timer starts).",
    ),
    Operation(
        "pull",
        "pull into an empty directory",
        (
            Step(
                OURS,
                lambda j: _ours(
                    j, "pull", _sid(j), str(j.scratch / "dest"), "--store", uri(_store(j))
                ),
                setup=mkdirs("dest"),
                check=check_copy("dest"),
                needs_store=True,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PULL, _sid(j), uri(_store(j)), str(j.scratch / "dest")),
                setup=mkdirs("dest"),
                check=check_copy("dest"),
                needs_store=True,
            ),
            Step(CP, _cp, check=check_copy("copy")),
        ),
        TRANSFER_RATIOS,
        "Each tool pulls from a store its own push filled (untimed) into a fresh empty directory; "
        "cp -r copies the tree.",
    ),
    Operation(
        "verify",
        "verify a snapshot in a `file://` store",
        (
            Step(
                OURS,
                lambda j: _ours(j, "verify", "--id", _sid(j), "--store", uri(_store(j))),
                needs_store=True,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_VERIFY, _sid(j), uri(_store(j))),
                check=check_true,
                needs_store=True,
            ),
            Step(B3SUM, lambda j: _b3sum(j, j.tree.path), check=check_b3sum),
            Step(CP, _cp, check=check_copy("copy")),
        ),
        (Ratio(OURS, B3SUM), Ratio(OURS, OLD), Ratio(OURS, CP)),
        "Verify re-reads and re-hashes every object: b3sum over the tree is its hashing limit.",
    ),
)
OP_GROUPS = {"all": ("id", "push", "pull", "verify")}


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

    @property
    def times(self) -> list[float]:
        return [r.wall_s for r in self.runs]

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.runs else None

    @property
    def peak_rss_bytes(self) -> int | None:
        return max(r.maxrss_kib for r in self.runs) * 1024 if self.runs else None


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


def human_size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{int(n)} B"


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


def series_table(
    op: Operation,
    tree: Tree,
    series: dict[str, Series],
    tools: dict[str, Tool],
    rss_floor_kib: int = 0,
) -> str:
    """One row per tool.  Peaks within 5 % of the launcher's floor are shown as "<= floor"."""
    rows = []
    for step in op.steps:
        s = series.get(step.tool)
        label = tools[step.tool].label if step.tool in tools else step.tool
        if s is None or not s.runs:
            why = (s.broken or s.skipped or "no runs") if s else "not run"
            rows.append([label, "-", "-", "-", "-", "0", why])
            continue
        med = s.median
        assert med is not None
        notes = []
        if s.unclean:
            notes.append(f"{s.unclean} unclean exit(s), timing kept")
        if s.failures:
            notes.append(f"{len(s.failures)} failed run(s) dropped")
        if s.broken:
            notes.append(f"BROKEN: {s.broken}")
        rows.append(
            [
                label,
                fmt_s(med),
                f"{fmt_s(min(s.times))}-{fmt_s(max(s.times))}",
                fmt_rate(tree.total_bytes / MIB / med) if med > 0 else "-",
                fmt_rss(s.peak_rss_bytes, rss_floor_kib),
                str(len(s.runs)),
                "; ".join(notes),
            ]
        )
    return md_table(
        ["tool", "median s", "min-max s", "MiB/s", "peak RSS MB", "runs", "notes"], rows, "lrrrrrl"
    )


def ratio_table(op: Operation, tree: Tree, series: dict[str, Series]) -> str:
    rows = []
    seen: set[tuple[str, str | None]] = set()
    targets = [t for t in TARGETS if t.applies(op.name, tree.recipe.kind)]
    for r in op.ratios:
        seen.add((r.num, r.den))
        value = ratio_of(series.get(r.num), series.get(r.den))
        tgt = next((t for t in targets if t.num == r.num and t.den == r.den), None)
        rows.append(
            _ratio_row(
                f"{r.num} / {r.den} (median time)",
                None if value is None else f"{value:.2f}x",
                value,
                tgt,
            )
        )
    for t in targets:
        if (t.num, t.den) in seen:
            continue
        if t.den is None:
            s = series.get(t.num)
            rss = s.peak_rss_bytes if s else None
            rows.append(
                _ratio_row(
                    f"{t.num} peak RSS",
                    None if rss is None else f"{rss / 1e6:.1f} MB",
                    None if rss is None else float(rss),
                    t,
                )
            )
        else:
            value = ratio_of(series.get(t.num), series.get(t.den))
            rows.append(
                _ratio_row(
                    f"{t.num} / {t.den} (median time)",
                    None if value is None else f"{value:.2f}x",
                    value,
                    t,
                )
            )
    return md_table(["comparison", "value", "target", "status"], rows, "lrrl")


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


def ensure_old_venv(venv: Path, log: Callable[[str], None]) -> tuple[str | None, str]:
    """Python of a venv with snapdir==1.12.0, created if missing.  Never imported here."""
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('snapdir'))"
    if python.exists() and tool_version([str(python), "-c", probe]) == OLD_VERSION:
        return str(python), ""
    log(f"creating {venv} with snapdir=={OLD_VERSION} ...")
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"snapdir=={OLD_VERSION}",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return None, (
            f"could not create {venv} with snapdir=={OLD_VERSION}: {str(detail).strip()[-300:]}"
        )
    if tool_version([str(python), "-c", probe]) != OLD_VERSION:
        return None, f"{venv} does not provide snapdir=={OLD_VERSION}"
    return str(python), ""


def resolve_tools(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Tool]:
    wanted = set(args.tools)
    tools: dict[str, Tool] = {}

    if OURS in wanted:
        exe, note = find_ours(args.snapdir)
        if exe:
            ver = tool_version([exe, "--version"])
            tools[OURS] = Tool(OURS, "snapdir (ours)", True, note, ver or "?", exe)
        else:
            tools[OURS] = Tool(OURS, "snapdir (ours)", False, note)
    if B3SUM in wanted:
        exe = shutil.which("b3sum")
        if exe:
            tools[B3SUM] = Tool(B3SUM, "b3sum", True, "", tool_version([exe, "--version"]), exe)
        else:
            tools[B3SUM] = Tool(
                B3SUM,
                "b3sum",
                False,
                "b3sum not found: install it with `apt-get install b3sum` "
                "(Debian/Ubuntu) or `cargo install b3sum`; skipped",
            )
    if OLD in wanted:
        venv = (
            Path(args.snapdir112_venv) if args.snapdir112_venv else args.workdir / "venv-snapdir112"
        )
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
    if CP in wanted:
        exe = shutil.which("cp")
        tools[CP] = Tool(
            CP,
            "cp -r",
            exe is not None,
            "" if exe else "cp not found",
            tool_version([exe, "--version"]) if exe else "",
            exe or "",
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
        self.stores: dict[tuple[str, str], tuple[Path, str] | str] = {}  # or an error
        self.exit_stats: list[ExitStats] = []
        self.warnings: list[str] = []
        self.counter = 0
        self.rss_floor_kib = 0

    # -- helpers
    def log(self, msg: str) -> None:
        print(msg, flush=True)

    def fresh_scratch(self, tag: str) -> Path:
        self.counter += 1
        path = self.scratch_root / f"{self.counter:05d}-{tag}"
        path.mkdir(parents=True)
        return path

    @staticmethod
    def remove(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def job(self, tree: Tree, scratch: Path) -> Job:
        return Job(tree, scratch, self.tools, self.args.threads)

    def prepared_store(self, tree: Tree, tool: str) -> tuple[Path, str] | str:
        """A store filled once by this tool's push (untimed); or an error text."""
        key = (tree.name, tool)
        if key not in self.stores:
            step = _push_step_for(tool)
            scratch = self.scratch_root / "stores" / f"{tree.name}-{tool}"
            self.remove(scratch)
            scratch.mkdir(parents=True)
            job = self.job(tree, scratch)
            step.setup(job)
            run = measure(step.command(job), timeout=self.args.timeout)
            sid = last_id(run.stdout) or self.reference_id(tree)
            store = scratch / "store"
            if (
                (run.returncode != 0 and not self.tools[tool].tolerate_unclean_exit)
                or not store.is_dir()
                or not any(store.iterdir())
            ):
                self.stores[key] = (
                    f"preparing its store failed ({run.exit_text}): {run.stderr.strip()[-300:]}"
                )
            elif sid is None:
                self.stores[key] = "no snapshot id known for the prepared store"
            else:
                self.stores[key] = (store, sid)
        return self.stores[key]

    def reference_id(self, tree: Tree) -> str | None:
        for tool in (OLD, OURS):
            s = self.series.get((tree.name, "id", tool))
            if s and s.ids:
                return sorted(s.ids)[0]
        return None

    def get_series(self, tree: Tree, op: Operation, tool: str) -> Series:
        key = (tree.name, op.name, tool)
        if key not in self.series:
            self.series[key] = Series(tree.name, op.name, tool)
        return self.series[key]

    # -- one run
    def run_once(
        self, tree: Tree, op: Operation, step: Step, thorough: bool
    ) -> tuple[Completed | None, str | None]:
        """(run, error).  Setup and teardown are outside the timed region."""
        scratch = self.fresh_scratch(f"{op.name}-{step.tool}")
        try:
            job = self.job(tree, scratch)
            if step.needs_store:
                prepared = self.prepared_store(tree, step.tool)
                if isinstance(prepared, str):
                    return None, prepared
                job.store, job.snapshot_id = prepared
            step.setup(job)
            run = measure(step.command(job), timeout=self.args.timeout)
            error = step.check(job, run, thorough)
            if run.timed_out:
                error = f"timed out after {self.args.timeout:g} s"
            elif run.returncode != 0:
                why = f"{run.exit_text}: {run.stderr.strip()[-300:]}"
                # snapdir 1.12 may crash at interpreter exit after doing the work: keep the
                # timing when its output proves the work was done, count the unclean exit.
                if not self.tools[step.tool].tolerate_unclean_exit or error:
                    error = why if not error else f"{why}; {error}"
            step.teardown(job)
            return run, error
        finally:
            self.remove(scratch)
            os.sync()  # write-back of this run must not land in the next one

    def record(self, tree: Tree, op: Operation, step: Step, thorough: bool, timed: bool) -> None:
        s = self.get_series(tree, op, step.tool)
        if s.broken or s.skipped:
            return
        tries = 3 if self.tools[step.tool].tolerate_unclean_exit else 1
        for attempt in range(tries):
            run, error = self.run_once(tree, op, step, thorough)
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
        if found and op.name in ("id", "push"):
            s.ids.add(found)
        if timed:
            s.runs.append(run)
            if run.returncode != 0:
                s.unclean += 1
        self.log(
            f"  {'round' if timed else 'warm-up':7} {tree.name:>12} {op.name:6} "
            f"{step.tool:13} {fmt_s(run.wall_s):>8} s {fmt_mb(run.maxrss_kib * 1024):>7} MB"
            f"{'  (' + run.exit_text + ')' if run.returncode else ''}"
        )

    def ops_for(self, tree: Tree) -> list[Operation]:
        """The huge-count tree is for peak RSS: only --huge-ops run there (default: id)."""
        if tree.recipe.kind == "huge":
            return [op for op in self.ops if op.name in self.args.huge_op_names]
        return self.ops

    # -- the whole benchmark
    def run(self) -> None:
        self.remove(self.scratch_root)
        self.scratch_root.mkdir(parents=True)
        self.rss_floor_kib = min(rss_floor() for _ in range(3))
        try:
            for tree in self.trees:
                self.log(f"\n== {tree.name}: {tree.files:,} files, {human_size(tree.total_bytes)}")
                ops = self.ops_for(tree)
                for op in ops:
                    for step in op.steps:
                        s = self.get_series(tree, op, step.tool)
                        tool = self.tools.get(step.tool)
                        if tool is None:
                            s.skipped = "not selected (--tools)"
                        elif not tool.available:
                            s.skipped = tool.note
                for op in ops:  # warm-up: page cache, thorough output checks
                    for step in op.steps:
                        self.record(tree, op, step, thorough=True, timed=False)
                for rnd in range(self.args.repeat):
                    for op in ops:
                        k = rnd % len(op.steps)  # rotate the order: no tool always goes first
                        for step in op.steps[k:] + op.steps[:k]:
                            self.record(tree, op, step, thorough=False, timed=True)
                self.compare_ids(tree)
            self.exit_check()
        finally:
            self.remove(self.scratch_root)

    def compare_ids(self, tree: Tree) -> None:
        for op in ("id", "push"):
            ours = self.series.get((tree.name, op, OURS))
            old = self.series.get((tree.name, op, OLD))
            for s in (ours, old):
                if s and len(s.ids) > 1:
                    self.warnings.append(
                        f"{s.tool} printed different ids for {tree.name} ({op}): {sorted(s.ids)}"
                    )
            if ours and old and ours.ids and old.ids and ours.ids != old.ids:
                self.warnings.append(
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
                job = self.job(tree, self.scratch_root)
                run = measure(step.command(job), timeout=self.args.timeout)
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
    mode = "quick smoke run (small trees - not representative)" if args.quick else "full run"
    add(
        f"Produced by `{command}` on {started.strftime('%Y-%m-%d %H:%M UTC')} "
        f"({mode}; {args.repeat} timed rounds after a warm-up round; took {elapsed_s:.0f} s).\n"
    )
    add("Regenerate with the same command from the repository root; see `benches/README.md`.\n")
    add("## Machine\n")
    add(md_table(["", ""], machine) + "\n")
    add("## Tools\n")
    rows = []
    for key in ALL_TOOLS:
        t = bench.tools.get(key)
        if t is None:
            rows.append([key, "not selected", "", ""])
            continue
        how = {
            OURS: f"`{t.exe or args.snapdir} id TREE` (end to end, console script)",
            B3SUM: f"`find TREE -type f -print0 | xargs -0 b3sum --num-threads={args.threads}`",
            OLD: f'`{t.exe or "python"} -c "...asyncio.run(snapdir.id(TREE))..."` '
            "(separate venv, never imported by the harness)",
            CP: "`cp -r TREE SCRATCH/copy`",
        }[key]
        rows.append([t.label, how, t.version or "-", "" if t.available else t.note])
    add(md_table(["tool", "command", "version", "note"], rows) + "\n")
    add("## Method\n")
    add(
        "- Every tree is generated deterministically (SHAKE-256 byte stream) and reused while "
        "its recipe stamp matches.\n"
        "- One warm-up round (untimed, thorough output checks) warms the page cache, then "
        "interleaved rounds run every tool once per round, rotating the order.\n"
        "- Wall time is `time.perf_counter()` around fork..`os.wait4` of the child process; "
        "peak RSS is the child's `ru_maxrss` from `os.wait4` (for pipelines: the largest "
        "process). Children are started by a minimal `python -S -I` fork/exec launcher, so "
        "the harness's own memory does not leak into them (Linux keeps the pre-`execve` "
        f"high-water mark); the floor this leaves is {bench.rss_floor_kib / 1000:.1f} MB "
        "(`true` shows it) and peaks at that floor are shown as `<= floor`.\n"
        "- Setup (fresh empty store or destination directories, stores filled by an earlier "
        "push for pull/verify) and teardown are not timed; `sync` runs between runs.\n"
        "- Ratios compare medians. Targets are goals, not assertions: missing one does not "
        "fail the benchmark.\n"
        f"- snapdir {OLD_VERSION} can crash at interpreter exit after finishing its work; "
        "such runs keep their timing when their output proves the work was done, and are "
        "counted as unclean exits.\n"
    )
    add("## Results\n")
    for tree in bench.trees:
        add(f"### {tree.name}: {tree.files:,} files, {human_size(tree.total_bytes)}\n")
        add(f"{tree.recipe.describe()}.\n")
        for op in bench.ops_for(tree):
            series = {
                s.tool: s
                for (tn, on, _t), s in bench.series.items()
                if tn == tree.name and on == op.name
            }
            add(f"#### {op.name}: {op.title}\n")
            if op.notes:
                add(op.notes + "\n")
            add(series_table(op, tree, series, bench.tools, bench.rss_floor_kib) + "\n")
            add(ratio_table(op, tree, series) + "\n")
            if op.name == "id":
                add(bench.id_check_line(tree) + "\n")
    if bench.exit_stats and bench.exit_tree is not None:
        add("## Clean exit\n")
        add(exit_table(bench.exit_stats, bench.exit_tree) + "\n")
    if bench.warnings or bench.problems():
        add("## Warnings\n")
        for w in [*bench.warnings, *bench.problems()]:
            add(f"- **WARNING**: {w}")
        add("")
    return "\n".join(out).rstrip() + "\n"


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
        t1 = ensure_tree(recipe, root / "one", quiet)
        t2 = ensure_tree(recipe, root / "two", quiet)
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
        ensure_tree(recipe, root / "one", quiet)
        check(marker.exists(), "generator: reuses a tree whose stamp matches")
        changed = Recipe("t", "mixed", (FileGroup("a", 58, 4, 0, 64),))
        t3 = ensure_tree(changed, root / "one", quiet)
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

        tree = Tree(recipe, root, 60, 10 * MIB)
        s = {tool: Series("t", "id", tool) for tool in ALL_TOOLS}
        for tool, secs, rss in (
            (OURS, (1.0, 1.2, 1.1), 50_000),
            (B3SUM, (1.0, 1.0, 1.0), 9000),
            (OLD, (2.0, 2.5, 3.0), 120_000),
        ):
            s[tool].runs = [Completed(x, rss, 0, "", "") for x in secs]
        s[OLD].unclean = 1
        s[CP].skipped = "cp not found"
        id_op = OPERATIONS[0]
        tools = {k: Tool(k, k, True) for k in ALL_TOOLS}
        table = series_table(id_op, tree, s, tools)
        check(
            "| snapdir | 1.100 | 1.000-1.200 | 9.1 | 51.2 | 3 |" in table,
            f"tables: series row\n{table}",
        )
        check("1 unclean exit(s)" in table and "cp not found" in table, "tables: notes")
        ratios = ratio_table(id_op, tree, s)
        check(
            "| snapdir / b3sum (median time) | 1.10x | <= 1.1x | met |" in ratios,
            f"tables: ratio with target\n{ratios}",
        )
        check(
            "| snapdir / snapdir-1.12 (median time) | 0.44x | <= 0.6x | met |" in ratios,
            "tables: second target",
        )
        check("| snapdir / cp (median time) | n/a |" in ratios, "tables: missing tool ratio")
        huge = Tree(Recipe("h", "huge", ()), root, 1, 1)
        rss_table = ratio_table(id_op, huge, s)
        check(
            "| snapdir peak RSS | 51.2 MB | <= 150 MB | met |" in rss_table,
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
        check(
            ID_RE.fullmatch("ab" * 32) is not None and last_id("x\n" + "0" * 64) == "0" * 64,
            "id parsing",
        )
    a = parse_args(["--quick", "--ops", "all", "--trees", "small,huge-count", "--huge-ops", "id"])
    check(
        a.op_names == ["id", "push", "pull", "verify"]
        and a.huge_op_names == ["id"]
        and a.tree_kinds == ["small", "huge"]
        and a.repeat == 2
        and a.exit_runs == 10,
        "options: --ops all, --huge-ops, tree aliases, quick defaults",
    )
    print(f"self-test: {passed} passed, {len(failures)} failed", flush=True)
    return failures


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark `snapdir` against b3sum, cp -r and snapdir 1.12.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small trees, 2 rounds, 10 exit runs (< 1 minute)",
    )
    p.add_argument(
        "--self-test",
        action="store_true",
        help="check the harness itself first (no snapdir needed), then run",
    )
    p.add_argument(
        "--trees",
        default="mixed,small",
        help="comma-separated: mixed, small, huge (huge = 200,000 tiny files)",
    )
    p.add_argument("--huge", action="store_true", help="add the huge-count tree")
    p.add_argument(
        "--ops",
        default="id",
        help="id, all, or a comma-separated list of " + ", ".join(op.name for op in OPERATIONS),
    )
    p.add_argument(
        "--huge-ops",
        default="id",
        help="operations (among --ops) run on the huge-count tree; `cp -r` of 200,000 files "
        "takes minutes per run on a slow filesystem",
    )
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated subset")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds (default 5; quick 2)")
    p.add_argument(
        "--exit-runs",
        type=int,
        default=None,
        help="clean-exit check: `id` runs per snapdir (default 50; quick 10; 0: off)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown report (default docs/benchmarks.md; with --quick "
        "<workdir>/benchmarks-quick.md)",
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
    args = p.parse_args(argv)

    args.workdir = args.workdir.resolve()
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.exit_runs is None:
        args.exit_runs = 10 if args.quick else 50
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
    if args.repeat < 1:
        p.error("--repeat must be at least 1")

    kinds: list[str] = []
    for name in [t.strip() for t in args.trees.split(",") if t.strip()] + (
        ["huge"] if args.huge else []
    ):
        if name not in TREE_ALIASES:
            p.error(f"unknown tree {name!r}: choose from mixed, small, huge")
        if TREE_ALIASES[name] not in kinds:
            kinds.append(TREE_ALIASES[name])
    args.tree_kinds = kinds

    def op_list(text: str) -> list[str]:
        expanded: list[str] = []
        for n in [o.strip() for o in text.split(",") if o.strip()]:
            for m in OP_GROUPS.get(n, (n,)):
                if m not in {op.name for op in OPERATIONS}:
                    p.error(f"unknown operation {m!r}")
                if m not in expanded:
                    expanded.append(m)
        return expanded

    args.op_names = op_list(args.ops) or ["id"]
    args.huge_op_names = [n for n in op_list(args.huge_ops) if n in args.op_names]

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ALL_TOOLS:
            p.error(f"unknown tool {t!r}: choose from {', '.join(ALL_TOOLS)}")
    args.tools = tools
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    # No core files from crashing children (snapdir 1.12 crashes at exit): they would slow the
    # next run and litter the working directory.
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    failed_self_test = False
    if args.self_test:
        failed_self_test = bool(self_test())

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

    report = render_report(bench, machine, command_line(), started, time.perf_counter() - t0)
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"report written to {args.out}")

    problems = bench.problems()
    for msg in problems:
        print(f"ERROR: {msg}", file=sys.stderr)
    if failed_self_test:
        print("ERROR: the self-test failed", file=sys.stderr)
    return 1 if problems or failed_self_test else 0


if __name__ == "__main__":
    sys.exit(main())
