"""Area `lifecycle`: what listing and retiring cost on a store with many journalled snapshots.

One SeaweedFS on loopback (as the `s3` area starts it, s3bench.py) holds a store whose journal
has N entries (default 10,000).  They are planted directly, one PUT each of exactly what a push
writes (`snapdir.lifecycle.journal.entry_key` / `entry_body`), so no tree is pushed N times.
Measured, each a new process:

* `snapdir ls --store S3 --json`: wall time, peak RSS, and the S3 requests it made, counted at
  the server side by the loopback proxy (s3bench.py) in an untimed run through it; the timed
  runs talk to SeaweedFS directly.  Target: one list page per 1,000 entries plus one
  (11 for 10,000).
* `snapdir forget --keep-last 1 --dry-run --store S3 --json`: the same.
* `snapdir gc --grace 0` of a store of G objects (default 100,000) named by 200 snapshots,
  half of them forgotten (`--gc-objects`): its requests against the target "list pages +
  batched deletes + one GET per root manifest + a handful" (store time, the managed marker,
  the plan's PUT and DELETE), then a second, no-op `gc`: its list pages only (the root
  manifests are in the local cache by then, and the managed marker is read only when
  there is something to delete).
* restic 0.14 `forget --keep-last 1 --dry-run` on a repository in the same bucket with M
  snapshots (default 200: every restic snapshot is a real `restic backup`, about half a
  second each), and our `forget` on a second store with the same M entries beside it.

Needs, in the interpreter running the harness: snapdir (for the journal key format), boto3 and
SeaweedFS's `weed` (see s3bench.py).  The report goes to docs/benchmarks-extra/lifecycle.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import s3bench
from benchcore import REPO, RESTIC_PASSWORD, Completed, _without_local_paths, measure
from benchrun import (
    command_line,
    find_ours,
    fmt_s,
    machine_info,
    md_table,
    rss_mb,
    tool_version,
)

LIST_PAGE = 1000  # keys per S3 list page (ListObjectsV2's maximum and default)
RESTIC_PARALLEL = 4  # concurrent `restic backup` runs filling the repository (shared locks)


def ls_request_target(snapshots: int) -> int:
    """At most one list page per 1,000 journal keys plus one other request."""
    return -(-snapshots // LIST_PAGE) + 1


# --------------------------------------------------------------------------- the journal


def snapshot_infos(n: int, seed: str = "") -> list[Any]:
    """``n`` distinct snapshots a minute apart: 3 hosts, 7 paths, every other one labelled."""
    from snapdir.lifecycle.journal import SnapshotInfo

    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return [
        SnapshotInfo(
            _fake_id(f"{seed}{i}"),
            t0 + dt.timedelta(minutes=i),
            f"h{i % 3}",
            "ci",
            f"/build/{i % 7}",
            i,
            1000 * i,
            ("nightly",) if i % 2 else (),
        )
        for i in range(n)
    ]


def _fake_id(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()  # 64 hex digits, like a BLAKE3 id


def plant_journal(client: Any, bucket: str, prefix: str, infos: Sequence[Any]) -> None:
    """PUT one journal entry per snapshot under ``prefix`` (what a push writes)."""
    from snapdir.lifecycle.journal import entry_body, entry_key

    def put(info: Any) -> None:
        key = f"{prefix}/{entry_key(info)}"
        client.put_object(Bucket=bucket, Key=key, Body=entry_body(info, "snapdir bench"))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, infos))


# --------------------------------------------------------------------------- gc

GC_SNAPSHOTS = 200


@dataclass
class GcStore:
    forgotten: list[str]
    garbage_objects: int


def gc_request_target(
    objects: int, manifests: int, rooted: int, dead_manifests: int, dead_objects: int
) -> int:
    """What a collection may cost on S3 (1,000 keys a list page or a DeleteObjects):

    * reading the roots: the intents (a page), the journal (listed once per reading and
      shared by the runs source's liveness rule), the names, runs and recordings sources
      (a page each); twice when a plan is published (the re-check);
    * the plans (a page), ``.manifests/`` and ``.objects/``;
    * a listing of n keys takes n // 1,000 + 1 pages (SeaweedFS answers a full last page as
      truncated, so a multiple of 1,000 costs one page more);
    * the store's time (one request);
    * when collecting: the managed marker (read only when there is something to delete),
      one GET per root manifest not yet in the local cache, the store's time again and
      the plan's PUT at publication, one DeleteObjects per 1,000 keys, and a last one for
      the plan (with stale plans and expired intents)."""
    journal = rooted // LIST_PAGE + 1
    roots = 1 + journal + 3
    pages = roots + 1 + manifests // LIST_PAGE + 1 + objects // LIST_PAGE + 1
    collecting = dead_manifests + dead_objects > 0
    fixed = 1
    if collecting:
        pages += roots
        fixed += 1 + 2 + 1 + rooted
    deletes = -(-dead_manifests // LIST_PAGE) + -(-dead_objects // LIST_PAGE)
    return pages + fixed + deletes


def check_gc(manifests: int, objects: int) -> Callable[[Completed], str | None]:
    def check(run: Completed) -> str | None:
        try:
            doc = json.loads(run.stdout)
            got = (len(doc["manifests"]), doc["objects"], doc["complete"])
        except (ValueError, KeyError, TypeError):
            return f"no JSON gc report in {run.stdout.strip()[-200:]!r}"
        if got != (manifests, objects, True):
            return f"gc deleted {got[0]} manifests and {got[1]} objects, not {manifests}, {objects}"
        return None

    return check


def plant_gc_store(client: Any, bucket: str, prefix: str, objects: int, snapshots: int) -> GcStore:
    """``objects`` small objects; ``snapshots`` manifests, snapshot i naming a run of
    ``objects / snapshots`` of them; journal entries for all, then every other one's
    removed; the store marked managed. What a push writes, PUT directly."""
    from snapdir._snapdir import Manifest, blake3_hex
    from snapdir.lifecycle.journal import SnapshotInfo, entry_body, entry_key

    def key(area: str, h: str) -> str:
        return f"{prefix}/{area}/{h[0:3]}/{h[3:6]}/{h[6:9]}/{h[9:]}"

    blobs = [f"object {i}\n".encode() for i in range(objects)]
    sums = [blake3_hex(b) for b in blobs]
    per = max(1, objects // snapshots)
    pairs = zip(sums, blobs, strict=True)
    puts: list[tuple[str, bytes]] = [(key(".objects", h), b) for h, b in pairs]
    ids: list[str] = []
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    journal: list[tuple[str, bytes]] = []
    for i in range(snapshots):
        names = range(i * per, min(objects, (i + 1) * per))
        lines = [f"D 755 {'0' * 64} 0 ./"]
        lines += [f"F 644 {sums[j]} {len(blobs[j])} ./f{j}" for j in names]
        m = Manifest.parse("\n".join(lines))
        ids.append(m.id)
        puts.append((key(".manifests", m.id), (m.raw + "\n").encode()))
        info = SnapshotInfo(m.id, t0 + dt.timedelta(minutes=i), "h", "u", "/p", 1, 1)
        journal.append((f"{prefix}/{entry_key(info)}", entry_body(info, "snapdir bench")))
    forgotten = ids[::2]
    keep = [(k, b) for (k, b), sid in zip(journal, ids, strict=True) if sid not in forgotten]
    puts += keep
    puts.append((f"{prefix}/.snapdir/managed", b'{"schema": 1}\n'))

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1])

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, puts))
    dead = sum(len(range(i * per, min(objects, (i + 1) * per))) for i in range(0, snapshots, 2))
    dead += max(0, objects - snapshots * per)  # objects no snapshot names
    return GcStore(forgotten, dead)


def request_kind(head: str) -> str:
    """``"METHOD /bucket/key?query"`` (path-style S3, as the proxy logs it) -> a kind:
    ``LIST <area>`` (ListObjectsV2, by the area of its prefix), ``DeleteObjects``, or the
    method and the area of the key (``.objects``, ``.manifests``, ``.snapdir/<part>``)."""
    method, _, target = head.partition(" ")
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if method == "POST" and "delete" in params:
        return "DeleteObjects"
    parts = [p for p in urllib.parse.unquote(path).split("/") if p]
    if method == "GET" and ("list-type" in params or len(parts) <= 1):
        parts = [p for p in params.get("prefix", [""])[0].split("/") if p]
        method = "LIST"
    area = next((i for i, p in enumerate(parts) if p.startswith(".")), None)
    if area is None:
        return method if method == "LIST" or len(parts) <= 1 else f"{method} (other key)"
    name = parts[area]
    if name == ".snapdir" and area + 1 < len(parts):
        name += "/" + parts[area + 1]
    return f"{method} {name}"


def request_kinds(log: Counter[str]) -> dict[str, int]:
    """A proxy log (``"METHOD target"`` -> count) by :func:`request_kind`, largest first."""
    kinds: Counter[str] = Counter()
    for head, n in log.items():
        kinds[request_kind(head)] += n
    return dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One command, its timed runs and the requests of its counted run."""

    what: str
    tool: str
    snapshots: int
    command: str
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # user + system time of the client
    requests: int | None = None
    target: int | None = None  # at most this many requests
    error: str = ""
    kinds: dict[str, int] = field(default_factory=dict)  # of the counted run, by request_kind

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.requests is None:
            return f"<= {self.target}: not counted"
        return f"<= {self.target}: " + ("met" if self.requests <= self.target else "MISSED")

    def cells(self) -> list[str]:
        med = statistics.median(self.walls) if self.walls else None
        spread = f"{fmt_s(min(self.walls))}..{fmt_s(max(self.walls))}" if self.walls else "-"
        return [
            self.what,
            self.tool,
            f"{self.snapshots:,}",
            fmt_s(med) if self.error == "" else f"failed: {self.error}",
            spread,
            fmt_s(statistics.median(self.cpu_s)) if self.cpu_s else "-",
            rss_mb(max(self.rss_kib) * 1024) if self.rss_kib else "-",
            "-" if self.requests is None else str(self.requests),
            self.verdict,
        ]


def check_ls(snapshots: int) -> Callable[[Completed], str | None]:
    def check(run: Completed) -> str | None:
        try:
            got = len(json.loads(run.stdout)["snapshots"])
        except (ValueError, KeyError, TypeError):
            return f"no JSON snapshot list in {run.stdout.strip()[-200:]!r}"
        return None if got == snapshots else f"ls listed {got} of {snapshots} snapshots"

    return check


def host_path_groups(snapshots: int) -> int:
    """Host/path groups among the first ``snapshots`` of :func:`snapshot_infos`."""
    return len({(i % 3, i % 7) for i in range(snapshots)})


def check_forget(snapshots: int, kept_want: int) -> Callable[[Completed], str | None]:
    """`--keep-last 1` keeps the newest of each of ``kept_want`` groups, removes the rest."""

    def check(run: Completed) -> str | None:
        try:
            out = json.loads(run.stdout)
            kept, removed, dry = len(out["kept"]), len(out["removed"]), out["dry_run"]
        except (ValueError, KeyError, TypeError):
            return f"no JSON forget plan in {run.stdout.strip()[-200:]!r}"
        if dry is not True or kept != kept_want or removed != snapshots - kept_want:
            return f"forget --dry-run: kept {kept}, removed {removed}, dry_run {dry}"
        return None

    return check


def check_restic_forget(snapshots: int, kept_want: int) -> Callable[[Completed], str | None]:
    def check(run: Completed) -> str | None:
        try:
            groups = json.loads(run.stdout)
            kept = sum(len(g.get("keep") or []) for g in groups)
            removed = sum(len(g.get("remove") or []) for g in groups)
        except (ValueError, TypeError, AttributeError):
            return f"no JSON forget plan in {run.stdout.strip()[-200:]!r}"
        if kept != kept_want or removed != snapshots - kept_want:
            return f"restic forget --dry-run: kept {kept}, removed {removed}"
        return None

    return check


# --------------------------------------------------------------------------- the run


@dataclass
class Lifecycle:
    """The area's run: one server, the stores, the rows; :meth:`run` stops what it starts."""

    ours: str
    restic: str | None
    snapshots: int
    restic_snapshots: int
    rounds: int
    workdir: Path
    weed: str | None = None
    timeout: float = 1800.0
    log: Callable[[str], None] = print
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seaweed_version: str = ""
    fill_s: dict[str, float] = field(default_factory=dict)
    gc_objects: int = 0
    gc_snapshots: int = GC_SNAPSHOTS

    def run(self) -> None:
        service = s3bench.S3Service(
            self.workdir / "s3-lifecycle",
            REPO,
            weed=self.weed,
            search_dirs=(Path(self.ours).parent,),
        )
        service.start()
        try:
            self.seaweed_version = service.version
            self._run(service)
        finally:
            service.stop()
            for name in ("lifecycle-cache", "lifecycle-restic-cache"):
                shutil.rmtree(self.workdir / name, ignore_errors=True)

    def _run(self, service: s3bench.S3Service) -> None:
        direct = service.context()
        client = service.server.client()
        base = {k: v for k, v in os.environ.items() if not k.startswith("SNAPDIR_")}
        base["SNAPDIR_CACHE_DIR"] = str(self.workdir / "lifecycle-cache")  # removed after

        stores = [("store", self.snapshots)]
        if self.restic and self.restic_snapshots:
            stores.append(("store-small", self.restic_snapshots))
        for prefix, n in stores:
            self.log(f"lifecycle: planting {n:,} journal entries under {prefix}/")
            t0 = time.perf_counter()
            plant_journal(client, direct.bucket, f"lifecycle/{prefix}", snapshot_infos(n, prefix))
            self.fill_s[prefix] = time.perf_counter() - t0

        def ours(prefix: str, *args: str) -> list[str]:
            return [self.ours, *args, "--store", direct.uri(f"lifecycle/{prefix}"), "--json"]

        plans: list[tuple[Row, list[str], Callable[[Completed], str | None]]] = []
        for prefix, n in stores:
            ls_row = Row("ls", "snapdir", n, "snapdir ls --store S3 --json")
            ls_row.target = ls_request_target(n)
            plans.append((ls_row, ours(prefix, "ls"), check_ls(n)))
            forget = ours(prefix, "forget", "--keep-last", "1", "--dry-run")
            plans.append(
                (
                    Row("forget", "snapdir", n, "snapdir forget --keep-last 1 --dry-run"),
                    forget,
                    check_forget(n, host_path_groups(n)),
                )
            )
        for row, argv, check in plans:
            self._measure(row, argv, check, lambda ctx: ctx.env(base), service)

        if self.gc_objects:
            self._gc(service, client, base)

        if self.restic and self.restic_snapshots:
            self._restic(service, client, base)

    def _measure(
        self,
        row: Row,
        argv: list[str],
        check: Callable[[Completed], str | None],
        env_of: Callable[[s3bench.S3Context], dict[str, str]],
        service: s3bench.S3Service,
    ) -> None:
        """One untimed run through the counting proxy, then ``rounds`` timed direct runs."""
        self.rows.append(row)
        direct, counted = service.context(), service.context(counted=True)
        self.log(f"lifecycle: {row.tool} {row.what} on {row.snapshots:,} snapshots")
        swap = [a.replace(direct.endpoint_url, counted.endpoint_url) for a in argv]
        before, log_before = service.requests_seen(), service.requests_log()
        run = measure(swap, timeout=self.timeout, env=env_of(counted))
        row.requests = service.requests_seen() - before
        row.kinds = request_kinds(service.requests_log() - log_before)
        runs = [run]
        if not self.rounds:  # a run that changes the store is timed once, counted
            row.walls.append(run.wall_s)
            row.rss_kib.append(run.maxrss_kib)
            row.cpu_s.append(run.cpu_s)
        for _ in range(self.rounds):
            run = measure(argv, timeout=self.timeout, env=env_of(direct))
            runs.append(run)
            row.walls.append(run.wall_s)
            row.rss_kib.append(run.maxrss_kib)
            row.cpu_s.append(run.cpu_s)
        for run in runs:
            error = (
                f"{run.exit_text}: {run.stderr.strip()[-300:]}" if run.returncode else check(run)
            )
            if error:
                row.error = error.splitlines()[0][:200] if error else ""
                self.problems.append(f"{row.tool} {row.what} ({row.snapshots}): {error}")
                break

    def _gc(self, service: s3bench.S3Service, client: Any, base: dict[str, str]) -> None:
        """A store of ``gc_objects`` objects and ``gc_snapshots`` snapshots, every other
        one forgotten: the collecting ``gc`` (counted, one run: it deletes), then a no-op
        one (counted and timed)."""
        direct = service.context()
        prefix = "lifecycle/gc-store"
        self.log(f"lifecycle: planting {self.gc_objects:,} objects for gc")
        t0 = time.perf_counter()
        plant = plant_gc_store(client, direct.bucket, prefix, self.gc_objects, self.gc_snapshots)
        self.fill_s["gc-store"] = time.perf_counter() - t0
        env = {**base, "SNAPDIR_GC_DELAY": "0"}
        argv = [self.ours, "gc", "--store", direct.uri(prefix), "--grace", "0", "--json"]
        n, rooted = self.gc_snapshots, self.gc_snapshots - len(plant.forgotten)
        first = Row("gc", "snapdir", n, "snapdir gc --grace 0 --json (collects)")
        first.target = gc_request_target(
            self.gc_objects, n, rooted, len(plant.forgotten), plant.garbage_objects
        )
        saved, self.rounds = self.rounds, 0
        try:
            self._measure(
                first,
                argv,
                check_gc(len(plant.forgotten), plant.garbage_objects),
                lambda ctx: ctx.env(env),
                service,
            )
        finally:
            self.rounds = saved
        again = Row("gc (no-op)", "snapdir", n, "snapdir gc --grace 0 --json (again)")
        again.target = gc_request_target(
            self.gc_objects - plant.garbage_objects, rooted, rooted, 0, 0
        )
        self._measure(again, argv, check_gc(0, 0), lambda ctx: ctx.env(env), service)

    def _restic(self, service: s3bench.S3Service, client: Any, base: dict[str, str]) -> None:
        direct = service.context()
        n = self.restic_snapshots
        restic = self.restic
        assert restic is not None

        def repo(ctx: s3bench.S3Context) -> str:
            return f"s3:{ctx.endpoint_url}/{ctx.bucket}/lifecycle/restic"

        def env(ctx: s3bench.S3Context) -> dict[str, str]:
            return {**ctx.env(base), "RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_CACHE_DIR": cache}

        cache = str(self.workdir / "lifecycle-restic-cache")
        shutil.rmtree(cache, ignore_errors=True)
        self.log(f"lifecycle: restic init and {n:,} backups")
        t0 = time.perf_counter()
        try:
            self._fill_restic(restic, repo(direct), env(direct), n)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            self.problems.append(f"restic: filling the repository failed: {exc} {detail!r}")
            return
        self.fill_s["restic"] = time.perf_counter() - t0
        argv = [restic, "forget", "--repo", repo(direct), "--keep-last", "1"]
        argv += ["--dry-run", "--json", "--no-lock"]
        row = Row("forget", "restic", n, "restic forget --keep-last 1 --dry-run")
        self._measure(row, argv, check_restic_forget(n, min(n, 3)), env, service)

    def _fill_restic(self, restic: str, repo: str, env: dict[str, str], n: int) -> None:
        """`restic init`, then ``n`` backups of a one-file directory, 3 hosts."""
        subprocess.run(
            [restic, "init", "--repo", repo],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        with tempfile.TemporaryDirectory(prefix="snapdir-bench-restic-") as tmp:
            src = Path(tmp)
            (src / "file").write_text("one small file\n")

            def backup(i: int) -> None:
                subprocess.run(
                    [
                        *(restic, "backup", "--repo", repo, "--host", f"h{i % 3}"),
                        *("--tag", f"n{i}", "--quiet", "."),
                    ],
                    cwd=src,
                    env=env,
                    check=True,
                    capture_output=True,
                    timeout=300,
                )

            with ThreadPoolExecutor(RESTIC_PARALLEL) as pool:
                list(pool.map(backup, range(n)))


# --------------------------------------------------------------------------- report


def render(
    lc: Lifecycle,
    machine: list[tuple[str, str]],
    command: str,
    ours_version: str,
    started: dt.datetime | None = None,
    took_s: float = 0.0,
) -> str:
    restic_version = tool_version([lc.restic, "version"]) if lc.restic else "not run"
    fills = ", ".join(f"{k}: {v:.1f} s" for k, v in lc.fill_s.items())
    header = ["operation", "tool", "snapshots", "median (s)", "min..max (s)", "CPU (s)"]
    header += ["peak RSS (MB)", "requests"]
    lines = [
        "# Lifecycle benchmark: listing and retiring on a store with many snapshots",
        "",
        f"Produced by `{command}`"
        + (f" on {started:%Y-%m-%d %H:%M} UTC (took {took_s / 60:.0f} min)" if started else "")
        + ". Regenerate with the same command from the repository root; see "
        "`benches/README.md` (section *Lifecycle*).",
        "",
        f"snapdir: {ours_version}; restic: {restic_version}; SeaweedFS: {lc.seaweed_version} "
        "(`weed mini` on 127.0.0.1, path-style, one bucket).",
        "",
        f"Timed rounds per row: {lc.rounds} (a new process each; median shown), after one "
        "untimed run through the loopback counting proxy that gives the `requests` column: "
        "every HTTP request the command sent, counted at the server side. *CPU*: user + "
        "system time of the client process (median), the server's not included; the rest of "
        "the wall time is waiting for SeaweedFS, which shares the cores.",
        "",
        md_table([*header, "target"], [r.cells() for r in lc.rows], "lllrrrrrl"),
        "",
        "- Our stores: the journal entries are planted directly, one PUT each of exactly what "
        "a push writes (`entry_key` / `entry_body` of `snapdir.lifecycle.journal`); `ls` and "
        "`forget` read only the journal keys, so they cannot tell the difference. Snapshots are "
        "a minute apart over 3 hosts and 7 paths, every other one labelled.",
        f"- restic: {lc.restic_snapshots:,} snapshots, not {lc.snapshots:,}: each is a real "
        f"`restic backup` of a one-file directory ({RESTIC_PARALLEL} at a time), and 10,000 of "
        "them take far longer than the rest of this benchmark. Its repository is in the same "
        "bucket (`s3:` backend), 3 hosts; `forget --no-lock` (ours takes no lock either). "
        "Both group by host and path (their default), so `--keep-last 1` keeps the newest "
        "of each group: 21 groups in our stores of 21 or more, 3 in restic's. Our row with "
        "the same count is beside it.",
        f"- gc: {lc.gc_objects:,} objects named by {lc.gc_snapshots} snapshots (a run of "
        "objects each), every other one forgotten; planted directly (objects, manifests, "
        "journal entries, the managed marker), `SNAPDIR_GC_DELAY=0`. The collecting run is "
        "counted once and not repeated (it deletes): its time is the counted run's, through "
        "the proxy. Its target counts one GET per root manifest; the no-op run finds them "
        "in the local cache (see `gc_request_target` for what else each target counts)."
        if lc.gc_objects
        else "- gc: not run (`--gc-objects 0`).",
        *(
            f"- Requests of `{r.what}` ({r.snapshots:,} snapshots) by kind: "
            + ", ".join(f"{k}: {n}" for k, n in r.kinds.items())
            + "."
            for r in lc.rows
            if r.what.startswith("gc") and r.kinds
        ),
        f"- Filling (untimed): {fills}.",
        "",
        "## Machine",
        "",
        md_table(["", ""], machine, "ll"),
    ]
    if lc.problems:
        lines += ["", "## Problems", "", *(f"- {p}" for p in lc.problems)]
    return _without_local_paths("\n".join(lines) + "\n")


def run_area(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[str]:
    """Run the area as the options say, write its report; returns the problems found."""
    ours, note = find_ours(args.snapdir)
    if ours is None:
        return [f"lifecycle: {note}"]
    restic = shutil.which("restic") if args.restic_snapshots else None
    if args.restic_snapshots and restic is None:
        log("lifecycle: restic not on PATH: its row is left out")
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.workdir)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    lc = Lifecycle(
        ours=ours,
        restic=restic,
        snapshots=args.snapshots,
        restic_snapshots=args.restic_snapshots if restic else 0,
        rounds=args.s3_repeat,
        workdir=args.workdir,
        weed=args.weed,
        timeout=args.timeout,
        log=log,
        gc_objects=getattr(args, "gc_objects", 0) or 0,
    )
    try:
        lc.run()
    except RuntimeError as exc:
        return [f"lifecycle: {exc}"]
    version = tool_version([ours, "--version"])
    report = render(lc, machine, command_line(), version, started, time.perf_counter() - t0)
    print("\n" + report)
    args.lifecycle_out.parent.mkdir(parents=True, exist_ok=True)
    args.lifecycle_out.write_text(report)
    print(f"lifecycle report written to {args.lifecycle_out}")
    return lc.problems


# --------------------------------------------------------------------------- self-test


def self_test(workdir: Path | None = None) -> list[str]:
    """The area's pure parts always; end to end with a tiny N when snapdir, boto3, SeaweedFS
    and restic are at hand (required under SNAPDIR_TEST_NO_SKIP=1)."""
    failures: list[str] = []
    passed = 0

    def check(cond: bool, what: str) -> None:
        nonlocal passed
        if cond:
            passed += 1
        else:
            failures.append(what)
            print(f"self-test (lifecycle) FAILED: {what}", flush=True)

    check(ls_request_target(10_000) == 11, "lifecycle: 10,000 entries allow 11 requests")
    check(ls_request_target(2_500) == 4, "lifecycle: 2,500 entries allow 4 requests")
    row = Row("ls", "snapdir", 10, "", requests=3, target=2)
    check(row.verdict.endswith("MISSED"), f"lifecycle: verdict over the target ({row.verdict})")
    ls_out = Completed(0.1, 1, 0, json.dumps({"snapshots": [{}] * 3}), "")
    check(check_ls(3)(ls_out) is None, "lifecycle: ls check accepts 3 of 3")
    check("2 of 3" in (check_ls(3)(Completed(0.1, 1, 0, '{"snapshots":[{},{}]}', "")) or ""),
          "lifecycle: ls check counts")  # fmt: skip
    plan = {"dry_run": True, "kept": [{}], "removed": [{}, {}]}
    check(check_forget(3, 1)(Completed(0.1, 1, 0, json.dumps(plan), "")) is None,
          "lifecycle: forget check accepts keep 1 of 3")  # fmt: skip
    check(check_forget(4, 1)(Completed(0.1, 1, 0, json.dumps(plan), "")) is not None,
          "lifecycle: forget check counts")  # fmt: skip
    groups: list[dict[str, list[object]]] = [{"keep": [{}], "remove": [{}, {}]}]
    check(host_path_groups(25) == 21 and host_path_groups(3) == 3, "lifecycle: groups")
    check(check_restic_forget(3, 1)(Completed(0.1, 1, 0, json.dumps(groups), "")) is None,
          "lifecycle: restic forget check")  # fmt: skip
    kinds = request_kinds(Counter({
        "GET /b/p?list-type=2&prefix=p%2F.objects%2F": 3, "POST /b?delete=": 2,
        "GET /b/p/.manifests/abc/def/012/345": 1, "PUT /b/p/.snapdir/gc/1_ab": 1,
        "HEAD /b/p/.snapdir/managed": 1, "GET /b?list-type=2&prefix=p%2F.snapdir%2Fgc%2F": 1,
    }))  # fmt: skip
    check(kinds == {"LIST .objects": 3, "DeleteObjects": 2, "GET .manifests": 1,
                    "HEAD .snapdir/managed": 1, "LIST .snapdir/gc": 1, "PUT .snapdir/gc": 1},
          f"lifecycle: request kinds ({kinds})")  # fmt: skip

    end_to_end = _end_to_end_ready()
    if end_to_end:
        print(f"self-test (lifecycle): end to end skipped: {end_to_end}", flush=True)
        if os.environ.get("SNAPDIR_TEST_NO_SKIP") == "1":
            check(False, f"lifecycle: end to end cannot run: {end_to_end}")
    else:
        with tempfile.TemporaryDirectory(prefix="snapdir-bench-lifecycle-") as tmp:
            ours, _ = find_ours("snapdir")
            assert ours is not None
            lc = Lifecycle(
                ours=ours,
                restic=shutil.which("restic"),
                snapshots=25,
                restic_snapshots=3,
                rounds=1,
                workdir=Path(tmp),
                timeout=120,
                log=lambda _msg: None,
            )
            try:
                lc.run()
            except RuntimeError as exc:
                check(False, f"lifecycle: end to end: {exc}")
            check(not lc.problems, f"lifecycle: end to end problems {lc.problems}")
            by = {(r.tool, r.what, r.snapshots): r for r in lc.rows}
            ls25 = by.get(("snapdir", "ls", 25))
            check(
                ls25 is not None and ls25.requests is not None and 1 <= ls25.requests <= 2,
                f"lifecycle: ls of 25 entries counted 1-2 requests ({ls25})",
            )
            check(
                set(by) == {
                    ("snapdir", "ls", 25), ("snapdir", "forget", 25),
                    ("snapdir", "ls", 3), ("snapdir", "forget", 3), ("restic", "forget", 3),
                },
                f"lifecycle: end to end rows {sorted(by)}",
            )  # fmt: skip
            check(
                all(len(r.walls) == 1 and r.requests for r in lc.rows),
                "lifecycle: every row timed once and counted",
            )
            text = render(lc, [("CPU", "x")], "python benches/bench.py --areas lifecycle", "v")
            check(
                "| ls | snapdir | 25 |" in text and "<= 2: met" in text,
                f"lifecycle: report rows ({text[:400]!r})",
            )
    print(f"self-test (lifecycle): {passed} passed, {len(failures)} failed", flush=True)
    return failures


def _end_to_end_ready() -> str:
    """Why the end-to-end self-test cannot run here ("" when it can)."""
    try:
        import boto3  # noqa: F401
        import snapdir.lifecycle.journal  # noqa: F401
    except ImportError as exc:
        return f"cannot import {exc.name}"
    if find_ours("snapdir")[0] is None:
        return "no snapdir CLI"
    if shutil.which("restic") is None:
        return "no restic"
    return ""
