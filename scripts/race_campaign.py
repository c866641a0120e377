#!/usr/bin/env python3
"""Raced pulls: a hostile owner of the destination swaps its directories while pulls run.

Each round lays out a fresh destination owned by the attacker, forks the attacker (as
``nobody`` when run as root, ``--mode root``; as the same user, ``--mode same``), and pulls a
snapshot into the destination while the attacker loops: it swaps a directory of the
destination — a sub-directory, the staging directory, or (as the same user) a fan-out
directory of staging — for a symbolic link to the sentinel directory or for a directory of
its own full of links to the sentinel's files, or (as the same user) a staged file for a
hard link to a sentinel file; then it puts things back. Pulls come from a ``file://`` store
(the core fills staging) and from a store that downloads the way cloud stores do (the
Python side writes into staging), in turn.

After each round: the sentinel directory and everything else outside the destination must
be exactly as before (names, modes, sizes, inodes, mtimes, content), and a pull that
reported success while the attacker put everything back must have left exactly the
snapshot (its id recomputed from the destination). Printed at the end: rounds, writes
outside (must be 0), wrong trees reported as success (must be 0), crashes (must be 0:
anything but a snapdir error, or a pull that did not return), and how the other rounds
ended.

    sudo python scripts/race_campaign.py                        # 2 x 250 rounds, ~5 min
    python scripts/race_campaign.py --mode same --rounds 200    # any user

Exit status 1 if any must-be-0 figure is not.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import snapdir
from snapdir.stores import BaseStore, object_key
from snapdir.stores._streams import download_verified
from snapdir.stores.file import FileStore

NOBODY = 65534
#: Print why each refused pull was refused (``--verbose``).
VERBOSE = False
STAGING_PREFIX = ".snapdir-staging."


# -------------------------------------------------------------------------------------------
# What is outside the destination
# -------------------------------------------------------------------------------------------


def state(
    root: Path, skip: Path | None = None, hash_under: Path | None = None
) -> dict[str, tuple[Any, ...]]:
    """Everything under ``root`` but ``skip``: (mode, size, inode, mtime, content hash or
    link target); contents are hashed only under ``hash_under`` if given (the
    sentinel; elsewhere a change of content without a change of mtime is not a risk)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, names in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if skip is None or here / d != skip]
        for n in dirnames + names:
            p = here / n
            st = os.lstat(p)
            digest = ""
            hashed = hash_under is None or p.is_relative_to(hash_under)
            if hashed and os.path.isfile(p) and not os.path.islink(p):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            elif os.path.islink(p):
                digest = os.readlink(p)
            # Not the link count: a hard link the attacker makes to a file outside and puts
            # in the way is its own doing (a pull may then move that name within the
            # destination, refusing it, but never writes through it).
            out[str(p.relative_to(root))] = (
                st.st_mode,
                st.st_size,
                st.st_ino,
                st.st_mtime_ns,
                digest,
            )
    return out


# -------------------------------------------------------------------------------------------
# The attacker
# -------------------------------------------------------------------------------------------


def _dirs(dest: Path, same_user: bool, limit: int = 64) -> list[Path]:
    """Directories of the destination the attacker may swap (what it can see)."""
    found: list[Path] = []
    stack = [dest]
    while stack and len(found) < limit:
        d = stack.pop()
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            p = d / n
            if n.endswith(".moved") or n.endswith(".mine"):
                continue
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    found.append(p)
                    stack.append(p)
            except OSError:
                pass
    return found


def _files(dest: Path) -> list[Path]:
    """Staged files (the same user can reach into staging)."""
    out: list[Path] = []
    for d in _dirs(dest, True):
        if STAGING_PREFIX not in str(d):
            continue
        try:
            for n in os.listdir(d):
                p = d / n
                if n.isdigit() and os.path.isfile(p) and not os.path.islink(p):
                    out.append(p)
        except OSError:
            pass
    return out


def attack(dest: Path, sentinel: Path, same_user: bool, seed: int) -> int:
    """Swap things in ``dest`` until SIGTERM; put each back. Returns 0 if every swap was
    undone cleanly, 3 otherwise (a pull took a swapped name meanwhile: that round's tree is
    not checked)."""
    rnd = random.Random(seed)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    clean = True
    sentinel_files = sorted(p for p in sentinel.iterdir() if p.is_file())
    n = 0
    while not stop:
        n += 1
        kinds = ["link", "mine"] + (["hardlink"] if same_user else [])
        kind = rnd.choice(kinds)
        try:
            if kind == "hardlink":
                files = _files(dest)
                if not files:
                    continue
                f = rnd.choice(files)
                moved = f.with_name(f.name + ".moved")
                os.rename(f, moved)
                try:
                    os.link(rnd.choice(sentinel_files), f)
                    time.sleep(rnd.random() / 2000)
                finally:
                    try:
                        os.unlink(f)
                        os.rename(moved, f)
                    except OSError:
                        clean = False
                continue
            dirs = _dirs(dest, same_user)
            if not dirs:
                time.sleep(0.0001)
                continue
            d = rnd.choice(dirs)
            moved = d.with_name(d.name + ".moved")
            os.rename(d, moved)
        except OSError:
            continue
        try:
            if kind == "link":
                os.symlink(sentinel, d)
            else:
                os.mkdir(d)
                for i in range(4):
                    os.symlink(sentinel_files[i % len(sentinel_files)], d / str(i))
                os.symlink(sentinel_files[0], d / "f")
            time.sleep(rnd.random() / 1000)
        except OSError:
            pass
        finally:
            try:
                if os.path.islink(d):
                    os.unlink(d)
                elif os.path.isdir(d):
                    for c in os.listdir(d):
                        # Only its own links; something a pull wrote in there is the
                        # attacker deleting files it was given: that tree is not checked.
                        if not (c.isdigit() or c == "f") or not os.path.islink(d / c):
                            clean = False
                        os.unlink(d / c)
                    os.rmdir(d)
                os.rename(moved, d)
            except OSError:
                clean = False
    return 0 if clean else 3


def start_attacker(dest: Path, sentinel: Path, as_nobody: bool, seed: int) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            if as_nobody:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            code = attack(dest, sentinel, not as_nobody, seed)
        finally:
            os._exit(code)
    return pid


# -------------------------------------------------------------------------------------------
# Stores and the snapshot
# -------------------------------------------------------------------------------------------


class DownloadingStore(BaseStore):
    """A ``file://`` store read the way cloud stores download (a streamed, verified write to
    the path it is given), so the pull takes the Python download path."""

    def __init__(self, root: Path) -> None:
        self.inner = FileStore(f"file://{root}")
        super().__init__(self.inner.uri)
        self.root = root

    async def get_object(self, checksum: str, dest: str) -> None:
        path = self.root / object_key(checksum)

        def stream(sink: Any) -> None:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 16):
                    sink.write(chunk)

        await asyncio.to_thread(download_verified, dest, checksum, str(path), stream)

    async def has_manifest(self, snapshot_id: str) -> bool:
        return await self.inner.has_manifest(snapshot_id)

    async def get_manifest(self, snapshot_id: str) -> Any:
        return await self.inner.get_manifest(snapshot_id)

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        await self.inner.put_manifest(snapshot_id, text)

    async def list_manifests(self) -> list[str]:
        return await self.inner.list_manifests()


def make_snapshot(work: Path, files: int, rnd: random.Random) -> tuple[str, Path, list[str]]:
    """A tree of ``files`` small files in a few levels (and enough distinct objects for the
    staging fan-out), pushed to a ``file://`` store; returns (id, store, directories)."""
    tree = work / "tree"
    dirs = ["a", "a/b", "a/b/c", "d", "d/e"]
    for d in dirs:
        (tree / d).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        d = dirs[i % len(dirs)] if i % 3 else ""
        (tree / d / f"f{i}").write_bytes(rnd.randbytes(rnd.randrange(0, 3000)))
    store = work / "store"
    sid = asyncio.run(snapdir.push(tree, f"file://{store}"))
    shutil.rmtree(tree)
    return str(sid), store, dirs


# -------------------------------------------------------------------------------------------
# The campaign
# -------------------------------------------------------------------------------------------


def _comparable(manifest_text: str) -> set[str]:
    """A manifest's lines but staging leftovers, the root's by its mode only (its checksum
    covers the leftovers). Leftovers are what the attacker put back: a staging directory
    (or lock file) it moved away while the pull ran and returned after the pull had ended."""
    out = set()
    for line in manifest_text.splitlines():
        kind, mode, _sum, _size, path = line.split(" ", 4)
        if path.startswith("./" + STAGING_PREFIX):
            continue
        out.add(f"{kind} {mode} ./" if path == "./" else line)
    return out


def one_round(
    work: Path,
    sid: str,
    store: Path,
    dirs: list[str],
    mode: str,
    rnd: random.Random,
    n: int,
) -> str:
    """One raced pull; returns how it ended (see ``main``)."""
    as_nobody = mode == "root"
    owner = NOBODY if as_nobody else os.getuid()
    dest = work / "dests" / f"d{n}"
    dest.mkdir(parents=True)
    # Half the rounds update a tree the owner already has (so every level is theirs to swap).
    if rnd.random() < 0.5:
        for d in dirs:
            (dest / d).mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, _ in os.walk(dest):
        os.chown(dirpath, owner, owner)
        for d in dirnames:
            os.chown(os.path.join(dirpath, d), owner, owner)
    sentinel = work / "sentinel"
    before = state(work, skip=work / "dests", hash_under=sentinel)
    pid = start_attacker(dest, sentinel, as_nobody, rnd.randrange(1 << 30))
    time.sleep(rnd.random() / 500)
    target: Any = f"file://{store}" if n % 2 == 0 else DownloadingStore(store)
    outcome = "ok"
    try:
        asyncio.run(asyncio.wait_for(snapdir.pull(sid, target, dest, force=False), 120))
    except snapdir.SnapdirError as e:
        outcome = f"refused:{e.code}"
        if VERBOSE:
            print(f"  {mode} round {n}: {e.code}: {e}", file=sys.stderr)
    except BaseException as e:  # anything else is a crash
        outcome = f"crash:{type(e).__name__}: {e}"
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    after = state(work, skip=work / "dests", hash_under=sentinel)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        outcome = f"outside:{[(k, before.get(k), after.get(k)) for k in changed[:3]]}"
    elif outcome == "ok":
        if not clean:
            outcome = "ok-interfered"
        else:
            want = _comparable(asyncio.run(FileStore(f"file://{store}").get_manifest(sid)).raw)
            have = _comparable(asyncio.run(snapdir.manifest(dest)).raw)
            if want != have:
                outcome = "wrong-tree"
                if VERBOSE:
                    print(f"  missing {sorted(want - have)[:4]} extra {sorted(have - want)[:4]}")
    shutil.rmtree(dest, ignore_errors=True)
    return outcome


def run_mode(mode: str, rounds: int, seed: int, files: int) -> collections.Counter[str]:
    rnd = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="snapdir-races-"))
    os.chmod(work, 0o755)
    try:
        sid, store, dirs = make_snapshot(work, files, rnd)
        sentinel = work / "sentinel"
        sentinel.mkdir()
        for i in range(4):
            (sentinel / f"s{i}").write_bytes(f"sentinel {i}\n".encode() * 10)
        (sentinel / "sub").mkdir()
        outcomes: collections.Counter[str] = collections.Counter()
        for n in range(rounds):
            o = one_round(work, sid, store, dirs, mode, rnd, n)
            key = o.split(":", 1)[0] if not o.startswith("refused") else o
            outcomes[key] += 1
            if o.startswith(("outside", "crash", "wrong")):
                print(f"  {mode} round {n}: {o}", file=sys.stderr)
        return outcomes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rounds", type=int, default=250, help="raced pulls per mode (250: ~5 min for both)"
    )
    p.add_argument(
        "--mode",
        choices=("root", "same", "both"),
        default="both" if os.geteuid() == 0 else "same",
        help="attacker as nobody against a root pull, as the same user, or both",
    )
    p.add_argument("--files", type=int, default=200, help="files in the snapshot")
    p.add_argument("--seed", type=int, default=20261207)
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    p.add_argument("--verbose", action="store_true", help="say why each refused pull was")
    a = p.parse_args(argv)
    global VERBOSE
    VERBOSE = a.verbose
    modes = ["root", "same"] if a.mode == "both" else [a.mode]
    if "root" in modes and os.geteuid() != 0:
        p.error("--mode root needs root (the attacker runs as nobody)")
    total: dict[str, Any] = {}
    bad = 0
    start = time.monotonic()
    for mode in modes:
        t0 = time.monotonic()
        o = run_mode(mode, a.rounds, a.seed, a.files)
        figures = {
            "rounds": a.rounds,
            "writes_outside": o["outside"],
            "wrong_trees_reported_as_success": o["wrong-tree"],
            "crashes": o["crash"],
            "succeeded_checked": o["ok"],
            "succeeded_while_interfered": o["ok-interfered"],
            "refused": {k: v for k, v in sorted(o.items()) if k.startswith("refused")},
            "seconds": round(time.monotonic() - t0, 1),
        }
        total[mode] = figures
        bad += o["outside"] + o["wrong-tree"] + o["crash"]
        who = "attacker nobody, pull as root" if mode == "root" else "attacker same user"
        print(
            f"{mode:4} ({who}): {a.rounds} rounds in {figures['seconds']} s; writes outside "
            f"{o['outside']}, wrong trees reported as success {o['wrong-tree']}, crashes "
            f"{o['crash']}; succeeded {o['ok']} (checked) + {o['ok-interfered']} (attacker "
            f"took a name back: not checked), refused {figures['refused']}"
        )
    if a.json:
        print(json.dumps(total, indent=2))
    print(f"total {time.monotonic() - start:.0f} s; {'FAILED' if bad else 'ok'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
