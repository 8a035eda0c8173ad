"""Suite-wide fixtures: every async test runs once per event loop (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import importlib.util
import resource
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests run beside servers and other suites on a 2-core machine: time limits and the
# "data generation is slow" check would fail them for the machine's load, not for a bug.
settings.register_profile("twoway", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("twoway")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _factories() -> dict[str, LoopFactory]:
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """pytest-asyncio parametrises every async test with these: ``test_x[asyncio]`` and
    ``test_x[uvloop]`` (uvloop only where it is installed)."""
    return _factories()


@pytest.fixture
def nofile_limit() -> Iterator[Callable[[int], None]]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to at least ``n`` (skip if impossible);
    the old limit is restored afterwards."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)

    def need(n: int) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft >= n:
            return
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))

    yield need
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture(params=list(_factories()))
def loop(request: pytest.FixtureRequest) -> str:
    """For sync tests of a CLI server: the event loop the server runs (``--loop``), once per
    loop installed (async tests get the loop they run on instead)."""
    return str(request.param)


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    """CLI servers to stop at the end of the test, whatever happened (see
    ``helpers.start_server``)."""
    started: list[Any] = []
    yield started
    for server in started:
        server.stop()
