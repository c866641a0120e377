"""Property tests: random trees against the pure-Python reference, and parse/render round trips."""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import reference
import snapdir
from golden import BACKENDS, api_id, api_manifest, make_writable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- random trees -------------------------------------------------------------------------


@dataclass
class FileNode:
    content: bytes
    mode: int


@dataclass
class DirNode:
    mode: int
    children: dict[str, Node] = field(default_factory=dict)


Node = FileNode | DirNode

NAME_CHARS = st.characters(
    exclude_categories=["Cs"],  # no lone surrogates: names must be valid UTF-8
    exclude_characters="/\0\n\r",
)
FIXED_NAMES = ["a", "a.txt", "a b", "a-b", "a_b", ".hidden", "café", "Z", "10", "9", "日本", " x"]
names = st.one_of(
    st.sampled_from(FIXED_NAMES),
    st.text(NAME_CHARS, min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
)
contents = st.one_of(
    st.sampled_from([b"", b"same\n", b"x", b"\x00\xff"]),
    st.binary(max_size=300),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 200_000), st.integers(0, 255)),
)
file_modes = st.sampled_from([0o644, 0o600, 0o755, 0o444, 0o400, 0o700, 0o640, 0o4755, 0o2750])
dir_modes = st.sampled_from([0o755, 0o700, 0o1777, 0o2755, 0o555, 0o750, 0o500, 0o775])

file_nodes = st.builds(FileNode, contents, file_modes)


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.builds(DirNode, dir_modes, st.dictionaries(names, children, max_size=4))


nodes: st.SearchStrategy[Node] = st.recursive(file_nodes, _extend, max_leaves=16)
trees = st.builds(DirNode, dir_modes, st.dictionaries(names, nodes, max_size=6))


def build_tree(root: Path, tree: DirNode) -> list[Path]:
    """Write ``tree`` at ``root``; return every path created below the root."""
    created: list[Path] = []
    dirs: list[tuple[Path, int]] = []

    def write(path: Path, node: DirNode) -> None:
        path.mkdir(exist_ok=True)
        dirs.append((path, node.mode))
        for name, child in node.children.items():
            p = path / name
            created.append(p)
            if isinstance(child, FileNode):
                p.write_bytes(child.content)
                os.chmod(p, child.mode)
            else:
                write(p, child)

    write(root, tree)
    for path, mode in sorted(dirs, key=lambda d: len(d[0].parts), reverse=True):
        os.chmod(path, mode)
    return created


@st.composite
def tree_and_links(draw: st.DrawFn) -> tuple[DirNode, list[int]]:
    tree = draw(trees)
    links = draw(st.lists(st.integers(0, 10_000), max_size=3))
    return tree, links


EXCLUDES = [r"\.txt$", "a", r"/$", r"^\./[^/]*$", "é", r"\d", " "]


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    spec=tree_and_links(),
    no_follow=st.booleans(),
    absolute=st.booleans(),
    exclude=st.lists(st.sampled_from(EXCLUDES), max_size=2, unique=True),
)
def test_random_tree_matches_reference(
    backend: str,
    spec: tuple[DirNode, list[int]],
    no_follow: bool,
    absolute: bool,
    exclude: list[str],
) -> None:
    tree, links = spec
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        try:
            created = build_tree(root, tree)
            os.chmod(root, 0o755)  # links are added after the tree, then the root mode is set
            for i, pick in enumerate(links):
                if not created:
                    break
                target = created[pick % len(created)]
                link = root / f"~link{i}"
                if not os.path.lexists(link):
                    link.symlink_to(os.path.relpath(target, root))
            os.chmod(root, tree.mode)

            expected = reference.manifest_text(
                root, no_follow=no_follow, absolute=absolute, exclude=exclude
            )
            m = api_manifest(root, backend, no_follow=no_follow, absolute=absolute, exclude=exclude)
            assert m.raw == expected
            assert m.id == reference.snapshot_id(expected)
            assert len(m) == len(expected.split("\n"))
            ident = api_id(root, backend, no_follow=no_follow, absolute=absolute, exclude=exclude)
            assert ident == reference.snapshot_id(expected)
        finally:
            if root.exists():
                make_writable(root)


# --- parse / render -----------------------------------------------------------------------

HEX = "0123456789abcdef"
checksums = st.one_of(
    st.sampled_from([reference.EMPTY_HASH, "0" * 64, "f" * 64]),
    st.text(HEX, min_size=64, max_size=64),
)
segments = st.one_of(
    st.sampled_from([*FIXED_NAMES, "#x", "a  b", "x ", "...", ".a."]),
    st.text(NAME_CHARS, min_size=1, max_size=6).filter(lambda s: s not in (".", "..")),
)


@st.composite
def entries(draw: st.DrawFn) -> list[reference.Entry]:
    """A structurally valid manifest: a root, every parent directory present, and no name that
    is both a file and a directory."""
    parts_lists = draw(st.lists(st.lists(segments, min_size=1, max_size=3), max_size=25))
    kinds = [draw(st.sampled_from("DF")) for _ in parts_lists]
    dirs: set[tuple[str, ...]] = {()}
    files: set[tuple[str, ...]] = set()
    for parts, kind in zip(parts_lists, kinds, strict=True):
        for i in range(1, len(parts)):
            dirs.add(tuple(parts[:i]))
        (dirs if kind == "D" else files).add(tuple(parts))
    files -= dirs

    def make(kind: str, path: str) -> reference.Entry:
        return reference.Entry(
            kind,
            draw(st.integers(0, 0o7777)),
            draw(checksums),
            draw(st.integers(0, 2**64 - 1)),
            path,
        )

    out = [make("D", "./" + "".join(p + "/" for p in d)) for d in sorted(dirs)]
    out += [make("F", "./" + "/".join(f)) for f in sorted(files)]
    return out


def as_tuples(m: snapdir.Manifest) -> list[tuple[str, int, str, int, str]]:
    out = []
    for e in m.entries:
        kind = {"Directory": "D", "File": "F"}[e.path_type.name]
        out.append((kind, e.permissions, e.checksum, e.size, e.path))
    return out


@SETTINGS
@given(es=entries())
def test_parse_render_round_trip(es: list[reference.Entry]) -> None:
    text = reference.render(es)
    m = snapdir.Manifest.parse(text)
    assert m.raw == text
    assert len(m) == len(es)
    assert as_tuples(m) == [
        (e.kind, e.perms, e.checksum, e.size, e.path) for e in sorted(es, key=reference.sort_key)
    ]
    assert m.id == reference.snapshot_id(text)
    assert snapdir.id_from_manifest(m) == reference.snapshot_id(text)
    assert reference.parse(text) == sorted(es, key=reference.sort_key)
    assert snapdir.Manifest.parse(m.raw) == m


@SETTINGS
@given(
    es=entries(),
    seed=st.integers(0, 2**32),
    crlf=st.booleans(),
    comments=st.lists(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20)
    ),
)
def test_noisy_text_parses_to_canonical(
    es: list[reference.Entry], seed: int, crlf: bool, comments: list[str]
) -> None:
    canonical = reference.render(es)
    lines = [e.render() for e in es]
    lines += ["#" + c for c in comments]
    lines += [""] * (seed % 3)
    random.Random(seed).shuffle(lines)
    sep = "\r\n" if crlf else "\n"
    noisy = sep.join(lines) + (sep if seed % 2 else "")
    m = snapdir.Manifest.parse(noisy)
    assert m.raw == canonical
    assert m.id == reference.snapshot_id(canonical)
    assert m == snapdir.Manifest.parse(canonical)
    assert hash(m) == hash(snapdir.Manifest.parse(canonical))
    assert reference.render(reference.parse(noisy)) == canonical
