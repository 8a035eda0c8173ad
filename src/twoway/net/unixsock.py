"""Listening on a Unix socket: ``--unix PATH`` and ``--unix-mode``.

A socket file left by a server that crashed (or was killed) makes ``bind`` fail with
"address already in use". :func:`bind_unix` replaces such a file only when nothing listens on
it (a connection attempt is refused), never a live server's socket and never a file that is
not a socket; :func:`remove_unix` deletes the file at exit, and only if it is still the one
this process bound (same inode), so a second server started on the same path meanwhile keeps
its socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

from twoway.errors import ListenError, describe_oserror

__all__ = ["bind_unix", "remove_unix"]


def _stale(path: str) -> bool:
    """Whether ``path`` is a socket file nobody listens on (so it may be replaced)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"cannot listen on {path}: the file exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return True
        raise ListenError(f"cannot listen on {path}: {describe_oserror(exc)}") from exc
    finally:
        probe.close()
    raise ListenError(f"cannot listen on {path}: another server is listening there")


def bind_unix(path: str, mode: int | None = None, backlog: int = 1024) -> tuple[socket.socket, int]:
    """A listening, non-blocking Unix stream socket at ``path`` (``mode``: its permission
    bits, e.g. ``0o660``; default: what the umask gives), and the inode of its file (for
    :func:`remove_unix`). Raises :class:`ListenError`."""
    if _stale(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
        inode = os.lstat(path).st_ino  # the file's; fstat of the socket gives sockfs's
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {describe_oserror(exc)}") from exc
    return sock, inode


def remove_unix(path: str, inode: int) -> None:
    """Delete the socket file ``path`` if it is still the one with ``inode``."""
    with contextlib.suppress(OSError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
