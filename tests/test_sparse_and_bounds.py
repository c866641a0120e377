"""Sparse files stay sparse, manifests from stores are bounded, size sums are exact.

* Sparse files: a file of holes is hashed without reading its holes, stored sparse in a
  ``file://`` store and in the local cache, and pulled sparse, from the ``file://`` store
  (holes found with ``SEEK_DATA``/``SEEK_HOLE``) and from the cloud stores (all-zero blocks
  of the download left as holes). Checked with ``st_blocks`` on ext4 (the test's temporary
  directory) and on a private tmpfs, byte for byte against the source.
* Manifest cap: a manifest read from any store (file, S3, GCS, B2, against the loopback
  servers) past ``SNAPDIR_MAX_MANIFEST_BYTES`` (or the store's ``max_manifest_bytes``) is
  refused with ``INVALID_MANIFEST`` naming the store and the limit, while it streams.
* Sizes: sums of entries claiming exabytes are reported exactly (past 64 bits), never
  saturated.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
from snapdir import InvalidArgumentError
from snapdir._snapdir import Hasher, blake3_hex, manifest_size, write_at_sparse
from snapdir.stores import Store, open_store
from snapdir.stores import _streams as streams
from snapdir.stores._base import DEFAULT_MAX_MANIFEST_BYTES, MAX_MANIFEST_ENV
from storeutil import cli_env, dline, object_rel, run_cli, text_id, tmpfs
from storeutil_cloud import fresh_store_uri

MiB = 1024 * 1024
EMPTY = blake3_hex(b"")


def run(fn: Any, *args: Any, **kw: Any) -> Any:
    async def main() -> Any:
        return await fn(*args, **kw)

    return anyio.run(main)


def allocated(path: Path) -> int:
    """Bytes the file occupies on disk."""
    return os.stat(path).st_blocks * 512


def sparse_file(path: Path, size: int, data: dict[int, bytes]) -> Path:
    """A file of ``size`` bytes that is holes except for ``data`` (offset -> bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
        for at, b in data.items():
            f.seek(at)
            f.write(b)
    return path


def data_ranges(path: Path) -> list[tuple[int, int]]:
    """The data extents of a file (``SEEK_DATA``/``SEEK_HOLE``): outside them it reads as
    zeros."""
    out: list[tuple[int, int]] = []
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            off = end
    finally:
        os.close(fd)
    return out


def _read_range(f: Any, start: int, end: int) -> Iterator[bytes]:
    f.seek(start)
    while start < end:
        chunk = f.read(min(4 * MiB, end - start))
        assert chunk, "file shorter than its extents"
        start += len(chunk)
        yield chunk


_ZEROS = bytes(4 * MiB)


def file_digest(path: Path) -> str:
    """BLAKE3 of the file's bytes: its data extents as read, its holes as zeros (reading a
    few hundred MiB of holes through Python in every check would only cost time)."""
    h = Hasher()
    pos, size = 0, os.path.getsize(path)
    with open(path, "rb") as f:
        for start, end in [*data_ranges(path), (size, size)]:
            while pos < start:
                n = min(len(_ZEROS), start - pos)
                h.update(_ZEROS[:n])
                pos += n
            for chunk in _read_range(f, start, end):
                h.update(chunk)
            pos = max(pos, end)
    return h.hexdigest()


def same_bytes(a: Path, b: Path) -> bool:
    """Byte-for-byte equality, reading only where either file has data (elsewhere both
    are holes, which read as zeros)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    merged: list[list[int]] = []
    for start, end in sorted(data_ranges(a) + data_ranges(b)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in merged:
            for x, y in zip(_read_range(fa, start, end), _read_range(fb, start, end), strict=True):
                if x != y:
                    return False
    return True


def keeps_holes(d: Path) -> bool:
    probe = sparse_file(d / ".probe", 64 * MiB, {})
    ok = allocated(probe) < MiB
    probe.unlink()
    return ok


#: A few hundred MiB of holes with data at the start, in the middle (straddling a 4 KiB
#: boundary), near the end, and a last byte (so the file does not end in a hole) — and one
#: that does end in a hole.
SIZE = 300 * MiB
DATA = {0: b"head" * 1000, 123 * MiB + 4000: os.urandom(9000), SIZE - 5: b"tail!"}


@pytest.fixture(params=["ext4", "tmpfs"])
def fs_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A directory on the test's own file system (ext4 here) or on a private tmpfs."""
    if request.param == "tmpfs":
        with tmpfs(tmp_path / "mnt", "1500m") as d:
            yield d
    else:
        yield tmp_path / "disk"


def _tree(root: Path) -> Path:
    tree = root / "tree"
    sparse_file(tree / "disk.img", SIZE, DATA)
    sparse_file(tree / "sub" / "ends-in-hole.img", 40 * MiB, {MiB: b"x" * 100})
    (tree / "small.txt").write_bytes(b"not sparse at all\n")
    return tree


def _assert_sparse_copy(copy: Path, source: Path) -> None:
    assert os.path.getsize(copy) == os.path.getsize(source)
    assert same_bytes(copy, source), f"{copy} differs from {source}"
    # The data blocks and a little slack, never the size of the holes.
    assert allocated(copy) <= 2 * MiB, f"{copy}: {allocated(copy)} bytes allocated"


def test_sparse_files_are_hashed_stored_and_pulled_sparse(fs_dir: Path) -> None:
    fs_dir.mkdir(parents=True, exist_ok=True)
    assert keeps_holes(fs_dir)
    tree = _tree(fs_dir)
    store = fs_dir / "store"
    uri = f"file://{store}"
    sid = run(snapdir.push, tree, uri)
    m = run(snapdir.manifest, tree)
    assert m.id == sid
    by_path = {e.path: e for e in m.entries}
    # file_digest and same_bytes read only data extents; checked once against a plain read.
    small = tree / "sub" / "ends-in-hole.img"
    assert file_digest(small) == blake3_hex(small.read_bytes())
    assert same_bytes(small, small)
    for rel in ("disk.img", "sub/ends-in-hole.img"):
        entry = by_path[f"./{rel}"]
        # The id is the id of the bytes: holes hashed as the zeros they read as.
        assert entry.checksum == file_digest(tree / rel)
        _assert_sparse_copy(store / object_rel(entry.checksum), tree / rel)
    out = fs_dir / "out"
    run(snapdir.pull, sid, uri, out)
    for rel in ("disk.img", "sub/ends-in-hole.img"):
        _assert_sparse_copy(out / rel, tree / rel)
    assert (out / "small.txt").read_bytes() == b"not sparse at all\n"
    # A pull over the right files rewrites nothing and reads through the holes quickly.
    again = fs_dir / "again"
    run(snapdir.pull, sid, uri, again)
    _assert_sparse_copy(again / "disk.img", tree / "disk.img")


def test_objects_copied_after_the_walk_and_through_the_cache_stay_sparse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files the stat cache vouched for are copied into a second store after the walk
    (``put_objects``), a snapshot is staged into the local cache, fetched and checked out
    from it, and copied between ``file://`` stores: every copy keeps the holes."""
    tree = _tree(tmp_path)
    old = 1_600_000_000  # older than the racy-timestamp margin: the cache vouches for them
    for p in tree.rglob("*"):
        os.utime(p, (old, old))
    first, second = tmp_path / "first", tmp_path / "second"
    sid = run(snapdir.push, tree, f"file://{first}")
    assert run(snapdir.push, tree, f"file://{second}") == sid
    m = run(snapdir.manifest, tree)
    disk = next(e for e in m.entries if e.path == "./disk.img")
    _assert_sparse_copy(second / object_rel(disk.checksum), tree / "disk.img")
    # The local cache (a file:// store of its own): stage, checkout, sync.
    cache = Path(os.environ["SNAPDIR_CACHE_DIR"])
    assert run(snapdir.stage, tree) == sid
    _assert_sparse_copy(cache / object_rel(disk.checksum), tree / "disk.img")
    run(snapdir.checkout, sid, tmp_path / "co")
    _assert_sparse_copy(tmp_path / "co" / "disk.img", tree / "disk.img")
    # A hard-linked checkout shares the cache's (sparse) object, verified without reading
    # its holes.
    run(snapdir.checkout, sid, tmp_path / "hl", link="hardlink")
    _assert_sparse_copy(tmp_path / "hl" / "disk.img", tree / "disk.img")
    assert (
        os.stat(tmp_path / "hl" / "disk.img").st_ino
        == os.stat(cache / object_rel(disk.checksum)).st_ino
    )
    run(snapdir.sync, sid, f"file://{first}", f"file://{tmp_path / 'third'}")
    _assert_sparse_copy(tmp_path / "third" / object_rel(disk.checksum), tree / "disk.img")


def test_zero_blocks_written_out_become_holes_in_the_store(tmp_path: Path) -> None:
    """A file whose zeros were written (not holes) is stored sparse too: the copy leaves
    every all-zero 4 KiB block unwritten."""
    tree = tmp_path / "tree"
    tree.mkdir()
    dense = tree / "dense-zeros.bin"
    with open(dense, "wb") as f:
        f.write(b"\0" * (64 * MiB))
        f.write(b"data" * 1024)
        f.write(b"\0" * (8 * MiB + 3))
    assert allocated(dense) >= 64 * MiB
    store = tmp_path / "store"
    sid = run(snapdir.push, tree, f"file://{store}")
    obj = store / object_rel(file_digest(dense))
    _assert_sparse_copy(obj, dense)
    run(snapdir.pull, sid, f"file://{store}", tmp_path / "out")
    _assert_sparse_copy(tmp_path / "out" / "dense-zeros.bin", dense)


def test_the_extent_wise_checks_see_one_byte_in_a_hole(tmp_path: Path) -> None:
    a = sparse_file(tmp_path / "a", 20 * MiB, {5: b"x"})
    b = sparse_file(tmp_path / "b", 20 * MiB, {5: b"x"})
    c = sparse_file(tmp_path / "c", 20 * MiB, {5: b"x", 17 * MiB + 3: b"\1"})
    assert same_bytes(a, b)
    assert file_digest(a) == file_digest(b) == blake3_hex(a.read_bytes())
    assert not same_bytes(a, c)
    assert not same_bytes(c, a)
    assert file_digest(c) == blake3_hex(c.read_bytes()) != file_digest(a)


def test_download_sink_leaves_zero_blocks_as_holes_and_sets_the_length(tmp_path: Path) -> None:
    dest = tmp_path / "download"
    sink = streams.DownloadSink(str(dest))
    want = bytearray()
    # Odd chunk sizes (as SDKs hand them over), data across block boundaries, and a stream
    # that ends in zeros (only the final length says where it ends).
    pieces = [b"\0" * 70_001, b"abc", b"\0" * (5 * MiB), os.urandom(10_000), b"\0" * (3 * MiB)]
    for piece in pieces:
        for k in range(0, len(piece), 65_536):
            sink.write(piece[k : k + 65_536])
        want += piece
    sink.close()
    assert dest.read_bytes() == bytes(want)
    assert sink.hexdigest() == blake3_hex(bytes(want))
    assert allocated(dest) <= 256 * 1024, allocated(dest)


def test_write_at_sparse_reports_a_bad_descriptor_and_writes_data_where_asked(
    tmp_path: Path,
) -> None:
    with pytest.raises(OSError, match="Bad file descriptor"):
        write_at_sparse(10_000, 0, b"x" * 10)
    p = tmp_path / "f"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_at_sparse(fd, 8192, b"\0" * 4096 + b"hello")
        os.ftruncate(fd, 8192 + 4096 + 5)
    finally:
        os.close(fd)
    assert p.read_bytes() == b"\0" * (8192 + 4096) + b"hello"


# --- cloud stores -------------------------------------------------------------------------


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _cloud_uri(scheme: str, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch) -> str:
    return fresh_store_uri(scheme, request, mp, "snapdir-sparse")


@pytest.fixture(params=["s3", "gs", "b2"])
def cloud_uri(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return _cloud_uri(str(request.param), request, monkeypatch)


@pytest.fixture(params=["file", "s3", "gs", "b2"])
def any_uri(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return _cloud_uri(str(request.param), request, monkeypatch)


def test_objects_downloaded_from_cloud_stores_are_written_sparse(
    cloud_uri: str, tmp_path: Path
) -> None:
    """The bytes of a cloud object are dense on the wire; the pulled file and the cached
    object are sparse again (every all-zero block of the download left as a hole)."""
    tree = tmp_path / "tree"
    img = sparse_file(tree / "disk.img", 24 * MiB, {0: b"boot", 9 * MiB + 1: b"x" * 5000})
    sparse_file(tree / "tail-hole.img", 3 * MiB, {100: b"y"})
    sid = run(snapdir.push, tree, cloud_uri)
    run(snapdir.pull, sid, cloud_uri, tmp_path / "out")
    _assert_sparse_copy(tmp_path / "out" / "disk.img", img)
    _assert_sparse_copy(tmp_path / "out" / "tail-hole.img", tree / "tail-hole.img")
    run(snapdir.fetch, sid, cloud_uri)
    cache = Path(os.environ["SNAPDIR_CACHE_DIR"])
    _assert_sparse_copy(cache / object_rel(file_digest(img)), img)


# --- the manifest cap -----------------------------------------------------------------------


def _big_manifest(entries: int) -> str:
    """A well-formed manifest of ``entries`` empty files (~100 bytes a line)."""
    lines = [dline("./")]
    lines += [f"F 644 {EMPTY} 0 ./file-{i:08d}-{'p' * 20}" for i in range(entries)]
    return "\n".join(lines)


def test_a_manifest_past_the_cap_is_refused_while_it_streams(
    any_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = _big_manifest(30_000)  # ~2.8 MiB
    size = len(text) + 1
    sid = text_id(text)

    async def put() -> None:
        store = open_store(any_uri)
        try:
            await store.put_manifest(sid, text)
        finally:
            await store.aclose()

    anyio.run(put)

    def get(**attrs: Any) -> Any:
        async def main() -> Any:
            store: Store = open_store(any_uri)
            for k, v in attrs.items():
                setattr(store, k, v)
            try:
                return await store.get_manifest(sid)
            finally:
                await store.aclose()

        return anyio.run(main)

    # Under the default cap it reads as it is.
    assert size < DEFAULT_MAX_MANIFEST_BYTES
    assert len(get()) == 30_001
    # Count the bytes the cloud stores take in: refused as soon as the stream passes the
    # cap, not after reading the whole manifest.
    taken: list[int] = []
    real_write = streams.DownloadSink.write

    def counting(self: streams.DownloadSink, data: bytes) -> int:
        taken.append(len(data))
        return real_write(self, data)

    monkeypatch.setattr(streams.DownloadSink, "write", counting)
    limit = 64 * 1024
    monkeypatch.setenv(MAX_MANIFEST_ENV, str(limit))
    with pytest.raises(InvalidArgumentError) as err:
        get()
    assert err.value.code == "INVALID_MANIFEST"
    msg = str(err.value)
    assert f"over the limit of {limit} bytes" in msg
    assert sid in msg
    assert MAX_MANIFEST_ENV in msg
    assert any_uri.split("://", 1)[1].split("/")[0] in msg, msg
    if not any_uri.startswith("file://"):
        assert 0 < sum(taken) < size, (sum(taken), size)
    # The store's own option wins over the environment, both ways.
    assert len(get(max_manifest_bytes=size)) == 30_001
    with pytest.raises(InvalidArgumentError):
        get(max_manifest_bytes=size - 1)
    monkeypatch.delenv(MAX_MANIFEST_ENV)
    with pytest.raises(InvalidArgumentError, match="over the limit"):
        get(max_manifest_bytes=size - 1)
    # A pull stops there, before the destination is touched.
    monkeypatch.setenv(MAX_MANIFEST_ENV, str(limit))
    with pytest.raises(InvalidArgumentError):
        run(snapdir.pull, sid, any_uri, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_bad_cap_setting_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    text = _big_manifest(3)
    sid = text_id(text)
    run(open_store(f"file://{store}").put_manifest, sid, text)
    for bad in ("lots", "0", "-5", "1e9"):
        monkeypatch.setenv(MAX_MANIFEST_ENV, bad)
        with pytest.raises(InvalidArgumentError, match=MAX_MANIFEST_ENV):
            run(open_store(f"file://{store}").get_manifest, sid)
    monkeypatch.delenv(MAX_MANIFEST_ENV)
    s = open_store(f"file://{store}")
    s.max_manifest_bytes = 0  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgumentError, match="max_manifest_bytes"):
        run(s.get_manifest, sid)
    # Through the CLI: a clear message naming the snapshot, its size and the limit.
    proc = run_cli(
        "size", "--id", sid, "--store", f"file://{store}",
        env=cli_env(**{MAX_MANIFEST_ENV: "100"}),
    )  # fmt: skip
    assert proc.returncode != 0
    size = len(text) + 1
    assert f"{sid} in file://{store}" in proc.stderr
    assert f"is {size} bytes, over the limit of 100 bytes" in proc.stderr


# --- sums past 64 bits --------------------------------------------------------------------


def test_size_sums_past_64_bits_are_exact(tmp_path: Path) -> None:
    big = 2**64 - 1  # the largest size a manifest line can hold
    a, b, c = (blake3_hex(x) for x in (b"a", b"b", b"c"))
    text = "\n".join(
        [
            dline("./"),
            f"F 644 {a} {big} ./a.img",
            f"F 644 {b} {big} ./b.img",
            f"F 644 {c} {big} ./c.img",
            f"F 644 {a} {big} ./copy-of-a.img",
        ]
    )
    m = snapdir.Manifest.parse(text)
    assert manifest_size(m) == (4 * big, 3 * big, 4, 3)
    stats = snapdir.manifest_size(m)
    assert (stats.logical_bytes, stats.physical_bytes) == (4 * big, 3 * big)
    # A store's size (summed over snapshots), through the API and the CLI's JSON.
    store = tmp_path / "store"
    sid = text_id(text)
    run(open_store(f"file://{store}").put_manifest, sid, text)
    s = run(snapdir.size, f"file://{store}", sid)
    assert (s.logical_bytes, s.physical_bytes, s.files, s.objects) == (4 * big, 3 * big, 4, 3)
    proc = run_cli("size", "--id", sid, "--store", f"file://{store}", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["logical_bytes"] == 4 * big
    assert out["physical_bytes"] == 3 * big

    # The totals a progress reporter is told before a transfer: exact too (the objects are
    # not there, so the transfers then fail, naming one).
    class Totals:
        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def __call__(self, files: int, nbytes: int) -> None:
            pass

        def total(self, files: int, nbytes: int) -> None:
            self.seen.append((files, nbytes))

    t = Totals()
    with pytest.raises(snapdir.NotFoundError):
        run(snapdir.sync, sid, f"file://{store}", f"file://{tmp_path / 'other'}", progress=t)
    assert t.seen == [(3, 3 * big)]
    t = Totals()
    with pytest.raises(snapdir.NotFoundError):
        run(snapdir.pull, sid, f"file://{store}", tmp_path / "dest", progress=t)
    assert t.seen == [(3, 3 * big)]
    # A size that does not fit in 64 bits at all is refused by the parser, by name.
    with pytest.raises(InvalidArgumentError, match="64 bits"):
        snapdir.Manifest.parse(f"{dline('./')}\nF 644 {a} {2**64} ./huge")
