"""``twoway serve --workers N``: N worker processes on one port, and a supervisor.

Each worker is a forked copy of the configured process that binds the port itself with
``SO_REUSEPORT``, so the kernel spreads new connections evenly over the workers (measured on
this kind of machine: 1000 connections went 251/246/248/255 over 4 workers, against
415/318/197/70 for one shared listening socket). The supervisor accepts nothing: it starts the
workers, replaces one that dies or hangs (with a log line), and on SIGINT/SIGTERM passes the
signal on and waits for every worker's graceful shutdown. A worker that keeps failing right
after it starts stops the whole server rather than looping forever; one that fails with a
configuration error (a refused Redis password, say) stops it at once: a restart cannot help.

The liveness link: each worker holds one end of a socket pair, the supervisor the other.
The supervisor pings every worker (one byte) several times per ``liveness_timeout`` and
replaces one whose answer is overdue: a worker stopped (SIGSTOP), deadlocked or starved, not
only one that died. A thread of the worker answers the pings, in the spirit of uvicorn's
``supervisors/multiprocess.py``. The same link works the other way: the kernel closes the
supervisor's ends when it dies, even by ``kill -9``, so the worker reads EOF and shuts itself
down gracefully (its line clients read ``server shutting down``) instead of serving on
unsupervised forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twoway.errors import ConfigError, ListenError, TwowayError, describe_oserror

__all__ = ["DEFAULT_LIVENESS_TIMEOUT", "Supervisor", "reserve_port", "supervise"]

log = logging.getLogger("twoway.workers")

_SIGNALS = {
    signal.SIGCHLD,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGQUIT,
    # Signals a user sends by habit: never the default action (death without a word).
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
}
#: A worker that exits within this many seconds of starting counts as failing at start-up.
_FAST_FAILURE = 2.0
#: This many start-up failures in a row of the same worker stop the server.
_MAX_FAST_FAILURES = 3
#: A worker's exit code for a configuration error (``EX_CONFIG`` of sysexits.h): the server
#: stops without restarting it.
_EXIT_CONFIG = 78
#: Seconds a worker may leave a ping unanswered before it is replaced. A worker's answer
#: comes from a thread of its own, so a busy event loop does not delay it; only a process
#: that is stopped, deadlocked or starved of CPU for this long is replaced. Generous enough
#: for a machine under heavy load (uvicorn waits 5 s), short enough that a hung worker's
#: share of new connections is not lost for long.
DEFAULT_LIVENESS_TIMEOUT = 10.0
#: Pings per liveness timeout: an answer is overdue between ``timeout`` and ``timeout``
#: plus one ping interval after the last one.
_PINGS_PER_TIMEOUT = 5
#: The extra seconds after ``grace`` a stopping worker gets before it is killed.
_STOP_MARGIN = 5.0

# The link's bytes, supervisor to worker: a ping, and "stopping" (the supervisor's SIGTERM
# follows: the worker must not take the EOF that comes after as the supervisor's death).
_PING = b"p"
_STOPPING = b"s"
# Worker to supervisor: the answer to a ping.
_PONG = b"P"


class Notify(Protocol):
    """What the supervisor tells a service manager (``twoway.systemd.Notifier``): the
    supervisor is the main process systemd listens to, not the workers."""

    def ready(self, status: str) -> bool: ...
    def reloading(self) -> bool: ...
    def stopping(self, status: str = ...) -> bool: ...


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


@dataclass(slots=True)
class _Worker:
    """The supervisor's view of one running worker."""

    index: int
    pid: int
    started: float
    link: socket.socket  # the supervisor's end of the liveness link (non-blocking)
    answered: float  # when the last answer (or the start) was seen
    hung: bool = False  # killed for not answering: its exit is a replacement, logged already


class _WorkerSide:
    """The worker's end of the liveness link: a daemon thread that answers pings and, on EOF
    before any "stopping" byte, shuts the worker down with SIGTERM to itself (the process
    layer's graceful path: stop accepting, tell line clients, wait ``grace``)."""

    def __init__(self, index: int, link: socket.socket) -> None:
        self.index = index
        self.link = link
        self.thread = threading.Thread(target=self._run, name="twoway-liveness", daemon=True)

    def start(self) -> None:
        """Start answering (in the worker, before it serves)."""
        self.thread.start()

    def _run(self) -> None:
        stopping = False
        link = self.link
        while True:
            try:
                data = link.recv(64)
            except OSError:
                data = b""
            if not data:
                break
            if _STOPPING in data:
                stopping = True
            if _PING in data:
                with contextlib.suppress(OSError):  # the supervisor is gone: EOF is next
                    link.sendall(_PONG)
        link.close()
        if not stopping:
            log.warning(
                "worker %d (pid %d): the supervisor is gone: shutting down",
                self.index + 1,
                os.getpid(),
            )
            os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Runs ``run_worker(index, port)`` in ``workers`` forked processes and keeps them
    running until SIGINT/SIGTERM: see the module docstring.

    ``grace``: the workers' graceful-shutdown time; a stopping worker is killed
    ``grace`` + 5 s after the signal. ``liveness_timeout``: seconds a worker may leave a
    ping unanswered before it is killed and replaced (``None`` disables the pings; the
    workers still notice the supervisor's death).

    :meth:`run` drives the other methods: :meth:`spawn` forks a worker, :meth:`reap` collects
    the exits (and schedules restarts), :meth:`on_signal` handles SIGINT/SIGTERM, and
    :meth:`tick` does what is due by the clock (restarts, pings, the hang check, the stop
    deadline). Signals are blocked and taken with ``sigtimedwait``: no handler runs in the
    middle of a fork.
    """

    def __init__(
        self,
        workers: int,
        host: str | None,
        port: int,
        grace: float,
        run_worker: Callable[[int, int], int],
        *,
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
        notify: Notify | None = None,
    ) -> None:
        if liveness_timeout is not None and liveness_timeout <= 0:
            raise ValueError("liveness_timeout must be positive or None")
        self.workers = workers
        #: ``None``: no TCP port of our own to reserve (systemd's sockets, a Unix socket).
        self.host = host
        self.port = port
        self.notify = notify
        self.grace = grace
        self.run_worker = run_worker
        self.liveness_timeout = liveness_timeout
        self.ping_interval = (
            liveness_timeout / _PINGS_PER_TIMEOUT if liveness_timeout is not None else None
        )
        self.children: dict[int, _Worker] = {}  # by pid
        self.code = 0
        self.stopping = False
        self._holder: socket.socket | None = None
        self._old_mask: set[int | signal.Signals] = set()
        self._fast_failures = [0] * workers
        self._restart_at: dict[int, float] = {}  # index -> when
        self._deadline: float | None = None  # stopping: when the stragglers are killed
        self._next_ping = 0.0

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them until they are all stopped.

        Returns the exit code: 0 after a graceful stop, 1 if a worker kept failing at
        start-up. Raises :class:`~twoway.errors.ListenError` if the port is not free."""
        if self.host is not None:
            self._holder, self.port = reserve_port(self.host, self.port)
        self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for i in range(self.workers):
                self.spawn(i)
            log.info(
                "supervisor: %d workers on %s (pids %s)",
                self.workers,
                f"port {self.port}" if self.host is not None else "the shared sockets",
                ", ".join(str(p) for p in self.children),
            )
            if self.notify is not None:
                self.notify.ready(f"{self.workers} workers")
            while self.children or (self._restart_at and not self.stopping):
                info = signal.sigtimedwait(_SIGNALS, self._wait_time(time.monotonic()))
                if info is not None and info.si_signo != signal.SIGCHLD:
                    self.on_signal(info.si_signo)
                self.reap()
                self.tick(time.monotonic())
        finally:
            for worker in self.children.values():
                worker.link.close()
            if self._holder is not None:
                self._holder.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
        log.info("supervisor: stopped")
        return self.code

    def _wait_time(self, now: float) -> float:
        waits = [when - now for when in self._restart_at.values()]
        if self._deadline is not None:
            waits.append(self._deadline - now)
        if self.ping_interval is not None and not self.stopping:
            waits.append(self._next_ping - now)
        return max(0.01, min(waits)) if waits else 1.0

    # -- the four jobs ---------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        """Fork worker ``index``. The child never returns from here: it runs the worker and
        exits with its code (70 after an unexpected exception, which is printed)."""
        sys.stdout.flush()
        sys.stderr.flush()
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                # A process group of its own: a terminal's Ctrl-C (SIGINT to the foreground
                # group) reaches the supervisor alone, which passes it on once. Had the
                # worker received it too, the supervisor's SIGTERM would be its second
                # signal, which closes every connection at once instead of gracefully.
                os.setpgid(0, 0)
                ours.close()
                # Other workers' links too: a worker holding one would keep that worker
                # from seeing the EOF that says the supervisor is gone.
                for other in self.children.values():
                    other.link.close()
                if self._holder is not None:
                    self._holder.close()
                signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
                _WorkerSide(index, theirs).start()
                code = self.run_worker(index, self.port)
            except TwowayError as exc:
                print(f"twoway: worker {index + 1}: {exc}", file=sys.stderr)
                code = _EXIT_CONFIG if isinstance(exc, ConfigError) else 1
            except KeyboardInterrupt:
                code = 130
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        now = time.monotonic()
        self.children[pid] = _Worker(index, pid, now, ours, now)

    def reap(self) -> None:
        """Collect every worker that exited; schedule its restart (or stop the server if
        it keeps failing at start-up, or failed with a configuration error)."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            worker = self.children.pop(pid, None)
            if worker is None:
                continue
            worker.link.close()
            if self.stopping:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _EXIT_CONFIG:
                # It printed the error itself; a restart would only print it again.
                log.error("supervisor: worker %d: configuration error: stopping", worker.index + 1)
                self.code = 1
                self._stop()
            else:
                self._restart(worker, _describe_status(status))

    def _restart(self, worker: _Worker, what: str) -> None:
        index = worker.index
        if time.monotonic() - worker.started < _FAST_FAILURE:
            self._fast_failures[index] += 1
        else:
            self._fast_failures[index] = 0
        if self._fast_failures[index] >= _MAX_FAST_FAILURES:
            log.error(
                "supervisor: worker %d keeps failing at start-up (%s): stopping", index + 1, what
            )
            self.code = 1
            self._stop()
            return
        delay = 0.0 if self._fast_failures[index] == 0 else 0.5 * self._fast_failures[index]
        if not worker.hung:  # a hung worker's replacement was logged when it was killed
            log.warning(
                "supervisor: worker %d (pid %d) %s; restarting%s",
                index + 1,
                worker.pid,
                what,
                f" in {delay:g} s" if delay else "",
            )
        self._restart_at[index] = time.monotonic() + delay

    def on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM/SIGQUIT: the first one starts a graceful stop of every worker;
        another one passes the signal on again (which makes the workers close their
        connections now). SIGHUP is passed to every worker (each reloads what it can);
        SIGUSR1/SIGUSR2 are logged and ignored."""
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            log.info(
                "supervisor: SIGHUP received: passing it on to %d worker(s)", len(self.children)
            )
            if self.notify is not None:
                self.notify.reloading()
            for pid in self.children:
                os.kill(pid, signal.SIGHUP)
            if self.notify is not None:  # each worker logs its own reload
                self.notify.ready(f"{len(self.children)} workers")
            return
        if signum in (signal.SIGUSR1, signal.SIGUSR2):
            log.info("supervisor: %s received: ignored (it has no job here)", name)
            return
        if not self.stopping:
            log.info("supervisor: %s received: stopping %d worker(s)", name, len(self.children))
            self._stop()
        else:
            log.warning("supervisor: %s received again: forcing the workers", name)
            for pid in self.children:
                os.kill(pid, signal.SIGTERM)

    def tick(self, now: float) -> None:
        """What is due by the clock: restarts, pings and the hang check, and (when stopping)
        killing the workers still running at the deadline."""
        if self.stopping:
            if self._deadline is not None and now >= self._deadline:
                for pid in self.children:
                    log.warning("supervisor: worker pid %d did not stop: killing it", pid)
                    os.kill(pid, signal.SIGKILL)
                self._deadline = None
            return
        for index, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[index]
                self.spawn(index)
        if self.ping_interval is None or self.liveness_timeout is None:
            return
        for worker in self.children.values():
            if self._answered(worker):
                worker.answered = now
            elif not worker.hung and now - worker.answered > self.liveness_timeout:
                worker.hung = True
                log.warning(
                    "supervisor: worker %d (pid %d) has not answered for %.1f s (hung or "
                    "stopped): killing it and starting another",
                    worker.index + 1,
                    worker.pid,
                    now - worker.answered,
                )
                os.kill(worker.pid, signal.SIGKILL)  # works on a stopped process too
        if now >= self._next_ping:
            self._next_ping = now + self.ping_interval
            for worker in self.children.values():
                self._send(worker, _PING)

    # -- helpers ---------------------------------------------------------------------------

    def _stop(self) -> None:
        if self.notify is not None:
            self.notify.stopping()
        self.stopping = True
        self._restart_at.clear()
        self._deadline = time.monotonic() + self.grace + _STOP_MARGIN
        for pid, worker in self.children.items():
            self._send(worker, _STOPPING)
            os.kill(pid, signal.SIGTERM)

    @staticmethod
    def _answered(worker: _Worker) -> bool:
        """Read what the worker sent; True if that includes an answer."""
        got = False
        while True:
            try:
                data = worker.link.recv(256)
            except (BlockingIOError, InterruptedError):
                return got
            except OSError:  # the worker is gone: reap() will see its exit
                return got
            if not data:
                return got
            got = got or _PONG in data

    @staticmethod
    def _send(worker: _Worker, what: bytes) -> None:
        # One byte into an empty buffer never blocks; a worker that stopped reading has
        # a full one, and its missing answers already tell.
        with contextlib.suppress(OSError):
            worker.link.send(what)


def supervise(
    workers: int,
    host: str | None,
    port: int,
    grace: float,
    run_worker: Callable[[int, int], int],
    *,
    liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
    notify: Notify | None = None,
) -> int:
    """Run ``run_worker(index, port)`` in ``workers`` forked processes until SIGINT/SIGTERM
    (see :class:`Supervisor`). Returns the exit code: 0 after a graceful stop, 1 if a
    worker kept failing at start-up."""
    supervisor = Supervisor(
        workers, host, port, grace, run_worker, liveness_timeout=liveness_timeout, notify=notify
    )
    return supervisor.run()
