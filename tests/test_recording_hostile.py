"""A recording read from a store is untrusted input: recordings written by hand to attack
the replayer (paths out of the target, absolute paths, NUL and control characters, huge
sizes, bad hashes and modes, torn, swapped and re-chained segments, forged heads, links in
the target) are refused with a clear error, and nothing is ever written outside the
target."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from snapdir import SnapdirError, UnsafePathError
from snapdir.recording import replay
from storeutil import b3, put_raw_object, uri, write

H = b3(b"hello\n")
EMPTY = b3(b"")


def _header(name: str, seq: int, prev: str | None, **extra: Any) -> dict[str, Any]:
    return {"snapdir": "recording-segment", "v": 1, "rec": name, "seq": seq, "prev": prev, **extra}


def _segment(header: dict[str, Any], events: list[Any]) -> bytes:
    lines = [json.dumps(header)] + [json.dumps(e) for e in events]
    return ("\n".join(lines) + "\n").encode()


def _head(store: Path, name: str, seq: int, digest: str, area: str = "head") -> None:
    write(store / ".snapdir" / "recordings" / name / area / f"{seq:010d}_{digest}", b"")


def _plant(store: Path, name: str, segments: list[bytes]) -> list[str]:
    """Store ``segments`` as objects and a head for each; returns their digests."""
    out = []
    for seq, data in enumerate(segments):
        d = b3(data)
        put_raw_object(store, d, data)
        _head(store, name, seq, d)
        out.append(d)
    return out


def _one(store: Path, events: list[Any], name: str = "evil") -> None:
    put_raw_object(store, H, b"hello\n")
    put_raw_object(store, EMPTY, b"")
    _plant(store, name, [_segment(_header(name, 0, None), events)])


def _ev(**kw: Any) -> dict[str, Any]:
    return {"t": 1, **kw}


def _create(path: str, **kw: Any) -> dict[str, Any]:
    return _ev(k="create", p=path, m=0o644, h=H, s=6) | kw


LONG = "x" * 256
EVENT_CASES: dict[str, list[Any]] = {
    "dotdot": [_create("../escaped.txt")],
    "dotdot-deep": [_ev(k="mkdir", p="a", m=0o755), _create("a/../../escaped.txt")],
    "absolute": [_create("/tmp/escaped-abs.txt")],
    "dot": [_create("a/./b")],
    "empty-component": [_create("a//b")],
    "trailing-slash": [_create("a/")],
    "nul": [_create("a\u0000b")],
    "newline": [_create("a\nb")],
    "long-name": [_create(LONG)],
    "long-path": [_create("/".join(["d" * 200] * 25))],
    "rename-out": [_create("a"), _ev(k="rename", p="a", d="../escaped.txt")],
    "rename-absolute": [_create("a"), _ev(k="rename", p="a", d="/tmp/escaped-ren.txt")],
    "rename-root": [_create("a"), _ev(k="rename", p="a", d="")],
    "delete-root": [_ev(k="delete", p="")],
    "mkdir-root": [_ev(k="mkdir", p="", m=0o755)],
    "huge-placeholder": [_ev(k="placeholder", p="p", m=0o644, s=1 << 41, f=H)],
    "negative-size": [_create("a", s=-1)],
    "bad-mode": [_create("a", m=0o17777)],
    "hash-not-hex": [_create("a", h="zz" * 32)],
    "hash-upper": [_create("a", h=H.upper())],
    "hash-short": [_create("a", h=H[:60])],
    "size-mismatch": [_create("a", s=7)],
    "append-backwards": [_create("a"), _ev(k="append", p="a", h=H, o=10, s=4, f=H)],
    "append-wrong-offset": [_create("a"), _ev(k="append", p="a", h=H, o=3, s=9, f=H)],
    "unknown-kind": [_ev(k="explode", p="a")],
    "not-object": [["create", "a"]],
    "time-not-number": [_create("a", t="soon")],
    "time-backwards": [_create("a", t=5), _create("b", t=4)],
    "missing-path": [{"t": 1, "k": "create", "m": 420, "h": H, "s": 6}],
    "bad-checkpoint": [_ev(k="checkpoint", id="nope")],
    "missing-object": [_create("a", h=b3(b"never stored"), s=12)],
    "unreadable-errno-huge": [_ev(k="unreadable", p="a", e=1 << 40)],
}


def _segments_case(kind: str, store: Path) -> None:
    name = "evil"
    good0 = _segment(_header(name, 0, None), [_create("a")])
    put_raw_object(store, H, b"hello\n")
    if kind == "torn-object":
        d0 = b3(good0)
        put_raw_object(store, d0, good0[:-10])
        _head(store, name, 0, d0)
    elif kind == "no-final-newline":
        _plant(store, name, [good0[:-1]])
    elif kind == "broken-chain":
        d0 = _plant(store, name, [good0])[0]
        seg1 = _segment(_header(name, 1, b3(b"another")), [_create("b", t=2)])
        d1 = b3(seg1)
        put_raw_object(store, d1, seg1)
        _head(store, name, 1, d1)
        assert d0
    elif kind == "other-recording":
        _plant(store, name, [_segment(_header("someone-else", 0, None), [_create("a")])])
    elif kind == "seq-out-of-order":
        d0 = b3(good0)
        put_raw_object(store, d0, good0)
        _head(store, name, 0, d0)
        seg1 = _segment(_header(name, 5, d0), [_create("b", t=2)])
        put_raw_object(store, b3(seg1), seg1)
        _head(store, name, 1, b3(seg1))
    elif kind == "two-heads":
        _plant(store, name, [good0])
        other = _segment(_header(name, 0, None), [_create("z")])
        put_raw_object(store, b3(other), other)
        _head(store, name, 0, b3(other))
    elif kind == "malformed-head-key":
        _plant(store, name, [good0])
        write(store / ".snapdir" / "recordings" / name / "head" / "latest", b"")
    elif kind == "head-names-missing-segment":
        _head(store, name, 0, b3(b"not there"))
    elif kind == "header-not-json":
        _plant(store, name, [b"{not json\n"])
    elif kind == "header-version-2":
        _plant(store, name, [_segment(_header(name, 0, None) | {"v": 2}, [_create("a")])])
    elif kind == "meta-not-object":
        _plant(store, name, [_segment(_header(name, 0, None, meta=[1, 2]), [_create("a")])])
    elif kind == "not-utf8":
        _plant(
            store,
            name,
            [_segment(_header(name, 0, None), []) + b'{"t":1,"k":"create","p":"\xff"}\n'],
        )
    elif kind == "sealed-twice":
        d0 = _plant(store, name, [good0])[0]
        _head(store, name, 0, d0, area="sealed")
        _head(store, name, 0, b3(b"x"), area="sealed")
    else:  # pragma: no cover
        raise AssertionError(kind)


SEGMENT_CASES = [
    "torn-object",
    "no-final-newline",
    "broken-chain",
    "other-recording",
    "seq-out-of-order",
    "two-heads",
    "malformed-head-key",
    "head-names-missing-segment",
    "header-not-json",
    "header-version-2",
    "meta-not-object",
    "not-utf8",
    "sealed-twice",
]


def _outside_state(root: Path) -> dict[str, bytes | None]:
    state: dict[str, bytes | None] = {}
    for base, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(base) / n
            if "target" in p.relative_to(root).parts[:1]:
                continue
            state[str(p)] = None if p.is_dir() else p.read_bytes()
    return state


def _attack(
    tmp_path: Path, plant: Callable[[Path], None], into_existing: bool = False
) -> BaseException:
    store = tmp_path / "store"
    store.mkdir()
    plant(store)
    target = tmp_path / "target"
    target.mkdir()
    outside = tmp_path / "outside"
    write(outside / "sentinel", "untouched")
    if into_existing:
        (target / "link").symlink_to(outside)
    before = _outside_state(tmp_path)
    with pytest.raises(SnapdirError) as exc:
        anyio.run(
            lambda: replay("evil", uri(store), target, mode="burst", into_existing=into_existing)
        )
    assert str(exc.value)
    after = _outside_state(tmp_path)
    # the store may have gained nothing either: every byte outside the target is as it was
    assert after == before
    for p in ("/tmp/escaped-abs.txt", "/tmp/escaped-ren.txt", str(tmp_path / "escaped.txt")):
        assert not os.path.lexists(p)
    return exc.value


@pytest.mark.parametrize("case", sorted(EVENT_CASES))
def test_hostile_events(tmp_path: Path, case: str) -> None:
    err = _attack(tmp_path, lambda s: _one(s, EVENT_CASES[case]))
    if case in ("dotdot", "absolute", "nul", "rename-out", "long-name"):
        assert isinstance(err, UnsafePathError), err


@pytest.mark.parametrize("case", SEGMENT_CASES)
def test_hostile_segments(tmp_path: Path, case: str) -> None:
    _attack(tmp_path, lambda s: _segments_case(case, s))


@pytest.mark.parametrize(
    "events",
    [
        [_create("link/escaped.txt")],
        [_create("a"), _ev(k="rename", p="a", d="link/escaped.txt")],
        [_ev(k="mkdir", p="link/sub", m=0o755)],
        [_ev(k="chmod", p="link", m=0o777)],
        [_ev(k="append", p="link", h=H, o=0, s=6, f=H)],
    ],
    ids=[
        "create-through-link",
        "rename-into-link",
        "mkdir-through-link",
        "chmod-link",
        "append-link",
    ],
)
def test_links_in_the_target_are_never_followed(tmp_path: Path, events: list[Any]) -> None:
    err = _attack(tmp_path, lambda s: _one(s, events), into_existing=True)
    assert isinstance(err, UnsafePathError), err
    assert oct((tmp_path / "outside").stat().st_mode & 0o777) != "0o777"


def test_at_least_thirty_hostile_recordings() -> None:
    assert len(EVENT_CASES) + len(SEGMENT_CASES) + 5 >= 30


# -- epuplayer archives -----------------------------------------------------------------


def _epu_event(**kw: Any) -> dict[str, Any]:
    base = {"timestamp": 1.0, "event_type": "created", "src_path": "a.txt", "dest_path": None,
            "is_directory": False, "content": "hi", "size": 2, "content_hash": None,
            "binary_chunk_id": None, "operation_data": None, "file_position": None,
            "is_placeholder": False}  # fmt: skip
    return base | kw


def _archive(path: Path, members: list[tuple[str, bytes, bytes]]) -> None:
    """members: (name, data, type) with type b"f" file, b"l" symlink, b"d" dir."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == b"l":
                info.type = tarfile.SYMTYPE
                info.linkname = data.decode()
                tar.addfile(info)
            elif kind == b"d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _doc(events: list[Any]) -> bytes:
    return json.dumps({"metadata": {"watch_dir": "/x", "recorded_at": "2026-01-01"},
                       "events": events}).encode()  # fmt: skip


EPU_CASES: dict[str, list[tuple[str, bytes, bytes]]] = {
    "member-dotdot": [("recording.json", _doc([]), b"f"), ("../escaped.txt", b"x", b"f")],
    "member-absolute": [("recording.json", _doc([]), b"f"), ("/tmp/escaped-abs.txt", b"x", b"f")],
    "member-symlink": [
        ("recording.json", _doc([]), b"f"),
        ("chunks/chunk_0.bin", b"/etc/passwd", b"l"),
    ],
    "member-unexpected": [("recording.json", _doc([]), b"f"), ("chunks/evil.sh", b"x", b"f")],
    "no-recording-json": [("chunks/chunk_0.bin", b"x", b"f")],
    "json-not-object": [("recording.json", b"[1, 2]", b"f")],
    "json-garbage": [("recording.json", b"{{{", b"f")],
    "event-dotdot": [("recording.json", _doc([_epu_event(src_path="../escaped.txt")]), b"f")],
    "event-absolute": [
        ("recording.json", _doc([_epu_event(src_path="/tmp/escaped-abs.txt")]), b"f")
    ],
    "event-nul": [("recording.json", _doc([_epu_event(src_path="a\u0000b")]), b"f")],
    "move-out": [
        (
            "recording.json",
            _doc([_epu_event(), _epu_event(event_type="moved", dest_path="../escaped.txt")]),
            b"f",
        )
    ],
    "hash-mismatch": [("recording.json", _doc([_epu_event(content_hash="0" * 64)]), b"f")],
    "missing-chunk": [
        ("recording.json", _doc([_epu_event(content=None, binary_chunk_id="chunk_9")]), b"f")
    ],
    "bad-timestamp": [("recording.json", _doc([_epu_event(timestamp="now")]), b"f")],
    "unknown-type": [("recording.json", _doc([_epu_event(event_type="exploded")]), b"f")],
    "append-no-position": [
        ("recording.json", _doc([_epu_event(), _epu_event(event_type="appended")]), b"f")
    ],
}


@pytest.mark.parametrize("case", sorted(EPU_CASES))
def test_hostile_epuplayer_archives(tmp_path: Path, case: str) -> None:
    from snapdir.recording.epuplayer import import_epuplayer

    archive = tmp_path / "evil.tar.gz"
    _archive(archive, EPU_CASES[case])
    store = tmp_path / "store"
    store.mkdir()
    write(tmp_path / "outside" / "sentinel", "untouched")
    before = _outside_state(tmp_path)
    with pytest.raises(SnapdirError) as exc:
        anyio.run(lambda: import_epuplayer(archive, uri(store), name="evil"))
    assert str(exc.value)
    assert _outside_state(tmp_path) == before
    assert not (store / ".snapdir" / "recordings").exists()
    for p in (
        "/tmp/escaped-abs.txt",
        str(tmp_path / "escaped.txt"),
        str(tmp_path.parent / "escaped.txt"),
    ):
        assert not os.path.lexists(p)


def test_not_a_tar_gz(tmp_path: Path) -> None:
    from snapdir.recording.epuplayer import import_epuplayer

    (tmp_path / "x.tar.gz").write_bytes(b"plain text")
    (tmp_path / "s").mkdir()
    with pytest.raises(SnapdirError, match="not a valid epuplayer recording"):
        anyio.run(lambda: import_epuplayer(tmp_path / "x.tar.gz", uri(tmp_path / "s"), name="x"))
    good = tmp_path / "good.tar.gz"
    _archive(good, [("recording.json", _doc([_epu_event()]), b"f")])
    (tmp_path / "torn.tar.gz").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(SnapdirError, match="not a valid epuplayer recording"):
        anyio.run(lambda: import_epuplayer(tmp_path / "torn.tar.gz", uri(tmp_path / "s"), name="y"))
