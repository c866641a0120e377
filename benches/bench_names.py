"""Area `names`: what resolving a version range costs among 500 released versions.

A store on file:// and one on S3 (SeaweedFS on loopback, started from tests/servers) each
hold 500 release records of one name (planted directly: one create-only PUT each of exactly
what `tag` writes). Measured in this process, `REPEAT` times each:

* a **cold** resolve of `bench@>=1.2,<2` (an empty record cache): the store's small-key
  calls (target: 1 listing + 1 GET) and HTTP requests (`request_count()`), wall time;
* a **warm** resolve (the record cached): target 1 listing + 0 GETs.

    python benches/bench.py --areas names [--quick]      # -> docs/benchmarks-extra/names.md
    python benches/bench_names.py [--versions 500] [--repeat 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SPEC = "bench@>=1.2,<2"


def versions(n: int) -> list[str]:
    return [f"{1 + i // 100}.{(i // 10) % 10}.{i % 10}" for i in range(n)]


async def plant(store: str, sid: str, n: int) -> None:
    import anyio
    from snapdir.names.layout import dump, version_key
    from snapdir.stores import open_store

    st = open_store(store)
    sem = anyio.Semaphore(16)

    async def one(v: str) -> None:
        async with sem:
            doc = {"schema": 1, "id": sid, "name": "bench", "version": v, "created": "",
                   "by": "bench", "message": ""}  # fmt: skip
            await st.put_if_absent(version_key("bench", v), dump(doc))

    async with anyio.create_task_group() as tg:
        for v in versions(n):
            tg.start_soon(one, v)
    await st.aclose()


async def resolve_once(store: str) -> dict[str, Any]:
    from snapdir.names.ops import resolve
    from snapdir.stores import open_store

    st = open_store(store)
    calls = {"list": 0, "get": 0}
    inner_list, inner_get = st.list_keys, st.get_bytes

    async def list_keys(prefix: str) -> Any:
        calls["list"] += 1
        return await inner_list(prefix)

    async def get_bytes(key: str, *, max_size: int) -> bytes:
        calls["get"] += 1
        return await inner_get(key, max_size=max_size)

    st.list_keys, st.get_bytes = list_keys, get_bytes  # type: ignore[method-assign]
    t0 = time.perf_counter()
    r = await resolve(st, SPEC)
    elapsed = time.perf_counter() - t0
    requests = st.request_count()
    await st.aclose()
    return {"version": r.version, "seconds": elapsed, "requests": requests, **calls}


def measure(store: str, n: int, repeat: int, work: Path) -> dict[str, Any]:
    import anyio
    import snapdir

    tree = work / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "data.txt").write_text("bench\n")
    sid = anyio.run(snapdir.push, tree, store)
    anyio.run(plant, store, sid, n)
    out: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        runs = []
        for i in range(repeat):
            cache = work / f"cache-{phase}-{i}" if phase == "cold" else work / "cache-warm"
            os.environ["SNAPDIR_CACHE_DIR"] = str(cache)
            if phase == "warm" and i == 0:
                anyio.run(resolve_once, store)  # fill the cache
            runs.append(anyio.run(resolve_once, store))
        assert all(r["version"] == "1.9.9" for r in runs), runs
        out[phase] = {
            "lists": runs[0]["list"],
            "gets": runs[0]["get"],
            "requests": runs[0]["requests"],
            "median_ms": statistics.median(r["seconds"] for r in runs) * 1000,
        }
    return out


def report(results: dict[str, dict[str, Any]], n: int, repeat: int, command: str) -> str:
    lines = [
        "# Names: resolving a range among released versions",
        "",
        f"`resolve {SPEC}` among {n} versions of one name; median of {repeat} runs each.",
        "Cold: an empty record cache; warm: the chosen record cached. `lists`/`gets` are the",
        "store's small-key calls, `requests` its HTTP requests (`request_count()`; 0 on",
        "file://).",
        "",
        "| store | phase | lists | gets | HTTP requests | median time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for store, phases in results.items():
        for phase, r in phases.items():
            lines.append(
                f"| {store} | {phase} | {r['lists']} | {r['gets']} | {r['requests']} | "
                f"{r['median_ms']:.1f} ms |"
            )
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def run_area(args: argparse.Namespace) -> list[str]:
    """Run from benches/bench.py (``--areas names``); the problems found (targets missed)."""
    n = 100 if args.quick else 500
    repeat = 2 if args.quick else 5
    out = args.names_out
    return run(n, repeat, out, "python benches/bench.py " + " ".join(sys.argv[1:]))


def run(n: int, repeat: int, out: Path, command: str) -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from servers.seaweed import start_seaweedfs

    problems: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-names-") as tmp:
        work = Path(tmp)
        results["file://"] = measure(f"file://{work}/store", n, repeat, work)
        s3 = start_seaweedfs(work / "seaweedfs")
        try:
            s3.use_env(os.environ.__setitem__, os.environ.__delitem__)
            client = s3.client()
            client.create_bucket(Bucket="bench-names")
            client.close()
            results["s3 (SeaweedFS)"] = measure("s3://bench-names/b", n, repeat, work / "s3")
        finally:
            s3.stop()
    for store, phases in results.items():
        if (phases["cold"]["lists"], phases["cold"]["gets"]) != (1, 1):
            problems.append(f"names: cold resolve on {store}: {phases['cold']}")
        if (phases["warm"]["lists"], phases["warm"]["gets"]) != (1, 0):
            problems.append(f"names: warm resolve on {store}: {phases['warm']}")
    text = report(results, n, repeat, command)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"report written to {out}")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--versions", type=int, default=500)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-extra" / "names.md")
    a = p.parse_args()
    command = "python benches/bench_names.py " + " ".join(sys.argv[1:])
    problems = run(a.versions, a.repeat, a.out, command)
    for m in problems:
        print(f"ERROR: {m}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
