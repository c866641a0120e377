"""Big synthetic snapshots for the memory area: a valid manifest of N entries written
straight into a ``file://`` store, with the few objects its files share.

Walking and hashing a million real files only to get a big manifest would take minutes and
millions of inodes; the store-side operations (size, verify, diff, sync) only read the
manifest and the objects it names. The manifest is a real one: directory checksums and sizes
follow SPEC §3 (BLAKE3 of the sorted child checksums, sum of child sizes), so ``pull`` and
``id -`` accept it too.

Layout: ``./<top>/<sub>/<file>`` with 1,000 files per directory and 50 sub-directories per
top-level directory; paths are 45-60 bytes, like a real project tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

FILES_PER_DIR = 1000
SUBS_PER_TOP = 50
# Contents the files share (the store holds these few objects only).
CONTENTS = (b"", b"alpha\n", b"bravo bravo\n", b"charlie charlie charlie\n")


def _blake3_hex(data: bytes) -> str:
    # The harness runs in the environment of the snapdir under test; its binding has BLAKE3.
    from snapdir import _snapdir

    return _snapdir.blake3_hex(data)


def _split_key(h: str) -> str:
    return f"{h[0:3]}/{h[3:6]}/{h[6:9]}/{h[9:]}"


def layout(entries: int) -> tuple[int, int]:
    """(top-level directories, files in the last sub-directory) for about ``entries``."""
    per_top = 1 + SUBS_PER_TOP * (1 + FILES_PER_DIR)
    tops = max(1, round((entries - 1) / per_top))
    return tops, FILES_PER_DIR


def manifest_lines(entries: int, *, variant: int = 0) -> Iterator[str]:
    """The manifest's lines, sorted (SPEC §4 order), root first. ``variant`` 1 changes the
    content of every 100th file (for a diff with something to report)."""
    sums = [(_blake3_hex(c), len(c)) for c in CONTENTS]
    tops, per_dir = layout(entries)
    file_names = sorted(f"measurement-{i:06d}.dat" for i in range(per_dir))
    top_blocks: list[tuple[str, int, list[str]]] = []
    for t in range(tops):
        top = f"./project-area-{t:04d}/"
        sub_blocks: list[tuple[str, int, list[str]]] = []
        for s in range(SUBS_PER_TOP):
            sub = f"{top}batch-{s:03d}/"
            lines = []
            child_sums = []
            total = 0
            for k, name in enumerate(file_names):
                n = (t * 7 + s * 3 + k) % len(CONTENTS)
                if variant and k % 100 == t % 100:
                    n = (n + 1) % len(CONTENTS)
                c, size = sums[n]
                lines.append(f"F 644 {c} {size} {sub}{name}")
                child_sums.append(c)
                total += size
            dsum = _blake3_hex("".join(sorted(child_sums)).encode())
            sub_blocks.append((dsum, total, [f"D 755 {dsum} {total} {sub}", *lines]))
        tsum = _blake3_hex("".join(sorted(b[0] for b in sub_blocks)).encode())
        ttotal = sum(b[1] for b in sub_blocks)
        body = [f"D 755 {tsum} {ttotal} {top}"]
        for b in sub_blocks:
            body.extend(b[2])
        top_blocks.append((tsum, ttotal, body))
    rsum = _blake3_hex("".join(sorted(b[0] for b in top_blocks)).encode())
    rtotal = sum(b[1] for b in top_blocks)
    yield f"D 755 {rsum} {rtotal} ./"
    for b in top_blocks:
        yield from b[2]


def write_store(store: Path, entries: int, *, variant: int = 0) -> tuple[str, int]:
    """Writes the synthetic snapshot (and its objects) into the ``file://`` store directory
    ``store``; returns (snapshot id, number of entries)."""
    for c in CONTENTS:
        h = _blake3_hex(c)
        p = store / ".objects" / _split_key(h)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(c)
    text = "\n".join(manifest_lines(entries, variant=variant))
    data = (text + "\n").encode()
    del text
    sid = _blake3_hex(data)
    p = store / ".manifests" / _split_key(sid)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    return sid, data.count(b"\n")
