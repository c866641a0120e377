"""A B2 native-API HTTP server on loopback, backed by b2sdk's in-memory ``RawSimulator``.

b2sdk ships ``RawSimulator`` (``b2sdk._internal.raw_simulator``, re-exported as
``b2sdk.v3.RawSimulator``; ``b2sdk.v2.RawSimulator`` is a thin v2-signature subclass): an
in-process stand-in for ``B2RawHTTPApi`` used by b2sdk's own unit tests.  It is called directly,
not over HTTP.  This module puts a small ``ThreadingHTTPServer`` in front of it so that a real
``b2sdk.v2.B2Api(InMemoryAccountInfo())`` authorized with ``realm="http://127.0.0.1:PORT"``
goes through its real HTTP stack (requests, retries, upload-URL pool, parallel downloads)::

    api = B2Api(InMemoryAccountInfo())
    api.authorize_account(server.realm_url, server.key_id, server.app_key)
    bucket = api.get_bucket_by_name(server.bucket_name)

Endpoints served (any ``/b2api/vN/`` version; b2sdk.v2 uses v3, the newest b2sdk API v4):
b2_authorize_account, b2_list_buckets, b2_create_bucket, b2_delete_bucket, b2_update_bucket,
b2_get_upload_url, upload to the returned URL (b2_upload_file), b2_start_large_file,
b2_get_upload_part_url, upload to that URL (b2_upload_part), b2_finish_large_file,
b2_cancel_large_file, b2_list_parts, b2_list_unfinished_large_files, b2_list_file_names,
b2_list_file_versions, b2_get_file_info, b2_delete_file_version, b2_hide_file, b2_copy_file,
b2_copy_part, b2_get_download_authorization, b2_download_file_by_id and
``GET|HEAD /file/<bucket>/<name>`` (download by name, with ``Range``).

Behaviour worth knowing:

* ``apiUrl``, ``downloadUrl`` and upload URLs are built from the request's ``Host`` header
  (if it names a loopback host), so a client that talks to a proxy keeps talking to the proxy.
* Part sizes: the simulator's toy ``MIN_PART_SIZE = 200`` is replaced by
  ``absoluteMinimumPartSize = 5_000_000`` (B2's real minimum) and ``recommendedPartSize =
  10_000_000`` (B2 says 100 MB; smaller so that a 30 MiB upload becomes 3-4 parts).  b2sdk's
  planner uses the recommended size for parts, so anything above it becomes a large file.
  ``b2_finish_large_file`` rejects a non-last part below the minimum (400 ``bad_request``),
  as B2 does.  Server-side copy of up to 5 GB is allowed (the simulator's limit is 200 bytes).
* Errors are JSON ``{"status", "code", "message"}`` with B2's status/code pairs, so b2sdk maps
  them to its exceptions (e.g. 404 ``not_found`` -> ``FileNotPresent``, 400 ``bad_bucket_id``,
  401 ``bad_auth_token``/``expired_auth_token``, 416 ``range_not_satisfiable``).
* B2 has no conditional create: uploading an existing name adds a new version; there is no
  ``If-None-Match``.  Hidden files disappear from ``b2_list_file_names`` and downloads 404.
* ``b2/x-auto`` content type is stored as ``application/octet-stream``.
* Not simulated: SSE-C, file lock/retention, application keys other than the master key,
  per-request delimiter listing (B2's ``delimiter`` parameter is ignored; b2sdk does not send it).
* All simulator calls run under one lock (the simulator is not thread-safe); bodies are read
  before taking it.  Data is kept in memory.
"""

from __future__ import annotations

import base64
import enum
import io
import itertools
import json
import re
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from b2sdk._internal.encryption.setting import (  # type: ignore[import-untyped,unused-ignore]
    SSE_B2_AES,
)
from b2sdk._internal.exception import (  # type: ignore[import-untyped,unused-ignore]
    AccessDenied,
    BadJson,
    BadRequest,
    BadUploadUrl,
    ChecksumMismatch,
    Conflict,
    CopySourceTooBig,
    DuplicateBucketName,
    FileNotPresent,
    FileSha1Mismatch,
    InvalidAuthToken,
    MissingPart,
    NonExistentBucket,
    PartSha1Mismatch,
    Unauthorized,
    UnsatisfiableRange,
    UploadTokenUsedConcurrently,
)
from b2sdk._internal.raw_api import (  # type: ignore[import-untyped,unused-ignore]
    MetadataDirectiveMode,
)
from b2sdk._internal.raw_simulator import (  # type: ignore[import-untyped,unused-ignore]
    BucketSimulator,
    RawSimulator,
)
from b2sdk._internal.utils import b2_url_decode  # type: ignore[import-untyped,unused-ignore]

from ._proc import LOOPBACK

MIN_PART_SIZE = 5_000_000
RECOMMENDED_PART_SIZE = 10_000_000
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
_API_PATH = re.compile(r"^/b2api/v\d+/(?P<endpoint>b2_[a-z_]+)(?:/(?P<rest>.*))?$")


class _B2Failure(Exception):
    """An error answered as-is: ``{"status": status, "code": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _LoopbackBucketSimulator(BucketSimulator):  # type: ignore[misc]
    MAX_SIMPLE_COPY_SIZE = 5_000_000_000
    # b2sdk's simulator has 200 upload URLs, 4,999 upload timestamps and 9,999 file ids per
    # bucket, then answers every upload with a 500 (StopIteration): a long test session, or
    # faults that make b2sdk discard upload URLs, would run out. These counters do not end
    # (file ids still count down, at a fixed width so that they also sort as strings).
    FIRST_FILE_NUMBER = 999_999_999
    FIRST_FILE_ID = str(FIRST_FILE_NUMBER)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upload_url_counter = itertools.count()
        self.file_id_counter = itertools.count(self.FIRST_FILE_NUMBER, -1)
        self.upload_timestamp_counter = _UploadClock()


class _UploadClock:
    """Upload timestamps as B2 gives them: milliseconds of the service's clock when the
    upload is recorded, strictly increasing (b2sdk's simulator counts from 5,000, which no
    store time could be compared with)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __iter__(self) -> _UploadClock:
        return self

    def __next__(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(time.time() * 1000))
            return self._last


class _LoopbackSimulator(RawSimulator):  # type: ignore[misc]
    """RawSimulator with realistic part sizes and B2's minimum-part-size check."""

    BUCKET_SIMULATOR_CLASS = _LoopbackBucketSimulator

    def __init__(self, min_part_size: int, recommended_part_size: int) -> None:
        super().__init__()
        self.min_part_size = min_part_size
        self.recommended_part_size = recommended_part_size

    def finish_large_file(
        self, api_url: str, account_auth_token: str, file_id: str, part_sha1_array: list[str]
    ) -> Any:
        bucket = self._get_bucket_by_id(self.file_id_to_bucket_id[file_id])
        parts = [p for p in bucket.file_id_to_file[file_id].parts if p is not None]
        for part in parts[:-1]:
            if part.content_length < self.min_part_size:
                raise BadRequest(
                    f"Part number {part.part_number} is smaller than the minimum part size",
                    "bad_request",
                )
        return super().finish_large_file(api_url, account_auth_token, file_id, part_sha1_array)


def _json_default(value: object) -> object:
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _error_for(exc: BaseException, endpoint: str) -> tuple[int, str, str]:
    """Map a simulator exception to B2's (status, code, message)."""
    msg = str(exc)
    if isinstance(exc, _B2Failure):
        return exc.status, exc.code, exc.message
    if isinstance(exc, InvalidAuthToken):
        if endpoint == "b2_authorize_account":
            return 401, "unauthorized", msg
        if getattr(exc, "code", "") in ("auth_token_expired", "expired_auth_token"):
            return 401, "expired_auth_token", msg
        return 401, "bad_auth_token", msg
    if isinstance(exc, Unauthorized):
        return 401, "unauthorized", msg
    if isinstance(exc, NonExistentBucket):
        return (404, "not_found", msg) if endpoint == "download" else (400, "bad_bucket_id", msg)
    if isinstance(exc, FileNotPresent):
        if endpoint in ("b2_delete_file_version", "b2_hide_file"):
            return 400, "file_not_present", msg
        return 404, "not_found", msg
    if isinstance(exc, DuplicateBucketName):
        return 400, "duplicate_bucket_name", msg
    if isinstance(exc, MissingPart):
        return 400, "missing_part", msg
    if isinstance(exc, PartSha1Mismatch):
        return 400, "part_sha1_mismatch", msg
    if isinstance(exc, FileSha1Mismatch | ChecksumMismatch):
        return 400, "bad_request", f"Sha1 did not match data received ({msg})"
    if isinstance(exc, BadJson):
        return 400, "bad_json", msg
    if isinstance(exc, CopySourceTooBig):
        return 400, "source_too_large", f"Copy source too big: {exc.size}"
    if isinstance(exc, BadRequest):
        return 400, exc.code or "bad_request", exc.message or msg
    if isinstance(exc, UploadTokenUsedConcurrently):
        return 400, "auth_token_limit", f"more than one upload using auth token {exc.token}"
    if isinstance(exc, BadUploadUrl):
        return 400, "bad_request", msg
    if isinstance(exc, UnsatisfiableRange):
        return 416, "range_not_satisfiable", msg
    if isinstance(exc, AccessDenied):
        return 403, "access_denied", msg
    if isinstance(exc, Conflict):
        return 409, "conflict", msg
    if isinstance(exc, KeyError):
        if endpoint in ("b2_get_file_info", "b2_download_file_by_id"):
            return 404, "not_found", f"not found: {msg}"
        return 400, "bad_request", f"invalid id: {msg}"
    if isinstance(exc, AssertionError | ValueError | TypeError):
        return 400, "bad_request", msg or type(exc).__name__
    return 500, "internal_error", f"{type(exc).__name__}: {msg}"


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range against ``size``; None means the whole object."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # unsupported syntax (e.g. multi-range): ignore like many servers do
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            raise UnsatisfiableRange()
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise UnsatisfiableRange()
    return start, end


def _content_type(value: str | None) -> str:
    if not value or value == "b2/x-auto":
        return "application/octet-stream"
    return value


def _sse_from_json(value: object) -> Any:
    if isinstance(value, dict) and value.get("mode") == "SSE-B2":
        return SSE_B2_AES
    return None


def _range_tuple(value: object) -> tuple[int, int] | None:
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", value)
    if not m:
        raise BadRequest(f"bad range {value!r}", "bad_request")
    return int(m.group(1)), int(m.group(2))


_Handler = Callable[[_LoopbackSimulator, str, dict[str, Any]], Any]


def _api_table() -> dict[str, _Handler]:
    api = RawSimulator.API_URL

    def create_bucket(s: _LoopbackSimulator, t: str, p: dict[str, Any]) -> Any:
        return s.create_bucket(
            api,
            t,
            p["accountId"],
            p["bucketName"],
            p["bucketType"],
            bucket_info=p.get("bucketInfo"),
            cors_rules=p.get("corsRules"),
            lifecycle_rules=p.get("lifecycleRules"),
            default_server_side_encryption=_sse_from_json(p.get("defaultServerSideEncryption")),
            is_file_lock_enabled=p.get("fileLockEnabled"),
        )

    def update_bucket(s: _LoopbackSimulator, t: str, p: dict[str, Any]) -> Any:
        return s.update_bucket(
            api,
            t,
            p["accountId"],
            p["bucketId"],
            bucket_type=p.get("bucketType"),
            bucket_info=p.get("bucketInfo"),
            cors_rules=p.get("corsRules"),
            lifecycle_rules=p.get("lifecycleRules"),
            if_revision_is=p.get("ifRevisionIs"),
            default_server_side_encryption=_sse_from_json(p.get("defaultServerSideEncryption")),
        )

    def start_large_file(s: _LoopbackSimulator, t: str, p: dict[str, Any]) -> Any:
        return s.start_large_file(
            api,
            t,
            p["bucketId"],
            p["fileName"],
            _content_type(p.get("contentType")),
            p.get("fileInfo") or {},
            server_side_encryption=_sse_from_json(p.get("serverSideEncryption")),
            custom_upload_timestamp=p.get("custom_upload_timestamp"),
        )

    def copy_file(s: _LoopbackSimulator, t: str, p: dict[str, Any]) -> Any:
        directive = p.get("metadataDirective")
        return s.copy_file(
            api,
            t,
            p["sourceFileId"],
            p["fileName"],
            bytes_range=_range_tuple(p.get("range")),
            metadata_directive=MetadataDirectiveMode(directive) if directive else None,
            content_type=p.get("contentType"),
            file_info=p.get("fileInfo"),
            destination_bucket_id=p.get("destinationBucketId"),
        )

    return {
        "b2_list_buckets": lambda s, t, p: s.list_buckets(
            api, t, p["accountId"], bucket_id=p.get("bucketId"), bucket_name=p.get("bucketName")
        ),
        "b2_create_bucket": create_bucket,
        "b2_update_bucket": update_bucket,
        "b2_delete_bucket": lambda s, t, p: s.delete_bucket(api, t, p["accountId"], p["bucketId"]),
        "b2_get_upload_url": lambda s, t, p: s.get_upload_url(api, t, p["bucketId"]),
        "b2_get_upload_part_url": lambda s, t, p: s.get_upload_part_url(api, t, p["fileId"]),
        "b2_start_large_file": start_large_file,
        "b2_finish_large_file": lambda s, t, p: s.finish_large_file(
            api, t, p["fileId"], p["partSha1Array"]
        ),
        "b2_cancel_large_file": lambda s, t, p: s.cancel_large_file(api, t, p["fileId"]),
        "b2_list_parts": lambda s, t, p: s.list_parts(
            api, t, p["fileId"], p.get("startPartNumber"), p.get("maxPartCount")
        ),
        "b2_list_unfinished_large_files": lambda s, t, p: s.list_unfinished_large_files(
            api,
            t,
            p["bucketId"],
            start_file_id=p.get("startFileId"),
            max_file_count=p.get("maxFileCount"),
            prefix=p.get("namePrefix"),
        ),
        "b2_list_file_names": lambda s, t, p: s.list_file_names(
            api,
            t,
            p["bucketId"],
            start_file_name=p.get("startFileName"),
            max_file_count=p.get("maxFileCount"),
            prefix=p.get("prefix"),
        ),
        "b2_list_file_versions": lambda s, t, p: s.list_file_versions(
            api,
            t,
            p["bucketId"],
            start_file_name=p.get("startFileName"),
            start_file_id=p.get("startFileId"),
            max_file_count=p.get("maxFileCount"),
            prefix=p.get("prefix"),
        ),
        "b2_get_file_info": lambda s, t, p: s.get_file_info_by_id(api, t, p["fileId"]),
        "b2_delete_file_version": lambda s, t, p: s.delete_file_version(
            api, t, p["fileId"], p["fileName"], bool(p.get("bypassGovernance"))
        ),
        "b2_hide_file": lambda s, t, p: s.hide_file(api, t, p["bucketId"], p["fileName"]),
        "b2_copy_file": copy_file,
        "b2_copy_part": lambda s, t, p: s.copy_part(
            api,
            t,
            p["sourceFileId"],
            p["largeFileId"],
            p["partNumber"],
            bytes_range=_range_tuple(p.get("range")),
        ),
        "b2_get_download_authorization": lambda s, t, p: s.get_download_authorization(
            api, t, p["bucketId"], p["fileNamePrefix"], p["validDurationInSeconds"]
        ),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # 32 concurrent SDK workers: socketserver's default backlog of 5 drops connections.
    request_queue_size = 128

    def __init__(self, sim: _LoopbackSimulator, port: int) -> None:
        super().__init__((LOOPBACK, port), _RequestHandler)
        self.sim = sim
        self.lock = threading.RLock()
        self.calls: Counter[str] = Counter()
        self.table = _api_table()
        self.own_url = f"http://{LOOPBACK}:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up (e.g. a fault proxy's resets)."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Small responses would otherwise wait ~40 ms for Nagle + delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    # ---- plumbing -------------------------------------------------------------------------

    def _base_url(self) -> str:
        host = self.headers.get("Host", "")
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if hostname in _LOOPBACK_HOSTS:
            return f"http://{host}"
        return self.server.own_url

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        out = io.BytesIO()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return out.getvalue()
            out.write(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        hdrs = dict(headers or {})
        if not any(name.lower() == "content-type" for name in hdrs):
            hdrs["Content-Type"] = "application/json"
        for name, value in hdrs.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _check_token(self, token: str) -> None:
        sim = self.server.sim
        if token not in sim.auth_token_to_key:
            raise _B2Failure(401, "bad_auth_token", "Invalid authorization token")
        if token in sim.expired_auth_tokens:
            raise _B2Failure(401, "expired_auth_token", "Authorization token has expired")

    def _handle(self) -> None:
        body = self._read_body()
        parsed = urllib.parse.urlsplit(self.path)
        m = _API_PATH.match(parsed.path)
        endpoint = m.group("endpoint") if m else "download"
        with self.server.lock:
            self.server.calls[endpoint] += 1
        try:
            with self.server.lock:
                if parsed.path.startswith("/file/") or endpoint == "b2_download_file_by_id":
                    status, data, headers = self._download(parsed)
                elif m is None:
                    raise _B2Failure(404, "not_found", f"no such endpoint: {parsed.path}")
                else:
                    result = self._dispatch(endpoint, m.group("rest") or "", body)
                    status, headers = 200, {}
                    data = json.dumps(result, default=_json_default).encode()
        except Exception as exc:
            status, code, message = _error_for(exc, endpoint)
            error = {"status": status, "code": code, "message": message}
            data, headers = json.dumps(error).encode(), {}
        self._send(status, data, headers)

    def _dispatch(self, endpoint: str, rest: str, body: bytes) -> Any:
        sim = self.server.sim
        auth = self.headers.get("Authorization", "")
        if endpoint == "b2_authorize_account":
            return self._authorize(auth)
        if endpoint == "b2_upload_file":
            return self._upload_file(auth, body)
        if endpoint == "b2_upload_part":
            return self._upload_part(auth, body)
        handler = self.server.table.get(endpoint)
        if handler is None:
            raise _B2Failure(400, "bad_request", f"unsupported operation: {endpoint}")
        self._check_token(auth)
        try:
            params = json.loads(body or b"{}")
        except ValueError as exc:
            raise BadJson(f"bad JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise BadJson("JSON object expected")
        result = handler(sim, auth, params)
        base = self._base_url()
        if endpoint == "b2_get_upload_url":
            bucket_id = result["bucketId"]
            counter = result["uploadUrl"].rsplit("/", 2)[-2]
            result["uploadUrl"] = f"{base}/b2api/v3/b2_upload_file/{bucket_id}/{counter}"
        elif endpoint == "b2_get_upload_part_url":
            file_id = params["fileId"]
            result["uploadUrl"] = f"{base}/b2api/v3/b2_upload_part/{file_id}"
        return result

    def _authorize(self, auth: str) -> Any:
        if not auth.startswith("Basic "):
            raise _B2Failure(401, "unauthorized", "Basic authorization required")
        try:
            key_id, _, key = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError as exc:
            raise _B2Failure(401, "unauthorized", "malformed Basic authorization") from exc
        sim = self.server.sim
        result = sim.authorize_account(self._base_url(), key_id, key)
        base = self._base_url()
        storage = result["apiInfo"]["storageApi"]
        allowed = storage["allowed"]
        storage.update(
            apiUrl=base,
            downloadUrl=base,
            s3ApiUrl=base,
            recommendedPartSize=sim.recommended_part_size,
            absoluteMinimumPartSize=sim.min_part_size,
            # v3 readers (b2sdk.v2) want these flat; v4 readers use allowed["buckets"].
            bucketId=None,
            bucketName=None,
            capabilities=allowed["capabilities"],
            namePrefix=allowed["namePrefix"],
        )
        allowed.setdefault("bucketId", None)
        allowed.setdefault("bucketName", None)
        return result

    def _upload_token(self, auth: str) -> str:
        """Upload tokens are the simulator's fake upload URLs; check the account token in it."""
        self._check_token(auth.rsplit("/", 1)[-1])
        return auth

    def _upload_file(self, auth: str, body: bytes) -> Any:
        token = self._upload_token(auth)
        h = self.headers
        file_info = {
            name[len("X-Bz-Info-") :]: b2_url_decode(value)
            for name, value in h.items()
            if name.lower().startswith("x-bz-info-")
        }
        sse = SSE_B2_AES if h.get("X-Bz-Server-Side-Encryption") == "AES256" else None
        timestamp = h.get("X-Bz-Custom-Upload-Timestamp")
        return self.server.sim.upload_file(
            token,
            token,
            b2_url_decode(h.get("X-Bz-File-Name", "")),
            len(body),
            _content_type(h.get("Content-Type")),
            h.get("X-Bz-Content-Sha1", ""),
            file_info,
            io.BytesIO(body),
            server_side_encryption=sse,
            custom_upload_timestamp=int(timestamp) if timestamp else None,
        )

    def _upload_part(self, auth: str, body: bytes) -> Any:
        token = self._upload_token(auth)
        h = self.headers
        return self.server.sim.upload_part(
            token,
            token,
            int(h.get("X-Bz-Part-Number", "0")),
            len(body),
            h.get("X-Bz-Content-Sha1", ""),
            io.BytesIO(body),
        )

    def _download(self, parsed: urllib.parse.SplitResult) -> tuple[int, bytes, dict[str, str]]:
        sim = self.server.sim
        token = self.headers.get("Authorization") or None
        if token is not None:
            self._check_token(token)
        if parsed.path.startswith("/file/"):
            bucket_name = parsed.path[len("/file/") :].split("/", 1)[0]
            bucket = sim._get_bucket_by_name(bucket_name)
            url = f"{RawSimulator.DOWNLOAD_URL}{parsed.path}"
        else:
            file_id = urllib.parse.parse_qs(parsed.query).get("fileId", [""])[0]
            bucket = sim._get_bucket_by_id(sim.file_id_to_bucket_id[file_id])
            url = f"{RawSimulator.DOWNLOAD_URL}/b2api/v3/b2_download_file_by_id?fileId={file_id}"
        if token is None and bucket.bucket_type != "allPublic":
            raise _B2Failure(401, "unauthorized", "private bucket needs an authorization token")
        with sim.download_file_from_url(token, url) as response:
            data: bytes = response.data_bytes
            headers = {k: str(v) for k, v in response.headers.items() if v is not None}
        headers.pop("content-length", None)
        headers["Accept-Ranges"] = "bytes"
        status = 200
        range_header = self.headers.get("Range")
        if range_header:
            rng = _parse_range(range_header, len(data))
            if rng is not None:
                start, end = rng
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data = data[start : end + 1]
                status = 206
        return status, data, headers


@dataclass
class B2Server:
    """A running loopback B2 simulator (in-process thread)."""

    realm_url: str
    key_id: str
    app_key: str
    bucket_name: str
    bucket_id: str
    port: int
    _server: _Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def simulator(self) -> Any:
        """The underlying ``RawSimulator`` (hold :attr:`lock` while touching it)."""
        return self._server.sim

    @property
    def lock(self) -> threading.RLock:
        return self._server.lock

    @property
    def calls(self) -> Counter[str]:
        """A copy of the per-endpoint request counts (``"download"`` for ``/file/...``)."""
        with self.lock:
            return Counter(self._server.calls)

    def api(self, realm_url: str | None = None) -> Any:
        """A real ``b2sdk.v2.B2Api`` authorized against this server (or ``realm_url``)."""
        from b2sdk.v2 import B2Api, InMemoryAccountInfo  # type: ignore[import-untyped,unused-ignore]

        api = B2Api(InMemoryAccountInfo())
        api.authorize_account(realm_url or self.realm_url, self.key_id, self.app_key)
        return api

    def expire_tokens(self) -> None:
        """Expire every auth token issued so far (b2sdk then re-authorizes by itself)."""
        with self.lock:
            sim = self._server.sim
            sim.expired_auth_tokens.update(sim.auth_token_to_key)

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_b2_simulator(
    *,
    bucket_name: str = "snapdir-test",
    bucket_type: str = "allPrivate",
    min_part_size: int = MIN_PART_SIZE,
    recommended_part_size: int = RECOMMENDED_PART_SIZE,
    port: int = 0,
) -> B2Server:
    """Start the B2 simulator on 127.0.0.1 (``port=0``: a free one) with one bucket."""
    sim = _LoopbackSimulator(min_part_size, recommended_part_size)
    key_id, app_key = sim.create_account()
    token = sim.authorize_account(RawSimulator.API_URL, key_id, app_key)["authorizationToken"]
    bucket = sim.create_bucket(RawSimulator.API_URL, token, key_id, bucket_name, bucket_type)
    server = _Server(sim, port)
    thread = threading.Thread(target=server.serve_forever, name="b2sim", daemon=True)
    thread.start()
    return B2Server(
        realm_url=server.own_url,
        key_id=key_id,
        app_key=app_key,
        bucket_name=bucket_name,
        bucket_id=bucket["bucketId"],
        port=server.server_address[1],
        _server=server,
        _thread=thread,
    )
