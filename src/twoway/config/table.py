"""The option table: :class:`Settings`, one field per option, and :data:`OPTIONS` derived from it.

Each option is written once, as a field: its name is the key (``max_line`` is ``--max-line``,
``max-line`` in TOML, ``TWOWAY_MAX_LINE``), its annotation the type, :func:`option` its kind,
default and help. The CLI builds its flags from :data:`OPTIONS`, so an option cannot exist in
one place and not another. Which service takes a per-service option is declared by the
services (``twoway.services.SERVICES``), not here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from twoway.config.parse import KeepaliveSetting
from twoway.config.spec import OptionSpec, option, spec_of

__all__ = ["BY_KEY", "LIVE_KEYS", "MAX_LINE", "OPTIONS", "Settings"]

#: ``--max-line``'s default. It is the library's own default (``ConnectionOptions.max_line``,
#: from the line decoder), which config may not import; a test checks that the two agree.
MAX_LINE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective settings of one ``twoway serve`` process; every field after ``service``
    is an option (see the module docstring). Built by
    :func:`~twoway.config.load.load_settings`."""

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
    motd: str | None = option(
        "path",
        None,
        "file whose lines greet every chat client",
        per_service=True,
        metavar="FILE",
    )
    history: int = option(
        "int",
        20,
        "messages per room replayed to people who join (0: none)",
        per_service=True,
        minimum=0,
        metavar="N",
    )
    history_bytes: int | None = option(
        "size",
        4 * 1024 * 1024,
        "memory all chat history may hold; the oldest lines of the largest rooms go first "
        "(0: no limit)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    )
    max_rooms: int | None = option(
        "int",
        1000,
        "chat rooms that may exist at once, the lobby included (0: no limit)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="N",
    )
    # -- chat memory (issue 16): the store, --keep, resume ---------------------------------
    data_dir: str | None = option(
        "path",
        None,
        "where chat keeps its history (chat.db); default $XDG_DATA_HOME/twoway, "
        "that is ~/.local/share/twoway",
        per_service=True,
        metavar="DIR",
    )
    ephemeral: bool = option(
        "bool",
        False,
        "keep chat history in memory only, for this run (nothing on disk)",
        per_service=True,
        flag="--ephemeral/--no-ephemeral",
    )
    keep: str = option(
        "str",
        "10000",
        "chat history kept on disk: N lines per room, an age (30d) or both (10000,30d)",
        per_service=True,
        metavar="N|AGE",
    )
    # Two minutes: a phone changing networks or a laptop waking up comes back well within
    # it; a nick held longer looks taken for no reason to the others.
    resume_window: float = option(
        "duration",
        120.0,
        "seconds a dropped chat client may come back with /resume TOKEN (its nick held)",
        per_service=True,
        minimum=0.001,
        metavar="SECONDS",
    )
    flood_rate: float = option(
        "float",
        5.0,
        "lines per second a chat client may send after its burst (0: no flood control)",
        per_service=True,
        minimum=0,
        metavar="LINES",
    )
    flood_burst: int = option(
        "int",
        10,
        "lines a chat client may send at once",
        per_service=True,
        minimum=1,
        metavar="LINES",
    )
    # -- governance (chat): identity, server password, paste-aware flood control ------------
    paste_lines: int = option(
        "int",
        20,
        "lines of one read (a paste) that count as one chat message for flood control",
        per_service=True,
        minimum=1,
        metavar="LINES",
    )
    join_rate: float = option(
        "float",
        0.0,
        "chat connections per second from one address, after a burst of 10 (0: no limit)",
        per_service=True,
        minimum=0,
        metavar="N",
    )
    identify_grace: float = option(
        "duration",
        30.0,
        "seconds to /identify after taking a registered chat nick, before being renamed",
        per_service=True,
        minimum=0,
        metavar="SECONDS",
    )
    password: str | None = option(
        "str",
        None,
        "server password: a chat client's first line must be /pass PASSWORD "
        "(plain text or a twoway hash-password hash)",
        per_service=True,
        metavar="PASSWORD",
    )
    max_queued: int | None = option(
        "size",
        256 * 1024,
        "bytes queued for one client before it is dropped as too slow (0: no limit)",
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    )
    slow_grace: float | None = option(
        "duration",
        10.0,
        "seconds a client may stay over a quarter of max-queued before it is dropped "
        "(0: only the hard limit)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    )
    dir: str = option(
        "path",
        "dumps",
        "directory for one file per connection (created if missing)",
        per_service=True,
        metavar="DIR",
    )
    file: str | None = option(
        "path",
        None,
        "append every connection to this one file instead (interleaved by whole chunks)",
        per_service=True,
        metavar="PATH",
    )
    lines: bool = option(
        "bool",
        False,
        "with --file, interleave connections by whole lines",
        per_service=True,
        flag="--lines/--no-lines",
    )
    fsync: str = option(
        "choice",
        "close",
        "when to fsync: never, interval (each second), "
        "close (before the FIN), always (every write)",
        per_service=True,
        choices=("never", "interval", "close", "always"),
    )
    splice: bool = option(
        "bool",
        True,
        "move each connection's bytes into its file with splice(2), no copy in user space "
        "(Linux; --no-splice reads them in Python)",
        per_service=True,
        flag="--splice/--no-splice",
    )
    max_bytes: int | None = option(
        "size",
        None,
        "most bytes stored per connection (0: no limit)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    )
    path: str | None = option(
        "path",
        None,
        "the file to send (also the argument after the service)",
        per_service=True,
        metavar="PATH",
    )
    keep_open: bool = option(
        "bool",
        False,
        "keep the connection open after the file",
        per_service=True,
        flag="--keep-open/--no-keep-open",
    )
    rate: int | None = option(
        "size",
        None,
        "bytes per second per connection (0: no limit)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    )
    write_timeout: float | None = option(
        "duration",
        30.0,
        "drop a reader that takes nothing for this many seconds (0: never)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    )
    log_level: str = option(
        "choice",
        "info",
        "level of the diagnostic lines (the ready line and lifecycle lines always show)",
        choices=("debug", "info", "warning", "error"),
    )
    log_format: str = option(
        "choice",
        "text",
        "log format: text lines, or json objects with fields (event, peer, bytes_in...)",
        choices=("text", "json"),
    )
    log_time: str = option(
        "choice",
        "time",
        "time stamp of text log lines: time (12:00:00.001), date (2026-12-06 12:00:00.001), "
        "iso (ISO-8601 with the offset) or none (journald stamps lines itself)",
        choices=("time", "date", "iso", "none"),
    )
    access_log: bool = option(
        "bool",
        True,
        "log each connection and its close, whatever --log-level",
        flag="--access-log/--no-access-log",
    )
    # serve -x: the traffic in the log (issue 13), bounded like connect -x's.
    hexdump: bool = option(
        "bool",
        False,
        "log a hex dump of each connection's traffic, both ways, led by the peer's address "
        "(turns sendfile and splice off)",
        flag="--hexdump/--no-hexdump",
    )
    hexdump_max: int | None = option(
        "size",
        16 * 1024,
        "bytes of each direction dumped per connection with --hexdump (0: all)",
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    )
    # -- the WebSocket gateway (issue 18) -------------------------------------------------
    ws: str | None = option(
        "str",
        None,
        "also serve WebSocket clients, and the web chat page at /, on HOST:PORT (a text "
        "message is a line; wss:// with --tls-cert)",
        per_service=True,
        metavar="HOST:PORT",
    )
    ws_origin: tuple[str, ...] = option(
        "list",
        (),
        "web pages of other sites allowed to open a WebSocket, scheme://host[:port] "
        "(repeatable; * for any); the gateway's own page always may",
        per_service=True,
        metavar="ORIGIN",
    )
    ws_ping: float | None = option(
        "duration",
        20.0,
        "ping WebSocket clients this often; one that has not answered by the next ping is "
        "closed (0: never)",
        per_service=True,
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    )
    #: Where each value came from (``default``, ``config file X``, ``environment``, ``flag``).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    #: What loading noticed but did not refuse, as ``(logging level, message)``: a variable
    #: ignored because its option does not apply, an unknown ``TWOWAY_*`` name. Config logs
    #: nothing itself (logging is not set up yet when it runs): the runner logs these.
    notices: tuple[tuple[int, str], ...] = field(default=(), compare=False)
    #: The config file's ``[operators]`` table: operator name -> password hash (made by
    #: ``twoway hash-password``) or TLS client certificate fingerprint (SHA-256 hex). Only a
    #: file can declare operators (not a flag or a variable: they would show in ``ps``).
    operators: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def hosts(self) -> tuple[str, ...]:
        """The TCP addresses to listen on: ``host`` split at commas (``--host`` repeated)."""
        return tuple(h.strip() for h in self.host.split(",") if h.strip())

    @property
    def unix_mode_bits(self) -> int | None:
        """``unix_mode`` as permission bits (checked when the settings are loaded)."""
        return None if self.unix_mode is None else int(self.unix_mode, 8)

    def describe(self, service_options: Collection[str] = ()) -> list[str]:
        """``key = value  # source`` lines, for ``twoway check-config``: every option that
        applies to every service, and the per-service ones named in ``service_options``
        (the keys this settings' service takes)."""
        lines = [f'service = "{self.service}"  # {self.sources.get("service", "default")}']
        for spec in OPTIONS:
            if spec.per_service and spec.key not in service_options:
                continue
            value = getattr(self, spec.attr)
            if spec.key == "password" and value:
                value = "(hidden)"  # check-config output is shown and pasted: no secrets
            lines.append(
                f"{spec.key} = {_toml_value(spec, value)}  "
                f"# {self.sources.get(spec.key, 'default')}"
            )
        return lines


#: The options a SIGHUP applies without a restart (issue 14): each takes effect for what
#: comes next (new connections, the next line, the next join) and nothing open is dropped.
#: Every other key changed in the config file is logged as needing a restart and keeps
#: its value. ``twoway check-config`` lists both sets.
LIVE_KEYS: frozenset[str] = frozenset(
    {
        # limits and per-connection options (new connections get them)
        "max-conns",
        "max-conns-per-ip",
        "ipv6-prefix",
        "max-line",
        "idle-timeout",
        "line-timeout",
        "no-delay",
        "max-queued",
        "slow-grace",
        # the front door (certificate files are reread on every SIGHUP anyway)
        "tls-cert",
        "tls-key",
        "allow",
        "deny",
        "allow-file",
        "deny-file",
        # chat
        "motd",
        "flood-rate",
        "flood-burst",
        # logging
        "log-level",
    }
)

#: Every option, in the order ``--help`` lists them.
OPTIONS: tuple[OptionSpec, ...] = tuple(
    spec for spec in (spec_of(f) for f in fields(Settings)) if spec is not None
)
#: The options by key (``max-line``).
BY_KEY: Mapping[str, OptionSpec] = {spec.key: spec for spec in OPTIONS}


def _toml_value(spec: OptionSpec, value: Any) -> str:
    if value is None:
        return "0" if spec.zero_disables or spec.kind == "keepalive" else '""'
    if isinstance(value, KeepaliveSetting):
        text = str(value)
        return text if text == "true" else f'"{text}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)
