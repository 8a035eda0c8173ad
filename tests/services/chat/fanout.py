"""A load generator for the slow-consumer tests: N chatters talking at full speed.

One thread drives every chatter with ``selectors`` (non-blocking sockets), so each one reads
everything the server sends it while it writes. Each chatter numbers its lines; every
receiver checks that it gets every line of every other chatter, in order per sender.

The senders are paced end to end: a chatter sends line ``s`` only once every other chatter
has received its line ``s - window``. That keeps what is in flight toward any *reading*
chatter far below the server's per-client limit whatever the scheduling of this process,
so a chatter can only be dropped if the server is wrong. A client that does not read is
not part of the window: the server keeps fanning out to it at the pace of the readers.
"""

from __future__ import annotations

import re
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Chatter", "FanOut"]

_CHAT = re.compile(rb"^(\S+): (\d+) (\d+) x*$")


@dataclass
class Chatter:
    """One talking client: its socket, nick, what it has sent and received."""

    index: int
    sock: socket.socket
    nick: str
    sent: int = 0  # lines handed to the socket
    out: bytearray = field(default_factory=bytearray)
    inbuf: bytearray = field(default_factory=bytearray)
    #: sender index -> how many of its lines this chatter received (in order).
    got: dict[int, int] = field(default_factory=dict)
    notices: list[tuple[float, str]] = field(default_factory=list)
    bytes_in: int = 0
    closed: str | None = None


class FanOut:
    """Drive ``chatters`` until each has sent ``lines`` lines and received all the others'.

    ``pad`` pads every line to about that many bytes. ``on_tick`` is called about every
    50 ms (to sample the server's memory, say).
    """

    def __init__(
        self,
        chatters: list[Chatter],
        *,
        lines: int,
        pad: int,
        window: int = 32,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.chatters = chatters
        self.lines = lines
        self.pad = pad
        self.window = window
        self.on_tick = on_tick
        self.by_nick = {c.nick: c for c in chatters}
        self.errors: list[str] = []
        for c in chatters:
            c.got = {o.index: 0 for o in chatters if o is not c}

    def _line(self, c: Chatter, seq: int) -> bytes:
        head = b"%d %d " % (c.index, seq)
        return head + b"x" * max(self.pad - len(head) - len(c.nick) - 2, 0) + b"\n"

    def _allowed(self, c: Chatter) -> int:
        """How many lines ``c`` may have sent by now (the end-to-end window)."""
        slowest = min(o.got[c.index] for o in self.chatters if o is not c)
        return min(self.lines, slowest + self.window)

    def _receive(self, c: Chatter, data: bytes, now: float) -> None:
        c.bytes_in += len(data)
        buf = c.inbuf
        buf += data
        end = buf.rfind(b"\n")
        if end < 0:
            return
        chunk = bytes(buf[:end])
        del buf[: end + 1]
        for raw in chunk.split(b"\n"):
            m = _CHAT.match(raw)
            if m is None:
                text = raw.decode("utf-8", "replace")
                if text.startswith("*** "):
                    c.notices.append((now, text))
                    continue
                self.errors.append(f"{c.nick} read an unexpected line {text[:120]!r}")
                continue
            nick, index, seq = m.group(1).decode(), int(m.group(2)), int(m.group(3))
            sender = self.chatters[index] if 0 <= index < len(self.chatters) else None
            if sender is None or sender.nick != nick:
                self.errors.append(f"{c.nick} read {nick}'s line as chatter {index}")
                continue
            expected = c.got[index]
            if seq != expected:
                self.errors.append(f"{c.nick}: from {nick} line {seq}, expected {expected}")
            c.got[index] = seq + 1

    def done(self) -> bool:
        """Every chatter has sent everything and received every other chatter's lines."""
        return all(v == self.lines for c in self.chatters for v in c.got.values())

    def run(self, timeout: float, until: Callable[[], bool] | None = None) -> float:
        """Run until :meth:`done` and ``until()``, or fail at the deadline; the time taken."""
        sel = selectors.DefaultSelector()
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        masks: dict[int, int] = {}
        for c in self.chatters:
            c.sock.setblocking(False)
            sel.register(c.sock, read, c)
            masks[c.index] = read

        def want(c: Chatter) -> None:
            # Ask for writability only while there is something to write (no busy loop).
            mask = read | write if c.out else read
            if c.closed is None and masks[c.index] != mask:
                sel.modify(c.sock, mask, c)
                masks[c.index] = mask

        started = time.monotonic()
        deadline = started + timeout
        next_tick = started
        try:
            while not (self.done() and (until is None or until())):
                now = time.monotonic()
                if now > deadline:
                    progress = {c.nick: sorted(c.got.values())[:3] for c in self.chatters}
                    raise AssertionError(
                        f"fan-out not done within {timeout} s; lowest counts {progress}; "
                        f"errors {self.errors[:5]}"
                    )
                if self.errors:
                    raise AssertionError("; ".join(self.errors[:10]))
                if self.on_tick is not None and now >= next_tick:
                    self.on_tick()
                    next_tick = now + 0.05
                for c in self.chatters:
                    if c.closed is None and not c.out and c.sent < self.lines:
                        upto = self._allowed(c)
                        if upto > c.sent:
                            c.out += b"".join(self._line(c, s) for s in range(c.sent, upto))
                            c.sent = upto
                            want(c)
                for key, events in sel.select(timeout=0.05):
                    c = key.data
                    if events & selectors.EVENT_READ:
                        try:
                            data = c.sock.recv(1 << 20)
                        except (BlockingIOError, InterruptedError):
                            data = None
                        except ConnectionError as exc:
                            data = b""
                            c.closed = repr(exc)
                        if data == b"":
                            c.closed = c.closed or "eof"
                            sel.unregister(c.sock)
                            self.errors.append(f"{c.nick} was disconnected ({c.closed})")
                            continue
                        if data:
                            self._receive(c, data, now)
                    if events & selectors.EVENT_WRITE and c.out:
                        try:
                            n = c.sock.send(c.out)
                        except (BlockingIOError, InterruptedError):
                            n = 0
                        del c.out[:n]
                        want(c)
            return time.monotonic() - started
        finally:
            sel.close()
            for c in self.chatters:
                c.sock.setblocking(True)
