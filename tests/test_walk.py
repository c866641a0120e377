"""Walking a directory (SPEC §3) through the async API, rule by rule."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import reference
import snapdir
from golden import BACKENDS, api_id, api_manifest, make_writable


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def write(path: Path, data: bytes | str = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


def paths(m: snapdir.Manifest) -> list[str]:
    return [e.path for e in m.entries]


def entry(m: snapdir.Manifest, path: str) -> snapdir.ManifestEntry:
    found = [e for e in m.entries if e.path == path]
    assert len(found) == 1, f"{path} not in manifest:\n{m.raw}"
    return found[0]


def basic_tree(root: Path) -> Path:
    write(root / "a.txt", "a\n")
    write(root / "sub" / "b.txt", "b\n")
    write(root / "sub" / "deeper" / "c.txt", "c\n", 0o600)
    (root / "empty").mkdir()
    os.chmod(root, 0o755)
    return root


# --- basics -----------------------------------------------------------------------------------


class PathLikeOnly:
    """An os.PathLike that is neither str nor Path."""

    def __init__(self, p: Path) -> None:
        self._p = p

    def __fspath__(self) -> str:
        return str(self._p)


def test_accepts_str_pathlike_and_path(tmp_path: Path, backend: str) -> None:
    root = basic_tree(tmp_path / "root")
    expected = reference.manifest_text(root)
    assert api_manifest(root, backend).raw == expected
    assert api_manifest(str(root), backend).raw == expected
    assert api_manifest(PathLikeOnly(root), backend).raw == expected
    assert api_id(PathLikeOnly(root), backend) == reference.snapshot_id(expected)


def test_id_matches_manifest_id(tmp_path: Path, backend: str) -> None:
    root = basic_tree(tmp_path / "root")
    m = api_manifest(root, backend)
    ident = api_id(root, backend)
    assert ident == m.id == snapdir.id_from_manifest(m)
    assert ident == reference.blake3_hex((m.raw + "\n").encode())
    assert len(ident) == 64
    assert ident == ident.lower()
    int(ident, 16)


def test_manifest_without_running_loop_returns_coroutine(tmp_path: Path) -> None:
    root = basic_tree(tmp_path / "root")
    coro = snapdir.manifest(root)
    try:
        assert inspect.iscoroutine(coro)
    finally:
        coro.close()
    coro2 = snapdir.id(root)
    try:
        assert inspect.iscoroutine(coro2)
    finally:
        coro2.close()


def test_empty_dirs_are_recorded(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "root"
    (root / "e1").mkdir(parents=True)
    (root / "nest" / "e2").mkdir(parents=True)
    os.chmod(root / "nest" / "e2", 0o700)
    m = api_manifest(root, backend)
    assert m.raw == reference.manifest_text(root)
    e1 = entry(m, "./e1/")
    assert e1.path_type == snapdir.PathType.Directory
    assert (e1.checksum, e1.size) == (reference.EMPTY_HASH, 0)
    e2 = entry(m, "./nest/e2/")
    assert (e2.permissions, e2.checksum, e2.size) == (0o700, reference.EMPTY_HASH, 0)
    nest = entry(m, "./nest/")
    assert nest.checksum == reference.blake3_hex(reference.EMPTY_HASH.encode())
    assert nest.size == 0


def test_directory_checksum_uses_distinct_child_checksums(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "root"
    write(root / "d" / "one", "same\n")
    write(root / "d" / "two", "same\n")
    write(root / "d" / "three", "other\n")
    m = api_manifest(root, backend)
    same = reference.blake3_hex(b"same\n")
    other = reference.blake3_hex(b"other\n")
    d = entry(m, "./d/")
    assert d.checksum == reference.blake3_hex("".join(sorted({same, other})).encode())
    assert d.size == 5 + 5 + 6
    assert entry(m, "./").size == 16
    assert m.raw == reference.manifest_text(root)


def test_special_files_are_skipped(tmp_path: Path, backend: str) -> None:
    root = basic_tree(tmp_path / "root")
    os.mkfifo(root / "fifo")
    os.mkfifo(root / "sub" / "fifo2")
    (root / "link-to-fifo").symlink_to("fifo")
    sock_path = root / "sock"
    assert len(os.fsencode(sock_path)) < 100, "socket path too long for AF_UNIX"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(sock_path))
        with warnings.catch_warnings():
            # The spec only says special files are skipped; a warning about them is allowed.
            warnings.simplefilter("ignore")
            m = api_manifest(root, backend)
    finally:
        sock.close()
    assert m.raw == reference.manifest_text(root)
    assert not {"./fifo", "./sock", "./sub/fifo2", "./link-to-fifo"} & set(paths(m))
    assert "./sub/b.txt" in paths(m)


def test_hard_links_are_independent_files(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "root"
    write(root / "orig", "hard link content\n")
    os.link(root / "orig", root / "link")
    (root / "sub").mkdir()
    os.link(root / "orig", root / "sub" / "link2")
    m = api_manifest(root, backend)
    assert m.raw == reference.manifest_text(root)
    es = [entry(m, p) for p in ("./link", "./orig", "./sub/link2")]
    assert all(e.path_type == snapdir.PathType.File for e in es)
    assert {e.checksum for e in es} == {reference.blake3_hex(b"hard link content\n")}
    assert {e.size for e in es} == {18}
    stats = snapdir.manifest_size(m)
    assert (stats.files, stats.objects) == (3, 1)
    assert (stats.logical_bytes, stats.physical_bytes) == (54, 18)


# --- symlinks ---------------------------------------------------------------------------------


def test_symlink_to_file_records_target_content_size_and_mode(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "root"
    write(root / "target.txt", "the target\n", 0o600)
    (root / "link.txt").symlink_to("target.txt")
    outside = write(tmp_path / "outside.bin", b"\x00outside", 0o640)
    (root / "out").symlink_to(outside)
    m = api_manifest(root, backend)
    assert m.raw == reference.manifest_text(root)
    target = entry(m, "./target.txt")
    link = entry(m, "./link.txt")
    assert link.path_type == snapdir.PathType.File
    assert (link.permissions, link.checksum, link.size) == (
        0o600,
        reference.blake3_hex(b"the target\n"),
        11,
    )
    assert (link.permissions, link.checksum, link.size) == (
        target.permissions,
        target.checksum,
        target.size,
    )
    out = entry(m, "./out")
    assert (out.permissions, out.checksum, out.size) == (
        0o640,
        reference.blake3_hex(b"\x00outside"),
        8,
    )


def test_symlink_to_dir_records_target_tree(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "root"
    write(root / "d" / "x.txt", "x\n")
    write(root / "d" / "inner" / "y.txt", "yy\n", 0o755)
    os.chmod(root / "d", 0o750)
    (root / "ld").symlink_to("d")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("../d/inner")
    m = api_manifest(root, backend)
    assert m.raw == reference.manifest_text(root)
    d, ld = entry(m, "./d/"), entry(m, "./ld/")
    assert ld.path_type == snapdir.PathType.Directory
    assert (ld.permissions, ld.checksum, ld.size) == (0o750, d.checksum, d.size)
    assert (ld.permissions, ld.checksum, ld.size) == (d.permissions, d.checksum, d.size)
    assert entry(m, "./ld/inner/y.txt").permissions == 0o755
    assert entry(m, "./ld/x.txt").checksum == entry(m, "./d/x.txt").checksum
    up = entry(m, "./sub/up/")
    assert up.checksum == entry(m, "./d/inner/").checksum
    assert "./sub/up/y.txt" in paths(m)


def test_root_given_as_symlink_is_followed(tmp_path: Path, backend: str) -> None:
    root = basic_tree(tmp_path / "root")
    link = tmp_path / "root-link"
    link.symlink_to(root)
    assert api_manifest(link, backend).raw == api_manifest(root, backend).raw


@pytest.mark.parametrize(
    ("link", "target", "needle"),
    [
        ("d/back", "..", "back"),
        ("d/e/loop", "../../d", "loop"),
        ("self", ".", "self"),
    ],
)
def test_symlink_loop_is_an_error_naming_the_link(
    tmp_path: Path, backend: str, link: str, target: str, needle: str
) -> None:
    root = tmp_path / "root"
    write(root / "d" / "e" / "f.txt", "f\n")
    (root / link).symlink_to(target)
    with pytest.raises(snapdir.SnapdirError) as info:
        api_manifest(root, backend)
    assert needle in str(info.value)


def test_dangling_symlink_is_skipped_with_warning(tmp_path: Path, backend: str) -> None:
    root = basic_tree(tmp_path / "root")
    expected = reference.manifest_text(root)
    (root / "dangling-link").symlink_to("does-not-exist")
    (root / "sub" / "dangling-deep").symlink_to("/nonexistent/snapdir/target")
    assert issubclass(snapdir.SnapdirWarning, UserWarning)
    with pytest.warns(snapdir.SnapdirWarning) as record:
        m = api_manifest(root, backend)
    messages = " ".join(str(w.message) for w in record)
    assert "dangling-link" in messages
    assert "dangling-deep" in messages
    assert m.raw == expected


def test_no_follow_drops_all_symlinks(tmp_path: Path, backend: str) -> None:
    root = basic_tree(tmp_path / "root")
    expected = reference.manifest_text(root)
    (root / "lf").symlink_to("a.txt")
    (root / "ld").symlink_to("sub")
    (root / "dangling").symlink_to("nowhere")
    (root / "sub" / "loop").symlink_to("..")
    # no warning for the dangling link (pytest turns warnings into errors) and no loop error
    m = api_manifest(root, backend, no_follow=True)
    assert m.raw == expected
    assert m.raw == reference.manifest_text(root, no_follow=True)
    assert not {"./lf", "./ld/", "./dangling", "./sub/loop/"} & set(paths(m))
    assert api_id(root, backend, no_follow=True) == reference.snapshot_id(expected)


# --- exclude ----------------------------------------------------------------------------------


def exclude_tree(root: Path) -> Path:
    write(root / "a.log", "log\n")
    write(root / "keep.txt", "keep\n")
    write(root / "sub" / "b.log", "blog\n")
    write(root / "sub" / "c.txt", "c\n")
    write(root / "logs" / "x.txt", "x\n")
    (root / "emptydir").mkdir()
    os.chmod(root, 0o755)
    return root


def test_exclude_regex_search_on_relative_path(tmp_path: Path, backend: str) -> None:
    root = exclude_tree(tmp_path / "root")
    m = api_manifest(root, backend, exclude=[r"\.log$"])
    assert m.raw == reference.manifest_text(root, exclude=[r"\.log$"])
    assert paths(m) == [
        "./",
        "./emptydir/",
        "./keep.txt",
        "./logs/",
        "./logs/x.txt",
        "./sub/",
        "./sub/c.txt",
    ]
    # the root and sub/ checksums and sizes no longer count the excluded files
    assert entry(m, "./sub/").size == 2
    assert entry(m, "./").size == 5 + 2 + 2


def test_exclude_unanchored_pattern_matches_anywhere(tmp_path: Path, backend: str) -> None:
    root = exclude_tree(tmp_path / "root")
    m = api_manifest(root, backend, exclude=["ub"])
    assert m.raw == reference.manifest_text(root, exclude=["ub"])
    assert not [p for p in paths(m) if p.startswith("./sub")]
    assert "./logs/x.txt" in paths(m)


def test_exclude_multiple_patterns_any_matches(tmp_path: Path, backend: str) -> None:
    root = exclude_tree(tmp_path / "root")
    pats = [r"^\./keep\.txt$", r"^\./logs/$"]
    m = api_manifest(root, backend, exclude=pats)
    assert m.raw == reference.manifest_text(root, exclude=pats)
    assert not {"./keep.txt", "./logs/", "./logs/x.txt"} & set(paths(m))
    assert "./a.log" in paths(m)


def test_exclude_directories_carry_trailing_slash(tmp_path: Path, backend: str) -> None:
    root = exclude_tree(tmp_path / "root")
    write(root / "logs-file", "not a dir\n")
    m = api_manifest(root, backend, exclude=[r"/$"])
    assert paths(m) == ["./", "./a.log", "./keep.txt", "./logs-file"]
    assert m.raw == reference.manifest_text(root, exclude=[r"/$"])
    m2 = api_manifest(root, backend, exclude=[r"^\./logs/$"])
    assert "./logs-file" in paths(m2)
    assert "./logs/" not in paths(m2)
    m3 = api_manifest(root, backend, exclude=[r"^\./logs$"])  # no slash: matches no directory
    assert "./logs/" in paths(m3)
    assert "./logs/x.txt" in paths(m3)


def test_excluded_directory_is_not_descended(tmp_path: Path, backend: str) -> None:
    root = exclude_tree(tmp_path / "root")
    skip = root / "skip"
    skip.mkdir()
    write(skip / "bad\nname", "would be an error\n")
    (skip / "loop").symlink_to("..")
    (skip / "dangling").symlink_to("nowhere")  # would warn if visited
    m = api_manifest(root, backend, exclude=[r"^\./skip/$"])
    assert not [p for p in paths(m) if p.startswith("./skip")]
    shutil.rmtree(skip)
    assert m.raw == reference.manifest_text(root)


def test_root_is_never_excluded(tmp_path: Path, backend: str) -> None:
    root = exclude_tree(tmp_path / "root")
    full = reference.manifest_text(root)
    assert api_manifest(root, backend, exclude=[r"^\./$"]).raw == full
    only_root = api_manifest(root, backend, exclude=["."])
    assert only_root.raw == f"D 755 {reference.EMPTY_HASH} 0 ./"


def test_exclude_is_matched_against_relative_not_absolute_path(
    tmp_path: Path, backend: str
) -> None:
    root = exclude_tree(tmp_path / "skipme-root")
    full = reference.manifest_text(root)
    assert api_manifest(root, backend, exclude=["skipme"]).raw == full
    assert api_manifest(root, backend, exclude=[str(tmp_path)]).raw == full
    # absolute output still matches patterns against the ./-relative path
    m = api_manifest(root, backend, absolute=True, exclude=[r"^\./a\.log$", "skipme"])
    assert m.raw == reference.manifest_text(root, absolute=True, exclude=[r"^\./a\.log$"])
    assert str(root.resolve()) + "/a.log" not in paths(m)


def test_invalid_exclude_regex_is_an_error(tmp_path: Path, backend: str) -> None:
    root = exclude_tree(tmp_path / "root")
    with pytest.raises(snapdir.SnapdirError) as info:
        api_manifest(root, backend, exclude=["(unclosed"])
    assert "(unclosed" in str(info.value)


# --- absolute -----------------------------------------------------------------------------------


def test_absolute_paths_use_the_real_absolute_root(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = basic_tree(tmp_path / "real")
    link = tmp_path / "via-link"
    link.symlink_to(real)
    monkeypatch.chdir(tmp_path)
    base = str(real.resolve())
    args: list[str | Path] = ["real", "./real/", "via-link", str(link), real, Path("via-link")]
    for arg in args:
        m = api_manifest(arg, backend, absolute=True)
        ps = paths(m)
        assert ps[0] == base + "/"
        assert base + "/a.txt" in ps
        assert base + "/sub/" in ps
        assert base + "/sub/deeper/c.txt" in ps
        assert all(p.startswith(base + "/") for p in ps)
        assert m.raw == reference.manifest_text(real, absolute=True)
        rel = api_manifest(arg, backend)
        assert m.raw == rel.raw.replace(" ./", f" {base}/")
        assert api_id(arg, backend, absolute=True) == reference.snapshot_id(m.raw)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "escaped"),
    [("bad\nname", "bad\\nname"), ("bad\rname", "bad\\rname"), ("x\r\ny", "x\\r\\ny")],
)
def test_name_with_newline_is_an_error_naming_the_escaped_path(
    tmp_path: Path, backend: str, name: str, escaped: str
) -> None:
    root = basic_tree(tmp_path / "root")
    write(root / "sub" / name, "content\n")
    with pytest.raises(snapdir.SnapdirError) as info:
        api_manifest(root, backend)
    message = str(info.value)
    assert escaped in message
    assert "sub" in message
    with pytest.raises(snapdir.SnapdirError):
        api_id(root, backend)


def test_directory_name_with_newline_is_an_error(tmp_path: Path, backend: str) -> None:
    root = basic_tree(tmp_path / "root")
    (root / "dir\nname").mkdir()
    with pytest.raises(snapdir.SnapdirError) as info:
        api_manifest(root, backend)
    assert "dir\\nname" in str(info.value)


def test_invalid_utf8_name_is_an_error_naming_the_escaped_path(
    tmp_path: Path, backend: str
) -> None:
    root = basic_tree(tmp_path / "root")
    fd = os.open(os.path.join(os.fsencode(root), b"bad\xffname"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    with pytest.raises(snapdir.SnapdirError) as info:
        api_manifest(root, backend)
    message = str(info.value).lower()
    assert "bad\\xffname" in message or "bad\\udcffname" in message, message


@pytest.mark.parametrize(
    ("raw_name", "pattern"),
    [
        (b"bad\nname", r"^\./sub/bad\nname$"),
        (b"bad\rname", "bad\rname"),
        (b"bad\xffname", "^\\./sub/bad\ufffdname$"),
        (b"bad\xffname", r"^\./sub/$"),
    ],
)
def test_unrepresentable_names_can_be_excluded(
    tmp_path: Path, backend: str, raw_name: bytes, pattern: str
) -> None:
    root = basic_tree(tmp_path / "root")
    fd = os.open(os.path.join(os.fsencode(root), b"sub", raw_name), os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    m = api_manifest(root, backend, exclude=[pattern])
    os.remove(os.path.join(os.fsencode(root), b"sub", raw_name))
    assert m.raw == reference.manifest_text(root, exclude=[pattern])


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="needs Linux /proc")
def test_file_whose_content_disagrees_with_its_size_is_in_flux(
    tmp_path: Path, backend: str
) -> None:
    # /proc/version is a regular file whose stat size (0) is not the number of bytes it reads:
    # a manifest pairing its checksum with size 0 would be silently wrong (SPEC §3).
    root = basic_tree(tmp_path / "root")
    (root / "sub" / "procfile").symlink_to("/proc/version")
    with pytest.raises(snapdir.InFluxError) as info:
        api_manifest(root, backend)
    assert info.value.code == "IN_FLUX"
    assert "procfile" in str(info.value)


def test_missing_root_is_not_found(tmp_path: Path, backend: str) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(snapdir.NotFoundError) as info:
        api_manifest(missing, backend)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert isinstance(err, snapdir.SnapdirError)
    assert err.code == "NOT_FOUND"
    assert str(missing) in str(err)
    with pytest.raises(FileNotFoundError) as info2:
        api_id(missing, backend)
    assert str(missing) in str(info2.value)


def test_root_that_is_a_file_is_an_error(tmp_path: Path, backend: str) -> None:
    f = write(tmp_path / "plain-file.txt", "x\n")
    with pytest.raises(snapdir.SnapdirError) as info:
        api_manifest(f, backend)
    assert isinstance(info.value, ValueError)
    assert str(f) in str(info.value)


_UNREADABLE_SCRIPT = r"""
import json, os, sys
import anyio
import snapdir

root, secret = sys.argv[1], sys.argv[2]

async def main():
    return await snapdir.manifest(root)

out = {}
if os.geteuid() == 0:
    # Warm up as root (the interpreter's own files may be unreadable to nobody, and the walk
    # imports lazily), then drop to nobody for the real walk.
    out["as_root"] = anyio.run(main).raw
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    open(secret, "rb").close()
    out["precondition"] = False
except PermissionError:
    out["precondition"] = True
try:
    m = anyio.run(main)
except snapdir.SnapdirError as e:
    out.update(kind="SnapdirError", cls=type(e).__name__, code=e.code, message=str(e))
except BaseException as e:
    out.update(kind="other", cls=type(e).__name__, message=str(e))
else:
    out.update(kind="ok", raw=m.raw)
print(json.dumps(out))
"""


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory that an unprivileged user can traverse (tmp_path is 0700 for root)."""
    base = Path(tempfile.mkdtemp(prefix="snapdir-unreadable-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        make_writable(base)
        shutil.rmtree(base)


def test_unreadable_file_is_an_error_naming_it(world_readable_dir: Path) -> None:
    root = world_readable_dir / "root"
    write(root / "ok.txt", "ok\n")
    secret = write(root / "sub" / "secret.bin", "secret\n", 0o000)
    os.chmod(root / "sub", 0o755)
    os.chmod(root, 0o755)
    proc = subprocess.run(
        [sys.executable, "-c", _UNREADABLE_SCRIPT, str(root), str(secret)],
        capture_output=True,
        text=True,
        cwd=world_readable_dir,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["precondition"], "the walker process could still read the file"
    assert out["kind"] == "SnapdirError", out
    assert "secret.bin" in out["message"], out


_TRUNCATION_LOOP = r"""
import asyncio, json, sys
import snapdir
root, rounds = sys.argv[1], int(sys.argv[2])
out = []
for _ in range(rounds):
    try:
        out.append(["id", asyncio.run(snapdir.id(root, use_cache=False))])
    except snapdir.InFluxError as e:
        out.append(["in-flux", str(e)])
print(json.dumps(out))
"""


def test_large_file_truncated_while_hashed_is_in_flux_never_a_crash(tmp_path: Path) -> None:
    # Large files are hashed through a memory mapping; a file truncated while it is mapped
    # would kill the process with SIGBUS if the fault were not caught (rust/.../mapped.rs).
    # A child process hashes the tree over and over while this thread keeps truncating and
    # re-extending the file: every round must give one of the two stable ids or an
    # InFluxError, and the child must end normally.
    import threading

    size, short = 32 << 20, 5000
    root = tmp_path / "root"
    root.mkdir()
    big = root / "big.bin"
    with open(big, "wb") as f:
        f.truncate(size)  # zeros: truncating then extending restores the same content
    full_id = api_id(root)
    os.truncate(big, short)
    short_id = api_id(root)
    os.truncate(big, size)

    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            os.truncate(big, short)
            os.truncate(big, size)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TRUNCATION_LOOP, str(root), "60"],
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        stop.set()
        churner.join()
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    results = json.loads(proc.stdout)
    assert len(results) == 60
    for kind, value in results:
        if kind == "id":
            assert value in (full_id, short_id)
        else:
            assert "big.bin" in value, value
