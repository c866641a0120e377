"""The stat cache (docs/statcache.md): reuse is never at the cost of a wrong manifest.

Files younger than the racy margin (2 s) are never cached, so the trees these tests edit are
built once per module and aged by one sleep; each test takes its own copy by renaming a
directory (which does not touch the files' ctimes).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import snapdir
from snapdir import _snapdir
from snapdir._manifest import stat_cache_dir

N_TREES = 40


def build(root: Path) -> None:
    (root / "deep" / "er" / "est").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "a.txt").write_bytes(b"alpha")
    (root / "b.bin").write_bytes(bytes(range(256)) * 64)
    (root / "sub" / "c.txt").write_bytes(b"charlie")
    (root / "sub" / "d.txt").write_bytes(b"delta!!")
    (root / "deep" / "er" / "est" / "e.txt").write_bytes(b"echo")
    (root / "x.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "x.sh", 0o755)
    (root / "t1").write_bytes(b"target one")
    (root / "t2").write_bytes(b"target two")
    os.symlink("t1", root / "link")
    for i in range(20):
        (root / "sub" / f"n{i:02}").write_bytes(f"file {i}".encode())
    five = root / "l1" / "l2" / "l3" / "l4" / "l5"
    five.mkdir(parents=True)
    (five / "f.txt").write_bytes(b"five levels deep")


@pytest.fixture(scope="module")
def aged_pool(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("aged")
    pool = []
    for i in range(N_TREES):
        r = base / f"t{i}" / "tree"
        r.mkdir(parents=True)
        build(r)
        pool.append(r.parent)
    time.sleep(2.2)
    return pool


@pytest.fixture
def aged(aged_pool: list[Path], tmp_path: Path) -> Path:
    """A tree whose files and directories are older than the racy margin, at a path of
    this test's own (its parent is moved: a rename sets the moved directory's ctime)."""
    os.rename(aged_pool.pop(), tmp_path / "w")
    return tmp_path / "w" / "tree"


def walk(root: Path, **kw: object) -> tuple[snapdir.Manifest, int, int]:
    """Manifest with the cache (or as ``kw`` say), files counted, files reused."""
    prog = _snapdir.Progress()
    use_cache = bool(kw.pop("use_cache", True))
    rehash = bool(kw.pop("rehash", False))
    no_follow = bool(kw.pop("no_follow", False))
    exclude = list(kw.pop("exclude", []))  # type: ignore[call-overload]
    m, _ = _snapdir.walk(
        str(root), no_follow, False, exclude, None, prog, stat_cache_dir(use_cache), rehash
    )
    return m, prog.files, prog.reused


def walk_dirs(root: Path) -> tuple[snapdir.Manifest, int, int, int]:
    """Manifest with the cache, files counted, files reused, directory listings reused."""
    prog = _snapdir.Progress()
    m, _ = _snapdir.walk(str(root), False, False, [], None, prog, stat_cache_dir(True), False)
    return m, prog.files, prog.reused, prog.dirs_reused


def n_dirs(root: Path) -> int:
    return 1 + sum(1 for p in root.rglob("*") if p.is_dir() and not p.is_symlink())


def paths(m: snapdir.Manifest) -> set[str]:
    return {e.path for e in m.entries}


def uncached(root: Path, **kw: object) -> snapdir.Manifest:
    return walk(root, use_cache=False, **kw)[0]


def cache_files() -> list[Path]:
    d = Path(os.environ["SNAPDIR_CACHE_DIR"]) / "statcache"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def primed(root: Path, *, strict: bool = True) -> snapdir.Manifest:
    """Walk twice: the second walk must reuse every file (``strict``: none was written in
    the last 2 s)."""
    m1, files, _ = walk(root)
    m2, files2, reused = walk(root)
    assert m1 == m2
    assert files2 == files
    if strict:
        assert reused == files
    return m2


def check_sees(
    root: Path, edit: Callable[[Path], object], *, min_read: int = 0, strict: bool = True
) -> None:
    before = primed(root, strict=strict)
    edit(root)
    m, files, reused = walk(root)
    assert m == uncached(root)
    assert m != before
    assert files - reused >= min_read


def test_noop_reuses_every_file_and_equals_uncached(aged: Path) -> None:
    m = primed(aged)
    assert m == uncached(aged)
    assert len(cache_files()) == 1


def test_unchanged_directories_are_not_listed_again(aged: Path) -> None:
    primed(aged)
    m, files, reused, dirs = walk_dirs(aged)
    assert (reused, dirs) == (files, n_dirs(aged))
    assert m == uncached(aged)


@pytest.mark.parametrize(
    ("edit", "changed_dirs"),
    [
        (lambda r: (r / "sub" / "added").write_bytes(b"added"), 1),
        (lambda r: (r / "sub" / "n07").unlink(), 1),
        (lambda r: os.rename(r / "sub" / "n07", r / "sub" / "n07-renamed"), 1),
        # Moved to another directory: both are read again.
        (lambda r: os.rename(r / "sub" / "n07", r / "deep" / "er" / "n07"), 2),
    ],
    ids=["added", "removed", "renamed", "moved"],
)
def test_entry_change_inside_a_cached_directory(
    aged: Path, edit: Callable[[Path], object], changed_dirs: int
) -> None:
    before = primed(aged)
    edit(aged)
    m, _files, _reused, dirs = walk_dirs(aged)
    assert m == uncached(aged)
    assert m != before
    # Only the directories whose entries changed are listed again.
    assert dirs == n_dirs(aged) - changed_dirs


def test_directory_replaced_by_another_with_the_same_name(aged: Path) -> None:
    before = primed(aged)
    sub = aged / "sub"
    st = sub.stat()
    shutil.copytree(sub, aged / "sub2")  # copy2: the files keep their mtimes
    c = aged / "sub2" / "c.txt"
    cst = c.stat()
    c.write_bytes(b"CHARLIE")  # same size, mtime restored
    os.utime(c, ns=(cst.st_atime_ns, cst.st_mtime_ns))
    (aged / "sub2" / "n03").unlink()
    (aged / "sub2" / "extra").write_bytes(b"extra")
    os.utime(aged / "sub2", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(sub, aged / "old")
    os.rename(aged / "sub2", sub)
    shutil.rmtree(aged / "old")
    assert sub.stat().st_mtime_ns == st.st_mtime_ns
    assert sub.stat().st_ino != st.st_ino
    m = walk_dirs(aged)[0]
    assert m == uncached(aged)
    assert m != before
    assert "./sub/extra" in paths(m)
    assert "./sub/n03" not in paths(m)


def test_content_change_five_levels_deep(aged: Path) -> None:
    # No directory changes: every listing is reused, and the file is still seen.
    before = primed(aged)
    p = aged / "l1" / "l2" / "l3" / "l4" / "l5" / "f.txt"
    st = p.stat()
    p.write_bytes(b"FIVE LEVELS DEEP")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    m, files, reused, dirs = walk_dirs(aged)
    assert m == uncached(aged)
    assert m != before
    assert dirs == n_dirs(aged)
    assert files - reused == 1


def test_directory_mtime_restored_after_adding_a_file(aged: Path, tmp_path: Path) -> None:
    before = primed(aged)
    d = aged / "deep" / "er"
    ref = tmp_path / "ref"
    ref.write_bytes(b"")
    st = d.stat()
    os.utime(ref, ns=(st.st_atime_ns, st.st_mtime_ns))
    (d / "new.txt").write_bytes(b"new")
    subprocess.run(["touch", "-r", str(ref), str(d)], check=True)
    # The mtime is back; the ctime is not (no call can set it).
    assert d.stat().st_mtime_ns == st.st_mtime_ns
    assert d.stat().st_ctime_ns != st.st_ctime_ns
    m, _files, _reused, dirs = walk_dirs(aged)
    assert m == uncached(aged)
    assert m != before
    assert "./deep/er/new.txt" in paths(m)
    assert dirs == n_dirs(aged) - 1


def test_racy_directory_is_listed_again(tmp_path: Path) -> None:
    # Listed just now: a file added within the same timestamp tick could leave the
    # directory's mtime as it was, so its listing is not remembered yet.
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a").write_bytes(b"a")
    walk_dirs(root)
    (root / "d" / "b").write_bytes(b"b")
    m, _files, _reused, dirs = walk_dirs(root)
    assert dirs == 0
    assert "./d/b" in paths(m)
    assert m == uncached(root)


def test_version_1_cache_is_ignored(aged: Path) -> None:
    good = uncached(aged)
    walk(aged)
    (f,) = cache_files()
    # A well-formed cache of the previous format (one record per file path) whose
    # checksums are all wrong: read as the current format, it would poison the manifest.
    real = os.path.realpath(aged).encode()
    body = struct.pack("<I", len(real)) + real
    n = 0
    for p in sorted(aged.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            rel = ("./" + p.relative_to(aged).as_posix()).encode()
            body += struct.pack("<I", len(rel)) + rel
            body += struct.pack(
                "<QQQqqI",
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_mode,
            )
            body += b"\x01" * 32
            n += 1
    head = b"SNAPSTC\0" + struct.pack("<IIQQq", 1, 0, n, len(body), time.time_ns())
    f.write_bytes(head + bytes.fromhex(_snapdir.blake3_hex(head + body)) + body)
    m, files, reused = walk(aged)
    assert reused == 0
    assert m == good
    # Replaced by the current format: the next walk reuses every file.
    assert walk(aged)[1:] == (files, files)


def test_content_change_same_size_mtime_restored(aged: Path) -> None:
    def edit(r: Path) -> None:
        p = r / "sub" / "c.txt"
        st = p.stat()
        p.write_bytes(b"CHARLIE")  # same size
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert p.stat().st_mtime_ns == st.st_mtime_ns
        assert p.stat().st_size == st.st_size

    check_sees(aged, edit, min_read=1)


def test_mode_change(aged: Path) -> None:
    check_sees(aged, lambda r: os.chmod(r / "a.txt", 0o600))


def test_rename(aged: Path) -> None:
    check_sees(aged, lambda r: os.rename(r / "sub" / "c.txt", r / "sub" / "c2.txt"))


def test_rename_swap_same_size(aged: Path) -> None:
    # c.txt and d.txt have the same size: swapping them must swap the checksums.
    def edit(r: Path) -> None:
        os.rename(r / "sub" / "c.txt", r / "tmp")
        os.rename(r / "sub" / "d.txt", r / "sub" / "c.txt")
        os.rename(r / "tmp", r / "sub" / "d.txt")

    check_sees(aged, edit)


def test_replaced_by_new_inode(aged: Path) -> None:
    def edit(r: Path) -> None:
        p = r / "a.txt"
        st = p.stat()
        (r / "new").write_bytes(b"ALPHA")
        os.utime(r / "new", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(r / "new", st.st_mode & 0o7777)
        os.replace(r / "new", p)

    check_sees(aged, edit, min_read=1)


def test_file_became_directory(aged: Path) -> None:
    def edit(r: Path) -> None:
        os.unlink(r / "a.txt")
        (r / "a.txt").mkdir()
        (r / "a.txt" / "inner").write_bytes(b"alpha")

    check_sees(aged, edit)


def test_directory_became_file(aged: Path) -> None:
    def edit(r: Path) -> None:
        shutil.rmtree(r / "deep")
        (r / "deep").write_bytes(b"echo")

    check_sees(aged, edit)


def test_symlink_retargeted(aged: Path) -> None:
    def edit(r: Path) -> None:
        os.unlink(r / "link")
        os.symlink("t2", r / "link")

    check_sees(aged, edit)
    m = walk(aged)[0]
    link = next(e for e in m.entries if e.path == "./link")
    t2 = next(e for e in m.entries if e.path == "./t2")
    assert link.checksum == t2.checksum


def test_symlink_target_content_changed(aged: Path) -> None:
    def edit(r: Path) -> None:
        p = r / "t1"
        st = p.stat()
        p.write_bytes(b"TARGET ONE")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    check_sees(aged, edit, min_read=2)


def test_deletions(aged: Path) -> None:
    check_sees(aged, lambda r: os.unlink(r / "sub" / "n05"))
    check_sees(aged, lambda r: shutil.rmtree(r / "deep" / "er"), strict=False)


def test_addition_deep_in_tree(aged: Path) -> None:
    check_sees(aged, lambda r: (r / "deep" / "er" / "est" / "new.txt").write_bytes(b"new"))
    check_sees(aged, lambda r: (r / "deep" / "er" / "est" / "empty").mkdir(), strict=False)


def test_no_follow_and_exclude_have_their_own_cache(aged: Path) -> None:
    primed(aged)
    for kw in ({"no_follow": True}, {"exclude": ["^./sub/"]}):
        # A cache of its own: the first walk with these options reuses nothing.
        m, files, reused = walk(aged, **kw)
        assert reused == 0
        assert m == uncached(aged, **kw)
        assert walk(aged, **kw)[1:] == (files, files)
    assert "./link" not in [e.path for e in walk(aged, no_follow=True)[0].entries]
    assert len(cache_files()) == 3


def test_corrupt_cache_is_ignored(aged: Path) -> None:
    good = primed(aged)
    (f,) = cache_files()
    data = bytearray(f.read_bytes())
    # Flip a byte of a stored checksum (the last bytes of the file): if the file were
    # trusted, a file's checksum would be wrong.
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    m, files, reused = walk(aged)
    assert reused == 0
    assert m == good
    # Rewritten: the next walk reuses again.
    assert walk(aged)[2] == files
    # Torn (truncated) and garbage files are ignored too.
    for bad in (f.read_bytes()[:100], b"", b"garbage" * 100):
        f.write_bytes(bad)
        m, files, reused = walk(aged)
        assert (m, reused) == (good, 0)


def test_cache_of_another_root_is_not_used(aged: Path, tmp_path: Path) -> None:
    primed(aged)
    (f,) = cache_files()
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_bytes(b"zzzzz")
    # Point the other root's cache file at this root's content: the root recorded inside
    # does not match, so nothing is reused.
    _, _, _ = walk(other)
    for g in cache_files():
        if g != f:
            g.write_bytes(f.read_bytes())
    m, _, reused = walk(other)
    assert reused == 0
    assert m == uncached(other)


def test_use_cache_false_env_and_rehash(aged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    walk(aged, use_cache=False)
    assert cache_files() == []
    asyncio.run(snapdir.id(aged, use_cache=False))
    assert cache_files() == []
    monkeypatch.setenv("SNAPDIR_STAT_CACHE", "0")
    asyncio.run(snapdir.id(aged))
    assert cache_files() == []
    monkeypatch.delenv("SNAPDIR_STAT_CACHE")
    primed(aged)
    (f,) = cache_files()
    before = f.stat().st_ino
    # No change: the cache file is not rewritten.
    walk(aged)
    assert f.stat().st_ino == before
    _m, files, reused = walk(aged, rehash=True)
    assert reused == 0
    assert files > 0
    # Rewritten (a new file renamed over the old one) and used by the next walk.
    assert f.stat().st_ino != before
    assert walk(aged)[2] == files


def test_cli_flags(aged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cli(*args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(
            [sys.executable, "-m", "snapdir", *args],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        ).stdout.strip()

    want = uncached(aged).id
    assert cli("id", "--no-stat-cache", str(aged)) == want
    assert cli("id", str(aged), env={"SNAPDIR_STAT_CACHE": "0"}) == want
    assert cache_files() == []
    assert cli("id", str(aged)) == want
    assert len(cache_files()) == 1
    assert cli("id", "--rehash", str(aged)) == want
    assert cli("manifest", "--rehash", str(aged)) == uncached(aged).raw
    assert cli("stage", "--no-stat-cache", str(aged)) == want
    assert cli("stage", "--rehash", str(aged)) == want


def test_stage_and_push_use_the_cache(aged: Path, tmp_path: Path) -> None:
    want = uncached(aged).id
    assert asyncio.run(snapdir.stage(aged)) == want
    assert len(cache_files()) == 1
    store = f"file://{tmp_path / 'store'}"
    assert asyncio.run(snapdir.push(aged, store)) == want
    assert asyncio.run(snapdir.push(aged, store, use_cache=False, rehash=True)) == want
    p = aged / "sub" / "c.txt"
    st = p.stat()
    p.write_bytes(b"CHARLIE")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    new = asyncio.run(snapdir.push(aged, store))
    assert new == uncached(aged).id != want


def test_racy_file_is_rehashed(tmp_path: Path) -> None:
    # Written just now: a snapshot right away must not trust its stamp later, even when
    # the file changes within the same second with its size and mtime kept.
    root = tmp_path / "r"
    root.mkdir()
    p = root / "f"
    p.write_bytes(b"one")
    m1, _, _ = walk(root)
    st = p.stat()
    p.write_bytes(b"two")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    m2, _files, reused = walk(root)
    assert reused == 0
    assert m2 != m1
    assert m2 == uncached(root)
    # Even a cache entry forged with the racy stamp of a file written now is not written.
    q = root / "g"
    q.write_bytes(b"x")
    walk(root)
    walk(root)
    assert walk(root)[2] == 0


def test_random_edits_cached_equals_uncached(aged: Path) -> None:
    rng = random.Random(1234)
    primed(aged)
    for step in range(60):
        files = [p for p in aged.rglob("*") if p.is_file() and not p.is_symlink()]
        dirs = [aged] + [p for p in aged.rglob("*") if p.is_dir() and not p.is_symlink()]
        subdirs = dirs[1:]
        op = rng.choice(
            [
                *("rewrite", "chmod", "rename", "delete", "add", "mkdir", "replace"),
                *("nest", "rmtree", "mvdir", "touchdir"),
            ]
        )
        if op == "rewrite" and files:
            p = rng.choice(files)
            st = p.stat()
            data = p.read_bytes()
            p.write_bytes(bytes(b ^ 1 for b in data) if data else b"")
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif op == "chmod" and files:
            os.chmod(rng.choice(files), rng.choice([0o600, 0o644, 0o755, 0o700]))
        elif op == "rename" and files:
            p = rng.choice(files)
            os.rename(p, rng.choice(dirs) / f"r{step}")
        elif op == "delete" and files:
            rng.choice(files).unlink()
        elif op == "add":
            (rng.choice(dirs) / f"a{step}").write_bytes(os.urandom(rng.randint(0, 50)))
        elif op == "mkdir":
            (rng.choice(dirs) / f"d{step}").mkdir()
        elif op == "replace" and files:
            p = rng.choice(files)
            st = p.stat()
            tmp = aged / f".tmp{step}"
            tmp.write_bytes(os.urandom(st.st_size))
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, p)
        elif op == "nest":
            d = rng.choice(dirs)
            for k in range(rng.randint(1, 4)):
                d = d / f"n{step}-{k}"
                d.mkdir()
                (d / "f").write_bytes(os.urandom(rng.randint(0, 20)))
        elif op == "rmtree" and subdirs:
            shutil.rmtree(rng.choice(subdirs))
        elif op == "mvdir" and subdirs:
            src = rng.choice(subdirs)
            dst = rng.choice([d for d in dirs if d != src and src not in d.parents])
            os.rename(src, dst / f"m{step}")
        elif op == "touchdir":
            # An entry added, the directory's mtime set back (its ctime still moves).
            d = rng.choice(dirs)
            st = d.stat()
            (d / f"t{step}").write_bytes(b"t")
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
        m, _, _ = walk(aged)
        assert m == uncached(aged), (step, op)
