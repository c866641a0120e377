"""Helpers shared by the store and transfer tests.

* calling the async API from sync tests under a chosen anyio backend (``run``);
* building trees and hand-crafting ``file://`` stores exactly as SPEC §4 lays them out
  (objects and manifests under ``abc/def/ghi/<55 hex>``), including broken and hostile ones;
* describing a directory tree (kinds, modes, contents, inodes, mtimes) so a test can assert
  that an operation left it exactly as it was;
* running the CLI and Python snippets in subprocesses, optionally as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from blake3 import blake3

T = TypeVar("T")

BACKENDS = ("asyncio", "trio")
EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
NOBODY = 65534


def run(fn: Callable[[], Awaitable[T]], backend: str = "asyncio") -> T:
    """Run the coroutine function ``fn`` to completion under ``backend``."""
    return anyio.run(fn, backend=backend)


def b3(data: bytes) -> str:
    return blake3(data).hexdigest()


def uri(path: Path) -> str:
    return "file://" + str(path)


def shard(hex_digest: str) -> str:
    h = hex_digest
    return f"{h[0:3]}/{h[3:6]}/{h[6:9]}/{h[9:]}"


def object_rel(checksum: str) -> str:
    return ".objects/" + shard(checksum)


def manifest_rel(snapshot_id: str) -> str:
    return ".manifests/" + shard(snapshot_id)


def write(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


# --- hand-made manifests and stores -----------------------------------------------------------


def fline(path: str, data: bytes, mode: int = 0o644) -> str:
    """A manifest ``F`` line for ``data`` at ``path`` (``./...``)."""
    return f"F {mode:o} {b3(data)} {len(data)} {path}"


def dline(path: str, checksum: str = EMPTY, size: int = 0, mode: int = 0o755) -> str:
    """A manifest ``D`` line. The reader does not recompute directory checksums or sizes,
    so tests that only need a well-formed tree can leave the defaults."""
    return f"D {mode:o} {checksum} {size} {path}"


def text_id(text: str) -> str:
    """The id a manifest text is stored under when it is already canonical (raw BLAKE3 of
    text + newline; works for texts the parser would reject)."""
    return b3((text + "\n").encode("utf-8"))


def put_raw_manifest(store: Path, snapshot_id: str, data: bytes) -> Path:
    p = store / manifest_rel(snapshot_id)
    write(p, data)
    return p


def put_raw_object(store: Path, checksum: str, data: bytes) -> Path:
    p = store / object_rel(checksum)
    write(p, data)
    return p


def make_store(
    store: Path,
    text: str,
    objects: Iterable[bytes] = (),
    *,
    snapshot_id: str | None = None,
    stored_text: bytes | None = None,
) -> str:
    """Lay out a store by hand: every blob of ``objects`` under its key, and the manifest
    ``text`` (plus newline, or ``stored_text`` verbatim) under ``snapshot_id`` (default: the
    id of ``text``). Returns the id used."""
    sid = snapshot_id if snapshot_id is not None else text_id(text)
    for data in objects:
        put_raw_object(store, b3(data), data)
    put_raw_manifest(store, sid, stored_text if stored_text is not None else (text + "\n").encode())
    return sid


def manifest_for(files: Mapping[str, tuple[bytes, int]], dirs: Mapping[str, int]) -> str:
    """Canonical manifest text for a small tree given as ``{"a/b.txt": (data, mode)}`` and
    ``{"a": mode}`` (root mode 755), with correct directory checksums and sizes."""
    sums: dict[str, str] = {}
    sizes: dict[str, int] = {}
    kids: dict[str, list[str]] = {"": []}
    for d in dirs:
        kids.setdefault(d, [])
    for p, (data, _) in files.items():
        sums[p] = b3(data)
        sizes[p] = len(data)
    for p in list(files) + list(dirs):
        parent = p.rsplit("/", 1)[0] if "/" in p else ""
        kids.setdefault(parent, []).append(p)

    def visit(d: str) -> tuple[str, int]:
        cs: set[str] = set()
        total = 0
        for k in kids.get(d, []):
            if k in dirs:
                c, s = visit(k)
            else:
                c, s = sums[k], sizes[k]
            cs.add(c)
            total += s
        sums[d] = b3("".join(sorted(cs)).encode())
        sizes[d] = total
        return sums[d], total

    visit("")
    lines = [dline("./", sums[""], sizes[""], 0o755)]
    lines += [dline(f"./{d}/", sums[d], sizes[d], m) for d, m in dirs.items()]
    lines += [fline(f"./{p}", data, m) for p, (data, m) in files.items()]
    return "\n".join(sorted(lines, key=lambda ln: ln.split(" ", 4)[4].encode()))


# --- observing trees -----------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str  # "F", "D", "L" (symlink) or "?"
    mode: int
    digest: str  # file content hash, link target, or ""
    ino: int
    mtime_ns: int


def tree_state(root: Path) -> dict[str, Node]:
    """Every entry below ``root`` (root included as ``"."``), without following links.

    Directory mtimes are left out (recorded as 0): a pull stages its objects in a private
    directory inside the destination, which touches the destination's mtime even when the
    pull then fails and removes it."""
    out: dict[str, Node] = {}
    if not os.path.lexists(root):
        return out

    def one(p: str, rel: str) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = Node("L", 0, os.readlink(p), st.st_ino, st.st_mtime_ns)
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = Node("D", stat.S_IMODE(st.st_mode), "", st.st_ino, 0)
            for name in sorted(os.listdir(p)):
                one(os.path.join(p, name), name if rel == "." else f"{rel}/{name}")
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                digest = b3(f.read())
            out[rel] = Node("F", stat.S_IMODE(st.st_mode), digest, st.st_ino, st.st_mtime_ns)
        else:
            out[rel] = Node("?", stat.S_IMODE(st.st_mode), "", st.st_ino, st.st_mtime_ns)

    one(str(root), ".")
    return out


def files_below(root: Path) -> set[str]:
    """Relative paths of every non-directory below ``root``."""
    out: set[str] = set()
    for dirpath, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def staging_leftovers(root: Path) -> list[str]:
    """Names of staging directories or temporary files left anywhere below ``root``."""
    out: list[str] = []
    for dirpath, dirnames, names in os.walk(root):
        for n in dirnames + names:
            if n.startswith(".snapdir-") or ".tmp-" in n:
                out.append(os.path.join(dirpath, n))
    return out


# --- subprocesses --------------------------------------------------------------------------


def cli_env(**extra: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.pop("SNAPDIR_STORE", None)
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapdir", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(env) if env is not None else cli_env(),
        timeout=timeout,
        check=False,
    )


# A Python program that runs one snapdir operation, optionally as ``nobody``. Everything is
# imported and the extension loaded while still root (the interpreter under /root may be
# unreadable to nobody, and the operations import lazily), then privileges are dropped.
_AS_USER = r"""
import json, os, sys
import anyio, anyio.to_thread, snapdir
import snapdir._pull, snapdir._push, snapdir._verify, snapdir._diff, snapdir._sync
import snapdir.names.ops
import snapdir.stores.file
spec = json.loads(sys.argv[1])
op, args, kwargs = spec["op"], spec["args"], spec["kwargs"]
async def warm():
    await anyio.to_thread.run_sync(lambda: None)
anyio.run(warm)
out = {}
if spec["drop"] and os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
out["euid"] = os.geteuid()
for p in spec.get("unreadable", []):
    try:
        open(p, "rb").close()
        out["precondition"] = False
    except PermissionError:
        out["precondition"] = True
for p in spec.get("unwritable", []):
    out["precondition"] = not os.access(p, os.W_OK)
async def main():
    return await getattr(snapdir, op)(*args, **kwargs)
try:
    r = anyio.run(main)
except snapdir.SnapdirError as e:
    out.update(kind="SnapdirError", cls=type(e).__name__, code=e.code, message=str(e))
except BaseException as e:
    out.update(kind="other", cls=type(e).__name__, message=str(e))
else:
    out.update(kind="ok", result=r if isinstance(r, (str, bool, type(None))) else repr(r))
print(json.dumps(out))
"""


def run_op_as(
    op: str,
    *args: Any,
    drop: bool = True,
    unreadable: Iterable[str] = (),
    unwritable: Iterable[str] = (),
    cwd: Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``await snapdir.<op>(*args, **kwargs)`` in a subprocess, as uid/gid 65534 when
    ``drop``; returns what happened as a dict (``kind``, ``cls``, ``code``, ``message``)."""
    spec = {
        "op": op,
        "args": list(args),
        "kwargs": kwargs,
        "drop": drop,
        "unreadable": list(unreadable),
        "unwritable": list(unwritable),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _AS_USER, json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=cwd if cwd is not None else "/",
        env=cli_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def make_writable(root: Path) -> None:
    """Give the owner rwx on every directory below ``root`` so the tree can be removed."""
    if not root.exists():
        return
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
    os.chmod(root, 0o755)


# --- private tmpfs mounts (we run as root) ----------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str, *, options: str = "") -> Iterator[Path]:
    """Mount a fresh tmpfs of ``size`` (``"2m"``) at ``path`` for the duration of the block.

    Fails the test (never skips) when mounting is not permitted: the fault-injection tests
    must run wherever the suite runs."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0755" + (f",{options}" if options else "")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs at {path} (these tests need root and mount permission; "
            f"run them in a privileged container): {proc.stderr.strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount(path: Path, options: str) -> None:
    """``mount -o remount,<options>`` (e.g. ``size=16m`` or ``ro``)."""
    subprocess.run(
        ["mount", "-o", f"remount,{options}", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )


JOURNAL = ".snapdir/journal/"


def journal_entry_id(rel: str, data: bytes) -> str:
    """The snapshot id a journal entry (key ``rel`` relative to the store, content
    ``data``) names, after checking that the key parses and the content agrees with it."""
    from datetime import datetime, timezone

    from snapdir.lifecycle.journal import parse_key

    info = parse_key(rel.replace(os.sep, "/"), datetime.now(timezone.utc))
    body = json.loads(data)
    assert body["schema"] == 1, rel
    assert body["id"] == info.id, f"{rel}: its content names {body['id']}"
    assert (body["h"], body["f"], body["b"], tuple(body["l"])) == (
        info.host,
        info.files,
        info.bytes,
        info.labels,
    ), rel
    return info.id


def content_state(store: Path) -> dict[str, Node]:
    """:func:`tree_state` of a ``file://`` store without its ``.snapdir/`` records: what a
    no-op push must leave exactly as it was (it still adds a journal entry)."""
    return {k: v for k, v in tree_state(store).items() if not k.startswith(".snapdir")}


def journal_ids(store: Path) -> list[str]:
    """The snapshot ids a ``file://`` store's journal names, one per entry, sorted (each
    entry checked with :func:`journal_entry_id`)."""
    base = store / ".snapdir" / "journal"
    out: list[str] = []
    for dirpath, _, names in os.walk(base):
        for n in names:
            p = Path(dirpath, n)
            out.append(journal_entry_id(str(p.relative_to(store)), p.read_bytes()))
    return sorted(out)


def s3_store_problems(client: Any, store_uri: str) -> list[str]:
    """Every key under an S3 store re-read through ``client`` (boto3), past snapdir: objects
    and manifests must hash to their keys, journal entries must be well-formed, every
    manifest must verify, no multipart upload may hold parts."""
    import snapdir

    parsed = snapdir.StoreUri(store_uri)
    prefix = parsed.prefix + "/"
    problems: list[str] = []
    manifests: list[str] = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=parsed.bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            key = str(item["Key"])
            data = client.get_object(Bucket=parsed.bucket, Key=key)["Body"].read()
            rel = key[len(prefix) :]
            if rel.startswith(JOURNAL):
                journal_entry_id(rel, data)
                continue
            area, _, rest = rel.partition("/")
            if b3(data) != rest.replace("/", ""):
                problems.append(f"{key} holds other bytes")
            if area == ".manifests":
                manifests.append(rest.replace("/", ""))
    uploads = client.list_multipart_uploads(Bucket=parsed.bucket, Prefix=prefix)
    for up in uploads.get("Uploads", []):
        parts = client.list_parts(Bucket=parsed.bucket, Key=up["Key"], UploadId=up["UploadId"])
        if parts.get("Parts"):
            problems.append(f"unfinished upload of {up['Key']} holds parts")
    for sid in manifests:
        if not anyio.run(lambda sid=sid: snapdir.verify(sid, store_uri)):  # type: ignore[misc]
            problems.append(f"{sid} does not verify")
    return problems
