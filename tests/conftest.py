"""Test-session policy shared by every test file.

* Each test gets its own snapdir cache (``SNAPDIR_CACHE_DIR``), so nothing touches the
  user's real cache and tests cannot see each other's staged snapshots.
* With ``SNAPDIR_TEST_NO_SKIP=1`` (set by CI) a skipped test is reported as a failure: the
  real-server suites must never silently not run.
* The loopback servers (SeaweedFS, fake-gcs-server, the B2 simulator) are session fixtures
  registered here, so every test module shares one instance of each: a server per module
  would cost its start-up and its memory again in every module that uses it.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.fixtures import (  # noqa: F401  (registers the fixtures below)
    b2_simulator_fixture,
    fake_gcs_fixture,
    seaweedfs_fixture,
)

NO_SKIP = os.environ.get("SNAPDIR_TEST_NO_SKIP", "") not in ("", "0")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SNAPDIR_CACHE_DIR")
    os.environ["SNAPDIR_CACHE_DIR"] = str(cache)
    try:
        yield cache
    finally:
        if old is None:
            os.environ.pop("SNAPDIR_CACHE_DIR", None)
        else:
            os.environ["SNAPDIR_CACHE_DIR"] = old


#: The loopback-server fixtures: a test using one talks to a cloud SDK.
CLOUD_FIXTURES = frozenset({"seaweedfs", "s3_raw", "fake_gcs", "b2_simulator"})


@pytest.fixture(autouse=True)
def _collect_sdk_sockets(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used a cloud SDK, collect its garbage with ResourceWarning ignored.

    b2sdk, google-cloud-storage and botocore drop some connections without closing them (a
    thread's session when the thread ends, a socket reset by a fault proxy); the garbage
    collector closes them later, with a ResourceWarning that ``filterwarnings = error`` turns
    into a failure of whichever test happens to be running then. Collected here, they are
    closed at the end of the test that made them, which is where they belong.
    """
    yield
    if CLOUD_FIXTURES.isdisjoint(request.fixturenames):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped while SNAPDIR_TEST_NO_SKIP=1: {report.longrepr}"
