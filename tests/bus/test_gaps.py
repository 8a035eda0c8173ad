"""Gaps in the log, end to end: an entry of server A deleted from the middle of the stream
(``XDEL``) before server B read it. B's clients are told, never left with a silent hole:

* a lost room line gives the room ``*** notice: 1 message may have been missed`` (the room's
  sequence numbers jumped: a ``RoomGap``);
* any lost entry of A gives every room of B ``*** notice: messages from other servers may
  have been missed`` (A's entry numbers jumped: a node gap, which the bus turns into
  ``Missed``), even one without room lines (a topic change).

B is stopped (SIGSTOP) while A publishes, so the entry is deleted before B could read it;
each step waits on its condition (the entry in the log, the process state), never a sleep.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

from helpers import CliServer

from .buskit import UNIT, ChatClient, Cluster

LOG = "twoway:chat:log"

# The notices exactly as a chat client reads them: built here once, so a change of the
# server notices' wording is one edit.
NOTICE = "*** notice: "
NODE_GAP = NOTICE + "messages from other servers may have been missed"


def room_gap(count: int) -> str:
    """What a room's members read when ``count`` of its lines never reached their server."""
    return NOTICE + f"{count} message{'' if count == 1 else 's'} may have been missed"


class Stream:
    """The test's own view of the log: waits for entries with a blocking ``XREAD`` (Redis
    wakes it when an entry lands), deletes them with ``XDEL``."""

    def __init__(self, url: str) -> None:
        self.client = redis_py.Redis.from_url(url)
        newest = self.client.xrevrange(LOG, count=1)
        self.last: bytes = newest[0][0] if newest else b"0-0"

    def close(self) -> None:
        self.client.close()

    def wait_entry(self, text: str, timeout: float = 5 * UNIT) -> bytes:
        """The id of the first entry after the last one seen whose items contain ``text``."""
        needle = text.encode()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = self.client.xread({LOG: self.last}, block=max(1, int(left * 1000)))
            for entry_id, fields in reply[0][1] if reply else ():
                self.last = entry_id
                if needle in fields.get(b"d", b""):
                    return bytes(entry_id)
        raise AssertionError(f"no entry with {text!r} reached the log within {timeout:g} s")

    def delete(self, entry_id: bytes) -> None:
        assert self.client.xdel(LOG, entry_id) == 1


def _state(pid: int) -> str:
    # /proc/PID/stat: "pid (comm) S ...": the state follows the last parenthesis.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


class Stopped:
    """SIGSTOP ``srv`` until the block ends (then SIGCONT, whatever happened). Entering waits
    until the kernel reports it stopped: from then on it sends Redis no new read. The one
    blocking read it may have in flight is answered with the first entry that lands (the
    reply waits in its socket): only entries after that one can be deleted unseen."""

    def __init__(self, srv: CliServer) -> None:
        self.srv = srv

    def __enter__(self) -> None:
        self.srv.signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5 * UNIT
        while _state(self.srv.pid) != "T":
            assert time.monotonic() < deadline, "the server did not stop"
            os.sched_yield()  # the kernel reports the stop, it does not announce it

    def __exit__(self, *exc: object) -> None:
        self.srv.signal(signal.SIGCONT)


@pytest.fixture
def stream(cluster: Cluster) -> Iterator[Stream]:
    s = Stream(cluster.redis.url)
    yield s
    s.close()


def _setup(
    cluster: Cluster, room: str, *b_args: str
) -> tuple[CliServer, ChatClient, ChatClient, ChatClient]:
    """Servers A and B (``b_args`` for B); alice (A) and bob (B) in ``room``, carol (B) in
    the lobby."""
    a, b = cluster.server(), cluster.server(*b_args)
    alice = cluster.client(a, "alice")
    bob = cluster.client(b, "bob")
    carol = cluster.client(b, "carol")
    alice.ask(f"/join {room}", f"* you are in #{room}")
    bob.saw("* alice left #lobby")  # B knows where alice is
    bob.ask(f"/join {room}", f"* you are in #{room}")
    alice.expect(f"* bob joined #{room}")
    alice.send("first")
    bob.expect("alice: first")
    return b, alice, bob, carol


def test_a_line_deleted_from_the_log_is_announced_to_its_room(
    cluster: Cluster, stream: Stream
) -> None:
    b, alice, bob, carol = _setup(cluster, "gap", "--metrics", "0")
    with Stopped(b):
        # One entry each (the next is sent once the last is in the log); line 1 answers B's
        # read in flight, line 2 is deleted.
        for i in (1, 2, 3):
            alice.send(f"gap line {i}")
            entry = stream.wait_entry(f"gap line {i}")
            if i == 2:
                stream.delete(entry)
    bob.expect("alice: gap line 1")
    # Both gaps are reported before the line that revealed them: A's entry numbers (every
    # room hears it) and #gap's line numbers (only #gap).
    assert bob.lines_until("alice: gap line 3") == [NODE_GAP, room_gap(1)]
    carol.expect(NODE_GAP)
    assert room_gap(1) not in carol.sync()  # a room's gap is news to that room only
    assert not any("may have been missed" in x for x in alice.sync())  # A lost nothing
    alice.send("gap line 4")
    assert bob.lines_until("alice: gap line 4") == []  # one gap, told once
    # B's metrics: the two gaps it found, and a lag observed for each entry it read from A.
    from metrics.metricskit import METRICS_LINE, scrape

    samples = scrape(int(b.wait_for(METRICS_LINE).group(2)))
    assert samples["twoway_bus_gap_notices_total"] == 2
    assert samples["twoway_chat_gap_notices_total"] == 2
    assert samples["twoway_bus_lag_seconds_count"] >= 4  # gap lines 1, 3 and 4, first...


def test_an_entry_without_room_lines_deleted_is_announced_as_a_node_gap(
    cluster: Cluster, stream: Stream
) -> None:
    """A topic change is no room line: nothing numbers it but A's entry numbers."""
    b, alice, bob, carol = _setup(cluster, "gap2")
    with Stopped(b):
        alice.send("before the topic")  # what B's read in flight is answered with
        stream.wait_entry("before the topic")
        alice.send("/topic never seen on B")
        stream.delete(stream.wait_entry("never seen on B"))
        alice.send("after the topic")
        stream.wait_entry("after the topic")
    bob.expect("alice: before the topic")
    assert bob.lines_until("alice: after the topic") == [NODE_GAP]
    carol.expect(NODE_GAP)
    assert (
        bob.ask("/topic", re.compile(r"^\*\*\* (no )?topic")) == "*** no topic set for #gap2"
    )  # the change was lost
