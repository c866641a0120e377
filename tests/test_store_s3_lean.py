"""The S3 store's lean request path (:mod:`snapdir.stores._s3lean`) against the real server.

Small PUTs, GETs and HEADs skip botocore's per-call machinery. They must fail exactly as the
botocore calls do: every scenario here runs once through the lean path and once with it
turned off (``lean=False``), and the two must raise the same class with the same message
(404, 412, 403 wrong secret, no credentials, 503/429 with ``Retry-After``, an endpoint that
refuses connections), and answer the same (412 after a lost response is success).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from servers.faultproxy import FaultKind, start_fault_proxy
from servers.seaweed import S3Server
from snapdir import NotFoundError, StoreError
from snapdir._snapdir import blake3_hex
from snapdir.stores import object_key
from snapdir.stores._base import TransientStoreError
from snapdir.stores._s3lean import LeanS3, LeanUnsuitable
from snapdir.stores._wrappers import RetryingStore, RetryPolicy, is_unreachable
from snapdir.stores.s3 import S3Store
from storeutil_cloud import close_store, random_bytes, uid

NO_RETRIES = {"retries": {"mode": "standard", "total_max_attempts": 1}}


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: S3Server) -> None:
    """Credentials for the loopback server from the standard variables, nothing else."""
    seaweedfs.use_env(monkeypatch.setenv, monkeypatch.delenv)


@pytest.fixture(scope="module")
def bucket(seaweedfs: S3Server) -> str:
    client = seaweedfs.client()
    name = f"snapdir-lean-{uid()}"
    client.create_bucket(Bucket=name)
    client.close()
    return name


def _both(make: Callable[[bool], S3Store], op: Callable[[S3Store], object]) -> list[Any]:
    """``op`` on a store through the lean path, then on one without it: what each returned
    or raised (a lean store must really have used its path)."""
    outcomes: list[Any] = []
    for lean in (True, False):
        store = make(lean)
        try:
            try:
                outcomes.append(op(store))
            except Exception as e:  # compared below
                outcomes.append(e)
            assert (store._lean_obj is not None) == lean
        finally:
            close_store(store)
    return outcomes


def _same_error(outcomes: list[Any]) -> BaseException:
    lean, boto = outcomes
    assert isinstance(lean, BaseException), lean
    assert isinstance(boto, BaseException), boto
    assert type(lean) is type(boto)
    assert str(lean) == str(boto)
    return lean


def _store(bucket: str, prefix: str, **kwargs: Any) -> Callable[[bool], S3Store]:
    return lambda lean: S3Store(f"s3://{bucket}/{prefix}", lean=lean, **kwargs)


def test_small_put_get_head_round_trip(bucket: str, tmp_path: Path) -> None:
    data = random_bytes(70_000, 1)
    checksum = blake3_hex(data)
    (tmp_path / "src").write_bytes(data)

    def op(store: S3Store) -> tuple[bool, bool, bytes, int]:
        before = store.request_count()
        anyio.run(store.put_object, checksum, str(tmp_path / "src"), len(data))
        has = anyio.run(store.has_object, checksum)
        dest = tmp_path / f"dest-{store.lean}"
        anyio.run(store.get_object, checksum, str(dest))
        absent = anyio.run(store.has_object, blake3_hex(b"absent"))
        return has, absent, dest.read_bytes(), store.request_count() - before

    prefix = f"t-{uid()}"
    lean, boto = _both(lambda lean: S3Store(f"s3://{bucket}/{prefix}-{lean}", lean=lean), op)
    assert lean == boto == (True, False, data, 4)


def test_missing_object(bucket: str, tmp_path: Path) -> None:
    def op(store: S3Store) -> None:
        anyio.run(store.get_object, blake3_hex(b"nope"), str(tmp_path / "d"))

    error = _same_error(_both(_store(bucket, f"t-{uid()}"), op))
    assert isinstance(error, NotFoundError)
    assert not (tmp_path / "d").exists()


def test_existing_key_412_is_success_once_confirmed(bucket: str, tmp_path: Path) -> None:
    """The second PUT of a key gets 412 (If-None-Match: *): confirmed by a HEAD and a GET
    (the object is small enough to re-hash), and that is success."""
    data = b"twice"
    (tmp_path / "src").write_bytes(data)

    def op(store: S3Store) -> int:
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
        before = store.request_count()
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
        return store.request_count() - before

    prefix = f"t-{uid()}"
    outcomes = _both(lambda lean: S3Store(f"s3://{bucket}/{prefix}-{lean}", lean=lean), op)
    assert outcomes == [3, 3]


def test_manifest_round_trip(bucket: str, tmp_path: Path) -> None:
    from snapdir._snapdir import walk

    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "x").write_bytes(b"x")
    m, _ = walk(str(tmp_path / "tree"))
    text = m.raw

    def op(store: S3Store) -> tuple[bool, str, list[str]]:
        anyio.run(store.put_manifest, m.id, text)
        anyio.run(store.put_manifest, m.id, text)  # 412: confirmed, success
        got = anyio.run(store.get_manifest, m.id)
        return anyio.run(store.has_manifest, m.id), got.raw, anyio.run(store.list_manifests)

    prefix = f"t-{uid()}"
    outcomes = _both(lambda lean: S3Store(f"s3://{bucket}/{prefix}-{lean}", lean=lean), op)
    assert outcomes[0] == outcomes[1] == (True, text, [m.id])


def test_wrong_secret(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wrong-secret-" + uid()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    (tmp_path / "src").write_bytes(b"data")
    make = _store(bucket, f"t-{uid()}")
    for op in (
        lambda s: anyio.run(s.has_object, blake3_hex(b"x")),
        lambda s: anyio.run(s.get_object, blake3_hex(b"x"), str(tmp_path / "d")),
        lambda s: anyio.run(s.put_object, blake3_hex(b"data"), str(tmp_path / "src"), 4),
    ):
        error = _same_error(_both(make, op))
        assert isinstance(error, StoreError)
        assert not isinstance(error, TransientStoreError)
        assert "AWS_SECRET_ACCESS_KEY" in str(error)
        assert secret not in str(error)
        assert secret not in repr(error.__cause__)


def test_put_and_get_name_the_signature_error(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers with an XML body carry the service's code (a HEAD's cannot)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + uid())
    store = S3Store(f"s3://{bucket}/t-{uid()}")
    try:
        with pytest.raises(StoreError, match="SignatureDoesNotMatch"):
            anyio.run(store.get_object, blake3_hex(b"x"), str(tmp_path / "d"))
        assert store._lean_obj is not None
    finally:
        close_store(store)


def test_no_credentials(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    outcomes: list[Any] = []
    prefix = f"t-{uid()}"
    for lean in (True, False):
        store = S3Store(f"s3://{bucket}/{prefix}", lean=lean)
        try:
            with pytest.raises(StoreError) as info:
                anyio.run(store.has_object, blake3_hex(b"x"))
            outcomes.append(info.value)
        finally:
            close_store(store)
    error = _same_error([outcomes[0], outcomes[1]])
    assert "AWS_ACCESS_KEY_ID" in str(error)


@pytest.mark.parametrize("status", ["503", "429"])
def test_throttling_is_transient_with_retry_after(
    bucket: str, tmp_path: Path, seaweedfs: S3Server, status: str
) -> None:
    proxy = start_fault_proxy(
        seaweedfs.endpoint_url, rate=1.0, kinds=[status], retry_after="7", flavor="s3"
    )
    (tmp_path / "src").write_bytes(b"data")
    make = _store(bucket, f"t-{uid()}", endpoint_url=proxy.url, client_config=NO_RETRIES)
    try:
        for op in (
            lambda s: anyio.run(s.has_object, blake3_hex(b"x")),
            lambda s: anyio.run(s.get_object, blake3_hex(b"x"), str(tmp_path / "d")),
            lambda s: anyio.run(s.put_object, blake3_hex(b"data"), str(tmp_path / "src"), 4),
        ):
            error = _same_error(_both(make, op))
            assert isinstance(error, TransientStoreError)
            assert error.retry_after == 7.0
    finally:
        proxy.stop()


def test_unreachable_endpoint_fails_as_unreachable(bucket: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    make = _store(bucket, f"t-{uid()}", endpoint_url=url, client_config=NO_RETRIES)
    error = _same_error(_both(make, lambda s: anyio.run(s.has_object, blake3_hex(b"x"))))
    assert isinstance(error, TransientStoreError)
    assert is_unreachable(error)


def test_faults_are_absorbed_and_the_object_is_right(
    bucket: str, tmp_path: Path, seaweedfs: S3Server
) -> None:
    """A reset request, a lost response (the retry sees 412 and confirms), and a download
    cut mid-body (resumed with a range) through the lean path."""
    proxy = start_fault_proxy(
        seaweedfs.endpoint_url,
        rate=0.0,
        kinds=["reset_request"],
        script=["reset_request", "lost_response", None, None, None, "reset_response"],
        flavor="s3",
    )
    data = random_bytes(900_000, 2)
    checksum = blake3_hex(data)
    (tmp_path / "src").write_bytes(data)
    inner = S3Store(f"s3://{bucket}/t-{uid()}", endpoint_url=proxy.url, client_config=NO_RETRIES)
    store = RetryingStore(inner, RetryPolicy(base_delay=0.01, max_delay=0.05))
    try:
        anyio.run(store.put_object, checksum, str(tmp_path / "src"), len(data))
        anyio.run(store.get_object, checksum, str(tmp_path / "dest"))
        assert inner._lean_obj is not None
    finally:
        close_store(store)
        proxy.stop()
    assert proxy.stats.count(FaultKind.RESET_REQUEST) == 1
    assert proxy.stats.count(FaultKind.LOST_RESPONSE) == 1
    assert proxy.stats.count(FaultKind.RESET_RESPONSE) == 1
    assert (tmp_path / "dest").read_bytes() == data


def test_redirect_hands_the_store_to_botocore(bucket: str, tmp_path: Path) -> None:
    """An answer the lean path does not follow (a region redirect) sends that request, and
    all later ones, through botocore."""
    data = b"redirected"
    (tmp_path / "src").write_bytes(data)
    store = S3Store(f"s3://{bucket}/t-{uid()}")
    calls: list[str] = []
    try:
        lean = store._lean_path()
        assert isinstance(lean, LeanS3)

        def refuse(*args: Any, **kwargs: Any) -> None:
            calls.append(args[0])
            raise LeanUnsuitable("301 PermanentRedirect")

        lean.send = refuse  # type: ignore[method-assign]
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
        assert anyio.run(store.has_object, blake3_hex(data))
        assert calls == ["PutObject"]
        assert store.lean is False
    finally:
        close_store(store)
    raw = S3Store(store.uri, lean=False)
    try:
        anyio.run(raw.get_object, blake3_hex(data), str(tmp_path / "d"))
    finally:
        close_store(raw)
    assert (tmp_path / "d").read_bytes() == data


def test_connections_are_kept_alive(bucket: str) -> None:
    store = S3Store(f"s3://{bucket}/t-{uid()}")
    try:
        for _ in range(20):
            anyio.run(store.has_object, blake3_hex(b"x"))
        lean = store._lean_obj
        assert lean is not None
        assert lean._direct is not None
        assert len(lean._direct._idle) == 1, "one connection, reused"
    finally:
        close_store(store)


def test_object_key_is_quoted(bucket: str, tmp_path: Path, seaweedfs: S3Server) -> None:
    """A prefix with characters that need quoting reaches the key botocore would use."""
    prefix = f"t-{uid()}/with space+plus"
    data = b"quoted"
    (tmp_path / "src").write_bytes(data)
    store = S3Store(f"s3://{bucket}/{prefix}")
    try:
        anyio.run(store.put_object, blake3_hex(data), str(tmp_path / "src"), len(data))
    finally:
        close_store(store)
    client = seaweedfs.client()
    try:
        key = f"{prefix}/{object_key(blake3_hex(data))}"
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    finally:
        client.close()


@pytest.mark.parametrize(
    ("method", "key", "headers", "body", "token"),
    [
        ("GET", ".objects/abc/def/012/3456", {}, None, None),
        ("GET", "pre fix/.objects/a+b/ü~x", {"Range": "bytes=10-", "If-Match": '"e1"'}, None, None),
        ("HEAD", "k", {}, None, "session-token/with+chars="),
        ("PUT", "p/.objects/x", {"Content-Length": "5", "If-None-Match": "*"}, b"hello", None),
        ("PUT", "p/.manifests/y", {"Content-Length": "0"}, b"", "t"),
    ],
)
def test_lean_signature_is_botocores(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    key: str,
    headers: dict[str, str],
    body: bytes | None,
    token: str | None,
) -> None:
    # The direct path signs requests itself (_SigV4); for the same request and time its
    # headers must be exactly what botocore's S3SigV4Auth adds.
    import datetime
    from urllib.parse import quote

    import botocore.auth  # type: ignore[import-untyped,unused-ignore]
    import botocore.awsrequest  # type: ignore[import-untyped,unused-ignore]
    import botocore.credentials  # type: ignore[import-untyped,unused-ignore]
    from snapdir.stores._s3lean import _SigV4

    now = datetime.datetime(2026, 3, 4, 5, 6, 7)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now)
    creds = botocore.credentials.Credentials("AKIDEXAMPLE", "wJalr/K7MDENG+bPxRfiCY", token)
    frozen = creds.get_frozen_credentials()
    for base, host in (
        ("http://127.0.0.1:8333/bucket-name/", "127.0.0.1:8333"),
        (
            "https://bucket-name.s3.eu-west-3.amazonaws.com/",
            "bucket-name.s3.eu-west-3.amazonaws.com",
        ),
    ):
        url = base + quote(key, safe="/~")
        request = botocore.awsrequest.AWSRequest(
            method=method, url=url, data=body, headers={"Host": host, **headers}
        )
        botocore.auth.S3SigV4Auth(frozen, "s3", "eu-west-3").add_auth(request)
        path = url[url.index("/", len("https://")) :]
        ours = dict(
            _SigV4("eu-west-3").sign(
                frozen, method, host, path, headers, body, now.strftime("%Y%m%dT%H%M%SZ")
            )
        )
        theirs = {k.lower(): v for k, v in request.headers.items()}
        assert ours.pop("Authorization") == theirs.pop("authorization")
        assert {k.lower(): v for k, v in ours.items()} == theirs
