"""The s3:// store against a real S3 server (SeaweedFS on loopback), plain and wrapped.

The conformance suite (:mod:`snapdir.testing`) runs three times: the bare ``S3Store``, the
store as the operations use it (``wrap``: retries + one concurrency limit), and that wrapped
store behind a fault-injecting proxy with botocore's own retries turned off, so every 5xx,
reset and lost response reaches :class:`RetryingStore`. Then the S3-specific behaviour:
multipart uploads, a source changing mid-upload (single PUT and multipart), resumed
downloads, conditional creates, request counts, credentials errors, and the wrappers.

The server is started by the test session and never skipped: if it cannot start, the tests
fail (``SNAPDIR_TEST_NO_SKIP=1`` turns any skip into a failure as well).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from servers.faultproxy import FaultKind, FaultProxy, start_fault_proxy
from servers.seaweed import S3Server
from snapdir import HashMismatchError, InFluxError, NotFoundError, StoreError
from snapdir._snapdir import Manifest, blake3_hex
from snapdir.stores import BaseStore, Capability, ObjectPut, Store, object_key, open_store
from snapdir.stores._base import TransientStoreError
from snapdir.stores._streams import UploadReader
from snapdir.stores._wrappers import LimitedStore, RetryingStore, RetryPolicy, unwrap, wrap
from snapdir.stores.s3 import S3Store
from snapdir.testing import StoreConformance
from storeutil_cloud import (
    check_repair_of_same_size_damage,
    close_store,
    random_bytes,
    stray_keys,
    uid,
)

MiB = 1024 * 1024
#: Lowered multipart settings so the "large" tests cover multipart in a fraction of a second.
THRESHOLD = 6 * MiB
PART = 5 * MiB  # S3's minimum part size
LARGE = 11 * MiB + 3  # three parts


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: S3Server) -> None:
    """Credentials for the loopback server through the standard variables, and nothing from
    the machine: no ~/.aws files, no instance-metadata lookups (never leave 127.0.0.1)."""
    seaweedfs.use_env(monkeypatch.setenv, monkeypatch.delenv)


@pytest.fixture(scope="module")
def raw(seaweedfs: S3Server) -> Iterator[Any]:
    """A plain boto3 client for the hooks: it reads and plants keys around the store."""
    client = seaweedfs.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def bucket(raw: Any) -> str:
    name = f"snapdir-s3-{uid()}"
    raw.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def proxy(seaweedfs: S3Server) -> Iterator[FaultProxy]:
    """A fault proxy for the module; tests reconfigure it (it starts with no faults)."""
    p = start_fault_proxy(seaweedfs.endpoint_url, rate=0.0, kinds=["503"], seed=1, flavor="s3")
    yield p
    p.stop()


def _new_proxy(seaweedfs: S3Server, **kwargs: Any) -> FaultProxy:
    kwargs.setdefault("flavor", "s3")
    kwargs.setdefault("seed", 7)
    return start_fault_proxy(seaweedfs.endpoint_url, **kwargs)


def _list_all(raw: Any, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def _s3(store: Store) -> S3Store:
    inner = unwrap(store)
    assert isinstance(inner, S3Store)
    return inner


# -------------------------------------------------------------------------------------------
# The conformance suite
# -------------------------------------------------------------------------------------------


class _S3Hooks(StoreConformance):
    """Hooks shared by the S3 runs: each test gets a fresh prefix ``t-<uid>/store`` in the
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
        return f"s3://{bucket}/{self.parent}/store"

    def raw_keys(self, store: Store) -> set[str]:
        return _list_all(self.raw_client, self.bucket_name, self.parent + "/")

    def read_raw(self, store: Store, key: str) -> bytes:
        body: bytes = self.raw_client.get_object(Bucket=self.bucket_name, Key=key)["Body"].read()
        return body

    def corrupt(self, store: Store, checksum: str, data: bytes) -> None:
        key = self.key_root(store) + object_key(checksum)
        self.raw_client.put_object(Bucket=self.bucket_name, Key=key, Body=data)

    def write_raw_manifest(self, store: Store, snapshot_id: str, data: bytes) -> None:
        from snapdir.stores import manifest_key

        key = self.key_root(store) + manifest_key(snapshot_id)
        self.raw_client.put_object(Bucket=self.bucket_name, Key=key, Body=data)


class TestS3Store(_S3Hooks):
    """The bare store, endpoint and credentials from the environment."""

    @pytest.fixture
    def store(self, raw: Any, bucket: str) -> Iterator[Store]:
        s = S3Store(self._fresh(raw, bucket), multipart_threshold=THRESHOLD, part_size=PART)
        yield s
        close_store(s)


class TestS3StoreWrapped(_S3Hooks):
    """The store as the operations use it: ``wrap`` (retries inside one limit)."""

    @pytest.fixture
    def store(self, raw: Any, bucket: str) -> Iterator[Store]:
        inner = S3Store(self._fresh(raw, bucket), multipart_threshold=THRESHOLD, part_size=PART)
        s = wrap(inner, jobs=6)
        yield s
        close_store(s)


class TestS3StoreThroughFaults(_S3Hooks):
    """The wrapped store behind a proxy that fails ~15% of requests (5xx, 429, resets of the
    request or the response, lost responses), with botocore's retries off: every fault must
    be absorbed by RetryingStore, resumed downloads and the 412 handling."""

    #: Share of requests that fail. ``SNAPDIR_TEST_FAULT_SEED`` varies which ones (the
    #: default seed is fixed, so a run is repeatable up to thread scheduling).
    fault_rate = 0.15

    @pytest.fixture(scope="class")
    @classmethod
    def faulty(cls, seaweedfs: S3Server) -> Iterator[FaultProxy]:
        """One proxy for the class (stopping one costs half a second)."""
        seed = 20240611 + int(os.environ.get("SNAPDIR_TEST_FAULT_SEED", "0"))
        p = _new_proxy(
            seaweedfs,
            rate=cls.fault_rate,
            kinds=["503", "500", "429", "reset_request", "reset_response", "lost_response"],
            seed=seed,
            retry_after="0",
        )
        try:
            yield p
        finally:
            p.stop()
        assert p.stats.total_injected >= 20, f"too few faults were injected: {p.stats}"

    @pytest.fixture
    def store(self, raw: Any, bucket: str, faulty: FaultProxy) -> Iterator[Store]:
        inner = S3Store(
            self._fresh(raw, bucket),
            endpoint_url=faulty.url,
            multipart_threshold=THRESHOLD,
            part_size=PART,
            client_config={"retries": {"mode": "standard", "total_max_attempts": 1}},
        )
        s = wrap(inner, jobs=6, retry=RetryPolicy(base_delay=0.01, max_delay=0.1, max_elapsed=60))
        yield s
        close_store(s)


# -------------------------------------------------------------------------------------------
# Uploads
# -------------------------------------------------------------------------------------------


def _store(bucket: str, **kwargs: Any) -> tuple[S3Store, str]:
    parent = f"t-{uid()}"
    kwargs.setdefault("multipart_threshold", THRESHOLD)
    kwargs.setdefault("part_size", PART)
    return S3Store(f"s3://{bucket}/{parent}/store", **kwargs), parent


def test_open_store_builds_an_s3_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPDIR_S3_MULTIPART_THRESHOLD", str(7 * MiB))
    monkeypatch.setenv("SNAPDIR_S3_PART_SIZE", str(6 * MiB))
    store = open_store("s3://some-bucket/a/b/")
    assert isinstance(store, S3Store)
    assert store.uri == "s3://some-bucket/a/b"
    assert (store.multipart_threshold, store.part_size) == (7 * MiB, 6 * MiB)
    assert store.request_count() == 0  # nothing sent on open


def test_multipart_upload(raw: Any, bucket: str, tmp_path: Path) -> None:
    store, parent = _store(bucket)
    data = random_bytes(LARGE, 1)
    checksum = blake3_hex(data)
    source = tmp_path / "big"
    source.write_bytes(data)
    try:
        anyio.run(store.put_object, checksum, str(source), LARGE)
    finally:
        close_store(store)
    key = f"{parent}/store/{object_key(checksum)}"
    head = raw.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3"), "three parts of 5, 5 and 1 MiB"
    assert raw.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_multipart_upload_part_size_grows_for_huge_files(bucket: str) -> None:
    store, _ = _store(bucket, part_size=PART)
    assert store._part_size_for(10 * PART) == PART
    huge = 200 * 1024 * MiB * 1024  # 200 TiB: more than 10,000 parts of 5 MiB
    part = store._part_size_for(huge)
    assert part % MiB == 0
    assert -(-huge // part) <= 10_000


def test_source_changed_mid_multipart(
    raw: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file changes after its first part went up: the digest of the bytes read does
    not match, so the last part is never sent, the upload is aborted (no parts left behind)
    and no object appears."""
    store, parent = _store(bucket, part_concurrency=1)
    data = random_bytes(LARGE, 2)
    checksum = blake3_hex(data)
    source = tmp_path / "big"
    source.write_bytes(data)
    original = store._upload_part
    calls: list[int] = []

    def upload_part(key: str, upload_id: str, number: int, part: bytes) -> str:
        calls.append(number)
        if number == 1:  # the rest of the file changes while part 1 is on its way
            with open(source, "r+b") as f:
                f.seek(LARGE - 10)
                f.write(b"0123456789")
        return original(key, upload_id, number, part)

    monkeypatch.setattr(store, "_upload_part", upload_part)
    try:
        with pytest.raises(InFluxError, match="changed while it was being uploaded"):
            anyio.run(store.put_object, checksum, str(source), LARGE)
        assert not anyio.run(store.has_object, checksum)
    finally:
        close_store(store)
    assert calls == [1, 2], "every part but the last: its read saw the change"
    assert _list_all(raw, bucket, parent + "/") == set()
    uploads = raw.list_multipart_uploads(Bucket=bucket, Prefix=parent + "/")
    assert uploads.get("Uploads", []) == [], "the multipart upload was aborted"


def test_source_changed_between_signing_and_sending(raw: Any, bucket: str, tmp_path: Path) -> None:
    """botocore reads the body once to sign it (SHA-256 payload) and again to send it. The
    file changes in between: the send pass no longer hashes to the key, the reader refuses
    to hand over the last bytes, and nothing is stored (the server never sees a complete
    body, so this is our check, not the server's signature check). Small files are read once
    and sent from memory (the lean path), so this is the streamed path: ``small_put_max=0``."""
    store, parent = _store(bucket, small_put_max=0)
    data = random_bytes(300_000, 3)
    checksum = blake3_hex(data)
    source = tmp_path / "src"
    source.write_bytes(data)
    client = store._client()
    changed: list[str] = []

    def before_send(request: Any, **kwargs: Any) -> None:
        if request.method == "PUT" and not changed:
            with open(source, "r+b") as f:
                f.seek(1000)
                f.write(b"tampered")
            changed.append(request.url)

    client.meta.events.register("before-send.s3.PutObject", before_send)
    try:
        with pytest.raises(InFluxError, match="changed while it was being uploaded"):
            anyio.run(store.put_object, checksum, str(source), len(data))
        assert not anyio.run(store.has_object, checksum)
    finally:
        close_store(store)
    assert changed, "the hook ran"
    assert _list_all(raw, bucket, parent + "/") == set()


def test_verifying_reader_rehashes_on_every_pass(tmp_path: Path) -> None:
    data = random_bytes(100_000, 4)
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as f:
        r = UploadReader(f, len(data), blake3_hex(data), str(path))
        assert len(r) == len(data)
        assert r.read(1000) == data[:1000]
        assert r.seek(0) == 0  # a new pass: the hash restarts
        assert r.read() == data
        assert r.read() == b""
        r.seek(0)
        chunks = [r.read(7777) for _ in range(20)]
        assert b"".join(chunks) == data
        r.seek(500)  # a pass starting mid-way: the skipped bytes are hashed too
        assert r.read() == data[500:]
        assert r.passes == 3
        r.seek(0, os.SEEK_END)
        assert r.tell() == len(data)


def test_verifying_reader_withholds_the_last_bytes(tmp_path: Path) -> None:
    data = random_bytes(50_000, 5)
    path = tmp_path / "f"
    path.write_bytes(data[:-1] + b"!")
    with open(path, "rb") as f:
        r = UploadReader(f, len(data), blake3_hex(data), str(path))
        assert len(r.read(40_000)) == 40_000
        with pytest.raises(InFluxError):
            r.read(40_000)  # would have been the final 10,000 bytes
        r.seek(0)
        with pytest.raises(InFluxError):  # once failed, it stays failed
            r.read(10)
    path.write_bytes(data + b"x")
    with open(path, "rb") as f:
        r = UploadReader(f, len(data), blake3_hex(data), str(path))
        with pytest.raises(InFluxError, match="grew"):
            r.read()


def test_conditional_create(raw: Any, bucket: str, tmp_path: Path) -> None:
    """Creates are If-None-Match: *; a second put of an existing key gets 412 and is
    accepted after the object is confirmed (size, and hash for a small object); a corrupt
    object in the way is repaired with the verified bytes."""
    store, parent = _store(bucket)
    data = random_bytes(10_000, 6)
    checksum = blake3_hex(data)
    source = tmp_path / "src"
    source.write_bytes(data)
    key = f"{parent}/store/{object_key(checksum)}"
    try:
        assert Capability.CONDITIONAL_PUT in store.capabilities
        anyio.run(store.put_object, checksum, str(source), len(data))
        before = store.request_count()
        anyio.run(store.put_object, checksum, str(source), len(data))
        assert store.request_count() - before == 3, "PUT (412), HEAD, GET to confirm"

        for bad in (data[:-1] + b"!", b"short"):  # same size, other size
            raw.put_object(Bucket=bucket, Key=key, Body=bad)
            anyio.run(store.put_object, checksum, str(source), len(data))
            assert raw.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert Capability.CONDITIONAL_PUT in store.capabilities
    finally:
        close_store(store)


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "botocore"])
def test_conditional_create_falls_back_when_unsupported(
    bucket: str, tmp_path: Path, lean: bool
) -> None:
    """A server that answers If-None-Match with 501 NotImplemented: the store drops the
    capability and uses plain PUTs (harmless for content-addressed keys). The answer is
    injected where both request paths pass: botocore's ``before-send`` event."""
    from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]

    store, _ = _store(bucket, lean=lean)
    client = store._client()
    refused: list[str] = []

    def before_send(request: Any, **kwargs: Any) -> None:
        if request.method == "PUT" and request.headers.get("If-None-Match"):
            refused.append(request.url)
            error = {"Error": {"Code": "NotImplemented", "Message": "If-None-Match"}}
            raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")

    client.meta.events.register("before-send.s3.PutObject", before_send)
    data = b"no conditional writes here"
    source = tmp_path / "src"
    source.write_bytes(data)
    try:
        anyio.run(store.put_object, blake3_hex(data), str(source), len(data))
        anyio.run(store.put_object, blake3_hex(data), str(source), len(data))
        assert len(refused) == 1
        assert Capability.CONDITIONAL_PUT not in store.capabilities
        assert anyio.run(store.has_object, blake3_hex(data))
    finally:
        close_store(store)


def test_conditional_put_can_be_turned_off(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPDIR_S3_CONDITIONAL_PUT", "0")
    store, _ = _store(bucket)
    assert Capability.CONDITIONAL_PUT not in store.capabilities
    data = b"plain"
    (tmp_path / "src").write_bytes(data)
    try:
        for _ in range(2):
            anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
    finally:
        close_store(store)


def test_push_repair_mends_same_size_damage_past_the_hash_check(
    raw: Any, bucket: str, tmp_path: Path
) -> None:
    """A large object damaged in place, size unchanged: a put finding it (412) only checks
    its size, so ``push(repair=True)`` re-uploads it with ``replace`` (no If-None-Match)."""
    store, parent = _store(bucket, verify_on_conflict_max=MiB)

    def key(checksum: str) -> str:
        return f"{parent}/store/{object_key(checksum)}"

    def plant(checksum: str, data: bytes) -> None:
        raw.put_object(Bucket=bucket, Key=key(checksum), Body=data)

    def read(checksum: str) -> bytes:
        body: bytes = raw.get_object(Bucket=bucket, Key=key(checksum))["Body"].read()
        return body

    try:
        check_repair_of_same_size_damage(store, tmp_path, LARGE, plant, read)
    finally:
        close_store(store)


def test_lost_put_response_is_success_after_retry(
    raw: Any, bucket: str, tmp_path: Path, seaweedfs: S3Server
) -> None:
    """The PUT reaches the server and is stored, but the answer is lost. The retry gets
    412 (the key exists), which counts as success once the object is confirmed."""
    p = _new_proxy(
        seaweedfs, rate=0.0, kinds=["lost_response"], methods=["PUT"], script=["lost_response"]
    )
    inner, _ = _store(
        bucket,
        endpoint_url=p.url,
        client_config={"retries": {"mode": "standard", "total_max_attempts": 1}},
    )
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01))
    data = random_bytes(5000, 7)
    (tmp_path / "src").write_bytes(data)
    try:
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
        assert p.stats.count(FaultKind.LOST_RESPONSE) == 1
        assert store.retries == 1
        assert anyio.run(inner.has_object, blake3_hex(data))
    finally:
        close_store(store)
        p.stop()


def test_lost_multipart_completion_is_confirmed(
    raw: Any, bucket: str, tmp_path: Path, seaweedfs: S3Server
) -> None:
    """CompleteMultipartUpload succeeds but its answer is lost; botocore retries it and
    the server no longer knows the upload. The store confirms the object and succeeds."""
    p = _new_proxy(
        seaweedfs,
        rate=0.0,
        kinds=["lost_response"],
        methods=["POST"],
        path_regex=r"uploadId=",
        script=["lost_response"],
    )
    store, parent = _store(bucket, endpoint_url=p.url)
    data = random_bytes(LARGE, 8)
    checksum = blake3_hex(data)
    (tmp_path / "src").write_bytes(data)
    try:
        anyio.run(store.put_object, checksum, str(tmp_path / "src"), LARGE)
        assert p.stats.count(FaultKind.LOST_RESPONSE) == 1
    finally:
        close_store(store)
        p.stop()
    key = f"{parent}/store/{object_key(checksum)}"
    assert raw.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert raw.list_multipart_uploads(Bucket=bucket, Prefix=parent + "/").get("Uploads", []) == []


# -------------------------------------------------------------------------------------------
# Downloads
# -------------------------------------------------------------------------------------------


def test_broken_download_is_resumed_with_a_range(
    raw: Any, bucket: str, tmp_path: Path, seaweedfs: S3Server
) -> None:
    """The connection is reset part-way through the body: the store asks for the rest with
    ``Range: bytes=<offset>-`` (not from zero), and the whole is still verified."""
    store, parent = _store(bucket)
    data = random_bytes(3 * MiB, 9)
    checksum = blake3_hex(data)
    raw.put_object(Bucket=bucket, Key=f"{parent}/store/{object_key(checksum)}", Body=data)
    p = _new_proxy(
        seaweedfs, rate=0.0, kinds=["reset_response"], methods=["GET"], script=["reset_response"]
    )
    store = S3Store(
        store.uri,
        endpoint_url=p.url,
        client_config={"retries": {"mode": "standard", "total_max_attempts": 1}},
    )
    ranges: list[str | bytes | None] = []

    def before_send(request: Any, **kwargs: Any) -> None:
        ranges.append(request.headers.get("Range"))

    store._client().meta.events.register("before-send.s3.GetObject", before_send)
    dest = tmp_path / "dest"
    try:
        anyio.run(store.get_object, checksum, str(dest))
    finally:
        close_store(store)
        p.stop()
    assert p.stats.count(FaultKind.RESET_RESPONSE) == 1
    assert dest.read_bytes() == data
    assert len(ranges) == 2
    assert ranges[0] is None
    second = ranges[1]
    if isinstance(second, bytes):
        second = second.decode()
    assert second is not None
    assert second.startswith("bytes=")
    assert second.endswith("-")
    offset = int(second[len("bytes=") : -1])
    assert 0 < offset < len(data), "resumed from where the stream broke, not from zero"


def test_resumed_download_of_a_corrupt_object_is_refused(
    raw: Any, bucket: str, tmp_path: Path, seaweedfs: S3Server
) -> None:
    store, parent = _store(bucket)
    data = random_bytes(2 * MiB, 10)
    checksum = blake3_hex(data)
    bad = data[:-1] + b"\0"
    raw.put_object(Bucket=bucket, Key=f"{parent}/store/{object_key(checksum)}", Body=bad)
    p = _new_proxy(
        seaweedfs,
        rate=0.0,
        kinds=["reset_response"],
        methods=["GET"],
        script=["reset_response", "reset_response"],
    )
    store = S3Store(store.uri, endpoint_url=p.url)
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
    """One LIST page answers for up to 1000 objects; ``has_object`` costs one HEAD each.
    Paging works (a small page size forces several pages)."""
    store, _ = _store(bucket)
    blobs = [random_bytes(10 + i, 100 + i) for i in range(30)]
    puts = []
    for i, d in enumerate(blobs):
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
        store.list_page_size = 7
        n = store.request_count()
        assert await store.list_objects() == expected
        assert store.request_count() - n == 5  # ceil(30 / 7)

    try:
        anyio.run(body)
    finally:
        close_store(store)


def test_listing_ignores_stray_keys(raw: Any, bucket: str, tmp_path: Path) -> None:
    store, parent = _store(bucket)
    good = blake3_hex(b"good")
    root = f"{parent}/store/"
    for key in [root + object_key(good), *stray_keys(root)]:
        raw.put_object(Bucket=bucket, Key=key, Body=b"x")
    try:
        assert anyio.run(store.list_objects) == {good}
        assert anyio.run(store.list_manifests) == []
    finally:
        close_store(store)


# -------------------------------------------------------------------------------------------
# Configuration and errors
# -------------------------------------------------------------------------------------------


def test_endpoint_from_aws_endpoint_url(
    bucket: str, tmp_path: Path, seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SNAPDIR_S3_STORE_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs.endpoint_url)
    store, _ = _store(bucket)
    try:
        assert anyio.run(store.list_manifests) == []
    finally:
        close_store(store)


def test_missing_credentials(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store, _ = _store(bucket)
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.has_object, blake3_hex(b"x"))
    finally:
        close_store(store)
    message = str(info.value)
    assert not isinstance(info.value, TransientStoreError)
    for hint in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "~/.aws/credentials"):
        assert hint in message
    assert bucket in message


def test_unknown_profile(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    store, _ = _store(bucket)
    try:
        with pytest.raises(StoreError, match="no-such-profile") as info:
            anyio.run(store.has_manifest, blake3_hex(b"x"))
    finally:
        close_store(store)
    assert "~/.aws/credentials" in str(info.value)


def test_wrong_secret_is_reported_without_the_secret(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "wrong-secret-" + uid()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    store, _ = _store(bucket)
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.list_manifests)
    finally:
        close_store(store)
    message = str(info.value)
    assert "SignatureDoesNotMatch" in message
    assert "AWS_SECRET_ACCESS_KEY" in message
    assert secret not in message
    assert secret not in repr(info.value.__cause__)


def test_missing_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    store = S3Store(f"s3://no-such-bucket-{uid()}/x")
    try:
        with pytest.raises(StoreError, match="does not exist"):
            anyio.run(store.list_manifests)
    finally:
        close_store(store)


# -------------------------------------------------------------------------------------------
# Retries, Retry-After and limits
# -------------------------------------------------------------------------------------------


def test_transient_errors_carry_retry_after(bucket: str, seaweedfs: S3Server) -> None:
    p = _new_proxy(seaweedfs, rate=1.0, kinds=["503"], retry_after="7")
    store, _ = _store(
        bucket,
        endpoint_url=p.url,
        client_config={"retries": {"mode": "standard", "total_max_attempts": 1}},
    )
    try:
        with pytest.raises(TransientStoreError) as info:
            anyio.run(store.has_object, blake3_hex(b"x"))
    finally:
        close_store(store)
        p.stop()
    assert info.value.retry_after == 7.0
    assert store.is_transient(info.value)


def test_retry_honours_retry_after(bucket: str, seaweedfs: S3Server) -> None:
    p = _new_proxy(seaweedfs, rate=0.0, kinds=["429"], script=["429"], retry_after="1")
    inner, _ = _store(
        bucket,
        endpoint_url=p.url,
        client_config={"retries": {"mode": "standard", "total_max_attempts": 1}},
    )
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01, max_delay=0.05))
    try:
        start = time.monotonic()
        assert anyio.run(store.list_manifests) == []
        elapsed = time.monotonic() - start
    finally:
        close_store(store)
        p.stop()
    assert store.retries == 1
    assert elapsed >= 1.0, "waited for Retry-After, not for the (shorter) backoff"


def test_retry_gives_up_after_its_budget(bucket: str, seaweedfs: S3Server) -> None:
    p = _new_proxy(seaweedfs, rate=1.0, kinds=["503"], retry_after=None)
    inner, _ = _store(
        bucket,
        endpoint_url=p.url,
        client_config={"retries": {"mode": "standard", "total_max_attempts": 1}},
    )
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01, max_delay=0.02, max_elapsed=2.0))
    try:
        with pytest.raises(StoreError) as info:
            anyio.run(store.has_manifest, blake3_hex(b"x"))
    finally:
        close_store(store)
        p.stop()
    assert not isinstance(info.value, TransientStoreError), "not retried again by an outer layer"
    assert "attempt" in str(info.value)
    assert store.retries >= 3


def test_retry_does_not_retry_permanent_errors(bucket: str, tmp_path: Path) -> None:
    inner, _ = _store(bucket)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01))
    try:
        with pytest.raises(NotFoundError):
            anyio.run(store.get_object, blake3_hex(b"nope"), str(tmp_path / "d"))
        (tmp_path / "src").write_bytes(b"changed")
        with pytest.raises(InFluxError):
            anyio.run(store.put_object, blake3_hex(b"walked!"), str(tmp_path / "src"), 7)
    finally:
        close_store(store)
    assert store.retries == 0


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=30.0)
    rng = random.Random(1)
    for attempt in range(1, 30):
        ceiling = min(30.0, 0.2 * 2**attempt)
        for _ in range(20):
            assert 0.2 <= policy.delay(attempt, None, rng) <= ceiling
    assert policy.delay(1, 12.5, rng) == 12.5
    assert policy.delay(50, None, rng) <= 30.0


class _SlowStore(BaseStore):
    """A fake store that records how many calls run at once."""

    capabilities = Capability.NONE

    def __init__(self) -> None:
        super().__init__(open_store("s3://fake-bucket/x").uri)
        self.running = 0
        self.peak = 0
        self.failures: list[BaseException] = []

    async def _work(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await anyio.sleep(0.01)
        finally:
            self.running -= 1

    async def has_object(self, checksum: str) -> bool:
        await self._work()
        if self.failures:
            raise self.failures.pop()
        return True

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        await self._work()

    async def has_manifest(self, snapshot_id: str) -> bool:
        return False

    async def get_manifest(self, snapshot_id: str) -> Manifest:
        raise NotFoundError(snapshot_id)

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        return None

    async def list_manifests(self) -> list[str]:
        return []


def test_limited_store_bounds_every_call() -> None:
    inner = _SlowStore()
    store = LimitedStore(inner, jobs=3)
    puts = [ObjectPut(blake3_hex(bytes([i])), "/dev/null", 0) for i in range(20)]

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(store.has_object, blake3_hex(bytes([i])))
            tg.start_soon(lambda: store.put_objects(puts, jobs=10))
            tg.start_soon(lambda: store.put_objects(puts, jobs=10))

    anyio.run(body)
    assert inner.peak == 3
    anyio.run(body, backend="trio")  # the same store object on another event loop
    assert inner.peak == 3


def test_retrying_store_with_a_third_party_classifier() -> None:
    """A backend that only answers ``is_transient`` (no TransientStoreError) is retried."""

    class Flaky(_SlowStore):
        def is_transient(self, exc: BaseException) -> bool:
            return isinstance(exc, ConnectionResetError)

    inner = Flaky()
    inner.failures = [ConnectionResetError("reset"), ConnectionResetError("reset")]
    store = RetryingStore(inner, RetryPolicy(base_delay=0.001, max_delay=0.002))
    assert anyio.run(store.has_object, blake3_hex(b"x")) is True
    assert store.retries == 2
    inner.failures = [ValueError("permanent")]
    with pytest.raises(ValueError, match="permanent"):
        anyio.run(store.has_object, blake3_hex(b"x"))


def test_wrap(bucket: str, tmp_path: Path) -> None:
    s3, _ = _store(bucket)
    wrapped = wrap(s3, jobs=5)
    assert isinstance(wrapped, LimitedStore)
    assert isinstance(wrapped.inner, RetryingStore)
    assert unwrap(wrapped) is s3
    assert s3._pool == 5 + s3.part_concurrency, "the pool is sized to the limit"
    assert isinstance(wrapped, Store)
    assert wrapped.capabilities == s3.capabilities
    local = wrap(open_store(f"file://{tmp_path}/store"), jobs=2)
    assert isinstance(local, LimitedStore)
    assert not isinstance(local.inner, RetryingStore), "local stores are not retried"
    plain = wrap(s3, retry=False)
    assert isinstance(plain, LimitedStore)
    assert plain.inner is s3


def test_authentic_hostile_manifest_reports_the_parse_error(raw: Any, bucket: str) -> None:
    """A manifest whose stored bytes hash to its id is authentic; if it does not parse (an
    unsafe path), that is reported as the parser says, not as corruption."""
    from snapdir import UnsafePathError
    from snapdir.stores import manifest_key

    store, parent = _store(bucket)
    text = f"F 644 {blake3_hex(b'x')} 1 ./../evil\n".encode()
    snapshot_id = blake3_hex(text)
    raw.put_object(Bucket=bucket, Key=f"{parent}/store/{manifest_key(snapshot_id)}", Body=text)
    try:
        with pytest.raises(UnsafePathError, match=r"\.\./evil"):
            anyio.run(store.get_manifest, snapshot_id)
    finally:
        close_store(store)


# -------------------------------------------------------------------------------------------
# The journal's cost
# -------------------------------------------------------------------------------------------


def test_ls_costs_the_list_pages_and_nothing_else(raw: Any, bucket: str) -> None:
    """Everything ``ls`` shows is in the journal keys: 2,500 snapshots are three list pages
    of 1,000 (10,000 would be ten), no GET per entry."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timedelta, timezone

    from snapdir.lifecycle import ls
    from snapdir.lifecycle.journal import SnapshotInfo, entry_body, entry_key

    prefix = f"ls-{uid()}/store"
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    infos = [
        SnapshotInfo(blake3_hex(str(i).encode()), t0 + timedelta(minutes=i), f"h{i % 3}",
                     "ci", f"/build/{i % 7}", i, 1000 * i, ("nightly",) if i % 2 else ())
        for i in range(2500)
    ]  # fmt: skip

    def plant(info: SnapshotInfo) -> None:
        key = f"{prefix}/{entry_key(info)}"
        raw.put_object(Bucket=bucket, Key=key, Body=entry_body(info, "snapdir test"))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(plant, infos))
    store = S3Store(f"s3://{bucket}/{prefix}")
    try:
        before = store.request_count()
        listed = anyio.run(ls, store)
        assert store.request_count() - before == 3
        assert listed == sorted(infos, key=lambda i: i.time, reverse=True)
        nightly = anyio.run(lambda: ls(store, label="nightly", host="h1"))
        assert nightly == [i for i in reversed(infos) if i.labels and i.host == "h1"]
    finally:
        close_store(store)
