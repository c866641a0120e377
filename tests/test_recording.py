"""Recording a directory's life and replaying it: real inotify events (creates, appends,
rewrites, truncations, renames of files and directories, deletes, chmod), placeholders,
polling, the replay modes and time windows, the target's safety, and the same round trip
through an S3 server on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
from servers.seaweed import S3Server
from snapdir import ConflictError, InvalidArgumentError, UnsafePathError
from snapdir.recording import Recorder, info, ls, replay
from snapdir.recording.replay import MODES
from storeutil import cli_env, run_cli, uri, write


async def _record(
    src: Path, store: str, act: Callable[[Path], Awaitable[None]], **kw: Any
) -> dict[str, Any]:
    """Record ``src`` while ``act`` changes it; returns the sealed summary."""
    async with Recorder(src, store, **kw) as rec:

        async def go() -> None:
            await act(src)
            rec.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            await rec.run(duration=30)
    return rec.summary


async def _life(src: Path) -> None:
    """A directory's life: every kind of change, a little apart."""
    pause = 0.15
    write(src / "sub" / "deep" / "x.xml", "<x/>")
    await anyio.sleep(pause)
    with open(src / "a.txt", "a") as f:  # noqa: ASYNC230
        f.write("more\n")
    await anyio.sleep(pause)
    write(src / "rewritten.txt", "completely different")
    os.chmod(src / "a.txt", 0o600)
    await anyio.sleep(pause)
    os.rename(src / "sub", src / "moved")
    await anyio.sleep(pause)
    os.rename(src / "moved" / "deep" / "x.xml", src / "moved" / "y.xml")
    os.truncate(src / "trunc.log", 0)
    await anyio.sleep(pause)
    os.unlink(src / "gone.txt")
    os.mkdir(src / "empty", 0o750)
    await anyio.sleep(pause)


def _start_tree(src: Path) -> None:
    write(src / "a.txt", "hello\n")
    write(src / "rewritten.txt", "original")
    write(src / "trunc.log", "x" * 100)
    write(src / "gone.txt", "bye")


def test_round_trip_with_real_notifications(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    _start_tree(src)
    s = anyio.run(lambda: _record(src, store, _life, name="life"))
    kinds = s["by_kind"]
    for k in ("mkdir", "create", "append", "write", "chmod", "rename", "truncate", "delete"):
        assert kinds.get(k, 0) >= 1, (k, kinds)
    assert s["final_checkpoint"] == anyio.run(snapdir.id, src)
    # Appends store only the new bytes.
    d = anyio.run(info, "life", store)
    assert d["sealed"]
    assert d["final_checkpoint"] == s["final_checkpoint"]
    for mode in ("burst", "exact"):
        out = tmp_path / f"out-{mode}"
        rep = anyio.run(partial(replay, "life", store, out, mode=mode, verify="each"))
        assert rep.verified is True
        assert rep.target_id == s["final_checkpoint"]
        assert rep.checkpoints_verified >= 2
        assert anyio.run(snapdir.id, out) == s["final_checkpoint"]
    # exact mode keeps the recording's duration (within scheduler slack)
    assert rep.duration == pytest.approx(d["duration"] - d["checkpoints"][0]["t"], abs=0.3)
    assert [r["name"] for r in anyio.run(ls, store)] == ["life"]


def test_append_stores_only_new_bytes(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "big.log", b"a" * 200_000)

    async def act(p: Path) -> None:
        await anyio.sleep(0.2)
        with open(p / "big.log", "ab") as f:  # noqa: ASYNC230
            f.write(b"tail")
        await anyio.sleep(0.3)

    anyio.run(lambda: _record(src, store, act, name="app"))
    log = anyio.run(snapdir.recording.load, snapdir._common.open_wrapped(store), "app")
    events = [json.loads(e) for e in log.events_json(0, len(log))]
    app = [e for e in events if e["k"] == "append"]
    assert len(app) == 1
    assert (app[0]["o"], app[0]["s"]) == (200_000, 200_004)
    assert dict(log.objects(0, len(log)))[app[0]["h"]] == 4


def test_placeholders_are_reported_not_failures(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "keep.txt", "text")

    async def act(p: Path) -> None:
        write(p / "frame.tiff", b"\0\1\2\3" * 5000)
        write(p / "image.mrc", b"binary but forced text")
        write(p / "notes.txt", "plain")
        await anyio.sleep(0.3)

    s = anyio.run(
        lambda: _record(src, store, act, name="ph", content="text", placeholder=["*.mrc"])
    )
    assert s["by_kind"]["placeholder"] == 2
    for how in ("zeros", "sparse"):
        rep = anyio.run(partial(replay, "ph", store, tmp_path / how, mode="burst", placeholder=how))
        assert rep.placeholders == 2
        assert rep.verified is True
        assert (tmp_path / how / "frame.tiff").stat().st_size == 20000
        assert (tmp_path / how / "frame.tiff").read_bytes() == b"\0" * 20000
        assert (tmp_path / how / "notes.txt").read_text() == "plain"


def test_poll_mode_records_without_notifications(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "a", "1")

    async def act(p: Path) -> None:
        await anyio.sleep(0.1)
        write(p / "d" / "b", "2")
        await anyio.sleep(0.4)
        with open(p / "a", "a") as f:  # noqa: ASYNC230
            f.write("3")
        await anyio.sleep(0.4)

    s = anyio.run(lambda: _record(src, store, act, name="poll", poll=0.2))
    assert s["by_kind"]["create"] >= 2
    assert s["by_kind"]["append"] == 1
    rep = anyio.run(lambda: replay("poll", store, tmp_path / "out", mode="burst"))
    assert rep.verified
    assert anyio.run(snapdir.id, tmp_path / "out") == anyio.run(snapdir.id, src)


def test_time_windows_and_modes(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    src.mkdir()

    async def act(p: Path) -> None:
        for i in range(4):
            await anyio.sleep(0.3)
            write(p / f"f{i}", str(i))
        await anyio.sleep(0.2)

    anyio.run(lambda: _record(src, store, act, name="win"))
    outline = anyio.run(snapdir.recording.load, snapdir._common.open_wrapped(store), "win")
    times = {p: t / 1e6 for t, k, p in outline.outline() if k == "create"}
    cut = (times["f1"] + times["f2"]) / 2
    at = tmp_path / "at"
    rep = anyio.run(lambda: replay("win", store, at, at=cut))
    assert sorted(os.listdir(at)) == ["f0", "f1"]
    assert rep.verified is None
    until = tmp_path / "until"
    anyio.run(lambda: replay("win", store, until, mode="burst", until=cut))
    assert sorted(os.listdir(until)) == ["f0", "f1"]
    frm = tmp_path / "from"
    rep = anyio.run(lambda: replay("win", store, frm, mode="exact", start=times["f2"]))
    assert rep.verified
    assert sorted(os.listdir(frm)) == ["f0", "f1", "f2", "f3"]
    # The events before f2 were applied at once: the last one was scheduled about f3 - f2
    # after the start, not f3 - f0. (Its scheduled offset is the replay's duration minus how
    # late it started, so a slow machine does not change it.)
    scheduled_last = rep.duration - rep.lateness["last"]
    assert scheduled_last < times["f3"] - times["f1"], (scheduled_last, times)
    assert MODES["fast"] == (100.0, 1.0)
    assert MODES["dev"] == (1000.0, 0.1)
    with pytest.raises(InvalidArgumentError):
        anyio.run(lambda: replay("win", store, tmp_path / "x", mode="warp"))


def test_target_safety(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "d" / "f", "x")
    anyio.run(lambda: _record(src, store, lambda p: anyio.sleep(0.1), name="safe"))
    busy = tmp_path / "busy"
    write(busy / "other", "keep me")
    with pytest.raises(ConflictError):
        anyio.run(lambda: replay("safe", store, busy, mode="burst"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (busy / "d").symlink_to(outside)
    rep = anyio.run(lambda: replay("safe", store, busy, mode="burst", into_existing=True))
    assert rep.verified is True  # the recording's paths match; "other" is left alone
    assert list(outside.iterdir()) == []  # the link was replaced, never followed
    assert (busy / "d").is_dir()
    assert not (busy / "d").is_symlink()
    assert (busy / "other").read_text() == "keep me"
    link = tmp_path / "link"
    link.symlink_to(outside)
    with pytest.raises(UnsafePathError):
        anyio.run(lambda: replay("safe", store, link, mode="burst"))


def test_setuid_is_dropped(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "tool", "#!/bin/sh\n", mode=0o4755)
    anyio.run(lambda: _record(src, store, lambda p: anyio.sleep(0.1), name="suid"))
    out = tmp_path / "out"
    rep = anyio.run(lambda: replay("suid", store, out, mode="burst"))
    assert rep.verified is True  # verified but for the special bits, which are dropped
    assert rep.target_id != rep.final_checkpoint
    assert (out / "tool").stat().st_mode & 0o7777 == 0o755


def test_cli_record_sigterm_seals_and_replays(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "a", "1")
    env = cli_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", "record", str(src), "--store", store, "--name",
         "cli", "--checkpoint-every", "1s", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        root = tmp_path / "store" / ".snapdir" / "recordings" / "cli" / "head"
        while not (root.is_dir() and any(root.iterdir())):
            assert time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        write(src / "b", "2")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["final_checkpoint"] == anyio.run(snapdir.id, src)
    listed = run_cli("--json", "recording", "ls", "--store", store)
    assert json.loads(listed.stdout)["recordings"][0]["sealed"] is True
    rep = run_cli("--json", "replay", "cli", str(tmp_path / "out"), "--store", store, "--burst")
    assert rep.returncode == 0, rep.stderr
    assert json.loads(rep.stdout)["verified"] is True
    journal = json.loads(run_cli("--json", "ls", "--store", store).stdout)["snapshots"]
    assert journal[0]["labels"] == ["recording:cli"]


def test_burst_of_writes_overflowing_the_queue(tmp_path: Path) -> None:
    """A writer as fast as it can: whatever the kernel drops, reconciliation records."""
    src, store = tmp_path / "src", uri(tmp_path / "store")
    src.mkdir()

    async def act(p: Path) -> None:
        for i in range(6000):
            d = p / f"d{i % 20}"
            d.mkdir(exist_ok=True)
            (d / f"f{i}").write_text(str(i))
            if i % 3 == 0:
                (d / f"f{i}").unlink()
        await anyio.sleep(0.2)

    s = anyio.run(lambda: _record(src, store, act, name="burst"))
    assert s["final_checkpoint"] == anyio.run(snapdir.id, src)
    rep = anyio.run(lambda: replay("burst", store, tmp_path / "out", mode="burst"))
    assert rep.verified is True


def _max_queued_events() -> int:
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        return int(f.read())


def _overflowing_writer(src: Path, ops: int) -> None:
    """``ops`` operations, each naming a different file from the one before (the kernel
    merges an event only into an identical last one, so every operation queues at least one
    event): creates, appends round-robin over the live files, deletes; last a sentinel. The
    directories exist already: one made while the recorder is stopped has no watch yet."""
    live: list[Path] = []
    for i in range(ops):
        if i % 50 == 0 or not live:
            p = src / f"d{i % 7}" / f"f{i}.xml"
            p.write_text(f"<x>{i}</x>\n")
            live.append(p)
        elif i % 97 == 0 and len(live) > 1:
            live.pop(0).unlink()
        else:
            with open(live[i % len(live)], "a") as f:
                f.write(f"{i}\n")
    (src / "sentinel").write_text("written last")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify's queue")
def test_overflow_of_a_stopped_recorder_is_detected_and_reconciled(tmp_path: Path) -> None:
    """The recorder is stopped (SIGSTOP) while a writer queues more events than inotify
    holds, so the kernel reports IN_Q_OVERFLOW once it runs again: the recorder must count
    it, walk the tree, and seal a final checkpoint equal to the directory's id."""
    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "a", "1")
    for d in range(7):
        (src / f"d{d}").mkdir()
    ops = _max_queued_events() + 2000
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", "record", str(src), "--store", store, "--name",
         "ovf", "--checkpoint-every", "1h", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        head = tmp_path / "store" / ".snapdir" / "recordings" / "ovf" / "head"
        while not (head.is_dir() and any(head.iterdir())):
            assert proc.poll() is None, proc.stderr
            assert time.monotonic() < deadline, "the recorder did not start"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            _overflowing_writer(src, ops)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # The sentinel's own notification was dropped with the overflow: only the walk the
        # overflow triggers records it (the recording is read back live, chain verified).
        from snapdir._common import open_wrapped
        from snapdir.recording import load

        wrapped = open_wrapped(store)
        deadline = time.monotonic() + 120
        while True:
            log = anyio.run(load, wrapped, "ovf")
            if any(p == "sentinel" for _, _, p in log.outline()):
                break
            assert proc.poll() is None, "the recorder exited"
            assert time.monotonic() < deadline, "never reconciled"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["overflows"] >= 1
    assert doc["final_checkpoint"] == anyio.run(snapdir.id, src)
    rep = anyio.run(lambda: replay("ovf", store, tmp_path / "out", mode="burst"))
    assert rep.verified is True
    assert rep.final_checkpoint == doc["final_checkpoint"]


@pytest.fixture
def s3_store(seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    client = seaweedfs.client()
    bucket = f"snapdir-rec-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.close()
    seaweedfs.use_env(monkeypatch.setenv, monkeypatch.delenv)
    return f"s3://{bucket}/rec"


def test_round_trip_on_s3(tmp_path: Path, s3_store: str) -> None:
    src = tmp_path / "src"
    _start_tree(src)
    s = anyio.run(lambda: _record(src, s3_store, _life, name="s3life"))
    assert s["final_checkpoint"] == anyio.run(snapdir.id, src)
    rep = anyio.run(lambda: replay("s3life", s3_store, tmp_path / "out", mode="burst"))
    assert rep.verified is True
    assert anyio.run(info, "s3life", s3_store)["events"] == s["events"]


def test_epuplayer_export_then_import(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    _start_tree(src)
    s = anyio.run(lambda: _record(src, store, _life, name="life"))
    archive = tmp_path / "life.tar.gz"
    proc = run_cli("--json", "recording", "export", "life", "--store", store, "-o", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["events"] > 5
    proc = run_cli("--json", "recording", "import", str(archive), "--store", store,
                   "--name", "back")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rep = anyio.run(lambda: replay("back", store, tmp_path / "out", mode="burst"))
    assert rep.verified is True
    # epuplayer has no permissions: the files and their contents come back
    got = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes()
           for p in (tmp_path / "out").rglob("*") if p.is_file()}  # fmt: skip
    want = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert got == want
    assert doc["final_checkpoint"] == rep.target_id
    assert s["events"] > 0


def test_record_from_snapshots(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    tree = tmp_path / "tree"
    write(tree / "a.txt", "one")
    write(tree / "d" / "b.txt", "two")
    ids = [anyio.run(partial(snapdir.push, tree, store))]
    write(tree / "a.txt", "one, then more")
    (tree / "d" / "b.txt").unlink()
    write(tree / "e" / "c.txt", "three")
    os.chmod(tree / "a.txt", 0o600)
    ids.append(anyio.run(partial(snapdir.push, tree, store)))
    proc = run_cli("--json", "record", "--from-snapshots", *ids, "--store", store,
                   "--name", "nightly")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["checkpoints"] == 2
    rep = anyio.run(partial(replay, "nightly", store, tmp_path / "out", verify="each",
                            mode="burst"))  # fmt: skip
    assert rep.verified is True
    assert rep.checkpoints_verified == 2
    assert rep.target_id == ids[-1]


def test_chaos_is_reproducible_and_still_verifies(tmp_path: Path) -> None:
    src, store = tmp_path / "src", uri(tmp_path / "store")
    src.mkdir()

    async def act(p: Path) -> None:
        for i in range(40):
            write(p / f"d{i % 4}" / f"f{i}", str(i))
            if i % 5 == 0:
                write(p / f"d{i % 4}" / f"f{i}", f"again {i}")
        await anyio.sleep(0.3)

    anyio.run(lambda: _record(src, store, act, name="ch"))
    seen: list[list[tuple[str, str]]] = []
    for k in range(2):
        got: list[tuple[str, str]] = []

        def note(e: dict[str, Any], got: list[tuple[str, str]] = got) -> None:
            got.append((e["k"], e.get("p", "")))

        rep = anyio.run(
            partial(replay, "ch", store, tmp_path / f"o{k}", mode="burst", chaos=7, on_event=note)
        )
        assert rep.verified is True
        seen.append(got)
    assert seen[0] == seen[1]
    plain: list[tuple[str, str]] = []
    anyio.run(
        partial(replay, "ch", store, tmp_path / "plain", mode="burst",
                on_event=lambda e: plain.append((e["k"], e.get("p", ""))))
    )  # fmt: skip
    assert seen[0] != plain


def _nested_recording(tmp_path: Path, store: str) -> None:
    """A recording (from two snapshots, so its events are fixed) that makes directories
    with files and subdirectories inside them."""
    from snapdir.recording.snapshots import record_from_snapshots

    tree = tmp_path / "tree"
    write(tree / "top.txt", "top")
    ids = [anyio.run(partial(snapdir.push, tree, store))]
    for d in range(4):
        write(tree / f"new{d}" / "a.xml", f"<a>{d}</a>" * 40)
        write(tree / f"new{d}" / "deep" / "b.xml", f"<b>{d}</b>")
    write(tree / "top.txt", "top, rewritten " * 100)
    ids.append(anyio.run(partial(snapdir.push, tree, store)))
    anyio.run(partial(record_from_snapshots, ids, store, name="nested"))


def _replayed(tmp_path: Path, store: str, out: str, **kw: Any) -> list[tuple[str, str]]:
    got: list[tuple[str, str]] = []
    rep = anyio.run(
        partial(replay, "nested", store, tmp_path / out, mode="burst",
                on_event=lambda e: got.append((e["k"], e.get("p", ""))), **kw)
    )  # fmt: skip
    assert rep.verified is True
    return got


def _children_before_parents(seq: list[tuple[str, str]]) -> list[str]:
    made: set[str] = set()
    early = []
    for k, p in seq:
        if k == "mkdir":
            made.add(p)
        parent = p.rsplit("/", 1)[0] if "/" in p else ""
        if k in ("create", "mkdir") and parent and parent not in made:
            early.append(p)
    return early


def test_chaos_children_first_is_reproducible_and_verifies(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    _nested_recording(tmp_path, store)
    plain = _replayed(tmp_path, store, "plain", chaos=3)
    assert _children_before_parents(plain) == []
    first = [_replayed(tmp_path, store, f"c{k}", chaos=3, chaos_children_first=True,
                       chaos_split_writes=3) for k in range(2)]  # fmt: skip
    assert first[0] == first[1]
    early = _children_before_parents(first[0])
    assert early  # children reported (and made) before their parent's mkdir
    assert all(p.startswith("new") for p in early)
    other = _replayed(tmp_path, store, "other", chaos=4, chaos_children_first=True)
    assert other != first[0]
    # a directory made on the way ends with the mode its mkdir recorded
    assert (tmp_path / "c0" / "new0").stat().st_mode & 0o777 == (
        tmp_path / "tree" / "new0"
    ).stat().st_mode & 0o777


def test_chaos_options_need_a_seed(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    _nested_recording(tmp_path, store)
    with pytest.raises(InvalidArgumentError):
        _replayed(tmp_path, store, "x", chaos_children_first=True)
    with pytest.raises(InvalidArgumentError):
        _replayed(tmp_path, store, "y", chaos=1, chaos_split_writes=0)
    proc = run_cli("replay", "nested", str(tmp_path / "z"), "--store", store,
                   "--chaos-split-writes", "4")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    proc = run_cli("--json", "replay", "nested", str(tmp_path / "w"), "--store", store,
                   "--burst", "--chaos", "9", "--chaos-children-first",
                   "--chaos-split-writes", "4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verified"] is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_chaos_split_write_is_seen_by_a_watcher_as_several_events(tmp_path: Path) -> None:
    """The recorder's own notification source watches the target: a write split in N
    chunks is N opens, modifications and closes there, not one of each."""
    from snapdir._snapdir import Watch

    store = uri(tmp_path / "store")
    _nested_recording(tmp_path, store)

    def notifications(out: str, split: int) -> int:
        target = tmp_path / out
        target.mkdir()
        w = Watch(str(target))
        try:
            _replayed(tmp_path, store, out, chaos=2, chaos_split_writes=split)
            (target / "sentinel").write_text("last")  # inotify keeps the order
            seen: list[str] = []
            deadline = time.monotonic() + 30
            while str(target / "sentinel") not in seen:
                assert time.monotonic() < deadline
                paths, _overflow, _ = w.next_batch(1.0, 100_000)
                seen += [str(p) for p in paths]
        finally:
            w.close()
        return seen.count(str(target / "top.txt"))

    whole, split = notifications("whole", 1), notifications("split", 4)
    # three more chunks, each an open, a modification and a close-write (the kernel may
    # merge the truncation's modification into the first write's in either run: one less)
    assert split >= whole + 3 * 3 - 1, (whole, split)
    assert (tmp_path / "split" / "top.txt").read_bytes() == (
        tmp_path / "tree" / "top.txt"
    ).read_bytes()


async def _tagged_life(src: Path) -> None:
    write(src / "sub" / "x.xml", "<x/>")
    await anyio.sleep(0.15)
    with open(src / "a.txt", "a") as f:  # noqa: ASYNC230
        f.write("more\n")
    await anyio.sleep(0.15)


def _check_release_replay(tmp_path: Path, store: str) -> None:
    """Two recordings tagged as releases of one name: ranges pick the recording, and the
    checks (a taken version, a release not made by a recording, a forged message)."""
    from snapdir.names import tag

    src = tmp_path / "src"
    write(src / "a.txt", "hello\n")
    s1 = anyio.run(lambda: _record(src, store, _tagged_life, name="rec-a", tag="cal@1.0.0"))
    assert s1["tag"] == "cal@1.0.0"
    s2 = anyio.run(lambda: _record(src, store, _tagged_life, name="rec-b", tag="cal@1.1.0"))
    assert s2["tag"] == "cal@1.1.0"
    rep = anyio.run(lambda: replay("cal@>=1,<1.1", store, tmp_path / "o1", mode="burst"))
    assert rep.verified is True
    assert (rep.name, rep.target_id) == ("rec-a", s1["final_checkpoint"])
    rep = anyio.run(lambda: replay("cal@^1", store, tmp_path / "o2", mode="burst"))
    assert (rep.name, rep.target_id) == ("rec-b", s2["final_checkpoint"])
    with pytest.raises(ConflictError):  # taken: refused before recording anything
        anyio.run(lambda: _record(src, store, _tagged_life, name="rec-c", tag="cal@1.0.0"))
    assert "rec-c" not in {r["name"] for r in anyio.run(ls, store)}
    anyio.run(partial(tag, store, "plain@1.0.0", s1["final_checkpoint"]))
    with pytest.raises(snapdir.NotFoundError):
        anyio.run(lambda: replay("plain@1", store, tmp_path / "o3", mode="burst"))
    # a release whose message names a recording that ends elsewhere is not followed
    anyio.run(
        partial(tag, store, "forged@1.0.0", s2["final_checkpoint"], message="recording:rec-a")
    )
    with pytest.raises(ConflictError):
        anyio.run(lambda: replay("forged@1", store, tmp_path / "o4", mode="burst"))


def test_recording_named_as_a_release(tmp_path: Path) -> None:
    _check_release_replay(tmp_path, uri(tmp_path / "store"))


def test_recording_named_as_a_release_on_s3(tmp_path: Path, s3_store: str) -> None:
    _check_release_replay(tmp_path, s3_store)


def test_cli_record_tag_and_replay_a_range(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    tree = tmp_path / "tree"
    write(tree / "a.txt", "one")
    ids = [anyio.run(partial(snapdir.push, tree, store))]
    write(tree / "d" / "b.txt", "two")
    ids.append(anyio.run(partial(snapdir.push, tree, store)))
    proc = run_cli("--json", "record", "--from-snapshots", *ids, "--store", store,
                   "--name", "nightly", "--tag", "nightly-rec@2.0.0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tag"] == "nightly-rec@2.0.0"
    proc = run_cli("--json", "record", "--from-snapshots", *ids, "--store", store,
                   "--name", "again", "--tag", "nightly-rec@2.0.0")  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    rep = run_cli("--json", "replay", "nightly-rec@2", str(tmp_path / "out"), "--store", store,
                  "--burst")  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(rep.stdout)
    assert (doc["name"], doc["target_id"], doc["verified"]) == ("nightly", ids[-1], True)
    # info and export read the recording a release names, as replay does
    by_name = run_cli("--json", "recording", "info", "nightly", "--store", store)
    by_ref = run_cli("--json", "recording", "info", "nightly-rec@^2", "--store", store)
    assert by_ref.returncode == 0, by_ref.stderr
    assert json.loads(by_ref.stdout) == json.loads(by_name.stdout)
    assert json.loads(by_ref.stdout)["final_checkpoint"] == ids[-1]
    archives = []
    for ref in ("nightly", "nightly-rec@2.0.0"):
        out = tmp_path / f"{ref}.tar.gz"
        proc = run_cli("recording", "export", ref, "--format", "epuplayer", "-o", str(out),
                       "--store", store)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        archives.append(out)
    assert _members(archives[0]) == _members(archives[1])
    missing = run_cli("--json", "recording", "info", "nightly-rec@3", "--store", store)
    assert missing.returncode == 4, missing.stderr
    message = json.loads(missing.stdout)["error"]["message"]
    assert "nightly-rec" in message, message
    assert "'3'" in message, message


def _members(archive: Path) -> dict[str, bytes]:
    """An archive's members and their bytes (gzip's own header holds a time; this does not)."""
    import tarfile

    with tarfile.open(archive) as tf:
        return {
            m.name: (f.read() if (f := tf.extractfile(m)) is not None else b"")
            for m in tf.getmembers()
        }


def test_gc_roots_and_top_level_api(tmp_path: Path) -> None:
    from snapdir.recording.roots import gc_roots

    src, store = tmp_path / "src", uri(tmp_path / "store")
    write(src / "a", "1")

    async def act(p: Path) -> None:
        with open(p / "a", "a") as f:  # noqa: ASYNC230
            f.write("2")
        await anyio.sleep(0.3)

    s = anyio.run(lambda: _record(src, store, act, name="roots"))
    snaps, objs = anyio.run(gc_roots, snapdir._common.open_wrapped(store))
    assert s["final_checkpoint"] in snaps
    log = anyio.run(snapdir.recording.load, snapdir._common.open_wrapped(store), "roots")
    assert set(log.segments()) <= objs
    assert {d for d, _ in log.objects(0, len(log))} <= objs
    assert snapdir.Recorder is Recorder
    assert snapdir.replay is replay
