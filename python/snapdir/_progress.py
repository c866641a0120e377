"""Progress reports for the CLI: on stderr only, never on stdout.

Three ways to show it (``--progress`` / ``SNAPDIR_PROGRESS``):

- ``bar``: one bar per operation, redrawn in place, with totals, rate and ETA. ``rich``
  (extra ``progress``) draws it when installed, else a plain one-line counter.
- ``plain``: for CI logs, which keep every byte written to them and cannot redraw: one
  status line every 10 s (``SNAPDIR_PROGRESS_INTERVAL``) like restic's, elapsed time,
  files and bytes done of the total, rate and ETA; nothing at all for an operation that
  finishes sooner, so short commands stay quiet.
- ``none``.

``auto`` (the default) is ``bar`` on a terminal and ``plain`` otherwise. Sizes are in IEC
units (KiB, MiB, GiB) everywhere, as in the CLI's summary lines.

Where the totals come from: a transfer knows them from its manifest (announced with
``snapdir.stores._base.announce_total``). A walk (``id``, ``manifest``, the first phase of
a cloud push, and the whole of a ``file://`` push, which copies as it walks) does not; one
still running after a second (``SNAPDIR_PROGRESS_COUNT_AFTER``) gets them from a second
walk beside it that only ``stat``s, as restic's scanner does (``walk_counted`` in the Rust
core), and its bar gains a total and an ETA (``announce_found``) without its counts
starting again.
"""

from __future__ import annotations

import os
import sys
import time

# `typing` costs ~5 ms at start-up (this module is loaded by every transferring command).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MODES",
    "PlainReporter",
    "Reporter",
    "iec",
    "make_reporter",
    "progress_interval",
    "resolve_mode",
]

#: The values of ``--progress`` and ``SNAPDIR_PROGRESS``.
MODES = ("auto", "bar", "plain", "none")

#: Seconds between two status lines in ``plain`` mode (``SNAPDIR_PROGRESS_INTERVAL``).
DEFAULT_INTERVAL = 10.0


def iec(n: float) -> str:
    """``n`` bytes in IEC units: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            break
    return f"{n:.1f} {unit}"


def _clock(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03`` (as restic prints elapsed time and ETA)."""
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def resolve_mode(flag: str | None, *, disabled: bool = False, tty: bool | None = None) -> str:
    """The progress mode of a run: ``bar``, ``plain`` or ``none``.

    ``disabled`` (``-q``, ``--no-progress``) wins; then ``--progress`` (``flag``); then
    ``SNAPDIR_NO_PROGRESS=1``; then ``SNAPDIR_PROGRESS``; else ``auto``, which is ``bar``
    when stderr is a terminal (``tty``) and ``plain`` otherwise. An unknown value of
    ``SNAPDIR_PROGRESS`` is :class:`~snapdir.InvalidArgumentError`."""
    if disabled:
        return "none"
    mode = flag
    if mode is None:
        if _truthy(os.environ.get("SNAPDIR_NO_PROGRESS", "")):
            return "none"
        mode = os.environ.get("SNAPDIR_PROGRESS", "").strip().lower() or "auto"
        if mode not in MODES:
            from ._errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"SNAPDIR_PROGRESS must be one of {', '.join(MODES)}, not {mode!r}"
            )
    if mode == "auto":
        if tty is None:
            tty = sys.stderr.isatty()
        return "bar" if tty else "plain"
    return mode


def progress_interval() -> float:
    """Seconds between status lines in ``plain`` mode: ``SNAPDIR_PROGRESS_INTERVAL`` (a
    positive number), else 10."""
    raw = os.environ.get("SNAPDIR_PROGRESS_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        from ._errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"SNAPDIR_PROGRESS_INTERVAL must be a positive number of seconds, not {raw!r}"
        )
    return value


class _Counts:
    """What a reporter counts: a progress callback ``reporter(files_delta, bytes_delta)``,
    and ``total(files, bytes)`` when the amount of work becomes known (enables the ETA)."""

    def __init__(self, label: str) -> None:
        self._raw_label = label
        self._label: str | None = None
        self.files = 0
        self.bytes = 0
        self.total_files: int | None = None
        self.total_bytes: int | None = None
        self.start = self.phase_start = time.monotonic()

    @property
    def label(self) -> str:
        """The label as printed: masked like every other line snapdir prints. Masked when
        first printed, not before (compiling the masks costs more than a short command)."""
        if self._label is None:
            from ._redact import redact_text

            self._label = redact_text(self._raw_label)
        return self._label

    def total(self, files: int, nbytes: int) -> None:
        """The amount of work from here on. What was counted before it is told belongs to
        an earlier phase (the walk of a push before its upload, the fetch into the cache
        before a linked checkout): the counts start again, the elapsed time does not."""
        if self.files or self.bytes:
            self.files = self.bytes = 0
            self.phase_start = time.monotonic()
        self.total_files, self.total_bytes = files, nbytes

    def found(self, files: int, nbytes: int) -> None:
        """The totals of the phase under way, learnt while it runs: the counts go on."""
        self.total_files, self.total_bytes = files, nbytes

    def __call__(self, files: int, nbytes: int) -> None:
        self.files += files
        self.bytes += nbytes

    def status(self, now: float | None = None) -> str:
        """One line: elapsed, percentage, files and bytes done of the total, rate, ETA."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-6)
        rate = self.bytes / max(now - self.phase_start, 1e-6)
        parts = [f"[{_clock(elapsed)}]"]
        tb, tf = self.total_bytes, self.total_files
        if tb:
            parts.append(f"{min(100.0, 100.0 * self.bytes / tb):.1f}%")
        files = f"{self.files} files" if tf is None else f"{self.files}/{tf} files"
        done = iec(self.bytes) if tb is None else f"{iec(self.bytes)}/{iec(tb)}"
        parts.append(f"{files}, {done}, {iec(rate)}/s")
        if tb and rate > 0 and self.bytes < tb:
            parts.append(f"ETA {_clock((tb - self.bytes) / rate)}")
        return " ".join(parts)

    def close(self) -> None:
        """Stop reporting (the operation is over, or failed)."""


class PlainReporter(_Counts):
    """``plain`` mode: a status line on stderr every ``interval`` seconds while the
    operation runs, from a thread of its own (a single 20-minute upload still gets its
    lines, though no file completes meanwhile); a last line when it ends if any was
    printed, none at all for an operation shorter than ``interval``."""

    def __init__(self, label: str, interval: float) -> None:
        import threading

        super().__init__(label)
        self.interval = interval
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapdir-progress", daemon=True)
        self._thread.start()

    def _line(self) -> None:
        sys.stderr.write(f"snapdir: {self.label} {self.status()}\n")
        sys.stderr.flush()
        self.lines += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._line()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if self.lines:
            self._line()


class Reporter(_Counts):
    """``bar`` mode: a bar redrawn in place on stderr (``rich`` when installed)."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self._last = 0.0
        self._rich: Any = None
        self._task: Any = None
        try:
            from rich.progress import BarColumn, Progress, TextColumn
        except ImportError:
            return
        self._rich = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            console=_stderr_console(),
        )
        self._rich.start()
        self._task = self._rich.add_task(self.label, total=None, status="")

    def total(self, files: int, nbytes: int) -> None:
        super().total(files, nbytes)
        if self._rich is not None:
            self._rich.update(self._task, total=nbytes, completed=self.bytes)

    def found(self, files: int, nbytes: int) -> None:
        super().found(files, nbytes)
        if self._rich is not None:
            self._rich.update(self._task, total=nbytes, completed=self.bytes)

    def __call__(self, files: int, nbytes: int) -> None:
        super().__call__(files, nbytes)
        now = time.monotonic()
        if self._rich is not None:
            # The status text is ours (IEC units; rich's byte columns are decimal).
            self._rich.update(self._task, completed=self.bytes, status=self._bar_status(now))
            return
        if now - self._last < 0.2:
            return
        self._last = now
        sys.stderr.write(f"\r{self.label}: {self.status(now)}  \033[K")
        sys.stderr.flush()

    def _bar_status(self, now: float) -> str:
        # The bar shows the percentage; the text the rest.
        line = self.status(now)
        return line.split("% ", 1)[1] if "% " in line else line.split("] ", 1)[-1]

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self._last:
            self._last = 0.0
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _stderr_console() -> Any:
    from rich.console import Console

    # Asked for a bar, draw one (auto asks only on a terminal).
    return Console(file=sys.stderr, force_terminal=True)


def make_reporter(label: str, *, mode: str) -> _Counts | None:
    """A reporter for ``mode`` (see :func:`resolve_mode`), or ``None`` for ``none``."""
    if mode == "bar":
        return Reporter(label)
    if mode == "plain":
        return PlainReporter(label, progress_interval())
    return None
