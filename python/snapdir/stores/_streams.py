"""The byte streams every cloud backend needs, written once.

The store contract (:mod:`snapdir.stores._base`) asks two things of every byte that crosses
the network: an upload hashes exactly the bytes it hands to the SDK and makes nothing visible
unless they hash to the key; a download hashes what it receives and hands nothing back that
does not. The S3, GCS and B2 backends differ in how they talk to their services, not in
that; so the pieces that do it live here:

* :class:`SourceHasher` reads a source file front to back, hashing it, and refuses the read
  that would return its last bytes unless the whole matches; :class:`UploadReader` gives it
  the file-object face an SDK reads a request body from; :func:`upload_parts` sends it in
  parts, a few at a time, for multipart / large-file uploads;
* :class:`DownloadSink` hashes and counts a download as it is written (the count is where a
  broken stream resumes); :func:`download_verified`, :func:`hash_streamed`,
  :func:`read_streamed` and :func:`verify_streamed` are the ways the backends use it;
* :func:`parse_stored_manifest` and :func:`manifest_to_store` check manifests read from and
  written to any store (the ``file://`` store too);
* :class:`StreamingStore` is the read side of a cloud store (downloads, verification,
  manifests) over the one primitive a backend provides: streaming a key into a sink.

Everything here is blocking unless it is a coroutine; the backends run it in worker threads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from .. import _snapdir
from .._errors import (
    HashMismatchError,
    InFluxError,
    NotFoundError,
    SnapdirError,
    SnapdirIOError,
    StoreError,
)
from .._types import StoreUri
from ._base import (
    MANIFEST_READ,
    BaseStore,
    ObjectGet,
    ObjectPut,
    ProgressFn,
    TransientStoreError,
    first_leaf,
    for_each_limited,
    hex_from_key,
    manifest_key,
    manifest_to_store,
    manifest_too_large,
    max_manifest_bytes,
    object_key,
    parse_stored_manifest,
    to_thread,
)

if TYPE_CHECKING:
    import anyio

if sys.version_info < (3, 11):  # pragma: no cover - anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "DownloadSink",
    "SourceHasher",
    "StreamingStore",
    "UploadReader",
    "download_verified",
    "hash_streamed",
    "manifest_to_store",
    "open_source",
    "parse_stored_manifest",
    "read_streamed",
    "upload_parts",
    "verify_streamed",
]

T = TypeVar("T")

_CHUNK = 1024 * 1024


def _uploading(dest: str) -> str:
    """How the messages below name the upload: "uploaded to <dest>" or "being uploaded"."""
    return f"uploaded to {dest}" if dest else "being uploaded"


# -- uploads ------------------------------------------------------------------------------------


def open_source(source: str, dest: str = "") -> BinaryIO:
    """Open an upload's source file (the caller closes it). A file that is gone is an
    :class:`InFluxError` (it was there when the tree was walked), any other failure a
    :class:`SnapdirIOError`."""
    try:
        return open(source, "rb")
    except FileNotFoundError:
        where = f" to {dest}" if dest else ""
        raise InFluxError(f"{source} vanished before it was uploaded{where}") from None
    except OSError as e:
        raise SnapdirIOError(f"cannot read {source}: {e.strerror or e}") from e


class SourceHasher:
    """The first ``size`` bytes of an open source file, read front to back and hashed
    (BLAKE3) exactly as they are read.

    :meth:`read` returns the next bytes; the read that reaches byte ``size`` first checks
    that the file ends there and that everything read hashes to ``checksum``, and raises
    :class:`InFluxError` instead of returning its bytes when not (the file changed, grew or
    shrank since it was walked): whatever the caller sends those bytes in — the last bytes
    of a request body, the last part of a multipart upload — is never completed. ``dest``
    (the store's URI) only names the upload in messages.
    """

    def __init__(self, f: BinaryIO, size: int, checksum: str, source: str, dest: str = "") -> None:
        self._f = f
        self.size = size
        self.checksum = checksum
        self.source = source
        self.dest = dest
        self.restart()
        #: Complete passes over the file, each one verified.
        self.passes = 0

    def restart(self) -> None:
        """Begin a new pass from byte 0, hashed from scratch."""
        self._f.seek(0)
        self._hasher = _snapdir.Hasher()
        #: Bytes read (and hashed) in this pass.
        self.pos = 0
        #: Whether this pass has read, and verified, every byte.
        self.verified = False

    def read(self, n: int) -> bytes:
        """The next ``min(n, size - pos)`` bytes. A read of nothing at the end verifies an
        empty (or fully read, unverified) file."""
        want = max(0, min(n, self.size - self.pos))
        chunks: list[bytes] = []
        got = 0
        while got < want:
            try:
                b = self._f.read(want - got)
            except OSError as e:
                raise SnapdirIOError(f"cannot read {self.source}: {e.strerror or e}") from e
            if not b:  # a regular file reads short only at its end: it shrank
                raise InFluxError(
                    f"{self.source} shrank while it was {_uploading(self.dest)}: "
                    f"{self.pos + got} bytes instead of {self.size}; nothing was stored"
                )
            chunks.append(b)
            got += len(b)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._hasher.update(data)
        self.pos += len(data)
        if self.pos == self.size and not self.verified:
            self._check_end()
        return data

    def _check_end(self) -> None:
        try:
            grew = bool(self._f.read(1))
        except OSError as e:
            raise SnapdirIOError(f"cannot read {self.source}: {e.strerror or e}") from e
        doing = _uploading(self.dest)
        if grew:
            raise InFluxError(
                f"{self.source} grew while it was {doing} (expected {self.size} bytes); "
                "nothing was stored"
            )
        digest = self._hasher.hexdigest()
        if digest != self.checksum:
            raise InFluxError(
                f"{self.source} changed while it was {doing}: its bytes hash to {digest}, "
                f"not {self.checksum}; nothing was stored"
            )
        self.verified = True
        self.passes += 1


class UploadReader:
    """The file object an SDK reads a request body from: a :class:`SourceHasher` with
    ``read``/``seek``/``tell``/``len``, so the bytes hashed are exactly the bytes sent.

    The first error is kept in :attr:`failure` and raised again by every later read, so an
    SDK's own retries stop at once (and the store raises it rather than the SDK's wrapper).
    A rewind to 0 starts a new pass, hashed from scratch and verified again at its end (SDKs
    read a body more than once: botocore to sign it and then to send it, b2sdk and every
    SDK on their own retries).

    With ``replay``, a rewind that stays within the last read is served from memory instead:
    a resumable upload that re-sends a failed chunk gets the very bytes it sent, never bytes
    read again from a file that may have changed meanwhile (the service may already hold
    some of them, so a new pass could splice two versions). A seek anywhere else is then
    refused; without ``replay`` it re-reads (and hashes) the file from 0 up to the target.
    """

    def __init__(
        self,
        f: BinaryIO,
        size: int,
        checksum: str,
        source: str,
        dest: str = "",
        *,
        replay: bool = False,
    ) -> None:
        self._src = SourceHasher(f, size, checksum, source, dest)
        self._replay = replay
        self._pos = 0  # the SDK's position; behind ``_src.pos`` only while replaying
        self._kept = b""  # with ``replay``: the last read, bytes [_kept_at, _src.pos)
        self._kept_at = 0
        #: The error this reader raised.
        self.failure: SnapdirError | None = None

    @property
    def verified(self) -> bool:
        """Whether the current pass has handed over (or is handing over) verified bytes
        up to the end."""
        return self._src.verified

    @property
    def passes(self) -> int:
        """Complete, verified passes over the file."""
        return self._src.passes

    def __len__(self) -> int:
        return self._src.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence == os.SEEK_END:
            offset += self._src.size
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence {whence}")
        target = max(0, min(offset, self._src.size))
        src = self._src
        rewind_past_kept = target == 0 and self._kept_at > 0
        if self._replay and self._kept_at <= target <= src.pos and not rewind_past_kept:
            self._pos = target
        elif target == self._pos and target != 0:
            pass
        elif target == 0 or not self._replay:
            src.restart()
            self._kept, self._kept_at, self._pos = b"", 0, 0
            while self._pos < target:  # rare: SDKs only ever rewind to 0
                self._pos += len(self._read_new(min(_CHUNK, target - self._pos)))
        else:
            self.failure = StoreError(
                f"{src.dest}: upload of {src.source}: cannot seek to {target} "
                f"(bytes {self._kept_at}..{src.pos} are available)"
            )
            raise self.failure
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if self.failure is not None:
            raise self.failure
        left = self._src.size - self._pos
        want = left if n is None or n < 0 else min(n, left)
        parts: list[bytes] = []
        if self._pos < self._src.pos:  # replay of bytes already handed out
            at = self._pos - self._kept_at
            old = self._kept[at : at + want]
            parts.append(old)
            want -= len(old)
        parts.append(self._read_new(want))  # reading nothing at the end still verifies
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._replay and self._pos + len(data) > self._kept_at + len(self._kept):
            # Keep what this read handed out: it is what a rewind can ask for again.
            self._kept, self._kept_at = data, self._pos
        self._pos += len(data)
        return data

    def _read_new(self, want: int) -> bytes:
        try:
            return self._src.read(want)
        except SnapdirError as e:
            self.failure = e
            raise


class _PartSlots:
    """The slots one multipart upload holds: its own bound (``mine``) and the store-wide
    bound on buffered parts (``shared``), acquired in that order, released together."""

    def __init__(self, mine: anyio.Semaphore, shared: anyio.Semaphore) -> None:
        self.mine = mine
        self.shared = shared
        # Store-wide slots held, counted here rather than only released by the part tasks:
        # a task cancelled before it starts never runs its ``finally``, so whatever is
        # still held is given back when the upload ends.
        self.held = 0

    async def acquire(self) -> None:
        await self.mine.acquire()
        await self.shared.acquire()
        self.held += 1

    def release(self) -> None:
        if self.held > 0:
            self.held -= 1
            self.shared.release()
        self.mine.release()

    def release_all(self) -> None:
        for _ in range(self.held):
            self.shared.release()
        self.held = 0


async def upload_parts(
    source: SourceHasher,
    part_size: int,
    send: Callable[[int, bytes], T],
    *,
    concurrency: int,
    buffers: anyio.Semaphore,
) -> list[T]:
    """Upload ``source`` in parts: read in order (the read of the last part verifies the
    whole file before that part leaves, see :class:`SourceHasher`), and
    ``send(number, data)`` (numbers from 1, in a worker thread) with at most
    ``concurrency`` parts of this upload in flight and never more parts held in memory
    than the store-wide ``buffers`` allow. Returns what ``send`` returned, in part order.
    The first failure cancels the parts in flight and is raised as itself; completing or
    aborting the upload is the caller's business."""
    import anyio

    results: dict[int, T] = {}
    slots = _PartSlots(anyio.Semaphore(max(1, concurrency)), buffers)

    async def one(number: int, data: bytes) -> None:
        try:
            results[number] = await to_thread(send, number, data)
        finally:
            slots.release()

    try:
        async with anyio.create_task_group() as tg:
            number = 0
            while source.pos < source.size:
                await slots.acquire()
                try:
                    data = await to_thread(source.read, part_size)
                except BaseException:
                    slots.release()
                    raise
                number += 1
                tg.start_soon(one, number, data)
                del data
            source.read(0)  # an empty source: no part to send, still to verify
    except BaseExceptionGroup as eg:
        raise first_leaf(eg) from None
    finally:
        slots.release_all()
    return [results[n] for n in sorted(results)]


# -- downloads ----------------------------------------------------------------------------------


#: Bytes a download collects before they are written (one positioned write each).
_WRITE_BUF = 256 * 1024


class DownloadSink:
    """Where a download goes: hashed (BLAKE3) and counted as it arrives, and written to
    ``dest`` (opened on the first byte, or by :meth:`open`) or kept in memory (``keep``:
    manifests), or only hashed (neither: verification).

    It is the file object SDKs download into, and the one place a broken stream resumes
    from: a ranged read from :attr:`count`, so the whole is verified without reading it
    back. A write error is kept in :attr:`failure` (an SDK may wrap it; the store raises
    this one).

    ``dest`` is written sparse: all-zero 4 KiB blocks are left as holes rather than
    written (the Rust core's ``write_at_sparse``), and :meth:`close` gives the file its
    length, so a sparse object downloaded from a cloud store takes no more disk in the
    cache or a pulled tree than it did where it was pushed from.

    ``limit``: at most this many bytes are accepted; the write that would pass it raises
    ``too_large()`` (kept in :attr:`failure`) without keeping its bytes, so a hostile or
    corrupt never-ending stream is refused while it streams, not after.
    """

    def __init__(
        self,
        dest: str | None = None,
        *,
        keep: bool = False,
        limit: int | None = None,
        too_large: Callable[[], SnapdirError] | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.dest = dest
        self._progress = progress
        self._fd: int | None = None
        self._pending = bytearray()
        self._written = 0  # bytes of ``dest`` placed on disk (holes included)
        self._hasher = _snapdir.Hasher()
        self._kept: _snapdir.ByteBuffer | None = _snapdir.ByteBuffer() if keep else None
        self._limit = limit
        self._too_large = too_large
        #: Bytes received so far.
        self.count = 0
        self.failure: SnapdirError | None = None
        #: Whether ``dest`` was created (so a failed download removes it).
        self.opened = False

    def _write_error(self, e: OSError) -> SnapdirError:
        self.failure = SnapdirIOError(f"cannot write {self.dest}: {e.strerror or e}")
        return self.failure

    def open(self) -> None:
        """Create (or truncate) ``dest`` if it is not open yet."""
        if self.dest is None or self._fd is not None:
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.dest, flags, 0o666)
        except OSError as e:
            raise self._write_error(e) from e
        self.opened = True

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        chunk = data if isinstance(data, bytes) else bytes(data)
        if self._limit is not None and self.count + len(chunk) > self._limit:
            self.failure = (
                self._too_large()
                if self._too_large is not None
                else StoreError(f"the download passed its limit of {self._limit} bytes")
            )
            raise self.failure
        if self.dest is not None:
            self.open()
            if not self._pending and len(chunk) >= _WRITE_BUF:
                self._write_out(chunk)
            else:
                self._pending += chunk
                if len(self._pending) >= _WRITE_BUF:
                    self._write_out(bytes(self._pending))
                    self._pending.clear()
        if self._kept is not None:
            self._kept.extend(chunk)
        self._hasher.update(chunk)
        self.count += len(chunk)
        if self._progress is not None:
            self._progress(0, len(chunk))
        return len(chunk)

    def _write_out(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            _snapdir.write_at_sparse(self._fd, self._written, data)
        except OSError as e:
            raise self._write_error(e) from e
        self._written += len(data)

    def flush(self) -> None:
        if self._fd is not None and self._pending:
            self._write_out(bytes(self._pending))
            self._pending.clear()

    def close(self) -> None:
        # Buffered bytes reach the disk here: a full disk may only show now. A download
        # that ends in zeros ends in a hole: only the length says where it ends.
        fd = self._fd
        if fd is None:
            return
        try:
            self.flush()
            if os.fstat(fd).st_size < self._written:
                os.ftruncate(fd, self._written)
        except OSError as e:
            raise self._write_error(e) from e
        finally:
            self._fd = None
            self._pending.clear()
            with contextlib.suppress(OSError):
                os.close(fd)

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    def data(self) -> bytes:
        """A copy of what was kept (``keep=True``)."""
        return self._kept.to_bytes() if self._kept is not None else b""

    def kept(self) -> _snapdir.ByteBuffer:
        """What was kept (``keep=True``), in Rust memory, to be parsed where it is."""
        if self._kept is None:
            raise ValueError("nothing is kept: not a keep=True sink")
        return self._kept


def download_verified(
    dest: str, checksum: str, where: str, stream: Callable[[DownloadSink], None]
) -> None:
    """Download an object into the file ``dest`` with ``stream(sink)`` (which feeds a
    :class:`DownloadSink`, resuming as it sees fit) and check it hashes to ``checksum``:
    :class:`HashMismatchError` naming ``where`` otherwise. On any failure ``dest`` is
    removed if this call created it; a missing object never creates it."""
    sink = DownloadSink(dest)
    ok = False
    try:
        stream(sink)
        sink.open()  # an empty object is an empty file
        sink.close()
        digest = sink.hexdigest()
        if digest != checksum:
            raise HashMismatchError(
                f"{where} is damaged: it holds {sink.count} bytes hashing to {digest}; "
                f"{dest} was removed"
            )
        ok = True
    finally:
        sink.close()
        if not ok and sink.opened:
            with contextlib.suppress(OSError):
                os.unlink(dest)


def hash_streamed(stream: Callable[[DownloadSink], None]) -> tuple[str, int] | None:
    """(BLAKE3, size) of what ``stream(sink)`` downloads, nothing written anywhere; None
    when it raises :class:`NotFoundError`."""
    sink = DownloadSink()
    try:
        stream(sink)
    except NotFoundError:
        return None
    return sink.hexdigest(), sink.count


def read_streamed(
    stream: Callable[[DownloadSink], None],
    limit: int | None = None,
    too_large: Callable[[], SnapdirError] | None = None,
) -> bytes:
    """Everything ``stream(sink)`` downloads, in memory (a manifest); more than ``limit``
    bytes raise ``too_large()`` as soon as the stream passes it."""
    return read_streamed_sink(stream, limit, too_large).data()


def read_streamed_sink(
    stream: Callable[[DownloadSink], None],
    limit: int | None = None,
    too_large: Callable[[], SnapdirError] | None = None,
) -> DownloadSink:
    """:func:`read_streamed`, the bytes left in the sink (:meth:`DownloadSink.kept`, with
    their BLAKE3 in :meth:`DownloadSink.hexdigest`) to be parsed without a copy."""
    sink = DownloadSink(keep=True, limit=limit, too_large=too_large, progress=MANIFEST_READ.get())
    stream(sink)
    return sink


async def verify_streamed(
    objects: Sequence[tuple[str, int]],
    hash_object: Callable[[str], tuple[str, int] | None],
    jobs: int,
    progress: ProgressFn | None = None,
) -> dict[str, str]:
    """``verify_objects`` for a store that can hash an object as it streams, without a
    temporary file: ``hash_object(checksum)`` (run in a worker thread) gives its
    (BLAKE3, size), or None when it is absent."""
    problems: dict[str, str] = {}

    async def one(obj: tuple[str, int]) -> None:
        checksum = obj[0]
        found = await to_thread(hash_object, checksum)
        if found is None:
            problems[checksum] = "missing"
        elif found[0] != checksum or found[1] != obj[1]:
            # The right bytes at another size than the manifest's fail every pull: as
            # corrupt here as in the file:// store.
            problems[checksum] = "corrupt"
        if progress is not None:
            progress(1, obj[1])

    await for_each_limited(objects, one, jobs)
    return problems


# -- manifests ----------------------------------------------------------------------------------


# -- the read side of a cloud store ----------------------------------------------------------


class StreamingStore(BaseStore):
    """What the cloud backends share above their SDKs: keys under the store's prefix, a
    thread-safe request count, the transient-error answer for the retry wrapper, and the
    whole read side — :meth:`get_object`, :meth:`verify_objects`, :meth:`get_manifest` —
    verified through :class:`DownloadSink`.

    A backend provides one primitive, :meth:`_stream` (blocking: download ``key`` into
    ``sink``, resuming a broken stream from ``sink.count`` as its service allows;
    :class:`NotFoundError` when the key is absent), calls :meth:`_count` for every request
    it sends, and implements the rest of the protocol.
    """

    def __init__(self, uri: StoreUri) -> None:
        super().__init__(uri)
        self._count_lock = threading.Lock()

    def _key(self, rel: str) -> str:
        """The full key of ``rel`` (``.objects/...``, ``.manifests/...``) in the bucket."""
        prefix = self.uri.prefix
        return f"{prefix}/{rel}" if prefix else rel

    def _count(self) -> None:
        with self._count_lock:
            self._requests += 1

    def request_count(self) -> int:
        with self._count_lock:
            return self._requests

    def is_transient(self, exc: BaseException) -> bool:
        """Whether the retry wrapper should try ``exc``'s call again."""
        return isinstance(exc, TransientStoreError)

    def _stream(self, key: str, what: str, sink: DownloadSink) -> None:
        """Download ``key`` into ``sink`` (``what`` names the call in messages)."""
        raise NotImplementedError

    def _hash_remote(self, key: str, what: str) -> tuple[str, int] | None:
        """(BLAKE3, size) of the object under ``key``, streamed; None if it is absent."""
        return hash_streamed(functools.partial(self._stream, key, what))

    async def get_object(self, checksum: str, dest: str) -> None:
        self._check_hex(checksum, "object checksum")
        await to_thread(self._get_object, checksum, os.fspath(dest))

    def blocking_object_call(
        self, op: str, item: ObjectPut | ObjectGet, replace: bool = False
    ) -> Callable[[], None] | None:
        """A download as one blocking call, for the batches of the store wrappers (see
        :mod:`snapdir.stores._wrappers`); None for anything else."""
        if op != "get" or not isinstance(item, ObjectGet):
            return None
        self._check_hex(item.checksum, "object checksum")
        return functools.partial(self._get_object, item.checksum, os.fspath(item.dest))

    def _get_object(self, checksum: str, dest: str) -> None:
        key = self._key(object_key(checksum))
        stream = functools.partial(self._stream, key, f"download of object {checksum}")
        download_verified(dest, checksum, f"{self.uri}: object {checksum} (key {key})", stream)

    async def verify_objects(
        self,
        objects: Sequence[tuple[str, int]],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
    ) -> dict[str, str]:
        """Hash each object as it streams, without writing it anywhere."""
        for checksum, _ in objects:
            self._check_hex(checksum, "object checksum")

        def hash_object(checksum: str) -> tuple[str, int] | None:
            return self._hash_remote(self._key(object_key(checksum)), f"object {checksum}")

        return await verify_streamed(objects, hash_object, jobs, progress)

    async def get_manifest(self, snapshot_id: str) -> _snapdir.Manifest:
        self._check_hex(snapshot_id, "snapshot id")
        return await to_thread(self._get_manifest, snapshot_id)

    def _read_manifest(self, key: str, what: str, snapshot_id: str = "") -> bytes:
        """The stored manifest under ``key``, refused (``INVALID_MANIFEST``) once it
        passes :func:`max_manifest_bytes` while it streams."""
        return self._read_manifest_sink(key, what, snapshot_id).data()

    def _read_manifest_sink(self, key: str, what: str, snapshot_id: str = "") -> DownloadSink:
        limit = max_manifest_bytes(self)
        sid = snapshot_id or hex_from_key(key.rsplit(".manifests/", 1)[-1]) or key
        return read_streamed_sink(
            functools.partial(self._stream, key, what),
            limit,
            lambda: manifest_too_large(self.uri, sid, limit, None),
        )

    def _get_manifest(self, snapshot_id: str) -> _snapdir.Manifest:
        key = self._key(manifest_key(snapshot_id))
        sink = self._read_manifest_sink(key, f"manifest {snapshot_id}", snapshot_id)
        # Parsed where it downloaded (Rust memory), its BLAKE3 already computed on the way.
        return parse_stored_manifest(
            sink.kept(), snapshot_id, str(self.uri), digest=sink.hexdigest()
        )
