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
``SNAPDIR_KEYRING=0`` turns the lookup off. GCS uses service-account files or the
metadata server, not a key pair, so it is not offered here.
"""

from __future__ import annotations

import json
import os

from .._errors import InvalidArgumentError, SnapdirError
from .._types import StoreUri

__all__ = ["ENV", "SERVICE", "account", "credentials", "login", "logout", "use_keyring"]

SERVICE = "snapdir"
#: The environment variables each scheme's SDK reads its key pair from.
ENV = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "b2": ("B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY"),
}


def account(uri: str) -> tuple[str, str]:
    """(scheme, ``scheme://bucket``) of a store: what a keyring entry is kept under."""
    u = str(StoreUri(uri))
    scheme, rest = u.split("://", 1)
    if scheme not in ENV:
        raise InvalidArgumentError(
            f"login keeps S3 and B2 key pairs; {scheme}:// stores use their SDK's own credentials",
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


def login(uri: str, key_id: str, secret: str) -> str:
    """Keep ``key_id``/``secret`` for the store's bucket; returns the account name."""
    _, acct = account(uri)
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


def credentials(
    uri: str, *, key_id: str | None = None, secret: str | None = None
) -> tuple[str, str, str] | None:
    """``(key_id, secret, source)`` for a store, source ``flag``, ``environment`` or
    ``keyring``; None: leave it to the SDK's own chain."""
    scheme, acct = account(uri)
    if key_id and secret:
        return key_id, secret, "flag"
    id_var, secret_var = ENV[scheme]
    env_id, env_secret = os.environ.get(id_var, ""), os.environ.get(secret_var, "")
    if env_id and env_secret:
        return env_id, env_secret, "environment"
    if os.environ.get("SNAPDIR_KEYRING", "1").strip().lower() in ("0", "false", "no", "off"):
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
    has one, put it into this process's environment (for the SDK). Returns the source used
    (``environment``, ``keyring``) or None (the SDK's chain)."""
    try:
        scheme, _ = account(uri)
    except InvalidArgumentError:
        return None
    found = credentials(uri)
    if found is None:
        return None
    kid, sec, source = found
    if source == "keyring":
        id_var, secret_var = ENV[scheme]
        os.environ[id_var], os.environ[secret_var] = kid, sec
    return source
