"""Small process helpers shared by the loopback test servers.

Everything here binds or connects to 127.0.0.1 only.  Processes are started in their own
process group (``start_new_session=True``) so a stray Ctrl-C in the terminal does not reach
them, and they are always stopped by PID: SIGTERM, a short grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is currently free on ``host`` (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports (all held open at once while picking)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if ``port`` can be bound on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def start_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session/process group, stdout+stderr appended to ``log_path``.

    On Linux the server is also killed when this process dies (``setpriv --pdeathsig
    KILL``, util-linux): the fixtures stop every server by its PID, but a test run killed
    outright (a CI timeout, ``kill -9``) runs no teardown, and its servers would live on.
    KILL, not TERM: nobody is left to wait for a graceful stop, and a busy SeaweedFS was
    seen to outlive a TERM by minutes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    prefix = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def log_tail(log_path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a log file, decoded leniently ('' if missing)."""
    try:
        data = log_path.read_bytes()
    except OSError:
        return ""
    return data[-max_bytes:].decode("utf-8", errors="replace")


def wait_until_ready(
    probe: Callable[[], object],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval_s: float = 0.2,
) -> None:
    """Call ``probe`` until it returns without raising, or fail after ``timeout_s``.

    A probe that raises counts as "not ready yet".  If ``proc`` exits meanwhile, fail at once
    with the tail of ``log_path``.
    """
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        try:
            probe()
        except Exception as exc:
            last_error = exc
        else:
            return
        if time.monotonic() >= deadline:
            tail = log_tail(log_path) if log_path else ""
            raise TimeoutError(
                f"{what} not ready after {timeout_s:.0f}s; last probe error: {last_error!r}\n{tail}"
            )
        time.sleep(interval_s)


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float = 3.0) -> int:
    """Stop a process started by :func:`start_process` and reap it; return its exit code.

    SIGTERM to the PID, wait ``grace_s``, then SIGKILL to its process group (the group id is
    the PID, see ``start_new_session``), so nothing it spawned outlives it.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return int(proc.returncode)
