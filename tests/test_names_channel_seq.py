"""``channel set --expect-seq N``: a compare-and-swap on the channel log's move number.
``--expect REF`` compares snapshots, so a channel moved A -> B -> A reads as unmoved (ABA);
the move number cannot come back. Racing writers on every backend keep one linear log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from snapdir._errors import ConflictError, InvalidArgumentError
from snapdir.names import ops
from storeutil import cli_env, run, run_cli, uri
from test_names import RACERS, Backend, _push_all, _trees, backend

__all__ = ["backend"]  # the fixture, shared with test_names

MOVES_PER_WRITER = 2


def race_channel_seq(store: str, ids: list[str], moves_per_writer: int) -> int:
    """len(ids) writers, each making ``moves_per_writer`` moves with ``expect_seq`` (the
    head's number, re-read after every conflict): the log is moves 1..N in order, each
    reported move is in it once, and each one is the move right after the one its writer
    saw (no write slipped in between). Returns N."""
    target = "soak@seq"  # not race_channel's channel: both may run on one store

    async def body() -> int:
        first = await ops.channel_set(store, target, ids[0], expect_seq=0, message="start")
        assert first.seq == 1
        made: dict[str, int] = {}

        async def writer(w: int) -> None:
            done = 0
            while done < moves_per_writer:
                head = await ops.resolve(store, target)
                seen = head.record["seq"]
                assert isinstance(seen, int)
                msg = f"w{w}-{done}"
                try:
                    e = await ops.channel_set(store, target, ids[w], expect_seq=seen, message=msg)
                except ConflictError:
                    continue
                assert e.seq == seen + 1
                made[msg] = e.seq
                done += 1

        async with anyio.create_task_group() as tg:
            for w in range(len(ids)):
                tg.start_soon(writer, w)
        log = list(reversed(await ops.channel_log(store, target)))
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        assert {e.message: e.seq for e in log[1:]} == made
        assert len(made) == len(ids) * moves_per_writer
        return len(made)

    return anyio.run(body)


def test_expect_seq_racers_keep_one_linear_log(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    ids = run(lambda: _push_all(store, _trees(tmp_path, RACERS)))
    assert race_channel_seq(store, ids, MOVES_PER_WRITER) == RACERS * MOVES_PER_WRITER


def test_expect_seq_sees_a_move_away_and_back(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    a, b = run(lambda: _push_all(store, _trees(tmp_path, 2)))

    async def body() -> None:
        seen = await ops.channel_set(store, "kit@stable", a)
        assert seen.seq == 1
        await ops.channel_set(store, "kit@stable", b)
        await ops.channel_set(store, "kit@stable", a)  # A -> B -> A
        with pytest.raises(ConflictError, match=r"move #3, not #1: it moved meanwhile"):
            await ops.channel_set(store, "kit@stable", b, expect_seq=seen.seq)
        # by snapshot the same move goes through: that is what --expect-seq is for
        assert (await ops.channel_set(store, "kit@stable", b, expect=a)).seq == 4
        with pytest.raises(ConflictError, match="no such move"):
            await ops.channel_set(store, "kit@stable", a, expect_seq=9)
        with pytest.raises(ConflictError):
            await ops.channel_set(store, "kit@stable", a, expect_seq=4, expect=a)
        both = await ops.channel_set(store, "kit@stable", a, expect_seq=4, expect=b)
        assert both.seq == 5
        with pytest.raises(ConflictError, match="move #0"):
            await ops.channel_set(store, "kit@beta", a, expect_seq=1)
        assert (await ops.channel_set(store, "kit@beta", a, expect_seq=0)).seq == 1
        for bad in (-1, True, "1"):
            with pytest.raises(InvalidArgumentError, match="move number"):
                await ops.channel_set(store, "kit@beta", a, expect_seq=bad)  # type: ignore[arg-type]
        log = await ops.channel_log(store, "kit@stable")
        assert [(e.seq, e.id) for e in log] == [(5, a), (4, b), (3, a), (2, b), (1, a)]

    anyio.run(body)


def _json(*argv: str, status: int = 0) -> Any:
    proc = run_cli(*argv, "--json", env=cli_env())
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def test_cli_expect_seq(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    a, b = run(lambda: _push_all(store, _trees(tmp_path, 2)))
    first = _json("channel", "set", "kit@stable", a, "--store", store, "--expect-seq", "0")
    assert (first["entry"]["seq"], first["entry"]["id"]) == (1, a)
    _json("channel", "set", "kit@stable", b, "--store", store)
    _json("channel", "set", "kit@stable", a, "--store", store)
    err = _json("channel", "set", "kit@stable", b, "--store", store, "--expect-seq", "1",
                status=3)["error"]  # fmt: skip
    assert err["code"] == "CONFLICT"
    assert "move #3, not #1" in err["message"]
    moved = _json("channel", "set", "kit@stable", b, "--store", store, "--expect-seq", "3")
    assert moved["entry"]["seq"] == 4
    text = run_cli("channel", "set", "kit@stable", a, "--store", store, "--expect-seq", "4",
                   env=cli_env())  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == a
    assert "(move #5)" in text.stderr
    log = _json("channel", "log", "kit@stable", "--store", store)["log"]
    assert [e["seq"] for e in log] == [5, 4, 3, 2, 1]
    shown = run_cli("channel", "log", "kit@stable", "--store", store, env=cli_env())
    assert [ln.split()[0] for ln in shown.stdout.splitlines()] == ["#5", "#4", "#3", "#2", "#1"]
    for bad in ("-1", "x"):
        proc = run_cli("channel", "set", "kit@stable", a, "--store", store, "--expect-seq", bad,
                       env=cli_env())  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "--expect-seq" in proc.stderr
