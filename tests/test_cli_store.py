"""The store commands of the ``snapdir`` CLI, run as subprocesses: the CI flows from the
README, ``--json`` everywhere, exit statuses (tests/test_cli_contract.py pins them all), quiet
and progress behaviour."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from golden import build_case, load_cases
from storeutil import b3, cli_env, manifest_rel, object_rel, run_cli, uri, write

CASES = {c.name: c for c in load_cases()}


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    ok(proc)
    assert proc.stdout.endswith("\n")
    assert proc.stdout.count("\n") == 1, "--json prints one JSON document on one line"
    return json.loads(proc.stdout)


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return build_case(CASES["basic"], tmp_path / "build")


# --- the CI flows ---------------------------------------------------------------------------


def test_push_prints_exactly_the_id(tmp_path: Path, build: Path) -> None:
    store = uri(tmp_path / "store")
    proc = ok(run_cli("push", "./build", "--store", store, cwd=tmp_path))
    assert proc.stdout == CASES["basic"].id + "\n"
    # a second push (no-op) prints the same, and only that
    again = ok(run_cli("push", "./build", "--store", store, cwd=tmp_path))
    assert again.stdout == CASES["basic"].id + "\n"


def test_ci_flow_push_pull_diff(tmp_path: Path, build: Path) -> None:
    store = uri(tmp_path / "store")
    sid = ok(run_cli("push", str(build), "--store", store)).stdout.strip()
    dest = tmp_path / "dest"
    pulled = ok(run_cli("pull", sid, str(dest), "--store", store))
    assert pulled.stdout == ""
    assert ok(run_cli("id", str(dest))).stdout.strip() == sid

    same = run_cli("diff", "--from", f"{store}@{sid}", "--to", str(dest), "--exit-code")
    assert same.returncode == 0, same.stderr
    assert same.stdout == ""

    write(dest / "hello.txt", "changed\n")
    write(dest / "added.txt", "new\n")
    changed = run_cli("diff", "--from", f"{store}@{sid}", "--to", str(dest), "--exit-code")
    assert changed.returncode == 1, changed.stderr
    lines = changed.stdout.splitlines()
    assert any(ln.startswith("M ./hello.txt") and "content" in ln for ln in lines), lines
    assert "A ./added.txt" in lines
    assert not any(ln.startswith("=") for ln in lines)
    # without --exit-code a difference is not a failure
    assert run_cli("diff", "--from", f"{store}@{sid}", "--to", str(dest)).returncode == 0
    listed = ok(run_cli("diff", "--from", f"{store}@{sid}", "--to", str(dest), "--all"))
    assert "= ./sub/a.txt" in listed.stdout.splitlines()


def test_store_from_the_environment(tmp_path: Path, build: Path) -> None:
    env = cli_env(SNAPDIR_STORE=uri(tmp_path / "store"))
    sid = ok(run_cli("push", str(build), env=env)).stdout.strip()
    report = as_json(run_cli("verify", "--id", sid, "--json", env=env))
    assert report["ok"] is True
    assert report["snapshots"] == 1
    assert report["problems"] == {}
    all_report = as_json(run_cli("verify", "--json", env=env))
    assert all_report["ok"] is True
    sizes = as_json(run_cli("size", "--json", env=env))
    assert sizes == {
        "logical_bytes": 43,
        "physical_bytes": 43,
        "files": 6,
        "objects": 6,
        "schema": 1,
        "warnings": [],
    }
    ok(run_cli("pull", sid, str(tmp_path / "d"), env=env))
    assert (tmp_path / "d" / "hello.txt").read_text() == "hello\n"


def test_verify_reports_damage(tmp_path: Path, build: Path) -> None:
    store_dir = tmp_path / "store"
    sid = ok(run_cli("push", str(build), "--store", uri(store_dir))).stdout.strip()
    hello = b3(b"hello\n")
    (store_dir / object_rel(hello)).write_bytes(b"HELLO\n")
    (store_dir / object_rel(b3(b"a\n"))).unlink()
    proc = run_cli("verify", "--id", sid, "--store", uri(store_dir))
    assert proc.returncode == 1
    assert hello in proc.stderr
    assert b3(b"a\n") in proc.stderr
    assert proc.stdout == ""
    js = run_cli("verify", "--id", sid, "--store", uri(store_dir), "--json")
    assert js.returncode == 1
    report = json.loads(js.stdout)
    assert report["ok"] is False
    assert report["problems"] == {sid: {hello: "corrupt", b3(b"a\n"): "missing"}}


# --- --json on every command ---------------------------------------------------------------


def test_every_command_has_json_output(tmp_path: Path, build: Path) -> None:
    store, other = uri(tmp_path / "store"), uri(tmp_path / "other")
    staged = as_json(run_cli("stage", str(build), "--json"))
    sid = CASES["basic"].id
    assert staged["id"] == sid
    pushed = as_json(run_cli("push", str(build), "--store", store, "--json"))
    assert pushed["id"] == sid
    as_json(run_cli("fetch", sid, "--store", store, "--json"))
    as_json(run_cli("pull", sid, str(tmp_path / "p"), "--store", store, "--json"))
    as_json(run_cli("checkout", sid, str(tmp_path / "c"), "--json"))
    as_json(run_cli("sync", sid, "--from", store, "--to", other, "--json"))
    assert (tmp_path / "other" / manifest_rel(sid)).is_file()
    d = as_json(run_cli("diff", "--from", f"{store}@{sid}", "--to", str(tmp_path / "p"), "--json"))
    assert d["changed"] is False
    assert d["entries"] == []
    d_all = as_json(
        run_cli("diff", "--from", f"{other}@{sid}", "--to", str(tmp_path / "c"), "--json", "--all")
    )
    assert {e["status"] for e in d_all["entries"]} == {"="}
    assert len(d_all["entries"]) == len(CASES["basic"].manifest.split("\n"))
    assert as_json(run_cli("verify", "--store", other, "--json"))["ok"] is True
    size = as_json(run_cli("size", "--id", sid, "--store", store, "--json"))
    assert size["files"] == 6
    for name in ("id", "manifest"):
        as_json(run_cli(name, str(build), "--json"))


# --- exit statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["push", "{build}"], "store"),
        (["pull", "{sid}", "{tmp}/dest"], "store"),
        (["verify"], "store"),
        (["size"], "store"),
        (["fetch", "{sid}"], "store"),
        (["pull", "--store", "{store}"], "id"),
        (["pull", "{sid}", "--store", "{store}"], "destination"),
        (["checkout"], "id"),
        (["fetch", "--store", "{store}"], "id"),
        (["push", "{build}", "--store", "{store}", "--jobs", "0"], "jobs"),
        (["pull", "{sid}", "{tmp}/d", "--store", "{store}", "--jobs", "0"], "jobs"),
        (["sync", "{sid}", "--to", "{store}"], "from"),
        (["diff", "--from", "{build}"], "to"),
        (["push", "{build}", "--store", "{store}", "--no-such-flag"], "no-such-flag"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, build: Path, args: list[str], needle: str) -> None:
    subs = {
        "{build}": str(build),
        "{sid}": CASES["basic"].id,
        "{store}": uri(tmp_path / "s"),
        "{tmp}": str(tmp_path),
    }
    argv = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    proc = run_cli(*argv, env=cli_env(SNAPDIR_STORE=None))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert needle in proc.stderr.lower(), proc.stderr
    assert not (tmp_path / "s").exists(), "a usage error still touched the store"
    assert not (tmp_path / "dest").exists()


def test_runtime_errors_exit_by_kind_and_name_what_failed(tmp_path: Path, build: Path) -> None:
    """4 for what does not exist (snapshot, path, store), else by the error's code."""
    store_dir = tmp_path / "store"
    store = uri(store_dir)
    sid = ok(run_cli("push", str(build), "--store", store)).stdout.strip()
    missing = b3(b"no such snapshot")

    cases: list[tuple[list[str], str, int]] = [
        (["pull", missing, str(tmp_path / "d"), "--store", store], missing, 4),
        (["fetch", missing, "--store", store], missing, 4),
        (["checkout", missing, str(tmp_path / "d")], missing, 4),
        (["verify", "--id", missing, "--store", store], missing, 4),
        (["sync", missing, "--from", store, "--to", uri(tmp_path / "o")], missing, 4),
        (["push", str(tmp_path / "no-such-dir"), "--store", store], "no-such-dir", 4),
        (["verify", "--store", "file:///nonexistent/store"], "/nonexistent/store", 4),
        (["size", "--store", "file:///nonexistent/store"], "/nonexistent/store", 4),
        (["diff", "--from", "file:///nonexistent/store", "--to", str(build)], "/nonexistent", 4),
        (["diff", "--from", f"{store}@{missing}", "--to", str(build)], missing, 4),
        # a destination that is a file: the core's INVALID_ARGUMENT
        (["pull", sid, str(build / "hello.txt"), "--store", store], "hello.txt", 2),
        (
            ["pull", sid, str(tmp_path / "d"), "--store", "file:///nonexistent/s"],
            "/nonexistent",
            4,
        ),
    ]
    for argv, needle, status in cases:
        proc = run_cli(*argv)
        assert proc.returncode == status, (argv, proc.returncode, proc.stderr)
        assert proc.stdout == "", (argv, proc.stdout)
        assert needle in proc.stderr, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "d").exists()


def test_conflict_exit_3_lists_paths_and_force_fixes(tmp_path: Path, build: Path) -> None:
    store = uri(tmp_path / "store")
    sid = ok(run_cli("push", str(build), "--store", store)).stdout.strip()
    dest = tmp_path / "dest"
    ok(run_cli("pull", sid, str(dest), "--store", store))
    write(dest / "hello.txt", "mine\n")
    proc = run_cli("pull", sid, str(dest), "--store", store)
    assert proc.returncode == 3
    assert "./hello.txt" in proc.stderr
    assert (dest / "hello.txt").read_text() == "mine\n"
    ok(run_cli("pull", sid, str(dest), "--store", store, "--force"))
    assert (dest / "hello.txt").read_text() == "hello\n"
    write(dest / "extra", "x\n")
    ok(run_cli("pull", sid, str(dest), "--store", store, "--delete"))
    assert not (dest / "extra").exists()


# --- quiet and progress ---------------------------------------------------------------------


def test_info_goes_to_stderr_and_quiet_silences_it(tmp_path: Path, build: Path) -> None:
    store = uri(tmp_path / "store")
    loud = ok(run_cli("push", str(build), "--store", store))
    assert loud.stderr.strip(), "push says what it did on stderr"
    quiet = ok(run_cli("push", str(build), "--store", store, "--quiet"))
    assert quiet.stderr == ""
    assert quiet.stdout == CASES["basic"].id + "\n"
    sid = quiet.stdout.strip()
    for argv in (
        ["pull", sid, str(tmp_path / "d"), "--store", store, "-q"],
        ["fetch", sid, "--store", store, "-q"],
        ["checkout", sid, str(tmp_path / "c"), "-q"],
        ["sync", sid, "--from", store, "--to", uri(tmp_path / "o"), "-q"],
        ["verify", "--id", sid, "--store", store, "-q"],
        ["stage", str(build), "-q"],
    ):
        proc = ok(run_cli(*argv))
        assert proc.stderr == "", (argv, proc.stderr)


def test_no_progress_output_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(400):
        write(src / f"d{i % 10}" / f"{i}.bin", os.urandom(20_000))
    write(src / "big.bin", os.urandom(16 << 20))
    store = uri(tmp_path / "store")
    env = cli_env(SNAPDIR_NO_PROGRESS=None, TERM="xterm-256color", COLUMNS="120")
    pushed = ok(run_cli("push", str(src), "--store", store, env=env))
    sid = pushed.stdout.strip()
    pulled = ok(run_cli("pull", sid, str(tmp_path / "d"), "--store", store, env=env))
    synced = ok(run_cli("sync", sid, "--from", store, "--to", uri(tmp_path / "o"), env=env))
    for proc in (pushed, pulled, synced):
        assert "\r" not in proc.stderr, proc.stderr
        assert "\x1b" not in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) <= 1, proc.stderr
