"""A third-party store, as a plugin author would write it: an in-memory ``mem://`` store.

It lives in the test tree to prove the plug-in path end to end: registered only through the
``snapdir.stores`` entry point (see the ``.dist-info`` beside this package), it is found by
``StoreUri``/``open_store``, passes the shipped conformance suite, and carries push/pull.
"""

from __future__ import annotations

import threading

import anyio
from snapdir import HashMismatchError, InFluxError, NotFoundError
from snapdir._snapdir import Hasher, Manifest, blake3_hex
from snapdir.stores import BaseStore, Capability, manifest_key, object_key

#: bucket -> {key: bytes}; shared by every store of the process, like a remote service.
BUCKETS: dict[str, dict[str, bytes]] = {}
_LOCK = threading.Lock()


class MemStore(BaseStore):
    """``mem://bucket/prefix``: keys live in :data:`BUCKETS`."""

    capabilities = Capability.LIST_OBJECTS

    def __init__(self, uri: object) -> None:
        from snapdir import StoreUri

        super().__init__(StoreUri(str(uri)))
        self.prefix = self.uri.prefix + "/" if self.uri.prefix else ""
        with _LOCK:
            self.data = BUCKETS.setdefault(self.uri.bucket, {})

    def _key(self, rel: str) -> str:
        self._requests += 1  # every key touched is one "request" to the service
        return self.prefix + rel

    async def has_object(self, checksum: str) -> bool:
        self._check_hex(checksum, "checksum")
        return self._key(object_key(checksum)) in self.data

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        self._check_hex(checksum, "checksum")
        h = Hasher()
        try:
            chunks = await anyio.to_thread.run_sync(_read_chunks, source)
        except FileNotFoundError:
            raise InFluxError(f"{source} vanished before it could be stored") from None
        for block in chunks:
            h.update(block)
        if h.hexdigest() != checksum:
            raise InFluxError(f"{source} changed: it no longer hashes to {checksum}")
        key = self._key(object_key(checksum))
        with _LOCK:
            if replace or key not in self.data:
                self.data[key] = b"".join(chunks)

    async def get_object(self, checksum: str, dest: str) -> None:
        self._check_hex(checksum, "checksum")
        data = self.data.get(self._key(object_key(checksum)))
        if data is None:
            raise NotFoundError(f"object {checksum} not found in {self.uri}")
        if blake3_hex(data) != checksum:
            raise HashMismatchError(f"object {checksum} in {self.uri} is corrupt")
        await anyio.to_thread.run_sync(_write_file, dest, data)

    async def has_manifest(self, snapshot_id: str) -> bool:
        self._check_hex(snapshot_id, "snapshot id")
        return self._key(manifest_key(snapshot_id)) in self.data

    async def get_manifest(self, snapshot_id: str) -> Manifest:
        from snapdir.stores import parse_stored_manifest

        self._check_hex(snapshot_id, "snapshot id")
        data = self.data.get(self._key(manifest_key(snapshot_id)))
        if data is None:
            raise NotFoundError(f"snapshot {snapshot_id} not found in {self.uri}")
        return parse_stored_manifest(data, snapshot_id, str(self.uri))

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        self._check_hex(snapshot_id, "snapshot id")
        data = (text + "\n").encode()
        if blake3_hex(data) != snapshot_id:
            raise HashMismatchError(f"manifest text does not hash to {snapshot_id}")
        with _LOCK:
            self.data[self._key(manifest_key(snapshot_id))] = data

    def _list(self, area: str, shard: str = "") -> list[str]:
        base = self._key(area + "/") + (shard + "/" if shard else "")
        out = []
        for k in list(self.data):
            if k.startswith(base):
                digest = k[len(self._key(area + "/")) :].replace("/", "")
                if len(digest) == 64:
                    out.append(digest)
        return sorted(out)

    async def list_objects(self, shard: str = "") -> set[str]:
        return set(self._list(".objects", shard))

    async def list_manifests(self) -> list[str]:
        return self._list(".manifests")


def _read_chunks(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return list(iter(lambda: f.read(1 << 20), b""))


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
