"""``snapdir login gs://bucket``: a service-account key kept in the OS keyring (the test
keyring backend, a file), used through ``Credentials.from_service_account_info`` against
fake-gcs-server. A token endpoint on loopback stands in for Google's: it sees the key's
signed assertion when, and only when, the kept key is used. The key is never printed, never
stored in the bucket, and the environment (GOOGLE_APPLICATION_CREDENTIALS) wins."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from storeutil import cli_env, run_cli
from test_names import _trees

EMAIL = "pusher@snapdir-test.iam.gserviceaccount.com"


class _TokenServer:
    """An OAuth token endpoint on 127.0.0.1: records each JWT-bearer assertion's issuer."""

    def __init__(self) -> None:
        issuers: list[str] = []
        self.issuers = issuers

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                assertion = parse_qs(body)["assertion"][0]
                claims = assertion.split(".")[1]
                payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
                issuers.append(payload["iss"])
                answer = json.dumps(
                    {"access_token": "test-token", "expires_in": 3600, "token_type": "Bearer"}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def token_server() -> Iterator[_TokenServer]:
    server = _TokenServer()
    try:
        yield server
    finally:
        server.stop()


def _key_file(path: Path, token_uri: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    doc = {
        "type": "service_account",
        "project_id": "snapdir-test",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(doc))
    return pem


def test_gcs_login_keeps_a_service_account_key_in_the_keyring(
    request: pytest.FixtureRequest, tmp_path: Path, token_server: _TokenServer
) -> None:
    gcs = request.getfixturevalue("fake_gcs")
    bucket = f"names-{uuid.uuid4().hex[:10]}"
    gcs.client().create_bucket(bucket)
    store = f"gs://{bucket}/kr"
    env = cli_env(
        PYTHON_KEYRING_BACKEND="keyring_backend.FileKeyring",
        PYTHONPATH=str(Path(__file__).parent),
        SNAPDIR_TEST_KEYRING_FILE=str(tmp_path / "keyring.json"),
        STORAGE_EMULATOR_HOST=gcs.endpoint,
        GOOGLE_APPLICATION_CREDENTIALS=None,
        GOOGLE_CLOUD_PROJECT=None,
        SNAPDIR_KEYRING=None,
    )
    keyfile = tmp_path / "sa.json"
    pem = _key_file(keyfile, token_server.url)
    secret = pem.splitlines()[5]  # a line of the key's body
    (tree,) = _trees(tmp_path, 1)

    # refused before anything is kept: not JSON, not a service account, a key id given
    bad = tmp_path / "bad.json"
    for text in ("{not json", json.dumps({"type": "authorized_user"})):
        bad.write_text(text)
        proc = run_cli("login", store, "--secret-file", str(bad), env=env)
        assert proc.returncode == 2, proc.stderr
    broken = json.loads(keyfile.read_text())
    broken["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA" + secret + "\n"
    bad.write_text(json.dumps(broken))
    proc = run_cli("login", store, "--secret-file", str(bad), env=env)
    assert proc.returncode == 2
    assert secret not in proc.stdout + proc.stderr
    proc = run_cli("login", store, "--key-id", "x", "--secret-file", str(keyfile), env=env)
    assert proc.returncode == 2
    assert "--key-id" in proc.stderr
    assert not (tmp_path / "keyring.json").exists()

    login = subprocess.run(
        [sys.executable, "-m", "snapdir", "login", store, "--secret-stdin", "--json"],
        input=keyfile.read_text(),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    assert json.loads(login.stdout) == {
        "store": f"gs://{bucket}",
        "changed": True,
        "schema": 1,
        "warnings": [],
    }
    assert token_server.issuers == []  # checked, not used, at login

    pushed = run_cli("push", str(tree), "--store", store, "--tag", "kit@1.0.0", "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert token_server.issuers
    assert set(token_server.issuers) == {EMAIL}  # the kept key signed the token request
    resolved = run_cli("resolve", "kit", "--store", store, "--json", env=env)
    assert json.loads(resolved.stdout)["id"] == json.loads(pushed.stdout)["id"]
    for proc in (login, pushed, resolved):
        assert secret not in proc.stdout + proc.stderr
        assert "BEGIN PRIVATE KEY" not in proc.stdout + proc.stderr
    for blob in gcs.client().list_blobs(bucket):
        assert secret.encode() not in blob.download_as_bytes()

    # the environment wins over the keyring; SNAPDIR_KEYRING=0 turns the lookup off
    used = len(token_server.issuers)
    for other in (
        dict(env, GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "elsewhere.json")),
        dict(env, SNAPDIR_KEYRING="0"),
    ):
        proc = run_cli("resolve", "kit", "--store", store, env=other)
        assert proc.returncode == 0, proc.stderr  # the emulator: anonymous
    assert len(token_server.issuers) == used

    out = run_cli("logout", store, "--json", env=env)
    assert json.loads(out.stdout)["changed"] is True
    assert run_cli("resolve", "kit", "--store", store, env=env).returncode == 0
    assert len(token_server.issuers) == used
    again = run_cli("logout", store, "--json", env=env)
    assert json.loads(again.stdout)["changed"] is False
