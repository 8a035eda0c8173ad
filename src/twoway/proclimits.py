"""The process's own limits: the open-files limit, what ``--max-conns`` fits in it, glibc's
allocator.

A server's connection count is bounded by its open-files limit as much as by
``--max-conns``: :func:`raise_nofile_limit` takes the soft limit up to the hard one at start-up,
:func:`fit_max_conns` lowers a ``--max-conns`` the limit cannot hold (keeping
:data:`FD_RESERVE` descriptors for the server itself) and :func:`fit_logged` says so in one
line. :func:`tune_malloc` keeps large read buffers in glibc's heap. Everything here is
process-wide, so only the runners (:mod:`twoway.runner`, :mod:`twoway.serving`) call it,
never the library.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import sys

from twoway.logs import PROCESS_LOGGER

__all__ = ["FD_RESERVE", "fit_logged", "fit_max_conns", "raise_nofile_limit", "tune_malloc"]

#: The lines that always show, whatever --log-level: ready, signals, shutdown, limits.
plog = logging.getLogger(PROCESS_LOGGER)

# glibc serves allocations of 128 KiB and more with mmap and gives them back on free, so every
# 256 KiB read a busy stream receives costs fresh page faults. Measured on `compare push`:
# +21 % MiB/s and -19 % CPU per GiB with these two settings, the same peak RSS.
_MMAP_THRESHOLD = 8 * 1024 * 1024
_TRIM_THRESHOLD = 64 * 1024 * 1024


def tune_malloc() -> bool:
    """Keep large buffers in glibc's heap instead of mmap/munmap per allocation (Linux with
    glibc only; skipped when the user set ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_``). Returns True if the settings were applied. Process-wide, so
    only the runner calls it, never the library."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD)) and bool(
        mallopt(m_trim_threshold, _TRIM_THRESHOLD)
    )


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


#: Descriptors kept back from ``--max-conns`` for what is not a client: the listening sockets,
#: the event loop's own, the log, a Redis bus, files a service opens. Redis keeps the same 32
#: (``CONFIG_MIN_RESERVED_FDS``) when it lowers ``maxclients`` to fit ``ulimit -n``.
FD_RESERVE = 32


def fit_max_conns(requested: int | None, nofile: int, reserve: int = FD_RESERVE) -> int | None:
    """``requested`` connections, lowered to what ``nofile`` open files allow with ``reserve``
    kept back (at least 1); ``None`` (no limit) stays ``None``: the user asked for it."""
    if requested is None:
        return None
    return min(requested, max(1, nofile - reserve))


def fit_logged(requested: int | None, nofile: int) -> int | None:
    """:func:`fit_max_conns`, with one line when the limit had to be lowered."""
    fitted = fit_max_conns(requested, nofile)
    if fitted != requested:
        plog.warning(
            "max-conns lowered from %d to %d: the open-files limit is %d (%d kept for the "
            "server itself); raise it with ulimit -n or systemd's LimitNOFILE=",
            requested,
            fitted,
            nofile,
            FD_RESERVE,
            extra={"event": "limit_lowered", "max_conns": fitted, "nofile": nofile},
        )
    return fitted
