"""Coverage-guided fuzzing (atheris) of the parsers that take a user's or a store's text
before anything else runs: snapshot ids, store URIs, diff references, listed store keys.

Invariants: the only exception is ``InvalidArgumentError`` (a ``ValueError`` with code
``INVALID_ID`` / ``INVALID_STORE`` / ``INVALID_ARGUMENT``); whatever parses prints back to
a string that parses to the same value (normalisation is idempotent); the parts of a store
URI rebuild it.

    python fuzz/python/fuzz_refs.py fuzz/corpus/refs -runs=10000000   # a campaign
    python fuzz/python/fuzz_refs.py --check fuzz/corpus/refs           # replay a corpus
"""

# A fuzz harness, not a pytest module: it asserts on caught exceptions on purpose.
# ruff: noqa: PT017, PT018

from __future__ import annotations

import os
import sys

from snapdir._errors import InvalidArgumentError
from snapdir._types import Ref, SnapshotId, StoreUri
from snapdir.stores._base import check_shard, hex_from_key, split_key

CODES = {"INVALID_ID", "INVALID_STORE", "INVALID_ARGUMENT"}


def check_one(text: str) -> None:
    """Run every parser on ``text``; raise AssertionError if an invariant breaks (any other
    exception escapes as itself)."""
    try:
        sid = SnapshotId(text)
    except InvalidArgumentError as e:
        assert e.code in CODES, e.code
    else:
        assert len(sid) == 64 and sid == sid.lower() and SnapshotId(str(sid)) == sid
        assert sid == text.lower()
    try:
        uri = StoreUri(text)
    except InvalidArgumentError as e:
        assert e.code in CODES, e.code
    else:
        again = StoreUri(str(uri))
        assert again == uri, (text, uri, again)
        if uri.scheme == "file":
            assert uri.path.startswith("/") and f"file://{uri.path}" == uri
        else:
            rebuilt = f"{uri.scheme}://{uri.bucket}" + (f"/{uri.prefix}" if uri.prefix else "")
            assert rebuilt == uri, (uri, rebuilt)
    try:
        ref = Ref.parse(text)
    except InvalidArgumentError as e:
        assert e.code in CODES, e.code
    else:
        again_ref = Ref.parse(str(ref))
        assert again_ref == ref, (text, str(ref), ref.kind, again_ref.kind)
    try:
        assert check_shard(text) == text
    except InvalidArgumentError as e:
        assert e.code in CODES, e.code
    h = hex_from_key(text)
    if h is not None:
        assert len(h) == 64 and split_key(h) == text


def test_one_input(data: bytes) -> None:
    """One input: its bytes as UTF-8 (invalid sequences replaced), so a corpus file is
    simply the text it tests and replays without atheris."""
    check_one(data.decode("utf-8", errors="replace"))


def replay(corpus: str) -> int:
    """Run every file of ``corpus`` through the same invariants (what CI does)."""
    n = 0
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), "rb") as f:
            test_one_input(f.read())
        n += 1
    return n


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        print(f"{replay(sys.argv[2])} inputs replayed")
    else:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

        # The package is installed in editable mode through an import hook that
        # ``atheris.instrument_imports`` does not see; instrument what is loaded instead.
        atheris.instrument_all()
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
