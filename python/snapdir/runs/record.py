"""The provenance record: an in-toto Statement v1 whose predicate is SLSA provenance v1.

Other tools read it as they read any SLSA provenance (docs/format.md, "Runs" has every
field). In short:

* ``subject`` — the output trees: ``{"name": "<path>", "digest": {"snapdir": "<id>"}}``,
  the digest being the snapshot id (BLAKE3 of the canonical manifest, docs/format.md);
* ``predicate.buildDefinition.externalParameters`` — ``argv`` (masked), ``cwd`` (relative
  to the project root, where the configuration or git work tree is), ``kind`` (``run``,
  ``capture``, ``rerun``, ``track``);
* ``predicate.buildDefinition.internalParameters`` — platform, Python, host, user, the
  allowlisted environment (secret values ``<redacted len=N>``), pre-command results, the
  run-cache key;
* ``predicate.buildDefinition.resolvedDependencies`` — the inputs (``snapdir`` digest; one
  pulled from a ref also has the ref as given and the release, version or channel it
  resolved to in its annotations), the
  git commit (``gitCommit``), hashed files and the executable (``blake3``);
* ``predicate.runDetails`` — builder, start and end, and byproducts: ``stdout``,
  ``stderr`` and ``git-diff`` objects (``blake3`` digests of objects in the store) and a
  ``result`` (exit code or signal, status, duration, max RSS, CPU time).

Canonical bytes: JSON with sorted keys, no insignificant white space, UTF-8, integers for
every count and duration (floats only in user metrics, written as Python's shortest
round-trip form). The record's name is the BLAKE3 of those bytes.

A record read from a store is untrusted: :func:`parse_record` checks its size (at most
:data:`MAX_RECORD`), that it hashes to its name, and every field downstream code uses, and
returns a typed :class:`RunRecord`; nothing else re-parses a record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import SnapdirError

__all__ = [
    "MAX_RECORD",
    "STATEMENT",
    "InvalidRecordError",
    "RunRecord",
    "canonical",
    "parse_record",
]

STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://snapdir.dev/run/v1"
BUILDER = "https://snapdir.dev/run"
#: The largest record read back from a store.
MAX_RECORD = 1 << 20
KINDS = ("run", "capture", "rerun", "track")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
MAX_ARGV = 4096
MAX_PATH = 4096


class InvalidRecordError(SnapdirError):
    """A run record that is not what snapdir writes (too big, malformed, or not matching
    its name)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="INVALID_RECORD")


def canonical(obj: Any) -> bytes:
    """The canonical bytes of a record (see the module docstring)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


class Stream:
    """A captured stream or other byproduct object: BLAKE3 digest and size."""

    __slots__ = ("digest", "size")

    def __init__(self, digest: str, size: int) -> None:
        self.digest = digest
        self.size = size

    def to_json(self) -> dict[str, object]:
        return {"digest": self.digest, "size": self.size}


class RunRecord:
    """A validated record, as the rest of snapdir uses it. ``raw`` is the whole statement
    (for ``show --json`` and other tools)."""

    __slots__ = (
        "argv",
        "cache_key",
        "cwd",
        "diff",
        "differing",
        "digest",
        "env",
        "exit_code",
        "finished",
        "host",
        "input_refs",
        "inputs",
        "kind",
        "outputs",
        "raw",
        "reproduced",
        "rerun_of",
        "signal",
        "started",
        "status",
        "stderr",
        "stdout",
    )

    def __init__(self, digest: str, raw: dict[str, Any]) -> None:
        self.digest = digest
        self.raw = raw
        self.kind = "run"
        self.argv: list[str] = []
        self.cwd = "."
        self.inputs: list[tuple[str, str]] = []
        #: input path -> its ref annotations (``ref``, ``release``, ``version``,
        #: ``channel``) for an input pulled from a ref
        self.input_refs: dict[str, dict[str, str]] = {}
        self.outputs: list[tuple[str, str]] = []
        self.env: dict[str, str] = {}
        self.host = ""
        self.started = ""
        self.finished = ""
        self.status: int | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.stdout: Stream | None = None
        self.stderr: Stream | None = None
        self.diff: Stream | None = None
        self.cache_key = ""
        self.rerun_of = ""
        self.reproduced: bool | None = None
        self.differing: list[str] = []

    def objects(self) -> set[str]:
        """The store objects this record names (stdout, stderr, the git diff)."""
        return {s.digest for s in (self.stdout, self.stderr, self.diff) if s is not None}

    def snapshots(self) -> set[str]:
        return {i for _, i in self.inputs} | {i for _, i in self.outputs}

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints for a run in a list."""
        return {
            "record": self.digest,
            "kind": self.kind,
            "argv": self.argv,
            "cwd": self.cwd,
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "host": self.host,
            "inputs": [{"path": p, "id": i, **self.input_refs.get(p, {})} for p, i in self.inputs],
            "outputs": [{"path": p, "id": i} for p, i in self.outputs],
            "stdout": self.stdout.to_json() if self.stdout else None,
            "stderr": self.stderr.to_json() if self.stderr else None,
            "rerun_of": self.rerun_of or None,
            "reproduced": self.reproduced,
            "differing": self.differing,
        }


def _bad(digest: str, why: str) -> InvalidRecordError:
    return InvalidRecordError(f"run record {digest[:16]}… is invalid: {why}")


def _str(v: object, what: str, digest: str, limit: int = MAX_PATH) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise _bad(digest, f"{what} is not a string of at most {limit} characters")
    return v


def _int(v: object, what: str, digest: str, *, optional: bool = False) -> int | None:
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
        raise _bad(digest, f"{what} is not an integer")
    return v


def _dict(v: object, what: str, digest: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(digest, f"{what} is not an object")
    return v


def _list(v: object, what: str, digest: str, limit: int = MAX_ARGV) -> list[Any]:
    if not isinstance(v, list) or len(v) > limit:
        raise _bad(digest, f"{what} is not a list of at most {limit} items")
    return v


def check_rel_path(p: str) -> bool:
    """A path a record may name: relative, normalised, no ``..``, no NUL (so that a rerun
    can never write outside its scratch directory)."""
    if not p or p.startswith("/") or "\x00" in p or "\\" in p:
        return False
    if p == ".":
        return True
    parts = p.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def _stream(v: object, what: str, digest: str) -> Stream:
    d = _dict(v, what, digest)
    dg = _dict(d.get("digest"), f"{what}.digest", digest).get("blake3")
    if not isinstance(dg, str) or not _HEX64.fullmatch(dg):
        raise _bad(digest, f"{what} has no blake3 digest")
    ann = _dict(d.get("annotations", {}), f"{what}.annotations", digest)
    size = _int(ann.get("size", 0), f"{what}.size", digest)
    if size is None or size < 0:  # pragma: no cover (not optional)
        raise _bad(digest, f"{what} has a negative size")
    return Stream(dg, size)


def _tree_refs(items: list[Any], what: str, digest: str) -> list[tuple[str, str]]:
    out = []
    for i, it in enumerate(items):
        d = _dict(it, f"{what}[{i}]", digest)
        sid = _dict(d.get("digest"), f"{what}[{i}].digest", digest).get("snapdir")
        if not isinstance(sid, str) or not _HEX64.fullmatch(sid):
            raise _bad(digest, f"{what}[{i}] has no snapdir digest")
        name = _str(d.get("name"), f"{what}[{i}].name", digest)
        path = name[len("in:") :] if name.startswith("in:") else name
        if not check_rel_path(path):
            raise _bad(digest, f"{what}[{i}] names an unsafe path {path!r}")
        out.append((path, sid))
    return out


#: The annotations an input pulled from a ref carries besides its path.
REF_FIELDS = ("ref", "release", "version", "channel")


def _input_refs(items: list[Any], digest: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for i, it in enumerate(items):
        ann = _dict(it.get("annotations", {}), f"input[{i}].annotations", digest)
        found = {k: _str(ann[k], f"input[{i}].{k}", digest, 1024) for k in REF_FIELDS if k in ann}
        if found:
            name = str(it.get("name", ""))
            out[name[len("in:") :]] = found
    return out


def parse_record(data: bytes, digest: str) -> RunRecord:
    """Validate a record read from a store (see the module docstring)."""
    from .._snapdir import blake3_hex

    if len(data) > MAX_RECORD:
        raise _bad(digest, f"larger than {MAX_RECORD} bytes")
    if blake3_hex(data) != digest:
        raise _bad(digest, "its content does not hash to its name")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad(digest, "not JSON") from None
    top = _dict(raw, "the statement", digest)
    if top.get("_type") != STATEMENT or top.get("predicateType") != PREDICATE:
        raise _bad(digest, "not an in-toto statement with SLSA provenance v1")
    rec = RunRecord(digest, top)
    pred = _dict(top.get("predicate"), "predicate", digest)
    bd = _dict(pred.get("buildDefinition"), "buildDefinition", digest)
    if bd.get("buildType") != BUILD_TYPE:
        raise _bad(digest, "not a snapdir run (buildType)")
    ext = _dict(bd.get("externalParameters"), "externalParameters", digest)
    kind = ext.get("kind")
    if kind not in KINDS:
        raise _bad(digest, f"unknown kind {kind!r}")
    rec.kind = str(kind)
    rec.argv = [
        _str(a, "argv item", digest, 1 << 16) for a in _list(ext.get("argv", []), "argv", digest)
    ]
    rec.cwd = _str(ext.get("cwd", "."), "cwd", digest)
    if not check_rel_path(rec.cwd):
        raise _bad(digest, f"unsafe cwd {rec.cwd!r}")
    internal = _dict(bd.get("internalParameters", {}), "internalParameters", digest)
    env = _dict(internal.get("env", {}), "env", digest)
    rec.env = {
        _str(k, "env name", digest, 256): _str(v, "env value", digest, 1 << 16)
        for k, v in env.items()
    }
    rec.host = _str(internal.get("host", ""), "host", digest, 253)
    rec.cache_key = _str(internal.get("cacheKey", ""), "cacheKey", digest, 64)
    deps = _list(bd.get("resolvedDependencies", []), "resolvedDependencies", digest)
    inputs = [d for d in deps if isinstance(d, dict) and str(d.get("name", "")).startswith("in:")]
    rec.inputs = _tree_refs(inputs, "input", digest)
    rec.input_refs = _input_refs(inputs, digest)
    rec.outputs = _tree_refs(_list(top.get("subject", []), "subject", digest), "subject", digest)
    details = _dict(pred.get("runDetails"), "runDetails", digest)
    meta = _dict(details.get("metadata", {}), "metadata", digest)
    rec.started = _str(meta.get("startedOn", ""), "startedOn", digest, 64)
    rec.finished = _str(meta.get("finishedOn", ""), "finishedOn", digest, 64)
    for bp in _list(details.get("byproducts", []), "byproducts", digest):
        b = _dict(bp, "byproduct", digest)
        name = b.get("name")
        if name == "stdout":
            rec.stdout = _stream(b, "stdout", digest)
        elif name == "stderr":
            rec.stderr = _stream(b, "stderr", digest)
        elif name == "git-diff":
            rec.diff = _stream(b, "git-diff", digest)
        elif name == "result":
            ann = _dict(b.get("annotations", {}), "result", digest)
            rec.status = _int(ann.get("status"), "status", digest, optional=True)
            rec.exit_code = _int(ann.get("exitCode"), "exitCode", digest, optional=True)
            rec.signal = _int(ann.get("signal"), "signal", digest, optional=True)
        elif name == "rerun":
            ann = _dict(b.get("annotations", {}), "rerun", digest)
            of = ann.get("of")
            if not isinstance(of, str) or not _HEX64.fullmatch(of):
                raise _bad(digest, "rerun names no record")
            rec.rerun_of = of
            rp = ann.get("reproduced")
            if not isinstance(rp, bool):
                raise _bad(digest, "rerun has no verdict")
            rec.reproduced = rp
            rec.differing = [
                _str(p, "differing path", digest)
                for p in _list(ann.get("differing", []), "differing", digest, 100_000)
            ]
    return rec


def resource(name: str, algo: str, digest: str, **extra: Any) -> dict[str, Any]:
    """An SLSA ResourceDescriptor."""
    d: dict[str, Any] = {"name": name, "digest": {algo: digest}}
    d.update({k: v for k, v in extra.items() if v is not None})
    return d


def statement(
    *,
    kind: str,
    argv: Sequence[str],
    cwd: str,
    internal: Mapping[str, Any],
    inputs: Sequence[tuple[str, str]],
    outputs: Sequence[tuple[str, str]],
    dependencies: Sequence[dict[str, Any]],
    started: str,
    finished: str,
    invocation: str,
    byproducts: Sequence[dict[str, Any]],
    version: str,
    input_refs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Assemble a statement (see the module docstring for the layout). ``input_refs``:
    for an input pulled from a ref, the ref as given and what it resolved to (its
    annotations besides ``path``)."""
    refs = input_refs or {}
    deps = [
        resource(f"in:{p}", "snapdir", i, annotations={"path": p, **refs.get(p, {})})
        for p, i in inputs
    ]
    return {
        "_type": STATEMENT,
        "subject": [{"name": p, "digest": {"snapdir": i}} for p, i in outputs],
        "predicateType": PREDICATE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"argv": list(argv), "cwd": cwd, "kind": kind},
                "internalParameters": dict(internal),
                "resolvedDependencies": deps + list(dependencies),
            },
            "runDetails": {
                "builder": {"id": BUILDER, "version": {"snapdir": version}},
                "metadata": {
                    "invocationId": invocation,
                    "startedOn": started,
                    "finishedOn": finished,
                },
                "byproducts": list(byproducts),
            },
        },
    }
