"""The context of a run, captured before the command: platform, Python, the allowlisted
environment, git state, the output of ``--pre`` commands and the digests of ``--file``s and
of the executable. Everything here is local and cheap; nothing touches a store (the git
diff and pre-command outputs are written to temporary files, uploaded as objects later)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import InvalidArgumentError, NotFoundError
from .._redact import redact_url
from .record import resource
from .secrets import Masker

__all__ = ["Context", "file_digest", "find_root", "git_state", "platform_info"]


def file_digest(path: str) -> tuple[str, int]:
    """BLAKE3 and size of a file, read in 1 MiB chunks."""
    from .._snapdir import Hasher

    h = Hasher()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def find_root(cwd: str) -> str:
    """The project root: the nearest directory up from ``cwd`` with ``snapdir.toml``,
    ``pyproject.toml`` or ``.git``; else ``cwd``. Paths in a record are relative to it, so
    that a record made in a checkout at one place reruns in a checkout anywhere."""
    d = os.path.abspath(cwd)
    while True:
        for marker in ("snapdir.toml", "pyproject.toml", ".git"):
            if os.path.exists(os.path.join(d, marker)):
                return d
        parent = os.path.dirname(d)
        if parent == d:
            return os.path.abspath(cwd)
        d = parent


def platform_info() -> dict[str, str]:
    """Platform facts from ``os.uname`` and ``sys`` (the ``platform`` module would cost
    milliseconds of every run's start)."""
    u = os.uname()
    v = sys.version_info
    return {
        "system": u.sysname,
        "release": u.release,
        "machine": u.machine,
        "python": f"{v.major}.{v.minor}.{v.micro}",
        "implementation": sys.implementation.name,
    }


def _git(args: Sequence[str], cwd: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "replace")


def git_state(cwd: str, tmpdir: str, masker: Masker) -> tuple[dict[str, Any], str | None]:
    """``(dependency, diff file)``: the commit, branch, remotes (credentials masked) and
    whether the work tree is dirty; the dirty diff (``git diff HEAD``, masked) written to a
    file in ``tmpdir``. ``({}, None)`` outside a git work tree."""
    head = _git(["rev-parse", "HEAD"], cwd)
    if head is None:
        return {}, None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], cwd) or "").strip()
    remotes: dict[str, str] = {}
    for line in (_git(["remote", "-v"], cwd) or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] not in remotes:
            remotes[parts[0]] = masker.text(redact_url(parts[1]))
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd) or ""
    diff_path = None
    if status.strip():
        diff = _git(["diff", "HEAD", "--binary"], cwd) or ""
        diff_path = os.path.join(tmpdir, "git-diff")
        with open(diff_path, "wb") as f:
            f.write(masker.feed(diff.encode()) + masker.flush())
    uri = next(iter(remotes.values()), None)
    dep = resource(
        "git",
        "gitCommit",
        head.strip(),
        uri=f"git+{uri}" if uri else None,
        annotations={"branch": branch, "dirty": bool(status.strip()), "remotes": remotes},
    )
    return dep, diff_path


def executable(argv0: str, env: Mapping[str, str], cwd: str) -> dict[str, Any] | None:
    """The executable the command runs, by path and BLAKE3 (None when it is not found:
    the run itself then reports it)."""
    path = argv0 if "/" in argv0 else shutil.which(argv0, path=env.get("PATH"))
    if path is None:
        return None
    full = os.path.realpath(os.path.join(cwd, path))
    try:
        digest, _ = file_digest(full)
    except OSError:
        return None
    return resource("executable", "blake3", digest, uri=f"file://{full}")


class Context:
    """Everything captured before a command runs."""

    def __init__(self) -> None:
        self.dependencies: list[dict[str, Any]] = []
        self.internal: dict[str, Any] = {}
        self.diff_path: str | None = None
        self.pre_outputs: list[str] = []
        self.exe_digest = ""


def capture(
    *,
    cwd: str,
    env: Mapping[str, str],
    recorded_env: dict[str, str],
    git: bool | None,
    pre: Sequence[str],
    files: Sequence[str],
    tmpdir: str,
    masker: Masker,
    argv0: str | None,
) -> Context:
    """Capture the context (see the module docstring). ``git=None``: when in a work tree."""
    ctx = Context()
    ctx.internal = {
        "platform": platform_info(),
        "host": os.uname().nodename[:253],
        "env": recorded_env,
    }
    if git is not False:
        dep, diff = git_state(cwd, tmpdir, masker)
        if dep:
            ctx.dependencies.append(dep)
            ctx.diff_path = diff
        elif git:
            raise InvalidArgumentError(f"--git: {cwd} is not in a git work tree")
    for f in files:
        p = os.path.join(cwd, f)
        try:
            digest, size = file_digest(p)
        except FileNotFoundError:
            raise NotFoundError(f"--file {f}: no such file") from None
        ctx.dependencies.append(resource(f"file:{f}", "blake3", digest, annotations={"size": size}))
    pre_results = []
    for i, cmd in enumerate(pre):
        out_path = os.path.join(tmpdir, f"pre-{i}")
        with open(out_path, "wb") as out:
            proc = subprocess.run(
                cmd,
                shell=True,
                cwd=cwd,
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
            out.write(masker.feed(proc.stdout) + masker.flush())
        ctx.pre_outputs.append(out_path)
        pre_results.append({"command": masker.text(cmd), "exitStatus": proc.returncode})
    if pre_results:
        ctx.internal["pre"] = pre_results
    if argv0 is not None:
        exe = executable(argv0, env, cwd)
        if exe is not None:
            ctx.dependencies.append(exe)
            ctx.exe_digest = exe["digest"]["blake3"]
    return ctx
