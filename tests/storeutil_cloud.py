"""Scaffolding shared by the cloud store test files (``test_store_s3.py``,
``test_store_gcs.py``, ``test_store_b2.py``): the few helpers that are the same in all three.
What each backend checks stays in its own file."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from servers.b2sim import B2Server
from servers.fakegcs import EMULATOR_ENV, GcsServer
from servers.seaweed import S3Server
from snapdir._snapdir import blake3_hex
from snapdir.stores import Store
from snapdir.stores.b2 import KEY_ENV, KEY_ID_ENV, REALM_ENV

#: ``SNAPDIR_TEST_NO_SKIP=1`` (CI): a server that cannot start fails its tests.
NO_SKIP = os.environ.get("SNAPDIR_TEST_NO_SKIP", "") not in ("", "0")


def random_bytes(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes (the same every run, different per seed)."""
    return random.Random(seed).randbytes(size)


def uid() -> str:
    """A short unique name part (bucket names, per-test prefixes)."""
    return uuid.uuid4().hex[:12]


def close_store(store: Store) -> None:
    """Close a store from synchronous test code."""
    anyio.run(store.aclose)


def stray_keys(root: str) -> list[str]:
    """Keys under a store's ``root`` (``<prefix>/``) that are not snapdir's: a listing of
    objects or manifests must skip them."""
    return [
        root + ".objects/README",
        root + ".objects/abc/def/ghi/short",
        root + ".objects/ABC/DEF/GHI/" + "A" * 55,
        root + ".manifests/tmp-upload",
    ]


def alpha_beta_tree(tmp_path: Path) -> Path:
    """A tree of three files holding two objects (``c`` repeats ``a``), for request costs."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"alpha")
    (tree / "b").write_bytes(b"beta")
    (tree / "c").write_bytes(b"alpha")  # the same object as a
    return tree


class Recorder:
    """Records (method, url, lower-cased headers) of every request a ``requests`` session
    sends (the GCS and B2 SDKs both talk through one)."""

    def __init__(self, session: Any) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        original = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            headers = {k.lower(): str(v) for k, v in (kwargs.get("headers") or {}).items()}
            self.calls.append((method.upper(), url, headers))
            return original(method, url, *args, **kwargs)

        session.request = request


def check_repair_of_same_size_damage(
    store: Store,
    tmp_path: Path,
    size: int,
    plant: Callable[[str, bytes], None],
    read: Callable[[str], bytes],
) -> None:
    """The case ``put_object(..., replace=True)`` exists for, end to end: an object damaged
    in place with its size unchanged, larger than what the store re-hashes when a put finds
    it there (its ``verify_on_conflict_max`` must be below ``size``). An ordinary put
    accepts it on its size; ``push(repair=True)`` finds it and mends it. ``plant(checksum,
    data)`` and ``read(checksum)`` write and read the stored object past the store."""
    from snapdir._push import push_with_stats

    big = random_bytes(size, 41)
    tree = tmp_path / "repair-tree"
    tree.mkdir()
    (tree / "big").write_bytes(big)
    checksum = blake3_hex(big)
    garbage = random_bytes(size, 42)

    async def body() -> None:
        await push_with_stats(tree, store)
        plant(checksum, garbage)
        await store.put_object(checksum, str(tree / "big"), size)
        assert read(checksum) == garbage, "an ordinary put accepts it on its size"
        mended = await push_with_stats(tree, store, repair=True)
        assert mended["uploaded"] == 1
        assert await store.verify_objects([(checksum, size)]) == {}

    anyio.run(body)
    assert read(checksum) == big


def fresh_store_uri(
    scheme: str, request: pytest.FixtureRequest, mp: pytest.MonkeyPatch, bucket_prefix: str
) -> str:
    """A fresh store URI on the loopback server for ``scheme`` (``file`` included), its
    environment set in this process, and so in every child it starts; cloud buckets are
    named ``<bucket_prefix>-<random>``."""
    fx = request.getfixturevalue
    if scheme == "file":
        return f"file://{fx('tmp_path') / 'store'}"
    if scheme == "s3":
        s3: S3Server = fx("seaweedfs")
        s3.use_env(mp.setenv, mp.delenv)
        client = s3.client()
        bucket = f"{bucket_prefix}-{uid()}"
        client.create_bucket(Bucket=bucket)
        client.close()
        return f"s3://{bucket}/t-{uid()}/store"
    if scheme == "gs":
        gcs: GcsServer = fx("fake_gcs")
        for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
            mp.delenv(name, raising=False)
        mp.setenv(EMULATOR_ENV, gcs.endpoint)
        bucket = f"{bucket_prefix}-{uid()}"
        gcs.client().create_bucket(bucket)
        return f"gs://{bucket}/t-{uid()}/store"
    if scheme == "b2":
        b2: B2Server = fx("b2_simulator")
        mp.setenv(KEY_ID_ENV, b2.key_id)
        mp.setenv(KEY_ENV, b2.app_key)
        mp.setenv(REALM_ENV, b2.realm_url)
        return f"b2://{b2.bucket_name}/t-{uid()}/store"
    raise ValueError(scheme)
