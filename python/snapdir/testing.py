"""The store conformance suite: the contract of :mod:`snapdir.stores._base`, as tests.

Every backend — built-in or third-party — runs the same tests, so the guarantees the
operations rely on (SPEC §4: only verified bytes visible, idempotent and race-safe writes,
verified reads, the exact key layout) are checked once, in one place, instead of drifting
apart across copy-pasted test files. Use it with pytest in a few lines::

    import pytest
    from snapdir.testing import StoreConformance

    class TestMyStore(StoreConformance):
        large_object_size = 9 * 1024 * 1024  # above the store's multipart threshold

        @pytest.fixture
        def store(self, tmp_path):
            s = MyStore(StoreUri("my://bucket/some/fresh/prefix"))  # existing, empty
            yield s
            anyio.run(s.aclose)

        def raw_keys(self, store): ...            # every key the backend holds (see below)
        def read_raw(self, store, key): ...       # the raw bytes under a key
        def corrupt(self, store, checksum, data): ...         # overwrite an object, unchecked
        def write_raw_manifest(self, store, snapshot_id, data): ...  # same for a manifest

The hooks talk to the backend *around* the store (its SDK, the directory), which is how the
suite can check what is really stored and plant corruption the store must catch. Keys are
full keys as the backend names them; :meth:`StoreConformance.key_root` says which part of
them is the store's prefix (``<prefix>/`` for a cloud URI; override it for other layouts,
e.g. ``""`` when ``raw_keys`` returns paths relative to a ``file://`` store's directory).
``raw_keys`` should list a little *more* than the prefix (the bucket, or a parent prefix
that only this test uses) so that keys written outside the prefix are caught too.

Tests are plain synchronous pytest methods that drive the async store with
:func:`anyio.run` (``backend`` picks the event loop; ``extra_backends`` get a smoke test), so
no anyio pytest plugin configuration is needed. The suite needs pytest; the package does not
depend on it, so this module imports it and is only meant to be imported from tests.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import anyio
import pytest

from ._errors import (
    HashMismatchError,
    InFluxError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    StoreError,
)
from ._snapdir import EMPTY_CHECKSUM, Manifest, blake3_hex, walk
from ._types import StoreUri
from .stores._base import (
    Capability,
    ObjectGet,
    ObjectPut,
    PushedTree,
    Store,
    TreePushStore,
    manifest_key,
    object_key,
)
from .stores._keys import KeyStore, has_keys, probe_create_only
from .stores._wrappers import wrap

__all__ = ["StoreConformance"]

T = TypeVar("T")

MiB = 1024 * 1024
_OBJECT_KEY = re.compile(r"\.objects/[0-9a-f]{3}/[0-9a-f]{3}/[0-9a-f]{3}/[0-9a-f]{55}")
_MANIFEST_KEY = re.compile(r"\.manifests/[0-9a-f]{3}/[0-9a-f]{3}/[0-9a-f]{3}/[0-9a-f]{55}")
#: Size of the large object when a store does not say (a few MiB: streaming, not multipart).
_DEFAULT_LARGE = 3 * MiB + 7
#: Sentinel in parametrisations: "this class's ``large_object_size``".
_LARGE = -1


def data_of(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes (the same every run, different per seed)."""
    return random.Random(seed).randbytes(size)


class StoreConformance:
    """Mix-in test class: subclass it, provide the ``store`` fixture and the four hooks.

    Class attributes a subclass may set:

    * ``large_object_size`` — size of the "large object" tests; set it above the store's
      multipart threshold (lower the threshold in the fixture to keep the test fast) so the
      multipart path is covered, including a source that changes during a multipart upload.
    * ``backend`` — the anyio backend the tests run on (``"asyncio"``).
    * ``extra_backends`` — backends that additionally get a round-trip smoke test.
    * ``ignored_keys`` — a regex (matched against keys relative to :meth:`key_root`) for
      bookkeeping keys the store may legitimately keep besides objects and manifests.
    * ``concurrent_writers`` — how many concurrent puts of one key the race test runs.
    """

    large_object_size: ClassVar[int] = _DEFAULT_LARGE
    backend: ClassVar[str] = "asyncio"
    extra_backends: ClassVar[tuple[str, ...]] = ("trio",)
    ignored_keys: ClassVar[str | None] = None
    concurrent_writers: ClassVar[int] = 4

    # -- what a backend's test class provides ----------------------------------------------
    @pytest.fixture
    def store(self) -> Store:
        """A fresh, empty, existing store (create it first if the backend refuses to read
        a store that was never written, as ``file://`` does); the fixture closes it after
        the test. Override it."""
        pytest.fail(f"{type(self).__name__} must define a `store` fixture")

    def raw_keys(self, store: Store) -> set[str]:
        """Every key the backend holds at and around the store's prefix, bypassing the
        store (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must implement raw_keys()")

    def read_raw(self, store: Store, key: str) -> bytes:
        """The bytes stored under ``key`` (a key as :meth:`raw_keys` names it)."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_raw()")

    def corrupt(self, store: Store, checksum: str, data: bytes) -> None:
        """Write ``data`` under object ``checksum``'s key, bypassing every check."""
        raise NotImplementedError(f"{type(self).__name__} must implement corrupt()")

    def write_raw_manifest(self, store: Store, snapshot_id: str, data: bytes) -> None:
        """Write ``data`` under manifest ``snapshot_id``'s key, bypassing every check."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_raw_manifest()")

    def key_root(self, store: Store) -> str:
        """The part of a raw key before ``.objects/`` / ``.manifests/``."""
        prefix = StoreUri(store.uri).prefix
        return prefix + "/" if prefix else ""

    def raw_mode(self, store: Store, key: str) -> int | None:
        """Permission bits of the stored key, for stores that have them (else None)."""
        return None

    # -- helpers -----------------------------------------------------------------------------
    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a coroutine function on this class's event loop backend."""
        return anyio.run(fn, *args, backend=self.backend)

    def _size(self, size: int) -> int:
        return self.large_object_size if size == _LARGE else size

    @staticmethod
    def _source(tmp_path: Path, name: str, data: bytes, mode: int = 0o644) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(mode)
        return str(path)

    def _store_keys(self, store: Store) -> set[str]:
        """Raw keys relative to the key root; keys outside it fail the test."""
        root = self.key_root(store)
        ignored = re.compile(self.ignored_keys) if self.ignored_keys else None
        out: set[str] = set()
        for key in self.raw_keys(store):
            assert key.startswith(root), f"{key!r} was written outside the store's prefix {root!r}"
            rel = key[len(root) :]
            if ignored is not None and ignored.fullmatch(rel):
                continue
            out.add(rel)
        return out

    def _assert_layout(self, store: Store, objects: set[str], manifests: set[str]) -> None:
        """The store holds exactly these objects and manifests, under the SPEC §4 keys
        (besides well-formed journal entries, which pushes add)."""
        from datetime import datetime, timezone

        from .lifecycle.journal import JOURNAL, parse_key

        keys = self._store_keys(store)
        for rel in [k for k in keys if k.startswith(JOURNAL)]:
            parse_key(rel, datetime.now(timezone.utc))
            keys.discard(rel)
        for rel in keys:
            assert _OBJECT_KEY.fullmatch(rel) or _MANIFEST_KEY.fullmatch(rel), (
                f"unexpected key {rel!r} under the store's prefix"
            )
        expected = {object_key(c) for c in objects} | {manifest_key(i) for i in manifests}
        assert keys == expected

    def _object_raw_key(self, store: Store, checksum: str) -> str:
        return self.key_root(store) + object_key(checksum)

    @staticmethod
    def _tree_manifest(tmp_path: Path, name: str, files: dict[str, bytes]) -> Manifest:
        root = tmp_path / name
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        root.mkdir(exist_ok=True)
        manifest, _warnings = walk(str(root))
        return manifest

    # -- the protocol --------------------------------------------------------------------------
    def test_satisfies_the_protocol(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.capabilities, Capability)
        assert isinstance(store.uri, StoreUri)
        count = store.request_count()
        assert isinstance(count, int)
        assert count >= 0

    def test_empty_store(self, store: Store) -> None:
        async def body() -> None:
            assert await store.list_manifests() == []
            if Capability.LIST_OBJECTS in store.capabilities:
                assert await store.list_objects() == set()
            assert not await store.has_object(EMPTY_CHECKSUM)
            assert await store.verify_objects([]) == {}

        self.run(body)

    # -- objects ---------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        "size", [0, 1, 3 * MiB + 1, _LARGE], ids=["empty", "one-byte", "multi-MiB", "large"]
    )
    def test_object_round_trip(self, store: Store, tmp_path: Path, size: int) -> None:
        size = self._size(size)
        data = data_of(size, size)
        checksum = blake3_hex(data)
        # An executable (setuid even) source: the object must not keep the mode (SPEC §4.5).
        source = self._source(tmp_path, "src", data, 0o4755)
        dest = str(tmp_path / "dest")

        async def body() -> None:
            assert not await store.has_object(checksum)
            await store.put_object(checksum, source, size)
            assert await store.has_object(checksum)
            await store.get_object(checksum, dest)

        self.run(body)
        assert Path(dest).read_bytes() == data
        key = self._object_raw_key(store, checksum)
        assert self.read_raw(store, key) == data, "objects are stored as the plain file bytes"
        mode = self.raw_mode(store, key)
        assert mode is None or mode == 0o644, f"object stored with mode {oct(mode)}"
        self._assert_layout(store, {checksum}, set())

    def test_get_overwrites_an_existing_destination(self, store: Store, tmp_path: Path) -> None:
        data = data_of(1000, 1)
        checksum = blake3_hex(data)
        source = self._source(tmp_path, "src", data)
        dest = tmp_path / "dest"
        dest.write_bytes(b"stale content that is longer than nothing" * 100)

        async def body() -> None:
            await store.put_object(checksum, source, len(data))
            await store.get_object(checksum, str(dest))

        self.run(body)
        assert dest.read_bytes() == data

    def test_put_is_idempotent(self, store: Store, tmp_path: Path) -> None:
        data = data_of(70_000, 2)
        checksum = blake3_hex(data)
        first = self._source(tmp_path, "a", data)
        second = self._source(tmp_path, "b", data)

        async def body() -> None:
            await store.put_object(checksum, first, len(data))
            await store.put_object(checksum, first, len(data))
            await store.put_object(checksum, second, len(data))

        self.run(body)
        assert self.read_raw(store, self._object_raw_key(store, checksum)) == data
        self._assert_layout(store, {checksum}, set())

    @pytest.mark.parametrize("size", [10_000, _LARGE], ids=["small", "large"])
    def test_concurrent_puts_of_one_key(self, store: Store, tmp_path: Path, size: int) -> None:
        size = self._size(size)
        data = data_of(size, 3)
        checksum = blake3_hex(data)
        sources = [self._source(tmp_path, f"src{i}", data) for i in range(self.concurrent_writers)]
        dest = str(tmp_path / "dest")

        async def body() -> None:
            async with anyio.create_task_group() as tg:
                for source in sources:
                    tg.start_soon(store.put_object, checksum, source, size)
            await store.get_object(checksum, dest)

        self.run(body)  # every writer succeeds
        assert Path(dest).read_bytes() == data
        self._assert_layout(store, {checksum}, set())

    @pytest.mark.parametrize(
        ("size", "change"),
        [
            (5000, "changed"),
            (5000, "grew"),
            (5000, "shrank"),
            (0, "grew"),
            (_LARGE, "changed"),
            (_LARGE, "changed-first-byte"),
            (_LARGE, "grew"),
            (_LARGE, "shrank"),
        ],
        ids=[
            "changed",
            "grew",
            "shrank",
            "empty-grew",
            "large-changed",
            "large-changed-first-byte",
            "large-grew",
            "large-shrank",
        ],
    )
    def test_put_refuses_a_source_that_does_not_match(
        self, store: Store, tmp_path: Path, size: int, change: str
    ) -> None:
        """A source that no longer hashes to its checksum (it changed after it was walked)
        raises InFluxError and leaves nothing visible — not even under a temporary key."""
        size = self._size(size)
        walked = data_of(size, 4)
        checksum = blake3_hex(walked)
        if change == "changed":
            now = walked[:-1] + bytes([walked[-1] ^ 0xFF])
        elif change == "changed-first-byte":
            now = bytes([walked[0] ^ 0xFF]) + walked[1:]
        elif change == "grew":
            now = walked + b"more"
        else:
            now = walked[: size // 2]
        source = self._source(tmp_path, "src", now)

        async def body() -> None:
            with pytest.raises(InFluxError):
                await store.put_object(checksum, source, size)
            assert not await store.has_object(checksum)

        self.run(body)
        self._assert_layout(store, set(), set())

    def test_put_of_a_vanished_source(self, store: Store, tmp_path: Path) -> None:
        data = data_of(100, 5)

        async def body() -> None:
            with pytest.raises(SnapdirError):
                await store.put_object(blake3_hex(data), str(tmp_path / "gone"), len(data))

        self.run(body)
        self._assert_layout(store, set(), set())

    def test_get_of_a_missing_object(self, store: Store, tmp_path: Path) -> None:
        checksum = blake3_hex(b"never stored")
        dest = tmp_path / "dest"

        async def body() -> None:
            assert not await store.has_object(checksum)
            with pytest.raises(NotFoundError) as info:
                await store.get_object(checksum, str(dest))
            assert isinstance(info.value, FileNotFoundError)
            assert checksum[9:] in str(info.value), "the error names the object"

        self.run(body)
        assert not dest.exists() or dest.stat().st_size == 0

    @pytest.mark.parametrize(
        "bad", [b"x", b"", None], ids=["other-size", "empty", "same-size-other-bytes"]
    )
    def test_get_of_a_corrupt_object(self, store: Store, tmp_path: Path, bad: bytes | None) -> None:
        """Bytes that do not hash to their key are never handed back: HashMismatchError,
        and the destination is removed."""
        data = data_of(20_000, 6)
        checksum = blake3_hex(data)
        source = self._source(tmp_path, "src", data)
        dest = tmp_path / "dest"
        if bad is None:
            bad = data[:100] + bytes([data[100] ^ 1]) + data[101:]

        self.run(store.put_object, checksum, source, len(data))
        self.corrupt(store, checksum, bad)

        async def body() -> None:
            assert await store.has_object(checksum)  # existence only, no content check
            with pytest.raises(HashMismatchError):
                await store.get_object(checksum, str(dest))

        self.run(body)
        assert not dest.exists()

    def test_large_corrupt_object(self, store: Store, tmp_path: Path) -> None:
        size = self.large_object_size
        data = data_of(size, 7)
        checksum = blake3_hex(data)
        self.corrupt(store, checksum, data[:-1] + bytes([data[-1] ^ 1]))
        dest = tmp_path / "dest"

        async def body() -> None:
            with pytest.raises(HashMismatchError):
                await store.get_object(checksum, str(dest))
            assert await store.verify_objects([(checksum, size)]) == {checksum: "corrupt"}

        self.run(body)
        assert not dest.exists()

    def test_verify_objects(self, store: Store, tmp_path: Path) -> None:
        good, bad, gone = data_of(3000, 8), data_of(4000, 9), data_of(5000, 10)
        cs = {name: blake3_hex(d) for name, d in (("good", good), ("bad", bad), ("gone", gone))}

        async def body() -> None:
            for name, d in (("good", good), ("bad", bad)):
                await store.put_object(cs[name], self._source(tmp_path, name, d), len(d))
            everything = [(cs["good"], len(good)), (cs["bad"], len(bad))]
            assert await store.verify_objects(everything) == {}
            self.corrupt(store, cs["bad"], bad[::-1])
            problems = await store.verify_objects([*everything, (cs["gone"], len(gone))], jobs=2)
            assert problems == {cs["bad"]: "corrupt", cs["gone"]: "missing"}

        self.run(body)

    @pytest.mark.parametrize("size", [20_000, _LARGE], ids=["small", "large"])
    def test_replace_mends_a_same_size_corrupt_object(
        self, store: Store, tmp_path: Path, size: int
    ) -> None:
        """``put_object(..., replace=True)`` uploads whatever the key holds. An object
        damaged in place with the right size — which an ordinary put may accept on its size
        alone when it is large — is mended: what ``push --repair`` relies on. On an absent
        or a sound key it is an ordinary, verified put."""
        size = self._size(size)
        data = data_of(size, 15)
        checksum = blake3_hex(data)
        source = self._source(tmp_path, "src", data)
        garbage = data_of(size, 16)  # same size, other bytes
        dest = tmp_path / "dest"

        async def body() -> None:
            await store.put_object(checksum, source, size, replace=True)  # absent
            self.corrupt(store, checksum, garbage)
            assert await store.verify_objects([(checksum, size)]) == {checksum: "corrupt"}
            await store.put_object(checksum, source, size, replace=True)
            assert await store.verify_objects([(checksum, size)]) == {}
            await store.put_object(checksum, source, size, replace=True)  # sound
            await store.get_object(checksum, str(dest))

        self.run(body)
        assert dest.read_bytes() == data
        assert self.read_raw(store, self._object_raw_key(store, checksum)) == data
        self._assert_layout(store, {checksum}, set())

    def test_replace_still_refuses_a_source_that_does_not_match(
        self, store: Store, tmp_path: Path
    ) -> None:
        """``replace`` drops the conditions on what is stored, not the check of what is
        sent: a changed source is refused and the damaged object stays as it was (a later
        repair from a good copy can still mend it)."""
        size = self.large_object_size
        walked = data_of(size, 17)
        checksum = blake3_hex(walked)
        garbage = data_of(size, 18)
        source = self._source(tmp_path, "src", walked[:-1] + bytes([walked[-1] ^ 1]))
        self.corrupt(store, checksum, garbage)

        async def body() -> None:
            with pytest.raises(InFluxError):
                await store.put_object(checksum, source, size, replace=True)

        self.run(body)
        assert self.read_raw(store, self._object_raw_key(store, checksum)) == garbage
        self._assert_layout(store, {checksum}, set())

    def test_push_repair_mends_a_same_size_corrupt_object(
        self, store: Store, tmp_path: Path
    ) -> None:
        """End to end: ``push(repair=True)`` finds a large object damaged in place (same
        size) with ``verify_objects`` and re-uploads it with ``replace``; a plain push of the
        same tree is a no-op that leaves it damaged."""
        from ._push import push_with_stats

        big = data_of(self.large_object_size, 19)
        manifest = self._tree_manifest(tmp_path, "tree", {"big": big, "dir/small": b"small"})
        root = str(tmp_path / "tree")
        checksum = blake3_hex(big)
        objects = [(checksum, len(big)), (blake3_hex(b"small"), 5)]

        async def body() -> None:
            first = await push_with_stats(root, store, jobs=4)
            assert first["id"] == manifest.id
            self.corrupt(store, checksum, data_of(len(big), 20))
            assert (await push_with_stats(root, store, jobs=4))["noop"]
            assert await store.verify_objects(objects) == {checksum: "corrupt"}
            mended = await push_with_stats(root, store, jobs=4, repair=True)
            assert mended["id"] == manifest.id
            assert await store.verify_objects(objects) == {}
            assert await store.get_manifest(manifest.id) == manifest

        self.run(body)
        assert self.read_raw(store, self._object_raw_key(store, checksum)) == big
        self._assert_layout(store, {c for c, _ in objects}, {manifest.id})

    def test_push_tree_capability(self, store: Store, tmp_path: Path) -> None:
        """A push stores the walked tree and writes its manifest last. A store declaring
        :attr:`Capability.PUSH_TREE` implements :class:`TreePushStore`, and its
        ``push_tree`` stores every object (verified), leaves the manifest to the caller,
        and reports a snapshot it already holds as ``noop`` with nothing written."""
        from ._push import push_with_stats

        files = {"a": b"a\n", "same-as-a": b"a\n", "empty": b"", "d/big": data_of(300_000, 7)}
        manifest = self._tree_manifest(tmp_path, "tree", files)
        root = str(tmp_path / "tree")
        objects = set(manifest.objects())
        declared = bool(store.capabilities & Capability.PUSH_TREE)
        if declared:
            assert isinstance(store, TreePushStore), "PUSH_TREE declared, no push_tree()"

        async def body() -> None:
            if declared:
                tree_store = cast("TreePushStore", store)
                done = await tree_store.push_tree(
                    root, exclude=[], no_follow=False, stat_cache=None, rehash=False
                )
                assert isinstance(done, PushedTree)
                assert done.manifest == manifest
                assert not done.noop
                assert done.written == len(objects)
                assert done.bytes_written == sum(n for _, n in objects)
                assert not await store.has_manifest(manifest.id), "push_tree wrote the manifest"
                assert await store.verify_objects(sorted(objects)) == {}
                await store.put_manifest(manifest.id, manifest.raw)
                again = await tree_store.push_tree(
                    root, exclude=[], no_follow=False, stat_cache=None, rehash=False
                )
                assert again.noop
                assert again.written == 0
            pushed = await push_with_stats(root, store, jobs=4)
            assert pushed["id"] == manifest.id
            assert pushed["noop"] == declared  # with push_tree above, it was already there
            assert await store.get_manifest(manifest.id) == manifest
            assert await store.verify_objects(sorted(objects)) == {}

        self.run(body)
        self._assert_layout(store, {c for c, _ in objects}, {manifest.id})

    def test_batches(self, store: Store, tmp_path: Path) -> None:
        blobs = [data_of(n, n) for n in (0, 1, 1000, 300_000)]
        blobs.append(blobs[2])  # the same object twice in one batch
        puts = [
            ObjectPut(blake3_hex(d), self._source(tmp_path, f"s{i}", d), len(d))
            for i, d in enumerate(blobs)
        ]
        gets = [ObjectGet(p.checksum, str(tmp_path / f"d{i}"), p.size) for i, p in enumerate(puts)]
        done = {"put": [0, 0], "get": [0, 0]}

        def counter(which: str) -> Callable[[int, int], None]:
            def progress(files: int, nbytes: int) -> None:
                done[which][0] += files
                done[which][1] += nbytes

            return progress

        async def body() -> None:
            await store.put_objects(puts, jobs=3, progress=counter("put"))
            await store.get_objects(gets, jobs=3, progress=counter("get"))

        self.run(body)
        for g, d in zip(gets, blobs, strict=True):
            assert Path(g.dest).read_bytes() == d
        total = [len(puts), sum(len(d) for d in blobs)]
        assert done == {"put": total, "get": total}
        self._assert_layout(store, {p.checksum for p in puts}, set())

    def test_batch_put_refuses_a_changed_source(self, store: Store, tmp_path: Path) -> None:
        good = data_of(1000, 11)
        walked = data_of(2000, 12)
        puts = [
            ObjectPut(blake3_hex(good), self._source(tmp_path, "good", good), len(good)),
            ObjectPut(blake3_hex(walked), self._source(tmp_path, "bad", walked[::-1]), 2000),
        ]

        async def body() -> None:
            with pytest.raises(InFluxError):
                await store.put_objects(puts, jobs=2)
            assert not await store.has_object(blake3_hex(walked))

        self.run(body)
        keys = self._store_keys(store)
        assert object_key(blake3_hex(walked)) not in keys
        assert keys <= {object_key(blake3_hex(good))}

    def test_list_objects(self, store: Store, tmp_path: Path) -> None:
        if Capability.LIST_OBJECTS not in store.capabilities:
            return  # nothing to check: the store does not claim it
        blobs = [data_of(n, n) for n in (0, 10, 20)]
        manifest = self._tree_manifest(tmp_path, "tree", {"f": b"f"})

        async def body() -> set[str]:
            for i, d in enumerate(blobs):
                await store.put_object(blake3_hex(d), self._source(tmp_path, f"s{i}", d), len(d))
            await store.put_manifest(manifest.id, manifest.raw)
            return await store.list_objects()

        assert self.run(body) == {blake3_hex(d) for d in blobs}

    def test_malformed_keys_are_refused(self, store: Store, tmp_path: Path) -> None:
        """A checksum or id that is not 64 lowercase hex never becomes a key (it could
        otherwise name a path outside the store)."""
        source = self._source(tmp_path, "src", b"x")
        nasty = ("../" * 22)[:64]

        async def body() -> None:
            for bad in (nasty, "0" * 63, "g" * 64, "A" * 64):
                with pytest.raises(InvalidArgumentError):
                    await store.has_object(bad)
                with pytest.raises(InvalidArgumentError):
                    await store.put_object(bad, source, 1)
                with pytest.raises(InvalidArgumentError):
                    await store.get_object(bad, str(tmp_path / "dest"))
                with pytest.raises(InvalidArgumentError):
                    await store.has_manifest(bad)
                with pytest.raises(InvalidArgumentError):
                    await store.get_manifest(bad)

        self.run(body)
        self._assert_layout(store, set(), set())

    # -- manifests -------------------------------------------------------------------------------
    def test_manifest_round_trip(self, store: Store, tmp_path: Path) -> None:
        one = self._tree_manifest(tmp_path, "one", {"a.txt": b"a", "dir/b c": b"b"})
        two = self._tree_manifest(tmp_path, "two", {"x": b"x"})

        async def body() -> None:
            assert not await store.has_manifest(one.id)
            await store.put_manifest(one.id, one.raw)
            await store.put_manifest(one.id, one.raw)  # idempotent
            await store.put_manifest(two.id, two.raw)
            assert await store.has_manifest(one.id)
            got = await store.get_manifest(one.id)
            assert got == one
            assert got.id == one.id
            assert got.raw == one.raw
            assert await store.list_manifests() == sorted([one.id, two.id])

        self.run(body)
        root = self.key_root(store)
        assert self.read_raw(store, root + manifest_key(one.id)) == (one.raw + "\n").encode()
        self._assert_layout(store, set(), {one.id, two.id})

    def test_get_of_a_missing_manifest(self, store: Store) -> None:
        missing = blake3_hex(b"no such manifest")

        async def body() -> None:
            assert not await store.has_manifest(missing)
            with pytest.raises(NotFoundError) as info:
                await store.get_manifest(missing)
            assert isinstance(info.value, FileNotFoundError)

        self.run(body)

    def test_get_manifest_verifies_its_id(self, store: Store, tmp_path: Path) -> None:
        one = self._tree_manifest(tmp_path, "one", {"a": b"a"})
        two = self._tree_manifest(tmp_path, "two", {"b": b"b"})
        garbage = blake3_hex(b"garbage")
        # SPEC §2: the id is over the canonical text, so a stored copy with CRLF line ends
        # and comments still verifies.
        crlf = ("# a comment\r\n" + one.raw.replace("\n", "\r\n") + "\r\n").encode()
        self.write_raw_manifest(store, one.id, crlf)
        self.write_raw_manifest(store, two.id, (one.raw + "\n").encode())  # another's text
        self.write_raw_manifest(store, garbage, b"\xff\xfe not a manifest\n")

        async def body() -> None:
            assert await store.get_manifest(one.id) == one
            with pytest.raises(HashMismatchError):
                await store.get_manifest(two.id)
            with pytest.raises(HashMismatchError):
                await store.get_manifest(garbage)

        self.run(body)

    def test_put_manifest_refuses_text_of_another_id(self, store: Store, tmp_path: Path) -> None:
        one = self._tree_manifest(tmp_path, "one", {"a": b"a"})
        two = self._tree_manifest(tmp_path, "two", {"b": b"b"})

        async def body() -> None:
            with pytest.raises((HashMismatchError, InvalidArgumentError)):
                await store.put_manifest(two.id, one.raw)
            assert not await store.has_manifest(two.id)

        self.run(body)
        self._assert_layout(store, set(), set())

    # -- bookkeeping -----------------------------------------------------------------------------
    def test_request_count(self, store: Store, tmp_path: Path) -> None:
        data = b"counted"
        source = self._source(tmp_path, "src", data)
        before = store.request_count()

        async def body() -> None:
            await store.put_object(blake3_hex(data), source, len(data))
            await store.has_object(blake3_hex(data))

        self.run(body)
        after = store.request_count()
        if Capability.LOCAL in store.capabilities:
            assert after == before == 0
        else:
            assert after >= before + 2

    def test_other_event_loops(self, store: Store, tmp_path: Path) -> None:
        """The store works from every supported event loop, and from successive runs."""
        for i, backend in enumerate(self.extra_backends):
            data = data_of(50_000 + i, 13 + i)
            checksum = blake3_hex(data)
            source = self._source(tmp_path, f"src-{backend}", data)
            dest = tmp_path / f"dest-{backend}"
            manifest = self._tree_manifest(tmp_path, f"tree-{backend}", {"f": data})

            async def body(
                checksum: str = checksum,
                source: str = source,
                dest: Path = dest,
                manifest: Manifest = manifest,
                size: int = len(data),
            ) -> None:
                await store.put_object(checksum, source, size)
                assert await store.has_object(checksum)
                await store.get_object(checksum, str(dest))
                await store.put_manifest(manifest.id, manifest.raw)
                assert await store.get_manifest(manifest.id) == manifest

            anyio.run(body, backend=backend)
            assert dest.read_bytes() == data

    # -- small keys (snapdir.stores._keys): only stores that declare Capability.KEYS ---------
    def _key_store(self, store: Store) -> KeyStore | None:
        """The store as a key store, or None after checking that a store without the
        capability is refused clearly by the operations' wrapper (never half-used)."""
        if has_keys(store):
            return store  # type: ignore[return-value]
        wrapped: Any = wrap(store, retry=False)

        async def body() -> None:
            with pytest.raises(StoreError, match="small-key methods"):
                await wrapped.list_keys(".snapdir/")

        self.run(body)
        return None

    def test_keys_create_only(self, store: Store) -> None:
        ks = self._key_store(store)
        if ks is None:
            return
        key = ".snapdir/test/create-only"

        async def body() -> None:
            assert await ks.put_if_absent(key, b"first") is True
            assert await ks.put_if_absent(key, b"second") is False
            assert await ks.get_bytes(key, max_size=100) == b"first"
            with pytest.raises(NotFoundError):
                await ks.get_bytes(".snapdir/test/absent", max_size=100)

        self.run(body)
        assert self.read_raw(store, self.key_root(store) + key) == b"first"

    def test_keys_racing_creators_exactly_one_wins(self, store: Store) -> None:
        ks = self._key_store(store)
        if ks is None:
            return
        writers = max(2, self.concurrent_writers)
        key = ".snapdir/test/race"
        payloads = [f"writer {i}".encode() for i in range(writers)]
        won = [False] * writers

        async def body() -> bytes:
            async def write(i: int) -> None:
                won[i] = await ks.put_if_absent(key, payloads[i])

            async with anyio.create_task_group() as tg:
                for i in range(writers):
                    tg.start_soon(write, i)
            return await ks.get_bytes(key, max_size=100)

        stored = self.run(body)
        assert won.count(True) == 1, won
        assert stored == payloads[won.index(True)]
        self.run(probe_create_only, ks)  # the check the operations run before relying on it

    def test_keys_reads_are_bounded(self, store: Store) -> None:
        ks = self._key_store(store)
        if ks is None:
            return
        key = ".snapdir/test/big"

        async def body() -> None:
            assert await ks.put_if_absent(key, b"x" * 5000)
            with pytest.raises(StoreError, match="4999"):
                await ks.get_bytes(key, max_size=4999)  # refused, never cut short
            assert await ks.get_bytes(key, max_size=5000) == b"x" * 5000

        self.run(body)

    def test_keys_list_with_store_times_and_delete(self, store: Store, tmp_path: Path) -> None:
        ks = self._key_store(store)
        if ks is None:
            return
        data = data_of(1234, 77)
        checksum = blake3_hex(data)
        source = self._source(tmp_path, "src", data)
        names = [".snapdir/j/a", ".snapdir/j/b/c", ".snapdir/j/b/d", ".snapdir/other/e"]

        async def body() -> None:
            before = await ks.store_time()
            for i, name in enumerate(names):
                assert await ks.put_if_absent(name, b"v" * (i + 1))
            await store.put_object(checksum, source, len(data))
            after = await ks.store_time()
            listed = await ks.list_keys(".snapdir/j/")
            assert [k.key for k in sorted(listed, key=lambda k: k.key)] == names[:3]
            assert {k.key: k.size for k in listed} == {names[0]: 1, names[1]: 2, names[2]: 3}
            for k in listed:
                assert k.time.utcoffset() is not None
                # store time, second resolution on HTTP Date headers
                assert before.timestamp() - 2 <= k.time.timestamp() <= after.timestamp() + 2
            objects = await ks.list_keys(".objects/")
            assert [k.key for k in objects] == [object_key(checksum)]
            assert objects[0].size == len(data)
            await ks.delete_keys([names[0], names[1], ".snapdir/j/never-existed"])
            assert [k.key for k in await ks.list_keys(".snapdir/j/")] == [names[2]]
            await ks.delete_keys([object_key(checksum)])
            assert not await store.has_object(checksum)
            # a deleted key can be created again
            assert await ks.put_if_absent(names[0], b"again")
            assert await ks.get_bytes(names[0], max_size=10) == b"again"
            await ks.delete_keys([])

        self.run(body)

    @pytest.mark.parametrize(
        "key",
        [
            "",
            ".snapdir/",
            ".snapdir",
            "/.snapdir/x",
            ".snapdir/../x",
            ".snapdir/a/../../x",
            ".snapdir/./x",
            ".snapdir/.hidden",
            ".snapdir//x",
            ".snapdir/x/",
            ".snapdir/a b",
            ".snapdir/x\\y",
            ".snapdir/\u00e9",
            "journal/x",
            ".objects/abc",
            ".snapdir/" + "x" * 1100,
        ],
    )
    def test_keys_bad_names_refused_before_any_request(self, store: Store, key: str) -> None:
        ks = self._key_store(store)
        if ks is None:
            return
        before = store.request_count()

        async def body() -> None:
            with pytest.raises(InvalidArgumentError):
                await ks.put_if_absent(key, b"x")
            with pytest.raises(InvalidArgumentError):
                await ks.get_bytes(key, max_size=10)

        self.run(body)
        assert store.request_count() == before
        assert not [k for k in self._store_keys(store) if not k.startswith(".snapdir/probe/")]

    # -- lifecycle: journal, ls, forget, adopt (snapdir.lifecycle) -----------------------------
    def test_lifecycle_journal_ls_forget_adopt(self, store: Store, tmp_path: Path) -> None:
        if self._key_store(store) is None:
            return
        from datetime import datetime, timedelta, timezone

        from . import push
        from .lifecycle import Policy, adopt, du, forget, ls

        a = self._tree_manifest(tmp_path, "a", {"x": b"a"})
        b = self._tree_manifest(tmp_path, "b", {"y": b"b"})
        old = self._tree_manifest(tmp_path, "old", {"z": b"from 1.x"})
        t0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)

        async def body() -> None:
            before = await store.store_time()  # type: ignore[attr-defined]
            assert await push(tmp_path / "a", store, time=t0, host="h1", labels=["nightly"]) == (
                a.id
            )
            assert await push(tmp_path / "b", store, host="h2") == b.id
            assert await push(tmp_path / "a", store, time=t0 + timedelta(days=1), host="h1")
            assert await push(tmp_path / "old", store, journal=False) == old.id
            listed = await ls(store)
            assert [(e.id, e.host) for e in listed] == [(b.id, "h2"), (a.id, "h1"), (a.id, "h1")]
            assert listed[0].time >= before - timedelta(seconds=2)  # the store's clock
            assert listed[1].time == t0 + timedelta(days=1)
            assert listed[2].labels == ("nightly",)
            assert listed[2].path == str((tmp_path / "a").absolute())
            assert (listed[2].files, listed[2].bytes) == (1, 1)
            assert [e.id for e in await ls(store, host="h1")] == [a.id, a.id]
            assert [e.id for e in await ls(store, label="nightly")] == [a.id]
            assert [e.id for e in await ls(store, since=t0 + timedelta(hours=1))] == [b.id, a.id]
            orphans = [e for e in await ls(store, orphans=True) if not e.key]
            assert [e.id for e in orphans] == [old.id]

            # forget removes roots, never content
            verdicts = await forget(store, [b.id[:12]])
            assert [(v.info.id, v.keep) for v in verdicts if not v.keep] == [(b.id, False)]
            assert [e.id for e in await ls(store)] == [a.id, a.id]
            assert await store.has_manifest(b.id)
            dry = await forget(store, policy=Policy(last=1), dry_run=True)
            assert sorted(v.keep for v in dry) == [False, True]
            assert len(await ls(store)) == 2
            await forget(store, policy=Policy(last=1))
            assert [e.time for e in await ls(store)] == [t0 + timedelta(days=1)]
            with pytest.raises(NotFoundError):
                await forget(store, [b.id])
            with pytest.raises(InvalidArgumentError):
                await forget(store, ["abc"])  # too short to be a prefix

            # adopt journals every manifest no entry names, once
            made = await adopt(store)
            assert sorted(e.id for e in made) == sorted([b.id, old.id])
            assert await adopt(store) == []
            assert not [e for e in await ls(store, orphans=True) if not e.key]

            # du: what the bytes are spent on, what forgetting would free
            report = await du(store)
            assert (report.total_bytes, report.reachable_bytes, report.unreachable_bytes) == (
                10,
                10,
                0,
            )
            assert (report.objects, report.snapshots) == (3, 3)
            mine = await du(store, [a.id[:10]])
            assert (mine.unique_bytes, mine.shared_bytes, mine.refs) == (1, 0, [a.id])
            await forget(store, [old.id])
            assert (await du(store)).unreachable_bytes == len(b"from 1.x")

        self.run(body)
