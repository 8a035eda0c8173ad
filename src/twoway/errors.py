"""The errors twoway raises, and who is to blame for each.

::

    TwowayError
     ├── ConfigError            the user's settings are invalid (names the key and the value)
     ├── ServiceError           an unknown service, or a service that cannot start
     ├── ListenError            the server cannot listen (port in use, permission denied)
     ├── ConnectError           the client cannot connect
     │    ├── RetryableConnectError   refused, reset or timed out: trying again may help
     │    └── FatalConnectError       unknown host, bad address: trying again will not help
     ├── ConnectionClosed       an operation on a connection that is already closed
     │    ├── ConnectionClosedLocally  this side closed it (close, abort, end): your code's doing
     │    └── ConnectionLost           it broke: the peer reset it or went away
     ├── BusProtocolError       an entry in the bus's log is not bus data (another program
     │                          wrote it, or a bug): the entry is skipped and reported
     └── ProxyProtocolError     a PROXY protocol header is malformed, truncated or oversized
                                (the proxy, or whoever forged it, is to blame): the
                                connection is closed and one line is logged

The peer's bad input is never an exception: it becomes an event or an error line to the peer.
``OSError`` from the kernel is translated into one of these at the boundary, chained with
``from`` so the original stays available, and only the CLI turns them into an exit code.
"""

from __future__ import annotations

import errno
import ssl

__all__ = [
    "BusProtocolError",
    "ConfigError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedLocally",
    "ConnectionLost",
    "FatalConnectError",
    "ListenError",
    "ProxyProtocolError",
    "RetryableConnectError",
    "ServiceError",
    "TwowayError",
    "describe_oserror",
]


class TwowayError(Exception):
    """Base class of every error twoway raises on purpose; ``str()`` is one line for a user."""


class ConfigError(TwowayError):
    """A setting is invalid: the message names the key, the value and where it came from."""


class ServiceError(TwowayError):
    """A service is unknown or cannot be built from the given settings."""


class ListenError(TwowayError):
    """The server could not bind or listen on the requested address."""


class ConnectError(TwowayError):
    """The client could not connect."""


class RetryableConnectError(ConnectError):
    """Refused, reset or timed out: the same attempt may succeed later."""


class FatalConnectError(ConnectError):
    """Unknown host or an address that can never work: retrying will not help."""


class ConnectionClosed(TwowayError):
    """The connection is closed, so it can neither send nor receive any more. Catch this to
    handle both ways it ends; the subclasses say which one it was."""


class ConnectionClosedLocally(ConnectionClosed):
    """This side closed the connection (``close``, ``abort`` or ``end``) and then tried to
    use it: a bug in the caller's sequencing, not the peer's doing."""


class ConnectionLost(ConnectionClosed):
    """The connection broke without this side closing it: the peer reset it, went away, or
    closed it first. Expected on the open internet; handle it, do not report it as a bug."""


class BusProtocolError(TwowayError, ValueError):
    """A bus log entry that is not valid bus data: another program wrote it, or a node of
    an incompatible version (its writer is to blame, not this node). Raised by the codec in
    :mod:`twoway.sansio.bus`; the bus skips the entry, logs one line, and the gap it leaves
    in that node's numbers is announced like any other."""


class ProxyProtocolError(TwowayError, ValueError):
    """The bytes that open a connection are not a valid PROXY protocol header (v1 or v2).

    Raised by :mod:`twoway.sansio.proxy`. ``kind`` says how it failed, for counters and
    tests: ``"malformed"`` (not the protocol, or a field out of spec), ``"truncated"`` (the
    stream ended inside the header) or ``"oversized"`` (longer than the limit). ``str()`` is
    one line naming the problem, safe to log; it never echoes more than a few peer bytes."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"PROXY protocol: {reason}")
        self.kind = kind
        self.reason = reason


_PHRASES = {
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EADDRNOTAVAIL: "address not available on this machine",
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EPIPE: "broken pipe",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.ENOSPC: "no space left on device",
}


def describe_oserror(exc: BaseException) -> str:
    """A short lower-case phrase for an ``OSError`` ("address already in use"), else ``str``.

    TLS errors are ``OSError`` too, with numbers that mean nothing as errno (a failed
    certificate check has errno 1, "operation not permitted"): they get the TLS reason."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {(exc.reason or str(exc)).lower().replace('_', ' ')}"
    if isinstance(exc, OSError):
        if exc.errno in _PHRASES:
            return _PHRASES[exc.errno]
        if exc.strerror:
            return exc.strerror[0].lower() + exc.strerror[1:]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
