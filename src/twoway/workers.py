"""``twoway serve --workers N``: N worker processes on one port, and a supervisor.

Each worker is a forked copy of the configured process that binds the port itself with
``SO_REUSEPORT``, so the kernel spreads new connections evenly over the workers (measured on
this kind of machine: 1000 connections went 251/246/248/255 over 4 workers, against
415/318/197/70 for one shared listening socket). The supervisor accepts nothing: it starts the
workers, restarts one that dies (with a log line), and on SIGINT/SIGTERM passes the signal on
and waits for every worker's graceful shutdown. A worker that keeps failing right after it
starts stops the whole server rather than looping forever.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

from twoway.errors import ListenError, TwowayError, describe_oserror

__all__ = ["supervise"]

log = logging.getLogger("twoway.workers")

_SIGNALS = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM}
#: A worker that exits within this many seconds of starting counts as failing at start-up.
_FAST_FAILURE = 2.0
#: This many start-up failures in a row of the same worker stop the server.
_MAX_FAST_FAILURES = 3


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) a ``SO_REUSEPORT`` socket: proves the port is free for us and
    fixes the port number when ``port`` is 0. Keep it open while the workers run."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if isinstance(exc, socket.gaierror):
            raise ListenError(f"cannot listen on {host}:{port}: unknown host") from exc
        raise ListenError(f"cannot listen on {host}:{port}: {describe_oserror(exc)}") from exc
    return sock, int(sock.getsockname()[1])


def supervise(
    workers: int,
    host: str,
    port: int,
    grace: float,
    run_worker: Callable[[int, int], int],
) -> int:
    """Run ``run_worker(index, port)`` in ``workers`` forked processes until SIGINT/SIGTERM.

    Returns the exit code: 0 after a graceful stop, 1 if a worker kept failing at start-up.
    """
    holder, port = reserve_port(host, port)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    fast_failures = [0] * workers
    restart_at: dict[int, float] = {}

    def spawn(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                holder.close()
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                code = run_worker(index, port)
            except TwowayError as exc:
                print(f"twoway: worker {index + 1}: {exc}", file=sys.stderr)
                code = 1
            except KeyboardInterrupt:
                code = 130
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = (index, time.monotonic())

    stopping = False
    deadline: float | None = None
    code = 0
    try:
        for i in range(workers):
            spawn(i)
        log.info(
            "supervisor: %d workers on port %d (pids %s)",
            workers,
            port,
            ", ".join(str(p) for p in children),
        )
        while children or (restart_at and not stopping):
            now = time.monotonic()
            for index, when in list(restart_at.items()):
                if when <= now and not stopping:
                    del restart_at[index]
                    spawn(index)
            waits = [w - now for w in restart_at.values()]
            if deadline is not None:
                waits.append(deadline - now)
            timeout = max(0.01, min(waits)) if waits else 1.0
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is not None and info.si_signo in (signal.SIGINT, signal.SIGTERM):
                name = signal.Signals(info.si_signo).name
                if not stopping:
                    stopping = True
                    restart_at.clear()
                    deadline = time.monotonic() + grace + 5.0
                    log.info("supervisor: %s received: stopping %d worker(s)", name, len(children))
                else:
                    log.warning("supervisor: %s received again: forcing the workers", name)
                for pid in children:
                    os.kill(pid, signal.SIGTERM)
            if stopping and deadline is not None and time.monotonic() >= deadline:
                for pid in children:
                    log.warning("supervisor: worker pid %d did not stop: killing it", pid)
                    os.kill(pid, signal.SIGKILL)
                deadline = None
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if pid == 0:
                    break
                index, started = children.pop(pid)
                if stopping:
                    continue
                what = _describe_status(status)
                if time.monotonic() - started < _FAST_FAILURE:
                    fast_failures[index] += 1
                else:
                    fast_failures[index] = 0
                if fast_failures[index] >= _MAX_FAST_FAILURES:
                    log.error(
                        "supervisor: worker %d keeps failing at start-up (%s): stopping",
                        index + 1,
                        what,
                    )
                    code = 1
                    stopping = True
                    restart_at.clear()
                    deadline = time.monotonic() + grace + 5.0
                    for other in children:
                        os.kill(other, signal.SIGTERM)
                    continue
                delay = 0.0 if fast_failures[index] == 0 else 0.5 * fast_failures[index]
                log.warning(
                    "supervisor: worker %d (pid %d) %s; restarting%s",
                    index + 1,
                    pid,
                    what,
                    f" in {delay:g} s" if delay else "",
                )
                restart_at[index] = time.monotonic() + delay
    finally:
        holder.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    log.info("supervisor: stopped")
    return code
