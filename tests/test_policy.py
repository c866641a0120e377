"""A retention policy stored in the store (``snapdir policy set|show|unset``, ``forget
--policy store``), on every backend: what is stored is what ``forget`` applies, racing
changes are all kept in order, and a planted or damaged policy entry is an error naming
its key, never a silently different policy."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
from snapdir._errors import NotFoundError, StoreError
from snapdir.lifecycle.ops import forget, ls
from snapdir.lifecycle.policy import POLICY, get_policy, policy_log, set_policy
from snapdir.lifecycle.retention import Duration, Policy
from snapdir.stores import open_store
from snapdir.stores._keys import KeyStore
from storeutil import run_cli, uri, write
from test_cloud_ops import Clouds, b2_raw, clouds, gs_raw, s3_raw  # noqa: F401

BACKENDS = ("file", "s3", "gs", "b2")


@pytest.fixture(params=BACKENDS)
def store_uri(request: pytest.FixtureRequest, tmp_path: Path, clouds: Clouds) -> str:  # noqa: F811
    if request.param == "file":
        return uri(tmp_path / "store")
    return clouds.get(str(request.param)).fresh("policy")


def _run(fn: Any, *args: Any, **kw: Any) -> Any:
    return anyio.run(lambda: fn(*args, **kw))


def _keys(store_uri: str) -> KeyStore:
    st = open_store(store_uri)
    assert isinstance(st, KeyStore)
    return st


def _json(*argv: str, status: int = 0) -> Any:
    proc = run_cli(*argv, "--json")
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def test_set_show_unset_and_forget_by_the_stored_policy(store_uri: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    ids = []
    for i, when in enumerate(("2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z", "2025-01-01")):
        write(src / "f", f"version {i}")
        ids.append(_json("push", str(src), "--store", store_uri, "--time", when)["id"])
    assert _json("policy", "show", "--store", store_uri) == {
        "entry": None,
        "schema": 1,
        "warnings": [],
    }
    # Without a stored policy, forget --policy store refuses (not found) and forgets nothing.
    refused = run_cli("forget", "--policy", "store", "--store", store_uri)
    assert refused.returncode == 4, refused.stderr
    assert "has no stored retention policy" in refused.stderr

    first = _json("policy", "set", "--store", store_uri, "--keep-last", "2", "--keep-within", "1y")
    assert first["entry"]["seq"] == 1
    assert first["entry"]["policy"] == {
        "keep": {"last": 2, "within": "1y"},
        "keep_labels": [],
        "group_by": ["host", "path"],
    }
    second = _json("policy", "set", "--store", store_uri, "--keep-last", "1", "--group-by", "")
    assert second["entry"]["seq"] == 2
    shown = _json("policy", "show", "--store", store_uri, "--log")
    assert shown["entry"]["seq"] == 2
    assert [e["seq"] for e in shown["log"]] == [1, 2]
    assert shown["log"][0]["policy"]["keep"] == {"last": 2, "within": "1y"}

    # forget --policy store decides exactly as the same flags given by hand.
    by_hand = _json(
        "forget", "--keep-last", "1", "--group-by", "", "--dry-run", "--store", store_uri
    )
    stored = _json("forget", "--policy", "store", "--dry-run", "--store", store_uri)
    assert stored["kept"] == by_hand["kept"]
    assert stored["removed"] == by_hand["removed"]
    assert [k["id"] for k in stored["kept"]] == [ids[2]]
    done = _json("forget", "--policy", "store", "--store", store_uri)
    assert sorted(r["id"] for r in done["removed"]) == sorted(ids[:2])
    assert [s["id"] for s in _json("ls", "--store", store_uri)["snapshots"]] == [ids[2]]

    unset = _json("policy", "unset", "--store", store_uri)
    assert unset["entry"]["seq"] == 3
    assert unset["entry"]["policy"] is None
    refused = run_cli("forget", "--policy", "store", "--store", store_uri)
    assert refused.returncode == 4
    assert "(it was unset)" in refused.stderr


def test_racing_policy_changes_are_all_kept_in_order(store_uri: str, tmp_path: Path) -> None:
    """Eight clients set a policy at once: eight entries, eight distinct numbers, each
    policy in the log exactly once — no change overwrote another."""
    write(tmp_path / "src" / "f", "x")
    _json("push", str(tmp_path / "src"), "--store", store_uri)
    policies = [Policy(last=n + 1) for n in range(8)]

    async def race() -> list[int]:
        seqs: list[int] = [0] * len(policies)

        async def one(i: int) -> None:
            seqs[i] = (await set_policy(store_uri, policies[i])).seq

        async with anyio.create_task_group() as tg:
            for i in range(len(policies)):
                tg.start_soon(one, i)
        return seqs

    seqs = anyio.run(race)
    assert sorted(seqs) == list(range(1, 9))
    log = _run(policy_log, store_uri)
    assert [e.seq for e in log] == list(range(1, 9))
    assert sorted(e.policy.last for e in log if e.policy) == list(range(1, 9))
    current = _run(get_policy, store_uri)
    assert current is not None
    assert current.seq == 8
    by_seq = {s: p for s, p in zip(seqs, policies, strict=True)}
    assert current.policy == by_seq[8]


def test_api_forget_policy_store(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    write(tmp_path / "src" / "f", "x")

    async def body() -> tuple[list[Any], list[Any]]:
        await snapdir.push(tmp_path / "src", store, time=datetime(2020, 1, 1, tzinfo=timezone.utc))
        write(tmp_path / "src" / "f", "y")
        await snapdir.push(tmp_path / "src", store)
        with pytest.raises(NotFoundError):
            await forget(store, policy="store")
        await set_policy(store, Policy(within=Duration.parse("30d")))
        verdicts = await forget(store, policy="store")
        return verdicts, await ls(store)

    verdicts, left = anyio.run(body)
    assert [v.keep for v in verdicts] == [True, False]
    assert verdicts[0].reasons == ("within 30d",)
    assert len(left) == 1


HOSTILE: list[tuple[str, bytes, str]] = [
    ("0000000001", b"not json", "is not JSON"),
    ("0000000001", b'{"schema": 2, "keep": {"last": 1}}', "unknown schema"),
    ("0000000001", b'{"schema": 1, "keep": {"last": -1}}', "keep.last must be a count"),
    ("0000000001", b'{"schema": 1, "keep": {"last": true}}', "keep.last must be a count"),
    ("0000000001", b'{"schema": 1, "keep": {"forever": 1}}', "unknown rule(s) forever"),
    ("0000000001", b'{"schema": 1, "keep": {"within": "soon"}}', "invalid duration"),
    ("0000000001", b'{"schema": 1, "keep": {"within": 7}}', "must be a duration"),
    ("0000000001", b'{"schema": 1, "keep": []}', "'keep' is not an object"),
    ("0000000001", b'{"schema": 1, "keep_labels": "x"}', "'keep_labels' must be"),
    ("0000000001", b'{"schema": 1, "group_by": ["colour"]}', "'group_by' must be"),
    ("0000000001", b'{"schema": 1, "by": 5}', "'by' must be"),
    ("0000000001", b"[1, 2]", "unknown schema"),
    ("0000000001", b"\xff\xfe", "is not JSON"),
    ("0000000001", b'{"schema": 1, "by": "' + b"x" * 70000 + b'"}', "65536"),
    ("1", b'{"schema": 1, "keep": {"last": 1}}', "unexpected key"),
    ("0000000000", b'{"schema": 1, "keep": {"last": 1}}', "unexpected key"),
    ("latest", b'{"schema": 1, "keep": {"last": 1}}', "unexpected key"),
]


@pytest.mark.parametrize(("name", "body", "message"), HOSTILE)
def test_a_planted_policy_entry_is_an_error_naming_it(
    tmp_path: Path, name: str, body: bytes, message: str
) -> None:
    store = uri(tmp_path / "store")
    write(tmp_path / "src" / "f", "x")
    pushed = _json("push", str(tmp_path / "src"), "--store", store)
    ks = _keys(store)
    assert _run(ks.put_if_absent, POLICY + name, body)
    with pytest.raises(StoreError) as err:
        _run(get_policy, store)
    assert message in str(err.value)
    proc = run_cli("forget", "--policy", "store", "--store", store)
    assert proc.returncode != 0
    assert message in proc.stderr
    # Nothing was forgotten on the strength of a damaged policy.
    assert [s["id"] for s in _json("ls", "--store", store)["snapshots"]] == [pushed["id"]]


def test_usage_errors_come_before_any_request(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    both = run_cli("forget", "--policy", "store", "--keep-last", "1", "--store", store)
    assert both.returncode == 2
    assert "give no --keep-* with it" in both.stderr
    empty = run_cli("policy", "set", "--store", store)
    assert empty.returncode == 2
    assert "give at least one rule" in empty.stderr
    bad = run_cli("policy", "set", "--keep-within", "soon", "--store", store)
    assert bad.returncode == 2
    assert not (tmp_path / "store").exists()
