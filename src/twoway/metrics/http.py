"""The metrics endpoint: a small HTTP/1.1 server (GET and HEAD only) on the server's own event
loop, serving ``/metrics``, ``/healthz``, ``/readyz``, ``/status.json`` and the status page.

It is built to be harmless: a request head is at most :data:`MAX_HEAD` bytes and must arrive
within :data:`HEAD_TIMEOUT` seconds, at most :data:`MAX_CLIENTS` are served at once, each
gets one response and is closed. Bad requests get a status code and a one-line body
(400, 401, 404, 405, 413, 431, 503), and a rate-limited log line; nothing a client sends can
stall the loop or grow memory beyond those bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twoway.errors import ListenError, describe_oserror
from twoway.metrics.exposition import CONTENT_TYPE, Exposition
from twoway.metrics.figures import Figures
from twoway.metrics.page import STATUS_PAGE
from twoway.metrics.source import Source
from twoway.sansio.access import LogLimiter

__all__ = [
    "HEAD_TIMEOUT",
    "HISTORY",
    "MAX_CLIENTS",
    "MAX_HEAD",
    "MetricsServer",
    "bind_metrics",
    "status_json",
]

log = logging.getLogger("twoway.metrics")

#: Bytes a request line and its headers may take (nginx's default header buffer is 8 KiB).
MAX_HEAD = 8 * 1024
#: Seconds a client has to send its request head.
HEAD_TIMEOUT = 5.0
#: Requests served at once; more are answered 503 and closed at once.
MAX_CLIENTS = 64
#: Samples kept for the status page's charts, one every :data:`SAMPLE_INTERVAL` seconds
#: (five minutes).
SAMPLE_INTERVAL = 2.0
HISTORY = 150

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"
_PATHS = ("/", "/metrics", "/healthz", "/readyz", "/status.json")


def bind_metrics(host: str, port: int) -> socket.socket:
    """A listening socket for the endpoint, bound before the server starts so that a port
    in use is one error at start-up. Raises :class:`~twoway.errors.ListenError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"--metrics {host}:{port}: unknown host") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"--metrics {host}:{port}: {describe_oserror(exc)}") from exc
    sock.setblocking(False)
    return sock


def status_json(figures: Figures, history: list[list[float]], version: str = "") -> dict[str, Any]:
    """What the status page draws: the key figures and the samples of the last minutes."""
    info = figures.labelled("info")
    started = figures.get("start_time_seconds")
    return {
        "service": next(iter(info), "?"),
        "version": version,
        "uptime": max(0.0, figures.taken - started) if started else 0.0,
        "workers": figures.get("workers"),
        "connections": figures.get("connections_open"),
        "peak": figures.get("connections_peak"),
        "accepted": figures.get("connections_accepted_total"),
        "refused": figures.labelled("connections_refused_total"),
        "bytes_in": figures.get("bytes_received_total"),
        "bytes_out": figures.get("bytes_sent_total"),
        "messages": figures.values.get("chat_lines_received_total"),
        "members": figures.values.get("chat_members"),
        "rooms": figures.values.get("chat_rooms"),
        "bus_up": figures.values.get("bus_up"),
        "protections": {
            "line too long": figures.get("line_too_long_total"),
            "too slow": figures.get("slow_disconnects_total"),
            "idle": figures.get("idle_closes_total"),
            "line timeout": figures.get("line_timeouts_total"),
            "flood drops": figures.get("chat_flood_drops_total"),
            "flood kicks": figures.get("chat_flood_kicks_total"),
        },
        "rss": sum(p.resident_memory_bytes for p in figures.process),
        "lag": figures.get("event_loop_lag_seconds"),
        # [time, connections, messages (or bytes in), bytes out] per sample
        "history": history,
    }


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MetricsServer:
    """Serves ``source``'s figures over HTTP on a listening socket (see the module docstring).

    ``token``: when set, every path but none asks ``Authorization: Bearer TOKEN`` (or
    ``?token=TOKEN``, for a browser opening the status page). :meth:`start` and
    :meth:`close` run in the event loop that serves it.
    """

    def __init__(self, source: Source, *, token: str | None = None, version: str = "") -> None:
        self.source = source
        self.version = version
        self.token = token.encode() if token else None
        self.exposition = Exposition()
        self.history: deque[list[float]] = deque(maxlen=HISTORY)
        self.served = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._sampler: asyncio.Task[None] | None = None
        self._limiter = LogLimiter(60.0)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` it listens on."""
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (from :func:`bind_metrics`) and start sampling for the page."""
        self._server = await asyncio.start_server(self._client, sock=sock, limit=MAX_HEAD)
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def close(self) -> None:
        """Stop listening, end the requests in progress. Idempotent."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            if self._clients:
                await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ sampling

    async def _sample_forever(self) -> None:
        while True:
            try:
                self.sample(await self.source.figures())
            except Exception as exc:  # a worker gone mid-reading: the next sample will do
                log.debug("metrics: sample failed: %r", exc)
            await asyncio.sleep(SAMPLE_INTERVAL)

    def sample(self, figures: Figures) -> None:
        """Add one point to the status page's history."""
        messages = figures.values.get("chat_lines_received_total")
        if messages is None:
            messages = figures.get("bytes_received_total")
        self.history.append(
            [
                round(figures.taken, 3),
                figures.get("connections_open"),
                messages,
                figures.get("bytes_sent_total"),
            ]
        )

    # ------------------------------------------------------------------ requests

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > MAX_CLIENTS:
                await self._reply(writer, 503, _TEXT, b"busy: too many requests at once\n", "GET")
            else:
                await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a bug: one line and a 500, never a dead endpoint
            log.error("metrics: error answering a request: %r", exc, exc_info=exc)
            with contextlib.suppress(Exception):
                await self._reply(writer, 500, _TEXT, b"internal error\n", "GET")
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        method = "GET"
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except asyncio.LimitOverrunError:
                raise _BadRequest(431, f"request head over {MAX_HEAD} bytes") from None
            except asyncio.IncompleteReadError:
                return  # the client left before finishing its request: nobody to answer
            except TimeoutError:
                raise _BadRequest(408, f"no complete request within {HEAD_TIMEOUT:g} s") from None
            method, target, headers = _parse_head(head)
            status, ctype, body = await self._route(method, target, headers)
        except _BadRequest as bad:
            self._log_bad(peer, bad)
            await self._reply(writer, bad.status, _TEXT, bad.message.encode() + b"\n", method)
            return
        self.served += 1
        await self._reply(writer, status, ctype, body, method)

    async def _route(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        parts = urlsplit(target)
        path = parts.path
        if path not in _PATHS:
            raise _BadRequest(404, f"not found: {path[:80]} (try /metrics, /healthz, /readyz, /)")
        if method not in ("GET", "HEAD"):
            raise _BadRequest(405, f"method {method[:20]} not allowed (GET or HEAD)")
        if "content-length" in headers and headers["content-length"].strip() != "0":
            raise _BadRequest(413, "a request body is not accepted")
        if "transfer-encoding" in headers:
            raise _BadRequest(413, "a request body is not accepted")
        if self.token is not None and not self._authorized(headers, parts.query):
            raise _BadRequest(401, "unauthorized: give the metrics token (Bearer)")
        source = self.source
        if path == "/metrics":
            body = self.exposition.render(await source.figures())
            return 200, CONTENT_TYPE, body
        if path in ("/healthz", "/readyz"):
            ok, reason = await (source.health() if path == "/healthz" else source.ready())
            return (200 if ok else 503), _TEXT, reason.encode() + b"\n"
        if path == "/status.json":
            data = status_json(await source.figures(), list(self.history), self.version)
            return 200, "application/json", json.dumps(data).encode()
        return 200, "text/html; charset=utf-8", STATUS_PAGE

    def _authorized(self, headers: dict[str, str], query: str) -> bool:
        assert self.token is not None
        given = ""
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        elif query:
            given = parse_qs(query).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token)

    async def _reply(
        self, writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, method: str
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        if status == 401:
            head.append('WWW-Authenticate: Bearer realm="twoway"')
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if method != "HEAD":
            writer.write(body)
        # A client that does not read its answer cannot hold the task: bounded like the head.
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT)

    def _log_bad(self, peer: Any, bad: _BadRequest) -> None:
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        silenced = self._limiter.check((host, str(bad.status)), time.monotonic())
        if silenced is None:
            return
        more = f" ({silenced} more since the last line)" if silenced else ""
        log.warning("metrics: %s: %d %s%s", host, bad.status, bad.message, more)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """``(method, target, headers)`` of a request head; :class:`_BadRequest` if malformed."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "bad request: not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise _BadRequest(400, "bad request line (expected: GET /path HTTP/1.1)")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "bad header line")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], headers
