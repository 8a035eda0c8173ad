"""Settings: declared once here, filled from defaults < config file < environment < flags.

Every option has one :class:`OptionSpec`: its key (the long flag name, also the TOML key and,
upper-cased with ``_``, the ``TWOWAY_`` environment variable), its kind, default and help. The
CLI builds its flags from this table, so an option cannot exist in one place and not another.

Validation errors name the source, the key and the value::

    config file chat.toml: max-line = 'abc': not a size (use bytes, e.g. 65536 or 64KiB)
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twoway.errors import ConfigError
from twoway.net.options import ConnectionOptions, Keepalive

__all__ = [
    "ENV_PREFIX",
    "OPTIONS",
    "SERVICE_NAMES",
    "OptionSpec",
    "Settings",
    "load_settings",
    "read_config_file",
]

ENV_PREFIX = "TWOWAY_"
#: Every built-in service, in the order ``--help`` lists them.
SERVICE_NAMES = ("chat", "echo", "upper", "stamp", "peers", "dump", "file")
_LINE_SERVICES = ("upper", "stamp", "peers", "chat")


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option: ``key`` is the flag/TOML name (``max-line``)."""

    key: str
    kind: str  # int | float | size | duration | bool | str | choice | keepalive | path
    default: Any
    help: str
    services: tuple[str, ...] | None = None  # None: every service
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    #: ``0`` (or ``off``) means "no limit" and is stored as ``None``.
    zero_disables: bool = False
    #: Flag spelling when it is not ``--KEY VALUE`` (booleans: ``--no-delay/--delay``).
    flag: str | None = None
    metavar: str | None = None

    @property
    def attr(self) -> str:
        """The :class:`Settings` attribute name."""
        return self.key.replace("-", "_")

    @property
    def env(self) -> str:
        """The environment variable."""
        return ENV_PREFIX + self.key.replace("-", "_").upper()


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "host",
        "str",
        "127.0.0.1",
        "address to listen on (0.0.0.0 or :: to expose to a network)",
        metavar="HOST",
    ),
    OptionSpec(
        "port",
        "int",
        4001,
        "port to listen on (0: any free port)",
        minimum=0,
        maximum=65535,
        metavar="PORT",
    ),
    OptionSpec(
        "framing",
        "choice",
        "line",
        "line: one message per line; chunk: one per received chunk (clients that send no newline)",
        services=_LINE_SERVICES[:3],
        choices=("line", "chunk"),
    ),
    OptionSpec(
        "max-conns",
        "int",
        None,
        "most connections at once (0: no limit)",
        minimum=0,
        zero_disables=True,
        metavar="N",
    ),
    OptionSpec(
        "max-conns-per-ip",
        "int",
        None,
        "most connections from one IP address (0: no limit)",
        minimum=0,
        zero_disables=True,
        metavar="N",
    ),
    OptionSpec(
        "max-line",
        "size",
        65536,
        "longest line accepted, in bytes (without the terminator)",
        minimum=1,
        metavar="BYTES",
    ),
    OptionSpec(
        "idle-timeout",
        "duration",
        None,
        "close connections idle this many seconds (0: never)",
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    ),
    OptionSpec(
        "keepalive",
        "keepalive",
        None,
        "TCP keep-alive: IDLE[,INTERVAL[,COUNT]] seconds (0: off)",
        metavar="SPEC",
    ),
    OptionSpec(
        "no-delay",
        "bool",
        True,
        "disable Nagle's algorithm (TCP_NODELAY)",
        flag="--no-delay/--delay",
    ),
    OptionSpec(
        "grace",
        "duration",
        5.0,
        "on SIGINT/SIGTERM, let connections finish this many seconds",
        minimum=0,
        metavar="SECONDS",
    ),
    OptionSpec(
        "workers",
        "int",
        1,
        "worker processes sharing the port (SO_REUSEPORT); chat needs --bus with more than one",
        minimum=1,
        metavar="N",
    ),
    OptionSpec(
        "bus",
        "str",
        "local",
        "chat fan-out between processes: local (one process) or redis://HOST:PORT/DB",
        services=("chat",),
        metavar="URL",
    ),
    OptionSpec(
        "loop",
        "choice",
        "auto",
        "event loop (auto: uvloop when installed)",
        choices=("auto", "asyncio", "uvloop"),
    ),
    OptionSpec(
        "motd",
        "path",
        None,
        "file whose lines greet every chat client",
        services=("chat",),
        metavar="FILE",
    ),
    OptionSpec(
        "history",
        "int",
        20,
        "messages per room replayed to people who join (0: none)",
        services=("chat",),
        minimum=0,
        metavar="N",
    ),
    OptionSpec(
        "history-bytes",
        "size",
        4 * 1024 * 1024,
        "memory all chat history may hold; the oldest lines of the largest rooms go first "
        "(0: no limit)",
        services=("chat",),
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    ),
    OptionSpec(
        "max-rooms",
        "int",
        1000,
        "chat rooms that may exist at once, the lobby included (0: no limit)",
        services=("chat",),
        minimum=0,
        zero_disables=True,
        metavar="N",
    ),
    OptionSpec(
        "flood-rate",
        "float",
        5.0,
        "lines per second a chat client may send after its burst (0: no flood control)",
        services=("chat",),
        minimum=0,
        metavar="LINES",
    ),
    OptionSpec(
        "flood-burst",
        "int",
        10,
        "lines a chat client may send at once",
        services=("chat",),
        minimum=1,
        metavar="LINES",
    ),
    OptionSpec(
        "max-queued",
        "size",
        256 * 1024,
        "bytes queued for one client before it is dropped as too slow (0: no limit)",
        services=("chat",),
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    ),
    OptionSpec(
        "slow-grace",
        "duration",
        10.0,
        "seconds a client may stay over a quarter of max-queued before it is dropped "
        "(0: only the hard limit)",
        services=("chat",),
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    ),
    OptionSpec(
        "dir",
        "path",
        "dumps",
        "directory for one file per connection (created if missing)",
        services=("dump",),
        metavar="DIR",
    ),
    OptionSpec(
        "file",
        "path",
        None,
        "append every connection to this one file instead (interleaved by whole chunks)",
        services=("dump",),
        metavar="PATH",
    ),
    OptionSpec(
        "lines",
        "bool",
        False,
        "with --file, interleave connections by whole lines",
        services=("dump",),
        flag="--lines/--no-lines",
    ),
    OptionSpec(
        "fsync",
        "choice",
        "close",
        "when to fsync: never, interval (each second), "
        "close (before the FIN), always (every write)",
        services=("dump",),
        choices=("never", "interval", "close", "always"),
    ),
    OptionSpec(
        "splice",
        "bool",
        True,
        "move each connection's bytes into its file with splice(2), no copy in user space "
        "(Linux; --no-splice reads them in Python)",
        services=("dump",),
        flag="--splice/--no-splice",
    ),
    OptionSpec(
        "max-bytes",
        "size",
        None,
        "most bytes stored per connection (0: no limit)",
        services=("dump",),
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    ),
    OptionSpec(
        "path",
        "path",
        None,
        "the file to send (also the argument after the service)",
        services=("file",),
        metavar="PATH",
    ),
    OptionSpec(
        "keep-open",
        "bool",
        False,
        "keep the connection open after the file",
        services=("file",),
        flag="--keep-open/--no-keep-open",
    ),
    OptionSpec(
        "rate",
        "size",
        None,
        "bytes per second per connection (0: no limit)",
        services=("file",),
        minimum=0,
        zero_disables=True,
        metavar="BYTES",
    ),
    OptionSpec(
        "write-timeout",
        "duration",
        30.0,
        "drop a reader that takes nothing for this many seconds (0: never)",
        services=("file",),
        minimum=0,
        zero_disables=True,
        metavar="SECONDS",
    ),
    OptionSpec(
        "log-level", "choice", "info", "log level", choices=("debug", "info", "warning", "error")
    ),
    OptionSpec("log-format", "choice", "text", "log format", choices=("text", "json")),
)

_BY_KEY = {o.key: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective settings of one ``twoway serve`` process."""

    service: str = "chat"
    host: str = "127.0.0.1"
    port: int = 4001
    framing: str = "line"
    max_conns: int | None = None
    max_conns_per_ip: int | None = None
    max_line: int = 65536
    idle_timeout: float | None = None
    keepalive: Keepalive | None = None
    no_delay: bool = True
    grace: float = 5.0
    workers: int = 1
    bus: str = "local"
    loop: str = "auto"
    motd: str | None = None
    history: int = 20
    history_bytes: int | None = 4 * 1024 * 1024
    max_rooms: int | None = 1000
    flood_rate: float = 5.0
    flood_burst: int = 10
    max_queued: int | None = 256 * 1024
    slow_grace: float | None = 10.0
    dir: str = "dumps"
    file: str | None = None
    lines: bool = False
    fsync: str = "close"
    splice: bool = True
    max_bytes: int | None = None
    path: str | None = None
    keep_open: bool = False
    rate: int | None = None
    write_timeout: float | None = 30.0
    log_level: str = "info"
    log_format: str = "text"
    #: Where each value came from (``default``, ``config file X``, ``environment``, ``flag``).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def connection_options(self, **overrides: Any) -> ConnectionOptions:
        """The per-connection options these settings describe."""
        values: dict[str, Any] = {
            "max_line": self.max_line,
            "idle_timeout": self.idle_timeout,
            "keepalive": self.keepalive,
            "nodelay": self.no_delay,
        }
        values.update(overrides)
        return ConnectionOptions(**values)

    def describe(self) -> list[str]:
        """``key = value  # source`` lines, for ``twoway check-config``."""
        lines = [f'service = "{self.service}"  # {self.sources.get("service", "default")}']
        for spec in OPTIONS:
            if spec.services is not None and self.service not in spec.services:
                continue
            value = getattr(self, spec.attr)
            lines.append(
                f"{spec.key} = {_toml_value(spec, value)}  "
                f"# {self.sources.get(spec.key, 'default')}"
            )
        return lines


def _toml_value(spec: OptionSpec, value: Any) -> str:
    if value is None:
        return "0" if spec.zero_disables or spec.kind == "keepalive" else '""'
    if isinstance(value, Keepalive):
        return f'"{value.idle},{value.interval},{value.count}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_size(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError
    if isinstance(raw, int):
        return raw
    m = _SIZE.match(str(raw))
    if not m:
        raise ValueError
    unit = (m.group(2) or "b").lower()[0]
    scale = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    return int(float(m.group(1)) * scale)


def _parse_duration(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        m = _DURATION.match(str(raw))
        if not m:
            raise ValueError
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[(m.group(2) or "s").lower()]
        value = float(m.group(1)) * scale
    if not math.isfinite(value):
        raise ValueError
    return value


def _parse_keepalive(raw: Any) -> Keepalive | None:
    if isinstance(raw, bool):
        return Keepalive() if raw else None
    text = str(raw).strip().lower()
    if text in _FALSE:
        return None
    parts = [int(p) for p in text.split(",")]
    if not 1 <= len(parts) <= 3 or any(p < 1 for p in parts):
        raise ValueError
    defaults = Keepalive()
    idle = parts[0]
    interval = parts[1] if len(parts) > 1 else min(defaults.interval, idle)
    count = parts[2] if len(parts) > 2 else defaults.count
    return Keepalive(idle, interval, count)


_HINTS = {
    "int": "not a whole number",
    "float": "not a number",
    "size": "not a size (use bytes, e.g. 65536 or 64KiB)",
    "duration": "not a duration (use seconds, e.g. 30 or 1.5 or 500ms)",
    "bool": "not a boolean (true or false)",
    "keepalive": "not a keep-alive spec (IDLE[,INTERVAL[,COUNT]] in whole seconds, or 0)",
    "str": "not a string",
    "path": "not a path",
}


def _convert(spec: OptionSpec, raw: Any) -> Any:
    """Parse ``raw`` (a TOML value or a string) for ``spec``; raises ValueError(hint)."""
    kind = spec.kind
    try:
        value: Any
        if kind == "int":
            if isinstance(raw, (bool, float)):
                raise ValueError
            value = int(raw)
        elif kind == "float":
            value = float(raw)
        elif kind == "size":
            value = _parse_size(raw)
        elif kind == "duration":
            value = _parse_duration(raw)
        elif kind == "bool":
            if isinstance(raw, bool):
                value = raw
            elif str(raw).strip().lower() in _TRUE:
                value = True
            elif str(raw).strip().lower() in _FALSE:
                value = False
            else:
                raise ValueError
        elif kind == "keepalive":
            return _parse_keepalive(raw)
        elif kind in ("str", "path"):
            if not isinstance(raw, str):
                raise ValueError
            value = raw
        elif kind == "choice":
            value = str(raw).strip().lower()
            if value not in spec.choices:
                raise ValueError(f"not one of {', '.join(spec.choices)}")
            return value
        else:  # pragma: no cover - a programming error in OPTIONS
            raise AssertionError(kind)
    except ValueError as exc:
        # Our own messages (choices) are kept; Python's ("invalid literal for int()...")
        # are replaced by the hint, which tells the user what to write instead.
        own = str(exc) if kind == "choice" else ""
        raise ValueError(own or _HINTS[kind]) from None
    if spec.minimum is not None and isinstance(value, (int, float)) and value < spec.minimum:
        raise ValueError(f"must be at least {spec.minimum:g}")
    if spec.maximum is not None and isinstance(value, (int, float)) and value > spec.maximum:
        raise ValueError(f"must be at most {spec.maximum:g}")
    if spec.zero_disables and value == 0:
        return None
    return value


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML config file; every failure is a :class:`ConfigError` naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p}: is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {p}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: invalid TOML: {exc}") from None
    return data


def load_settings(
    *,
    service: str | None = None,
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    known_services: tuple[str, ...] = SERVICE_NAMES,
    validate: Callable[[Settings], None] | None = None,
) -> Settings:
    """Build :class:`Settings`: defaults < ``config_file`` < ``TWOWAY_*`` < ``flags``.

    ``flags`` maps option keys (``max-line``) to raw values; ``None`` means "not given".
    Raises :class:`ConfigError` naming the source, key and value of the first bad one.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    given: list[tuple[OptionSpec, str]] = []

    def put(spec: OptionSpec, raw: Any, source: str, shown: str) -> None:
        try:
            values[spec.attr] = _convert(spec, raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {shown} = {raw!r}: {exc}") from None
        sources[spec.key] = source
        given.append((spec, source))

    file_service: str | None = None
    if config_file is not None:
        source = f"config file {config_file}"
        for key, raw in read_config_file(config_file).items():
            if key == "service":
                if not isinstance(raw, str):
                    raise ConfigError(f"{source}: service = {raw!r}: not a string")
                file_service = raw
                continue
            spec = _BY_KEY.get(key)
            if spec is None:
                hint = _close_match(key)
                raise ConfigError(f"{source}: unknown key {key!r}{hint}")
            put(spec, raw, source, key)
    for spec in OPTIONS:
        if spec.env in env:
            put(spec, env[spec.env], "environment", spec.env)
    for key, raw in (flags or {}).items():
        if raw is None:
            continue
        spec = _BY_KEY[key]
        put(spec, raw, "command line", f"--{key}")

    env_service = env.get(ENV_PREFIX + "SERVICE")
    chosen = service or env_service or file_service
    if service:
        sources["service"] = "command line"
    elif env_service:
        sources["service"] = "environment"
    elif file_service:
        sources["service"] = f"config file {config_file}"
    if chosen is None:
        raise ConfigError(
            f"no service given (choose from {', '.join(known_services)}, or set service = "
            f'"..." in the config file)'
        )
    if chosen not in known_services:
        raise ConfigError(f"unknown service {chosen!r} (choose from {', '.join(known_services)})")
    for spec, source in given:
        if spec.services is not None and chosen not in spec.services:
            raise ConfigError(f"{source}: option {spec.key!r} does not apply to service {chosen!r}")
    defaults = {spec.attr: spec.default for spec in OPTIONS}
    settings = Settings(service=chosen, sources=sources, **{**defaults, **values})
    _check_combinations(settings)
    if validate is not None:
        validate(settings)
    return settings


def _check_combinations(settings: Settings) -> None:
    bus = settings.bus
    if bus != "local" and not bus.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"bus = {bus!r}: use local or redis://HOST:PORT/DB")
    if settings.service == "chat" and settings.workers > 1 and bus == "local":
        raise ConfigError(
            f"--workers {settings.workers} with chat needs a bus shared by the workers "
            "(--bus redis://HOST:PORT/DB); without one, clients of different workers "
            "could not see each other"
        )


def _close_match(key: str) -> str:
    import difflib

    match = difflib.get_close_matches(key, list(_BY_KEY), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
