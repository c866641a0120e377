"""The `snapdir` command line for the snapshot core: version, manifest, id (run as subprocesses)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import reference
import snapdir
from golden import api_id, api_manifest, build_case, load_cases


def run_cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "-m", "snapdir", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("a\n")
    (root / "with space.txt").write_text("spaces\n")
    (root / "café.log").write_text("log\n")
    (root / "sub" / "b.txt").write_text("b\n")
    (root / "sub" / "deeper" / "c.log").write_text("c\n")
    os.chmod(root / "sub" / "b.txt", 0o600)
    (root / "link").symlink_to("sub")
    os.chmod(root, 0o755)
    return root


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert snapdir.version() in proc.stdout
    assert re.search(r"\d+\.\d+", proc.stdout)


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--absolute"],
        ["--no-follow"],
        ["--exclude", r"\.log$"],
        ["--exclude", r"\.log$", "--exclude", r"^\./empty/$"],
        ["--absolute", "--no-follow", "--exclude", "b"],
    ],
    ids=lambda f: " ".join(f) or "default",
)
def test_manifest_and_id_match_api(tmp_path: Path, flags: list[str]) -> None:
    root = tree(tmp_path / "root")
    absolute = "--absolute" in flags
    no_follow = "--no-follow" in flags
    exclude = [flags[i + 1] for i, f in enumerate(flags) if f == "--exclude"]
    m = api_manifest(root, absolute=absolute, no_follow=no_follow, exclude=exclude)
    assert m.raw == reference.manifest_text(
        root, absolute=absolute, no_follow=no_follow, exclude=exclude
    )

    proc = run_cli("manifest", str(root), *flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == m.raw + "\n"

    proc = run_cli("id", str(root), *flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == m.id + "\n"
    assert proc.stdout.strip() == api_id(
        root, absolute=absolute, no_follow=no_follow, exclude=exclude
    )


def test_manifest_defaults_to_current_directory(tmp_path: Path) -> None:
    root = tree(tmp_path / "root")
    proc = run_cli("manifest", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference.manifest_text(root) + "\n"


def test_golden_via_cli(tmp_path: Path) -> None:
    for case in load_cases():
        root = build_case(case, tmp_path / case.name)
        proc = run_cli("manifest", str(root))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == case.manifest + "\n"
        proc = run_cli("id", str(root))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == case.id + "\n"


def test_id_reads_manifest_from_stdin() -> None:
    for case in load_cases():
        proc = run_cli("id", "-", stdin=case.manifest)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == case.id + "\n"
        # with a trailing newline, CRLF, comments and shuffled lines: same canonical id
        lines = case.manifest.split("\n")
        noisy = "# comment\r\n" + "\r\n".join(reversed(lines)) + "\r\n"
        proc = run_cli("id", "-", stdin=noisy)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == case.id + "\n"


def test_id_with_path_ignores_stdin(tmp_path: Path) -> None:
    root = tree(tmp_path / "root")
    proc = run_cli("id", str(root), stdin="not a manifest\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference.snapshot_id(reference.manifest_text(root)) + "\n"


def test_id_without_path_on_a_tty_snapshots_cwd(tmp_path: Path) -> None:
    root = tree(tmp_path / "root")
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "snapdir", "id"],
            stdin=slave,
            capture_output=True,
            text=True,
            cwd=root,
            timeout=120,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference.snapshot_id(reference.manifest_text(root)) + "\n"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_id_from_empty_stdin_is_runtime_error(text: str) -> None:
    proc = run_cli("id", "-", stdin=text)
    assert proc.returncode == 5
    assert proc.stdout == ""
    assert proc.stderr.strip()


def test_id_from_invalid_stdin_is_runtime_error() -> None:
    proc = run_cli("id", "-", stdin="this is not a manifest\n")
    assert proc.returncode == 5
    assert proc.stdout == ""
    assert proc.stderr.strip()


@pytest.mark.parametrize("command", ["manifest", "id"])
def test_missing_path_is_not_found(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no-such-dir"
    proc = run_cli(command, str(missing))
    assert proc.returncode == 4
    assert proc.stdout == ""
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["manifest", "id"])
def test_unrepresentable_name_is_an_error(tmp_path: Path, command: str) -> None:
    root = tree(tmp_path / "root")
    (root / "sub" / "bad\nname").write_text("x")
    proc = run_cli(command, str(root))
    # The core calls a name it cannot represent an invalid argument (exclude or rename it).
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "bad\\nname" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dangling_symlink_warns_on_stderr(tmp_path: Path) -> None:
    root = tree(tmp_path / "root")
    expected = reference.manifest_text(root)
    (root / "dangling-one").symlink_to("nowhere")
    proc = run_cli("manifest", str(root))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected + "\n"
    assert "dangling-one" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["manifest", "--no-such-option"],
        ["id", "--bogus"],
        ["--definitely-not-an-option"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.strip()


def test_version_does_not_import_heavy_modules() -> None:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snapdir", "--version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            imported.add(name.split(".")[0])
    assert "snapdir" in imported, "importtime output not parsed"
    heavy = {"boto3", "botocore", "google", "b2sdk", "anyio", "trio", "rich"} & imported
    assert not heavy, f"`snapdir --version` imported {sorted(heavy)}"


@pytest.mark.parametrize("columns", [50, 200])
def test_help_follows_the_terminal_width_without_importing_shutil(columns: int) -> None:
    code = (
        "import sys\n"
        "from snapdir.cli import main\n"
        "try:\n"
        "    main(['push', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('SHUTIL' if 'shutil' in sys.modules else 'NO-SHUTIL')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["COLUMNS"] = str(columns)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[-1] == "NO-SHUTIL"  # argparse would import it to ask the width
    assert "--no-stat-cache" in out
    assert max(len(line) for line in lines) <= columns
    usage = [line for line in lines if line.startswith("usage:")]
    # A wide terminal keeps the usage on fewer lines than a narrow one.
    if columns == 200:
        assert len(usage[0]) > 60
    else:
        assert len(usage[0]) <= 50


def test_id_imports_only_what_it_runs(tmp_path: Path) -> None:
    """`snapdir id` runs on every CI step: it loads its own command group and nothing of
    the others, the stores, the event loop, `typing` or `json`."""
    root = tree(tmp_path / "root")
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snapdir", "id", str(root)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "snapdir.cli.snapshot" in imported, "importtime output not parsed"
    unwanted = {
        "typing",
        "json",
        "anyio",
        "shutil",
        "textwrap",
        "snapdir.stores",
        "snapdir.cli.transfer",
        "snapdir.cli.inspect",
        "snapdir.cli._help",
    }
    assert not (unwanted & imported), sorted(unwanted & imported)
