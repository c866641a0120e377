"""Clean process life: the command line exits cleanly after every operation, and Ctrl-C
stops a push or a pull promptly, with exit status 130, a one-line message and a store that
is still consistent, after which the same command succeeds.

* 100 runs of ``snapdir id`` / ``push`` / ``pull`` / ``verify`` on a small tree and a
  ``file://`` store: each exits 0, within its timeout, with nothing on stderr that looks like
  a crash (a traceback, ``Fatal Python error``, an exception ignored at shutdown).
* SIGINT in the middle of ``snapdir push`` and ``snapdir pull``, against ``file://`` (a tree
  of many small files, so the work takes a while) and against S3 (SeaweedFS behind the fault
  proxy adding latency to every request): exit 130 within 2 s of the signal.
* The Python API: a task running :func:`snapdir.push` in an anyio cancel scope returns
  within 2 s of the cancellation (``file://`` and S3), and the same push then succeeds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
import snapdir
import storeutil
from servers.faultproxy import FaultProxy, start_fault_proxy
from servers.seaweed import S3Server
from storeutil import b3, cli_env, files_below, staging_leftovers, uri, write

#: What a crash or an unclean exit leaves on stderr.
CRASH_MARKS = ("Traceback", "Fatal Python error", "Exception ignored", "Segmentation fault")
#: How long Ctrl-C may take to stop an operation.
PROMPT = 2.0


def crash_free(stderr: str) -> bool:
    return not any(mark in stderr for mark in CRASH_MARKS)


def tree_id(path: Path) -> str:
    return anyio.run(snapdir.id, path)


# -------------------------------------------------------------------------------------------
# 100 runs
# -------------------------------------------------------------------------------------------


def _lane(base: Path, lane: int, runs: int) -> list[str]:
    """``runs`` commands cycling through id, push, pull, verify on this lane's own tree,
    store and destination; the tree changes before each push. Returns what went wrong."""
    rng = random.Random(lane)
    tree, store, dest = base / f"tree{lane}", base / f"store{lane}", base / f"dest{lane}"
    for i in range(12):
        write(tree / f"d{i % 3}" / f"f{i}.txt", rng.randbytes(rng.randint(0, 3000)))
    (tree / "empty-dir").mkdir()
    env = cli_env(SNAPDIR_NO_PROGRESS="1")
    problems: list[str] = []
    last = ""
    for n in range(runs):
        op = ("id", "push", "pull", "verify")[n % 4]
        if op == "id":
            argv = ["id", str(tree)]
        elif op == "push":
            write(tree / "changing.txt", f"lane {lane} run {n}\n")
            argv = ["push", str(tree), "--store", uri(store)]
        elif op == "pull":
            argv = ["pull", last, str(dest), "--store", uri(store), "--force", "--delete"]
        else:
            argv = ["verify", "--store", uri(store)]
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "snapdir", *argv],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            problems.append(f"lane {lane} run {n} ({op}): hung (no exit in 30 s)")
            continue
        if proc.returncode != 0 or not crash_free(proc.stderr):
            problems.append(f"lane {lane} run {n} ({op}): exit {proc.returncode}: {proc.stderr}")
        if op in ("id", "push"):
            out = proc.stdout.strip()
            if len(out) != 64:
                problems.append(f"lane {lane} run {n} ({op}): stdout {proc.stdout!r}")
            if op == "push":
                last = out
        if op == "pull" and tree_id(dest) != last:
            problems.append(f"lane {lane} run {n}: pulled tree is not {last}")
    return problems


def test_hundred_cli_runs_exit_cleanly(tmp_path: Path) -> None:
    """100 processes in two lanes of 50 (each lane its own tree, store and destination)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda lane: _lane(tmp_path, lane, 50), range(2)))
    problems = [p for lane in results for p in lane]
    assert problems == [], "\n".join(problems)


def test_ctrl_c_while_the_command_line_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the parser is built (it imports the store commands, which takes a
    while on a busy machine): exit status 130 and the one-line message, no traceback."""
    import snapdir.cli

    def interrupted(only: str | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(snapdir.cli, "build_parser", interrupted)
    assert snapdir.cli.main(["push", ".", "--store", "file:///nowhere"]) == 130
    assert capsys.readouterr().err == "snapdir: interrupted\n"


# -------------------------------------------------------------------------------------------
# Ctrl-C: trees, stores, checks
# -------------------------------------------------------------------------------------------

MANY = 8_000


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree of many small files with distinct contents: a local push or pull of it takes
    long enough to be interrupted in the middle, and it is quick to generate."""
    root = tmp_path_factory.mktemp("many") / "tree"
    rng = random.Random(5)
    for d in range(80):
        sub = root / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(MANY // 80):
            (sub / f"f{i:03d}").write_bytes(rng.randbytes(64) + f"{d}/{i}".encode())
    return root


def file_store_problems(store: Path) -> list[str]:
    """Objects or manifests under wrong keys, manifests missing an object, temporary files
    left: every stored file is read and re-hashed once."""
    from storeutil import object_rel

    problems = [f"left over: {p}" for p in staging_leftovers(store)]
    for rel in sorted(files_below(store)):
        area, _, rest = rel.partition("/")
        key = rest.replace("/", "")
        data = (store / rel).read_bytes()
        if area in (".objects", ".manifests") and b3(data) != key:
            problems.append(f"{rel} holds other bytes")
        if area == ".manifests":
            for checksum, _ in snapdir.Manifest.parse(data.decode()).objects():
                if not (store / object_rel(checksum)).is_file():
                    problems.append(f"{key} lacks object {checksum}")
    return problems


def s3_env(server: S3Server, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in cli_env().items() if not k.startswith(("AWS_", "SNAPDIR_S3_"))}
    env.update(server.environ(), SNAPDIR_S3_STORE_ENDPOINT_URL=endpoint, SNAPDIR_NO_PROGRESS="1")
    return env


@pytest.fixture(scope="module")
def bucket(seaweedfs: S3Server) -> str:
    client = seaweedfs.client()
    name = f"process-life-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=name)
    client.close()
    return name


def s3_store_problems(server: S3Server, store_uri: str) -> list[str]:
    """See :func:`storeutil.s3_store_problems` (through a client of ``server``)."""
    client = server.client()
    try:
        return storeutil.s3_store_problems(client, store_uri)
    finally:
        client.close()


@pytest.fixture
def direct_s3(seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This process's environment set for the S3 server itself (for the checks and the
    re-runs made in process)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SNAPDIR_S3_")):
            monkeypatch.delenv(name)
    for k, v in s3_env(seaweedfs, seaweedfs.endpoint_url).items():
        monkeypatch.setenv(k, v)
    return seaweedfs


@pytest.fixture
def slow_s3(seaweedfs: S3Server) -> Iterator[FaultProxy]:
    """The S3 server behind a proxy that delays every request by 0.1 s."""
    proxy = start_fault_proxy(
        seaweedfs.endpoint_url, rate=1.0, kinds=["latency"], latency_s=0.1, flavor="s3"
    )
    try:
        yield proxy
    finally:
        proxy.stop()


def interrupt(argv: list[str], env: dict[str, str], started: Callable[[], bool]) -> str:
    """Run the CLI, wait until ``started()`` says it is in the middle of its work, send
    SIGINT, and check it exits 130 within PROMPT seconds with a one-line message. Returns
    its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not started():
            assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
            assert time.monotonic() < deadline, "never got going"
            time.sleep(0.01)
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=PROMPT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {PROMPT} s after SIGINT")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, f"exit {proc.returncode} after {took:.2f}s: {err}"
    assert crash_free(err), err
    assert err.strip() == "snapdir: interrupted", err
    assert out == "", out
    return err


def count_below(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path)) if path.exists() else 0


# -------------------------------------------------------------------------------------------
# Ctrl-C: file://
# -------------------------------------------------------------------------------------------


def test_ctrl_c_during_a_local_push(many_files: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = cli_env(SNAPDIR_NO_PROGRESS="1")
    argv = ["push", str(many_files), "--store", uri(store), "--no-stat-cache"]
    interrupt(argv, env, lambda: count_below(store / ".objects") >= 200)
    assert not (store / ".manifests").exists() or count_below(store / ".manifests") == 0
    assert file_store_problems(store) == []
    again = subprocess.run(
        [sys.executable, "-m", "snapdir", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == tree_id(many_files)
    assert file_store_problems(store) == []


def test_ctrl_c_during_a_local_pull(many_files: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    sid = anyio.run(snapdir.push, many_files, uri(store))
    dest = tmp_path / "dest"
    env = cli_env(SNAPDIR_NO_PROGRESS="1")
    argv = ["pull", sid, str(dest), "--store", uri(store)]
    interrupt(argv, env, lambda: count_below(dest) >= 200)
    assert file_store_problems(store) == []
    again = subprocess.run(
        [sys.executable, "-m", "snapdir", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert tree_id(dest) == sid
    assert staging_leftovers(dest) == []


# -------------------------------------------------------------------------------------------
# Ctrl-C: S3
# -------------------------------------------------------------------------------------------


def small_tree(root: Path, count: int = 150) -> Path:
    rng = random.Random(9)
    for i in range(count):
        write(root / f"d{i % 10}" / f"f{i}.bin", rng.randbytes(rng.randint(1, 2000)))
    return root


def test_ctrl_c_during_an_s3_push(
    direct_s3: S3Server, bucket: str, slow_s3: FaultProxy, tmp_path: Path
) -> None:
    seaweedfs = direct_s3
    tree = small_tree(tmp_path / "tree")
    store_uri = f"s3://{bucket}/{os.urandom(4).hex()}/store"
    argv = ["push", str(tree), "--store", store_uri, "--jobs", "4"]
    interrupt(argv, s3_env(seaweedfs, slow_s3.url), lambda: slow_s3.stats.requests >= 20)
    assert s3_store_problems(seaweedfs, store_uri) == []
    again = subprocess.run(
        [sys.executable, "-m", "snapdir", *argv],
        capture_output=True,
        text=True,
        env=s3_env(seaweedfs, seaweedfs.endpoint_url),
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert crash_free(again.stderr), again.stderr
    assert again.stdout.strip() == tree_id(tree)
    assert s3_store_problems(seaweedfs, store_uri) == []


def test_ctrl_c_during_an_s3_pull(
    direct_s3: S3Server, bucket: str, slow_s3: FaultProxy, tmp_path: Path
) -> None:
    seaweedfs = direct_s3
    tree = small_tree(tmp_path / "tree")
    store_uri = f"s3://{bucket}/{os.urandom(4).hex()}/store"
    direct = s3_env(seaweedfs, seaweedfs.endpoint_url)
    pushed = subprocess.run(
        [sys.executable, "-m", "snapdir", "push", str(tree), "--store", store_uri],
        capture_output=True,
        text=True,
        env=direct,
        timeout=120,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stderr
    sid = pushed.stdout.strip()
    dest = tmp_path / "dest"
    argv = ["pull", sid, str(dest), "--store", store_uri, "--jobs", "4"]
    interrupt(argv, s3_env(seaweedfs, slow_s3.url), lambda: slow_s3.stats.requests >= 20)
    assert s3_store_problems(seaweedfs, store_uri) == []
    again = subprocess.run(
        [sys.executable, "-m", "snapdir", *argv],
        capture_output=True,
        text=True,
        env=direct,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert crash_free(again.stderr), again.stderr
    assert tree_id(dest) == sid
    assert staging_leftovers(dest) == []


# -------------------------------------------------------------------------------------------
# The Python API: cancellation
# -------------------------------------------------------------------------------------------


def _cancel_when(started: Callable[[], bool], op: Callable[[], object]) -> float:
    """Run ``op()`` in a cancel scope, cancel it once ``started()``; return how long the
    scope took to exit after the cancellation."""
    cancelled_at: list[float] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:  # polled: what it waits for happens in another process
                    if started():
                        break
                    await anyio.sleep(0.01)
                cancelled_at.append(time.monotonic())
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await op()  # type: ignore[misc]
            pytest.fail("the operation finished before it was cancelled")

    anyio.run(main)
    assert cancelled_at, "never cancelled"
    return time.monotonic() - cancelled_at[0]


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_cancelling_a_push_in_a_task(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend == "s3":
        server: S3Server = request.getfixturevalue("direct_s3")
        proxy: FaultProxy = request.getfixturevalue("slow_s3")
        monkeypatch.setenv("SNAPDIR_S3_STORE_ENDPOINT_URL", proxy.url)
        tree = small_tree(tmp_path / "tree")
        store_uri = f"s3://{request.getfixturevalue('bucket')}/{os.urandom(4).hex()}/store"

        def started() -> bool:
            return proxy.stats.requests >= 20

    else:
        tree = request.getfixturevalue("many_files")
        store_uri = uri(tmp_path / "store")

        def started() -> bool:
            return count_below(tmp_path / "store" / ".objects") >= 200

    took = _cancel_when(started, lambda: snapdir.push(tree, store_uri, jobs=4))
    assert took < PROMPT, f"push stopped {took:.2f}s after it was cancelled"
    if backend == "s3":
        monkeypatch.setenv("SNAPDIR_S3_STORE_ENDPOINT_URL", server.endpoint_url)
        assert s3_store_problems(server, store_uri) == []
    else:
        assert file_store_problems(tmp_path / "store") == []
    assert anyio.run(snapdir.push, tree, store_uri) == tree_id(tree)
