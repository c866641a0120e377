"""Retry and concurrency limits as wrappers around any store.

Backends only *classify* failures (raise :class:`TransientStoreError` or answer
``is_transient(exc)``); they never loop. Waiting and limiting live here, once, so every
backend (built-in or third-party) gets the same behaviour — the shape of restic's
``backend/retry`` and ``backend/sema``.

* :class:`RetryingStore` retries each single-object call with jittered exponential backoff
  and a long overall budget (default: 0.2 s doubling to a 30 s ceiling, giving up after 10
  minutes), honouring ``Retry-After``. Every store method is idempotent (content-addressed
  keys), so retrying a call that may have succeeded is safe.
* :class:`LimitedStore` puts one bound on the calls in flight, whichever method or batch
  they come from, so a push that runs ``put_objects`` and ``has_object`` at once still
  opens at most ``jobs`` connections.

Batches of small objects skip the event loop per object: a backend that can do one object
as a plain blocking call (``blocking_object_call``: the S3 store's small PUTs, every cloud
store's downloads) has its calls of a ``put_objects``/``get_objects`` batch run by worker
threads, each taking one slot of the limit and doing object after object, each call under
the same retry policy (a blocking retry loop, its waits interruptible). Handing every object
to a worker thread and back through the event loop cost about as much client CPU as the
request itself. Cancellation (Ctrl-C) stops the workers after the object each is on; the
first failure stops the batch and is raised as itself.

:func:`wrap` stacks them the way the operations want: ``LimitedStore(RetryingStore(s))`` —
the limit outside, so a call that is sleeping between attempts keeps its slot and a
throttled service sees fewer requests, not a queue of new ones.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import NotFoundError, SnapdirError, StoreError
from .._redact import LOG_FILTER, redact_exception
from .._types import StoreUri
from ._base import (
    Capability,
    LoopSemaphore,
    ObjectGet,
    ObjectPut,
    ProgressFn,
    Store,
    TransientStoreError,
    accepts_progress,
    for_each_limited,
)
from ._keys import KeyInfo, KeyStore, has_keys

if TYPE_CHECKING:
    from .._snapdir import Manifest

__all__ = [
    "LimitedStore",
    "RetryPolicy",
    "RetryingStore",
    "TransientStoreError",
    "is_transient",
    "unwrap",
    "wrap",
]

T = TypeVar("T")

_log = logging.getLogger("snapdir.stores")
_log.addFilter(LOG_FILTER)  # no secret in a log line (see snapdir._redact)

DEFAULT_JOBS = 32


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often :class:`RetryingStore` retries a transient failure.

    The n-th wait (n = 1, 2, ...) is drawn uniformly from
    ``[base_delay, min(max_delay, base_delay * multiplier ** n)]`` ("full jitter" with a
    floor): many workers throttled at the same moment spread out instead of retrying in
    lock-step, and none hammers the service with zero-length waits. A ``Retry-After`` from
    the service raises the wait to at least that. The call gives up when the next wait would
    end after ``max_elapsed`` seconds since the first attempt, or after ``max_attempts``
    attempts when that is set.

    The budget is long on purpose: a push of a large tree should ride out a few minutes of
    throttling or a flapping network rather than fail and start over.
    """

    base_delay: float = 0.2
    max_delay: float = 30.0
    max_elapsed: float = 600.0
    max_attempts: int | None = None
    multiplier: float = 2.0
    #: Budget while the store has never answered and the failure is "cannot connect": a
    #: mistyped endpoint or a server that is down should fail in seconds, not ten minutes.
    unreachable_elapsed: float = 10.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The default policy, with ``SNAPDIR_RETRY_MAX_SECONDS`` as the overall budget."""
        import os

        raw = os.environ.get("SNAPDIR_RETRY_MAX_SECONDS", "").strip()
        if not raw:
            return cls()
        try:
            budget = float(raw)
        except ValueError:
            from .._errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"SNAPDIR_RETRY_MAX_SECONDS must be a number of seconds, not {raw!r}",
                code="INVALID_ARGUMENT",
            ) from None
        return cls(max_elapsed=max(0.0, budget), unreachable_elapsed=min(10.0, budget))

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed so far)."""
        ceiling = min(self.max_delay, self.base_delay * self.multiplier**attempt)
        wait = rng.uniform(min(self.base_delay, ceiling), ceiling)
        if retry_after is not None and retry_after > wait:
            wait = retry_after
        return max(0.0, wait)


def is_transient(store: object, exc: BaseException) -> bool:
    """Whether ``exc`` raised by ``store`` is worth retrying.

    A :class:`TransientStoreError` always is; otherwise the store's own ``is_transient``
    (when it has one) decides, which lets a third-party backend classify SDK exceptions
    without converting them.
    """
    if isinstance(exc, TransientStoreError):
        return True
    classify = getattr(store, "is_transient", None)
    if callable(classify):
        return bool(classify(exc))
    return False


_UNREACHABLE_TEXT = (
    "connection refused",
    "could not connect to the endpoint",
    "failed to establish a new connection",
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
)


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its cause chain) says no connection could be made at
    all — as opposed to a request that reached the service and failed."""
    import socket

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConnectionRefusedError, socket.gaierror)):
            return True
        text = str(e).lower()
        if any(t in text for t in _UNREACHABLE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


#: The stop event of the batch a worker thread is running (see LimitedStore._run_batch):
#: a retry wait in that thread ends early when the batch is stopped.
_worker = threading.local()


class _BatchStopped(Exception):
    """A batch was stopped while this call waited to retry (not a failure of its own)."""


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    if isinstance(value, (int, float)) and value >= 0:
        return float(value)
    return None


def unwrap(store: Store) -> Store:
    """The innermost store under any number of wrappers."""
    while isinstance(store, _StoreWrapper):
        store = store.inner
    return store


class _StoreWrapper:
    """Delegates everything to ``inner``; subclasses decide how each call runs.

    The batch methods are re-expressed as single calls through ``self`` so that the
    wrapper's policy (retry, limit) applies per object — except for local stores, whose
    batches are one native call that a per-object split would only slow down.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri: StoreUri = inner.uri

    @property
    def capabilities(self) -> Capability:
        """The inner store's, read live (a backend may drop one it found unsupported)."""
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: Capability) -> None:
        self.inner.capabilities = value

    def _local(self) -> bool:
        return Capability.LOCAL in self.inner.capabilities

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one call to the inner store under this wrapper's policy."""
        return await fn(*args, **kwargs)

    async def has_object(self, checksum: str) -> bool:
        return await self._run(self.inner.has_object, checksum)

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        # ``replace`` only when true: a store from before it existed serves ordinary puts.
        extra = {"replace": True} if replace else {}
        await self._run(self.inner.put_object, checksum, source, size, **extra)

    async def get_object(self, checksum: str, dest: str) -> None:
        try:
            await self._run(self.inner.get_object, checksum, dest)
        except NotFoundError as exc:
            raise _missing(exc, "object", checksum, self.uri) from exc

    async def has_manifest(self, snapshot_id: str) -> bool:
        return await self._run(self.inner.has_manifest, snapshot_id)

    async def get_manifest(self, snapshot_id: str) -> Manifest:
        try:
            return await self._run(self.inner.get_manifest, snapshot_id)
        except NotFoundError as exc:
            raise _missing(exc, "snapshot", snapshot_id, self.uri) from exc

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        await self._run(self.inner.put_manifest, snapshot_id, text)

    async def put_manifest_of(self, snapshot_id: str, m: Manifest) -> None:
        """:func:`put_manifest_of` through the wrapper."""
        from ._base import put_manifest_of

        await self._run(put_manifest_of, self.inner, snapshot_id, m)

    async def list_manifests(self) -> list[str]:
        return await self._run(self.inner.list_manifests)

    async def list_objects(self, shard: str = "") -> set[str]:
        return await self._run(self.inner.list_objects, shard)

    # -- small keys (snapdir.stores._keys); only with Capability.KEYS ---------------------
    def _keys(self) -> KeyStore:
        inner = self.inner
        if not has_keys(inner):
            raise StoreError(
                f"{self.uri}: this store does not offer the small-key methods (create-only "
                "writes, listing with store times) that journals, names and collection need"
            )
        return inner  # type: ignore[return-value]

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        return await self._run(self._keys().put_if_absent, key, data)

    async def put_if_absent_of(self, key: str, head: bytes, m: Manifest) -> bool:
        """:func:`put_if_absent_of` through the wrapper."""
        from ._base import put_if_absent_of

        if isinstance(self, RetryingStore):  # its put_if_absent knows a retried create
            return await self.put_if_absent(key, head + (m.raw + "\n").encode())
        return await self._run(put_if_absent_of, self._keys(), key, head, m)

    async def get_bytes(self, key: str, *, max_size: int) -> bytes:
        return await self._run(self._keys().get_bytes, key, max_size=max_size)

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        return await self._run(self._keys().list_keys, prefix)

    async def delete_keys(self, keys: Sequence[str]) -> None:
        await self._run(self._keys().delete_keys, keys)

    async def store_time(self) -> datetime:
        return await self._run(self._keys().store_time)

    def blocking_object_call(
        self, op: str, item: ObjectPut | ObjectGet, replace: bool = False
    ) -> Callable[[], None] | None:
        """``op`` (``"put"`` or ``"get"``) of one object as a blocking call under this
        wrapper's policy, when the backend offers one (see the module docs); else None."""
        offer = getattr(self.inner, "blocking_object_call", None)
        return offer(op, item, replace) if callable(offer) else None

    async def _run_batch(
        self,
        op: str,
        items: Sequence[T],
        jobs: int,
        progress: ProgressFn | None,
        replace: bool = False,
    ) -> Sequence[T]:
        """Run what of a batch can go through blocking calls; returns the rest."""
        return items

    async def put_objects(
        self,
        items: Sequence[ObjectPut],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
        replace: bool = False,
    ) -> None:
        extra = {"replace": True} if replace else {}
        if self._local():
            await self._run(self.inner.put_objects, items, jobs=jobs, progress=progress, **extra)
            return
        items = await self._run_batch("put", items, jobs, progress, replace)

        async def one(it: ObjectPut) -> None:
            await self.put_object(it.checksum, it.source, it.size, **extra)
            if progress is not None:
                progress(1, it.size)

        await for_each_limited(items, one, self._batch_jobs(jobs))

    async def get_objects(
        self, items: Sequence[ObjectGet], *, jobs: int = 32, progress: ProgressFn | None = None
    ) -> None:
        if self._local():
            await self._run(self.inner.get_objects, items, jobs=jobs, progress=progress)
            return
        items = await self._run_batch("get", items, jobs, progress)

        async def one(it: ObjectGet) -> None:
            await self.get_object(it.checksum, it.dest)
            if progress is not None:
                progress(1, it.size)

        await for_each_limited(items, one, self._batch_jobs(jobs))

    async def verify_objects(
        self,
        objects: Sequence[tuple[str, int]],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
    ) -> dict[str, str]:
        if self._local():
            extra: dict[str, Any] = {}
            if progress is not None and accepts_progress(self.inner.verify_objects):
                extra["progress"] = progress
            return await self._run(self.inner.verify_objects, objects, jobs=jobs, **extra)
        problems: dict[str, str] = {}

        async def one(obj: tuple[str, int]) -> None:
            # One object per inner call: the backend keeps its own way of verifying
            # (streamed hashing for cloud stores) and the policy applies per object.
            problems.update(await self._verify_one(obj))
            if progress is not None:
                progress(1, obj[1])

        await for_each_limited(objects, one, self._batch_jobs(jobs))
        return problems

    async def _verify_one(self, obj: tuple[str, int]) -> dict[str, str]:
        return await self._run(self.inner.verify_objects, [obj], jobs=1)

    def _batch_jobs(self, jobs: int) -> int:
        return max(1, jobs)

    def request_count(self) -> int:
        return self.inner.request_count()

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(self.inner, exc)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def _missing(exc: NotFoundError, what: str, name: str, uri: StoreUri) -> NotFoundError:
    """One wording for "not there" whatever the backend: each SDK says it its own way (a
    key URL on S3, "gs://…: get …: not found" on GCS), and a script or a user comparing
    stores should not have to care which one answered. The backend's error stays chained."""
    if exc.problems:  # a verification's report: already says what is missing where
        return exc
    return NotFoundError(f"{what} {name} not found in {uri}")


class RetryingStore(_StoreWrapper):
    """Retries transient failures of any store (see :class:`RetryPolicy`).

    Only failures the backend classifies as transient are retried; ``NotFoundError``,
    ``HashMismatchError``, ``InFluxError`` and every other error pass through at once. When
    the budget runs out the last failure is raised as a plain :class:`snapdir.StoreError`
    (not transient, so an outer retry layer does not start over) naming the URI, the call
    and how long it tried.
    """

    def __init__(
        self,
        inner: Store,
        policy: RetryPolicy | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self._clock = clock
        self.policy = policy if policy is not None else RetryPolicy.from_env()
        #: Whether any call has reached the service yet (see ``unreachable_elapsed``).
        self._answered = False
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        #: Retries done so far (attempts beyond the first), for logs and tests.
        self.retries = 0

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        import anyio

        start = self._clock()
        attempt = 0
        while True:
            try:
                result = await fn(*args, **kwargs)
                self._answered = True
                return result
            except Exception as exc:
                if not is_transient(self.inner, exc):
                    self._answered = True
                    _mask_foreign(exc)
                    raise
                attempt += 1
                wait = self._backoff(exc, attempt, start, _describe(fn, args))
                await (self._sleep or anyio.sleep)(wait)

    def _backoff(self, exc: Exception, attempt: int, start: float, what: str) -> float:
        """After transient failure number ``attempt`` of ``what``: the wait before the next
        attempt, or the :class:`StoreError` when the policy's budget is spent."""
        policy = self.policy
        elapsed = self._clock() - start
        wait = policy.delay(attempt, _retry_after(exc), self._rng)
        out_of_attempts = policy.max_attempts is not None and attempt >= policy.max_attempts
        budget = policy.max_elapsed
        if not self._answered and is_unreachable(exc):
            budget = min(budget, policy.unreachable_elapsed)
        if out_of_attempts or elapsed + wait > budget:
            _mask_foreign(exc)
            raise StoreError(
                f"{self.uri}: {what} failed after {attempt} attempt(s) over {elapsed:.1f}s: {exc}"
            ) from exc
        _log.info("%s: %s failed (%s); retry %d in %.2fs", self.uri, what, exc, attempt, wait)
        self.retries += 1
        return wait

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """A create-only write, retried: when an attempt failed after the service may have
        stored the bytes (the answer was lost), a later attempt finds the key taken — by
        this very call. The key's content tells: the same bytes mean this call created it
        (callers put something unique in every record, so nobody else writes the same)."""
        inner = self._keys()
        attempts = 0

        async def once() -> bool:
            nonlocal attempts
            attempts += 1
            return await inner.put_if_absent(key, data)

        created = await self._run(once)
        if created or attempts == 1:
            return created
        try:
            existing = await self._run(inner.get_bytes, key, max_size=len(data))
        except (StoreError, NotFoundError):
            return False  # larger than ours, or gone again: not ours
        return existing == data

    def blocking_object_call(
        self, op: str, item: ObjectPut | ObjectGet, replace: bool = False
    ) -> Callable[[], None] | None:
        if self._sleep is not None:  # a caller-supplied sleep: keep the awaited path
            return None
        call = super().blocking_object_call(op, item, replace)
        if call is None:
            return None
        return functools.partial(self._retry_blocking, call, f"{op}_object({item.checksum})")

    def _retry_blocking(self, call: Callable[[], None], what: str) -> None:
        """:meth:`_run` for a blocking call, on a worker thread of a batch."""
        start = self._clock()
        attempt = 0
        while True:
            try:
                call()
                self._answered = True
                return
            except Exception as exc:
                if not is_transient(self.inner, exc):
                    self._answered = True
                    _mask_foreign(exc)
                    raise
                attempt += 1
                wait = self._backoff(exc, attempt, start, what)
                stop: threading.Event | None = getattr(_worker, "stop", None)
                if stop is None:
                    time.sleep(wait)
                elif stop.wait(wait):
                    raise _BatchStopped() from exc


def _mask_foreign(exc: BaseException) -> None:
    """Mask secrets in an exception a store let through untranslated (a third-party store's,
    or an SDK's on a path no backend maps), in place: it reaches the caller as it is, and its
    message is what a traceback shows. snapdir's own errors are masked when built."""
    if not isinstance(exc, SnapdirError) or exc.__cause__ is not None:
        redact_exception(exc)


def _describe(fn: Callable[..., object], args: tuple[Any, ...]) -> str:
    name = getattr(fn, "__name__", "call")
    if args and isinstance(args[0], str):
        return f"{name}({args[0]})"
    return name


class LimitedStore(_StoreWrapper):
    """At most ``jobs`` calls to the inner store in flight, across every method.

    Batch calls are split into single calls that each take a slot, so concurrent batches and
    single calls share the one limit. The semaphore is created per event loop (an
    ``anyio.lowlevel.RunVar``), so one store object can be used from successive
    ``anyio.run`` calls and from asyncio or trio.

    On construction the limit is passed down as a hint to a backend that sizes a connection
    pool (``set_max_concurrency(jobs)``), so the pool and the limit agree.
    """

    def __init__(self, inner: Store, jobs: int = DEFAULT_JOBS) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        super().__init__(inner)
        self.jobs = jobs
        self._limit = LoopSemaphore(f"snapdir-limit-{id(self)}", lambda: self.jobs)
        hint = getattr(unwrap(inner), "set_max_concurrency", None)
        if callable(hint):
            hint(jobs)

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async with self._limit.get():
            return await fn(*args, **kwargs)

    def _batch_jobs(self, jobs: int) -> int:
        return max(1, min(jobs, self.jobs))

    async def _run_batch(
        self,
        op: str,
        items: Sequence[T],
        jobs: int,
        progress: ProgressFn | None,
        replace: bool = False,
    ) -> Sequence[T]:
        calls: list[tuple[Callable[[], None], int]] = []
        rest: list[T] = []
        for it in items:
            call = super().blocking_object_call(op, it, replace)  # type: ignore[arg-type]
            if call is None:
                rest.append(it)
            else:
                calls.append((call, int(getattr(it, "size", 0))))
        if calls:
            # Largest first: a big object started last would run alone at the end while the
            # other workers idle (longest-processing-time-first keeps that tail short).
            calls.sort(key=lambda c: c[1], reverse=True)
            await self._run_calls(calls, self._batch_jobs(jobs), progress)
        return rest

    def blocking_object_call(
        self, op: str, item: ObjectPut | ObjectGet, replace: bool = False
    ) -> Callable[[], None] | None:
        # The limit holds for whole batches (see _run_batch), not for bare calls.
        return None

    async def _run_calls(
        self,
        calls: list[tuple[Callable[[], None], int]],
        jobs: int,
        progress: ProgressFn | None,
    ) -> None:
        """Run blocking calls on up to ``jobs`` worker threads, each holding one slot of the
        limit while it does call after call; progress is reported from the event loop."""
        import anyio
        import anyio.abc
        import anyio.to_thread

        pending = iter(calls)
        lock = threading.Lock()
        stop = threading.Event()
        failures: list[BaseException] = []
        done = [0, 0]  # calls and bytes finished, not yet reported
        reported = [0, 0]

        def worker() -> None:
            _worker.stop = stop
            try:
                while not stop.is_set():
                    with lock:
                        nxt = next(pending, None)
                    if nxt is None:
                        return
                    call, size = nxt
                    try:
                        call()
                    except _BatchStopped:
                        return
                    except BaseException as e:
                        with lock:
                            failures.append(e)
                        stop.set()
                        return
                    with lock:
                        done[0] += 1
                        done[1] += size
            finally:
                _worker.stop = None

        def flush() -> None:
            if progress is None:
                return
            with lock:
                files, nbytes = done[0] - reported[0], done[1] - reported[1]
                reported[0], reported[1] = done[0], done[1]
            if files or nbytes:
                progress(files, nbytes)

        n = max(1, min(jobs, len(calls)))
        running = [n]

        async def run_worker(tg: anyio.abc.TaskGroup) -> None:
            try:
                async with self._limit.get():
                    if not stop.is_set():
                        await anyio.to_thread.run_sync(worker)
            finally:
                running[0] -= 1
                if running[0] == 0:  # the last one out stops the progress reports
                    tg.cancel_scope.cancel()

        async def watch() -> None:
            try:
                while True:
                    await anyio.sleep(0.1)
                    flush()
            finally:
                # Cancelled from outside (Ctrl-C, a deadline): the workers, which cannot
                # be interrupted inside a call, stop before their next object.
                stop.set()

        # One task group for all: an outside cancellation reaches ``watch`` at once, while
        # the workers' threads are still finishing their current object.
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for _ in range(n):
                tg.start_soon(run_worker, tg)
        flush()
        if failures:
            raise failures[0]


def wrap(
    store: Store,
    *,
    jobs: int = DEFAULT_JOBS,
    retry: bool | RetryPolicy = True,
) -> Store:
    """The store as the operations use it: retries (unless ``retry=False``; a
    :class:`RetryPolicy` customises them) inside one concurrency limit of ``jobs``.

    Local stores are not retried: a full disk or a permission error does not get better by
    waiting.
    """
    inner: Store = store
    if retry is not False and Capability.LOCAL not in store.capabilities:
        policy = retry if isinstance(retry, RetryPolicy) else None
        inner = RetryingStore(inner, policy)
    return LimitedStore(inner, jobs)
