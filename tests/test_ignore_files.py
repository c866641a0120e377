"""Choosing files: ``.snapdirignore`` (gitignore semantics), ``--ignore-file``,
``--no-ignore-file``, ``--exclude-glob``, and what ``pull --delete`` keeps."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import snapdir
from snapdir import _snapdir
from snapdir._manifest import stat_cache_dir


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "-m", "snapdir", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


FILES = [
    "build/out.o",
    "src/build/gen.py",
    "src/main.py",
    "src/debug.log",
    "src/keep.log",
    "a/b/logs/x",
    "logs",
    "docs/notes.tmp",
    "top.tmp",
    "tmp/t",
    "deep/er/est/secret.key",
]

RULES = """# build output at the root only
/build/
*.log
!keep.log
**/logs/
docs/*.tmp
tmp/
**/*.key
"""


def tree(root: Path, rules: str | None = RULES) -> Path:
    for f in FILES:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f)
    if rules is not None:
        (root / ".snapdirignore").write_text(rules)
    return root


def paths(m: snapdir.Manifest) -> list[str]:
    return [e.path for e in m.entries]


def listed(stdout: str) -> list[str]:
    """The paths of a manifest printed by the CLI."""
    return [line.split(" ", 4)[4] for line in stdout.splitlines()]


def same(stdout: str, m: snapdir.Manifest) -> bool:
    return stdout.rstrip("\n") == m.raw.rstrip("\n")


def manifest(root: Path, **kw: object) -> snapdir.Manifest:
    return asyncio.run(snapdir.manifest(root, **kw))  # type: ignore[arg-type]


def test_gitignore_semantics_and_the_ignore_file_itself_is_kept(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    got = paths(manifest(root))
    assert got == [
        "./",
        "./.snapdirignore",  # the ignore file is part of the snapshot
        "./a/",
        "./a/b/",  # `**/logs/`: a directory at any depth, not descended
        "./deep/",
        "./deep/er/",
        "./deep/er/est/",
        "./docs/",
        "./logs",  # a file: `**/logs/` only matches directories
        "./src/",
        "./src/build/",  # `/build/` is anchored at the root
        "./src/build/gen.py",
        "./src/keep.log",  # negation re-includes it
        "./src/main.py",
        "./top.tmp",  # `docs/*.tmp` (a slash inside) is anchored
    ]


def test_the_ignore_file_cannot_leave_itself_out(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", rules=".*\n*.log\n")
    assert "./.snapdirignore" in paths(manifest(root))


def test_cli_honours_the_ignore_file_and_its_switches(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    api = manifest(root)
    for cmd in ("manifest", "id"):
        proc = run_cli(cmd, str(root))
        assert proc.returncode == 0, proc.stderr
    assert same(run_cli("manifest", str(root)).stdout, api)
    assert run_cli("id", str(root)).stdout.strip() == api.id

    everything = run_cli("manifest", "--no-ignore-file", str(root))
    assert everything.returncode == 0, everything.stderr
    assert same(everything.stdout, manifest(root, ignore_file=False))
    for f in FILES:
        assert f"./{f}" in listed(everything.stdout)

    other = tmp_path / "rules"
    other.write_text("src/\n")
    proc = run_cli("manifest", "--ignore-file", str(other), str(root))
    assert proc.returncode == 0, proc.stderr
    assert "./build/out.o" in listed(proc.stdout)  # the tree's own rules are not read
    assert "./src/" not in proc.stdout
    assert "./.snapdirignore" in listed(proc.stdout)  # just a file now
    assert same(proc.stdout, manifest(root, ignore_file=other))

    proc = run_cli("manifest", "--ignore-file", str(other), "--no-ignore-file", str(root))
    assert proc.returncode == 2


def test_exclude_glob_adds_rules_after_the_file(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    proc = run_cli("manifest", "--exclude-glob", "*.py", "--exclude-glob", "!main.py", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "./src/main.py" in listed(proc.stdout)
    assert "./src/build/gen.py" not in listed(proc.stdout)
    assert same(proc.stdout, manifest(root, exclude_glob=["*.py", "!main.py"]))
    # Globs re-include what the file ignores (they come after it).
    m = manifest(root, exclude_glob="!*.log")
    assert "./src/debug.log" in paths(m)
    # With --no-ignore-file only the globs count.
    m = manifest(root, ignore_file=False, exclude_glob=["build/"])
    assert "./src/build/" not in paths(m)
    assert "./src/debug.log" in paths(m)


def test_id_stage_and_push_agree_on_the_ignored_tree(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    sid = asyncio.run(snapdir.id(root))
    assert asyncio.run(snapdir.stage(root)) == sid
    store = f"file://{tmp_path / 'store'}"
    assert asyncio.run(snapdir.push(root, store)) == sid
    proc = run_cli("push", "--store", f"file://{tmp_path / 'store2'}", str(root))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == sid
    # A store without the tree push walks on its own (a repair takes that path).
    assert asyncio.run(snapdir.push(root, store, repair=True)) == sid
    other = asyncio.run(snapdir.push(root, store, ignore_file=False, journal=False))
    assert other != sid
    assert other == asyncio.run(snapdir.id(root, ignore_file=False))


def test_bad_rules_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    proc = run_cli("id", "--ignore-file", str(tmp_path / "nope"), str(root))
    assert proc.returncode == 4
    assert "no such ignore file" in proc.stderr
    assert "nope" in proc.stderr

    (root / ".snapdirignore").write_text("ok\n[z-a]\n")
    proc = run_cli("id", str(root))
    assert proc.returncode == 2
    assert "line 2" in proc.stderr
    assert ".snapdirignore" in proc.stderr

    proc = run_cli("id", "--no-ignore-file", "--exclude-glob", "[z-a]", str(root))
    assert proc.returncode == 2
    assert 'invalid exclude glob "[z-a]"' in proc.stderr

    with pytest.raises(snapdir.InvalidArgumentError, match="line 2"):
        manifest(root)


def test_a_glob_given_to_exclude_says_so(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", rules=None)
    proc = run_cli("id", "--exclude", "*.bin", str(root))
    assert proc.returncode == 2
    assert "repetition operator missing expression" in proc.stderr
    assert "looks like a glob: use --exclude-glob '*.bin'" in proc.stderr
    proc = run_cli("id", "--exclude", "(", str(root))
    assert proc.returncode == 2
    assert "glob" not in proc.stderr
    with pytest.raises(snapdir.InvalidArgumentError, match="exclude_glob"):
        manifest(root, exclude=["**/x"])


def test_without_an_ignore_file_nothing_changes(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", rules=None)
    assert manifest(root).raw == manifest(root, ignore_file=False).raw
    assert len(manifest(root).entries) == len(FILES) + 12  # files, 11 directories, the root


def test_a_changed_ignore_file_never_reuses_a_cached_listing(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", rules="*.py\n")
    time.sleep(2.2)  # older than the racy margin: listings may be reused
    os.rename(tmp_path / "t", tmp_path / "moved")  # the parent's ctime, not the tree's
    root = tmp_path / "moved"

    def walk() -> tuple[list[str], int]:
        prog = _snapdir.Progress()
        m, _ = _snapdir.walk(str(root), False, False, [], None, prog, stat_cache_dir(True), False)
        return paths(m), prog.dirs_reused

    first, _ = walk()
    again, reused = walk()
    assert again == first
    assert reused > 0
    assert "./src/main.py" not in first
    assert "./src/debug.log" in first
    # Same size, same directory mtimes: only the content of the rules changed.
    with open(root / ".snapdirignore", "r+b") as f:
        f.write(b"*.log")
    cache_files = sorted(Path(str(stat_cache_dir(True))).iterdir())
    after, _ = walk()
    # Other rules, another cache file (the rules are part of its key).
    assert len(sorted(Path(str(stat_cache_dir(True))).iterdir())) == len(cache_files) + 1
    assert "./src/main.py" in after
    assert "./src/debug.log" not in after
    assert after == paths(manifest(root, use_cache=False))


def _push(tmp_path: Path, src: Path) -> tuple[str, str]:
    store = f"file://{tmp_path / 'store'}"
    proc = run_cli("push", "--store", store, str(src))
    assert proc.returncode == 0, proc.stderr
    return store, proc.stdout.strip()


def _dest_with_extras(dest: Path, rules: str | None) -> None:
    (dest / "cache").mkdir(parents=True)
    (dest / "cache" / "blob").write_text("kept")
    (dest / "run.log").write_text("kept")
    (dest / "junk.txt").write_text("removed")
    (dest / "src").mkdir()
    (dest / "src" / "x.log").write_text("kept")
    (dest / "src" / "stale.py").write_text("removed")
    if rules is not None:
        (dest / ".snapdirignore").write_text(rules)


def test_pull_delete_keeps_what_the_destination_ignores(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "src").mkdir(parents=True)
    (src / "src" / "main.py").write_text("main")
    rules = "cache/\n*.log\n"
    (src / ".snapdirignore").write_text(rules)
    store, sid = _push(tmp_path, src)

    dest = tmp_path / "dest"
    _dest_with_extras(dest, rules)
    proc = run_cli("pull", "--store", store, "--delete", "--json", sid, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert (dest / "cache" / "blob").read_text() == "kept"
    assert (dest / "run.log").exists()
    assert (dest / "src" / "x.log").exists()
    assert not (dest / "junk.txt").exists()
    assert not (dest / "src" / "stale.py").exists()
    assert (dest / "src" / "main.py").read_text() == "main"
    # The destination walks to the snapshot again: what is left is what was ignored.
    assert asyncio.run(snapdir.id(dest)) == sid

    # --exclude-glob protects more; --no-ignore-file removes everything extra.
    (dest / "junk.txt").write_text("kept now")
    proc = run_cli("pull", "--store", store, "--delete", "--exclude-glob", "junk.*", sid, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert (dest / "junk.txt").exists()
    proc = run_cli("pull", "--store", store, "--delete", "--no-ignore-file", sid, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == [".snapdirignore", "src"]
    assert not (dest / "src" / "x.log").exists()


def test_checkout_delete_with_another_ignore_file_and_the_api(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    sid = asyncio.run(snapdir.stage(src))
    dest = tmp_path / "dest"
    _dest_with_extras(dest, rules=None)
    rules = tmp_path / "keep-rules"
    rules.write_text("cache\njunk.txt\n")
    proc = run_cli("checkout", "--delete", "--ignore-file", str(rules), sid, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["a", "cache", "junk.txt"]
    # The API: a path, and globs.
    (dest / "more.bin").write_text("x")
    (dest / "gone").write_text("x")
    asyncio.run(snapdir.checkout(sid, dest, delete=True, ignore_file=rules, exclude_glob=["*.bin"]))
    assert sorted(p.name for p in dest.iterdir()) == ["a", "cache", "junk.txt", "more.bin"]
    asyncio.run(snapdir.checkout(sid, dest, delete=True))
    assert sorted(p.name for p in dest.iterdir()) == ["a"]
    # A missing ignore file is an error before anything is removed.
    (dest / "extra").write_text("x")
    proc = run_cli("checkout", "--delete", "--ignore-file", str(tmp_path / "no"), sid, str(dest))
    assert proc.returncode == 4, proc.stderr
    assert (dest / "extra").exists()
