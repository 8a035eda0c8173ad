#!/usr/bin/env python3
"""A burst of chat joins: N clients connect at once; how long until every one is in the room?

``compare`` has no scenario for this, so it is measured here, with the same conventions
(server pinned to CPU 0, this load generator to CPU 1, medians of alternating rounds). For
each server and round:

1. start the server on a free port;
2. open N sockets at once (non-blocking connects, all issued before any is waited on) and
   time until each has read its welcome (twoway: ``*** type /help for commands``; the Node
   anchor sends none, so it has no such figure);
3. one more client says ``ping``; time, from the first connect, until all N have read it:
   every client is in the room and reachable, the same job for both servers;
4. server CPU seconds over the whole burst, from ``/proc/PID/stat``.

    python bench/chat_joins.py                        # twoway on uvloop and asyncio, Node
    python bench/chat_joins.py --conns 3000 --repeat 5
    python bench/chat_joins.py --json bench/results/chat-joins.json

The JSON has compare's shape (``summary``: one row per metric, each server's median), so
``bench/run.py chat-joins`` judges it like any other workload.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("TWOWAY_BENCH_HARNESS", ROOT.parent / "shared" / "bench"))
WELCOME_END = b"*** type /help for commands\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def servers(loops: list[str], node: bool) -> dict[str, list[str]]:
    """label -> command line ({port} filled in later)."""
    out = {
        ("twoway" if loop == "auto" else f"twoway-{loop}"): [
            sys.executable,
            *[
                "-m",
                "twoway",
                "serve",
                "chat",
                "--ephemeral",
                "--port",
                "{port}",
                "--host",
                "127.0.0.1",
                "--log-level",
                "warning",
            ],
            "--loop",
            loop,
        ]
        for loop in loops
    }
    if node and shutil.which("node"):
        out["node"] = ["node", str(SHARED / "anchors" / "node" / "chat.js"), "{port}", "127.0.0.1"]
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: server exited ({proc.returncode}) before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling: the server logs nothing at --log-level warning
    raise SystemExit("bench: server never listened")


def one_round(
    cmd: list[str], conns: int, cpus: str | None, welcome: bool, timeout: float
) -> dict[str, float]:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in cmd]
    if cpus and shutil.which("taskset"):
        argv = ["taskset", "-c", cpus, *argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env, start_new_session=True)
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        wait_listening(port, proc)
        time.sleep(0.2)  # the probe connection above is gone before the burst starts
        cpu0 = cpu_seconds(proc.pid)
        started = time.monotonic()
        for i in range(conns):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, i)
        data = [bytearray() for _ in range(conns)]
        admitted = None
        if welcome:
            missed = read_until(sel, socks, data, WELCOME_END, timeout)
            admitted = time.monotonic() - started if not missed else None
        else:  # nothing to read: wait until every connect has completed
            for s in socks:
                sel_w = selectors.DefaultSelector()
                sel_w.register(s, selectors.EVENT_WRITE)
                sel_w.select(timeout)
                sel_w.close()
        # Pinged until every client has read a ping: a connection still in the listen queue
        # (or whose SYN is being retried) is not in the room yet.
        probe = socket.create_connection(("127.0.0.1", port))
        socks.append(probe)
        unreached = read_until(sel, socks, data, b"ping from the probe\n", timeout, probe)
        reached = time.monotonic() - started
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        sel.close()
        for s in socks:
            s.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    out = {"server CPU s": cpu, "unreached clients": float(unreached)}
    if not unreached:
        out["all reached s"] = reached
    if admitted is not None:
        out["admitted s"] = admitted
    return out


def read_until(
    sel: selectors.BaseSelector,
    socks: list[socket.socket],
    data: list[bytearray],
    done: bytes,
    timeout: float,
    pinger: socket.socket | None = None,
) -> int:
    """Read every socket until each has read ``done`` (pinging with ``pinger`` meanwhile);
    how many had not at the deadline."""
    waiting = {i for i, d in enumerate(data) if done not in d}
    deadline = time.monotonic() + timeout
    next_ping = 0.0
    while waiting:
        if pinger is not None and time.monotonic() >= next_ping:
            pinger.sendall(done)
            next_ping = time.monotonic() + 0.02
        left = deadline - time.monotonic()
        if left <= 0:
            return len(waiting)
        for key, _ in sel.select(min(left, 0.02 if pinger else 1.0)):
            i = key.data
            try:
                chunk = socks[i].recv(1 << 18)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(socks[i])  # closed by the server: never reached
                continue
            # Keep only a tail: the lines themselves are not needed, only the marker.
            data[i] = data[i][-200:] + chunk if len(data[i]) > 4096 else data[i] + chunk
            if i in waiting and done in data[i]:
                waiting.discard(i)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to reach everyone")
    p.add_argument("--loops", default="uvloop,asyncio", help="twoway's --loop values")
    p.add_argument("--no-node", action="store_true", help="skip the Node.js anchor")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--json", type=Path, help="write the results there (compare's shape)")
    opts = p.parse_args(argv)
    if opts.client_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in opts.client_cpus.split(",")})
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = opts.conns + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    chosen = servers(opts.loops.split(","), not opts.no_node)
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label in chosen}
    for r in range(opts.repeat):
        for label, cmd in chosen.items():  # alternating, as compare does
            got = one_round(
                cmd, opts.conns, opts.server_cpus, welcome=label != "node", timeout=opts.timeout
            )
            rounds[label].append(got)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in got.items())
            print(f"round {r + 1} {label}: {shown}", flush=True)
    metrics = ["admitted s", "all reached s", "unreached clients", "server CPU s"]
    summary = []
    for metric in metrics:
        row: dict[str, dict[str, float]] = {}
        for label, results in rounds.items():
            values = [res[metric] for res in results if metric in res]
            if values:
                row[label] = {"median": statistics.median(values), "values": values}  # type: ignore[dict-item]
        summary.append({"metric": metric, "servers": row})
    lines = [f"chat join burst: {opts.conns} clients at once, median of {opts.repeat}"]
    for row in summary:
        cells = ", ".join(f"{k} {v['median']:.2f}" for k, v in row["servers"].items())
        lines.append(f"  {row['metric']}: {cells}")
    print("\n".join(lines))
    if opts.json:
        opts.json.write_text(
            json.dumps({"conns": opts.conns, "repeat": opts.repeat, "summary": summary}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
