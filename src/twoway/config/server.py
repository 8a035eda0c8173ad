"""The server's options: the first part of the option table, in ``--help`` order.

:class:`ServerOptions` declares, once each (see :mod:`twoway.config.table`), the options of
the server as a whole: the service, where and how it listens (TCP, Unix and systemd's
sockets), how it cuts bytes into messages, how many connections it admits (in all and per
address), TLS, the allow/deny lists, the PROXY protocol, the metrics endpoint, the
per-connection limits and timeouts, and the processes (workers, bus, event loop).
:class:`~twoway.config.table.Settings` extends it with the services' options, logging and
the WebSocket gateway; nothing else uses this class.
"""

from __future__ import annotations

from dataclasses import dataclass

from twoway.config.parse import KeepaliveSetting
from twoway.config.spec import option

__all__ = ["MAX_LINE", "ServerOptions"]

#: ``--max-line``'s default. It is the library's own default (``ConnectionOptions.max_line``,
#: from the line decoder), which config may not import; a test checks that the two agree.
MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The first fields of :class:`~twoway.config.table.Settings` (every one after
    ``service`` is an option): a base class only so that the table fits in two modules."""

    service: str = "chat"
    host: str = option(
        "str",
        "127.0.0.1",
        "address to listen on (0.0.0.0 or :: to expose to a network; :: is IPv4 too unless "
        "-6); repeatable, or HOST,HOST in the environment and the file",
        metavar="HOST",
    )
    port: int = option(
        "int",
        4001,
        "port to listen on (0: any free port)",
        minimum=0,
        maximum=65535,
        metavar="PORT",
    )
    framing: str = option(
        "choice",
        "line",
        "line: one message per line; chunk: one per received chunk (clients that send no newline)",
        per_service=True,
        choices=("line", "chunk"),
    )
    # Redis's maxclients: enough for a busy single process, and lowered at start-up to what
    # the open-files limit allows (the runner says so in one line) rather than failing.
    max_conns: int | None = option(
        "int",
        10000,
        "most connections at once, lowered to fit the open-files limit (0: no limit)",
        minimum=0,
        zero_disables=True,
        metavar="N",
    )
    max_conns_per_ip: int | None = option(
        "int",
        None,
        "most connections from one IP address (0: no limit)",
        minimum=0,
        zero_disables=True,
        metavar="N",
    )
    ipv6_prefix: int = option(
        "int",
        64,
        "IPv6 clients count as one address per this many leading bits, for per-IP limits "
        "(one host usually holds a whole /64)",
        minimum=1,
        maximum=128,
        metavar="BITS",
    )
    tls_cert: str | None = option(
        "path",
        None,
        "serve TLS with this PEM certificate (chain); reread on SIGHUP",
        metavar="FILE",
    )
    tls_key: str | None = option(
        "path",
        None,
        "the certificate's private key, unencrypted (default: in the --tls-cert file)",
        metavar="FILE",
    )
    tls_min_version: str = option(
        "choice",
        "1.2",
        "oldest TLS version accepted",
        choices=("1.2", "1.3"),
    )
    tls_client_ca: str | None = option(
        "path",
        None,
        "require a client certificate signed by a CA in this PEM file",
        metavar="FILE",
    )
    tls_handshake_timeout: float = option(
        "duration",
        # nginx's ssl_handshake_timeout is 60 s; 10 s is ample for a real client on a slow
        # link and frees a stalled handshake's slot six times sooner.
        10.0,
        "close a TLS connection whose handshake is unfinished after this many seconds",
        minimum=0.001,
        metavar="SECONDS",
    )
    # -- issue 14, second part: handshakes per address; Unix sockets, IPv6-only, systemd.
    max_handshakes_per_ip: int | None = option(
        "int",
        # A real client needs one handshake at a time, and a busy NAT rarely has dozens in
        # flight at the same instant (each lasts a round trip or two); 10,000 stalled ones
        # from one address could otherwise hold every slot for the handshake timeout.
        32,
        "most TLS handshakes in progress from one IP address, never more than "
        "--max-conns-per-ip (0: no limit of its own)",
        minimum=0,
        zero_disables=True,
        metavar="N",
    )
    ipv6_only: bool = option(
        "bool",
        False,
        "with --host ::, IPv6 only (default: IPv4 clients too, one dual-stack socket; -6 sets it)",
        flag="--ipv6-only/--dual-stack",
    )
    unix: str | None = option(
        "path",
        None,
        "listen on this Unix socket (a stale socket file is replaced; removed at exit); "
        "TCP too only if --host or --port is given",
        metavar="PATH",
    )
    unix_mode: str | None = option(
        "str",
        None,
        "permission bits of the --unix socket, octal (660: owner and group only)",
        metavar="MODE",
    )
    systemd: str = option(
        "choice",
        "auto",
        "auto: serve on the sockets systemd passes (LISTEN_FDS) and notify it "
        "(NOTIFY_SOCKET) when it does; off: ignore both",
        choices=("auto", "off"),
    )
    allow: tuple[str, ...] = option(
        "list",
        (),
        "admit only these networks, CIDR[,CIDR...] (repeatable; deny wins over allow)",
        metavar="CIDR",
    )
    deny: tuple[str, ...] = option(
        "list",
        (),
        "refuse these networks, CIDR[,CIDR...] (repeatable)",
        metavar="CIDR",
    )
    allow_file: str | None = option(
        "path",
        None,
        "file of networks to admit, one per line (# comments); reread on SIGHUP",
        metavar="FILE",
    )
    deny_file: str | None = option(
        "path",
        None,
        "file of networks to refuse, one per line (# comments); reread on SIGHUP",
        metavar="FILE",
    )
    proxy_protocol: bool = option(
        "bool",
        False,
        "expect a PROXY protocol header (v1 or v2) from a proxy in front; needs --proxy-from",
        flag="--proxy-protocol/--no-proxy-protocol",
    )
    proxy_from: tuple[str, ...] = option(
        "list",
        (),
        "the proxies allowed to send the PROXY header, CIDR[,CIDR...] (repeatable); "
        "anyone else is refused",
        metavar="CIDR",
    )
    proxy_timeout: float = option(
        "duration",
        # The spec asks for at least 3 s, to cover one TCP retransmission of the header.
        5.0,
        "close a connection whose PROXY header is unfinished after this many seconds",
        minimum=0.001,
        metavar="SECONDS",
    )

    # -- metrics and health (issue 15) --------------------------------------------------
    metrics: str | None = option(
        "str",
        None,
        "serve Prometheus /metrics, /healthz, /readyz and a live status page on "
        "[HOST:]PORT (host 127.0.0.1 unless given)",
        metavar="[HOST:]PORT",
    )
    metrics_token: str | None = option(
        "str",
        None,
        "require this bearer token on the metrics endpoint (better in the environment)",
        metavar="TOKEN",
    )
    stats_public: bool = option(
        "bool",
        False,
        "let every member use /stats (the server's figures in a few lines)",
        per_service=True,
        flag="--stats-public/--no-stats-public",
    )
    # -- end of metrics and health ----------------------------------------------------
    max_line: int = option(
        "size",
        MAX_LINE,
        "longest line accepted, in bytes (without the terminator)",
        minimum=1,
        metavar="BYTES",
    )
    idle_timeout: float | None = option(
        "duration",
        None,
        "close connections idle this many seconds (0: never)",
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    )
    # option() returns a dataclasses.field, which ruff cannot see through (RUF009).
    keepalive: KeepaliveSetting | None = option(  # noqa: RUF009
        "keepalive",
        # On by default, at the library's 60 s idle, 10 s x 5 probes: below the idle timeouts
        # of common NATs and load balancers (240-350 s) so mappings stay open, a vanished
        # peer is found in under two minutes, and it costs one probe a minute per idle client.
        KeepaliveSetting(),
        "TCP keep-alive: IDLE[,INTERVAL[,COUNT]] seconds, or true for 60,10,5 (0: off)",
        metavar="SPEC",
    )
    line_timeout: float | None = option(
        "duration",
        # nginx's client_header_timeout is 60 s too: ample for a person typing a line or a
        # slow link sending 64 KiB, and a peer trickling one byte a second is cut within it.
        60.0,
        "close a connection whose line is still unfinished after this many seconds (0: never)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    )
    no_delay: bool = option(
        "bool",
        True,
        "disable Nagle's algorithm (TCP_NODELAY)",
        flag="--no-delay/--delay",
    )
    grace: float = option(
        "duration",
        5.0,
        "on SIGINT/SIGTERM, let connections finish this many seconds",
        minimum=0,
        metavar="SECONDS",
    )
    workers: int = option(
        "int",
        1,
        "worker processes sharing the port (SO_REUSEPORT); chat needs --bus with more than one",
        minimum=1,
        metavar="N",
    )
    bus: str = option(
        "str",
        "local",
        "chat fan-out between processes: local (one process) or redis://HOST:PORT/DB",
        per_service=True,
        metavar="URL",
    )
    loop: str = option(
        "choice",
        "auto",
        "event loop (auto: uvloop when installed)",
        choices=("auto", "asyncio", "uvloop"),
    )

    @property
    def hosts(self) -> tuple[str, ...]:
        """The TCP addresses to listen on: ``host`` split at commas (``--host`` repeated)."""
        return tuple(h.strip() for h in self.host.split(",") if h.strip())

    @property
    def unix_mode_bits(self) -> int | None:
        """``unix_mode`` as permission bits (checked when the settings are loaded)."""
        return None if self.unix_mode is None else int(self.unix_mode, 8)
