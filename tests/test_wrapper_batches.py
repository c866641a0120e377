"""Batches through blocking calls (``snapdir.stores._wrappers``): a backend that offers one
object as a blocking call has a ``get_objects``/``put_objects`` batch run by worker threads
under the same limit and retry policy as single calls.

The backend here is an in-process fake that records what happened; the same path runs
against the real S3, GCS and B2 servers in the store and cloud-operation suites (their
downloads and S3's uploads take it), including behind the fault-injecting proxy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from snapdir import NotFoundError, StoreError
from snapdir._snapdir import Manifest
from snapdir._types import StoreUri
from snapdir.stores import BaseStore, Capability, ObjectGet, ObjectPut
from snapdir.stores._base import TransientStoreError
from snapdir.stores._wrappers import LimitedStore, RetryingStore, RetryPolicy, _worker, wrap

FAST = RetryPolicy(base_delay=0.001, max_delay=0.002, max_elapsed=5.0)


class Blocking(BaseStore):
    """Objects are file copies; ``get``/``put`` are offered as blocking calls."""

    capabilities = Capability.NONE

    def __init__(self, root: Path, *, offer: bool = True) -> None:
        super().__init__(StoreUri("s3://fake-bucket/batches"))
        self.root = root
        self.offer = offer
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.blocking_calls = 0
        self.awaited_calls = 0
        self.threads: set[int] = set()
        #: checksum -> how many more times it fails with a transient error first
        self.flaky: dict[str, int] = {}
        #: checksums that fail for good (NotFoundError)
        self.missing: set[str] = set()
        self.delay = 0.0
        self.manifests: dict[str, str] = {}
        #: after this many finished calls, each new call waits until its batch is stopped
        #: (``reached`` is set then): a cancellation at a known point, without timing
        self.hold_after: int | None = None
        self.finished = 0
        self.reached = threading.Event()

    def _do(self, op: str, checksum: str, path: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.threads.add(threading.get_ident())
            left = self.flaky.get(checksum, 0)
            if left:
                self.flaky[checksum] = left - 1
            hold = self.hold_after is not None and self.finished >= self.hold_after
        try:
            if hold:
                self.reached.set()
                stop = getattr(_worker, "stop", None)
                assert stop is not None, "not called from a batch's worker"
                assert stop.wait(60), "the batch was never stopped"
            if self.delay:
                time.sleep(self.delay)
            if left:
                raise TransientStoreError(f"503 for {checksum}")
            if checksum in self.missing:
                raise NotFoundError(f"object {checksum} not found in {self.uri}")
            obj = self.root / checksum
            if op == "put":
                obj.write_bytes(Path(path).read_bytes())
            else:
                Path(path).write_bytes(obj.read_bytes())
            with self.lock:
                self.finished += 1
        finally:
            with self.lock:
                self.in_flight -= 1

    def blocking_object_call(
        self, op: str, item: ObjectPut | ObjectGet, replace: bool = False
    ) -> Callable[[], None] | None:
        if not self.offer:
            return None
        path = item.source if isinstance(item, ObjectPut) else item.dest

        def call() -> None:
            with self.lock:
                self.blocking_calls += 1
            self._do(op, item.checksum, str(path))

        return call

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        self.awaited_calls += 1
        await anyio.to_thread.run_sync(self._do, "put", checksum, source)

    async def get_object(self, checksum: str, dest: str) -> None:
        self.awaited_calls += 1
        await anyio.to_thread.run_sync(self._do, "get", checksum, dest)

    # The rest of the protocol (not what these tests are about): objects as files,
    # manifests in memory.
    async def has_object(self, checksum: str) -> bool:
        return (self.root / checksum).is_file()

    async def has_manifest(self, snapshot_id: str) -> bool:
        return snapshot_id in self.manifests

    async def get_manifest(self, snapshot_id: str) -> Manifest:
        if snapshot_id not in self.manifests:
            raise NotFoundError(f"snapshot {snapshot_id} not found in {self.uri}")
        return Manifest.parse(self.manifests[snapshot_id])

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        self.manifests[snapshot_id] = text

    async def list_manifests(self) -> list[str]:
        return sorted(self.manifests)


def _objects(tmp_path: Path, n: int) -> tuple[list[ObjectPut], list[ObjectGet]]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    puts, gets = [], []
    for i in range(n):
        c = f"{i:064x}"
        data = bytes([i % 256]) * (i + 1)
        (src / c).write_bytes(data)
        puts.append(ObjectPut(c, str(src / c), len(data)))
        gets.append(ObjectGet(c, str(dst / c), len(data)))
    return puts, gets


def _store(tmp_path: Path, jobs: int = 4, **kw: bool) -> tuple[Blocking, LimitedStore]:
    root = tmp_path / "store"
    root.mkdir()
    backend = Blocking(root, **kw)
    wrapped = wrap(backend, jobs=jobs, retry=FAST)
    assert isinstance(wrapped, LimitedStore)
    return backend, wrapped


def test_batches_run_on_worker_threads_within_the_limit(tmp_path: Path) -> None:
    puts, gets = _objects(tmp_path, 60)
    backend, store = _store(tmp_path, jobs=4)
    backend.delay = 0.002
    seen: list[tuple[int, int]] = []
    anyio.run(lambda: store.put_objects(puts, jobs=32, progress=lambda f, b: seen.append((f, b))))
    anyio.run(lambda: store.get_objects(gets, jobs=32))
    for p, g in zip(puts, gets, strict=True):
        assert Path(g.dest).read_bytes() == Path(p.source).read_bytes()
    assert (backend.blocking_calls, backend.awaited_calls) == (120, 0)
    assert 1 < backend.most_in_flight <= 4  # the store's limit, not the batch's jobs
    assert threading.get_ident() not in backend.threads
    # Progress: every object once, in aggregated reports.
    assert sum(f for f, _ in seen) == 60
    assert sum(b for _, b in seen) == sum(p.size for p in puts)


def test_a_batch_starts_its_largest_objects_first(tmp_path: Path) -> None:
    # _objects makes object i (i + 1) bytes long: given smallest first, one worker must
    # still take them largest first, so that no big object is left to run alone at the end.
    puts, gets = _objects(tmp_path, 12)
    backend, store = _store(tmp_path, jobs=1)
    order: list[str] = []
    do = backend._do

    def recording(op: str, checksum: str, path: str) -> None:
        order.append(checksum)
        do(op, checksum, path)

    backend._do = recording  # type: ignore[method-assign]
    anyio.run(lambda: store.put_objects(puts, jobs=1))
    assert order == [p.checksum for p in sorted(puts, key=lambda p: -p.size)]
    order.clear()
    anyio.run(lambda: store.get_objects(gets, jobs=1))
    assert order == [g.checksum for g in reversed(gets)]


def test_transient_failures_are_retried_in_the_batch(tmp_path: Path) -> None:
    puts, gets = _objects(tmp_path, 10)
    backend, store = _store(tmp_path)
    anyio.run(lambda: store.put_objects(puts))
    backend.flaky = {gets[3].checksum: 2, gets[7].checksum: 1}
    anyio.run(lambda: store.get_objects(gets))
    assert all(Path(g.dest).is_file() for g in gets)
    retrying = store.inner
    assert isinstance(retrying, RetryingStore)
    assert retrying.retries == 3
    assert backend.awaited_calls == 0


def test_retries_run_out_as_a_store_error_naming_the_object(tmp_path: Path) -> None:
    puts, gets = _objects(tmp_path, 3)
    root = tmp_path / "store"
    root.mkdir()
    backend = Blocking(root)
    store = wrap(backend, jobs=2, retry=RetryPolicy(base_delay=0.001, max_attempts=3))
    anyio.run(lambda: store.put_objects(puts))
    backend.flaky = {gets[1].checksum: 100}
    with pytest.raises(StoreError) as info:
        anyio.run(lambda: store.get_objects(gets))
    msg = str(info.value)
    assert f"get_object({gets[1].checksum})" in msg
    assert "after 3 attempt(s)" in msg


def test_the_first_failure_stops_the_batch_and_is_raised_as_itself(tmp_path: Path) -> None:
    puts, gets = _objects(tmp_path, 200)
    backend, store = _store(tmp_path, jobs=2)
    anyio.run(lambda: store.put_objects(puts))
    bad = gets[-6]  # the sixth largest: among the first ones the batch takes
    backend.missing = {bad.checksum}
    backend.delay = 0.001
    with pytest.raises(NotFoundError) as info:
        anyio.run(lambda: store.get_objects(gets))
    assert bad.checksum in str(info.value)
    done = sum(Path(g.dest).exists() for g in gets)
    assert done < 50, done  # the others stopped soon after


def test_cancellation_stops_the_workers_after_their_current_object(tmp_path: Path) -> None:
    puts, gets = _objects(tmp_path, 400)
    jobs = 3
    backend, store = _store(tmp_path, jobs=jobs)
    anyio.run(lambda: store.put_objects(puts))
    backend.finished = 0
    backend.hold_after = 10  # from then on, calls wait for the cancellation to arrive

    async def pull_until_cancelled() -> bool:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_when_held() -> None:
                    await anyio.to_thread.run_sync(backend.reached.wait)
                    scope.cancel()

                tg.start_soon(cancel_when_held)
                await store.get_objects(gets)
        return scope.cancelled_caught

    assert anyio.run(pull_until_cancelled)
    done = sum(Path(g.dest).exists() for g in gets)
    # The ten before the hold, the calls already running then, and one current object per
    # worker once the stop arrived: nothing after that.
    assert 10 <= done <= 10 + 2 * jobs, done
    assert backend.in_flight == 0  # nothing left running behind our back


def test_backends_without_blocking_calls_keep_the_awaited_path(tmp_path: Path) -> None:
    puts, gets = _objects(tmp_path, 12)
    backend, store = _store(tmp_path, offer=False)
    anyio.run(lambda: store.put_objects(puts))
    anyio.run(lambda: store.get_objects(gets))
    assert (backend.blocking_calls, backend.awaited_calls) == (0, 24)
    assert all(Path(g.dest).is_file() for g in gets)


def test_a_caller_supplied_sleep_keeps_the_awaited_path(tmp_path: Path) -> None:
    puts, _ = _objects(tmp_path, 5)
    root = tmp_path / "store"
    root.mkdir()
    backend = Blocking(root)
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    store = LimitedStore(RetryingStore(backend, FAST, sleep=sleep), jobs=2)
    backend.flaky = {puts[0].checksum: 1}
    anyio.run(lambda: store.put_objects(puts))
    assert backend.blocking_calls == 0
    assert len(slept) == 1


def test_a_native_cancel_of_the_task_stops_the_batch(tmp_path: Path) -> None:
    # Ctrl-C under asyncio cancels the main task natively (asyncio.Runner), not through an
    # anyio scope: the workers must still stop promptly.
    import asyncio

    puts, gets = _objects(tmp_path, 400)
    jobs = 3
    backend, store = _store(tmp_path, jobs=jobs)
    anyio.run(lambda: store.put_objects(puts))
    backend.finished = 0
    backend.hold_after = 10  # from then on, calls wait for the cancellation to arrive

    async def main() -> None:
        task = asyncio.ensure_future(store.get_objects(gets))
        await asyncio.get_running_loop().run_in_executor(None, backend.reached.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    done = sum(Path(g.dest).exists() for g in gets)
    assert 10 <= done <= 10 + 2 * jobs, done
    assert backend.in_flight == 0
