"""The Python reference/URI parsers over the committed fuzzing corpus (``fuzz/corpus/refs``,
grown by ``fuzz/python/fuzz_refs.py`` under atheris), with the harness's own invariants:
only ``InvalidArgumentError`` escapes, whatever parses prints back to the same value.
Runs without atheris."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from snapdir._types import Ref

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus" / "refs"
HEX = "0123456789abcdef" * 4


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_refs", ROOT / "fuzz/python/fuzz_refs.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_corpus_replays() -> None:
    files = sorted(CORPUS.iterdir())
    assert len(files) >= 20
    assert harness().replay(str(CORPUS)) == len(files)


@pytest.mark.parametrize(
    "text",
    [
        f"s3://bucket/x@{HEX}/",  # once a store that printed as a snapshot reference
        f"file:///srv/x@{HEX}//",
        f"s3://bucket/x@{HEX.upper()}",
        "gcs://Bucket/a//b/",
        "file://localhost/a/../b/",
        "s3://b/./x",
        "",
        "\0",
        "file:///a\x0bb",
    ],
)
def test_found_and_edge_inputs(text: str) -> None:
    harness().check_one(text)


def test_a_snapshot_reference_with_a_trailing_slash() -> None:
    ref = Ref.parse(f"s3://bucket/x@{HEX}/")
    assert (ref.kind, str(ref.store), ref.id) == ("snapshot", "s3://bucket/x", HEX)
