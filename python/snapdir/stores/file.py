"""The ``file://`` store: a directory on this machine, byte-compatible with snapdir 1.x.

Every batch is one Rust call with the interpreter released (copy-while-hashing, temporary
name + rename, objects 0644). ``durable=True`` (or ``SNAPDIR_DURABLE=1``) additionally
``fsync``s each object and its directory before the manifest is written, so a power loss
cannot leave a manifest whose objects are not on disk; it costs roughly one disk flush per
object, so it is off by default (a crash then may lose recent objects, but never exposes a
wrong one: a later ``verify`` or ``push --repair`` finds and fixes the gap).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TypeVar

from .. import _snapdir
from .._errors import (
    HashMismatchError,
    InvalidArgumentError,
    NotFoundError,
    StoreError,
)
from .._runtime import LOCAL_SYNC, run_blocking, run_cancellable
from .._types import StoreUri
from ._base import (
    BaseStore,
    Capability,
    ObjectGet,
    ObjectPut,
    ProgressFn,
    PushedTree,
    announce_found,
    check_shard,
    first_leaf,
    for_each_limited,
    manifest_too_large,
    max_manifest_bytes,
    read_stored_manifest,
    to_thread,
)
from ._keys import KeyInfo, check_key, check_prefix

if sys.version_info < (3, 11):  # pragma: no cover - anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]


#: How often a running Rust batch's counters are forwarded to a progress callback.
POLL_SECONDS = 0.1

__all__ = ["FileStore"]

T = TypeVar("T")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class FileStore(BaseStore):
    """A store in a local directory (``file:///abs/path``)."""

    capabilities = (
        Capability.LIST_OBJECTS
        | Capability.LOCAL
        | Capability.KEYS
        | Capability.CONDITIONAL_PUT
        | Capability.PUSH_TREE
    )

    def __init__(self, uri: StoreUri | str, *, durable: bool | None = None) -> None:
        u = StoreUri(uri)
        if u.scheme != "file":
            raise InvalidArgumentError(f"not a file:// URI: {u}", code="INVALID_STORE")
        super().__init__(u)
        self.root = u.path
        self.durable = _env_flag("SNAPDIR_DURABLE") if durable is None else durable

    # -- paths ----------------------------------------------------------------------------
    def object_path(self, checksum: str) -> str:
        from ._base import object_key

        return os.path.join(self.root, object_key(checksum))

    def manifest_path(self, snapshot_id: str) -> str:
        from ._base import manifest_key

        return os.path.join(self.root, manifest_key(snapshot_id))

    def require(self) -> None:
        """Raise a clear error when the store directory does not exist (reads only: a push
        creates it)."""
        if not os.path.isdir(self.root):
            what = "is not a directory" if os.path.exists(self.root) else "does not exist"
            raise StoreError(
                f"no store at {self.uri}: {self.root} {what} (check the URI, or push to it first)",
                code="STORE_NOT_FOUND",
            )

    # -- objects --------------------------------------------------------------------------
    async def has_object(self, checksum: str) -> bool:
        self._check_hex(checksum, "checksum")
        return await to_thread(os.path.isfile, self.object_path(checksum))

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        await self.put_objects([ObjectPut(checksum, source, size)], replace=replace)

    async def get_object(self, checksum: str, dest: str) -> None:
        self._check_hex(checksum, "checksum")
        self.require()
        try:
            await run_cancellable(
                lambda _t: _snapdir.store_get_object(self.root, checksum, os.fspath(dest))
            )
        except NotFoundError:
            # The wording every backend uses (see stores._wrappers._missing).
            raise NotFoundError(f"object {checksum} not found in {self.uri}") from None

    async def put_objects(
        self,
        items: Sequence[ObjectPut],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
        replace: bool = False,
        from_tree: bool = True,
    ) -> None:
        """All objects in one Rust call (parallel, verified). ``from_tree=False`` when the
        sources are another store's objects (a mismatch is then corruption, not change).

        ``replace`` is the Rust batch's ``repair``: an existing object is re-hashed and
        rewritten (temporary name + rename) unless it is sound, which on a local disk costs
        about what an unconditional copy would and never rewrites a sound one."""
        batch = [(it.checksum, it.source, it.size) for it in items]
        written, _present, _repaired, nbytes = await run_with_progress(
            lambda token, prog: _snapdir.store_put_objects(
                self.root, batch, from_tree, self.durable, replace, token, prog
            ),
            progress,
        )
        #: (objects written, bytes written) by the last batch (for ``push --json``).
        self.last_written: tuple[int, int] = (int(written), int(nbytes))

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
        """Walk ``path`` and copy its files into this store in the same pass: each file is
        read once, and the bytes written are the bytes hashed (a file that changes while
        it is read fails the push with :class:`InFluxError` before its object is named).
        The manifest itself is not written (the caller writes it last)."""
        m, warnings, written, _present, nbytes, noop = await run_with_progress(
            lambda token, prog: _snapdir.store_push_tree(
                self.root,
                path,
                no_follow,
                exclude,
                stat_cache,
                rehash,
                self.durable,
                token,
                prog,
                ignore_file=ignore[0],
                no_ignore_file=ignore[1],
                exclude_glob=ignore[2],
            ),
            progress,
        )
        self.last_written = (int(written), int(nbytes))
        return PushedTree(
            m, warnings, noop=bool(noop), written=int(written), bytes_written=int(nbytes)
        )

    async def get_objects(
        self, items: Sequence[ObjectGet], *, jobs: int = 32, progress: ProgressFn | None = None
    ) -> None:
        self.require()

        async def one(it: ObjectGet) -> None:
            await self.get_object(it.checksum, it.dest)
            if progress is not None:
                progress(1, it.size)

        await for_each_limited(items, one, min(jobs, 8))

    async def adopt_object(self, checksum: str, tmp: str) -> None:
        """Move an already-verified temporary file into place as object ``checksum``."""
        await to_thread(self._adopt, checksum, tmp)

    def _adopt(self, checksum: str, tmp: str) -> None:
        dst = self.object_path(checksum)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.chmod(tmp, 0o644)
        if self.durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, dst)

    async def verify_objects(
        self,
        objects: Sequence[tuple[str, int]],
        *,
        jobs: int = 32,
        progress: ProgressFn | None = None,
    ) -> dict[str, str]:
        self.require()
        items = list(objects)
        bad = await run_with_progress(
            lambda token, prog: _snapdir.store_verify_objects(self.root, items, token, prog),
            progress,
        )
        return dict(bad)

    async def list_objects(self, shard: str = "") -> set[str]:
        self.require()
        prefix = check_shard(shard)
        keys = await run_cancellable(lambda _t: _snapdir.store_list(self.root, "objects"))
        return {k for k in keys if k.startswith(prefix)}

    async def missing_objects(self, checksums: Sequence[str]) -> set[str]:
        # One stat per object (in Rust, in parallel) is cheaper than listing a large local
        # store; a push's guard asks this of every object it names.
        # (The binding refuses a checksum that is not 64 lowercase hex, naming it.)
        return set(await to_thread(_snapdir.store_missing_objects, self.root, list(checksums)))

    # -- manifests ------------------------------------------------------------------------
    async def has_manifest(self, snapshot_id: str) -> bool:
        self._check_hex(snapshot_id, "snapshot id")
        return await to_thread(os.path.isfile, self.manifest_path(snapshot_id))

    async def get_manifest(self, snapshot_id: str) -> _snapdir.Manifest:
        self._check_hex(snapshot_id, "snapshot id")
        self.require()
        return await to_thread(self._read_manifest, snapshot_id)

    def _read_manifest(self, snapshot_id: str) -> _snapdir.Manifest:
        # Non-blocking open and a regular-file check: a FIFO planted under the key would
        # block the read forever, a link to /dev/zero would never end.
        path = self.manifest_path(snapshot_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"snapshot {snapshot_id} not found in {self.uri}") from None
        except OSError as e:
            raise StoreError(f"cannot read snapshot {snapshot_id} from {self.uri}: {e}") from e
        limit = max_manifest_bytes(self)
        try:
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise StoreError(
                        f"cannot read snapshot {snapshot_id} from {self.uri}: "
                        f"{path} is not a regular file"
                    )
                if st.st_size > limit:  # refused before a byte is read
                    raise manifest_too_large(self.uri, snapshot_id, limit, st.st_size)
                # Bounded even if the file grows meanwhile: one byte past the cap is enough
                # to know it is over.
                return read_stored_manifest(f, limit, snapshot_id, self.uri)
        except OSError as e:
            raise StoreError(f"cannot read snapshot {snapshot_id} from {self.uri}: {e}") from e

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        self._check_hex(snapshot_id, "snapshot id")
        data = (text + "\n").encode()
        if _snapdir.blake3_hex(data) != snapshot_id:
            raise HashMismatchError(
                f"refusing to store a manifest that does not hash to {snapshot_id} in {self.uri}"
            )
        await to_thread(self._write_manifest, snapshot_id, data)

    async def put_manifest_of(self, snapshot_id: str, m: _snapdir.Manifest) -> None:
        """:meth:`put_manifest` of a parsed manifest: its text is written from Rust, never
        built as a Python string."""
        self._check_hex(snapshot_id, "snapshot id")
        if m.id != snapshot_id:
            raise HashMismatchError(
                f"refusing to store a manifest that does not hash to {snapshot_id} in {self.uri}"
            )
        await to_thread(self._write_manifest, snapshot_id, m)

    def _write_manifest(self, snapshot_id: str, data: bytes | _snapdir.Manifest) -> None:
        """Temporary name, then rename: a manifest is visible whole or not at all."""
        path = self.manifest_path(snapshot_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{id(data)}"
        try:
            with open(tmp, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    _snapdir.manifest_write_fd(data, f.fileno())
                if self.durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise StoreError(f"cannot write snapshot {snapshot_id} to {self.uri}: {e}") from e
        if self.durable:
            fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def list_manifests(self) -> list[str]:
        self.require()
        return list(await run_cancellable(lambda _t: _snapdir.store_list(self.root, "manifests")))

    # -- small keys (snapdir.stores._keys) --------------------------------------------------
    def _key_path(self, key: str, *, records_only: bool = True) -> str:
        return os.path.join(self.root, check_key(key, records_only=records_only))

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._key_path(key)
        return await to_thread(self._put_if_absent, key, path, bytes(data))

    async def put_if_absent_of(self, key: str, head: bytes, m: _snapdir.Manifest) -> bool:
        """:meth:`put_if_absent` of ``head`` then the stored form of ``m``, written from
        Rust (see :func:`snapdir.stores._base.put_if_absent_of`)."""
        path = self._key_path(key)
        return await to_thread(self._put_if_absent, key, path, bytes(head), m)

    def _put_if_absent(
        self, key: str, path: str, data: bytes, m: _snapdir.Manifest | None = None
    ) -> bool:
        """Write a temporary file, then ``link()`` it to the key: the link fails with
        EEXIST if anyone created the key first, and a reader sees the key whole or not at
        all (the temporary name never matches a key: keys cannot contain ``#``)."""
        self.require_for_write()
        parent = os.path.dirname(path)
        tmp = os.path.join(parent, f"#tmp-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            os.makedirs(parent, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if m is not None:
                    _snapdir.manifest_write_fd(m, fd)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path, follow_symlinks=False)
            except FileExistsError:
                return False
            if self.durable:
                _fsync_dir(parent)
            return True
        except OSError as e:
            raise StoreError(f"cannot create {key} in {self.uri}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def require_for_write(self) -> None:
        """The store's directory must exist for a record to be written (a record never
        creates a store: only a push does)."""
        self.require()

    async def get_bytes(self, key: str, *, max_size: int) -> bytes:
        path = self._key_path(key)
        return await to_thread(self._get_bytes, key, path, max_size)

    def _get_bytes(self, key: str, path: str, max_size: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self.require()
            raise NotFoundError(f"{key} not found in {self.uri}") from None
        except OSError as e:
            raise StoreError(f"cannot read {key} from {self.uri}: {e}") from e
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"cannot read {key} from {self.uri}: not a regular file")
            if st.st_size > max_size:
                raise StoreError(
                    f"{key} in {self.uri} is {st.st_size} bytes, more than the "
                    f"{max_size} a record may have"
                )
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise StoreError(f"{key} in {self.uri} grew past {max_size} bytes while read")
        return data

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        check_prefix(prefix)
        self.require()
        return await to_thread(self._list_keys, prefix)

    def _list_keys(self, prefix: str) -> list[KeyInfo]:
        """Every regular file below the prefix, with its mtime; names that are not valid
        keys (temporary files, another tool's files) are skipped, symbolic links are not
        followed."""
        out: list[KeyInfo] = []
        start = os.path.join(self.root, prefix)
        stack = [(start, prefix)]
        while stack:
            directory, rel = stack.pop()
            try:
                it = os.scandir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                raise StoreError(f"cannot list {rel} in {self.uri}: {e}") from e
            with it:
                for entry in it:
                    key = rel + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, key + "/"))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        check_key(key, records_only=False)
                        st = entry.stat(follow_symlinks=False)
                    except (InvalidArgumentError, FileNotFoundError):
                        continue
                    when = datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc)
                    out.append(KeyInfo(key, st.st_size, when))
        out.sort(key=lambda k: k.key)
        return out

    async def delete_keys(self, keys: Sequence[str]) -> None:
        paths = [(k, self._key_path(k, records_only=False)) for k in keys]
        await to_thread(self._delete_keys, paths)

    def _delete_keys(self, paths: list[tuple[str, str]]) -> None:
        for key, path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StoreError(f"cannot delete {key} from {self.uri}: {e}") from e

    async def store_time(self) -> datetime:
        self.require()
        return await to_thread(self._store_time)

    def _store_time(self) -> datetime:
        """The mtime the store's file system gives a file created now (on a network file
        system, the server's clock); the client's clock only if the store is read-only."""
        try:
            fd, tmp = tempfile.mkstemp(prefix="#now-", dir=self.root)
        except OSError:
            return datetime.now(timezone.utc)
        try:
            return datetime.fromtimestamp(os.fstat(fd).st_mtime_ns / 1e9, timezone.utc)
        finally:
            os.close(fd)
            os.unlink(tmp)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def run_with_progress(
    fn: Callable[[_snapdir.CancelToken, _snapdir.Progress | None], T],
    progress: ProgressFn | None,
    *,
    counters: _snapdir.Progress | None = None,
    token: _snapdir.CancelToken | None = None,
) -> T:
    """Run a Rust batch ``fn(token, progress_counters)`` in a worker thread, forwarding its
    counters to ``progress`` every 100 ms (and once at the end). ``counters`` and ``token``:
    ones the Rust side was given earlier (a checkout plan keeps those it was made with)."""
    if counters is None and progress is not None:
        counters = _snapdir.Progress()
    sent = [0, 0]
    totals = [False]

    def flush() -> None:
        if progress is None or counters is None:
            return
        if not totals[0] and counters.found_done:
            # A long walk's totals, from the counting walk beside it (walk_counted).
            totals[0] = True
            announce_found(progress, counters.found_files, counters.found_bytes)
        f, b = counters.files, counters.bytes
        if f != sent[0] or b != sent[1]:
            progress(f - sent[0], b - sent[1])
            sent[0], sent[1] = f, b

    def call(token: _snapdir.CancelToken) -> T:
        return fn(token, counters)

    if LOCAL_SYNC.get():
        value = run_blocking(call, flush, token)
        flush()
        return value
    if progress is None:
        return await run_cancellable(call, token)
    import anyio  # here: the local CLI path above runs without it

    result: list[T] = []
    try:
        async with anyio.create_task_group() as tg:

            async def poll() -> None:
                while True:
                    await anyio.sleep(POLL_SECONDS)
                    flush()

            tg.start_soon(poll)
            result.append(await run_cancellable(call, token))
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as eg:
        # The batch's own error (NotFoundError, ...), not the task group's wrapper of it.
        raise first_leaf(eg) from None
    flush()
    return result[0]
