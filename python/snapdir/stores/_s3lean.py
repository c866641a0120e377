"""The lean request path of the S3 store: single-request PUT, GET and HEAD without
botocore's per-call machinery.

A push or pull of many small files is one request per file, and through
``client.put_object`` / ``client.get_object`` most of a request's client CPU goes to
botocore's per-call machinery (parameter validation and serialisation, a dozen event hooks,
endpoint-ruleset resolution, retry bookkeeping, user-agent assembly, response parsing) and
to http.client/urllib3 under it, not to the network: about 1.5 ms per small PUT on the test
machine, against 0.36 ms through this path. The parts that have to be right are still
botocore's own:

* the endpoint, addressing style and signing region come from botocore's endpoint
  ruleset, read once from a presigned URL of a probe key (no request is sent);
* every request is signed with AWS Signature Version 4 (payload hash signed, as botocore
  does for S3) with the client's credentials, frozen per request so expiring credentials
  are refreshed. On the direct connections below the signature is computed here
  (:class:`_SigV4`: the signing key derived once per day, no ``HTTPHeaders``), which
  gives exactly botocore's ``Authorization`` for the same request and time
  (``tests/test_store_s3_lean.py`` compares them) at a tenth of its CPU; through the
  client's HTTP session it is botocore's :class:`~botocore.auth.S3SigV4Auth` itself. The
  ``before-send.s3.<Operation>`` event is emitted first either way, so the store's
  request counter and any other hook see it like any botocore request;
* it is sent on keep-alive HTTP/1.1 connections of a small pool of plain sockets
  (:class:`_DirectPool`) set up with the client's socket options, timeouts and certificate
  verification; when the client would not connect directly (a proxy, a client
  certificate), through the client's own HTTP session instead. Transport failures raise
  the botocore exceptions that session raises for them;
* an error answer becomes the :class:`botocore.exceptions.ClientError` botocore would
  raise (code and message from the XML body, or from the status when there is none, as
  botocore does for a HEAD), so the store maps it exactly as it maps botocore's errors.

What is left out: botocore's short per-request retries (the store's
:class:`~snapdir.stores._wrappers.RetryingStore` retries transient failures anyway; only a
request sent on a pooled connection that the server had meanwhile closed is sent again at
once, on a new one, as urllib3 does),
``Expect: 100-continue`` (bodies sent here are small and in memory) and the redirect to a
bucket's true region (an answer that asks for another region or endpoint raises
:class:`LeanUnsuitable`, and the store sends that request, and all later ones, through
botocore). Buckets that need another signer (S3 Express directory buckets, access-point
and multi-region ARNs) never use this path.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import select
import socket
import ssl
import threading
import time
import weakref
import xml.etree.ElementTree as ET
from typing import Any, cast
from urllib.parse import parse_qs, quote, urlsplit

import botocore.auth  # type: ignore[import-untyped,unused-ignore]
import botocore.awsrequest  # type: ignore[import-untyped,unused-ignore]
import botocore.exceptions  # type: ignore[import-untyped,unused-ignore]

__all__ = ["LeanS3", "LeanUnsuitable", "lean_for"]

#: A request body up to this size goes out in the same write as the request head.
_COALESCE_MAX = 64 * 1024
_MAX_LINE = 65536
_MAX_HEADERS = 200

_PROBE = "snapdir-lean-probe"
#: Answers that mean "not here": the bucket lives in another region or behind another
#: endpoint. botocore follows them; the lean path hands the call back to botocore.
_REDIRECT_STATUS = frozenset({301, 302, 307, 308})
_REDIRECT_CODES = frozenset(
    {"PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed"}
)


class LeanUnsuitable(Exception):
    """This bucket or answer needs botocore's full machinery (another signer, a region
    redirect); nothing was stored by the request that raised it."""


class _Headers(dict[str, str]):
    """Headers by lower-case name, looked up in any case (in an answer, repeated headers
    are joined with ", ")."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class _Response:
    """What :meth:`LeanS3.send` returns, shaped like botocore's ``AWSResponse`` where the
    store uses it: ``status_code``, ``headers`` (``get`` by any case), ``content`` (the
    rest of the body, read now) and ``raw`` (the body as a stream: ``read(n)``,
    ``close()``)."""

    def __init__(self, status: int, headers: Any, raw: Any) -> None:
        self.status_code = status
        self.headers = headers
        self.raw = raw

    @property
    def content(self) -> bytes:
        chunks = []
        while True:
            chunk = self.raw.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        self.raw.close()
        return b"".join(chunks)


class _Conn:
    """One keep-alive HTTP/1.1 connection."""

    __slots__ = ("file", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = cast(io.BufferedReader, sock.makefile("rb", buffering=65536))

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()

    def idle_and_open(self) -> bool:
        """Whether a pooled connection is still usable: nothing to read on an idle
        connection (the server closed it, or sent something unasked)."""
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False


class _Body:
    """A response body as a stream, with the connection it arrived on: back into the pool
    once read to its end, closed when abandoned earlier. A body that ends early (the
    connection dropped) reads as its end: the caller compares with Content-Length."""

    def __init__(
        self, pool: _DirectPool, conn: _Conn, length: int | None, chunked: bool, reuse: bool
    ) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self._left = length  # None: until the connection closes (or chunked)
        self._chunked = chunked
        self._chunk_left = 0
        self._reuse = reuse
        if length == 0 and not chunked:
            self._done()

    def _done(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._reuse:
                self._pool.put(conn)
            else:
                conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def read(self, n: int = -1) -> bytes:
        conn = self._conn
        if conn is None:
            return b""
        if n is None or n < 0:  # at most this much per call, whatever is asked
            n = 1 << 20
        try:
            if self._chunked:
                return self._read_chunked(conn, n)
            want = n if self._left is None else min(n, self._left)
            data = conn.file.read(want) if want else b""
        except (ConnectionError, TimeoutError):
            self.close()
            raise
        except OSError as e:  # TLS and other socket failures: a broken stream all the same
            self.close()
            raise ConnectionResetError(f"the body stream broke: {e}") from e
        except BaseException:
            self.close()
            raise
        if self._left is not None:
            self._left -= len(data)
            if self._left <= 0:
                self._done()
        if not data:  # the connection ended the body
            self.close()
        return data

    def _read_chunked(self, conn: _Conn, n: int) -> bytes:
        if self._chunk_left == 0:
            line = conn.file.readline(_MAX_LINE)
            if not line:
                raise ConnectionResetError("the connection closed inside a chunked body")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = conn.file.readline(_MAX_LINE)
                    if not trailer:
                        raise ConnectionResetError("the connection closed after the body")
                    if trailer in (b"\r\n", b"\n"):
                        break
                self._done()
                return b""
            self._chunk_left = size
        data: bytes = conn.file.read1(min(n, self._chunk_left))
        if not data:
            raise ConnectionResetError("the connection closed inside a chunked body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and conn.file.readline(_MAX_LINE) not in (b"\r\n", b"\n"):
            raise ConnectionResetError("malformed chunked body")
        return data


def _close_all(idle: list[_Conn], lock: threading.Lock) -> None:
    with lock:
        conns = idle[:]
        idle.clear()
    for conn in conns:
        conn.close()


class _ConnectFailed(Exception):
    """No connection could be made (``error`` says why)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _DirectPool:
    """Keep-alive HTTP/1.1 connections to the one endpoint, over plain sockets (TLS through
    :mod:`ssl`): the request head and a small body go out in one write, and the answer is
    parsed without http.client, urllib3 and email.parser, which together cost several
    times the CPU of the request itself. Used only for what botocore would send on a
    direct connection (no proxy, no client certificate), with botocore's socket options,
    timeouts and certificate verification."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        socket_options: list[tuple[int, int, int]],
        ssl_context: ssl.SSLContext | None,
        max_idle: int,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._socket_options = socket_options
        self._ssl = ssl_context
        self._max_idle = max(1, max_idle)
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        # A store that is never closed still closes its sockets when it is collected.
        weakref.finalize(self, _close_all, self._idle, self._lock)

    def get(self) -> tuple[_Conn, bool]:
        """A connection and whether it was reused (a reused one may turn out closed)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if conn.idle_and_open():
                return conn, True
            conn.close()

    def put(self, conn: _Conn) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        _close_all(self._idle, self._lock)

    def _connect(self) -> _Conn:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout)
        except OSError as e:
            raise _ConnectFailed(e) from e
        try:
            for level, name, value in self._socket_options:
                sock.setsockopt(level, name, value)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self._read_timeout)
        except BaseException as e:
            sock.close()
            if isinstance(e, OSError):
                raise _ConnectFailed(e) from e
            raise
        return _Conn(sock)

    def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> _Response:
        """Send one request and read the answer's head; the body is left to read.

        A reused connection that the server had closed fails before any byte of an
        answer arrives: the request is sent once more on a new connection (it was not
        processed; a server closes only idle connections)."""
        head = [f"{method} {target} HTTP/1.1\r\n"]
        head.extend(f"{k}: {v}\r\n" for k, v in headers)
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if body and len(body) <= _COALESCE_MAX:
            data, body = data + body, None
        while True:
            conn, reused = self.get()
            try:
                conn.sock.sendall(data)
                if body:
                    conn.sock.sendall(body)
                status_line = conn.file.readline(_MAX_LINE)
                if not status_line:
                    raise ConnectionResetError("the server closed the connection without answering")
            except BaseException as e:
                conn.close()
                if reused and isinstance(e, ConnectionError):
                    continue
                raise
            try:
                return self._response(method, conn, status_line)
            except BaseException:
                conn.close()
                raise

    def _response(self, method: str, conn: _Conn, status_line: bytes) -> _Response:
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnectionResetError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        headers = _Headers()
        for _ in range(_MAX_HEADERS):
            line = conn.file.readline(_MAX_LINE)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ConnectionResetError("the connection closed inside the answer's head")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise ConnectionResetError("too many header lines in the answer")
        reuse = parts[0] != b"HTTP/1.0" and "close" not in headers.get("connection", "").lower()
        if status == 100:  # never asked for (no Expect header): skip it
            next_line = conn.file.readline(_MAX_LINE)
            if not next_line:
                raise ConnectionResetError("the connection closed after 100 Continue")
            return self._response(method, conn, next_line)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length: int | None = None
        if method == "HEAD" or status in (204, 304):
            length, chunked = 0, False
        elif not chunked:
            raw_length = headers.get("content-length")
            if raw_length is not None:
                length = int(raw_length)
            else:
                reuse = False  # the body ends when the connection does
        return _Response(status, headers, _Body(self, conn, length, chunked, reuse))


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class _SigV4:
    """AWS Signature Version 4 for single-object S3 requests (no query string), as
    botocore's :class:`~botocore.auth.S3SigV4Auth` computes it: every header given is
    signed (names lower-cased, values with runs of white space folded), with ``host``,
    ``x-amz-date``, ``x-amz-content-sha256`` (the SHA-256 of the body) and, for temporary
    credentials, ``x-amz-security-token``. The signing key is derived once per secret, day
    and region instead of on every request."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._key: tuple[str, str, bytes] | None = None

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._key  # one tuple, replaced whole: safe to share between threads
        if cached is not None and cached[0] == secret and cached[1] == day:
            return cached[2]
        key = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
        for part in (self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key = (secret, day, key)
        return key

    def sign(
        self,
        credentials: Any,
        method: str,
        host: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        amz_date: str | None = None,
    ) -> list[tuple[str, str]]:
        """The headers to send (the given ones, the signed ``x-amz-*`` ones and
        ``Authorization``) for ``method`` on ``path`` (already URI-encoded, as sent)."""
        if amz_date is None:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        payload = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
        signed = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
        if credentials.token:
            signed["x-amz-security-token"] = credentials.token
        for name, value in headers.items():
            signed[name.lower()] = " ".join(str(value).split())
        names = sorted(signed)
        canonical_headers = "".join(f"{n}:{signed[n]}\n" for n in names)
        signed_names = ";".join(names)
        canonical = f"{method}\n{path}\n\n{canonical_headers}\n{signed_names}\n{payload}"
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        )
        signature = hmac.new(
            self._signing_key(credentials.secret_key, amz_date[:8]),
            to_sign.encode("utf-8"),
            hashlib.sha256,
        ).hexdigest()
        out = [(n, signed[n]) for n in names]
        out.append(
            (
                "Authorization",
                f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                f"SignedHeaders={signed_names}, Signature={signature}",
            )
        )
        return out


class _LeanRequest:
    """What ``before-send`` hooks see of a request sent on a direct connection (the
    attributes of botocore's request objects that describe it; ``headers.get`` takes any
    case, as botocore's do)."""

    __slots__ = ("body", "headers", "method", "stream_output", "url")

    def __init__(
        self, method: str, url: str, headers: _Headers, body: bytes | None, stream: bool
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.stream_output = stream


class LeanS3:
    """Signed single requests to one bucket, sent through a botocore client's HTTP session.

    Thread-safe: it holds no per-request state (the HTTP session's pool is thread-safe).
    """

    def __init__(
        self, client: Any, base_url: str, region: str, direct: _DirectPool | None = None
    ) -> None:
        self._http = client._endpoint.http_session
        self._direct = direct
        self._events = client.meta.events
        self._credentials = client._request_signer._credentials
        #: ``scheme://host[:port]/[bucket/]``: a key's URL is this plus the quoted key.
        self.base_url = base_url
        self.region = region
        self._sigv4 = _SigV4(region)
        split = urlsplit(base_url)
        self._base_path = split.path
        host = split.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        default_port = 443 if split.scheme == "https" else 80
        #: The Host header botocore signs (no port when it is the scheme's default).
        self.host = host if split.port in (None, default_port) else f"{host}:{split.port}"

    def url(self, key: str) -> str:
        return self.base_url + quote(key, safe="/~")

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()

    def send(
        self,
        operation: str,
        method: str,
        key: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> Any:
        """Sign and send one request; the :class:`botocore.awsrequest.AWSResponse` of a 2xx
        answer (its body unread when ``stream``), else the ``ClientError`` botocore would
        raise. Transport failures raise botocore's exceptions (``EndpointConnectionError``,
        ``ConnectionClosedError``, ``ReadTimeoutError``...), as the client's calls do."""
        credentials = self._credentials
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
        if frozen is None or frozen.access_key is None or frozen.secret_key is None:
            raise botocore.exceptions.NoCredentialsError()
        url = self.url(key)
        if self._direct is None:
            all_headers = {"Host": self.host}
            if headers:
                all_headers.update(headers)
            request = botocore.awsrequest.AWSRequest(
                method=method, url=url, data=body, headers=all_headers
            )
            botocore.auth.S3SigV4Auth(frozen, "s3", self.region).add_auth(request)
            prepared = request.prepare()
            prepared.stream_output = stream
            self._events.emit(f"before-send.s3.{operation}", request=prepared)
            response = self._http.send(prepared)
        else:
            target = self._base_path + url[len(self.base_url) :]
            sent = self._sigv4.sign(frozen, method, self.host, target, headers or {}, body)
            lean_request = _LeanRequest(
                method, url, _Headers((k.lower(), v) for k, v in sent), body, stream
            )
            self._events.emit(f"before-send.s3.{operation}", request=lean_request)
            response = self._send_direct(
                self._direct, url, method, target, sent, body, lean_request
            )
            if not stream and response.status_code < 300:
                response.content  # noqa: B018 - the body read: the connection goes back
        status = response.status_code
        if 200 <= status < 300:
            return response
        raise self._error(operation, method, response)

    @staticmethod
    def _send_direct(
        direct: _DirectPool,
        url: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        request: Any,
    ) -> _Response:
        """Send through the direct pool; transport failures raise the botocore exceptions
        botocore's HTTP session raises for them."""
        try:
            return direct.request(method, target, headers, body)
        except _ConnectFailed as e:
            if isinstance(e.error, ssl.SSLError):
                raise botocore.exceptions.SSLError(endpoint_url=url, error=e.error) from None
            if isinstance(e.error, TimeoutError):
                raise botocore.exceptions.ConnectTimeoutError(
                    endpoint_url=url, error=e.error
                ) from None
            raise botocore.exceptions.EndpointConnectionError(
                endpoint_url=url, error=e.error
            ) from None
        except TimeoutError as e:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=url, error=e) from e
        except OSError as e:
            raise botocore.exceptions.ConnectionClosedError(
                endpoint_url=url, error=e, request=request
            ) from e

    def _error(self, operation: str, method: str, response: Any) -> BaseException:
        status = int(response.status_code)
        headers = {str(k).lower(): str(v) for k, v in response.headers.items()}
        try:
            content = response.content if method != "HEAD" else b""
        except Exception:  # a body that breaks off: the status still says what happened
            content = b""
        code, message = _parse_error(content)
        if not code:
            # What botocore reports for an error without a body (every HEAD error).
            code, message = str(status), http.client.responses.get(status, "")
        if status in _REDIRECT_STATUS or code in _REDIRECT_CODES:
            return LeanUnsuitable(f"{status} {code}: {message}")
        error: BaseException = botocore.exceptions.ClientError(
            {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
            },
            operation,
        )
        return error


def _parse_error(content: bytes) -> tuple[str, str]:
    """(Code, Message) of an S3 XML error body; ('', '') when there is none."""
    if not content or not content.lstrip().startswith(b"<"):
        return "", ""
    try:
        root = ET.fromstring(content)
    except ET.ParseError:
        return "", ""
    return (root.findtext("Code") or "").strip(), (root.findtext("Message") or "").strip()


def lean_for(client: Any, bucket: str, max_idle: int = 32) -> LeanS3:
    """The lean path for ``bucket`` through ``client``, or :class:`LeanUnsuitable`.

    The endpoint URL of a key and the region to sign for are botocore's own answer for this
    client and bucket: a presigned GET of a probe key (computed locally, nothing is sent).
    Raises botocore's ``NoCredentialsError`` when there are no credentials.
    """
    if ":" in bucket or bucket.endswith("--x-s3"):
        raise LeanUnsuitable(f"bucket {bucket!r} needs botocore's own signer")
    for attr in ("_endpoint", "_request_signer"):
        if not hasattr(client, attr):
            raise LeanUnsuitable(f"this botocore has no client.{attr}")
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": _PROBE}, ExpiresIn=60
    )
    split = urlsplit(url)
    query = parse_qs(split.query)
    algorithm = query.get("X-Amz-Algorithm", [""])[0]
    scope = query.get("X-Amz-Credential", [""])[0].split("/")
    if algorithm != "AWS4-HMAC-SHA256" or len(scope) != 5 or scope[3] != "s3":
        raise LeanUnsuitable(f"presigned with {algorithm or 'no algorithm'}, scope {scope}")
    if not split.path.endswith("/" + _PROBE):
        raise LeanUnsuitable(f"unexpected object URL {split.scheme}://{split.netloc}{split.path}")
    base = f"{split.scheme}://{split.netloc}{split.path[: -len(_PROBE)]}"
    return LeanS3(client, base, scope[2], _direct_pool(client, base, max_idle))


def _direct_pool(client: Any, base_url: str, max_idle: int) -> _DirectPool | None:
    """A direct connection pool with the settings of ``client``'s HTTP session, or None
    when botocore would not connect directly (a proxy, a client certificate) or its
    settings cannot be read: then requests go through that session."""
    http_session = client._endpoint.http_session
    try:
        if http_session._proxy_config.proxy_url_for(base_url):
            return None
        if http_session._cert_file or http_session._key_file:
            return None
        timeout = http_session._timeout
        verify = http_session._verify
        socket_options = [tuple(o) for o in http_session._socket_options]
    except (AttributeError, TypeError):
        return None
    if isinstance(timeout, (int, float)):
        connect_timeout = read_timeout = float(timeout)
    else:
        connect_timeout, read_timeout = timeout.connect_timeout, timeout.read_timeout
    split = urlsplit(base_url)
    context: ssl.SSLContext | None = None
    if split.scheme == "https":
        if verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            import os.path

            import botocore.httpsession  # type: ignore[import-untyped,unused-ignore]

            where = botocore.httpsession.get_cert_path(verify)
            if where and os.path.isdir(where):
                context = ssl.create_default_context(capath=where)
            else:
                context = ssl.create_default_context(cafile=where or None)
    elif split.scheme != "http":
        return None
    return _DirectPool(
        split.scheme,
        split.hostname or "",
        split.port or (443 if split.scheme == "https" else 80),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        socket_options=socket_options,
        ssl_context=context,
        max_idle=max_idle,
    )
