"""``--dry-run`` of push, pull, checkout and sync: the counts and bytes it prints are what
the real command then does, and the store and the destination are byte-identical before
and after it (file:// and S3)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.seaweed import S3Server
from storeutil import cli_env, run_cli, tree_state, uri, write


def _json(*argv: str, env: dict[str, str] | None = None, status: int = 0) -> Any:
    proc = run_cli(*argv, "--json", env=env)
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def _tree(root: Path) -> Path:
    write(root / "a.txt", "alpha\n")
    write(root / "dup1.bin", b"d" * 3000)
    write(root / "dup2.bin", b"d" * 3000)  # same object as dup1
    write(root / "sub" / "b.bin", os.urandom(5000))
    write(root / "sub" / "deep" / "c.txt", "c" * 70)
    return root


class _Store:
    """A store URI, how to run the CLI against it, and what it holds."""

    def __init__(self, uri: str, env: dict[str, str], state: Callable[[], object]) -> None:
        self.uri, self.env, self.state = uri, env, state


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Store]:
    if request.param == "file":
        root = tmp_path / "store"
        root.mkdir()
        yield _Store(
            uri(root), cli_env(SNAPDIR_CACHE_DIR=str(tmp_path / "cache")), lambda: tree_state(root)
        )
        return
    s3: S3Server = request.getfixturevalue("seaweedfs")
    client = s3.client()
    bucket = f"snapdir-dry-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    env = cli_env(
        SNAPDIR_CACHE_DIR=str(tmp_path / "cache"),
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
        AWS_DEFAULT_REGION=s3.region,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        SNAPDIR_S3_STORE_ENDPOINT_URL=s3.endpoint_url,
    )

    def state() -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        return out

    try:
        yield _Store(f"s3://{bucket}/p", env, state)
    finally:
        client.close()


def test_push_dry_run_predicts_the_upload_and_writes_nothing(tmp_path: Path, store: _Store) -> None:
    src = _tree(tmp_path / "src")
    before = store.state()
    dry = _json("push", str(src), "--store", store.uri, "--dry-run", env=store.env)
    assert store.state() == before
    assert dry["dry_run"] is True
    assert (dry["files"], dry["objects"]) == (5, 4)
    assert (dry["uploaded"], dry["bytes_uploaded"]) == (4, 6 + 3000 + 5000 + 70)
    assert (dry["manifest"], dry["noop"], dry["journal"]) == (True, False, None)
    real = _json("push", str(src), "--store", store.uri, env=store.env)
    assert real["dry_run"] is False
    for k in ("id", "uploaded", "bytes_uploaded", "manifest", "objects", "files"):
        assert real[k] == dry[k], k

    # One changed file: one object to upload; the text says so with IEC units.
    write(src / "sub" / "b.bin", os.urandom(3 << 20))
    after_push = store.state()
    proc = run_cli("push", str(src), "--store", store.uri, "-n", env=store.env)
    assert proc.returncode == 0, proc.stderr
    assert "would upload 1 of 4 objects (3.0 MiB)" in proc.stdout
    assert store.state() == after_push
    # A snapshot already there: nothing to upload, no manifest to write.
    same = _json("push", str(src), "--store", store.uri, env=store.env)
    again = _json("push", str(src), "--store", store.uri, "-n", env=store.env)
    assert (again["id"], again["uploaded"], again["manifest"]) == (same["id"], 0, False)


def test_push_id_dry_run_from_the_local_cache(tmp_path: Path, store: _Store) -> None:
    src = _tree(tmp_path / "src")
    staged = _json("stage", str(src), env=store.env)
    before = store.state()
    dry = _json("push", "--id", staged["id"], "--store", store.uri, "-n", env=store.env)
    assert store.state() == before
    assert (dry["uploaded"], dry["manifest"], dry["dry_run"]) == (4, True, True)


def _pulled_world(tmp_path: Path, store: _Store) -> tuple[str, Path]:
    src = _tree(tmp_path / "src")
    sid = _json("push", str(src), "--store", store.uri, env=store.env)["id"]
    dest = tmp_path / "dest"
    _json("pull", sid, str(dest), "--store", store.uri, env=store.env)
    write(dest / "a.txt", "changed locally\n")
    write(dest / "extra" / "x.log", "x" * 10)
    (dest / "sub" / "deep" / "c.txt").unlink()
    return sid, dest


def test_pull_dry_run_lists_writes_and_removals_and_changes_nothing(
    tmp_path: Path, store: _Store
) -> None:
    sid, dest = _pulled_world(tmp_path, store)
    st_before, dest_before = store.state(), tree_state(dest)
    argv = ["pull", sid, str(dest), "--store", store.uri, "--delete", "--force", "-n"]
    dry = _json(*argv, env=store.env)
    assert store.state() == st_before
    assert tree_state(dest) == dest_before
    assert dry["dry_run"] is True
    assert sorted(dry["write"]) == ["a.txt", "sub/deep/c.txt"]
    assert dry["remove"] == ["extra"]
    assert (dry["files_written"], dry["bytes_written"], dry["removed"]) == (2, 76, 1)
    assert (dry["objects_fetched"], dry["bytes_fetched"]) == (2, 76)
    assert dry["files_kept"] == 3

    text = run_cli(*argv, "-v", env=store.env)
    assert text.returncode == 0, text.stderr
    assert "remove extra\n" in text.stdout
    assert "write a.txt\n" in text.stdout
    assert "would write 2 files (76 B)" in text.stdout
    assert tree_state(dest) == dest_before

    # Without --force the dry run refuses as the pull would (exit 3), still writing nothing.
    refused = _json("pull", sid, str(dest), "--store", store.uri, "-n", env=store.env, status=3)
    assert refused["error"]["code"] == "CONFLICT"
    assert tree_state(dest) == dest_before

    real = _json(*argv[:-1], env=store.env)
    for k in ("files_written", "bytes_written", "removed", "files_kept"):
        assert real[k] == dry[k], k
    assert (real["write"], real["dry_run"]) == (None, False)


def test_pull_dry_run_into_a_missing_directory_creates_nothing(
    tmp_path: Path, store: _Store
) -> None:
    src = _tree(tmp_path / "src")
    sid = _json("push", str(src), "--store", store.uri, env=store.env)["id"]
    dest = tmp_path / "new" / "dest"
    dry = _json("pull", sid, str(dest), "--store", store.uri, "-n", env=store.env)
    assert not (tmp_path / "new").exists()
    assert (dry["files_written"], dry["bytes_written"]) == (5, 6 + 6000 + 5000 + 70)
    assert dry["objects_fetched"] == 4
    assert dry["remove"] == []


def test_checkout_dry_run(tmp_path: Path) -> None:
    env = cli_env(SNAPDIR_CACHE_DIR=str(tmp_path / "cache"))
    src = _tree(tmp_path / "src")
    sid = _json("stage", str(src), env=env)["id"]
    dest = tmp_path / "dest"
    write(dest / "old.txt", "o")

    def cache() -> dict[str, tuple[str, int, str]]:
        # Content only: reading a snapshot from the cache marks it used (its manifest's
        # mtime, for `cache prune`), as any read does.
        return {k: (n.kind, n.mode, n.digest) for k, n in tree_state(tmp_path / "cache").items()}

    cache_before, dest_before = cache(), tree_state(dest)
    dry = _json("checkout", sid, str(dest), "--delete", "-n", env=env)
    assert (dry["files_written"], dry["remove"]) == (5, ["old.txt"])
    assert tree_state(dest) == dest_before
    assert cache() == cache_before


def test_sync_dry_run_predicts_the_copy_and_writes_nothing(tmp_path: Path, store: _Store) -> None:
    src = _tree(tmp_path / "src")
    local = uri(tmp_path / "origin")
    sid = _json("push", str(src), "--store", local, env=store.env)["id"]
    before = store.state()
    dry = _json("sync", sid, "--from", local, "--to", store.uri, "-n", env=store.env)
    assert store.state() == before
    assert (dry["copied"], dry["bytes_copied"], dry["manifest"]) == (4, 6 + 3000 + 5000 + 70, True)
    assert len(dry["journal"]) == 1
    real = _json("sync", sid, "--from", local, "--to", store.uri, env=store.env)
    assert (real["copied"], real["journal"]) == (dry["copied"], dry["journal"])
    assert real["dry_run"] is False
    again = _json("sync", sid, "--from", local, "--to", store.uri, "-n", env=store.env)
    assert (again["copied"], again["manifest"], again["journal"]) == (0, False, [])
    proc = run_cli("sync", sid, "--from", local, "--to", store.uri, "-n", env=store.env)
    assert "would copy 0 of 4 objects (0 B)" in proc.stdout


def test_sync_dry_run_to_a_missing_file_store_creates_nothing(tmp_path: Path) -> None:
    env = cli_env(SNAPDIR_CACHE_DIR=str(tmp_path / "cache"))
    src = _tree(tmp_path / "src")
    local = uri(tmp_path / "origin")
    sid = _json("push", str(src), "--store", local, env=env)["id"]
    dry = _json("sync", sid, "--from", local, "--to", uri(tmp_path / "nowhere"), "-n", env=env)
    assert (dry["copied"], dry["manifest"]) == (4, True)
    assert not (tmp_path / "nowhere").exists()
