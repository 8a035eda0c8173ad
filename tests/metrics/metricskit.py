"""Helpers of the metrics tests: a server started with ``--metrics``, HTTP requests with
``http.client``, and scrapes read with prometheus_client's parser."""

from __future__ import annotations

import http.client
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from helpers import UNIT, CliServer, serve_args

METRICS_LINE = re.compile(r"metrics on http://([^/]+):(\d+)/")


def start_metrics(servers: list[Any], service: str, *args: str, loop: str = "asyncio",
                  env: dict[str, str] | None = None) -> tuple[CliServer, int]:  # fmt: skip
    """``twoway serve SERVICE --metrics 0 ARGS``, ready: the server and its metrics port."""
    server = CliServer(serve_args(service, "--metrics", "0", *args, loop=loop), env)
    servers.append(server)
    server.wait_ready()
    m = server.wait_for(METRICS_LINE)
    return server, int(m.group(2))


def get(port: int, path: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, str, bytes]:  # fmt: skip
    """``(status, content type, body)`` of one request to 127.0.0.1:PORT."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5 * UNIT)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def scrape(port: int, headers: dict[str, str] | None = None) -> dict[str, float]:
    """``/metrics`` parsed: ``{'name{label="v"}': value}`` (``name`` alone when
    unlabelled)."""
    status, _, body = get(port, "/metrics", headers)
    assert status == 200, body
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def wait_metric(port: int, name: str, predicate: Callable[[float], bool],
                timeout: float = 10 * UNIT) -> dict[str, float]:  # fmt: skip
    """Scrape until ``predicate(value of name)`` holds (a counter that a close updates
    a moment after the client saw it); the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if predicate(samples.get(name, 0.0)):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} = {samples.get(name)} after {timeout:g} s")
        time.sleep(0.05)


def raw_request(port: int, data: bytes, timeout: float = 10 * UNIT) -> bytes:
    """Send ``data`` as is, read the answer to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
