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
  uploads; ``SNAPDIR_S3_CONDITIONAL_PUT=0`` turns off ``If-None-Match`` creates;
  ``SNAPDIR_S3_LEAN=0`` sends every request through botocore's client calls (see below).

Single-request PUTs of small files (up to ``small_put_max``, 1 MiB), manifest PUTs, GETs
and HEADs take the lean path of :mod:`snapdir.stores._s3lean`: signed by botocore's SigV4
signer with the client's credentials and endpoint, and sent on the store's own keep-alive
connections (with the client's socket, timeout and TLS settings; through the client's HTTP
session when a proxy or client certificate is configured), without botocore's per-call
machinery and http.client/urllib3, which cost several times the CPU of the request itself
(a push of many small files is CPU-bound on them). Listing, multipart uploads and larger
single PUTs (streamed) go through the client calls.

How the store keeps the contract of :mod:`snapdir.stores._base`:

* **Only verified bytes become visible.** A small file is read into memory and verified
  (size, end of file, BLAKE3) before its PUT is sent: the bytes sent are the bytes
  checked. A larger single PUT streams the file through an
  :class:`~snapdir.stores._streams.UploadReader`, which hashes exactly the bytes botocore
  reads and, before it hands over the *last* bytes of the body, checks the digest: on a
  mismatch it raises, the request dies with fewer bytes than its ``Content-Length``, and S3
  stores nothing. botocore reads a seekable body more than once (SigV4 payload hash, then
  the send; again on its own retries); each pass starts with a seek to 0, which restarts the
  hash. A multipart upload reads each part once into memory, hashes the parts in order while
  they upload in parallel (a few at a time, so memory stays bounded), refuses to send the
  last part unless the whole digest matches, and is completed only then; otherwise it is
  aborted.
* **Writes are idempotent and race-safe.** Creates are conditional (``If-None-Match: *``)
  when the server supports it; a ``412`` means the key exists — the normal outcome of a
  retried request whose first attempt succeeded, or of a racing writer — and is accepted
  once the existing object's size (and, for objects up to 16 MiB, its hash) is confirmed;
  an existing object that fails that check is overwritten with the verified bytes.
  Without conditional writes a plain PUT is used: overwriting a content-addressed key with
  the same bytes is harmless. ``put_object(..., replace=True)`` (``push --repair``) always
  PUTs unconditionally, so a damaged object of the right size is mended too.
* **Every byte read is verified.** Downloads are hashed while they stream to disk; a body
  stream that breaks is resumed with a ranged GET from the offset reached (``If-Match`` the
  ETag), never restarted from zero and never trusted unverified.
* **Failures are classified, not retried here.** Throttling, 5xx answers, resets, timeouts
  and broken streams raise :class:`~snapdir.stores._base.TransientStoreError` (with the
  service's ``Retry-After``); the long retries are :class:`~snapdir.stores._wrappers.
  RetryingStore`'s job. botocore keeps its short "standard" retries for single requests.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import botocore.config  # type: ignore[import-untyped,unused-ignore]
import botocore.exceptions  # type: ignore[import-untyped,unused-ignore]
import botocore.loaders  # type: ignore[import-untyped,unused-ignore]
import botocore.session  # type: ignore[import-untyped,unused-ignore]
import urllib3.exceptions

from .._errors import (
    HashMismatchError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    StoreError,
)
from .._redact import LOG_FILTER, redact_exception
from .._snapdir import EMPTY_CHECKSUM
from .._types import StoreUri
from ._base import (
    Capability,
    LoopSemaphore,
    ObjectGet,
    ObjectPut,
    TransientStoreError,
    check_shard,
    hex_from_key,
    manifest_key,
    object_key,
    parse_retry_after,
    to_thread,
)
from ._keys import RECORDS, KeyInfo, check_key, check_prefix
from ._s3lean import LeanS3, LeanUnsuitable, lean_for
from ._streams import (
    DownloadSink,
    SourceHasher,
    StreamingStore,
    UploadReader,
    manifest_to_store,
    open_source,
    upload_parts,
)

__all__ = ["S3Store"]

_log = logging.getLogger("snapdir.stores.s3")
_log.addFilter(LOG_FILTER)  # no secret in a log line (see snapdir._redact)

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
#: Files up to this size are uploaded from memory through the lean path (bounded memory:
#: one such buffer per concurrent upload).
DEFAULT_SMALL_PUT_MAX = 1 * MiB
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


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _retry_after(exc: Any) -> float | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return parse_retry_after(headers.get("retry-after"))


class S3Store(StreamingStore):
    """A store in an S3 bucket (see the module docstring for configuration and guarantees).

    Keyword arguments override the environment; the registry constructs it as
    ``S3Store(uri)``. No request is sent and no client is built until the first call.
    """

    capabilities = Capability.LIST_OBJECTS | Capability.CONDITIONAL_PUT | Capability.KEYS

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
        lean: bool | None = None,
        small_put_max: int = DEFAULT_SMALL_PUT_MAX,
    ) -> None:
        uri = StoreUri(uri)
        if uri.scheme != "s3":
            raise InvalidArgumentError(f"not an s3:// URI: {uri}", code="INVALID_STORE")
        super().__init__(uri)
        self.bucket = uri.bucket
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
            conditional_put = _env_flag("SNAPDIR_S3_CONDITIONAL_PUT", True)
        self.capabilities = type(self).capabilities
        if not conditional_put:
            self.capabilities &= ~Capability.CONDITIONAL_PUT
        self._pool = max_pool_connections or 32 + self.part_concurrency
        self._client_config = dict(client_config or {})
        self._client_obj: Any = None
        self._client_lock = threading.Lock()
        if lean is None:
            lean = _env_flag("SNAPDIR_S3_LEAN", True)
        #: Whether single-request PUT/GET/HEAD may take the lean path (turned off for good
        #: when the bucket turns out to need botocore's own handling).
        self.lean = lean
        self.small_put_max = max(0, small_put_max)
        self._lean_obj: LeanS3 | None = None
        #: The store-wide bound on multipart parts held in memory.
        self._part_buffers = LoopSemaphore(
            f"snapdir-s3-parts-{id(self)}", lambda: self.max_buffered_parts
        )

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
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            # ValueError: botocore's verdict on a malformed endpoint URL (which it quotes).
            raise StoreError(f"{self.uri}: cannot set up the S3 client: {e}") from None
        client.meta.events.register("before-send.s3", self._count_request)
        return client

    def _count_request(self, **kwargs: Any) -> None:
        # Runs on every attempt botocore sends, retries included; returns None so the
        # request goes ahead.
        self._count()

    # -- the lean path (see :mod:`snapdir.stores._s3lean`) -----------------------------------
    def _lean_path(self) -> LeanS3 | None:
        """The lean path, built on first use (may raise botocore's NoCredentialsError);
        None when it is off or this bucket needs botocore."""
        if not self.lean:
            return None
        lean = self._lean_obj
        if lean is not None:
            return lean
        client = self._client()
        with self._client_lock:
            if self._lean_obj is None and self.lean:
                try:
                    self._lean_obj = lean_for(client, self.bucket, self._pool)
                except LeanUnsuitable as e:
                    _log.info("%s: requests go through botocore (%s)", self.uri, e)
                    self.lean = False
            return self._lean_obj

    def _lean_send(self, operation: str, method: str, key: str, **params: Any) -> Any:
        lean = self._lean_path()
        if lean is None:
            return None
        return lean.send(operation, method, key, **params)

    def _send_lean(self, key: str, what: str, operation: str, method: str, **params: Any) -> Any:
        """One lean request with errors mapped like the client calls' (see :meth:`_call`);
        None when the request must go through botocore instead (the path is off, or the
        answer was a redirect to another region or endpoint, which turns it off)."""
        if not self.lean:
            return None
        try:
            return self._call(
                key, what, functools.partial(self._lean_send, operation, method, key), **params
            )
        except LeanUnsuitable as e:
            _log.info("%s: %s; requests go through botocore from now on", self.uri, e)
            self.lean = False
            return None

    async def aclose(self) -> None:
        with self._client_lock:
            client, self._client_obj = self._client_obj, None
            lean, self._lean_obj = self._lean_obj, None
        if lean is not None:
            lean.close()
        if client is not None:
            client.close()

    # -- keys --------------------------------------------------------------------------------
    def _object_key(self, checksum: str) -> str:
        self._check_hex(checksum, "object checksum")
        return self._key(object_key(checksum))

    def _manifest_key(self, snapshot_id: str) -> str:
        self._check_hex(snapshot_id, "snapshot id")
        return self._key(manifest_key(snapshot_id))

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- error mapping -------------------------------------------------------------------------
    def _convert(self, exc: BaseException, key: str, what: str) -> BaseException:
        """The snapdir error for a botocore/urllib3 failure of ``what`` on ``key``. The SDK
        exception is masked in place (see :func:`snapdir._redact.redact_exception`): it stays
        chained to the error and is printed with it in a traceback, and botocore quotes the
        endpoint URL, password and all."""
        where = self._where(key)
        if isinstance(exc, SnapdirError):
            return exc
        redact_exception(exc)
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status = _error_code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message", "") or code
            if status == 404 and code not in ("NoSuchBucket", "NoSuchUpload"):
                return NotFoundError(f"{where} not found")
            if code == "NoSuchBucket":
                return StoreError(
                    f"{what} {where}: the bucket {self.bucket!r} does not exist",
                    code="STORE_NOT_FOUND",
                )
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

    # -- existence ---------------------------------------------------------------------------
    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            resp = self._send_lean(key, "HEAD", "HeadObject", "HEAD")
            if resp is not None:
                return {
                    "ContentLength": int(resp.headers.get("content-length", 0) or 0),
                    "ETag": resp.headers.get("etag"),
                }
            result: dict[str, Any] = self._call(
                key, "HEAD", self._client().head_object, Bucket=self.bucket, Key=key
            )
        except NotFoundError:
            return None
        return result

    async def has_object(self, checksum: str) -> bool:
        return await to_thread(self._head, self._object_key(checksum)) is not None

    async def has_manifest(self, snapshot_id: str) -> bool:
        return await to_thread(self._head, self._manifest_key(snapshot_id)) is not None

    # -- downloads ----------------------------------------------------------------------------
    def _stream(self, key: str, what: str, sink: DownloadSink) -> None:
        """GET ``key`` into ``sink`` (which hashes and counts); messages name the request
        and the key, not ``what``.

        A body stream that breaks is resumed with ``Range: bytes=<sink.count>-`` and
        ``If-Match: <etag>`` (so a replaced object cannot be spliced in), up to
        ``_MAX_RESUMES_WITHOUT_PROGRESS`` times in a row without new bytes; then the
        failure is raised as transient for the retry wrapper.
        """
        expected, etag, _, body = self._get(key, "GET")
        stalls = 0
        try:
            while True:
                pos = sink.count
                try:
                    chunk = body.read(_READ_CHUNK)
                except _STREAM_ERRORS as e:
                    error: BaseException = e
                else:
                    if chunk:
                        sink.write(chunk)
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
                try:
                    _, _, content_range, body = self._get(key, "GET (resume)", pos, etag)
                except StoreError as e:
                    if _is_precondition_failed(e):
                        raise TransientStoreError(
                            f"GET {self._where(key)}: the object changed while it was being "
                            "read; starting over"
                        ) from e
                    raise
                if not content_range.startswith(f"bytes {pos}-"):
                    body.close()
                    raise TransientStoreError(
                        f"GET {self._where(key)}: asked to resume at byte {pos}, the server "
                        f"answered {content_range or 'the whole object'}"
                    )
        finally:
            body.close()

    def _get(
        self, key: str, what: str, start: int = 0, etag: str | None = None
    ) -> tuple[int, str | None, str, Any]:
        """Send a GET of ``key`` (from byte ``start``, ``If-Match: etag``); returns
        (Content-Length, ETag, Content-Range, body) with the body unread (``read(n)``,
        ``close()``)."""
        headers: dict[str, str] = {}
        if start:
            headers["Range"] = f"bytes={start}-"
        if etag:
            headers["If-Match"] = etag
        resp = self._send_lean(key, what, "GetObject", "GET", headers=headers, stream=True)
        if resp is not None:
            h = resp.headers
            length = int(h.get("content-length", 0) or 0)
            return length, h.get("etag"), str(h.get("content-range", "")), resp.raw
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start:
            params["Range"] = headers["Range"]
        if etag:
            params["IfMatch"] = etag
        result = self._call(key, what, self._client().get_object, **params)
        return (
            int(result.get("ContentLength", 0)),
            result.get("ETag"),
            str(result.get("ContentRange", "")),
            result["Body"],
        )

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
        found = self._hash_remote(key, "the existing object")
        return found is not None and found[0] == checksum

    def _is_unsupported_condition(self, exc: BaseException) -> bool:
        cause = exc.__cause__
        if not isinstance(cause, botocore.exceptions.ClientError):
            return False
        return _status(cause) == 501 or _error_code(cause) == "NotImplemented"

    def _create(
        self,
        key: str,
        send: Callable[[bool], object],
        sound: Callable[[], bool],
        *,
        replace: bool = False,
    ) -> bool:
        """Run ``send(conditional)``, a write of ``key`` that is conditional on its absence
        (``If-None-Match: *``) when the server supports it and ``replace`` is off.

        True once the write went through; False when a 412 said the key exists and
        ``sound()`` confirmed what is there (nothing to do). A 412 over an unsound object
        is followed by an unconditional write of the verified bytes; a server that does
        not support the condition (501) loses the capability and gets plain writes.
        """
        conditional = self.conditional_put and not replace
        while True:
            try:
                send(conditional)
                return True
            except Exception as e:
                if conditional and _is_precondition_failed(e):
                    if sound():
                        return False
                    _log.warning("%s exists but is not sound; overwriting", self._where(key))
                    conditional = False
                    continue
                if conditional and self._is_unsupported_condition(e):
                    _log.info("%s: no conditional PUT support; using plain PUT", self.uri)
                    self.capabilities &= ~Capability.CONDITIONAL_PUT
                    conditional = False
                    continue
                raise

    def _put_small_sync(
        self, checksum: str, source: str, size: int, key: str, replace: bool = False
    ) -> None:
        """A small file: read whole and verified (size, end, BLAKE3) before one lean PUT
        sends exactly those bytes; through botocore if the lean path is unavailable."""
        with open_source(source) as f:
            data = SourceHasher(f, size, checksum, source).read(size)
        if not self._put_bytes_lean(
            key, data, lambda: self._existing_is_sound(key, checksum, size), replace
        ):
            self._put_single_sync(checksum, source, size, key, replace)

    def _put_bytes_lean(
        self, key: str, data: bytes, sound: Callable[[], bool], replace: bool = False
    ) -> bool:
        """PUT ``data`` (verified by the caller) under ``key`` through the lean path, with
        the create rules of :meth:`_create`. False when the lean path is not available
        (nothing was stored then: the caller uses botocore)."""
        if not self.lean:
            return False

        def send(conditional: bool) -> None:
            headers = {"Content-Length": str(len(data))}
            if conditional:
                headers["If-None-Match"] = "*"
            if self._send_lean(key, "PUT", "PutObject", "PUT", body=data, headers=headers) is None:
                raise _NoLean()

        try:
            self._create(key, send, sound, replace=replace)
        except _NoLean:
            return False
        return True

    def _put_single_sync(
        self, checksum: str, source: str, size: int, key: str, replace: bool = False
    ) -> None:
        """One PUT whose body is the verified file (see :class:`UploadReader`)."""
        client = self._client()
        with open_source(source) as f:
            if size == 0:  # nothing for botocore to read: check the file is still empty
                SourceHasher(f, 0, checksum, source).read(0)

            def send(conditional: bool) -> None:
                body = UploadReader(f, size, checksum, source) if size else b""
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
                except Exception:
                    failure = getattr(body, "failure", None)
                    if failure is not None:
                        raise failure from None
                    raise

            self._create(
                key, send, lambda: self._existing_is_sound(key, checksum, size), replace=replace
            )

    def _part_size_for(self, size: int) -> int:
        part = self.part_size
        if -(-size // part) > MAX_PARTS:
            part = -(-size // MAX_PARTS)
            part = -(-part // MiB) * MiB
        return part

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
        self,
        key: str,
        upload_id: str,
        parts: list[dict[str, Any]],
        checksum: str,
        size: int,
        replace: bool = False,
    ) -> bool:
        """Complete the upload; True if it was completed, False if an existing sound object
        made it unnecessary (the caller aborts the upload then)."""
        client = self._client()

        def send(conditional: bool) -> None:
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
            except Exception as e:
                if _cause_code(e) != "NoSuchUpload":
                    raise
                # botocore retried a completion whose first answer was lost: the upload is
                # gone because it was completed. Trust it only once confirmed.
                if not self._existing_is_sound(key, checksum, size):
                    raise TransientStoreError(
                        f"complete multipart upload {self._where(key)}: the upload vanished"
                    ) from e

        return self._create(
            key, send, lambda: self._existing_is_sound(key, checksum, size), replace=replace
        )

    def _abort_sync(self, key: str, upload_id: str) -> None:
        try:
            self._client().abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:  # the upload stays invisible; a lifecycle rule reaps it
            _log.warning("could not abort multipart upload %s of %s: %s", upload_id, key, e)

    async def _put_multipart(
        self, checksum: str, source: str, size: int, key: str, replace: bool = False
    ) -> None:
        """A multipart upload: parts read in order and sent ``part_concurrency`` at a time
        (see :func:`~snapdir.stores._streams.upload_parts`), completed only once the whole
        file verified, aborted otherwise."""
        part_size = self._part_size_for(size)
        f = await to_thread(open_source, source)
        try:
            created = await to_thread(
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
                etags = await upload_parts(
                    SourceHasher(f, size, checksum, source),
                    part_size,
                    functools.partial(self._upload_part, key, upload_id),
                    concurrency=self.part_concurrency,
                    buffers=self._part_buffers.get(),
                )
                parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]
                done = await to_thread(
                    self._complete_sync, key, upload_id, parts, checksum, size, replace
                )
            finally:
                if not done:
                    with anyio.CancelScope(shield=True):
                        await to_thread(self._abort_sync, key, upload_id)
        finally:
            f.close()

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        key = self._object_key(checksum)
        source = os.fspath(source)
        if self._multipart(size):
            await self._put_multipart(checksum, source, size, key, replace)
        else:
            await to_thread(self._put_one_sync, checksum, source, size, key, replace)

    def _multipart(self, size: int) -> bool:
        return size >= self.multipart_threshold and size > MIN_PART_SIZE

    def _put_one_sync(
        self, checksum: str, source: str, size: int, key: str, replace: bool = False
    ) -> None:
        """An object sent in one request: small ones read whole through the lean path."""
        if size <= self.small_put_max and self.lean:
            self._put_small_sync(checksum, source, size, key, replace)
        else:
            self._put_single_sync(checksum, source, size, key, replace)

    def blocking_object_call(
        self, op: str, item: ObjectPut | ObjectGet, replace: bool = False
    ) -> Callable[[], None] | None:
        """Downloads (see :class:`StreamingStore`) and single-request uploads as blocking
        calls, for the wrappers' batches; multipart uploads keep their own parallel parts."""
        if op != "put":
            return super().blocking_object_call(op, item, replace)
        if not isinstance(item, ObjectPut) or self._multipart(item.size):
            return None
        key = self._object_key(item.checksum)
        return functools.partial(
            self._put_one_sync, item.checksum, os.fspath(item.source), item.size, key, replace
        )

    # -- manifests ----------------------------------------------------------------------------
    def _manifest_is_sound(self, key: str, snapshot_id: str) -> bool:
        try:
            self._get_manifest(snapshot_id)
        except (NotFoundError, HashMismatchError):
            return False
        return True

    def _put_manifest_sync(self, snapshot_id: str, key: str, data: bytes) -> None:
        if self._put_bytes_lean(key, data, lambda: self._manifest_is_sound(key, snapshot_id)):
            return
        client = self._client()

        def send(conditional: bool) -> None:
            params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
            if conditional:
                params["IfNoneMatch"] = "*"
            self._call(key, "PUT", client.put_object, **params)

        self._create(key, send, lambda: self._manifest_is_sound(key, snapshot_id))

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        key = self._manifest_key(snapshot_id)
        data = manifest_to_store(text, snapshot_id, self._where(key))
        await to_thread(self._put_manifest_sync, snapshot_id, key, data)

    # -- listing ------------------------------------------------------------------------------
    def _list_hex(self, area: str, shard: str = "") -> list[str]:
        """Checksums/ids of every well-formed key under ``<prefix>/<area>/`` (paginated);
        stray keys (another tool's files, a half-typed name) are ignored.

        So is an empty object under any key but the empty file's: some servers (SeaweedFS
        4.48) commit a PUT whose client died after the headers as a 0-byte object. Listed
        as missing, it is uploaded again (over the conditional put's 412, whose size check
        fails), so a push after a crash repairs it instead of writing a manifest over it."""
        client = self._client()
        base = self._key(area + "/")
        found: list[str] = []
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": base + (shard + "/" if shard else ""),
            "MaxKeys": self.list_page_size,
        }
        while True:
            page = self._call(base, "LIST", client.list_objects_v2, **params)
            for item in page.get("Contents", ()) or ():
                digest = hex_from_key(str(item["Key"])[len(base) :])
                if digest is None:
                    continue
                if area == ".objects" and item.get("Size") == 0 and digest != EMPTY_CHECKSUM:
                    continue
                found.append(digest)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            params["ContinuationToken"] = token
        return found

    async def list_objects(self, shard: str = "") -> set[str]:
        return set(await to_thread(self._list_hex, ".objects", check_shard(shard)))

    async def list_manifests(self) -> list[str]:
        return sorted(set(await to_thread(self._list_hex, ".manifests")))

    # -- small keys (snapdir.stores._keys) ------------------------------------------------
    def _small_key(self, key: str, *, records_only: bool = True) -> str:
        return self._key(check_key(key, records_only=records_only))

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        full = self._small_key(key)
        return await to_thread(self._put_if_absent_sync, full, bytes(data))

    def _put_if_absent_sync(self, full: str, data: bytes) -> bool:
        """One ``PUT`` with ``If-None-Match: *``: 412 (or AWS's 409 for a conditional write
        that raced another, retried as transient) means someone else created the key. There
        is no fallback: a server without the condition cannot hold names or journals."""
        if not self.conditional_put:
            raise StoreError(
                f"create of {self._where(full)}: create-only writes are off for this store "
                "(SNAPDIR_S3_CONDITIONAL_PUT=0, or the server answered that it does not "
                "support If-None-Match), and names, journals and collection need them"
            )
        client = self._client()
        try:
            self._call(
                full,
                "PUT",
                client.put_object,
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentLength=len(data),
                IfNoneMatch="*",
            )
        except Exception as e:
            if _is_precondition_failed(e):
                return False
            if self._is_unsupported_condition(e):
                self.capabilities &= ~Capability.CONDITIONAL_PUT
                raise StoreError(
                    f"create of {self._where(full)}: the server does not support "
                    "If-None-Match, and names, journals and collection need create-only writes"
                ) from e
            if _cause_code(e) == "ConditionalRequestConflict":
                raise TransientStoreError(f"create of {self._where(full)}: {e}") from e
            raise
        return True

    async def get_bytes(self, key: str, *, max_size: int) -> bytes:
        full = self._small_key(key)
        return await to_thread(self._get_bytes_sync, key, full, max_size)

    def _get_bytes_sync(self, key: str, full: str, max_size: int) -> bytes:
        """The key's bytes, refused past ``max_size`` while they stream (a hostile store's
        endless body is never held)."""
        client = self._client()
        resp = self._call(full, "GET", client.get_object, Bucket=self.bucket, Key=full)
        body = resp["Body"]
        try:
            length = int(resp.get("ContentLength", 0) or 0)
            if length > max_size:
                raise StoreError(
                    f"{self._where(full)} is {length} bytes, more than the {max_size} a "
                    "record may have"
                )
            try:
                data = body.read(max_size + 1)
            except Exception as e:
                converted = self._convert(e, full, "GET")
                raise converted from e
        finally:
            body.close()
        if len(data) > max_size:
            raise StoreError(f"{self._where(full)} is more than the {max_size} bytes allowed")
        return bytes(data)

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        return await to_thread(self._list_keys_sync, check_prefix(prefix))

    def _list_keys_sync(self, prefix: str) -> list[KeyInfo]:
        client = self._client()
        base = self._key("")
        full = self._key(prefix)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": full,
            "MaxKeys": self.list_page_size,
        }
        out: list[KeyInfo] = []
        while True:
            page = self._call(full, "LIST", client.list_objects_v2, **params)
            for item in page.get("Contents", ()) or ():
                rel = str(item["Key"])[len(base) :]
                try:
                    check_key(rel, records_only=False)
                except InvalidArgumentError:
                    continue  # another tool's key, or a half-written name: not ours
                out.append(KeyInfo(rel, int(item.get("Size", 0)), item["LastModified"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            params["ContinuationToken"] = token
        return out

    async def delete_keys(self, keys: Sequence[str]) -> None:
        fulls = [self._small_key(k, records_only=False) for k in keys]
        await to_thread(self._delete_keys_sync, fulls)

    def _delete_keys_sync(self, fulls: list[str]) -> None:
        """``DeleteObjects`` in batches of 1,000 (the service's maximum); a key already gone
        counts as deleted (S3 says so too)."""
        client = self._client()
        for i in range(0, len(fulls), 1000):
            batch = fulls[i : i + 1000]
            resp = self._call(
                batch[0],
                "DELETE",
                client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errors = [e for e in resp.get("Errors", ()) or () if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise StoreError(
                    f"delete of {len(errors)} key(s) in {self.uri} failed, e.g. "
                    f"{self._where(str(first.get('Key')))}: {first.get('Code')}: "
                    f"{first.get('Message', '')}"
                )

    async def store_time(self) -> datetime:
        return await to_thread(self._store_time_sync)

    def _store_time_sync(self) -> datetime:
        """The ``Date`` of the service's answer to a one-key listing (second resolution)."""
        client = self._client()
        full = self._key(RECORDS)
        page = self._call(
            full, "LIST", client.list_objects_v2, Bucket=self.bucket, Prefix=full, MaxKeys=1
        )
        date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            raise StoreError(f"{self.uri}: the service's answer carried no Date header")
        return parsedate_to_datetime(date).astimezone(timezone.utc)

    def __repr__(self) -> str:
        return f"S3Store({str(self.uri)!r})"


class _NoLean(Exception):
    """The lean path turned out unavailable before anything was stored."""


def _cause_code(exc: BaseException) -> str:
    """The S3 error code behind a converted error ('' if there is none)."""
    cause = exc if isinstance(exc, botocore.exceptions.ClientError) else exc.__cause__
    return _error_code(cause) if isinstance(cause, botocore.exceptions.ClientError) else ""


def _is_precondition_failed(exc: BaseException) -> bool:
    cause = exc.__cause__ if not isinstance(exc, botocore.exceptions.ClientError) else exc
    if not isinstance(cause, botocore.exceptions.ClientError):
        return False
    return _status(cause) == 412 or _error_code(cause) == "PreconditionFailed"
