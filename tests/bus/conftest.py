"""Fixtures for the bus tests: real ``redis-server`` processes on free ports, chat servers
attached to them. Skipped with a reason when the ``redis-server`` binary is missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import CliServer

from .buskit import REDIS_SERVER, Cluster, RedisServer

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (Debian package redis-server)"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "bus":
            item.add_marker(needs_redis)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test (stopped at the end, whatever its state)."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def cluster(redis: RedisServer) -> Iterator[Cluster]:
    """Chat servers on ``redis``: ``cluster.server()``, ``cluster.client(srv, nick)``. At the
    end every client is closed and every server stopped; a server that did not exit 0 or
    logged an error fails the test."""
    c = Cluster(redis)
    yield c
    problems = c.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Cluster, CliServer, CliServer]]:
    """Two chat servers on one Redis, shared by the tests of a module (each test uses its
    own nicks and rooms)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    c = Cluster(server)
    a = c.server()
    b = c.server()
    yield c, a, b
    problems = c.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
