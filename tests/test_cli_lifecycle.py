"""The lifecycle commands as a user runs them: push with a time, host and labels, ``ls`` and
its filters, ``forget`` by id and by policy (dry run first), ``adopt`` of a store written
without a journal, ``du``; and a journal key planted by a hostile store is reported, not
believed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storeutil import cli_env, run_cli, uri, write


def _json(*argv: str, status: int = 0) -> Any:
    proc = run_cli(*argv, "--json")
    assert proc.returncode == status, (argv, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "shared.bin", "s" * 1000)
    write(a / "only-a.txt", "aaaa")
    write(b / "shared.bin", "s" * 1000)
    write(b / "only-b.txt", "bbbbbbbb")
    return a, b


def test_push_ls_forget_du_adopt(tmp_path: Path) -> None:
    a, b = _trees(tmp_path)
    store = uri(tmp_path / "store")
    pa = _json("push", str(a), "--store", store, "--time", "2024-05-01T10:00:00Z",
               "--host", "ci-1", "--label", "nightly", "--label", "release")  # fmt: skip
    assert pa["journal"].startswith(".snapdir/journal/20240501T100000.000000Z_")
    pb = _json("push", str(b), "--store", store, "--host", "ci-2")
    assert pb["journal"].startswith(".snapdir/journal/S_")
    staged = _json("stage", str(a))
    assert staged["journal"] is None  # the local cache keeps no journal

    listed = _json("ls", "--store", store)["snapshots"]
    assert [(s["id"], s["host"]) for s in listed] == [(pb["id"], "ci-2"), (pa["id"], "ci-1")]
    assert listed[1]["time"] == "2024-05-01T10:00:00Z"
    assert listed[1]["labels"] == ["nightly", "release"]
    assert listed[1]["path"] == str(a)
    assert (listed[1]["files"], listed[1]["bytes"]) == (2, 1004)
    assert [s["id"] for s in _json("ls", "--store", store, "--label", "release")["snapshots"]] == [
        pa["id"]
    ]
    assert [
        s["id"] for s in _json("ls", "--store", store, "--since", "2025-01-01")["snapshots"]
    ] == [pb["id"]]
    text = run_cli("ls", "--store", store)
    assert text.returncode == 0
    assert pa["id"][:12] in text.stdout
    assert "[nightly,release]" in text.stdout
    assert "1004 B" in text.stdout

    usage = _json("du", pa["id"][:12], "--store", store)
    assert (usage["unique_bytes"], usage["shared_bytes"]) == (4, 1000)
    assert usage["unreachable_bytes"] == 0

    dry = _json("forget", "--keep-last", "1", "--group-by", "", "--dry-run", "--store", store)
    assert dry["dry_run"] is True
    assert [k["id"] for k in dry["kept"]] == [pb["id"]]
    assert dry["kept"][0]["reasons"] == ["last snapshot"]
    assert [r["id"] for r in dry["removed"]] == [pa["id"]]
    assert len(_json("ls", "--store", store)["snapshots"]) == 2  # nothing removed
    done = _json("forget", pa["id"][:10], "--store", store)
    assert [r["reasons"] for r in done["removed"]] == [["forgotten by id"]]
    assert [s["id"] for s in _json("ls", "--store", store)["snapshots"]] == [pb["id"]]
    after = _json("du", "--store", store)
    assert after["unreachable_bytes"] == 4  # only-a.txt: what a collection would free
    assert _json("verify", "--id", pa["id"], "--store", store)["ok"] is True  # content stays

    orphans = _json("ls", "--orphans", "--store", store)["snapshots"]
    assert [(s["id"], s["key"]) for s in orphans if not s["key"]] == [(pa["id"], "")]
    adopted = _json("adopt", "--store", store, "--host", "legacy")
    assert [e["id"] for e in adopted["adopted"]] == [pa["id"]]
    assert adopted["managed"] is True
    assert (tmp_path / "store" / ".snapdir" / "managed").is_file()
    assert _json("adopt", "--store", store)["adopted"] == []


def test_forget_by_policy_keeps_what_restic_would(tmp_path: Path) -> None:
    a, _ = _trees(tmp_path)
    store = uri(tmp_path / "store")
    days = ["2024-05-01T10:00:00Z", "2024-05-01T18:00:00Z", "2024-05-02T09:00:00Z"]
    ids = [
        _json("push", str(a), "--store", store, "--time", d, "--host", "h")["journal"] for d in days
    ]
    out = _json("forget", "--keep-daily", "5", "--store", store)
    assert sorted(k["key"] for k in out["kept"]) == sorted([ids[1], ids[2]])
    assert [r["key"] for r in out["removed"]] == [ids[0]]
    assert all(k["reasons"] == ["daily snapshot"] for k in out["kept"])


def test_a_planted_journal_key_is_reported_not_believed(tmp_path: Path) -> None:
    a, _ = _trees(tmp_path)
    store_dir = tmp_path / "store"
    store = uri(store_dir)
    pa = _json("push", str(a), "--store", store)
    bogus = store_dir / ".snapdir" / "journal" / ("S_" + "0" * 64 + "_" + "1" * 16) / "mnotjson"
    bogus.parent.mkdir(parents=True)
    bogus.write_text("{}")
    doc = _json("ls", "--store", store)
    assert [s["id"] for s in doc["snapshots"]] == [pa["id"]]
    assert any("malformed journal key" in w for w in doc["warnings"])
    text = run_cli("ls", "--store", store, env=cli_env())
    assert "snapdir: warning:" in text.stderr
    assert "malformed journal key" in text.stderr


def test_bad_labels_and_times_are_usage_errors_before_any_write(tmp_path: Path) -> None:
    a, _ = _trees(tmp_path)
    store_dir = tmp_path / "store"
    for argv in (
        ["--label", "a,b"],
        ["--label", ""],
        ["--time", "last tuesday"],
    ):
        proc = run_cli("push", str(a), "--store", uri(store_dir), *argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert not store_dir.exists(), argv


def test_json_manifest_permissions_read_as_the_text_does(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    write(tree / "run.sh", "#!/bin/sh\n")
    (tree / "run.sh").chmod(0o750)
    doc = _json("manifest", str(tree))
    text = run_cli("manifest", str(tree)).stdout.splitlines()
    perms = {e["path"]: e["permissions"] for e in doc["entries"]}
    assert perms["./run.sh"] == "750"
    assert {ln.split(" ")[4]: ln.split(" ")[1] for ln in text} == perms


def test_stage_says_it_stored_into_the_local_cache(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    write(tree / "a", "a\n")
    proc = run_cli("stage", str(tree))
    assert proc.returncode == 0, proc.stderr
    assert "stored in the local cache 1 of 1 objects" in proc.stderr
    assert "uploaded" not in proc.stderr
