"""Session-scoped pytest fixtures for the loopback servers.

Plain fixture functions; pytest finds them wherever they are imported into a test module or
a conftest.  The functions are named ``*_fixture`` and registered under the short names, so
importing them does not clash with test parameters::

    # tests/conftest.py (tests/ has no __init__.py, so pytest puts tests/ on sys.path)
    from servers.fixtures import (  # noqa: F401
        b2_simulator_fixture,
        fake_gcs_fixture,
        seaweedfs_fixture,
    )

Fixture names: ``seaweedfs`` (:class:`~servers.seaweed.S3Server`), ``fake_gcs``
(:class:`~servers.fakegcs.GcsServer`), ``b2_simulator`` (:class:`~servers.b2sim.B2Server`).
Each server is started once per session, on the first test that asks for it, and stopped at the
end of the session.  Tests should use their own bucket or key prefix.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .b2sim import B2Server, start_b2_simulator
from .fakegcs import GcsServer, start_fake_gcs
from .seaweed import S3Server, start_seaweedfs


@pytest.fixture(scope="session", name="seaweedfs")
def seaweedfs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS ``weed mini`` with the S3 gateway on a free 127.0.0.1 port."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="fake_gcs")
def fake_gcs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """fake-gcs-server (memory backend, HTTP) on a free 127.0.0.1 port."""
    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="b2_simulator")
def b2_simulator_fixture() -> Iterator[B2Server]:
    """In-process B2 native-API server over b2sdk's RawSimulator, bucket precreated."""
    server = start_b2_simulator()
    try:
        yield server
    finally:
        server.stop()
