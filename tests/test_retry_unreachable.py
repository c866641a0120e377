"""A store that cannot be reached at all fails fast; one that answered before keeps the
long retry budget (a flapping network mid-push must not abort a big upload)."""

from __future__ import annotations

import random
from typing import cast

import anyio
import pytest
from snapdir import StoreError, StoreUri
from snapdir.stores import BaseStore, Store
from snapdir.stores._base import TransientStoreError
from snapdir.stores._wrappers import RetryingStore, RetryPolicy, is_unreachable


class FlakyStore(BaseStore):
    """``has_object`` answers ``answers`` times, then fails to connect for ever."""

    def __init__(self, answers: int) -> None:
        super().__init__(StoreUri("s3://bucket/p"))
        self.answers = answers
        self.calls = 0

    async def has_object(self, checksum: str) -> bool:
        self.calls += 1
        if self.calls <= self.answers:
            return False
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as e:
            raise TransientStoreError(f"{self.uri}: cannot connect") from e


def run(store: FlakyStore, calls: int) -> float:
    """Make ``calls`` calls through a retrying wrapper with a fake clock; returns the
    simulated time slept before the wrapper gave up."""
    slept = [0.0]

    async def sleep(seconds: float) -> None:
        slept[0] += seconds

    wrapped = RetryingStore(
        cast(Store, store), RetryPolicy(), rng=random.Random(1), sleep=sleep, clock=lambda: slept[0]
    )

    async def body() -> None:
        for _ in range(calls):
            await wrapped.has_object("0" * 64)

    with pytest.raises(StoreError) as info:
        anyio.run(body)
    assert "failed after" in str(info.value)
    return slept[0]


def test_never_answered_and_refused_gives_up_within_the_short_budget() -> None:
    slept = run(FlakyStore(answers=0), calls=1)
    assert slept <= RetryPolicy().unreachable_elapsed


def test_a_store_that_answered_keeps_retrying_longer() -> None:
    slept = run(FlakyStore(answers=1), calls=2)
    assert slept > RetryPolicy().unreachable_elapsed


def test_unreachable_is_read_through_the_cause_chain() -> None:
    outer = RuntimeError("wrapped by an SDK")
    outer.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert is_unreachable(outer)
    assert not is_unreachable(TimeoutError("read timed out"))


def test_retry_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPDIR_RETRY_MAX_SECONDS", "42")
    assert RetryPolicy.from_env().max_elapsed == 42.0
    monkeypatch.setenv("SNAPDIR_RETRY_MAX_SECONDS", "soon")
    with pytest.raises(ValueError, match="SNAPDIR_RETRY_MAX_SECONDS"):
        RetryPolicy.from_env()
