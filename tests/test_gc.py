"""The collector (``snapdir gc``) and the pusher's side of its protocol (intents, plans):
what it deletes and keeps, on every backend, and each interleaving the argument in
docs/design/gc.md covers — an intent written before the plan, one written after it (seen
by the re-check), a no-op push that finds a plan naming its snapshot and puts back what
the sweep removed, a stale plan, an expired intent, a collector stopped between its
manifest and object deletes — plus ``--max-delete``, ``--dry-run``, the refusal of an
unmanaged store, the request counts, and the Rust mark set."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
import snapdir
from gcutil import BACKENDS, Backend, open_backend, write_tree
from snapdir import ConflictError
from snapdir._common import open_wrapped
from snapdir._push import push_with_stats
from snapdir._snapdir import MarkSet
from snapdir.lifecycle import adopt, forget
from snapdir.lifecycle import intents as intents_mod
from snapdir.lifecycle.gc import check_roots, gc
from snapdir.lifecycle.intents import INTENTS, PLANS, plan_body, plan_key, protect
from snapdir.stores._keys import KeyStore
from storeutil import run_cli

T = TypeVar("T")
NO_GRACE = timedelta(0)
#: The collector's own listings (see test_collects_what_no_root_reaches), plus at most three
#: list pages of the other root sources: names (one), recordings (one), runs (its records;
#: the journal its liveness rule reads is the listing the journal source made, shared
#: through lifecycle.roots.shared_listing). Listings only: no GET, write or delete.
#: (Measured: S3 9, GCS 9, B2 11; before the managed marker was read only when there is
#: something to delete 10, 11 and 13; before the shared listing 11, 12 and 14. GCS: one
#: more for its client's set-up call, which a client may have made already. A file://
#: store counts no requests.)
NOOP_GC_REQUESTS = {"file": 0, "s3": 9, "gs": 10, "b2": 11}
GUARD_REQUESTS = {"file": 4, "s3": 4, "gs": 4, "b2": 10}


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Backend:
    """A fresh store factory on each backend (the loopback servers)."""
    return open_backend(str(request.param), request, monkeypatch, tmp_path)


def arun(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn)


def trees(tmp: Path) -> tuple[Path, Path, Path]:
    """a and b share one object; g (the garbage-to-be) shares one with a."""
    shared = os.urandom(3000)
    a = write_tree(tmp / "a", {"shared.bin": shared, "only-a.txt": b"a" * 500})
    b = write_tree(tmp / "b", {"shared.bin": shared, "only-b.txt": b"b" * 700})
    g = write_tree(
        tmp / "g",
        {"g1.bin": os.urandom(900), "g2.bin": os.urandom(1100), "sub/only-a.txt": b"a" * 500},
    )
    return a, b, g


async def keys(uri: str, prefix: str) -> list[str]:
    return sorted(k.key for k in await open_wrapped(uri).list_keys(prefix))  # type: ignore[attr-defined]


async def objects(uri: str) -> set[str]:
    return {k.replace("/", "")[len(".objects") :] for k in await keys(uri, ".objects/")}


async def prepare(uri: str, tmp: Path) -> tuple[str, str, str]:
    """Push a, b and g; adopt; forget g: g's manifest and its two own objects are garbage."""
    a, b, g = trees(tmp)
    ia = await snapdir.push(a, uri)
    ib = await snapdir.push(b, uri)
    ig = await snapdir.push(g, uri)
    await adopt(uri)
    await forget(uri, [ig])
    return ia, ib, ig


async def verify_all_ok(uri: str) -> None:
    r = await check_roots(uri)
    assert r.ok, (r.snapshots, r.missing_objects)


async def intact(uri: str, sid: str) -> bool:
    try:
        return await snapdir.verify(sid, uri)
    except snapdir.SnapdirError:
        return False


# -- what it deletes, on every backend ----------------------------------------------------


def test_collects_what_no_root_reaches(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = backend.fresh()
    import snapdir.lifecycle.ops as lifecycle_ops

    asked: list[str] = []
    real_is_managed = lifecycle_ops.is_managed

    async def counting_is_managed(store: KeyStore) -> bool:
        asked.append(str(store.uri))
        return await real_is_managed(store)

    monkeypatch.setattr(lifecycle_ops, "is_managed", counting_is_managed)

    async def body() -> None:
        ia, ib, ig = await prepare(uri, tmp_path)
        before = await objects(uri)
        assert len(before) == 5
        asked_before = len(asked)  # adopt asked too
        dry = await gc(uri, grace=NO_GRACE, delay=0, dry_run=True)
        assert (dry.dry_run, dry.manifests, dry.objects) == (True, [ig], 2)
        assert dry.bytes_freed >= 2000
        assert await objects(uri) == before  # a dry run deletes nothing
        assert await keys(uri, PLANS) == []

        r = await gc(uri, grace=NO_GRACE, delay=0)
        assert (r.manifests, r.objects, r.complete) == ([ig], 2, True)
        assert r.bytes_freed == dry.bytes_freed
        assert len(await objects(uri)) == 3
        assert await intact(uri, ia)
        assert await intact(uri, ib)
        assert not await open_wrapped(uri).has_manifest(ig)
        await verify_all_ok(uri)
        assert await keys(uri, PLANS) == []
        assert await keys(uri, INTENTS) == []

        assert len(asked) == asked_before + 2  # the dry run and the collection
        again = await gc(uri, grace=NO_GRACE, delay=0)
        assert (again.manifests, again.objects, again.plan) == ([], 0, None)
        assert len(asked) == asked_before + 2  # nothing to delete: the managed marker is not read
        # store time, 5 listings (intents, journal, manifests, objects,
        # plans: one page each here); no GET per root manifest (the first run kept them in
        # the local cache; file:// reads its own), no write, no delete. B2 reads a record
        # by listing its versions first, and authorises; GCS's client makes one set-up call.
        assert again.requests <= NOOP_GC_REQUESTS[backend.name], again.requests

    arun(body)


def test_journal_is_listed_once_per_reading_of_the_roots(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal source and the runs source (whose liveness rule reads the journal) share
    one listing per collect_roots call: once in a no-op collection, once per reading (C1
    and the re-check C3) in one that deletes. Outside a collection each lists for itself."""
    from snapdir._common import unwrap
    from snapdir.lifecycle.journal import JOURNAL
    from snapdir.runs.roots import gc_roots as run_roots

    uri = backend.fresh()
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "snapdir.toml").write_text("")
    (root / "data" / "x.txt").write_text("x\n")
    cls = type(unwrap(open_wrapped(uri)))
    real = cls.list_keys  # type: ignore[attr-defined]
    listed: list[str] = []

    async def counting(self: Any, prefix: str) -> Any:
        listed.append(prefix)
        return await real(self, prefix)

    async def body() -> None:
        ia, _, ig = await prepare(uri, tmp_path)
        # a run record, so that the runs source has a record whose liveness it must judge
        made = await snapdir.run_command(
            ["true"], store=uri, inputs=["data"], cwd=root, stream=False, git=False,
            config=False,
        )  # fmt: skip
        monkeypatch.setattr(cls, "list_keys", counting)
        r = await gc(uri, grace=NO_GRACE, delay=0)
        assert (r.manifests, r.objects) == ([ig], 2)
        assert listed.count(JOURNAL) == 2  # C1 and C3, one listing each
        listed.clear()
        again = await gc(uri, grace=NO_GRACE, delay=0)
        assert (again.manifests, again.objects) == ([], 0)
        assert listed.count(JOURNAL) == 1
        # the run's input is still kept (the shared listing was read, not skipped)
        snaps, _ = await run_roots(uri)
        assert made.inputs["data"] in snaps
        listed.clear()
        await run_roots(uri)
        assert listed.count(JOURNAL) == 1  # outside a collection: its own listing
        assert await intact(uri, ia)
        assert await intact(uri, made.inputs["data"])

    arun(body)


def test_unmanaged_store_is_refused(tmp_path: Path) -> None:
    uri = "file://" + str(tmp_path / "store")

    async def body() -> None:
        a, _, _ = trees(tmp_path)
        sid = await snapdir.push(a, uri)
        await forget(uri, [sid])
        with pytest.raises(ConflictError) as err:
            await gc(uri, grace=NO_GRACE, delay=0)
        assert err.value.code == "NOT_MANAGED"
        assert await intact(uri, sid)

    arun(body)
    proc = run_cli("gc", "--store", uri, "--grace", "0", "--json")
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "NOT_MANAGED"
    # With the default grace the forgotten snapshot is too young to collect: nothing is a
    # candidate, so nothing would be deleted whatever the store's state, and gc says so.
    proc = run_cli("gc", "--store", uri, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["manifests"], out["objects"]) == ([], 0)


def test_grace_spares_young_content_and_max_delete_stops_early(tmp_path: Path) -> None:
    uri = "file://" + str(tmp_path / "store")

    async def body() -> None:
        _, _, ig = await prepare(uri, tmp_path)
        young = await gc(uri, delay=0)  # default grace: an hour
        assert (young.manifests, young.objects) == ([], 0)
        part = await gc(uri, grace=NO_GRACE, delay=0, max_delete=2)
        assert (part.manifests, part.objects, part.complete) == ([ig], 1, False)
        await verify_all_ok(uri)
        rest = await gc(uri, grace="0", delay=0)
        assert (rest.manifests, rest.objects, rest.complete) == ([], 1, True)

    arun(body)


def test_grace_keeps_the_objects_of_a_manifest_it_spares(tmp_path: Path) -> None:
    """A manifest the grace period spares keeps its objects, however old they are: a
    snapshot pushed a minute ago reusing hour-old content, then forgotten, must not be left
    as a manifest whose objects are gone, since a later push of the same tree finds the
    manifest, uploads nothing and journals it (a no-op push trusts a manifest to be whole).
    """
    uri = "file://" + str(tmp_path / "store")
    store = tmp_path / "store"

    async def body() -> None:
        shared = os.urandom(2000)
        old = write_tree(tmp_path / "old", {"shared.bin": shared, "only-old.txt": b"o" * 300})
        new = write_tree(tmp_path / "new", {"shared.bin": shared, "only-new.txt": b"n" * 400})
        i_old = await snapdir.push(old, uri)
        await adopt(uri)
        two_hours_ago = time.time() - 7200
        for p in (store / ".objects").rglob("*"):
            os.utime(p, (two_hours_ago, two_hours_ago))
        for p in (store / ".manifests").rglob("*"):
            os.utime(p, (two_hours_ago, two_hours_ago))
        i_new = await snapdir.push(new, uri)  # reuses the two-hour-old shared.bin
        await forget(uri, [i_old, i_new])
        r = await gc(uri, delay=0)  # default grace: an hour
        # the old snapshot's manifest and its own object go; the young manifest stays,
        # and so does every object it names
        assert (r.manifests, r.objects) == ([i_old], 1)
        assert await intact(uri, i_new)
        again = await push_with_stats(new, uri)
        assert (again["id"], again["noop"]) == (i_new, True)
        assert await intact(uri, i_new)
        await verify_all_ok(uri)

    arun(body)


def test_cli_gc_and_verify_all(tmp_path: Path) -> None:
    uri = "file://" + str(tmp_path / "store")
    arun(lambda: prepare(uri, tmp_path))
    env_delay = {"SNAPDIR_GC_DELAY": "0"}
    from storeutil import cli_env

    dry = run_cli(
        "gc", "--store", uri, "--grace", "0", "--dry-run", "--json", env=cli_env(**env_delay)
    )
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert (doc["dry_run"], len(doc["manifests"]), doc["objects"]) == (True, 1, 2)
    done = run_cli("gc", "--store", uri, "--grace", "0", env=cli_env(**env_delay))
    assert done.returncode == 0, done.stderr
    assert "deleted 1 manifest(s) and 2 object(s)" in done.stdout
    ok = run_cli("verify", "--all", "--store", uri, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["snapshots"] == 2
    # A root whose object is gone: verify --all says so, with status 1.
    victim = sorted(p for p in (tmp_path / "store" / ".objects").rglob("*") if p.is_file())[-1]
    victim.chmod(0o644)
    victim.unlink()
    bad = run_cli("verify", "--all", "--store", uri, "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False
    bad_usage = run_cli("gc", "--store", uri, "--grace", "soon")
    assert bad_usage.returncode == 2


# -- the interleavings ----------------------------------------------------------------------


def test_an_intent_written_before_the_plan_keeps_its_content(
    backend: Backend, tmp_path: Path
) -> None:
    uri = backend.fresh()

    async def body() -> None:
        _, _, ig = await prepare(uri, tmp_path)
        m = await open_wrapped(uri).get_manifest(ig)
        async with protect(open_wrapped(uri), snapshot_id=ig, manifest=m.raw):
            r = await gc(uri, grace=NO_GRACE, delay=0)
            assert (r.manifests, r.objects) == ([], 0)
            assert await intact(uri, ig)
        assert await keys(uri, INTENTS) == []
        r = await gc(uri, grace=NO_GRACE, delay=0)  # the writer left without naming it
        assert (r.manifests, r.objects) == ([ig], 2)

    arun(body)


def test_an_intent_written_after_the_plan_is_seen_by_the_recheck(
    backend: Backend, tmp_path: Path
) -> None:
    uri = backend.fresh()

    async def body() -> None:
        _, _, ig = await prepare(uri, tmp_path)
        m = await open_wrapped(uri).get_manifest(ig)
        async with AsyncExitStack() as stack:

            async def on_phase(name: str) -> None:
                if name == "recheck":  # the plan is published; the intent comes now
                    await stack.enter_async_context(
                        protect(open_wrapped(uri), snapshot_id=ig, manifest=m.raw)
                    )

            r = await gc(uri, grace=NO_GRACE, delay=0, on_phase=on_phase)
            assert (r.manifests, r.objects, r.kept_by_recheck) == ([], 0, 3)
            assert await intact(uri, ig)

    arun(body)


def test_a_noop_push_during_a_sweep_puts_back_what_it_removed(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pusher writes its intent after the collector re-read them (so the collector
    deletes the snapshot), finds the plan naming it, waits for the sweep to end and puts
    the manifest and objects back before journalling."""
    uri = backend.fresh()
    published = anyio.Event()
    pusher_saw_plans = anyio.Event()
    real_read_plans = intents_mod.read_plans

    async def read_plans(store: Any) -> list[intents_mod.Plan]:
        plans = await real_read_plans(store)
        pusher_saw_plans.set()
        return plans

    monkeypatch.setattr(intents_mod, "read_plans", read_plans)

    async def body() -> None:
        _, _, ig = await prepare(uri, tmp_path)
        pushed: dict[str, Any] = {}

        async def on_phase(name: str) -> None:
            if name == "delete-manifests":
                published.set()
                await pusher_saw_plans.wait()

        async def pusher() -> None:
            await published.wait()
            st = await push_with_stats(tmp_path / "g", uri)
            pushed.update(st.fields)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pusher)
            r = await gc(uri, grace=NO_GRACE, delay=0, on_phase=on_phase)
        assert r.manifests == [ig]  # the sweep did remove it ...
        assert pushed["id"] == ig
        assert pushed["journal"]
        assert await intact(uri, ig)  # ... and the push put it back before journalling
        await verify_all_ok(uri)
        assert await keys(uri, INTENTS) == []

    arun(body)


def test_a_stale_plan_holds_no_pusher_and_is_removed(tmp_path: Path) -> None:
    uri = "file://" + str(tmp_path / "store")

    async def body() -> None:
        _, _, ig = await prepare(uri, tmp_path)
        st = open_wrapped(uri)
        m = await st.get_manifest(ig)
        cands, cm = MarkSet(), MarkSet()
        cands.add_manifest(m)
        cm.add_hex([ig])
        past = datetime.now(timezone.utc) - timedelta(minutes=5)
        key = plan_key(past)
        assert await st.put_if_absent(key, plan_body(past, cm.to_packed(), cands.to_packed()))  # type: ignore[attr-defined]
        start = time.monotonic()
        again = await push_with_stats(tmp_path / "g", uri)  # a no-op push
        assert time.monotonic() - start < 5
        assert again["noop"] is True
        check = await check_roots(uri)
        assert check.stale_plans == [key]
        assert check.ok
        r = await gc(uri, grace=NO_GRACE, delay=0)
        assert r.stale_plans == [key]
        assert await keys(uri, PLANS) == []

    arun(body)


def test_an_expired_intent_is_reported_and_removed(tmp_path: Path) -> None:
    uri = "file://" + str(tmp_path / "store")
    root = tmp_path / "store"

    async def body() -> None:
        _, _, ig = await prepare(uri, tmp_path)
        m = await open_wrapped(uri).get_manifest(ig)
        key = INTENTS + "0" * 32
        body = intents_mod.intent_body(ig, m.raw, [])
        assert await open_wrapped(uri).put_if_absent(key, body)  # type: ignore[attr-defined]
        old = time.time() - 2 * 3600  # a writer that died two hours ago
        os.utime(root / key, (old, old))
        check = await check_roots(uri)
        assert check.expired_intents == [key]
        assert check.ok
        r = await gc(uri, grace=NO_GRACE, delay=0)
        assert r.expired_intents == [key]
        assert (r.manifests, r.objects) == ([ig], 2)
        assert await keys(uri, INTENTS) == []

    arun(body)


def test_an_intent_written_from_the_manifest_is_the_intent_of_its_text(tmp_path: Path) -> None:
    """A guard given the walked manifest itself (no-op push of millions of files: no Python
    string of the text) writes the same bytes as one given the text: from Rust after the
    header on `file://`, built once elsewhere."""
    from snapdir.stores._base import put_if_absent_of

    uri = "file://" + str(tmp_path / "store")
    root = tmp_path / "store"

    class Recorder:
        def __init__(self) -> None:
            self.data = b""

        async def put_if_absent(self, key: str, data: bytes) -> bool:
            self.data = data
            return True

    async def body() -> None:
        _, _, ig = await prepare(uri, tmp_path)
        st = open_wrapped(uri)
        m = await st.get_manifest(ig)
        want = intents_mod.intent_body(ig, m.raw, [])
        head = intents_mod.intent_head(ig, True, [])
        key = INTENTS + "1" * 32
        assert await put_if_absent_of(st, key, head, m)
        assert (root / key).read_bytes() == want
        assert intents_mod.parse_intent(key, datetime.now(timezone.utc), want).manifest == m
        assert not await put_if_absent_of(st, key, head, m)  # create-only, as put_if_absent
        other = Recorder()
        assert await put_if_absent_of(other, key, head, m)
        assert other.data == want
        async with intents_mod.protect(st, snapshot_id=ig, manifest=m) as guard:
            assert guard.key is not None
            assert (root / guard.key).read_bytes().endswith(want[len(head) :])

    arun(body)


def test_a_collector_stopped_between_manifests_and_objects(
    backend: Backend, tmp_path: Path
) -> None:
    uri = backend.fresh()

    class Killed(Exception):
        pass

    async def body() -> None:
        ia, ib, ig = await prepare(uri, tmp_path)

        async def on_phase(name: str) -> None:
            if name == "delete-objects":
                raise Killed

        with pytest.raises(Killed):
            await gc(uri, grace=NO_GRACE, delay=0, on_phase=on_phase)
        assert not await open_wrapped(uri).has_manifest(ig)
        assert len(await objects(uri)) == 5  # its objects are still there
        await verify_all_ok(uri)
        r = await gc(uri, grace=NO_GRACE, delay=0)
        assert (r.manifests, r.objects, r.complete) == ([], 2, True)
        assert len(await objects(uri)) == 3
        assert await intact(uri, ia)
        assert await intact(uri, ib)

    arun(body)


def test_push_and_sync_leave_no_intent_and_cost_four_requests(
    backend: Backend, tmp_path: Path
) -> None:
    uri = backend.fresh()
    other = "file://" + str(tmp_path / "other")

    async def body() -> None:
        a, _, _ = trees(tmp_path)
        await snapdir.push(a, uri)
        st = open_wrapped(uri)
        n0 = st.request_count()
        async with protect(st, snapshot_id=None, manifest=None, objects=[]):
            pass
        # the guard of a push: plans LIST (the store exists), intent PUT, plans LIST, intent
        # DELETE (B2: its create-only fallback lists the versions after the upload, a
        # delete lists them first)
        assert st.request_count() - n0 <= GUARD_REQUESTS[backend.name]
        sid = await snapdir.push(a, other)
        await snapdir.sync(sid, other, uri)
        assert await keys(uri, INTENTS) == []
        assert await keys(other, INTENTS) == []

    arun(body)


# -- the mark set -----------------------------------------------------------------------


def test_mark_set_membership_in_bulk() -> None:
    ms = MarkSet()
    digests = [os.urandom(32).hex() for _ in range(1000)]
    ms.add_hex(digests[:600])
    ms.add_hex(digests[:100])  # duplicates
    assert len(ms) == 600
    assert ms.unmarked(digests) == digests[600:]
    assert ms.marked(digests) == digests[:600]
    assert digests[0] in ms
    assert digests[999] not in ms
    packed = ms.to_packed()
    assert len(packed) == 600 * 32
    again = MarkSet()
    again.add_packed(packed)
    assert again.to_hex() == sorted(digests[:600])
    with pytest.raises(snapdir.InvalidArgumentError):
        ms.add_hex(["XYZ"])
    with pytest.raises(snapdir.InvalidArgumentError):
        ms.add_packed(b"123")
