"""The recorder: watch a directory, record what happens to it into a store.

Events come from the OS's notifications (:class:`snapdir._snapdir.Watch`, the ``notify``
crate) or, with ``poll``, from a walk every interval; either way they are only hints. For
every path named the recorder looks at what is there now (one read, in Rust) and compares
it with its model of the tree: what differs becomes an event. Reconciliation — a walk of the
whole tree through the stat cache — runs at every checkpoint and whenever the OS reports an
overflow, so a burst that overflowed the kernel's queue is still recorded completely.

Checkpoints are ordinary snapshots (a push without a journal entry): the recorder diffs the
pushed manifest against its model and records the differences before the checkpoint event,
so replaying the events up to a checkpoint gives exactly that snapshot.

Events are buffered and flushed at least every ``flush_interval`` (0.25 s by default) as one
segment object plus one create-only head key: ``kill -9`` loses at most about a second.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._errors import InFluxError, InvalidArgumentError, NotFoundError
from .layout import check_name, head_key, keys_of, sealed_key

if TYPE_CHECKING:
    import anyio

    from .._snapdir import Watch
    from ..stores import Store

__all__ = ["Recorder", "parse_every"]

# Model entries: ("d", mode, ino) or ("f", mode, size, full_hex, ino).
_Entry = tuple[Any, ...]
_EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def parse_every(value: str | float | int | None) -> tuple[float | None, int | None]:
    """``--checkpoint-every``: a duration (``30s``, ``5m``, ``1h``, or seconds) or a count of
    events (``500``, an integer without a unit)."""
    if value is None:
        return 60.0, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for u in ("ms", "s", "m", "h"):
        if text.endswith(u) and text[: -len(u)].replace(".", "", 1).isdigit():
            secs = float(text[: -len(u)]) * units[u]
            if secs > 0:
                return secs, None
    if text.isdigit() and int(text) > 0:
        return None, int(text)
    raise InvalidArgumentError(
        f"invalid checkpoint interval {value!r}: a duration (30s, 5m) or an event count"
    )


def parse_duration(value: str | float | None) -> float | None:
    """``30s``, ``5m``, ``1h``, ``250ms`` or plain seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    secs, count = parse_every(value)
    if count is not None:
        return float(count)
    return secs


#: A recorder's staging directory in the system's temporary directory: its PID, then
#: mkdtemp's random part. The PID lets a later recorder remove what a killed one left.
STAGING_PREFIX = "snapdir-record-"


def staging_dir() -> str:
    """A fresh staging directory for this recorder, after removing those of recorders that
    are gone (killed with -9, the machine lost): a recording survives its recorder's crash,
    its scratch files must not pile up. Only a real directory of this user whose recorder
    PID no longer exists is removed; a name that does not parse is left alone."""
    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            rest = name[len(STAGING_PREFIX) :] if name.startswith(STAGING_PREFIX) else ""
            pid, sep, _ = rest.partition("-")
            if not (sep and pid.isdigit()) or _alive(int(pid)):
                continue
            path = os.path.join(base, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                    shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts: it may be a recorder)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class Recorder:
    """Record ``path``'s life into ``store`` as recording ``name``.

    ``async with Recorder(path, store) as rec: ...`` starts recording on entry and seals on
    exit; or call :meth:`start`, :meth:`run` and :meth:`seal`. ``content``: ``all`` keeps
    every file's bytes, ``text`` makes binary files placeholders, ``none`` keeps none;
    ``placeholder`` globs and ``force_binary_ext`` always make placeholders,
    ``force_text_ext`` always keeps bytes. ``tag`` (``NAME@VERSION``): when sealed, the
    final checkpoint is tagged that release, naming this recording
    (:mod:`snapdir.recording.naming`; checked free when recording starts)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        store: str | Store,
        *,
        name: str | None = None,
        poll: float | None = None,
        checkpoint_every: str | float | None = None,
        content: str = "all",
        placeholder: Sequence[str] = (),
        force_text_ext: Sequence[str] = (),
        force_binary_ext: Sequence[str] = (),
        skip_unreadable: bool = False,
        flush_interval: float = 0.25,
        journal: bool = True,
        tag: str | None = None,
    ) -> None:
        from .._common import open_wrapped

        if content not in ("all", "text", "none"):
            raise InvalidArgumentError(f"invalid content mode {content!r}: all, text or none")
        self.root = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.root):
            if not os.path.lexists(self.root):
                raise NotFoundError(f"no directory {self.root!r} to record")
            raise InvalidArgumentError(f"{self.root!r} is not a directory")
        self.store = open_wrapped(store)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        if name is None:
            name = f"{os.path.basename(self.root)}-{stamp}"
            name = name if _ok_name(name) else f"rec-{stamp}"
        self.name = check_name(name)
        self.poll = poll
        self.every_s, self.every_n = parse_every(checkpoint_every)
        self.content = content
        self.placeholder = tuple(placeholder)
        self.text_ext = {_ext(e) for e in force_text_ext}
        self.binary_ext = {_ext(e) for e in force_binary_ext}
        self.skip_unreadable = skip_unreadable
        self.flush_interval = flush_interval
        self.journal = journal
        self.tag = tag
        self.model: dict[str, _Entry] = {}
        self.events: list[dict[str, Any]] = []
        self.staged: dict[str, tuple[str, int]] = {}
        self.seq = 0
        self.prev: str | None = None
        self.t0 = 0.0
        self.started = ""
        self.counts: dict[str, int] = {}
        self.bytes_stored = 0
        self.overflows = 0
        self.checkpoint_ids: list[str] = []
        self.since_checkpoint = 0
        self.influx: dict[str, int] = {}
        #: Vanished paths whose delete waits a moment for the other half of a rename.
        self.deferred: dict[str, float] = {}
        self._watch: Watch | None = None
        self._tmp = ""
        self._stop: anyio.Event | None = None
        self._sealed = False
        self.summary: dict[str, Any] = {}

    # -- public API ------------------------------------------------------------------

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.seal()

    async def start(self) -> None:
        """Take the initial state (a checkpoint at time 0) and begin watching."""
        import anyio

        from .._snapdir import Watch

        keys_of(self.store)  # refuse a store without create-only keys before any work
        if self.tag is not None:
            from .naming import check_tag_free

            self.tag = await check_tag_free(self.store, self.tag)
        self._tmp = staging_dir()
        self._stop = anyio.Event()
        self.t0 = time.monotonic()
        self.started = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        if self.poll is None:
            self._watch = await _thread(Watch, self.root)
        await self.checkpoint()
        await self.flush()

    def dir_name(self) -> str:
        """The recorded directory (absolute)."""
        return self.root

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler's thread via the loop)."""
        if self._stop is not None:
            self._stop.set()

    async def run(
        self,
        *,
        duration: float | None = None,
        until_idle: float | None = None,
        stop_flag: Any = None,
    ) -> None:
        """Record until :meth:`stop`, ``duration`` seconds, ``until_idle`` seconds without
        an event, or ``stop_flag()`` returning true (polled every 0.1 s)."""
        end = None if duration is None else time.monotonic() + duration
        last_event = time.monotonic()
        next_flush = time.monotonic() + self.flush_interval
        next_cp = None if self.every_s is None else time.monotonic() + self.every_s
        next_poll = time.monotonic() + (self.poll or 0.0)
        assert self._stop is not None
        while not self._stop.is_set():
            if stop_flag is not None and stop_flag():
                break
            now = time.monotonic()
            if end is not None and now >= end:
                break
            before = len(self.events)
            if self._watch is not None:
                wait = max(0.0, min(0.1, next_flush - now))
                paths, overflow, _errors = await _thread(self._watch.next_batch, wait, 50_000)
                if paths:
                    # A rename arrives as two notifications: take its other half too.
                    more, over2, _ = await _thread(self._watch.next_batch, 0.01, 50_000)
                    paths += more
                    overflow = overflow or over2
                dirty = {r for r in (self._rel(p) for p in paths) if r is not None}
                if overflow:
                    self.overflows += 1
                    await self.reconcile()
                await self.process(dirty)
            else:
                import anyio

                await anyio.sleep(max(0.0, min(0.1, next_poll - now)))
                if time.monotonic() >= next_poll:
                    await self.reconcile()
                    next_poll = time.monotonic() + (self.poll or 1.0)
            if self.influx or self.deferred:
                await self.process(set(self.influx))
            now = time.monotonic()
            if len(self.events) > before:
                last_event = now
            if until_idle is not None and now - last_event >= until_idle:
                break
            due_cp = (next_cp is not None and now >= next_cp) or (
                self.every_n is not None and self.since_checkpoint >= self.every_n
            )
            if due_cp:
                await self.checkpoint()
                if self.every_s is not None:
                    next_cp = time.monotonic() + self.every_s
            if now >= next_flush:
                await self.flush()
                next_flush = time.monotonic() + self.flush_interval

    async def seal(self) -> dict[str, Any]:
        """Record what is left, take a final checkpoint, flush, write the sealed record and
        journal the final checkpoint. Returns the summary."""
        if self._sealed:
            return self.summary
        self._sealed = True
        try:
            if self._watch is not None:
                paths, overflow, _ = self._watch.next_batch(0.05, 1_000_000)
                self.overflows += int(overflow)
                await self.process({r for r in (self._rel(p) for p in paths) if r is not None})
                self._watch.close()
            await self.checkpoint(final=True)
            await self.flush()
            assert self.prev is not None
            final = self.checkpoint_ids[-1]
            self.summary = {
                "schema": 1,
                "name": self.name,
                "source": self.root,
                "host": socket.gethostname(),
                "started": self.started,
                "duration": round(self._t() / 1e6, 6),
                "segments": self.seq,
                "events": sum(self.counts.values()),
                "by_kind": dict(sorted(self.counts.items())),
                "bytes": self.bytes_stored,
                "checkpoints": len(self.checkpoint_ids),
                "final_checkpoint": final,
                "overflows": self.overflows,
                "tag": self.tag,
            }
            body = json.dumps(self.summary, sort_keys=True).encode() + b"\n"
            await keys_of(self.store).put_if_absent(
                sealed_key(self.name, self.seq - 1, self.prev), body
            )
            if self.journal:
                from .._snapdir import manifest_size
                from ..lifecycle.ops import record_push

                m = await self.store.get_manifest(final)
                logical, _, nfiles, _ = manifest_size(m)
                await record_push(
                    self.store,
                    final,
                    path=self.root,
                    files=nfiles,
                    nbytes=logical,
                    labels=(f"recording:{self.name}",),
                )
            if self.tag is not None:
                from .naming import tag_final

                await tag_final(self.store, self.tag, self.name, final)
            return self.summary
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- the model -----------------------------------------------------------------

    def _t(self) -> int:
        return int((time.monotonic() - self.t0) * 1e6)

    def _rel(self, p: str | os.PathLike[str]) -> str | None:
        s = os.fspath(p)
        if s == self.root:
            return ""
        if not s.startswith(self.root + os.sep):
            return None
        return s[len(self.root) + 1 :]

    def _emit(self, kind: str, path: str, **fields: Any) -> None:
        ev: dict[str, Any] = {"t": self._t(), "k": kind}
        if kind != "checkpoint":
            ev["p"] = path
        ev.update(fields)
        self.events.append(ev)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind != "checkpoint":
            self.since_checkpoint += 1

    def _keep(self, rel: str) -> str:
        base = rel.rsplit("/", 1)[-1]
        ext = _ext(base.rsplit(".", 1)[-1]) if "." in base else ""
        if any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(base, g) for g in self.placeholder):
            return "none"
        if ext and ext in self.binary_ext:
            return "none"
        if ext and ext in self.text_ext:
            return "all"
        return self.content

    def _forget(self, rel: str) -> None:
        """Drop ``rel`` and, for a directory, everything below it from the model."""
        self.model.pop(rel, None)
        pre = rel + "/"
        for k in [k for k in self.model if k.startswith(pre)]:
            del self.model[k]

    def _move(self, src: str, dst: str) -> None:
        pre = src + "/"
        moved = {
            dst + k[len(src) :]: v for k, v in self.model.items() if k == src or k.startswith(pre)
        }
        self._forget(src)
        self.model.update(moved)

    async def process(self, dirty: set[str], *, final: bool = False) -> None:
        """Look at every dirty path and record what changed (``final``: vanished paths are
        deleted now, not kept a moment for the other half of a rename)."""
        from .._snapdir import recording_capture

        dirty = dirty | set(self.deferred)
        if not dirty:
            return
        # New directories may have filled before their watch existed: look inside.
        for rel in list(dirty):
            if rel and rel not in self.model:
                full = os.path.join(self.root, rel)
                if os.path.isdir(full) and not os.path.islink(full):  # noqa: ASYNC240
                    for base, dirs, files in os.walk(full):
                        r = base[len(self.root) + 1 :]
                        dirty.update(f"{r}/{n}" for n in dirs + files)
        todo: list[tuple[str, tuple[int, str] | None, str]] = []
        for rel in sorted(dirty, key=lambda r: (r.count("/"), r)):
            if rel == "":
                st = os.lstat(self.root)
                mode = st.st_mode & 0o7777
                if self.model.get("", ("d", None))[1] != mode:
                    self.model[""] = ("d", mode, st.st_ino)
                    self._emit("chmod", "", m=mode)
                continue
            prev = self.model.get(rel)
            prev_arg = (prev[2], prev[3]) if prev is not None and prev[0] == "f" else None
            todo.append((rel, prev_arg, self._keep(rel)))

        def capture_all() -> dict[str, tuple[Any, ...]]:
            # One worker-thread hop for the whole batch, not one per path.
            return {
                rel: recording_capture(self.root, rel, prev_arg, self._tmp, keep)
                for rel, prev_arg, keep in todo
            }

        found = await _thread(capture_all)
        gone = [r for r, f in found.items() if f[0] in ("missing", "other") and r in self.model]
        by_ino = {self.model[r][-1]: r for r in gone}
        for rel in sorted(found, key=lambda r: (r.count("/"), r)):
            kind, mode, ino, size, full, same, placeholder, staged = found[rel]
            prev = self.model.get(rel)
            if kind == "influx":
                self.influx[rel] = self.influx.get(rel, 0) + 1
                continue
            self.influx.pop(rel, None)
            if kind in ("missing", "other"):
                continue
            if kind == "unreadable":
                if not self.skip_unreadable:
                    self._emit("unreadable", rel, e=int(size))
                continue
            want = "d" if kind == "dir" else "f"
            src = by_ino.get(ino)
            src = src if src is not None and src in self.model else None
            same_thing = src is not None and (
                self.model[src][0] == want == "d"
                or (want == "f" and self.model[src][0] == "f" and self.model[src][3] == full)
            )
            if prev is None and src is not None and same_thing:
                # Same inode under a new name: a rename (of a file or a whole directory).
                self._emit("rename", src, d=rel)
                self._move(src, rel)
                gone.remove(src)
                del by_ino[ino]
                prev = self.model.get(rel)
            if prev is not None and prev[0] != want:
                self._emit("delete", rel)
                self._forget(rel)
                prev = None
            if kind == "dir":
                if prev is None:
                    self._emit("mkdir", rel, m=mode)
                elif prev[1] != mode:
                    self._emit("chmod", rel, m=mode)
                self.model[rel] = ("d", mode, ino)
                continue
            self._file_event(rel, prev, mode, size, full, same, placeholder, staged)
            self.model[rel] = ("f", mode, size, full, ino)
        now = time.monotonic()
        for rel in list(gone):
            # A rename may arrive as two batches: keep a vanished path for a moment.
            if rel in self.model and not final and self.deferred.setdefault(rel, now + 0.2) > now:
                gone.remove(rel)
            else:
                self.deferred.pop(rel, None)
        for rel in sorted(gone, key=lambda r: (-r.count("/"), r)):
            if rel in self.model and not any(rel.startswith(g + "/") for g in gone):
                self._emit("delete", rel)
                self._forget(rel)
            elif rel in self.model:
                self._forget(rel)
        for rel in [r for r in self.deferred if r not in self.model]:
            del self.deferred[rel]  # renamed with an ancestor, or gone with one

    def _file_event(
        self,
        rel: str,
        prev: _Entry | None,
        mode: int,
        size: int,
        full: str,
        same: bool,
        placeholder: bool,
        staged: tuple[str, int, str, int] | None,
    ) -> None:
        if prev is not None and prev[3] == full and prev[2] == size:
            if prev[1] != mode:
                self._emit("chmod", rel, m=mode)
            return
        if placeholder:
            self._emit("placeholder", rel, m=mode, s=size, f=full)
            return
        if staged is None:  # empty file (nothing was staged)
            staged = (_EMPTY, 0, "", 0)
        digest, n, path, offset = staged
        if path:
            self.staged[digest] = (path, n)
        if prev is None:
            self._emit("create", rel, m=mode, h=digest, s=size)
            return
        if offset > 0:
            self._emit("append", rel, h=digest, o=offset, s=size, f=full)
        elif size == 0:
            self._emit("truncate", rel, s=0, f=_EMPTY)
        else:
            self._emit("write", rel, m=mode, h=digest, s=size)
            return
        if prev[1] != mode:
            self._emit("chmod", rel, m=mode)

    async def reconcile(self) -> None:
        """Walk the whole tree (through the stat cache) and record every difference from
        the model."""
        import anyio

        from .._manifest import manifest

        for attempt in range(5):
            try:
                m = await manifest(self.root)
                break
            except InFluxError:  # a busy writer: the walk saw a file go; look again
                await anyio.sleep(0.02 * (attempt + 1))
        else:
            return  # still busy: the next reconciliation (or the seal's) catches up
        dirty = set(self.model) - {""}
        for e in m.entries:
            rel = e.path[2:].rstrip("/")
            if not rel:
                continue
            had = self.model.get(rel)
            is_dir = str(e.path_type) == "Directory"
            if had is None or had[1] != e.permissions or (not is_dir and had[3] != e.checksum):
                dirty.add(rel)
            else:
                dirty.discard(rel)
        dirty.add("")
        await self.process(dirty, final=True)

    async def checkpoint(self, *, final: bool = False) -> None:
        """Push the tree as a snapshot, record how it differs from the model (its objects
        are in the store already), then the checkpoint event."""
        from .._push import push_with_stats

        if self._watch is not None or self.poll is not None:
            await self.reconcile()
        stats = None
        for attempt in range(5 if not final else 50):
            try:
                stats = await push_with_stats(self.root, self.store, journal=False)
                break
            except InFluxError:
                import anyio

                await anyio.sleep(0.05 * (attempt + 1))
        if stats is None:
            return  # the tree never held still; the next checkpoint tries again
        sid = str(stats["id"])
        m = await self.store.get_manifest(sid)
        seen: set[str] = set()
        for e in m.entries:
            rel = e.path[2:].rstrip("/")
            seen.add(rel)
            had = self.model.get(rel)
            if str(e.path_type) == "Directory":
                if not rel:
                    if had is None or had[1] != e.permissions:
                        self._emit("chmod", "", m=e.permissions)
                elif had is None or had[0] != "d":
                    if had is not None:
                        self._emit("delete", rel)
                        self._forget(rel)
                    self._emit("mkdir", rel, m=e.permissions)
                elif had[1] != e.permissions:
                    self._emit("chmod", rel, m=e.permissions)
                ino = had[2] if had is not None and had[0] == "d" else 0
                self.model[rel] = ("d", e.permissions, ino)
                continue
            if had is not None and had[0] == "f" and had[3] == e.checksum:
                if had[1] != e.permissions:
                    self._emit("chmod", rel, m=e.permissions)
                self.model[rel] = ("f", e.permissions, e.size, e.checksum, had[4])
                continue
            if had is not None and had[0] == "d":
                self._emit("delete", rel)
                self._forget(rel)
                had = None
            kind = "create" if had is None else "write"
            self._emit(kind, rel, m=e.permissions, h=e.checksum, s=e.size)
            ino = had[4] if had is not None else 0
            self.model[rel] = ("f", e.permissions, e.size, e.checksum, ino)
        for rel in sorted((r for r in self.model if r not in seen), key=lambda r: -r.count("/")):
            if rel in self.model:
                self._emit("delete", rel)
                self._forget(rel)
        self._emit("checkpoint", "", id=sid)
        self.checkpoint_ids.append(sid)
        self.since_checkpoint = 0

    async def flush(self) -> None:
        """Store the staged contents, then one segment with the buffered events, then its
        head key (create-only): the order that makes every head name a complete segment."""
        from .._snapdir import blake3_hex, recording_encode_segment
        from ..stores._base import ObjectPut

        if not self.events:
            return
        puts = [ObjectPut(d, p, n) for d, (p, n) in self.staged.items()]
        if puts:
            await self.store.put_objects(puts)
            self.bytes_stored += sum(n for _, (_, n) in self.staged.items())
            for _, (p, _) in self.staged.items():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
            self.staged.clear()
        meta = None
        if self.seq == 0:
            meta = json.dumps(
                {
                    "name": self.name,
                    "source": self.root,
                    "host": socket.gethostname(),
                    "started": self.started,
                }
            )
        lines = [json.dumps(e, separators=(",", ":")) for e in self.events]
        seg = recording_encode_segment(self.name, self.seq, self.prev, meta, lines)
        digest = blake3_hex(seg)
        path = os.path.join(self._tmp, f"segment-{self.seq}")
        with open(path, "wb") as f:  # noqa: ASYNC230 (small, local)
            f.write(seg)
        await self.store.put_object(digest, path, len(seg))
        os.unlink(path)
        await keys_of(self.store).put_if_absent(head_key(self.name, self.seq, digest), b"")
        self.prev = digest
        self.seq += 1
        self.events.clear()


def _ext(e: str) -> str:
    return e.strip().lstrip(".").lower()


def _ok_name(name: str) -> bool:
    try:
        check_name(name)
    except InvalidArgumentError:
        return False
    return True


async def _thread(fn: Any, *args: Any) -> Any:
    import anyio

    return await anyio.to_thread.run_sync(fn, *args)
