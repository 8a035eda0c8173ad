"""The Redis bus: chat servers on several processes or machines, joined through one Redis.

Each node delivers to its own clients itself and publishes what the others must know (the
items of :mod:`twoway.sansio.bus.items`) into one Redis stream; every node reads that stream
from the last id it read (the keys and scripts are in :mod:`twoway.bus.scripts`). This module
is the supervision only: it connects, reads and writes, and hands what it reads to an
:class:`~twoway.sansio.bus.inbox.Inbox` and takes what it writes from an
:class:`~twoway.sansio.bus.outbox.Outbox`, which hold the protocol; an
:class:`~twoway.bus.uplink.Uplink` keeps the connection up (serving, retrying, the outage's
log lines).

What happens when Redis is not there — the point of this module:

* Local chat never waits: :meth:`RedisBus.publish` appends to a bounded buffer and returns.
  The buffer keeps what could not be sent (``buffer_limit`` items); beyond that, lines are
  dropped and counted, and once Redis is back every local room reads
  ``* notice: N messages could not be sent to other servers`` while the other nodes are told
  which of their rooms lost lines.
* Every command has a timeout (``timeout``; ``block + timeout`` for the blocking read), so a
  Redis that stops answering (SIGSTOP, a blackhole) is noticed like one that refuses.
* One log line when Redis becomes unreachable and one when it is back, whatever happens in
  between; retries follow :func:`~twoway.sansio.backoff.backoff_delays`
  (:mod:`twoway.bus.uplink`).
* On every reconnection the node publishes its complete state (a Hello), so every directory
  is repaired. If Redis lost its data (the epoch token changed) or trimmed the stream past
  this node's position, the local rooms read ``* notice: messages from other servers may
  have been missed`` and every node is asked for its Hello: never a silent gap
  (:mod:`twoway.bus.handshake`).
* Nothing here raises into the server: an unexpected error is logged with its traceback and
  handled like a lost connection. The exception is a configuration error found at start-up:
  Redis refusing the password in the URL (NOAUTH, WRONGPASS) or refusing its ACL user a
  command or key the bus needs (NOPERM). :meth:`RedisBus.start` raises it as a
  :class:`~twoway.errors.ConfigError` naming the cause, instead of retrying forever; later
  (a password changed under a running server), it is one error line and the retries go on.

Liveness: a node with nothing to say publishes a heartbeat every ``heartbeat`` seconds, in the
same stream (so "silent" means exactly "not publishing into the log everybody reads", and an
idle node's entry numbers still reveal gaps). A node not heard for ``silence`` seconds is
dropped: its clients leave with ``(server lost)``. A node only judges others while its own
reads succeed and are caught up: its own outage (or a paused Redis) says nothing about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from twoway.bus.base import BusListener
from twoway.bus.clients import Clients, describe, refusal
from twoway.bus.handshake import RANDOM_NODES, join, take_node
from twoway.bus.options import RedisBusOptions
from twoway.bus.scripts import Keys
from twoway.bus.uplink import Uplink
from twoway.errors import ConfigError
from twoway.sansio.buckets import LAG_BOUNDS, Buckets
from twoway.sansio.bus import (
    Ask,
    Batch,
    BusEvent,
    Bye,
    Heartbeat,
    Hello,
    Inbox,
    Item,
    Lost,
    Missed,
    NodeLost,
    Outbox,
    Overflow,
    RawEntry,
    backfill,
    entry_lags,
)

__all__ = ["RedisBus"]

log = logging.getLogger("twoway.bus")


class RedisBus:
    """The bus through Redis at ``url`` (``redis://HOST:PORT/DB``, ``rediss://``,
    ``unix://``), behaving as ``options`` say (:class:`~twoway.bus.options.RedisBusOptions`,
    where each default and its reason are written). Creating it connects to nothing;
    :meth:`start` does. Raises :class:`~twoway.errors.ConfigError` if the ``redis`` package
    is missing.

    Not thread-safe: use it from the event loop that started it.
    """

    cluster = True

    def __init__(self, url: str, options: RedisBusOptions | None = None) -> None:
        self.url = url
        self.options = o = options if options is not None else RedisBusOptions()
        self._clients = Clients(url, o)
        self.node = 0
        self._keys = Keys(o.prefix)
        self._listener: BusListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: Inbox | None = None
        self._outbox = Outbox(
            limit=o.buffer_limit, batch_items=o.batch_items, batch_bytes=o.batch_bytes
        )
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._uplink = Uplink(
            url,
            o,
            connect=self._handshake,
            loops=self._loops,
            abort=self._clients.abort,
            close=self._clients.close,
            wake=self._wake.set,
        )
        self._epoch: bytes | None = None
        self._last_id = b"0-0"
        self._caught_up = False
        self._last_read = float("-inf")
        self._last_publish = float("-inf")
        self._main: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopped = False
        #: Counters, for logs and tests.
        self.stats: dict[str, int] = {
            "published": 0,
            "entries_read": 0,
            "dropped": 0,
            "reconnections": 0,
            "gap_notices": 0,
        }
        #: From publication on another node (its wall clock, the entry's ``t``) to our read
        #: of the entry (ours): one observation per entry, not per message.
        self.lag = Buckets(LAG_BOUNDS)

    @property
    def up(self) -> bool:
        """Whether Redis is connected now (for metrics and readiness)."""
        return self._uplink.up

    @property
    def buffered(self) -> int:
        """Items waiting to be sent to the other servers (while Redis is down, say)."""
        return len(self._outbox)

    # ------------------------------------------------------------------ interface

    async def start(self, listener: BusListener) -> None:
        """Connect, take a node number and start reading (every step is bounded by
        ``connect_timeout`` or ``timeout``). If Redis is unreachable, log one line, take a
        random node number and keep retrying in the background: the server starts anyway.
        Raises :class:`~twoway.errors.ConfigError` if Redis refuses the credentials or the
        ACL user lacks a permission the bus needs (every command is tried once). Call
        once."""
        if self._main is not None:
            raise RuntimeError("RedisBus.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        try:
            await self._handshake()
            await self._check_access()
        except Exception as exc:
            problem = refusal(exc, self.url, self.options.prefix)
            if problem is not None:
                await self._clients.close()
                raise ConfigError(f"bus: {problem}") from exc
            if self.node == 0:
                self.node = RANDOM_NODES + random.randrange(RANDOM_NODES)
                log.info("bus: node %d (a random number: redis is unreachable)", self.node)
            if self._inbox is None:
                self._inbox = Inbox(self.node, silence=self.options.silence)
            await self._clients.close()
            self._main = self._loop.create_task(self._uplink.run(exc))
        else:
            self._main = self._loop.create_task(self._uplink.run(None))
        self._ticker = self._loop.create_task(self._tick_loop())

    def publish(self, item: Item) -> None:
        """Queue ``item`` for the other nodes (see :class:`~twoway.bus.Bus`). When the buffer
        is full the item is dropped and counted (announced once Redis is back)."""
        outbox = self._outbox
        if not outbox.put(item):
            self.stats["dropped"] += 1
            if outbox.dropped == 1:
                log.warning(
                    "bus: buffer full (%d items): messages to other servers are dropped",
                    len(outbox),
                )
            return
        self._flushed.clear()
        self._wake.set()

    def where(self, room: str) -> tuple[int, str, int | None]:
        """Where this node is in the log for ``room``: ``(node, the id of the last entry
        read, the room's number of the last line read or None)``. Everything up to that
        entry has been delivered to this node's clients (a resume elsewhere replays from
        there: :mod:`twoway.bus.sessions`)."""
        inbox = self._inbox
        number = None if inbox is None else inbox.room_number(room)
        return self.node, self._last_id.decode(), number

    async def reserve(self, name: str, count: int) -> int | None:
        """Reserve ``count`` numbers of the counter ``name`` in Redis (``INCRBY``, one round
        trip): the first, or None while Redis is unreachable or the command fails (within
        ``timeout``)."""
        if not self._uplink.up or self._uplink.halted:
            return None
        client = self._clients.client
        try:
            last = await asyncio.wait_for(
                client.incrby(self._keys.counter(name), count), self.options.timeout
            )
        except Exception as exc:  # the session's own tasks notice and handle an outage
            log.debug("bus: could not reserve %s numbers (%s)", name, describe(exc))
            return None
        return int(last) - count + 1

    async def stop(self) -> None:
        """Publish a goodbye and flush the buffer (at most ``stop_timeout`` seconds), then
        stop reading and close the connections. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._main is None:
            return
        o = self.options
        if self._uplink.up:
            self._control(Bye())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), o.stop_timeout)
        unsent = self._outbox.pending
        if unsent:
            log.warning("bus: stopping with %d message(s) not sent to other servers", unsent)
        # The tasks are told to end, not cancelled: a cancellation that reaches redis-py
        # while it sends a command can be lost (it sends under asyncio.wait_for, which on
        # Python 3.11 swallows a cancellation that coincides with the send's completion),
        # and the task would go on reading forever. Closing the sockets ends what is in
        # flight; every wait is bounded anyway.
        self._uplink.halt()
        self._wake.set()
        await self._clients.abort()
        tasks = [t for t in (self._main, self._ticker) if t is not None]
        if self._ticker is not None:
            self._ticker.cancel()  # it only sleeps between ticks
        _, pending = await asyncio.wait(tasks, timeout=o.connect_timeout + 2 * o.timeout)
        for task in pending:
            log.warning("bus: a task did not stop in time: cancelling it")
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=o.timeout)
        await self._clients.close()

    # ------------------------------------------------------------------ connection

    async def _handshake(self) -> None:
        """(Re)connect: node number, epoch check, read position. Raises on any failure."""
        clients = self._clients
        if not clients.opened:
            clients.open()
        c = clients.client
        await c.ping()
        await clients.reader.ping()
        if self.node == 0:
            self.node = await take_node(c, self._keys)
        if self._inbox is None:
            self._inbox = Inbox(self.node, silence=self.options.silence)
        joined = await join(
            c,
            self._keys,
            node=self.node,
            epoch=self._epoch,
            last_id=self._last_id,
            backfill=self.options.backfill,
        )
        if joined.reset:
            self._inbox.stream_reset()
        self._epoch = joined.epoch
        self._last_id = joined.last_id
        self._came_up(missed=joined.missed, ask=joined.ask)
        if joined.recent:
            history, skipped = backfill(joined.recent)
            if skipped:
                log.debug("bus: no history from %d malformed entries", skipped)
            if history.lines:
                self._deliver([history])

    async def _check_access(self) -> None:
        """Run once each command the handshake did not: a read that does not block, and the
        publication of the Hello the handshake queued. An ACL without one of them is then
        found at start-up, not later as an endless reconnection."""
        await self._clients.reader.xread({self._keys.log: self._last_id}, count=1)
        batch = self._outbox.batch()
        if batch is not None:
            await self._send(batch)

    def _came_up(self, *, missed: bool, ask: bool) -> None:
        assert self._loop is not None and self._inbox is not None
        now = self._loop.time()
        self._last_read = now
        self._inbox.resume(now)
        if self._uplink.came_up(self.node, self._outbox.pending):
            self.stats["reconnections"] += 1
        if missed:
            self.stats["gap_notices"] += 1
            self._deliver([Missed()])
        self._control(self._snapshot())
        if ask:
            self._control(Ask(0))
            self._inbox.asked_all(now)

    # ------------------------------------------------------------------ tasks

    def _loops(self) -> list[Coroutine[Any, Any, None]]:
        """One session's loops, for the uplink: they run until one fails or it is over."""
        return [self._read_loop(), self._write_loop()]

    async def _write_loop(self) -> None:
        assert self._loop is not None
        outbox = self._outbox
        over = self._uplink.over
        while not over():
            batch = outbox.batch()
            if batch is None:
                self._flushed.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._send(batch)

    async def _send(self, batch: Batch) -> None:
        """Publish ``batch`` (the outbox's next one) and account for it."""
        assert self._loop is not None
        o, keys, outbox, clients = self.options, self._keys, self._outbox, self._clients
        sent_at = f"{time.time():.6f}"  # the readers' lag is measured from here
        await clients.publish(
            keys=[keys.log, keys.pub(self.node)],
            args=[
                *(batch.nseq, o.maxlen, batch.data, keys.seq, o.key_ttl, self.node, sent_at),
                *batch.runs,
            ],
            client=clients.client,
        )
        count = outbox.sent()
        self._last_publish = self._loop.time()
        self.stats["published"] += count
        self._uplink.sent(count, len(outbox))
        overflow = outbox.overflow()
        if overflow is not None:
            self._announce_overflow(*overflow)

    async def _read_loop(self) -> None:
        assert self._loop is not None and self._inbox is not None
        inbox, stream, read_count = self._inbox, self._keys.log, self.options.read_count
        block_ms = max(1, int(self.options.block * 1000))
        over = self._uplink.over
        while not over():
            reply = await self._clients.reader.xread(
                {stream: self._last_id}, count=read_count, block=block_ms
            )
            now = self._loop.time()
            self._last_read = now
            if not reply:
                self._caught_up = True
                continue
            entries: Sequence[RawEntry] = reply[0][1]
            self._caught_up = len(entries) < read_count
            # Past these entries even if handling them fails: a bad entry is never re-read.
            self._last_id = entries[-1][0]
            self.stats["entries_read"] += len(entries)
            observe = self.lag.observe
            for lag in entry_lags(entries, inbox.node, time.time()):
                observe(lag)
            reading = inbox.read(entries, now)
            self.stats["gap_notices"] += reading.gaps
            for entry_id, why in reading.skipped:
                log.warning("bus: skipping entry %s: %s", entry_id.decode(errors="replace"), why)
            for node in reading.ask:
                self._control(Ask(node))
            if reading.events:
                self._deliver(reading.events)
            if reading.reply:
                self._control(self._snapshot())

    async def _tick_loop(self) -> None:
        """Heartbeats and liveness, every half heartbeat."""
        while True:
            await asyncio.sleep(self.options.heartbeat / 2)
            try:
                self._tick()
            except Exception:
                log.exception("bus: error in the heartbeat")

    def _tick(self) -> None:
        assert self._loop is not None
        if not self._uplink.up or self._inbox is None:
            return
        o = self.options
        now = self._loop.time()
        if now - self._last_publish >= o.heartbeat and self._outbox.idle:
            self._control(Heartbeat())
        # Judge the others only while our own reads are healthy and caught up.
        if self._caught_up and now - self._last_read <= o.block + 0.5:
            lost = self._inbox.expired(now)
            if lost:
                for node in lost:
                    log.warning("bus: server %d silent for %.1f s: dropping it", node, o.silence)
                self._deliver([NodeLost(node, "server lost") for node in lost])

    # ------------------------------------------------------------------ helpers

    def _control(self, item: Item) -> None:
        """Queue a bus item of our own (never dropped: the buffer limit is for chat lines)."""
        self._outbox.put_control(item)
        self._flushed.clear()
        self._wake.set()

    def _snapshot(self) -> Hello:
        assert self._listener is not None
        try:
            return self._listener.bus_snapshot()
        except Exception:
            log.exception("bus: error in the listener's snapshot")
            return Hello(())

    def _deliver(self, events: list[BusEvent]) -> None:
        assert self._listener is not None
        try:
            self._listener.bus_events(events)
        except Exception:
            log.exception("bus: error in the listener")

    def _announce_overflow(self, count: int, lost: Lost | None) -> None:
        log.warning("bus: %d message(s) could not be sent to other servers (buffer full)", count)
        if lost is not None:
            self._control(lost)
        self._deliver([Overflow(count)])
