"""Stubs of the private extension module ``snapdir._snapdir`` (the Rust core's binding).

Checked against the compiled module by ``python -m mypy.stubtest snapdir._snapdir``.
"""

from collections.abc import Callable, Sequence
from typing import ClassVar, final

__all__ = [
    "EMPTY_CHECKSUM",
    "ByteBuffer",
    "CancelToken",
    "CheckoutPlan",
    "Hasher",
    "Manifest",
    "ManifestEntry",
    "MarkSet",
    "PathType",
    "Progress",
    "RecordingLog",
    "Replayer",
    "Watch",
    "blake3_hex",
    "diff_manifests",
    "id_from_manifest",
    "manifest_from_fd",
    "manifest_size",
    "manifest_write_fd",
    "plan_checkout",
    "recording_capture",
    "recording_encode_segment",
    "recording_peek_header",
    "spec_check",
    "spec_matches",
    "spec_resolve",
    "store_get_object",
    "store_list",
    "store_missing_objects",
    "store_push_tree",
    "store_put_objects",
    "store_verify_objects",
    "version",
    "version_canonical",
    "version_order",
    "walk",
    "write_at_sparse",
]

EMPTY_CHECKSUM: str

@final
class PathType:
    """Kind of a manifest entry."""

    File: ClassVar[PathType]
    Directory: ClassVar[PathType]
    @property
    def name(self) -> str:
        """``"File"`` or ``"Directory"``."""

    def __int__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ManifestEntry:
    """One manifest line; immutable."""

    @property
    def path(self) -> str: ...
    @property
    def path_type(self) -> PathType: ...
    @property
    def permissions(self) -> int: ...
    @property
    def checksum(self) -> str: ...
    @property
    def size(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Manifest:
    """A validated manifest; entries stay in Rust until ``.entries`` is read."""

    @classmethod
    def parse(cls, text: str) -> Manifest:
        """Parse manifest text (CRLF, blank lines, ``#`` comments accepted; re-sorted).

        Raises ``InvalidArgumentError`` (a ``ValueError``) naming the first bad line.
        """

    @property
    def raw(self) -> str:
        """The canonical text: lines joined by ``\\n``, no trailing newline."""

    @property
    def id(self) -> str:
        """The snapshot id: BLAKE3 of ``raw + "\\n"``."""

    @property
    def entries(self) -> list[ManifestEntry]:
        """The entries sorted by path (a new list on each access)."""

    def objects(self) -> list[tuple[str, int]]:
        """The distinct objects the snapshot references: ``[(checksum, size)]``."""

    def object_sources(self) -> list[tuple[str, str, int]]:
        """For each distinct object, the first file holding it: ``[(checksum, rel, size)]``."""

    def __len__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class CancelToken:
    """A flag a running Rust operation polls; set it to stop the operation early."""

    def __new__(cls) -> CancelToken: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

@final
class ByteBuffer:
    """Bytes gathered in Rust memory as they download (a manifest from a cloud store),
    then parsed in place: the manifest keeps them as its storage."""

    def __new__(cls) -> ByteBuffer: ...
    def extend(self, data: bytes) -> None: ...
    def __len__(self) -> int: ...
    def to_bytes(self) -> bytes:
        """A copy of the bytes."""
    def take_manifest(self) -> Manifest:
        """Parse the bytes as a manifest (as ``Manifest.parse``), taking them: the buffer
        is empty afterwards, whatever the outcome."""

@final
class Progress:
    """Counters a running operation updates (files and bytes done)."""

    def __new__(cls) -> Progress: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def reused(self) -> int:
        """Files whose checksum came from the stat cache (included in ``files``)."""
    @property
    def dirs_reused(self) -> int:
        """Directories whose listing came from the stat cache (not read again)."""
    @property
    def found_files(self) -> int:
        """Files found so far by the counting walk beside a long walk."""
    @property
    def found_bytes(self) -> int:
        """Their bytes."""
    @property
    def found_done(self) -> bool:
        """Whether the counting walk has finished: ``found_*`` are then the totals."""

@final
class Hasher:
    """Streaming BLAKE3."""

    def __new__(cls) -> Hasher: ...
    def update(self, data: bytes) -> None: ...
    def hexdigest(self) -> str: ...

def walk(
    path: str,
    no_follow: bool = False,
    absolute: bool = False,
    exclude: list[str] = ...,
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
    stat_cache: str | None = None,
    rehash: bool = False,
    *,
    ignore_file: str | None = None,
    no_ignore_file: bool = False,
    exclude_glob: list[str] = ...,
) -> tuple[Manifest, list[str]]:
    """Walk and hash ``path``; returns the manifest and warnings (dangling links).

    ``stat_cache`` is the directory of stat cache files (``None``: hash every file, keep no
    cache); ``rehash`` re-reads every file but still rewrites the cache. The ignore rules
    come from ``path``'s own ``.snapdirignore``, or ``ignore_file`` (which must exist), or
    none with ``no_ignore_file``; then ``exclude_glob`` (gitignore syntax)."""

def id_from_manifest(m: Manifest | str) -> str:
    """The snapshot id of a manifest or of manifest text."""

def manifest_size(m: Manifest) -> tuple[int, int, int, int]:
    """``(logical_bytes, physical_bytes, files, objects)``."""

def blake3_hex(data: bytes) -> str:
    """BLAKE3 of ``data`` as 64 lowercase hex."""

def version() -> str:
    """The core library version."""

def manifest_from_fd(fd: int, limit: int) -> Manifest | None:
    """Read the open regular file ``fd`` (at most ``limit`` bytes) and parse it as a stored
    manifest, kept without a second copy; ``None`` when it holds more than ``limit`` bytes."""

def manifest_write_fd(m: Manifest, fd: int) -> None:
    """Write the stored form of ``m`` (its canonical text and one newline) to the open file
    ``fd``, without building the text as a Python string."""

def diff_manifests(
    old: Manifest, new: Manifest, all: bool
) -> tuple[bool, list[tuple[str, str, str]]]:
    """``(changed, [(status, path, detail)])`` of two manifests, sorted by path; without
    ``all`` only the rows the CLI shows by default (no ``=``, no ``contents``)."""

def write_at_sparse(fd: int, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` of the open file ``fd``, leaving all-zero 4 KiB blocks
    as holes (the caller sets the file's length at the end)."""

@final
class CheckoutPlan:
    """A checked plan to materialise a snapshot into a directory (plan, fill, commit)."""

    def needed(self) -> list[tuple[str, int]]:
        """Objects still to fetch, ``[(checksum, size)]``; index ``i`` goes to
        ``staged_path(i)``."""

    def preview(self) -> tuple[list[tuple[str, int]], list[str], int, int]:
        """What a commit would do (``--dry-run``): ``(writes [(path, size)], removes
        [path], files whose mode to fix, directories to create)``."""

    def counts(self) -> tuple[int, int, int]:
        """``(files to write, files kept, extra paths to remove)``."""

    def unread(self) -> int:
        """How many kept files were trusted without being read (the stat cache)."""

    def prepare(self) -> None:
        """Create the destination and the private staging directory."""

    def open_staged(self, indices: list[int]) -> list[int]:
        """Create the staging files of objects ``indices`` (exclusively, through the staging
        directory's descriptor) and return them open for writing, as raw descriptors the
        caller closes; write to ``/proc/self/fd/<fd>``, never to a path."""

    def staged_path(self, i: int) -> str | None:
        """Where object ``i`` is staged (after ``prepare``), for messages only."""

    def fill_from_store(self, root: str) -> None:
        """Fill staging from the ``file://`` store at ``root`` (verified copies)."""

    def commit(self) -> tuple[int, int, int, int]:
        """Move everything into place: ``(files written, kept, bytes written, removed)``."""

    def abort(self) -> None:
        """Remove staging (and a destination the plan created): the destination is as
        before."""

def store_put_objects(
    root: str,
    items: list[tuple[str, str, int]],
    from_tree: bool = True,
    durable: bool = False,
    repair: bool = False,
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
) -> tuple[int, int, int, int]:
    """Put ``(checksum, source, size)`` objects into the store at ``root``; returns
    ``(written, present, repaired, bytes)``."""

def store_push_tree(
    root: str,
    path: str,
    no_follow: bool = False,
    exclude: list[str] = ...,
    stat_cache: str | None = None,
    rehash: bool = False,
    durable: bool = False,
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
    *,
    ignore_file: str | None = None,
    no_ignore_file: bool = False,
    exclude_glob: list[str] = ...,
) -> tuple[Manifest, list[str], int, int, int, bool]:
    """Snapshot ``path`` into the store at ``root``, copying each file while it is hashed;
    returns ``(manifest, warnings, written, present, bytes, noop)``. The caller writes the
    manifest, last."""

def store_get_object(root: str, checksum: str, dest: str) -> int:
    """Copy one object to ``dest``, verified; returns its size."""

def store_verify_objects(
    root: str,
    items: list[tuple[str, int]],
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
) -> list[tuple[str, str]]:
    """Re-hash objects; returns ``[(checksum, "missing" | "corrupt")]``."""

def store_missing_objects(root: str, checksums: list[str]) -> list[str]:
    """The checksums the store at ``root`` has no object file for."""

def store_list(root: str, kind: str) -> list[str]:
    """Keys under ``.objects`` (``kind="objects"``) or ``.manifests``, sorted."""

def plan_checkout(
    manifest: Manifest,
    dest: str,
    force: bool = False,
    delete: bool = False,
    preserve_special_bits: bool = False,
    durable: bool = False,
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
    link: str = "copy",
    stat_cache: str | None = None,
    wait: bool = True,
    on_wait: Callable[[str], object] | None = None,
    *,
    ignore_file: str | None = None,
    no_ignore_file: bool = False,
    exclude_glob: list[str] = ...,
    dry_run: bool = False,
) -> CheckoutPlan:
    """Compare ``dest`` with ``manifest`` (read-only); raises ``ConflictError`` listing
    differing local files unless ``force``. ``link`` (``"copy"``, ``"hardlink"``,
    ``"reflink"``) says how ``fill_from_store`` gives files their content. ``stat_cache``
    (the stat cache directory; ``None``: off): files a previous checkout found right and
    whose stamp has not changed since are trusted without being read. The plan holds the
    destination's lock until committed or aborted; if another checkout holds it, ``wait``
    waits (calling ``on_wait(message)`` once) or raises ``ConflictError`` at once.
    ``dry_run``: ``dest`` must exist (else ``NotFoundError``) and no lock is taken; the
    plan is only for ``preview()``."""

# Recordings (rust/snapdir-py/src/recording.rs)

def recording_encode_segment(
    name: str, seq: int, prev: str | None, meta_json: str | None, events_json: list[str]
) -> bytes:
    """One segment of recording ``name``: a header naming segment ``seq - 1``'s digest
    ``prev``, then the events (each a JSON object, validated first)."""

def recording_peek_header(data: bytes) -> tuple[int, str | None]:
    """``(seq, prev)`` of a segment's header (its shape only)."""

def recording_capture(
    root: str,
    rel: str,
    prev: tuple[int, str] | None,
    staging: str,
    keep: str,
) -> tuple[str, int, int, int, str | None, bool, bool, tuple[str, int, str, int] | None]:
    """Read ``rel`` below ``root`` once: ``(kind, mode, ino, size, full, same, placeholder,
    staged)``; kind is ``missing``, ``dir``, ``file``, ``other``, ``unreadable`` (size is
    then the errno) or ``influx``; ``staged`` is ``(digest, size, path, offset)`` of the
    bytes staged in ``staging`` (offset > 0: only the bytes appended after ``prev``)."""

@final
class RecordingLog:
    """A recording read back and verified whole (hashes, chain, every event)."""

    def __new__(cls, name: str, segments: list[tuple[str, bytes]]) -> RecordingLog: ...
    def __len__(self) -> int: ...
    def meta_json(self) -> str:
        """The recording's metadata, a JSON object."""
    def segments(self) -> list[str]:
        """Segment digests, oldest first."""
    def events_json(self, start: int, end: int) -> list[str]:
        """Events ``start..end`` as JSON objects."""
    def outline(self) -> list[tuple[int, str, str]]:
        """``(t_us, kind, path)`` of every event."""
    def checkpoints(self) -> list[tuple[int, int, str]]:
        """``(index, t_us, snapshot id)`` of every checkpoint."""
    def objects(self, start: int, end: int) -> list[tuple[str, int]]:
        """``(digest, size)`` of the content objects events ``start..end`` read."""

@final
class Watch:
    """A recursive watch of a directory through the OS's notifications."""

    def __new__(cls, root: str) -> Watch: ...
    def next_batch(self, timeout: float, max: int) -> tuple[list[str], bool, list[str]]:
        """``(paths, overflow, errors)`` of what arrived within ``timeout`` seconds."""
    def close(self) -> None:
        """Stop watching."""

@final
class Replayer:
    """Applies a recording's events to a target on an absolute schedule."""

    def __new__(
        cls,
        log: RecordingLog,
        target: str,
        objects: str,
        speed: float,
        max_delay: float,
        placeholders: str,
        verify_each: bool,
        store_layout: bool = False,
        make_parents: bool = False,
        split_writes: int = 1,
    ) -> Replayer: ...
    def run(
        self,
        start: int,
        end: int,
        timed: bool,
        stop_at_checkpoint: bool,
        max_events: int = ...,
    ) -> tuple[int, int, int]:
        """Apply events from ``start``; returns ``(next, placeholders, unreadable)``."""
    def restart(self) -> None:
        """The next timed event is due now."""
    def shift(self, seconds: float) -> None:
        """Move every later due time by ``seconds``."""
    def lateness(self) -> tuple[int, float, float, float, float]:
        """``(events, p50, p99, max, last)`` lateness in seconds."""

# names (rust/snapdir-py/src/names.rs): release versions and version specs
def version_canonical(text: str) -> str: ...
def version_order(versions: list[str]) -> list[int]: ...
def spec_check(spec: str) -> str | None: ...
def spec_matches(spec: str, version: str, pre: bool = False) -> bool: ...
def spec_resolve(
    spec: str, versions: list[str], yanked: list[bool], pre: bool = False
) -> int | None: ...

@final
class MarkSet:
    """The collector's mark set: sorted, deduplicated 32-byte digests (in Rust)."""

    def __new__(cls) -> MarkSet: ...
    def add_manifest(self, m: Manifest) -> None:
        """Mark the objects of a manifest's files."""
    def add_hex(self, hexes: Sequence[str]) -> None:
        """Mark 64-hex digests; ``InvalidArgumentError`` for one that is not."""
    def add_packed(self, data: bytes) -> None:
        """Mark packed 32-byte digests (a length not a multiple of 32 raises)."""
    def unmarked(self, hexes: Sequence[str]) -> list[str]:
        """Of ``hexes``, those not in the set, in their order."""
    def marked(self, hexes: Sequence[str]) -> list[str]:
        """Of ``hexes``, those in the set, in their order."""
    def to_packed(self) -> bytes:
        """The digests, sorted, packed (32 bytes each)."""
    def to_hex(self) -> list[str]:
        """The digests, sorted, as 64-hex strings."""
    @property
    def heap_bytes(self) -> int:
        """Bytes of memory the set holds."""
    def __len__(self) -> int: ...
    def __contains__(self, key: str, /) -> bool: ...
