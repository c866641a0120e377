#!/usr/bin/env python3
"""Local-state campaign: the stat cache, the checkout stamps and the cache directory are
untrusted input; mutate them for N rounds and count what went wrong.

Each round takes a fresh copy of the last good cache directory (written by a walk of a
small aged tree and by two pulls into an aged destination), applies one mutation, and runs
``snapdir.id`` of the tree and an incremental ``pull`` into the destination in a child
process with a time limit. The mutations:

- ``truncate``: a cache file cut at a random length;
- ``flip``: 1 to 8 random bits of a cache file flipped;
- ``crafted``: a record re-sealed with a valid checksum after a change the reader must
  not trust: another ``st_dev``, inode, mtime, size or mode; another file system identity
  (``f_fsid``, type); absurd counts; an unsorted listing; another root; another version;
- ``lie``: a record re-sealed with a valid checksum that *would* be believed (a file's
  checksum replaced, its stamp kept), in a cache directory another user owns or can write
  (owned by ``nobody``, or mode g+w / o+w): the directory must not be trusted;
- ``special``: a FIFO, a socket, a symbolic link (to ``/dev/zero`` or to another valid
  cache file), a directory or (as root) a character device in place of a cache file or of
  the ``statcache`` directory.

Counted per mutation kind: wrong ids (the id differs from a walk without any cache), wrong
"already right" (the destination does not hold the snapshot after the pull), hangs (the
child did not finish within ``--timeout``), crashes (it died or raised), and the largest
resident size of a child. All must be 0 but the size.

    python scripts/local_state_campaign.py --rounds 400 --seed 1
    python scripts/local_state_campaign.py --rounds 30 --json out.json   # CI size

Exit status 0 when nothing went wrong, 1 otherwise. Mutations that need root (foreign
owners, device nodes) are skipped, and counted as skipped, when not run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<8sIIQQq32s")
HEADER_LEN = HEADER.size
STATCACHE_MAGIC = b"SNAPSTC\0"
STAMPS_MAGIC = b"SNAPCKS\0"
REC = struct.Struct("<QQQqqI32s")
NOBODY = 65534

# -- the file formats (docs/statcache.md) ------------------------------------------------------


def _blake3(data: bytes) -> bytes:
    from snapdir import _snapdir

    return bytes.fromhex(_snapdir.blake3_hex(data))


def seal(magic: bytes, version: int, count: int, body: bytes, flags: int = 0) -> bytes:
    """A cache file around ``body`` with a valid checksum (what a forger can write)."""
    head = struct.pack("<8sIIQQq", magic, version, flags, count, len(body), 0)
    return head + _blake3(head + body) + body


def unseal(data: bytes) -> tuple[bytes, int, int, bytes]:
    """``(magic, version, count, body)`` of a cache file."""
    magic, version, _flags, count, _len, _t, _sum = HEADER.unpack_from(data)
    return magic, version, count, data[HEADER_LEN:]


@dataclass
class Child:
    name: bytes
    dtype: int
    rec: list[Any] | None  # dev, ino, size, mtime, ctime, mode, digest


@dataclass
class DirRec:
    rel: bytes
    stamp: list[int]  # dev, ino, mtime, ctime, mode
    flags: int
    digest: bytes
    size: int
    n_contrib: int
    children: list[Child]


@dataclass
class StatCacheFile:
    version: int
    root: bytes
    devs: list[list[Any]]  # dev, f_type, fsid (8 bytes)
    dirs: list[DirRec]

    @classmethod
    def parse(cls, data: bytes) -> StatCacheFile:
        magic, version, count, body = unseal(data)
        assert magic == STATCACHE_MAGIC, magic
        assert version == 3, version
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            pos += n
            return body[pos - n : pos]

        def u(fmt: str) -> Any:
            return struct.unpack("<" + fmt, take(struct.calcsize("<" + fmt)))[0]

        root = take(u("I"))
        devs = [[u("Q"), u("Q"), take(8)] for _ in range(u("I"))]
        dirs = []
        for _ in range(count):
            rel = take(u("I"))
            st = [u("Q"), u("Q"), u("q"), u("q"), u("I")]
            flags, digest, size, n_contrib = u("I"), take(32), u("Q"), u("Q")
            kids = []
            for _ in range(u("I")):
                name = take(u("I"))
                dtype, present = u("B"), u("B")
                rec = list(REC.unpack(take(REC.size))) if present else None
                kids.append(Child(name, dtype, rec))
            dirs.append(DirRec(rel, st, flags, digest, size, n_contrib, kids))
        assert pos == len(body)
        return cls(version, root, devs, dirs)

    def encode(self, *, count: int | None = None, n_devs: int | None = None) -> bytes:
        b = bytearray(struct.pack("<I", len(self.root)) + self.root)
        b += struct.pack("<I", len(self.devs) if n_devs is None else n_devs)
        for dev, ftype, fsid in self.devs:
            b += struct.pack("<QQ", dev, ftype) + fsid
        for d in self.dirs:
            b += struct.pack("<I", len(d.rel)) + d.rel
            b += struct.pack("<QQqqI", *d.stamp)
            b += struct.pack("<I", d.flags) + d.digest + struct.pack("<QQ", d.size, d.n_contrib)
            b += struct.pack("<I", len(d.children))
            for c in d.children:
                b += struct.pack("<I", len(c.name)) + c.name + bytes([c.dtype])
                b += b"\x01" + REC.pack(*c.rec) if c.rec is not None else b"\x00"
        n = len(self.dirs) if count is None else count
        return seal(STATCACHE_MAGIC, self.version, n, bytes(b))

    def file_recs(self) -> list[tuple[DirRec, Child]]:
        return [(d, c) for d in self.dirs for c in d.children if c.rec is not None]


@dataclass
class StampsFile:
    version: int
    root: bytes
    fs: list[Any]  # dev, f_type, fsid
    recs: list[tuple[bytes, list[Any]]]

    @classmethod
    def parse(cls, data: bytes) -> StampsFile:
        magic, version, count, body = unseal(data)
        assert magic == STAMPS_MAGIC, magic
        assert version == 2, version
        (rl,) = struct.unpack_from("<I", body)
        root = body[4 : 4 + rl]
        pos = 4 + rl
        dev, ftype = struct.unpack_from("<QQ", body, pos)
        fs = [dev, ftype, body[pos + 16 : pos + 24]]
        pos += 24
        recs = []
        for _ in range(count):
            (pl,) = struct.unpack_from("<I", body, pos)
            rel = body[pos + 4 : pos + 4 + pl]
            pos += 4 + pl
            recs.append((rel, list(REC.unpack_from(body, pos))))
            pos += REC.size
        return cls(version, root, fs, recs)

    def encode(self) -> bytes:
        b = bytearray(struct.pack("<I", len(self.root)) + self.root)
        b += struct.pack("<QQ", self.fs[0], self.fs[1]) + self.fs[2]
        for rel, rec in self.recs:
            b += struct.pack("<I", len(rel)) + rel + REC.pack(*rec)
        return seal(STAMPS_MAGIC, self.version, len(self.recs), bytes(b))


# -- the world ----------------------------------------------------------------------------------

FILES = {
    "a.txt": b"alpha " * 10,
    "sub/b.bin": bytes(range(256)) * 16,
    "sub/deeper/c.txt": b"charlie",
    "d.txt": b"delta " * 3,
    "empty": b"",
    "big.bin": bytes(random.Random(7).randbytes(2 << 20)),
}

#: Run in the child: the id of TREE and an incremental pull into DEST (forced: a file that
#: is not right is rewritten), with the cache of SNAPDIR_CACHE_DIR; prints JSON.
CHILD = r"""
import json, resource, sys, warnings, anyio, snapdir
from snapdir._pull import pull_with_stats
tree, dest, store, snap = sys.argv[1:5]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sid = anyio.run(lambda: snapdir.id(tree))
    stats = anyio.run(lambda: pull_with_stats(snap, store, dest, force=True))
# VmHWM is this process's own peak; ru_maxrss also counts the parent's size at exec.
try:
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "id": sid,
    "unread": stats["files_unread"],
    "warnings": [str(w.message) for w in caught],
    "maxrss_kb": peak,
}))
"""


@dataclass
class World:
    base: Path
    tree: Path
    dest: Path
    store: str
    snap: str
    good_cache: Path
    expected_id: str


def build_world(base: Path) -> World:
    import anyio
    import snapdir

    tree = base / "tree"
    for rel, data in FILES.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    store = f"file://{base / 'store'}"
    dest = base / "dest"
    good = base / "good-cache"
    good.mkdir(mode=0o700)
    saved = os.environ.get("SNAPDIR_CACHE_DIR")
    os.environ["SNAPDIR_CACHE_DIR"] = str(good)
    try:
        snap = anyio.run(lambda: snapdir.push(tree, store))
        anyio.run(lambda: snapdir.pull(snap, store, dest))
        time.sleep(2.2)  # past the racy margin: what follows is recorded
        anyio.run(lambda: snapdir.id(tree))
        anyio.run(lambda: snapdir.pull(snap, store, dest))
        anyio.run(lambda: snapdir.pull(snap, store, dest))
        expected = anyio.run(lambda: snapdir.id(tree, use_cache=False))
    finally:
        if saved is None:
            os.environ.pop("SNAPDIR_CACHE_DIR", None)
        else:
            os.environ["SNAPDIR_CACHE_DIR"] = saved
    assert expected == snap
    return World(base, tree, dest, store, snap, good, expected)


def cache_files(cache: Path) -> tuple[Path, Path]:
    """The walk's cache file and the destination's stamps file in ``cache``."""
    sc = cache / "statcache"
    walk = [p for p in sc.iterdir() if not p.name.startswith(("checkout-", "."))]
    stamps = [p for p in sc.iterdir() if p.name.startswith("checkout-")]
    assert len(walk) == 1, sorted(sc.iterdir())
    assert len(stamps) == 1, sorted(sc.iterdir())
    return walk[0], stamps[0]


# -- mutations ----------------------------------------------------------------------------------


def _replace(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def mutate_truncate(rng: random.Random, f: Path, _cache: Path) -> str:
    data = f.read_bytes()
    n = rng.randrange(len(data))
    _replace(f, data[:n])
    return f"truncate {f.name[:8]} at {n}"


def mutate_flip(rng: random.Random, f: Path, _cache: Path) -> str:
    data = bytearray(f.read_bytes())
    k = rng.randint(1, 8)
    for _ in range(k):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    _replace(f, bytes(data))
    return f"flip {k} bits"


#: What a crafted walk cache changes (each must make the reader distrust the record).
CRAFTED = ["dev", "ino", "mtime", "size", "mode", "fsid", "ftype", "count", "ndevs"]
CRAFTED += ["unsorted", "root", "version", "dupdev"]


def mutate_crafted(rng: random.Random, f: Path, _cache: Path) -> str:
    data = f.read_bytes()
    if data.startswith(STAMPS_MAGIC):
        s = StampsFile.parse(data)
        how = rng.choice(["dev", "ino", "mtime", "size", "mode", "fsid", "ftype", "root"])
        i = rng.randrange(len(s.recs))
        rec = s.recs[i][1]
        if how == "fsid":
            s.fs[2] = bytes(rng.randrange(256) for _ in range(8))
        elif how == "ftype":
            s.fs[1] = rng.choice([0x4D44, 0x6969, 0x65735546, 0x73717368])  # vfat nfs fuse sqfs
        elif how == "root":
            s.root = b"/elsewhere"
        else:
            field = {"dev": 0, "ino": 1, "size": 2, "mtime": 3, "ctime": 4, "mode": 5}[how]
            rec[field] += rng.choice([1, 2, 1 << 20])  # (u64 fields: no negatives)
            # and a checksum that is not the file's: trusted, it would be a wrong answer
            rec[6] = bytes(32)
        _replace(f, s.encode())
        return f"stamps {how}"
    c = StatCacheFile.parse(data)
    how = rng.choice(CRAFTED)
    _d, ch = rng.choice(c.file_recs())
    assert ch.rec is not None
    lie = bytes(32)
    if how in ("dev", "ino", "size", "mtime", "mode"):
        field = {"dev": 0, "ino": 1, "size": 2, "mtime": 3, "mode": 5}[how]
        ch.rec[field] += rng.choice([1, 2, 1 << 20])  # (u64 fields: no negatives)
        ch.rec[6] = lie
        _replace(f, c.encode())
    elif how in ("fsid", "ftype"):
        ch.rec[6] = lie  # the lie is only believed if the file system check fails
        for dv in c.devs:
            if how == "fsid":
                dv[2] = bytes(rng.randrange(256) for _ in range(8))
            else:
                dv[1] = rng.choice([0x4D44, 0x6969, 0x65735546, 0x73717368])
        _replace(f, c.encode())
    elif how == "count":
        _replace(f, c.encode(count=rng.choice([len(c.dirs) + 1, 2**63, 2**64 - 1])))
    elif how == "ndevs":
        _replace(f, c.encode(n_devs=rng.choice([len(c.devs) + 1, 2**32 - 1])))
    elif how == "unsorted":
        multi = [x for x in c.dirs if len(x.children) > 1]
        x = rng.choice(multi)
        x.children.reverse()
        _replace(f, c.encode())
    elif how == "root":
        c.root = b"/elsewhere"
        _replace(f, c.encode())
    elif how == "version":
        c.version = rng.choice([1, 2, 4])
        ch.rec[6] = lie
        _replace(f, c.encode())
    elif how == "dupdev":
        c.devs.append([c.devs[0][0], c.devs[0][1], bytes(8)])
        _replace(f, c.encode())
    return f"statcache {how}"


def plant_lie(f: Path) -> None:
    """Re-seals ``f`` with one file's checksum replaced and its stamp kept: believed
    wherever the cache is trusted."""
    data = f.read_bytes()
    if data.startswith(STAMPS_MAGIC):
        s = StampsFile.parse(data)
        # A destination file's stamp and checksum are kept; only a trusted file says so.
        # The lie: the file's content is changed (same size, mtime restored) and the stamp
        # taken after it, so the record vouches for a file that is not right.
        return _plant_stamps_lie(f, s)
    c = StatCacheFile.parse(data)
    for _d, ch in c.file_recs():
        assert ch.rec is not None
        ch.rec[6] = bytes(32)
    _replace(f, c.encode())


def _plant_stamps_lie(f: Path, s: StampsFile) -> None:
    dest = Path(s.root.decode())
    for rel, rec in s.recs:
        p = dest / rel.decode()
        if rec[2] == 0:
            continue
        st = p.stat()
        with open(p, "r+b") as fh:
            b = fh.read(1)
            fh.seek(0)
            fh.write(bytes([b[0] ^ 0xFF]))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        st = p.stat()
        rec[0:6] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]
    _replace(f, s.encode())


def mutate_lie(rng: random.Random, f: Path, cache: Path) -> str | None:
    how = rng.choice(["nobody-dir", "nobody-statcache", "g+w", "o+w", "parent-o+w"])
    if how.startswith("nobody") and os.geteuid() != 0:
        return None
    plant_lie(f)
    sc = cache / "statcache"
    if how == "nobody-dir":
        os.chown(cache, NOBODY, NOBODY)
    elif how == "nobody-statcache":
        os.chown(sc, NOBODY, NOBODY)
    elif how == "g+w":
        os.chmod(sc, 0o770)
    elif how == "o+w":
        os.chmod(cache, 0o707)
    else:
        os.chmod(cache.parent, 0o777)  # without the sticky bit
    return f"lie in {how}"


def mutate_special(rng: random.Random, f: Path, cache: Path) -> str | None:
    how = rng.choice(["fifo", "socket", "devzero-link", "link-to-valid", "dir", "chardev"])
    where = rng.choice(["file", "file", "statcache-dir"])
    target = f if where == "file" else cache / "statcache"
    if how == "chardev" and os.geteuid() != 0:
        return None
    if how == "link-to-valid":
        # Another valid cache file with a lie in it, reached through a symbolic link.
        other = cache.parent / f"other-{f.name}"
        shutil.copyfile(f, other)
        if not f.name.startswith("checkout-"):
            plant_lie(other)
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    if how == "fifo":
        os.mkfifo(target, 0o600)
    elif how == "socket":
        make_socket(target)
    elif how == "devzero-link":
        os.symlink("/dev/zero", target)
    elif how == "link-to-valid":
        os.symlink(cache.parent / f"other-{f.name}", target)
    elif how == "dir":
        target.mkdir()
    else:
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    return f"{how} as {where}"


def make_socket(path: Path) -> None:
    """A Unix socket at ``path`` (bound from its directory: socket paths are short)."""
    here = os.getcwd()
    with socket.socket(socket.AF_UNIX) as s:
        try:
            os.chdir(path.parent)
            s.bind(path.name)
        finally:
            os.chdir(here)


MUTATIONS = {
    "truncate": mutate_truncate,
    "flip": mutate_flip,
    "crafted": mutate_crafted,
    "lie": mutate_lie,
    "special": mutate_special,
}


# -- rounds -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    detail: str
    status: str  # ok, wrong-id, wrong-right, hang, crash, skipped
    seconds: float = 0.0
    maxrss_kb: int = 0
    message: str = ""


def restore_dest(w: World) -> None:
    """The destination as the snapshot has it (a lie may have changed a file)."""
    for rel, data in FILES.items():
        p = w.dest / rel
        if p.read_bytes() != data:
            st = p.stat()
            p.write_bytes(data)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def run_round(w: World, rng: random.Random, kind: str, timeout: float) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix="round-", dir=w.base))
    cache = work / "cache"
    shutil.copytree(w.good_cache, cache, symlinks=True)
    os.chmod(work, 0o700)
    restore_dest(w)
    try:
        walk_file, stamps_file = cache_files(cache)
        f = rng.choice([walk_file, stamps_file])
        detail = MUTATIONS[kind](rng, f, cache)
        if detail is None:
            return Outcome(kind, "needs root", "skipped")
        env = dict(os.environ, SNAPDIR_CACHE_DIR=str(cache))
        t0 = time.monotonic()
        try:
            p = subprocess.run(
                [sys.executable, "-c", CHILD, str(w.tree), str(w.dest), w.store, w.snap],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return Outcome(kind, detail, "hang", time.monotonic() - t0)
        dt = time.monotonic() - t0
        if p.returncode != 0:
            return Outcome(kind, detail, "crash", dt, message=p.stderr[-2000:])
        r = json.loads(p.stdout)
        out = Outcome(kind, detail, "ok", dt, int(r["maxrss_kb"]), "; ".join(r["warnings"]))
        if r["id"] != w.expected_id:
            out.status = "wrong-id"
        elif any((w.dest / rel).read_bytes() != data for rel, data in FILES.items()):
            out.status = "wrong-right"
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def campaign(rounds: int, seed: int, timeout: float, base: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    w = build_world(base)
    results: list[Outcome] = []
    kinds = list(MUTATIONS)
    for i in range(rounds):
        kind = kinds[i % len(kinds)]
        results.append(run_round(w, rng, kind, timeout))
    by_kind: dict[str, Counter[str]] = {k: Counter() for k in kinds}
    for r in results:
        by_kind[r.kind][r.status] += 1
    bad = [r for r in results if r.status not in ("ok", "skipped")]
    return {
        "rounds": rounds,
        "seed": seed,
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "wrong_ids": sum(r.status == "wrong-id" for r in results),
        "wrong_already_right": sum(r.status == "wrong-right" for r in results),
        "hangs": sum(r.status == "hang" for r in results),
        "crashes": sum(r.status == "crash" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "max_seconds": round(max((r.seconds for r in results), default=0.0), 3),
        "max_rss_mb": round(max((r.maxrss_kb for r in results), default=0) / 1024, 1),
        "warned": sum(bool(r.message) for r in results if r.status == "ok"),
        "failures": [vars(r) for r in bad[:20]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per round's child")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="snapdir-local-state-"))
    os.chmod(base, 0o700)
    try:
        res = campaign(args.rounds, args.seed, args.timeout, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    bad = res["wrong_ids"] + res["wrong_already_right"] + res["hangs"] + res["crashes"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
