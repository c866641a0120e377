"""Secrets never leave in output: the one place that takes credentials out of text.

Every message snapdir shows — an exception's ``str``/``repr``, a warning, a log line, the
CLI's error lines and ``--json`` documents, a progress label — passes through
:func:`redact_text` (or :func:`redact_url` for a lone URL). What is masked, always with
``***`` in place of the secret and everything else kept, so that a message still names the
scheme, host, port, bucket and path it is about:

* **userinfo of a URL** — user *and* password, since an access key id next to its secret
  helps nobody: ``s3://KEY:SECRET@bucket/p`` → ``s3://***@bucket/p``,
  ``http://user:pw@[::1]:9000/x`` → ``http://***@[::1]:9000/x``. A password with ``@``,
  ``:``, ``/``, ``?`` or ``#`` in it is masked whole (the userinfo ends at the last ``@`` of
  the authority; a ``/`` inside a ``user:password`` part is taken as part of the password);
* **values of credential parameters and fields**, in a query string, a header, a
  ``name=value`` pair, a Python ``repr`` or JSON: ``X-Amz-Signature=***``,
  ``"private_key": "***"``, ``Authorization: Bearer ***`` (the names are in
  :data:`SECRET_NAMES`);
* **PEM private key blocks**: ``-----BEGIN PRIVATE KEY-----***-----END PRIVATE KEY-----``;
* **known token shapes**: Google API keys (``AIza…``) and OAuth access tokens (``ya29.…``);
* **the current values of credential environment variables** (:data:`SECRET_ENV`), the
  key material of the files named by :data:`SECRET_FILE_ENV` (a service-account JSON's
  ``private_key``, ``private_key_id``, ``client_secret``, ``refresh_token``), and the
  passwords in the endpoint URLs of :data:`URL_ENV` — wherever they appear, in any form
  (as is, percent-encoded, percent-decoded). Values shorter than :data:`MIN_LITERAL` are
  masked only where their context shows them to be secrets (a URL's userinfo, a named field):
  masking every "pw" would garble the message without protecting anything.

Key *ids* (``AWS_ACCESS_KEY_ID``, ``B2_APPLICATION_KEY_ID``) are not secrets and are kept
when they stand alone: "B2 refused the application key 0012ab…" is how a user learns which
key to fix.

Only the standard library, and only :mod:`os` and :mod:`re` at import (the CLI imports this
module at start, and argparse has imported ``re`` already); the patterns are compiled on
first use.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False

if TYPE_CHECKING:
    import re
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "LOG_FILTER",
    "MASK",
    "MIN_LITERAL",
    "SECRET_ENV",
    "SECRET_FILE_ENV",
    "SECRET_NAMES",
    "URL_ENV",
    "redact_exception",
    "redact_text",
    "redact_url",
]

#: What a secret is replaced with.
MASK = "***"

#: Secrets at least this long are masked wherever they occur; shorter ones only in context.
MIN_LITERAL = 6

#: Environment variables whose whole value is a secret.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "B2_APPLICATION_KEY",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "CLOUDSDK_AUTH_ACCESS_TOKEN",
)

#: Environment variables naming a file with secrets in it; their key material is masked.
#: (The value itself is masked too when it is not a path: pasting the key file's content
#: into GOOGLE_APPLICATION_CREDENTIALS is a common mistake.)
SECRET_FILE_ENV = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)

#: Environment variables holding URLs (endpoints, realms, proxies, stores) that may carry a
#: password in their userinfo.
URL_ENV = (
    "SNAPDIR_STORE",
    "SNAPDIR_S3_STORE_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "STORAGE_EMULATOR_HOST",
    "SNAPDIR_B2_REALM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)

#: Names (compared case-insensitively, ``-`` and ``_`` alike) whose values are secrets, as
#: query parameters, headers, ``name=value`` pairs, dict or JSON fields.
SECRET_NAMES = (
    # AWS: presigned URLs (SigV4 and SigV2), headers, credential files and env dumps
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "awsaccesskeyid",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_security_token",
    "secret_access_key",
    "secretaccesskey",
    "session_token",
    "sessiontoken",
    "security_token",
    # Google: signed URLs, service-account JSON, OAuth
    "x-goog-signature",
    "x-goog-credential",
    "x-goog-security-token",
    "private_key",
    "private_key_id",
    "client_secret",
    "refresh_token",
    "access_token",
    "id_token",
    # Backblaze B2
    "application_key",
    "applicationkey",
    "b2_application_key",
    "authorizationtoken",
    # generic
    "authorization",
    "proxy-authorization",
    "x-auth-token",
    "token",
    "sig",
    "key",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "pwd",
    "secret",
    "credential",
    "credentials",
)

#: Names too common in prose to be taken as a secret's name after a bare ``name:``.
_GENERIC_NAMES = frozenset(
    {"key", "token", "sig", "secret", "signature", "credential", "credentials", "pwd"}
)

_ALL_ENV = SECRET_ENV + SECRET_FILE_ENV + URL_ENV
_ALL_ENV_BYTES = tuple(name.encode() for name in _ALL_ENV)
#: Fields of a key file (service-account JSON) whose values are secrets.
_FILE_FIELDS = ("private_key", "private_key_id", "client_secret", "refresh_token")

_env_key: tuple[str | bytes | None, ...] | None = None
_literals: tuple[str, ...] = ()
_file_secrets: dict[str, tuple[str, ...]] = {}


def _quote(s: str) -> str:
    """Percent-encode everything but unreserved characters (what a URL-builder would do to a
    password; urllib.parse is not imported for it: it costs the CLI's start-up)."""
    out = []
    for ch in s:
        if ch.isascii() and (ch.isalnum() or ch in "-._~"):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    return "".join(out)


def _unquote(s: str) -> str:
    if "%" not in s:
        return s
    import re

    try:
        return re.sub(
            r"(?:%[0-9A-Fa-f]{2})+",
            lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8", "replace"),
            s,
        )
    except ValueError:  # pragma: no cover - the pattern only matches hex
        return s


def _userinfo_span(rest: str) -> int:
    """The length of the userinfo at the start of ``rest`` (what follows ``scheme://``) —
    up to and not including its ``@`` — or 0 when there is none. See the module docstring
    for how an unencoded ``@``, ``/``, ``?`` or ``#`` in a password is handled."""
    if "@" not in rest or rest.startswith("/"):
        return 0
    slash = rest.find("/")
    authority = rest if slash < 0 else rest[:slash]
    # The last "@" of the URL, leaving out a snapshot reference's "@<64 hex>".
    last = rest.rfind("@")
    tail = rest[last + 1 :]
    if len(tail) >= 64 and not tail[:64].strip("0123456789abcdefABCDEF"):
        last = rest.rfind("@", 0, last)
    if "@" in authority:
        # There is a userinfo. A password with a "/" in it and an "@" after it
        # (u:p@ss/w@host) reaches the last "@": masking a path's "@"-part too is the price.
        return max(authority.rfind("@"), last)
    # No "@" before the first "/": either a path with "@" in it (s3://b/x@<id>,
    # http://host:9000/a@b) or a password with "/" in it (AWS secret keys often have one).
    # The latter only when the part before the "/" reads user:password, not host:port.
    colon = authority.find(":")
    if colon < 0 or "[" in authority or authority[colon + 1 :].isdigit():
        return 0
    return max(last, 0)


def redact_url(url: str) -> str:
    """``url`` with its userinfo and the values of secret query parameters masked
    (``s3://***@bucket/p``, ``https://host/o?X-Amz-Signature=***&x=1``); anything else as
    :func:`redact_text` masks it."""
    return redact_text(url)


def _secret_from_url(value: str) -> list[str]:
    """The userinfo of a URL-valued variable, whole and as its password alone, in every
    spelling (as given, percent-decoded, percent-encoded)."""
    rest = value.split("://", 1)[1] if "://" in value else value
    span = _userinfo_span(rest)
    if span <= 0:
        return []
    userinfo = rest[:span]
    password = userinfo.split(":", 1)[1] if ":" in userinfo else userinfo
    out = []
    for s in (userinfo, password):
        out += [s, _unquote(s), _quote(_unquote(s))]
    return out


def _secrets_in_file(path: str) -> tuple[str, ...]:
    """Key material of a credentials file (read once per process and path): the secret
    fields of a JSON key file, or a whole token file."""
    cached = _file_secrets.get(path)
    if cached is not None:
        return cached
    found: list[str] = []
    try:
        if os.path.getsize(path) <= 1 << 20:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            stripped = text.strip()
            if stripped.startswith("{"):
                found += _json_fields(stripped)
            elif stripped:
                found.append(stripped)  # a token file: the whole content is the token
    except (OSError, ValueError):
        pass
    result = tuple(found)
    _file_secrets[path] = result
    return result


def _json_fields(text: str) -> list[str]:
    import json

    try:
        info = json.loads(text)
    except ValueError:
        return []
    if not isinstance(info, dict):
        return []
    out = []
    for name in _FILE_FIELDS:
        value = info.get(name)
        if isinstance(value, str) and value:
            out.append(value)
            out.append(json.dumps(value)[1:-1])  # as it appears inside JSON text
            out.extend(line for line in value.splitlines() if len(line) >= 16)
    return out


def _env_snapshot() -> tuple[str | bytes | None, ...]:
    """The values of the variables in ``_ALL_ENV``, as cheaply as possible: this runs on
    every message rendered. On POSIX, ``os.environ`` keeps its values in a bytes dict that
    every change through ``os.environ`` updates; reading that dict directly costs a twentieth
    of ``os.environ.get`` (which encodes and decodes each name and value)."""
    data = getattr(os.environ, "_data", None)
    if os.name == "posix" and isinstance(data, dict):
        return tuple(map(data.get, _ALL_ENV_BYTES))
    return tuple(map(os.environ.get, _ALL_ENV))


def _known_secrets() -> tuple[str, ...]:
    """Literal secrets from the environment, longest first, recomputed only when one of the
    variables changes."""
    global _env_key, _literals
    key = _env_snapshot()
    if key == _env_key:
        return _literals
    found: list[str] = []
    values = {name: os.environ.get(name) for name in _ALL_ENV}
    for name in SECRET_ENV:
        value = (values[name] or "").strip()
        if value:
            found += [value, _quote(value)]
    for name in SECRET_FILE_ENV:
        value = (values[name] or "").strip()
        if not value:
            continue
        if value.startswith("{"):
            found += [value, *_json_fields(value)]
        elif os.path.isfile(value):
            found += _secrets_in_file(value)
    for name in URL_ENV:
        value = (values[name] or "").strip()
        if value and "@" in value:
            found += _secret_from_url(value)
    literals = sorted({s for s in found if len(s) >= MIN_LITERAL}, key=len, reverse=True)
    _env_key, _literals = key, tuple(literals)
    return _literals


_compiled: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = []


def _patterns() -> list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]]:
    if _compiled:
        return _compiled
    import re

    def alternation(names: tuple[str, ...] | list[str]) -> str:
        # "-" and "_" alike (x-amz-security-token, X_Amz_Security_Token); longest first.
        spelled = (re.escape(n).replace("\\-", "-").replace("_", "-") for n in names)
        return "|".join(sorted((n.replace("-", "[-_]") for n in spelled), key=len, reverse=True))

    names = alternation(SECRET_NAMES)
    # In prose, "key: ..." or "token: expired" is not a secret; these count only as
    # name=value or as a quoted field name.
    specific = alternation([n for n in SECRET_NAMES if n not in _GENERIC_NAMES])
    # A PEM private key block (also with its newlines escaped as \n, or cut off).
    pem = re.compile(
        r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)"
        r"(?:.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----)|[^\"']*)",
        re.DOTALL,
    )
    # scheme://rest-of-the-URL, up to white space or a quote.
    url = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*://)([^\s\"'<>`]*)")
    # name=value (query strings, key=value dumps): the value runs to & ; , white space or a
    # quote. An "Authorization=" value may start with a scheme word (Bearer, AWS4-...).
    pair = re.compile(
        r"(?i)(?<![A-Za-z0-9_])(" + names + r")(\s*=\s*)([^&;,\s\"'<>`]*)",
    )
    # name: value / 'name': 'value' / "name": "value" (headers, reprs, JSON); a header value
    # may start with its scheme (Bearer, Basic, AWS4-HMAC-SHA256 Credential=...).
    # The quotes may be escaped (a JSON document inside a JSON string, a repr of a repr):
    # a value quoted with \" runs to the next \".
    field = re.compile(
        r"(?i)(?<![A-Za-z0-9_])(?:(?P<q>\\*[\"'])(?P<qname>" + names + r")(?P=q)"
        r"|(?P<name>" + specific + r"))(?P<sep>\s*:\s*)"
        r"(?:(?P<bp>b?)(?P<vq>[\"'])(?P<quoted>(?:\\.|(?!(?P=vq)).)*)(?P=vq)"
        r"|(?P<evq>\\+[\"'])(?P<equoted>.*?)(?P=evq)"
        r"|(?P<scheme>(?:Bearer|Basic|Digest|Token|OAuth|AWS4-HMAC-SHA256|GOOG4-RSA-SHA256"
        r"|GOOG4-HMAC-SHA256|AWS)\s+)?(?P<bare>[^\s,;&\"'<>`}\]\\]+))",
        re.DOTALL,
    )
    shapes = re.compile(r"\b(?:AIza[0-9A-Za-z_\-]{30,}|ya29\.[0-9A-Za-z_\-.]{8,})")

    def pem_sub(m: re.Match[str]) -> str:
        return m.group(1) + MASK + (m.group(2) or "")

    def url_sub(m: re.Match[str]) -> str:
        scheme, rest = m.group(1), m.group(2)
        span = _userinfo_span(rest)
        if span > 0:
            rest = MASK + rest[span:]
        return scheme + rest

    def field_sub(m: re.Match[str]) -> str:
        q = m.group("q") or ""
        head = q + (m.group("qname") or m.group("name")) + q + m.group("sep")
        if m.group("vq") is not None:
            if m.group("quoted") == MASK:
                return m.group()
            return head + m.group("bp") + m.group("vq") + MASK + m.group("vq")
        if m.group("evq") is not None:
            return head + m.group("evq") + MASK + m.group("evq")
        return head + (m.group("scheme") or "") + MASK

    def pair_sub(m: re.Match[str]) -> str:
        return m.group(1) + m.group(2) + (MASK if m.group(3) else "")

    built: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
        (pem, pem_sub),
        (url, url_sub),
        (field, field_sub),
        (pair, pair_sub),
        (shapes, MASK),
    ]  # the order redact_text unpacks them in
    # Worker threads (the cloud stores' batches) may get here at once on first use: each
    # replaces the whole contents (one C-level slice assignment under the GIL), so the list
    # never holds the patterns twice, as extend() from two threads would.
    _compiled[:] = built
    return _compiled


#: Substrings (lower case) at least one of which every name in SECRET_NAMES contains: text
#: without any of them skips the name/value patterns.
_NAME_ROOTS = ("key", "token", "secret", "sig", "pass", "pwd", "auth", "credential")


def redact_text(text: str) -> str:
    """``text`` with every secret masked (see the module docstring for what and how).

    Cheap when there is nothing to mask (a substring test per known secret and per pattern
    family): it runs on every error snapdir renders."""
    if not text:
        return text
    for secret in _known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    pem, url, field, pair, shapes = _patterns()
    if "-----BEGIN" in text:
        text = pem[0].sub(pem[1], text)
    if "@" in text and "://" in text:
        text = url[0].sub(url[1], text)
    lowered = text.lower()
    if any(root in lowered for root in _NAME_ROOTS):
        text = field[0].sub(field[1], text)
        if "=" in text:
            text = pair[0].sub(pair[1], text)
    if "AIza" in text or "ya29." in text:
        text = shapes[0].sub(shapes[1], text)
    return text


def redact_exception(exc: BaseException) -> BaseException:
    """Mask secrets in the message of ``exc`` and of the exceptions chained to it, in place,
    and return ``exc``: an SDK exception kept as the ``__cause__`` of a snapdir error is
    printed with it in a traceback."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        _redact_one(e)
        # A traceback prints the cause, else the context, and theirs in turn.
        pending.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return exc


def _redact_one(e: BaseException) -> None:
    try:
        if isinstance(e, OSError):
            for attr in ("strerror", "filename", "filename2"):
                value = getattr(e, attr, None)
                if isinstance(value, str):
                    setattr(e, attr, redact_text(value))
        text = str(e)
        if redact_text(text) == text:
            return
        e.args = tuple(redact_text(a) if isinstance(a, str) else a for a in e.args)
        if redact_text(str(e)) != str(e):
            # The message is built from attributes, not from args.
            e.args = (redact_text(text),)
        # botocore keeps what it formatted its message from (endpoint_url=...) in .kwargs.
        kwargs = getattr(e, "kwargs", None)
        if isinstance(kwargs, dict):
            e.kwargs = {  # type: ignore[attr-defined]
                k: redact_text(v) if isinstance(v, str) else v for k, v in kwargs.items()
            }
    except Exception:  # an exotic exception stays as it is, never worse
        pass


class _LogFilter:
    """A :mod:`logging` filter (duck-typed: this module does not import logging) that masks
    secrets in a record's message and in the traceback it carries. Attached to snapdir's
    loggers where they are created (``logger.addFilter(LOG_FILTER)``)."""

    def filter(self, record: Any) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is for logging to report
            return True
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            import traceback

            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact_text(text)
        return True


#: The one filter instance for snapdir's loggers.
LOG_FILTER = _LogFilter()
