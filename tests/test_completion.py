"""``snapdir completion bash|zsh|fish``: scripts generated from the parser that really
complete (bash and fish are driven here as a user's shell would drive them) and parse
(zsh -n)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from snapdir.cli import build_parser, subcommands
from storeutil import cli_env, run_cli


def script(shell: str) -> str:
    proc = run_cli("completion", shell)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def bash_complete(tmp_path: Path, *words: str) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being completed)."""
    path = tmp_path / "snapdir.bash"
    path.write_text(script("bash"))
    quoted = " ".join("'" + w + "'" for w in words)
    code = (
        f"source {path}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
        'COMP_LINE="${COMP_WORDS[*]}"; _snapdir; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    proc = subprocess.run(
        ["bash", "--norc", "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.split("\n") if w]


def test_bash_completes_commands(tmp_path: Path) -> None:
    assert sorted(bash_complete(tmp_path, "snapdir", "pu")) == ["pull", "push"]
    every = set(bash_complete(tmp_path, "snapdir", ""))
    assert every == set(subcommands(build_parser()))
    assert "--json" in bash_complete(tmp_path, "snapdir", "--j")


def test_bash_completes_flags_per_command(tmp_path: Path) -> None:
    push = bash_complete(tmp_path, "snapdir", "push", "--")
    assert {"--store", "--id", "--label", "--exclude", "--json"} <= set(push)
    assert "--delete" not in push  # a flag of pull, not of push
    assert bash_complete(tmp_path, "snapdir", "pull", "--del") == ["--delete"]
    # a flag's value is not taken for the command
    assert sorted(
        bash_complete(tmp_path, "snapdir", "--json", "push", "--store", "s3://b", "--i")
    ) == ["--id", "--ignore-file"]
    assert bash_complete(tmp_path, "snapdir", "push", "--store", "") == []


def test_bash_completes_cache_actions_and_choices(tmp_path: Path) -> None:
    assert set(bash_complete(tmp_path, "snapdir", "cache", "")) == {
        "du",
        "verify",
        "clear",
        "prune",
    }
    assert bash_complete(tmp_path, "snapdir", "cache", "p") == ["prune"]
    prune = bash_complete(tmp_path, "snapdir", "cache", "prune", "--")
    assert {"--max-size", "--older-than", "--dry-run"} <= set(prune)
    assert "--purge" not in prune
    # --p: the global --progress too
    assert bash_complete(tmp_path, "snapdir", "cache", "verify", "--p") == ["--progress", "--purge"]
    assert bash_complete(tmp_path, "snapdir", "pull", "--progress", "p") == ["plain"]
    assert bash_complete(tmp_path, "snapdir", "completion", "") == ["bash", "zsh", "fish"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "_snapdir"
    path.write_text(script("zsh"))
    proc = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Loaded as a user's .zshrc would load it: the function is defined and registered.
    code = (
        f"autoload -U compinit && compinit -u -D; source {path}; "
        "print -r -- ${_comps[snapdir]}; whence -w _snapdir"
    )
    proc = subprocess.run(
        ["zsh", "-f", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**cli_env(), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["_snapdir", "_snapdir:", "function"], proc.stdout


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_script_parses_and_completes(tmp_path: Path) -> None:
    path = tmp_path / "snapdir.fish"
    path.write_text(script("fish"))
    proc = subprocess.run(["fish", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

    def complete(line: str) -> list[str]:
        proc = subprocess.run(
            ["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**cli_env(), "HOME": str(tmp_path)},
        )
        assert proc.returncode == 0, proc.stderr
        return [ln.split("\t")[0] for ln in proc.stdout.splitlines()]

    assert sorted(complete("snapdir pu")) == ["pull", "push"]
    assert set(complete("snapdir cache ")) == {"du", "verify", "clear", "prune"}
    assert "--max-size" in complete("snapdir cache prune --")
    assert "--purge" not in complete("snapdir cache prune --")
    assert "--store" in complete("snapdir push --")
