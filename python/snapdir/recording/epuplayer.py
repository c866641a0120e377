"""epuplayer's archive format: ``recording import`` and ``recording export --format
epuplayer``.

An epuplayer recording is a ``tar.gz`` holding ``recording.json`` (``{"metadata": {…},
"events": [EPUEvent…]}``) and ``chunks/chunk_<n>.bin`` (binary contents). Events have a wall
clock ``timestamp``, an ``event_type`` (``initial_dir``, ``initial_file``, ``created``,
``modified``, ``appended``, ``truncated``, ``deleted``, ``moved``), a POSIX ``src_path``
relative to the watched directory, text ``content`` or a ``binary_chunk_id``, the file's
``size``, its SHA-256 ``content_hash`` and ``is_placeholder``.

Import reads the archive member by member — never ``extractall``: only regular files named
``recording.json`` or ``chunks/chunk_<n>.bin`` are accepted, each bounded in size, and every
event's path and content is checked (paths by the same rules as every recording, content
against its SHA-256) before anything is stored. The imported events are then replayed into
a scratch directory by our own replayer, whose state is pushed as the recording's final
checkpoint, so ``replay --verify end`` works on imports too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import zlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgumentError
from .layout import check_name, head_key, keys_of, sealed_key

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["export_epuplayer", "import_epuplayer"]

_CHUNK = re.compile(r"chunks/(chunk_[0-9]{1,9})\.bin")
#: Bounds on what an archive may hold (it is untrusted input).
MAX_JSON = 256 << 20
MAX_CHUNK = 4 << 30
MAX_TOTAL = 16 << 30
MAX_MEMBERS = 1_000_000
_EMPTY_B3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def _bad(archive: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{archive}: not a valid epuplayer recording: {why}")


def _read_archive(path: str, scratch: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``(recording.json, {chunk id: file})``, member by member, every one checked."""
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 (closed by the `with` below)
    except (tarfile.TarError, OSError) as e:
        raise _bad(path, f"cannot open it as tar.gz ({e})") from None
    try:
        with tar:
            return _members(path, tar, scratch)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise _bad(path, f"the archive is damaged ({e})") from None


def _members(
    path: str, tar: tarfile.TarFile, scratch: str
) -> tuple[dict[str, Any], dict[str, str]]:
    doc: dict[str, Any] | None = None
    chunks: dict[str, str] = {}
    total = 0
    for n, member in enumerate(tar):
        if n >= MAX_MEMBERS:
            raise _bad(path, "too many members")
        name = member.name
        if member.isdir() and name.rstrip("/") in ("chunks", "."):
            continue
        if not member.isreg():
            raise _bad(path, f"member {name!r} is not a regular file")
        total += member.size
        if total > MAX_TOTAL:
            raise _bad(path, "its members add up to too many bytes")
        f = tar.extractfile(member)
        if f is None:  # pragma: no cover - isreg() members always have data
            raise _bad(path, f"member {name!r} has no data")
        if name == "recording.json":
            if member.size > MAX_JSON or doc is not None:
                raise _bad(path, "recording.json is too large or repeated")
            try:
                loaded = json.loads(f.read(MAX_JSON + 1))
            except ValueError as e:
                raise _bad(path, f"recording.json is not JSON ({e})") from None
            if not isinstance(loaded, dict):
                raise _bad(path, "recording.json is not an object")
            doc = loaded
            continue
        m = _CHUNK.fullmatch(name)
        if m is None:
            raise _bad(path, f"unexpected member {name!r}")
        if member.size > MAX_CHUNK or m.group(1) in chunks:
            raise _bad(path, f"chunk {name!r} is too large or repeated")
        dest = os.path.join(scratch, m.group(1))
        with open(dest, "wb") as out:
            shutil.copyfileobj(f, out)
        chunks[m.group(1)] = dest
    if doc is None:
        raise _bad(path, "it has no recording.json")
    return doc, chunks


def _epu_path(archive: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(archive, f"an event path is not a string: {value!r}")
    p = value
    # The recording's own rules (no .., no absolute path, no NUL) are checked again in
    # Rust when the segment is encoded; refuse early with the archive named.
    parts = p.split("/")
    if not p or p.startswith("/") or any(s in ("", ".", "..") for s in parts) or "\0" in p:
        from .._errors import UnsafePathError

        raise UnsafePathError(f"{archive}: event path {value!r} is not a plain relative path")
    return p


async def import_epuplayer(
    archive: str | os.PathLike[str], store: str | Store, *, name: str | None = None
) -> dict[str, Any]:
    """Import an epuplayer ``tar.gz`` into ``store`` as recording ``name``; returns the
    sealed summary."""
    from .._common import open_wrapped
    from .._push import push_with_stats
    from .._snapdir import RecordingLog, blake3_hex, recording_encode_segment
    from ..stores._base import ObjectPut

    src = os.fspath(archive)
    st = open_wrapped(store)
    ks = keys_of(st)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = check_name(name or f"epuplayer-{stamp}")
    if await ks.list_keys(f".snapdir/recordings/{name}/"):
        from .._errors import ConflictError

        raise ConflictError(f"a recording named {name!r} is already in {st.uri}")
    scratch = tempfile.mkdtemp(prefix="snapdir-import-")
    try:
        doc, chunks = _read_archive(src, scratch)
        meta, raw_events = doc.get("metadata"), doc.get("events")
        if not isinstance(meta, dict) or not isinstance(raw_events, list):
            raise _bad(src, "recording.json needs 'metadata' and 'events'")
        events: list[dict[str, Any]] = []
        puts: dict[str, ObjectPut] = {}
        dirs: set[str] = set()
        t0: float | None = None
        last = 0
        counts: dict[str, int] = {}

        def content_of(i: int, ev: dict[str, Any]) -> bytes | None:
            if isinstance(ev.get("content"), str):
                return str(ev["content"]).encode()
            cid = ev.get("binary_chunk_id")
            if cid is None:
                return None
            if not isinstance(cid, str) or cid not in chunks:
                raise _bad(src, f"event {i} names a missing chunk {cid!r}")
            with open(chunks[cid], "rb") as f:
                return f.read()

        def store_bytes(data: bytes) -> str:
            d = blake3_hex(data)
            if d not in puts:
                p = os.path.join(scratch, "obj-" + d)
                with open(p, "wb") as f:
                    f.write(data)
                puts[d] = ObjectPut(d, p, len(data))
            return d

        def emit(t: int, kind: str, path: str, **fields: Any) -> None:
            ev = {"t": t, "k": kind, "p": path, **fields}
            events.append(ev)
            counts[kind] = counts.get(kind, 0) + 1

        for i, ev in enumerate(raw_events):
            if not isinstance(ev, dict):
                raise _bad(src, f"event {i} is not an object")
            ts = ev.get("timestamp")
            if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts != ts:
                raise _bad(src, f"event {i} has no valid timestamp")
            t0 = float(ts) if t0 is None else t0
            t = max(last, int(max(0.0, float(ts) - t0) * 1e6))
            if t > 100 * 365 * 86400 * 10**6:
                raise _bad(src, f"event {i} is more than a century after the first")
            last = t
            kind = ev.get("event_type")
            path = _epu_path(src, ev.get("src_path"))
            is_dir = bool(ev.get("is_directory"))
            size = ev.get("size")
            if kind in ("initial_dir", "created") and is_dir:
                if path not in dirs:
                    emit(t, "mkdir", path, m=0o755)
                    dirs.add(path)
            elif kind in ("initial_file", "created", "modified") and not is_dir:
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    size = None
                if ev.get("is_placeholder"):
                    emit(t, "placeholder", path, m=0o644, s=int(size or 0))
                    continue
                data = content_of(i, ev)
                if data is None:
                    continue  # epuplayer recorded no content (e.g. an unreadable file)
                want = ev.get("content_hash")
                checked = isinstance(want, str) and not want.startswith("unreadable_")
                if checked and hashlib.sha256(data).hexdigest() != want:
                    raise _bad(src, f"event {i}: the content of {path!r} does not match its "
                               "recorded SHA-256")  # fmt: skip
                d = store_bytes(data)
                emit(t, "create" if kind != "modified" else "write", path, m=0o644, h=d,
                     s=len(data))  # fmt: skip
            elif kind == "appended" and not is_dir:
                data = content_of(i, ev)
                pos = ev.get("file_position")
                if data is None or not isinstance(pos, int) or isinstance(pos, bool) or pos < 0:
                    raise _bad(src, f"event {i}: an append needs content and a position")
                d = store_bytes(data)
                emit(t, "append", path, h=d, o=pos, s=pos + len(data), f=_EMPTY_B3)
            elif kind == "truncated" and not is_dir:
                od = ev.get("operation_data") or {}
                new = od.get("new_size") if isinstance(od, dict) else None
                if not isinstance(new, int) or isinstance(new, bool) or new < 0:
                    raise _bad(src, f"event {i}: a truncation needs its new size")
                emit(t, "truncate", path, s=new, f=_EMPTY_B3)
            elif kind == "deleted":
                emit(t, "delete", path)
                dirs.discard(path)
            elif kind == "moved":
                emit(t, "rename", path, d=_epu_path(src, ev.get("dest_path")))
            else:
                raise _bad(src, f"event {i} has an unknown type {kind!r}")
        # The full-content hashes of appends and truncations are unknown to epuplayer's
        # format (SHA-256 only): replay the events here, then fill them in from the files.
        if puts:
            await st.put_objects(list(puts.values()))
        head_meta = {
            "name": name,
            "source": str(meta.get("watch_dir", "")),
            "host": "",
            "started": str(meta.get("recorded_at", "")),
            "imported_from": "epuplayer",
        }
        work = os.path.join(scratch, "tree")
        os.mkdir(work)
        os.chmod(work, 0o755)
        _fill_full_hashes(events, work, scratch, puts)
        # Checkpoint: the state at the end, as a snapshot.
        stats = await push_with_stats(work, st, journal=False)
        sid = str(stats["id"])
        events.append({"t": last, "k": "checkpoint", "id": sid})
        counts["checkpoint"] = 1
        lines = [json.dumps(e, separators=(",", ":")) for e in events]
        seg = recording_encode_segment(name, 0, None, json.dumps(head_meta), lines)
        digest = blake3_hex(seg)
        RecordingLog(name, [(digest, seg)])  # everything verified once more, as a reader would
        seg_path = os.path.join(scratch, "segment")
        with open(seg_path, "wb") as f:  # noqa: ASYNC230 (local scratch)
            f.write(seg)
        await st.put_object(digest, seg_path, len(seg))
        await ks.put_if_absent(head_key(name, 0, digest), b"")
        summary = {
            "schema": 1,
            "name": name,
            "source": head_meta["source"],
            "host": socket.gethostname(),
            "started": head_meta["started"],
            "duration": round(last / 1e6, 6),
            "segments": 1,
            "events": len(events),
            "by_kind": dict(sorted(counts.items())),
            "bytes": sum(p.size for p in puts.values()),
            "checkpoints": 1,
            "final_checkpoint": sid,
            "overflows": 0,
        }
        await ks.put_if_absent(
            sealed_key(name, 0, digest), json.dumps(summary, sort_keys=True).encode() + b"\n"
        )
        return summary
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fill_full_hashes(
    events: list[dict[str, Any]], work: str, scratch: str, puts: dict[str, Any]
) -> None:
    """Apply ``events`` to the empty directory ``work`` with the Rust replayer (so every
    path is checked as a replay checks it) and set each append's and truncation's ``f``
    from the file it produced."""
    from .._snapdir import RecordingLog, Replayer, blake3_hex, recording_encode_segment

    objdir = os.path.join(scratch, "objects")
    os.makedirs(objdir, exist_ok=True)
    for d, put in puts.items():
        os.link(put.source, os.path.join(objdir, d))
    for ev in events:
        lines = [json.dumps(ev, separators=(",", ":"))]
        seg = recording_encode_segment("import", 0, None, None, lines)
        log = RecordingLog("import", [(blake3_hex(seg), seg)])
        Replayer(log, work, objdir, float("inf"), 0.0, "zeros", False).run(0, 1, False, False)
        if ev["k"] in ("append", "truncate"):
            with open(os.path.join(work, ev["p"]), "rb") as f:
                ev["f"] = blake3_hex(f.read())


async def export_epuplayer(
    rec: str, store: str | Store, output: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write recording ``rec`` (a name, or a release ref ``NAME@RANGE`` naming one) as an
    epuplayer ``tar.gz`` at ``output`` (text contents inline, binary ones as chunks,
    SHA-256 of every file's content after each event; placeholders as epuplayer
    placeholders; permission changes and checkpoints have no epuplayer equivalent and are
    left out). Returns ``{events, chunks}``."""
    from .._common import open_wrapped
    from ..stores._base import ObjectGet
    from .naming import load_ref

    st = open_wrapped(store)
    _, log = await load_ref(st, rec)
    meta = json.loads(log.meta_json())
    events = [json.loads(e) for e in log.events_json(0, len(log))]
    scratch = tempfile.mkdtemp(prefix="snapdir-export-")
    try:
        objs = log.objects(0, len(log))
        await st.get_objects([ObjectGet(d, os.path.join(scratch, d), n) for d, n in objs])
        started = _epoch(meta.get("started"))
        files: dict[str, bytes] = {}
        dirs: set[str] = set()
        out: list[dict[str, Any]] = []
        chunks: dict[str, bytes] = {}

        def body(d: str) -> bytes:
            with open(os.path.join(scratch, d), "rb") as f:
                return f.read()

        def ev(t: int, kind: str, path: str, **kw: Any) -> None:
            base: dict[str, Any] = {
                "timestamp": started + t / 1e6,
                "event_type": kind,
                "src_path": path,
                "dest_path": None,
                "is_directory": False,
                "content": None,
                "size": None,
                "content_hash": None,
                "binary_chunk_id": None,
                "operation_data": None,
                "file_position": None,
                "is_placeholder": False,
            }
            base.update(kw)
            out.append(base)

        def payload(data: bytes) -> dict[str, Any]:
            try:
                if len(data) < (1 << 20):
                    return {"content": data.decode("utf-8")}
            except UnicodeDecodeError:
                pass
            cid = f"chunk_{len(chunks)}"
            chunks[cid] = data
            return {"binary_chunk_id": cid}

        for e in events:
            k, p, t = e["k"], e.get("p", ""), e["t"]
            if k == "mkdir":
                dirs.add(p)
                ev(t, "created", p, is_directory=True)
            elif k in ("create", "write"):
                data = body(e["h"]) if e["s"] else b""
                files[p] = data
                ev(t, "created" if k == "create" else "modified", p, size=len(data),
                   content_hash=hashlib.sha256(data).hexdigest(), **payload(data))  # fmt: skip
            elif k == "append":
                new = body(e["h"])
                files[p] = files.get(p, b"")[: e["o"]] + new
                ev(t, "appended", p, size=len(files[p]), file_position=e["o"],
                   content_hash=hashlib.sha256(files[p]).hexdigest(),
                   operation_data={"append_size": len(new)}, **payload(new))  # fmt: skip
            elif k == "truncate":
                files[p] = files.get(p, b"")[: e["s"]].ljust(e["s"], b"\0")
                ev(t, "truncated", p, size=e["s"], operation_data={"new_size": e["s"]},
                   content_hash=hashlib.sha256(files[p]).hexdigest())  # fmt: skip
            elif k == "placeholder":
                files[p] = b"\0" * 0
                ev(t, "created", p, size=e["s"], is_placeholder=True)
            elif k == "rename":
                d = e["d"]
                for old in [x for x in files if x == p or x.startswith(p + "/")]:
                    files[d + old[len(p) :]] = files.pop(old)
                ev(t, "moved", p, dest_path=d, is_directory=p in dirs)
                if p in dirs:
                    dirs.discard(p)
                    dirs.add(d)
            elif k == "delete":
                was_dir = p in dirs
                for old in [x for x in files if x == p or x.startswith(p + "/")]:
                    del files[old]
                dirs.discard(p)
                ev(t, "deleted", p, is_directory=was_dir)
        doc = {
            "metadata": {
                "recorded_at": meta.get("started", ""),
                "watch_dir": meta.get("source", ""),
                "total_events": len(out),
                "version": "2.0",
                "platform": "linux",
                "exported_by": "snapdir",
            },
            "events": out,
        }
        dest = os.fspath(output)
        tmp = dest + f".part-{os.getpid()}"
        with tarfile.open(tmp, "w:gz") as tar:
            _add(tar, "recording.json", json.dumps(doc, indent=1).encode())
            for cid, data in chunks.items():
                _add(tar, f"chunks/{cid}.bin", data)
        os.replace(tmp, dest)
        return {"events": len(out), "chunks": len(chunks), "output": dest}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _epoch(iso: object) -> float:
    if isinstance(iso, str) and iso:
        try:
            return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()
