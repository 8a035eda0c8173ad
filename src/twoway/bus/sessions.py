"""Resume sessions every server of a cluster shares, in Redis beside the bus's stream.

A client whose connection to server A is lost may come back on server B (a load balancer,
a deploy, A gone): B must find its ticket, hand it out once, and know what the client had.

Each ticket is one Redis string, ``PREFIX + "session:" + KEY`` (KEY: the token's hash, so
Redis holds no usable token), a JSON object: the ticket
(:func:`~twoway.sansio.chat.resume.ticket_record`) plus where the client was in the shared
log — ``node`` (A's node number), ``at`` (the id of the last stream entry A had read) and
``seq`` (the room's number of the last line A had read, to count what the log no longer
holds). Why strings and not the records hash (:mod:`twoway.bus.records`): a ticket must
expire by itself (``SET ... EX``: Redis forgets it after the window, whatever happens to the
servers; a hash field has no expiry before Redis 7.4) and be taken **once** across servers
(``GETDEL`` is atomic: two servers claiming the same token at once cannot both have it;
an ``HGET`` then ``HDEL`` could).

Writes go out on one thread, in order (the event loop never waits). One that fails (Redis
unreachable: the bus says so too) is a warning, once per cause; that client then cannot
resume (``unknown token``) and goes on as a new guest. Takes and reads of the
log run on the same thread, awaited by the server, off the event loop.

A server that starts (or missed some of the log) learns the nicks held for departed clients
from here (:meth:`RedisSessions.held`: the tickets Redis has, ``SCAN`` then ``MGET``): the
nicks held elsewhere before it could hear of them on the bus.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twoway.bus.clients import describe, refusal
from twoway.bus.scripts import Keys
from twoway.errors import ServiceError
from twoway.sansio.bus.inbox import RawEntry
from twoway.sansio.chat.resume import Ticket, ticket_from_record, ticket_record

__all__ = ["RedisSessions", "Where"]

log = logging.getLogger("twoway.bus")

#: Where a server is in the shared log for a room: ``(node, last entry id read, the room's
#: number of the last line read or None)``.
Where = tuple[int, str, int | None]


#: Keys asked for per SCAN (and read per MGET) when reading every ticket: a hint to Redis,
#: whose SCAN looks at every key of the database (those of other applications too).
_SCAN_COUNT = 1000


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _text(name: bytes | str) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class RedisSessions:
    """Resume tickets in Redis at ``url`` under ``prefix`` (see the module docstring), valid
    ``window`` seconds. ``where(room)`` tells where this server is in the log (set by the
    chat once its bus runs; see :data:`Where`). It is a
    :class:`~twoway.sansio.chat.resume.SessionSink`."""

    def __init__(
        self,
        url: str,
        window: float,
        prefix: str = "twoway:chat:",
        timeout: float = 5.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the redis extra is what --bus needs anyway
            raise ServiceError(
                "bus: the redis package is missing (pip install twoway[redis])"
            ) from None
        self.url = url
        self.prefix = prefix
        self.window = window
        self.wall = wall
        self.where: Callable[[str], Where] = lambda room: (0, "0-0", None)
        self._keys = Keys(prefix)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twoway-sessions")
        self._failing: str | None = None  # the cause last logged (one line per cause)
        self._closing = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}session:{key}"

    # -- SessionSink (the event loop: queue only) -------------------------------------------

    def saved(self, ticket: Ticket) -> None:
        """Keep ``ticket`` (made now) for ``window`` seconds, with where this server was."""
        record = ticket_record(ticket, self.wall())
        record["node"], record["at"], record["seq"] = self.where(ticket.room)
        ttl = max(1, math.ceil(self.window))
        self._thread.submit(self._write, "set", ticket.key, json.dumps(record), ttl)

    def dropped(self, key: str) -> None:
        """Forget the ticket ``key`` (expired here, or claimed)."""
        self._thread.submit(self._write, "del", key, None, 0)

    def _write(self, op: str, key: str, value: str | None, ttl: int) -> None:
        if self._closing and self._failing is not None:
            return  # stopping while redis fails: each write could wait a timeout, for nothing
        try:
            if op == "set":
                assert value is not None
                self._client.set(self._key(key), value, ex=ttl)
            else:
                self._client.delete(self._key(key))
        except Exception as exc:
            self._failed("resume sessions not saved in redis", exc)
        else:
            self._failing = None

    def _failed(self, what: str, exc: BaseException) -> None:
        why = refusal(exc, self.url, self.prefix) or describe(exc)
        if why != self._failing:  # the bus reports the outage itself: one line per cause
            self._failing = why
            log.warning("bus: %s: %s", what, why)

    # -- the server, awaited off the event loop ----------------------------------------------

    async def take(self, key: str) -> dict[str, Any] | None:
        """The ticket ``key``, removed from Redis (``GETDEL``: once across servers); None if
        Redis has none (never made, taken, expired) or cannot be reached (one log line)."""
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(self._thread, self._take, key)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            log.warning("bus: resume session %s… is not JSON: ignored", key[:8])
            return None
        return value if isinstance(value, dict) else None

    def _take(self, key: str) -> bytes | None:
        try:
            raw: Any = self._client.getdel(self._key(key))
            return raw if isinstance(raw, bytes) else None
        except Exception as exc:
            self._failed("cannot read a resume session from redis", exc)
            return None

    async def held(self) -> list[Ticket] | None:
        """Every ticket Redis has whose nick is held (made by any server, this one's earlier
        runs included), each ``left_at`` minus its age (see
        :func:`~twoway.sansio.chat.resume.ticket_from_record`); None if Redis cannot be
        read (one log line). Records that are not tickets are skipped."""
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._thread, self._read_all)
        if found is None:
            return None
        wall = self.wall()
        tickets = []
        for key, raw in found:
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, ValueError):
                continue
            ticket = ticket_from_record(key, record, wall)
            if ticket is not None and ticket.held and -ticket.left_at <= self.window:
                tickets.append(ticket)
        return tickets

    def _read_all(self) -> list[tuple[str, bytes]] | None:
        start = len(self._key(""))
        pattern = _glob_escape(self._key("")) + "*"
        found: list[tuple[str, bytes]] = []
        try:
            cursor: Any = 0
            while True:
                cursor, keys = self._client.scan(cursor, match=pattern, count=_SCAN_COUNT)
                if keys:
                    values: Any = self._client.mget(keys)
                    for name, raw in zip(keys, values, strict=True):
                        if isinstance(raw, bytes):  # (None: taken or expired meanwhile)
                            found.append((_text(name)[start:], raw))
                if not cursor:
                    break
        except Exception as exc:
            self._failed("cannot read the resume sessions in redis", exc)
            return None
        self._failing = None
        return found

    async def entries_after(self, at: str, count: int) -> tuple[list[RawEntry], bool] | None:
        """At most ``count`` entries of the log after entry ``at``, and whether the log was
        trimmed past ``at`` (entries after it are gone); None if Redis cannot be read."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._entries_after, at, count)

    def _entries_after(self, at: str, count: int) -> tuple[list[RawEntry], bool] | None:
        stream = self._keys.log
        try:
            entries: Any = self._client.xrange(stream, f"({at}", "+", count=count)
            trimmed = False
            if at != "0-0":
                head: Any = self._client.xrange(stream, "-", "+", count=1)
                trimmed = bool(head) and _id(head[0][0]) > _id(at)
        except Exception as exc:
            self._failed("cannot read the log for a resume", exc)
            return None
        return list(entries or ()), trimmed

    def close(self) -> None:
        """Finish the writes queued so far (not when redis is failing: they would each wait
        for a timeout), then let go of the connection (may block)."""
        self._closing = True
        self._thread.shutdown(wait=True)
        self._client.close()
