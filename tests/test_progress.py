"""Progress reports: ``--progress=auto|bar|plain|none`` and ``SNAPDIR_PROGRESS``.

Under a pipe (a CI log) ``auto`` is ``plain``: a status line every
``SNAPDIR_PROGRESS_INTERVAL`` seconds on stderr, none for a shorter operation; on a
terminal it is a bar. Never on stdout; IEC units everywhere; and a ``file://`` pull, whose
copying is one Rust call, still advances while that call runs."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from servers.seaweed import S3Server
from snapdir._progress import PlainReporter, iec, resolve_mode
from snapdir._pull import pull_with_stats
from snapdir._runtime import run_local
from storeutil import cli_env, run_cli, uri, write

#: A status line of plain mode, e.g. ``snapdir: pull [0:10] 45.0% 12/30 files, ...``.
STATUS = re.compile(
    r"^snapdir: (push|pull|checkout|fetch|sync|verify|diff|size) \[\d+:\d\d\] ", re.M
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A pushed tree of 300 files (about 9 MiB) in a file:// store."""
    root = tmp_path_factory.mktemp("progress")
    src = root / "src"
    for i in range(300):
        write(src / f"d{i % 10}" / f"{i}.bin", os.urandom(30_000))
    store = uri(root / "store")
    env = cli_env(SNAPDIR_CACHE_DIR=str(root / "cache"))
    proc = run_cli("push", str(src), "--store", store, "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    return {"src": str(src), "store": store, "id": proc.stdout.strip(), "root": str(root)}


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A pushed tree of 1,200 small files: its file:// pull takes several of the 50-100 ms
    progress polls (per-file work dominates; about ten times the poll on a quiet machine)."""
    root = tmp_path_factory.mktemp("many")
    src = root / "src"
    for i in range(1200):
        write(src / f"d{i % 20}" / f"{i}.bin", os.urandom(16_000))
    store = uri(root / "store")
    proc = run_cli("push", str(src), "--store", store, "-q", env=cli_env(
        SNAPDIR_CACHE_DIR=str(root / "cache")))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {"store": store, "id": proc.stdout.strip()}


def _env(**extra: str | None) -> dict[str, str]:
    base: dict[str, str | None] = {
        "SNAPDIR_NO_PROGRESS": None,
        "SNAPDIR_PROGRESS": None,
        "SNAPDIR_PROGRESS_INTERVAL": "0.005",
    }
    base.update(extra)
    return cli_env(**base)


def _pull(world: dict[str, str], tmp_path: Path, *flags: str, **env: str | None) -> Any:
    dest = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
    return run_cli(
        "pull", world["id"], str(dest), "--store", world["store"], *flags, env=_env(**env)
    )


def test_iec_units() -> None:
    assert iec(0) == "0 B"
    assert iec(1023) == "1023 B"
    assert iec(1536) == "1.5 KiB"
    assert iec(5 << 20) == "5.0 MiB"
    assert iec(3 << 30) == "3.0 GiB"
    assert iec(2 << 40) == "2.0 TiB"


def test_status_line_has_elapsed_counts_totals_rate_and_eta() -> None:
    rep = PlainReporter("push s3://user:secret@host/b", interval=3600)
    try:
        assert "secret" not in rep.label  # labels are redacted like every printed line
        rep.total(10, 10 << 20)
        rep(3, 3 << 20)
        line = rep.status(rep.start + 65)
    finally:
        rep.close()
    assert re.fullmatch(
        r"\[1:05\] 30\.0% 3/10 files, 3\.0 MiB/10\.0 MiB, \d+\.\d KiB/s ETA 2:31", line
    ), line
    assert rep.lines == 0  # closed before its first interval: nothing printed


@pytest.mark.parametrize(
    ("flag", "disabled", "env", "tty", "expected"),
    [
        (None, False, {}, False, "plain"),
        (None, False, {}, True, "bar"),
        ("auto", False, {"SNAPDIR_PROGRESS": "none"}, True, "bar"),
        (None, False, {"SNAPDIR_PROGRESS": "plain"}, True, "plain"),
        (None, False, {"SNAPDIR_PROGRESS": "BAR"}, False, "bar"),
        ("plain", False, {"SNAPDIR_PROGRESS": "none"}, True, "plain"),
        ("none", False, {"SNAPDIR_PROGRESS": "plain"}, False, "none"),
        (None, False, {"SNAPDIR_NO_PROGRESS": "1", "SNAPDIR_PROGRESS": "bar"}, True, "none"),
        ("plain", False, {"SNAPDIR_NO_PROGRESS": "1"}, False, "plain"),
        (None, False, {"SNAPDIR_NO_PROGRESS": "0"}, False, "plain"),
        ("bar", True, {}, True, "none"),  # -q / --no-progress
    ],
)
def test_mode_precedence_flag_then_env_then_auto(
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    disabled: bool,
    env: dict[str, str],
    tty: bool,
    expected: str,
) -> None:
    monkeypatch.delenv("SNAPDIR_PROGRESS", raising=False)
    monkeypatch.delenv("SNAPDIR_NO_PROGRESS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert resolve_mode(flag, disabled=disabled, tty=tty) == expected


def test_plain_mode_under_a_pipe_prints_status_lines_on_stderr_only(
    world: dict[str, str], tmp_path: Path
) -> None:
    proc = _pull(world, tmp_path, "--json")  # auto, stderr a pipe: plain
    assert proc.returncode == 0, proc.stderr
    assert STATUS.search(proc.stderr), proc.stderr
    assert "\r" not in proc.stderr
    assert "\x1b" not in proc.stderr
    # stdout is still exactly the JSON document
    assert proc.stdout.count("\n") == 1
    assert json.loads(proc.stdout)["files_written"] == 300
    last = [ln for ln in proc.stderr.splitlines() if STATUS.match(ln)][-1]
    assert "300/300 files" in last, last
    assert "MiB" in last, last

    pushed = run_cli(
        "push", world["src"], "--store", uri(tmp_path / "s2"), "--progress", "plain", env=_env()
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == world["id"]  # the id alone on stdout
    assert STATUS.search(pushed.stderr), pushed.stderr


def test_plain_mode_is_silent_for_an_operation_shorter_than_the_interval(
    world: dict[str, str], tmp_path: Path
) -> None:
    proc = _pull(world, tmp_path, "--progress=plain", SNAPDIR_PROGRESS_INTERVAL=None)
    assert proc.returncode == 0, proc.stderr
    assert not STATUS.search(proc.stderr), proc.stderr


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["--progress=none"], {}),
        (["--progress", "none"], {"SNAPDIR_PROGRESS": "plain"}),
        (["-q"], {}),
        (["--no-progress"], {"SNAPDIR_PROGRESS": "plain"}),
        ([], {"SNAPDIR_NO_PROGRESS": "1"}),
        ([], {"SNAPDIR_PROGRESS": "none"}),
    ],
)
def test_none_is_silent(
    world: dict[str, str], tmp_path: Path, flags: list[str], env: dict[str, str]
) -> None:
    proc = _pull(world, tmp_path, *flags, **env)
    assert proc.returncode == 0, proc.stderr
    assert not STATUS.search(proc.stderr), proc.stderr


def test_the_flag_beats_the_environment_before_or_after_the_command(
    world: dict[str, str], tmp_path: Path
) -> None:
    dest = str(tmp_path / "dest")
    proc = run_cli(
        "--progress", "plain", "pull", world["id"], dest, "--store", world["store"],
        env=_env(SNAPDIR_PROGRESS="none"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert STATUS.search(proc.stderr), proc.stderr
    assert STATUS.search(_pull(world, tmp_path, SNAPDIR_PROGRESS="plain").stderr)


def test_bad_values_are_usage_errors(world: dict[str, str], tmp_path: Path) -> None:
    flag = _pull(world, tmp_path, "--progress=sideways")
    assert flag.returncode == 2
    assert "--progress" in flag.stderr
    env = _pull(world, tmp_path, "--json", SNAPDIR_PROGRESS="sideways")
    assert env.returncode == 2, env.stderr
    assert "SNAPDIR_PROGRESS" in json.loads(env.stdout)["error"]["message"]
    interval = _pull(world, tmp_path, "--progress=plain", SNAPDIR_PROGRESS_INTERVAL="0")
    assert interval.returncode == 2, interval.stderr
    assert "SNAPDIR_PROGRESS_INTERVAL" in interval.stderr


def _run_on_pty(argv: list[str], env: dict[str, str]) -> tuple[int, bytes, str]:
    """Run the CLI with stderr on a pseudo-terminal; (status, what the terminal got, stdout)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=120), got, out


def test_auto_is_a_bar_on_a_terminal(world: dict[str, str], tmp_path: Path) -> None:
    argv = ["pull", world["id"], str(tmp_path / "d"), "--store", world["store"], "--json"]
    status, term, out = _run_on_pty(argv, _env(TERM="xterm-256color", COLUMNS="100"))
    assert status == 0, term
    assert b"\r" in term  # drawn, redrawn in place
    assert b"pull" in term
    assert not STATUS.search(term.decode(errors="replace"))  # not plain lines
    assert json.loads(out)["files_written"] == 300  # stdout untouched


@pytest.mark.parametrize("driver", ["run_local", "anyio"])
def test_file_pull_progress_advances_while_the_rust_fill_runs(
    many: dict[str, str], tmp_path: Path, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Poll every millisecond: a fast disk copies the 1,200 files in well under the default
    # 50-100 ms between polls, and the point is that polls see the fill half-way.
    from snapdir import _runtime
    from snapdir.stores import file as file_store

    monkeypatch.setattr(_runtime, "TICK_SECONDS", 0.001)
    monkeypatch.setattr(file_store, "POLL_SECONDS", 0.001)
    seen: list[tuple[int, int]] = []
    totals: list[tuple[int, int]] = []

    class Counter:
        files = nbytes = 0

        def total(self, files: int, nbytes: int) -> None:
            totals.append((files, nbytes))

        def __call__(self, files: int, nbytes: int) -> None:
            self.files += files
            self.nbytes += nbytes
            seen.append((self.files, self.nbytes))

    counter = Counter()
    dest = tmp_path / "d"

    async def pull() -> Any:
        return await pull_with_stats(many["id"], many["store"], dest, progress=counter)

    stats = run_local(pull) if driver == "run_local" else anyio.run(pull)
    assert stats["files_written"] == 1200
    assert totals == [(1200, 1200 * 16_000)]
    assert seen[-1] == (1200, 1200 * 16_000)
    # Reported while the single Rust call was still copying, not only at its end.
    assert any(0 < f < 1200 for f, _ in seen), seen


def test_summary_lines_use_iec_units(world: dict[str, str], tmp_path: Path) -> None:
    pushed = run_cli("push", world["src"], "--store", uri(tmp_path / "s"), env=_env())
    assert "(8.6 MiB)" in pushed.stderr, pushed.stderr
    assert " bytes)" not in pushed.stderr
    pulled = _pull(world, tmp_path, "--progress=none")
    assert "300 files written (8.6 MiB)" in pulled.stderr, pulled.stderr


def test_verify_reports_progress_with_its_total(world: dict[str, str]) -> None:
    argv = ["verify", "--id", world["id"], "--store", world["store"], "--progress=plain"]
    proc = run_cli(*argv, env=_env())
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if STATUS.match(ln)]
    assert lines, proc.stderr
    assert "300/300 files, 8.6 MiB/8.6 MiB" in lines[-1], lines[-1]


def test_a_new_total_starts_a_new_phase() -> None:
    rep = PlainReporter("push", interval=3600)
    try:
        rep(300, 9_000_000)  # the walk: no total known
        rep.total(2, 60_000)  # the upload of what the store lacks
        assert (rep.files, rep.bytes) == (0, 0)
        rep(1, 30_000)
        assert " 50.0% 1/2 files, 29.3 KiB/58.6 KiB, " in rep.status()
    finally:
        rep.close()


def _s3_store(seaweedfs: S3Server, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A store in a new bucket of the loopback SeaweedFS, and the CLI's environment for it."""
    client = seaweedfs.client()
    bucket = f"snapdir-progress-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.close()
    env = _env(SNAPDIR_CACHE_DIR=str(tmp_path / "cache"), **seaweedfs.environ())
    return f"s3://{bucket}/p", env


def test_cloud_push_pull_verify_sync_report_progress(
    world: dict[str, str], tmp_path: Path, seaweedfs: S3Server
) -> None:
    store, env = _s3_store(seaweedfs, tmp_path)
    sid = world["id"]
    for argv in (
        ["push", world["src"], "--store", store],
        ["pull", sid, str(tmp_path / "d"), "--store", store],
        ["verify", "--id", sid, "--store", store],
        ["sync", sid, "--from", store, "--to", uri(tmp_path / "copy")],
    ):
        proc = run_cli(*argv, "--progress=plain", env=env)
        assert proc.returncode == 0, (argv, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if STATUS.match(ln)]
        assert lines, (argv, proc.stderr)
        assert lines[-1].startswith(f"snapdir: {argv[0]} ["), lines[-1]
        assert "300/300 files, 8.6 MiB/8.6 MiB" in lines[-1], (argv, lines[-1])


def test_diff_reports_the_walk_of_a_directory_side(world: dict[str, str]) -> None:
    ref = f"{world['store']}@{world['id']}"
    argv = ["diff", "--from", ref, "--to", world["src"], "--progress=plain", "--exit-code"]
    proc = run_cli(*argv, env=_env(SNAPDIR_NO_STAT_CACHE="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # no differences, and nothing of the progress on stdout
    lines = [ln for ln in proc.stderr.splitlines() if STATUS.match(ln)]
    assert lines, proc.stderr
    assert "300 files, 8.6 MiB" in lines[-1], lines[-1]


def test_size_of_a_store_reports_the_snapshots_read(tmp_path: Path) -> None:
    store = uri(tmp_path / "many")
    for i in range(3):
        write(tmp_path / f"t{i}" / "f", "x" * (1000 * (i + 1)))
        assert run_cli("push", str(tmp_path / f"t{i}"), "--store", store, "-q").returncode == 0

    calls: list[tuple[int, int]] = []
    from snapdir._verify import size

    stats = run_local(lambda: size(store, progress=lambda f, n: calls.append((f, n))))
    assert sorted(calls) == [(1, 1000), (1, 2000), (1, 3000)]
    assert (stats.files, stats.logical_bytes) == (3, 6000)


class _Recorder:
    """A progress callback that keeps what it is told, ``found`` totals included."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.found_calls: list[tuple[int, int, int]] = []  # (files, bytes, files done then)

    def __call__(self, files: int, nbytes: int) -> None:
        self.files += files
        self.bytes += nbytes

    def found(self, files: int, nbytes: int) -> None:
        self.found_calls.append((files, nbytes, self.files))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """160 files of 1 MiB: hashing and copying them takes far longer than counting them."""
    root = tmp_path_factory.mktemp("big")
    src = root / "src"
    for i in range(160):
        write(src / f"d{i % 8}" / f"{i}.bin", os.urandom(1 << 20))
    (src / "skipped.tmp").write_bytes(b"x" * 5000)
    (src / ".snapdirignore").write_text("*.tmp\n")
    return {"src": str(src), "root": root, "files": 161, "bytes": 160 * (1 << 20) + 6}


@pytest.mark.parametrize("op", ["push", "manifest"])
def test_a_long_walk_learns_its_totals_while_it_runs(
    big: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """A file:// push (walk and copy in one pass) and the walk of ``manifest`` (``id``,
    a cloud push's first phase) get their totals
    from a counting walk beside them, with the same rules (the ignore file), without the
    counts so far starting again."""
    import snapdir

    monkeypatch.setenv("SNAPDIR_PROGRESS_COUNT_AFTER", "0")
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(tmp_path / "cache"))
    rec = _Recorder()
    if op == "push":
        sid = run_local(lambda: snapdir.push(big["src"], uri(tmp_path / "s"), progress=rec))
    else:
        m = run_local(lambda: snapdir.manifest(big["src"], progress=rec, use_cache=False))
        sid = m.id
    # Told once: the counting walk finished while the walk ran (it is stopped, and tells
    # nothing, once the walk has returned).
    assert len(rec.found_calls) == 1, rec.found_calls
    files, nbytes, _ = rec.found_calls[0]
    # the .snapdirignore is in the snapshot, the ignored *.tmp is not
    assert (files, nbytes) == (big["files"], big["bytes"])
    assert (rec.files, rec.bytes) == (files, nbytes)  # nothing counted twice or lost
    assert sid == run_local(lambda: snapdir.id(big["src"], use_cache=False))


def test_a_short_walk_counts_nothing_beside_it(
    world: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapdir

    monkeypatch.setenv("SNAPDIR_PROGRESS_COUNT_AFTER", "30")
    rec = _Recorder()
    run_local(lambda: snapdir.push(world["src"], uri(tmp_path / "s"), progress=rec))
    assert rec.found_calls == []
    assert rec.files == 300


def test_plain_status_lines_of_a_file_push_show_its_totals(
    big: dict[str, Any], tmp_path: Path
) -> None:
    env = _env(SNAPDIR_PROGRESS_COUNT_AFTER="0", SNAPDIR_PROGRESS_INTERVAL="0.05",
               SNAPDIR_NO_STAT_CACHE="1")  # fmt: skip
    proc = run_cli("push", big["src"], "--store", uri(tmp_path / "s"), "--progress=plain",
                   env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if STATUS.match(ln)]
    assert lines, proc.stderr
    assert "161/161 files, 160.0 MiB/160.0 MiB" in lines[-1], lines[-1]


def test_size_of_one_snapshot_reports_its_manifest_download(
    world: dict[str, str], tmp_path: Path, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one long wait of ``size`` of a big snapshot in a cloud store is its manifest's
    download: its bytes are reported as they arrive, then the snapshot's totals as a new
    phase (so a bar shows the download's rate, then 100 %)."""
    from snapdir._verify import size

    store, env = _s3_store(seaweedfs, tmp_path)
    sid = world["id"]
    proc = run_cli("sync", sid, "--from", world["store"], "--to", store, "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    seaweedfs.use_env(monkeypatch.setenv, monkeypatch.delenv)
    stored = Path(world["root"], "store", ".manifests", sid[0:3], sid[3:6], sid[6:9], sid[9:])

    events: list[tuple[str, int, int]] = []

    class Rec:
        def __call__(self, files: int, nbytes: int) -> None:
            events.append(("done", files, nbytes))

        def total(self, files: int, nbytes: int) -> None:
            events.append(("total", files, nbytes))

    stats = anyio.run(lambda: size(store, sid, progress=Rec()))
    phase = events.index(("total", stats.files, stats.logical_bytes))
    downloaded = events[:phase]
    assert downloaded, events
    assert all(kind == "done" and files == 0 for kind, files, _ in downloaded)
    assert sum(n for _, _, n in downloaded) == stored.stat().st_size
    assert events[phase + 1 :] == [("done", stats.files, stats.logical_bytes)]
    # a store of many snapshots reports each snapshot, not the manifests' bytes
    events.clear()
    anyio.run(lambda: size(store, progress=Rec()))
    assert events == [("done", stats.files, stats.logical_bytes)]
