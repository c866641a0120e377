"""A killed ``fetch``/``sync`` into a local store leaves its download directory behind; the
next transfer into that store removes it, but never one of a process still running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from snapdir._common import DOWNLOAD_PREFIX, _clear_stale_downloads


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_download_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f"{DOWNLOAD_PREFIX}{dead_pid()}-abc"
    live = tmp_path / f"{DOWNLOAD_PREFIX}{os.getpid()}-def"
    unrelated = tmp_path / ".snapdir-inx"
    for d in (stale, live, unrelated):
        d.mkdir()
        (d / "partial").write_bytes(b"half an object")
    _clear_stale_downloads(str(tmp_path))
    assert not stale.exists()
    assert (live / "partial").read_bytes() == b"half an object"
    assert unrelated.exists()


def test_a_store_that_does_not_exist_is_left_alone(tmp_path: Path) -> None:
    _clear_stale_downloads(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
