"""The Redis bus: chat servers on several processes or machines, joined through one Redis.

Each node delivers to its own clients itself and publishes what the others must know (see
:mod:`twoway.sansio.busproto`) into one Redis stream; every node reads that stream from the
last id it read. Keys, under ``prefix`` (``twoway:chat:``):

* ``log`` — the stream. One entry per event-loop iteration with something to publish (the
  items of that iteration travel together), trimmed with ``XADD MAXLEN ~ maxlen``.
* ``seq`` — a hash, room -> number of the room's last line ("each room has a sequence
  number"); ``pub`` — a hash, node -> number of the node's last entry; ``nodes`` — the
  counter node numbers come from; ``epoch`` — a random token set once (``SET NX``).

A publication is one Lua script (atomic): it drops an entry number the node already
published (a publish repeated after a lost reply lands once), numbers the room lines
(``HINCRBY``) and appends the entry (``XADD``).

What happens when Redis is not there — the point of this module:

* Local chat never waits: :meth:`RedisBus.publish` appends to a bounded buffer and returns.
  The buffer keeps what could not be sent (``buffer_limit`` items); beyond that, lines are
  dropped and counted, and once Redis is back every local room reads
  ``* notice: N messages could not be sent to other servers`` while the other nodes are told
  which of their rooms lost lines.
* Every command has a timeout (``timeout``; ``block + timeout`` for the blocking read), so a
  Redis that stops answering (SIGSTOP, a blackhole) is noticed like one that refuses.
* One log line when Redis becomes unreachable (``bus: redis unreachable (connection
  refused), retrying in 0.5 s``) and one when it is back (``bus: redis back, 14 messages
  sent``), whatever happens in between; retries follow
  :func:`~twoway.sansio.backoff.backoff_delays`.
* On every reconnection the node publishes its complete state (a Hello), so every directory
  is repaired. If Redis lost its data (the epoch token changed) or trimmed the stream past
  this node's position, the local rooms read ``* notice: messages from other servers may
  have been missed`` and every node is asked for its Hello: never a silent gap.
* Nothing here raises into the server: an unexpected error is logged with its traceback and
  handled like a lost connection.

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
import secrets
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twoway.bus import Backfill, BusEvent, BusListener, Missed, NodeLost, Overflow
from twoway.errors import ConfigError, describe_oserror
from twoway.sansio.backoff import backoff_delays
from twoway.sansio.busproto import (
    Ask,
    Bye,
    Heartbeat,
    Hello,
    Inbox,
    Item,
    Lost,
    NodeGap,
    ProtocolError,
    Received,
    RoomGap,
    Unknown,
    decode_entry,
    encode_items,
    room_runs,
)
from twoway.sansio.chat import Gone, Presence, Said, Send, TopicSet

__all__ = ["RedisBus"]

log = logging.getLogger("twoway.bus")

# Numbers from the Redis counter stay below this; a node that must start while Redis is
# unreachable draws a random number at or above it, so the two never collide.
_RANDOM_NODES = 1 << 30

# KEYS: the stream, this node's last published entry number. ARGV: entry number, maxlen,
# data, room-counter key prefix, key TTL, node, then (room, count) pairs. Both kinds of
# counter are plain keys with a TTL, refreshed on each use, so the keys of nodes and rooms
# that are gone expire instead of piling up in Redis. A room idle past the TTL restarts its
# numbering at 1, which readers take as a restart, never as a gap.
_PUBLISH = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) <= last then return 0 end
local ttl = tonumber(ARGV[5])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl)
local runs = {}
for i = 7, #ARGV, 2 do
  local count = tonumber(ARGV[i + 1])
  local key = ARGV[4] .. ARGV[i]
  local last = redis.call('INCRBY', key, count)
  redis.call('EXPIRE', key, ttl)
  runs[#runs + 1] = ARGV[i] .. ' ' .. (last - count + 1) .. ' ' .. count
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
           'n', ARGV[6], 's', ARGV[1], 'd', ARGV[3], 'q', table.concat(runs, ','))
return 1
"""

# After Redis lost its data the counter restarts: lift it above this node's number so a node
# that starts later does not get the same one.
_RAISE_COUNTER = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

# What counts as a "message" in logs and for the buffer limit: the chat's items. The bus's
# own (Hello, Ask, Lost, Heartbeat, Bye) are never dropped nor counted.
_USER_KINDS: frozenset[type] = frozenset({Said, Send, TopicSet, Presence, Gone})


def _import_redis() -> Any:
    """``redis.asyncio``, or a :class:`ConfigError` saying how to install it."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError(
            "bus redis needs the redis package: pip install 'twoway[redis]'"
        ) from None
    return aioredis


def _safe_url(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _stream_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


def _size(item: Item) -> int:
    """A rough size of ``item`` once encoded, to bound the size of one entry."""
    kind = type(item)
    if kind is Said:
        assert isinstance(item, Said)
        return len(item.text) + len(item.room) + 16
    if kind is Send:
        assert isinstance(item, Send)
        return len(item.text) + 32
    if kind is TopicSet:
        assert isinstance(item, TopicSet)
        return len(item.topic) + len(item.room) + len(item.nick) + 16
    if kind is Hello:
        assert isinstance(item, Hello)
        return 64 * len(item.members) + sum(len(t) + 40 for _, t in item.topics) + 16
    return 48


class _Batch:
    """An entry being published: frozen once formed, so a retry repeats it exactly."""

    __slots__ = ("count", "data", "items", "nseq", "runs")

    def __init__(self, nseq: int, items: list[Item], count: int) -> None:
        self.nseq = nseq
        self.items = items
        self.data = encode_items(items)
        self.runs = [x for room, n in room_runs(items) for x in (room, n)]
        self.count = count  # chat items (messages), as opposed to the bus's own


class RedisBus:
    """The bus through Redis at ``url`` (``redis://HOST:PORT/DB``, ``rediss://``,
    ``unix://``). Creating it connects to nothing; :meth:`start` does.

    Keyword arguments (seconds unless said otherwise; the reason for each default is beside
    it in the code):

    * ``prefix`` — the keys' prefix; nodes sharing it form one chat.
    * ``buffer_limit`` — items kept while Redis is unreachable (10,000: a few minutes of a
      busy server's chat; about 1-2 MB). Beyond it, lines are dropped, counted and announced.
    * ``maxlen`` — approximate length of the stream in entries (100,000: an outage of a
      reader that long can be caught up from the stream).
    * ``heartbeat`` — at least one entry per node this often (1.0); ``silence`` — a node
      silent this long is dropped (3.5: three heartbeats and a half).
    * ``connect_timeout`` (1.0), ``timeout`` (2.0: a stalled Redis is noticed within it),
      ``block`` (1.0: how long one blocking read waits for entries).
    * ``retry_initial`` (0.5) and ``retry_max`` (4.0): the reconnection backoff.
    * ``stop_timeout`` — how long :meth:`stop` tries to flush (2.0).
    * ``key_ttl`` — the per-node and per-room counter keys expire after this long unused
      (7 days): what departed nodes and abandoned rooms leave in Redis goes away.
    * ``backfill`` — entries read back from the log when the node first connects, for the
      rooms' history (500; 0: none): a server that joins late still shows recent lines.

    Not thread-safe: use it from the event loop that started it.
    """

    cluster = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "twoway:chat:",
        buffer_limit: int = 10_000,
        maxlen: int = 100_000,
        heartbeat: float = 1.0,
        silence: float = 3.5,
        connect_timeout: float = 1.0,
        timeout: float = 2.0,
        block: float = 1.0,
        read_count: int = 100,  # entries per read: bounds the work of one loop iteration
        batch_items: int = 500,  # items per entry: bounds one entry (and one script call)
        batch_bytes: int = 256 * 1024,
        retry_initial: float = 0.5,
        retry_max: float = 4.0,
        stop_timeout: float = 2.0,
        key_ttl: int = 7 * 24 * 3600,
        backfill: int = 500,
    ) -> None:
        if min(buffer_limit, maxlen, read_count, batch_items, key_ttl) < 1:
            raise ValueError(
                "buffer_limit, maxlen, read_count, batch_items and key_ttl must be >= 1"
            )
        self._redis = _import_redis()
        self.url = url
        self.node = 0
        self.prefix = prefix
        self.buffer_limit = buffer_limit
        self.maxlen = maxlen
        self.heartbeat = heartbeat
        self.silence = silence
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.block = block
        self.read_count = read_count
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.stop_timeout = stop_timeout
        self.key_ttl = key_ttl
        self.backfill = max(0, backfill)
        self._keys = [prefix + "log"]
        self._listener: BusListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # redis.asyncio objects (imported lazily, hence Any): one connection for writes and
        # set-up, one for the blocking read.
        self._client: Any = None
        self._reader: Any = None
        self._publish_script: Any = None
        self._inbox: Inbox | None = None
        self._queue: deque[Item] = deque()
        self._queued = 0  # chat items in the queue (the bus's own are not counted)
        self._batch: _Batch | None = None
        self._nseq = 0
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._halt = asyncio.Event()  # stop() was called
        self._session_over = False  # the current connection is being given up
        self._up = False
        self._down_since: float | None = None
        self._backlog: int | None = None  # messages queued when redis came back
        self._backlog_done = 0
        self._dropped = 0
        self._dropped_rooms: dict[str, int] = {}
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
        }

    # ------------------------------------------------------------------ interface

    async def start(self, listener: BusListener) -> None:
        """Connect, take a node number and start reading (every step is bounded by
        ``connect_timeout`` or ``timeout``). If Redis is unreachable, log one line, take a
        random node number and keep retrying in the background: the server starts anyway.
        Call once."""
        if self._main is not None:
            raise RuntimeError("RedisBus.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        try:
            await self._handshake()
        except Exception as exc:
            if self.node == 0:
                self.node = _RANDOM_NODES + random.randrange(_RANDOM_NODES)
                log.info("bus: node %d (a random number: redis is unreachable)", self.node)
            if self._inbox is None:
                self._inbox = Inbox(self.node, silence=self.silence)
            await self._drop_connections()
            reason = self._describe(exc)
            self._main = self._loop.create_task(self._run(reason))
        else:
            self._main = self._loop.create_task(self._run(None))
        self._ticker = self._loop.create_task(self._tick_loop())

    def publish(self, item: Item) -> None:
        """Queue ``item`` for the other nodes (see :class:`~twoway.bus.Bus`). When the buffer
        is full the item is dropped and counted (announced once Redis is back)."""
        if self._queued >= self.buffer_limit:
            self._drop(item)
            return
        self._queued += 1
        self._queue.append(item)
        self._flushed.clear()
        self._wake.set()

    async def stop(self) -> None:
        """Publish a goodbye and flush the buffer (at most ``stop_timeout`` seconds), then
        stop reading and close the connections. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._main is None:
            return
        if self._up:
            self._control(Bye())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), self.stop_timeout)
        unsent = self._pending_messages()
        if unsent:
            log.warning("bus: stopping with %d message(s) not sent to other servers", unsent)
        # The tasks are told to end, not cancelled: a cancellation that reaches redis-py
        # while it sends a command can be lost (it sends under asyncio.wait_for, which on
        # Python 3.11 swallows a cancellation that coincides with the send's completion),
        # and the task would go on reading forever. Closing the sockets ends what is in
        # flight; every wait is bounded anyway.
        self._halt.set()
        self._wake.set()
        await self._abort_connections()
        tasks = [t for t in (self._main, self._ticker) if t is not None]
        if self._ticker is not None:
            self._ticker.cancel()  # it only sleeps between ticks
        _, pending = await asyncio.wait(tasks, timeout=self.connect_timeout + 2 * self.timeout)
        for task in pending:
            log.warning("bus: a task did not stop in time: cancelling it")
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.timeout)
        await self._drop_connections()

    # ------------------------------------------------------------------ connection

    def _connect(self) -> None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        common: dict[str, Any] = {
            "socket_connect_timeout": self.connect_timeout,
            # Retries are ours (with backoff and one log line); redis-py's would hide an
            # outage and repeat commands behind our back.
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            "single_connection_client": True,
        }
        redis_cls = self._redis.Redis
        self._client = redis_cls.from_url(self.url, socket_timeout=self.timeout, **common)
        self._reader = redis_cls.from_url(
            self.url, socket_timeout=self.block + self.timeout, **common
        )
        self._publish_script = self._client.register_script(_PUBLISH)

    async def _drop_connections(self) -> None:
        """Close both clients (bounded: redis-py closes within ``connect_timeout``)."""
        clients = [c for c in (self._client, self._reader) if c is not None]
        self._client = self._reader = self._publish_script = None
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _abort_connections(self) -> None:
        """Close the sockets under any command in flight: it fails at once (or at its own
        timeout if the socket cannot close), and the task running it ends by itself."""
        for client in (self._client, self._reader):
            conn = getattr(client, "connection", None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)

    async def _handshake(self) -> None:
        """(Re)connect: node number, epoch check, read position. Raises on any failure."""
        if self._client is None:
            self._connect()
        c = self._client
        await c.ping()
        await self._reader.ping()
        k_nodes, k_epoch = self.prefix + "nodes", self.prefix + "epoch"
        if self.node == 0:
            self.node = int(await c.incr(k_nodes))
        if self._inbox is None:
            self._inbox = Inbox(self.node, silence=self.silence)
        # A fresh token each time (never one copied into forked workers): if Redis lost its
        # data, whoever connects first sets a value nobody has seen before.
        token = secrets.token_hex(16).encode()
        created = await c.set(k_epoch, token, nx=True)
        epoch = token if created else await c.get(k_epoch)
        if epoch is None:  # deleted between the two commands
            await c.set(k_epoch, token)
            epoch = token
        missed = ask = False
        backfill: Backfill | None = None
        if self._epoch is None:  # the first time: start reading from now on
            recent = await c.xrevrange(self._keys[0], count=max(1, self.backfill))
            self._last_id = recent[0][0] if recent else b"0-0"
            if self.backfill:
                backfill = self._backfill_from(reversed(recent))
            ask = True
        elif epoch != self._epoch:
            log.warning("bus: redis lost its data: messages from other servers may be missing")
            self._last_id = b"0-0"
            self._inbox.stream_reset()
            if self.node < _RANDOM_NODES:
                await c.eval(_RAISE_COUNTER, 1, k_nodes, self.node)
            missed = ask = True
        elif self._last_id != b"0-0":
            oldest = await c.xrange(self._keys[0], count=1)
            if not oldest or _stream_id(oldest[0][0]) > _stream_id(self._last_id):
                log.warning("bus: the stream was trimmed past this server's position")
                missed = ask = True
        self._epoch = epoch
        self._came_up(missed=missed, ask=ask)
        if backfill is not None and backfill.lines:
            self._deliver([backfill])

    def _backfill_from(self, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> Backfill:
        """The room lines of ``entries`` (oldest first), for the rooms' history."""
        lines: list[tuple[str, str]] = []
        for entry_id, fields in entries:
            try:
                entry = decode_entry(fields)
            except ProtocolError as exc:
                log.debug("bus: no history from entry %s: %s", entry_id, exc)
                continue
            lines += ((i.room, i.text) for i in entry.items if type(i) is Said)
        return Backfill(tuple(lines))

    def _came_up(self, *, missed: bool, ask: bool) -> None:
        assert self._loop is not None and self._inbox is not None
        now = self._loop.time()
        self._up = True
        self._last_read = now
        self._inbox.resume(now)
        if self._down_since is None:
            log.info("bus: redis at %s, node %d", _safe_url(self.url), self.node)
        else:
            self.stats["reconnections"] += 1
            self._backlog = self._pending_messages()
            self._backlog_done = 0
            if not self._backlog:
                self._back()
        if missed:
            self._deliver([Missed()])
        self._control(self._snapshot())
        if ask:
            self._control(Ask(0))
            self._inbox.asked_all(now)

    def _back(self) -> None:
        assert self._loop is not None and self._down_since is not None
        down = self._loop.time() - self._down_since
        log.info("bus: redis back, %d messages sent (down %.1f s)", self._backlog or 0, down)
        self._backlog = None
        self._down_since = None

    # ------------------------------------------------------------------ tasks

    async def _run(self, reason: str | None) -> None:
        """Keep the bus connected until :meth:`stop`: serve while up, reconnect with backoff
        when down."""
        while not self._halt.is_set():
            if reason is not None and not await self._reconnect(reason):
                return
            reason = await self._serve()

    async def _reconnect(self, reason: str) -> bool:
        """Retry until connected (True) or stopped (False)."""
        assert self._loop is not None
        self._up = False
        delays = backoff_delays(self.retry_initial, 2.0, self.retry_max, 0.1, random.random)
        delay = next(delays)
        if self._down_since is None:  # not yet reported (a failed reconnection is not news)
            self._down_since = self._loop.time()
            log.warning("bus: redis unreachable (%s), retrying in %.1f s", reason, delay)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt.wait(), delay)
            if self._halt.is_set():
                return False
            try:
                await self._handshake()
            except Exception as exc:
                await self._drop_connections()
                log.debug("bus: redis still unreachable (%s)", self._describe(exc))
                delay = next(delays)
            else:
                return True

    async def _serve(self) -> str:
        """Read and write until one of them fails (or :meth:`stop`); return why."""
        assert self._loop is not None
        self._session_over = False
        tasks = [
            self._loop.create_task(self._read_loop()),
            self._loop.create_task(self._write_loop()),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # What ended first says why; what the other one raises once we close its socket
        # under it does not.
        exc = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
        # End the other one without cancelling it (see stop()).
        self._up = False
        self._session_over = True
        self._wake.set()
        await self._abort_connections()
        _, pending = await asyncio.wait(tasks, timeout=self.block + self.timeout)
        for task in pending:  # a last resort: every command has a timeout
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.timeout)
        for task in tasks:  # retrieved, so that asyncio does not log them
            if task.done() and not task.cancelled():
                task.exception()
        if self._halt.is_set():
            exc = None  # stop() closed the connections
        elif exc is not None and not isinstance(exc, self._expected):
            log.error("bus: unexpected error (handled as a lost connection)", exc_info=exc)
        await self._drop_connections()
        return self._describe(exc)

    async def _write_loop(self) -> None:
        assert self._loop is not None
        queue = self._queue
        while not (self._session_over or self._halt.is_set()):
            batch = self._batch
            if batch is None:
                while not queue:
                    self._flushed.set()
                    self._wake.clear()
                    await self._wake.wait()
                    if self._session_over or self._halt.is_set():
                        return
                batch = self._batch = self._next_batch()
            await self._publish_script(
                keys=[self._keys[0], f"{self.prefix}pub:{self.node}"],
                args=[
                    batch.nseq,
                    self.maxlen,
                    batch.data,
                    self.prefix + "seq:",
                    self.key_ttl,
                    self.node,
                    *batch.runs,
                ],
                client=self._client,
            )
            self._batch = None
            self._last_publish = self._loop.time()
            self.stats["published"] += batch.count
            if self._backlog is not None:
                self._backlog_sent(batch.count)
            if self._dropped and self._queued < self.buffer_limit // 2:
                self._announce_overflow()

    def _next_batch(self) -> _Batch:
        queue = self._queue
        items: list[Item] = []
        size = count = 0
        while queue and len(items) < self.batch_items and size < self.batch_bytes:
            item = queue.popleft()
            items.append(item)
            kind = type(item)
            if kind is Said:  # the common case, inline
                size += len(item.text) + 32  # type: ignore[union-attr]
                count += 1
            else:
                size += _size(item)
                count += kind in _USER_KINDS
        self._nseq += 1
        self._queued -= count
        return _Batch(self._nseq, items, count)

    def _backlog_sent(self, count: int) -> None:
        assert self._backlog is not None
        self._backlog_done += count
        if self._backlog_done >= self._backlog or not self._queue:
            self._back()  # everything queued during the outage is out

    async def _read_loop(self) -> None:
        assert self._loop is not None and self._inbox is not None
        stream = self._keys[0]
        block_ms = max(1, int(self.block * 1000))
        while not (self._session_over or self._halt.is_set()):
            reply = await self._reader.xread(
                {stream: self._last_id}, count=self.read_count, block=block_ms
            )
            now = self._loop.time()
            self._last_read = now
            if not reply:
                self._caught_up = True
                continue
            entries = reply[0][1]
            self._caught_up = len(entries) < self.read_count
            self._handle(entries, now)

    def _handle(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]], now: float) -> None:
        assert self._inbox is not None
        inbox = self._inbox
        node = self.node
        own = str(node).encode()
        events: list[BusEvent] = []
        reply = False
        missed = False
        for entry_id, fields in entries:
            self._last_id = entry_id
            self.stats["entries_read"] += 1
            mine = fields.get(b"n") == own
            if mine and not fields.get(b"q"):
                continue  # our own entry without room lines: nothing to track
            try:
                entry = decode_entry(fields, items=not mine)
            except ProtocolError as exc:
                log.warning("bus: skipping entry %s: %s", entry_id.decode(errors="replace"), exc)
                continue
            for event in inbox.feed(entry, now):
                kind = type(event)
                if kind is Received:
                    assert isinstance(event, Received)
                    item = event.item
                    what = type(item)
                    if what is Heartbeat:
                        continue
                    if what is Ask:
                        assert isinstance(item, Ask)
                        reply = reply or item.target in (0, node)
                        continue
                    if what is Bye:
                        inbox.forget(event.node)
                        events.append(NodeLost(event.node, "server stopped"))
                        continue
                    events.append(event)
                elif kind is NodeGap:
                    if not missed:
                        missed = True
                        events.append(Missed())
                elif kind is Unknown:
                    assert isinstance(event, Unknown)
                    self._control(Ask(event.node))
                else:
                    assert isinstance(event, RoomGap)
                    events.append(event)
        if events:
            self._deliver(events)
        if reply:
            self._control(self._snapshot())

    async def _tick_loop(self) -> None:
        """Heartbeats and liveness, every half heartbeat."""
        while True:
            await asyncio.sleep(self.heartbeat / 2)
            try:
                self._tick()
            except Exception:
                log.exception("bus: error in the heartbeat")

    def _tick(self) -> None:
        assert self._loop is not None
        if not self._up or self._inbox is None:
            return
        now = self._loop.time()
        if now - self._last_publish >= self.heartbeat and not self._queue and self._batch is None:
            self._control(Heartbeat())
        # Judge the others only while our own reads are healthy and caught up.
        if self._caught_up and now - self._last_read <= self.block + 0.5:
            lost = self._inbox.expired(now)
            if lost:
                for node in lost:
                    log.warning("bus: server %d silent for %.1f s: dropping it", node, self.silence)
                self._deliver([NodeLost(node, "server lost") for node in lost])

    # ------------------------------------------------------------------ helpers

    def _control(self, item: Item) -> None:
        """Queue a bus item of our own (never dropped: the buffer limit is for chat lines)."""
        self._queue.append(item)
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

    def _drop(self, item: Item) -> None:
        if not self._dropped:
            log.warning(
                "bus: buffer full (%d items): messages to other servers are dropped",
                len(self._queue),
            )
        self._dropped += 1
        self.stats["dropped"] += 1
        if type(item) is Said:
            assert isinstance(item, Said)
            self._dropped_rooms[item.room] = self._dropped_rooms.get(item.room, 0) + 1

    def _announce_overflow(self) -> None:
        count, rooms = self._dropped, self._dropped_rooms
        self._dropped, self._dropped_rooms = 0, {}
        log.warning("bus: %d message(s) could not be sent to other servers (buffer full)", count)
        if rooms:
            self._control(Lost(tuple(rooms.items())))
        self._deliver([Overflow(count)])

    def _pending_messages(self) -> int:
        return self._queued + (self._batch.count if self._batch is not None else 0)

    @property
    def _expected(self) -> tuple[type[BaseException], ...]:
        """The errors a lost or stalled connection raises (anything else is a bug)."""
        from redis.exceptions import RedisError

        return (RedisError, OSError, TimeoutError, ProtocolError)

    def _describe(self, exc: BaseException | None) -> str:
        """A short reason for a log line: ``connection refused``, ``timed out``..."""
        if exc is None:
            return "connection closed"
        from redis.exceptions import TimeoutError as RedisTimeoutError

        timeouts = (TimeoutError, RedisTimeoutError)
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, timeouts):
                return "timed out"
            if isinstance(seen, OSError):
                return describe_oserror(seen)
            seen = seen.__cause__ or seen.__context__
        text = str(exc).strip().splitlines()
        return (text[0] if text else type(exc).__name__)[:200]
