"""The built-in services, by name, and how each is built from :class:`Settings`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twoway.config import SERVICE_NAMES, Settings
from twoway.errors import ServiceError
from twoway.net.handlers import Framing, Service

__all__ = ["SERVICES", "ServiceSpec", "build_service"]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A built-in service: its name, one-line description and factory."""

    name: str
    summary: str
    factory: Callable[[Settings], Service]
    #: ConnectionOptions overrides this service needs (e.g. chat's slow-consumer limits).
    options: Callable[[Settings], dict[str, Any]] | None = None


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
    from twoway.services.chat import build_chat

    return build_chat(settings)


def _chat_options(settings: Settings) -> dict[str, Any]:
    from twoway.services.chat import chat_connection_options

    return chat_connection_options(settings)


def _dump(settings: Settings) -> Service:
    from twoway.services.dump import DumpService

    return DumpService(
        settings.dir,
        file=settings.file,
        lines=settings.lines,
        fsync=settings.fsync,  # type: ignore[arg-type]  # validated by config
        max_bytes=settings.max_bytes,
        splice=settings.splice,
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


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("chat", "line chat with nicks, rooms and history", _chat, _chat_options),
        ServiceSpec("echo", "sends back every byte, unchanged", _echo),
        ServiceSpec("upper", 'answers each line with You said "<LINE UPPERCASED>"', _upper),
        ServiceSpec("stamp", "greets, then answers HH:MM:SS - server reply: <line>", _stamp),
        ServiceSpec("peers", "answers each line with You have N peers on this server", _peers),
        ServiceSpec("dump", "appends what each client sends to a file", _dump),
        ServiceSpec("file", "sends a file to each client", _file),
    )
}
assert tuple(SERVICES) == SERVICE_NAMES


def build_service(settings: Settings) -> Service:
    """The service ``settings.service`` names, configured. Raises :class:`ServiceError`."""
    spec = SERVICES.get(settings.service)
    if spec is None:
        raise ServiceError(
            f"unknown service {settings.service!r} (choose from {', '.join(SERVICES)})"
        )
    return spec.factory(settings)
