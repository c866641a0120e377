"""Crash consistency: ``kill -9`` at random moments leaves nothing a re-run cannot finish.

``scripts/crash_trials.py`` kills ``push``, ``stage``, ``pull``, ``checkout``, ``fetch`` and
``sync`` with SIGKILL and checks the store and destination invariants after each kill and
after an uninterrupted re-run (its docstring says what exactly; docs/reliability.md has the
figures of the full campaign). CI runs its ``--quick`` mode: a few trials per operation on
``file://`` and one per operation against the SeaweedFS fixture.

A kill can cut an S3 PUT after its headers, which SeaweedFS commits as an empty object
under the real key; the last two tests pin that fact and that a push repairs such an object
instead of writing a manifest over it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from servers.seaweed import S3Server
from snapdir._snapdir import blake3_hex
from storeutil import cli_env, run_cli

REPO = Path(__file__).resolve().parent.parent
OPS = ("push", "stage", "pull", "checkout", "fetch", "sync")
S3_OPS = ("push", "pull", "fetch", "sync")


def s3_env(server: S3Server) -> dict[str, str]:
    return cli_env(AWS_PROFILE=None, AWS_SESSION_TOKEN=None, **server.environ())


def test_quick_crash_trials(seaweedfs: S3Server, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cp = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "crash_trials.py"),
            "--quick",
            "--s3-trials",
            "1",
            "--s3-endpoint",
            seaweedfs.endpoint_url,
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        env=s3_env(seaweedfs),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    results = {(r["op"], r["backend"]): r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {(op, "file") for op in OPS} | {(op, "s3") for op in S3_OPS}
    for (op, backend), r in results.items():
        assert r["trials"] == (2 if backend == "file" else 1), (op, backend)
        assert (r["violations"], r["rerun_failures"], r["problems"]) == (0, 0, []), r
    killed = sum(r["landed"][k] for r in results.values() for k in ("before", "during", "late"))
    assert killed > 0, "every command had exited before its kill: nothing was tested"


def _raw_put_headers_only(server: S3Server, bucket: str, key: str, length: int) -> None:
    """Send a signed ``PUT`` announcing ``length`` bytes, then close without a body byte
    (what a SIGKILL between the headers and the body does)."""
    import botocore.auth  # type: ignore[import-untyped,unused-ignore]
    import botocore.awsrequest  # type: ignore[import-untyped,unused-ignore]
    import botocore.credentials  # type: ignore[import-untyped,unused-ignore]

    host, port = server.endpoint_url.removeprefix("http://").split(":")
    req = botocore.awsrequest.AWSRequest(
        method="PUT",
        url=f"{server.endpoint_url}/{bucket}/{key}",
        data=b"x" * length,
        headers={"Content-Length": str(length)},
    )
    creds = botocore.credentials.Credentials(server.access_key, server.secret_key)
    botocore.auth.S3SigV4Auth(creds, "s3", server.region).add_auth(req)
    head = f"PUT /{bucket}/{key} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items()) + "\r\n"
    with socket.create_connection((host, int(port))) as s:
        s.sendall(head.encode())
        time.sleep(0.2)


def test_seaweedfs_commits_a_put_cut_after_its_headers_as_an_empty_object(
    seaweedfs: S3Server,
) -> None:
    client = seaweedfs.client()
    bucket = f"crash-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    _raw_put_headers_only(seaweedfs, bucket, "cut", 1000)
    deadline = time.monotonic() + 10
    while True:
        try:
            head = client.head_object(Bucket=bucket, Key="cut")
            break
        except client.exceptions.ClientError:
            assert time.monotonic() < deadline, "the cut PUT was not committed (fixed server?)"
            time.sleep(0.1)
    assert head["ContentLength"] == 0


def test_push_replaces_an_empty_object_left_by_a_killed_upload(
    seaweedfs: S3Server, tmp_path: Path
) -> None:
    client = seaweedfs.client()
    bucket = f"crash-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    tree = tmp_path / "tree"
    tree.mkdir()
    data = b"the bytes a killed push was sending " * 300
    (tree / "f").write_bytes(data)
    (tree / "g").write_bytes(b"another file")
    c = blake3_hex(data)
    key = f"p/.objects/{c[:3]}/{c[3:6]}/{c[6:9]}/{c[9:]}"
    client.put_object(Bucket=bucket, Key=key, Body=b"")  # what the server kept of the cut PUT
    env = s3_env(seaweedfs)
    uri = f"s3://{bucket}/p"
    push = run_cli("push", str(tree), "--store", uri, "-q", env=env)
    assert push.returncode == 0, push.stderr
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    verify = run_cli("verify", "--store", uri, "-q", env=env)
    assert verify.returncode == 0, verify.stderr
