"""Slow consumers: a client that stops reading is dropped, memory stays bounded and nobody
else loses a line (RELIABILITY.md: the Redis output-buffer and NATS slow-consumer tests).

The kernel hides a non-reading peer for a while: on loopback about 3.8 MiB (1.5 MiB with a
tiny ``SO_RCVBUF``) is absorbed by socket buffers before any user-space queue grows, so these
tests push tens of megabytes toward the stuck client.
"""

from __future__ import annotations

import re
import time

import pytest

from .chatkit import TIMEOUT, UNIT, ChatServer, Client, Harness
from .fanout import Chatter, FanOut

KiB = 1024
MiB = 1024 * KiB


def _chatters(chat: Harness, srv: ChatServer, n: int) -> list[Chatter]:
    clients = [chat.client(srv, name=f"chatter{i}") for i in range(n)]
    # Barrier: every chatter has read every join before the load starts.
    for c in clients:
        c.sync()
    return [Chatter(i, c.sock, c.nick) for i, c in enumerate(clients)]


def _read_what_is_left(stuck: Client, timeout: float) -> tuple[int, str, list[bytes]]:
    """Read the stuck client's socket to its end: bytes read, how it ended, last lines."""
    deadline = time.monotonic() + timeout
    total = 0
    tail = b""
    stuck.sock.setblocking(True)
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the stuck client's connection is still open ({total} bytes read)"
        stuck.sock.settimeout(left)
        try:
            data = stuck.sock.recv(1 << 20)
        except ConnectionResetError:
            how = "reset"
            break
        if not data:
            how = "eof"
            break
        total += len(data)
        tail = (tail + data)[-4096:]
    return total, how, tail.split(b"\n")[-3:]


def test_a_client_that_never_reads_is_dropped_and_memory_stays_bounded(chat: Harness) -> None:
    max_queued = 256 * KiB  # the default, spelled out
    srv = chat.start("--flood-rate", "0", "--max-queued", str(max_queued))
    stuck = chat.client(srv, name="stuck", welcome=False, rcvbuf=4096)
    srv.wait_log(r"guest1 joined #lobby")
    chatters = _chatters(chat, srv, 10)
    clients = len(chatters) + 1

    srv.reset_peak_rss()
    idle_rss = srv.rss()
    peak = [idle_rss]

    def sample() -> None:
        peak[0] = max(peak[0], srv.rss())

    def everyone_saw_the_drop() -> bool:
        return all(any("guest1 left" in t for _, t in c.notices) for c in chatters)

    # 10 chatters x 4000 lines x 1000 bytes: ~38 MiB fanned out toward the stuck client,
    # ten times what the kernel can hide, and ~380 MiB to the chatters.
    lines, pad = 4000, 1000
    load = FanOut(chatters, lines=lines, pad=pad, on_tick=sample)
    started = time.monotonic()
    elapsed = load.run(timeout=60 * UNIT)
    peak_rss = max(peak[0], srv.peak_rss())
    growth = peak_rss - idle_rss
    fanned_out = sum(c.sent * pad for c in chatters)
    assert fanned_out > 30 * MiB

    # Memory: about max-queued per client above idle, plus a few MB of working set. Without
    # the limit (--max-queued 0 --slow-grace 0) it grows by the ~36 MiB the stuck one holds.
    assert growth < clients * max_queued + 8 * MiB, f"RSS grew {growth / MiB:.1f} MiB"

    # Everybody else got every line of every other chatter, in order (FanOut checks each
    # line's sender and sequence number as it arrives) and nobody else was dropped.
    assert not load.errors
    assert all(n == lines for c in chatters for n in c.got.values())
    assert all(c.closed is None for c in chatters)

    # The stuck client alone was dropped as too slow, and the room was told.
    load.run(timeout=TIMEOUT, until=everyone_saw_the_drop)
    for c in chatters:
        assert [t for _, t in c.notices if "left" in t] == ["*** guest1 left #lobby (too slow)"]
    m = srv.wait_log(r"too slow \((\d+) bytes queued\), disconnecting")
    dropped_at = srv.matched_at
    queued_at_drop = int(m.group(1))
    assert max_queued < queued_at_drop < 2 * max_queued

    # The server gives a client that does not read 1 s to take its last line, then resets.
    closed = srv.wait_log(r"closed 127\.0\.0\.1:\d+ \(in \S+ B, out ([\d.]+ \S+), .* too slow")
    closed_at = srv.matched_at
    assert 0.9 < closed_at - dropped_at < 3 * UNIT

    # Only now does the stuck client read: what the kernel held, then the end. Its last line,
    # "error: too slow, disconnecting", was queued behind everything it had not read, so it
    # arrives only if the peer reads within that second; here the reset discards it.
    total, how, last = _read_what_is_left(stuck, TIMEOUT)
    assert how == "reset" or last[-2:] == [b"error: too slow, disconnecting", b""]
    assert total < 8 * MiB  # kernel buffers only: the rest was never queued
    print(
        f"\nslow consumer: idle RSS {idle_rss / MiB:.1f} MiB, peak {peak_rss / MiB:.1f} MiB "
        f"(+{growth / MiB:.2f} MiB); fan-out {fanned_out / MiB:.1f} MiB in {elapsed:.1f} s; "
        f"user-space queue at drop {queued_at_drop} B, {dropped_at - started:.2f} s after "
        f"the start; closed {closed_at - dropped_at:.2f} s later; server wrote "
        f"{closed.group(1)} to it; it then read {total} B and got {how}; "
        f"last bytes {last[-1][-60:]!r}"
    )


def test_a_client_that_reads_too_slowly_is_dropped_after_the_grace(chat: Harness) -> None:
    # max-queued 4 MiB puts the soft mark (a quarter) at 1 MiB; the sender keeps about
    # 5 MiB unread in flight toward the slow reader: past the kernel's share, between the
    # two marks. The slow reader reads all the time, just never fast enough to catch up.
    srv = chat.start("--flood-rate", "0", "--max-queued", "4MiB", "--slow-grace", "1")
    slow = chat.client(srv, name="slow", rcvbuf=4096)
    sender = chat.client(srv, name="sender")
    slow.expect("*** guest2 joined")
    sender.sync()
    line = b"y" * 999 + b"\n"
    backlog_target = 5 * MiB
    sent = 0
    started = time.monotonic()
    deadline = started + 20 * UNIT
    slow.sock.setblocking(False)
    sender.sock.setblocking(False)
    read = 0
    reads_per_tick = 16 * KiB
    departure = ""
    seen = b""  # the end of what the sender read (it reads the room's notices)
    try:
        while not departure:
            now = time.monotonic()
            assert now < deadline, f"not dropped: sent {sent} B, the slow reader read {read} B"
            # The slow reader: 16 KiB every 10 ms (1.6 MB/s), whatever is offered.
            try:
                data = slow.sock.recv(reads_per_tick)
                read += len(data)
            except BlockingIOError:
                pass
            # The sender tops the backlog up to the target.
            while sent - read < backlog_target:
                try:
                    sent += sender.sock.send(line * 64)
                except BlockingIOError:
                    break
            try:
                seen = (seen + sender.sock.recv(1 << 16))[-4096:]
            except BlockingIOError:
                pass
            notice = re.search(rb"\*\*\* guest1 left [^\n]*\n", seen)
            if notice:
                departure = notice.group().decode().rstrip("\n")
            time.sleep(0.01)  # the reader's pace: this is what makes it slow
    finally:
        slow.sock.setblocking(True)
        sender.sock.setblocking(True)
    took = time.monotonic() - started
    assert departure == "*** guest1 left #lobby (too slow)"
    m = srv.wait_log(r"too slow \((\d+) bytes queued\), disconnecting")
    queued = int(m.group(1))
    # The soft limit, not the hard one: dropped with less than max-queued queued.
    assert 256 * KiB < queued < 4 * MiB
    assert 1.0 <= took < 15 * UNIT
    print(f"\nsoft limit: dropped after {took:.1f} s with {queued} B queued; read {read} B")
    # The sender was not slowed down or dropped.
    sender.send("/peers")
    sender.sock.settimeout(TIMEOUT)
    assert sender.expect("You have") == "You have 0 peers on this server"


def test_a_stuck_client_with_default_buffers_is_dropped_past_the_kernel_buffers(
    chat: Harness, request: pytest.FixtureRequest
) -> None:
    """No SO_RCVBUF trick: the kernel hides ~4 MiB, then the 64 KiB limit drops the peer.

    One talker sends 1 MiB at a time, so the server always has megabytes to read from it:
    the limit must hold however much one loop iteration reads.
    """
    srv = chat.start("--flood-rate", "0", "--max-queued", "64KiB")
    stuck = chat.client(srv, name="stuck", welcome=False)
    talker = chat.client(srv, name="talker")
    srv.wait_log(r"guest2 joined")
    chunk = b"".join(b"%04d %s\n" % (i, b"z" * 1019) for i in range(1024))  # 1 MiB
    deadline = time.monotonic() + 4 * TIMEOUT
    pushed = 0
    seen = b""
    while b"*** guest1 left #lobby (too slow)" not in seen:
        assert time.monotonic() < deadline, f"not dropped after {pushed / MiB:.0f} MiB"
        talker.sock.settimeout(TIMEOUT)
        talker.sock.sendall(chunk)
        pushed += len(chunk)
        talker.sock.settimeout(0.001 * UNIT)
        try:
            while True:
                data = talker.sock.recv(1 << 16)
                if not data:
                    break
                seen = (seen + data)[-4096:]
        except TimeoutError:
            pass
    queued = int(srv.wait_log(r"too slow \((\d+) bytes queued\)").group(1))
    assert 64 * KiB < queued < 2 * MiB
    # More than the kernel buffers could hold was pushed before the drop.
    assert pushed > 2 * MiB
    total, how, last = _read_what_is_left(stuck, 2 * TIMEOUT)
    assert how == "reset" or last[-2:] == [b"error: too slow, disconnecting", b""]
    assert total < pushed
    print(
        f"\ndefault buffers: dropped after {pushed / MiB:.0f} MiB pushed, {queued} B queued; "
        f"it then read {total} B and got {how}"
    )
