"""No signal a user sends by habit ends a server without a log line (issue 13): SIGHUP,
SIGUSR1 and SIGUSR2 are logged and the server carries on; SIGQUIT stops it gracefully.
And the library's examples in the README stop on Ctrl-C as the CLI does."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from helpers import UNIT, CliServer, connect, recv_line, recv_until_eof, start_cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _round_trip(port: int, text: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(text + b"\n")
        assert recv_line(sock) == b'You said "' + text.upper() + b'"\n'


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(
    ("signum", "said"),
    [
        # With nothing reloadable (no certificate, no allow/deny file) a reload says so.
        (signal.SIGHUP, "reloading"),
        (signal.SIGUSR1, "ignored"),
        (signal.SIGUSR2, "ignored"),
    ],
)
def test_hup_usr1_usr2_are_logged_and_the_server_carries_on(
    loop: str, signum: int, said: str
) -> None:
    name = signal.Signals(signum).name
    with start_cli("serve", "upper", "--port", "0", "--loop", loop) as server:
        with connect(server.port) as stays:
            stays.sendall(b"before\n")
            assert recv_line(stays) == b'You said "BEFORE"\n'
            server.signal(signum)
            server.wait_for(rf"(INFO|WARNING) +{name} received: {said}")
            server.signal(signum)  # twice: no second-signal "force" either
            server.wait_for(rf"{name} received", count=2)
            stays.sendall(b"after\n")
            assert recv_line(stays) == b'You said "AFTER"\n'
        _round_trip(server.port, b"new")
        assert server.running
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert "Traceback" not in server.stderr


def test_sigquit_is_a_graceful_stop() -> None:
    with start_cli("serve", "upper", "--port", "0") as server:
        with connect(server.port) as sock:
            sock.sendall(b"hi\n")
            assert recv_line(sock) == b'You said "HI"\n'
            server.signal(signal.SIGQUIT)
            assert recv_line(sock) == b"server shutting down\n"
            assert recv_until_eof(sock) == b""
        assert server.wait_exit() == 0
    assert "SIGQUIT received: shutting down" in server.stderr


def _readme_example(marker: str) -> str:
    """The README's python block that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{len(found)} README examples contain {marker!r}"
    return found[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_example(code: str) -> CliServer:
    port = _free_port()
    code = code.replace("4001", str(port))
    proc = CliServer([], program=(sys.executable, "-c", code))
    proc.port = port
    return proc


@pytest.mark.parametrize("marker", ["twoway.run(handler", "asyncio.run(main())"])
def test_the_readme_async_examples_stop_gracefully_on_ctrl_c(marker: str) -> None:
    proc = _run_example(_readme_example(marker))
    try:
        assert proc.wait_probe(lambda: _accepts(proc.port)), proc.stderr
        with connect(proc.port) as sock:
            sock.sendall(b"hello\n")
            assert recv_line(sock) == b"echo: hello\n"
            proc.signal(signal.SIGINT)
            assert recv_line(sock) == b"server shutting down\n"
            assert recv_until_eof(sock) == b""
        assert proc.wait_exit(5 * UNIT) == 0
    finally:
        proc.stop()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "CancelledError" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=UNIT):
            return True
    except OSError:
        return False


def test_run_takes_an_async_handler_framing_and_log_format() -> None:
    code = """if True:
        import twoway

        async def handler(conn):
            async for chunk in conn:
                await conn.send(chunk)

        twoway.run(handler, port=0, framing="raw", log_format="json", max_connections=3)
    """
    proc = CliServer([], program=(sys.executable, "-c", code))
    try:
        proc.wait_ready()
        ready = proc.wait_for(r'^{.*"event": "listening".*"max_conns": 3').group(0)
        assert '"service"' not in ready  # the library sets no process context
        with connect(proc.port) as sock:
            sock.sendall(b"raw bytes")
            assert sock.recv(100) == b"raw bytes"
    finally:
        assert proc.stop() == 0
