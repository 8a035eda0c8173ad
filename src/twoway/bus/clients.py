"""The Redis connections of a bus: opening them with every timeout set, closing them, and
saying in a few words why one failed. ``redis`` is imported here, lazily, and nowhere else."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twoway.bus.options import RedisBusOptions
from twoway.bus.scripts import PUBLISH
from twoway.errors import BusProtocolError, ConfigError, describe_oserror

__all__ = [
    "NEEDED_ACL",
    "Clients",
    "describe",
    "expected_errors",
    "import_redis",
    "refusal",
    "safe_url",
]

#: What a Redis ACL user needs for the bus (besides ``~PREFIX*`` on the keys): the commands
#: sent, and those the Lua scripts run. Said in the error for a user that lacks one.
NEEDED_ACL = (
    "+ping +get +set +incrby +expire +xadd +xread +xrange +xrevrange +eval +evalsha +script|load"
    " +hgetall +hset +hdel +getdel +del +scan +mget"
)


def import_redis() -> Any:
    """``redis.asyncio``, or a :class:`ConfigError` saying how to install it."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError(
            "bus redis needs the redis package: pip install 'twoway[redis]'"
        ) from None
    return aioredis


def safe_url(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Clients:
    """Two redis.asyncio clients for ``url`` (objects of a lazily imported module, hence
    ``Any``): ``client`` for writes and set-up, ``reader`` for the blocking read, and
    ``publish`` (the publication script on ``client``). None until :meth:`open`.
    Raises :class:`ConfigError` if the ``redis`` package is missing."""

    def __init__(self, url: str, options: RedisBusOptions) -> None:
        self._redis = import_redis()
        self.url = url
        self.options = options
        self.client: Any = None
        self.reader: Any = None
        self.publish: Any = None

    @property
    def opened(self) -> bool:
        return self.client is not None

    def open(self) -> None:
        """Create both clients (they connect on their first command)."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        o = self.options
        common: dict[str, Any] = {
            "socket_connect_timeout": o.connect_timeout,
            # Retries are ours (with backoff and one log line); redis-py's would hide an
            # outage and repeat commands behind our back.
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            "single_connection_client": True,
        }
        redis_cls = self._redis.Redis
        self.client = redis_cls.from_url(self.url, socket_timeout=o.timeout, **common)
        self.reader = redis_cls.from_url(self.url, socket_timeout=o.block + o.timeout, **common)
        self.publish = self.client.register_script(PUBLISH)

    async def close(self) -> None:
        """Close both clients (bounded: redis-py closes within ``connect_timeout``).
        Idempotent; never raises."""
        clients = [c for c in (self.client, self.reader) if c is not None]
        self.client = self.reader = self.publish = None
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def abort(self) -> None:
        """Close the sockets under any command in flight: it fails at once (or at its own
        timeout if the socket cannot close), and the task running it ends by itself. The
        clients stay (see :meth:`close`); never raises."""
        for client in (self.client, self.reader):
            conn = getattr(client, "connection", None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)


def expected_errors() -> tuple[type[BaseException], ...]:
    """The errors a lost or stalled connection raises (anything else is a bug)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError, BusProtocolError)


def describe(exc: BaseException | None) -> str:
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
    return _house_style(exc)


def _house_style(exc: BaseException) -> str:
    """redis-py's message as a phrase of ours: its first line, no capital, no full stop
    (``Connection closed by server.`` becomes ``connection closed by the server``)."""
    lines = str(exc).strip().splitlines()
    text = (lines[0] if lines else type(exc).__name__)[:200].rstrip(".")
    if text == "Connection closed by server":
        return "connection closed by the server"
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def refusal(exc: BaseException, url: str, prefix: str) -> str | None:
    """If ``exc`` says Redis refused the credentials of ``url`` or refused its user a
    command or a key (an ACL), that configuration error in one phrase for the operator;
    None for anything else (an outage, which is retried). ``prefix``: the bus's keys."""
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

    if not isinstance(exc, (ResponseError, AuthenticationError)):  # the latter is neither
        return None
    text = _house_style(exc)
    upper = str(exc).upper()
    user = urlsplit(url).username or "default"
    # A RESP3 client's HELLO without credentials is refused with "HELLO must be called with
    # the client already authenticated": the same missing password.
    if (
        "AUTHENTICATION REQUIRED" in upper
        or upper.startswith("NOAUTH")
        or "ALREADY AUTHENTICATED" in upper
    ):
        return "redis requires a password (NOAUTH): put it in the URL, redis://:PASSWORD@HOST"
    if "INVALID USERNAME-PASSWORD" in upper or upper.startswith("WRONGPASS"):
        return f"redis refused user {user!r} and its password (WRONGPASS: {text})"
    if isinstance(exc, AuthenticationError) or ("AUTH" in upper and "ARGUMENTS" in upper):
        return f"redis refused the credentials in the URL ({text})"
    if (
        isinstance(exc, NoPermissionError)
        or upper.startswith("NOPERM")
        or "USER EXECUTING THE SCRIPT CAN'T" in upper
    ):
        text = text.split(" script: ", 1)[0]  # the script's sha and line say nothing more
        return (
            f"redis user {user!r} lacks a permission the bus needs (NOPERM: {text}); "
            f"it needs ~{prefix}* {NEEDED_ACL}"
        )
    return None
