"""Fixtures for the chat end-to-end tests (helpers are in :mod:`chatkit`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from .chatkit import Harness

#: Every test runs the server on each event loop the CLI offers (``--loop``).
LOOPS = ["uvloop", "asyncio"] if importlib.util.find_spec("uvloop") is not None else ["asyncio"]


@pytest.fixture(params=LOOPS)
def chat(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Start chat servers and clients with ``chat.start(...)`` / ``chat.client(srv)``.

    Parametrised by event loop: the servers run with ``--loop uvloop`` and ``--loop asyncio``.
    At teardown every client is closed, then every server gets SIGTERM; a server that does
    not exit 0, or that logged a traceback or an error, fails the test.
    """
    harness = Harness(loop=request.param)
    yield harness
    problems = harness.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
