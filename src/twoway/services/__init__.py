"""The built-in services (echo, upper, chat, dump, file...) and their registry by name.

The registry says which options each service takes and how each is built (with its
connection options) from :class:`~twoway.config.Settings`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twoway.config import KeepaliveSetting, Settings, metrics_address
from twoway.errors import ConfigError, ServiceError
from twoway.net.options import ConnectionOptions, Keepalive
from twoway.net.service import Framing, Service

__all__ = [
    "SERVICES",
    "ServiceSpec",
    "build_service",
    "check_settings",
    "connection_options",
    "reconfigure_service",
    "service_options",
]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A built-in service: its name, one-line description, factory, and the per-service
    options (config keys such as ``history``) it takes; the options config marks as applying
    to every service (``port``, ``max-line``...) it takes anyway."""

    name: str
    summary: str
    factory: Callable[[Settings], Service]
    options: tuple[str, ...] = ()
    #: Checks how the settings go together; raises :class:`ConfigError`.
    check: Callable[[Settings], None] | None = None
    #: Applies the live settings (``config.LIVE_KEYS``) it owns to a running instance, on
    #: SIGHUP; raises :class:`ConfigError` before changing anything.
    reconfigure: Callable[[Service, Settings], None] | None = None


def _framing(settings: Settings) -> Framing:
    return "chunk" if settings.framing == "chunk" else "line"


def _echo(settings: Settings) -> Service:
    from twoway.services.echo import EchoService

    return EchoService()


def _upper(settings: Settings) -> Service:
    from twoway.services.echo import UpperService

    return UpperService(_framing(settings))


def _stamp(settings: Settings) -> Service:
    from twoway.services.echo import StampService

    return StampService(_framing(settings))


def _peers(settings: Settings) -> Service:
    from twoway.services.echo import PeersService

    return PeersService(_framing(settings))


def _chat(settings: Settings) -> Service:
    from twoway.services.chatbuild import build_chat
    from twoway.services.chatmod import attach_moderation

    service = build_chat(settings)
    # Accounts, bans and owners live where the history does (SQLite, or memory).
    attach_moderation(service, settings, records=service.records)
    return service


def _reconfigure_chat(service: Service, settings: Settings) -> None:
    from twoway.services.chatbuild import reconfigure_chat

    reconfigure_chat(service, settings)


def _check_chat(settings: Settings) -> None:
    bus = settings.bus
    if bus != "local" and not bus.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"bus = {bus!r}: use local or redis://HOST:PORT/DB")
    if settings.workers > 1 and bus == "local":
        raise ConfigError(
            f"--workers {settings.workers} with chat needs a bus shared by the workers "
            "(--bus redis://HOST:PORT/DB); without one, clients of different workers "
            "could not see each other"
        )
    from twoway.services.chatstore import keep_policy

    keep_policy(settings)  # a bad --keep is a ConfigError before anything starts


def _dump(settings: Settings) -> Service:
    from twoway.services.dump import DumpService

    return DumpService(
        settings.dir,
        file=settings.file,
        lines=settings.lines,
        fsync=settings.fsync,  # type: ignore[arg-type]  # validated by config
        max_bytes=settings.max_bytes,
        splice=settings.splice and not settings.hexdump,  # -x must see the bytes
    )


def _file(settings: Settings) -> Service:
    from twoway.services.file import FileService

    if not settings.path:
        raise ServiceError("service 'file' needs the file to send: twoway serve file PATH")
    return FileService(
        settings.path,
        keep_open=settings.keep_open,
        rate=settings.rate,
        write_timeout=settings.write_timeout,
    )


# slow-grace is for the services whose replies can pile up for a peer that does not read:
# not echo (it stops reading such a peer, holding one read), dump (it sends nothing) or file
# (a slow reader of a large file is a normal client).
_WS = ("ws", "ws-origin", "ws-ping")
_FRAMED = ("framing", "slow-grace", "line-timeout", *_WS)
_CHAT = (
    "line-timeout",
    "bus",
    "motd",
    "history",
    "history-bytes",
    "max-rooms",
    "data-dir",
    "ephemeral",
    "keep",
    "resume-window",
    "flood-rate",
    "flood-burst",
    "slow-grace",
    "stats-public",
    "paste-lines",
    "join-rate",
    "identify-grace",
    "password",
    *_WS,
)
_DUMP = ("dir", "file", "lines", "fsync", "splice", "max-bytes")
_FILE = ("path", "keep-open", "rate", "write-timeout")

#: Every built-in service, in the order ``--help`` and errors list them.
SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            "chat",
            "line chat with nicks, rooms and history",
            _chat,
            _CHAT,
            check=_check_chat,
            reconfigure=_reconfigure_chat,
        ),
        ServiceSpec("echo", "sends back every byte, unchanged", _echo),
        ServiceSpec(
            "upper", 'answers each line with You said "<LINE UPPERCASED>"', _upper, _FRAMED
        ),
        ServiceSpec(
            "stamp", "greets, then answers HH:MM:SS - server reply: <line>", _stamp, _FRAMED
        ),
        ServiceSpec(
            "peers", "answers each line with You have N peers on this server", _peers, _FRAMED
        ),
        ServiceSpec("dump", "appends what each client sends to a file", _dump, _DUMP),
        ServiceSpec("file", "sends a file to each client", _file, _FILE),
    )
}


def service_options() -> Mapping[str, tuple[str, ...]]:
    """Each service's name and the per-service option keys it takes, for
    :func:`~twoway.config.load_settings`."""
    return {name: spec.options for name, spec in SERVICES.items()}


def check_settings(settings: Settings) -> None:
    """Check how ``settings`` go together for their service; raises :class:`ConfigError`."""
    if settings.metrics is not None:
        try:
            metrics_address(settings.metrics)
        except ValueError as exc:
            raise ConfigError(f"metrics = {settings.metrics!r}: {exc}") from None
    check = SERVICES[settings.service].check
    if check is not None:
        check(settings)


def build_service(settings: Settings) -> Service:
    """The service ``settings.service`` names, configured. Raises :class:`ServiceError`."""
    spec = SERVICES.get(settings.service)
    if spec is None:
        raise ServiceError(
            f"unknown service {settings.service!r} (choose from {', '.join(SERVICES)})"
        )
    return spec.factory(settings)


def reconfigure_service(service: Service, settings: Settings) -> None:
    """Apply the live settings of ``settings.service`` to a running ``service`` (SIGHUP);
    nothing for a service without live settings of its own. Raises ConfigError."""
    reconfigure = SERVICES[settings.service].reconfigure
    if reconfigure is not None:
        reconfigure(service, settings)


def connection_options(settings: Settings) -> ConnectionOptions:
    """The per-connection options ``settings`` describe for their service."""
    spec = SERVICES[settings.service]
    values: dict[str, Any] = {
        "max_line": settings.max_line,
        "idle_timeout": settings.idle_timeout,
        "line_timeout": settings.line_timeout if "line-timeout" in spec.options else None,
        "keepalive": _keepalive(settings.keepalive),
        "nodelay": settings.no_delay,
        "max_queued": _max_queued(settings, spec),
        "slow_grace": settings.slow_grace if "slow-grace" in spec.options else None,
    }
    if values["max_queued"] is not None:
        # The soft limit: a client may hold up to a quarter of its queue for slow_grace
        # seconds (a burst it will catch up on); reading from it pauses meanwhile.
        high = max(4096, values["max_queued"] // 4)
        values["write_high"] = high
        values["write_low"] = high // 4
    return ConnectionOptions(**values)


def _max_queued(settings: Settings, spec: ServiceSpec) -> int | None:
    """``--max-queued`` for this service. Every service takes it when it is given; its
    default applies where a peer's queue can grow while it does not read: chat (fan-out from
    others) and the line services. A raw service (echo) echoes one read of up to 256 KiB at
    once and stops reading above the high-water mark, so a hard cap that small would cut off
    a fast, healthy client, and its memory is bounded without one."""
    if "max-queued" in settings.sources or "slow-grace" in spec.options:
        return settings.max_queued
    return None


def _keepalive(setting: KeepaliveSetting | None) -> Keepalive | None:
    """``IDLE[,INTERVAL[,COUNT]]`` as given, the rest from :class:`Keepalive`'s defaults; an
    interval left out is never longer than the idle time."""
    if setting is None:
        return None
    default = Keepalive()
    idle = default.idle if setting.idle is None else setting.idle
    interval = min(default.interval, idle) if setting.interval is None else setting.interval
    count = default.count if setting.count is None else setting.count
    return Keepalive(idle, interval, count)
