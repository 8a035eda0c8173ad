"""The connection layer's hot paths in process, without sockets: CPU per message.

For refactors of ``twoway.net`` and the chat service: each workload drives the real
connection classes over a transport that only counts what it is given, so the figure is
the Python code's own cost (no kernel, no event-loop I/O). Run it under callgrind for
instruction counts that do not move with the machine's load::

    python bench/hotpath.py                      # ns per message, best of 5
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/hotpath.py --once upper     # total instructions ("Collected")

Workloads: ``upper`` (one ASCII line per read), ``lines`` (three UTF-8 lines per read),
``echo`` (raw chunks), ``chat`` (one line per loop iteration fanned out to 100 members, history
in memory: ``--ephemeral``), ``chat-store`` (the same with history in SQLite, in a temporary
directory: the writer thread's work is counted too, and it commits every ``--commit-every``
lines, as the bench decides rather than the clock, so that a count does not depend on how fast
the machine or valgrind runs; ``--keep`` lines per room, so that a run longer than that trims
at every commit, as a busy server does).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from twoway.config import Settings
from twoway.net.connection import Connection
from twoway.net.registry import Registry
from twoway.services import build_service, connection_options

try:  # after the split of net.connection
    from twoway.net.framed import connection_class
except ImportError:  # before it (to measure the commit before the split)
    from twoway.net.connection import connection_class  # type: ignore[attr-defined,no-redef]

N = {"upper": 200_000, "lines": 100_000, "echo": 200_000, "chat": 20_000, "chat-store": 20_000}


class CountingTransport(asyncio.Transport):
    """Takes writes and counts them; never pauses, never closes."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.peer = ("127.0.0.1", 40000 + n)
        self.writes = 0
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: Any) -> None:
        self.writes += 1
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


class GatedClock:
    """Stands in for the store module's ``time``: its clock stands still and the writer's
    wait for more lines (``sleep``) lasts until the bench opens the gate, so each commit holds
    exactly the lines the bench said since the last one, however fast things run."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)
        self.time = time.time

    def monotonic(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        self.gate.acquire()


def _open(service_name: str, count: int, **settings_: Any) -> tuple[Any, list[Connection]]:
    settings = dataclasses.replace(
        Settings(),
        service=service_name,
        idle_timeout=None,
        line_timeout=None,
        flood_rate=0.0,
        **settings_,
    )
    service = build_service(settings)
    options = connection_options(settings)
    registry = Registry()
    cls = connection_class(service)
    conns = []
    for i in range(count):
        conn = cls(service, options, registry)
        conn.connection_made(CountingTransport(i))
        conns.append(conn)
    return service, conns


async def _chat(n: int, store: bool, commit_every: int, keep: int) -> None:
    if not store:
        _service, conns = _open("chat", 100, ephemeral=True)
        await asyncio.sleep(0.3)  # the joins' presence lines go out
        m = len(conns)
        for i in range(n):
            conns[i % m].data_received(b"hello everyone\n")
            await asyncio.sleep(0)
        return
    import twoway.store.sqlite as sqlite_store

    clock = GatedClock()
    sqlite_store.time = clock  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        service, conns = _open("chat", 100, data_dir=tmp, keep=str(keep))
        db = service.store
        db.start()
        await asyncio.sleep(0.3)
        m = len(conns)
        commits = db.commits
        for start in range(0, n, commit_every):
            for i in range(start, min(n, start + commit_every)):  # chat's loop, as it is
                conns[i % m].data_received(b"hello everyone\n")
                await asyncio.sleep(0)
            clock.gate.release()
            commits += 1
            # Blocking on purpose: the loop stands still while the writer commits.
            while db.commits < commits and db.failed is None:
                time.sleep(0.001)  # noqa: ASYNC251
        db.close()
        assert db.failed is None, db.failed
        assert db.lines_written >= n, (db.lines_written, n)


def _reads(name: str, commit_every: int, keep: int) -> Callable[[int], Any]:
    async def run(n: int) -> None:
        if name in ("chat", "chat-store"):
            await _chat(n, name == "chat-store", commit_every, keep)
            return
        service_name, data = {
            "upper": ("upper", b"hello there\n"),
            "lines": ("upper", "h\u00e9llo\nw\u00f6rld\nagain\n".encode()),
            "echo": ("echo", b"hello there\n"),
        }[name]
        _service, (conn,) = _open(service_name, 1)
        feed = conn.data_received
        for i in range(n):
            feed(data)
            if not i & 1023:
                await asyncio.sleep(0)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=list(N))
    parser.add_argument("--once", action="store_true", help="one run each (for callgrind)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, help="messages per workload (default: each its own)")
    parser.add_argument("--commit-every", type=int, default=1000, help="chat-store: lines")
    parser.add_argument("--keep", type=int, default=2000, help="chat-store: lines per room")
    args = parser.parse_args()
    for name in args.workloads:
        n = args.n or N[name] // (10 if args.once else 1)
        best = float("inf")
        for _ in range(1 if args.once else args.repeat):
            loop = asyncio.new_event_loop()
            start = time.process_time()
            loop.run_until_complete(_reads(name, args.commit_every, args.keep)(n))
            best = min(best, time.process_time() - start)
            loop.close()
        print(f"{name:6} {best / n * 1e9:8.0f} ns/message (n={n}, best of {args.repeat})")


if __name__ == "__main__":
    main()
