"""Records (accounts, bans, room owners) kept in Redis, beside the bus's stream.

A chat on a bus has no file of its own (several servers, and ``--workers``, share one chat),
so what moderation must remember lives where every server sees it and outlives them all:
one Redis hash per kind, ``PREFIX + "records:" + kind``, each field a key and its JSON value.
Servers learn of changes while they run through the bus (moderation publishes them); a
server that starts reads the hashes once. Writes go out on one thread of their own, in
order, so the event loop never waits for Redis; one that fails is one log line (the change
holds on the servers that heard it on the bus).

It implements :class:`twoway.store.records.Records` (structurally: the bus does not import
the store layer).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twoway.bus.clients import refusal
from twoway.errors import ConfigError, ServiceError

__all__ = ["RedisRecords"]

log = logging.getLogger("twoway.bus")


class RedisRecords:
    """Keyed JSON documents by kind in Redis hashes; see the module docstring."""

    def __init__(self, url: str, prefix: str = "twoway:chat:", timeout: float = 5.0) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the redis extra is what --bus needs anyway
            raise ServiceError(
                "bus: the redis package is missing (pip install twoway[redis])"
            ) from None
        self.url = url
        self.prefix = prefix
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twoway-records")
        #: Kinds that could not be read at start-up (Redis out of reach).
        self._unread: set[str] = set()

    def _key(self, kind: str) -> str:
        return f"{self.prefix}records:{kind}"

    def load(self, kind: str) -> dict[str, Any]:
        """Every record of ``kind`` (start-up: reads on the caller's thread). Redis refusing
        the credentials or the keys is a :class:`ConfigError` (the server does not start);
        Redis out of reach is one warning and no records (the chat goes on, as the bus does)."""
        if self._unread:  # out of reach a moment ago: do not wait for it once per kind
            self._unread.add(kind)
            return {}
        try:
            raw = self._client.hgetall(self._key(kind))
        except Exception as exc:
            refused = refusal(exc, self.url, self.prefix)
            if refused is not None:  # the same words as the bus's own check at start
                raise ConfigError(f"bus: {refused}") from None
            # Out of reach (down, TLS refused): the chat starts and retries, like the bus;
            # what only Redis remembers is unknown here meanwhile, and that is said once.
            if not self._unread:
                log.warning(
                    "bus: records not loaded, redis out of reach (%s): topics, accounts, bans "
                    "and owners kept there are unknown here until a restart with redis up",
                    str(exc) or type(exc).__name__,
                )
            self._unread.add(kind)
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                out[key.decode() if isinstance(key, bytes) else key] = json.loads(value)
            except (UnicodeDecodeError, ValueError):
                log.warning("bus: record %s %r is not JSON: ignored", kind, key)
        return out

    def put(self, kind: str, key: str, value: Any) -> None:
        """Create or replace one record (written in the background)."""
        self._writer.submit(self._write, "hset", kind, key, json.dumps(value))

    def delete(self, kind: str, key: str) -> None:
        """Remove one record (in the background)."""
        self._writer.submit(self._write, "hdel", kind, key, None)

    def _write(self, op: str, kind: str, key: str, value: str | None) -> None:
        try:
            if op == "hset":
                self._client.hset(self._key(kind), key, value)
            else:
                self._client.hdel(self._key(kind), key)
        except Exception as exc:
            why = refusal(exc, self.url, self.prefix) or str(exc) or type(exc).__name__
            log.error("bus: %s record %s not saved in redis: %s", kind, key, why)

    def close(self) -> None:
        """Wait for the writes queued so far, then let go of the connection."""
        self._writer.shutdown(wait=True)
        self._client.close()
