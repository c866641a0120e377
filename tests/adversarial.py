"""A corpus of malicious and broken stores, and the harness that runs one through every
operation that reads a store.

Each :class:`Case` lays out a ``file://`` store by hand, exactly as SPEC §4 describes (the
manifest and object files written straight to disk), and says what must happen: a refusal
with one of the listed error classes, or a safe success. :func:`run_case` then drives
``verify``, ``fetch``, ``checkout`` (after a fetch, from the cache), ``pull`` (plain and with
``force``/``delete``) and ``sync`` (``file://`` to ``file://``) against it, with every
destination inside a *jail*: a directory holding sentinel files and symlinks planted in the
destinations that point at a directory outside the jail. It records what each operation did
and what changed on disk, so a test (or the long-manifest subprocess) can check the three
rules of the issue: a clear error or a safe success; nothing written outside the
destination; nothing wrong left in the cache or the sync target.

The shapes already in ``test_pull_safety.py`` (``..``, absolute and malformed paths checked
at the parser, duplicates, a wrong size, a corrupt object...) are not repeated here; the
cases below are their neighbours, plus the shapes only a whole-pipeline run can check
(special files in the store, absurd sizes, very long paths, millions of lines).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import snapdir
from snapdir import (
    ConflictError,
    HashMismatchError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    SnapdirIOError,
    StoreError,
    UnsafePathError,
)
from snapdir._snapdir import Manifest
from snapdir.stores import parse_stored_manifest
from storeutil import (
    b3,
    dline,
    fline,
    make_store,
    manifest_for,
    manifest_rel,
    object_rel,
    put_raw_manifest,
    put_raw_object,
    text_id,
    write,
)

Errors = tuple[type[SnapdirError], ...]

#: Every operation a case is run through, in the order :func:`run_case` runs them.
OPS = ("verify", "fetch", "checkout", "pull", "pull_force", "sync")
#: Operations that write a destination directory (the others only read the store, or write
#: the cache / the sync target).
DEST_OPS = ("checkout", "pull", "pull_force")

#: A parser refusal: the manifest is authentic (it hashes to its id) but unsafe or malformed.
PARSE: Errors = (UnsafePathError, InvalidArgumentError)
#: Stored bytes that are not what their key says.
CORRUPT: Errors = (HashMismatchError,)
MISSING: Errors = (NotFoundError,)

X = b"x\n"
Y = b"why\n"
ROOT = dline("./")
#: Names planted in every destination: a link to a directory outside the jail and a link to
#: a file there.
LINK_DIR = "link"
LINK_FILE = "link-file"


@dataclass(frozen=True)
class Built:
    """What a case's builder laid out: the id the operations are asked for, and strings an
    error message may name besides that id and the store (an offending path, a key)."""

    sid: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """One hostile store. ``refuse`` lists the acceptable error classes (empty: every
    operation must succeed); ``per_op`` overrides that for single operations (an empty
    tuple there means that operation must succeed)."""

    name: str
    why: str
    build: Callable[[Path], Built]
    refuse: Errors
    per_op: Mapping[str, Errors] = field(default_factory=dict)
    #: Runs only through a subprocess that measures memory (see ``test_adversarial.py``).
    heavy: bool = False
    #: The store layout can be copied key by key into an S3 bucket (no links, FIFOs, dirs
    #: in place of files).
    portable: bool = True
    #: Runs only in a subprocess on a small tmpfs with a time limit: an implementation that
    #: copies an endless or sparse-terabyte object fills that tmpfs, not the disk.
    sandboxed: bool = False

    def expected(self, op: str) -> Errors:
        return self.per_op.get(op, self.refuse)


def authentic(lines: list[str], objects: tuple[bytes, ...] = (X, Y)) -> Callable[[Path], Built]:
    """A manifest stored under the id of its own text (so it is not corruption: whatever is
    wrong with it is the manifest's own fault), with ``objects`` in the store."""
    text = "\n".join(lines)
    with contextlib.suppress(SnapdirError):
        text = Manifest.parse(text).raw  # a valid manifest is stored in canonical order

    def build(store: Path) -> Built:
        return Built(make_store(store, text, objects))

    return build


def stored_as(
    text: str, stored: bytes, objects: tuple[bytes, ...] = (X, Y)
) -> Callable[[Path], Built]:
    """``stored`` bytes under the id of the canonical ``text``."""

    def build(store: Path) -> Built:
        return Built(make_store(store, text, objects, stored_text=stored))

    return build


# --- the corpus ------------------------------------------------------------------------------

GOOD = manifest_for({"a": (X, 0o644), "d/b": (Y, 0o640)}, {"d": 0o755})
GOOD_ID = text_id(GOOD)


def _lines(*extra: str) -> list[str]:
    return [ROOT, *extra]


def _long_chain(depth: int, comp: int) -> str:
    """A manifest whose one file sits ``depth`` directories of ``comp``-byte names deep."""
    dirs = {
        "/".join([f"{i:03d}" + "d" * (comp - 3) for i in range(k + 1)]): 0o755 for k in range(depth)
    }
    deepest = max(dirs, key=len)
    return manifest_for({deepest + "/f": (X, 0o644)}, dirs)


def _object_is(kind: str) -> Callable[[Path], Built]:
    """The object of ``./a`` is a directory, a FIFO, or a symlink to a directory."""

    def build(store: Path) -> Built:
        sid = make_store(store, GOOD, [Y])
        obj = store / object_rel(b3(X))
        obj.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            obj.mkdir()
            (obj / "inner").write_bytes(X)
        elif kind == "fifo":
            os.mkfifo(obj)
        elif kind == "dev-zero-link":
            obj.symlink_to("/dev/zero")
        elif kind == "sparse-tb":
            with open(obj, "wb") as f:
                f.truncate(1 << 40)
        else:  # pragma: no cover
            raise ValueError(kind)
        return Built(sid, (b3(X),))

    return build


def _manifest_is(kind: str) -> Callable[[Path], Built]:
    def build(store: Path) -> Built:
        put_raw_object(store, b3(X), X)
        put_raw_object(store, b3(Y), Y)
        p = store / manifest_rel(GOOD_ID)
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            p.mkdir()
            (p / "inner").write_bytes((GOOD + "\n").encode())
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "link-to-other":
            other = manifest_for({"a": (Y, 0o644)}, {})
            q = put_raw_manifest(store, text_id(other), (other + "\n").encode())
            p.symlink_to(q)
        else:  # pragma: no cover
            raise ValueError(kind)
        return Built(GOOD_ID)

    return build


def _object_replaced(data: bytes) -> Callable[[Path], Built]:
    """``./a``'s object holds ``data`` instead of ``x\\n``."""

    def build(store: Path) -> Built:
        sid = make_store(store, GOOD, [Y])
        put_raw_object(store, b3(X), data)
        return Built(sid, (b3(X),))

    return build


#: Multiplies the line counts of the heavy cases (``--scale``): the default test run uses a
#: fraction, the full size is a script run whose figures are in docs/reliability.md.
SCALE = [1.0]


def _huge_manifest(lines: int, tail: str) -> Callable[[Path], Built]:
    """``lines`` file entries below one directory, all of one object, then ``tail``
    (a line that makes the whole manifest invalid). Written in one pass with bounded memory."""

    def build(store: Path) -> Built:
        put_raw_object(store, b3(X), X)
        h = b3(X)
        tmp = store / "big-manifest.tmp"
        store.mkdir(parents=True, exist_ok=True)
        from blake3 import blake3

        hasher = blake3()
        with open(tmp, "wb") as f:
            head = f"{ROOT}\n{dline('./d/')}\n".encode()
            f.write(head)
            hasher.update(head)
            chunk: list[str] = []
            for i in range(int(lines * SCALE[0])):
                chunk.append(f"F 644 {h} 2 ./d/{i:07x}\n")
                if len(chunk) == 50_000:
                    data = "".join(chunk).encode()
                    f.write(data)
                    hasher.update(data)
                    chunk = []
            data = ("".join(chunk) + tail + "\n").encode()
            f.write(data)
            hasher.update(data)
        sid = hasher.hexdigest()
        dst = store / manifest_rel(sid)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
        return Built(sid)

    return build


def _comments(count: int) -> Callable[[Path], Built]:
    """The canonical GOOD manifest preceded by ``count`` comment lines: authentic (its
    canonical text hashes to the id), so it must be accepted, fast and in little memory."""

    def build(store: Path) -> Built:
        body = b"# padding\n" * int(count * SCALE[0]) + (GOOD + "\n").encode()
        return Built(make_store(store, GOOD, [X, Y], stored_text=body))

    return build


def _special_tree() -> str:
    return manifest_for(
        {"suid": (X, 0o4777), "sgid": (Y, 0o2070), "all": (b"all\n", 0o7777), "zero": (b"0\n", 0)},
        {"sticky": 0o1777, "dir-all": 0o7777, "dir-none": 0o000},
    )


def _child_of_zero_dir() -> str:
    return manifest_for({"locked/inner": (X, 0o644)}, {"locked": 0o000})


def _wrong_id_for_good() -> Callable[[Path], Built]:
    """GOOD stored under an id that differs from its own in the last hex digit."""

    def build(store: Path) -> Built:
        sid = GOOD_ID[:-1] + ("0" if GOOD_ID[-1] != "0" else "1")
        return Built(make_store(store, GOOD, [X, Y], snapshot_id=sid))

    return build


def _uppercase_key() -> Callable[[Path], Built]:
    """The manifest is stored under the uppercase spelling of its id; ids are lowercase, so
    the snapshot is simply not there."""

    def build(store: Path) -> Built:
        make_store(store, GOOD, [X, Y], snapshot_id=GOOD_ID.upper())
        return Built(GOOD_ID)

    return build


def _uppercase_request() -> Callable[[Path], Built]:
    """A correct store, asked for with the id in uppercase: ids are case-insensitive input."""

    def build(store: Path) -> Built:
        make_store(store, GOOD, [X, Y])
        return Built(GOOD_ID.upper())

    return build


def _size(n: int, *, with_object: bool = True, data: bytes = X) -> Callable[[Path], Built]:
    def build(store: Path) -> Built:
        text = "\n".join([dline("./", b3(b3(data).encode()), n), f"F 644 {b3(data)} {n} ./f"])
        return Built(make_store(store, text, [data] if with_object else []), (b3(data),))

    return build


def _points_at(other: bytes, size: int) -> Callable[[Path], Built]:
    """``./f``'s checksum names another object of the store (``other``), with ``size``."""

    def build(store: Path) -> Built:
        text = "\n".join(
            [dline("./", b3(b3(other).encode()), size), f"F 644 {b3(other)} {size} ./f"]
        )
        return Built(make_store(store, text, [X, other]), (b3(other),))

    return build


H = b3(X)

CASES: list[Case] = [
    # -- escaping paths not covered by the parser tests: whole-name `..`, lookalikes --------
    Case("dotdot-alone", "a file named .. at the root", authentic(_lines(fline("./..", X))), PARSE),
    Case(
        "dotdot-dir-trailing",
        "`./a/../` as a directory",
        authentic(_lines(dline("./a/"), dline("./a/../"))),
        PARSE,
    ),
    Case("absolute-root-file", "a file at `/`", authentic(_lines(fline("/", X))), PARSE),
    Case(
        "absolute-double-slash",
        "`//tmp/evil`",
        authentic(_lines(fline("//tmp/adversarial-evil", X))),
        PARSE,
    ),
    Case(
        "dot-slash-dotdot-slash", "`./../` as a directory", authentic(_lines(dline("./../"))), PARSE
    ),
    Case(
        "backslash-dotdot",
        "`..\\evil` is an ordinary name on POSIX: created inside the destination",
        authentic(_lines(fline("./..\\evil", X))),
        (),
    ),
    Case(
        "unicode-lookalike-dots",
        "one-dot leaders and a fullwidth solidus: ordinary names",
        authentic(_lines(dline("./\u2024\u2024/"), fline("./\u2024\u2024/\uff0fx", X))),
        (),
    ),
    # -- paths through (or onto) the symlinks planted in the destination ---------------------
    Case(
        "through-planted-dir-link",
        "`./link/x` where the destination holds link -> outside",
        authentic(_lines(dline(f"./{LINK_DIR}/"), fline(f"./{LINK_DIR}/x", X))),
        (ConflictError,),
        {"verify": (), "fetch": (), "sync": (), "pull_force": ()},
    ),
    Case(
        "deep-through-planted-dir-link",
        "`./link/a/b/c` three levels below the planted link",
        authentic(
            _lines(
                dline(f"./{LINK_DIR}/"),
                dline(f"./{LINK_DIR}/a/"),
                dline(f"./{LINK_DIR}/a/b/"),
                fline(f"./{LINK_DIR}/a/b/c", X),
            )
        ),
        (ConflictError,),
        {"verify": (), "fetch": (), "sync": (), "pull_force": ()},
    ),
    Case(
        "file-onto-planted-file-link",
        "`./link-file` is a file in the snapshot and a link to an outside file locally",
        authentic(_lines(fline(f"./{LINK_FILE}", X))),
        (ConflictError,),
        {"verify": (), "fetch": (), "sync": (), "pull_force": ()},
    ),
    Case(
        "same-content-onto-planted-link",
        "the planted link's target already has the snapshot's bytes (must not be kept/chmodded)",
        authentic(
            _lines(fline(f"./{LINK_FILE}", b"outside target\n", 0o4755)), (b"outside target\n",)
        ),
        (ConflictError,),
        {"verify": (), "fetch": (), "sync": (), "pull_force": ()},
    ),
    # -- duplicates and type clashes not in the parser tests --------------------------------
    Case(
        "duplicate-dir",
        "the same directory twice",
        authentic(_lines(dline("./d/"), dline("./d/"))),
        PARSE,
    ),
    Case(
        "duplicate-far-apart",
        "the same file at the start and the end of the text (only adjacent after sorting)",
        authentic([fline("./z", X), ROOT, dline("./m/"), fline("./m/q", Y), fline("./z", Y)]),
        PARSE,
    ),
    Case(
        "dir-with-children-and-file",
        "a directory with children and a file of the same name",
        authentic(_lines(dline("./a/"), fline("./a/k", X), fline("./a", Y))),
        PARSE,
    ),
    Case("root-twice", "two roots", authentic([ROOT, dline("./", mode=0o700)]), PARSE),
    # -- control characters in names ----------------------------------------------------------
    Case("nul-in-dir", "a NUL in a directory name", authentic(_lines(dline("./a\0b/"))), PARSE),
    Case(
        "newline-in-dir",
        "a newline splits a directory line in two",
        authentic(_lines(dline("./a\nb/"))),
        PARSE,
    ),
    Case(
        "escape-and-tab-names",
        "tabs and terminal escapes are legal names: created inside, messages stay escaped",
        authentic(_lines(fline("./a\tb", X), fline("./\x1b[2J", Y))),
        (),
    ),
    # -- checksums ---------------------------------------------------------------------------
    Case(
        "checksum-not-hex",
        "a checksum of 64 non-hex characters",
        authentic(_lines(f"F 644 {'g' * 64} 2 ./f")),
        PARSE,
    ),
    Case(
        "checksum-uppercase", "uppercase hex", authentic(_lines(f"F 644 {H.upper()} 2 ./f")), PARSE
    ),
    Case("checksum-short", "63 hex characters", authentic(_lines(f"F 644 {H[:-1]} 2 ./f")), PARSE),
    Case("checksum-long", "65 hex characters", authentic(_lines(f"F 644 {H}0 2 ./f")), PARSE),
    Case(
        "checksum-of-another-object-same-size",
        "./f names another object with that object's size: the file gets those bytes",
        _points_at(b"o\n", 2),
        (),
    ),
    Case(
        "checksum-of-the-manifest",
        "./f names the manifest's own id (no such object)",
        lambda store: Built(make_store(store, _self_ref_text(), [X])),
        MISSING,
    ),
    # -- sizes -------------------------------------------------------------------------------
    Case("size-smaller", "the object is 2 bytes, the manifest says 1", _size(1), CORRUPT),
    Case("size-zero", "a non-empty object claimed to be empty", _size(0), CORRUPT),
    Case("size-1tb", "a 1 TB claim for a 2-byte object", _size(1 << 40), CORRUPT),
    Case(
        "size-1tb-missing",
        "a 1 TB claim for an object that is not there",
        _size(1 << 40, with_object=False),
        MISSING,
    ),
    Case("size-u64-max", "the largest size the format allows", _size(2**64 - 1), CORRUPT),
    Case(
        "size-overflow", "a size past 64 bits", authentic(_lines(f"F 644 {H} {2**64} ./f")), PARSE
    ),
    Case("size-negative", "a negative size", authentic(_lines(f"F 644 {H} -2 ./f")), PARSE),
    # -- manifests that are not what their id says ----------------------------------------------
    Case(
        "manifest-wrong-id-one-digit",
        "GOOD stored under its id with one digit changed",
        _wrong_id_for_good(),
        CORRUPT,
    ),
    Case(
        "manifest-truncated",
        "the stored text cut in the middle of a line",
        stored_as(GOOD, (GOOD + "\n").encode()[:-30]),
        CORRUPT,
    ),
    Case("manifest-empty", "a zero-byte manifest", stored_as(GOOD, b""), CORRUPT),
    Case(
        "manifest-bom",
        "a UTF-8 byte order mark in front",
        stored_as(GOOD, b"\xef\xbb\xbf" + (GOOD + "\n").encode()),
        CORRUPT,
    ),
    Case(
        "manifest-trailing-garbage",
        "NUL bytes after the last line",
        stored_as(GOOD, (GOOD + "\n").encode() + b"\0\0\0garbage"),
        CORRUPT,
    ),
    Case(
        "manifest-bare-cr",
        "old-Mac CR line ends: one long unsafe line",
        stored_as(GOOD, GOOD.replace("\n", "\r").encode() + b"\r"),
        CORRUPT,
    ),
    Case(
        "manifest-bit-flip",
        "one byte of a size changed",
        stored_as(GOOD, (GOOD + "\n").replace(" 2 ./a", " 3 ./a").encode()),
        CORRUPT,
    ),
    Case(
        "manifest-reordered",
        "entries shuffled, root last: re-sorted, hashes to its id, accepted",
        stored_as(GOOD, ("\n".join(reversed(GOOD.split("\n"))) + "\n").encode()),
        (),
    ),
    Case(
        "manifest-leading-zeros",
        "perms 0644 and size 002: canonicalised, hashes to its id, accepted",
        stored_as(
            GOOD, (GOOD.replace("F 644 ", "F 0644 ").replace(" 2 ./a", " 002 ./a") + "\n").encode()
        ),
        (),
    ),
    Case(
        "manifest-is-dir",
        "the manifest key is a directory",
        _manifest_is("dir"),
        (NotFoundError, StoreError, SnapdirIOError),
        portable=False,
    ),
    Case(
        "manifest-is-fifo",
        "the manifest key is a FIFO (must not block)",
        _manifest_is("fifo"),
        (NotFoundError, StoreError, SnapdirIOError),
        portable=False,
    ),
    Case(
        "manifest-link-to-other",
        "the manifest key links to another snapshot's manifest",
        _manifest_is("link-to-other"),
        CORRUPT,
        portable=False,
    ),
    Case(
        "manifest-uppercase-key",
        "stored under the uppercase spelling of the id",
        _uppercase_key(),
        MISSING,
    ),
    Case(
        "request-uppercase-id",
        "a good store asked for with an uppercase id",
        _uppercase_request(),
        (),
    ),
    # -- malformed lines -----------------------------------------------------------------------
    Case("mode-too-large", "perms 10000", authentic(_lines(f"F 10000 {H} 2 ./f")), PARSE),
    Case("mode-not-octal", "perms 8", authentic(_lines(f"F 8 {H} 2 ./f")), PARSE),
    Case("mode-hex", "perms 0x1ff", authentic(_lines(f"F 0x1ff {H} 2 ./f")), PARSE),
    Case("mode-empty", "two spaces where perms belong", authentic(_lines(f"F  {H} 2 ./f")), PARSE),
    Case(
        "type-symlink",
        "an L (symlink) line from another tool",
        authentic(_lines(f"L 777 {H} 2 ./f")),
        PARSE,
    ),
    Case("type-lowercase", "f instead of F", authentic(_lines(f"f 644 {H} 2 ./f")), PARSE),
    Case(
        "tab-separated", "tabs between the fields", authentic(_lines(f"F\t644\t{H}\t2\t./f")), PARSE
    ),
    # -- objects -------------------------------------------------------------------------------
    Case(
        "object-truncated", "the object is missing its last byte", _object_replaced(X[:-1]), CORRUPT
    ),
    Case("object-extended", "the object has a byte appended", _object_replaced(X + b"!"), CORRUPT),
    Case(
        "object-swapped",
        "the object holds another object's bytes (same size)",
        _object_replaced(b"o\n"),
        CORRUPT,
    ),
    Case(
        "object-is-dir",
        "the object key is a directory",
        _object_is("dir"),
        (CORRUPT + MISSING + (StoreError, SnapdirIOError)),
        portable=False,
    ),
    Case(
        "object-is-fifo",
        "the object key is a FIFO (must not block)",
        _object_is("fifo"),
        (CORRUPT + MISSING + (StoreError, SnapdirIOError)),
        portable=False,
    ),
    Case(
        "object-links-to-dev-zero",
        "the object key links to /dev/zero (endless bytes)",
        _object_is("dev-zero-link"),
        (*CORRUPT, SnapdirIOError),
        {"verify": CORRUPT, "fetch": CORRUPT, "sync": CORRUPT, "checkout": CORRUPT + MISSING},
        portable=False,
        sandboxed=True,
    ),
    Case(
        "object-sparse-terabyte",
        "the object key holds a sparse 1 TB file (the manifest says 2 bytes)",
        _object_is("sparse-tb"),
        CORRUPT,
        {"checkout": CORRUPT + MISSING},
        portable=False,
        sandboxed=True,
    ),
    # -- modes ---------------------------------------------------------------------------------
    Case(
        "special-bits-everywhere",
        "setuid, setgid, sticky on files and dirs, 0000 modes: bits dropped",
        authentic(_special_tree().split("\n"), (X, Y, b"all\n", b"0\n")),
        (),
    ),
    Case(
        "child-of-mode-0-dir",
        "a file below a directory of mode 0000",
        authentic(_child_of_zero_dir().split("\n"), (X,)),
        (),
    ),
    # -- long paths ----------------------------------------------------------------------------
    Case(
        "name-over-name-max",
        "a 256-byte file name",
        authentic(_lines(fline("./" + "n" * 256, X))),
        (SnapdirIOError, UnsafePathError, InvalidArgumentError),
        {"verify": (), "fetch": (), "sync": ()},
    ),
    Case(
        "path-over-path-max",
        "a file 25 directories of 200-byte names deep (over 5000 bytes)",
        authentic(_long_chain(25, 200).split("\n"), (X,)),
        (),
    ),
    # -- many lines ------------------------------------------------------------------------------
    Case(
        "million-comments",
        "2.5 million comment lines in front of a good manifest",
        _comments(2_500_000),
        (),
        heavy=True,
    ),
    Case(
        "million-entries-then-bad",
        "2 million entries, the last line a duplicate: refused after a full parse",
        _huge_manifest(2_000_000, f"F 644 {H} 2 ./d/0000000"),
        PARSE,
        heavy=True,
    ),
]


def _self_ref_text() -> str:
    """A manifest whose file names the id of the manifest it is in: impossible to build
    exactly, so it names the id of a one-line stand-in, which is not an object."""
    stand_in = ROOT
    return "\n".join([ROOT, f"F 644 {text_id(stand_in)} 3 ./f"])


BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


# --- running a case ------------------------------------------------------------------------------


@dataclass
class Jail:
    """``<base>/jail`` holds the destinations (each with planted links to ``<base>/outside``),
    a sentinel file and the sync target; ``<base>/store`` is the hostile store."""

    base: Path

    @property
    def store(self) -> Path:
        return self.base / "store"

    @property
    def jail(self) -> Path:
        return self.base / "jail"

    @property
    def outside(self) -> Path:
        return self.base / "outside"

    @property
    def synced(self) -> Path:
        return self.jail / "synced"

    def dest(self, op: str) -> Path:
        return self.jail / f"dest-{op}"

    def setup(self) -> None:
        write(self.jail / "sentinel.txt", "sentinel\n")
        write(self.outside / "target.txt", "outside target\n", 0o640)
        write(self.outside / "x", "outside x\n")
        for op in ("checkout", "pull"):  # pull_force reuses the pull destination
            d = self.dest(op)
            write(d / "mine.txt", "local file\n")
            (d / LINK_DIR).symlink_to(self.outside)
            (d / LINK_FILE).symlink_to(self.outside / "target.txt")
        (self.jail / "escape").symlink_to(self.outside)


@dataclass
class OpResult:
    op: str
    ok: bool
    cls: str = ""
    code: str = ""
    message: str = ""
    mro: tuple[str, ...] = ()


def _call(fn: Callable[[], object]) -> OpResult:
    try:
        fn()
    except SnapdirError as e:
        return OpResult(
            "", False, type(e).__name__, e.code, str(e), tuple(c.__name__ for c in type(e).__mro__)
        )
    except Exception as e:  # recorded: any non-SnapdirError fails the case
        return OpResult("", False, type(e).__name__, "", repr(e), ("<not a SnapdirError>",))
    return OpResult("", True)


def _run(coro_fn: Callable[[], object]) -> None:
    async def go() -> None:
        await coro_fn()  # type: ignore[misc]

    anyio.run(go)


def run_ops(j: Jail, sid: str, store_uri: str) -> dict[str, OpResult]:
    """Run every operation of :data:`OPS` once; returns what each did."""
    out: dict[str, OpResult] = {}
    calls: dict[str, Callable[[], object]] = {
        "verify": lambda: _run(lambda: snapdir.verify(sid, store_uri)),
        "fetch": lambda: _run(lambda: snapdir.fetch(sid, store_uri)),
        "checkout": lambda: _run(lambda: snapdir.checkout(sid, j.dest("checkout"))),
        "pull": lambda: _run(lambda: snapdir.pull(sid, store_uri, j.dest("pull"))),
        "pull_force": lambda: _run(
            lambda: snapdir.pull(sid, store_uri, j.dest("pull"), force=True, delete=True)
        ),
        "sync": lambda: _run(lambda: snapdir.sync(sid, store_uri, "file://" + str(j.synced))),
    }
    for op in OPS:
        if op == "checkout":
            _call(calls["fetch"])  # checkout reads the cache: fill it first (may refuse)
        r = _call(calls[op])
        r.op = op
        out[op] = r
        gc.collect()  # a refused 200 MB manifest lingers in exception cycles otherwise
    return out


def _fwalk(root: Path) -> Iterator[tuple[str, str, os.stat_result, int]]:
    """Every entry below ``root`` as (relative path, name, lstat, parent dir fd), through
    directory file descriptors: the trees here can be deeper than PATH_MAX."""
    if not os.path.isdir(root) or os.path.islink(root):
        return
    for dirpath, dirnames, names, dfd in os.fwalk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for n in dirnames + names:
            rel = n if rel_dir == "." else f"{rel_dir}/{n}"
            yield rel, n, os.stat(n, dir_fd=dfd, follow_symlinks=False), dfd


def _read_at(dfd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    with open(fd, "rb") as f:
        return f.read()


def state(root: Path) -> dict[str, tuple[str, int, str, int, int]]:
    """(kind, mode, content hash or link target, inode, mtime) of every entry below
    ``root``; directory mtimes left out (a failed pull's staging touches them)."""
    out: dict[str, tuple[str, int, str, int, int]] = {}
    for rel, n, st, dfd in _fwalk(root):
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("L", 0, os.readlink(n, dir_fd=dfd), st.st_ino, st.st_mtime_ns)
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("D", mode, "", st.st_ino, 0)
        elif stat.S_ISREG(st.st_mode):
            out[rel] = ("F", mode, b3(_read_at(dfd, n)), st.st_ino, st.st_mtime_ns)
        else:
            out[rel] = ("?", mode, "", st.st_ino, st.st_mtime_ns)
    return out


def corrupt_entries(root: Path) -> list[str]:
    """What is wrong in the ``file://`` store at ``root`` (the cache, a sync target): an
    object whose bytes do not hash to its key, a file under ``.objects``/``.manifests`` that
    is not a key, a manifest that does not verify or whose objects are missing."""
    bad: list[str] = []
    objects: set[str] = set()
    manifests: dict[str, bytes] = {}
    for kind in (".objects", ".manifests"):
        for rel, n, st, dfd in _fwalk(root / kind):
            if stat.S_ISDIR(st.st_mode):
                continue
            parts = rel.split("/")
            key = "".join(parts)
            if [len(x) for x in parts] != [3, 3, 3, 55] or any(
                c not in "0123456789abcdef" for c in key
            ):
                bad.append(f"stray file {kind}/{rel}")
            elif not stat.S_ISREG(st.st_mode):
                bad.append(f"not a regular file: {kind}/{rel}")
            elif kind == ".objects":
                objects.add(key)
                if b3(_read_at(dfd, n)) != key:
                    bad.append(f"object {key} does not hash to its key")
            else:
                manifests[key] = _read_at(dfd, n)
    for key, data in manifests.items():
        try:
            m = parse_stored_manifest(data, key, str(root))
        except SnapdirError as e:
            bad.append(f"manifest {key} does not verify: {e}")
            continue
        missing = [c for c, _ in m.objects() if c not in objects]
        if missing:
            bad.append(f"manifest {key} is missing {len(missing)} objects")
    return bad


def big_files(root: Path, limit: int = 1 << 20) -> list[str]:
    """Files below ``root`` larger than ``limit`` bytes (apparent or allocated)."""
    return [
        rel
        for rel, _, st, _ in _fwalk(root)
        if not stat.S_ISDIR(st.st_mode) and (st.st_size > limit or st.st_blocks * 512 > limit)
    ]


def dest_mismatches(dest: Path, manifest: Manifest, keep: set[str]) -> list[str]:
    """How ``dest`` differs from what pulling ``manifest`` without special bits must give:
    every entry present with its type, content and mode masked to 0o777; nothing else but
    the names in ``keep``."""
    got = state(dest)
    want: set[str] = set()
    bad: list[str] = []
    for e in manifest.entries:
        rel = e.path[2:].rstrip("/")
        if not rel:
            continue
        want.add(rel)
        kind = "D" if e.path.endswith("/") else "F"
        have = got.get(rel)
        if have is None:
            bad.append(f"{e.path} missing")
        elif have[0] != kind or have[1] != e.permissions & 0o777:
            bad.append(f"{e.path}: {have[0]} {have[1]:o}, want {kind} {e.permissions & 0o777:o}")
        elif kind == "F" and have[2] != e.checksum:
            bad.append(f"{e.path}: wrong content")
    extra = sorted(k for k in got if k not in want and k.split("/")[0] not in keep)
    return bad + [f"./{k} is extra" for k in extra]


@dataclass
class Report:
    """Everything a test asserts about one case's run."""

    sid: str
    names: list[str]
    uri: str
    results: dict[str, OpResult]
    outside_changed: bool
    jail_changed: list[str]
    dest_changed: dict[str, bool]
    cache_problems: list[str]
    synced_problems: list[str]
    big_files: list[str]
    dest_problems: dict[str, list[str]]
    special_bits: list[str]
    leftovers: list[str]
    #: The snapshot's manifest is in the cache / in the sync target afterwards.
    cached: bool
    synced: bool

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["results"] = {k: v.__dict__ for k, v in self.results.items()}
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> Report:
        d = json.loads(text)
        d["results"] = {
            k: OpResult(**{**v, "mro": tuple(v["mro"])}) for k, v in d["results"].items()
        }
        return cls(**d)


def _jail_state(j: Jail) -> dict[str, tuple[str, int, str, int, int]]:
    return {k: v for k, v in state(j.jail).items() if not k.startswith(("dest-", "synced"))}


def _special(root: Path) -> list[str]:
    return [
        rel
        for rel, _, st, _ in _fwalk(root)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o7000
    ]


def _leftovers(root: Path) -> list[str]:
    return [
        rel
        for rel, n, _, _ in _fwalk(root)
        if n.startswith(".snapdir-") or ".tmp-" in n or n.startswith(".tmp")
    ]


def _stored_manifest(store: Path, sid: str) -> Manifest | None:
    path = store / manifest_rel(sid.lower())
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a planted FIFO would block a read
            return None
        return parse_stored_manifest(path.read_bytes(), sid.lower(), "")
    except (SnapdirError, OSError):
        return None


def run_case(
    case: Case, base: Path, cache: Path, upload: Callable[[Path], str] | None = None
) -> Report:
    """Build ``case`` under ``base`` and run every operation against it (or against the
    copy ``upload(store_dir)`` makes of it elsewhere and names by URI), then observe the
    aftermath. ``cache`` must be the directory ``$SNAPDIR_CACHE_DIR`` names."""
    j = Jail(base)
    j.setup()
    built = case.build(j.store)
    uri = upload(j.store) if upload is not None else "file://" + str(j.store)
    outside_before = state(j.outside)
    jail_before = _jail_state(j)
    dests_before = {op: state(j.dest(op)) for op in ("checkout", "pull")}
    results = run_ops(j, built.sid, uri)
    jail_after = _jail_state(j)
    changed = sorted(
        k for k in set(jail_before) | set(jail_after) if jail_before.get(k) != jail_after.get(k)
    )
    manifest = _stored_manifest(j.store, built.sid)
    dest_problems: dict[str, list[str]] = {}
    if manifest is not None:
        keep = {"mine.txt", LINK_DIR, LINK_FILE}
        if results["checkout"].ok:
            dest_problems["checkout"] = dest_mismatches(j.dest("checkout"), manifest, keep)
        if results["pull_force"].ok:
            dest_problems["pull_force"] = dest_mismatches(j.dest("pull"), manifest, set())
    return Report(
        sid=built.sid,
        names=list(built.names),
        uri=uri,
        results=results,
        outside_changed=state(j.outside) != outside_before,
        jail_changed=changed,
        dest_changed={op: state(j.dest(op)) != before for op, before in dests_before.items()},
        cache_problems=corrupt_entries(cache),
        synced_problems=corrupt_entries(j.synced),
        big_files=big_files(j.jail) + big_files(cache),
        dest_problems=dest_problems,
        special_bits=_special(j.jail),
        leftovers=_leftovers(j.jail),
        cached=os.path.lexists(cache / manifest_rel(built.sid.lower())),
        synced=os.path.lexists(j.synced / manifest_rel(built.sid.lower())),
    )


def cases(*, heavy: bool | None = None, portable: bool | None = None) -> Iterator[Case]:
    for c in CASES:
        if heavy is not None and c.heavy != heavy:
            continue
        if portable is not None and c.portable != portable:
            continue
        yield c


if __name__ == "__main__":
    # ``python tests/adversarial.py NAME BASE [--scale F]``: run one case in this process
    # (cache: ``$SNAPDIR_CACHE_DIR``, else ``BASE/cache``); prints its report, then this
    # process's peak RSS and the case's wall time as JSON.
    import argparse
    import time

    ap = argparse.ArgumentParser(description="run one adversarial store case")
    ap.add_argument("name", choices=sorted(BY_NAME))
    ap.add_argument("base", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="line-count factor (heavy cases)")
    args = ap.parse_args()
    SCALE[0] = args.scale
    cache_dir = Path(os.environ.get("SNAPDIR_CACHE_DIR") or args.base / "cache")
    os.environ["SNAPDIR_CACHE_DIR"] = str(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    report = run_case(BY_NAME[args.name], args.base / "case", cache_dir)
    seconds = time.monotonic() - t0
    print(report.to_json())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"maxrss_kib": rss, "seconds": round(seconds, 2)}))
