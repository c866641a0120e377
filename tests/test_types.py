"""Value types, the error hierarchy, manifest parsing/validation, sizes and version (SPEC §1, §2,
§6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import reference
import snapdir

H1 = reference.blake3_hex(b"one")
H2 = reference.blake3_hex(b"two")
E = reference.EMPTY_HASH

SAMPLE = "\n".join(
    [
        f"D 755 {H1} 9 ./",
        f"F 644 {H1} 3 ./a b.txt",
        f"F 600 {H2} 3 ./a.txt",
        f"D 1777 {E} 0 ./a/",
        f"F 4755 {H1} 3 ./a/x",
    ]
)
CANONICAL = reference.render(reference.parse(SAMPLE))


# --- Manifest / ManifestEntry -------------------------------------------------------------------


def test_manifest_parse_sorts_and_renders() -> None:
    m = snapdir.Manifest.parse(SAMPLE)
    assert m.raw == CANONICAL
    assert not m.raw.endswith("\n")
    assert [e.path for e in m.entries] == ["./", "./a b.txt", "./a.txt", "./a/", "./a/x"]
    assert len(m) == 5
    assert m.id == reference.snapshot_id(CANONICAL)
    assert snapdir.id_from_manifest(m) == m.id


def test_manifest_parse_accepts_crlf_blank_lines_and_comments() -> None:
    lines = SAMPLE.split("\n")
    noisy = "# header comment\r\n\r\n" + "\r\n".join(reversed(lines)) + "\r\n#tail\r\n\r\n"
    m = snapdir.Manifest.parse(noisy)
    assert m.raw == CANONICAL
    assert m.id == reference.snapshot_id(CANONICAL)
    mixed = lines[0] + "\r\n" + "\n".join(lines[1:]) + "\n"
    assert snapdir.Manifest.parse(mixed).raw == CANONICAL


def test_manifest_path_field_keeps_spaces() -> None:
    text = f"D 755 {H1} 3 ./\nF 644 {H1} 3 ./  two  spaces  "
    m = snapdir.Manifest.parse(text)
    assert m.entries[1].path == "./  two  spaces  "
    assert m.raw == text


def test_manifest_equality_and_hash_by_content() -> None:
    a = snapdir.Manifest.parse(SAMPLE)
    b = snapdir.Manifest.parse("\r\n".join(reversed(SAMPLE.split("\n"))))
    c = snapdir.Manifest.parse(SAMPLE.replace("F 600", "F 640"))
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert a != CANONICAL  # not equal to its text


def test_manifest_entry_fields() -> None:
    m = snapdir.Manifest.parse(SAMPLE)
    by_path = {e.path: e for e in m.entries}
    root = by_path["./"]
    assert root.path_type == snapdir.PathType.Directory
    assert root.path_type.name == "Directory"
    assert (root.permissions, root.checksum, root.size) == (0o755, H1, 9)
    f = by_path["./a.txt"]
    assert f.path_type == snapdir.PathType.File
    assert f.path_type.name == "File"
    assert (f.permissions, f.checksum, f.size) == (0o600, H2, 3)
    assert by_path["./a/"].permissions == 0o1777
    assert by_path["./a/x"].permissions == 0o4755
    assert snapdir.PathType.File != snapdir.PathType.Directory


def test_manifest_entry_is_frozen_hashable_and_has_repr() -> None:
    m1 = snapdir.Manifest.parse(SAMPLE)
    m2 = snapdir.Manifest.parse(SAMPLE)
    e1 = next(e for e in m1.entries if e.path == "./a b.txt")
    e2 = next(e for e in m2.entries if e.path == "./a b.txt")
    other = next(e for e in m1.entries if e.path == "./a.txt")
    assert e1 == e2
    assert hash(e1) == hash(e2)
    assert e1 != other
    assert len({e1, e2, other}) == 2
    assert "./a b.txt" in repr(e1)
    for attr, value in [
        ("path", "./z"),
        ("permissions", 0o777),
        ("checksum", H2),
        ("size", 1),
        ("path_type", snapdir.PathType.Directory),
    ]:
        with pytest.raises(AttributeError):
            setattr(e1, attr, value)
    assert e1.path == "./a b.txt"


def test_manifest_is_frozen() -> None:
    m = snapdir.Manifest.parse(SAMPLE)
    for attr in ("raw", "id", "entries"):
        with pytest.raises(AttributeError):
            setattr(m, attr, "x")


def _line(
    kind: str = "F", perms: str = "644", checksum: str = H1, size: str = "3", path: str = "./x"
) -> str:
    return f"{kind} {perms} {checksum} {size} {path}"


BAD_LINES: list[tuple[str, str]] = [
    # (line, a token the error message must contain)
    (f"F 644 {H1} 3", f"F 644 {H1} 3"),
    ("F 644", "F 644"),
    ("garbage", "garbage"),
    (_line(kind="Q"), "Q"),
    (_line(kind="FF"), "FF"),
    (_line(perms="888"), "888"),
    (_line(perms="17777"), "17777"),
    (_line(perms="rw-"), "rw-"),
    (_line(perms="-644"), "-644"),
    (_line(perms="00644"), "00644"),
    (_line(checksum=H1.upper()), H1.upper()),
    (_line(checksum=H1[:63]), H1[:63]),
    (_line(checksum=H1 + "0"), H1 + "0"),
    (_line(checksum="g" * 64), "g" * 64),
    (_line(size="-1"), "-1"),
    (_line(size="1.5"), "1.5"),
    (_line(size="abc"), "abc"),
    (_line(size=str(2**64)), str(2**64)),
]

BAD_PATHS: list[tuple[str, str]] = [
    # (kind, path): not ./-relative and normalized (SPEC §1, §5)
    ("F", "x"),
    ("F", "/etc/passwd"),
    ("F", "../x"),
    ("F", "./../x"),
    ("F", "./a/../../x"),
    ("F", "./a//b"),
    ("F", "./a/./b"),
    ("F", "./a\0b"),
    ("F", "."),
    ("F", "./"),
    ("D", "./a/../"),
    ("D", "/abs/"),
    ("D", ".//"),
    ("F", "./a/"),
    ("D", "./a"),
]


def _assert_invalid_manifest(text: str, token: str, codes: tuple[str, ...]) -> None:
    with pytest.raises(snapdir.SnapdirError) as info:
        snapdir.Manifest.parse(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.code in codes, err.code
    assert token in str(err), str(err)


@pytest.mark.parametrize(("line", "token"), BAD_LINES)
def test_manifest_parse_rejects_bad_lines(line: str, token: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        reference.parse(line)
    _assert_invalid_manifest(f"D 755 {H1} 3 ./\n{line}", token, ("INVALID_MANIFEST",))


@pytest.mark.parametrize(("kind", "path"), BAD_PATHS)
def test_manifest_parse_rejects_unnormalized_paths(kind: str, path: str) -> None:
    line = _line(kind=kind, path=path)
    with pytest.raises(ValueError, match=r"."):
        reference.parse(line)
    # docs/format.md: an unsafe or malformed PATH is UNSAFE_PATH (UnsafePathError, a ValueError)
    text = f"D 755 {H1} 3 ./\n{line}"
    _assert_invalid_manifest(text, path.split("\0")[0], ("UNSAFE_PATH",))
    with pytest.raises(snapdir.UnsafePathError):
        snapdir.Manifest.parse(text)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        (f"F 644 {H1} 3 ./a", "./"),  # no root
        (f"D 755 {H1} 3 ./\nD 755 {H1} 3 ./", "./"),  # duplicate root
        (f"D 755 {H1} 3 ./\nF 644 {H1} 3 ./a\nF 600 {H2} 3 ./a", "./a"),  # duplicate file
        (f"D 755 {H1} 3 ./\nF 644 {H1} 3 ./x\nD 755 {E} 0 ./x/", "./x"),  # file and dir
        (f"D 755 {H1} 3 ./\nF 644 {H1} 3 ./d/orphan", "./d/orphan"),  # parent not listed
        (f"D 755 {H1} 3 ./\nF 644 {H1} 3 ./f\nF 644 {H1} 3 ./f/below", "./f/below"),
    ],
)
def test_manifest_parse_rejects_text_that_is_not_a_tree(text: str, token: str) -> None:
    _assert_invalid_manifest(text, token, ("INVALID_MANIFEST",))


@pytest.mark.parametrize("text", ["", "\n", "# only a comment"])
def test_manifest_parse_rejects_empty_text(text: str) -> None:
    with pytest.raises(snapdir.InvalidArgumentError) as info:
        snapdir.Manifest.parse(text)
    assert info.value.code == "INVALID_MANIFEST"


def test_manifest_parse_tolerates_leading_zero_in_perms() -> None:
    m = snapdir.Manifest.parse(f"D 0755 {H1} 3 ./\nF 0644 {H1} 3 ./a")
    assert m.raw == f"D 755 {H1} 3 ./\nF 644 {H1} 3 ./a"
    assert m.id == reference.snapshot_id(m.raw)


def test_manifest_parse_accepts_max_values() -> None:
    text = f"D 7777 {E} {2**64 - 1} ./"
    m = snapdir.Manifest.parse(text)
    assert m.entries[0].size == 2**64 - 1
    assert m.entries[0].permissions == 0o7777
    assert m.raw == text


def test_large_manifest_is_lazy_but_complete() -> None:
    n = 50_000
    lines = [f"D 755 {H1} {n} ./"]
    lines += [f"F 644 {H1 if i % 2 else H2} 1 ./f{i:06d}" for i in range(n - 1)]
    text = "\n".join(reversed(lines))
    m = snapdir.Manifest.parse(text)
    assert len(m) == n
    assert m.raw == "\n".join(lines)
    assert m.id == reference.snapshot_id("\n".join(lines))
    es = m.entries
    assert len(es) == n
    assert es[0].path == "./"
    assert es[-1].path == f"./f{n - 2:06d}"
    stats = snapdir.manifest_size(m)
    assert (stats.files, stats.objects, stats.logical_bytes, stats.physical_bytes) == (
        n - 1,
        2,
        n - 1,
        2,
    )


# --- manifest_size / version ----------------------------------------------------------------------


def test_manifest_size() -> None:
    text = "\n".join(
        [
            f"D 755 {H1} 30 ./",
            f"F 644 {H1} 10 ./a",
            f"F 600 {H1} 10 ./b",
            f"F 644 {H2} 7 ./c",
            f"D 755 {E} 3 ./d/",
            f"F 644 {E} 0 ./d/empty",
            f"F 644 {H2} 7 ./d/c-again",
        ]
    )
    stats = snapdir.manifest_size(snapdir.Manifest.parse(text))
    assert isinstance(stats, snapdir.SizeStats)
    assert stats.logical_bytes == 10 + 10 + 7 + 0 + 7
    assert stats.physical_bytes == 10 + 7 + 0
    assert stats.files == 5
    assert stats.objects == 3


def test_manifest_size_of_empty_root() -> None:
    stats = snapdir.manifest_size(snapdir.Manifest.parse(f"D 755 {E} 0 ./"))
    assert (stats.logical_bytes, stats.physical_bytes, stats.files, stats.objects) == (0, 0, 0, 0)


def test_version() -> None:
    v = snapdir.version()
    assert isinstance(v, str)
    assert re.match(r"^\d+\.\d+(\.\d+)?", v), v


# --- SnapshotId ---------------------------------------------------------------------------------


def test_snapshot_id_valid_and_normalized() -> None:
    sid = snapdir.SnapshotId(H1)
    assert isinstance(sid, str)
    assert sid == H1
    upper = snapdir.SnapshotId(H1.upper())
    assert upper == H1
    assert str(upper) == H1
    assert isinstance(upper, snapdir.SnapshotId)


@pytest.mark.parametrize(
    "bad", ["", H1[:63], H1 + "a", "g" * 64, " " + H1[1:], H1[:32] + "-" + H1[33:], "x"]
)
def test_snapshot_id_invalid(bad: str) -> None:
    with pytest.raises(snapdir.SnapdirError) as info:
        snapdir.SnapshotId(bad)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.code == "INVALID_ID"
    if bad:
        assert bad.strip() in str(err)


# --- StoreUri -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "scheme", "bucket", "prefix"),
    [
        ("s3://my-bucket/some/prefix", "s3", "my-bucket", "some/prefix"),
        ("s3://my-bucket", "s3", "my-bucket", ""),
        ("gs://gbucket/p", "gs", "gbucket", "p"),
        ("gcs://gbucket/p/q", "gs", "gbucket", "p/q"),
        ("b2://bb/deep/er/prefix", "b2", "bb", "deep/er/prefix"),
    ],
)
def test_store_uri_cloud(uri: str, scheme: str, bucket: str, prefix: str) -> None:
    s = snapdir.StoreUri(uri)
    assert isinstance(s, str)
    assert s.scheme == scheme
    assert s.bucket == bucket
    assert (s.prefix or "").strip("/") == prefix


def test_store_uri_file(tmp_path: Path) -> None:
    s = snapdir.StoreUri(f"file://{tmp_path}/store")
    assert isinstance(s, str)
    assert s.scheme == "file"
    assert str(tmp_path / "store") in str(s)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/tmp/store",
        "http://example.com/x",
        "ftp://bucket/x",
        "file://relative/path",
        "file:relative",
        "s3://",
        "not a uri",
    ],
)
def test_store_uri_invalid(bad: str) -> None:
    with pytest.raises(snapdir.SnapdirError) as info:
        snapdir.StoreUri(bad)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.code == "INVALID_STORE"
    if bad:
        assert bad in str(err)


# --- DiffOptions / DiffEntry --------------------------------------------------------------------


def test_diff_options_from_refs_valid(tmp_path: Path) -> None:
    snapdir.DiffOptions.from_refs([f"file://{tmp_path}/store@{H1}"], [f"s3://bucket/p@{H2}"])
    snapdir.DiffOptions.from_refs(["gs://bucket/p"], [str(tmp_path)])
    snapdir.DiffOptions.from_refs([str(tmp_path)], [f"b2://bucket@{H1}", "gcs://b/q"])


def test_diff_options_from_refs_takes_path_objects(tmp_path: Path) -> None:
    store = snapdir.StoreUri(f"file://{tmp_path}/store")
    opts = snapdir.DiffOptions.from_refs((tmp_path / "a",), [store, tmp_path])
    assert [r.kind for r in opts.from_] == ["path"]
    assert opts.from_[0].path == str(tmp_path / "a")
    assert [r.kind for r in opts.to] == ["store", "path"]
    assert opts.to[1].path == str(tmp_path)
    with pytest.raises(snapdir.InvalidArgumentError, match="not a single string or path"):
        snapdir.DiffOptions.from_refs(tmp_path, [tmp_path])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("from_uris", "to_uris"),
    [
        ([], ["s3://bucket/p"]),
        (["s3://bucket/p"], []),
        ([], []),
        (["ftp://host/x"], ["s3://bucket/p"]),
        ([f"ftp://host/x@{H1}"], ["s3://bucket/p"]),
        ([f"s3://@{H1}"], ["s3://bucket/p"]),
        ([f"file://relative/store@{H1}"], ["s3://bucket/p"]),
        (["s3://bucket/p"], ["gopher://x"]),
        (["s3://bucket/p"], [""]),
    ],
)
def test_diff_options_from_refs_invalid(from_uris: list[str], to_uris: list[str]) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        snapdir.DiffOptions.from_refs(from_uris, to_uris)
    assert isinstance(info.value, snapdir.SnapdirError)


def test_diff_entry() -> None:
    d = snapdir.DiffEntry("A", "./a.txt")
    assert d.status == "A"
    assert d.path == "./a.txt"
    assert d == snapdir.DiffEntry("A", "./a.txt")
    assert "./a.txt" in repr(d)


# --- errors ---------------------------------------------------------------------------------------

ERRORS: list[tuple[type[snapdir.SnapdirError], str | None, tuple[type[BaseException], ...]]] = [
    (snapdir.HashMismatchError, "HASH_MISMATCH", ()),
    (snapdir.StoreError, "STORE_ERROR", ()),
    (snapdir.InFluxError, "IN_FLUX", ()),
    (snapdir.CatalogError, "CATALOG_ERROR", ()),
    (snapdir.NotFoundError, "NOT_FOUND", (FileNotFoundError, OSError)),
    (snapdir.InvalidArgumentError, None, (ValueError,)),  # shared by several INVALID_* codes
    (snapdir.UnsafePathError, "UNSAFE_PATH", (ValueError,)),
    (snapdir.ConflictError, "CONFLICT", ()),
    (snapdir.SnapdirIOError, "IO_ERROR", (OSError,)),
]


@pytest.mark.parametrize(("cls", "code", "also"), ERRORS, ids=lambda x: getattr(x, "__name__", x))
def test_error_hierarchy(
    cls: type[snapdir.SnapdirError], code: str | None, also: tuple[type[BaseException], ...]
) -> None:
    assert issubclass(cls, snapdir.SnapdirError)
    assert issubclass(snapdir.SnapdirError, Exception)
    for base in also:
        assert issubclass(cls, base)
    err = cls("something about ./path")
    assert "./path" in str(err)
    if code is not None:
        assert err.code == code
    with pytest.raises(snapdir.SnapdirError):
        raise err


def test_snapdir_warning_is_user_warning() -> None:
    assert issubclass(snapdir.SnapdirWarning, UserWarning)


def test_problems_is_part_of_the_verify_errors() -> None:
    """``.problems`` is declared (typed) on both errors ``verify`` raises, and empty when an
    error did not come from verifying a snapshot."""
    assert snapdir.HashMismatchError("x").problems == {}
    assert snapdir.NotFoundError("x").problems == {}
    e = snapdir.HashMismatchError("x", problems={"ab" * 32: "corrupt"})
    assert e.problems == {"ab" * 32: "corrupt"}
    assert isinstance(snapdir.NotFoundError("x", problems={}), FileNotFoundError)
