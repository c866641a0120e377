"""Trees of benches/bench.py: deterministic generation, and the deterministic 1 % change.

Every byte comes from SHAKE-256 (fully specified, so a tree never changes between machines
or Python versions) keyed by a seed, the group and the file index.  Files of a group with a
``block`` size (the 1 GiB files of the *large* tree) are written block by block from one
SHAKE-256 base block, each block rotated and byte-permuted by its own SHAKE-256 key: as
incompressible for a compressor or a chunking deduplicator as the base block itself, and
written at disk speed (``bytes.translate`` runs at memory speed, SHAKE-256 in CPython does
not).

The incremental-pull benchmark needs a destination that differs from the tree by about
1 %: :class:`ChangePlan` picks every 100th file (sorted paths) and, in turn, rewrites it
with other bytes of the same size, deletes it, or adds a new file beside it; it can apply
itself to a directory and check that a directory is the tree again.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

GENERATOR_VERSION = 1  # bump when the way trees are generated changes
SEED = "snapdir-bench"
KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
ADDED_PREFIX = "added-"  # names of the files a ChangePlan adds (never in a generated tree)


@dataclass(frozen=True)
class FileGroup:
    """``count`` files of ``min_size``..``max_size`` bytes spread over ``dirs`` directories.

    ``block``: write each file in blocks of this size (see the module docstring); 0 for the
    original whole-batch stream, which the existing trees were generated with."""

    name: str
    count: int
    dirs: int
    min_size: int
    max_size: int
    block: int = 0

    def describe(self) -> str:
        if self.min_size == self.max_size:
            size = human_size(self.min_size)
        else:
            size = f"{self.min_size}-{self.max_size} B"
        return f"{self.count:,} x {size} in {self.dirs} dir{'s' if self.dirs > 1 else ''}"

    def stamp(self) -> dict[str, object]:
        """The group's part of the recipe stamp; ``block`` only when set, so the stamps of
        trees generated before it existed still match."""
        out: dict[str, object] = dict(vars(self))
        if not self.block:
            del out["block"]
        return out


@dataclass(frozen=True)
class Recipe:
    name: str  # directory name under <workdir>/trees
    kind: str  # mixed | small | large | huge: what the targets and per-tree settings refer to
    groups: tuple[FileGroup, ...]
    seed: str = SEED

    def stamp(self) -> dict[str, object]:
        return {
            "generator": GENERATOR_VERSION,
            "name": self.name,
            "seed": self.seed,
            "groups": [g.stamp() for g in self.groups],
        }

    def describe(self) -> str:
        return " + ".join(g.describe() for g in self.groups)

    @property
    def file_count(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def dir_count(self) -> int:
        """Directories below the root (group directories and their sub-directories)."""
        return sum(1 + g.dirs for g in self.groups)


@dataclass(frozen=True)
class Tree:
    recipe: Recipe
    path: Path
    files: int
    total_bytes: int

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def entries(self) -> int:
        """Manifest entries: files, directories and the root."""
        return self.files + self.recipe.dir_count + 1


def human_size(n: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{int(n)} B"


def stream(key: str, length: int) -> bytes:
    """Deterministic pseudo-random bytes: SHAKE-256 is fully specified, so never changes."""
    return hashlib.shake_256(f"{SEED}/{key}".encode()).digest(length) if length else b""


def blocks(key: str, size: int, block: int) -> Iterator[bytes]:
    """``size`` deterministic bytes in blocks of ``block``: a SHAKE-256 base block, rotated
    and byte-permuted per block by that block's own SHAKE-256 key."""
    base = stream(f"{key}/base", min(block, size))
    for k, offset in enumerate(range(0, size, block)):
        n = min(block, size - offset)
        ctl = stream(f"{key}/{k}", 256 + 8)
        perm = bytes(sorted(range(256), key=lambda b: (ctl[b], b)))
        rot = int.from_bytes(ctl[256:], "little") % len(base)
        yield (base[rot:] + base[:rot])[:n].translate(perm)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _write_group(root: Path, seed: str, group: FileGroup) -> int:
    """Write one group of files; returns the number of bytes written."""
    base = root / group.name
    dirs = [base / f"d{d:03d}" for d in range(group.dirs)]
    for d in dirs:
        d.mkdir(parents=True)
    if group.block:
        for i in range(group.count):
            fd = os.open(dirs[i % group.dirs] / f"f{i:06d}.bin", _CREATE, 0o644)
            try:
                for chunk in blocks(f"{seed}/{group.name}/{i}", group.max_size, group.block):
                    _write_all(fd, chunk)
            finally:
                os.close(fd)
        return group.count * group.max_size
    span = group.max_size - group.min_size + 1
    written = 0
    # Batches bound memory: at most ~64 MiB of content is held at once.
    per_batch = max(1, min(group.count, (64 * MIB) // max(group.max_size, 1)))
    for start in range(0, group.count, per_batch):
        stop = min(group.count, start + per_batch)
        key = f"{seed}/{group.name}/{start}"
        if span == 1:
            sizes = [group.max_size] * (stop - start)
        else:
            sizes = [group.min_size + b % span for b in stream(key + "/sizes", stop - start)]
        data = memoryview(stream(key, sum(sizes)))
        offset = 0
        for i, size in zip(range(start, stop), sizes, strict=True):
            fd = os.open(dirs[i % group.dirs] / f"f{i:06d}.bin", _CREATE, 0o644)
            try:
                _write_all(fd, data[offset : offset + size])
            finally:
                os.close(fd)
            offset += size
        written += offset
    return written


def ensure_tree(
    recipe: Recipe, trees_dir: Path, log: Callable[[str], None] = print, *, sync: bool = True
) -> Tree:
    """Generate the tree for ``recipe`` unless a tree with the same recipe stamp exists.

    ``sync``: flush the machine's dirty pages afterwards (a benchmark must not measure the
    write-back of its own tree; the self-test must not wait for other processes' writes)."""
    path = trees_dir / recipe.name
    stamp_path = trees_dir / f"{recipe.name}.recipe.json"  # beside the tree: not hashed
    wanted = recipe.stamp()
    if stamp_path.is_file() and path.is_dir():
        try:
            stamp = json.loads(stamp_path.read_text())
        except ValueError:
            stamp = {}
        if stamp.get("recipe") == wanted:
            log(f"tree {recipe.name}: reusing {path} (recipe stamp matches)")
            return Tree(recipe, path, int(stamp["files"]), int(stamp["bytes"]))
    log(f"tree {recipe.name}: generating {recipe.describe()} ...")
    stamp_path.unlink(missing_ok=True)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    old_umask = os.umask(0o022)
    try:
        total = sum(_write_group(path, recipe.seed, g) for g in recipe.groups)
    finally:
        os.umask(old_umask)
    if sync:
        os.sync()
    stamp_path.write_text(
        json.dumps({"recipe": wanted, "files": recipe.file_count, "bytes": total}, indent=1)
    )
    log(
        f"tree {recipe.name}: {recipe.file_count:,} files, {human_size(total)} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return Tree(recipe, path, recipe.file_count, total)


def file_sizes(path: Path) -> dict[str, int]:
    """Relative path -> size of every regular file under ``path``."""
    out: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(path):
        rel = os.path.relpath(dirpath, path)
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            out[name if rel == "." else f"{rel}/{name}"] = st.st_size
    return out


def scan_tree(path: Path) -> tuple[int, int]:
    """(regular files, bytes) under ``path``."""
    sizes = file_sizes(path)
    return len(sizes), sum(sizes.values())


def tree_digest(path: Path) -> str:
    """Digest of relative paths and contents (self-test: determinism of the generator)."""
    h = hashlib.blake2b()
    for dirpath, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            p = Path(dirpath, name)
            h.update(str(p.relative_to(path)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def _same_content(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(MIB), fb.read(MIB)
            if x != y:
                return False
            if not x:
                return True


@dataclass(frozen=True)
class ChangePlan:
    """About 1 % of a tree's files, changed in a destination that holds a copy of it.

    Every ``STRIDE``-th file in sorted path order is picked; the picks are, in turn,
    rewritten (other bytes, same size, a new mtime), deleted, or given a new sibling
    ``added-<name>`` (same size)."""

    modified: tuple[str, ...]
    deleted: tuple[str, ...]
    added: tuple[str, ...]  # paths of the new files
    sizes: tuple[tuple[str, int], ...]  # size of every path above (added: the new file)

    STRIDE = 100

    @classmethod
    def for_tree(cls, tree_path: Path) -> ChangePlan:
        sizes = file_sizes(tree_path)
        picks = sorted(sizes)[:: cls.STRIDE]
        modified = tuple(picks[0::3])
        deleted = tuple(picks[1::3])
        added = tuple(_added_name(p) for p in picks[2::3])
        plan_sizes = [(p, sizes[p]) for p in (*modified, *deleted)]
        plan_sizes += [(_added_name(p), sizes[p]) for p in picks[2::3]]
        return cls(modified, deleted, added, tuple(plan_sizes))

    @property
    def count(self) -> int:
        return len(self.modified) + len(self.deleted) + len(self.added)

    def describe(self) -> str:
        return (
            f"{len(self.modified)} rewritten (same size), {len(self.deleted)} deleted, "
            f"{len(self.added)} added"
        )

    def apply(self, dest: Path) -> None:
        """Turn a copy of the tree in ``dest`` into the changed state (idempotent: applying
        it to a directory left with the added files by a tool that does not delete gives the
        same state again)."""
        size = dict(self.sizes)
        for rel in self.modified:
            _rewrite(dest / rel, stream(f"modified/{rel}", size[rel]))
        for rel in self.deleted:
            (dest / rel).unlink(missing_ok=True)
        for rel in self.added:
            _rewrite(dest / rel, stream(f"added/{rel}", size[rel]))

    def check(self, dest: Path, tree: Path, *, exact: bool, thorough: bool) -> str | None:
        """None when ``dest`` is the tree again; else what is wrong.

        Always: every changed file has the tree's bytes again; with ``exact`` the added
        files are gone.  ``thorough``: also every path and size of the whole directory."""
        for rel in (*self.modified, *self.deleted):
            got = dest / rel
            if not got.is_file():
                return f"{rel} is missing after the pull"
            if not _same_content(got, tree / rel):
                return f"{rel} does not have the snapshot's content after the pull"
        left = [rel for rel in self.added if (dest / rel).exists()]
        if exact and left:
            return f"{len(left)} added file(s) still there after the pull, e.g. {left[0]}"
        if thorough:
            want = file_sizes(tree)
            have = {k: v for k, v in file_sizes(dest).items() if exact or k not in self.added}
            if have != want:
                extra = sorted(set(have) - set(want))[:3]
                missing = sorted(set(want) - set(have))[:3]
                wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:3]
                return f"tree differs: extra {extra}, missing {missing}, other size {wrong}"
        return None


def _added_name(rel: str) -> str:
    head, _sep, name = rel.rpartition("/")
    return f"{head}/{ADDED_PREFIX}{name}" if head else f"{ADDED_PREFIX}{name}"


def _rewrite(path: Path, data: bytes) -> None:
    """Replace ``path`` by a new file (new inode): never write through a link a tool may
    have made into its store."""
    path.unlink(missing_ok=True)
    fd = os.open(path, _CREATE, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
