"""The run operations: ``run_command`` (and ``capture``), ``rerun``, listing and lineage.

A run, in order: the context is captured (:mod:`.capture`) and the inputs are pushed;
with ``reuse`` the run cache is asked first; the command runs (:mod:`.child`); its
captured stdout, stderr, git diff and pre-command outputs are uploaded as objects, the
outputs are pushed, the record is written with its index keys (:mod:`.layout`) and every
output's journal entry says which run made it. Paths (inputs, outputs, the working
directory) are recorded relative to the project root and must lie inside it: a record names
no machine's layout, and a rerun can place every path inside its scratch directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgumentError
from ..stores._base import put_manifest_of, to_thread
from .capture import Context, capture, find_root
from .config import RunConfig, load_config
from .layout import CACHE, IN, OUT, RERUN, read_many, records_under, write_record
from .record import RunRecord, canonical, check_rel_path, resource, statement
from .secrets import Masker, flag_values, mask_argv, record_env, secret_values

if TYPE_CHECKING:
    from ..lifecycle.intents import Guard, Reupload
    from ..stores import Store
    from .child import ChildResult

__all__ = ["RerunResult", "RunResult", "capture_context", "rerun", "run_command"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


class RunResult:
    """What :func:`run_command` did. ``status`` is the child's exit status (128 + signal
    when a signal killed it); ``reused`` says the run cache answered and the command did
    not run (``record`` is then the cached run's record)."""

    __slots__ = (
        "exit_code",
        "input_refs",
        "inputs",
        "journal",
        "outputs",
        "record",
        "reused",
        "signal",
        "status",
        "stderr",
        "stdout",
        "tag",
    )  # fmt: skip

    def __init__(self, rec: RunRecord, *, reused: bool = False, journal: Sequence[str] = ()):
        self.record = rec.digest
        self.status = rec.status if rec.status is not None else 0
        self.exit_code = rec.exit_code
        self.signal = rec.signal
        self.inputs = dict(rec.inputs)
        self.input_refs = {p: dict(a) for p, a in rec.input_refs.items()}
        self.outputs = dict(rec.outputs)
        self.stdout = rec.stdout.digest if rec.stdout else None
        self.stderr = rec.stderr.digest if rec.stderr else None
        self.reused = reused
        self.journal = list(journal)
        #: the release the output was tagged (``run --tag``), canonical, or None
        self.tag: str | None = None

    def __repr__(self) -> str:
        return f"RunResult(record={self.record!r}, status={self.status}, reused={self.reused})"

    def to_json(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "inputs": [
                {"path": p, "id": i, **self.input_refs.get(p, {})} for p, i in self.inputs.items()
            ],
            "outputs": [{"path": p, "id": i} for p, i in self.outputs.items()],
            "stdout": self.stdout,
            "stderr": self.stderr,
            "reused": self.reused,
            "journal": self.journal,
            "tag": self.tag,
        }


class _Plan:
    """What a run or capture needs before anything runs: paths, environment, masker."""

    def __init__(
        self,
        *,
        cwd: str | os.PathLike[str] | None,
        store: str | Store | None,
        inputs: Inputs,
        outputs: Sequence[str | os.PathLike[str]],
        env: Sequence[str],
        redact: Sequence[str],
        pre: Sequence[str],
        files: Sequence[str],
        git: bool | None,
        config: bool | RunConfig,
        environ: Mapping[str, str] | None,
    ) -> None:
        self.cwd = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
        self.root = find_root(self.cwd)
        cfg = config if isinstance(config, RunConfig) else None
        if cfg is None:
            cfg = load_config(self.root) if config else RunConfig()
        self.environ = dict(os.environ if environ is None else environ)
        chosen = store if store is not None else cfg.store
        if chosen is None:
            raise InvalidArgumentError(
                "no store given: pass store= (--store), set SNAPDIR_STORE, or set store in "
                "snapdir.toml",
                code="INVALID_STORE",
            )
        from .._common import open_wrapped

        self.store = open_wrapped(chosen)
        self.rel_cwd = self.rel(self.cwd, "working directory")
        self.inputs: list[str] = []
        #: input path -> the ref it is pulled from (``--in PATH=REF``)
        self.refs: dict[str, str] = {}
        #: input path -> what its ref resolved to (the record's input annotations)
        self.input_refs: dict[str, dict[str, str]] = {}
        for path, ref in _split_inputs(inputs):
            rel = self.rel(os.path.join(self.cwd, path), "--in")
            if rel in self.inputs:
                raise InvalidArgumentError(f"--in {path}: given twice")
            self.inputs.append(rel)
            if ref is not None:
                self.refs[rel] = ref
        self.outputs = [self.rel(os.path.join(self.cwd, os.fspath(p)), "--out") for p in outputs]
        self.extra = [*cfg.redact, *redact]
        self.allow = [*cfg.env, *env]
        self.pre = [*cfg.pre, *pre]
        self.files = [*cfg.files, *files]
        self.git = git if git is not None else cfg.git
        self.secrets = secret_values(self.environ, self.extra)
        self.masker = Masker(self.secrets)
        self.recorded_env = record_env(self.environ, self.allow, self.extra)
        self.ctx = Context()

    def add_secrets(self, values: Sequence[str]) -> None:
        if values:
            self.secrets = sorted(set(self.secrets) | set(values), key=lambda v: (-len(v), v))
            self.masker = Masker(self.secrets)

    def rel(self, path: str, what: str) -> str:
        full = os.path.normpath(os.path.abspath(path))
        rel = os.path.relpath(full, self.root)
        if not check_rel_path(rel):
            raise InvalidArgumentError(
                f"{what} {path}: must lie inside the project root {self.root} (the directory "
                "with snapdir.toml, pyproject.toml or .git)"
            )
        return rel

    def abs(self, rel: str) -> str:
        return os.path.normpath(os.path.join(self.root, rel))

    def internal(self) -> dict[str, Any]:
        return dict(self.ctx.internal)


#: What ``inputs=`` takes: paths (a string ``"PATH=REF"`` pulls ``REF`` into ``PATH``
#: first), or a mapping ``{path: ref or None}``.
Inputs = Sequence[str | os.PathLike[str]] | Mapping[str, str | None]


def _split_inputs(inputs: Inputs) -> list[tuple[str, str | None]]:
    """``(path, ref or None)`` for each input. A string is split at its first ``=``
    (a ref may hold ``=``, as in ``tool@==1.2``; a path holding one is given as a
    :class:`os.PathLike` or through the mapping form)."""
    if isinstance(inputs, (str, bytes)):
        raise InvalidArgumentError("inputs: a list of paths or a mapping, not one string")
    out: list[tuple[str, str | None]] = []
    if isinstance(inputs, Mapping):
        for path, ref in inputs.items():
            if ref is not None and (not isinstance(ref, str) or not ref.strip()):
                raise InvalidArgumentError(f"--in {path}: the ref must be a non-empty string")
            out.append((os.fspath(path), ref.strip() if ref is not None else None))
        return out
    for item in inputs:
        if isinstance(item, str) and "=" in item:
            path, _, ref = item.partition("=")
            if not path or not ref.strip():
                raise InvalidArgumentError(f"--in {item}: expected PATH or PATH=REF")
            out.append((path, ref.strip()))
        else:
            out.append((os.fspath(item), None))
    return out


def _ensure_store(store: Store) -> None:
    """A run creates a ``file://`` store as a push does (a cloud bucket must exist)."""
    if store.uri.scheme == "file":
        os.makedirs(store.uri.path, exist_ok=True)


#: A byproduct file to upload: (name in the record, local path, BLAKE3, size).
Byproduct = tuple[str, str, str, int]


def _descriptor(name: str, digest: str, size: int) -> dict[str, Any]:
    return {"name": name, "digest": {"blake3": digest}, "annotations": {"size": size}}


class _Holds:
    """The collection intents a run holds (docs/design/gc.md): one per input and output
    snapshot, from its push (or pull) until the record, and the outputs' journal entries,
    are written, and one for the byproduct objects (stdout, stderr, the git diff,
    ``--pre`` outputs) from before their upload. Pushes into a run's store skip the journal
    (the record and the entries naming the run are written at the end), so without these a
    ``gc --grace 0`` — or the default hour of grace, for a longer run — could collect them
    mid-run. A snapshot's intent is written just after its push, whose own intent it
    replaces; the gap between the two is covered by :meth:`settle`, which checks every
    object again (``everything``) and puts back what a collection removed from the local
    files it was pushed from — or, when they changed since, fails naming the snapshot (as
    a push would when its files change under it). See :func:`_holding`."""

    def __init__(self, store: Store, stack: AsyncExitStack, ttl: timedelta) -> None:
        self.store = store
        self._stack = stack
        self.ttl = ttl
        self.guards: list[Guard] = []
        self._reuploads: list[Reupload] = []

    async def _protect(self, reupload: Reupload, **what: Any) -> None:
        from ..lifecycle.intents import protect

        cm = protect(self.store, ttl=self.ttl, **what)
        self.guards.append(await self._stack.enter_async_context(cm))
        self._reuploads.append(reupload)

    async def snapshot(self, sid: str, path: str, what: str) -> None:
        """Hold snapshot ``sid`` (just pushed from, or pulled into, ``path``)."""
        from .._errors import InFluxError, NotFoundError
        from ..stores import ObjectPut

        st = self.store
        m = await st.get_manifest(sid)
        where = {c: (rel, size) for c, rel, size in m.object_sources()}

        async def reupload(objs: list[str], manifest: bool) -> None:
            try:
                puts = [ObjectPut(c, os.path.join(path, where[c][0]), where[c][1]) for c in objs]
                await st.put_objects(puts)
            except (InFluxError, OSError) as e:
                raise NotFoundError(
                    f"{what} snapshot {sid} in {st.uri} was collected while the run ran "
                    f"({len(objs)} object(s) gone) and {path} has changed since, so it "
                    f"cannot be put back ({e}): nothing was recorded, run again"
                ) from None
            if manifest:
                await put_manifest_of(st, sid, m)

        await self._protect(reupload, snapshot_id=sid, manifest=m)

    async def upload(self, files: Sequence[Byproduct]) -> None:
        """Upload the byproduct objects under an intent written before the first of
        them. Zero-size files are not uploaded (nothing to keep, and a request saved);
        with nothing to upload there is no intent either."""
        st = self.store
        src = {digest: (path, size) for _, path, digest, size in files if size}
        if not src:
            return

        async def reupload(missing: list[str], _manifest: bool) -> None:
            for digest in missing:
                await st.put_object(digest, *src[digest])

        await self._protect(reupload, objects=sorted(src))
        for digest, (path, size) in src.items():
            await st.put_object(digest, path, size)

    @asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Refresh every held intent each half TTL while the block runs (the command may
        run for longer than an intent lives): a task beside the block, stopped, and any
        refresh in flight finished, when it ends. Without an event loop (local stores
        driven by ``run_local``) nothing runs beside it; :meth:`settle` then replaces an
        old intent and checks everything."""
        from ..stores._keys import _event_loop

        if not _event_loop():
            yield
            return
        import anyio

        from ..lifecycle.intents import keep_alive

        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_alive, self.guards, self.ttl.total_seconds() / 2)
            try:
                yield
            except Exception as e:  # raised as it is, not wrapped in an exception group
                error = e
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def settle(self) -> None:
        """Just before the record is written: every intent settled, all content checked."""
        for guard, reupload in zip(self.guards, self._reuploads, strict=True):
            await guard.settle(reupload, everything=True)


@asynccontextmanager
async def _holding(store: Store, ttl: timedelta | None = None) -> AsyncIterator[_Holds]:
    """A run's intents (:class:`_Holds`), all removed when the block ends — also on an
    error or a cancellation (each removal shielded, as a push's)."""
    from ..lifecycle.intents import INTENT_TTL

    async with AsyncExitStack() as stack:
        yield _Holds(store, stack, ttl if ttl is not None else INTENT_TTL)


async def _resolve_refs(plan: _Plan) -> dict[str, str]:
    """Resolve every ``--in PATH=REF`` against the store before anything is pulled,
    pushed or run: input path -> snapshot id (and ``plan.input_refs`` filled)."""
    from .._errors import NotFoundError
    from ..names.ops import resolve

    ids: dict[str, str] = {}
    uri = plan.store.uri
    for rel, ref in plan.refs.items():
        try:
            r = await resolve(plan.store, ref)
            if not await plan.store.has_manifest(r.id):
                raise NotFoundError(f"{ref} names snapshot {r.id}, whose manifest is missing")
        except NotFoundError as e:
            raise NotFoundError(f"--in {rel}={ref}: no such snapshot in {uri}: {e}") from None
        ids[rel] = r.id
        ann = {"ref": plan.masker.text(ref)}
        if r.name:
            ann["release"] = r.name
        if r.version:
            ann["version"] = r.version
        if r.channel:
            ann["channel"] = r.channel
        plan.input_refs[rel] = ann
    return ids


async def _place(plan: _Plan, rel: str, sid: str) -> None:
    """Pull snapshot ``sid`` into input ``rel``: into a missing or empty directory, or
    nothing at all when what is there already is that snapshot. Anything else there is
    the user's data and is left alone (:class:`ConflictError`)."""
    from .. import _manifest
    from .._errors import ConflictError
    from .._pull import pull

    path = _inside(plan.root, rel)
    there = await to_thread(_what_is_there, path)
    if there == "other":
        raise ConflictError(
            f"--in {rel}={plan.refs[rel]}: {path} exists and is not a directory (not overwritten)"
        )
    if there == "full":
        here = await _manifest.id(path)
        if here == sid:
            return
        raise ConflictError(
            f"--in {rel}={plan.refs[rel]}: {path} holds snapshot {here}, not {sid} "
            "(not overwritten: move it away, or pull the ref there yourself)"
        )
    await pull(sid, plan.store, path)


def _what_is_there(path: str) -> str:
    """``"missing"``, ``"empty"`` (a directory), ``"full"`` (a directory) or ``"other"``
    (a file, a link, anything else: never replaced)."""
    if not os.path.lexists(path):
        return "missing"
    if os.path.islink(path) or not os.path.isdir(path):
        return "other"
    return "full" if os.listdir(path) else "empty"


async def _push_inputs(plan: _Plan, holds: _Holds | None) -> list[tuple[str, str]]:
    """Every input's snapshot id: refs resolved and pulled into place, paths pushed; each
    held (``holds``) from then until the record is written."""
    from .._push import push_with_stats

    pulled = await _resolve_refs(plan)
    for rel, sid in pulled.items():
        await _place(plan, rel, sid)
        if holds is not None:  # a channel may move on, and its old snapshot be collected
            await holds.snapshot(sid, plan.abs(rel), f"input {rel}")
    out = []
    for rel in plan.inputs:
        if rel in pulled:
            out.append((rel, pulled[rel]))
            continue
        s = await push_with_stats(plan.abs(rel), plan.store, journal=False)
        if holds is not None:
            await holds.snapshot(str(s["id"]), plan.abs(rel), f"input {rel}")
        out.append((rel, str(s["id"])))
    return out


async def _push_outputs(
    plan: _Plan, holds: _Holds | None, root: str | None = None
) -> list[tuple[str, str, int, int]]:
    """Every output that exists, pushed; each held (``holds``) from then until its journal
    entry is written."""
    from .._errors import _warn
    from .._push import push_with_stats

    out = []
    base = root or plan.root
    missing = []
    for rel in plan.outputs:
        path = _inside(base, rel)
        if not _exists(path):
            missing.append(f"output {rel} was not created by the command (not recorded)")
            continue
        s = await push_with_stats(path, plan.store, journal=False)
        if holds is not None:
            await holds.snapshot(str(s["id"]), path, f"output {rel}")
        out.append((rel, str(s["id"]), int(s["files"]), int(s["bytes"])))
    if missing:
        _warn(missing)
    return out


def cache_key(plan: _Plan, argv: Sequence[str], inputs: Sequence[tuple[str, str]]) -> str:
    """The run-cache key: BLAKE3 of the command line (masked), the working directory, the
    input ids, the allowlisted environment (secret values only by length: the key is
    public and must not let anyone test guesses of a secret) and the executable's digest."""
    from .._snapdir import blake3_hex

    return blake3_hex(
        canonical(
            {
                "argv": mask_argv(argv, plan.masker),
                "cwd": plan.rel_cwd,
                "inputs": sorted(inputs),
                "outputs": sorted(plan.outputs),
                "env": plan.recorded_env,
                "executable": plan.ctx.exe_digest,
            }
        )
    )


def _capture(plan: _Plan, tmpdir: str, argv0: str | None) -> None:
    plan.ctx = capture(
        cwd=plan.cwd,
        env=plan.environ,
        recorded_env=plan.recorded_env,
        git=plan.git,
        pre=plan.pre,
        files=plan.files,
        tmpdir=tmpdir,
        masker=plan.masker,
        argv0=argv0,
    )


async def _byproducts(plan: _Plan) -> list[Byproduct]:
    """The git diff and the pre-command outputs, hashed (uploaded by :meth:`_Holds.upload`)."""
    from .capture import file_digest

    named = [("git-diff", plan.ctx.diff_path)] if plan.ctx.diff_path is not None else []
    named += [(f"pre-{i}", p) for i, p in enumerate(plan.ctx.pre_outputs)]
    out = []
    for name, path in named:
        digest, size = await to_thread(file_digest, path)
        out.append((name, path, digest, size))
    return out


def _streams(child: ChildResult) -> list[Byproduct]:
    assert child.stdout is not None
    assert child.stderr is not None
    return [(n, c.path, c.digest, c.size) for n, c in (("stdout", child.stdout),
                                                       ("stderr", child.stderr))]  # fmt: skip


def _version() -> str:
    from .._snapdir import version

    return version()


async def _journal(
    plan: _Plan, rec: RunRecord, pushed: Sequence[tuple[str, str, int, int]]
) -> list[str]:
    """One journal entry per output, naming the run (a run without outputs has none: its
    record's index key is what lists it)."""
    keys: list[str] = []
    for rel, sid, files, nbytes in pushed:
        from ..lifecycle.ops import record_push  # only when there is an output to journal

        k = await record_push(
            plan.store, sid, path=plan.abs(rel), files=files, nbytes=nbytes, run=rec.digest
        )
        if k:
            keys.append(k)
    return keys


async def _replay(store: Store, rec: RunRecord, tmpdir: str, stdout: int | None) -> None:
    """Write a cached run's stored stdout and stderr to ours (what a hit shows)."""
    for stream, fd in ((rec.stdout, stdout), (rec.stderr, 2)):
        if stream is None or not stream.size or fd is None:
            continue
        path = os.path.join(tmpdir, f"replay-{stream.digest}")
        await store.get_object(stream.digest, path)
        await to_thread(_copy_to_fd, path, fd)


def _copy_to_fd(path: str, fd: int) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _inside(root: str, rel: str) -> str:
    """``root/rel``, refused if following symbolic links already there would lead out of
    ``root`` (an input pulled earlier may hold a link a later path goes through)."""
    path = os.path.normpath(os.path.join(root, rel))
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.dirname(path) if rel != "." else path)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        from .._errors import UnsafePathError

        raise UnsafePathError(f"{rel} leads outside {root} through a symbolic link")
    return path


async def _reuse(plan: _Plan, key: str, tmpdir: str, stdout: int | None) -> RunRecord | None:
    from .._pull import pull

    candidates = await read_many(plan.store, await records_under(plan.store, f"{CACHE}{key}/"))
    wanted = sorted(plan.outputs)
    for rec in candidates:
        if rec.status != 0 or rec.cache_key != key or sorted(p for p, _ in rec.outputs) != wanted:
            continue
        for rel, sid in rec.outputs:
            await pull(sid, plan.store, plan.abs(rel), force=True, delete=True)
        await _replay(plan.store, rec, tmpdir, stdout)
        return rec
    return None


async def run_command(
    argv: Sequence[str],
    *,
    store: str | Store | None = None,
    inputs: Inputs = (),
    outputs: Sequence[str | os.PathLike[str]] = (),
    env: Sequence[str] = (),
    redact: Sequence[str] = (),
    pre: Sequence[str] = (),
    files: Sequence[str] = (),
    git: bool | None = None,
    timeout: float | None = None,
    reuse: bool = False,
    tag: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stream: bool = True,
    config: bool | RunConfig = True,
    environ: Mapping[str, str] | None = None,
    _inline: bool = False,
    _stdout: int | None = 1,
) -> RunResult:
    """Run ``argv`` and record how: inputs snapshotted and pushed, stdout and stderr
    streamed live (``stream``) and stored as objects (secrets masked), outputs pushed, a
    provenance record written and journalled (docs/format.md, "Runs"). The child's status
    is :attr:`RunResult.status`; a failing command is recorded like any other (no
    exception). ``reuse``: if the run cache has this run (same command line, working
    directory, input ids, allowlisted environment and executable), its outputs are
    materialised and the command is not run. ``config``: read ``snapdir.toml`` /
    ``[tool.snapdir]`` (or pass a :class:`RunConfig`). ``inputs``: paths, ``"path=ref"``
    strings or a mapping ``{path: ref or None}``; a ref (a release, channel, id or prefix)
    is resolved in ``store`` before anything runs and pulled into its path (missing, empty,
    or already that snapshot; anything else is :class:`ConflictError`), and the record
    keeps the ref and what it resolved to (:attr:`RunResult.input_refs`). ``tag``
    (``NAME@VERSION``): the one output is released under that name when the command
    succeeds (checked free before anything runs; :attr:`RunResult.tag`)."""
    from .child import run_child

    if not argv:
        raise InvalidArgumentError("no command given to run")
    plan = _Plan(
        cwd=cwd, store=store, inputs=inputs, outputs=outputs, env=env, redact=redact,
        pre=pre, files=files, git=git, config=config, environ=environ,
    )  # fmt: skip
    if tag is not None and len(plan.outputs) != 1:
        raise InvalidArgumentError(
            f"--tag {tag}: a release names one tree, and this run has "
            f"{len(plan.outputs)} outputs (give exactly one --out)"
        )
    plan.add_secrets(flag_values(argv))
    tmpdir = tempfile.mkdtemp(prefix="snapdir-run-")
    try:
        _capture(plan, tmpdir, argv[0])
        _ensure_store(plan.store)
        if tag is not None:
            from ..names.ops import check_version_free

            tag = await check_version_free(plan.store, tag)
        async with _holding(plan.store) as holds:
            async with holds.kept_alive():
                pushed_in = await _push_inputs(plan, holds)
                key = cache_key(plan, argv, pushed_in)
                if reuse:
                    hit = await _reuse(plan, key, tmpdir, _stdout if stream else None)
                    if hit is not None:
                        return await _release(plan, RunResult(hit, reused=True), tag)

                def go() -> ChildResult:
                    return run_child(
                        argv,
                        cwd=plan.cwd,
                        env=plan.environ,
                        secrets=plan.secrets,
                        tmpdir=tmpdir,
                        echo_stdout=_stdout if stream else None,
                        echo_stderr=2 if stream else None,
                        forward_signals=_inline,
                        timeout=timeout,
                    )

                # Inline (the CLI: signals forwarded from the main thread) the event loop
                # waits with the child, and so does the keep-alive: ``settle`` then
                # replaces the old intents and checks everything.
                child = go() if _inline else await to_thread(go)
                uploads = [*await _byproducts(plan), *_streams(child)]
                await holds.upload(uploads)
                pushed = await _push_outputs(plan, holds)
            byproducts = [_descriptor(n, d, size) for n, _, d, size in uploads]
            byproducts.append(_result(child))
            internal = plan.internal()
            internal["cacheKey"] = key
            body = statement(
                kind="run",
                argv=mask_argv(argv, plan.masker),
                cwd=plan.rel_cwd,
                internal=internal,
                inputs=pushed_in,
                input_refs=plan.input_refs,
                outputs=[(p, i) for p, i, _, _ in pushed],
                dependencies=plan.ctx.dependencies,
                started=_iso(child.started),
                finished=_iso(child.finished),
                invocation=os.urandom(16).hex(),
                byproducts=byproducts,
                version=_version(),
            )
            await holds.settle()
            rec = await write_record(plan.store, canonical(body))
            journal = await _journal(plan, rec, pushed)
        return await _release(plan, RunResult(rec, journal=journal), tag)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


async def _release(plan: _Plan, result: RunResult, tag: str | None) -> RunResult:
    """Tag the run's one output ``tag`` (``run --tag``), its release message naming the
    record, once the record and the output's journal entry exist. A failed command's
    output is not released (a warning says so): a release is a claim the tree is good."""
    if tag is None:
        return result
    from .._errors import _warn
    from ..names.ops import tag as tag_release

    if result.status != 0 or not result.outputs:
        why = f"the command exited {result.status}" if result.status else "no output"
        _warn([f"{tag} not tagged: {why} (run {result.record})"])
        return result
    (out,) = result.outputs.values()
    r = await tag_release(plan.store, tag, out, message=f"run:{result.record}")
    result.tag = f"{r.name}@{r.version}"
    return result


def _result(child: ChildResult) -> dict[str, Any]:
    return {
        "name": "result",
        "annotations": {
            "status": child.status,
            "exitCode": child.exit_code,
            "signal": child.signal,
            "durationMs": child.monotonic_ns // 1_000_000,
            "maxRssBytes": child.max_rss,
            "cpuMs": child.cpu_ns // 1_000_000,
            "timedOut": child.timed_out,
        },
    }


async def capture_context(
    *,
    store: str | Store | None = None,
    inputs: Inputs = (),
    env: Sequence[str] = (),
    redact: Sequence[str] = (),
    pre: Sequence[str] = (),
    files: Sequence[str] = (),
    git: bool | None = None,
    cwd: str | os.PathLike[str] | None = None,
    config: bool | RunConfig = True,
    kind: str = "capture",
    extra: Mapping[str, Any] | None = None,
    outputs: Sequence[str | os.PathLike[str]] = (),
    started: str | None = None,
    result: dict[str, Any] | None = None,
    pushed_inputs: Sequence[tuple[str, str]] | None = None,
    input_refs: Mapping[str, Mapping[str, str]] | None = None,
    holds: _Holds | None = None,
) -> RunResult:
    """Record the context alone, no command (``snapdir capture``); also what
    :class:`~.api.Run` writes when its block ends (``kind="track"``, its inputs pushed
    when the block started and held since in ``holds``)."""
    plan = _Plan(
        cwd=cwd, store=store, inputs=inputs, outputs=outputs, env=env, redact=redact,
        pre=pre, files=files, git=git, config=config, environ=None,
    )  # fmt: skip
    tmpdir = tempfile.mkdtemp(prefix="snapdir-capture-")
    try:
        start = started or _now()
        _capture(plan, tmpdir, None)
        _ensure_store(plan.store)
        async with AsyncExitStack() as stack:
            if holds is None:
                holds = await stack.enter_async_context(_holding(plan.store))
            if pushed_inputs is not None:
                pushed_in = list(pushed_inputs)
            else:
                pushed_in = await _push_inputs(plan, holds)
            if input_refs is not None:
                plan.input_refs = {k: dict(v) for k, v in input_refs.items()}
            uploads = await _byproducts(plan)
            byproducts = [_descriptor(n, d, size) for n, _, d, size in uploads]
            if result is not None:
                byproducts.append(_mask_json(result, plan.masker))
            await holds.upload(uploads)
            pushed = await _push_outputs(plan, holds)
            internal = plan.internal()
            if extra:
                internal.update({k: _mask_json(v, plan.masker) for k, v in extra.items()})
            body = statement(
                kind=kind,
                argv=[],
                cwd=plan.rel_cwd,
                internal=internal,
                inputs=pushed_in,
                input_refs=plan.input_refs,
                outputs=[(p, i) for p, i, _, _ in pushed],
                dependencies=plan.ctx.dependencies,
                started=start,
                finished=_now(),
                invocation=os.urandom(16).hex(),
                byproducts=byproducts,
                version=_version(),
            )
            await holds.settle()
            rec = await write_record(plan.store, canonical(body))
            journal = await _journal(plan, rec, pushed)
        return RunResult(rec, journal=journal)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _mask_json(v: Any, masker: Masker) -> Any:
    if isinstance(v, str):
        return masker.text(v)
    if isinstance(v, list):
        return [_mask_json(x, masker) for x in v]
    if isinstance(v, dict):
        return {str(k): _mask_json(x, masker) for k, x in v.items()}
    return v


class RerunResult:
    """A rerun's verdict: ``reproduced`` when every output has its recorded id;
    ``differing`` lists the paths (relative to the project root) that differ;
    ``record`` is the comparison's own record."""

    __slots__ = ("differing", "of", "outputs", "record", "reproduced", "scratch", "status")

    def __init__(self, rec: RunRecord, of: str, scratch: str) -> None:
        self.record = rec.digest
        self.of = of
        self.reproduced = bool(rec.reproduced)
        self.differing = list(rec.differing)
        self.outputs = dict(rec.outputs)
        self.status = rec.status
        self.scratch = scratch

    def to_json(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "of": self.of,
            "reproduced": self.reproduced,
            "differing": self.differing,
            "outputs": [{"path": p, "id": i} for p, i in self.outputs.items()],
            "status": self.status,
            "scratch": self.scratch,
        }


async def _manifest_map(store: Store, sid: str) -> dict[str, tuple[str, int, str, int]]:
    m = await store.get_manifest(sid)
    return {e.path: (e.path_type.name, e.permissions, e.checksum, e.size) for e in m.entries}


_DIRECTORY = "Directory"


async def _differing(store: Store, rel: str, old: str | None, new: str | None) -> list[str]:
    """The paths under output ``rel`` whose entries differ between two snapshots (a
    directory only when its own type or permissions do: its checksum changes with any
    file below it, which is listed itself)."""
    if old is None or new is None:
        return [rel]
    a = await _manifest_map(store, old)
    b = await _manifest_map(store, new)
    out = []
    for p in sorted(a.keys() | b.keys()):
        ea, eb = a.get(p), b.get(p)
        if ea == eb:
            continue
        both_dirs = ea is not None and eb is not None and ea[0] == eb[0] == _DIRECTORY
        if both_dirs and ea is not None and eb is not None and ea[1] == eb[1]:
            continue
        sub = p[2:] if p.startswith("./") else p
        sub = sub.rstrip("/")
        out.append(rel if sub in ("", ".") else f"{rel}/{sub}")
    return out or [rel]


async def rerun(
    record: str,
    *,
    store: str | Store,
    scratch: str | os.PathLike[str] | None = None,
    confirm: Callable[[RunRecord], bool] | None = None,
    stream: bool = True,
    timeout: float | None = None,
    _inline: bool = False,
    _stdout: int | None = 1,
) -> RerunResult:
    """Run a recorded command again in a scratch directory and compare its outputs.

    The record comes from a store and is untrusted: ``confirm(record)`` is asked before
    anything runs (False stops with :class:`InvalidArgumentError`); every path it names
    was checked to be relative and inside the scratch directory. Inputs are pulled by id
    into ``scratch`` (a fresh temporary directory by default, kept afterwards so the
    outputs can be looked at), the command runs in the recorded working directory under
    it with this environment plus the record's non-secret allowlisted values, the outputs
    are pushed and compared by id. The comparison is itself recorded (``kind`` rerun,
    indexed under the original)."""
    from .._common import open_wrapped
    from .._pull import pull
    from .child import run_child
    from .layout import resolve

    st = open_wrapped(store)
    found = await resolve(st, record)
    if len(found) != 1 or found[0].kind != "run":
        raise InvalidArgumentError(f"{record}: not the record of one run (kind run)")
    rec = found[0]
    if not rec.argv:
        raise InvalidArgumentError(f"{rec.digest}: the record has no command")
    if confirm is not None and not confirm(rec):
        raise InvalidArgumentError("rerun not confirmed: nothing was run", code="DECLINED")
    if scratch is None:
        root = tempfile.mkdtemp(prefix="snapdir-rerun-")
    else:
        root = os.path.abspath(os.fspath(scratch))  # noqa: ASYNC240 (no I/O)
        os.makedirs(root, exist_ok=True)
        if os.listdir(root):
            raise InvalidArgumentError(f"scratch directory {root} is not empty")
    for rel, sid in rec.inputs:
        await pull(sid, st, _inside(root, rel))
    cwd = _inside(root, rec.cwd)
    os.makedirs(cwd, exist_ok=True)
    env = dict(os.environ)
    env.update({k: v for k, v in rec.env.items() if not v.startswith("<redacted len=")})
    tmpdir = tempfile.mkdtemp(prefix="snapdir-rerun-tmp-")
    try:
        plan = _Plan(
            cwd=cwd, store=st, inputs=[], outputs=[], env=list(rec.env), redact=(), pre=(),
            files=(), git=False, config=RunConfig(), environ=env,
        )  # fmt: skip
        # Paths are relative to the scratch root, as they were to the project root.
        plan.root = root
        plan.rel_cwd = rec.cwd
        plan.outputs = [p for p, _ in rec.outputs]

        def go() -> ChildResult:
            return run_child(
                rec.argv,
                cwd=cwd,
                env=env,
                secrets=plan.secrets,
                tmpdir=tmpdir,
                echo_stdout=_stdout if stream else None,
                echo_stderr=2 if stream else None,
                forward_signals=_inline,
                timeout=timeout,
            )

        child = go() if _inline else await to_thread(go)
        uploads = _streams(child)
        byproducts = [_descriptor(n, d, size) for n, _, d, size in uploads]
        byproducts.append(_result(child))
        async with _holding(st) as holds:
            await holds.upload(uploads)
            pushed = await _push_outputs(plan, None, root)
            new = {p: i for p, i, _, _ in pushed}
            differing: list[str] = []
            for rel, old in rec.outputs:
                if new.get(rel) != old:
                    differing += await _differing(st, rel, old, new.get(rel))
            reproduced = not differing and child.status == (rec.status or 0)
            byproducts.append(
                {
                    "name": "rerun",
                    "annotations": {
                        "of": rec.digest, "reproduced": reproduced, "differing": differing,
                    },
                }
            )  # fmt: skip
            body = statement(
                kind="rerun",
                argv=rec.argv,
                cwd=rec.cwd,
                internal={**plan.internal(), "env": rec.env},
                inputs=rec.inputs,
                input_refs=rec.input_refs,
                outputs=[(p, i) for p, i, _, _ in pushed],
                dependencies=[resource("rerun-of", "blake3", rec.digest)],
                started=_iso(child.started),
                finished=_iso(child.finished),
                invocation=os.urandom(16).hex(),
                byproducts=byproducts,
                version=_version(),
            )
            await holds.settle()
            made = await write_record(st, canonical(body))
        return RerunResult(made, rec.digest, root)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


async def list_runs(
    store: str | Store, *, since: datetime | str | None = None
) -> list[tuple[RunRecord, datetime]]:
    """Every run record, newest first (by the store's time); ``since`` as for ``ls``."""
    from .._common import open_wrapped
    from ..lifecycle.ops import _since
    from .layout import keystore, list_records

    st = open_wrapped(store)
    when, back = _since(since) if since is not None else (None, None)
    names = await list_records(st)
    if back is not None:
        when = back.before(await keystore(st).store_time())
    if when is not None:
        names = [(d, t) for d, t in names if t >= when]
    times = dict(names)
    return [(r, times[r.digest]) for r in await read_many(st, [d for d, _ in names])]


class Lineage:
    """A lineage graph: trees (snapshot ids) and runs (records), and edges
    ``input tree -> run -> output tree``."""

    def __init__(self, start: str) -> None:
        self.start = start
        self.runs: dict[str, RunRecord] = {}
        self.edges: set[tuple[str, str]] = set()

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.start,
            "runs": [self.runs[d].summary() for d in sorted(self.runs)],
            "edges": [{"from": a, "to": b} for a, b in sorted(self.edges)],
        }

    def dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;"]
        trees = {x for e in self.edges for x in e if x not in self.runs} | {self.start}
        for t in sorted(trees):
            style = ", style=bold" if t == self.start else ""
            lines.append(f'  "{t}" [shape=folder, label="{t[:12]}"{style}];')
        for d in sorted(self.runs):
            label = _dot_escape(" ".join(self.runs[d].argv)[:60] or self.runs[d].kind)
            lines.append(f'  "{d}" [shape=box, label="{d[:12]}\\n{label}"];')
        for a, b in sorted(self.edges):
            lines.append(f'  "{a}" -> "{b}";')
        lines.append("}")
        return "\n".join(lines) + "\n"


def _dot_escape(s: str) -> str:
    return "".join(c if c.isprintable() and c not in '"\\' else "?" for c in s)


async def lineage(
    store: str | Store, ref: str, *, up: bool = True, down: bool = True, depth: int = 64
) -> Lineage:
    """What produced tree ``ref`` (``up``: the runs that wrote it, their inputs, and so
    on) and what used it (``down``): one list per tree visited, one read per run."""
    from .._common import open_wrapped
    from .._types import SnapshotId

    st = open_wrapped(store)
    start = str(SnapshotId(ref))
    g = Lineage(start)
    for direction, enabled in (("up", up), ("down", down)):
        if not enabled:
            continue
        frontier, seen = [start], {start}
        for _ in range(depth):
            nxt: list[str] = []
            for tree in frontier:
                prefix = f"{OUT if direction == 'up' else IN}{tree}/"
                for rec in await read_many(st, await records_under(st, prefix)):
                    g.runs[rec.digest] = rec
                    for _, i in rec.inputs:
                        g.edges.add((i, rec.digest))
                    for _, o in rec.outputs:
                        g.edges.add((rec.digest, o))
                    for _, t in rec.inputs if direction == "up" else rec.outputs:
                        if t not in seen:
                            seen.add(t)
                            nxt.append(t)
            if not nxt:
                break
            frontier = nxt
    return g


async def reruns_of(store: str | Store, record: str) -> list[RunRecord]:
    """The recorded reruns of a record, newest first."""
    from .._common import open_wrapped

    st = open_wrapped(store)
    return await read_many(st, await records_under(st, f"{RERUN}{record}/"))


async def used_by(store: str | Store, sid: str) -> list[RunRecord]:
    from .._common import open_wrapped

    st = open_wrapped(store)
    return await read_many(st, await records_under(st, f"{IN}{sid}/"))
