"""The status page in a real headless Chromium (Playwright driving Debian's chromium): it
loads with no console error and shows the live connection count.

``TWOWAY_UPDATE_SCREENSHOT=1`` also writes the screenshot to docs/status-page.png (the one
the README shows)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import UNIT, connect, recv_line

from .metricskit import start_metrics

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (the dev extra)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium)")
    return sync_playwright


def test_status_page_shows_live_connections(servers: list[Any], tmp_path: Path) -> None:
    sync_playwright = _playwright()
    update = bool(os.environ.get("TWOWAY_UPDATE_SCREENSHOT"))
    server, mport = start_metrics(servers, "chat", "--flood-rate", "0")
    socks = [connect(server.port) for _ in range(3)]
    try:
        for i, s in enumerate(socks):
            s.sendall(b"/nick user%d\nhello from %d\n" % (i, i))
            recv_line(s)
        if update:  # a few samples for the sparklines of the picture
            for round_ in range(8):
                for s in socks:
                    s.sendall(b"message %d\n" % round_)
                time.sleep(1.0)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 620})
                problems: list[str] = []
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
                )
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                page.goto(f"http://127.0.0.1:{mport}/", timeout=15_000 * UNIT)
                page.wait_for_function(
                    "document.getElementById('connections').textContent === '3'",
                    timeout=10_000 * UNIT,
                )
                assert page.text_content("#service") == "chat"
                assert page.text_content("#state") == "live"
                assert page.text_content("#members") == "3"
                # Live: one more client shows up at the next poll.
                socks.append(connect(server.port))
                page.wait_for_function(
                    "document.getElementById('connections').textContent === '4'",
                    timeout=10_000 * UNIT,
                )
                shot = tmp_path / "status-page.png"
                page.screenshot(path=str(shot), full_page=True)
                assert problems == []
            finally:
                browser.close()
        assert shot.stat().st_size > 10_000
        if update:
            shutil.copyfile(shot, DOCS / "status-page.png")
    finally:
        for s in socks:
            s.close()
