"""Running the command: live output, a masked and hashed copy on disk, signals, status.

The child's stdout and stderr are pipes, each drained by its own thread with plain
``os.read`` calls: every chunk is written to the terminal (our own stdout/stderr) the moment
it arrives — no line buffering on our side, so a progress bar or a prompt shows as the
child writes it — and then passed through the :class:`~.secrets.Masker` into a temporary
file while its BLAKE3 is computed. Nothing is held in memory beyond one read (64 KiB) and
the masker's tail, so a command that writes 1 GiB costs 1 GiB of temporary disk, not RAM;
the file is uploaded as one object afterwards (docs/design/runs.md).

Signals: when our stdin is not a terminal, the child gets its own process group and
SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to snapdir are forwarded to that whole group (a
pipeline of grandchildren stops too). On a terminal the child stays in the foreground
group, where the terminal's own Ctrl-C already reaches it: SIGINT is then not forwarded a
second time (a double SIGINT makes many programs abort instead of shutting down), the
others are. The status passed through is the child's exit status, or 128 + the signal
that killed it, as a shell reports it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone

from .._errors import InvalidArgumentError, NotFoundError
from .secrets import Masker

__all__ = ["Captured", "ChildResult", "run_child"]

CHUNK = 1 << 16
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Captured:
    """One captured stream: the masked copy's path, BLAKE3 and size."""

    __slots__ = ("digest", "path", "size")

    def __init__(self, path: str, digest: str, size: int) -> None:
        self.path = path
        self.digest = digest
        self.size = size


class ChildResult:
    """What happened to the child."""

    __slots__ = (
        "cpu_ns",
        "exit_code",
        "finished",
        "max_rss",
        "monotonic_ns",
        "signal",
        "started",
        "stderr",
        "stdout",
        "timed_out",
    )

    def __init__(self) -> None:
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.started = datetime.now(timezone.utc)
        self.finished = self.started
        self.monotonic_ns = 0
        self.max_rss = 0
        self.cpu_ns = 0
        self.timed_out = False
        self.stdout: Captured | None = None
        self.stderr: Captured | None = None

    @property
    def status(self) -> int:
        """The status a shell would report: the exit code, or 128 + the signal."""
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code or 0


class _Tee:
    """Masks, hashes and writes one stream to its temporary file."""

    def __init__(self, path: str, masker: Masker) -> None:
        from .._snapdir import Hasher

        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 (closed in finish)
        self.hasher = Hasher()
        self.masker = masker
        self.size = 0

    def write(self, chunk: bytes) -> None:
        data = self.masker.feed(chunk)
        if data:
            self._out(data)

    def _out(self, data: bytes) -> None:
        self.file.write(data)
        self.hasher.update(data)
        self.size += len(data)

    def finish(self) -> Captured:
        rest = self.masker.flush()
        if rest:
            self._out(rest)
        self.file.close()
        return Captured(self.path, self.hasher.hexdigest(), self.size)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pump(src: int, echo: int | None, tee: _Tee, out: list[Captured]) -> None:
    try:
        while True:
            try:
                chunk = os.read(src, CHUNK)
            except InterruptedError:  # pragma: no cover (PEP 475 retries)
                continue
            if not chunk:
                break
            if echo is not None:
                try:
                    _write_all(echo, chunk)
                except OSError:
                    echo = None  # the terminal went away: keep capturing
            tee.write(chunk)
    finally:
        os.close(src)
        out.append(tee.finish())


def run_child(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    secrets: Sequence[str],
    tmpdir: str,
    echo_stdout: int | None = 1,
    echo_stderr: int | None = 2,
    forward_signals: bool = True,
    timeout: float | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ChildResult:
    """Run ``argv`` to completion; see the module docstring. ``forward_signals`` needs the
    main thread (signal handlers can only be set there) and is ignored elsewhere."""
    if not argv:
        raise InvalidArgumentError("no command given to run")
    result = ChildResult()
    own_group = not _stdin_is_tty()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    kwargs: dict[str, object] = {}
    if own_group:
        if sys.version_info >= (3, 11):
            kwargs["process_group"] = 0
        else:  # pragma: no cover
            kwargs["preexec_fn"] = os.setpgrp
    t0 = time.monotonic_ns()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=w_out,
            stderr=w_err,
            close_fds=True,
            **kwargs,  # type: ignore[call-overload]
        )
    except FileNotFoundError:
        for fd in (r_out, w_out, r_err, w_err):
            os.close(fd)
        raise NotFoundError(f"command not found: {argv[0]!r}") from None
    except BaseException:
        for fd in (r_out, w_out, r_err, w_err):
            os.close(fd)
        raise
    os.close(w_out)
    os.close(w_err)
    if on_start is not None:
        on_start(proc.pid)
    outs: list[Captured] = []
    errs: list[Captured] = []
    threads = [
        threading.Thread(
            target=_pump,
            args=(r_out, echo_stdout, _Tee(os.path.join(tmpdir, "stdout"), Masker(secrets)), outs),
            daemon=True,
        ),
        threading.Thread(
            target=_pump,
            args=(r_err, echo_stderr, _Tee(os.path.join(tmpdir, "stderr"), Masker(secrets)), errs),
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()

    def send(sig: int) -> None:
        try:
            if own_group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    previous: dict[int, object] = {}
    if forward_signals and threading.current_thread() is threading.main_thread():

        def forward(signum: int, frame: object) -> None:
            send(signum)

        for sig in _FORWARDED:
            if sig == signal.SIGINT and not own_group:
                previous[sig] = signal.signal(sig, signal.SIG_IGN)
            else:
                previous[sig] = signal.signal(sig, forward)
    timer = None
    if timeout is not None:

        def expire() -> None:
            result.timed_out = True
            send(signal.SIGTERM)
            kill = threading.Timer(5.0, send, (signal.SIGKILL,))
            kill.daemon = True
            kill.start()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    try:
        _, wstatus, usage = os.wait4(proc.pid, 0)
    finally:
        if timer is not None:
            timer.cancel()
        for num, handler in previous.items():
            signal.signal(num, handler)  # type: ignore[arg-type]
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    result.monotonic_ns = time.monotonic_ns() - t0
    result.finished = datetime.now(timezone.utc)
    if os.WIFSIGNALED(wstatus):
        result.signal = os.WTERMSIG(wstatus)
    else:
        result.exit_code = os.WEXITSTATUS(wstatus)
    # ru_maxrss: KiB on Linux, bytes on macOS
    result.max_rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    result.cpu_ns = int((usage.ru_utime + usage.ru_stime) * 1e9)
    for t in threads:
        # A grandchild that kept the pipe open ends the capture only when it exits.
        t.join()
    result.stdout = outs[0]
    result.stderr = errs[0]
    return result


def _stdin_is_tty() -> bool:
    try:
        return os.isatty(0)
    except OSError:  # pragma: no cover
        return False
