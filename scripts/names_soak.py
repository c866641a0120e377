"""The names soak, at the issue's counts, on every backend (file, S3/SeaweedFS,
GCS/fake-gcs-server, B2 simulator; all on loopback):

* 8 concurrent ``tag`` of one version with different ids, 50 trials: exactly one winner,
  seven CONFLICT, the stored record is the winner's; then 8 racers with one id all succeed;
* 8 writers making 200 ``channel set --expect`` moves (25 each), re-reading the head after
  every conflict: one linear log 1..N, every reported move in it exactly once;
* the same with ``--expect-seq`` (a compare-and-swap on the move number): also, each move
  is the one right after the move its writer read.

The checks are the suite's (tests/test_names.py: ``race_tags``, ``race_channel``;
tests/test_names_channel_seq.py: ``race_channel_seq``) at full size. Prints one line per
backend and exits 1 if any check failed.

    python scripts/names_soak.py [--backends file,s3,gs,b2] [--trials 50] [--moves 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


@contextmanager
def backend(scheme: str, work: Path) -> Iterator[str]:
    """A fresh store URI on ``scheme``'s loopback server, configured by environment."""
    if scheme == "file":
        yield f"file://{work}/file-store"
        return
    if scheme == "s3":
        from servers.seaweed import start_seaweedfs

        s3 = start_seaweedfs(work / "seaweedfs")
        try:
            s3.use_env(os.environ.__setitem__, os.environ.__delitem__)
            client = s3.client()
            client.create_bucket(Bucket="names-soak")
            client.close()
            yield "s3://names-soak/soak"
        finally:
            s3.stop()
    elif scheme == "gs":
        from servers.fakegcs import EMULATOR_ENV, start_fake_gcs

        gcs = start_fake_gcs(work / "fake-gcs")
        try:
            for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
                os.environ.pop(name, None)
            os.environ[EMULATOR_ENV] = gcs.endpoint
            gcs.client().create_bucket("names-soak")
            yield "gs://names-soak/soak"
        finally:
            gcs.stop()
    elif scheme == "b2":
        from servers.b2sim import start_b2_simulator

        b2 = start_b2_simulator()
        try:
            os.environ.update(
                B2_APPLICATION_KEY_ID=b2.key_id,
                B2_APPLICATION_KEY=b2.app_key,
                SNAPDIR_B2_REALM=b2.realm_url,
            )
            yield f"b2://{b2.bucket_name}/soak"
        finally:
            b2.stop()
    else:
        raise SystemExit(f"unknown backend {scheme!r}")


def timed(what: str, fn: Callable[[], object]) -> tuple[bool, str]:
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception:  # a failed check: reported, and the next one runs
        traceback.print_exc()
        return False, f"{what}: FAILED after {time.perf_counter() - t0:.1f}s"
    return True, f"{what}: ok in {time.perf_counter() - t0:.1f}s" + (
        f" ({out})" if out is not None else ""
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="file,s3,gs,b2")
    p.add_argument("--trials", type=int, default=50, help="racing-tag trials per backend")
    p.add_argument("--racers", type=int, default=8)
    p.add_argument("--moves", type=int, default=200, help="channel moves in all, per backend")
    args = p.parse_args()

    import snapdir
    from storeutil import run, write
    from test_names import race_channel, race_tags
    from test_names_channel_seq import race_channel_seq

    ok = True
    with tempfile.TemporaryDirectory(prefix="names-soak-") as tmp:
        work = Path(tmp)
        os.environ["SNAPDIR_CACHE_DIR"] = str(work / "cache")
        trees = []
        for i in range(args.racers):
            write(work / f"tree{i}" / "data.txt", f"content {i}\n")
            trees.append(work / f"tree{i}")
        for scheme in args.backends.split(","):
            with backend(scheme, work) as root:
                store = f"{root}-{uuid.uuid4().hex[:6]}"

                async def push_all(store: str = store) -> list[str]:
                    return [await snapdir.push(t, store) for t in trees]

                ids = run(push_all)
                good, line = timed(
                    f"{scheme}: {args.racers} racing tags x {args.trials} trials",
                    lambda s=store, i=ids: race_tags(s, i, args.trials),  # type: ignore[misc]
                )
                ok = ok and good
                print(line, flush=True)
                per = max(1, args.moves // args.racers)
                good, line = timed(
                    f"{scheme}: {args.racers} writers x {per} channel --expect moves",
                    lambda s=store, i=ids, n=per: f"log of {race_channel(s, i, n)} moves, linear",  # type: ignore[misc]
                )
                ok = ok and good
                print(line, flush=True)
                good, line = timed(
                    f"{scheme}: {args.racers} writers x {per} channel --expect-seq moves",
                    lambda s=store, i=ids, n=per: (  # type: ignore[misc]
                        f"log of {race_channel_seq(s, i, n)} moves, linear"
                    ),
                )
                ok = ok and good
                print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
