"""``b2://bucket/prefix``: a store on Backblaze B2, through b2sdk's native API (``b2sdk.v2``).

Configuration comes from the environment, as for the ``b2`` command line tool:

* ``B2_APPLICATION_KEY_ID`` and ``B2_APPLICATION_KEY``: the application key (required);
* ``SNAPDIR_B2_REALM``: the API URL to authorise against (default: production,
  ``https://api.backblazeb2.com``); used for tests and for B2-compatible services.

The layout and the guarantees are those of every store (SPEC §4, :mod:`snapdir.stores._base`).
How this backend keeps them:

* **The bytes sent are the bytes hashed.** A file up to :attr:`B2Store.large_file_threshold`
  is streamed from disk in one ``b2_upload_file`` request through :class:`_UploadBody`, which
  hashes (BLAKE3) what it hands over and refuses, by raising, the read that would hand over
  the last bytes when the hash is not the key: the request dies short of its length and B2
  stores nothing (B2 also checks the SHA-1 that follows the body). A larger file becomes a B2
  *large file*: its parts are read one after the other (BLAKE3 computed in order over exactly
  the bytes read), uploaded a few at a time in parallel, and the large file is finished only
  if the digest matches; otherwise it is cancelled, so no unfinished file is left behind.
* **One copy.** B2 has no conditional create and keeps every version of a name, so a put
  first asks whether the object is there (``HEAD``), unless this store has just seen it
  absent (a push lists the store first; see :meth:`B2Store._known_absent`) and has not tried
  to upload it since; an existing object is accepted once its size (and up to
  :attr:`B2Store.verify_on_conflict_max` bytes, its hash) is confirmed. A damaged one is
  replaced by a new version and the damaged version deleted. ``put_object(...,
  replace=True)`` (what ``push --repair`` does for the objects it found damaged) uploads
  without accepting what is there, so a damaged object of the right size is mended the same
  way. Two pushers racing on one new object may leave two identical versions; readers only
  ever see the newest.
* **Every byte read is verified**, streamed to disk; a stream that breaks is resumed with a
  ranged read from the offset reached, *by file id*, so the version being read cannot change
  underneath.
* **Failures are classified.** b2sdk retries most calls itself (its ``B2Http`` layer, with
  backoff and ``Retry-After``) but sends each upload once, and does not retry a 429 on an
  upload at all: throttling, 5xx answers, resets and timeouts are raised as
  :class:`~snapdir.stores._base.TransientStoreError` (carrying ``Retry-After``) for
  :class:`~snapdir.stores._wrappers.RetryingStore`, which also fetches a fresh upload URL by
  starting the call over, as B2 asks clients to do.

The SDK is imported on first use (``pip install 'snapdir[b2]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO

from .._errors import (
    HashMismatchError,
    InFluxError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    StoreError,
)
from .._redact import LOG_FILTER, redact_exception
from .._types import StoreUri
from ._base import (
    Capability,
    LoopSemaphore,
    TransientStoreError,
    check_shard,
    hex_from_key,
    manifest_key,
    object_key,
    to_thread,
)
from ._keys import RECORDS, KeyInfo, check_key, check_prefix
from ._streams import (
    DownloadSink,
    SourceHasher,
    StreamingStore,
    UploadReader,
    manifest_to_store,
    open_source,
    parse_stored_manifest,
    upload_parts,
)

__all__ = ["KEY_ENV", "KEY_ID_ENV", "REALM_ENV", "B2Store"]

_log = logging.getLogger("snapdir.stores")
_log.addFilter(LOG_FILTER)  # no secret in a log line (see snapdir._redact)

MiB = 1024 * 1024
KEY_ID_ENV = "B2_APPLICATION_KEY_ID"
KEY_ENV = "B2_APPLICATION_KEY"
REALM_ENV = "SNAPDIR_B2_REALM"
#: ``X-Bz-Content-Sha1`` value announcing that the SHA-1 follows the body (40 hex digits).
_HEX_DIGITS_AT_END = "hex_digits_at_end"
_CONTENT_TYPE = "application/octet-stream"
#: File info naming the upload a large file belongs to (to find its orphans).
_UPLOAD_TOKEN = "snapdir_upload"
_MANIFEST_CONTENT_TYPE = "text/plain"
#: B2 allows at most this many parts in a large file.
_MAX_PARTS = 10_000
_READ_CHUNK = 1 * MiB
_CREDENTIALS_HINT = (
    f"set {KEY_ID_ENV} and {KEY_ENV} to a B2 application key "
    "(with listFiles, readFiles, writeFiles and deleteFiles on the bucket)"
)


class B2Store(StreamingStore):
    """A snapdir store in a Backblaze B2 bucket (``b2://bucket/prefix``).

    Opening is cheap: credentials are read and the account authorised on the first
    operation. ``large_file_threshold``, ``part_size`` and ``part_concurrency`` tune large
    files (tests lower them).
    """

    capabilities = Capability.LIST_OBJECTS | Capability.KEYS

    #: Files above this many bytes are uploaded as B2 large files (in parts, in parallel);
    #: smaller ones stream from disk in a single request.
    large_file_threshold: int = 200 * MiB
    #: Size of a large file's parts (raised to the account's minimum, and as needed to stay
    #: within 10,000 parts). Each part being uploaded is held in memory.
    part_size: int = 64 * MiB
    #: Parts of one large file uploaded at once.
    part_concurrency: int = 4
    #: Parts held in memory across all large uploads of this store at once.
    part_buffers: int = 8
    #: Consecutive broken download streams without progress that are resumed before the
    #: failure goes to the retry wrapper.
    max_resumes: int = 3
    #: An existing object up to this size is downloaded and hashed before a put accepts it
    #: (larger ones: the size must match).
    verify_on_conflict_max: int = 16 * MiB
    #: For how many seconds a put trusts this store's own word that a key is absent (a
    #: listing that did not show it, a HEAD that missed) instead of asking again.
    absent_ttl: float = 600.0

    def __init__(
        self,
        uri: StoreUri | str,
        *,
        large_file_threshold: int | None = None,
        part_size: int | None = None,
        part_concurrency: int | None = None,
    ) -> None:
        uri = StoreUri(uri)
        if uri.scheme != "b2":
            raise InvalidArgumentError(f"{uri} is not a b2:// store URI", code="INVALID_STORE")
        super().__init__(uri)
        if large_file_threshold is not None:
            self.large_file_threshold = large_file_threshold
        if part_size is not None:
            self.part_size = part_size
        if part_concurrency is not None:
            self.part_concurrency = max(1, part_concurrency)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._api: Any = None
        # Every HTTP session b2sdk makes for this store. b2sdk keeps one per worker thread
        # and drops it when the thread ends, leaving its sockets to the garbage collector;
        # kept here, they are closed by aclose() or, for a store never closed, when the store
        # itself is collected.
        self._http_sessions: list[Any] = []
        weakref.finalize(self, _close_sessions, self._http_sessions)
        self._bucket_id = ""
        # What this store learnt about absent keys (see :meth:`_known_absent`).
        self._memo_lock = threading.Lock()
        self._listed: dict[str, tuple[float, frozenset[str]]] = {}
        self._missed: dict[str, float] = {}
        self._written: set[str] = set()
        self._uncertain: set[str] = set()
        self._pool_size = 32
        #: The store-wide bound on large-file parts held in memory.
        self._part_buffers = LoopSemaphore(
            f"snapdir-b2-parts-{id(self)}", lambda: max(self.part_buffers, self.part_concurrency)
        )

    def __repr__(self) -> str:
        return f"B2Store({str(self.uri)!r})"

    # -- plumbing -------------------------------------------------------------------------------

    def _count(self) -> None:
        super()._count()
        self._local.requests = getattr(self._local, "requests", 0) + 1

    def _thread_requests(self) -> int:
        """Requests sent so far by the calling thread (to see whether b2sdk retried)."""
        return int(getattr(self._local, "requests", 0))

    def set_max_concurrency(self, jobs: int) -> None:
        """Size the HTTP connection pool for ``jobs`` concurrent calls (a hint from
        :class:`~snapdir.stores._wrappers.LimitedStore`)."""
        self._pool_size = max(10, jobs + self.part_concurrency)
        if self._api is not None:
            _mount_pool(self._api, self._pool_size)

    def _session(self) -> Any:
        """The authorised b2sdk session (``B2Session``), created once. Credentials are read
        here, not in ``__init__``, so opening a store needs none and sends nothing."""
        with self._lock:
            if self._api is not None:
                return self._api.session
            try:
                from b2sdk.v2 import (  # type: ignore[import-untyped,unused-ignore]
                    B2Api,
                    B2HttpApiConfig,
                    InMemoryAccountInfo,
                )
                from b2sdk.v2 import exception as b2e  # type: ignore[import-untyped,unused-ignore]
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise StoreError(
                    f"the b2:// store needs b2sdk ({e.name} is missing): pip install 'snapdir[b2]'"
                ) from e
            key_id = os.environ.get(KEY_ID_ENV, "").strip()
            key = os.environ.get(KEY_ENV, "").strip()
            missing = [name for name, value in ((KEY_ID_ENV, key_id), (KEY_ENV, key)) if not value]
            if missing:
                raise StoreError(
                    f"{self.uri}: {' and '.join(missing)} not set: {_CREDENTIALS_HINT}"
                )
            realm = os.environ.get(REALM_ENV, "").strip() or "production"
            count = self._count
            local = self._local
            sessions = self._http_sessions

            def new_session() -> Any:
                made = _counting_session(count, local)
                sessions.append(made)  # one append: atomic, whichever thread asks
                return made

            config = B2HttpApiConfig(http_session_factory=new_session)
            api = B2Api(
                InMemoryAccountInfo(),
                api_config=config,
                max_upload_workers=1,
                max_copy_workers=1,
                max_download_workers=1,
            )
            _mount_pool(api, self._pool_size)
            try:
                api.authorize_account(realm, key_id, key)
            except Exception as e:
                if isinstance(e, (b2e.Unauthorized, b2e.AccessDenied)):
                    raise StoreError(
                        f"{self.uri}: B2 refused the application key {key_id} "
                        f"({type(e).__name__}): {_CREDENTIALS_HINT}"
                    ) from None
                raise self._error(e, f"authorising key {key_id} at {realm}") from e
            self._api = api
            return api.session

    def _bucket(self) -> str:
        """The bucket's id, looked up once and only when a call needs it (uploads and
        listings; reads and HEADs go by name): a no-op push is then two requests. A key
        restricted to the bucket names it in its authorisation, which costs nothing."""
        self._session()
        with self._lock:
            if self._bucket_id:
                return self._bucket_id
            allowed: dict[str, Any] = self._api.account_info.get_allowed() or {}
            if allowed.get("bucketName") == self.uri.bucket and allowed.get("bucketId"):
                self._bucket_id = str(allowed["bucketId"])
                return self._bucket_id
            try:
                bucket = self._api.get_bucket_by_name(self.uri.bucket)
            except Exception as e:
                raise self._error(e, "looking up the bucket") from e
            self._bucket_id = str(bucket.id_)
            return self._bucket_id

    def _error(self, exc: BaseException, what: str) -> SnapdirError:
        """Translate a b2sdk or network exception into the snapdir hierarchy. The SDK
        exception, chained to the result, is masked in place
        (:func:`snapdir._redact.redact_exception`): a traceback prints it too."""
        if isinstance(exc, SnapdirError):
            return exc
        redact_exception(exc)
        where = f"{self.uri}: {what}"
        try:
            from b2sdk.v2 import exception as b2e
        except ImportError:  # pragma: no cover
            return StoreError(f"{where}: {type(exc).__name__}: {exc}")
        if isinstance(exc, (b2e.NonExistentBucket, b2e.BucketIdNotFound, b2e.RestrictedBucket)):
            return StoreError(
                f"{where}: the bucket {self.uri.bucket!r} does not exist or the key may not "
                f"use it ({exc})",
                code="STORE_NOT_FOUND",
            )
        if isinstance(exc, b2e.FileNotPresent) or _named(exc, "ResourceNotFound"):
            return NotFoundError(f"{where}: not found")
        if isinstance(exc, b2e.TooManyRequests):
            return TransientStoreError(f"{where}: {exc}", retry_after=exc.retry_after_seconds)
        if isinstance(exc, b2e.InvalidAuthToken):  # an expired upload token: ask again
            return TransientStoreError(f"{where}: {exc}")
        if isinstance(exc, (b2e.Unauthorized, b2e.AccessDenied)):
            return StoreError(f"{where}: access denied ({exc}): {_CREDENTIALS_HINT}")
        if isinstance(exc, b2e.B2Error) and (exc.should_retry_http() or exc.should_retry_upload()):
            return TransientStoreError(f"{where}: {exc}", retry_after=exc.retry_after_seconds)
        if isinstance(exc, b2e.UnknownError) and _is_network_error(exc.__context__):
            # b2sdk turns a response body cut short (ChunkedEncodingError) into UnknownError.
            return TransientStoreError(f"{where}: {exc}")
        if _is_network_error(exc):
            return TransientStoreError(f"{where}: {type(exc).__name__}: {exc}")
        return StoreError(f"{where}: {type(exc).__name__}: {exc}")

    # -- objects ----------------------------------------------------------------------------------

    async def has_object(self, checksum: str) -> bool:
        self._check_hex(checksum, "object checksum")
        key = self._key(object_key(checksum))
        return await to_thread(self._head, key, f"object {checksum}") is not None

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        """See :meth:`Store.put_object`. B2 has no conditional create and keeps every
        version, so an upload is preceded by a ``HEAD`` unless this store has just seen the
        key absent (a push lists the store first: then one request per object). With
        ``replace`` the ``HEAD`` only finds the version the upload supersedes (deleted
        afterwards, so one copy remains)."""
        self._check_hex(checksum, "object checksum")
        key = self._key(object_key(checksum))
        what = f"upload of object {checksum} from {source}"
        old: str | None = None
        if replace:
            head = await to_thread(self._head, key, what)
            old = head.get("x-bz-file-id") or None if head is not None else None
        elif not self._known_absent(key, checksum):
            sound, old = await to_thread(self._existing, key, checksum, size, what)
            if sound:
                return
        try:
            if size > self.large_file_threshold:
                await self._put_large(key, checksum, source, size, what)
            else:
                await to_thread(self._put_small, key, checksum, source, size, what)
        except BaseException as e:
            self._after_upload(key, ok=False, sent=not isinstance(e, (InFluxError, OSError)))
            raise
        self._after_upload(key, ok=True)
        if old is not None:
            await to_thread(self._delete_version, key, old)

    def _known_absent(self, key: str, checksum: str | None = None) -> bool:
        """Whether this store saw ``key`` absent within :attr:`absent_ttl` seconds (a HEAD
        that missed, or a listing of its shard or of every object that did not show it), and
        has not uploaded it, or tried to, since. Anything else is asked again."""
        now = time.monotonic()
        with self._memo_lock:
            if key in self._written or key in self._uncertain:
                return False
            missed = self._missed.get(key)
            if missed is not None and now - missed < self.absent_ttl:
                return True
            if checksum is None:
                return False
            for shard in (checksum[:3], ""):
                listed = self._listed.get(shard)
                fresh = listed is not None and now - listed[0] < self.absent_ttl
                if fresh and listed is not None and checksum not in listed[1]:
                    return True
        return False

    def _after_upload(self, key: str, *, ok: bool, sent: bool = True) -> None:
        """Remember an upload: done (the key exists now), or failed after its request may
        have reached B2 (ask before the next attempt, so a retry does not add a version)."""
        with self._memo_lock:
            self._missed.pop(key, None)
            if ok:
                self._written.add(key)
                self._uncertain.discard(key)
            elif sent:
                self._uncertain.add(key)

    def _remember_listing(self, shard: str, present: set[str]) -> None:
        now = time.monotonic()
        with self._memo_lock:
            for old in [s for s, (t, _) in self._listed.items() if now - t >= self.absent_ttl]:
                del self._listed[old]
            self._listed[shard] = (now, frozenset(present))

    async def list_objects(self, shard: str = "") -> set[str]:
        shard = check_shard(shard)
        found = set(await to_thread(self._list_hex, ".objects/", "objects", shard))
        self._remember_listing(shard, found)
        return found

    # -- manifests --------------------------------------------------------------------------------

    async def has_manifest(self, snapshot_id: str) -> bool:
        self._check_hex(snapshot_id, "snapshot id")
        key = self._key(manifest_key(snapshot_id))
        return await to_thread(self._head, key, f"manifest {snapshot_id}") is not None

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        self._check_hex(snapshot_id, "snapshot id")
        await to_thread(self._put_manifest, snapshot_id, text)

    async def list_manifests(self) -> list[str]:
        return sorted(await to_thread(self._list_hex, ".manifests/", "manifests"))

    async def aclose(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            with contextlib.suppress(Exception):
                api.session.raw_api.b2_http.session.close()
        _close_sessions(self._http_sessions)

    # -- blocking implementations (worker threads) --------------------------------------------

    def _head(self, key: str, what: str) -> dict[str, str] | None:
        """The headers of the newest version of ``key`` (``HEAD``), or None if absent."""
        session = self._session()
        try:
            headers = session.get_file_info_by_name(self.uri.bucket, key)
        except Exception as e:
            err = self._error(e, f"checking {what}")
            if isinstance(err, NotFoundError):
                self._bucket()  # a missing bucket is a StoreError, not an absent key
                with self._memo_lock:
                    self._missed[key] = time.monotonic()
                return None
            raise err from e
        return {str(k).lower(): str(v) for k, v in headers.items()}

    def _existing(self, key: str, checksum: str, size: int, what: str) -> tuple[bool, str | None]:
        """Before a put: whether the object is already there and sound (nothing to do), and
        otherwise the file id of a damaged version the new upload replaces (None: absent).
        The size must match; up to :attr:`verify_on_conflict_max` bytes the content is
        re-hashed too (cheap there, and it lets a put repair a damaged object)."""
        head = self._head(key, what)
        if head is None:
            return False, None
        if int(head.get("content-length", "-1")) == size:
            if size > self.verify_on_conflict_max:
                return True, None
            found = self._hash_remote(key, what)
            if found is None:
                return False, None
            if found[0] == checksum:
                return True, None
        _log.warning("%s: %s exists but is damaged; replacing it", self.uri, key)
        return False, head.get("x-bz-file-id") or None

    def _delete_version(self, key: str, file_id: str) -> None:
        """Remove the damaged version a repair replaced (best effort: the newest version,
        which readers get, is already the right one)."""
        session = self._session()
        try:
            session.delete_file_version(file_id, key)
        except Exception as e:
            _log.warning(
                "%s: could not delete the damaged version %s of %s: %s", self.uri, file_id, key, e
            )

    def _list_hex(self, rel_prefix: str, what: str, shard: str = "") -> list[str]:
        """Every 64-hex name under ``rel_prefix`` (keys that are not ours are skipped)."""
        session = self._session()
        prefix = self._key(rel_prefix)
        out: list[str] = []
        # Start at the prefix itself (what b2sdk's own listing does): equivalent for B2, and
        # the simulator stops at the first name before the prefix otherwise.
        listed = prefix + (shard + "/" if shard else "")
        start = listed
        bucket_id = self._bucket()
        try:
            while True:
                page = session.list_file_names(
                    bucket_id, start_file_name=start, max_file_count=10_000, prefix=listed
                )
                for item in page.get("files", []):
                    if item.get("action", "upload") != "upload":
                        continue
                    h = hex_from_key(str(item["fileName"])[len(prefix) :])
                    if h is not None:
                        out.append(h)
                start = page.get("nextFileName")
                if not start:
                    return out
        except Exception as e:
            raise self._error(e, f"listing {what}") from e

    def _put_small(self, key: str, checksum: str, source: str, size: int, what: str) -> None:
        session = self._session()
        with open_source(source, self.uri) as f:
            body = _UploadBody(f, size, checksum, source, self.uri)
            try:
                response = session.upload_file(
                    self._bucket(),
                    key,
                    len(body),
                    _CONTENT_TYPE,
                    _HEX_DIGITS_AT_END,
                    {},
                    body,
                )
            except Exception as e:
                if body.failure is not None:
                    raise body.failure from None
                raise self._error(e, what) from e
        if body.failure is not None:  # pragma: no cover - the request could not complete
            raise body.failure
        if not body.verified or response.get("contentSha1") != body.sha1:
            # The service stored something other than what was verified: remove it.
            self._delete_version(key, str(response.get("fileId", "")))
            raise TransientStoreError(f"{self.uri}: {what}: the service stored other bytes")

    def _part_size_for(self, size: int) -> int:
        minimum = 0
        with contextlib.suppress(Exception):
            minimum = int(self._api.account_info.get_absolute_minimum_part_size())
        part = max(self.part_size, minimum, -(-size // _MAX_PARTS))
        return part

    async def _put_large(self, key: str, checksum: str, source: str, size: int, what: str) -> None:
        """A B2 large file: parts read in order (BLAKE3 over exactly those bytes), uploaded
        ``part_concurrency`` at a time; finished only if the digest matches the key,
        cancelled on any failure (no unfinished large file is left behind)."""
        import anyio

        part_size = await to_thread(self._part_size_for, size)
        token = uuid.uuid4().hex
        f = await to_thread(open_source, source, self.uri)
        try:
            try:
                file_id, retried = await to_thread(self._start_large, key, token, what)
            except BaseException:
                # The start may have reached B2 with its answer lost (a reset response is
                # not retried by b2sdk): whatever this upload started is cancelled.
                with anyio.CancelScope(shield=True):
                    await to_thread(self._cancel_orphans, key, token)
                raise
            try:
                sha1s = await upload_parts(
                    SourceHasher(f, size, checksum, source, self.uri),
                    part_size,
                    lambda number, data: self._upload_part(file_id, number, data, what),
                    concurrency=self.part_concurrency,
                    buffers=self._part_buffers.get(),
                )
                await to_thread(self._finish_large, key, file_id, sha1s, what)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await to_thread(self._cancel_large, file_id)
                    if retried:
                        await to_thread(self._cancel_orphans, key, token)
                raise
            if retried:
                await to_thread(self._cancel_orphans, key, token)
        finally:
            f.close()

    def _start_large(self, key: str, token: str, what: str) -> tuple[str, bool]:
        """Start a large file tagged with this upload's ``token``; also say whether b2sdk
        had to send the request more than once (then an earlier attempt may have started
        a large file whose answer was lost: see :meth:`_cancel_orphans`)."""
        session = self._session()
        before = self._thread_requests()
        try:
            response = session.start_large_file(
                self._bucket(), key, _CONTENT_TYPE, {_UPLOAD_TOKEN: token}
            )
        except Exception as e:
            raise self._error(e, what) from e
        return str(response["fileId"]), self._thread_requests() - before > 1

    def _cancel_orphans(self, key: str, token: str) -> None:
        """Cancel every unfinished large file of ``key`` tagged with ``token``: attempts of
        this upload's ``b2_start_large_file`` whose answers were lost."""
        session = self._session()
        try:
            page = session.list_unfinished_large_files(
                self._bucket(), max_file_count=100, prefix=key
            )
        except Exception as e:
            _log.warning("%s: could not look for unfinished uploads of %s: %s", self.uri, key, e)
            return
        for item in page.get("files", []):
            info = item.get("fileInfo") or {}
            if item.get("fileName") == key and info.get(_UPLOAD_TOKEN) == token:
                self._cancel_large(str(item["fileId"]))

    def _upload_part(self, file_id: str, number: int, data: bytes, what: str) -> str:
        session = self._session()
        sha1 = hashlib.sha1(data).hexdigest()
        try:
            response = session.upload_part(file_id, number, len(data), sha1, data)
        except Exception as e:
            raise self._error(e, f"{what} (part {number})") from e
        if response.get("contentSha1") != sha1:  # pragma: no cover - B2 checks it itself
            raise TransientStoreError(f"{self.uri}: {what}: part {number} arrived damaged")
        return sha1

    def _finish_large(self, key: str, file_id: str, sha1s: list[str], what: str) -> None:
        session = self._session()
        try:
            session.finish_large_file(file_id, sha1s)
        except Exception as e:
            # The answer may have been lost after the file was finished (b2sdk then retries
            # and B2 no longer knows the unfinished file): if the name now is this very
            # file, the upload is done; its bytes were verified before the last part left.
            with contextlib.suppress(Exception):
                head = self._head(key, what)
                if head is not None and head.get("x-bz-file-id") == file_id:
                    return
            raise self._error(e, what) from e

    def _cancel_large(self, file_id: str) -> None:
        session = self._session()
        for _ in range(3):
            try:
                session.cancel_large_file(file_id)
                return
            except Exception as e:
                err = self._error(e, f"cancelling large file {file_id}")
                if isinstance(err, NotFoundError):
                    return  # already gone (finished or cancelled)
                if not isinstance(err, TransientStoreError):
                    break
        _log.warning(
            "%s: could not cancel the unfinished large file %s; a lifecycle rule "
            "(daysFromStartingToCancelingUnfinishedLargeFiles) will remove it",
            self.uri,
            file_id,
        )

    def _stream(self, key: str, what: str, sink: DownloadSink) -> None:
        """Download ``key`` into ``sink``. A stream that breaks is resumed with a ranged
        read of the same file id from ``sink.count``, up to :attr:`max_resumes` times in a
        row without progress; then the failure goes to the retry wrapper."""
        session = self._session()
        url = session.get_download_url_by_name(self.uri.bucket, key)
        total: int | None = None
        failures = 0
        while True:
            start = sink.count
            if total is not None and start >= total:
                return
            range_ = (start, total - 1) if total is not None and start > 0 else None
            try:
                with session.download_file_from_url(url, range_=range_) as response:
                    if total is None:
                        total = int(response.headers.get("Content-Length", "0"))
                        file_id = response.headers.get("x-bz-file-id")
                        if file_id:  # resume this very version, whatever happens to the name
                            url = session.get_download_url_by_id(file_id)
                    for chunk in response.iter_content(chunk_size=_READ_CHUNK):
                        sink.write(chunk)
                if sink.count < total:
                    raise _Truncated(f"the stream ended at byte {sink.count} of {total}")
                return
            except Exception as e:
                if sink.failure is not None:
                    raise sink.failure from None
                err = self._error(e, what)
                if isinstance(err, NotFoundError) and total is None:
                    self._bucket()  # a missing bucket is a StoreError, not an absent key
                if total is None or not isinstance(err, TransientStoreError):
                    raise err from e
                failures = 0 if sink.count > start else failures + 1
                if failures > self.max_resumes:
                    raise err from e
                _log.info("%s: %s broke at byte %d (%s); resuming", self.uri, what, sink.count, e)

    def _put_manifest(self, snapshot_id: str, text: str) -> None:
        key = self._key(manifest_key(snapshot_id))
        data = manifest_to_store(text, snapshot_id, f"{self.uri}: manifest {snapshot_id}")
        what = f"upload of manifest {snapshot_id}"
        # A push asked whether the manifest exists a moment ago: no need to ask again.
        head = None if self._known_absent(key) else self._head(key, what)
        old: str | None = None
        if head is not None:
            try:
                parse_stored_manifest(self._read_manifest(key, what), snapshot_id, str(self.uri))
                return  # already there and sound
            except NotFoundError:
                pass
            except HashMismatchError:
                old = head.get("x-bz-file-id")
        session = self._session()
        sha1 = hashlib.sha1(data).hexdigest()
        try:
            session.upload_file(
                self._bucket(), key, len(data), _MANIFEST_CONTENT_TYPE, sha1, {}, data
            )
        except Exception as e:
            self._after_upload(key, ok=False)
            raise self._error(e, what) from e
        self._after_upload(key, ok=True)
        if old:
            self._delete_version(key, old)

    # -- small keys (snapdir.stores._keys) ------------------------------------------------
    #
    # B2's native API has no create-only condition, and keeps every version of a name. The
    # fallback: upload, then list the name's versions; the *oldest* upload wins (B2 lists a
    # name's versions newest first, by the upload time it recorded, ties broken by file id
    # here). A writer whose upload is not the oldest deletes its own version and reports
    # that the key existed. Readers read the oldest version too, so a loser killed before
    # it could delete its version changes nothing anyone sees; ``delete_keys`` removes every
    # version. This relies on B2 recording an upload's time when the upload completes (the
    # moment it becomes listable): an upload that is listed later is never older than one
    # listed before. docs/design/gc.md discusses it.

    def _small_key(self, key: str, *, records_only: bool = True) -> str:
        return self._key(check_key(key, records_only=records_only))

    def _versions(self, full: str, what: str) -> list[dict[str, Any]]:
        """Every uploaded version of exactly ``full``, oldest first."""
        session = self._session()
        bucket_id = self._bucket()
        out: list[dict[str, Any]] = []
        start_name: str | None = full
        start_id: str | None = None
        try:
            while start_name == full:
                page = session.list_file_versions(
                    bucket_id, start_name, start_id, max_file_count=1000, prefix=full
                )
                for item in page.get("files", []):
                    if item.get("fileName") == full and item.get("action") == "upload":
                        out.append(item)
                start_name, start_id = page.get("nextFileName"), page.get("nextFileId")
        except Exception as e:
            raise self._error(e, what) from e
        out.sort(key=lambda v: (int(v.get("uploadTimestamp", 0)), str(v.get("fileId", ""))))
        return out

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        full = self._small_key(key)
        return await to_thread(self._put_if_absent, key, full, bytes(data))

    def _put_if_absent(self, key: str, full: str, data: bytes) -> bool:
        what = f"create of {key}"
        if self._versions(full, what):
            return False
        session = self._session()
        sha1 = hashlib.sha1(data).hexdigest()
        try:
            response = session.upload_file(
                self._bucket(), full, len(data), _CONTENT_TYPE, sha1, {}, data
            )
        except Exception as e:
            raise self._error(e, what) from e
        mine = str(response.get("fileId", ""))
        versions = self._versions(full, what)
        if versions and str(versions[0].get("fileId")) == mine:
            return True
        self._delete_version(full, mine)
        return False

    async def get_bytes(self, key: str, *, max_size: int) -> bytes:
        full = self._small_key(key)
        return await to_thread(self._get_bytes, key, full, max_size)

    def _get_bytes(self, key: str, full: str, max_size: int) -> bytes:
        what = f"read of {key}"
        versions = self._versions(full, what)
        if not versions:
            raise NotFoundError(f"{self.uri}: {key} not found")
        oldest = versions[0]
        if int(oldest.get("contentLength", 0)) > max_size:
            raise StoreError(
                f"{self.uri}: {key} is {oldest.get('contentLength')} bytes, more than the "
                f"{max_size} a record may have"
            )
        session = self._session()
        url = session.get_download_url_by_id(str(oldest["fileId"]))
        chunks: list[bytes] = []
        got = 0
        try:
            with session.download_file_from_url(url) as response:
                for chunk in response.iter_content(chunk_size=64 * 1024):
                    got += len(chunk)
                    if got > max_size:
                        raise StoreError(
                            f"{self.uri}: {key} is more than the {max_size} bytes allowed"
                        )
                    chunks.append(chunk)
        except StoreError:
            raise
        except Exception as e:
            raise self._error(e, what) from e
        data = b"".join(chunks)
        if hashlib.sha1(data).hexdigest() != oldest.get("contentSha1", ""):
            raise TransientStoreError(f"{self.uri}: {what}: the bytes read do not match B2's SHA-1")
        return data

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        return await to_thread(self._list_keys, check_prefix(prefix))

    def _list_keys(self, prefix: str) -> list[KeyInfo]:
        session = self._session()
        base = self._key("")
        listed = self._key(prefix)
        start: str | None = listed
        out: list[KeyInfo] = []
        bucket_id = self._bucket()
        try:
            while start:
                page = session.list_file_names(
                    bucket_id, start_file_name=start, max_file_count=10_000, prefix=listed
                )
                for item in page.get("files", []):
                    if item.get("action", "upload") != "upload":
                        continue
                    rel = str(item["fileName"])[len(base) :]
                    try:
                        check_key(rel, records_only=False)
                    except InvalidArgumentError:
                        continue
                    when = datetime.fromtimestamp(
                        int(item.get("uploadTimestamp", 0)) / 1000, timezone.utc
                    )
                    out.append(KeyInfo(rel, int(item.get("contentLength", 0)), when))
                start = page.get("nextFileName")
        except Exception as e:
            raise self._error(e, f"listing {prefix}") from e
        return out

    async def delete_keys(self, keys: Sequence[str]) -> None:
        fulls = [(k, self._small_key(k, records_only=False)) for k in keys]
        await to_thread(self._delete_keys, fulls)

    def _delete_keys(self, fulls: list[tuple[str, str]]) -> None:
        """Every version of each name (B2 keeps them all); a name already gone is no
        error."""
        session = self._session()
        for key, full in fulls:
            for version in self._versions(full, f"delete of {key}"):
                try:
                    session.delete_file_version(str(version["fileId"]), full)
                except Exception as e:
                    err = self._error(e, f"delete of {key}")
                    if isinstance(err, NotFoundError):
                        continue
                    raise err from e

    async def store_time(self) -> datetime:
        return await to_thread(self._store_time)

    def _store_time(self) -> datetime:
        """The ``Date`` of the service's answer to a one-name listing."""
        session = self._session()
        bucket_id = self._bucket()
        self._local.date = None
        try:
            session.list_file_names(bucket_id, max_file_count=1, prefix=self._key(RECORDS))
        except Exception as e:
            raise self._error(e, "asking the time") from e
        date = getattr(self._local, "date", None)
        if not date:
            raise StoreError(f"{self.uri}: the service's answer carried no Date header")
        return parsedate_to_datetime(date).astimezone(timezone.utc)


# -- streams ------------------------------------------------------------------------------------


class _Abort(OSError):
    """Raised inside an upload's body read to cut the request short. An ``OSError``, so the
    HTTP stack treats it as a dead connection (b2sdk would log any other exception as
    unexpected); the store then raises the reader's ``failure`` instead."""


class _UploadBody:
    """The body of a ``b2_upload_file`` request: the file's ``size`` bytes through an
    :class:`~snapdir.stores._streams.UploadReader` (BLAKE3 over exactly the bytes handed
    over; the read that would hand over the last ones is refused unless they match), SHA-1
    over the same bytes, then that SHA-1 as 40 hex digits (``hex_digits_at_end``).

    A refused read raises :class:`_Abort`, so the request dies short of its
    ``Content-Length`` and B2 stores nothing; the reader's error is in :attr:`failure`. Every
    rewind to 0 (b2sdk seeks there before sending) starts a new pass, hashed from scratch
    and verified again; no other seek is possible.
    """

    def __init__(self, f: BinaryIO, size: int, checksum: str, source: str, uri: str) -> None:
        self._reader = UploadReader(f, size, checksum, source, uri)
        self._size = size
        self._source = source
        self._pos = 0
        self._sha1 = hashlib.sha1()
        self._tail = b""
        #: The SHA-1 of the file, once every byte was read and verified.
        self.sha1 = ""

    @property
    def verified(self) -> bool:
        return self._reader.verified

    @property
    def failure(self) -> SnapdirError | None:
        """The error the body raised (the HTTP stack wraps it; the store raises this one)."""
        return self._reader.failure

    def __len__(self) -> int:
        return self._size + 40

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset != 0:
            if whence == os.SEEK_CUR and offset == 0:
                return self._pos
            raise OSError(f"upload of {self._source}: only a rewind to 0 is possible")
        self._reader.seek(0)
        self._pos = 0
        self._sha1 = hashlib.sha1()
        self._tail = b""
        self.sha1 = ""
        return 0

    def read(self, n: int | None = -1) -> bytes:
        total = self._size + 40
        want = total - self._pos if n is None or n < 0 else min(n, total - self._pos)
        out = b""
        if self._pos < self._size or not self._tail:  # the file (or an empty one to verify)
            try:
                out = self._reader.read(min(want, self._size - self._pos))
            except SnapdirError as e:
                raise _Abort(str(e)) from None
            self._sha1.update(out)
            want -= len(out)
            if self._reader.verified and not self._tail:
                self.sha1 = self._sha1.hexdigest()
                self._tail = self.sha1.encode("ascii")
        if want > 0:
            at = self._pos + len(out) - self._size
            out += self._tail[at : at + want]
        self._pos += len(out)
        return out


class _Truncated(ConnectionError):
    """The body ended before its ``Content-Length`` without an error from the stack."""


# -- helpers ------------------------------------------------------------------------------------


def _close_sessions(sessions: list[Any]) -> None:
    """Close and forget ``sessions`` (a store's HTTP sessions, see ``B2Store.__init__``)."""
    while sessions:
        with contextlib.suppress(Exception):
            sessions.pop().close()


def _counting_session(count: Callable[[], None], local: threading.local) -> Any:
    """A ``requests.Session`` that counts the requests it sends (b2sdk's own retries
    included: each is a request the service sees), and notes in ``local.date`` the ``Date``
    of the calling thread's last answer (the store's clock, see ``store_time``)."""
    import requests

    class _CountingSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override,unused-ignore]
            count()
            response = super().request(*args, **kwargs)
            local.date = response.headers.get("Date")
            return response

    return _CountingSession()


def _mount_pool(api: Any, size: int) -> None:
    """Give b2sdk's HTTP session a pool of ``size`` connections per host (the default 10
    would open and drop connections when more threads upload at once)."""
    with contextlib.suppress(AttributeError):
        session = api.session.raw_api.b2_http.session
        for prefix, adapter in list(session.adapters.items()):
            session.mount(prefix, type(adapter)(pool_connections=4, pool_maxsize=size))


def _named(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is an instance of a class called ``name``: b2sdk raises 404s as
    ``ResourceNotFound`` subclasses that ``b2sdk.v2.exception`` does not export."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def _is_network_error(exc: BaseException | None) -> bool:
    import http.client

    import requests
    import urllib3.exceptions

    return isinstance(
        exc,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ),
    )
