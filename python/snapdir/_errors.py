"""The exception hierarchy (SPEC §6).

Every error snapdir raises derives from :class:`SnapdirError` and carries a stable ``.code``.
Where a builtin already means the same thing the class derives from it too, so ordinary
Python code keeps working: a missing snapshot is a ``FileNotFoundError``, a bad argument a
``ValueError``, an I/O failure an ``OSError``. The Rust core raises these same classes.

No secret leaves through an error: the message is passed through
:func:`snapdir._redact.redact_text` when the error is built (so ``args``, pickles and
tracebacks are clean) and again whenever it is rendered (``str``, ``repr``), which also
catches a secret that entered the environment after the error was built.
"""

from __future__ import annotations

import warnings

from ._redact import redact_text

__all__ = [
    "CatalogError",
    "ConflictError",
    "HashMismatchError",
    "InFluxError",
    "InvalidArgumentError",
    "NotFoundError",
    "SnapdirError",
    "SnapdirIOError",
    "SnapdirWarning",
    "StoreError",
    "UnsafePathError",
]


class SnapdirError(Exception):
    """Base of every snapdir error; ``.code`` is a stable machine-readable category."""

    code: str = "SNAPDIR_ERROR"

    #: For the errors of verifying a snapshot (:class:`HashMismatchError`,
    #: :class:`NotFoundError`): each damaged object's checksum -> ``"corrupt"`` or
    #: ``"missing"``, so a caller can repair exactly those instead of parsing the message;
    #: empty for every other error.
    problems: dict[str, str]

    def __init__(
        self, message: str, *, code: str | None = None, problems: dict[str, str] | None = None
    ) -> None:
        super().__init__(redact_text(message) if isinstance(message, str) else message)
        if code is not None:
            self.code = code
        self.problems = dict(problems or {})

    def __str__(self) -> str:
        return redact_text(str(self.args[0])) if self.args else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class HashMismatchError(SnapdirError):
    """Bytes read back do not hash to the key or checksum they were stored under.

    ``.problems`` maps each damaged object's checksum to ``"corrupt"`` or ``"missing"`` when
    the error comes from verifying a snapshot (empty otherwise)."""

    code = "HASH_MISMATCH"


class StoreError(SnapdirError):
    """A store could not be read or written (unreachable, refused, inconsistent)."""

    code = "STORE_ERROR"


class InFluxError(SnapdirError):
    """A source file changed, appeared or vanished while it was being read."""

    code = "IN_FLUX"


class CatalogError(SnapdirError):
    """The local cache (catalog) is inconsistent."""

    code = "CATALOG_ERROR"


class ConflictError(SnapdirError):
    """The destination holds files that differ from the snapshot (use ``force``)."""

    code = "CONFLICT"


class NotFoundError(SnapdirError, FileNotFoundError):
    """A snapshot, object, path or store does not exist. Also a ``FileNotFoundError``.

    ``.problems`` is as for :class:`HashMismatchError`: filled when verifying a snapshot found
    objects missing (and none corrupt), empty otherwise."""

    code = "NOT_FOUND"

    def __str__(self) -> str:
        return SnapdirError.__str__(self)


class InvalidArgumentError(SnapdirError, ValueError):
    """An id, store URI, manifest or option is malformed. Also a ``ValueError``."""

    code = "INVALID_ARGUMENT"


class UnsafePathError(SnapdirError, ValueError):
    """A manifest path would escape its destination or is not normalised."""

    code = "UNSAFE_PATH"


class SnapdirIOError(SnapdirError, OSError):
    """The operating system refused a read or write. Also an ``OSError``."""

    code = "IO_ERROR"

    def __str__(self) -> str:
        return SnapdirError.__str__(self)


class SnapdirWarning(UserWarning):
    """Something was skipped that the user should know about (e.g. a dangling link)."""


_BY_CODE: dict[str, type[SnapdirError]] = {
    "HASH_MISMATCH": HashMismatchError,
    "STORE_ERROR": StoreError,
    "IN_FLUX": InFluxError,
    "CATALOG_ERROR": CatalogError,
    "CONFLICT": ConflictError,
    "NOT_FOUND": NotFoundError,
    "INVALID_ID": InvalidArgumentError,
    "INVALID_STORE": InvalidArgumentError,
    "INVALID_MANIFEST": InvalidArgumentError,
    "INVALID_ARGUMENT": InvalidArgumentError,
    "UNSAFE_PATH": UnsafePathError,
    "IO_ERROR": SnapdirIOError,
}


def _from_code(code: str, message: str, errno: int | None = None) -> SnapdirError:
    """Build the exception for a core error (called by the Rust binding)."""
    cls = _BY_CODE.get(code, SnapdirError)
    exc = cls(message, code=code)
    if errno is not None and isinstance(exc, OSError):
        exc.errno = errno
    return exc


def _warn(messages: list[str], stacklevel: int = 3) -> None:
    """Report skipped entries as :class:`SnapdirWarning` (never silently; never with a
    secret in them)."""
    for m in messages:
        warnings.warn(redact_text(m), SnapdirWarning, stacklevel=stacklevel)
