"""Progress bars for the CLI: on stderr, only when it is a terminal, never on stdout.

``rich`` (extra ``progress``) draws them when installed; otherwise a plain one-line
counter is redrawn in place. ``--no-progress``, ``--quiet`` or ``SNAPDIR_NO_PROGRESS=1``
turn them off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

__all__ = ["Reporter", "make_reporter"]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class Reporter:
    """A progress callback: ``reporter(files_delta, bytes_delta)``; ``total(files, bytes)``
    when the amount of work becomes known (enables the ETA)."""

    def __init__(self, label: str) -> None:
        from ._redact import redact_text

        # The label is drawn on the terminal: masked like every other line snapdir prints.
        self.label = redact_text(label)
        self.files = 0
        self.bytes = 0
        self.total_files: int | None = None
        self.total_bytes: int | None = None
        self.start = time.monotonic()
        self._last = 0.0
        self._rich: Any = None
        self._task: Any = None
        try:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
        except ImportError:
            return
        self._rich = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]} files"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._rich.start()
        self._task = self._rich.add_task(self.label, total=None, files=0)

    def total(self, files: int, nbytes: int) -> None:
        self.total_files, self.total_bytes = files, nbytes
        if self._rich is not None:
            self._rich.update(self._task, total=nbytes)

    def __call__(self, files: int, nbytes: int) -> None:
        self.files += files
        self.bytes += nbytes
        if self._rich is not None:
            self._rich.update(self._task, advance=nbytes, files=self.files)
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        rate = self.bytes / max(now - self.start, 1e-6)
        eta = ""
        if self.total_bytes and rate > 0:
            eta = f", ETA {max(self.total_bytes - self.bytes, 0) / rate:.0f}s"
        sys.stderr.write(
            f"\r{self.label}: {self.files} files, {_human(self.bytes)}, {_human(rate)}/s{eta}  "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self._last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def make_reporter(label: str, *, enabled: bool) -> Reporter | None:
    """A reporter when progress should be shown (stderr is a terminal, not disabled)."""
    if not enabled or os.environ.get("SNAPDIR_NO_PROGRESS", "").strip() not in ("", "0"):
        return None
    if not sys.stderr.isatty():
        return None
    return Reporter(label)
