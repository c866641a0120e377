"""What the run tests share: a fresh store URI on each backend's loopback server, a project
directory, and reading what a store holds."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from servers.b2sim import B2Server
from servers.fakegcs import EMULATOR_ENV, GcsServer
from servers.seaweed import S3Server


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def store_uri(scheme: str, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch) -> str:
    """A fresh store URI on the loopback server for ``scheme``, its environment set (in
    this process, and so in every child it starts)."""
    fx = request.getfixturevalue
    if scheme == "file":
        return f"file://{fx('tmp_path') / 'store'}"
    if scheme == "s3":
        s3: S3Server = fx("seaweedfs")
        for name in list(os.environ):
            if name.startswith(("AWS_", "SNAPDIR_S3_")):
                mp.delenv(name)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        mp.setenv("AWS_DEFAULT_REGION", s3.region)
        mp.setenv("SNAPDIR_S3_STORE_ENDPOINT_URL", s3.endpoint_url)
        client = s3.client()
        bucket = f"snapdir-runs-{_uid()}"
        client.create_bucket(Bucket=bucket)
        client.close()
        return f"s3://{bucket}/t-{_uid()}/store"
    if scheme == "gs":
        gcs: GcsServer = fx("fake_gcs")
        for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
            mp.delenv(name, raising=False)
        mp.setenv(EMULATOR_ENV, gcs.endpoint)
        bucket = f"snapdir-runs-{_uid()}"
        gcs.client().create_bucket(bucket)
        return f"gs://{bucket}/t-{_uid()}/store"
    if scheme == "b2":
        from snapdir.stores.b2 import KEY_ENV, KEY_ID_ENV, REALM_ENV

        b2: B2Server = fx("b2_simulator")
        mp.setenv(KEY_ID_ENV, b2.key_id)
        mp.setenv(KEY_ENV, b2.app_key)
        mp.setenv(REALM_ENV, b2.realm_url)
        return f"b2://{b2.bucket_name}/t-{_uid()}/store"
    raise ValueError(scheme)


def project(tmp_path: Path) -> Path:
    """A project directory (``snapdir.toml`` marks its root) with an input tree."""
    root = tmp_path / "proj"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "snapdir.toml").write_text("")
    (root / "data" / "a.txt").write_text("alpha\n")
    (root / "data" / "sub" / "b.txt").write_text("beta\n")
    return root


def stored_bytes(store_dir: Path) -> list[tuple[str, bytes]]:
    """Every file of a ``file://`` store, with its content."""
    out = []
    for p in sorted(store_dir.rglob("*")):
        if p.is_file():
            out.append((str(p.relative_to(store_dir)), p.read_bytes()))
    return out
