"""A hostile owner of the destination racing pulls and checkouts, concurrent pulls into one
destination, and trees deeper and longer than path-based calls allow.

The rule checked throughout: whatever the owner of the destination swaps while a pull runs
(its sub-directories, the staging directory, a staged file), nothing outside the destination
is created, written, truncated, chmod-ed, renamed or deleted, and a pull that reports
success left exactly the snapshot. Races are driven deterministically through the plan's
steps (swap between prepare and fill, between fill and commit), and statistically by the
race campaign (an attacker process looping while many pulls run).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import snapdir
from snapdir import _snapdir
from storeutil import b3, cli_env, make_store, run

REPO = Path(__file__).resolve().parents[1]


def _load_campaign() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "race_campaign", REPO / "scripts" / "race_campaign.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["race_campaign"] = module
    spec.loader.exec_module(module)
    return module


race_campaign = _load_campaign()

NOBODY = 65534
LOCK = ".snapdir-staging.lock"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (attacker as nobody)")


@pytest.fixture
def area() -> Iterator[Path]:
    """A world-traversable area (``nobody`` must reach the destination) with a sentinel
    directory standing for everything outside the destination."""
    d = Path(tempfile.mkdtemp(prefix="snapdir-dest-races-"))
    os.chmod(d, 0o755)
    s = d / "sentinel"
    s.mkdir()
    for i in range(3):
        (s / f"s{i}").write_bytes(b"sentinel %d\n" % i)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def outside(area: Path) -> dict[str, tuple[object, ...]]:
    """Everything in ``area`` but the destination (the sentinel, the store)."""
    found: dict[str, tuple[object, ...]] = race_campaign.state(area, skip=area / "dest")
    return found


def snapshot(area: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> str:
    """A ``file://`` store at ``area/store`` holding one snapshot; returns its id."""
    tree = area / "tree"
    for d in dirs:
        (tree / d).mkdir(parents=True, exist_ok=True)
    for p, data in files.items():
        (tree / p).parent.mkdir(parents=True, exist_ok=True)
        (tree / p).write_bytes(data)
    sid = run(lambda: snapdir.push(tree, f"file://{area / 'store'}"))
    shutil.rmtree(tree)
    return str(sid)


def tree_files(dest: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, names in os.walk(dest):
        dirnames[:] = [d for d in dirnames if not d.startswith(".snapdir-staging.")]
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(dest))] = p.read_bytes()
    return out


def plan_for(sid: str, area: Path, dest: Path, **kw: object) -> _snapdir.CheckoutPlan:
    from snapdir.stores.file import FileStore

    m = run(lambda: FileStore(f"file://{area / 'store'}").get_manifest(sid))
    return _snapdir.plan_checkout(m, str(dest), **kw)  # type: ignore[arg-type]


FILES = {f"a/b/f{i}": b"x%d\n" % i for i in range(6)} | {"top": b"top\n", "e": b""}


# -- deterministic races through the plan's steps --------------------------------------------


def test_staging_swapped_for_a_link_before_a_cloud_download(area: Path) -> None:
    """The Python download path writes through descriptors: a staging directory swapped for
    a link to the sentinel before the store writes changes nothing outside."""
    sid = snapshot(area, FILES)
    dest = area / "dest"
    plan = plan_for(sid, area, dest)
    plan.prepare()
    staged = Path(str(plan.staged_path(0))).parent
    before = outside(area)
    os.rename(staged, dest / "moved")
    os.symlink(area / "sentinel", staged)
    store = race_campaign.DownloadingStore(area / "store")
    from snapdir._pull import _download_staged

    run(lambda: _download_staged(plan, store, plan.needed(), jobs=4, progress=None))
    plan.commit()
    assert outside(area) == before
    got = tree_files(dest)
    for p, data in FILES.items():
        assert got[p] == data
    assert "moved" not in os.listdir(dest), "the moved staging directory was left behind"


def test_staged_file_swapped_for_a_hard_link_is_not_written_through(area: Path) -> None:
    """A staged name replaced by a hard link to a file outside (the same user can) is
    neither truncated nor written by the download, and never moved into the tree."""
    sid = snapshot(area, {"big": b"B" * 5000})
    dest = area / "dest"
    plan = plan_for(sid, area, dest)
    [fd] = plan.open_staged([0])
    staged = Path(str(plan.staged_path(0)))
    victim = area / "sentinel" / "s0"
    before = outside(area)
    os.unlink(staged)
    os.link(victim, staged)
    try:
        with open(f"/proc/self/fd/{fd}", "wb") as f:
            f.write(b"B" * 5000)
    finally:
        os.close(fd)
    with pytest.raises(snapdir.UnsafePathError):
        plan.commit()
    plan.abort()
    # The victim gained (then, with the staging directory, lost) a link; its content, mode
    # and times are untouched.
    assert outside(area) == before
    assert victim.read_bytes() == b"sentinel 0\n"
    assert not (dest / "big").exists()


def test_sub_directory_swapped_for_a_link_between_fill_and_commit(area: Path) -> None:
    sid = snapshot(area, FILES)
    dest = area / "dest"
    (dest / "a" / "b").mkdir(parents=True)
    plan = plan_for(sid, area, dest)
    plan.fill_from_store(str(area / "store"))
    before = outside(area)
    os.rename(dest / "a", dest / "a.moved")
    os.symlink(area / "sentinel", dest / "a")
    with pytest.raises(snapdir.UnsafePathError) as info:
        plan.commit()
    plan.abort()
    assert str(dest / "a") in str(info.value)
    assert outside(area) == before


@root_only
def test_root_pull_into_a_destination_owned_by_nobody_with_a_planted_lock_link(
    area: Path,
) -> None:
    """The owner plants a link (or a FIFO) at the lock file's name: refused, never
    followed (no truncation, no hang)."""
    sid = snapshot(area, FILES)
    dest = area / "dest"
    dest.mkdir()
    os.chown(dest, NOBODY, NOBODY)
    os.symlink(area / "sentinel" / "s1", dest / LOCK)
    before = outside(area)
    with pytest.raises(snapdir.UnsafePathError):
        run(lambda: snapdir.pull(sid, f"file://{area / 'store'}", dest))
    os.unlink(dest / LOCK)
    os.mkfifo(dest / LOCK)
    with pytest.raises(snapdir.UnsafePathError):
        run(lambda: snapdir.pull(sid, f"file://{area / 'store'}", dest))
    assert outside(area) == before


# -- an attacker process looping while pulls run ---------------------------------------------


@pytest.mark.parametrize(
    "mode",
    [pytest.param("root", marks=root_only), "same"],
)
def test_raced_pulls_never_write_outside_nor_report_a_wrong_tree(mode: str) -> None:
    """A short race campaign (both store paths alternate): the attacker — ``nobody`` against
    a root pull, or the same user — swaps directories, staging and staged files in a loop."""
    outcomes = race_campaign.run_mode(mode, rounds=24, seed=7, files=300)
    assert outcomes["outside"] == 0, outcomes
    assert outcomes["wrong-tree"] == 0, outcomes
    assert outcomes["crash"] == 0, outcomes
    assert sum(outcomes.values()) == 24


# -- two pulls into one destination ----------------------------------------------------------


def test_a_second_pull_waits_for_the_first_or_fails_with_no_wait(area: Path) -> None:
    one = snapshot(area, FILES)
    two = snapshot(area, {"other": b"2\n", "a/b/f0": b"changed\n"})
    dest = area / "dest"
    held = plan_for(one, area, dest)  # holds the destination's lock until committed
    env = cli_env()
    store = f"file://{area / 'store'}"
    r = subprocess.run(
        [sys.executable, "-m", "snapdir", "pull", two, str(dest), "--store", store, "--no-wait"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode != 0
    assert "CONFLICT" in r.stderr or "another pull or checkout" in r.stderr, r.stderr
    assert str(dest) in r.stderr
    with pytest.raises(snapdir.ConflictError) as info:
        run(lambda: snapdir.pull(two, store, dest, wait=False))
    assert str(dest) in str(info.value)
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapdir",
            "pull",
            two,
            str(dest),
            "--store",
            store,
            "--force",
            "--delete",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(1.5)
    assert waiting.poll() is None, waiting.communicate()
    held.fill_from_store(str(area / "store"))
    held.commit()
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "waiting for another pull or checkout" in err
    assert run(lambda: snapdir.id(dest)) == two
    assert not (dest / LOCK).exists()


def test_concurrent_pulls_leave_one_snapshot_whole(area: Path) -> None:
    """Many pulls of two snapshots into one destination at once: every one succeeds, one
    after the other, and the tree is the snapshot of the last to finish."""
    one = snapshot(area, {f"d{i % 7}/f{i}": b"1-%d" % i for i in range(400)})
    two = snapshot(area, {f"d{i % 5}/f{i}": b"2-%d" % i for i in range(300)})
    dest = area / "dest"
    store = f"file://{area / 'store'}"
    finished: list[str] = []
    errors: list[BaseException] = []

    def pull(sid: str) -> None:
        try:
            asyncio.run(snapdir.pull(sid, store, dest, force=True, delete=True))
            finished.append(sid)
        except BaseException as e:
            errors.append(e)

    def all_at_once() -> None:
        threads = [threading.Thread(target=pull, args=(s,)) for s in [one, two] * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with pytest.warns(snapdir.SnapdirWarning, match="waiting for another pull"):
        all_at_once()
    assert errors == []
    assert len(finished) == 6
    assert run(lambda: snapdir.id(dest)) == finished[-1]


# -- deep and long trees ---------------------------------------------------------------------


def deep_store(area: Path, depth: int, name: str = "d") -> tuple[str, str]:
    """A store with one chain of ``depth`` directories named ``name`` and a file at the
    bottom, laid out by hand (no walk needed); returns (id, the bottom file's path)."""
    empty = _snapdir.EMPTY_CHECKSUM
    data = b"deep\n"
    lines = [f"D 755 {empty} 0 ./"]
    p = "."
    for _ in range(depth):
        p += "/" + name
        lines.append(f"D 755 {empty} 0 {p}/")
    lines.append(f"F 644 {b3(data)} {len(data)} {p}/f")
    lines.append(f"F 644 {b3(b'top')} 3 ./top")
    text = "\n".join(sorted(lines, key=lambda s: s.split(" ", 4)[4].encode()))
    sid = make_store(area / "store", text, [data, b"top"])
    return sid, p[2:] + "/f"


def read_deep(dest: Path, rel: str) -> bytes:
    """Read ``rel`` under ``dest`` one directory at a time (the path is too long to open)."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = rel.split("/")
        for part in parts[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        with os.fdopen(ffd, "rb") as f:
            return f.read()
    finally:
        os.close(fd)


@pytest.mark.parametrize("command", ["pull", "checkout"])
def test_pull_and_checkout_of_5000_levels_with_few_descriptors(area: Path, command: str) -> None:
    """5,000 levels (a path of 10,000 bytes, beyond PATH_MAX) with RLIMIT_NOFILE at 256:
    descriptor-relative all the way, with a bounded number of descriptors."""
    sid, bottom = deep_store(area, 5000)
    assert len(bottom) > 4096
    dest = area / "dest"
    env = cli_env(SNAPDIR_CACHE_DIR=str(area / "store")) if command == "checkout" else cli_env()
    args = [sys.executable, "-m", "snapdir", command, sid, str(dest)]
    if command == "pull":
        args += ["--store", f"file://{area / 'store'}"]

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    for _ in range(2):  # the second run finds everything right (the plan walks it too)
        r = subprocess.run(
            args, capture_output=True, text=True, env=env, preexec_fn=low_limit, check=False
        )
        assert r.returncode == 0, r.stderr[-2000:]
    assert read_deep(dest, bottom) == b"deep\n"
    assert (dest / "top").read_bytes() == b"top"


def test_long_names_beyond_path_max(area: Path) -> None:
    sid, bottom = deep_store(area, 40, name="n" * 250)
    assert len(bottom) > 10_000
    dest = area / "dest"
    run(lambda: snapdir.pull(sid, f"file://{area / 'store'}", dest))
    assert read_deep(dest, bottom) == b"deep\n"
    # --delete of a long tree that is no longer in the snapshot removes it.
    other = snapshot(area, {"top": b"top"})
    run(lambda: snapdir.pull(other, f"file://{area / 'store'}", dest, delete=True))
    assert sorted(os.listdir(dest)) == ["top"]
