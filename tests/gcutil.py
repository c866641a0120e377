"""Shared by the collector's tests: a fresh store on each of the four backends (the
loopback servers, configured through the environment as a user would), and the trees and
checks the tests build on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class Env:
    """Where a backend's settings go: pytest's monkeypatch in tests, ``os.environ`` in the
    scripts."""

    def __init__(self, mp: pytest.MonkeyPatch | None = None) -> None:
        self.mp = mp

    def set(self, name: str, value: str) -> None:
        if self.mp is not None:
            self.mp.setenv(name, value)
        else:
            os.environ[name] = value

    def unset(self, name: str) -> None:
        if self.mp is not None:
            self.mp.delenv(name, raising=False)
        else:
            os.environ.pop(name, None)


def configure(name: str, server: Any, env: Env, tmp: Path) -> Backend:
    """Point snapdir at ``server`` (None for ``file``) through the environment; return the
    backend's store factory."""
    if name == "file":
        return Backend(name, lambda: "file://" + str(tmp / f"store-{_uid()}"))
    if name == "s3":
        server.use_env(env.set, env.unset)
        bucket = f"snapdir-gc-{_uid()}"
        client = server.client()
        client.create_bucket(Bucket=bucket)
        client.close()
        return Backend(name, lambda: f"s3://{bucket}/{_uid()}/store")
    if name == "gs":
        from servers.fakegcs import EMULATOR_ENV

        for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
            env.unset(var)
        env.set(EMULATOR_ENV, server.endpoint)
        bucket = f"snapdir-gc-{_uid()}"
        server.client().create_bucket(bucket)
        return Backend(name, lambda: f"gs://{bucket}/{_uid()}/store")
    if name == "b2":
        env.set("B2_APPLICATION_KEY_ID", server.key_id)
        env.set("B2_APPLICATION_KEY", server.app_key)
        env.set("SNAPDIR_B2_REALM", server.realm_url)
        return Backend(name, lambda: f"b2://{server.bucket_name}/{_uid()}/store")
    raise ValueError(name)  # pragma: no cover


FIXTURE = {"file": None, "s3": "seaweedfs", "gs": "fake_gcs", "b2": "b2_simulator"}


def open_backend(
    name: str, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch, tmp: Path
) -> Backend:
    """Configure ``name`` through the environment (its server: the session fixture)."""
    fixture = FIXTURE[name]
    server = request.getfixturevalue(fixture) if fixture else None
    return configure(name, server, Env(mp), tmp)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root
