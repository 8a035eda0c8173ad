"""How nc, socat and uvicorn users type what ``twoway`` needs, turned into plain values for
:mod:`twoway.cli`: a port after the service (``twoway serve echo 4002``), ``-4``/``-6``,
``HOST:PORT`` and ``[IPV6]:PORT``, ``TWOWAY_CONNECT_*`` variables. Bad input raises a
``click`` usage error (one line, exit 2, from the CLI)."""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from twoway.config import ENV_PREFIX, KeepaliveSetting, Settings
from twoway.config.parse import split_host_port
from twoway.errors import ConfigError
from twoway.services import SERVICES

if TYPE_CHECKING:
    from twoway.net.options import Keepalive

__all__ = [
    "CONNECT_ENV",
    "check_family",
    "choose_family",
    "connect_target",
    "family_host",
    "keepalive_options",
    "serve_positionals",
    "unknown_env",
]

#: ``connect``'s environment variables: ``TWOWAY_CONNECT_EVERY`` for ``--every``.
CONNECT_ENV = ENV_PREFIX + "CONNECT"


def serve_positionals(args: Sequence[str]) -> tuple[str | None, str | None, str | None]:
    """``SERVICE [PATH] [PORT]`` as typed: ``(service, path, port)``.

    A first argument that is a number is the port (the service then comes from the
    environment or the config file); after ``file`` the next one is the PATH (a file may be
    called ``4002``), and a number after that the port. Raises ``click.UsageError``.
    """
    rest = list(args)
    service = rest.pop(0) if rest and not rest[0].isdigit() else None
    spec = SERVICES.get(service) if service is not None else None
    path = port = None
    if rest and spec is not None and "path" in spec.options:
        path = rest.pop(0)
    elif rest and spec is None and not rest[0].isdigit():
        path = rest.pop(0)  # the service comes from elsewhere (or is unknown): config judges
    if rest and rest[0].isdigit():
        port = rest.pop(0)
    if rest:
        takes_path = spec is None or "path" in spec.options
        usage = "SERVICE [PATH] [PORT]" if takes_path else f"{service} [PORT]"
        raise click.UsageError(f"unexpected argument {rest[0]!r}: twoway serve {usage}")
    return service, path, port


def family_host(settings: Settings, family: socket.AddressFamily) -> Settings:
    """``-4``/``-6``: the loopback of that family by default; a given address must be of it;
    a name is resolved to its first address of it."""
    v6 = family == socket.AF_INET6
    label = "-6" if v6 else "-4"
    if settings.sources.get("host") is None:
        return replace(settings, host="::1" if v6 else "127.0.0.1", ipv6_only=v6)
    hosts = []
    for host in settings.hosts:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            try:
                infos = socket.getaddrinfo(
                    host, None, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
                )
            except socket.gaierror:
                raise ConfigError(f"{label}: {host!r} has no IPv{6 if v6 else 4} address") from None
            hosts.append(str(infos[0][4][0]))
            continue
        if (ip.version == 6) != v6:
            raise ConfigError(f"{label} and --host {host}: not an IPv{6 if v6 else 4} address")
        hosts.append(host)
    # -6 with --host ::: IPv6 only, no dual stack.
    return replace(settings, host=",".join(hosts), ipv6_only=v6 or settings.ipv6_only)


def choose_family(four: bool, six: bool) -> socket.AddressFamily | None:
    if four and six:
        raise click.UsageError("use either -4 or -6, not both")
    return socket.AF_INET if four else socket.AF_INET6 if six else None


def connect_target(host: str, port: str | None) -> tuple[str, int]:
    """``HOST PORT``, ``HOST:PORT``, ``[IPV6] PORT`` or ``[IPV6]:PORT``."""
    try:
        name, inline = split_host_port(host)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="HOST") from None
    if port is not None and not port.isdigit():
        raise click.BadParameter(f"{port!r} is not a number", param_hint="PORT")
    given = int(port) if port is not None else None
    if inline is not None and given is not None and inline != given:
        raise click.UsageError(f"two ports: {host} and {port}")
    chosen = given if given is not None else inline
    if chosen is None:
        raise click.UsageError("no port: twoway connect HOST PORT (or HOST:PORT)")
    if not name:
        raise click.BadParameter("empty host", param_hint="HOST")
    return name, chosen


def check_family(host: str, family: socket.AddressFamily | None) -> None:
    if family is None:
        return
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: resolved to that family at each attempt
    want = 6 if family == socket.AF_INET6 else 4
    if ip.version != want:
        raise click.UsageError(f"-{want} and {host}: not an IPv{want} address")


def keepalive_options(setting: KeepaliveSetting | None) -> Keepalive | None:
    """``IDLE[,INTERVAL[,COUNT]]`` as given, the rest from :class:`Keepalive`'s defaults;
    an interval left out is never longer than the idle time (as ``serve`` does)."""
    from twoway.net.options import Keepalive

    if setting is None:
        return None
    default = Keepalive()
    idle = default.idle if setting.idle is None else setting.idle
    interval = min(default.interval, idle) if setting.interval is None else setting.interval
    count = default.count if setting.count is None else setting.count
    return Keepalive(idle, interval, count)


def unknown_env(prefix: str, known: Collection[str]) -> list[str]:
    """One warning per variable under ``prefix`` that is not in ``known`` (a typo), with the
    closest known name."""
    out = []
    for name in sorted(os.environ):
        if name.startswith(prefix) and name not in known:
            match = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {match[0]}?)" if match else ""
            out.append(f"unknown variable {name} ignored{hint}")
    return out
