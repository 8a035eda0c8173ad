"""The option table: :class:`Settings`, one field per option, and :data:`OPTIONS` derived from it.

Each option is written once, as a field: its name is the key (``max_line`` is ``--max-line``,
``max-line`` in TOML, ``TWOWAY_MAX_LINE``), its annotation the type, :func:`option` its kind,
default and help. The CLI builds its flags from :data:`OPTIONS`, so an option cannot exist in
one place and not another. Which service takes a per-service option is declared by the
services (``twoway.services.SERVICES``), not here.

The table is in two parts, in ``--help`` order: the server's options (the service, its front
door, the metrics endpoint, per-connection limits, the processes) are the fields of
:class:`~twoway.config.server.ServerOptions`, which :class:`Settings` extends with the rest:
chat's options, the slow-client limits, dump's and file's, logging and the WebSocket gateway.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from twoway.config.parse import KeepaliveSetting
from twoway.config.server import ServerOptions
from twoway.config.spec import OptionSpec, option, spec_of

__all__ = ["BY_KEY", "LIVE_KEYS", "OPTIONS", "Settings"]


@dataclass(frozen=True, slots=True)
class Settings(ServerOptions):
    """The effective settings of one ``twoway serve`` process; every field after ``service``
    is an option (see the module docstring), the first ones inherited from
    :class:`~twoway.config.server.ServerOptions`. Built by
    :func:`~twoway.config.load.load_settings`."""

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
