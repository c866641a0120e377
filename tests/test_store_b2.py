"""The b2:// store against b2sdk's RawSimulator served over real HTTP on loopback.

The conformance suite (:mod:`snapdir.testing`) runs three times: the bare ``B2Store``
(credentials and realm from ``B2_APPLICATION_KEY_ID`` / ``B2_APPLICATION_KEY`` /
``SNAPDIR_B2_REALM``, as a user would set them), the store as the operations use it
(``wrap``: retries inside one concurrency limit), and that wrapped store behind a
fault-injecting proxy. Then the B2-specific behaviour: large files in parallel parts, a source
changing mid-upload (the large file is cancelled, nothing unfinished is left), a 429 on an
upload (which b2sdk does not retry) reaching the retry wrapper with its Retry-After, resumed
downloads, repair of a damaged object, request counts and credentials errors.

The simulator runs once for this module with B2's minimum part size lowered (100 kB instead
of 5 MB) so that multi-part large files stay small. If it cannot start the tests are skipped,
unless ``SNAPDIR_TEST_NO_SKIP=1`` (CI), where they fail.
"""

from __future__ import annotations

import io
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from servers.b2sim import B2Server, start_b2_simulator
from servers.faultproxy import FaultKind, FaultProxy, start_fault_proxy
from snapdir import HashMismatchError, InFluxError, NotFoundError, StoreError
from snapdir._snapdir import Manifest, blake3_hex
from snapdir.stores import Capability, ObjectPut, Store, manifest_key, object_key, open_store
from snapdir.stores._base import TransientStoreError
from snapdir.stores._wrappers import RetryingStore, RetryPolicy, unwrap, wrap
from snapdir.stores.b2 import KEY_ENV, KEY_ID_ENV, REALM_ENV, B2Store, _UploadBody
from snapdir.testing import StoreConformance
from storeutil_cloud import (
    NO_SKIP,
    Recorder,
    alpha_beta_tree,
    check_repair_of_same_size_damage,
    close_store,
    random_bytes,
    stray_keys,
    uid,
)

KiB = 1024
MiB = 1024 * KiB
# b2sdk keeps a requests session per worker thread and never closes the sessions of threads
# that are gone (the concurrent large uploads use several); their sockets are closed by the
# garbage collector with a ResourceWarning, on a busy machine sometimes during this module.
# That is the client library's leak, not a failure of the store: ignore exactly that.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning",
    "ignore:unclosed <socket.socket:ResourceWarning",
)

MIN_PART = 100_000  # the simulator's (lowered) absolute minimum part size
THRESHOLD = 512 * KiB
PART = 256 * KiB
LARGE = MiB + 300 * KiB + 7  # six parts, the last one short


@pytest.fixture(scope="module")
def b2_server() -> Iterator[B2Server]:
    """The B2 simulator for this module (a thread of this process), stopped at the end."""
    try:
        server = start_b2_simulator(
            bucket_name=f"snapdir-b2-{uid()}",
            min_part_size=MIN_PART,
            recommended_part_size=2 * MIN_PART,
        )
    except Exception as e:
        message = f"the B2 simulator could not start: {type(e).__name__}: {e}"
        if NO_SKIP:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def raw(b2_server: B2Server) -> Any:
    """A plain b2sdk bucket for the hooks: reads and plants keys around the store."""
    return b2_server.api().get_bucket_by_name(b2_server.bucket_name)


@pytest.fixture(autouse=True)
def _b2_env(monkeypatch: pytest.MonkeyPatch, b2_server: B2Server) -> None:
    monkeypatch.setenv(KEY_ID_ENV, b2_server.key_id)
    monkeypatch.setenv(KEY_ENV, b2_server.app_key)
    monkeypatch.setenv(REALM_ENV, b2_server.realm_url)


def _new_proxy(b2_server: B2Server, **kwargs: Any) -> FaultProxy:
    kwargs.setdefault("flavor", "b2")
    kwargs.setdefault("seed", 7)
    kwargs.setdefault("rate", 0.0)
    return start_fault_proxy(b2_server.realm_url, **kwargs)


def _names(raw: Any, prefix: str) -> set[str]:
    """Every name under ``prefix``: all versions, and unfinished large files too."""
    names = {fv.file_name for fv, _ in raw.ls(prefix, latest_only=False, recursive=True)}
    names |= {f.file_name for f in raw.list_unfinished_large_files(prefix=prefix)}
    return names


def _unfinished(raw: Any, prefix: str) -> list[Any]:
    return list(raw.list_unfinished_large_files(prefix=prefix))


def _versions(raw: Any, key: str) -> list[Any]:
    return [fv for fv in raw.list_file_versions(key) if fv.action == "upload"]


def _read(raw: Any, key: str) -> bytes:
    out = io.BytesIO()
    raw.download_file_by_name(key).save(out)
    return out.getvalue()


def _store(b2_server: B2Server, **kwargs: Any) -> tuple[B2Store, str]:
    parent = f"t-{uid()}"
    kwargs.setdefault("large_file_threshold", THRESHOLD)
    kwargs.setdefault("part_size", PART)
    return B2Store(f"b2://{b2_server.bucket_name}/{parent}/store", **kwargs), parent


def _via(store: B2Store, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> B2Store:
    monkeypatch.setenv(REALM_ENV, proxy.url)
    return store


def _recorder(store: B2Store) -> Recorder:
    """Records every request the store's HTTP session sends."""
    store._session()
    return Recorder(store._api.session.raw_api.b2_http.session)


# -------------------------------------------------------------------------------------------
# The conformance suite
# -------------------------------------------------------------------------------------------


class _B2Hooks(StoreConformance):
    """Hooks shared by the B2 runs: each test gets a fresh prefix ``t-<uid>/store`` in the
    module's bucket, and ``raw_keys`` lists all of ``t-<uid>/`` (every version, and
    unfinished large files, so an upload left half-done would show)."""

    large_object_size = LARGE
    raw_bucket: Any
    parent: str

    def _fresh(self, raw: Any, b2_server: B2Server) -> str:
        self.raw_bucket = raw
        self.parent = f"t-{uid()}"
        return f"b2://{b2_server.bucket_name}/{self.parent}/store"

    def raw_keys(self, store: Store) -> set[str]:
        return _names(self.raw_bucket, self.parent + "/")

    def read_raw(self, store: Store, key: str) -> bytes:
        return _read(self.raw_bucket, key)

    def corrupt(self, store: Store, checksum: str, data: bytes) -> None:
        self.raw_bucket.upload_bytes(data, self.key_root(store) + object_key(checksum))

    def write_raw_manifest(self, store: Store, snapshot_id: str, data: bytes) -> None:
        self.raw_bucket.upload_bytes(data, self.key_root(store) + manifest_key(snapshot_id))


class TestB2Store(_B2Hooks):
    """The bare store; credentials and realm from the environment."""

    @pytest.fixture
    def store(self, raw: Any, b2_server: B2Server) -> Iterator[Store]:
        s = B2Store(self._fresh(raw, b2_server), large_file_threshold=THRESHOLD, part_size=PART)
        yield s
        close_store(s)


class TestB2StoreWrapped(_B2Hooks):
    """The store as the operations use it: ``wrap`` (retries inside one limit)."""

    @pytest.fixture
    def store(self, raw: Any, b2_server: B2Server) -> Iterator[Store]:
        inner = B2Store(self._fresh(raw, b2_server), large_file_threshold=THRESHOLD, part_size=PART)
        s = wrap(inner, jobs=6)
        yield s
        close_store(s)


class TestB2StoreThroughFaults(_B2Hooks):
    """The wrapped store behind a proxy that fails ~10% of requests (5xx, 429, resets of
    the request or the response, lost responses): b2sdk's own retries, the store's resumed
    downloads and existence checks, and RetryingStore must absorb every one."""

    @pytest.fixture
    def store(
        self, raw: Any, b2_server: B2Server, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[Store]:
        p = _new_proxy(
            b2_server,
            rate=0.1,
            kinds=["503", "500", "429", "reset_request", "reset_response", "lost_response"],
            seed=random.randrange(1 << 30),
            retry_after="0",
        )
        monkeypatch.setenv(REALM_ENV, p.url)
        inner = B2Store(self._fresh(raw, b2_server), large_file_threshold=THRESHOLD, part_size=PART)
        s = wrap(inner, jobs=6, retry=RetryPolicy(base_delay=0.01, max_delay=0.1, max_elapsed=60))
        try:
            yield s
        finally:
            close_store(s)
            p.stop()


# -------------------------------------------------------------------------------------------
# Opening and configuration
# -------------------------------------------------------------------------------------------


def test_open_store_builds_a_b2_store() -> None:
    store = open_store("b2://some-bucket/a/b/")
    assert isinstance(store, B2Store)
    assert store.uri == "b2://some-bucket/a/b"
    assert store.request_count() == 0  # nothing sent on open
    # B2 has no conditional create: its create-only writes are the versions fallback
    assert store.capabilities == Capability.LIST_OBJECTS | Capability.KEYS


def test_part_size_respects_the_minimum_and_the_part_limit(b2_server: B2Server) -> None:
    store, _ = _store(b2_server, part_size=1000)
    try:
        anyio.run(store.list_manifests)  # authorise: the account's minimum is known then
        assert store._part_size_for(10 * MiB) == MIN_PART
        huge = 200 * 1024 * MiB * 1024  # 200 TiB
        assert math.ceil(huge / store._part_size_for(huge)) <= 10_000
    finally:
        close_store(store)


# -------------------------------------------------------------------------------------------
# Uploads
# -------------------------------------------------------------------------------------------


def test_small_object_costs(b2_server: B2Server, tmp_path: Path) -> None:
    """A new small object: HEAD (absent), then one upload (and, once per thread, an upload
    URL). Putting it again: HEAD and a GET that confirms it, no upload."""
    store, _ = _store(b2_server)
    data = random_bytes(THRESHOLD, 1)  # at the threshold: still a single request
    (tmp_path / "src").write_bytes(data)
    checksum = blake3_hex(data)
    try:
        anyio.run(store.list_manifests)  # authorise first
        calls = b2_server.calls.copy()
        before = store.request_count()
        anyio.run(store.put_object, checksum, str(tmp_path / "src"), len(data))
        assert store.request_count() - before == 3, "HEAD, get upload URL, upload"
        assert b2_server.calls["b2_upload_file"] - calls["b2_upload_file"] == 1
        before = store.request_count()
        anyio.run(store.put_object, checksum, str(tmp_path / "src"), len(data))
        assert store.request_count() - before == 2, "HEAD, GET to confirm"
    finally:
        close_store(store)


def test_large_file_in_parallel_parts(raw: Any, b2_server: B2Server, tmp_path: Path) -> None:
    store, parent = _store(b2_server)
    data = random_bytes(LARGE, 2)
    checksum = blake3_hex(data)
    (tmp_path / "big").write_bytes(data)
    calls = b2_server.calls.copy()
    try:
        anyio.run(store.put_object, checksum, str(tmp_path / "big"), LARGE)
    finally:
        close_store(store)
    parts = math.ceil(LARGE / PART)
    assert b2_server.calls["b2_upload_part"] - calls["b2_upload_part"] == parts
    assert b2_server.calls["b2_start_large_file"] - calls["b2_start_large_file"] == 1
    assert b2_server.calls["b2_finish_large_file"] - calls["b2_finish_large_file"] == 1
    assert b2_server.calls["b2_upload_file"] == calls["b2_upload_file"]
    key = f"{parent}/store/{object_key(checksum)}"
    assert _read(raw, key) == data
    assert _unfinished(raw, parent + "/") == []


def test_source_changed_mid_large_file(
    raw: Any, b2_server: B2Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file changes after its first part went up: the digest of the bytes read does
    not match, the last part is never sent, the large file is cancelled (nothing unfinished
    is left) and no object appears."""
    store, parent = _store(b2_server, part_concurrency=1)
    data = random_bytes(LARGE, 3)
    checksum = blake3_hex(data)
    source = tmp_path / "big"
    source.write_bytes(data)
    original = store._upload_part
    sent: list[int] = []

    def upload_part(file_id: str, number: int, part: bytes, what: str) -> str:
        sent.append(number)
        if number == 1:  # the rest of the file changes while part 1 is on its way
            with open(source, "r+b") as f:
                f.seek(LARGE - 10)
                f.write(b"0123456789")
        return original(file_id, number, part, what)

    monkeypatch.setattr(store, "_upload_part", upload_part)
    calls = b2_server.calls.copy()
    try:
        with pytest.raises(InFluxError, match="changed while it was uploaded"):
            anyio.run(store.put_object, checksum, str(source), LARGE)
        assert not anyio.run(store.has_object, checksum)
    finally:
        close_store(store)
    parts = math.ceil(LARGE / PART)
    assert sent == list(range(1, parts)), "every part but the last"
    assert b2_server.calls["b2_cancel_large_file"] - calls["b2_cancel_large_file"] == 1
    assert b2_server.calls["b2_finish_large_file"] == calls["b2_finish_large_file"]
    assert _unfinished(raw, parent + "/") == []
    assert _names(raw, parent + "/") == set()


def test_source_changed_before_small_upload(raw: Any, b2_server: B2Server, tmp_path: Path) -> None:
    store, parent = _store(b2_server)
    data = random_bytes(300_000, 4)
    (tmp_path / "src").write_bytes(data[:-1] + b"!")
    try:
        with pytest.raises(InFluxError, match="changed while it was uploaded"):
            anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
    finally:
        close_store(store)
    assert _names(raw, parent + "/") == set()


def test_upload_body_rehashes_on_every_pass(tmp_path: Path) -> None:
    import hashlib

    data = random_bytes(100_000, 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f:
        body = _UploadBody(f, len(data), blake3_hex(data), str(path), "b2://b/p")
        assert len(body) == len(data) + 40
        assert body.read(1000) == data[:1000]
        assert body.seek(0) == 0  # a new pass: the hashes restart
        whole = b"".join(iter(lambda: body.read(7777), b""))
        assert whole == data + hashlib.sha1(data).hexdigest().encode()
        assert body.verified
        with pytest.raises(OSError, match="rewind to 0"):
            body.seek(10)


def test_upload_body_withholds_the_last_bytes(tmp_path: Path) -> None:
    data = random_bytes(50_000, 6)
    path = tmp_path / "f"
    path.write_bytes(data[:-1] + b"!")
    with open(path, "rb") as f:
        body = _UploadBody(f, len(data), blake3_hex(data), str(path), "b2://b/p")
        assert len(body.read(40_000)) == 40_000
        with pytest.raises(OSError, match="changed while it was uploaded"):
            body.read(40_000)  # to the HTTP stack: a dead connection
        assert isinstance(body.failure, InFluxError)
    path.write_bytes(data + b"x")
    with open(path, "rb") as f:
        body = _UploadBody(f, len(data), blake3_hex(data), str(path), "b2://b/p")
        with pytest.raises(OSError, match="grew"):
            body.read()
        assert isinstance(body.failure, InFluxError)
        assert "grew" in str(body.failure)


def test_429_on_upload_is_transient_with_retry_after(
    b2_server: B2Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b2sdk sends an upload once and does not retry a 429 on it: the store raises it as
    transient, with the service's Retry-After, for the retry wrapper."""
    p = _new_proxy(b2_server, rate=1.0, kinds=["429"], path_regex="b2_upload_file", retry_after="7")
    store, _ = _store(b2_server)
    _via(store, p, monkeypatch)
    data = random_bytes(1000, 7)
    (tmp_path / "src").write_bytes(data)
    try:
        with pytest.raises(TransientStoreError) as info:
            anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
    finally:
        close_store(store)
        p.stop()
    assert info.value.retry_after == 7.0
    assert store.is_transient(info.value)


def test_retry_wrapper_honours_retry_after_on_upload(
    raw: Any, b2_server: B2Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _new_proxy(b2_server, path_regex="b2_upload_file", script=["429"], retry_after="1")
    inner, parent = _store(b2_server)
    _via(inner, p, monkeypatch)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01, max_delay=0.05))
    data = random_bytes(1000, 8)
    (tmp_path / "src").write_bytes(data)
    try:
        start = time.monotonic()
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
        elapsed = time.monotonic() - start
    finally:
        close_store(store)
        p.stop()
    assert p.stats.count(FaultKind.ERROR_429) == 1
    assert store.retries == 1
    assert elapsed >= 1.0, "waited for Retry-After, not for the (shorter) backoff"
    assert _read(raw, f"{parent}/store/{object_key(blake3_hex(data))}") == data


def test_lost_upload_response_leaves_one_version(
    raw: Any, b2_server: B2Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload is stored but its answer is lost. The retry first asks whether the object
    is there (it is, and it is sound), so no second version is uploaded."""
    p = _new_proxy(b2_server, path_regex="b2_upload_file", script=["lost_response"])
    inner, parent = _store(b2_server)
    _via(inner, p, monkeypatch)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01))
    data = random_bytes(5000, 9)
    (tmp_path / "src").write_bytes(data)
    try:
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
    finally:
        close_store(store)
        p.stop()
    assert p.stats.count(FaultKind.LOST_RESPONSE) == 1
    assert store.retries == 1
    assert len(_versions(raw, f"{parent}/store/{object_key(blake3_hex(data))}")) == 1


@pytest.mark.parametrize("kind", ["lost_response", "reset_response"])
def test_lost_start_of_a_large_file_leaves_no_orphan(
    raw: Any, b2_server: B2Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """``b2_start_large_file`` reaches B2 but its answer is lost. b2sdk sends it again
    (lost response) or gives up (reset response, then the retry wrapper starts over): either
    way a large file was started that this upload never heard of. It is found by the
    upload's token and cancelled, so no unfinished large file is left."""
    p = _new_proxy(b2_server, path_regex="b2_start_large_file", script=[kind])
    inner, parent = _store(b2_server)
    _via(inner, p, monkeypatch)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01))
    data = random_bytes(LARGE, 15)
    checksum = blake3_hex(data)
    (tmp_path / "big").write_bytes(data)
    try:
        anyio.run(store.put_object, checksum, str(tmp_path / "big"), LARGE)
    finally:
        close_store(store)
        p.stop()
    assert p.stats.count(FaultKind(kind)) == 1
    assert _read(raw, f"{parent}/store/{object_key(checksum)}") == data
    assert _unfinished(raw, parent + "/") == []


@pytest.mark.parametrize("size", [10_000, LARGE], ids=["small", "large"])
def test_put_repairs_a_damaged_object(
    raw: Any, b2_server: B2Server, tmp_path: Path, size: int
) -> None:
    """A damaged object (other bytes, same size or not) is replaced by a new version and
    the damaged version deleted: the name reads right again (``push --repair``)."""
    store, parent = _store(b2_server)
    data = random_bytes(size, 10)
    checksum = blake3_hex(data)
    (tmp_path / "src").write_bytes(data)
    key = f"{parent}/store/{object_key(checksum)}"
    try:
        for bad in (data[:-1] + b"!", b"short"):
            damaged = raw.upload_bytes(bad, key)
            anyio.run(store.put_object, checksum, str(tmp_path / "src"), size)
            assert _read(raw, key) == data
            assert damaged.id_ not in {fv.id_ for fv in _versions(raw, key)}
    finally:
        close_store(store)


def test_push_repair_mends_same_size_damage_past_the_hash_check(
    raw: Any, b2_server: B2Server, tmp_path: Path
) -> None:
    """A large object damaged in place, size unchanged: a put finding it only checks its
    size, so ``push(repair=True)`` uploads it with ``replace``; the damaged version is
    deleted."""
    store, parent = _store(b2_server)
    store.verify_on_conflict_max = 64 * KiB
    damaged: list[tuple[str, str]] = []

    def key(checksum: str) -> str:
        return f"{parent}/store/{object_key(checksum)}"

    def plant(checksum: str, data: bytes) -> None:
        damaged.append((key(checksum), raw.upload_bytes(data, key(checksum)).id_))

    try:
        check_repair_of_same_size_damage(
            store, tmp_path, LARGE, plant, lambda c: _read(raw, key(c))
        )
    finally:
        close_store(store)
    [(name, file_id)] = damaged
    assert file_id not in {fv.id_ for fv in _versions(raw, name)}


def test_put_manifest_repairs_a_damaged_manifest(raw: Any, b2_server: B2Server) -> None:
    store, parent = _store(b2_server)
    m = Manifest.parse(f"D 755 {blake3_hex(b'')} 0 ./")
    key = f"{parent}/store/{manifest_key(m.id)}"
    raw.upload_bytes(b"garbage\n", key)
    try:
        with pytest.raises(HashMismatchError):
            anyio.run(store.get_manifest, m.id)
        anyio.run(store.put_manifest, m.id, m.raw)
        assert anyio.run(store.get_manifest, m.id) == m
    finally:
        close_store(store)
    assert len(_versions(raw, key)) == 1


# -------------------------------------------------------------------------------------------
# Downloads
# -------------------------------------------------------------------------------------------


def test_broken_download_is_resumed_with_a_range(
    raw: Any, b2_server: B2Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is reset part-way through the body: the store asks for the rest of
    the same file id with ``Range: bytes=<offset>-<last>`` (not from zero), and the whole is
    still verified."""
    data = random_bytes(3 * MiB, 11)
    checksum = blake3_hex(data)
    p = _new_proxy(
        b2_server,
        methods=["GET"],
        path_regex="/file/|b2_download_file_by_id",
        script=["reset_response"],
    )
    store, parent = _store(b2_server)
    raw.upload_bytes(data, f"{parent}/store/{object_key(checksum)}")
    _via(store, p, monkeypatch)
    dest = tmp_path / "dest"
    try:
        rec = _recorder(store)
        anyio.run(store.get_object, checksum, str(dest))
    finally:
        close_store(store)
        p.stop()
    assert p.stats.count(FaultKind.RESET_RESPONSE) == 1
    assert dest.read_bytes() == data
    gets = [(url, h.get("range")) for m, url, h in rec.calls if m == "GET"]
    assert len(gets) == 2
    assert gets[0][1] is None
    assert "b2_download_file_by_id" in gets[1][0], "the resume reads the same version"
    second = str(gets[1][1])
    assert second.startswith("bytes=")
    assert second.endswith(f"-{len(data) - 1}")
    offset = int(second[len("bytes=") :].split("-")[0])
    assert 0 < offset < len(data), "resumed from where the stream broke, not from zero"


def test_resumed_download_of_a_corrupt_object_is_refused(
    raw: Any, b2_server: B2Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(2 * MiB, 12)
    checksum = blake3_hex(data)
    p = _new_proxy(
        b2_server,
        methods=["GET"],
        path_regex="/file/|b2_download_file_by_id",
        script=["reset_response", "reset_response"],
    )
    store, parent = _store(b2_server)
    raw.upload_bytes(data[:-1] + b"\0", f"{parent}/store/{object_key(checksum)}")
    _via(store, p, monkeypatch)
    dest = tmp_path / "dest"
    try:
        with pytest.raises(HashMismatchError):
            anyio.run(store.get_object, checksum, str(dest))
    finally:
        close_store(store)
        p.stop()
    assert not dest.exists()


def test_missing_object_leaves_no_destination(b2_server: B2Server, tmp_path: Path) -> None:
    store, _ = _store(b2_server)
    dest = tmp_path / "dest"
    try:
        with pytest.raises(NotFoundError):
            anyio.run(store.get_object, blake3_hex(b"absent"), str(dest))
    finally:
        close_store(store)
    assert not dest.exists()


# -------------------------------------------------------------------------------------------
# Listing and request counts
# -------------------------------------------------------------------------------------------


def test_list_is_cheaper_than_has(b2_server: B2Server, tmp_path: Path) -> None:
    """One ``b2_list_file_names`` answers for up to 10,000 objects; ``has_object`` costs a
    HEAD each."""
    store, _ = _store(b2_server)
    puts = []
    for i in range(30):
        d = random_bytes(10 + i, 100 + i)
        (tmp_path / f"s{i}").write_bytes(d)
        puts.append(ObjectPut(blake3_hex(d), str(tmp_path / f"s{i}"), len(d)))
    expected = {p.checksum for p in puts}

    async def body() -> None:
        await store.put_objects(puts, jobs=8)
        n = store.request_count()
        assert await store.list_objects() == expected
        assert store.request_count() - n == 1
        n = store.request_count()
        for p in puts:
            assert await store.has_object(p.checksum)
        assert store.request_count() - n == len(puts)

    try:
        anyio.run(body)
    finally:
        close_store(store)


def test_listing_ignores_stray_keys(raw: Any, b2_server: B2Server) -> None:
    store, parent = _store(b2_server)
    good = blake3_hex(b"good")
    root = f"{parent}/store/"
    for key in [root + object_key(good), *stray_keys(root)]:
        raw.upload_bytes(b"x", key)
    hidden = blake3_hex(b"hidden")
    raw.upload_bytes(b"hidden", root + object_key(hidden))
    raw.hide_file(root + object_key(hidden))
    try:
        assert anyio.run(store.list_objects) == {good}
        assert anyio.run(store.list_manifests) == []
        assert not anyio.run(store.has_object, hidden)
    finally:
        close_store(store)


def test_verify_objects_streams_without_a_temporary_file(raw: Any, b2_server: B2Server) -> None:
    store, parent = _store(b2_server)
    good, bad = random_bytes(3000, 13), random_bytes(4000, 14)
    root = f"{parent}/store/"
    raw.upload_bytes(good, root + object_key(blake3_hex(good)))
    raw.upload_bytes(bad[::-1], root + object_key(blake3_hex(bad)))
    gone = blake3_hex(b"gone")
    try:
        problems = anyio.run(
            store.verify_objects, [(blake3_hex(good), 3000), (blake3_hex(bad), 4000), (gone, 4)]
        )
    finally:
        close_store(store)
    assert problems == {blake3_hex(bad): "corrupt", gone: "missing"}


# -------------------------------------------------------------------------------------------
# Errors and credentials
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unset", [(KEY_ID_ENV, KEY_ENV), (KEY_ENV,)], ids=["both", "key"])
def test_missing_credentials(
    b2_server: B2Server, monkeypatch: pytest.MonkeyPatch, unset: tuple[str, ...]
) -> None:
    for name in unset:
        monkeypatch.delenv(name)
    store, _ = _store(b2_server)
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.has_object, blake3_hex(b"x"))
    finally:
        close_store(store)
    message = str(info.value)
    assert not isinstance(info.value, TransientStoreError)
    assert f"{' and '.join(unset)} not set" in message  # what is missing
    assert KEY_ID_ENV in message  # and the hint names both
    assert KEY_ENV in message
    assert b2_server.bucket_name in message
    assert store.request_count() == 0


def test_wrong_key_is_reported_without_the_key(
    b2_server: B2Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "K005" + uid() + uid()
    monkeypatch.setenv(KEY_ENV, secret)
    store, _ = _store(b2_server)
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.list_manifests)
    finally:
        close_store(store)
    message = str(info.value)
    assert not isinstance(info.value, TransientStoreError)
    assert b2_server.key_id in message
    assert KEY_ENV in message
    assert secret not in message
    assert info.value.__cause__ is None or secret not in repr(info.value.__cause__)


def test_missing_bucket(b2_server: B2Server) -> None:
    """Reads go by name without the bucket id; one that misses confirms the bucket, so a
    missing bucket is a StoreError naming it, never an absent key."""
    name = f"no-such-bucket-{uid()}"
    store = B2Store(f"b2://{name}/x")
    try:
        for call in (store.list_manifests, store.has_manifest, store.get_manifest):
            args = () if call == store.list_manifests else (blake3_hex(b"x"),)
            with pytest.raises(StoreError, match="does not exist") as info:
                anyio.run(call, *args)
            assert not isinstance(info.value, NotFoundError)
            assert name in str(info.value)
    finally:
        close_store(store)


def test_put_after_a_listing_skips_the_head(b2_server: B2Server, tmp_path: Path) -> None:
    """A key the store has just listed as absent is uploaded without asking again (one
    request per object in a push); a key it has not seen absent is asked about first."""
    store, _ = _store(b2_server)
    listed, unlisted = random_bytes(1000, 16), random_bytes(1000, 17)
    (tmp_path / "a").write_bytes(listed)
    (tmp_path / "b").write_bytes(unlisted)
    try:
        anyio.run(store.list_objects, blake3_hex(listed)[:3])
        rec = _recorder(store)
        anyio.run(store.put_object, blake3_hex(listed), str(tmp_path / "a"), len(listed))
        assert [m for m, _, _ in rec.calls if m == "HEAD"] == []
        assert blake3_hex(unlisted)[:3] != blake3_hex(listed)[:3], "another shard"
        rec.calls.clear()
        anyio.run(store.put_object, blake3_hex(unlisted), str(tmp_path / "b"), len(unlisted))
        assert [m for m, _, _ in rec.calls if m == "HEAD"] == ["HEAD"]
        rec.calls.clear()  # uploaded by this store: a second put asks, and uploads nothing
        anyio.run(store.put_object, blake3_hex(listed), str(tmp_path / "a"), len(listed))
        assert "HEAD" in [m for m, _, _ in rec.calls]
        assert not any("b2_upload_file" in url for _, url, _ in rec.calls)
    finally:
        close_store(store)


def test_wrap_sizes_the_connection_pool(b2_server: B2Server) -> None:
    store, _ = _store(b2_server)
    wrapped = wrap(store, jobs=48)
    assert unwrap(wrapped) is store
    assert store._pool_size == 48 + store.part_concurrency


def test_push_and_pull_request_costs(b2_server: B2Server, tmp_path: Path) -> None:
    """The figures in docs/stores/b2.md, from a fresh process's point of view (each store
    object authorises once; the bucket id is looked up only when an upload or a listing
    needs it)."""
    from snapdir._pull import pull_with_stats
    from snapdir._push import push_with_stats

    tree = alpha_beta_tree(tmp_path)
    store, _ = _store(b2_server)
    try:
        first = anyio.run(push_with_stats, str(tree), store)
        shards = len({blake3_hex(b"alpha")[:3], blake3_hex(b"beta")[:3]})
        # manifest HEAD (misses), a listing per shard, an upload per object (no HEAD: the
        # listing said absent), an upload URL per concurrent upload (1 or 2), the manifest
        # upload (no HEAD: it just missed). Authorising and the bucket id are paid before,
        # by the collection guard's listing of sweep plans, outside this count.
        least = 1 + shards + 2 + 1 + 1
        assert least <= first["requests"] <= least + 1
        again = anyio.run(push_with_stats, str(tree), B2Store(store.uri))
        assert again["noop"]
        assert again["requests"] == 1, "manifest HEAD (the guard's listing authorised)"
        pulled = anyio.run(pull_with_stats, first["id"], B2Store(store.uri), str(tmp_path / "out"))
        assert pulled["requests"] == 1 + 1 + 2, "authorise, manifest, one GET per object"
    finally:
        close_store(store)
    assert (tmp_path / "out" / "c").read_bytes() == b"alpha"
