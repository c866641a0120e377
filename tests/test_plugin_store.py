"""A third-party store plugs in through the ``snapdir.stores`` entry point, and the shipped
conformance suite runs against it in a few lines (what a plugin author does)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from snapdir import StoreUri
from snapdir.stores import Store, manifest_key, object_key
from snapdir.testing import StoreConformance

PLUGIN_DIR = Path(__file__).parent / "plugin_example"
sys.path.insert(0, str(PLUGIN_DIR))

import memstore_plugin  # noqa: E402  (the plugin's own package, found on PLUGIN_DIR)


def test_entry_point_store_is_found_and_carries_push_and_pull(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "d" / "b.bin").write_bytes(os.urandom(300_000))
    script = textwrap.dedent(
        f"""
        import asyncio, snapdir
        from snapdir.stores import open_store, registered_schemes
        from snapdir.cli import main
        assert "mem" in registered_schemes(), registered_schemes()
        uri = snapdir.StoreUri("mem://bucket/snaps")
        store = open_store(uri)
        assert type(store).__name__ == "MemStore", type(store)
        async def go():
            sid = await snapdir.push({str(tree)!r}, uri)
            await snapdir.pull(sid, uri, {str(tmp_path / "out")!r})
            assert await snapdir.id({str(tmp_path / "out")!r}) == sid
            assert await snapdir.verify(sid, uri)
            return sid
        sid = asyncio.run(go())
        assert main(["verify", "--id", sid, "--store", "mem://bucket/snaps", "-q"]) == 0
        print(sid)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(PLUGIN_DIR))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) == 64


def test_unregistered_scheme_is_refused_with_the_known_ones() -> None:
    script = "import snapdir; snapdir.StoreUri('mem://bucket/x')"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert "unknown scheme 'mem'" in r.stderr


class TestMemStoreConformance(StoreConformance):
    """The in-memory plugin store passes the same suite as the built-in backends."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        bucket = f"b{abs(hash(tmp_path)) % 10**9}"
        memstore_plugin.BUCKETS.pop(bucket, None)
        yield memstore_plugin.MemStore(StoreUri(f"mem://{bucket}/prefix"))
        memstore_plugin.BUCKETS.pop(bucket, None)

    def _data(self, store: Store) -> dict[str, bytes]:
        assert isinstance(store, memstore_plugin.MemStore)
        return store.data

    def raw_keys(self, store: Store) -> set[str]:
        return set(self._data(store))

    def read_raw(self, store: Store, key: str) -> bytes:
        return self._data(store)[key]

    def corrupt(self, store: Store, checksum: str, data: bytes) -> None:
        self._data(store)["prefix/" + object_key(checksum)] = data

    def write_raw_manifest(self, store: Store, snapshot_id: str, data: bytes) -> None:
        self._data(store)["prefix/" + manifest_key(snapshot_id)] = data
