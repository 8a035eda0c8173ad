"""The web chat page in a real headless Chromium (Python Playwright, Debian's ``chromium``):
browser tabs and ``nc`` in one room, injection attempts shown as text, reconnecting after
a server restart, and no console error.

Skipped with the reason when Playwright or ``/usr/bin/chromium`` is missing (``test.sh``
installs both).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import UNIT, CliServer

from .wskit import RawWs, free_port, start_ws

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = int(10_000 * UNIT)

sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright")
pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"needs Chromium at {CHROMIUM}"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Tab:
    """One page of the web chat, with what it logged to its console."""

    def __init__(self, browser: Any, port: int) -> None:
        self.context = browser.new_context(viewport={"width": 1000, "height": 640})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.goto(f"http://127.0.0.1:{port}/")
        self.wait_state("connected")
        self.wait_line("type /help for commands")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def wait_state(self, state: str) -> None:
        self.page.wait_for_selector(f'#status[data-state="{state}"]', timeout=WAIT_MS)

    def wait_line(self, text: str) -> None:
        """Until a line of the log contains ``text``."""
        self.page.wait_for_function(
            """t => [...document.querySelectorAll('#log .line')]
                    .some(e => e.textContent.includes(t))""",
            arg=text,
            timeout=WAIT_MS,
        )

    def wait_list(self, selector: str, text: str) -> None:
        self.page.wait_for_function(
            "([s, t]) => [...document.querySelectorAll(s)].some(e => e.textContent === t)",
            arg=[selector, text],
            timeout=WAIT_MS,
        )

    def say(self, text: str) -> None:
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser: Any) -> Iterator[list[Tab]]:
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.close()


def nc_client(port: int) -> Any:
    from services.chat.chatkit import NcClient

    if shutil.which("nc") is None:
        pytest.skip("needs nc")
    return NcClient(port)


def test_two_tabs_and_nc_in_one_room(
    browser: Any, tabs: list[Tab], servers: list[CliServer]
) -> None:
    server, port = start_ws(servers, "chat")
    alice = Tab(browser, port)
    tabs.append(alice)
    alice.say("/nick alice")
    alice.wait_line("is now known as alice")
    bob = Tab(browser, port)
    tabs.append(bob)
    bob.say("/nick bob")
    with nc_client(server.port) as nc:
        nc.welcome()
        nc.send("/nick carol")
        nc.expect("is now known as carol")
        alice.say("hello from alice")
        alice.wait_line("alice: hello from alice")  # shown by the page itself
        bob.wait_line("alice: hello from alice")
        assert nc.expect("alice:") == "alice: hello from alice"
        nc.send("hi from nc")
        alice.wait_line("carol: hi from nc")
        bob.wait_line("carol: hi from nc")
        bob.say("hey from bob")
        alice.wait_line("bob: hey from bob")
        assert nc.expect("bob:") == "bob: hey from bob"
        # The side lists come from /who and /rooms, asked by the page, answered quietly.
        for nick in ("alice", "bob", "carol"):
            alice.wait_list("#members li", nick)
        alice.wait_list("#rooms li", "#lobby (3)")
        shown = alice.page.locator("#log .line").all_text_contents()
        assert not any(line.startswith("*** in #lobby") for line in shown), shown
        # Nick colours: the same nick, the same colour, in every tab.
        colour = "document.querySelector('#log .line .nick').style.color"
        assert alice.page.evaluate(colour).startswith("rgb(")
        # Completion: "/jo" offers /join; Tab takes it.
        alice.page.fill("#input", "")
        alice.page.type("#input", "/jo")
        assert alice.page.is_visible("#complete")
        assert "/join ROOM" in alice.page.text_content("#complete li")
        alice.page.press("#input", "Tab")
        assert alice.page.input_value("#input") == "/join "
        alice.page.type("#input", "kitchen")
        alice.page.press("#input", "Enter")
        alice.wait_line("you are in #kitchen")
        assert alice.page.text_content("#room-name") == "#kitchen"
        bob.wait_line("alice left #lobby")
        shot = os.environ.get("TWOWAY_WEB_SCREENSHOT")
        if shot:
            alice.say("/join lobby")
            alice.wait_list("#members li", "carol")
            nc.send("the same room for nc, telnet and a browser tab")
            alice.wait_line("carol: the same room")
            alice.page.screenshot(path=shot)
    for tab in (alice, bob):
        assert tab.errors == [] and tab.dialogs == []


def test_html_from_nc_is_shown_as_text(
    browser: Any, tabs: list[Tab], servers: list[CliServer]
) -> None:
    server, port = start_ws(servers, "chat")
    tab = Tab(browser, port)
    tabs.append(tab)
    attacks = [
        "<script>window.__pwned = 1; alert('script')</script>",
        "<img src=x onerror=\"window.__pwned = 2; alert('img')\">",
        "<b onmouseover=alert(3)>bold</b> &amp; &lt;",
    ]
    with nc_client(server.port) as nc:
        nc.welcome()
        for attack in attacks:
            nc.send(attack)
        nc.send("/topic <img src=y onerror=alert(4)>")
        nc.expect("set the topic")
    for attack in attacks:
        tab.wait_line(attack)
    tab.wait_line("set the topic: <img src=y onerror=alert(4)>")
    page = tab.page
    texts = page.locator("#log .line").all_text_contents()
    assert any(t.endswith(": " + attacks[1]) for t in texts), texts
    assert page.locator("#log img, #log script, #log b").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.hover("#log")
    assert tab.dialogs == [] and tab.errors == []


def test_reconnects_after_a_server_restart(
    browser: Any, tabs: list[Tab], servers: list[CliServer]
) -> None:
    tcp_port, ws_port = free_port(), free_port()
    args = ("--ws", f"127.0.0.1:{ws_port}")
    server, _ = start_ws(servers, "chat", port=tcp_port, ws=f"127.0.0.1:{ws_port}")
    tab = Tab(browser, ws_port)
    tabs.append(tab)
    tab.say("/nick dora")
    tab.wait_line("is now known as dora")
    tab.say("/join #den")
    tab.wait_line("you are in #den")
    server.stop()
    tab.wait_state("reconnecting")
    assert tab.page.text_content("#status") == "reconnecting…"
    start_ws(servers, "chat", port=tcp_port, ws=args[1])
    tab.wait_state("connected")
    # Without resume on the server, the page asks for its nick and room again.
    token = tab.page.evaluate("sessionStorage.getItem('twoway.token')")
    if not token:
        tab.wait_line("is now known as dora")
        tab.wait_line("you are in #den")
    # While the server was down Chromium itself logs each refused connection attempt; the
    # page logs nothing.
    own = [e for e in tab.errors if "WebSocket connection to" not in e]
    assert own == [] and tab.dialogs == []


def test_resume_shows_the_replayed_count(
    browser: Any, tabs: list[Tab], servers: list[CliServer], tmp_path: Path
) -> None:
    tcp_port, ws_port = free_port(), free_port()
    ws = f"127.0.0.1:{ws_port}"
    # One data directory for both runs: the sessions (and history) outlive the restart.
    store = ("--data-dir", str(tmp_path))
    server, _ = start_ws(servers, "chat", *store, port=tcp_port, ws=ws)
    with RawWs(ws_port) as probe:
        # The welcome's token line comes before "type /help" (expect() consumes what it
        # read, so look for the token line itself).
        try:
            probe.expect("resume token:", timeout=2.0)
        except AssertionError:
            pytest.skip("the server gives no resume token (the store issue's /resume)")
    tab = Tab(browser, ws_port)
    tabs.append(tab)
    tab.page.wait_for_function("sessionStorage.getItem('twoway.token')", timeout=WAIT_MS)
    server.stop()
    tab.wait_state("reconnecting")
    start_ws(servers, "chat", *store, port=tcp_port, ws=ws)
    tab.wait_state("connected")
    # "*** replayed N lines; M missed" becomes "N replayed, M missed while away".
    tab.wait_line(" replayed, ")


def test_the_page_works_on_a_phone(browser: Any, servers: list[CliServer], tmp_path: Path) -> None:
    _, port = start_ws(servers, "chat")
    context = browser.new_context(viewport={"width": 390, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector('#status[data-state="connected"]', timeout=WAIT_MS)
        assert not page.is_visible("#side")  # the side panel folds away
        page.click("#toggle-side")
        assert page.is_visible("#side")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways ({width} px)"
        assert errors == []
    finally:
        context.close()
