"""Area `s3`: push and pull against SeaweedFS on loopback (see s3bench.py for the server,
the request counter and rclone)."""

from __future__ import annotations

import json

from benchcore import (
    OLD,
    OLD_PULL,
    OLD_PUSH,
    OURS,
    RCLONE,
    Completed,
    Job,
    Operation,
    Ratio,
    Step,
    _dest,
    _old,
    _ours,
    _sid,
    _store,
    _tree,
    check_copy,
    check_id,
    check_pulled,
    last_id,
    mkdirs,
)

# ---- cloud (S3) operations: the S3 environment comes from job.s3 (see s3bench.py)

RCLONE_FLAGS = ("--transfers", "32", "--checkers", "32")


def _s3_env(job: Job, base: dict[str, str]) -> dict[str, str]:
    return job.cloud.env(base)


def _s3_uri(job: Job) -> str:
    return job.cloud.uri(job.s3_prefix)


def _rclone_remote(job: Job) -> str:
    return job.cloud.remote(job.s3_prefix)


def _json_output(run: Completed) -> dict[str, object] | None:
    for line in reversed(run.stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def json_requests(run: Completed) -> int | None:
    """The ``requests`` field of `snapdir push/pull --json` (our own count of S3 requests)."""
    out = _json_output(run)
    value = out.get("requests") if out else None
    return value if isinstance(value, int) else None


def check_s3_snapshot(job: Job, run: Completed, thorough: bool) -> str | None:
    """A snapdir push (ours or 1.12) printed an id; thorough: its manifest and objects exist."""
    error = check_id(job, run, thorough)
    if error or not thorough:
        return error
    sid = last_id(run.stdout)
    keys = job.cloud.keys(job.s3_prefix)
    manifests = [k for k in keys if "/.manifests/" in k]
    objects = [k for k in keys if "/.objects/" in k]
    if not objects or not any(sid and k.replace("/", "").endswith(sid) for k in manifests):
        return (
            f"s3://{job.cloud.bucket}/{job.s3_prefix} holds {len(objects)} objects and "
            f"{len(manifests)} manifests (none for {sid})"
        )
    return None


def check_s3_ours_push(job: Job, run: Completed, thorough: bool) -> str | None:
    out = _json_output(run)
    if out is None:
        return f"no JSON in the output {run.stdout.strip()[-200:]!r}"
    if out.get("files") != job.tree.files:
        return f"push --json says files={out.get('files')}, the tree has {job.tree.files}"
    if json_requests(run) is None:
        return "push --json has no integer `requests` field"
    return check_s3_snapshot(job, run, thorough)


def check_s3_rclone_push(job: Job, run: Completed, thorough: bool) -> str | None:
    if thorough:
        n = len(job.cloud.keys(job.s3_prefix))
        if n != job.tree.files:
            return f"rclone left {n} objects under {job.s3_prefix}, the tree has {job.tree.files}"
    return None


S3_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "s3-push",
        "push to S3 (SeaweedFS on loopback), a fresh prefix each run",
        (
            Step(
                OURS,
                lambda j: _ours(
                    j, "push", "--no-stat-cache", _tree(j), "--store", _s3_uri(j), "--json"
                ),
                check=check_s3_ours_push,
                env=_s3_env,
                location=_s3_uri,
                requests=json_requests,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PUSH, _tree(j), _s3_uri(j)),
                check=check_s3_snapshot,
                env=_s3_env,
                location=_s3_uri,
            ),
            Step(
                RCLONE,
                lambda j: [j.exe(RCLONE), "copy", _tree(j), _rclone_remote(j), *RCLONE_FLAGS],
                check=check_s3_rclone_push,
                env=_s3_env,
                location=_rclone_remote,
            ),
        ),
        (Ratio(OURS, OLD), Ratio(OURS, RCLONE), Ratio(OLD, RCLONE)),
        "Every run uploads the whole tree into a new, empty prefix of one bucket.",
        cloud=True,
    ),
    Operation(
        "s3-pull",
        "pull from S3 (SeaweedFS on loopback) into an empty directory",
        (
            Step(
                OURS,
                lambda j: _ours(j, "pull", _sid(j), _dest(j), "--store", _store(j), "--json"),
                setup=mkdirs("dest"),
                check=check_copy("dest"),
                needs_store=True,
                env=_s3_env,
                requests=json_requests,
            ),
            Step(
                OLD,
                lambda j: _old(j, OLD_PULL, _sid(j), _store(j), _dest(j)),
                setup=mkdirs("dest"),
                check=check_pulled,
                needs_store=True,
                env=_s3_env,
            ),
            Step(
                RCLONE,
                lambda j: [j.exe(RCLONE), "copy", _store(j), _dest(j), *RCLONE_FLAGS],
                setup=mkdirs("dest"),
                check=check_copy("dest"),
                needs_store=True,
                env=_s3_env,
                uses_id=False,
            ),
        ),
        (Ratio(OURS, OLD), Ratio(OURS, RCLONE), Ratio(OLD, RCLONE)),
        "Each tool pulls what its own push put into a prefix (filled once, untimed) into a "
        "fresh empty directory.",
        cloud=True,
        store_from="s3-push",
    ),
)
