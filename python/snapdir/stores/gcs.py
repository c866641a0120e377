"""``gs://bucket/prefix``: a store on Google Cloud Storage, through google-cloud-storage.

The layout and the guarantees are those of every store (SPEC §4, :mod:`snapdir.stores._base`).
How this backend keeps them:

* **Create-only writes.** Objects and manifests are created with ``ifGenerationMatch=0``: GCS
  refuses to replace an existing name (412), so two pushers of one object never overwrite each
  other, and a retried upload that had in fact succeeded is recognised. After a 412 the
  existing object is checked (its size; up to :attr:`GcsStore.verify_on_conflict_max` bytes
  also its hash) and, when it is damaged, replaced conditionally on exactly the generation
  that was checked. ``put_object(..., replace=True)`` (what ``push --repair`` does for the
  objects it found damaged) uploads with no precondition, so a damaged object of the right
  size is mended too.
* **The bytes sent are the bytes hashed.** The SDK reads the source through an
  :class:`~snapdir.stores._streams.UploadReader`, which hashes (BLAKE3) what it hands over
  and refuses, by raising, the
  read that would hand over the last bytes when the hash is not the key. An object up to
  :attr:`GcsStore.resumable_threshold` goes in one multipart request, which is then never
  sent; a larger one goes as a resumable upload in :attr:`GcsStore.chunk_size` pieces, whose
  final piece is never sent, so the upload is never finalised and nothing becomes visible (the
  session is cancelled). Bytes the SDK re-reads after a failed chunk are served from memory,
  never read again from a file that may have changed.
* **Downloads are verified** while they stream to disk; a stream that breaks is resumed with a
  ranged read from the offset reached instead of starting over.
* **One place retries.** SDK retries are switched off (``retry=None``); throttling, 5xx answers
  and network failures are raised as :class:`TransientStoreError` for
  :class:`~snapdir.stores._wrappers.RetryingStore`. The only loops here keep progress the
  wrapper would throw away: recovering a resumable upload and resuming a download.

The SDK is imported on first use (``pip install 'snapdir[gcs]'``). ``STORAGE_EMULATOR_HOST``
(the SDK's own variable) points the store at an emulator, with anonymous credentials;
otherwise Google Application Default Credentials are used — unless a service-account key
was handed over for the bucket (:func:`use_service_account`: what ``snapdir login``
kept), which is then used in both cases.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from .._errors import (
    HashMismatchError,
    InvalidArgumentError,
    NotFoundError,
    SnapdirError,
    StoreError,
)
from .._redact import LOG_FILTER, redact_exception
from .._types import StoreUri
from ._base import (
    Capability,
    TransientStoreError,
    check_shard,
    hex_from_key,
    manifest_key,
    object_key,
    parse_retry_after,
    to_thread,
)
from ._keys import KeyInfo, check_key, check_prefix
from ._streams import (
    DownloadSink,
    StreamingStore,
    UploadReader,
    hash_streamed,
    manifest_to_store,
    open_source,
    parse_stored_manifest,
)

__all__ = ["EMULATOR_ENV", "GcsStore", "use_service_account"]

_log = logging.getLogger("snapdir.stores")
_log.addFilter(LOG_FILTER)  # no secret in a log line (see snapdir._redact)

MiB = 1024 * 1024
#: The environment variable google-cloud-storage reads for an emulator endpoint.
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: Resumable chunks must be multiples of this (GCS rule).
_CHUNK_MULTIPLE = 256 * 1024
#: The SDK sends a single multipart request up to this size, whatever we ask.
_SDK_MULTIPART_MAX = 8 * MiB
_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
_CONTENT_TYPE = "application/octet-stream"
_MANIFEST_CONTENT_TYPE = "text/plain; charset=utf-8"
#: (connect, read) seconds for each request.
_TIMEOUT = (30.0, 120.0)
_CREDENTIALS_HINT = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
    "or run `gcloud auth application-default login`"
)


#: Service-account keys for buckets, by bucket name, put here by the layer that read them
#: from the OS keyring (``snapdir login gs://bucket``): the store layer never reads a keyring
#: itself. In memory only, for this process; never written out or printed.
_SERVICE_ACCOUNTS: dict[str, dict[str, Any]] = {}


def use_service_account(bucket: str, info: dict[str, Any] | None) -> None:
    """Use the service-account key ``info`` (the parsed JSON key file) for every store of
    ``bucket`` this process opens from now on, instead of Application Default Credentials
    (and instead of anonymous access to an emulator, so that a kept key can be tried
    against one); None forgets it."""
    if info is None:
        _SERVICE_ACCOUNTS.pop(bucket, None)
    else:
        _SERVICE_ACCOUNTS[bucket] = dict(info)


class GcsStore(StreamingStore):
    """A snapdir store in a Google Cloud Storage bucket (``gs://bucket/prefix``).

    Opening is cheap: the client, and with it the credentials lookup, is created on the first
    operation. ``endpoint`` overrides ``STORAGE_EMULATOR_HOST``; ``resumable_threshold`` and
    ``chunk_size`` tune when and how large objects are uploaded in pieces (tests lower them).
    """

    capabilities = Capability.LIST_OBJECTS | Capability.CONDITIONAL_PUT | Capability.KEYS

    #: Objects larger than this are sent as resumable uploads (capped at the SDK's 8 MiB
    #: multipart limit). Smaller ones are read into memory and sent in one request.
    resumable_threshold: int = _SDK_MULTIPART_MAX
    #: Size of each resumable upload request; a multiple of 256 KiB. Also the memory each
    #: running large upload holds.
    chunk_size: int = 16 * MiB
    #: Consecutive broken download streams without progress that are resumed before the
    #: failure goes to the retry wrapper.
    max_resumes: int = 3
    #: After a 412, an existing object up to this size is downloaded and hashed before it is
    #: accepted (larger ones: the size must match).
    verify_on_conflict_max: int = 16 * MiB

    def __init__(
        self,
        uri: StoreUri | str,
        *,
        endpoint: str | None = None,
        resumable_threshold: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        uri = StoreUri(uri)
        if uri.scheme != "gs":
            raise InvalidArgumentError(f"{uri} is not a gs:// store URI", code="INVALID_STORE")
        super().__init__(uri)
        self._endpoint = endpoint
        if resumable_threshold is not None:
            self.resumable_threshold = resumable_threshold
        if chunk_size is not None:
            if chunk_size <= 0 or chunk_size % _CHUNK_MULTIPLE:
                raise InvalidArgumentError(
                    f"chunk_size must be a positive multiple of 256 KiB, not {chunk_size}",
                    code="INVALID_ARGUMENT",
                )
            self.chunk_size = chunk_size
        self._lock = threading.Lock()
        self._bucket: Any = None
        self._session: Any = None
        self._pool_size = 32
        self._emulated = False
        self._bucket_seen = False

    def __repr__(self) -> str:
        return f"GcsStore({str(self.uri)!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def set_max_concurrency(self, jobs: int) -> None:
        """Size the HTTP connection pool for ``jobs`` concurrent calls (a hint from
        :class:`~snapdir.stores._wrappers.LimitedStore`), so connections are reused instead
        of being opened and dropped when more threads run than the default pool holds."""
        self._pool_size = max(10, jobs)
        if self._session is not None:
            _mount_pool(self._session, self._pool_size)

    def _connect(self) -> Any:
        """The SDK bucket handle, created once (credentials are looked up here, not in
        ``__init__``, so opening a store sends nothing and needs no credentials)."""
        with self._lock:
            if self._bucket is not None:
                return self._bucket
            try:
                from google.auth.credentials import AnonymousCredentials
                from google.cloud import storage  # type: ignore[import-untyped,unused-ignore]
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise StoreError(
                    f"the gs:// store needs google-cloud-storage ({e.name} is missing): "
                    "pip install 'snapdir[gcs]'"
                ) from e
            endpoint = self._endpoint or os.environ.get(EMULATOR_ENV)
            credentials: Any
            project: str | None
            client_options: dict[str, str] | None = None
            self._emulated = bool(endpoint)
            kept = _SERVICE_ACCOUNTS.get(self.uri.bucket)
            if endpoint:
                if "://" not in endpoint:
                    endpoint = "http://" + endpoint
                credentials = AnonymousCredentials()  # type: ignore[no-untyped-call,unused-ignore]
                project = os.environ.get("GOOGLE_CLOUD_PROJECT") or "snapdir"
                client_options = {"api_endpoint": endpoint}
            else:
                credentials, project = None, None
            if kept is not None:
                credentials = self._service_account(kept)
                project = project or kept.get("project_id") or None
            elif credentials is None:
                credentials, project = self._default_credentials()
            session = _counting_session(credentials, self._count)
            _mount_pool(session, self._pool_size)
            client = storage.Client(
                project=project,
                credentials=credentials,
                _http=session,
                client_options=client_options,
            )
            if getattr(client, "_bucket_metadata_cache", None) is not None:
                # Newer SDKs fetch bucket metadata for tracing in background threads (on
                # the first call, and after every 404: each has_object miss). Requests this
                # store neither needs nor can count reliably; off.
                client._bucket_metadata_cache = None
            self._session = session
            self._bucket = client.bucket(self.uri.bucket)
            return self._bucket

    def _service_account(self, info: dict[str, Any]) -> Any:
        """Credentials from a kept service-account key. A key that does not load is
        reported without the library's message, which could quote the key."""
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call,unused-ignore]
                info, scopes=list(_SCOPES)
            )
        except Exception:
            raise StoreError(
                f"{self.uri}: the service-account key kept for gs://{self.uri.bucket} could "
                "not be loaded: run `snapdir login` again with a valid key file"
            ) from None

    def _default_credentials(self) -> tuple[Any, str | None]:
        import google.auth
        import google.auth.exceptions

        try:
            credentials, project = google.auth.default(scopes=list(_SCOPES))
        except google.auth.exceptions.DefaultCredentialsError:
            path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
            where = f" (GOOGLE_APPLICATION_CREDENTIALS={path} could not be used)" if path else ""
            # ``from None``: the SDK's message may quote a key file; it is named above instead.
            raise StoreError(
                f"{self.uri}: no usable Google Cloud credentials{where}: {_CREDENTIALS_HINT}"
            ) from None
        return credentials, project

    def _error(self, exc: BaseException, what: str, *, keyless: bool = False) -> SnapdirError:
        """Translate an SDK or network exception into the snapdir hierarchy (see module
        docstring): 404 -> NotFoundError, throttling/5xx/network -> TransientStoreError.
        ``keyless``: the call (a listing, an upload) cannot miss a key, so a 404 means the
        bucket is missing. The SDK exception, chained to the result, is masked in place
        (:func:`snapdir._redact.redact_exception`): a traceback prints it too."""
        if isinstance(exc, SnapdirError):
            return exc
        redact_exception(exc)
        where = f"{self.uri}: {what}"
        status = _status(exc)
        if status == 404 and keyless:
            return StoreError(
                f"{where}: the bucket {self.uri.bucket!r} does not exist (or the credentials "
                "cannot see it)",
                code="STORE_NOT_FOUND",
            )
        if status == 404:
            return NotFoundError(f"{where}: not found")
        if status in (401, 403):
            return StoreError(
                f"{where}: access denied (HTTP {status}); the credentials need "
                f"roles/storage.objectAdmin on bucket {self.uri.bucket}, or {_CREDENTIALS_HINT}"
            )
        if status is not None and (status in (408, 429) or status >= 500):
            return TransientStoreError(
                f"{where}: HTTP {status} {_reason(exc)}".rstrip(),
                retry_after=_retry_after(exc),
            )
        if _is_network_error(exc):
            return TransientStoreError(f"{where}: {type(exc).__name__}: {exc}")
        if _is_refresh_error(exc):
            return StoreError(
                f"{where}: the credentials could not be refreshed: {_CREDENTIALS_HINT}"
            )
        code = f"HTTP {status} " if status is not None else ""
        return StoreError(f"{where}: {code}{type(exc).__name__}: {exc}")

    # -- objects ------------------------------------------------------------------------------

    async def has_object(self, checksum: str) -> bool:
        self._check_hex(checksum, "object checksum")
        return await to_thread(self._exists, object_key(checksum), f"object {checksum}")

    async def put_object(
        self, checksum: str, source: str, size: int, *, replace: bool = False
    ) -> None:
        self._check_hex(checksum, "object checksum")
        await to_thread(self._put_object, checksum, source, size, replace)

    async def list_objects(self, shard: str = "") -> set[str]:
        return set(await to_thread(self._list_hex, ".objects/", "objects", check_shard(shard)))

    # -- manifests ----------------------------------------------------------------------------

    async def has_manifest(self, snapshot_id: str) -> bool:
        self._check_hex(snapshot_id, "snapshot id")
        return await to_thread(self._exists, manifest_key(snapshot_id), f"manifest {snapshot_id}")

    async def put_manifest(self, snapshot_id: str, text: str) -> None:
        self._check_hex(snapshot_id, "snapshot id")
        await to_thread(self._put_manifest, snapshot_id, text)

    async def list_manifests(self) -> list[str]:
        return sorted(await to_thread(self._list_hex, ".manifests/", "manifests"))

    async def aclose(self) -> None:
        with self._lock:
            session, self._session, self._bucket = self._session, None, None
        if session is not None:
            session.close()

    # -- blocking implementations (worker threads) --------------------------------------------

    def _exists(self, rel: str, what: str) -> bool:
        bucket = self._connect()
        try:
            found = bool(bucket.blob(self._key(rel)).exists(timeout=_TIMEOUT, retry=None))
        except Exception as e:
            raise self._error(e, f"checking {what}") from e
        if not found:
            self._confirm_bucket()
        return found

    def _confirm_bucket(self) -> None:
        """After a key was not found: make sure the bucket is there, so that a missing (or
        mistyped) bucket is a StoreError naming it, not an empty store. GCS answers 404 for
        both and the SDK's ``exists`` hides which; a one-key listing tells them apart (it
        needs only ``storage.objects.list``). Once per store: a listing or an upload that
        succeeded proves the bucket as well."""
        if self._bucket_seen:
            return
        bucket = self._connect()
        try:
            blobs = bucket.client.list_blobs(
                bucket,
                prefix=self._key(".manifests/"),
                max_results=1,
                fields="items(name)",
                timeout=_TIMEOUT,
                retry=None,
            )
            for _ in blobs:
                pass
        except Exception as e:
            raise self._error(e, "checking the bucket", keyless=True) from e
        self._bucket_seen = True

    def _list_hex(self, rel_prefix: str, what: str, shard: str = "") -> list[str]:
        """Every 64-hex name under ``rel_prefix`` (keys that are not ours are skipped)."""
        bucket = self._connect()
        prefix = self._key(rel_prefix)
        out: list[str] = []
        try:
            blobs = bucket.client.list_blobs(
                bucket,
                prefix=prefix + (shard + "/" if shard else ""),
                fields="items(name),nextPageToken",
                timeout=_TIMEOUT,
                retry=None,
            )
            for blob in blobs:
                h = hex_from_key(blob.name[len(prefix) :])
                if h is not None:
                    out.append(h)
        except Exception as e:
            raise self._error(e, f"listing {what}", keyless=True) from e
        self._bucket_seen = True
        return out

    def _put_object(self, checksum: str, source: str, size: int, replace: bool = False) -> None:
        bucket = self._connect()
        key = self._key(object_key(checksum))
        what = f"upload of object {checksum} from {source}"
        generation: int | None = None if replace else 0  # no precondition, or create only
        for _ in range(3):
            if self._upload_file(bucket, key, checksum, source, size, generation, what):
                return
            # 412: the key exists (a racing or earlier push, or our own retried request).
            sound, generation = self._existing_is_sound(bucket, key, checksum, size, what)
            if sound:
                return
            _log.warning("%s: %s exists but is damaged; replacing it", self.uri, key)
        raise TransientStoreError(f"{self.uri}: {what}: the key kept changing while writing")

    def _upload_file(
        self,
        bucket: Any,
        key: str,
        checksum: str,
        source: str,
        size: int,
        generation: int | None,
        what: str,
    ) -> bool:
        """One upload attempt of ``source``, created only if the live generation is
        ``generation`` (0: absent; None: whatever it is). False on 412 (precondition
        failed)."""
        with open_source(source, self.uri) as f:
            reader = UploadReader(f, size, checksum, source, self.uri, replay=True)
            try:
                if size <= min(self.resumable_threshold, _SDK_MULTIPART_MAX):
                    bucket.blob(key).upload_from_file(
                        reader,
                        size=size,
                        content_type=_CONTENT_TYPE,
                        if_generation_match=generation,
                        checksum="auto",
                        timeout=_TIMEOUT,
                        retry=None,
                    )
                else:
                    self._put_resumable(bucket, key, reader, size, generation, what)
            except Exception as e:
                if reader.failure is not None:
                    raise reader.failure from None
                if _status(e) == 412:
                    return False
                raise self._error(e, what, keyless=True) from e
        if not reader.verified:  # pragma: no cover - the SDK always reads to the end
            raise StoreError(f"{self.uri}: {what}: the SDK did not read the whole file")
        self._bucket_seen = True
        return True

    def _existing_is_sound(
        self, bucket: Any, key: str, checksum: str, size: int, what: str
    ) -> tuple[bool, int]:
        """Whether the object under ``key`` is the right one, and its generation (0 if it
        vanished meanwhile). The size must match; up to :attr:`verify_on_conflict_max`
        bytes it is also re-hashed (cheap there, and it lets a put repair a damaged one)."""
        try:
            blob = bucket.get_blob(key, timeout=_TIMEOUT, retry=None)
        except Exception as e:
            raise self._error(e, what) from e
        if blob is None:
            return False, 0
        generation = int(blob.generation)
        if blob.size != size:
            return False, generation
        if size > self.verify_on_conflict_max:
            return True, generation
        found = self._hash_remote(key, what, generation)
        if found is None:
            return False, 0
        return found[0] == checksum, generation

    def _put_resumable(
        self,
        bucket: Any,
        key: str,
        reader: UploadReader,
        size: int,
        generation: int | None,
        what: str,
    ) -> None:
        """A resumable upload driven chunk by chunk; a failed upload's session is cancelled.

        ``Blob._initiate_resumable_upload`` is the SDK's own first half of
        ``upload_from_file``; calling it directly is what allows a threshold below the SDK's
        fixed 8 MiB, the cancel, and the check below. A chunk that fails with a transient
        error is re-sent from memory by the SDK (see :func:`_chunk_retry`): the bytes of a
        chunk are read from the file once. The session status query (``recover``) is not
        used: fake-gcs-server finalises a partial upload when asked for its status.
        """
        blob = bucket.blob(key)
        upload, transport = blob._initiate_resumable_upload(
            bucket.client,
            reader,
            _CONTENT_TYPE,
            size,
            if_generation_match=generation,
            chunk_size=self.chunk_size,
            checksum="auto",
            timeout=_TIMEOUT,
            retry=_chunk_retry(after_connection_errors=not self._emulated),
        )
        try:
            while not upload.finished:
                upload.transmit_next_chunk(transport, timeout=_TIMEOUT)
        except BaseException as e:
            if not upload.finished:
                with contextlib.suppress(Exception):
                    transport.delete(upload.resumable_url, timeout=_TIMEOUT)
            elif type(e).__name__ == "DataCorruption":
                # Finalised, but the service's CRC32C of what it stored differs from ours
                # (bytes damaged on the way). The answer names the generation this upload
                # created, so deleting exactly it is safe; the retry wrapper uploads again.
                self._delete_generation(bucket, key, getattr(e, "response", None))
                raise TransientStoreError(
                    f"{self.uri}: {what}: the service stored different bytes than were sent"
                ) from e
            raise

    def _delete_generation(self, bucket: Any, key: str, response: Any) -> None:
        with contextlib.suppress(Exception):
            generation = int(response.json()["generation"])
            bucket.blob(key).delete(if_generation_match=generation, timeout=_TIMEOUT, retry=None)

    def _stream(
        self, key: str, what: str, sink: DownloadSink, generation: int | None = None
    ) -> None:
        """Download ``key`` into ``sink`` (which hashes and counts). A stream that breaks
        is resumed with a ranged read from ``sink.count``, up to :attr:`max_resumes` times
        in a row without progress; then the failure goes to the retry wrapper. An error
        answer before any byte goes there at once (it backs off and honours Retry-After)."""
        blob = self._connect().blob(key)
        failures = 0
        while True:
            start = sink.count
            try:
                blob.download_to_file(
                    sink,
                    start=start or None,
                    raw_download=True,
                    checksum=None,
                    if_generation_match=generation,
                    timeout=_TIMEOUT,
                    retry=None,
                )
                return
            except Exception as e:
                if sink.failure is not None:
                    raise sink.failure from None
                status = _status(e)
                if start > 0 and status == 416:
                    return  # the stream broke after its last byte: all is here
                if status == 404 and sink.count == 0:
                    self._confirm_bucket()
                if not _worth_resuming(e) or (sink.count == 0 and status is not None):
                    raise self._error(e, what) from e
                failures = 0 if sink.count > start else failures + 1
                if failures > self.max_resumes:
                    raise self._error(e, what) from e
                _log.info("%s: %s broke at byte %d (%s); resuming", self.uri, what, sink.count, e)
                if failures:
                    time.sleep(_backoff(failures, _retry_after(e)))

    def _hash_remote(
        self, key: str, what: str, generation: int | None = None
    ) -> tuple[str, int] | None:
        """(BLAKE3, size) of the object under ``key``, streamed; None if it is absent."""
        return hash_streamed(functools.partial(self._stream, key, what, generation=generation))

    def _put_manifest(self, snapshot_id: str, text: str) -> None:
        bucket = self._connect()
        key = self._key(manifest_key(snapshot_id))
        data = manifest_to_store(text, snapshot_id, f"{self.uri}: manifest {snapshot_id}")
        what = f"upload of manifest {snapshot_id}"
        generation = 0
        for _ in range(3):
            try:
                bucket.blob(key).upload_from_string(
                    data,
                    content_type=_MANIFEST_CONTENT_TYPE,
                    if_generation_match=generation,
                    checksum="auto",
                    timeout=_TIMEOUT,
                    retry=None,
                )
                return
            except Exception as e:
                if _status(e) != 412:
                    raise self._error(e, what, keyless=True) from e
            # It exists. Keep it if it verifies; otherwise replace exactly that generation
            # (a damaged manifest would make the snapshot unreadable for good).
            try:
                blob = bucket.get_blob(key, timeout=_TIMEOUT, retry=None)
                if blob is None:
                    generation = 0
                    continue
                existing = blob.download_as_bytes(
                    raw_download=True, checksum=None, timeout=_TIMEOUT, retry=None
                )
            except Exception as e:
                raise self._error(e, what) from e
            try:
                parse_stored_manifest(existing, snapshot_id, str(self.uri))
                return
            except HashMismatchError:
                generation = int(blob.generation)
        raise TransientStoreError(f"{self.uri}: {what}: the key kept changing while writing")

    # -- small keys (snapdir.stores._keys) ------------------------------------------------
    def _small_key(self, key: str, *, records_only: bool = True) -> str:
        return self._key(check_key(key, records_only=records_only))

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        full = self._small_key(key)
        return await to_thread(self._put_if_absent, key, full, bytes(data))

    def _put_if_absent(self, key: str, full: str, data: bytes) -> bool:
        """``ifGenerationMatch=0``: the upload succeeds only if no live generation of the
        key exists (412 otherwise)."""
        bucket = self._connect()
        try:
            bucket.blob(full).upload_from_string(
                data,
                content_type=_CONTENT_TYPE,
                if_generation_match=0,
                checksum="auto",
                timeout=_TIMEOUT,
                retry=None,
            )
        except Exception as e:
            if _status(e) == 412:
                return False
            raise self._error(e, f"create of {key}", keyless=True) from e
        self._bucket_seen = True
        return True

    async def get_bytes(self, key: str, *, max_size: int) -> bytes:
        full = self._small_key(key)
        return await to_thread(self._get_bytes, key, full, max_size)

    def _get_bytes(self, key: str, full: str, max_size: int) -> bytes:
        bucket = self._connect()
        what = f"read of {key}"
        try:
            blob = bucket.get_blob(full, timeout=_TIMEOUT, retry=None)
        except Exception as e:
            raise self._error(e, what) from e
        if blob is None:
            self._confirm_bucket()
            raise NotFoundError(f"{self.uri}: {key} not found")
        if blob.size is not None and int(blob.size) > max_size:
            raise StoreError(
                f"{self.uri}: {key} is {blob.size} bytes, more than the {max_size} a record "
                "may have"
            )
        try:
            # That very generation, and never more than max_size + 1 bytes.
            data = blob.download_as_bytes(
                start=0,
                end=max_size,
                if_generation_match=blob.generation,
                raw_download=True,
                checksum=None,
                timeout=_TIMEOUT,
                retry=None,
            )
        except Exception as e:
            raise self._error(e, what) from e
        if len(data) > max_size:
            raise StoreError(f"{self.uri}: {key} is more than the {max_size} bytes allowed")
        return bytes(data)

    async def list_keys(self, prefix: str) -> list[KeyInfo]:
        return await to_thread(self._list_keys, check_prefix(prefix))

    def _list_keys(self, prefix: str) -> list[KeyInfo]:
        bucket = self._connect()
        base = self._key("")
        out: list[KeyInfo] = []
        try:
            blobs = bucket.client.list_blobs(
                bucket,
                prefix=self._key(prefix),
                fields="items(name,size,updated),nextPageToken",
                timeout=_TIMEOUT,
                retry=None,
            )
            for blob in blobs:
                rel = str(blob.name)[len(base) :]
                try:
                    check_key(rel, records_only=False)
                except InvalidArgumentError:
                    continue  # not one of ours
                out.append(KeyInfo(rel, int(blob.size or 0), blob.updated))
        except Exception as e:
            raise self._error(e, f"listing {prefix}", keyless=True) from e
        self._bucket_seen = True
        return out

    async def delete_keys(self, keys: Sequence[str]) -> None:
        fulls = [(k, self._small_key(k, records_only=False)) for k in keys]
        await to_thread(self._delete_keys, fulls)

    def _delete_keys(self, fulls: list[tuple[str, str]]) -> None:
        """One DELETE per key (a key already gone counts as deleted)."""
        bucket = self._connect()
        for key, full in fulls:
            try:
                bucket.delete_blob(full, timeout=_TIMEOUT, retry=None)
            except Exception as e:
                if _status(e) == 404:
                    continue
                raise self._error(e, f"delete of {key}") from e

    async def store_time(self) -> datetime:
        return await to_thread(self._store_time)

    def _store_time(self) -> datetime:
        """The ``Date`` header of the service's answer to a bucket lookup."""
        bucket = self._connect()
        client = bucket.client
        url = f"{client._connection.API_BASE_URL}/storage/v1/b/{self.uri.bucket}?fields=name"
        try:
            response = self._session.get(url, timeout=_TIMEOUT)
        except Exception as e:
            raise self._error(e, "asking the time") from e
        status = int(response.status_code)
        if status in (408, 429) or status >= 500:
            raise TransientStoreError(
                f"{self.uri}: asking the time: HTTP {status}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        date = response.headers.get("Date")
        if status >= 400 or not date:
            raise StoreError(
                f"{self.uri}: asking the time: HTTP {status} "
                f"{'without a Date header' if not date else ''}".rstrip()
            )
        return parsedate_to_datetime(date).astimezone(timezone.utc)


# -- helpers ------------------------------------------------------------------------------------


def _counting_session(credentials: Any, count: Callable[[], None]) -> Any:
    """An ``AuthorizedSession`` that counts the requests it sends (token refreshes go
    through a separate transport and are not counted: they are not storage requests)."""
    from google.auth.transport.requests import AuthorizedSession

    class _CountingSession(AuthorizedSession):
        def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override,unused-ignore]
            count()
            return super().request(*args, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]

    return _CountingSession(credentials)  # type: ignore[no-untyped-call,unused-ignore]


def _mount_pool(session: Any, size: int) -> None:
    import requests.adapters

    for scheme in ("https://", "http://"):
        session.mount(scheme, requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=size))


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK exception (api_core errors carry ``code``; the
    resumable-media layer carries ``response``)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return str(message) if message else ""


def _retry_after(exc: BaseException) -> float | None:
    """``Retry-After`` of the response behind ``exc``, in seconds (delta or HTTP date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return parse_retry_after(headers.get("Retry-After") if headers is not None else None)


def _is_network_error(exc: BaseException) -> bool:
    """Connection refused/reset, timeouts, a body cut short: worth another attempt."""
    import http.client

    import requests
    import urllib3.exceptions

    try:
        from google.auth.exceptions import TransportError
    except ImportError:  # pragma: no cover
        TransportError = ConnectionError  # type: ignore[misc,assignment]
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
            TransportError,
        ),
    )


def _is_refresh_error(exc: BaseException) -> bool:
    try:
        from google.auth.exceptions import RefreshError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, RefreshError)


def _worth_resuming(exc: BaseException) -> bool:
    status = _status(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    return _is_network_error(exc)


def _chunk_retry(after_connection_errors: bool) -> Any:
    """The SDK retry policy for resumable chunks: short waits, and a bounded total so a dead
    service reaches the retry wrapper (which owns the long budget) within a minute.

    An error answer (429, 408, 5xx) means the chunk was not taken and is re-sent. After a
    connection error the chunk may or may not have been stored; GCS accepts a chunk sent
    again at an offset it already has, so it is re-sent too. fake-gcs-server appends such a
    chunk a second time instead, so against an emulator (``endpoint`` / ``STORAGE_EMULATOR_HOST``)
    a connection error ends the session and the retry wrapper starts the upload over.
    """
    from google.api_core.retry import Retry

    def predicate(exc: Exception) -> bool:
        if _status(exc) is None and not after_connection_errors:
            return False
        return _worth_resuming(exc)

    try:
        return Retry(predicate=predicate, initial=0.2, maximum=4.0, multiplier=2.0, timeout=60.0)
    except TypeError:  # pragma: no cover - google-api-core < 2.17 calls it deadline
        return Retry(predicate=predicate, initial=0.2, maximum=4.0, multiplier=2.0, deadline=60.0)


def _backoff(failures: int, retry_after: float | None) -> float:
    wait = min(2.0, 0.1 * 2.0**failures)
    if retry_after is not None:
        wait = max(wait, min(retry_after, 10.0))
    return wait
