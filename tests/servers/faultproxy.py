"""A fault-injecting HTTP/1.1 reverse proxy for loopback test servers.

It sits between an SDK and one upstream server (SeaweedFS, fake-gcs-server, the B2 simulator)
and, for a configurable share of requests, injects one fault instead of (or while) forwarding:

``503`` / ``500`` / ``429``
    answer at once with that status, ``Retry-After`` (default ``1``), ``Date`` (b2sdk needs it)
    and ``Connection: close``;
    the request never reaches the upstream (its body is read and discarded first, unless the
    client sent ``Expect: 100-continue``).  The body matches ``flavor`` ("s3" XML error,
    "gcs"/"b2" JSON error, or "plain" text) so SDKs parse it like a real service error.
``reset_request``
    forward the head and only part of the body (a seeded fraction), then reset (RST) both
    connections: the upstream sees a truncated request and must not commit it.
``reset_response``
    forward the whole request (the upstream commits), relay the response head and part of the
    body, then reset the client connection.
``lost_response``
    forward the whole request (the upstream commits), read the whole response, then reset the
    client connection without sending any of it.
``latency``
    sleep ``latency_s`` and then forward normally.

Requests are forwarded byte for byte, head included (``Host`` too, so SigV4 signatures made for
the proxy's address still verify upstream: the upstream checks the ``Host`` it receives, which
is the one that was signed).  Bodies are streamed in 64 KiB pieces with their own framing
(``Content-Length`` or ``Transfer-Encoding: chunked``), never buffered whole.  A client's
``Expect: 100-continue`` is answered by the proxy itself; upstream 1xx responses are dropped.
Each request gets a fresh upstream connection; client connections are kept alive when both
sides allow it.

Determinism: ``random.Random(seed)`` is consulted once per *eligible* request (method in
``methods``, target matching ``path_regex``), in arrival order, three draws each (fault?, kind,
cut fraction), so a single-threaded client sees the same faults every run.  ``script`` gives
explicit faults (or ``None`` for "pass") for the first eligible requests before the random
draws apply; ``max_faults`` caps the total.  Concurrent clients make arrival order, and hence
which request gets which fault, nondeterministic.

The upstream must be a loopback ``http://`` URL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import enum
import io
import json
import random
import re
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._proc import LOOPBACK

_CHUNK = 64 * 1024
_MAX_HEAD = 64 * 1024
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class FaultKind(str, enum.Enum):
    """The faults the proxy can inject."""

    ERROR_503 = "503"
    ERROR_500 = "500"
    ERROR_429 = "429"
    RESET_REQUEST = "reset_request"
    RESET_RESPONSE = "reset_response"
    LOST_RESPONSE = "lost_response"
    LATENCY = "latency"


ERROR_KINDS = frozenset({FaultKind.ERROR_503, FaultKind.ERROR_500, FaultKind.ERROR_429})
ALL_KINDS = frozenset(FaultKind)
_REASONS = {503: "Service Unavailable", 500: "Internal Server Error", 429: "Too Many Requests"}


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault: which request got which kind."""

    method: str
    target: str
    kind: FaultKind


@dataclass
class FaultStats:
    """Counters (a snapshot when read through :attr:`FaultProxy.stats`)."""

    requests: int = 0  # request heads received
    eligible: int = 0  # of which matched methods/path_regex
    forwarded: int = 0  # requests whose complete body reached the upstream
    injected: Counter[str] = field(default_factory=Counter)  # FaultKind.value -> count
    seen: Counter[str] = field(default_factory=Counter)  # "METHOD target" -> count

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    def count(self, kind: FaultKind) -> int:
        return self.injected[kind.value]


class _ProtocolError(Exception):
    pass


@dataclass
class _Head:
    raw: bytes
    start_line: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def tokens(self, name: str) -> set[str]:
        lname = name.lower()
        out: set[str] = set()
        for key, value in self.headers:
            if key.lower() == lname:
                out.update(t.strip().lower() for t in value.split(","))
        return out


@dataclass(frozen=True)
class _Framing:
    kind: str  # "none" | "length" | "chunked" | "close"
    length: int = 0


def _read_head(reader: io.BufferedReader) -> _Head | None:
    """Read a request/response head; None on a clean EOF before any byte."""
    raw = bytearray()
    line = reader.readline(_MAX_HEAD + 1)
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLFs between messages
        line = reader.readline(_MAX_HEAD + 1)
    if not line:
        return None
    start_line = line.decode("latin-1").rstrip("\r\n")
    raw += line
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline(_MAX_HEAD + 1)
        if not line:
            raise _ProtocolError("EOF inside message head")
        raw += line
        if len(raw) > _MAX_HEAD:
            raise _ProtocolError("message head too large")
        if line in (b"\r\n", b"\n"):
            return _Head(bytes(raw), start_line, headers)
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _ProtocolError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))


def _request_framing(head: _Head) -> _Framing:
    if "chunked" in head.tokens("Transfer-Encoding"):
        return _Framing("chunked")
    length = head.get("Content-Length")
    if length is not None:
        n = int(length)
        return _Framing("length", n) if n > 0 else _Framing("none")
    return _Framing("none")


def _response_framing(method: str, status: int, head: _Head) -> _Framing:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return _Framing("none")
    if "chunked" in head.tokens("Transfer-Encoding"):
        return _Framing("chunked")
    length = head.get("Content-Length")
    if length is not None:
        n = int(length)
        return _Framing("length", n) if n > 0 else _Framing("none")
    return _Framing("close")


def _copy(src: io.BufferedReader, dst: socket.socket | None, n: int) -> None:
    """Copy exactly ``n`` bytes (``dst=None``: discard)."""
    while n > 0:
        data = src.read(min(_CHUNK, n))
        if not data:
            raise _ProtocolError("EOF inside message body")
        if dst is not None:
            dst.sendall(data)
        n -= len(data)


def _relay_body(
    src: io.BufferedReader,
    dst: socket.socket | None,
    framing: _Framing,
    limit: int | None = None,
) -> None:
    """Relay one message body with its framing unchanged (``dst=None``: discard).

    With ``limit``, relay at most ``limit`` payload bytes and never the end of the message
    (no final chunk), so the receiver sees a truncated message; the caller then resets.
    """
    if framing.kind == "none":
        return
    if framing.kind == "length":
        _copy(src, dst, framing.length if limit is None else min(limit, framing.length))
        return
    if framing.kind == "close":
        budget = limit
        while budget is None or budget > 0:
            data = src.read1(_CHUNK if budget is None else min(_CHUNK, budget))
            if not data:
                return
            if dst is not None:
                dst.sendall(data)
            if budget is not None:
                budget -= len(data)
        return
    budget = limit  # chunked: parse the framing so a truncation never looks complete
    while True:
        size_line = src.readline(_MAX_HEAD)
        if not size_line:
            raise _ProtocolError("EOF inside chunked body")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            if budget is not None:
                return
            if dst is not None:
                dst.sendall(size_line)
            while True:  # trailers, up to the blank line
                line = src.readline(_MAX_HEAD)
                if not line:
                    raise _ProtocolError("EOF inside chunked trailer")
                if dst is not None:
                    dst.sendall(line)
                if line in (b"\r\n", b"\n"):
                    return
        if dst is not None:
            dst.sendall(size_line)
        if budget is not None and size >= budget:
            _copy(src, dst, budget)
            return
        _copy(src, dst, size)
        crlf = src.readline(_MAX_HEAD)
        if dst is not None:
            dst.sendall(crlf)
        if budget is not None:
            budget -= size


def _partial(framing: _Framing, fraction: float) -> int:
    if framing.kind == "length":
        return int(framing.length * fraction)
    if framing.kind == "none":
        return 0
    return int(_CHUNK * fraction)


def _abort(sock: socket.socket, reader: io.BufferedReader | None = None) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if reader is not None:
        with contextlib.suppress(OSError):
            reader.close()
    with contextlib.suppress(OSError):
        sock.close()


def _error_body(kind: FaultKind, flavor: str) -> tuple[int, str, bytes]:
    status = int(kind.value)
    message = f"injected fault: {status}"
    if flavor == "s3":
        code = {503: "ServiceUnavailable", 500: "InternalError", 429: "SlowDown"}[status]
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>faultproxy</RequestId></Error>"
        )
        return status, "application/xml", xml.encode()
    if flavor == "gcs":
        reason = "rateLimitExceeded" if status == 429 else "backendError"
        err = {"code": status, "message": message, "errors": [{"reason": reason}]}
        return status, "application/json; charset=UTF-8", json.dumps({"error": err}).encode()
    if flavor == "b2":
        b2_codes = {503: "service_unavailable", 500: "internal_error", 429: "too_many_requests"}
        payload = {"status": status, "code": b2_codes[status], "message": message}
        return status, "application/json", json.dumps(payload).encode()
    return status, "text/plain", message.encode()


class FaultProxy:
    """A running proxy; see the module docstring.  Stop it with :meth:`stop`."""

    def __init__(
        self,
        upstream_url: str,
        *,
        rate: float,
        kinds: Iterable[FaultKind | str],
        seed: int,
        methods: Iterable[str] | None = None,
        path_regex: str | None = None,
        script: Sequence[FaultKind | str | None] = (),
        max_faults: int | None = None,
        latency_s: float = 0.5,
        retry_after: str | None = "1",
        flavor: str = "plain",
        timeout_s: float = 60.0,
        port: int = 0,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream_url)
        if parts.scheme != "http" or parts.hostname not in _LOOPBACK_HOSTS:
            raise ValueError(f"upstream must be an http:// loopback URL, got {upstream_url!r}")
        if flavor not in ("plain", "s3", "gcs", "b2"):
            raise ValueError(f"unknown flavor {flavor!r}")
        self.upstream_url = upstream_url
        self._upstream = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._stats = FaultStats()
        self._events: list[FaultEvent] = []
        self._clients: set[socket.socket] = set()
        self.latency_s = latency_s
        self.retry_after = retry_after
        self.flavor = flavor
        self.timeout_s = timeout_s
        self.rate = 0.0
        self.kinds: tuple[FaultKind, ...] = ()
        self.methods: frozenset[str] | None = None
        self.path_regex: re.Pattern[str] | None = None
        self.script: list[FaultKind | None] = []
        self.max_faults: int | None = None
        self.configure(
            rate=rate,
            kinds=kinds,
            methods=methods,
            path_regex=path_regex,
            script=script,
            max_faults=max_faults,
        )
        self._server = _ProxyServer(self, port)
        self.port = int(self._server.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"faultproxy-{self.port}", daemon=True
        )
        self._thread.start()

    # ---- configuration and results -------------------------------------------------------

    def configure(
        self,
        *,
        rate: float | None = None,
        kinds: Iterable[FaultKind | str] | None = None,
        methods: Iterable[str] | None = None,
        path_regex: str | None = None,
        script: Sequence[FaultKind | str | None] | None = None,
        max_faults: int | None = None,
    ) -> None:
        """Change fault settings while running (``None`` keeps a setting; to lift a
        methods/path/max_faults restriction, create a new proxy)."""
        with self._lock:
            if rate is not None:
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("rate must be within [0, 1]")
                self.rate = rate
            if kinds is not None:
                self.kinds = tuple(sorted({FaultKind(k) for k in kinds}, key=lambda k: k.value))
                if not self.kinds:
                    raise ValueError("kinds must not be empty")
            if methods is not None:
                self.methods = frozenset(m.upper() for m in methods)
            if path_regex is not None:
                self.path_regex = re.compile(path_regex)
            if script is not None:
                self.script = [FaultKind(k) if k is not None else None for k in script]
            if max_faults is not None:
                self.max_faults = max_faults

    @property
    def stats(self) -> FaultStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return dataclasses.replace(
                self._stats,
                injected=Counter(self._stats.injected),
                seen=Counter(self._stats.seen),
            )

    @property
    def events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._events)

    def stop(self) -> None:
        """Stop accepting, drop open client connections, join the accept thread."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals -----------------------------------------------------------------------

    def _decide(self, method: str, target: str) -> tuple[FaultKind | None, float]:
        with self._lock:
            self._stats.requests += 1
            self._stats.seen[f"{method} {target}"] += 1
            if self.methods is not None and method not in self.methods:
                return None, 0.0
            if self.path_regex is not None and not self.path_regex.search(target):
                return None, 0.0
            self._stats.eligible += 1
            roll, pick, fraction = self._rng.random(), self._rng.random(), self._rng.random()
            fraction = 0.1 + 0.8 * fraction
            kind: FaultKind | None
            if self.script:
                kind = self.script.pop(0)
            elif roll < self.rate:
                kind = self.kinds[int(pick * len(self.kinds))]
            else:
                kind = None
            max_faults = self.max_faults
            if kind is not None and max_faults is not None:
                kind = kind if self._stats.total_injected < max_faults else None
            if kind is not None:
                self._stats.injected[kind.value] += 1
                self._events.append(FaultEvent(method, target, kind))
            return kind, fraction

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._clients.add(sock)
            else:
                self._clients.discard(sock)

    def _forwarded(self) -> None:
        with self._lock:
            self._stats.forwarded += 1

    def _send_error(self, client: socket.socket, kind: FaultKind, method: str) -> None:
        status, ctype, body = _error_body(kind, self.flavor)
        if method == "HEAD":
            body = b""
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Connection: close",
        ]
        if self.retry_after is not None:
            lines.append(f"Retry-After: {self.retry_after}")
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _serve_one(self, client: socket.socket, creader: io.BufferedReader) -> bool:
        """Handle one request on a client connection; True to keep the connection."""
        req = _read_head(creader)
        if req is None:
            return False
        method, target, version = [*req.start_line.split(" ", 2), "", ""][:3]
        framing = _request_framing(req)
        expect = (req.get("Expect") or "").lower() == "100-continue"
        kind, fraction = self._decide(method, target)

        if kind in ERROR_KINDS:
            assert kind is not None
            if not expect:
                _relay_body(creader, None, framing)
            self._send_error(client, kind, method)
            return False
        if kind is FaultKind.LATENCY:
            time.sleep(self.latency_s)

        try:
            upstream = socket.create_connection(self._upstream, timeout=self.timeout_s)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            body = b"fault proxy: upstream unreachable"
            client.sendall(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            return False
        ureader = upstream.makefile("rb")
        try:
            if kind is FaultKind.RESET_REQUEST:
                if framing.kind == "none":  # no body: cut the head itself short
                    upstream.sendall(req.raw[: max(1, int((len(req.raw) - 2) * fraction))])
                else:
                    upstream.sendall(req.raw)
                    if expect:
                        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    _relay_body(creader, upstream, framing, limit=_partial(framing, fraction))
                _abort(upstream, ureader)
                _abort(client, creader)
                return False
            upstream.sendall(req.raw)
            if expect and framing.kind != "none":
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            _relay_body(creader, upstream, framing)
            self._forwarded()

            resp = _read_head(ureader)
            while resp is not None:
                status = int(resp.start_line.split(" ", 2)[1])
                if not 100 <= status < 200 or status == 101:
                    break
                resp = _read_head(ureader)  # drop interim responses (we sent our own 100)
            if resp is None:
                raise _ProtocolError("upstream closed without a response")
            rframing = _response_framing(method, status, resp)

            if kind is FaultKind.LOST_RESPONSE:
                _relay_body(ureader, None, rframing)
                _abort(client, creader)
                return False
            if kind is FaultKind.RESET_RESPONSE:
                if rframing.kind == "none":
                    client.sendall(resp.raw[: max(1, int(len(resp.raw) * fraction))])
                else:
                    client.sendall(resp.raw)
                    _relay_body(ureader, client, rframing, limit=_partial(rframing, fraction))
                time.sleep(0.02)  # let the client take in what was sent before the RST
                _abort(client, creader)
                return False

            client.sendall(resp.raw)
            _relay_body(ureader, client, rframing)
        finally:
            with contextlib.suppress(OSError):
                ureader.close()
            with contextlib.suppress(OSError):
                upstream.close()

        if rframing.kind == "close":
            return False
        if "close" in req.tokens("Connection") or "close" in resp.tokens("Connection"):
            return False
        return not (version == "HTTP/1.0" and "keep-alive" not in req.tokens("Connection"))


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    # 32 concurrent SDK workers: socketserver's default backlog of 5 drops connections.
    request_queue_size = 128

    def __init__(self, proxy: FaultProxy, port: int) -> None:
        self.proxy = proxy
        super().__init__((LOOPBACK, port), _ConnectionHandler)


class _ConnectionHandler(socketserver.BaseRequestHandler):
    server: _ProxyServer

    def handle(self) -> None:
        proxy = self.server.proxy
        sock: socket.socket = self.request
        sock.settimeout(proxy.timeout_s)
        # Heads and bodies go out in separate writes: without this a client that delays its
        # ACKs waits ~40 ms (Nagle) for every small response.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proxy._track(sock, add=True)
        reader = sock.makefile("rb")
        try:
            while proxy._serve_one(sock, reader):
                pass
        except (OSError, _ProtocolError, ValueError):
            _abort(sock, reader)
        finally:
            proxy._track(sock, add=False)
            with contextlib.suppress(OSError):
                reader.close()


def start_fault_proxy(
    upstream_url: str,
    *,
    rate: float = 0.2,
    kinds: Iterable[FaultKind | str] = ALL_KINDS,
    seed: int = 0,
    methods: Iterable[str] | None = None,
    path_regex: str | None = None,
    script: Sequence[FaultKind | str | None] = (),
    max_faults: int | None = None,
    latency_s: float = 0.5,
    retry_after: str | None = "1",
    flavor: str = "plain",
    port: int = 0,
) -> FaultProxy:
    """Start a fault proxy on 127.0.0.1 (``port=0``: a free one) in front of ``upstream_url``.

    ``flavor`` ("plain", "s3", "gcs", "b2") shapes the bodies of injected error responses.
    """
    return FaultProxy(
        upstream_url,
        rate=rate,
        kinds=kinds,
        seed=seed,
        methods=methods,
        path_regex=path_regex,
        script=script,
        max_faults=max_faults,
        latency_s=latency_s,
        retry_after=retry_after,
        flavor=flavor,
        port=port,
    )
