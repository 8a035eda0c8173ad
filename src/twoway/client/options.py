"""What ``twoway connect`` was asked to do: one frozen object, built once by the CLI, and the
connection names ``--connections N`` or ``--names A,B,C`` stand for."""

from __future__ import annotations

from dataclasses import dataclass

from twoway.client.template import check_template
from twoway.client.tls import ClientTls
from twoway.net.options import Keepalive

__all__ = ["ClientOptions", "link_names"]


def link_names(connections: int | None, names: str | None) -> tuple[str, ...]:
    """The connection names: ``("Dwarves", "Elves")`` from ``--names``, ``("1", "2", "3")``
    from ``--connections 3``, ``()`` for a single connection. Raises ``ValueError``."""
    if names is not None and connections is not None:
        raise ValueError("use either --connections or --names, not both")
    if names is not None:
        parts = tuple(part.strip() for part in names.split(","))
        if not all(parts):
            raise ValueError(f"--names: empty name in {names!r}")
        return parts
    if connections is None or connections == 1:
        return ()
    if connections < 1:
        raise ValueError("--connections must be at least 1")
    return tuple(str(i) for i in range(1, connections + 1))


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The settings of one ``twoway connect`` run; times in seconds, ``None`` disables.

    Raises ``ValueError`` (a one-line message naming the option) for inconsistent settings.
    """

    host: str
    port: int
    #: One name per connection; ``()`` is one connection whose output has no prefix.
    names: tuple[str, ...] = ()
    #: Reconnect after a loss or a failed attempt, with exponential backoff.
    reconnect: bool = False
    #: With ``reconnect``: give up after this many failed attempts in a row (``None``: never).
    max_attempts: int | None = None
    #: ``socket.AF_INET`` or ``AF_INET6`` (``-4``/``-6``); ``0``: either.
    family: int = 0
    #: Lines kept while disconnected; the oldest are dropped (and counted) beyond it. 100
    #: lines cover a minute of a periodic sender or a burst of typing at small memory cost.
    buffer: int = 100
    #: First reconnect delay (1 s as in the classic client) and the cap of the backoff.
    retry_delay: float = 1.0
    retry_max: float = 30.0
    #: Bound on each connection attempt, name lookup included.
    connect_timeout: float | None = 10.0
    #: Give up on a connection that received nothing for this long (a silent peer).
    timeout: float | None = None
    keepalive: Keepalive | None = None
    #: Periodic sender: the template, the period, how many sends (``None``: forever).
    send: str | None = None
    every: float = 2.0
    count: int | None = None
    #: After the last send (or Ctrl-D, ``/quit``): how long to wait for a reply, then for the
    #: server to close after our FIN. One second covers a loopback or LAN round trip.
    linger: float = 1.0
    #: Write what arrives to this file instead of standard output.
    output: str | None = None
    #: End the lines we send (typed, ``--send``) with CRLF instead of LF.
    crlf: bool = False
    verbose: bool = False
    loop: str = "auto"
    #: ``-x``: a hex dump of the traffic on stderr, at most ``hexdump_max`` bytes of each
    #: direction per connection (``None``: all of it).
    hexdump: bool = False
    hexdump_max: int | None = 16 * 1024
    #: Interactive mode: where typed lines are kept between runs (``None``: the default,
    #: ``$XDG_STATE_HOME/twoway/connect_history``; ``"off"``: this run only).
    history_file: str | None = None
    #: ``--tls`` and its options; ``None``: plain TCP.
    tls: ClientTls | None = None
    #: ``--unix PATH``: connect to this Unix socket instead of ``host:port``.
    unix: str | None = None

    def __post_init__(self) -> None:
        if self.unix is None and not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range (1-65535)")
        if self.buffer < 0:
            raise ValueError("--buffer must be 0 or more")
        if self.send is not None:
            check_template(self.send)
        if self.every <= 0:
            raise ValueError("--every must be more than 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("--max-attempts must be at least 1")
        if self.count is not None and self.count < 1:
            raise ValueError("--count must be at least 1")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"--names: a name appears twice in {','.join(self.names)}")

    @property
    def newline(self) -> bytes:
        """The terminator of the lines this client makes up (typed or ``--send``)."""
        return b"\r\n" if self.crlf else b"\n"
