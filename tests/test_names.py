"""Names and releases end to end on every backend (file, S3/SeaweedFS, GCS/fake-gcs-server,
B2 simulator), each on loopback: the API and the CLI; request counts of a resolve among 500
versions (1 list + 1 get cold, 1 list + 0 gets warm); racing taggers (exactly one winner)
and racing channel movers with ``--expect`` (one linear log, no lost update); lockfiles;
sync of names; the journal, retention and gc roots seeing names."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import snapdir
from snapdir._errors import ConflictError, NotFoundError
from snapdir.names import ops
from snapdir.names.lockfile import lock_check
from snapdir.stores import open_store
from storeutil import cli_env, run, run_cli, uri, write

BACKENDS = ("file", "s3", "gs", "b2")
#: The suite's trial counts; scripts/names_soak.py runs the issue's (50 trials, 200 moves).
TAG_TRIALS = 2
RACERS = 8
MOVES_PER_WRITER = 2


@dataclass
class Backend:
    scheme: str
    root: str  # a fresh store URI prefix for this test

    def store(self, name: str = "store") -> str:
        return f"{self.root}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Backend]:
    """One backend, configured through the environment as a user would."""
    scheme = str(request.param)
    fx = request.getfixturevalue
    if scheme == "file":
        yield Backend("file", uri(tmp_path / "stores"))
        return
    if scheme == "s3":
        s3 = fx("seaweedfs")
        s3.use_env(monkeypatch.setenv, monkeypatch.delenv)
        bucket = f"names-{uuid.uuid4().hex[:10]}"
        client = s3.client()
        client.create_bucket(Bucket=bucket)
        client.close()
        yield Backend("s3", f"s3://{bucket}/t")
    elif scheme == "gs":
        from servers.fakegcs import EMULATOR_ENV

        gcs = fx("fake_gcs")
        for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(EMULATOR_ENV, gcs.endpoint)
        bucket = f"names-{uuid.uuid4().hex[:10]}"
        gcs.client().create_bucket(bucket)
        yield Backend("gs", f"gs://{bucket}/t")
    else:
        b2 = fx("b2_simulator")
        monkeypatch.setenv("B2_APPLICATION_KEY_ID", b2.key_id)
        monkeypatch.setenv("B2_APPLICATION_KEY", b2.app_key)
        monkeypatch.setenv("SNAPDIR_B2_REALM", b2.realm_url)
        yield Backend("b2", f"b2://{b2.bucket_name}/names-{uuid.uuid4().hex[:10]}")


def _trees(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        d = tmp_path / f"tree{i}"
        write(d / "data.txt", f"content {i}\n")
        out.append(d)
    return out


async def _push_all(store: str, trees: list[Path]) -> list[str]:
    return [await snapdir.push(t, store) for t in trees]


def test_api_tag_resolve_yank_channel(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    a, b, c = run(lambda: _push_all(store, _trees(tmp_path, 3)))

    async def body() -> None:
        r = await ops.tag(store, "lab/cal-kit@1.2.0", a, message="first")
        assert (r.id, r.version, r.created) == (a, "1.2.0", True)
        again = await ops.tag(store, "lab/cal-kit@v1.2.0", a[:10])
        assert (again.id, again.created) == (a, False)  # the same id: a no-op
        with pytest.raises(ConflictError, match=a):
            await ops.tag(store, "lab/cal-kit@1.2.0", b)
        await ops.tag(store, "lab/cal-kit@1.3.0", b)
        await ops.tag(store, "lab/cal-kit@2.0.0-rc.1", c)
        got = await ops.resolve(store, "lab/cal-kit@>=1.2,<2")
        assert (got.id, got.version, got.record["message"]) == (b, "1.3.0", "")
        assert (await ops.resolve(store, "lab/cal-kit")).version == "1.3.0"
        assert (await ops.resolve(store, "lab/cal-kit", pre=True)).version == "2.0.0-rc.1"
        assert (await ops.resolve(store, f"{store}#lab/cal-kit@~1.2.0")).id == a
        assert await ops.yank(store, "lab/cal-kit@1.3.0", "wrong calibration")
        assert not await ops.yank(store, "lab/cal-kit@1.3.0", "again")
        assert (await ops.resolve(store, "lab/cal-kit@^1")).version == "1.2.0"
        with pytest.warns(snapdir.SnapdirWarning, match="wrong calibration"):
            pinned = await ops.resolve(store, "lab/cal-kit@==1.3.0")
        assert (pinned.id, pinned.yanked) == (b, True)
        assert await ops.unyank(store, "lab/cal-kit@1.3.0")
        assert (await ops.resolve(store, "lab/cal-kit@^1")).version == "1.3.0"
        with pytest.raises(NotFoundError):
            await ops.resolve(store, "lab/cal-kit@^3")

        e1 = await ops.channel_set(store, "lab/cal-kit@stable", "lab/cal-kit@1.2.0")
        assert (e1.seq, e1.id, e1.version) == (1, a, "1.2.0")
        with pytest.raises(ConflictError, match="moved"):
            await ops.channel_set(store, "lab/cal-kit@stable", c, expect=b)
        e2 = await ops.channel_set(store, "lab/cal-kit@stable", c, expect=a, message="rc")
        assert e2.seq == 2
        assert (await ops.resolve(store, "lab/cal-kit@stable")).id == c
        log = await ops.channel_log(store, "lab/cal-kit@stable")
        assert [(e.seq, e.id) for e in log] == [(2, c), (1, a)]

        listed = await ops.refs(store, yanked=True)
        assert [n["name"] for n in listed] == ["lab/cal-kit"]
        assert [v["version"] for v in listed[0]["versions"]] == ["1.2.0", "1.3.0", "2.0.0-rc.1"]
        assert listed[0]["channels"] == {"stable": {"id": c, "version": "", "seq": 2}}

    anyio.run(body)


def _json(*argv: str, status: int = 0, env: dict[str, str] | None = None) -> Any:
    proc = run_cli(*argv, "--json", env=env or cli_env())
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def test_cli_release_flow(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    t1, t2 = _trees(tmp_path, 2)
    p1 = _json("push", str(t1), "--store", store, "--tag", "cal-kit@1.2.0",
               "--channel", "cal-kit@stable")  # fmt: skip
    assert (p1["tag"], p1["channel"]) == ("cal-kit@1.2.0", "cal-kit@stable#1")
    p2 = _json("push", str(t2), "--store", store, "--tag", "cal-kit@1.3.0")
    assert (
        _json("push", str(t2), "--store", store, "--tag", "cal-kit@1.2.0", status=3)["error"][
            "code"
        ]
        == "CONFLICT"
    )
    r = _json("resolve", "cal-kit@>=1.2,<2", "--store", store)
    assert (r["id"], r["version"]) == (p2["id"], "1.3.0")
    assert _json("resolve", "cal-kit@stable", "--store", store)["id"] == p1["id"]
    # every command that takes an id takes a ref
    dest = tmp_path / "out"
    _json("pull", f"{store}#cal-kit@stable", str(dest))
    assert (dest / "data.txt").read_text() == "content 0\n"
    assert _json("verify", "--id", "cal-kit@1.3.0", "--store", store)["ok"] is True
    assert _json("size", "--id", "cal-kit", "--store", store)["files"] == 1
    d = _json("diff", "--from", f"{store}#cal-kit@1.2.0", "--to", f"{store}#cal-kit@1.3.0")
    assert d["changed"] is True
    # lockfile: pins ids; --check sees a yank
    lockfile = tmp_path / "snapdir.lock"
    locked = _json("lock", "cal-kit@^1", "--store", store, "-o", str(lockfile))
    assert [e["id"] for e in locked["entries"]] == [p2["id"]]
    assert _json("lock", "--check", "-o", str(lockfile))["problems"] == []
    out2 = tmp_path / "locked"
    _json("pull", "--locked", str(lockfile), str(out2))
    assert (out2 / "data.txt").read_text() == "content 1\n"
    _json("yank", "cal-kit@1.3.0", "--reason", "bad", "--store", store)
    check = _json("lock", "--check", "-o", str(lockfile), status=1)
    assert [p["problem"] for p in check["problems"]] == ["yanked"]


def test_lock_check_sees_drift(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    a, b = run(lambda: _push_all(store, _trees(tmp_path, 2)))
    run(lambda: ops.tag(store, "kit@1.0.0", a))
    lockfile = tmp_path / "kit.lock"
    _json("lock", "kit@^1", "kit@1.0.0", "--store", store, "-o", str(lockfile))
    doc = json.loads(lockfile.read_text())
    assert doc["schema"] == 1
    assert doc["entries"][0]["record"]["id"] == a
    assert run(lambda: lock_check(str(lockfile))) == []
    run(lambda: ops.tag(store, "kit@1.1.0", b))
    check = _json("lock", "--check", "-o", str(lockfile), status=1)
    assert [(p["ref"], p["problem"], p["now"]) for p in check["problems"]] == [
        ("kit@^1", "drift", b)
    ]
    text = run_cli("lock", "--check", "-o", str(lockfile))
    assert text.returncode == 1
    assert "drift" in text.stderr


class _Counted:
    """Counts the small-key calls a store receives (list_keys, get_bytes)."""

    def __init__(self, st: Any) -> None:
        self.lists = self.gets = 0
        inner_list, inner_get = st.list_keys, st.get_bytes

        async def list_keys(prefix: str) -> Any:
            self.lists += 1
            return await inner_list(prefix)

        async def get_bytes(key: str, *, max_size: int) -> bytes:
            self.gets += 1
            data: bytes = await inner_get(key, max_size=max_size)
            return data

        st.list_keys, st.get_bytes = list_keys, get_bytes


def test_resolve_among_500_versions_costs_one_list_and_one_get(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapdir.names.layout import dump, version_key

    store = backend.store()
    (sid,) = run(lambda: _push_all(store, _trees(tmp_path, 1)))
    versions = [f"{1 + i // 100}.{(i // 10) % 10}.{i % 10}" for i in range(500)]

    async def plant() -> None:
        st: Any = open_store(store)
        sem = anyio.Semaphore(16)

        async def one(v: str) -> None:
            async with sem:
                doc = {"schema": 1, "id": sid, "name": "kit", "version": v, "created": "",
                       "by": "", "message": ""}  # fmt: skip
                await st.put_if_absent(version_key("kit", v), dump(doc))

        async with anyio.create_task_group() as tg:
            for v in versions:
                tg.start_soon(one, v)
        await st.aclose()

    anyio.run(plant)
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(tmp_path / "fresh-cache"))

    def resolve_counted() -> tuple[int, int, int, str]:
        async def go() -> tuple[int, int, int, str]:
            st = open_store(store)
            counted = _Counted(st)
            before = st.request_count()
            r = await ops.resolve(st, "kit@>=1.2,<2")
            requests = st.request_count() - before
            await st.aclose()
            return counted.lists, counted.gets, requests, r.version

        return anyio.run(go)

    cold = resolve_counted()
    assert cold[:2] == (1, 1), cold
    assert cold[3] == "1.9.9"
    warm = resolve_counted()
    assert warm[:2] == (1, 0), warm
    assert warm[3] == "1.9.9"
    # HTTP requests: a list page and a GET (GCS: a GET is the object's metadata, then its
    # bytes; B2: a version listing, then a download, and the first call authorises)
    bound = {"file": (0, 0), "s3": (2, 1), "gs": (3, 1), "b2": (3 + 2, 1 + 2)}[backend.scheme]
    assert cold[2] <= bound[0], (cold, warm)
    assert warm[2] <= bound[1], (cold, warm)


def race_tags(store: str, ids: list[str], trials: int, tag_prefix: str = "race") -> None:
    """``trials`` rounds of len(ids) concurrent tags of one version with different ids:
    exactly one wins, the others get CONFLICT, the record is the winner's; then the same
    number of racers with one id all succeed."""

    async def round_(version: str) -> None:
        outcome: dict[str, str] = {}

        async def one(sid: str) -> None:
            try:
                await ops.tag(store, f"{tag_prefix}@{version}", sid)
                outcome[sid] = "won"
            except ConflictError:
                outcome[sid] = "conflict"

        async with anyio.create_task_group() as tg:
            for sid in ids:
                tg.start_soon(one, sid)
        winners = [s for s, o in outcome.items() if o == "won"]
        assert len(winners) == 1, outcome
        assert sorted(outcome.values()).count("conflict") == len(ids) - 1
        stored = await ops.resolve(store, f"{tag_prefix}@=={version}")
        assert stored.id == winners[0]

        same: list[bool] = []

        async def same_id() -> None:
            r = await ops.tag(store, f"{tag_prefix}@{version}-same", ids[0])
            same.append(r.id == ids[0])

        async with anyio.create_task_group() as tg:
            for _ in ids:
                tg.start_soon(same_id)
        assert same == [True] * len(ids)

    for t in range(trials):
        anyio.run(round_, f"1.0.{t}")


def test_racing_tags_have_exactly_one_winner(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    ids = run(lambda: _push_all(store, _trees(tmp_path, RACERS)))
    race_tags(store, ids, TAG_TRIALS)


def race_channel(store: str, ids: list[str], moves_per_writer: int) -> int:
    """len(ids) writers, each making ``moves_per_writer`` moves of one channel with
    ``expect`` (re-reading the head after every conflict): the log must be one line of
    sequence numbers 1..N, N the moves reported, each move in it once. Returns N."""
    target = "soak@stable"

    async def body() -> int:
        await ops.channel_set(store, target, ids[0], message="start")
        made: list[str] = []

        async def writer(w: int) -> None:
            done = 0
            while done < moves_per_writer:
                head = await ops.resolve(store, target)
                msg = f"w{w}-{done}"
                try:
                    await ops.channel_set(store, target, ids[w], expect=head.id, message=msg)
                except ConflictError:
                    continue
                made.append(msg)
                done += 1

        async with anyio.create_task_group() as tg:
            for w in range(len(ids)):
                tg.start_soon(writer, w)
        log = await ops.channel_log(store, target)
        seqs = [e.seq for e in reversed(log)]
        assert seqs == list(range(1, len(log) + 1)), seqs
        moves = [e.message for e in reversed(log)][1:]
        assert sorted(moves) == sorted(made), (moves, made)
        assert len(made) == len(ids) * moves_per_writer
        return len(made)

    return anyio.run(body)


def test_channel_movers_keep_one_linear_log(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    ids = run(lambda: _push_all(store, _trees(tmp_path, RACERS)))
    assert race_channel(store, ids, MOVES_PER_WRITER) == RACERS * MOVES_PER_WRITER


def test_sync_copies_names_last_and_create_only(backend: Backend, tmp_path: Path) -> None:
    src = uri(tmp_path / "src-store")
    dst = backend.store("dst")
    a, b = run(lambda: _push_all(src, _trees(tmp_path, 2)))
    run(lambda: ops.tag(src, "kit@1.0.0", a))
    run(lambda: ops.tag(src, "kit@2.0.0", b))
    run(lambda: ops.yank(src, "kit@1.0.0", "old"))
    out = _json("sync", "kit@==1.0.0", "--from", src, "--to", dst)
    assert out["id"] == a
    assert out["names"] == [".snapdir/names/kit/v/1.0.0", ".snapdir/names/kit/y/1.0.0/0001-yank"]
    assert _json("sync", a, "--from", src, "--to", dst)["names"] == []  # already there
    with pytest.raises(NotFoundError):  # kit@2.0.0 names a snapshot not synced
        run(lambda: ops.resolve(dst, "kit@2.0.0"))
    with pytest.warns(snapdir.SnapdirWarning, match="yanked: old"):
        got = run(lambda: ops.resolve(dst, "kit@==1.0.0"))
    assert (got.id, got.yanked) == (a, True)


def test_journal_retention_and_gc_roots_see_names(tmp_path: Path) -> None:
    from snapdir.lifecycle.ops import forget, ls
    from snapdir.lifecycle.retention import Policy
    from snapdir.names.roots import gc_roots

    store = uri(tmp_path / "store")
    t1, t2, t3 = _trees(tmp_path, 3)
    p1 = _json("push", str(t1), "--store", store, "--tag", "kit@1.0.0")
    p2 = _json("push", str(t2), "--store", store)
    p3 = _json("push", str(t3), "--store", store)
    run(lambda: ops.channel_set(store, "kit@beta", p2["id"]))
    entries = {e.id: e for e in run(lambda: ls(store))}
    assert entries[p1["id"]].tags == ("kit@1.0.0",)
    assert entries[p2["id"]].tags == ()
    ids, objects = run(lambda: gc_roots(open_store(store)))
    assert ids == {p1["id"], p2["id"]}
    assert objects == set()
    verdicts = run(lambda: forget(store, policy=Policy(last=1, group_by=()), dry_run=True))
    by_id = {v.info.id: v for v in verdicts}
    assert by_id[p1["id"]].keep
    assert by_id[p1["id"]].reasons == ("holds a release name",)
    assert by_id[p2["id"]].keep
    assert by_id[p3["id"]].keep
    assert by_id[p3["id"]].reasons == ("last snapshot",)


def test_login_keeps_credentials_in_the_keyring_not_anywhere_else(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    s3 = request.getfixturevalue("seaweedfs")
    bucket = f"names-{uuid.uuid4().hex[:10]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    client.close()
    store = f"s3://{bucket}/kr"
    env = cli_env(
        PYTHON_KEYRING_BACKEND="keyring_backend.FileKeyring",
        PYTHONPATH=str(Path(__file__).parent),
        SNAPDIR_TEST_KEYRING_FILE=str(tmp_path / "keyring.json"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_DEFAULT_REGION=s3.region,
        SNAPDIR_S3_STORE_ENDPOINT_URL=s3.endpoint_url,
        AWS_ACCESS_KEY_ID=None,
        AWS_SECRET_ACCESS_KEY=None,
        AWS_PROFILE=None,
    )
    (tree,) = _trees(tmp_path, 1)
    # no credentials anywhere: the SDK's chain finds none
    assert run_cli("push", str(tree), "--store", store, env=env).returncode == 5
    login = subprocess.run(
        [
            sys.executable,
            "-m",
            "snapdir",
            "login",
            store,
            "--key-id",
            s3.access_key,
            "--secret-stdin",
            "--json",
        ],
        input=s3.secret_key + "\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    assert json.loads(login.stdout)["store"] == f"s3://{bucket}"
    pushed = run_cli("push", str(tree), "--store", store, "--tag", "kit@1.0.0", "--json", env=env)
    assert pushed.returncode == 0, pushed.stderr
    resolved = run_cli("resolve", "kit", "--store", store, "--json", env=env)
    assert json.loads(resolved.stdout)["id"] == json.loads(pushed.stdout)["id"]
    for proc in (login, pushed, resolved):
        assert s3.secret_key not in proc.stdout + proc.stderr
    stored = s3.client()
    for item in stored.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = stored.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        assert s3.secret_key.encode() not in body
        assert s3.secret_key not in item["Key"]
    stored.close()
    # the environment wins over the keyring
    wrong = dict(env, AWS_ACCESS_KEY_ID="wrong", AWS_SECRET_ACCESS_KEY="wrong-secret")
    assert run_cli("resolve", "kit", "--store", store, env=wrong).returncode == 5
    # SNAPDIR_KEYRING=0 turns the lookup off
    off = dict(env, SNAPDIR_KEYRING="0")
    assert run_cli("resolve", "kit", "--store", store, env=off).returncode == 5
    out = run_cli("logout", store, "--json", env=env)
    assert json.loads(out.stdout)["changed"] is True
    assert run_cli("resolve", "kit", "--store", store, env=env).returncode == 5


def test_a_second_b2_version_of_a_release_is_not_believed(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """B2 keeps every upload of a name: a record uploaded again (past snapdir, by a hostile
    or buggy writer) is a second version; the oldest one — the create-only winner — is the
    release, for every reader."""
    from snapdir.names.layout import dump

    b2 = request.getfixturevalue("b2_simulator")
    monkeypatch.setenv("B2_APPLICATION_KEY_ID", b2.key_id)
    monkeypatch.setenv("B2_APPLICATION_KEY", b2.app_key)
    monkeypatch.setenv("SNAPDIR_B2_REALM", b2.realm_url)
    prefix = f"dup-{uuid.uuid4().hex[:8]}"
    store = f"b2://{b2.bucket_name}/{prefix}"
    a, b = run(lambda: _push_all(store, _trees(tmp_path, 2)))
    run(lambda: ops.tag(store, "kit@1.0.0", a))
    forged = {"schema": 1, "id": b, "name": "kit", "version": "1.0.0", "created": "",
              "by": "", "message": ""}  # fmt: skip
    bucket = b2.api().get_bucket_by_name(b2.bucket_name)
    bucket.upload_bytes(dump(forged), f"{prefix}/.snapdir/names/kit/v/1.0.0")
    monkeypatch.setenv("SNAPDIR_CACHE_DIR", str(tmp_path / "fresh-cache"))
    assert run(lambda: ops.resolve(store, "kit@1.0.0")).id == a
    with pytest.raises(ConflictError):
        run(lambda: ops.tag(store, "kit@1.0.0", b))


def test_the_api_operations_take_refs(tmp_path: Path) -> None:
    store = uri(tmp_path / "store")
    other = uri(tmp_path / "other")
    (a,) = run(lambda: _push_all(store, _trees(tmp_path, 1)))
    run(lambda: ops.tag(store, "kit@1.0.0", a))

    async def body() -> None:
        await snapdir.pull("kit@^1", store, tmp_path / "out")
        assert (tmp_path / "out" / "data.txt").read_text() == "content 0\n"
        await snapdir.pull(a[:12], store, tmp_path / "out2")
        assert await snapdir.verify("kit", store)
        assert (await snapdir.size(store, "kit@1.0.0")).files == 1
        await snapdir.sync("kit@==1.0.0", store, other)
        assert (await ops.resolve(other, "kit")).id == a
        await snapdir.fetch(f"{store}#kit@1.0.0", store)
        with pytest.raises(NotFoundError):
            await snapdir.pull("kit@^2", store, tmp_path / "out3")

    anyio.run(body)
    assert not (tmp_path / "out3").exists()
