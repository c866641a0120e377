"""A small, deliberately naive pure-Python reference of the snapshot format (SPEC §1-§3).

It is written for obviousness, not speed: the tests compare the Rust implementation against
it byte for byte. It depends only on the standard library and the independent PyPI `blake3`
package.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

EMPTY_HASH = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_OCTAL = re.compile(r"[0-7]{1,4}")
_DECIMAL = re.compile(r"[0-9]+")
_U64_MAX = 2**64 - 1


class TreeError(Exception):
    """Raised by the reference walker for a tree the format cannot represent."""


@dataclass(frozen=True, order=False)
class Entry:
    """One manifest line."""

    kind: str  # "D" or "F"
    perms: int
    checksum: str
    size: int
    path: str

    def render(self) -> str:
        return f"{self.kind} {self.perms:o} {self.checksum} {self.size} {self.path}"


def blake3_hex(data: bytes) -> str:
    return blake3(data).hexdigest()


def file_hash(path: Path) -> str:
    h = blake3()
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            h.update(chunk)
    return h.hexdigest()


def dir_hash(child_checksums: Iterable[str]) -> str:
    """BLAKE3 of the distinct child checksums, sorted, concatenated without separator."""
    return blake3_hex("".join(sorted(set(child_checksums))).encode("ascii"))


def sort_key(entry: Entry) -> bytes:
    return entry.path.encode("utf-8")


def render(entries: Iterable[Entry]) -> str:
    """Canonical manifest text: sorted bytewise by path, joined by \\n, no trailing newline."""
    return "\n".join(e.render() for e in sorted(entries, key=sort_key))


def snapshot_id(text: str) -> str:
    return blake3_hex((text + "\n").encode("utf-8"))


def _check_name(name: bytes, rel: str) -> str:
    try:
        decoded = name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TreeError(f"not UTF-8: {rel!r}/{name!r}") from exc
    if "\n" in decoded or "\r" in decoded:
        raise TreeError(f"newline in name: {rel!r}/{decoded!r}")
    return decoded


def walk(
    root: str | os.PathLike[str],
    *,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: Sequence[str] = (),
) -> list[Entry]:
    """Walk ``root`` per SPEC §3 and return its entries in manifest order.

    Symlinks are followed (recorded as their target) unless ``no_follow``; dangling links and
    special files are left out; a link that leads back into one of its ancestors is an error.
    """
    patterns = [re.compile(p) for p in exclude]
    root_path = Path(root)
    prefix = str(root_path.resolve()) + "/" if absolute else "./"
    entries: list[Entry] = []

    def visit_dir(
        real: Path, rel: str, st: os.stat_result, ancestors: frozenset[tuple[int, int]]
    ) -> Entry:
        ident = (st.st_dev, st.st_ino)
        ancestors = ancestors | {ident}
        children: list[Entry] = []
        for raw_name in sorted(os.listdir(os.fsencode(real))):
            name = _check_name(raw_name, rel)
            child = real / name
            child_lst = os.lstat(child)
            if stat.S_ISLNK(child_lst.st_mode):
                if no_follow:
                    continue
                try:
                    child_st = os.stat(child)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # dangling
            else:
                child_st = child_lst
            if stat.S_ISDIR(child_st.st_mode):
                child_rel = f"{rel}{name}/"
                if any(p.search(child_rel) for p in patterns):
                    continue
                if (child_st.st_dev, child_st.st_ino) in ancestors:
                    raise TreeError(f"symlink loop: {child_rel}")
                children.append(visit_dir(child, child_rel, child_st, ancestors))
            elif stat.S_ISREG(child_st.st_mode):
                child_rel = f"{rel}{name}"
                if any(p.search(child_rel) for p in patterns):
                    continue
                entry = Entry(
                    "F",
                    stat.S_IMODE(child_st.st_mode),
                    file_hash(child),
                    child_st.st_size,
                    prefix + child_rel[2:],
                )
                entries.append(entry)
                children.append(entry)
            # anything else (fifo, socket, device) is skipped
        entry = Entry(
            "D",
            stat.S_IMODE(st.st_mode),
            dir_hash(c.checksum for c in children),
            sum(c.size for c in children),
            prefix + rel[2:],
        )
        entries.append(entry)
        return entry

    root_st = os.stat(root_path)
    if not stat.S_ISDIR(root_st.st_mode):
        raise TreeError(f"not a directory: {root_path}")
    visit_dir(root_path, "./", root_st, frozenset())
    return sorted(entries, key=sort_key)


def manifest_text(
    root: str | os.PathLike[str],
    *,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: Sequence[str] = (),
) -> str:
    return render(walk(root, no_follow=no_follow, absolute=absolute, exclude=exclude))


def valid_path(path: str, kind: str) -> bool:
    """True if ``path`` is a normalized ``./``-relative manifest path for an entry of ``kind``."""
    if path == "./":
        return kind == "D"
    if not path.startswith("./"):
        return False
    body = path[2:]
    if kind == "D":
        if not body.endswith("/"):
            return False
        body = body[:-1]
    elif body.endswith("/"):
        return False
    if any(c in body for c in "\0\n\r"):
        return False
    return all(part not in ("", ".", "..") for part in body.split("/"))


def parse_line(line: str) -> Entry:
    fields = line.split(" ", 4)
    if len(fields) != 5:
        raise ValueError(f"wrong field count: {line!r}")
    kind, perms, checksum, size, path = fields
    if kind not in ("D", "F"):
        raise ValueError(f"bad type {kind!r}")
    if not _OCTAL.fullmatch(perms):
        raise ValueError(f"bad permissions {perms!r}")
    if not _HEX64.fullmatch(checksum):
        raise ValueError(f"bad checksum {checksum!r}")
    if not _DECIMAL.fullmatch(size) or int(size) > _U64_MAX:
        raise ValueError(f"bad size {size!r}")
    if not valid_path(path, kind):
        raise ValueError(f"bad path {path!r}")
    return Entry(kind, int(perms, 8), checksum, int(size), path)


def parse(text: str) -> list[Entry]:
    """Parse manifest text: \\n or \\r\\n, blank lines and '#' comments ignored, re-sorted."""
    entries = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line or line.startswith("#"):
            continue
        entries.append(parse_line(line))
    return sorted(entries, key=sort_key)
