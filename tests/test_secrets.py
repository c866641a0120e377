"""Secrets never leave in output (docs/reliability.md, "Secrets in output").

A corpus of credential shapes — userinfo in store URIs and endpoint URLs (with and without
ports, IPv6 hosts, percent-encoded passwords, passwords with ``@ : / # ?``), query tokens and
signatures of each provider, presigned URLs, credential environment variables of each
backend, PEM keys, service-account and OAuth JSON, headers — goes through:

* :func:`snapdir._redact.redact_text` itself, with what must be kept (scheme, host, port,
  bucket, path) checked as well as what must go, and text that must come out unchanged;
* every rendering in the package: errors' ``str``/``repr``/``args``/tracebacks, StoreUri's
  refusal, warnings, store log lines, progress labels;
* every CLI command that takes a store (``push fetch pull checkout sync diff verify size
  stage``), as a subprocess, in text and ``--json`` mode, against every backend: the
  file:// store and the real loopback servers (SeaweedFS, fake-gcs-server, the B2
  simulator), failing in the ways a user meets: an endpoint on a dead port (connection
  refused), a malformed URI, credentials the real server refuses, a missing bucket;
* the Python API against the same servers, exception ``str``/``repr`` and the full
  traceback with its chained SDK exceptions.

Nothing here talks to anything but 127.0.0.1: a run that would otherwise go to a cloud
(Google credentials without an emulator) has its proxy pointed at a dead loopback port.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
import snapdir
from servers._proc import free_port
from servers.b2sim import B2Server
from servers.fakegcs import GcsServer
from servers.seaweed import S3Server
from snapdir._errors import SnapdirError, StoreError, _from_code, _warn
from snapdir._redact import LOG_FILTER, MASK, redact_exception, redact_text, redact_url
from snapdir._types import StoreUri

SNAP_ID = "5" * 64
#: An AWS-style secret key with the "/" such keys often have.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDXsecretPEMbody"
PEM = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n"
RSA_BODY = "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjMsecretRSAbody0123"
SA_KEY_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
SERVICE_ACCOUNT = json.dumps(
    {
        "type": "service_account",
        "project_id": "snapdir-test",
        "private_key_id": SA_KEY_ID,
        "private_key": PEM,
        "client_email": "svc@snapdir-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        # Loopback only: should anything try to refresh a token, it meets a dead port.
        "token_uri": "http://127.0.0.1:9/token",
    }
)
AUTHORIZED_USER = json.dumps(
    {
        "type": "authorized_user",
        "client_id": "0000.apps.googleusercontent.com",
        "client_secret": "GOCSPX-clientSecretValue42",
        "refresh_token": "1//0gRefreshTokenValueSecret",
    }
)


@dataclass(frozen=True)
class Shape:
    """One credential shape: ``text`` carries it; none of ``secrets`` may survive redaction,
    each of ``keep`` must (so errors stay useful)."""

    name: str
    text: str
    secrets: tuple[str, ...]
    keep: tuple[str, ...] = ()


#: Shapes a user can put where the CLI expects a store URI, a reference, an id or a path
#: (a malformed argument: the error quotes it).
ARG_SHAPES = [
    Shape(
        "s3-userinfo-aws-secret-with-slash",
        f"s3://AKIAIOSFODNN7EXAMPLE:{AWS_SECRET}@bucket/p",
        (AWS_SECRET, "wJalrXUtnFEMI", "bPxRfiCYEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE:"),
        ("s3://***@bucket/p",),
    ),
    Shape("gs-userinfo", "gs://svc:gcsPa55word@bucket/p", ("gcsPa55word",), ("gs://***@bucket/p",)),
    Shape(
        "b2-userinfo",
        "b2://0012ab34cd:K001b2SecretKeyValue123@bucket/p",
        ("K001b2SecretKeyValue123",),
        ("b2://***@bucket/p",),
    ),
    Shape(
        "file-userinfo",
        "file://admin:filePa55word@nas.local/srv/snap",
        ("filePa55word",),
        ("file://***@nas.local/srv/snap",),
    ),
    Shape(
        "percent-encoded-password",
        "s3://user:p%40ss%2Fw0rd%3Fx@bucket/p",
        ("p%40ss%2Fw0rd%3Fx", "w0rd"),
        ("s3://***@bucket/p",),
    ),
    Shape(
        "password-with-at-colon-slash-hash-query",
        "s3://user:p@ss:w/or#d?x@bucket/p",
        ("p@ss", "ss:w", "or#d?x"),
        ("@bucket/p",),
    ),
    Shape(
        "http-endpoint-userinfo-port-as-store",
        "http://minio:minioSecret123@127.0.0.1:9000/bucket",
        ("minioSecret123",),
        ("http://***@127.0.0.1:9000/bucket",),
    ),
    Shape(
        "https-userinfo-no-port",
        "https://deploy:httpsNoPortSecret@storage.example/bucket",
        ("httpsNoPortSecret",),
        ("https://***@storage.example/bucket",),
    ),
    Shape(
        "s3-presigned-sigv4",
        "https://bucket.s3.amazonaws.com/p/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261207%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20261207T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEsessionTokenValue"
        "&X-Amz-Signature=4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c",
        (
            "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c",
            "IQoJb3JpZ2luX2VjEsessionTokenValue",
            "AKIAIOSFODNN7EXAMPLE%2F20261207",
        ),
        ("https://bucket.s3.amazonaws.com/p/obj?", "X-Amz-Signature=***"),
    ),
    Shape(
        "s3-presigned-sigv2",
        "https://bucket.s3.amazonaws.com/obj?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE"
        "&Expires=1700000000&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
        ("vjbyPxybdZaNmGa%2ByT272YEAiv4%3D", "vjbyPxybdZaNmGa"),
        ("Expires=1700000000",),
    ),
    Shape(
        "s3-uri-with-security-token",
        "s3://bucket/p?X-Amz-Security-Token=FwoGZXIvYXdzEBYaDHsecretSessionTok",
        ("FwoGZXIvYXdzEBYaDHsecretSessionTok",),
        ("s3://bucket/p?X-Amz-Security-Token=***",),
    ),
    Shape(
        "gcs-signed-url",
        "https://storage.googleapis.com/bucket/obj?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        "&X-Goog-Credential=svc%40proj.iam.gserviceaccount.com%2F20261207%2Fauto%2Fstorage"
        "&X-Goog-Date=20261207T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
        "&X-Goog-Signature=8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5fgoogsig",
        ("8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5fgoogsig", "svc%40proj"),
        ("https://storage.googleapis.com/bucket/obj?",),
    ),
    Shape(
        "gs-uri-with-access-token",
        "gs://bucket/p?access_token=ya29.a0AfB_byCsecretOAuthToken",
        ("ya29.a0AfB_byCsecretOAuthToken", "a0AfB_byCsecretOAuthToken"),
        ("gs://bucket/p?access_token=***",),
    ),
    Shape(
        "b2-uri-with-authorization",
        "b2://bucket/p?Authorization=4_0022623512fc8f80000000001_01999999_secretAuthTok",
        ("4_0022623512fc8f80000000001_01999999_secretAuthTok",),
        ("b2://bucket/p?Authorization=***",),
    ),
    Shape(
        "generic-sig-token-key",
        "https://cdn.example/p?sig=abcSIGsecretValue%3D&token=tokSecretValue99"
        "&key=AIzaSyA1234567890abcdefghijklmnopqrstuv",
        ("abcSIGsecretValue", "tokSecretValue99", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
        ("https://cdn.example/p?sig=***",),
    ),
    Shape(
        "credentials-file-line",
        f"aws_secret_access_key = {AWS_SECRET}",
        (AWS_SECRET, "wJalrXUtnFEMI"),
        ("aws_secret_access_key = ***",),
    ),
    Shape(
        "env-dump-session-token",
        "AWS_SESSION_TOKEN=IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD",
        ("IQoJb3JpZ2luX2VjEJr", "wEaCXVzLWVhc3QtMSJHMEUCIQD"),
        ("AWS_SESSION_TOKEN=***",),
    ),
    Shape("pem-private-key", PEM, (PEM_BODY,), ("-----BEGIN PRIVATE KEY-----***",)),
    Shape(
        "pem-rsa-key-cut-off",
        f"-----BEGIN RSA PRIVATE KEY-----\n{RSA_BODY}\nMIIfollowing",
        (RSA_BODY, "MIIfollowing"),
        ("-----BEGIN RSA PRIVATE KEY-----",),
    ),
    Shape(
        "service-account-json",
        SERVICE_ACCOUNT,
        (PEM_BODY, SA_KEY_ID),
        ('"private_key_id": "***"', "svc@snapdir-test.iam.gserviceaccount.com"),
    ),
    Shape(
        "authorized-user-json",
        AUTHORIZED_USER,
        ("GOCSPX-clientSecretValue42", "1//0gRefreshTokenValueSecret"),
        ('"client_secret": "***"',),
    ),
    Shape(
        "authorization-bearer-header",
        "Authorization: Bearer ya29.a0AfB_byDBearerTokenValue",
        ("ya29.a0AfB_byDBearerTokenValue", "a0AfB_byDBearerTokenValue"),
        ("Authorization: Bearer ***",),
    ),
    Shape(
        "authorization-basic-header",
        "Proxy-Authorization: Basic dXNlcjpwYXNzd29yZGJhc2lj",
        ("dXNlcjpwYXNzd29yZGJhc2lj",),
        ("Proxy-Authorization: Basic ***",),
    ),
]

#: Shapes only meaningful in free text (SDK messages, log lines, reprs).
TEXT_SHAPES = [
    Shape(
        "sigv4-authorization-header-repr",
        "{'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261207/"
        "us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0123456789abcdefsigv4hdr'}",
        ("0123456789abcdefsigv4hdr", "AKIAIOSFODNN7EXAMPLE/20261207"),
        ("{'Authorization': b'***'}",),
    ),
    Shape(
        "ipv6-endpoint-userinfo",
        'Could not connect to the endpoint URL: "http://user:v6Passw0rd@[::1]:9000/b/k"',
        ("v6Passw0rd",),
        ("http://***@[::1]:9000/b/k",),
    ),
    Shape(
        "endpoint-userinfo-in-message",
        "EndpointConnectionError: Could not connect to the endpoint URL: "
        '"http://AKID:s3EndpointPw@127.0.0.1:1/bucket?list-type=2&prefix=p%2F"',
        ("s3EndpointPw",),
        ("http://***@127.0.0.1:1/bucket?list-type=2&prefix=p%2F",),
    ),
    Shape(
        "json-private-key-escaped",
        '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIescapedKeyBody==\\n-----END'
        ' PRIVATE KEY-----\\n"}',
        ("MIIescapedKeyBody",),
        ('{"private_key": "***"}',),
    ),
    Shape(
        "dict-repr-secret-key",
        f"{{'aws_access_key_id': 'AKIAIOSFODNN7EXAMPLE', 'aws_secret_access_key': '{AWS_SECRET}'}}",
        (AWS_SECRET,),
        ("'aws_secret_access_key': '***'", "AKIAIOSFODNN7EXAMPLE"),
    ),
    Shape(
        "x-amz-security-token-header",
        "x-amz-security-token: FQoGZXIvYXdzEHeaderSessionToken",
        ("FQoGZXIvYXdzEHeaderSessionToken",),
        ("x-amz-security-token: ***",),
    ),
    Shape(
        "google-api-key-bare",
        "request failed for AIzaSyB9876543210zyxwvutsrqponmlkjihgfe: 403",
        ("AIzaSyB9876543210zyxwvutsrqponmlkjihgfe",),
        ("request failed for ***: 403",),
    ),
    Shape(
        "password-field",
        "proxy config password=hunter2hunter2 user=alice",
        ("hunter2hunter2",),
        ("password=***", "user=alice"),
    ),
]

CORPUS = ARG_SHAPES + TEXT_SHAPES

#: Messages that contain nothing secret and must come out unchanged.
CLEAN = [
    "s3://bucket/prefix/.objects/abc/def/ghi/0123456789abcdef: not found",
    f"snapshot {SNAP_ID} not found in s3://bucket/p@{SNAP_ID}",
    "file:///srv/user@host/snapshots: cannot create",
    "http://127.0.0.1:9000/bucket/a@b: 404",
    "http://[::1]:9000/bucket/k: refused",
    "GOOGLE_APPLICATION_CREDENTIALS=/etc/keys/sa.json could not be used",
    "B2 refused the application key 0012ab34cd (Unauthorized): set B2_APPLICATION_KEY_ID",
    "the object key: 1234 is missing; token: expired",
    "uploaded 3 of 4 objects (12 bytes)",
]


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30
    assert len({s.name for s in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("shape", CORPUS, ids=lambda s: s.name)
def test_redact_text_masks_every_shape_and_keeps_the_rest(shape: Shape) -> None:
    for secret in shape.secrets:
        assert secret in shape.text, "the corpus entry must carry its secret"
    out = redact_text(shape.text)
    for secret in shape.secrets:
        assert secret not in out, f"{secret!r} survived: {out!r}"
    for kept in shape.keep:
        assert kept in out, f"{kept!r} lost: {out!r}"
    assert MASK in out
    assert redact_text(out) == out, "redaction is idempotent"
    # Inside a longer message and in repr form (as exceptions and JSON show them).
    for wrapped in (f"error: {shape.text!r}: failed", json.dumps({"error": shape.text})):
        masked = redact_text(wrapped)
        for secret in shape.secrets:
            assert secret not in masked, f"{secret!r} survived in {masked!r}"


@pytest.mark.parametrize("text", CLEAN)
def test_clean_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_redact_url_masks_userinfo_whole() -> None:
    assert redact_url("s3://KEY:SECRET@bucket/p") == "s3://***@bucket/p"
    assert redact_url("http://u:p@h:9000") == "http://***@h:9000"
    assert redact_url("http://token@h/x") == "http://***@h/x"
    assert redact_url("s3://bucket/p") == "s3://bucket/p"


# -------------------------------------------------------------------------------------------
# Environment values
# -------------------------------------------------------------------------------------------

#: (variable, value, secrets that may never appear)
ENV_SECRETS = [
    ("AWS_SECRET_ACCESS_KEY", "envSecretAccessKey/0123+abc", ("envSecretAccessKey/0123+abc",)),
    ("AWS_SESSION_TOKEN", "IQoJenvSessionToken0123456789", ("IQoJenvSessionToken0123456789",)),
    ("B2_APPLICATION_KEY", "K001envB2ApplicationKey0001", ("K001envB2ApplicationKey0001",)),
    ("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29-envOauthTok0123", ("ya29-envOauthTok0123",)),
    (
        "SNAPDIR_S3_STORE_ENDPOINT_URL",
        "http://AKID:envEndpointPassw0rd@127.0.0.1:1",
        ("envEndpointPassw0rd",),
    ),
    (
        "AWS_ENDPOINT_URL",
        "http://user:p%40ssEnvEncoded@127.0.0.1:1",
        ("p%40ssEnvEncoded", "p@ssEnvEncoded"),
    ),
    ("STORAGE_EMULATOR_HOST", "emu:envEmulatorPw99@127.0.0.1:1", ("envEmulatorPw99",)),
    ("SNAPDIR_B2_REALM", "http://b2:envRealmPassw0rd@127.0.0.1:1", ("envRealmPassw0rd",)),
    ("HTTPS_PROXY", "http://proxy:envProxyPassw0rd@127.0.0.1:1", ("envProxyPassw0rd",)),
    ("GOOGLE_APPLICATION_CREDENTIALS", SERVICE_ACCOUNT, (PEM_BODY, SA_KEY_ID)),
]


@pytest.mark.parametrize(("var", "value", "secrets"), ENV_SECRETS, ids=[e[0] for e in ENV_SECRETS])
def test_environment_values_are_masked_wherever_they_appear(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, secrets: tuple[str, ...]
) -> None:
    for secret in secrets:
        # Out of any context the patterns know: only the environment can tell.
        text = f"the SDK said {secret} | and {secret}"
        monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv(var, value)
        out = redact_text(text)
        assert secret not in out, out
        assert out.startswith("the SDK said ***")
        monkeypatch.delenv(var)
        assert redact_text(text) == text or var == "GOOGLE_APPLICATION_CREDENTIALS"


def test_key_file_contents_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "sa.json"
    key.write_text(SERVICE_ACCOUNT)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    # A line of the key as an SDK might quote it, out of any JSON or PEM context.
    out = redact_text(f"bad key material {PEM_BODY} in {SA_KEY_ID}")
    assert PEM_BODY not in out
    assert SA_KEY_ID not in out
    assert str(key) not in SERVICE_ACCOUNT
    assert redact_text(f"key file {key}") == f"key file {key}", "the path itself is kept"


def test_short_values_are_masked_only_in_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPDIR_S3_STORE_ENDPOINT_URL", "http://u:pw@127.0.0.1:1")
    assert redact_text("upload of pw.txt") == "upload of pw.txt"
    assert redact_text("http://u:pw@127.0.0.1:1/b") == "http://***@127.0.0.1:1/b"


# -------------------------------------------------------------------------------------------
# Every rendering in the package
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", CORPUS, ids=lambda s: s.name)
def test_errors_never_render_a_secret(shape: Shape) -> None:
    errors: list[BaseException] = [
        StoreError(f"s3://bucket/p: {shape.text}"),
        _from_code("NOT_FOUND", f"missing {shape.text}", 2),  # as the Rust core builds them
        _from_code("IO_ERROR", f"cannot read {shape.text}", 5),
    ]
    try:
        try:
            raise ConnectionError(f"SDK: {shape.text}")
        except ConnectionError as sdk:
            redact_exception(sdk)
            raise StoreError("s3://bucket/p: HEAD failed") from sdk
    except StoreError as chained:
        errors.append(chained)
    for e in errors:
        rendered = [
            str(e),
            repr(e),
            repr(e.args),
            "".join(traceback.format_exception(e)),
        ]
        for text in rendered:
            for secret in shape.secrets:
                assert secret not in text, f"{secret!r} in {text!r}"


def test_error_rendered_after_the_secret_entered_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    e = SnapdirError("the server echoed lateSecretValue42")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lateSecretValue42")
    assert "lateSecretValue42" not in str(e)
    assert "lateSecretValue42" not in repr(e)


@pytest.mark.parametrize("shape", ARG_SHAPES, ids=lambda s: s.name)
def test_store_uri_refusal_never_quotes_a_secret(shape: Shape) -> None:
    for value in (shape.text, f"s3://{shape.text}", f"file://{shape.text}"):
        try:
            uri = StoreUri(value)
        except SnapdirError as e:
            text = f"{e} {e!r}"
        else:
            text = f"{uri!r}"
        for secret in shape.secrets:
            assert secret not in text, text


def test_store_uri_with_credentials_is_refused_with_a_hint() -> None:
    with pytest.raises(snapdir.InvalidArgumentError) as info:
        StoreUri("s3://KEY:SECRETVALUE@bucket/p")
    message = str(info.value)
    assert "SECRETVALUE" not in message
    assert "s3://***@bucket/p" in message
    assert "AWS_SECRET_ACCESS_KEY" in message
    # A path with "@" in it is no credential.
    assert StoreUri("file:///srv/user@host/snaps").path == "/srv/user@host/snaps"
    with pytest.raises(snapdir.InvalidArgumentError, match="a file:// store takes none"):
        StoreUri("file://user:filePassw0rd@host/srv")


def test_plugged_in_scheme_with_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import snapdir._registry

    monkeypatch.setitem(snapdir._registry._registry, "sftp", object)
    assert StoreUri("sftp://host/srv") == "sftp://host/srv"
    with pytest.raises(snapdir.InvalidArgumentError) as info:
        StoreUri("sftp://deploy:sftpPassw0rd@host/srv")
    assert "sftpPassw0rd" not in str(info.value)
    assert "'sftp://***@host/srv'" in str(info.value)
    assert "through its environment or configuration" in str(info.value)


def test_warnings_log_lines_and_progress_labels_are_masked(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [s.text for s in CORPUS]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn([f"skipped {t}" for t in texts])
    import snapdir.stores._wrappers
    import snapdir.stores.b2
    import snapdir.stores.gcs
    import snapdir.stores.s3  # noqa: F401  (each attaches the filter to its logger)

    logger = logging.getLogger("snapdir.stores")
    assert LOG_FILTER in logger.filters, "store loggers carry the filter"
    assert LOG_FILTER in logging.getLogger("snapdir.stores.s3").filters
    with caplog.at_level(logging.INFO, logger="snapdir.stores"):
        for t in texts:
            logger.warning("%s: retry (%s)", "s3://bucket/p", t)
            try:
                raise ConnectionError(t)
            except ConnectionError:
                logger.info("failed", exc_info=True)
    from snapdir._progress import Reporter

    monkeypatch.setitem(sys.modules, "rich.progress", None)  # the plain reporter
    labels = [Reporter(f"push {t}").label for t in texts]
    formatter = logging.Formatter("%(message)s")
    outputs = {
        "warning": [str(w.message) for w in caught],
        "log message": [r.getMessage() for r in caplog.records if r.exc_info is None],
        "log line with traceback": [formatter.format(r) for r in caplog.records if r.exc_info],
        "progress label": labels,
    }
    for kind, lines in outputs.items():
        assert len(lines) == len(CORPUS), kind
        for shape, line in zip(CORPUS, lines, strict=True):
            assert MASK in line, f"{kind} of {shape.name}: {line!r}"
            for secret in shape.secrets:
                assert secret not in line, f"{kind} of {shape.name}: {secret!r} in {line!r}"


# -------------------------------------------------------------------------------------------
# The CLI, as a subprocess, against every backend
# -------------------------------------------------------------------------------------------

STORE_COMMANDS = ("push", "fetch", "pull", "sync", "diff", "verify", "size")
CACHE_COMMANDS = ("stage", "checkout")  # the local cache: a file:// store
COMMANDS = STORE_COMMANDS + CACHE_COMMANDS


@dataclass
class Run:
    """One CLI run expected to fail: ``argv`` for ``snapdir``, extra environment, the
    secrets that must not appear, and text that must (what makes the error useful)."""

    label: str
    argv: list[str]
    env: dict[str, str]
    secrets: tuple[str, ...]
    expect: tuple[str, ...] = ()
    json: bool = False
    result: subprocess.CompletedProcess[str] | None = field(default=None, repr=False)


def _argv(command: str, store: str, tree: Path, dest: Path, *, target: str = "") -> list[str]:
    """A command against ``store`` (for stage and checkout, whose store is the cache,
    ``target`` is the PATH or ID argument)."""
    other = f"file://{dest.parent / 'other-store'}"
    return {
        "push": ["push", str(tree), "--store", store],
        "fetch": ["fetch", SNAP_ID, "--store", store],
        "pull": ["pull", SNAP_ID, str(dest), "--store", store],
        "sync": ["sync", SNAP_ID, "--from", store, "--to", other],
        "diff": [
            "diff",
            "--from",
            f"{store}@{SNAP_ID}" if "://" in store else store,
            "--to",
            str(tree),
        ],
        "verify": ["verify", "--store", store],
        "size": ["size", "--store", store],
        "stage": ["stage", target or str(tree / "missing")],
        "checkout": ["checkout", target or SNAP_ID, str(dest)],
    }[command]


def _base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SNAPDIR_", "B2_"))}
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "PYTHONWARNINGS"):
        env.pop(name, None)
    env.update(
        {
            "SNAPDIR_CACHE_DIR": str(tmp / "cache"),
            "SNAPDIR_NO_PROGRESS": "1",
            # A refused connection fails at once instead of after the retry budget.
            "SNAPDIR_RETRY_MAX_SECONDS": "0",
            # Nothing from this machine, nothing beyond loopback.
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_DEFAULT_REGION": "us-east-1",
            "NO_GCE_CHECK": "True",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
        }
    )
    return env


def _run_all(runs: list[Run]) -> None:
    """Run the CLI subprocesses a few at a time (each is mostly waiting: start-up, a refused
    connection, a server's answer)."""

    def one(run: Run) -> None:
        argv = [sys.executable, "-m", "snapdir", *run.argv]
        if run.json:
            argv.append("--json")
        run.result = subprocess.run(
            argv,
            env=run.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, runs))


def _check(runs: list[Run]) -> None:
    problems = []
    for run in runs:
        proc = run.result
        assert proc is not None
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:
            problems.append(f"{run.label}: expected a failure, got exit 0: {out!r}")
        if "Traceback" in out:
            problems.append(f"{run.label}: a traceback: {out!r}")
        for secret in run.secrets:
            if secret in out:
                problems.append(f"{run.label}: {secret!r} leaked: {out!r}")
        for needle in run.expect:
            if needle not in out:
                problems.append(f"{run.label}: {needle!r} missing from {out!r}")
        if run.json and proc.stdout.strip():
            json.loads(proc.stdout)  # whatever --json prints is one JSON document
    assert not problems, "\n".join(problems)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    t.mkdir()
    (t / "a.txt").write_text("alpha\n")
    return t


def test_cli_malformed_arguments_never_echo_a_secret(tmp_path: Path, tree: Path) -> None:
    """Every argument shape through the commands in turn (each command gets several, in both
    modes); the argument is a store URI, a diff reference, an id (checkout) or a path
    (stage) — and once through ``$SNAPDIR_STORE``, as CI sets it."""
    base = _base_env(tmp_path)
    runs = []
    for i, shape in enumerate(ARG_SHAPES):
        command = COMMANDS[i % len(COMMANDS)]
        dest = tmp_path / f"dest{i}"
        argv = _argv(command, shape.text, tree, dest, target=shape.text)
        env = dict(base)
        if command in ("size", "verify") and i % 2:
            argv = [a for a in argv if a not in ("--store", shape.text)]
            env["SNAPDIR_STORE"] = shape.text
        runs.append(Run(f"{shape.name}/{command}", argv, env, shape.secrets, json=bool(i % 2)))
    assert {r.argv[0] for r in runs} == set(COMMANDS)
    _run_all(runs)
    _check(runs)


def _dead_port() -> int:
    return free_port()


def _with(env: dict[str, str], **extra: str) -> dict[str, str]:
    out = dict(env)
    out.update(extra)
    return out


#: (name, store URI, environment, secrets that must not appear, text that must)
Scenario = tuple[str, str, dict[str, str], tuple[str, ...], tuple[str, ...]]


def _cycle(
    backend: str,
    scenarios: Sequence[Scenario],
    commands: tuple[str, ...],
    tmp: Path,
    tree: Path,
) -> list[Run]:
    """Every scenario at least once and every command at least once, modes alternating."""
    runs = []
    for i in range(max(len(scenarios), len(commands))):
        name, store, env, secrets, expect = scenarios[i % len(scenarios)]
        command = commands[i % len(commands)]
        argv = _argv(command, store, tree, tmp / f"{backend}-dest{i}")
        label = f"{backend}/{name}/{command}"
        runs.append(Run(label, argv, env, secrets, expect, json=bool(i % 2)))
    return runs


def _all_env_secrets(env: dict[str, str]) -> dict[str, str]:
    """Credential variables every backend run carries as well (a CI job's environment has
    all of them): their values must never come out, whatever fails."""
    return _with(
        env,
        AWS_SESSION_TOKEN="IQoJcliSessionToken0123456789",
        B2_APPLICATION_KEY_ID="0012ab34cd",
        B2_APPLICATION_KEY="K001cliB2ApplicationKey0001",
        GOOGLE_OAUTH_ACCESS_TOKEN="ya29-cliOauthToken0123",
    )


_ALWAYS = ("IQoJcliSessionToken0123456789", "K001cliB2ApplicationKey0001", "ya29-cliOauthToken0123")


def test_cli_s3_failures_never_print_a_secret(
    tmp_path: Path, tree: Path, seaweedfs: S3Server
) -> None:
    port = seaweedfs.endpoint_url.rsplit(":", 1)[1]
    dead = _dead_port()
    env = _all_env_secrets(_base_env(tmp_path))
    env.pop("AWS_SESSION_TOKEN")  # SeaweedFS would refuse every request for it
    good = _with(
        env,
        AWS_ACCESS_KEY_ID=seaweedfs.access_key,
        AWS_SECRET_ACCESS_KEY=seaweedfs.secret_key,
    )
    always = _ALWAYS[1:]
    scenarios = [
        (
            "endpoint-userinfo-refused",
            "s3://bucket/p",
            _with(
                good, SNAPDIR_S3_STORE_ENDPOINT_URL=f"http://AKID:s3EndpointPw1@127.0.0.1:{dead}"
            ),
            ("s3EndpointPw1", *always),
            (f"***@127.0.0.1:{dead}",),
        ),
        (
            "aws-endpoint-percent-encoded-refused",
            "s3://bucket/p",
            _with(good, AWS_ENDPOINT_URL=f"http://user:p%40ss%2FEnc0ded@127.0.0.1:{dead}"),
            ("p%40ss%2FEnc0ded", "Enc0ded", *always),
            (f"***@127.0.0.1:{dead}",),
        ),
        (
            "aws-endpoint-s3-ipv6-refused",
            "s3://bucket/p",
            _with(good, AWS_ENDPOINT_URL_S3=f"http://user:v6Passw0rd@[::1]:{dead}"),
            ("v6Passw0rd", *always),
            (f"***@[::1]:{dead}",),
        ),
        (
            "endpoint-password-with-slash-and-hash",
            "s3://bucket/p",
            _with(good, SNAPDIR_S3_STORE_ENDPOINT_URL=f"http://AKID:sl/ash#h@sh@127.0.0.1:{port}"),
            ("sl/ash#h@sh", "ash#h@sh", *always),
            (f"***@127.0.0.1:{port}",),
        ),
        (
            "endpoint-with-query-token",
            "s3://bucket/p",
            _with(
                good,
                SNAPDIR_S3_STORE_ENDPOINT_URL=f"http://127.0.0.1:{port}/?X-Amz-Security-Token="
                "FwoGZXIvYXdzEndpointQueryToken",
            ),
            ("FwoGZXIvYXdzEndpointQueryToken", *always),
            ("X-Amz-Security-Token=***",),
        ),
        (
            "wrong-secret-key-real-server",
            "s3://bucket/p",
            _with(
                good,
                SNAPDIR_S3_STORE_ENDPOINT_URL=f"http://AKID:realSrvPassw0rd@127.0.0.1:{port}",
                AWS_SECRET_ACCESS_KEY="wrongSecretKey/0123456789+abcdef",
            ),
            ("wrongSecretKey/0123456789+abcdef", "realSrvPassw0rd", *always),
            ("refused the credentials",),
        ),
        (
            "session-token-real-server",
            "s3://bucket/p",
            _with(
                good,
                SNAPDIR_S3_STORE_ENDPOINT_URL=seaweedfs.endpoint_url,
                AWS_SESSION_TOKEN="IQoJs3SessionTokenValue0123456789",
                AWS_SECRET_ACCESS_KEY="wrongSecretKey/9876543210+zyx",
            ),
            ("IQoJs3SessionTokenValue0123456789", "wrongSecretKey/9876543210+zyx", *always),
            ("s3://bucket/p",),
        ),
        (
            "missing-bucket-endpoint-userinfo",
            "s3://snapdir-no-such-bucket-secrets/p",
            _with(
                good,
                SNAPDIR_S3_STORE_ENDPOINT_URL=f"http://AKID:missBucketPw0@127.0.0.1:{port}",
            ),
            ("missBucketPw0", seaweedfs.secret_key, *always),
            ("snapdir-no-such-bucket-secrets",),
        ),
    ]
    runs = _cycle("s3", scenarios, STORE_COMMANDS, tmp_path, tree)
    _run_all(runs)
    _check(runs)


def test_cli_gcs_failures_never_print_a_secret(
    tmp_path: Path, tree: Path, fake_gcs: GcsServer
) -> None:
    real = fake_gcs.endpoint.split("://", 1)[-1]
    dead = _dead_port()
    env = _all_env_secrets(_base_env(tmp_path))
    key = tmp_path / "sa.json"
    key.write_text(SERVICE_ACCOUNT.replace(PEM_BODY, PEM_BODY + "broken!"))
    # Without an emulator the SDK would reach for Google: every https request of these
    # runs goes to a dead loopback proxy instead (whose password is one more secret).
    google = _with(env, HTTPS_PROXY=f"http://proxy:gcsProxyPassw0rd@127.0.0.1:{dead}")
    scenarios = [
        (
            "emulator-userinfo-refused",
            "gs://bucket/p",
            _with(env, STORAGE_EMULATOR_HOST=f"http://gcsuser:gcsEmuPassw0rd@127.0.0.1:{dead}"),
            ("gcsEmuPassw0rd", *_ALWAYS),
            ("gs://bucket/p",),
        ),
        (
            "emulator-userinfo-no-scheme-missing-bucket",
            "gs://snapdir-no-such-bucket/p",
            _with(env, STORAGE_EMULATOR_HOST=f"gcsuser:gcs%23Pw%3Fd99@{real}"),
            ("gcs%23Pw%3Fd99", "gcs#Pw?d99", *_ALWAYS),
            ("snapdir-no-such-bucket",),
        ),
        (
            "emulator-with-access-token",
            "gs://bucket/p",
            _with(
                env,
                STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{dead}/?access_token=ya29.emuQueryTok0",
            ),
            ("ya29.emuQueryTok0", "emuQueryTok0", *_ALWAYS),
            ("access_token=***",),
        ),
        (
            "credentials-json-pasted-into-the-variable",
            "gs://bucket/p",
            _with(google, GOOGLE_APPLICATION_CREDENTIALS=SERVICE_ACCOUNT),
            (PEM_BODY, SA_KEY_ID, "gcsProxyPassw0rd", *_ALWAYS),
            ("GOOGLE_APPLICATION_CREDENTIALS=***",),
        ),
        (
            "credentials-file-with-broken-key",
            "gs://bucket/p",
            _with(google, GOOGLE_APPLICATION_CREDENTIALS=str(key)),
            (PEM_BODY, SA_KEY_ID, "gcsProxyPassw0rd", *_ALWAYS),
            (str(key),),
        ),
        (
            "authorized-user-json-pasted",
            "gs://bucket/p",
            _with(google, GOOGLE_APPLICATION_CREDENTIALS=AUTHORIZED_USER),
            ("GOCSPX-clientSecretValue42", "1//0gRefreshTokenValueSecret", *_ALWAYS),
            ("GOOGLE_APPLICATION_CREDENTIALS=***",),
        ),
    ]
    runs = _cycle("gs", scenarios, STORE_COMMANDS, tmp_path, tree)
    _run_all(runs)
    _check(runs)


def test_cli_b2_failures_never_print_a_secret(
    tmp_path: Path, tree: Path, b2_simulator: B2Server
) -> None:
    dead = _dead_port()
    realm = b2_simulator.realm_url
    host = realm.split("://", 1)[1]
    env = _all_env_secrets(_base_env(tmp_path))
    good = _with(
        env, B2_APPLICATION_KEY_ID=b2_simulator.key_id, B2_APPLICATION_KEY=b2_simulator.app_key
    )
    always = (*_ALWAYS[:1], _ALWAYS[2])
    scenarios = [
        (
            "realm-userinfo-wrong-key",
            f"b2://{b2_simulator.bucket_name}/p",
            _with(
                env,
                SNAPDIR_B2_REALM=f"http://b2user:b2RealmPassw0rd@{host}",
                B2_APPLICATION_KEY_ID=b2_simulator.key_id,
                B2_APPLICATION_KEY="K001wrongApplicationKey0002",
            ),
            ("b2RealmPassw0rd", "K001wrongApplicationKey0002", *always),
            (f"b2://{b2_simulator.bucket_name}/p",),
        ),
        (
            "missing-bucket",
            "b2://snapdir-no-such-bucket/p",
            _with(good, SNAPDIR_B2_REALM=realm),
            (b2_simulator.app_key, *always),
            ("'snapdir-no-such-bucket' does not exist",),
        ),
        (
            "realm-with-query-token",
            f"b2://{b2_simulator.bucket_name}/p",
            _with(
                good,
                SNAPDIR_B2_REALM=f"{realm}/?Authorization=4_002secretRealmAuthTok",
                B2_APPLICATION_KEY="K001wrongApplicationKey0003",
            ),
            ("4_002secretRealmAuthTok", "K001wrongApplicationKey0003", *always),
            # The failure names the store; a message quoting the realm shows it masked.
            (f"b2://{b2_simulator.bucket_name}/p",),
        ),
        (
            "wrong-key-real-server",
            f"b2://{b2_simulator.bucket_name}/p",
            _with(good, SNAPDIR_B2_REALM=realm, B2_APPLICATION_KEY="K001wrongApplicationKey0004"),
            ("K001wrongApplicationKey0004", *always),
            ("B2_APPLICATION_KEY",),
        ),
    ]
    runs = _cycle("b2", scenarios, STORE_COMMANDS, tmp_path, tree)
    # One run against a dead realm (b2sdk backs off for ~9 s on its own before giving up).
    runs.append(
        Run(
            "b2/realm-userinfo-refused/size",
            ["size", "--store", "b2://bucket/p"],
            _with(good, SNAPDIR_B2_REALM=f"http://b2user:b2DeadRealmPw0@127.0.0.1:{dead}"),
            ("b2DeadRealmPw0", b2_simulator.app_key, *always),
            (f"***@127.0.0.1:{dead}",),
            json=True,
        )
    )
    _run_all(runs)
    _check(runs)


def test_cli_file_store_and_cache_failures_never_print_a_secret(tmp_path: Path, tree: Path) -> None:
    """The file:// backend and the cache commands (stage, checkout): with every credential
    variable set, each fails (a missing snapshot, a missing directory, a store under a
    regular file) and prints none of them."""
    env = _with(
        _all_env_secrets(_base_env(tmp_path)),
        AWS_SECRET_ACCESS_KEY="fileRunSecretKey/0123",
        SNAPDIR_S3_STORE_ENDPOINT_URL="http://AKID:fileRunEndpointPw@127.0.0.1:1",
        GOOGLE_APPLICATION_CREDENTIALS=SERVICE_ACCOUNT,
    )
    secrets = (*_ALWAYS, "fileRunSecretKey/0123", "fileRunEndpointPw", PEM_BODY, SA_KEY_ID)
    empty = tmp_path / "store"
    empty.mkdir()
    (tmp_path / "afile").write_text("not a store\n")
    blocked = f"file://{tmp_path / 'afile' / 'sub'}"  # under a regular file
    stores = {
        "push": (blocked, "Not a directory"),
        "fetch": (f"file://{empty}", SNAP_ID[:12]),
        "pull": (f"file://{empty}", SNAP_ID[:12]),
        "sync": (f"file://{empty}", SNAP_ID[:12]),
        "diff": (f"file://{empty}", SNAP_ID[:12]),
        "verify": (f"file://{tmp_path / 'nowhere'}", "does not exist"),
        "size": (f"file://{tmp_path / 'afile'}", "not a directory"),
        "stage": ("", "tree/missing"),
        "checkout": ("", "cache"),
    }
    runs = [
        Run(
            f"file/{command}",
            _argv(command, store, tree, tmp_path / f"file-dest{i}"),
            env,
            secrets,
            ("snapdir: error", expect),
            json=bool(i % 2),
        )
        for i, (command, (store, expect)) in enumerate(stores.items())
    ]
    _run_all(runs)
    _check(runs)


# -------------------------------------------------------------------------------------------
# The Python API against the servers
# -------------------------------------------------------------------------------------------


def _api_failure(store: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> BaseException:
    for name in list(os.environ):
        if name.startswith(("AWS_", "B2_")) or name in (
            "SNAPDIR_S3_STORE_ENDPOINT_URL",
            "STORAGE_EMULATOR_HOST",
            "SNAPDIR_B2_REALM",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SNAPDIR_RETRY_MAX_SECONDS", "0")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    async def call() -> None:
        await snapdir.size(store)

    with pytest.raises(snapdir.SnapdirError) as info:
        anyio.run(call)
    return info.value


def _rendered(e: BaseException) -> str:
    return "\n".join([str(e), repr(e), repr(e.args), "".join(traceback.format_exception(e))])


@pytest.fixture
def b2_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """b2sdk's own back-off sleeps skipped (a dead realm fails at once)."""
    import b2sdk._internal.b2http as b2http  # type: ignore[import-untyped,unused-ignore]

    class _NoSleep:
        @staticmethod
        def sleep(seconds: float) -> None:
            pass

    monkeypatch.setattr(b2http, "time", _NoSleep)


def test_api_errors_and_their_tracebacks_never_carry_a_secret(
    monkeypatch: pytest.MonkeyPatch,
    seaweedfs: S3Server,
    fake_gcs: GcsServer,
    b2_simulator: B2Server,
    b2_fast: None,
) -> None:
    dead = _dead_port()
    s3_port = seaweedfs.endpoint_url.rsplit(":", 1)[1]
    b2_host = b2_simulator.realm_url.split("://", 1)[1]
    cases: list[tuple[str, dict[str, str], tuple[str, ...], str]] = [
        (
            "s3://bucket/p",
            {
                "SNAPDIR_S3_STORE_ENDPOINT_URL": f"http://AKID:apiS3Passw0rd@127.0.0.1:{dead}",
                "AWS_ACCESS_KEY_ID": "AKID",
                "AWS_SECRET_ACCESS_KEY": "apiSecretKey/0123456789",
            },
            ("apiS3Passw0rd", "apiSecretKey/0123456789"),
            f"***@127.0.0.1:{dead}",
        ),
        (
            "s3://bucket/p",
            {
                "SNAPDIR_S3_STORE_ENDPOINT_URL": f"http://AKID:apiS3Real0@127.0.0.1:{s3_port}",
                "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
                "AWS_SECRET_ACCESS_KEY": "apiWrongSecret/0123456789",
            },
            ("apiS3Real0", "apiWrongSecret/0123456789"),
            "s3://bucket/p",
        ),
        (
            "gs://bucket/p",
            {"STORAGE_EMULATOR_HOST": f"http://u:apiGcsPassw0rd@127.0.0.1:{dead}"},
            ("apiGcsPassw0rd",),
            "gs://bucket/p",
        ),
        (
            "b2://bucket/p",
            {
                "SNAPDIR_B2_REALM": f"http://u:apiB2Passw0rd@127.0.0.1:{dead}",
                "B2_APPLICATION_KEY_ID": b2_simulator.key_id,
                "B2_APPLICATION_KEY": "K001apiWrongKey000000000001",
            },
            ("apiB2Passw0rd", "K001apiWrongKey000000000001"),
            f"***@127.0.0.1:{dead}",
        ),
        (
            f"b2://{b2_simulator.bucket_name}/p",
            {
                "SNAPDIR_B2_REALM": f"http://u:apiB2Real0@{b2_host}",
                "B2_APPLICATION_KEY_ID": b2_simulator.key_id,
                "B2_APPLICATION_KEY": "K001apiWrongKey000000000002",
            },
            ("apiB2Real0", "K001apiWrongKey000000000002"),
            "B2_APPLICATION_KEY",
        ),
    ]
    for store, env, secrets, expect in cases:
        e = _api_failure(store, monkeypatch, env)
        text = _rendered(e)
        for secret in secrets:
            assert secret not in text, f"{store}: {secret!r} in {text}"
        assert expect in text, f"{store}: {expect!r} missing from {text}"
        monkeypatch.undo()


def test_cli_unexpected_exception_traceback_is_masked(tmp_path: Path) -> None:
    """A failure no store translated still reaches the terminal masked: with ``-v`` the CLI
    prints the traceback itself, masked (without it, only the masked message)."""
    script = (
        "import sys, snapdir.cli as c, snapdir.cli.snapshot as s\n"
        "def boom(args):\n"
        "    raise RuntimeError('SDK: http://u:tracebackPassw0rd@127.0.0.1:1/x')\n"
        "s.cmd_id = boom\n"
        "sys.exit(c.main(['-v', 'id', '.']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_base_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 5  # any other failure (docs/cli.md)
    assert "Traceback" in proc.stderr
    assert "RuntimeError" in proc.stderr
    assert "tracebackPassw0rd" not in proc.stderr
    assert "http://***@127.0.0.1:1/x" in proc.stderr


def test_untranslated_store_exception_is_masked_on_its_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A third-party store that lets an exception through as it is (not a SnapdirError):
    the retry wrapper every operation goes through masks it, and what it chains, in place."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugin_example"))
    import memstore_plugin
    import snapdir._registry

    # Built, not written out: a traceback quotes the source line that raised.
    leaky, chained = "leaky" + "Passw0rd", "chained" + "Passw0rd"

    class LeakyStore(memstore_plugin.MemStore):
        async def list_manifests(self) -> list[str]:
            try:
                raise ConnectionError(f"dial http://svc:{chained}@127.0.0.1:1/ failed")
            except ConnectionError as e:
                raise RuntimeError(f"GET http://svc:{leaky}@127.0.0.1:1/list") from e

    monkeypatch.setitem(snapdir._registry._registry, "leaky", LeakyStore)

    async def call() -> None:
        await snapdir.size("leaky://bucket/p")

    with pytest.raises(RuntimeError) as info:
        anyio.run(call)
    text = _rendered(info.value)
    assert "leakyPassw0rd" not in text
    assert "chainedPassw0rd" not in text
    assert "GET http://***@127.0.0.1:1/list" in text


def test_redact_exception_masks_os_errors_and_sdk_style_messages() -> None:
    """In place, down the chain: an OSError's own fields (its str is built from them) and an
    exception whose message is built from keyword arguments, as botocore's are."""
    pw = "os" + "ErrorPassw0rd"

    class KwargsError(Exception):
        def __init__(self, **kwargs: str) -> None:
            super().__init__(f"Could not connect to the endpoint URL: {kwargs['endpoint_url']}")
            self.kwargs = kwargs

    os_error = FileNotFoundError(2, "No such file", f"/mnt/http://u:{pw}@h/x")
    sdk = KwargsError(endpoint_url=f"http://u:{pw}@127.0.0.1:1/b")
    sdk.__context__ = os_error
    redact_exception(sdk)
    assert pw not in "".join(traceback.format_exception(sdk))
    assert pw not in str(os_error)
    assert pw not in str(sdk.kwargs)
    assert "http://***@127.0.0.1:1/b" in str(sdk)
