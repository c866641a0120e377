"""docs/cli.md is generated from the parser (scripts/gen_cli_docs.py) and must not drift
from it; every option has help text; every environment variable snapdir reads is
documented."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from types import ModuleType

from snapdir.cli import build_parser, subcommands
from snapdir.cli._help import ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_what_the_parser_generates() -> None:
    expected = generator().render()
    actual = (ROOT / "docs" / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is out of date: run python scripts/gen_cli_docs.py"


def test_every_command_and_option_has_help() -> None:
    parser = build_parser()
    missing = []
    commands = subcommands(parser)
    assert commands
    for name, p in [("snapdir", parser), *commands.items()]:
        if name != "snapdir" and not p.description:
            missing.append(f"{name}: description")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{c.dest}: help" for c in action._choices_actions if not c.help]
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"no help text: {missing}"


def test_docs_name_every_command_and_flag() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for name, p in subcommands(build_parser()).items():
        assert f"### snapdir {name}" in text
        for action in p._actions:
            for flag in action.option_strings:
                assert f"`{flag}" in text, (name, flag)


def test_every_environment_variable_is_documented() -> None:
    used: set[str] = set()
    for base, pattern in ((ROOT / "python", "*.py"), (ROOT / "rust", "*.rs")):
        for path in base.rglob(pattern):
            used |= set(re.findall(r"\bSNAPDIR_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    used = {v for v in used if not v.startswith("SNAPDIR_TEST") and v != "SNAPDIR_ERROR"}
    documented = {name for name, _ in ENVIRONMENT}
    assert "SNAPDIR_STORE" in used
    assert used == documented, (
        f"read but not documented: {sorted(used - documented)}; "
        f"documented but not read: {sorted(documented - used)}"
    )
