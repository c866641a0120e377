"""What a run record may say about the environment, and how secrets are kept out of it.

A run record is meant to be shared (it lives in a store, next to the data), so it is
written as if the reader were hostile:

* **Environment variables are recorded only by allowlist** (``--env VAR``, ``env`` in the
  configuration). An allowlisted variable whose *name* looks secret (:func:`is_secret_name`:
  ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*PASSWD*``, ``*_KEY``, ``*CREDENTIAL*``,
  ``AWS_*``, the credential files and URL variables of :mod:`snapdir._redact`, plus the
  configured patterns) is recorded as ``<redacted len=N>``: the reader learns it was set,
  and how long it was, never what it was.
* **The literal values of every secret-looking variable of the environment** — allowlisted
  or not, multi-line values (a private key) included, and each of their lines — are masked
  wherever they occur in the captured stdout and stderr and in argv (:class:`Masker`).
  The masking is streaming: a secret split across two reads of the child's pipe is still
  found, because the last ``longest secret - 1`` bytes are held back until the next read.
* **Values after credential flags** (``--password X``, ``--token=X``, ``-p``-style short
  flags are not guessed) are masked in argv (:func:`mask_argv`).

Values shorter than :data:`MIN_SECRET` bytes are not masked as literals (masking every
"ab" in a log would garble it without protecting anything); they are still redacted in the
environment and after flags, where the context says what they are.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence

from .._redact import SECRET_ENV, SECRET_FILE_ENV, URL_ENV

__all__ = [
    "MIN_SECRET",
    "Masker",
    "flag_values",
    "is_secret_name",
    "mask_argv",
    "record_env",
    "redacted",
    "secret_values",
]

#: Literal values shorter than this are not searched for in output.
MIN_SECRET = 4

#: Name patterns (fnmatch, case-insensitive) of variables whose values are secrets.
SECRET_NAME_PATTERNS = (
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*PASSPHRASE*",
    "*_KEY",
    "*_PWD",
    "*CREDENTIAL*",
    "*PRIVATE_KEY*",
    "*API_KEY*",
    "*APIKEY*",
    "*AUTHORIZATION*",
    "AWS_*",
)

_FLAG = re.compile(
    r"^--?(?:[a-z0-9]+[-_])*(?:password|passwd|pass|pwd|token|secret|api[-_]?key|apikey|"
    r"access[-_]?key|secret[-_]?key|private[-_]?key|key|auth|credentials?|bearer)$",
    re.IGNORECASE,
)


def redacted(value: str) -> str:
    """What a secret value is recorded as."""
    return f"<redacted len={len(value)}>"


_SECRET_RE: re.Pattern[str] | None = None


def _secret_re() -> re.Pattern[str]:
    """:data:`SECRET_NAME_PATTERNS` as one expression, compiled once (fnmatch would compile
    each pattern separately, milliseconds of every run's start)."""
    global _SECRET_RE
    if _SECRET_RE is None:
        import fnmatch

        _SECRET_RE = re.compile("|".join(fnmatch.translate(p) for p in SECRET_NAME_PATTERNS))
    return _SECRET_RE


def is_secret_name(name: str, extra: Sequence[str] = ()) -> bool:
    """Whether an environment variable's value is a secret, judged by its name."""
    if name in SECRET_ENV or name in SECRET_FILE_ENV or name in URL_ENV:
        return True
    upper = name.upper()
    if _secret_re().match(upper):
        return True
    return any(fnmatch.fnmatchcase(upper, p.upper()) for p in extra)


def secret_values(env: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
    """The literal values to mask: every secret-looking variable's value, and for a
    multi-line value each of its lines too (a log may print one line of a key)."""
    out: set[str] = set()
    for name, value in env.items():
        if not is_secret_name(name, extra):
            continue
        for v in (value, value.strip(), *value.splitlines()):
            v = v.strip("\r")
            if len(v.encode()) >= MIN_SECRET:
                out.add(v)
    return sorted(out, key=lambda s: (-len(s), s))


def record_env(
    env: Mapping[str, str], allow: Iterable[str], extra: Sequence[str] = ()
) -> dict[str, str]:
    """The allowlisted variables that are set (glob patterns allowed: ``LC_*``), secret
    ones as ``<redacted len=N>``."""
    pats = list(dict.fromkeys(allow))
    out: dict[str, str] = {}
    for name in sorted(env):
        if any(fnmatch.fnmatchcase(name, p) for p in pats):
            value = env[name]
            out[name] = redacted(value) if is_secret_name(name, extra) else value
    return out


class Masker:
    """Masks secret values in a byte stream, across chunk boundaries.

    ``feed(chunk)`` returns the bytes that are certainly final (masked); the last
    ``longest - 1`` bytes are held back, since a secret may start there and end in the next
    chunk. ``flush()`` returns the rest. A value is replaced by ``<redacted len=N>``
    (N its length in characters)."""

    __slots__ = ("_hold", "_pairs", "_tail")

    def __init__(self, values: Iterable[str]) -> None:
        uniq = {v for v in values if len(v.encode()) >= MIN_SECRET}
        # Longest first: a value that contains another is masked whole.
        self._pairs = [
            (v.encode(), redacted(v).encode())
            for v in sorted(uniq, key=lambda s: (-len(s.encode()), s))
        ]
        self._hold = max((len(p) for p, _ in self._pairs), default=1) - 1
        self._tail = b""

    @property
    def active(self) -> bool:
        return bool(self._pairs)

    def _mask(self, data: bytes) -> bytes:
        for secret, mask in self._pairs:
            if secret in data:
                data = data.replace(secret, mask)
        return data

    def feed(self, chunk: bytes) -> bytes:
        if not self._pairs:
            return chunk
        data = self._mask(self._tail + chunk)
        if self._hold == 0:
            self._tail = b""
            return data
        cut = max(len(data) - self._hold, 0)
        self._tail = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        data, self._tail = self._mask(self._tail), b""
        return data

    def text(self, s: str) -> str:
        """Mask a whole string at once."""
        for secret, mask in self._pairs:
            s = s.replace(secret.decode(), mask.decode())
        return s


def flag_values(argv: Sequence[str]) -> list[str]:
    """The values given after credential flags: secrets by their context, masked in the
    command's output too (a tool may echo its own command line)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("-") and "=" in arg:
            flag, _, value = arg.partition("=")
            if _FLAG.match(flag):
                out.append(value)
        elif _FLAG.match(arg) and i + 1 < len(argv):
            out.append(argv[i + 1])
    return [v for v in out if len(v.encode()) >= MIN_SECRET]


def mask_argv(argv: Sequence[str], masker: Masker) -> list[str]:
    """argv as recorded: literal secrets masked, and the value after a credential flag
    (``--password X``, ``--token=X``, ``--db-password X``) redacted whatever it is."""
    out: list[str] = []
    after_flag = False
    for arg in argv:
        if after_flag:
            out.append(redacted(arg))
            after_flag = False
            continue
        if arg.startswith("-") and "=" in arg:
            flag, _, value = arg.partition("=")
            if _FLAG.match(flag):
                out.append(f"{flag}={redacted(value)}")
                continue
        elif _FLAG.match(arg):
            after_flag = True
        out.append(masker.text(arg))
    return out
