"""Hostile names: refs that must be refused before any key or path is built from them, and
store layouts planted by someone other than snapdir (oversized, truncated or lying records,
keys of equal precedence, stray keys, a record naming a missing manifest, a tampered
cache). Each gives a clear error or a warning naming the key — never a crash, never a wrong
answer, and nothing written outside the store."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import snapdir
from snapdir._errors import InvalidArgumentError, NotFoundError, SnapdirError, StoreError
from snapdir.names import ops
from snapdir.names.grammar import parse_channel, parse_ref, parse_tag
from storeutil import run, uri, write

BAD_REFS = [
    "Cal-Kit",
    "../etc@1.0.0",
    "a\x00b",
    "a//b",
    "a/b/c/d",
    ".hidden",
    "x" * 65,
    "cal-kit@",
    "cal-kit@latest",
    "cal kit",
    "cal-kit@>=1 <2",
    "cal-kit@1.2.3+b",
    "s3://b/p#",
    "s3://b/p",
    "cal-kit@@1",
    "é",
]


@pytest.mark.parametrize("ref", BAD_REFS, ids=range(len(BAD_REFS)))
def test_bad_refs_are_refused_before_any_io(ref: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_ref(ref)


@pytest.mark.parametrize(
    "text", ["cal-kit", "cal-kit@1", "deadbeef12@1.0.0", "CAL@1.0.0", "a@1.0.0+b", "a@v1.2"]
)
def test_bad_tags(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_tag(text)


@pytest.mark.parametrize("text", ["cal-kit@latest", "cal-kit@v2", "cal-kit@2", "cal-kit@Stable"])
def test_bad_channels(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_channel(text)


def _world(tmp_path: Path) -> tuple[str, Path, str]:
    src = tmp_path / "src"
    write(src / "a.txt", "alpha")
    root = tmp_path / "store"
    store = uri(root)
    sid = run(lambda: snapdir.push(src, store))
    return store, root, sid


def _record(sid: str, name: str = "cal-kit", version: str = "1.0.0", **over: object) -> bytes:
    doc: dict[str, object] = {
        "schema": 1,
        "id": sid,
        "name": name,
        "version": version,
        "created": "2026-01-01T00:00:00Z",
        "by": "someone@host",
        "message": "",
    }
    doc.update(over)
    return json.dumps(doc).encode()


def _plant(root: Path, rel: str, data: bytes) -> None:
    p = root / ".snapdir" / "names" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def _plant_all(root: Path, items: list[tuple[str, bytes]]) -> None:
    for rel, data in items:
        _plant(root, rel, data)


Plant = Callable[[Path, str], object]

# (what is planted, the ref resolved, the error expected)
LAYOUTS: list[tuple[str, Plant, str, type[BaseException]]] = [
    (
        "10 MB record",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", b" " * (10 << 20)),
        "cal-kit",
        StoreError,
    ),
    (
        "truncated JSON",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s)[:-9]),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "version differs from key",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s, version="1.0.1")),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "name differs from key",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s, name="x")),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "uppercase id",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s.upper())),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "short id",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s[:40])),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "extra field",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s, evil="x")),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "schema 2",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s, schema=2)),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "nested field",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record(s, message={"a": [1]})),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "deep nesting",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", b"[" * 5000 + b"]" * 5000),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "a list",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", b"[1, 2]"),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "not UTF-8",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", b"\xff\xfe{}"),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "empty record",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", b""),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "missing manifest",
        lambda r, s: _plant(r, "cal-kit/v/1.0.0", _record("0" * 64)),
        "cal-kit",
        NotFoundError,
    ),
    (
        "equal precedence v-prefix",
        lambda r, s: _plant_all(
            r, [("cal-kit/v/1.0.0", _record(s)), ("cal-kit/v/v1.0.0", _record(s, version="v1.0.0"))]
        ),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "equal precedence build",
        lambda r, s: _plant_all(
            r,
            [
                ("cal-kit/v/1.0.0", _record(s)),
                ("cal-kit/v/1.0.0+b1", _record(s, version="1.0.0+b1")),
            ],
        ),
        "cal-kit",
        InvalidArgumentError,
    ),
    (
        "only a non-canonical key",
        lambda r, s: _plant(r, "cal-kit/v/v1.0.0", _record(s)),
        "cal-kit",
        NotFoundError,
    ),
    ("stray key", lambda r, s: _plant(r, "cal-kit/zzz", b"x"), "cal-kit", NotFoundError),
    ("version dir", lambda r, s: _plant(r, "cal-kit/v/1.0.0/x", b"x"), "cal-kit", NotFoundError),
    (
        "not a version",
        lambda r, s: _plant(r, "cal-kit/v/latest", _record(s)),
        "cal-kit",
        NotFoundError,
    ),
    (
        "channel seq 0",
        lambda r, s: _plant(r, "cal-kit/c/stable/999999999999", b"{}"),
        "cal-kit@stable",
        NotFoundError,
    ),
    (
        "channel seq differs",
        lambda r, s: _plant(
            r,
            "cal-kit/c/stable/999999999998",
            json.dumps(
                {
                    "schema": 1,
                    "name": "cal-kit",
                    "channel": "stable",
                    "seq": 7,
                    "id": s,
                    "version": "",
                    "created": "",
                    "by": "",
                    "message": "",
                }
            ).encode(),
        ),
        "cal-kit@stable",
        InvalidArgumentError,
    ),
    (
        "channel of another name",
        lambda r, s: _plant(
            r,
            "cal-kit/c/stable/999999999998",
            json.dumps(
                {
                    "schema": 1,
                    "name": "other",
                    "channel": "stable",
                    "seq": 1,
                    "id": s,
                    "version": "",
                    "created": "",
                    "by": "",
                    "message": "",
                }
            ).encode(),
        ),
        "cal-kit@stable",
        InvalidArgumentError,
    ),
    (
        "channel id not hex",
        lambda r, s: _plant(
            r,
            "cal-kit/c/stable/999999999998",
            json.dumps(
                {
                    "schema": 1,
                    "name": "cal-kit",
                    "channel": "stable",
                    "seq": 1,
                    "id": "z" * 64,
                    "version": "",
                    "created": "",
                    "by": "",
                    "message": "",
                }
            ).encode(),
        ),
        "cal-kit@stable",
        InvalidArgumentError,
    ),
    (
        "bad channel key",
        lambda r, s: _plant(r, "cal-kit/c/Stable/999999999998", b"{}"),
        "cal-kit@stable",
        NotFoundError,
    ),
    (
        "uppercase name dir",
        lambda r, s: _plant(r, "Cal-Kit/v/1.0.0", _record(s)),
        "cal-kit",
        NotFoundError,
    ),
]


@pytest.mark.parametrize(("what", "plant", "ref", "error"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_hostile_layouts(
    tmp_path: Path, what: str, plant: Plant, ref: str, error: type[BaseException]
) -> None:
    store, root, sid = _world(tmp_path)
    plant(root, sid)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as e:
            run(lambda: ops.resolve_id(store, ref))
    assert isinstance(e.value, SnapdirError)
    if error is not NotFoundError or what == "missing manifest":
        assert ".snapdir/names/" in str(e.value) or "0" * 64 in str(e.value), str(e.value)
    # nothing was written beside the store (the record cache lives in the cache dir)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_missing_manifest_names_both(tmp_path: Path) -> None:
    store, root, _ = _world(tmp_path)
    _plant(root, "cal-kit/v/1.0.0", _record("0" * 64))
    with pytest.raises(NotFoundError) as e:
        run(lambda: ops.resolve_id(store, "cal-kit@1.0.0"))
    assert "cal-kit@1.0.0" in str(e.value)
    assert "0" * 64 in str(e.value)


def test_stray_keys_are_warned_about(tmp_path: Path) -> None:
    store, root, sid = _world(tmp_path)
    run(lambda: ops.tag(store, "cal-kit@1.0.0", sid))
    _plant(root, "cal-kit/zzz", b"x")
    _plant(root, "cal-kit/y/1.0.0/0001-delete", b"x")
    with pytest.warns(snapdir.SnapdirWarning, match="not a name key"):
        r = run(lambda: ops.resolve(store, "cal-kit"))
    assert r.id == sid
    assert not r.yanked


def test_a_tampered_cache_is_not_believed(tmp_path: Path) -> None:
    from snapdir.names.cache import RecordCache
    from snapdir.names.layout import version_key

    store, _root, sid = _world(tmp_path)
    run(lambda: ops.tag(store, "cal-kit@1.0.0", sid))
    run(lambda: ops.tag(store, "cal-kit@2.0.0", sid))
    cache = RecordCache(store)
    k1, k2 = version_key("cal-kit", "1.0.0"), version_key("cal-kit", "2.0.0")
    # the record of another key, copied over this key's cache entry: rejected (key check)
    Path(cache._path(k2)).write_bytes(Path(cache._path(k1)).read_bytes())
    assert cache.get(k2, len(Path(cache._path(k2)).read_bytes())) is None
    # a cache entry of another size than listed: rejected, read again from the store
    Path(cache._path(k1)).write_bytes(b"{}")
    assert run(lambda: ops.resolve(store, "cal-kit@1.0.0")).id == sid
    assert json.loads(Path(cache._path(k1)).read_bytes())["id"] == sid


def test_case_count() -> None:
    """The issue asks for at least 30 hostile layouts."""
    assert len(BAD_REFS) + len(LAYOUTS) + 6 + 4 >= 30
