"""The loopback storage servers, started for real and driven with the real SDKs.

These tests pin down what the S3 (SeaweedFS), GCS (fake-gcs-server) and B2 (b2sdk simulator)
test servers do, including where they differ from the real services, and check that the fault
proxy injects what it says while the SDKs' own retries get a put+get through.
"""

from __future__ import annotations

import gc
import hashlib
import http.client
import io
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from servers.b2sim import B2Server
from servers.fakegcs import GcsServer
from servers.faultproxy import FaultKind, start_fault_proxy
from servers.seaweed import S3Server

MiB = 1024 * 1024
K = FaultKind

# When the fault proxy resets a connection mid-body, some SDK stacks (google-cloud-storage's
# download path, for one) drop the broken socket without closing it; it is closed later by the
# garbage collector with a ResourceWarning.  That is the client library's leak, not a test
# failure: ignore exactly that, and collect garbage after each test (below) so such warnings
# surface here rather than in some later test module.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning",
    "ignore:unclosed <socket.socket:ResourceWarning",
)


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    yield
    gc.collect()


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _uid() -> str:
    return uuid.uuid4().hex[:12]


def _alternate(*kinds: FaultKind) -> list[FaultKind | None]:
    """A script with a clean request after each failing fault, so every operation meets one
    fault (``LATENCY`` does not fail, so it needs no clean follow-up)."""
    script: list[FaultKind | None] = []
    for kind in kinds:
        script += [kind] if kind is FaultKind.LATENCY else [kind, None]
    return script


# ---------------------------------------------------------------------------------------------
# S3: SeaweedFS
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def s3_bucket(seaweedfs: S3Server) -> str:
    name = f"t-{_uid()}"
    seaweedfs.client().create_bucket(Bucket=name)
    return name


def _client_error() -> Any:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]

    return ClientError


def test_s3_put_get_ranged_get_and_missing_keys(seaweedfs: S3Server, s3_bucket: str) -> None:
    ClientError = _client_error()
    s3 = seaweedfs.client()
    data = _data(100_000, 1)
    s3.put_object(Bucket=s3_bucket, Key="dir/obj", Body=data)

    assert s3.get_object(Bucket=s3_bucket, Key="dir/obj")["Body"].read() == data
    part = s3.get_object(Bucket=s3_bucket, Key="dir/obj", Range="bytes=10-19")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == "bytes 10-19/100000"
    assert part["Body"].read() == data[10:20]
    assert s3.head_object(Bucket=s3_bucket, Key="dir/obj")["ContentLength"] == len(data)

    with pytest.raises(ClientError) as head_missing:
        s3.head_object(Bucket=s3_bucket, Key="dir/missing")
    assert head_missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert head_missing.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError) as get_missing:
        s3.get_object(Bucket=s3_bucket, Key="dir/missing")
    assert get_missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_s3_list_objects_v2_prefix_delimiter_and_paging(
    seaweedfs: S3Server, s3_bucket: str
) -> None:
    s3 = seaweedfs.client()
    keys = ["a/1", "a/2", "a/sub/3", "a/sub/deeper/4", "b/5", "top"]
    for key in keys:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())

    shallow = s3.list_objects_v2(Bucket=s3_bucket, Prefix="a/", Delimiter="/")
    assert [c["Key"] for c in shallow["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in shallow["CommonPrefixes"]] == ["a/sub/"]
    deep = s3.list_objects_v2(Bucket=s3_bucket, Prefix="a/")
    assert [c["Key"] for c in deep["Contents"]] == ["a/1", "a/2", "a/sub/3", "a/sub/deeper/4"]

    seen: list[str] = []
    pages = 0
    kwargs: dict[str, Any] = {"Bucket": s3_bucket, "MaxKeys": 2}
    while True:
        page = s3.list_objects_v2(**kwargs)
        pages += 1
        seen += [c["Key"] for c in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    assert seen == keys
    assert pages == 3


def test_s3_if_none_match_put_is_honoured(seaweedfs: S3Server, s3_bucket: str) -> None:
    ClientError = _client_error()
    s3 = seaweedfs.client()
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"first")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert exc.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"first"

    created = s3.put_object(Bucket=s3_bucket, Key="fresh", Body=b"x", IfNoneMatch="*")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as wrong_etag:
        s3.put_object(Bucket=s3_bucket, Key="fresh", Body=b"y", IfMatch='"0123456789abcdef"')
    assert wrong_etag.value.response["Error"]["Code"] == "PreconditionFailed"


def test_s3_multipart_upload_and_conditional_complete(seaweedfs: S3Server, s3_bucket: str) -> None:
    ClientError = _client_error()
    from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped,unused-ignore]

    s3 = seaweedfs.client()
    part1, part2 = _data(5 * MiB, 2), _data(1000, 3)

    def multipart(key: str, parts: list[bytes], **complete_args: Any) -> Any:
        upload_id = s3.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        etags = [
            s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body)[
                "ETag"
            ]
            for n, body in enumerate(parts, start=1)
        ]
        layout = {"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]}
        try:
            return s3.complete_multipart_upload(
                Bucket=s3_bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload=layout,
                **complete_args,
            )
        except ClientError:
            s3.abort_multipart_upload(Bucket=s3_bucket, Key=key, UploadId=upload_id)
            raise

    multipart("mp", [part1, part2])
    head = s3.head_object(Bucket=s3_bucket, Key="mp")
    assert head["ContentLength"] == len(part1) + len(part2)
    assert head["ETag"].endswith('-2"')
    boundary = len(part1)
    across = s3.get_object(Bucket=s3_bucket, Key="mp", Range=f"bytes={boundary - 3}-{boundary + 2}")
    assert across["Body"].read() == part1[-3:] + part2[:3]

    with pytest.raises(ClientError) as exc:
        multipart("mp", [b"replacement"], IfNoneMatch="*")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.head_object(Bucket=s3_bucket, Key="mp")["ContentLength"] == len(part1) + len(part2)
    fresh = multipart("mp-new", [b"only part"], IfNoneMatch="*")
    assert fresh["ResponseMetadata"]["HTTPStatusCode"] == 200

    big = _data(20 * MiB, 4)
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_fileobj(io.BytesIO(big), s3_bucket, "big", Config=config)
    assert s3.head_object(Bucket=s3_bucket, Key="big")["ETag"].endswith('-3"')
    out = io.BytesIO()
    s3.download_fileobj(s3_bucket, "big", out)
    assert out.getvalue() == big


def test_s3_rejects_a_wrong_secret(seaweedfs: S3Server, s3_bucket: str) -> None:
    ClientError = _client_error()
    from servers.seaweed import s3_client

    bad = s3_client(seaweedfs.endpoint_url, seaweedfs.access_key, "not-the-secret", "us-east-1")
    with pytest.raises(ClientError) as exc:
        bad.list_objects_v2(Bucket=s3_bucket)
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_puts_survive_every_fault_kind_via_botocore_retries(
    seaweedfs: S3Server, s3_bucket: str
) -> None:
    script = _alternate(*K)
    blobs = {f"obj{i}": _data(50_000 + i, 10 + i) for i in range(len(K))}
    with start_fault_proxy(
        seaweedfs.endpoint_url, rate=0.0, script=script, methods=["PUT"], flavor="s3", latency_s=0.2
    ) as proxy:
        s3 = seaweedfs.client(endpoint_url=proxy.url)  # signed for the proxy's Host
        for key, body in blobs.items():
            s3.put_object(Bucket=s3_bucket, Key=key, Body=body)
        stats = proxy.stats
    assert stats.injected == Counter({k.value: 1 for k in K})
    direct = seaweedfs.client()
    for key, body in blobs.items():
        assert direct.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == body


def test_s3_gets_retry_but_a_mid_body_reset_reaches_the_caller(
    seaweedfs: S3Server, s3_bucket: str
) -> None:
    from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
        ResponseStreamingError,
    )

    data = _data(1 * MiB, 5)
    seaweedfs.client().put_object(Bucket=s3_bucket, Key="obj", Body=data)
    retried = [K.ERROR_503, K.ERROR_500, K.ERROR_429, K.RESET_REQUEST, K.LOST_RESPONSE]
    with start_fault_proxy(
        seaweedfs.endpoint_url, rate=0.0, script=_alternate(*retried), methods=["GET"], flavor="s3"
    ) as proxy:
        s3 = seaweedfs.client(endpoint_url=proxy.url)
        for _ in retried:
            assert s3.get_object(Bucket=s3_bucket, Key="obj")["Body"].read() == data
        assert proxy.stats.total_injected == len(retried)

        # botocore returns once the headers are in; a reset inside the body is not retried.
        proxy.configure(script=[K.RESET_RESPONSE])
        body = s3.get_object(Bucket=s3_bucket, Key="obj")["Body"]
        with pytest.raises(ResponseStreamingError):
            body.read()
        # s3transfer's download_fileobj retries a broken body stream by itself.
        proxy.configure(script=[K.RESET_RESPONSE])
        out = io.BytesIO()
        s3.download_fileobj(s3_bucket, "obj", out)
        assert out.getvalue() == data
        assert proxy.stats.count(K.RESET_RESPONSE) == 2


def test_s3_lost_response_turns_a_retried_conditional_put_into_412(
    seaweedfs: S3Server, s3_bucket: str
) -> None:
    """The first attempt commits, its answer is lost, the retry finds the key: 412."""
    ClientError = _client_error()
    with start_fault_proxy(
        seaweedfs.endpoint_url, rate=0.0, script=[K.LOST_RESPONSE], methods=["PUT"], flavor="s3"
    ) as proxy:
        s3 = seaweedfs.client(endpoint_url=proxy.url)
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=s3_bucket, Key="once", Body=b"mine", IfNoneMatch="*")
        assert proxy.stats.forwarded == 2
    assert exc.value.response["Error"]["Code"] == "PreconditionFailed"
    direct = seaweedfs.client()
    assert direct.get_object(Bucket=s3_bucket, Key="once")["Body"].read() == b"mine"


def test_s3_random_faults_put_and_get_round_trip(seaweedfs: S3Server, s3_bucket: str) -> None:
    safe = [K.ERROR_503, K.ERROR_500, K.ERROR_429, K.RESET_REQUEST, K.LOST_RESPONSE, K.LATENCY]
    with start_fault_proxy(
        seaweedfs.endpoint_url, rate=0.3, kinds=safe, seed=1234, flavor="s3", latency_s=0.05
    ) as proxy:
        s3 = seaweedfs.client(endpoint_url=proxy.url)
        for i in range(8):
            body = _data(20_000 + i, 100 + i)
            s3.put_object(Bucket=s3_bucket, Key=f"r{i}", Body=body)
            assert s3.get_object(Bucket=s3_bucket, Key=f"r{i}")["Body"].read() == body
        stats = proxy.stats
    assert stats.total_injected >= 3
    assert stats.eligible == stats.requests


# ---------------------------------------------------------------------------------------------
# GCS: fake-gcs-server
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def gcs_bucket(fake_gcs: GcsServer) -> str:
    name = f"t-{_uid()}"
    fake_gcs.client().create_bucket(name)
    return name


def _gcs_exceptions() -> Any:
    from google.api_core import exceptions

    return exceptions


def test_gcs_put_get_ranged_get_and_missing(fake_gcs: GcsServer, gcs_bucket: str) -> None:
    exc = _gcs_exceptions()
    bucket = fake_gcs.client().bucket(gcs_bucket)
    data = _data(100_000, 20)
    bucket.blob("dir/obj").upload_from_string(data)
    assert bucket.blob("dir/obj").download_as_bytes() == data
    assert bucket.blob("dir/obj").download_as_bytes(start=10, end=19) == data[10:20]
    assert bucket.get_blob("dir/obj").size == len(data)
    assert bucket.get_blob("dir/missing") is None
    with pytest.raises(exc.NotFound):
        bucket.blob("dir/missing").download_as_bytes()


def test_gcs_list_blobs_prefix_delimiter_and_paging(fake_gcs: GcsServer, gcs_bucket: str) -> None:
    client = fake_gcs.client()
    keys = ["a/1", "a/2", "a/sub/3", "a/sub/deeper/4", "b/5", "top"]
    for key in keys:
        client.bucket(gcs_bucket).blob(key).upload_from_string(key.encode())

    shallow = client.list_blobs(gcs_bucket, prefix="a/", delimiter="/")
    assert [b.name for b in shallow] == ["a/1", "a/2"]
    assert shallow.prefixes == {"a/sub/"}
    assert [b.name for b in client.list_blobs(gcs_bucket, prefix="a/")] == keys[:4]
    pages = list(client.list_blobs(gcs_bucket, page_size=2).pages)
    assert [b.name for page in pages for b in page] == keys
    assert len(pages) == 3


def test_gcs_if_generation_match_on_single_request_uploads(
    fake_gcs: GcsServer, gcs_bucket: str
) -> None:
    exc = _gcs_exceptions()
    bucket = fake_gcs.client().bucket(gcs_bucket)
    bucket.blob("k").upload_from_string(b"v1")
    with pytest.raises(exc.PreconditionFailed):
        bucket.blob("k").upload_from_string(b"v2", if_generation_match=0)
    with pytest.raises(exc.PreconditionFailed):
        bucket.blob("k").upload_from_file(io.BytesIO(b"v3"), size=2, if_generation_match=0)
    assert bucket.blob("k").download_as_bytes() == b"v1"

    bucket.blob("fresh").upload_from_file(io.BytesIO(b"new"), size=3, if_generation_match=0)
    assert bucket.blob("fresh").download_as_bytes() == b"new"

    generation = bucket.get_blob("k").generation
    with pytest.raises(exc.PreconditionFailed):
        bucket.blob("k").upload_from_string(b"v4", if_generation_match=generation + 1)
    bucket.blob("k").upload_from_string(b"v5", if_generation_match=generation)
    assert bucket.blob("k").download_as_bytes() == b"v5"


def test_gcs_resumable_upload_works_but_ignores_if_generation_match(
    fake_gcs: GcsServer, gcs_bucket: str
) -> None:
    data = _data(9 * MiB + 123, 21)
    with start_fault_proxy(fake_gcs.endpoint, rate=0.0, methods=["PUT"]) as counter:
        bucket = fake_gcs.client(endpoint=counter.url).bucket(gcs_bucket)
        bucket.blob("big", chunk_size=4 * MiB).upload_from_file(
            io.BytesIO(data), if_generation_match=0
        )
        assert counter.stats.eligible == 3  # three chunk PUTs: 4 MiB, 4 MiB, the rest
    direct = fake_gcs.client().bucket(gcs_bucket)
    assert direct.blob("big").download_as_bytes() == data
    edge = 4 * MiB
    assert (
        direct.blob("big").download_as_bytes(start=edge - 2, end=edge + 1)
        == data[edge - 2 : edge + 2]
    )

    # fake-gcs-server 1.54 drops preconditions on resumable uploads: this overwrites.
    other = _data(9 * MiB, 22)
    direct.blob("big", chunk_size=4 * MiB).upload_from_file(
        io.BytesIO(other), if_generation_match=0
    )
    assert direct.blob("big").download_as_bytes() == other


def _fast_gcs_retry() -> Any:
    """The client's default retry policy, with short waits (it starts at 1 s otherwise)."""
    from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped,unused-ignore]

    return DEFAULT_RETRY.with_delay(initial=0.05, multiplier=2.0, maximum=0.5)


def test_gcs_uploads_and_downloads_survive_faults(fake_gcs: GcsServer, gcs_bucket: str) -> None:
    exc = _gcs_exceptions()
    fast = _fast_gcs_retry()
    upload_faults = [K.ERROR_503, K.ERROR_500, K.ERROR_429, K.RESET_REQUEST, K.LATENCY]
    download_faults = [*upload_faults, K.RESET_RESPONSE, K.LOST_RESPONSE]
    blobs = {f"obj{i}": _data(30_000 + i, 30 + i) for i in range(len(download_faults))}
    with start_fault_proxy(
        fake_gcs.endpoint,
        rate=0.0,
        script=_alternate(*upload_faults),
        methods=["POST"],
        path_regex=r"^/upload/",
        flavor="gcs",
        latency_s=0.2,
    ) as proxy:
        bucket = fake_gcs.client(endpoint=proxy.url).bucket(gcs_bucket)
        for key, body in blobs.items():  # conditional creates, retried safely
            bucket.blob(key).upload_from_string(body, if_generation_match=0, retry=fast)
        assert proxy.stats.total_injected == len(upload_faults)
    with start_fault_proxy(
        fake_gcs.endpoint,
        rate=0.0,
        script=_alternate(*download_faults),
        methods=["GET"],
        path_regex=r"alt=media",
        flavor="gcs",
        latency_s=0.2,
    ) as proxy:
        bucket = fake_gcs.client(endpoint=proxy.url).bucket(gcs_bucket)
        for key, body in blobs.items():
            assert bucket.blob(key).download_as_bytes(retry=fast) == body
        assert proxy.stats.total_injected == len(download_faults)

    with start_fault_proxy(
        fake_gcs.endpoint, rate=0.0, script=[K.LOST_RESPONSE], methods=["POST"], flavor="gcs"
    ) as proxy:
        bucket = fake_gcs.client(endpoint=proxy.url).bucket(gcs_bucket)
        with pytest.raises(exc.PreconditionFailed):  # the retry finds its own first attempt
            bucket.blob("once").upload_from_string(b"mine", if_generation_match=0, retry=fast)
    assert fake_gcs.client().bucket(gcs_bucket).blob("once").download_as_bytes() == b"mine"


def test_gcs_resumable_chunk_faults(fake_gcs: GcsServer, gcs_bucket: str) -> None:
    from google.cloud.storage.exceptions import (  # type: ignore[import-untyped,unused-ignore]
        DataCorruption,
    )

    data = _data(9 * MiB, 40)
    with start_fault_proxy(
        fake_gcs.endpoint,
        rate=0.0,
        script=[None, K.ERROR_503, None, K.RESET_REQUEST],
        methods=["PUT"],
        flavor="gcs",
    ) as proxy:
        blob = fake_gcs.client(endpoint=proxy.url).bucket(gcs_bucket).blob("r", chunk_size=4 * MiB)
        blob.upload_from_file(io.BytesIO(data), retry=_fast_gcs_retry())
        assert proxy.stats.total_injected == 2
    assert fake_gcs.client().bucket(gcs_bucket).blob("r").download_as_bytes() == data

    # A chunk whose answer is lost is re-sent; fake-gcs-server appends it a second time
    # instead of honouring Content-Range, and the client's CRC32C check catches that.
    with start_fault_proxy(
        fake_gcs.endpoint, rate=0.0, script=[K.LOST_RESPONSE], methods=["PUT"], flavor="gcs"
    ) as proxy:
        blob = fake_gcs.client(endpoint=proxy.url).bucket(gcs_bucket).blob("l", chunk_size=4 * MiB)
        with pytest.raises(DataCorruption):
            blob.upload_from_file(io.BytesIO(data), retry=_fast_gcs_retry())


# ---------------------------------------------------------------------------------------------
# B2: b2sdk RawSimulator behind a loopback HTTP server
# ---------------------------------------------------------------------------------------------


def _b2_exceptions() -> Any:
    from b2sdk.v2 import exception  # type: ignore[import-untyped,unused-ignore]

    return exception


def _b2_read(bucket: Any, name: str, range_: tuple[int, int] | None = None) -> bytes:
    out = io.BytesIO()
    bucket.download_file_by_name(name, range_=range_).save(out)
    return out.getvalue()


def test_b2_upload_download_range_info_and_listing(b2_simulator: B2Server) -> None:
    exc = _b2_exceptions()
    bucket = b2_simulator.api().get_bucket_by_name(b2_simulator.bucket_name)
    prefix = f"t-{_uid()}/"
    data = _data(100_000, 50)
    for name in ("a/1", "a/2", "a/sub/3", "b/4"):
        bucket.upload_bytes(name.encode(), prefix + name)
    bucket.upload_bytes(data, prefix + "obj")

    assert _b2_read(bucket, prefix + "obj") == data
    assert _b2_read(bucket, prefix + "obj", (10, 19)) == data[10:20]
    assert bucket.get_file_info_by_name(prefix + "obj").size == len(data)
    with pytest.raises(exc.FileNotPresent):
        bucket.get_file_info_by_name(prefix + "missing")
    with pytest.raises(exc.FileNotPresent):
        _b2_read(bucket, prefix + "missing")

    shallow = [(fv.file_name, folder) for fv, folder in bucket.ls(prefix + "a", recursive=False)]
    assert shallow == [
        (prefix + "a/1", None),
        (prefix + "a/2", None),
        (prefix + "a/sub/3", prefix + "a/sub/"),
    ]
    deep = [fv.file_name for fv, _ in bucket.ls(prefix, recursive=True)]
    assert deep == [prefix + n for n in ("a/1", "a/2", "a/sub/3", "b/4", "obj")]


def test_b2_has_versions_not_conditional_creates(b2_simulator: B2Server) -> None:
    exc = _b2_exceptions()
    bucket = b2_simulator.api().get_bucket_by_name(b2_simulator.bucket_name)
    name = f"t-{_uid()}/k"
    bucket.upload_bytes(b"v1", name)
    bucket.upload_bytes(b"v2", name)  # no error: a second version
    assert len(list(bucket.list_file_versions(name))) == 2
    assert _b2_read(bucket, name) == b"v2"
    bucket.hide_file(name)
    with pytest.raises(exc.FileNotPresent):
        _b2_read(bucket, name)
    assert [fv.file_name for fv, _ in bucket.ls(name.rsplit("/", 1)[0], recursive=True)] == []


def test_b2_large_file_is_split_into_parts(b2_simulator: B2Server) -> None:
    bucket = b2_simulator.api().get_bucket_by_name(b2_simulator.bucket_name)
    name = f"t-{_uid()}/big"
    data = _data(30 * MiB, 51)
    before = b2_simulator.calls
    bucket.upload_bytes(data, name)
    after = b2_simulator.calls
    assert after["b2_start_large_file"] - before["b2_start_large_file"] == 1
    assert after["b2_upload_part"] - before["b2_upload_part"] >= 3
    assert after["b2_finish_large_file"] - before["b2_finish_large_file"] == 1
    assert after["b2_upload_file"] == before["b2_upload_file"]
    assert _b2_read(bucket, name) == data
    assert _b2_read(bucket, name, (10_000_000 - 5, 10_000_000 + 4)) == data[9_999_995:10_000_005]


def test_b2_minimum_part_size_is_enforced(b2_simulator: B2Server) -> None:
    exc = _b2_exceptions()
    api = b2_simulator.api()
    bucket = api.get_bucket_by_name(b2_simulator.bucket_name)
    started = api.session.start_large_file(
        bucket.id_, f"t-{_uid()}/small-parts", "application/octet-stream", {}
    )
    part = b"x" * 1000
    sha1 = hashlib.sha1(part).hexdigest()
    for number in (1, 2):
        api.session.upload_part(started["fileId"], number, len(part), sha1, io.BytesIO(part))
    with pytest.raises(exc.BadRequest) as err:
        api.session.finish_large_file(started["fileId"], [sha1, sha1])
    assert "minimum part size" in str(err.value)
    api.session.cancel_large_file(started["fileId"])


def test_b2_reauthorizes_after_token_expiry(b2_simulator: B2Server) -> None:
    bucket = b2_simulator.api().get_bucket_by_name(b2_simulator.bucket_name)
    name = f"t-{_uid()}/x"
    bucket.upload_bytes(b"x", name)
    before = b2_simulator.calls["b2_authorize_account"]
    b2_simulator.expire_tokens()
    assert [fv.file_name for fv, _ in bucket.ls(name.rsplit("/", 1)[0], recursive=True)] == [name]
    assert b2_simulator.calls["b2_authorize_account"] == before + 1


def test_b2_uploads_and_downloads_survive_faults(b2_simulator: B2Server) -> None:
    prefix = f"t-{_uid()}/"
    upload_faults = [K.ERROR_503, K.ERROR_500, K.RESET_REQUEST, K.LOST_RESPONSE, K.LATENCY]
    download_faults = [*upload_faults, K.ERROR_429, K.RESET_RESPONSE]
    blobs = {prefix + f"obj{i}": _data(30_000 + i, 60 + i) for i in range(len(download_faults))}
    with start_fault_proxy(
        b2_simulator.realm_url,
        rate=0.0,
        script=_alternate(*upload_faults),
        path_regex=r"/b2_upload_file/",
        flavor="b2",
        latency_s=0.2,
        retry_after="0",  # b2sdk sleeps for Retry-After; keep the test quick
    ) as proxy:
        bucket = b2_simulator.api(realm_url=proxy.url).get_bucket_by_name(b2_simulator.bucket_name)
        for name, body in blobs.items():
            bucket.upload_bytes(body, name)
        assert proxy.stats.total_injected == len(upload_faults)
        proxy.configure(path_regex=r"^/file/", script=_alternate(*download_faults))
        for name, body in blobs.items():
            assert _b2_read(bucket, name) == body
        assert proxy.stats.total_injected == len(upload_faults) + len(download_faults)


def test_b2_faults_b2sdk_does_not_retry(b2_simulator: B2Server) -> None:
    exc = _b2_exceptions()
    with start_fault_proxy(
        b2_simulator.realm_url,
        rate=0.0,
        script=[K.ERROR_429],
        path_regex=r"/b2_upload_file/",
        flavor="b2",
    ) as proxy:
        bucket = b2_simulator.api(realm_url=proxy.url).get_bucket_by_name(b2_simulator.bucket_name)
        with pytest.raises(exc.TooManyRequests):  # 429 is not retried for uploads
            bucket.upload_bytes(b"x", f"t-{_uid()}/x")
        # a JSON answer cut in the middle of its body surfaces as UnknownError
        proxy.configure(path_regex=r"b2_list_file_names", script=[K.RESET_RESPONSE])
        with pytest.raises(exc.UnknownError):
            list(bucket.ls(recursive=True))


def test_b2_random_faults_with_a_large_file(b2_simulator: B2Server) -> None:
    prefix = f"t-{_uid()}/"
    safe = [K.ERROR_503, K.ERROR_500, K.RESET_REQUEST, K.LOST_RESPONSE, K.LATENCY]
    with start_fault_proxy(
        b2_simulator.realm_url,
        rate=0.25,
        kinds=safe,
        seed=99,
        path_regex=r"/b2_upload_(file|part)/|^/file/",
        flavor="b2",
        latency_s=0.05,
        retry_after="0",
    ) as proxy:
        bucket = b2_simulator.api(realm_url=proxy.url).get_bucket_by_name(b2_simulator.bucket_name)
        big = _data(30 * MiB, 70)
        bucket.upload_bytes(big, prefix + "big")
        small = {prefix + f"s{i}": _data(1000 + i, 71 + i) for i in range(4)}
        for name, body in small.items():
            bucket.upload_bytes(body, name)
        assert _b2_read(bucket, prefix + "big") == big
        for name, body in small.items():
            assert _b2_read(bucket, name) == body
        assert proxy.stats.total_injected >= 2


# ---------------------------------------------------------------------------------------------
# The fault proxy itself, against a tiny echo upstream
# ---------------------------------------------------------------------------------------------


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.received: list[bytes] = []  # bodies received in full

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the proxy resets connections on purpose


class _EchoHandler(BaseHTTPRequestHandler):
    """Echoes the request body back with chunked encoding; reports what it received."""

    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("truncated request body")
        return body

    def do_POST(self) -> None:
        body = self._body()
        with self.server.lock:
            self.server.received.append(body)
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Seen-Host", self.headers.get("Host", ""))
        self.send_header("X-Seen-TE", self.headers.get("Transfer-Encoding", ""))
        self.end_headers()
        for i in range(0, len(body), 7000):
            piece = body[i : i + 7000]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class _Echo:
    def __init__(self) -> None:
        self.server = _EchoServer()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def completed(self) -> list[bytes]:
        with self.server.lock:
            return list(self.server.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[_Echo]:
    server = _Echo()
    try:
        yield server
    finally:
        server.stop()


def _conn(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def _post(conn: http.client.HTTPConnection, body: bytes) -> bytes:
    conn.request("POST", "/", body=body)
    return conn.getresponse().read()


def test_fault_proxy_streams_chunked_and_sized_bodies_unchanged(echo: _Echo) -> None:
    payload = _data(300_000, 80)
    with start_fault_proxy(echo.url, rate=0.0) as proxy:
        conn = _conn(proxy.url)
        pieces = (payload[i : i + 50_000] for i in range(0, len(payload), 50_000))
        conn.request("POST", "/chunked", body=pieces, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.read() == payload
        assert resp.getheader("X-Seen-TE") == "chunked"
        assert resp.getheader("X-Seen-Host") == f"127.0.0.1:{proxy.port}"  # Host untouched
        conn.request("POST", "/sized", body=payload)  # same kept-alive connection
        assert conn.getresponse().read() == payload
        conn.close()
        assert proxy.stats.forwarded == 2
    assert echo.completed == [payload, payload]


def test_fault_proxy_is_deterministic_for_a_seed(echo: _Echo) -> None:
    def run(seed: int) -> list[int]:
        statuses = []
        kinds = [K.ERROR_503, K.ERROR_500, K.ERROR_429]
        with start_fault_proxy(echo.url, rate=0.5, kinds=kinds, seed=seed) as proxy:
            for _ in range(30):
                conn = _conn(proxy.url)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                statuses.append(resp.status)
                conn.close()
            assert proxy.stats.total_injected == sum(s != 200 for s in statuses)
        return statuses

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert {200, 503, 500, 429} <= set(first)


def test_fault_proxy_error_injection_and_filters(echo: _Echo) -> None:
    with start_fault_proxy(
        echo.url, rate=1.0, kinds=[K.ERROR_503], methods=["POST"], path_regex=r"^/only"
    ) as proxy:
        conn = _conn(proxy.url)
        conn.request("GET", "/only")  # wrong method: passes
        assert conn.getresponse().read() == b"ok"
        conn.request("POST", "/elsewhere", body=b"abc")  # wrong path: passes
        assert conn.getresponse().read() == b"abc"
        conn.request("POST", "/only", body=b"abc")
        resp = conn.getresponse()
        assert resp.status == 503
        assert resp.getheader("Retry-After") == "1"
        resp.read()
        conn.close()
        stats = proxy.stats
    assert (stats.requests, stats.eligible, stats.forwarded) == (3, 1, 2)
    assert echo.completed == [b"abc"]  # the faulted request never reached the upstream


def test_fault_proxy_resets_and_lost_responses(echo: _Echo) -> None:
    payload = _data(200_000, 81)
    with start_fault_proxy(echo.url, rate=0.0) as proxy:
        proxy.configure(script=[K.RESET_REQUEST])
        conn = _conn(proxy.url)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _post(conn, payload)  # fails while sending or while waiting for the answer
        conn.close()
        time.sleep(0.2)
        assert echo.completed == []  # a truncated request never completes upstream

        proxy.configure(script=[K.LOST_RESPONSE])
        conn = _conn(proxy.url)
        conn.request("POST", "/", body=payload)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            conn.getresponse()
        conn.close()
        assert echo.completed == [payload]  # ... but a lost response was committed

        proxy.configure(script=[K.RESET_RESPONSE])
        conn = _conn(proxy.url)
        conn.request("POST", "/", body=payload)
        resp = conn.getresponse()  # head arrives, the body breaks off
        with pytest.raises((ConnectionError, http.client.HTTPException, socket.error)):
            resp.read()
        conn.close()
        assert proxy.stats.injected == Counter(
            {"reset_request": 1, "lost_response": 1, "reset_response": 1}
        )
