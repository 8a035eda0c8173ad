"""systemd without a dependency: socket activation and ``sd_notify``.

Socket activation (``sd_listen_fds(3)``): systemd (or ``systemd-socket-activate``) binds the
sockets of a ``.socket`` unit and starts the service with them open from descriptor 3 on,
``LISTEN_FDS`` saying how many, ``LISTEN_PID`` whose they are (a child that inherited the
environment must not take them) and ``LISTEN_FDNAMES`` their ``FileDescriptorName=``.
:func:`listen_sockets` takes them and clears the variables, as ``sd_listen_fds(1)`` does.

Notification (``sd_notify(3)``): one datagram of ``KEY=VALUE`` lines to the Unix socket named
by ``NOTIFY_SOCKET`` (``@`` for the abstract namespace). :class:`Notifier` sends ``READY=1``
once the server accepts, ``RELOADING=1`` (with ``MONOTONIC_USEC``, which
``Type=notify-reload`` requires) and ``READY=1`` again around a SIGHUP reload,
``STOPPING=1`` at shutdown, and ``STATUS=`` lines for ``systemctl status``. Without
``NOTIFY_SOCKET`` it does nothing; a failed send is logged once and never stops the server.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from twoway.errors import ConfigError

__all__ = ["SD_LISTEN_FDS_START", "ActivatedSocket", "Notifier", "listen_sockets"]

log = logging.getLogger("twoway")

#: The first descriptor systemd passes.
SD_LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(frozen=True, slots=True)
class ActivatedSocket:
    """A listening socket systemd handed over, and its ``FileDescriptorName=``."""

    sock: socket.socket
    name: str


def listen_sockets(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> list[ActivatedSocket]:
    """The listening sockets systemd passed to this process (``[]`` if none), non-blocking
    and close-on-exec; the ``LISTEN_*`` variables are removed so that no child takes them.

    Raises :class:`ConfigError` for what cannot be served: a descriptor that is not a
    listening stream socket (a datagram or FIFO unit), or a malformed ``LISTEN_FDS``."""
    env = os.environ if environ is None else environ
    raw, owner = env.get("LISTEN_FDS"), env.get("LISTEN_PID")
    if raw is None:
        return []
    names = env.get("LISTEN_FDNAMES", "")
    for key in _VARIABLES:
        env.pop(key, None)
    if owner is not None and owner.strip() != str(os.getpid() if pid is None else pid):
        return []  # meant for the process we inherited the environment from
    try:
        count = int(raw)
    except ValueError:
        raise ConfigError(f"systemd: LISTEN_FDS={raw!r} is not a number") from None
    split = names.split(":") if names else []
    out = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        name = split[i] if i < len(split) else "unknown"
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            raise ConfigError(f"systemd: descriptor {fd} ({name}) is not open") from None
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"systemd: descriptor {fd} ({name}) is not a socket")
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise ConfigError(
                f"systemd: descriptor {fd} ({name}) is not a stream socket: twoway serves "
                "ListenStream= sockets only"
            )
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise ConfigError(
                f"systemd: descriptor {fd} ({name}) is not listening: Accept=yes units are "
                "not supported (use Accept=no, the default)"
            )
        sock.set_inheritable(False)
        sock.setblocking(False)
        out.append(ActivatedSocket(sock, name))
    return out


class Notifier:
    """``sd_notify`` to ``NOTIFY_SOCKET`` (from ``environ``); inert without it."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET") or None
        self.address: str | bytes | None = path
        if path is not None and path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        self._failed = False

    @property
    def active(self) -> bool:
        """Whether there is a socket to notify."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` (``READY=1``, ``STATUS=...``) as one datagram; True if sent."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(data)
        except OSError as exc:
            if not self._failed:  # once: systemd gone is not worth a line per event
                log.warning("systemd: cannot notify %s: %s", env_name(self.address), exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1`` and ``STATUS=status``."""
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` systemd 253's notify-reload needs."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self, status: str = "shutting down") -> bool:
        """``STOPPING=1`` and ``STATUS=status``."""
        return self.send("STOPPING=1", f"STATUS={status}")


def env_name(address: str | bytes | None) -> str:
    """A ``NOTIFY_SOCKET`` address as the user wrote it."""
    if isinstance(address, bytes):
        return "@" + address[1:].decode(errors="replace")
    return str(address)
