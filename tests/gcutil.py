"""Shared by the collector's tests: a fresh store on each of the four backends (the
loopback servers, configured through the environment as a user would), and the trees and
checks the tests build on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

BACKENDS = ("file", "s3", "gs", "b2")


class Backend:
    """One backend: ``fresh()`` gives a store URI under a prefix no other test uses."""

    def __init__(self, name: str, fresh: Callable[[], str]) -> None:
        self.name = name
        self.fresh = fresh

    def __repr__(self) -> str:
        return f"Backend({self.name})"


def _uid() -> str:
    return uuid.uuid4().hex[:12]


def open_backend(
    name: str, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch, tmp: Path
) -> Backend:
    """Configure ``name`` through the environment; return its store factory."""
    fx = request.getfixturevalue
    if name == "file":
        return Backend(name, lambda: "file://" + str(tmp / f"store-{_uid()}"))
    if name == "s3":
        s3 = fx("seaweedfs")
        for var in list(os.environ):
            if var.startswith(("AWS_", "SNAPDIR_S3_")):
                mp.delenv(var)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        mp.setenv("AWS_DEFAULT_REGION", s3.region)
        mp.setenv("SNAPDIR_S3_STORE_ENDPOINT_URL", s3.endpoint_url)
        bucket = f"snapdir-gc-{_uid()}"
        client = s3.client()
        client.create_bucket(Bucket=bucket)
        client.close()
        return Backend(name, lambda: f"s3://{bucket}/{_uid()}/store")
    if name == "gs":
        from servers.fakegcs import EMULATOR_ENV

        gcs = fx("fake_gcs")
        for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
            mp.delenv(var, raising=False)
        mp.setenv(EMULATOR_ENV, gcs.endpoint)
        bucket = f"snapdir-gc-{_uid()}"
        gcs.client().create_bucket(bucket)
        return Backend(name, lambda: f"gs://{bucket}/{_uid()}/store")
    if name == "b2":
        b2 = fx("b2_simulator")
        mp.setenv("B2_APPLICATION_KEY_ID", b2.key_id)
        mp.setenv("B2_APPLICATION_KEY", b2.app_key)
        mp.setenv("SNAPDIR_B2_REALM", b2.realm_url)
        return Backend(name, lambda: f"b2://{b2.bucket_name}/{_uid()}/store")
    raise ValueError(name)  # pragma: no cover


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Backend:
    return open_backend(str(request.param), request, monkeypatch, tmp_path)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root
