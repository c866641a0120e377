"""Shared pieces of the benchmark areas: trees, the measuring launcher, tools, operations,
targets, and the command builders and checks that several areas use."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import s3bench  # benches/s3bench.py: SeaweedFS on loopback, request counting, rclone
from benchtrees import (
    GIB,
    KIB,
    MIB,
    ChangePlan,
    FileGroup,
    Recipe,
    Tree,
    scan_tree,
)

REPO = Path(__file__).resolve().parent.parent
ID_RE = re.compile(r"\b[0-9a-f]{64}\b")

# Tool keys.  Order is the row order in the report.
OURS = "snapdir"
FIND = "find"
B3SUM = "b3sum"
CP = "cp"
TAR = "tar"
RCLONE = "rclone"
RESTIC = "restic"
OLD = "snapdir-1.12"
ALL_TOOLS = (OURS, FIND, B3SUM, CP, TAR, RCLONE, RESTIC, OLD)
OLD_VERSION = "1.12.0"
# Peers that no target depends on: in the local operations they run --peer-repeat timed
# rounds (each of their pushes and pulls of `small` creates 20,000 files, a minute here).
PEERS = (TAR, RCLONE, RESTIC)
RESTIC_PASSWORD = "snapdir-bench"  # of the throw-away repositories under the work dir


# --------------------------------------------------------------------------- trees

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
    "large": Recipe("large", "large", (FileGroup("large", 4, 1, GIB, GIB, block=16 * MIB),)),
    "huge": Recipe("huge-count", "huge", (FileGroup("tiny", 200_000, 200, 0, 64),)),
}
QUICK_RECIPES: dict[str, Recipe] = {
    "mixed": Recipe(
        "mixed-quick",
        "mixed",
        (FileGroup("small", 200, 5, 4 * KIB, 4 * KIB), FileGroup("large", 4, 1, 2 * MIB, 2 * MIB)),
    ),
    "small": Recipe("small-quick", "small", (FileGroup("small", 500, 10, 4 * KIB, 4 * KIB),)),
    "large": Recipe(
        "large-quick", "large", (FileGroup("large", 4, 1, 8 * MIB, 8 * MIB, block=MIB),)
    ),
    "huge": Recipe("huge-count-quick", "huge", (FileGroup("tiny", 2_000, 10, 0, 64),)),
}
TREE_KINDS = ("mixed", "small", "large", "huge")
TREE_ALIASES = {"mixed": "mixed", "small": "small", "large": "large", "huge": "huge"}
TREE_ALIASES["huge-count"] = "huge"


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Completed:
    """One finished child process."""

    wall_s: float
    maxrss_kib: int  # ru_maxrss of the child (max over it and its waited-for descendants)
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    #: Stopped at its timeout; ``maxrss_kib`` is then its peak so far (a lower bound), or 0.
    timed_out: bool = False
    cpu_s: float = 0.0  # user + system time of the child (and its waited-for descendants)

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
# its own start-up is not timed) and writes "wall maxrss_kib wait_status cpu stopped" to a file.
# Since ru_maxrss is a maximum, every peak above the launcher's floor is exact; see rss_floor().
# The launcher also enforces the timeout: it kills the command's process group (its own) when
# the time is up and still reaps it, so a run that was stopped keeps its peak so far — a lower
# bound on what the whole run would need (`Completed.timed_out`). The command's pid is written
# next to the result, for the harness's own backstop.
LAUNCHER = """\
import os, signal, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    try:
        os.execvp(sys.argv[3], sys.argv[3:])
    except OSError as exc:
        os.write(2, f"launcher: cannot run {sys.argv[3]!r}: {exc}\\n".encode())
    os._exit(127)
try:
    os.setpgid(pid, pid)
except OSError:
    pass
with open(sys.argv[1] + ".pid", "w") as f:
    f.write(str(pid))
stopped = []
def stop(*_):
    stopped.append(1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
signal.signal(signal.SIGALRM, stop)
signal.setitimer(signal.ITIMER_REAL, float(sys.argv[2]))
_, status, usage = os.wait4(pid, 0)
signal.setitimer(signal.ITIMER_REAL, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    cpu = usage.ru_utime + usage.ru_stime
    f.write(f"{wall!r} {usage.ru_maxrss} {status} {cpu!r} {1 if stopped else 0}")
"""


def measure(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv``: wall time of fork..wait4, peak RSS from os.wait4's rusage of the child.

    ``env``: the child's whole environment (default: the harness's)."""
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
            [sys.executable, "-S", "-I", "-c", LAUNCHER, str(result), repr(timeout), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # the launcher and the command: one process group
        )

        def kill() -> None:
            # The backstop, should the launcher itself not stop the command in time.
            with lock:
                if not reaped:  # a zombie keeps its pid until reaped: no pid reuse race
                    timed_out.set()
                    with contextlib.suppress(OSError, ValueError):
                        os.killpg(int(Path(f"{result}.pid").read_text()), signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout + 30, kill)
        timer.daemon = True
        timer.start()
        try:
            _pid, launcher_status, _usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: do not leave the command running in its own session
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(Path(f"{result}.pid").read_text()), signal.SIGKILL)
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
        stopped = False
        try:
            wall_text, rss_text, status_text, cpu_text, stop_text = result.read_text().split()
            wall, maxrss, code, cpu = (
                float(wall_text),
                int(rss_text),
                os.waitstatus_to_exitcode(int(status_text)),
                float(cpu_text),
            )
            stopped = stop_text == "1"
        except (OSError, ValueError):  # killed (backstop) or the launcher itself failed
            wall, maxrss, code, cpu = outer_wall, 0, proc.returncode or -signal.SIGKILL, 0.0
        return Completed(wall, maxrss, code, stdout, stderr, stopped or timed_out.is_set(), cpu)


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
    env: Mapping[str, str] = field(default_factory=dict)  # added to every command's environment


@dataclass
class Job:
    """Everything a command builder or check needs for one run."""

    tree: Tree
    scratch: Path  # fresh and empty for every run, removed afterwards (not timed)
    tools: dict[str, Tool]
    threads: int
    store: str | None = None  # prepared store of this tool (pull, verify): URI or path
    snapshot_id: str | None = None  # id of the tree in ``store``
    s3: s3bench.S3Context | None = None  # cloud operations: where the S3 traffic goes
    s3_prefix: str = ""  # cloud operations: a fresh prefix in the bucket for this run
    changes: ChangePlan | None = None  # incremental pull: the 1 % change of this tree
    env: dict[str, str] = field(default_factory=dict)  # the command's whole environment

    def exe(self, key: str) -> str:
        return self.tools[key].exe

    @property
    def cloud(self) -> s3bench.S3Context:
        assert self.s3 is not None
        return self.s3

    @property
    def plan(self) -> ChangePlan:
        assert self.changes is not None
        return self.changes


Check = Callable[[Job, Completed, bool], str | None]  # (job, run, thorough) -> error or None


def _no_check(_job: Job, _run: Completed, _thorough: bool) -> None:
    return None


def _no_setup(_job: Job) -> None:
    return None


def _same_env(_job: Job, base: dict[str, str]) -> dict[str, str]:
    return base


def _no_requests(_run: Completed) -> int | None:
    return None


@dataclass(frozen=True)
class Step:
    """How one tool performs one operation (one cell of the tools x operations table)."""

    tool: str
    command: Callable[[Job], list[str]]
    setup: Callable[[Job], None] = _no_setup  # runs before the timer starts
    check: Check = _no_check
    needs_store: bool = False  # a store filled by this tool's push (untimed, once per tree)
    store_of: str | None = None  # needs_store: the tool whose push fills it (default: own)
    teardown: Callable[[Job], None] = _no_setup  # before the scratch dir is removed
    env: Callable[[Job, dict[str, str]], dict[str, str]] = _same_env  # whole env from base
    location: Callable[[Job], str] | None = None  # push: the store it filled (URI/path)
    uses_id: bool = True  # needs_store: the command needs the snapshot id
    requests: Callable[[Completed], int | None] = _no_requests  # the tool's own count
    cwd: Callable[[Job], Path] | None = None  # working directory of the command
    note: str = ""  # shown in the tool's row of the results (a known limitation)


@dataclass(frozen=True)
class Ratio:
    num: str
    den: str
    den_op: str | None = None  # the denominator's operation (default: the same one)

    def label(self) -> str:
        return f"{self.num} / {self.den}" + (f" ({self.den_op})" if self.den_op else "")


@dataclass(frozen=True)
class Operation:
    name: str
    title: str
    steps: tuple[Step, ...]
    ratios: tuple[Ratio, ...]
    notes: str = ""
    cloud: bool = False  # runs against the loopback S3 server, --s3-repeat rounds
    store_from: str = "push"  # needs_store steps: the operation whose step fills the store
    # Steps run in one kept scratch directory per tool and tree that this operation's step
    # of the same tool filled once, untimed (the incremental pull: a full pull first).
    dest_from: str | None = None
    primes: bool = False  # the warm-up run fills our stat cache: never skipped


LOCAL = "*"  # Target.op: every local (non-S3) operation


@dataclass(frozen=True)
class Target:
    op: str  # operation name, or LOCAL
    kind: str  # tree kind (mixed/small/large/huge) or "*"
    num: str
    den: str | None  # None: an absolute peak-RSS bound on ``num``
    bound: float  # ratio of median times; bytes for RSS; bytes per entry with per_entry
    hint: str = ""  # shown after the bound, e.g. what a time ratio means for throughput
    den_op: str | None = None  # the denominator's operation (default: the same one)
    issue: int = 0  # where the target is written down
    per_entry: bool = False  # RSS bound in bytes per manifest entry of the tree

    def applies(self, op: Operation, kind: str) -> bool:
        if self.op == LOCAL:  # every local operation that the tool takes part in
            tools = {step.tool for step in op.steps}
            return not op.cloud and self.num in tools and self.kind in ("*", kind)
        return self.op == op.name and self.kind in ("*", kind)

    @property
    def ratio(self) -> Ratio | None:
        return None if self.den is None else Ratio(self.num, self.den, self.den_op)

    def text(self) -> str:
        if self.den is None:
            text = f"<= {self.bound:g} B/entry" if self.per_entry else f"<= {self.bound / 1e6:g} MB"
        else:
            text = f"<= {self.bound:g}x" + (f" ({self.hint})" if self.hint else "")
        return text + (f" #{self.issue}" if self.issue else "")


TARGETS: tuple[Target, ...] = (
    # issue 2 (snapshot core): id against b3sum and snapdir 1.12, RSS on 200,000 files
    Target("id", "mixed", OURS, B3SUM, 1.1, issue=2),
    Target("id", "mixed", OURS, OLD, 0.6, issue=2),
    Target("id", "small", OURS, B3SUM, 1.0, issue=2),
    Target("id", "huge", OURS, None, 150e6, issue=2),
    # issue 3 (stores and transfers): file:// push, pull, verify
    Target("push", "*", OURS, CP, 1.5, den_op="copy", issue=3),
    Target("push", "*", OURS, OLD, 0.6, issue=3),
    Target("pull", "*", OURS, CP, 1.5, den_op="copy", issue=3),
    Target("verify", "*", OURS, B3SUM, 1.2, den_op="id", issue=3),
    # issue 4 (cloud stores): S3 against snapdir 1.12 and rclone, RSS
    Target("s3-push", "small", OURS, OLD, 0.5, ">= 2x its throughput", issue=4),
    Target("s3-push", "*", OURS, RCLONE, 1.0, ">= its throughput", issue=4),
    Target("s3-push", "*", OURS, None, 150e6, issue=4),
    Target("s3-pull", "small", OURS, OLD, 0.5, ">= 2x its throughput", issue=4),
    Target("s3-pull", "*", OURS, RCLONE, 1.0, ">= its throughput", issue=4),
    Target("s3-pull", "*", OURS, None, 150e6, issue=4),
    # issue 5 (speed to the physical limit)
    Target("id", "mixed", OURS, B3SUM, 1.05, issue=5),
    Target("id", "small", OURS, B3SUM, 0.9, issue=5),
    Target("noop-id", "*", OURS, FIND, 1.5, den_op="walk", issue=5),
    Target("noop-id", "*", OURS, OLD, 0.2, den_op="id", issue=5),
    Target("noop-push", "*", OURS, FIND, 1.5, den_op="walk", issue=5),
    Target("noop-push", "*", OURS, OLD, 0.2, issue=5),
    Target("push", "*", OURS, CP, 1.2, den_op="copy", issue=5),
    Target("pull", "*", OURS, CP, 1.2, den_op="copy", issue=5),
    Target("incr-pull", "*", OURS, OURS, 0.1, den_op="pull", issue=5),
    Target(LOCAL, "mixed", OURS, None, 60e6, issue=5),
    Target(LOCAL, "small", OURS, None, 60e6, issue=5),
    Target(LOCAL, "huge", OURS, None, 200, issue=5, per_entry=True),
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
FIND_SH = 'exec "$2" "$1" -printf \'%s %T@ %m\\n\' > /dev/null'
TAR_FILE = "tree.tar"


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


def check_prepared_copy(job: Job, run: Completed, thorough: bool) -> str | None:
    """A sync into the prepared store left it a copy of the tree (rclone's no-op push)."""
    if thorough:
        files, size = scan_tree(Path(_store(job)))
        if (files, size) != (job.tree.files, job.tree.total_bytes):
            return f"the store has {files} files / {size} bytes after the sync"
    return None


def check_store_copy(job: Job, run: Completed, thorough: bool) -> str | None:
    """The copy of our store holds every object of the tree (distinct contents may be fewer
    than files, so the count is checked against the store, not the tree)."""
    if thorough:
        got, want = scan_tree(job.scratch / "dest"), scan_tree(Path(_store_path(job)))
        if got != want:
            return f"the copy has {got[0]} files / {got[1]} bytes, the store {want[0]} / {want[1]}"
    return None


def check_store(job: Job, run: Completed, thorough: bool) -> str | None:
    if thorough and not any((job.scratch / "store").iterdir()):
        return "push left the store empty"
    return None


def check_output(*needles: str) -> Check:
    """The tool's stdout says it did the work (restic: `snapshot ... saved`, `no errors`)."""

    def check(job: Job, run: Completed, _thorough: bool) -> str | None:
        if all(n in run.stdout for n in needles):
            return None
        return f"expected {' ... '.join(needles)!r} in the output {run.stdout.strip()[-200:]!r}"

    return check


def check_true(job: Job, run: Completed, _thorough: bool) -> str | None:
    return None if run.stdout.strip().endswith("True") else f"verify said {run.stdout.strip()!r}"


def check_incremental(exact: bool) -> Check:
    """The kept destination is the tree again (``exact``: the added files are gone too)."""

    def check(job: Job, run: Completed, thorough: bool) -> str | None:
        return job.plan.check(job.scratch / "dest", job.tree.path, exact=exact, thorough=thorough)

    return check


def both(*checks: Check) -> Check:
    def check(job: Job, run: Completed, thorough: bool) -> str | None:
        return next((e for c in checks if (e := c(job, run, thorough))), None)

    return check


def mkdirs(*names: str) -> Callable[[Job], None]:
    def setup(job: Job) -> None:
        for name in names:
            (job.scratch / name).mkdir()

    return setup


def apply_changes(job: Job) -> None:
    job.plan.apply(job.scratch / "dest")


def restic_init(job: Job) -> None:
    """A new, empty repository in SCRATCH/store (untimed: key derivation takes a second)."""
    subprocess.run(
        [job.exe(RESTIC), "init", "--repo", str(job.scratch / "store")],
        env=job.env,
        check=True,
        capture_output=True,
        timeout=300,
    )


def _without_local_paths(text: str) -> str:
    """The report goes into the repository: name tools, not this machine's directories."""
    repo = str(Path(__file__).resolve().parent.parent)
    for prefix, short in (
        (sys.prefix + "/bin/", ""),
        (sys.base_prefix + "/bin/", ""),
        (repo + "/", ""),
        (os.path.expanduser("~") + "/", "~/"),
    ):
        text = text.replace(prefix, short)
    return text


def _ours(job: Job, *args: str) -> list[str]:
    return [job.exe(OURS), *args]


def _old(job: Job, code: str, *args: str) -> list[str]:
    return [job.exe(OLD), "-c", code, *args]


def _b3sum(job: Job, target: Path) -> list[str]:
    return ["sh", "-c", B3SUM_SH, "sh", str(target), job.exe(B3SUM), str(job.threads)]


def _sid(job: Job) -> str:
    assert job.snapshot_id is not None
    return job.snapshot_id


def _store(job: Job) -> str:
    assert job.store is not None
    return job.store


def _store_path(job: Job) -> str:
    """The prepared store as a path (ours is recorded as a `file://` URI)."""
    store = _store(job)
    if store.startswith("file://"):
        return urllib.request.url2pathname(urllib.parse.urlsplit(store).path)
    return store


def _tree(job: Job) -> str:
    return str(job.tree.path)


def _dest(job: Job) -> str:
    return str(job.scratch / "dest")


def _new_store(job: Job) -> str:
    return str(job.scratch / "store")


def _new_store_uri(job: Job) -> str:
    return uri(job.scratch / "store")


def _in_tree(job: Job) -> Path:
    """restic records the paths it is given: `backup .` inside the tree restores into DEST/."""
    return job.tree.path


def check_pulled(job: Job, run: Completed, thorough: bool) -> str | None:
    """snapdir 1.12 prints `pulled` only once the pull is done (it may crash at exit after)."""
    if "pulled" not in run.stdout:
        return f"no `pulled` in the output {run.stdout.strip()[-200:]!r}"
    return check_copy("dest")(job, run, thorough)
