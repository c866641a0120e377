"""Big manifests in little memory: the compact manifest storage, the Rust diff, the stored
manifest read from a descriptor and written from Rust, and a bound on the peak resident
memory per entry of `snapdir size` and `snapdir diff` (issue #13; the figures at 1 M and
5 M entries are in benches/bench_memory.py)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from servers.seaweed import S3Server
from snapdir import _snapdir
from snapdir._diff import _diff_sides, _side
from snapdir._snapdir import Manifest

EMPTY = _snapdir.EMPTY_CHECKSUM


def _digest(text: str) -> str:
    return _snapdir.blake3_hex(text.encode())


def _random_manifest(rng: random.Random) -> Manifest:
    """A valid manifest (structure only: checksums need not match contents) over a small
    alphabet of names, so two of them share, change and retype paths."""
    names = ["a", "a.txt", "b", "c-d", "e"]
    dirs = {"./"}
    files: set[str] = set()
    for _ in range(rng.randrange(1, 25)):
        parent = rng.choice(sorted(dirs))
        name = parent + rng.choice(names)
        if name in files or name + "/" in dirs:
            continue
        if rng.random() < 0.35 and name.count("/") < 4:
            dirs.add(name + "/")
        else:
            files.add(name)
    lines = []
    for p in sorted(dirs):
        mode = rng.choice([0o755, 0o700])
        lines.append(f"D {mode:o} {_digest(str(rng.randrange(3)))} 0 {p}")
    for p in sorted(files):
        mode = rng.choice([0o644, 0o755])
        lines.append(f"F {mode:o} {_digest(str(rng.randrange(3)))} {rng.randrange(9)} {p}")
    rng.shuffle(lines)
    return Manifest.parse("\n".join(lines))


@pytest.mark.parametrize("seed", range(300))
def test_rust_diff_agrees_with_the_python_diff_of_sides(seed: int) -> None:
    rng = random.Random(seed)
    a, b = _random_manifest(rng), _random_manifest(rng)
    want = _diff_sides(_side([a]), _side([b]))
    changed, rows = _snapdir.diff_manifests(a, b, True)
    assert rows == [(e.status, e.path, e.detail) for e in want]
    assert changed == any(e.status != "=" for e in want)
    changed_shown, shown = _snapdir.diff_manifests(a, b, False)
    assert changed_shown == changed
    assert shown == [
        (e.status, e.path, e.detail) for e in want if e.status != "=" and e.detail != "contents"
    ]


def test_canonical_and_non_canonical_text_parse_to_the_same_manifest() -> None:
    rng = random.Random(7)
    for _ in range(50):
        m = _random_manifest(rng)
        raw = m.raw
        lines = raw.split("\n")
        variants = [
            raw,
            raw + "\n",
            "\r\n".join(lines),
            "# comment\n" + raw,
            "\n".join(reversed(lines)),
            raw.replace(" 644 ", " 0644 ", 1),
        ]
        for text in variants:
            other = Manifest.parse(text)
            assert other.raw == raw
            assert other.id == m.id
            assert other == m
            assert [e.path for e in other.entries] == [e.path for e in m.entries]


def test_stored_manifest_read_from_a_descriptor_and_written_back(tmp_path: Path) -> None:
    m = _random_manifest(random.Random(3))
    stored = tmp_path / "stored"
    stored.write_bytes((m.raw + "\n").encode())
    with open(stored, "rb") as f:
        got = _snapdir.manifest_from_fd(f.fileno(), 1 << 20)
        assert got is not None
        assert got.id == m.id
        assert got.raw == m.raw
        f.seek(0)
        assert _snapdir.manifest_from_fd(f.fileno(), len(m.raw)) is None  # over the limit
    out = tmp_path / "out"
    with open(out, "wb") as f:
        _snapdir.manifest_write_fd(got, f.fileno())
    assert out.read_bytes() == stored.read_bytes()
    # The same manifest held as entries (non-canonical input) writes the same bytes.
    shuffled = "\r\n".join(reversed(m.raw.split("\n")))
    with open(out, "wb") as f:
        _snapdir.manifest_write_fd(Manifest.parse(shuffled), f.fileno())
    assert out.read_bytes() == stored.read_bytes()


# ----------------------------------------------------------------------------- peak memory

# Runs the command in a forked child of a bare interpreter and prints the child's peak RSS
# (KiB): ru_maxrss of this test process would carry its own, larger, high-water mark.
_LAUNCHER = """\
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""

ENTRIES_PER_DIR = 1000


def _big_store(store: Path, files: int, *, variant: bool = False) -> str:
    """A `file://` store holding one snapshot of ``files`` files (1,000 per directory, three
    shared contents, realistic path lengths); returns its id."""
    contents = [b"", b"one\n", b"two two\n"]
    sums = [(_snapdir.blake3_hex(c), len(c)) for c in contents]
    for c, (h, _) in zip(contents, sums, strict=True):
        p = store / ".objects" / h[0:3] / h[3:6] / h[6:9] / h[9:]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(c)
    blocks = []
    names = sorted(f"measurement-{i:06d}.dat" for i in range(ENTRIES_PER_DIR))
    for d in range(files // ENTRIES_PER_DIR):
        sub = f"./project-area-{d:04d}/"
        lines, child, total = [], [], 0
        for k, name in enumerate(names):
            n = (d + k + (1 if variant and k % 100 == 0 else 0)) % len(sums)
            h, size = sums[n]
            lines.append(f"F 644 {h} {size} {sub}{name}")
            child.append(h)
            total += size
        dsum = _snapdir.blake3_hex("".join(sorted(child)).encode())
        blocks.append((dsum, total, f"D 755 {dsum} {total} {sub}\n" + "\n".join(lines)))
    root = _snapdir.blake3_hex("".join(sorted(b[0] for b in blocks)).encode())
    rtotal = sum(b[1] for b in blocks)
    text = f"D 755 {root} {rtotal} ./\n" + "\n".join(b[2] for b in blocks)
    data = (text + "\n").encode()
    sid = _snapdir.blake3_hex(data)
    p = store / ".manifests" / sid[0:3] / sid[3:6] / sid[6:9] / sid[9:]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return sid


def _peak_kib(argv: list[str], env: dict[str, str] | None = None) -> int:
    exe = os.path.join(os.path.dirname(sys.executable), "snapdir")
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c", _LAUNCHER, exe, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {}), "SNAPDIR_NO_PROGRESS": "1"},
    )
    peak, code = done.stdout.split()[-2:]  # after what the command printed
    assert code in ("0", "1"), done.stderr
    return int(peak)


def test_size_diff_sync_verify_of_200000_entries_stay_far_below_400_bytes_an_entry(
    tmp_path: Path,
) -> None:
    """Not timed: the bound is on memory. Before manifests were kept compact, `size` took
    ~550 bytes an entry and `diff` ~950 per entry of either side; now ~140 each. 400 is the
    regression line (twice the target of 200), far from both."""
    store = tmp_path / "store"
    files = 200_000
    a = _big_store(store, files)
    b = _big_store(store, files, variant=True)
    entries = files + files // ENTRIES_PER_DIR + 1
    uri = f"file://{store}"
    base = _peak_kib(["version"])
    size = _peak_kib(["size", "--store", uri, "--id", a])
    per_entry = (size - base) * 1024 / entries
    assert per_entry < 400, f"snapdir size: {per_entry:.0f} bytes an entry"
    diff = _peak_kib(["diff", "--from", f"{uri}@{a}", "--to", f"{uri}@{b}"])
    per_entry = (diff - base) * 1024 / (2 * entries)
    assert per_entry < 400, f"snapdir diff: {per_entry:.0f} bytes an entry (of both sides)"
    # sync and verify hold the manifest too; sync also writes the collection intent, whose
    # body is the whole manifest (once built as one Python string: ~500 bytes an entry).
    for argv in (
        ["sync", a, "--from", uri, "--to", f"file://{tmp_path / 'copy'}"],
        ["verify", "--store", uri, "--id", a],
    ):
        per_entry = (_peak_kib(argv) - base) * 1024 / entries
        assert per_entry < 400, f"snapdir {argv[0]}: {per_entry:.0f} bytes an entry"


def test_size_and_verify_of_a_cloud_manifest_hold_it_once(
    tmp_path: Path, seaweedfs: S3Server
) -> None:
    """A manifest read from a cloud store is kept in Rust memory as it downloads and parsed
    where it is. It used to be held four times on the way (the chunks, joined bytes, text,
    the parser's copy): `size` of 2,000,000 entries on S3 peaked at 989 MB, now 323 MB.
    Here 200,000 entries: the old way measured about 460 bytes an entry, the new one 140."""
    store = tmp_path / "store"
    files = 200_000
    sid = _big_store(store, files)
    entries = files + files // ENTRIES_PER_DIR + 1
    client = seaweedfs.client()
    bucket = f"snapdir-mem-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.close()
    env = {**seaweedfs.environ(), "SNAPDIR_CACHE_DIR": str(tmp_path / "cache")}
    cloud = f"s3://{bucket}/m"
    sync = subprocess.run(
        [sys.executable, "-m", "snapdir", "sync", sid, "--from", f"file://{store}",
         "--to", cloud, "-q"],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )  # fmt: skip
    assert sync.returncode == 0, sync.stderr
    # The base: the same commands on a one-file snapshot (the S3 client's own memory).
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "f").write_text("one\n")
    push = subprocess.run(
        [sys.executable, "-m", "snapdir", "push", str(tmp_path / "small"), "--store", cloud],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    small = push.stdout.strip()
    for op in ("size", "verify"):
        base = _peak_kib([op, "--store", cloud, "--id", small], env)
        peak = _peak_kib([op, "--store", cloud, "--id", sid], env)
        per_entry = (peak - base) * 1024 / entries
        assert per_entry < 250, f"snapdir {op} on S3: {per_entry:.0f} bytes an entry"


def test_noop_id_and_push_of_200000_files_stay_under_200_bytes_an_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not timed: the bound is on memory. A no-op `id` or `push` walks the tree with a warm
    stat cache. Before the cache was kept as an index (records read back per directory) and
    the push's intent written from the manifest itself, they took ~250 and ~650 bytes an
    entry at 1 M files; now ~140 (the walk's entries). What a command costs whatever the
    tree (a push imports the stores, starts its threads: ~10 MB, 50 bytes an entry at this
    size, nothing at 5 M) is that of `snapdir version` or of the same command on a one-file
    tree, whichever is more: subtracted here."""
    store = tmp_path / "store"
    files = 200_000
    sid = _big_store(store, files)
    entries = files + files // ENTRIES_PER_DIR + 1
    uri = f"file://{store}"
    tree, small = tmp_path / "tree", tmp_path / "small"
    small.mkdir()
    (small / "a").write_bytes(b"a\n")
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(tmp_path / "cache"))
    _peak_kib(["pull", "--store", uri, sid, str(tree)])
    # The stat cache keeps no file changed within 2 s of the walk that read it (racy
    # timestamps, docs/statcache.md): only time settles them.
    time.sleep(2.5)
    version = _peak_kib(["version"])
    per_entry = {}
    for cmd in (["id"], ["push", "--store", uri]):
        base = max(version, _peak_kib([*cmd, str(small)]))
        _peak_kib([*cmd, str(tree)])  # fills the stat cache
        per_entry[cmd[0]] = (_peak_kib([*cmd, str(tree)]) - base) * 1024 / entries
    assert max(per_entry.values()) < 200, f"no-op bytes an entry: {per_entry}"
