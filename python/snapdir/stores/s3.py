"""``s3://bucket/prefix`` store: Amazon S3 and S3-compatible servers, through botocore.

Configuration comes from the environment the way every AWS tool reads it:

* endpoint: ``SNAPDIR_S3_STORE_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL`` (honoured by botocore itself), else AWS. With a custom endpoint,
  path-style addressing is used (S3-compatible servers rarely have wildcard DNS);
  ``SNAPDIR_S3_ADDRESSING_STYLE`` (``path``, ``virtual``, ``auto``) overrides that;
* credentials and region: botocore's standard chain (``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``~/.aws/credentials``,
  ``~/.aws/config``, SSO, container and instance roles); region defaults to ``us-east-1``;
* ``SNAPDIR_S3_MULTIPART_THRESHOLD`` / ``SNAPDIR_S3_PART_SIZE`` (bytes) tune multipart
  uploads; ``SNAPDIR_S3_CONDITIONAL_PUT=0`` turns off ``If-None-Match`` creates.

How the store keeps the contract of :mod:`snapdir.stores._base`:

* **Only verified bytes become visible.** A single PUT streams the file through
  :class:`_VerifyingReader`, which hashes exactly the bytes botocore reads and, before it
  hands over the *last* bytes of the body, checks the digest: on a mismatch it raises, the
  request dies with fewer bytes than its ``Content-Length``, and S3 stores nothing. botocore
  reads a seekable body more than once (SigV4 payload hash, then the send; again on its own
  retries); each pass starts with a seek to 0, which restarts the hash. A multipart upload
  reads each part once into memory, hashes the parts in order while they upload in parallel
  (a few at a time, so memory stays bounded), and is completed only when the whole digest
  matches; otherwise it is aborted.
* **Writes are idempotent and race-safe.** Creates are conditional (``If-None-Match: *``)
  when the server supports it; a ``412`` means the key exists — the normal outcome of a
  retried request whose first attempt succeeded, or of a racing writer — and is accepted
  once the existing object's size (and, for objects up to 16 MiB, its hash) is confirmed;
  an existing object that fails that check is overwritten with the verified bytes.
  Without conditional writes a plain PUT is used: overwriting a content-addressed key with
  the same bytes is harmless.
* **Every byte read is verified.** Downloads are hashed while they stream to disk; a body
  stream that breaks is resumed with a ranged GET from the offset reached (``If-Match`` the
  ETag), never restarted from zero and never trusted unverified.
* **Failures are classified, not retried here.** Throttling, 5xx answers, resets, timeouts
  and broken streams raise :class:`~snapdir.stores._base.TransientStoreError` (with the
  service's ``Retry-After``); the long retries are :class:`~snapdir.stores._wrappers.
  RetryingStore`'s job. botocore keeps its short "standard" retries for single requests.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import botocore.config  # type: ignore[import-untyped,unused-ignore]
import botocore.exceptions  # type: ignore[import-untyped,unused-ignore]
import botocore.loaders  # type: ignore[import-untyped,unused-ignore]
import botocore.session  # type: ignore[import-untyped,unused-ignore]
import urllib3.exceptions

from .._errors import (
    HashMismatchError,
    InFluxError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    SnapdirIOError,
    StoreError,
)
from .._snapdir import EMPTY_CHECKSUM, Hasher, Manifest, blake3_hex
from .._types import StoreUri
from ._base import (
    BaseStore,
    Capability,
    TransientStoreError,
    check_shard,
    for_each_limited,
    manifest_key,
    object_key,
)

if TYPE_CHECKING:
    from anyio.lowlevel import RunVar

if sys.version_info < (3, 11):  # pragma: no cover - anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["S3Store"]

_log = logging.getLogger("snapdir.stores.s3")

MiB = 1024 * 1024
#: Files at least this large go up in parts (S3 allows 5 GiB in one PUT; parts let a big
#: file use several connections and keep a failure from costing the whole file).
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB
#: S3's rules: parts of at least 5 MiB (except the last), at most 10,000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
#: Parts of one upload in flight at once.
DEFAULT_PART_CONCURRENCY = 4
#: Parts buffered in memory across all uploads of one store (bounds memory when many big
#: files go up at once: 8 x 16 MiB).
DEFAULT_MAX_BUFFERED_PARTS = 8
#: On a 412, an existing object up to this size is re-hashed before it is trusted.
DEFAULT_VERIFY_ON_CONFLICT_MAX = 16 * MiB
_READ_CHUNK = 1 * MiB
#: A broken download is resumed this many times in a row without progress before the
#: failure is handed to the retry wrapper.
_MAX_RESUMES_WITHOUT_PROGRESS = 3

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",  # AWS: a concurrent conditional write is in progress
        "OperationAborted",
        "PriorRequestNotComplete",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
    }
)
_CREDENTIAL_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
    "credentials), or AWS_PROFILE naming a profile in ~/.aws/credentials or ~/.aws/config "
    "(AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE move those files)"
)
#: Errors of a response body stream that break off mid-way (the request itself succeeded).
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.HTTPClientError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)

_loader_lock = threading.Lock()
_shared_loader: Any = None


def _loader() -> Any:
    """One botocore data loader for the process: it caches the parsed service models, so a
    new store costs ~20 ms instead of ~100 ms (each store still has its own session, so it
    sees the environment and credentials as they are when it is opened)."""
    global _shared_loader
    with _loader_lock:
        if _shared_loader is None:
            _shared_loader = botocore.loaders.create_loader()
        return _shared_loader


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidArgumentError(
            f"{name}={value!r} is not a whole number of bytes", code="INVALID_ARGUMENT"
        ) from None


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retry_after(exc: Any) -> float | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return _parse_retry_after(headers.get("retry-after"))


class _VerifyingReader:
    """The body of a single PUT: the file's first ``size`` bytes, hashed as they are read.

    Before handing over the last bytes of a pass it compares the digest with ``checksum``
    (and checks the file did not grow); on a mismatch it raises :class:`InFluxError` instead,
    so the request is cut short of its ``Content-Length`` and the server stores nothing.
    A seek restarts the hash (to 0: a new pass, as botocore does after hashing the payload
    for SigV4 and before a retry; elsewhere: the skipped bytes are re-read and hashed). Once
    a mismatch is seen the reader stays failed, so botocore's own retries stop at once.
    """

    def __init__(self, f: IO[bytes], size: int, checksum: str, path: str) -> None:
        self._f = f
        self._size = size
        self._checksum = checksum
        self._path = path
        self._pos = 0
        self._hasher = Hasher()
        self._f.seek(0)
        self.failure: InFluxError | None = None
        #: Complete passes over the body (each one verified), for tests.
        self.passes = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._pos + offset
        elif whence == os.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        target = max(0, min(target, self._size))
        if target == self._pos and target != 0:
            return target
        self._hasher = Hasher()
        self._f.seek(0)
        self._pos = 0
        while self._pos < target:  # rare: botocore only ever rewinds to 0
            data = self._f.read(min(_READ_CHUNK, target - self._pos))
            if not data:
                self._fail(f"{self._path} shrank while it was being uploaded")
            self._hasher.update(data)
            self._pos += len(data)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if self.failure is not None:
            raise self.failure
        remaining = self._size - self._pos
        if remaining <= 0:
            return b""
        want = remaining if n is None or n < 0 else min(n, remaining)
        data = self._f.read(want)
        if len(data) < want:
            # A regular file returns short reads only at its end: it shrank.
            self._fail(
                f"{self._path} shrank while it was being uploaded "
                f"(expected {self._size} bytes, it ended at {self._pos + len(data)})"
            )
        self._hasher.update(data)
        self._pos += len(data)
        if self._pos == self._size:
            self._finish()
        return data

    def _finish(self) -> None:
        if self._f.read(1):
            self._fail(
                f"{self._path} grew while it was being uploaded (expected {self._size} bytes)"
            )
        digest = self._hasher.hexdigest()
        if digest != self._checksum:
            self._fail(
                f"{self._path} changed while it was being uploaded: its bytes hash to "
                f"{digest}, not {self._checksum}; nothing was stored"
            )
        self.passes += 1

    def _fail(self, message: str) -> None:
        self.failure = InFluxError(message)
        raise self.failure


class S3Store(BaseStore):
    """A store in an S3 bucket (see the module docstring for configuration and guarantees).

    Keyword arguments override the environment; the registry constructs it as
    ``S3Store(uri)``. No request is sent and no client is built until the first call.
    """

    capabilities = Capability.LIST_OBJECTS | Capability.CONDITIONAL_PUT

    def __init__(
        self,
        uri: StoreUri | str,
        *,
        endpoint_url: str | None = None,
        multipart_threshold: int | None = None,
        part_size: int | None = None,
        part_concurrency: int = DEFAULT_PART_CONCURRENCY,
        max_buffered_parts: int = DEFAULT_MAX_BUFFERED_PARTS,
        max_pool_connections: int | None = None,
        conditional_put: bool | None = None,
        verify_on_conflict_max: int = DEFAULT_VERIFY_ON_CONFLICT_MAX,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        uri = StoreUri(uri)
        if uri.scheme != "s3":
            raise InvalidArgumentError(f"not an s3:// URI: {uri}", code="INVALID_STORE")
        super().__init__(uri)
        self.bucket = uri.bucket
        self._root = uri.prefix + "/" if uri.prefix else ""
        self._endpoint_url = endpoint_url or os.environ.get("SNAPDIR_S3_STORE_ENDPOINT_URL") or None
        threshold = multipart_threshold
        if threshold is None:
            threshold = _env_int("SNAPDIR_S3_MULTIPART_THRESHOLD") or DEFAULT_MULTIPART_THRESHOLD
        self.multipart_threshold = max(1, threshold)
        psize = part_size if part_size is not None else _env_int("SNAPDIR_S3_PART_SIZE")
        self.part_size = max(MIN_PART_SIZE, psize or DEFAULT_PART_SIZE)
        self.part_concurrency = max(1, part_concurrency)
        self.max_buffered_parts = max(1, max_buffered_parts)
        self.verify_on_conflict_max = verify_on_conflict_max
        #: Keys per LIST request (S3's maximum is 1000).
        self.list_page_size = 1000
        if conditional_put is None:
            conditional_put = os.environ.get("SNAPDIR_S3_CONDITIONAL_PUT", "1").strip() not in (
                "0",
                "false",
                "no",
                "off",
            )
        self.capabilities = type(self).capabilities
        if not conditional_put:
            self.capabilities &= ~Capability.CONDITIONAL_PUT
        self._pool = max_pool_connections or 32 + self.part_concurrency
        self._client_config = dict(client_config or {})
        self._client_obj: Any = None
        self._client_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._buffer_var: RunVar[anyio.Semaphore] | None = None

    # -- configuration ---------------------------------------------------------------------
    def set_max_concurrency(self, jobs: int) -> None:
        """Size the connection pool for ``jobs`` concurrent calls (plus the parts of a
        multipart upload), so calls never wait for a connection. Effective only before the
        first request (the pool is created with the client)."""
        if self._client_obj is None:
            self._pool = max(1, jobs) + self.part_concurrency

    @property
    def conditional_put(self) -> bool:
        return Capability.CONDITIONAL_PUT in self.capabilities

    def _client(self) -> Any:
        client = self._client_obj
        if client is not None:
            return client
        with self._client_lock:
            if self._client_obj is None:
                self._client_obj = self._make_client()
            return self._client_obj

    def _make_client(self) -> Any:
        try:
            session = botocore.session.Session()
            session.register_component("data_loader", _loader())
            custom_endpoint = bool(
                self._endpoint_url
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL")
            )
            style = os.environ.get("SNAPDIR_S3_ADDRESSING_STYLE", "").strip().lower()
            if style not in ("path", "virtual", "auto"):
                style = "path" if custom_endpoint else "auto"
            options: dict[str, Any] = {
                "signature_version": "s3v4",
                "s3": {"addressing_style": style},
                "max_pool_connections": self._pool,
                # botocore's short retries smooth over a single dropped connection; the long
                # retries are the RetryingStore wrapper's.
                "retries": {"mode": "standard", "total_max_attempts": 3},
                "connect_timeout": 10,
                "read_timeout": 60,
                "tcp_keepalive": True,
                # The object is verified with BLAKE3 end to end and the payload is signed;
                # CRC headers would add one more pass over every file and are refused by
                # several S3-compatible servers.
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
            options.update(self._client_config)
            region = session.get_config_variable("region") or "us-east-1"
            client = session.create_client(
                "s3",
                region_name=region,
                endpoint_url=self._endpoint_url,
                config=botocore.config.Config(**options),
            )
        except (botocore.exceptions.ProfileNotFound, botocore.exceptions.ConfigParseError) as e:
            raise StoreError(
                f"{self.uri}: cannot read the AWS configuration: {e}; {_CREDENTIAL_HINT}"
            ) from None
        except botocore.exceptions.BotoCoreError as e:
            raise StoreError(f"{self.uri}: cannot set up the S3 client: {e}") from None
        client.meta.events.register("before-send.s3", self._count_request)
        return client

    def _count_request(self, **kwargs: Any) -> None:
        # Runs on every attempt botocore sends, retries included; returns None so the
        # request goes ahead.
        with self._count_lock:
            self._requests += 1

    def request_count(self) -> int:
        with self._count_lock:
            return self._requests

    async def aclose(self) -> None:
        with self._client_lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            client.close()

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientStoreError)

    # -- keys --------------------------------------------------------------------------------
    def _object_key(self, checksum: str) -> str:
        self._check_hex(checksum, "object checksum")
        return self._root + object_key(checksum)

    def _manifest_key(self, snapshot_id: str) -> str:
        self._check_hex(snapshot_id, "snapshot id")
        return self._root + manifest_key(snapshot_id)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- error mapping -------------------------------------------------------------------------
    def _convert(self, exc: BaseException, key: str, what: str) -> BaseException:
        """The snapdir error for a botocore/urllib3 failure of ``what`` on ``key``."""
        where = self._where(key)
        if isinstance(exc, SnapdirError):
            return exc
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status = _error_code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message", "") or code
            if status == 404 and code not in ("NoSuchBucket", "NoSuchUpload"):
                return NotFoundError(f"{where} not found")
            if code == "NoSuchBucket":
                return StoreError(f"{what} {where}: the bucket {self.bucket!r} does not exist")
            if code in _CREDENTIAL_CODES:
                return StoreError(
                    f"{what} {where}: the S3 service refused the credentials ({code}); "
                    f"{_CREDENTIAL_HINT}"
                )
            if status == 403 or code == "AccessDenied":
                return StoreError(
                    f"{what} {where}: access denied ({code}: {message}); check the bucket "
                    f"policy and that the credentials allow it ({_CREDENTIAL_HINT})"
                )
            if status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES:
                return TransientStoreError(
                    f"{what} {where}: {code or status}: {message}",
                    retry_after=_retry_after(exc),
                )
            return StoreError(f"{what} {where}: {code or status}: {message}")
        if isinstance(
            exc,
            (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError),
        ):
            return StoreError(
                f"{what} {where}: no usable AWS credentials ({exc}); {_CREDENTIAL_HINT}"
            )
        if isinstance(exc, botocore.exceptions.ProfileNotFound):
            return StoreError(f"{what} {where}: {exc}; {_CREDENTIAL_HINT}")
        if isinstance(exc, botocore.exceptions.HTTPClientError):
            inner = exc.kwargs.get("error")
            if isinstance(inner, SnapdirError):
                return inner
        if isinstance(
            exc,
            (
                botocore.exceptions.ConnectionError,
                botocore.exceptions.HTTPClientError,
                botocore.exceptions.IncompleteReadError,
                urllib3.exceptions.HTTPError,
                ConnectionError,
                TimeoutError,
            ),
        ):
            return TransientStoreError(f"{what} {where}: {type(exc).__name__}: {exc}")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return StoreError(f"{what} {where}: {exc}")
        return exc

    def _call(self, key: str, what: str, fn: Callable[..., Any], **params: Any) -> Any:
        """One SDK call with errors mapped (runs in a worker thread)."""
        try:
            return fn(**params)
        except Exception as e:
            converted = self._convert(e, key, what)
            if converted is e:
                raise
            raise converted from e

    async def _thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    # -- existence ---------------------------------------------------------------------------
    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call(
                key, "HEAD", self._client().head_object, Bucket=self.bucket, Key=key
            )
        except NotFoundError:
            return None
        return result

    async def has_object(self, checksum: str) -> bool:
        return await self._thread(self._head, self._object_key(checksum)) is not None

    async def has_manifest(self, snapshot_id: str) -> bool:
        return await self._thread(self._head, self._manifest_key(snapshot_id)) is not None

    # -- downloads ----------------------------------------------------------------------------
    def _stream(
        self, key: str, sink: Callable[[bytes], object], ready: Callable[[], None] | None = None
    ) -> tuple[str, int]:
        """GET ``key`` and feed its bytes to ``sink`` in order; return (BLAKE3, size).

        A body stream that breaks is resumed with ``Range: bytes=<offset>-`` and
        ``If-Match: <etag>`` (so a replaced object cannot be spliced in), up to
        ``_MAX_RESUMES_WITHOUT_PROGRESS`` times in a row without new bytes; then the
        failure is raised as transient for the retry wrapper. ``ready`` is called once the
        first response is in (the caller opens its destination only then, so a missing
        object leaves nothing behind).
        """
        client = self._client()
        resp = self._call(key, "GET", client.get_object, Bucket=self.bucket, Key=key)
        if ready is not None:
            ready()
        expected = int(resp.get("ContentLength", 0))
        etag = resp.get("ETag")
        hasher = Hasher()
        pos = 0
        stalls = 0
        body = resp["Body"]
        try:
            while True:
                try:
                    chunk = body.read(_READ_CHUNK)
                except _STREAM_ERRORS as e:
                    error: BaseException = e
                else:
                    if chunk:
                        hasher.update(chunk)
                        sink(chunk)
                        pos += len(chunk)
                        stalls = 0
                        continue
                    if pos >= expected:
                        break
                    error = botocore.exceptions.IncompleteReadError(
                        actual_bytes=pos, expected_bytes=expected
                    )
                # The stream broke off at ``pos``: resume from there.
                body.close()
                stalls += 1
                if stalls > _MAX_RESUMES_WITHOUT_PROGRESS:
                    raise TransientStoreError(
                        f"GET {self._where(key)}: the body stream broke at byte {pos} of "
                        f"{expected} {stalls} times in a row: {error}"
                    ) from error
                _log.info("GET %s broke at byte %d (%s); resuming", self._where(key), pos, error)
                params: dict[str, Any] = {
                    "Bucket": self.bucket,
                    "Key": key,
                    "Range": f"bytes={pos}-",
                }
                if etag:
                    params["IfMatch"] = etag
                try:
                    resp = self._call(key, "GET (resume)", client.get_object, **params)
                except StoreError as e:
                    if _is_precondition_failed(e):
                        raise TransientStoreError(
                            f"GET {self._where(key)}: the object changed while it was being "
                            "read; starting over"
                        ) from e
                    raise
                content_range = str(resp.get("ContentRange", ""))
                if not content_range.startswith(f"bytes {pos}-"):
                    raise TransientStoreError(
                        f"GET {self._where(key)}: asked to resume at byte {pos}, the server "
                        f"answered {content_range or 'the whole object'}"
                    )
                body = resp["Body"]
        finally:
            body.close()
        return hasher.hexdigest(), pos

    def _get_sync(self, checksum: str, key: str, dest: str) -> None:
        out: IO[bytes] | None = None

        def ready() -> None:
            nonlocal out
            try:
                out = open(dest, "wb")  # noqa: SIM115 - closed in the finally below
            except OSError as e:
                raise SnapdirIOError(f"cannot write {dest}: {e.strerror or e}") from e

        def sink(chunk: bytes) -> None:
            assert out is not None
            try:
                out.write(chunk)
            except OSError as e:
                raise SnapdirIOError(f"cannot write {dest}: {e.strerror or e}") from e

        ok = False
        try:
            digest, _ = self._stream(key, sink, ready)
            if digest != checksum:
                raise HashMismatchError(
                    f"{self._where(key)} is corrupt: its bytes hash to {digest}; {dest} was removed"
                )
            ok = True
        finally:
            if out is not None:
                out.close()
                if not ok:
                    with contextlib.suppress(OSError):
                        os.unlink(dest)

    async def get_object(self, checksum: str, dest: str) -> None:
        key = self._object_key(checksum)
        await self._thread(self._get_sync, checksum, key, os.fspath(dest))

    def _hash_remote(self, key: str) -> tuple[str, int] | None:
        """(BLAKE3, size) of the object under ``key``, streamed; None if it is absent."""
        try:
            return self._stream(key, lambda _chunk: None)
        except NotFoundError:
            return None

    async def verify_objects(
        self, objects: Sequence[tuple[str, int]], *, jobs: int = 32
    ) -> dict[str, str]:
        """Hash each object as it streams, without writing it anywhere."""
        problems: dict[str, str] = {}

        async def one(obj: tuple[str, int]) -> None:
            checksum = obj[0]
            found = await self._thread(self._hash_remote, self._object_key(checksum))
            if found is None:
                problems[checksum] = "missing"
            elif found[0] != checksum:
                problems[checksum] = "corrupt"

        await for_each_limited(objects, one, jobs)
        return problems

    # -- uploads ------------------------------------------------------------------------------
    def _existing_is_sound(self, key: str, checksum: str, size: int) -> bool:
        """After a 412: is the object already under ``key`` the right one?

        Its size must match; up to ``verify_on_conflict_max`` bytes it is also re-hashed
        (cheap there, and it lets a put repair a corrupt object).
        """
        head = self._head(key)
        if head is None or int(head.get("ContentLength", -1)) != size:
            return False
        if size > self.verify_on_conflict_max:
            return True
        found = self._hash_remote(key)
        return found is not None and found[0] == checksum

    def _is_unsupported_condition(self, exc: BaseException) -> bool:
        cause = exc.__cause__
        if not isinstance(cause, botocore.exceptions.ClientError):
            return False
        return _status(cause) == 501 or _error_code(cause) == "NotImplemented"

    def _put_bytes_or_file(
        self, key: str, checksum: str, size: int, make_body: Callable[[], Any]
    ) -> None:
        """PUT one body (conditionally when supported), handling 412 and fallbacks."""
        client = self._client()
        conditional = self.conditional_put
        while True:
            body = make_body()
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": key,
                "Body": body,
                "ContentLength": size,
            }
            if conditional:
                params["IfNoneMatch"] = "*"
            try:
                self._call(key, "PUT", client.put_object, **params)
                return
            except Exception as e:
                failure = getattr(body, "failure", None)
                if failure is not None:
                    raise failure from None
                if conditional and _is_precondition_failed(e):
                    if self._existing_is_sound(key, checksum, size):
                        return
                    _log.warning("%s exists but is not sound; overwriting", self._where(key))
                    conditional = False
                    continue
                if conditional and self._is_unsupported_condition(e):
                    _log.info("%s: no conditional PUT support; using plain PUT", self.uri)
                    self.capabilities &= ~Capability.CONDITIONAL_PUT
                    conditional = False
                    continue
                raise

    def _put_single_sync(self, checksum: str, source: str, size: int, key: str) -> None:
        with _open_source(source) as f:
            if size == 0:
                if f.read(1) or checksum != EMPTY_CHECKSUM:
                    raise InFluxError(
                        f"{source} changed while it was being uploaded: it is not the empty "
                        f"file of checksum {checksum}; nothing was stored"
                    )
                self._put_bytes_or_file(key, checksum, 0, lambda: b"")
                return
            self._put_bytes_or_file(
                key, checksum, size, lambda: _VerifyingReader(f, size, checksum, source)
            )

    def _part_size_for(self, size: int) -> int:
        part = self.part_size
        if -(-size // part) > MAX_PARTS:
            part = -(-size // MAX_PARTS)
            part = -(-part // MiB) * MiB
        return part

    def _buffer_slots(self) -> anyio.Semaphore:
        """The store-wide bound on parts held in memory, one semaphore per event loop."""
        from anyio.lowlevel import RunVar

        if self._buffer_var is None:
            self._buffer_var = RunVar(f"snapdir-s3-parts-{id(self)}")
        try:
            return self._buffer_var.get()
        except LookupError:
            sem = anyio.Semaphore(self.max_buffered_parts)
            self._buffer_var.set(sem)
            return sem

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        resp = self._call(
            key,
            f"PUT part {number}",
            self._client().upload_part,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ContentLength=len(data),
        )
        return str(resp["ETag"])

    def _complete_sync(
        self, key: str, upload_id: str, parts: list[dict[str, Any]], checksum: str, size: int
    ) -> bool:
        """Complete the upload; True if it was completed, False if an existing sound object
        made it unnecessary (the caller aborts the upload then)."""
        client = self._client()
        conditional = self.conditional_put
        while True:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": key,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": parts},
            }
            if conditional:
                params["IfNoneMatch"] = "*"
            try:
                self._call(
                    key, "complete multipart upload", client.complete_multipart_upload, **params
                )
                return True
            except Exception as e:
                if conditional and _is_precondition_failed(e):
                    if self._existing_is_sound(key, checksum, size):
                        return False
                    conditional = False
                    continue
                if conditional and self._is_unsupported_condition(e):
                    self.capabilities &= ~Capability.CONDITIONAL_PUT
                    conditional = False
                    continue
                if _cause_code(e) == "NoSuchUpload":
                    # botocore retried a completion whose first answer was lost: the upload
                    # is gone because it was completed. Trust it only once confirmed.
                    if self._existing_is_sound(key, checksum, size):
                        return True
                    raise TransientStoreError(
                        f"complete multipart upload {self._where(key)}: the upload vanished"
                    ) from e
                raise

    def _abort_sync(self, key: str, upload_id: str) -> None:
        try:
            self._client().abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:  # the upload stays invisible; a lifecycle rule reaps it
            _log.warning("could not abort multipart upload %s of %s: %s", upload_id, key, e)

    async def _put_multipart(self, checksum: str, source: str, size: int, key: str) -> None:
        part_size = self._part_size_for(size)
        f = await self._thread(_open_source_file, source)
        try:
            created = await self._thread(
                self._call,
                key,
                "create multipart upload",
                self._client().create_multipart_upload,
                Bucket=self.bucket,
                Key=key,
            )
            upload_id = str(created["UploadId"])
            done = False
            try:
                parts = await self._upload_parts(
                    f, source, checksum, size, key, upload_id, part_size
                )
                done = await self._thread(
                    self._complete_sync, key, upload_id, parts, checksum, size
                )
            finally:
                if not done:
                    with anyio.CancelScope(shield=True):
                        await self._thread(self._abort_sync, key, upload_id)
        finally:
            f.close()

    async def _upload_parts(
        self,
        f: IO[bytes],
        source: str,
        checksum: str,
        size: int,
        key: str,
        upload_id: str,
        part_size: int,
    ) -> list[dict[str, Any]]:
        """Read the parts in order (hashing them), upload them concurrently; verify the
        whole digest before returning the part list for completion."""
        hasher = Hasher()
        etags: dict[int, str] = {}
        mine = anyio.Semaphore(self.part_concurrency)
        shared = self._buffer_slots()
        # Store-wide buffer slots this upload holds. Counted here rather than released only
        # by the part tasks, because a task cancelled before it starts never runs its
        # ``finally``: whatever is still held is given back when the upload ends.
        held = 0

        def release() -> None:
            nonlocal held
            if held > 0:
                held -= 1
                shared.release()
            mine.release()

        def read_part(want: int) -> bytes:
            data = f.read(want)
            hasher.update(data)
            return data

        async def send(number: int, data: bytes) -> None:
            try:
                etags[number] = await self._thread(self._upload_part, key, upload_id, number, data)
            finally:
                release()

        try:
            async with anyio.create_task_group() as tg:
                total = 0
                number = 0
                while total < size:
                    await mine.acquire()
                    await shared.acquire()
                    held += 1
                    want = min(part_size, size - total)
                    try:
                        data = await self._thread(read_part, want)
                    except BaseException:
                        release()
                        raise
                    if len(data) < want:
                        release()
                        raise InFluxError(
                            f"{source} shrank while it was being uploaded (expected {size} "
                            f"bytes, it ended at {total + len(data)}); nothing was stored"
                        )
                    total += len(data)
                    number += 1
                    tg.start_soon(send, number, data)
                    del data
                extra = await self._thread(f.read, 1)
                if extra:
                    raise InFluxError(
                        f"{source} grew while it was being uploaded (expected {size} bytes); "
                        "nothing was stored"
                    )
                digest = hasher.hexdigest()
                if digest != checksum:
                    raise InFluxError(
                        f"{source} changed while it was being uploaded: its bytes hash to "
                        f"{digest}, not {checksum}; nothing was stored"
                    )
        except BaseExceptionGroup as eg:
            raise _first_leaf(eg) from None
        finally:
            for _ in range(held):
                shared.release()
            held = 0
        return [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]

    async def put_object(self, checksum: str, source: str, size: int) -> None:
        key = self._object_key(checksum)
        source = os.fspath(source)
        if size >= self.multipart_threshold and size > MIN_PART_SIZE:
            await self._put_multipart(checksum, source, size, key)
        else:
            await self._thread(self._put_single_sync, checksum, source, size, key)

    # -- manifests ----------------------------------------------------------------------------
    def _read_small(self, key: str) -> bytes:
        chunks: list[bytes] = []
        self._stream(key, chunks.append)
        return b"".join(chunks)

    def _verify_manifest(self, snapshot_id: str, key: str, data: bytes) -> Manifest:
        """Parse a stored manifest and check it hashes to ``snapshot_id``.

        When the stored bytes are exactly the canonical text (they hash to the id as they
        are), they are authentic, so a parse error is the manifest's own problem (an unsafe
        path, say) and is raised as the parser reports it. Otherwise a text that does not
        parse cannot be shown to belong to the id: that is corruption.
        """
        authentic = blake3_hex(data) == snapshot_id
        try:
            text = data.decode("utf-8")
            manifest = Manifest.parse(text)
        except (UnicodeDecodeError, ValueError) as e:
            if authentic and not isinstance(e, UnicodeDecodeError):
                raise
            raise HashMismatchError(
                f"{self._where(key)} is corrupt: it is not a valid manifest ({e})"
            ) from e
        if manifest.id != snapshot_id:
            raise HashMismatchError(
                f"{self._where(key)} is corrupt: its manifest hashes to {manifest.id}"
            )
        return manifest

    def _get_manifest_sync(self, snapshot_id: str, key: str) -> Manifest:
        return self._verify_manifest(snapshot_id, key, self._read_small(key))

    async def get_manifest(self, snapshot_id: str) -> Manifest:
        key = self._manifest_key(snapshot_id)
        manifest: Manifest = await self._thread(self._get_manifest_sync, snapshot_id, key)
        return manifest

    def _manifest_is_sound(self, key: str, snapshot_id: str) -> bool:
        try:
            self._get_manifest_sync(snapshot_id, key)
        except (NotFoundError, HashMismatchError):
            return False
        return True

    def _put_manifest_sync(self, snapshot_id: str, key: str, data: bytes) -> None:
        client = self._client()
        conditional = self.conditional_put
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
            if conditional:
                params["IfNoneMatch"] = "*"
            try:
                self._call(key, "PUT", client.put_object, **params)
                return
            except Exception as e:
                if conditional and _is_precondition_failed(e):
                    if self._manifest_is_sound(key, snapshot_id):
                        return
                    conditional = False
                    continue
                if conditional and self._is_unsupported_condition(e):
                    self.capabilities &= ~Capability.CONDITIONAL_PUT
                    conditional = False
                    continue
                raise

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        key = self._manifest_key(snapshot_id)
        data = (text + "\n").encode("utf-8")
        if blake3_hex(data) != snapshot_id:
            # Not canonical text, or not this snapshot's: never store a manifest under an id
            # it does not hash to (every reader would reject it).
            actual = Manifest.parse(text).id
            if actual != snapshot_id:
                raise HashMismatchError(
                    f"refusing to store {self._where(key)}: the manifest text given hashes "
                    f"to {actual}"
                )
        await self._thread(self._put_manifest_sync, snapshot_id, key, data)

    # -- listing ------------------------------------------------------------------------------
    def _list_hex(self, area: str, shard: str = "") -> list[str]:
        """Checksums/ids of every well-formed key under ``<prefix>/<area>/`` (paginated);
        stray keys (another tool's files, a half-typed name) are ignored."""
        client = self._client()
        base = self._root + area + "/"
        found: list[str] = []
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": base + (shard + "/" if shard else ""),
            "MaxKeys": self.list_page_size,
        }
        while True:
            page = self._call(base, "LIST", client.list_objects_v2, **params)
            for item in page.get("Contents", ()) or ():
                rest = str(item["Key"])[len(base) :]
                parts = rest.split("/")
                if [len(p) for p in parts] != [3, 3, 3, 55]:
                    continue
                digest = "".join(parts)
                if all(c in "0123456789abcdef" for c in digest):
                    found.append(digest)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            params["ContinuationToken"] = token
        return found

    async def list_objects(self, shard: str = "") -> set[str]:
        return set(await self._thread(self._list_hex, ".objects", check_shard(shard)))

    async def list_manifests(self) -> list[str]:
        return sorted(set(await self._thread(self._list_hex, ".manifests")))

    def __repr__(self) -> str:
        return f"S3Store({str(self.uri)!r})"


def _cause_code(exc: BaseException) -> str:
    """The S3 error code behind a converted error ('' if there is none)."""
    cause = exc if isinstance(exc, botocore.exceptions.ClientError) else exc.__cause__
    return _error_code(cause) if isinstance(cause, botocore.exceptions.ClientError) else ""


def _is_precondition_failed(exc: BaseException) -> bool:
    cause = exc.__cause__ if not isinstance(exc, botocore.exceptions.ClientError) else exc
    if not isinstance(cause, botocore.exceptions.ClientError):
        return False
    return _status(cause) == 412 or _error_code(cause) == "PreconditionFailed"


def _open_source_file(source: str) -> IO[bytes]:
    try:
        return open(source, "rb")  # the caller closes it
    except FileNotFoundError:
        raise InFluxError(f"{source} vanished before it could be uploaded") from None
    except OSError as e:
        raise SnapdirIOError(f"cannot read {source}: {e.strerror or e}") from e


@contextlib.contextmanager
def _open_source(source: str) -> Any:
    f = _open_source_file(source)
    try:
        yield f
    finally:
        f.close()


def _first_leaf(eg: BaseException) -> BaseException:
    while isinstance(eg, BaseExceptionGroup) and eg.exceptions:
        eg = eg.exceptions[0]
    return eg
