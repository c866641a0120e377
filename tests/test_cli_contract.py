"""The command line as a contract for CI: the exit status of every kind of outcome, for
every command that can produce it; the JSON document (one object on stdout, also on
failure, ``"schema": 1``, ``"warnings"``); global flags anywhere; diagnostics only as
``snapdir: warning:``/``snapdir: error:``; signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from golden import build_case, load_cases
from snapdir.cli import build_parser, subcommands
from snapdir.cli._common import COMMON_JSON
from snapdir.cli._output import EXIT_STATUSES
from storeutil import b3, cli_env, manifest_rel, object_rel, run_cli, uri

CASE = {c.name: c for c in load_cases()}["basic"]
SID = CASE.id
MISSING = b3(b"no such snapshot")


def plant_run(store: Path, outputs: list[tuple[str, str]]) -> str:
    """Write a run record of ``true`` (and its index keys) straight into a file:// store."""
    from snapdir.runs.layout import OUT, REC
    from snapdir.runs.record import canonical, statement

    body = canonical(
        statement(
            kind="run", argv=["true"], cwd=".", internal={}, inputs=[], outputs=outputs,
            dependencies=[], started="", finished="", invocation=str(len(outputs)),
            byproducts=[{"name": "result", "annotations": {"status": 0}}], version="test",
        )
    )  # fmt: skip
    name = b3(body)
    (store / REC).mkdir(parents=True, exist_ok=True)
    (store / REC / name).write_bytes(body)
    for _, sid in outputs:
        (store / OUT / sid).mkdir(parents=True, exist_ok=True)
        (store / OUT / sid / name).write_bytes(name.encode() + b"\n")
    return name


class World:
    """A tree, a store holding its snapshot, the snapshot staged in the local cache, a
    pulled copy with a local change, two damaged copies of the store, an adopted one and
    one as snapdir 1.x leaves it (no journal)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.build = build_case(CASE, tmp / "build")
        self.cache = Path(os.environ["SNAPDIR_CACHE_DIR"])
        self.store = uri(tmp / "store")
        for argv in (
            ["push", str(self.build), "--store", self.store],
            ["stage", str(self.build)],
            ["pull", SID, str(tmp / "changed"), "--store", self.store],
            ["checkout", SID, str(tmp / "changed-co")],
        ):
            proc = run_cli(*argv)
            assert proc.returncode == 0, proc.stderr
        for d in ("changed", "changed-co"):
            (tmp / d / "hello.txt").write_text("mine\n")
        self.bad_object = self.damaged("bad-object", object_rel(b3(b"hello\n")))
        self.bad_manifest = self.damaged("bad-manifest", manifest_rel(SID))
        import shutil

        shutil.copytree(tmp / "store", tmp / "managed")
        self.managed = uri(tmp / "managed")
        assert run_cli("adopt", "--store", self.managed).returncode == 0
        # as snapdir 1.x leaves a store: the snapshot is there, no journal names it
        shutil.copytree(tmp / "store", tmp / "v1-store")
        shutil.rmtree(tmp / "v1-store" / ".snapdir")
        self.v1_store = uri(tmp / "v1-store")
        (tmp / "a-file").write_text("not a directory\n")
        # two run records: `true` said to have produced the build tree (a rerun cannot
        # reproduce it), and `true` with no outputs (a rerun reproduces it)
        self.record = plant_run(tmp / "store", [("build", SID)])
        self.record_none = plant_run(tmp / "store", [])

    def damaged(self, name: str, rel: str) -> str:
        import shutil

        root = self.tmp / name
        shutil.copytree(self.tmp / "store", root)
        target = root / rel
        target.chmod(0o644)
        target.write_bytes(b"damaged\n")
        return uri(root)

    def rec_store(self) -> str:
        """A store holding recording ``r`` of the tree (made on first use: it takes a
        second)."""
        store = uri(self.tmp / "rec-store")
        if not (self.tmp / "rec-store").exists():
            proc = run_cli("record", str(self.build), "--store", store, "--name", "r",
                           "--duration", "0.2")  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        return store

    def subs(self, argv: list[str]) -> list[str]:
        if any("{rec-store}" in a for a in argv):
            argv = [a.replace("{rec-store}", self.rec_store()) for a in argv]
        if any("{kit}" in a for a in argv):
            # a release kit@1.0.0 of the snapshot, and kit@stable pointing at it
            for extra in (
                ["tag", SID, "kit@1.0.0", "--store", self.store],
                ["channel", "set", "kit@stable", SID, "--store", self.store],
            ):
                proc = run_cli(*extra)
                assert proc.returncode == 0, proc.stderr
        table = {
            "{kit}": "kit@",
            "{build}": str(self.build),
            "{store}": self.store,
            "{bad-object}": self.bad_object,
            "{bad-manifest}": self.bad_manifest,
            "{managed}": self.managed,
            "{v1-store}": self.v1_store,
            "{tmp}": str(self.tmp),
            "{sid}": SID,
            "{missing}": MISSING,
            "{record}": self.record,
            "{record-none}": self.record_none,
        }
        out = []
        for a in argv:
            for k, v in table.items():
                a = a.replace(k, v)
            out.append(a)
        return out


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


#: A keyring backend of the tests' own (never the OS keyring), in a file under {tmp}.
KEYRING = {
    "PYTHON_KEYRING_BACKEND": "keyring_backend.FileKeyring",
    "PYTHONPATH": str(Path(__file__).parent),
    "SNAPDIR_TEST_KEYRING_FILE": "{tmp}/keyring.json",
}

# (command, status, argv, error code for statuses >= 2, extra environment)
CASES: list[tuple[str, int, list[str], str | None, dict[str, str]]] = [
    ("manifest", 0, ["manifest", "{build}"], None, {}),
    ("manifest", 2, ["manifest", "{build}", "--exclude", "("], "INVALID_ARGUMENT", {}),
    ("manifest", 2, ["manifest", "{build}", "--bogus"], "USAGE", {}),
    ("manifest", 4, ["manifest", "{tmp}/nowhere"], "NOT_FOUND", {}),
    ("manifest", 5, ["manifest", "-"], "INVALID_MANIFEST", {}),  # stdin is empty
    ("id", 0, ["id", "{build}"], None, {}),
    ("id", 2, ["id", "{build}", "--exclude", "(", "--exclude", "x"], "INVALID_ARGUMENT", {}),
    ("id", 4, ["id", "{tmp}/nowhere"], "NOT_FOUND", {}),
    ("id", 5, ["id", "-"], "INVALID_MANIFEST", {}),
    ("stage", 0, ["stage", "{build}"], None, {}),
    ("stage", 2, ["stage", "{build}", "--jobs", "0"], "USAGE", {}),
    ("stage", 4, ["stage", "{tmp}/nowhere"], "NOT_FOUND", {}),
    ("stage", 5, ["stage", "{build}"], "IO_ERROR", {"SNAPDIR_CACHE_DIR": "{tmp}/a-file"}),
    ("push", 0, ["push", "{build}", "--store", "{store}"], None, {}),
    ("push", 2, ["push", "{build}"], "INVALID_STORE", {}),
    ("push", 2, ["push", "{build}", "--store", "ftp://x/y"], "INVALID_STORE", {}),
    ("push", 4, ["push", "{tmp}/nowhere", "--store", "{store}"], "NOT_FOUND", {}),
    ("push", 5, ["push", "{build}", "--store", "file://{tmp}/a-file"], "IO_ERROR", {}),
    ("push", 0, ["push", "--id", "{sid}", "--store", "file://{tmp}/from-cache"], None, {}),
    ("push", 2, ["push", "{build}", "--id", "{sid}", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("push", 2, ["push", "--id", "abc", "--store", "{store}"], "INVALID_ID", {}),
    ("push", 4, ["push", "--id", "{missing}", "--store", "{store}"], "NOT_FOUND", {}),
    ("fetch", 0, ["fetch", "{sid}", "--store", "{store}"], None, {}),
    ("fetch", 2, ["fetch", "ABC", "--store", "{store}"], "INVALID_ID", {}),
    ("fetch", 4, ["fetch", "{missing}", "--store", "{store}"], "NOT_FOUND", {}),
    ("fetch", 4, ["fetch", "{sid}", "--store", "file://{tmp}/no-store"], "STORE_NOT_FOUND", {}),
    (
        "fetch",
        5,
        ["fetch", "{sid}", "--store", "{bad-object}"],
        "HASH_MISMATCH",
        {"SNAPDIR_CACHE_DIR": "{tmp}/empty-cache"},
    ),
    ("pull", 0, ["pull", "{sid}", "{tmp}/d", "--store", "{store}"], None, {}),
    ("pull", 2, ["pull", "{sid}", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("pull", 3, ["pull", "{sid}", "{tmp}/changed", "--store", "{store}"], "CONFLICT", {}),
    ("pull", 4, ["pull", "{missing}", "{tmp}/d", "--store", "{store}"], "NOT_FOUND", {}),
    ("pull", 5, ["pull", "{sid}", "{tmp}/d", "--store", "{bad-object}"], "HASH_MISMATCH", {}),
    ("checkout", 0, ["checkout", "{sid}", "{tmp}/d"], None, {}),
    ("checkout", 2, ["checkout", "--id", "{sid}", "{tmp}/d", "extra"], "INVALID_ARGUMENT", {}),
    ("checkout", 3, ["checkout", "{sid}", "{tmp}/changed-co"], "CONFLICT", {}),
    ("checkout", 4, ["checkout", "{missing}", "{tmp}/d"], "NOT_FOUND", {}),
    ("sync", 0, ["sync", "{sid}", "--from", "{store}", "--to", "file://{tmp}/o"], None, {}),
    # --dry-run: the same document, counting what would be done; a refused pull still exits 3
    ("push", 0, ["push", "{build}", "--store", "file://{tmp}/dry", "--dry-run"], None, {}),
    ("pull", 0, ["pull", "{sid}", "{tmp}/dry-d", "--store", "{store}", "-n"], None, {}),
    ("pull", 3, ["pull", "{sid}", "{tmp}/changed", "--store", "{store}", "-n"], "CONFLICT", {}),
    ("checkout", 0, ["checkout", "{sid}", "{tmp}/dry-co", "--dry-run"], None, {}),
    (
        "sync",
        0,
        ["sync", "{sid}", "--from", "{store}", "--to", "file://{tmp}/dry-o", "-n"],
        None,
        {},
    ),
    # --progress: any mode keeps stdout to the one document; a bad one is a usage error
    (
        "pull",
        0,
        ["pull", "{sid}", "{tmp}/pp", "--store", "{store}", "--progress", "plain"],
        None,
        {},
    ),
    ("pull", 2, ["pull", "{sid}", "{tmp}/pq", "--store", "{store}", "--progress=x"], "USAGE", {}),
    (
        "push",
        2,
        ["push", "{build}", "--store", "{store}"],
        "INVALID_ARGUMENT",
        {"SNAPDIR_PROGRESS": "x"},
    ),
    ("sync", 2, ["sync", "{sid}", "--to", "file://{tmp}/o"], "INVALID_STORE", {}),
    (
        "sync",
        4,
        ["sync", "{missing}", "--from", "{store}", "--to", "file://{tmp}/o"],
        "NOT_FOUND",
        {},
    ),
    (
        "sync",
        5,
        ["sync", "{sid}", "--from", "{bad-object}", "--to", "file://{tmp}/o"],
        "HASH_MISMATCH",
        {},
    ),
    ("diff", 0, ["diff", "--from", "{store}@{sid}", "--to", "{build}", "--exit-code"], None, {}),
    (
        "diff",
        1,
        ["diff", "--from", "{store}@{sid}", "--to", "{tmp}/changed", "--exit-code"],
        None,
        {},
    ),
    ("diff", 2, ["diff", "--from", "{build}"], "INVALID_ARGUMENT", {}),
    ("diff", 4, ["diff", "--from", "{store}@{missing}", "--to", "{build}"], "NOT_FOUND", {}),
    ("diff", 5, ["diff", "--from", "{bad-manifest}@{sid}", "--to", "{build}"], "HASH_MISMATCH", {}),
    ("verify", 0, ["verify", "--id", "{sid}", "--store", "{store}"], None, {}),
    ("verify", 1, ["verify", "--id", "{sid}", "--store", "{bad-object}"], None, {}),
    ("verify", 2, ["verify", "--id", "XYZ", "--store", "{store}"], "INVALID_ID", {}),
    ("verify", 4, ["verify", "--id", "kit@^9", "--store", "{store}"], "NOT_FOUND", {}),
    ("verify", 4, ["verify", "--id", "{missing}", "--store", "{store}"], "NOT_FOUND", {}),
    ("verify", 5, ["verify", "--id", "{sid}", "--store", "{bad-manifest}"], "HASH_MISMATCH", {}),
    ("size", 0, ["size", "--store", "{store}"], None, {}),
    ("size", 2, ["size", "--store", "{store}", "--id", "no pe"], "INVALID_ID", {}),
    ("size", 4, ["size", "--store", "file://{tmp}/no-store"], "STORE_NOT_FOUND", {}),
    ("size", 5, ["size", "--id", "{sid}", "--store", "{bad-manifest}"], "HASH_MISMATCH", {}),
    ("ls", 0, ["ls", "--store", "{store}", "--since", "1y"], None, {}),
    ("ls", 2, ["ls", "--store", "{store}", "--since", "yesterday"], "INVALID_ARGUMENT", {}),
    ("ls", 4, ["ls", "--store", "file://{tmp}/no-store"], "STORE_NOT_FOUND", {}),
    ("forget", 0, ["forget", "{sid}", "--store", "{store}"], None, {}),
    ("forget", 2, ["forget", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("forget", 2, ["forget", "--keep-within", "7w", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("forget", 4, ["forget", "{missing}", "--store", "{store}"], "NOT_FOUND", {}),
    ("adopt", 0, ["adopt", "--store", "{store}"], None, {}),
    ("adopt", 2, ["adopt"], "INVALID_STORE", {}),
    ("adopt", 4, ["adopt", "--store", "file://{tmp}/no-store"], "STORE_NOT_FOUND", {}),
    ("du", 0, ["du", "{sid}", "--store", "{store}"], None, {}),
    ("du", 2, ["du", "xyz", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("du", 4, ["du", "{missing}", "--store", "{store}"], "NOT_FOUND", {}),
    ("du", 5, ["du", "--store", "{bad-manifest}"], "HASH_MISMATCH", {}),
    ("tag", 0, ["tag", "{sid}", "kit@1.0.0", "--store", "{store}", "-m", "first"], None, {}),
    ("tag", 0, ["tag", "{sid}", "{kit}1.0.0", "--store", "{store}"], None, {}),  # no-op
    ("tag", 2, ["tag", "{sid}", "Kit@1.0.0", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("tag", 2, ["tag", "{sid}", "kit@1.0.0+b1", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("tag", 4, ["tag", "{missing}", "kit@1.0.0", "--store", "{store}"], "NOT_FOUND", {}),
    ("resolve", 0, ["resolve", "{kit}>=1,<2", "--store", "{store}"], None, {}),
    ("resolve", 0, ["resolve", "{sid}", "--store", "{store}"], None, {}),
    ("resolve", 2, ["resolve", "kit@>=1 <2", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("resolve", 2, ["resolve", "kit@1"], "INVALID_STORE", {}),
    ("resolve", 4, ["resolve", "kit@^2", "--store", "{store}"], "NOT_FOUND", {}),
    ("refs", 0, ["refs", "--store", "{store}"], None, {}),
    ("refs", 2, ["refs", "A/B", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("refs", 4, ["refs", "kit", "--store", "{store}"], "NOT_FOUND", {}),
    ("yank", 0, ["yank", "{kit}1.0.0", "--reason", "bad data", "--store", "{store}"], None, {}),
    ("yank", 2, ["yank", "kit", "--reason", "r", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("yank", 4, ["yank", "kit@9.9.9", "--reason", "r", "--store", "{store}"], "NOT_FOUND", {}),
    ("unyank", 0, ["unyank", "{kit}1.0.0", "--store", "{store}"], None, {}),
    ("unyank", 2, ["unyank", "kit@1", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("channel", 0, ["channel", "set", "kit@stable", "{sid}", "--store", "{store}"], None, {}),
    ("channel", 0, ["channel", "log", "{kit}stable", "--store", "{store}"], None, {}),
    (
        "channel",
        2,
        ["channel", "set", "kit@latest", "{sid}", "--store", "{store}"],
        "INVALID_ARGUMENT",
        {},
    ),
    (
        "channel",
        3,
        ["channel", "set", "kit@beta", "{sid}", "--expect", "{missing}", "--store", "{store}"],
        "CONFLICT",
        {},
    ),
    ("channel", 4, ["channel", "log", "kit@stable", "--store", "{store}"], "NOT_FOUND", {}),
    ("lock", 0, ["lock", "{kit}^1", "--store", "{store}", "-o", "{tmp}/a.lock"], None, {}),
    ("lock", 2, ["lock", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("lock", 4, ["lock", "--check", "-o", "{tmp}/none.lock"], "NOT_FOUND", {}),
    (
        "login",
        2,
        ["login", "gs://b/p", "--key-id", "k", "--secret-stdin"],
        "INVALID_ARGUMENT",
        {},
    ),
    (
        "login",
        2,
        ["login", "s3://b/p", "--key-id", "k", "--secret-stdin"],
        "INVALID_ARGUMENT",
        KEYRING,
    ),  # an empty secret
    (
        "login",
        0,
        ["login", "s3://b/p", "--key-id", "k", "--secret-file", "{tmp}/a-file"],
        None,
        KEYRING,
    ),
    ("logout", 0, ["logout", "s3://b/p"], None, KEYRING),
    ("logout", 2, ["logout", "b/p"], "INVALID_STORE", KEYRING),
    ("policy", 0, ["policy", "set", "--keep-last", "3", "--store", "{store}"], None, {}),
    ("policy", 0, ["policy", "show", "--log", "--store", "{store}"], None, {}),
    ("policy", 2, ["policy", "set", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    ("policy", 2, ["policy", "--store", "{store}"], "USAGE", {}),
    ("forget", 4, ["forget", "--policy", "store", "--store", "{store}"], "NOT_FOUND", {}),
    ("gc", 0, ["gc", "--store", "{managed}", "--grace", "0"], None, {}),
    ("gc", 0, ["gc", "--store", "{managed}", "--dry-run"], None, {}),
    ("gc", 2, ["gc", "--store", "{store}", "--grace", "soon"], "INVALID_ARGUMENT", {}),
    ("gc", 3, ["gc", "--store", "{v1-store}", "--grace", "0"], "NOT_MANAGED", {}),
    ("gc", 4, ["gc", "--store", "file://{tmp}/no-store"], "STORE_NOT_FOUND", {}),
    ("verify", 0, ["verify", "--all", "--store", "{store}"], None, {}),
    ("verify", 1, ["verify", "--all", "--store", "{bad-object}"], None, {}),
    ("cache", 0, ["cache", "du"], None, {}),
    ("cache", 0, ["cache", "verify"], None, {}),
    ("cache", 0, ["cache", "prune", "--max-size", "1GiB", "--older-than", "7d"], None, {}),
    ("cache", 0, ["cache", "clear"], None, {}),
    ("cache", 1, ["cache", "verify"], None, {"SNAPDIR_CACHE_DIR": "{tmp}/bad-object"}),
    ("cache", 2, ["cache"], "USAGE", {}),
    ("cache", 2, ["cache", "prune"], "INVALID_ARGUMENT", {}),
    ("cache", 2, ["cache", "prune", "--max-size", "10XB"], "USAGE", {}),
    ("cache", 2, ["cache", "prune", "--older-than", "soon"], "USAGE", {}),
    ("cache", 5, ["cache", "du"], "IO_ERROR", {"SNAPDIR_CACHE_DIR": "{tmp}/a-file"}),
    ("run", 0, ["run", "--store", "{store}", "--no-git", "--", "true"], None, {}),
    ("run", 1, ["run", "--store", "{store}", "--no-git", "--", "false"], None, {}),
    ("run", 2, ["run", "--store", "{store}", "--bogus"], "USAGE", {}),
    ("run", 2, ["run", "--no-git", "--store", "{store}", "-q", "--"], "INVALID_ARGUMENT", {}),
    (
        "run",
        4,
        ["run", "--store", "{store}", "--no-git", "--", "no-such-command-x"],
        "NOT_FOUND",
        {},
    ),
    ("capture", 0, ["capture", "--store", "{store}", "--no-git"], None, {}),
    ("capture", 2, ["capture", "--store", "{store}", "--bogus"], "USAGE", {}),
    (
        "capture",
        4,
        ["capture", "--store", "{store}", "--no-git", "--file", "{tmp}/none"],
        "NOT_FOUND",
        {},
    ),
    ("show", 0, ["show", "{sid}", "--store", "{store}"], None, {}),
    ("show", 0, ["show", "{record}", "--store", "{store}"], None, {}),
    ("show", 2, ["show", "NOT A REF", "--store", "{store}"], "INVALID_ID", {}),
    ("show", 4, ["show", "{missing}", "--store", "{store}"], "NOT_FOUND", {}),
    ("runs", 0, ["runs", "--store", "{store}"], None, {}),
    ("runs", 2, ["runs", "--store", "{store}", "--since", "yesterday"], "INVALID_ARGUMENT", {}),
    ("runs", 4, ["runs", "--store", "file://{tmp}/no-store"], "STORE_NOT_FOUND", {}),
    ("lineage", 0, ["lineage", "{sid}", "--store", "{store}"], None, {}),
    ("lineage", 2, ["lineage", "NOT A REF", "--store", "{store}"], "INVALID_ID", {}),
    (
        "lineage",
        4,
        ["lineage", "{sid}", "--store", "file://{tmp}/no-store"],
        "STORE_NOT_FOUND",
        {},
    ),
    ("rerun", 0, ["rerun", "{record-none}", "--store", "{store}", "--yes"], None, {}),
    ("rerun", 1, ["rerun", "{record}", "--store", "{store}", "--yes"], None, {}),
    ("rerun", 2, ["rerun", "{record}", "--store", "{store}"], "INVALID_ARGUMENT", {}),
    (
        "rerun",
        4,
        ["rerun", "{missing}", "--store", "{store}", "--yes", "--no-progress"],
        "NOT_FOUND",
        {},
    ),
    ("record", 0, ["record", "{build}", "--store", "{store}", "--duration", "0.2"], None, {}),
    ("record", 2, ["record", "{build}"], "INVALID_STORE", {}),
    (
        "record",
        2,
        ["record", "{build}", "--store", "{store}", "--checkpoint-every", "soon"],
        "INVALID_ARGUMENT",
        {},
    ),
    ("record", 4, ["record", "{tmp}/nowhere", "--store", "{store}"], "NOT_FOUND", {}),
    ("replay", 0, ["replay", "r", "{tmp}/out", "--store", "{rec-store}", "--burst"], None, {}),
    ("replay", 2, ["replay", "r", "{tmp}/out", "--store", "{store}", "--speed", "0"], "USAGE", {}),
    ("replay", 3, ["replay", "r", "{build}", "--store", "{rec-store}"], "CONFLICT", {}),
    ("replay", 4, ["replay", "nope", "{tmp}/out", "--store", "{store}"], "NOT_FOUND", {}),
    ("recording", 0, ["recording", "ls", "--store", "{store}"], None, {}),
    ("recording", 0, ["recording", "info", "r", "--store", "{rec-store}"], None, {}),
    ("recording", 2, ["recording"], "USAGE", {}),
    ("recording", 4, ["recording", "info", "nope", "--store", "{store}"], "NOT_FOUND", {}),
    ("completion", 0, ["completion", "bash"], None, {}),
    ("completion", 0, ["completion", "fish"], None, {}),
    ("completion", 2, ["completion", "tcsh"], "USAGE", {}),
    ("version", 0, ["version"], None, {}),
    ("version", 2, ["version", "--bogus"], "USAGE", {}),
]


def _id(case: tuple[str, int, list[str], str | None, dict[str, str]]) -> str:
    return f"{case[0]}-{case[1]}-{case[3] or 'ok'}"


def _fields(command: str, argv: list[str] | None = None) -> dict[str, str]:
    parser = subcommands(build_parser(command))[command]
    actions = subcommands(parser)
    if actions:  # `cache du`: the action's fields
        assert argv is not None
        parser = actions[next(a for a in argv[1:] if a in actions)]
    fields: dict[str, str] = parser.get_default("json_fields")
    return fields


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_exit_status_and_json_document(
    world: World, case: tuple[str, int, list[str], str | None, dict[str, str]]
) -> None:
    command, status, argv, code, extra = case
    env = cli_env(**{k: world.subs([v])[0] for k, v in extra.items()})
    # The global flag goes before the command for half of the cases, after it for the rest.
    json_first = len(argv) % 2 == 0
    args = ["--json", *world.subs(argv)] if json_first else [*world.subs(argv), "--json"]
    proc = run_cli(*args, env=env)
    assert proc.returncode == status, (args, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.count("\n") == 1, ("one JSON object on one line", proc.stdout)
    doc = json.loads(proc.stdout)
    assert doc["schema"] == 1
    assert isinstance(doc["warnings"], list)
    assert "Traceback" not in proc.stderr
    if status >= 2:
        assert set(doc) == {"error", *COMMON_JSON}, doc
        assert doc["error"]["code"] == code, doc
        assert doc["error"]["message"]
        assert proc.stderr.startswith(("snapdir: error: ", "usage: ")), proc.stderr
    else:
        # exactly the fields the command declares (its help and docs/cli.md list them)
        assert set(doc) == {*_fields(command, argv), *COMMON_JSON}, doc


def test_every_command_and_status_is_covered() -> None:
    commands = set(subcommands(build_parser()))
    assert commands == {c[0] for c in CASES}
    for command in commands:
        assert {0, 2} <= {c[1] for c in CASES if c[0] == command}, command
    statuses = {c[1] for c in CASES}
    documented = {s for s, _ in EXIT_STATUSES}
    assert statuses | {130, 143} == documented


def test_errors_name_what_they_are_about(world: World) -> None:
    proc = run_cli("--json", "pull", MISSING, str(world.tmp / "d"), "--store", world.store)
    err = json.loads(proc.stdout)["error"]
    assert (err["id"], err["uri"], err["path"]) == (MISSING, world.store, str(world.tmp / "d"))
    proc = run_cli("id", str(world.tmp / "nowhere"), "--json")
    assert json.loads(proc.stdout)["error"]["path"] == str(world.tmp / "nowhere")


def test_text_mode_failure_prints_nothing_on_stdout(world: World) -> None:
    proc = run_cli("pull", MISSING, str(world.tmp / "d"), "--store", world.store)
    assert proc.returncode == 4
    assert proc.stdout == ""
    assert proc.stderr.startswith("snapdir: error: ")
    assert MISSING in proc.stderr


def test_usage_error_names_the_unknown_flag(tmp_path: Path) -> None:
    for argv, flag in (
        (["id", ".", "--frobnicate"], "--frobnicate"),
        (["--frobnicate", "id"], "--frobnicate"),
        (["push", "--frob=1"], "--frob"),
        (["diff", "-Z"], "-Z"),
    ):
        proc = run_cli(*argv, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"unrecognized arguments: {flag}" in proc.stderr, proc.stderr
        assert proc.stdout == ""


@pytest.mark.parametrize("flag", ["--json", "-q", "--quiet", "-v", "--no-progress"])
def test_global_flags_before_or_after_the_command(world: World, flag: str) -> None:
    before = run_cli(flag, "id", str(world.build))
    after = run_cli("id", str(world.build), flag)
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert before.stdout == after.stdout
    assert SID in before.stdout
    store_cmd = run_cli(flag, "push", str(world.build), "--store", world.store)
    assert store_cmd.returncode == 0, store_cmd.stderr


def test_verbose_adds_detail_quiet_removes_notes(world: World) -> None:
    argv = ["push", str(world.build), "--store", world.store]
    plain, verbose, quiet = run_cli(*argv), run_cli("-v", *argv), run_cli(*argv, "-q")
    assert "snapdir: requests: 0" in verbose.stderr
    assert "requests" not in plain.stderr
    assert plain.stderr.strip()
    assert quiet.stderr == ""
    assert plain.stdout == verbose.stdout == quiet.stdout == SID + "\n"


def test_warnings_are_snapdir_warnings_or_json(world: World) -> None:
    """A dangling link is left out with a warning: never in Python's `file:line:` format
    (it used to leak from the event-loop-less runner), in the JSON document with --json,
    gone with -q."""
    (world.build / "dangling").symlink_to("nowhere")
    for argv in (["id", str(world.build)], ["push", str(world.build), "--store", world.store]):
        text = run_cli(*argv)
        assert text.returncode == 0, text.stderr
        lines = [ln for ln in text.stderr.splitlines() if "dangling" in ln]
        assert lines, text.stderr
        assert all(ln.startswith("snapdir: warning: ") for ln in lines), text.stderr
        assert "SnapdirWarning" not in text.stderr
        assert ".py:" not in text.stderr
        as_json = run_cli(*argv, "--json")
        doc = json.loads(as_json.stdout)
        assert any("dangling" in w for w in doc["warnings"]), doc
        assert "dangling" not in as_json.stderr
        quiet = run_cli(*argv, "-q")
        assert quiet.stderr == ""


def test_id_without_path_never_reads_stdin(world: World) -> None:
    """`sleep 5 | snapdir id` snapshots the current directory at once: stdin is read only
    for `-`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapdir", "id"],
        stdin=subprocess.PIPE,  # open and never written: reading it would wait forever
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=world.build,
        env=cli_env(),
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == SID + "\n"
    piped = run_cli("manifest", "-", env=cli_env())
    assert piped.returncode == 5


def test_manifest_from_stdin_with_dash() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snapdir", "manifest", "-"],
        input=CASE.manifest + "\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == CASE.manifest + "\n"


def test_version_command_prints_like_the_flag() -> None:
    flag, command = run_cli("--version"), run_cli("version")
    assert flag.returncode == command.returncode == 0
    assert flag.stdout == command.stdout
    assert flag.stdout.startswith("snapdir ")


def test_top_level_help_has_commands_exit_table_and_environment() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    out = proc.stdout
    for name in subcommands(build_parser()):
        assert f"\n    {name} " in out, name
    for status, _ in EXIT_STATUSES:
        assert f"\n  {status} " in out, status
    assert "SNAPDIR_STORE" in out
    assert "examples:" in out


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if needle in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"never saw {needle!r}: {seen}")


@pytest.mark.parametrize(
    ("sig", "status", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_signals_exit_130_and_143(sig: int, status: int, word: str, as_json: bool) -> None:
    """The process is waiting for a manifest on stdin (it says so with -v): the signal ends
    it cleanly, with its status and, with --json, still one JSON object."""
    argv = [sys.executable, "-m", "snapdir", "id", "-", "-v"] + (["--json"] if as_json else [])
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        text=True,
    )
    try:
        _wait_for(proc, "reading a manifest from standard input")
        proc.send_signal(sig)
        # Standard input stays open until the process has ended: closing it first (as
        # communicate() does) would race the signal with an end of input.
        proc.wait(timeout=60)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, err
    assert f"snapdir: {word}" in err
    assert "Traceback" not in err
    if as_json:
        doc: Any = json.loads(out)
        assert doc["error"]["code"] == word.upper()
        assert doc["schema"] == 1
    else:
        assert out == ""


def test_an_unexpected_exception_is_status_5_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug of ours is still a failure of the contract's kind 5 with one error line (the
    traceback only with -v), and one JSON object with --json."""
    from snapdir.cli import main, snapshot

    def boom(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(snapshot, "cmd_id", boom)
    assert main(["id", "."]) == 5
    out, err = capsys.readouterr()
    assert (out, err) == ("", "snapdir: error: RuntimeError: boom\n")
    assert main(["id", ".", "-v", "--json"]) == 5
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == {"code": "INTERNAL_ERROR", "message": "RuntimeError: boom"}
    assert "Traceback" in err
