"""The gs:// store against fake-gcs-server on loopback, plain and wrapped.

The conformance suite (:mod:`snapdir.testing`) runs three times: the bare ``GcsStore`` (its
endpoint from ``STORAGE_EMULATOR_HOST``, as a user would set it), the store as the
operations use it (``wrap``: retries inside one concurrency limit), and that wrapped store
behind a fault-injecting proxy, so every 5xx, 429, reset and lost response reaches
:class:`RetryingStore` or the store's own resumption. Then the GCS-specific behaviour:
resumable uploads in chunks, a source changing mid-upload (the final chunk is never sent),
resumed downloads, create-only writes and repair, request counts, credentials errors.

The server is started once for this module. If it cannot start the tests are skipped,
unless ``SNAPDIR_TEST_NO_SKIP=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from servers.fakegcs import EMULATOR_ENV, GcsServer, start_fake_gcs
from servers.faultproxy import FaultKind, FaultProxy, start_fault_proxy
from snapdir import HashMismatchError, InFluxError, NotFoundError, StoreError
from snapdir._snapdir import blake3_hex
from snapdir.stores import Capability, ObjectPut, Store, manifest_key, object_key, open_store
from snapdir.stores._base import TransientStoreError
from snapdir.stores._streams import UploadReader
from snapdir.stores._wrappers import RetryingStore, RetryPolicy, unwrap, wrap
from snapdir.stores.gcs import GcsStore
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

MiB = 1024 * 1024
KiB = 1024
#: Lowered resumable settings so the "large" tests go through chunked uploads quickly.
THRESHOLD = 512 * KiB
CHUNK = 256 * KiB  # the smallest chunk GCS allows
LARGE = MiB + 300 * KiB + 7  # six chunks, the last one short


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """fake-gcs-server for this module, stopped (by PID) when the module is done."""
    try:
        server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    except Exception as e:  # binary missing, port trouble, ...
        message = f"fake-gcs-server could not start: {type(e).__name__}: {e}"
        if NO_SKIP:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def raw(gcs_server: GcsServer) -> Any:
    """A plain google-cloud-storage client for the hooks: reads and plants keys around the
    store."""
    return gcs_server.client()


@pytest.fixture(scope="module")
def bucket(raw: Any) -> str:
    name = f"snapdir-gcs-{uid()}"
    raw.create_bucket(name)
    return name


@pytest.fixture(autouse=True)
def _gcs_env(monkeypatch: pytest.MonkeyPatch, gcs_server: GcsServer) -> None:
    """The emulator through the SDK's own variable, and nothing from the machine."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(EMULATOR_ENV, gcs_server.endpoint)


def _new_proxy(gcs_server: GcsServer, **kwargs: Any) -> FaultProxy:
    kwargs.setdefault("flavor", "gcs")
    kwargs.setdefault("seed", 7)
    kwargs.setdefault("rate", 0.0)
    return start_fault_proxy(gcs_server.endpoint, **kwargs)


def _list_all(raw: Any, bucket: str, prefix: str) -> set[str]:
    return {b.name for b in raw.list_blobs(bucket, prefix=prefix)}


def _store(bucket: str, **kwargs: Any) -> tuple[GcsStore, str]:
    parent = f"t-{uid()}"
    kwargs.setdefault("resumable_threshold", THRESHOLD)
    kwargs.setdefault("chunk_size", CHUNK)
    return GcsStore(f"gs://{bucket}/{parent}/store", **kwargs), parent


def _recorder(store: GcsStore) -> Recorder:
    """Records every request the store's session sends."""
    store._connect()
    return Recorder(store._session)


# -------------------------------------------------------------------------------------------
# The conformance suite
# -------------------------------------------------------------------------------------------


class _GcsHooks(StoreConformance):
    """Hooks shared by the GCS runs: each test gets a fresh prefix ``t-<uid>/store`` in the
    module's bucket, and ``raw_keys`` lists all of ``t-<uid>/`` (so keys written beside the
    prefix would show)."""

    large_object_size = LARGE
    bucket_name: str
    raw_client: Any
    parent: str

    def _fresh(self, raw: Any, bucket: str) -> str:
        self.raw_client = raw
        self.bucket_name = bucket
        self.parent = f"t-{uid()}"
        return f"gs://{bucket}/{self.parent}/store"

    def raw_keys(self, store: Store) -> set[str]:
        return _list_all(self.raw_client, self.bucket_name, self.parent + "/")

    def read_raw(self, store: Store, key: str) -> bytes:
        data: bytes = self.raw_client.bucket(self.bucket_name).blob(key).download_as_bytes()
        return data

    def corrupt(self, store: Store, checksum: str, data: bytes) -> None:
        key = self.key_root(store) + object_key(checksum)
        self.raw_client.bucket(self.bucket_name).blob(key).upload_from_string(data)

    def write_raw_manifest(self, store: Store, snapshot_id: str, data: bytes) -> None:
        key = self.key_root(store) + manifest_key(snapshot_id)
        self.raw_client.bucket(self.bucket_name).blob(key).upload_from_string(data)


class TestGcsStore(_GcsHooks):
    """The bare store; the endpoint comes from ``STORAGE_EMULATOR_HOST``."""

    @pytest.fixture
    def store(self, raw: Any, bucket: str) -> Iterator[Store]:
        s = GcsStore(self._fresh(raw, bucket), resumable_threshold=THRESHOLD, chunk_size=CHUNK)
        yield s
        close_store(s)


class TestGcsStoreWrapped(_GcsHooks):
    """The store as the operations use it: ``wrap`` (retries inside one limit)."""

    @pytest.fixture
    def store(self, raw: Any, bucket: str) -> Iterator[Store]:
        inner = GcsStore(self._fresh(raw, bucket), resumable_threshold=THRESHOLD, chunk_size=CHUNK)
        s = wrap(inner, jobs=6)
        yield s
        close_store(s)


class TestGcsStoreThroughFaults(_GcsHooks):
    """The wrapped store behind a proxy that fails ~15% of requests (5xx, 429, resets of the
    request or the response, lost responses): every fault must be absorbed by the SDK's
    chunk retries, resumed downloads, the 412 handling and RetryingStore."""

    @pytest.fixture
    def store(self, raw: Any, bucket: str, gcs_server: GcsServer) -> Iterator[Store]:
        p = _new_proxy(
            gcs_server,
            rate=0.15,
            kinds=["503", "500", "429", "reset_request", "reset_response", "lost_response"],
            seed=random.randrange(1 << 30),
            retry_after="0",
        )
        inner = GcsStore(
            self._fresh(raw, bucket),
            endpoint=p.url,
            resumable_threshold=THRESHOLD,
            chunk_size=CHUNK,
        )
        s = wrap(inner, jobs=6, retry=RetryPolicy(base_delay=0.01, max_delay=0.1, max_elapsed=60))
        try:
            yield s
        finally:
            close_store(s)
            p.stop()


# -------------------------------------------------------------------------------------------
# Opening and configuration
# -------------------------------------------------------------------------------------------


def test_open_store_builds_a_gcs_store() -> None:
    for uri in ("gs://some-bucket/a/b/", "gcs://some-bucket/a/b"):
        store = open_store(uri)
        assert isinstance(store, GcsStore)
        assert store.uri == "gs://some-bucket/a/b"
        assert store.request_count() == 0  # nothing sent on open
        assert (
            store.capabilities
            == Capability.LIST_OBJECTS | Capability.CONDITIONAL_PUT | Capability.KEYS
        )


def test_chunk_size_must_be_a_multiple_of_256_kib() -> None:
    with pytest.raises(ValueError, match="256 KiB"):
        GcsStore("gs://b/p", chunk_size=300 * KiB)


def test_explicit_endpoint_wins_over_the_environment(
    bucket: str, gcs_server: GcsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EMULATOR_ENV, "http://127.0.0.1:9")  # nothing listens there
    store, _ = _store(bucket, endpoint=gcs_server.endpoint)
    try:
        assert anyio.run(store.list_manifests) == []
    finally:
        close_store(store)


# -------------------------------------------------------------------------------------------
# Uploads
# -------------------------------------------------------------------------------------------


def test_small_object_is_one_request(bucket: str, tmp_path: Path) -> None:
    store, _ = _store(bucket)
    data = random_bytes(THRESHOLD, 1)  # at the threshold: still a single multipart request
    (tmp_path / "src").write_bytes(data)
    try:
        rec = _recorder(store)
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
    finally:
        close_store(store)
    assert [m for m, _, _ in rec.calls] == ["POST"]
    assert "uploadType=multipart" in rec.calls[0][1]
    assert "ifGenerationMatch=0" in rec.calls[0][1]


def test_resumable_upload_in_chunks(raw: Any, bucket: str, tmp_path: Path) -> None:
    store, parent = _store(bucket)
    data = random_bytes(LARGE, 2)
    checksum = blake3_hex(data)
    (tmp_path / "big").write_bytes(data)
    try:
        rec = _recorder(store)
        anyio.run(store.put_object, checksum, str(tmp_path / "big"), LARGE)
    finally:
        close_store(store)
    chunks = math.ceil(LARGE / CHUNK)
    assert [m for m, _, _ in rec.calls] == ["POST"] + ["PUT"] * chunks
    assert "uploadType=resumable" in rec.calls[0][1]
    assert "ifGenerationMatch=0" in rec.calls[0][1]
    ranges = [h["content-range"] for _, _, h in rec.calls[1:]]
    assert ranges[0] == f"bytes 0-{CHUNK - 1}/{LARGE}"
    assert ranges[-1] == f"bytes {(chunks - 1) * CHUNK}-{LARGE - 1}/{LARGE}"
    key = f"{parent}/store/{object_key(checksum)}"
    assert raw.bucket(bucket).blob(key).download_as_bytes() == data
    assert store.request_count() == 1 + chunks


def test_source_changed_mid_resumable_upload(raw: Any, bucket: str, tmp_path: Path) -> None:
    """The file changes after its first chunk went up: the digest of the bytes read does
    not match, the final chunk is never sent (so the upload is never finalised), the
    session is cancelled, and no object appears."""
    store, parent = _store(bucket)
    data = random_bytes(LARGE, 3)
    checksum = blake3_hex(data)
    source = tmp_path / "big"
    source.write_bytes(data)
    rec = _recorder(store)
    original = store._session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        response = original(method, url, *args, **kwargs)
        if method == "PUT" and len(rec.calls) == 2:  # the first chunk is up
            with open(source, "r+b") as f:
                f.seek(LARGE - 10)
                f.write(b"0123456789")
        return response

    store._session.request = request
    try:
        with pytest.raises(InFluxError, match="changed while it was uploaded"):
            anyio.run(store.put_object, checksum, str(source), LARGE)
        assert not anyio.run(store.has_object, checksum)
    finally:
        close_store(store)
    puts = [h["content-range"] for m, _, h in rec.calls if m == "PUT"]
    assert puts, "chunks were sent before the change was seen"
    assert all(not r.endswith(f"-{LARGE - 1}/{LARGE}") for r in puts), "no final chunk"
    methods = [m for m, _, _ in rec.calls]
    assert "DELETE" in methods, "the upload session was cancelled"
    assert methods[methods.index("DELETE") - 1] == "PUT", "right after the last chunk sent"
    assert _list_all(raw, bucket, parent + "/") == set()


@pytest.mark.parametrize("size", [5000, LARGE], ids=["single-request", "resumable"])
def test_source_changed_before_upload(bucket: str, tmp_path: Path, size: int) -> None:
    """Nothing is sent at all for a small object whose bytes do not match (the only read
    is refused), and only non-final chunks for a large one."""
    store, _ = _store(bucket)
    data = random_bytes(size, 4)
    (tmp_path / "src").write_bytes(data[:-1] + b"!")
    rec = _recorder(store)
    try:
        with pytest.raises(InFluxError):
            anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), size)
    finally:
        close_store(store)
    if size < THRESHOLD:
        assert rec.calls == []
    else:
        assert rec.calls[0][0] == "POST"
        assert rec.calls[-1][0] == "DELETE"


def test_send_reader_replays_rewound_bytes_from_memory(tmp_path: Path) -> None:
    """A rewind (the SDK re-sending a chunk) gets the bytes handed out before, never bytes
    re-read from a file that may have changed; a rewind to 0 starts a verified new pass."""
    data = random_bytes(100_000, 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f:
        r = UploadReader(f, len(data), blake3_hex(data), str(path), "gs://b/p", replay=True)
        assert len(r) == len(data)
        assert r.read(40_000) == data[:40_000]
        assert r.read(40_000) == data[40_000:80_000]
        path.write_bytes(b"\0" * len(data))  # the file changes under us
        assert r.seek(50_000) == 50_000  # inside the last read: replayed
        assert r.read(10_000) == data[50_000:60_000]
        with pytest.raises(StoreError, match="cannot seek"):
            r.seek(10_000)  # behind what is kept
    path.write_bytes(data)
    with open(path, "rb") as f:
        r = UploadReader(f, len(data), blake3_hex(data), str(path), "gs://b/p", replay=True)
        for _ in range(3):
            assert r.read(30_000) == data[:30_000]
            assert r.read(30_000) == data[30_000:60_000]
            r.seek(0)  # a new pass over the file
        assert r.read() == data
        assert r.verified
        assert r.read() == b""


def test_send_reader_withholds_the_last_bytes(tmp_path: Path) -> None:
    data = random_bytes(50_000, 6)
    path = tmp_path / "f"
    path.write_bytes(data[:-1] + b"!")
    with open(path, "rb") as f:
        r = UploadReader(f, len(data), blake3_hex(data), str(path), "gs://b/p", replay=True)
        assert len(r.read(40_000)) == 40_000
        with pytest.raises(InFluxError):
            r.read(40_000)  # would have been the final 10,000 bytes
        with pytest.raises(InFluxError):  # once failed, it stays failed
            r.read(10)
    path.write_bytes(data + b"x")
    with open(path, "rb") as f:
        r = UploadReader(f, len(data), blake3_hex(data), str(path), "gs://b/p", replay=True)
        with pytest.raises(InFluxError, match="grew"):
            r.read()


def test_create_only_and_repair(raw: Any, bucket: str, tmp_path: Path) -> None:
    """Creates are ifGenerationMatch=0; a second put of an existing key gets 412 and is
    accepted once the object is confirmed (size and, this small, its hash); a damaged
    object in the way is replaced, conditionally on the generation that was checked."""
    store, parent = _store(bucket)
    data = random_bytes(10_000, 7)
    checksum = blake3_hex(data)
    (tmp_path / "src").write_bytes(data)
    key = f"{parent}/store/{object_key(checksum)}"
    blob = raw.bucket(bucket).blob(key)
    try:
        anyio.run(store.put_object, checksum, str(tmp_path / "src"), len(data))
        before = store.request_count()
        anyio.run(store.put_object, checksum, str(tmp_path / "src"), len(data))
        assert store.request_count() - before == 3, "POST (412), GET metadata, GET media"
        for bad in (data[:-1] + b"!", b"short"):  # same size, other size
            blob.upload_from_string(bad)
            anyio.run(store.put_object, checksum, str(tmp_path / "src"), len(data))
            assert blob.download_as_bytes() == data
    finally:
        close_store(store)


def test_push_repair_mends_same_size_damage_past_the_hash_check(
    raw: Any, bucket: str, tmp_path: Path
) -> None:
    """An object damaged in place, size unchanged, above ``verify_on_conflict_max``: a put
    finding it (412) only checks its size, so ``push(repair=True)`` re-uploads it with
    ``replace`` (no precondition). Below the resumable threshold: fake-gcs-server does not
    enforce preconditions on resumable uploads, so only a single request shows the 412."""
    store, parent = _store(bucket)
    store.verify_on_conflict_max = 64 * KiB
    size = 300 * KiB

    def blob(checksum: str) -> Any:
        return raw.bucket(bucket).blob(f"{parent}/store/{object_key(checksum)}")

    def read(checksum: str) -> bytes:
        data: bytes = blob(checksum).download_as_bytes()
        return data

    try:
        check_repair_of_same_size_damage(
            store, tmp_path, size, lambda c, d: blob(c).upload_from_string(d), read
        )
    finally:
        close_store(store)


def test_lost_upload_response_is_success_after_retry(
    bucket: str, tmp_path: Path, gcs_server: GcsServer
) -> None:
    """The upload reaches the server and is stored, but the answer is lost. The retry gets
    412 (the key exists), which counts as success once the object is confirmed."""
    p = _new_proxy(gcs_server, kinds=["lost_response"], methods=["POST"], script=["lost_response"])
    inner, _ = _store(bucket, endpoint=p.url)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01))
    data = random_bytes(5000, 8)
    (tmp_path / "src").write_bytes(data)
    try:
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
        assert p.stats.count(FaultKind.LOST_RESPONSE) == 1
        assert store.retries == 1
        assert anyio.run(inner.has_object, blake3_hex(data))
    finally:
        close_store(store)
        p.stop()


@pytest.mark.parametrize("kind", ["503", "429"])
def test_failed_chunk_is_sent_again(
    raw: Any, bucket: str, tmp_path: Path, gcs_server: GcsServer, kind: str
) -> None:
    """An error answer to one chunk: the SDK sends that chunk again (from memory), the
    upload goes on where it was; no restart from the first chunk."""
    p = _new_proxy(gcs_server, methods=["PUT"], script=[None, kind], retry_after="0")
    store, parent = _store(bucket, endpoint=p.url)
    data = random_bytes(LARGE, 9)
    checksum = blake3_hex(data)
    (tmp_path / "big").write_bytes(data)
    try:
        anyio.run(store.put_object, checksum, str(tmp_path / "big"), LARGE)
    finally:
        close_store(store)
        p.stop()
    assert p.stats.injected[FaultKind(kind)] == 1
    assert store.request_count() == 1 + math.ceil(LARGE / CHUNK) + 1
    key = f"{parent}/store/{object_key(checksum)}"
    assert raw.bucket(bucket).blob(key).download_as_bytes() == data


@pytest.mark.parametrize("kind", ["reset_request", "reset_response", "lost_response"])
def test_broken_chunk_connection_starts_over(
    raw: Any, bucket: str, tmp_path: Path, gcs_server: GcsServer, kind: str
) -> None:
    """Against the emulator a chunk whose connection broke is not re-sent (fake-gcs-server
    would append it twice): the session is cancelled, the failure is transient, and the
    retry wrapper uploads again. The result is the right object, once."""
    p = _new_proxy(gcs_server, methods=["PUT"], script=[None, kind])
    inner, parent = _store(bucket, endpoint=p.url)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01))
    data = random_bytes(LARGE, 10)
    checksum = blake3_hex(data)
    (tmp_path / "big").write_bytes(data)
    try:
        anyio.run(store.put_object, checksum, str(tmp_path / "big"), LARGE)
    finally:
        close_store(store)
        p.stop()
    assert store.retries == 1
    key = f"{parent}/store/{object_key(checksum)}"
    assert raw.bucket(bucket).blob(key).download_as_bytes() == data
    assert _list_all(raw, bucket, parent + "/") == {key}


# -------------------------------------------------------------------------------------------
# Downloads
# -------------------------------------------------------------------------------------------


def test_broken_download_is_resumed_with_a_range(
    raw: Any, bucket: str, tmp_path: Path, gcs_server: GcsServer
) -> None:
    """The connection is reset part-way through the body: the store asks for the rest with
    ``Range: bytes=<offset>-`` (not from zero), and the whole is still verified."""
    data = random_bytes(3 * MiB, 11)
    checksum = blake3_hex(data)
    p = _new_proxy(gcs_server, methods=["GET"], script=["reset_response"])
    store, parent = _store(bucket, endpoint=p.url)
    raw.bucket(bucket).blob(f"{parent}/store/{object_key(checksum)}").upload_from_string(data)
    dest = tmp_path / "dest"
    try:
        rec = _recorder(store)
        anyio.run(store.get_object, checksum, str(dest))
    finally:
        close_store(store)
        p.stop()
    assert p.stats.count(FaultKind.RESET_RESPONSE) == 1
    assert dest.read_bytes() == data
    ranges = [h.get("range") for m, _, h in rec.calls if m == "GET"]
    assert len(ranges) == 2
    assert ranges[0] is None
    second = str(ranges[1])
    assert second.startswith("bytes=")
    assert second.endswith("-")
    offset = int(second[len("bytes=") : -1])
    assert 0 < offset < len(data), "resumed from where the stream broke, not from zero"


def test_resumed_download_of_a_corrupt_object_is_refused(
    raw: Any, bucket: str, tmp_path: Path, gcs_server: GcsServer
) -> None:
    data = random_bytes(2 * MiB, 12)
    checksum = blake3_hex(data)
    p = _new_proxy(gcs_server, methods=["GET"], script=["reset_response", "reset_response"])
    store, parent = _store(bucket, endpoint=p.url)
    key = f"{parent}/store/{object_key(checksum)}"
    raw.bucket(bucket).blob(key).upload_from_string(data[:-1] + b"\0")
    dest = tmp_path / "dest"
    try:
        with pytest.raises(HashMismatchError):
            anyio.run(store.get_object, checksum, str(dest))
    finally:
        close_store(store)
        p.stop()
    assert not dest.exists()


def test_missing_object_leaves_no_destination(bucket: str, tmp_path: Path) -> None:
    store, _ = _store(bucket)
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


def test_list_is_cheaper_than_has(bucket: str, tmp_path: Path) -> None:
    """One list page answers for up to 1000 objects; ``has_object`` costs one GET each."""
    store, _ = _store(bucket)
    puts = []
    for i in range(30):
        d = random_bytes(10 + i, 100 + i)
        (tmp_path / f"s{i}").write_bytes(d)
        puts.append(ObjectPut(blake3_hex(d), str(tmp_path / f"s{i}"), len(d)))
    expected = {p.checksum for p in puts}

    async def body() -> None:
        await store.put_objects(puts, jobs=8)
        assert store.request_count() == len(puts), "one request per small object"
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


def test_listing_ignores_stray_keys(raw: Any, bucket: str) -> None:
    store, parent = _store(bucket)
    good = blake3_hex(b"good")
    root = f"{parent}/store/"
    for key in [root + object_key(good), *stray_keys(root)]:
        raw.bucket(bucket).blob(key).upload_from_string(b"x")
    try:
        assert anyio.run(store.list_objects) == {good}
        assert anyio.run(store.list_manifests) == []
    finally:
        close_store(store)


def test_verify_objects_streams_without_a_temporary_file(
    raw: Any, bucket: str, tmp_path: Path
) -> None:
    store, parent = _store(bucket)
    good, bad = random_bytes(3000, 13), random_bytes(4000, 14)
    root = f"{parent}/store/"
    raw.bucket(bucket).blob(root + object_key(blake3_hex(good))).upload_from_string(good)
    raw.bucket(bucket).blob(root + object_key(blake3_hex(bad))).upload_from_string(bad[::-1])
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


def _no_google_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No emulator and no credentials anywhere, and no lookup that leaves 127.0.0.1 (the
    GCE metadata-server probe is switched off)."""
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv(EMULATOR_ENV)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    for name in list(os.environ):
        if name.startswith(("GAE_", "GOOGLE_", "K_SERVICE", "FUNCTION_")):
            monkeypatch.delenv(name)


def test_missing_credentials(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_google_environment(monkeypatch, tmp_path)
    store, _ = _store(bucket)
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.has_object, blake3_hex(b"x"))
    finally:
        close_store(store)
    message = str(info.value)
    assert not isinstance(info.value, TransientStoreError)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message
    assert "gcloud auth application-default login" in message
    assert f"gs://{bucket}" in message
    assert store.request_count() == 0


def test_unusable_key_file_is_reported_without_the_secret(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_google_environment(monkeypatch, tmp_path)
    marker = uid()
    secret = f"-----BEGIN PRIVATE KEY-----{marker}-----END PRIVATE KEY-----"
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": secret}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    store, _ = _store(bucket)
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.list_manifests)
    finally:
        close_store(store)
    message = str(info.value)
    assert str(key_file) in message
    assert "gcloud auth application-default login" in message
    assert marker not in message
    assert info.value.__cause__ is None, "the SDK's message is not chained"


def test_missing_bucket(gcs_server: GcsServer, tmp_path: Path) -> None:
    """A missing bucket is a StoreError naming it, never a missing key: a listing or an
    upload cannot miss a key, and a read that misses checks the bucket (once per store)."""
    name = f"no-such-bucket-{uid()}"
    store = GcsStore(f"gs://{name}/x")
    (tmp_path / "src").write_bytes(b"x")
    try:
        for call in (
            lambda: store.list_manifests(),
            lambda: store.put_object(blake3_hex(b"x"), str(tmp_path / "src"), 1),
            lambda: store.has_manifest(blake3_hex(b"x")),
            lambda: store.get_manifest(blake3_hex(b"x")),
            lambda: store.get_object(blake3_hex(b"x"), str(tmp_path / "dest")),
        ):
            with pytest.raises(StoreError, match="does not exist") as info:
                anyio.run(call)
            assert not isinstance(info.value, NotFoundError)
            assert name in str(info.value)
    finally:
        close_store(store)


def test_transient_errors_carry_retry_after(bucket: str, gcs_server: GcsServer) -> None:
    p = _new_proxy(gcs_server, rate=1.0, kinds=["503"], retry_after="7")
    store, _ = _store(bucket, endpoint=p.url)
    try:
        with pytest.raises(TransientStoreError) as info:
            anyio.run(store.has_object, blake3_hex(b"x"))
    finally:
        close_store(store)
        p.stop()
    assert info.value.retry_after == 7.0
    assert store.is_transient(info.value)


def test_retry_gives_up_after_its_budget(bucket: str, gcs_server: GcsServer) -> None:
    p = _new_proxy(gcs_server, rate=1.0, kinds=["503"], retry_after=None)
    inner, _ = _store(bucket, endpoint=p.url)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01, max_delay=0.02, max_elapsed=0.3))
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.has_manifest, blake3_hex(b"x"))
    finally:
        close_store(store)
        p.stop()
    assert not isinstance(info.value, TransientStoreError)
    assert store.retries >= 3


def test_wrap_sizes_the_connection_pool(bucket: str) -> None:
    store, _ = _store(bucket)
    wrapped = wrap(store, jobs=48)
    assert unwrap(wrapped) is store
    assert store._pool_size == 48


def test_push_and_pull_request_costs(bucket: str, tmp_path: Path) -> None:
    """The figures in docs/stores/gcs.md: a push of two new objects costs the manifest
    check (and, that check missing, the once-per-store bucket check), one listing per shard
    the objects fall in, one upload each and the manifest; a no-op push one request; a
    pull one per object plus the manifest."""
    from snapdir._pull import pull_with_stats
    from snapdir._push import push_with_stats

    tree = alpha_beta_tree(tmp_path)
    store, _ = _store(bucket)
    try:
        first = anyio.run(push_with_stats, str(tree), store)
        shards = len({blake3_hex(b"alpha")[:3], blake3_hex(b"beta")[:3]})
        # manifest? (misses), a listing per shard, one upload per object, the manifest. The
        # bucket check a miss used to cost is paid before: the collection guard's first
        # listing (of sweep plans) is what finds a missing bucket now, outside this count.
        assert first["requests"] == 1 + shards + 2 + 1
        again = anyio.run(push_with_stats, str(tree), GcsStore(store.uri))
        assert again["noop"]
        assert again["requests"] == 1
        pulled = anyio.run(pull_with_stats, first["id"], GcsStore(store.uri), str(tmp_path / "out"))
        assert pulled["requests"] == 1 + 2
    finally:
        close_store(store)
    assert (tmp_path / "out" / "c").read_bytes() == b"alpha"
