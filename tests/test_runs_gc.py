"""A run holds collection intents for what it uploads until the record (and its outputs'
journal entries) root it: the byproduct objects (stdout, stderr, the git diff, pre-command
outputs), and its input and output trees, which are pushed without journal entries. A
``gc --grace 0`` run at exactly the risky points (driven by a hook or by a child blocked on
a FIFO, not by timing) deletes none of it, while it does delete an unrooted object (so it
really collected); the keep-alive replaces an intent before it expires; a cancelled run
leaves no intent.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
import snapdir.runs.ops as ops
from runsutil import project, store_uri
from snapdir.lifecycle import adopt
from snapdir.lifecycle.gc import gc
from snapdir.lifecycle.intents import INTENTS, Guard, keep_alive, parse_intent, protect
from snapdir.runs.layout import read_record, write_record
from snapdir.stores import open_store
from snapdir.stores._base import hex_from_key

PY = sys.executable
PROG = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"


@pytest.fixture(params=["file", "s3"])
def uri2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_uri(str(request.param), request, monkeypatch)


async def _with_store(uri: str, fn: Any) -> Any:
    st = open_store(uri)
    try:
        return await fn(st)
    finally:
        await st.aclose()


async def snapdir_id(path: Path) -> str:
    from snapdir import _manifest

    return str(await _manifest.id(str(path)))


def snapdir_list_runs(uri: str) -> list[Any]:
    return anyio.run(_with_store, uri, ops.list_runs)


def test_gc_between_upload_and_record_loses_nothing(
    uri2: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    stray = tmp_path / "stray"
    stray.write_bytes(b"nobody names me\n")
    stray_digest = snapdir._snapdir.blake3_hex(stray.read_bytes())

    async def prepare(st: Any) -> None:
        await snapdir.push(root / "data", st)  # a store with content, adopted: managed
        await adopt(st)
        await st.put_object(stray_digest, str(stray), stray.stat().st_size)

    anyio.run(_with_store, uri2, prepare)

    real = write_record
    collected: list[Any] = []

    async def collect_then_write(store: Any, data: bytes) -> Any:
        collected.append(await gc(store, grace=timedelta(0)))
        return await real(store, data)

    monkeypatch.setattr(ops, "write_record", collect_then_write)

    async def go() -> Any:
        return await ops.run_command(
            [PY, "-c", PROG], store=uri2, pre=["echo from pre"], cwd=root, stream=False,
            git=False, config=False,
        )  # fmt: skip

    r = anyio.run(go)
    assert r.status == 0
    (report,) = collected
    assert report.objects >= 1  # it collected: the stray object went
    monkeypatch.setattr(ops, "write_record", real)

    async def check(st: Any) -> tuple[Any, dict[str, bool]]:
        rec = await read_record(st, r.record)
        bps = rec.raw["predicate"]["runDetails"]["byproducts"]
        named = {b["name"]: b["digest"]["blake3"] for b in bps if "digest" in b}
        return rec, {n: await st.has_object(d) for n, d in named.items()} | {
            "stray": await st.has_object(stray_digest)
        }

    rec, present = anyio.run(_with_store, uri2, check)
    assert set(present) == {"stdout", "stderr", "pre-0", "stray"}
    assert present == {"stdout": True, "stderr": True, "pre-0": True, "stray": False}
    # the intent is gone, and the record keeps its objects from the next collection
    again = anyio.run(_with_store, uri2, lambda st: gc(st, grace=timedelta(0)))
    assert again.objects == 0
    assert anyio.run(_with_store, uri2, check)[1]["stdout"]
    if uri2.startswith("file://"):
        intents = Path(uri2[len("file://") :]) / ".snapdir" / "intents"
        assert not intents.exists() or os.listdir(intents) == []
    assert rec.stdout is not None
    assert rec.stdout.size == len(b"to stdout\n")


# -- a run's input and output snapshots, held while the command runs ----------------------

#: The child: says it started (opens the first FIFO: blocks until the test reads), waits
#: for the test's go (the second FIFO), then makes its output.
BLOCKING = (
    "import os, sys\n"
    "with open(sys.argv[1], 'w') as f: f.write('started')\n"
    "with open(sys.argv[2]) as f: f.read()\n"
    "os.makedirs('out', exist_ok=True)\n"
    "with open('out/made.txt', 'w') as f: f.write('made by the run\\n')\n"
)


def _fifos(tmp_path: Path) -> tuple[str, str]:
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    os.mkfifo(started)
    os.mkfifo(go)
    return started, go


def _read(fifo: str) -> str:
    with open(fifo) as f:
        return f.read()


def _write(fifo: str) -> None:
    with open(fifo, "w") as f:
        f.write("go")


def _unblock(*fifos: str) -> None:
    """Whatever still waits on a FIFO (the test failed early) is let go: opening one
    for reading and writing never blocks, and completes the other side's open."""
    for fifo in fifos:
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        os.close(fd)


async def _intents(st: Any) -> set[str]:
    return {k.key for k in await st.list_keys(INTENTS)}


def _managed_with_stray(root: Path, tmp_path: Path, uri: str) -> str:
    """Adopt the store (so it is collected), with one unrooted object: proof a
    collection really deleted something."""
    stray = tmp_path / "stray"
    stray.write_bytes(b"nobody names me either\n")
    digest = snapdir._snapdir.blake3_hex(stray.read_bytes())

    async def prepare(st: Any) -> None:
        await snapdir.push(root / "data", st)
        await adopt(st)
        await st.put_object(digest, str(stray), stray.stat().st_size)

    anyio.run(_with_store, uri, prepare)
    return digest


def test_gc_while_the_command_runs_keeps_its_inputs_and_outputs(
    uri2: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``gc --grace 0`` while the command is blocked, and one between the outputs'
    push and the record: the input and output snapshots (pushed without a journal
    entry) survive both, and verify."""
    root = project(tmp_path)
    (root / "inp").mkdir()
    (root / "inp" / "only-here.txt").write_text("an input no journal names\n")
    stray = _managed_with_stray(root, tmp_path, uri2)
    input_id = str(anyio.run(snapdir_id, root / "inp"))
    started, go = _fifos(tmp_path)

    real = write_record
    late: list[Any] = []

    async def collect_then_write(store: Any, data: bytes) -> Any:
        late.append(await gc(store, grace=timedelta(0)))
        return await real(store, data)

    monkeypatch.setattr(ops, "write_record", collect_then_write)
    box: dict[str, Any] = {}

    async def main() -> None:
        async def run() -> None:
            box["r"] = await ops.run_command(
                [PY, "-c", BLOCKING, started, go], store=uri2, inputs=["inp"],
                outputs=["out"], cwd=root, stream=False, git=False, config=False,
            )  # fmt: skip

        st = open_store(uri2)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(60):
                    assert await anyio.to_thread.run_sync(_read, started, abandon_on_cancel=True)
                box["during"] = await gc(st, grace=timedelta(0))
                box["held"] = await st.has_manifest(input_id)
                box["intents"] = len(await _intents(st))
                await anyio.to_thread.run_sync(_write, go)
        finally:
            _unblock(started, go)
            await st.aclose()

    anyio.run(main)
    r = box["r"]
    assert r.status == 0
    assert box["during"].objects >= 1  # it collected: the stray object went
    assert box["held"]
    assert box["intents"] == 1  # the input's (the byproducts come after the command)
    (after_outputs,) = late
    assert r.outputs["out"] not in after_outputs.manifests
    assert r.inputs == {"inp": input_id}

    async def check(st: Any) -> tuple[bool, set[str]]:
        for sid in (input_id, r.outputs["out"]):
            await snapdir.verify(sid, st)
        return await st.has_object(stray), await _intents(st)

    assert anyio.run(_with_store, uri2, check) == (False, set())
    # rooted now by the record and the output's journal entry
    assert anyio.run(_with_store, uri2, lambda st: gc(st, grace=timedelta(0))).manifests == []
    anyio.run(_with_store, uri2, check)


def test_cancelled_run_removes_its_intents(uri2: str, tmp_path: Path) -> None:
    """A run cancelled while its command runs leaves no intent behind (nor a record)."""
    root = project(tmp_path)
    started, go = _fifos(tmp_path)

    async def main() -> set[str]:
        async def run() -> None:
            await ops.run_command(
                [PY, "-c", BLOCKING, started, go], store=uri2, inputs=["data"],
                outputs=["out"], cwd=root, stream=False, git=False, config=False,
            )  # fmt: skip

        st = open_store(uri2)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(60):
                    await anyio.to_thread.run_sync(_read, started, abandon_on_cancel=True)
                assert len(await _intents(st)) == 1
                tg.cancel_scope.cancel()
                # the command itself is not cancelled: it is let finish
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_write, go)
            return await _intents(st)
        finally:
            _unblock(started, go)
            await st.aclose()

    assert anyio.run(main) == set()
    assert snapdir_list_runs(uri2) == []


def test_run_refreshes_its_intents_while_the_command_runs(
    uri2: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny TTL, the run's keep-alive replaces the input's intent while the
    command is blocked (awaited as an event), and the run completes as usual."""
    import snapdir.lifecycle.intents as intents

    root = project(tmp_path)
    started, go = _fifos(tmp_path)
    monkeypatch.setattr(intents, "INTENT_TTL", timedelta(seconds=4))
    real = intents.keep_alive
    renewals: list[Any] = []
    box: dict[str, Any] = {}

    async def observed(guards: Any, every: float, **kw: Any) -> None:
        def on(g: Guard) -> None:
            renewals.append(g.key)
            box["renewed"].set()

        await real(guards, every, renewed=on)

    monkeypatch.setattr(intents, "keep_alive", observed)

    async def main() -> None:
        box["renewed"] = anyio.Event()

        async def run() -> None:
            box["r"] = await ops.run_command(
                [PY, "-c", BLOCKING, started, go], store=uri2, inputs=["data"],
                outputs=["out"], cwd=root, stream=False, git=False, config=False,
            )  # fmt: skip

        st = open_store(uri2)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(60):
                    await anyio.to_thread.run_sync(_read, started, abandon_on_cancel=True)
                    before = await _intents(st)
                    while not renewals or renewals[-1] in before:  # one written after it
                        box["renewed"] = anyio.Event()
                        await box["renewed"].wait()
                box["after"] = await _intents(st)
                box["before"] = before
                await anyio.to_thread.run_sync(_write, go)
        finally:
            _unblock(started, go)
            await st.aclose()

    anyio.run(main)
    assert box["r"].status == 0
    assert renewals
    assert len(box["after"]) == 1  # the old intent deleted
    assert not box["after"] & box["before"]  # replaced by a fresh one


def test_keep_alive_replaces_the_intent_before_it_expires(uri2: str) -> None:
    """With a tiny TTL, the keep-alive writes a fresh intent (and deletes the old one)
    half way to the expiry: the renewal is awaited as an event, not slept for."""
    ttl = timedelta(seconds=4)
    digest = "ab" * 32

    async def go(st: Any) -> None:
        began = time.monotonic()
        async with protect(st, objects=[digest], ttl=ttl) as guard:
            first = guard.key
            assert await _intents(st) == {first}
            renewed = anyio.Event()
            when: list[float] = []

            def on(g: Guard) -> None:
                when.append(time.monotonic())
                renewed.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    functools.partial(keep_alive, [guard], ttl.total_seconds() / 2, renewed=on)
                )
                with anyio.fail_after(60):
                    await renewed.wait()
                tg.cancel_scope.cancel()
            assert when[0] - began < ttl.total_seconds()
            assert guard.key != first
            assert guard.refreshed == 1
            assert await _intents(st) == {guard.key}
            assert guard.key is not None
            data = await st.get_bytes(guard.key, max_size=1 << 20)
            assert parse_intent(guard.key, datetime.now(timezone.utc), data).objects == (digest,)
        assert await _intents(st) == set()

    anyio.run(_with_store, uri2, go)


def test_holding_request_cost_on_s3(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What holding a run's snapshots costs on S3 (docs/design/runs.md): a run with one
    input and one output (each a small tree) against the same run without the holds."""
    make = "import os; os.makedirs('out', exist_ok=True); open('out/o.txt', 'w').write('o\\n')"

    def counted(name: str) -> int:
        root = project(tmp_path / name)
        uri = store_uri("s3", request, monkeypatch)

        async def go() -> int:
            st = open_store(uri)
            try:
                await snapdir.push(root / "data", st)  # the store exists, managed
                before = st.request_count()
                r = await ops.run_command(
                    [PY, "-c", f"{make}; print('out')"], store=st, inputs=["data"],
                    outputs=["out"], cwd=root, stream=False, git=False, config=False,
                )  # fmt: skip
                assert r.status == 0
                return int(st.request_count() - before)
            finally:
                await st.aclose()

        return anyio.run(go)

    held = counted("held")

    async def nothing(self: Any, sid: str, path: str, what: str) -> None:
        return None

    async def settle_named(self: Any) -> None:  # the byproducts' settle before the holds
        for guard, reupload in zip(self.guards, self._reuploads, strict=True):
            await guard.settle(reupload)

    monkeypatch.setattr(ops._Holds, "snapshot", nothing)
    monkeypatch.setattr(ops._Holds, "settle", settle_named)
    bare = counted("bare")
    print(f"run requests on S3: {held} held, {bare} without the holds")
    # per snapshot (input, output): manifest GET, plans LIST, intent PUT, plans LIST,
    # object shard LISTs (one per distinct 3-hex prefix), manifest HEAD, intent DELETE;
    # and the byproducts' shard LISTs (stdout: one object)
    input_shards = 2  # a.txt, b.txt
    assert held - bare == (6 + input_shards) + (6 + 1) + 1, (held, bare)


@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "changed"])
def test_input_lost_to_a_sweep_is_put_back_or_fails_naming_it(
    uri2: str, tmp_path: Path, changed: bool
) -> None:
    """What a sweep already under way removes of a held input (done here by hand while
    the command is blocked: the input's objects and manifest deleted) is put back from the
    local files when they are unchanged; when the command rewrote them, the run fails
    naming the snapshot, writes no record and leaves no intent."""
    root = project(tmp_path)
    (root / "inp").mkdir()
    (root / "inp" / "f.txt").write_text("the input as pushed\n")
    started, go = _fifos(tmp_path)
    input_id = str(anyio.run(snapdir_id, root / "inp"))
    rewrite = "open('inp/f.txt', 'w').write('rewritten by the command\\n')\n" if changed else ""
    box: dict[str, Any] = {}

    async def main() -> None:
        async def run() -> None:
            try:
                box["r"] = await ops.run_command(
                    [PY, "-c", BLOCKING + rewrite, started, go], store=uri2, inputs=["inp"],
                    outputs=["out"], cwd=root, stream=False, git=False, config=False,
                )  # fmt: skip
            except snapdir.NotFoundError as e:
                box["error"] = e

        st = open_store(uri2)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(60):
                    await anyio.to_thread.run_sync(_read, started, abandon_on_cancel=True)
                m = await st.get_manifest(input_id)
                ours = {c for c, _ in m.objects()}
                ks: Any = st  # file:// and S3 have the key methods (Capability.KEYS)
                doomed = [k.key for k in await ks.list_keys(".objects/")
                          if hex_from_key(k.key[len(".objects/") :]) in ours]  # fmt: skip
                doomed += [k.key for k in await ks.list_keys(".manifests/")
                           if hex_from_key(k.key[len(".manifests/") :]) == input_id]  # fmt: skip
                assert len(doomed) == len(ours) + 1
                await ks.delete_keys(doomed)
                assert not await st.has_manifest(input_id)
                await anyio.to_thread.run_sync(_write, go)
        finally:
            _unblock(started, go)
            await st.aclose()

    anyio.run(main)

    async def after(st: Any) -> tuple[set[str], list[Any]]:
        return await _intents(st), await ops.list_runs(st)

    intents, runs = anyio.run(_with_store, uri2, after)
    assert intents == set()
    if changed:
        assert "r" not in box
        assert input_id in str(box["error"])
        assert "input inp" in str(box["error"])
        assert runs == []
    else:
        assert box["r"].inputs == {"inp": input_id}
        anyio.run(_with_store, uri2, lambda st: snapdir.verify(input_id, st))
        assert len(runs) == 1


def test_sync_track_puts_back_what_a_collection_took_while_it_ran(
    uri2: str, tmp_path: Path
) -> None:
    """A synchronous ``@track`` pushes its inputs on one event loop and records on
    another, so nothing holds them while the function runs: a ``gc --grace 0`` then takes
    the unjournalled input. Before the record is written the inputs are pushed and held
    again, so the record never names content that is gone; an input whose files changed
    meanwhile fails the record instead."""
    root = project(tmp_path)
    (root / "inp").mkdir()
    (root / "inp" / "only-here.txt").write_text("an input no journal names\n")
    _managed_with_stray(root, tmp_path, uri2)
    input_id = str(anyio.run(snapdir_id, root / "inp"))
    took: list[Any] = []

    @snapdir.runs.track(uri2, inputs=["inp"], cwd=root, git=False, config=False)
    def step() -> int:
        took.append(anyio.run(_with_store, uri2, lambda st: gc(st, grace=timedelta(0))))
        return 1

    assert step() == 1
    (collected,) = took
    assert input_id in collected.manifests  # the function ran with its input collected

    async def check(st: Any) -> list[Any]:
        await snapdir.verify(input_id, st)
        return await ops.list_runs(st)

    runs = anyio.run(_with_store, uri2, check)
    assert [dict(r.inputs) for r, _ in runs] == [{"inp": input_id}]

    @snapdir.runs.track(uri2, inputs=["inp"], cwd=root, git=False, config=False)
    def changes_its_input() -> None:
        (root / "inp" / "only-here.txt").write_text("changed meanwhile\n")

    with pytest.raises(snapdir.InFluxError, match="input inp changed"):
        changes_its_input()
    assert len(anyio.run(_with_store, uri2, ops.list_runs)) == 1
