"""A real Prometheus server scrapes ``twoway serve --metrics`` and a query through its HTTP
API returns the connections the test made."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers import UNIT, CliServer, connect, recv_line

from .metricskit import start_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(port: int, expr: str) -> list[Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5 * UNIT) as response:
        data = json.load(response)
    assert data["status"] == "success", data
    return list(data["data"]["result"])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=UNIT) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_prometheus_scrapes_the_connection_count(servers: list[Any], tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    server, mport = start_metrics(servers, "upper")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: twoway\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
    )
    pport = _free_port()
    prom = CliServer(
        [
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{pport}",
        ],
        program=[prometheus],
    )
    servers.append(prom)
    assert prom.wait_probe(lambda: _ready(pport), timeout=30 * UNIT), prom.tail()
    socks = [connect(server.port) for _ in range(4)]
    try:
        for s in socks:
            s.sendall(b"hi\n")
            assert recv_line(s) == b'You said "HI"\n'
        deadline = time.monotonic() + 30 * UNIT
        while True:
            result = _query(pport, 'twoway_connections_open{job="twoway"}')
            if result and float(result[0]["value"][1]) == len(socks):
                break
            assert time.monotonic() < deadline, f"prometheus has {result}; {prom.tail()}"
            time.sleep(0.2)
        up = _query(pport, 'up{job="twoway"}')
        assert float(up[0]["value"][1]) == 1
        accepted = _query(pport, "twoway_connections_accepted_total")
        assert float(accepted[0]["value"][1]) == len(socks)
    finally:
        for s in socks:
            s.close()
