"""Recording in-process work: ``async with Run(...)`` and the ``@track`` decorator.

Both write the same record as ``snapdir run`` (``kind`` "track"), without a child process:
inputs are snapshotted when the block starts (before the work can change them), outputs
when it ends; metrics given to :meth:`Run.log` and an exception that ends the block (its
type and message, secrets masked) are recorded, and the exception is re-raised. ``track``
records the call's arguments by ``repr``, each cut to :data:`MAX_REPR` characters (a
dataframe's repr is not provenance, and could be huge).
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._errors import InvalidArgumentError

if TYPE_CHECKING:
    from ..stores import Store
    from .ops import Inputs, RunResult, _Holds

__all__ = ["MAX_REPR", "Run", "track"]

MAX_REPR = 200
MAX_METRICS = 1000
F = TypeVar("F", bound=Callable[..., Any])


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not break the run
        text = f"<unrepresentable {type(value).__name__}: {type(e).__name__}>"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 1] + "…"


class Run:
    """A recorded block of in-process work::

        async with snapdir.Run("s3://bucket/runs", inputs=["data"], outputs=["model"]) as run:
            run.log("accuracy", 0.93)

    After the block, :attr:`result` is the :class:`~.ops.RunResult` (its ``record`` names
    the record in the store). ``inputs`` as for :func:`~.ops.run_command`: an input given
    as ``"path=ref"`` (or a mapping) is pulled into place when the block starts."""

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        inputs: Inputs = (),
        outputs: Sequence[str | os.PathLike[str]] = (),
        env: Sequence[str] = (),
        git: bool | None = None,
        pre: Sequence[str] = (),
        files: Sequence[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        config: bool = True,
        name: str | None = None,
        call: dict[str, Any] | None = None,
    ) -> None:
        self._kw: dict[str, Any] = dict(
            store=store if store is not None else os.environ.get("SNAPDIR_STORE"),
            env=env,
            git=git,
            pre=pre,
            files=files,
            cwd=cwd,
            config=config,
        )
        self._inputs: Inputs = dict(inputs) if isinstance(inputs, Mapping) else list(inputs)
        self._outputs = list(outputs)
        self._name = name
        self._call = call
        self.metrics: dict[str, Any] = {}
        self.result: RunResult | None = None
        self._started = ""
        self._pushed: list[tuple[str, str]] = []
        self._refs: dict[str, dict[str, str]] = {}
        self._hold = True
        self._holds: _Holds | None = None
        self._stack = AsyncExitStack()

    def log(self, name: str, value: float | int | str | bool) -> None:
        """Record a metric (the last value given for a name is kept)."""
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidArgumentError(f"invalid metric name {name!r}")
        if not isinstance(value, (int, float, str, bool)):
            raise InvalidArgumentError(
                f"metric {name}: a number, string or bool, not {type(value).__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            value = repr(value)  # JSON has no NaN or infinity
        if isinstance(value, str):
            value = value[:4096]
        if name not in self.metrics and len(self.metrics) >= MAX_METRICS:
            raise InvalidArgumentError(f"at most {MAX_METRICS} metrics per run")
        self.metrics[name] = value

    async def __aenter__(self) -> Run:
        from .ops import _holding, _now, _Plan, _push_inputs

        self._started = _now()
        plan = _Plan(
            inputs=self._inputs, outputs=(), redact=(), environ=None,
            **{k: v for k, v in self._kw.items() if k in ("store", "env", "pre", "files",
                                                          "git", "cwd", "config")},
        )  # fmt: skip
        # The inputs are held against a collection until the record is written (see
        # ops._Holds): the block may run for long. Not across the separate event loops
        # of a sync ``track`` (a store's client belongs to the loop that opened it): see
        # _hold_again.
        self._stack = AsyncExitStack()
        try:
            if self._hold:
                self._holds = await self._stack.enter_async_context(_holding(plan.store))
            self._pushed = await _push_inputs(plan, self._holds)
        except BaseException:
            await self._stack.aclose()
            raise
        self._refs = plan.input_refs
        return self

    async def _hold_again(self) -> None:
        """A synchronous ``track``: its inputs were pushed on another event loop, whose
        store client cannot serve this one, and held by nothing while the function ran.
        Push them again (a walk through the stat cache: no upload when nothing is missing)
        and hold them until the record is written, whose settle checks every object again:
        what a collection took meanwhile is put back, and an input whose files changed
        fails the record instead of naming content that is gone."""
        from .._errors import InFluxError
        from .._push import push_with_stats
        from .ops import _holding, _Plan

        plan = _Plan(
            inputs=(), outputs=(), redact=(), environ=None,
            **{k: v for k, v in self._kw.items() if k in ("store", "env", "pre", "files",
                                                          "git", "cwd", "config")},
        )  # fmt: skip
        self._holds = await self._stack.enter_async_context(_holding(plan.store))
        for rel, sid in self._pushed:
            path = plan.abs(rel)
            again = str((await push_with_stats(path, plan.store, journal=False))["id"])
            if again != sid:
                raise InFluxError(
                    f"input {rel} changed while the tracked function ran (snapshot {sid} "
                    f"at the start, {again} at the end): nothing was recorded"
                )
            await self._holds.snapshot(sid, path, f"input {rel}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from .ops import capture_context

        result: dict[str, Any] = {"status": 0 if exc is None else 1}
        if exc is not None:
            result["exception"] = f"{type(exc).__name__}: {str(exc)[:4096]}"
        extra: dict[str, Any] = {"metrics": self.metrics}
        if self._name:
            extra["name"] = self._name
        if self._call is not None:
            extra["call"] = self._call
        async with self._stack:
            if not self._hold and self._pushed:
                await self._hold_again()
            self.result = await capture_context(
                kind="track",
                inputs=(),
                pushed_inputs=self._pushed,
                input_refs=self._refs,
                outputs=self._outputs,
                extra=extra,
                started=self._started,
                result={"name": "result", "annotations": result},
                holds=self._holds,
                **self._kw,
            )


def _call_info(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    return {
        "function": f"{fn.__module__}.{fn.__qualname__}",
        "args": [_short(a) for a in args],
        "kwargs": {k: _short(v) for k, v in kwargs.items()},
    }


def track(
    store: str | Store | None = None,
    *,
    inputs: Inputs = (),
    outputs: Sequence[str | os.PathLike[str]] = (),
    **options: Any,
) -> Callable[[F], F]:
    """Record every call of the decorated function (sync or async) as a run: see
    :class:`Run` (``options`` are its keyword arguments). A sync function's recording
    runs its own event loop, so call it from synchronous code."""

    def deco(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                run = Run(store, inputs=inputs, outputs=outputs, call=_call_info(fn, args, kwargs),
                          **options)  # fmt: skip
                async with run:
                    return await fn(*args, **kwargs)

            return cast("F", awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import anyio

            run = Run(store, inputs=inputs, outputs=outputs, call=_call_info(fn, args, kwargs),
                      **options)  # fmt: skip
            run._hold = False
            anyio.run(run.__aenter__)
            try:
                value = fn(*args, **kwargs)
            except BaseException as e:
                anyio.run(run.__aexit__, type(e), e, e.__traceback__)
                raise
            anyio.run(run.__aexit__, None, None, None)
            return value

        return cast("F", wrapper)

    return deco
