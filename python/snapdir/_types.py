"""Value types: snapshot ids, store URIs, diff options and results, size statistics.

``SnapshotId`` and ``StoreUri`` are ``str`` subclasses: validated once at construction, then
usable anywhere a string is (``f"{store}@{snap_id}"``, JSON, logging). They are written
without ``dataclasses`` on purpose: this module is imported by the CLI, whose start-up time
is part of every ``snapdir id`` (``dataclasses`` pulls in ``inspect``, ~8 ms).
"""

from __future__ import annotations

import os

from ._errors import InvalidArgumentError
from ._redact import redact_text, redact_url

# `typing` costs ~5 ms at start-up, paid by every CLI call; annotations only need it for
# the type checker (which treats a module-level TYPE_CHECKING = False as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

__all__ = ["DiffEntry", "DiffOptions", "Ref", "SizeStats", "SnapshotId", "StoreUri"]

#: The values of ``link=`` (``snapdir._pull.LinkMode``); here so that the CLI can offer them
#: without importing the operations.
LINK_MODES: tuple[Literal["copy", "hardlink", "reflink"], ...] = ("copy", "hardlink", "reflink")

_HEX_DIGITS = "0123456789abcdef"
_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def is_lower_hex(s: str, length: int) -> bool:
    """Whether ``s`` is ``length`` lowercase hex digits (``str.strip`` runs in C: this is
    on the path of every object a transfer touches)."""
    return len(s) == length and not s.strip(_HEX_DIGITS)


def _is_bucket(s: str) -> bool:
    return bool(s) and s[0].isalnum() and s.isascii() and all(c in _BUCKET_CHARS for c in s)


SCHEMES = ("file", "s3", "gs", "b2")
_ALIASES = {"gcs": "gs"}


class SnapshotId(str):
    """A snapshot id: 64 hex characters, normalised to lowercase."""

    __slots__ = ()

    def __new__(cls, value: str) -> SnapshotId:
        if isinstance(value, SnapshotId):
            return value
        if not isinstance(value, str):
            raise InvalidArgumentError(
                f"a snapshot id must be a string, not {type(value).__name__}", code="INVALID_ID"
            )
        low = value.lower()
        if not is_lower_hex(low, 64):
            raise InvalidArgumentError(
                f"invalid snapshot id {value!r}: expected 64 hexadecimal characters",
                code="INVALID_ID",
            )
        return super().__new__(cls, low)

    def __repr__(self) -> str:
        return f"SnapshotId({str(self)!r})"


class StoreUri(str):
    """A validated store URI: ``file:///abs/path``, ``s3://bucket/prefix``,
    ``gs://bucket/prefix`` (``gcs://`` is normalised to ``gs://``), ``b2://bucket/prefix``.

    The string form is normalised (no trailing slash, ``gs`` for ``gcs``), so two spellings
    of one store compare equal.

    A store URI never holds a secret, so it can be printed anywhere: credentials in it
    (``s3://KEY:SECRET@bucket``), a query string (a presigned URL's signature) or a fragment
    are refused at construction, and the error quotes the value with them masked
    (``s3://***@bucket``; see :mod:`snapdir._redact`). Credentials come from each backend's
    environment (docs/stores/). ``__str__`` is deliberately not overridden: the string *is*
    the URI (``f"{uri}"`` does not even call it), and it is clean by construction; ``repr``
    masks all the same, as every rendering in snapdir does.
    """

    __slots__ = ()

    def __new__(cls, value: str) -> StoreUri:
        if isinstance(value, StoreUri):
            return value
        if not isinstance(value, str):
            raise InvalidArgumentError(
                f"a store URI must be a string, not {type(value).__name__}", code="INVALID_STORE"
            )
        return super().__new__(cls, _normalise_uri(value))

    @property
    def scheme(self) -> str:
        """``file``, ``s3``, ``gs`` or ``b2``."""
        return self.split("://", 1)[0]

    @property
    def bucket(self) -> str:
        """The bucket of a cloud store (empty for ``file://``)."""
        if self.scheme == "file":
            return ""
        return self.split("://", 1)[1].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket, without slashes at either end ('' for none)."""
        if self.scheme == "file":
            return ""
        rest = self.split("://", 1)[1]
        return rest.split("/", 1)[1] if "/" in rest else ""

    @property
    def path(self) -> str:
        """The local directory of a ``file://`` store (empty for cloud stores)."""
        if self.scheme != "file":
            return ""
        return self[len("file://") :]

    def __repr__(self) -> str:
        return f"StoreUri({redact_url(str(self))!r})"


#: Where each backend takes its credentials from, for the error refusing them in a URI.
_CREDENTIALS_FROM = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "b2": "B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY",
}


def _no_credentials(scheme: str) -> str:
    where = _CREDENTIALS_FROM.get(scheme)
    if where:
        how = f"set {where} instead"
    elif scheme == "file":
        how = "a file:// store takes none"
    else:
        how = "give them to the store through its environment or configuration"
    return f"credentials do not belong in a store URI (it is printed in messages): {how}"


def _normalise_uri(value: str) -> str:
    def bad(why: str) -> InvalidArgumentError:
        # The value is quoted masked: a URI refused for its credentials still names them.
        return InvalidArgumentError(
            f"invalid store URI {redact_url(value)!r}: {why}", code="INVALID_STORE"
        )

    if "://" not in value:
        raise bad(
            "expected file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix "
            "or b2://bucket/prefix"
        )
    scheme, rest = value.split("://", 1)
    scheme = _ALIASES.get(scheme.lower(), scheme.lower())
    if scheme not in SCHEMES:
        from ._registry import registered_schemes  # third-party stores (entry points)

        if scheme not in registered_schemes():
            raise bad(f"unknown scheme {scheme!r}; accepted: file, s3, gs (or gcs), b2")
    authority = rest.split("/", 1)[0]
    # "@" first: redact_url compiles every masking pattern on first use (tens of ms of a
    # command's start), and a URI without "@" has no userinfo to find.
    if "@" in authority or ("@" in rest and redact_url(value) != value):
        raise bad(_no_credentials(scheme))
    if any(c in rest for c in "\0\n\r?#") or any(c.isspace() and c != " " for c in rest):
        raise bad("it contains a control character, '?' or '#'")
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest.startswith("/"):
            raise bad("a file:// store needs an absolute path (file:///srv/snapshots)")
        path = os.path.normpath(rest)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        return f"file://{path}"
    bucket, _, prefix = rest.partition("/")
    if not _is_bucket(bucket):
        raise bad("missing or malformed bucket name")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise bad("the prefix may not contain . or .. components")
    return f"{scheme}://{bucket}" + ("/" + "/".join(parts) if parts else "")


class Ref:
    """One side of a diff: a snapshot in a store (``URI@ID``), every snapshot of a store
    (a plain URI), or a local directory (snapshotted on the fly)."""

    __slots__ = ("id", "kind", "path", "store")

    kind: Literal["snapshot", "store", "path"]
    store: StoreUri | None
    id: SnapshotId | None
    path: str | None

    def __init__(
        self,
        kind: Literal["snapshot", "store", "path"],
        *,
        store: StoreUri | None = None,
        id: SnapshotId | None = None,
        path: str | None = None,
    ) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "store", store)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "path", path)

    @classmethod
    def parse(cls, ref: str | StoreUri | os.PathLike[str]) -> Ref:
        """Parse ``URI@ID``, ``URI`` or a local directory path."""
        if not isinstance(ref, str):
            return cls("path", path=os.fspath(ref))
        if not ref:
            raise InvalidArgumentError("an empty diff reference", code="INVALID_ARGUMENT")
        if "://" in ref:
            # Trailing slashes ignored here as StoreUri ignores them: otherwise
            # ``s3://b/x@<id>/`` would be a store that prints as a snapshot reference.
            uri, at, tail = ref.rstrip("/").rpartition("@")
            if at and is_lower_hex(tail.lower(), 64):
                return cls("snapshot", store=StoreUri(uri), id=SnapshotId(tail))
            return cls("store", store=StoreUri(ref))
        if "\0" in ref:
            raise InvalidArgumentError(f"invalid path {ref!r}", code="INVALID_ARGUMENT")
        return cls("path", path=ref)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __str__(self) -> str:
        if self.kind == "snapshot":
            return f"{self.store}@{self.id}"
        return str(self.store) if self.kind == "store" else str(self.path)

    def __repr__(self) -> str:
        return f"Ref({redact_text(str(self))!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and (self.kind, str(self)) == (other.kind, str(other))

    def __hash__(self) -> int:
        return hash((self.kind, str(self)))


class DiffOptions:
    """What to compare: ``from`` refs against ``to`` refs. Build with :meth:`from_refs`."""

    __slots__ = ("from_", "to")

    from_: tuple[Ref, ...]
    to: tuple[Ref, ...]

    def __init__(self, from_: tuple[Ref, ...], to: tuple[Ref, ...]) -> None:
        object.__setattr__(self, "from_", from_)
        object.__setattr__(self, "to", to)

    @classmethod
    def from_refs(
        cls,
        from_uris: Sequence[str | StoreUri | os.PathLike[str]],
        to_uris: Sequence[str | StoreUri | os.PathLike[str]],
    ) -> DiffOptions:
        """Validate both sides: each ref is ``URI@ID``, a store URI or a local directory (a
        string or any path-like object, such as :class:`pathlib.Path`)."""
        if isinstance(from_uris, (str, os.PathLike)) or isinstance(to_uris, (str, os.PathLike)):
            raise InvalidArgumentError(
                "from_refs() takes lists of references, not a single string or path",
                code="INVALID_ARGUMENT",
            )
        if not from_uris or not to_uris:
            raise InvalidArgumentError(
                "a diff needs at least one reference on each side", code="INVALID_ARGUMENT"
            )
        return cls(tuple(Ref.parse(r) for r in from_uris), tuple(Ref.parse(r) for r in to_uris))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        f = [str(r) for r in self.from_]
        t = [str(r) for r in self.to]
        return f"DiffOptions(from={f!r}, to={t!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DiffOptions) and (self.from_, self.to) == (other.from_, other.to)

    def __hash__(self) -> int:
        return hash((self.from_, self.to))


class DiffEntry:
    """One difference: ``status`` is ``A`` (added), ``D`` (deleted), ``M`` (modified:
    content, type or mode, or for a directory ``contents``: something below it changed) or
    ``=`` (unchanged, the whole tree below included); ``detail`` says what changed for
    ``M``."""

    __slots__ = ("detail", "path", "status")

    status: str
    path: str
    detail: str

    def __init__(self, status: str, path: str, detail: str = "") -> None:
        if status not in ("A", "D", "M", "="):
            raise InvalidArgumentError(f"invalid diff status {status!r}", code="INVALID_ARGUMENT")
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "detail", detail)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        d = f", detail={self.detail!r}" if self.detail else ""
        return f"DiffEntry(status={self.status!r}, path={self.path!r}{d})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DiffEntry) and (self.status, self.path, self.detail) == (
            other.status,
            other.path,
            other.detail,
        )

    def __hash__(self) -> int:
        return hash((self.status, self.path, self.detail))


class SizeStats:
    """Sizes of a snapshot or store. ``logical_bytes``: sum of file sizes (duplicates
    counted); ``physical_bytes``: sum over distinct objects (what the store holds);
    ``files``: file entries; ``objects``: distinct objects."""

    __slots__ = ("files", "logical_bytes", "objects", "physical_bytes")

    logical_bytes: int
    physical_bytes: int
    files: int
    objects: int

    def __init__(self, logical_bytes: int, physical_bytes: int, files: int, objects: int) -> None:
        object.__setattr__(self, "logical_bytes", logical_bytes)
        object.__setattr__(self, "physical_bytes", physical_bytes)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "objects", objects)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _astuple(self) -> tuple[int, int, int, int]:
        return (self.logical_bytes, self.physical_bytes, self.files, self.objects)

    def as_dict(self) -> dict[str, int]:
        """The four figures by name (for JSON output)."""
        return dict(zip(_SIZE_FIELDS, self._astuple(), strict=True))

    def __repr__(self) -> str:
        return (
            f"SizeStats(logical_bytes={self.logical_bytes}, physical_bytes={self.physical_bytes},"
            f" files={self.files}, objects={self.objects})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SizeStats) and self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())


_SIZE_FIELDS = ("logical_bytes", "physical_bytes", "files", "objects")
