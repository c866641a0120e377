"""Running blocking work for the async operations: on an anyio worker thread with prompt
cancellation, or — for local work driven without an event loop — in place.

This sits below the stores (the ``file://`` store and the object loops of every store use
it) and above only the Rust core: it imports no other snapdir module.
"""

from __future__ import annotations

from contextvars import ContextVar

from ._snapdir import CancelToken

__all__ = ["LOCAL_SYNC", "run_blocking", "run_cancellable", "run_local", "sleep"]

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import TypeVar

    T = TypeVar("T")


#: Set while :func:`run_local` drives an operation on local stores without an event loop.
LOCAL_SYNC: ContextVar[bool] = ContextVar("snapdir_local_sync", default=False)


#: How often :func:`run_blocking` wakes to call ``on_tick`` (tests make it shorter).
TICK_SECONDS = 0.05


def run_blocking(
    fn: Callable[[CancelToken], T],
    on_tick: Callable[[], None] | None = None,
    token: CancelToken | None = None,
) -> T:
    """Run ``fn(token)`` in a worker thread while this thread waits, waking every 50 ms (to
    call ``on_tick``, e.g. a progress bar). Ctrl-C in this thread sets the token, so the Rust
    side stops at its next file, and re-raises once it has. Pass ``token`` when the Rust
    side watches one it was given earlier (a checkout plan keeps the one it was made with)."""
    import threading

    token = token if token is not None else CancelToken()
    box: list[tuple[bool, object]] = []

    def target() -> None:
        try:
            box.append((True, fn(token)))
        except BaseException as e:
            box.append((False, e))

    worker = threading.Thread(target=target, name="snapdir-worker", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(TICK_SECONDS)
            if on_tick is not None:
                on_tick()
    except BaseException:
        token.cancel()
        worker.join()
        raise
    ok, value = box[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def run_local(make: Callable[[], Coroutine[object, object, T]]) -> T:
    """Run an operation on local (``file://``) stores to completion without an event loop.

    The CLI uses this for local work: starting asyncio and anyio's backend costs ~60 ms on
    every command, more than a whole ``verify`` of a mid-sized tree. In this mode every
    helper that would wait on a worker thread (:func:`run_cancellable`, the file store)
    runs the work in place, so the coroutine never suspends."""
    reset = LOCAL_SYNC.set(True)
    try:
        coro = make()
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        coro.close()
        raise RuntimeError("internal error: a local operation waited on an event loop")
    finally:
        LOCAL_SYNC.reset(reset)


async def run_cancellable(fn: Callable[[CancelToken], T], token: CancelToken | None = None) -> T:
    """Run ``fn(token)`` in a worker thread; if the caller is cancelled, set the token so the
    Rust side stops at its next file, and let the cancellation propagate at once. ``token``:
    as for :func:`run_blocking`."""
    if LOCAL_SYNC.get():
        return run_blocking(fn, token=token)
    import anyio

    token = token if token is not None else CancelToken()
    try:
        return await anyio.to_thread.run_sync(fn, token, abandon_on_cancel=True)
    except BaseException:
        token.cancel()
        raise


async def sleep(seconds: float) -> None:
    """Wait: on the event loop, or (under :func:`run_local`, which has none) in place."""
    if LOCAL_SYNC.get():
        import time

        time.sleep(seconds)  # noqa: ASYNC251 (no event loop here: run_local's mode)
        return
    import anyio

    await anyio.sleep(seconds)
