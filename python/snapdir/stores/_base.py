"""The store protocol: what every backend (file, s3, gs, b2, third-party) implements.

A store holds two kinds of things under its URI (SPEC §4):

* objects: file contents, keyed by their BLAKE3 hex (``.objects/abc/def/ghi/<rest>``);
* manifests: snapshot texts, keyed by snapshot id (``.manifests/abc/def/ghi/<rest>``),
  stored as the manifest text plus one newline.

The contract, which the conformance suite in :mod:`snapdir.testing` checks for every
backend:

1. An object is only ever visible under its key with content that hashes to that key. A
   backend hashes the bytes it actually sends and makes the object visible only if they
   match (temporary name + rename, or a conditional/atomic upload it can abort).
2. Manifests are written by the operations only after every object they reference is
   present; a backend never needs to check this itself.
3. Writes are idempotent: putting an existing key again is harmless and leaves one copy;
   concurrent writers of the same key are safe.
4. Every byte read is verified against its key before it is handed back.
5. A missing key raises :class:`snapdir.NotFoundError` (also ``FileNotFoundError``); any other
   failure raises :class:`snapdir.StoreError` naming the URI and key.

Methods are coroutines; blocking SDK calls run in worker threads. Batch methods
(``put_objects``, ``get_objects``, ``verify_objects``) have default implementations on
:class:`BaseStore` that run the single-object methods concurrently behind ``jobs``; a
backend overrides them when it can do better (the file store does a whole batch in one
Rust call).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, runtime_checkable

from .. import _snapdir
from .._errors import (
    HashMismatchError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    StoreError,
)
from .._runtime import LOCAL_SYNC
from .._types import StoreUri, is_lower_hex

if TYPE_CHECKING:
    from typing import BinaryIO

    import anyio
    from anyio.lowlevel import RunVar

    from .._snapdir import Manifest

if sys.version_info < (3, 11):  # pragma: no cover - anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

T = TypeVar("T")

__all__ = [
    "DEFAULT_MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_ENV",
    "BaseStore",
    "Capability",
    "LoopSemaphore",
    "ObjectGet",
    "ObjectPut",
    "ProgressFn",
    "PushedTree",
    "Store",
    "TransientStoreError",
    "TreePushStore",
    "first_leaf",
    "for_each_limited",
    "hex_from_key",
    "manifest_key",
    "manifest_too_large",
    "max_manifest_bytes",
    "object_key",
    "parse_retry_after",
    "split_key",
    "to_thread",
]

ProgressFn = Callable[[int, int], None]
"""Called as ``progress(files_done_delta, bytes_done_delta)`` while a batch runs."""


class Capability(enum.Flag):
    """Optional abilities a store declares (the operations use them, never assume them)."""

    NONE = 0
    #: ``list_objects()`` is implemented and cheaper than one ``has_object`` per key.
    LIST_OBJECTS = enum.auto()
    #: Creating a key can be made conditional on its absence (S3 If-None-Match, GCS
    #: generation 0): a racing writer never overwrites.
    CONDITIONAL_PUT = enum.auto()
    #: Objects can be copied inside the store without passing through this machine.
    SERVER_SIDE_COPY = enum.auto()
    #: The store lives on this machine's file system (``file://``).
    LOCAL = enum.auto()
    #: The small-key methods of :mod:`snapdir.stores._keys` (create-only writes, listing
    #: with store timestamps, batch deletes, store time) are implemented.
    KEYS = enum.auto()
    #: ``push_tree()`` (:class:`TreePushStore`) walks a directory and stores its objects
    #: in the same pass, each file read once; ``push`` then uses it instead of a walk
    #: followed by uploads.
    PUSH_TREE = enum.auto()


def split_key(hex_digest: str) -> str:
    """``abc/def/ghi/<rest>``: the 3/3/3/rest sharding of SPEC §4."""
    h = hex_digest
    return f"{h[0:3]}/{h[3:6]}/{h[6:9]}/{h[9:]}"


def check_shard(shard: str) -> str:
    """Validate a listing shard: '' (everything) or three lowercase hex digits."""
    if shard and not is_lower_hex(shard, 3):
        raise InvalidArgumentError(f"invalid object shard {shard!r}", code="INVALID_ARGUMENT")
    return shard


def hex_from_key(rest: str) -> str | None:
    """``abc/def/ghi/<rest>`` (a listed key below ``.objects/`` or ``.manifests/``) back to
    its 64-hex name; None for a key that is not one of ours (another tool's file, a
    half-typed name), which a listing skips."""
    parts = rest.split("/")
    if [len(p) for p in parts] != [3, 3, 3, 55]:
        return None
    h = "".join(parts)
    return h if is_lower_hex(h, 64) else None


def object_key(checksum: str) -> str:
    """Key of an object under a store's prefix."""
    return ".objects/" + split_key(checksum)


def manifest_key(snapshot_id: str) -> str:
    """Key of a manifest under a store's prefix."""
    return ".manifests/" + split_key(snapshot_id)


class TransientStoreError(StoreError):
    """A store failure that is worth retrying: throttling (429, SlowDown), a 5xx answer, a
    reset connection, a timeout, a body stream broken mid-way.

    Backends raise it (or expose ``is_transient(exc)``) so that one wrapper,
    :class:`snapdir.stores._wrappers.RetryingStore`, does the waiting for every backend
    instead of each one looping on its own. ``retry_after`` carries the service's
    ``Retry-After`` in seconds when it sent one. It is a :class:`snapdir.StoreError`, so code
    that does not retry still sees an ordinary store error.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ObjectPut:
    """One object to upload: its checksum, the local file holding it, and its size."""

    __slots__ = ("checksum", "size", "source")

    def __init__(self, checksum: str, source: str, size: int) -> None:
        self.checksum = checksum
        self.source = source
        self.size = size


class ObjectGet:
    """One object to download into ``dest`` (a temporary file the caller owns)."""

    __slots__ = ("checksum", "dest", "size")

    def __init__(self, checksum: str, dest: str, size: int) -> None:
        self.checksum = checksum
        self.dest = dest
        self.size = size


@runtime_checkable
class Store(Protocol):
    """The async store protocol. See the module docstring for the contract."""

    uri: StoreUri
    capabilities: Capability

    async def has_object(self, checksum: str) -> bool:
        """Whether the object exists (no content check; ``verify_objects`` does that)."""
        ...

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        """Upload the file ``source`` as object ``checksum``, streaming.

        Hashes the bytes actually sent; if they do not hash to ``checksum`` (the file changed
        since it was walked) nothing becomes visible and :class:`snapdir.InFluxError` is
        raised. Idempotent: an existing object is left as it is (a backend may check it
        first, but only cheaply: its size, and its hash only when it is small).

        ``replace=True`` is for mending an object known to be bad (``push --repair``): the
        upload is made whatever is stored under the key (no create-only condition, no "an
        object of the right size is there" shortcut), with the same verification of the
        bytes sent. Callers pass it only when true, so a store written before it existed
        still serves ordinary puts.
        """
        ...

    async def get_object(self, checksum: str, dest: str) -> None:
        """Download object ``checksum`` into the local file ``dest`` (created or truncated),
        streaming and verifying. :class:`snapdir.HashMismatchError` if the bytes do not hash
        to the key (``dest`` is then removed); :class:`snapdir.NotFoundError` if absent."""
        ...

    async def has_manifest(self, snapshot_id: str) -> bool:
        """Whether the snapshot's manifest exists (a complete snapshot, by invariant 2)."""
        ...

    async def get_manifest(self, snapshot_id: str) -> Manifest:
        """The snapshot's manifest, parsed and verified to hash to ``snapshot_id``
        (:class:`snapdir.HashMismatchError` otherwise; ``NotFoundError`` if absent)."""
        ...

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        """Store ``text`` (manifest text without trailing newline) as the manifest of
        ``snapshot_id``; written atomically (whole or not at all). Idempotent."""
        ...

    async def list_manifests(self) -> list[str]:
        """Every snapshot id in the store, sorted."""
        ...

    async def list_objects(self, shard: str = "") -> set[str]:
        """Every object checksum in the store (only with :attr:`Capability.LIST_OBJECTS`);
        with ``shard`` (the first three hex digits of a key), only those under
        ``.objects/<shard>/`` — what a small push asks, instead of listing a big store."""
        ...

    async def put_objects(
        self,
        items: Sequence[ObjectPut],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
        replace: bool = False,
    ) -> None:
        """Upload many objects; same guarantees (and ``replace``) as :meth:`put_object`
        for each."""
        ...

    async def get_objects(
        self, items: Sequence[ObjectGet], *, jobs: int = 32, progress: ProgressFn | None = None
    ) -> None:
        """Download many objects; same guarantees as :meth:`get_object` for each."""
        ...

    async def verify_objects(
        self, objects: Sequence[tuple[str, int]], *, jobs: int = 32
    ) -> dict[str, str]:
        """Re-hash the given ``(checksum, size)`` objects, streaming. Returns the problems:
        ``{checksum: "missing" | "corrupt"}`` (empty when all are sound)."""
        ...

    def request_count(self) -> int:
        """Requests sent to the service so far (0 for local stores)."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


def accepts_progress(method: Callable[..., object]) -> bool:
    """Whether a store method takes ``progress=`` (optional in the protocol: a store
    written before it, or without a way to report, is called without it)."""
    import inspect

    try:
        return "progress" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


#: The largest manifest a store may hand back unless configured otherwise: 1 GiB. A manifest
#: line is ~200 bytes for a typical path (``F 0644 <64 hex> <size> ./<path>``), so this is
#: a snapshot of ~5 million files; past it, a manifest read from a store is far more likely
#: hostile or corrupt (a never-ending stream, a planted sparse terabyte) than real, and it
#: would be held in memory whole, then parsed.
DEFAULT_MAX_MANIFEST_BYTES = 1 << 30

#: The environment variable that overrides :data:`DEFAULT_MAX_MANIFEST_BYTES`.
MAX_MANIFEST_ENV = "SNAPDIR_MAX_MANIFEST_BYTES"


def max_manifest_bytes(store: object | None = None) -> int:
    """The manifest size cap for ``store``: its ``max_manifest_bytes`` attribute when set,
    else ``$SNAPDIR_MAX_MANIFEST_BYTES``, else :data:`DEFAULT_MAX_MANIFEST_BYTES`. A value
    that is not a positive integer is an :class:`InvalidArgumentError` naming where it
    came from (a typo must not silently lift the bound)."""
    import os

    own = getattr(store, "max_manifest_bytes", None)
    if own is not None:
        if isinstance(own, bool) or not isinstance(own, int) or own <= 0:
            raise InvalidArgumentError(
                f"max_manifest_bytes of {getattr(store, 'uri', store)} must be a positive "
                f"number of bytes, not {own!r}"
            )
        return own
    raw = os.environ.get(MAX_MANIFEST_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MANIFEST_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidArgumentError(
            f"{MAX_MANIFEST_ENV} must be a positive number of bytes, not {raw!r}"
        )
    return value


def manifest_too_large(uri: object, snapshot_id: str, limit: int, size: int | None) -> SnapdirError:
    """The error for a stored manifest past the cap (``size``: its length when known,
    else None: it was still streaming when it passed the cap)."""
    got = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return InvalidArgumentError(
        f"snapshot {snapshot_id} in {uri}: the stored manifest is {got}, over the limit of "
        f"{limit} bytes ({MAX_MANIFEST_ENV} or the store's max_manifest_bytes raise it); "
        "nothing was read past the limit",
        code="INVALID_MANIFEST",
    )


class PushedTree:
    """What :meth:`TreePushStore.push_tree` did: the tree's manifest, the warnings of its
    walk (dangling links left out), whether the store already had the snapshot (``noop``),
    and how many objects (and bytes) were written."""

    __slots__ = ("bytes_written", "manifest", "noop", "warnings", "written")

    def __init__(
        self,
        manifest: Manifest,
        warnings: list[str],
        *,
        noop: bool,
        written: int,
        bytes_written: int,
    ) -> None:
        self.manifest = manifest
        self.warnings = warnings
        self.noop = noop
        self.written = written
        self.bytes_written = bytes_written


@runtime_checkable
class TreePushStore(Store, Protocol):
    """A store that can take a whole directory in one pass (:attr:`Capability.PUSH_TREE`).

    Optional: a store declares the capability only if it implements the method. ``push``
    calls it on the store itself, not through the retry and concurrency wrappers
    (:func:`snapdir.stores._wrappers.wrap`), so a store offering it retries on its own.
    """

    async def push_tree(
        self,
        path: str,
        *,
        exclude: list[str],
        no_follow: bool,
        stat_cache: str | None,
        rehash: bool,
        progress: ProgressFn | None = None,
        ignore: tuple[str | None, bool, list[str]] = (None, False, []),
    ) -> PushedTree:
        """Walk ``path`` (with the options of :func:`snapdir.manifest`; ``stat_cache`` is the
        stat cache directory or None; ``ignore`` the ignore rules as
        :func:`snapdir._manifest.ignore_rules` gives them) and store every object of it that
        the store lacks,
        verifying the bytes written as :meth:`put_object` does: a file that changes while
        it is read fails with :class:`snapdir.InFluxError` and no object with wrong content
        becomes visible. The manifest is *not* written (the caller writes it last, after
        every object, invariant 2). ``noop`` is true when the store already holds the
        snapshot's manifest."""
        ...


class BaseStore:
    """Helpers and default batch implementations for backends."""

    uri: StoreUri
    capabilities: Capability = Capability.NONE
    #: The largest manifest this store hands back, in bytes; None: ``$SNAPDIR_MAX_MANIFEST_BYTES``
    #: or :data:`DEFAULT_MAX_MANIFEST_BYTES` (see :func:`max_manifest_bytes`). Enforced while
    #: the manifest is read, never after reading it whole.
    max_manifest_bytes: int | None = None

    def __init__(self, uri: StoreUri) -> None:
        self.uri = uri
        self._requests = 0

    # -- to be provided by the backend ---------------------------------------------------
    async def has_object(self, checksum: str) -> bool:
        raise NotImplementedError

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        raise NotImplementedError

    async def get_object(self, checksum: str, dest: str) -> None:
        raise NotImplementedError

    async def list_objects(self, shard: str = "") -> set[str]:
        raise StoreError(f"{self.uri} cannot list its objects")

    # -- defaults ---------------------------------------------------------------------------
    async def put_objects(
        self,
        items: Sequence[ObjectPut],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
        replace: bool = False,
    ) -> None:
        extra = {"replace": True} if replace else {}

        async def one(it: ObjectPut) -> None:
            await self.put_object(it.checksum, it.source, it.size, **extra)
            if progress is not None:
                progress(1, it.size)

        await for_each_limited(items, one, jobs)

    async def get_objects(
        self, items: Sequence[ObjectGet], *, jobs: int = 32, progress: ProgressFn | None = None
    ) -> None:
        async def one(it: ObjectGet) -> None:
            await self.get_object(it.checksum, it.dest)
            if progress is not None:
                progress(1, it.size)

        await for_each_limited(items, one, jobs)

    async def verify_objects(
        self,
        objects: Sequence[tuple[str, int]],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
    ) -> dict[str, str]:
        import os
        import tempfile

        problems: dict[str, str] = {}

        async def one(obj: tuple[str, int]) -> None:
            checksum = obj[0]
            fd, tmp = tempfile.mkstemp(prefix="snapdir-verify-")
            os.close(fd)
            try:
                await self.get_object(checksum, tmp)
                if (
                    await to_thread(os.path.getsize, tmp) != obj[1]
                ):  # right bytes, not the manifest's size
                    problems[checksum] = "corrupt"
            except NotFoundError:
                problems[checksum] = "missing"
            except HashMismatchError:
                problems[checksum] = "corrupt"
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            if progress is not None:
                progress(1, obj[1])

        await for_each_limited(objects, one, jobs)
        return problems

    def request_count(self) -> int:
        return self._requests

    async def aclose(self) -> None:
        return None

    def _check_hex(self, value: str, what: str) -> None:
        if not is_lower_hex(value, 64):
            raise InvalidArgumentError(
                f"invalid {what} {value!r} for {self.uri}", code="INVALID_ID"
            )


async def for_each_limited(
    items: Iterable[T], fn: Callable[[T], Awaitable[None]], limit: int
) -> None:
    """Await ``fn(item)`` for every item with at most ``limit`` in flight (a fixed pool of
    workers pulling from one iterator: no task per item). The first error cancels the rest
    and is raised as itself (not wrapped in an exception group)."""
    if LOCAL_SYNC.get():  # local work driven without an event loop: one at a time
        for item in items:
            await fn(item)
        return
    import anyio

    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(max(1, limit)):
                tg.start_soon(worker)
    except BaseExceptionGroup as eg:
        raise first_leaf(eg) from None


def first_leaf(eg: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, so that a task group's
    failure is raised as itself (``raise first_leaf(eg) from None``)."""
    while isinstance(eg, BaseExceptionGroup) and eg.exceptions:
        eg = eg.exceptions[0]
    return eg


async def to_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the blocking call ``fn(*args, **kwargs)`` in an anyio worker thread (how every
    backend runs its SDK and file calls); in place when local work runs without an event
    loop (:func:`snapdir._runtime.run_local`)."""
    if LOCAL_SYNC.get():
        return fn(*args, **kwargs)
    import anyio.to_thread

    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class LoopSemaphore:
    """An :class:`anyio.Semaphore` of ``size()`` slots, one per event loop (an
    ``anyio.lowlevel.RunVar``): a store object may be used from successive ``anyio.run``
    calls, on asyncio or trio, and a semaphore cannot cross loops. ``size`` is read when a
    loop first asks, so it follows the owner's settings."""

    def __init__(self, name: str, size: Callable[[], int]) -> None:
        self._name = name
        self._size = size
        self._var: RunVar[anyio.Semaphore] | None = None

    def get(self) -> anyio.Semaphore:
        import anyio
        from anyio.lowlevel import RunVar

        if self._var is None:
            self._var = RunVar(self._name)
        try:
            sem = self._var.get()
        except LookupError:
            sem = anyio.Semaphore(max(1, self._size()))
            self._var.set(sem)
        return sem


def parse_retry_after(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` value in seconds (it is a number of seconds or an HTTP
    date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import email.utils  # only for an HTTP-date Retry-After

        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


#: While set, a manifest a store downloads (a cloud store's) reports its bytes as they
#: arrive, as ``progress(0, nbytes)``: the one long wait of ``size`` of a big snapshot is
#: the download of its manifest. Set for the call only (:func:`manifest_read_progress`).
MANIFEST_READ: ContextVar[ProgressFn | None] = ContextVar("snapdir_manifest_read", default=None)


@contextlib.contextmanager
def manifest_read_progress(progress: ProgressFn | None) -> Iterator[None]:
    """Report the bytes of the manifests read inside the block to ``progress``."""
    token = MANIFEST_READ.set(progress)
    try:
        yield
    finally:
        MANIFEST_READ.reset(token)


def announce_total(progress: object, files: int, nbytes: int) -> None:
    """Tell a progress reporter how much work there is (enables its ETA), if it listens."""
    total = getattr(progress, "total", None)
    if callable(total):
        total(files, nbytes)


def announce_found(progress: object, files: int, nbytes: int) -> None:
    """Tell a progress reporter the totals of the phase under way, learnt while it runs
    (the counting walk beside a long walk), if it listens: unlike :func:`announce_total`,
    what was counted so far stays counted."""
    found = getattr(progress, "found", None)
    if callable(found):
        found(files, nbytes)


#: The parser's message for bytes that are not UTF-8 (``Manifest::parse_owned``).
NOT_UTF8 = "invalid manifest: not UTF-8 text"


def parse_stored_manifest(
    data: bytes | _snapdir.ByteBuffer, snapshot_id: str, uri: str, *, digest: str | None = None
) -> _snapdir.Manifest:
    """Parse a manifest read from a store and check it hashes to ``snapshot_id``.

    The id is computed over the canonical text, so CRLF line ends or comments in the stored
    copy still verify. Stored bytes that do not parse are corruption
    (:class:`HashMismatchError` naming store and id) unless they hash to the id as they are:
    then they are authentic, and the parse error is the manifest's own (an unsafe path,
    say), raised as the parser's class with store and id in the message.

    ``data`` may be a :class:`~snapdir._snapdir.ByteBuffer` (a download kept in Rust
    memory), which is parsed where it is and emptied; ``digest`` is then the BLAKE3 of its
    bytes, computed while they arrived."""
    not_utf8 = f"snapshot {snapshot_id} in {uri}: the manifest is not UTF-8 text"
    if not isinstance(data, bytes) and digest is None:
        raise ValueError("a ByteBuffer is parsed with the digest of its bytes")
    try:
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise HashMismatchError(not_utf8) from None
            m = _snapdir.Manifest.parse(text)
        else:
            m = data.take_manifest()
    except HashMismatchError:
        raise
    except SnapdirError as e:
        if str(e) == NOT_UTF8:  # the bytes the buffer held (decoded above otherwise)
            raise HashMismatchError(not_utf8) from None
        raw = digest if digest is not None else _snapdir.blake3_hex(cast("bytes", data))
        if raw != snapshot_id:
            raise HashMismatchError(
                f"snapshot {snapshot_id} in {uri}: the stored manifest is damaged "
                f"(it does not hash to its id): {e}"
            ) from e
        # Intact but hostile or malformed: keep the parser's class (UnsafePathError, ...).
        raise type(e)(f"snapshot {snapshot_id} in {uri}: {e}", code=e.code) from e
    if m.id != snapshot_id:
        raise HashMismatchError(
            f"snapshot {snapshot_id} in {uri}: the stored manifest hashes to {m.id}"
        )
    return m


def read_stored_manifest(f: BinaryIO, limit: int, snapshot_id: str, uri: str) -> _snapdir.Manifest:
    """:func:`parse_stored_manifest` of the regular file ``f`` (at most ``limit`` bytes),
    read in Rust straight into the buffer the manifest keeps: the text of a 5-million-entry
    snapshot is then held once, not as bytes, str and a parsed copy side by side. A manifest
    that does not parse, or is not UTF-8, is read again and judged by
    :func:`parse_stored_manifest`, so its error is the same either way."""
    try:
        m = _snapdir.manifest_from_fd(f.fileno(), limit)
    except SnapdirError:
        f.seek(0)
        data = f.read(limit + 1)
        if len(data) > limit:  # it grew meanwhile
            raise manifest_too_large(uri, snapshot_id, limit, None) from None
        return parse_stored_manifest(data, snapshot_id, uri)
    if m is None:
        raise manifest_too_large(uri, snapshot_id, limit, None)
    if m.id != snapshot_id:
        raise HashMismatchError(
            f"snapshot {snapshot_id} in {uri}: the stored manifest hashes to {m.id}"
        )
    return m


async def put_manifest_of(store: object, snapshot_id: str, m: _snapdir.Manifest) -> None:
    """Store manifest ``m`` as ``snapshot_id`` in ``store``: through the store's own
    ``put_manifest_of`` when it has one (a ``file://`` store writes the text from Rust, never
    as a Python string: the text of a 5-million-entry snapshot is 600 MB, and ``str`` plus
    ``bytes`` copies of it would triple that), else ``put_manifest(snapshot_id, m.raw)``."""
    put = getattr(store, "put_manifest_of", None)
    if put is not None:
        await put(snapshot_id, m)
    else:
        await store.put_manifest(snapshot_id, m.raw)  # type: ignore[attr-defined]


async def put_if_absent_of(
    store: object, key: str, head: bytes, m: _snapdir.Manifest | None
) -> bool:
    """``put_if_absent(key, head + stored form of m)`` (``head`` alone without ``m``): through
    the store's own ``put_if_absent_of`` when it has one (a ``file://`` store writes the
    manifest from Rust after ``head``, so an intent carrying a 5-million-entry manifest costs
    no 600 MB ``str`` and ``bytes`` copies), else with the bytes built here."""
    put = getattr(store, "put_if_absent_of", None)
    if m is not None and put is not None:
        return bool(await put(key, head, m))
    data = head if m is None else head + (m.raw + "\n").encode()
    return bool(await store.put_if_absent(key, data))  # type: ignore[attr-defined]


def manifest_to_store(text: str, snapshot_id: str, where: str) -> bytes:
    """The bytes to store for manifest ``text`` (without its trailing newline) under
    ``snapshot_id``: the text and one newline. A text that is not this snapshot's is
    refused (:class:`HashMismatchError`; one that does not parse raises the parser's
    error): every reader would reject it."""
    data = (text + "\n").encode("utf-8")
    if _snapdir.blake3_hex(data) != snapshot_id:  # not canonical text, or another's
        actual = _snapdir.Manifest.parse(text).id
        if actual != snapshot_id:
            raise HashMismatchError(
                f"refusing to store {where}: the manifest text given hashes to {actual}"
            )
    return data
