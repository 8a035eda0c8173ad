#!/usr/bin/env python3
"""Cross-server chat delivery through the Redis bus, against single-server chat.

``compare`` drives one server port, so the two-server case is measured here: senders connect
to node A, receivers to node B (both ``twoway serve chat --bus redis://...`` on one
``redis-server``), over real sockets. Every sender sends numbered, timestamped lines at a fixed
rate (or as fast as a window allows, ``--rate 0``); every receiver checks each sender's
numbers arrive once and in order and records the delivery latency (send to read).

    python bench/bus_latency.py --mode pair     # senders on A, receivers on B, via Redis
    python bench/bus_latency.py --mode single   # one server, local bus: the baseline
    python bench/bus_latency.py --mode same     # one server on the Redis bus (bus overhead)
    python bench/bus_latency.py --mode pair --rate 0        # throughput at saturation

Servers (and redis-server) are pinned to CPU 0 and this load generator to CPU 1 when
``taskset`` is available, like ``../shared/bench/compare``. One JSON line is printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *cmd]
    return cmd


class Servers:
    """redis-server (if needed) and the twoway nodes, stopped at the end."""

    def __init__(self, mode: str, cpus: str | None, loop: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.redis_version = ""
        bus = "local"
        if mode in ("pair", "same"):
            port = free_port()
            self.procs.append(
                subprocess.Popen(
                    pinned(
                        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                        cpus,
                    ),
                    stdout=subprocess.DEVNULL,
                )
            )
            self._wait_redis(port)
            self.redis_version = subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            bus = f"redis://127.0.0.1:{port}/0"
        for _ in range(2 if mode == "pair" else 1):
            self.ports.append(self._start_node(bus, cpus, loop))

    def _wait_redis(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def _start_node(self, bus: str, cpus: str | None, loop: str) -> int:
        cmd = [sys.executable, "-m", "twoway", "serve", "chat", "--port", "0"]
        cmd += ["--bus", bus, "--flood-rate", "0", "--loop", loop, "--ephemeral"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(pinned(cmd, cpus), stderr=subprocess.PIPE, env=env)
        self.procs.append(proc)
        assert proc.stderr is not None
        for raw in proc.stderr:
            m = re.search(rb"listening on \S+:(\d+)", raw)
            if m:
                port = int(m.group(1))
                break
        else:
            raise SystemExit("a twoway node did not start")
        # Keep draining its log (a line per connection) so the pipe never fills.
        stream = proc.stderr
        threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
        return port

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    i = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[i] / 1000.0  # ns -> us


class Stats:
    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.delivered = 0
        self.order_errors = 0
        self.duplicates = 0
        self.sent = 0
        self.window_start = 0
        self.window_end = 0


TOKEN = re.compile(rb"~(\d+)\.(\d+)\.(\d+)~")


async def reader_task(
    reader: asyncio.StreamReader,
    stats: Stats | None,
    last: dict[int, int] | None,
    acked: list[int] | None,
) -> None:
    """Read everything; with ``stats``, account for every token line."""
    buf = b""
    while True:
        data = await reader.read(1 << 16)
        if not data:
            return
        if stats is None:
            continue
        now = time.monotonic_ns()
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            m = TOKEN.search(line)
            if m is None:
                continue
            sender, seq, t = int(m.group(1)), int(m.group(2)), int(m.group(3))
            assert last is not None
            prev = last.get(sender, 0)
            if seq <= prev:
                stats.duplicates += 1
                continue
            if seq != prev + 1:
                stats.order_errors += 1
            last[sender] = seq
            if acked is not None:
                acked[sender] = seq
            if stats.window_start <= t < stats.window_end:
                stats.delivered += 1
                stats.latencies.append(now - t)


async def run(args: argparse.Namespace, ports: list[int]) -> dict[str, object]:
    a_port, b_port = ports[0], ports[-1]
    stats = Stats()
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []
    acked = [0] * args.senders  # highest number the witness receiver saw, per sender

    async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writers.append(w)
        return r, w

    senders = [await connect(a_port) for _ in range(args.senders)]
    receivers = [await connect(b_port) for _ in range(args.receivers)]
    for i, (r, _) in enumerate(receivers):
        tasks.append(asyncio.create_task(reader_task(r, stats, {}, acked if i == 0 else None)))
    for r, _ in senders:
        tasks.append(asyncio.create_task(reader_task(r, None, None, None)))
    # Let joins, welcomes and the directories settle.
    await asyncio.sleep(args.settle)

    start = time.monotonic_ns() + 200_000_000
    stats.window_start = start + int(args.warmup * 1e9)
    stats.window_end = stats.window_start + int(args.duration * 1e9)
    end = stats.window_end
    pad = b"x" * max(0, args.size - 40)

    async def send(i: int, w: asyncio.StreamWriter) -> None:
        seq = 0
        interval = 1e9 / args.rate if args.rate > 0 else 0.0
        next_at = start + i * interval / max(1, args.senders)
        while True:
            now = time.monotonic_ns()
            if now >= end:
                return
            if args.rate > 0:
                if now < next_at:
                    await asyncio.sleep((next_at - now) / 1e9)
                next_at += interval
            else:
                while seq - acked[i] >= args.window:
                    await asyncio.sleep(0.0005)
                    if time.monotonic_ns() >= end:
                        return
            seq += 1
            t = time.monotonic_ns()
            w.write(b"~%d.%d.%d~%s\n" % (i, seq, t, pad))
            if stats.window_start <= t < stats.window_end:
                stats.sent += 1
            if args.rate == 0 and seq % 16 == 0:
                await w.drain()

    await asyncio.gather(*(send(i, w) for i, (_, w) in enumerate(senders)))
    await asyncio.sleep(args.drain)
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(stats.latencies)
    expected = stats.sent * args.receivers
    return {
        "mode": args.mode,
        "senders": args.senders,
        "receivers": args.receivers,
        "rate_per_sender": args.rate,
        "sent_per_s": round(stats.sent / args.duration),
        "delivered_per_s": round(stats.delivered / args.duration),
        "loss_pct": round(100 * (1 - stats.delivered / expected), 3) if expected else None,
        "p50_us": round(percentile(lat, 50)),
        "p99_us": round(percentile(lat, 99)),
        "p999_us": round(percentile(lat, 99.9)),
        "max_us": round(lat[-1] / 1000) if lat else None,
        "order_errors": stats.order_errors,
        "duplicates": stats.duplicates,
    }


@contextlib.contextmanager
def pin_self(cpus: str | None) -> Iterator[None]:
    if cpus and hasattr(os, "sched_setaffinity"):
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        try:
            yield
        finally:
            os.sched_setaffinity(0, old)
    else:
        yield


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=["pair", "single", "same"], default="pair")
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--receivers", type=int, default=10)
    p.add_argument("--rate", type=float, default=100.0, help="lines/s per sender (0: window)")
    p.add_argument("--window", type=int, default=64, help="with --rate 0: lines in flight")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--drain", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--loop", default="auto")
    args = p.parse_args()
    servers = Servers(args.mode, args.server_cpus or None, args.loop)
    try:
        with pin_self(args.load_cpus or None):
            try:
                import uvloop

                result = uvloop.run(run(args, servers.ports))
            except ImportError:
                result = asyncio.run(run(args, servers.ports))
    finally:
        servers.close()
    result["redis"] = servers.redis_version
    print(
        f"{args.mode}: sent {result['sent_per_s']}/s, delivered {result['delivered_per_s']}/s, "
        f"loss {result['loss_pct']} %, p50 {result['p50_us']} us, p99 {result['p99_us']} us, "
        f"p99.9 {result['p999_us']} us, order errors {result['order_errors']}, "
        f"duplicates {result['duplicates']}"
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
