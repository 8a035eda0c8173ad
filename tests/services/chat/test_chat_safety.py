"""What one client sends can never harm another: over-long lines, terminal control bytes,
invalid UTF-8 and telnet protocol bytes; and a real ``telnet`` in a pty can chat."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import time

import pytest

from .chatkit import TIMEOUT, Client, Harness

#: Bytes a receiver may see below 0x20, besides printable text: TAB, LF and CR.
_ALLOWED_C0 = {0x09, 0x0A, 0x0D}


def _assert_terminal_safe(raw: bytes) -> str:
    """``raw`` holds no control byte but TAB/CR/LF, is UTF-8, and no C1 control either."""
    bad = sorted({b for b in raw if (b < 0x20 and b not in _ALLOWED_C0) or b == 0x7F})
    assert not bad, f"raw control bytes {bad} reached a receiver: {raw!r}"
    text = raw.decode("utf-8")  # strict: invalid input must have been replaced
    c1 = [hex(ord(ch)) for ch in text if 0x80 <= ord(ch) <= 0x9F]
    assert not c1, f"C1 controls {c1} reached a receiver: {text!r}"
    return text


def _safe_line(c: Client) -> str:
    """The next line of ``c``, checked byte by byte with :func:`_assert_terminal_safe`."""
    raw = c.read_raw_line()
    assert raw is not None, f"{c.name}: EOF; read so far: {c.history}"
    text = _assert_terminal_safe(raw).removesuffix("\n")
    c.history.append(text)
    return text


def test_a_one_megabyte_line_gets_an_error_and_the_connection_survives(chat: Harness) -> None:
    srv = chat.start()
    a, b = chat.client(srv, name="a"), chat.client(srv, name="b")
    a.expect("*** guest2 joined")
    a.send(b"A" * 1_000_000 + b"TAIL")
    a.send("after the long line")
    assert a.expect("error:") == "error: line too long (max 65536 bytes)"
    # The others get the next line and nothing of the long one (no tail as a line).
    assert b.expect("guest1:") == "guest1: after the long line"
    assert not [line for line in b.skipped if "A" * 10 in line or "TAIL" in line]
    # Still usable both ways.
    b.send("you still there?")
    assert a.expect("guest2:") == "guest2: you still there?"
    a.send("yes")
    assert b.expect("guest1:") == "guest1: yes"
    # A line of exactly the limit is accepted (the limit counts the content, not the LF).
    a.send(b"B" * 65536)
    assert b.expect("guest1: B") == "guest1: " + "B" * 65536
    a.send(b"C" * 65537)
    assert a.expect("error:") == "error: line too long (max 65536 bytes)"


def test_control_bytes_and_invalid_utf8_arrive_escaped(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    sender = chat.client(srv, name="sender")
    receivers = [chat.client(srv, name=f"r{i}") for i in range(2)]
    receivers[0].expect("*** guest3 joined")
    sender.sync()
    payloads = [
        (b"\x1b[31mred\x1b[0m \x1b]0;pwned\x07", "^[[31mred^[[0m ^[]0;pwned^G"),
        (b"bell\x07 nul\x00 bs\x08 del\x7f vt\x0b ff\x0c", "bell^G nul^@ bs^H del^? vt^K ff^L"),
        (b"tab\tkept", "tab\tkept"),
        (b"bad \xfe\xfd utf8 \xc3( \x80 end", "bad \ufffd\ufffd utf8 \ufffd( \ufffd end"),
        (b"csi \xc2\x9b31m nel \xc2\x85", "csi \\x9b31m nel \\x85"),
        (b"lone cr\rinside", "lone cr^Minside"),
        (b"\xff\xffliteral 0xff", "\ufffdliteral 0xff"),  # IAC IAC is a data 0xFF
        (b"caf\xc3\xa9 \xe2\x9c\x93 ok", "caf\u00e9 \u2713 ok"),
    ]
    for data, _ in payloads:
        sender.send(data)
    sender.send(b"/me \x1b[2Jclears \x00the screen")
    sender.send(b"/topic \x1b]2;title\x07")
    sender.send(b"/nick \x1b[31m")
    sender.send(b"/msg guest2 \x1b[6n private \x05")
    expected = [f"guest1: {text}" for _, text in payloads] + [
        "* guest1 ^[[2Jclears ^@the screen",
        "*** guest1 set the topic: ^[]2;title^G",
    ]
    rest: list[list[str]] = []
    for r in receivers:
        got: list[str] = []
        while len(got) < len(expected):
            text = _safe_line(r)
            if text.startswith(("guest1", "* guest1", "*** guest1")):
                got.append(text)
        assert got == expected
        # Everything else up to a barrier is safe too.
        r.send("/peers")
        after: list[str] = []
        while not after or not after[-1].startswith("You have"):
            after.append(_safe_line(r))
        rest.append(after)
    assert "[msg from guest1] ^[[6n private ^E" in rest[0]
    assert not [line for line in rest[1] if "private" in line]
    # The sender's own error and private copy are escaped too.
    tail: list[str] = []
    while not tail or not tail[-1].startswith("[msg to"):
        tail.append(_safe_line(sender))
    assert 'error: invalid nick "^[[31m" (1-32 letters, digits, - or _)' in tail
    assert tail[-1] == "[msg to guest2] ^[[6n private ^E"


def test_telnet_negotiation_is_consumed_and_refused(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    tel = chat.client(srv, name="telnet-like")
    other = chat.client(srv, name="other")
    tel.expect("*** guest2 joined")
    IAC, DONT, DO, WONT, WILL, SB, SE = 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF0
    # Ctrl-C in telnet: IAC IP, IAC DO TIMING-MARK, in the middle of a line.
    tel.send(b"hel" + bytes([IAC, 0xF4, IAC, DO, 0x06]) + b"lo", end=b"\r\n")
    assert other.expect("guest1:") == "guest1: hello"
    reply = _read_exactly(tel, 3)
    assert reply == bytes([IAC, WONT, 0x06])
    # Options: DO -> WONT, WILL -> DONT; a subnegotiation is swallowed whole.
    tel.send(
        bytes([IAC, WILL, 0x18, IAC, DO, 0x01, IAC, SB, 0x18, 0x00])
        + b"xterm"
        + bytes([IAC, SE, IAC, DONT, 0x03, IAC, WONT, 0x22])
        + b"negotiated",
        end=b"\r\n",
    )
    assert other.expect("guest1:") == "guest1: negotiated"
    assert _read_exactly(tel, 6) == bytes([IAC, DONT, 0x18, IAC, WONT, 0x01])
    # CR NUL (Enter in telnet's character mode) ends a line.
    tel.send(b"char mode", end=b"\r\x00")
    tel.send(b"next", end=b"\r\x00")
    assert other.expect("guest1:") == "guest1: char mode"
    assert other.expect("guest1:") == "guest1: next"
    # 0xFF starts a telnet command on this service, even where a raw client meant invalid
    # UTF-8: "\xff\xfe" is IAC DONT and takes the next byte as its option (RFC 854; a
    # literal 0xFF is sent as IAC IAC, see the escaping test).
    tel.send(b"ab\xff\xfecd")
    assert other.expect("guest1:") == "guest1: abd"
    # Nothing of the telnet bytes reached the other client.
    other.send("/peers")
    other.expect("You have 1 peer")
    for line in other.history:
        _assert_terminal_safe(line.encode())
        assert "\ufffd" not in line and "xterm" not in line, line


def _read_exactly(c: Client, n: int) -> bytes:
    """``n`` raw bytes from a client (telnet replies are not lines)."""
    deadline = time.monotonic() + TIMEOUT
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {bytes(buf)!r} within {TIMEOUT} s"
        c.sock.settimeout(left)
        data = c.sock.recv(n - len(buf))
        assert data, f"EOF after {bytes(buf)!r}"
        buf += data
    return bytes(buf)


class _Pty:
    """A program run on a pseudo-terminal, as a person at a terminal would run it."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        self.output = b""
        self.status: int | None = None

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def expect(self, needle: bytes, timeout: float = TIMEOUT) -> bytes:
        """Read the terminal until ``needle`` appears; return everything read so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not on the terminal: {self.output!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the program exited and the pty closed
                    data = b""
                if not data:
                    raise AssertionError(f"terminal closed before {needle!r}: {self.output!r}")
                self.output += data
        return self.output

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the program to exit; its exit status."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s: {self.output!r}")
            # Drain the terminal so the program never blocks writing to it.
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.output += os.read(self.fd, 4096)
                except OSError:
                    pass
        return self.status

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -signal.SIGKILL
        os.close(self.fd)


@pytest.mark.skipif(shutil.which("telnet") is None, reason="telnet missing")
def test_real_telnet_in_a_pty_can_chat_and_quit(chat: Harness) -> None:
    srv = chat.start()
    other = chat.client(srv, name="other")
    term = _Pty(["telnet", "127.0.0.1", str(srv.port)])
    try:
        term.expect(b"*** type /help for commands")
        assert b"*** you are guest2\r\n" in term.output
        other.expect("*** guest2 joined")
        term.type(b"hello\r")
        assert other.expect("guest2:") == "guest2: hello"
        other.send("hi telnet")
        term.expect(b"guest1: hi telnet\r\n")  # CRLF: telnet sent CRLF, so it reads CRLF
        # Ctrl-C: telnet sends IAC IP IAC DO TIMING-MARK and waits for the answer; then
        # it must still work, and none of it reaches the others.
        term.type(b"\x03")
        term.type(b"after ctrl-c\r")
        assert other.expect("guest2:") == "guest2: after ctrl-c"
        other.send("still here")
        term.expect(b"guest1: still here")
        assert other.skipped == []
        term.type(b"quit\r")
        term.expect(b"Bye Bye!")
        assert term.wait() == 0
        assert b"Connection closed by foreign host." in term.output
        assert other.expect("*** guest2 left") == "*** guest2 left #lobby (quit)"
    finally:
        term.close()
