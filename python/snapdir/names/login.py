"""Store credentials kept in the OS keyring (the ``[keyring]`` extra), so that a release
tool does not need secrets in the environment or in files.

``login(uri, key_id, secret)`` keeps a key id and secret for a store's bucket
(``s3://bucket`` or ``b2://bucket``: keys are per bucket, not per prefix) under the
keyring service ``snapdir``. When a store is opened, the credentials are taken in this
order: explicit arguments (a flag) > the environment (``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``, ``B2_APPLICATION_KEY_ID``/``B2_APPLICATION_KEY``) > the
keyring > the SDK's own chain (``~/.aws``, instance metadata, ...). A keyring entry is
put into this process's environment only when the environment has none, and only for the
store's SDK to read: it is never written to a store, a record, a lockfile or output.
``SNAPDIR_KEYRING=0`` turns the lookup off.

For GCS (``gs://bucket``) what is kept is a service-account key (the JSON key file's
content, checked and loadable), since GCS has no key pair: the environment
(``GOOGLE_APPLICATION_CREDENTIALS``) > the keyring > Application Default Credentials. The
key is handed to the store layer in memory
(:func:`snapdir.stores.gcs.use_service_account`, then
``google.oauth2.service_account.Credentials.from_service_account_info``): it is never
written to a file, an environment variable, a store or output.
"""

from __future__ import annotations

import json
import os

from .._errors import InvalidArgumentError, SnapdirError
from .._types import StoreUri

__all__ = [
    "ENV",
    "SERVICE",
    "account",
    "check_service_account",
    "credentials",
    "login",
    "logout",
    "service_account",
    "use_keyring",
]

SERVICE = "snapdir"
#: The environment variables each scheme's SDK reads its key pair from.
ENV = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "b2": ("B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY"),
}
#: What the Google SDKs read a service-account key file's path from.
GCS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
#: A service-account key file is about 2.3 KB; more is not one.
MAX_SERVICE_ACCOUNT = 64 * 1024
_SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key", "token_uri")


def account(uri: str) -> tuple[str, str]:
    """(scheme, ``scheme://bucket``) of a store: what a keyring entry is kept under."""
    u = str(StoreUri(uri))
    scheme, rest = u.split("://", 1)
    if scheme not in ENV and scheme != "gs":
        raise InvalidArgumentError(
            f"login keeps S3 and B2 key pairs and GCS service-account keys; {scheme}:// "
            "stores need none",
            code="INVALID_ARGUMENT",
        )
    return scheme, f"{scheme}://{rest.split('/', 1)[0]}"


def _keyring() -> object:
    try:
        import keyring
    except ImportError:
        raise SnapdirError(
            "login needs the keyring library: pip install 'snapdir[keyring]'"
        ) from None
    return keyring


def check_service_account(text: str) -> dict[str, object]:
    """A GCS service-account key (the JSON key file's content), checked: a JSON object of
    ``"type": "service_account"`` with a client email, a private key and a token URI, that
    ``google.oauth2.service_account`` can load. Errors never quote the key."""
    if len(text) > MAX_SERVICE_ACCOUNT:
        raise InvalidArgumentError(
            f"a service-account key file is at most {MAX_SERVICE_ACCOUNT} bytes",
            code="INVALID_ARGUMENT",
        )
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgumentError(
            "the service-account key is not JSON (give the key file Google Cloud made)",
            code="INVALID_ARGUMENT",
        ) from None
    if not isinstance(doc, dict) or doc.get("type") != "service_account":
        raise InvalidArgumentError(
            'not a service-account key (it needs "type": "service_account")',
            code="INVALID_ARGUMENT",
        )
    missing = [f for f in _SERVICE_ACCOUNT_FIELDS if not (isinstance(doc.get(f), str) and doc[f])]
    if missing:
        raise InvalidArgumentError(
            f"the service-account key lacks {', '.join(missing)}", code="INVALID_ARGUMENT"
        )
    try:
        from google.oauth2 import service_account as sa
    except ImportError:
        raise SnapdirError("a GCS login needs google-auth: pip install 'snapdir[gcs]'") from None
    try:
        sa.Credentials.from_service_account_info(doc)  # type: ignore[no-untyped-call,unused-ignore]
    except Exception:  # its message may quote the key
        raise InvalidArgumentError(
            "the service-account key could not be loaded (is private_key a PEM key?)",
            code="INVALID_ARGUMENT",
        ) from None
    return doc


def login(uri: str, key_id: str, secret: str) -> str:
    """Keep ``key_id``/``secret`` for the store's bucket; returns the account name. For a
    ``gs://`` store ``secret`` is a service-account key file's content and ``key_id`` is
    empty."""
    scheme, acct = account(uri)
    if scheme == "gs":
        if key_id:
            raise InvalidArgumentError(
                "a GCS login keeps a service-account key file, which names its own account: "
                "no key id",
                code="INVALID_ARGUMENT",
            )
        doc = check_service_account(secret)
        _keyring().set_password(SERVICE, acct, json.dumps({"service_account": doc}))  # type: ignore[attr-defined]
        return acct
    if not key_id or not secret or any(c in key_id + secret for c in "\n\r\0"):
        raise InvalidArgumentError("login needs a key id and a secret, one line each")
    kr = _keyring()
    kr.set_password(SERVICE, acct, json.dumps({"key_id": key_id, "secret": secret}))  # type: ignore[attr-defined]
    return acct


def logout(uri: str) -> tuple[str, bool]:
    """Forget what ``login`` kept; (account, whether there was anything)."""
    _, acct = account(uri)
    kr = _keyring()
    if kr.get_password(SERVICE, acct) is None:  # type: ignore[attr-defined]
        return acct, False
    kr.delete_password(SERVICE, acct)  # type: ignore[attr-defined]
    return acct, True


def _keyring_off() -> bool:
    return os.environ.get("SNAPDIR_KEYRING", "1").strip().lower() in ("0", "false", "no", "off")


def service_account(uri: str) -> tuple[dict[str, object] | None, str | None]:
    """``(key, source)`` for a ``gs://`` store: ``(None, "environment")`` when
    ``GOOGLE_APPLICATION_CREDENTIALS`` is set (the SDK reads it), ``(key, "keyring")`` when
    login kept one, ``(None, None)``: Application Default Credentials. A kept entry that
    no longer checks is ignored (the SDK's chain then), never quoted."""
    _, acct = account(uri)
    if os.environ.get(GCS_ENV):
        return None, "environment"
    if _keyring_off():
        return None, None
    try:
        import keyring

        raw = keyring.get_password(SERVICE, acct)
    except Exception:  # no keyring library or no usable backend: the SDK's chain
        return None, None
    if raw is None:
        return None, None
    try:
        doc = json.loads(raw)["service_account"]
        return check_service_account(json.dumps(doc)), "keyring"
    except (ValueError, KeyError, TypeError, SnapdirError):
        return None, None


def credentials(
    uri: str, *, key_id: str | None = None, secret: str | None = None
) -> tuple[str, str, str] | None:
    """``(key_id, secret, source)`` for an S3 or B2 store, source ``flag``,
    ``environment`` or ``keyring``; None: leave it to the SDK's own chain (and always for
    ``gs://``: see :func:`service_account`)."""
    scheme, acct = account(uri)
    if scheme not in ENV:
        return None
    if key_id and secret:
        return key_id, secret, "flag"
    id_var, secret_var = ENV[scheme]
    env_id, env_secret = os.environ.get(id_var, ""), os.environ.get(secret_var, "")
    if env_id and env_secret:
        return env_id, env_secret, "environment"
    if _keyring_off():
        return None
    try:
        import keyring

        raw = keyring.get_password(SERVICE, acct)
    except Exception:  # no keyring library or no usable backend: the SDK's chain
        return None
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        kid, sec = str(doc["key_id"]), str(doc["secret"])
    except (ValueError, KeyError, TypeError):
        return None
    return kid, sec, "keyring"


def use_keyring(uri: str) -> str | None:
    """Before a store is opened: if the environment has no key pair for it and the keyring
    has one, put it into this process's environment (for the SDK); for ``gs://``, hand a
    kept service-account key to the store layer, in memory. Returns the source used
    (``environment``, ``keyring``) or None (the SDK's chain)."""
    try:
        scheme, acct = account(uri)
    except InvalidArgumentError:
        return None
    if scheme == "gs":
        from ..stores.gcs import use_service_account

        key, source = service_account(uri)
        use_service_account(acct.split("://", 1)[1], key)
        return source
    found = credentials(uri)
    if found is None:
        return None
    kid, sec, source = found
    if source == "keyring":
        id_var, secret_var = ENV[scheme]
        os.environ[id_var], os.environ[secret_var] = kid, sec
    return source
