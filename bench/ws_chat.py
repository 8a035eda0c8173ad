#!/usr/bin/env python3
"""WebSocket chat fan-out and idle memory: twoway's ``--ws`` gateway against the Node.js
anchor (``../shared/bench/anchors/node/ws-chat.js``, on the npm ``ws`` package).

Fan-out: CONNS WebSocket clients in one room, SENDERS of them sending RATE messages/s each
(open loop); every message goes to every other client. Reported per server: deliveries/s
in the measured window, loss over the whole run (after a 2 s drain), and the load
generator's CPU share of its core (well under 100 %: it is not the bottleneck). Servers
alternate, ``--repeat`` rounds each, medians reported, with twoway/node ratios.

Idle memory: the server's RSS with ``--idle`` idle WebSocket clients minus its RSS with one,
divided by the difference.

The server runs pinned to CPU 0 and the load to CPU 1 (``taskset``, as bench/run.py does
through compare). The load side is ``bench/ws_load.c`` (compiled into ``bench/.build``);
the ``ws`` package is installed by this script into ``bench/.node_ws`` (git-ignored).

    python bench/ws_chat.py                                  # 1000 clients, 3 rounds
    python bench/ws_chat.py --conns 100 --rate 20 --repeat 1 --duration 3   # a quick check
    python bench/ws_chat.py --only twoway --idle 1000        # memory only

Targets: twoway >= 1.2x Node's deliveries/s at 0 loss; <= 10 KiB per idle WebSocket.
"""

from __future__ import annotations

import argparse
import json
import os
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
# ../shared/bench beside the checkout (a worktree one level deeper finds it too).
SHARED = Path(
    os.environ.get("TWOWAY_BENCH_HARNESS")
    or next(
        (p / "shared" / "bench" for p in (ROOT.parent, ROOT.parent.parent)
         if (p / "shared" / "bench").is_dir()),
        ROOT.parent / "shared" / "bench",
    )
)  # fmt: skip
ANCHOR = SHARED / "anchors" / "node" / "ws-chat.js"
NODE_DIR = HERE / ".node_ws"
BUILD = HERE / ".build"
LOAD_SRC = HERE / "ws_load.c"
LOAD = BUILD / "ws_load"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_load() -> None:
    """Compile ws_load.c when missing or older than its source."""
    if LOAD.exists() and LOAD.stat().st_mtime >= LOAD_SRC.stat().st_mtime:
        return
    BUILD.mkdir(exist_ok=True)
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(LOAD), str(LOAD_SRC)], check=True)


def ensure_node_ws() -> None:
    """``npm install ws`` into bench/.node_ws, once."""
    if (NODE_DIR / "node_modules" / "ws").is_dir():
        return
    if shutil.which("npm") is None:
        sys.exit("ws_chat: npm is needed to install the anchor's ws package")
    NODE_DIR.mkdir(exist_ok=True)
    subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR), "ws"],
        check=True,
    )


def server_cmd(name: str, port: int, conns: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``name`` (``node`` or ``twoway``) on ``port``."""
    env = dict(os.environ)
    if name == "node":
        env["NODE_PATH"] = str(NODE_DIR / "node_modules")
        return ["node", str(ANCHOR), str(port), "127.0.0.1"], env
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    tcp = free_port()
    # Like the anchor: no flood control, no history, 16 MiB queued before a client is cut,
    # messages up to 64 KiB; the access log off (the anchor logs nothing per client).
    return [
        sys.executable, "-m", "twoway", "serve", "chat", "--port", str(tcp),
        "--ws", f"127.0.0.1:{port}", "--flood-rate", "0", "--history", "0",
        "--max-queued", "16m", "--max-line", "64k", "--max-conns", str(conns + 100),
        "--no-access-log", "--log-level", "warning",
    ], env  # fmt: skip


def start(name: str, conns: int, cpus: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd, env = server_cmd(name, port, conns)
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            sys.exit(f"ws_chat: {name} exited: {err.strip()[:500]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"ws_chat: {name} did not start listening on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(proc: subprocess.Popen[bytes]) -> int:
    """The server under taskset (taskset execs it: the same pid)."""
    return proc.pid


def fanout(name: str, args: argparse.Namespace, rate: float) -> dict[str, float]:
    proc, port = start(name, args.conns, args.server_cpus)
    try:
        pid = server_pid(proc)
        load = subprocess.Popen(
            ["taskset", "-c", args.load_cpus, str(LOAD), "127.0.0.1", str(port),
             str(args.conns), str(args.senders), str(rate), str(args.duration),
             str(args.warmup), str(args.size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # CPU shares in the middle of the measured window (the connections are set up in
        # the first second or so of the warm-up): a share near 100 % is the bottleneck.
        time.sleep(args.warmup + 1.0)
        s0, l0, t0 = cpu_seconds(pid), cpu_seconds(load.pid), time.monotonic()
        time.sleep(max(0.5, args.duration - 2.0))
        s1, l1, t1 = cpu_seconds(pid), cpu_seconds(load.pid), time.monotonic()
        rss = rss_kib(pid)
        out, err = load.communicate(timeout=args.duration + 60)
        if load.returncode != 0:
            sys.exit(f"ws_chat: load against {name} failed: {err.decode().strip()}")
        result: dict[str, float] = json.loads(out)
        result["load_cpu_pct"] = round(100 * (l1 - l0) / (t1 - t0), 1)
        result["server_cpu_pct"] = round(100 * (s1 - s0) / (t1 - t0), 1)
        result["server_rss_mib"] = round(rss / 1024, 1)
        return result
    finally:
        stop(proc)


def idle_memory(name: str, args: argparse.Namespace) -> float:
    """KiB of server RSS per idle WebSocket client."""
    proc, port = start(name, args.idle, args.server_cpus)
    try:
        pid = server_pid(proc)

        def hold(n: int) -> tuple[subprocess.Popen[bytes], int]:
            load = subprocess.Popen(
                ["taskset", "-c", args.load_cpus, str(LOAD), "127.0.0.1", str(port), str(n),
                 "0", "0", "0", "0", "32", "3600"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            assert load.stdout is not None
            line = load.stdout.readline().decode()
            if not line.startswith("OPEN"):
                err = load.stderr.read().decode() if load.stderr else ""
                sys.exit(f"ws_chat: idle clients against {name} failed: {err.strip()}")
            time.sleep(2.0)  # the joins' notices delivered, the server quiet
            return load, rss_kib(pid)

        one, base = hold(1)  # the first client pays for code paths and buffers once
        many, full = hold(args.idle)
        for load in (one, many):
            load.kill()
            load.wait()
        return (full - base) / args.idle
    finally:
        stop(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--senders", type=int, default=5)
    p.add_argument(
        "--rate",
        default="10,20,40,80,160,320,640",
        help="messages/s per sender; a list runs each rate, and each server's figure is its "
        "best deliveries/s among the rates it served at 0 loss",
    )
    p.add_argument("--size", type=int, default=64, help="bytes per message (32-125)")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--idle", type=int, default=1000, help="idle clients (0: skip)")
    p.add_argument("--only", choices=("node", "twoway"), help="one server only")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    ensure_load()
    names = [args.only] if args.only else ["node", "twoway"]
    if "node" in names:
        ensure_node_ws()
    rates = [float(r) for r in str(args.rate).split(",") if float(r) > 0]
    rounds: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    best: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    if rates and args.senders > 0:
        for r in range(args.repeat):
            for name in names:
                served = []
                for rate in rates:
                    res = fanout(name, args, rate)
                    rounds[name].append(res)
                    print(
                        f"round {r + 1} {name:6} rate {rate:g}/s x {args.senders}: "
                        f"{res['deliveries_per_s']:>10,.0f} deliveries/s, "
                        f"loss {100 * res['loss']:.3f} %, closed {res['closed']:.0f}, "
                        f"server CPU {res['server_cpu_pct']} %, "
                        f"load CPU {res['load_cpu_pct']} %, RSS {res['server_rss_mib']} MiB",
                        flush=True,
                    )
                    if res["loss"] > 0 or res["closed"] > 0:
                        break  # past this server's capacity: higher rates only lose more
                    served.append(res)
                if served:
                    best[name].append(max(served, key=lambda x: x["deliveries_per_s"]))
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        if best[name]:
            summary[name] = {
                key: statistics.median(r[key] for r in best[name])
                for key in ("deliveries_per_s", "loss", "load_cpu_pct", "server_cpu_pct")
            }
        if args.idle:
            kib = idle_memory(name, args)
            summary.setdefault(name, {})["idle_kib_per_conn"] = round(kib, 2)
            print(f"{name:6}: {kib:.2f} KiB per idle WebSocket ({args.idle} clients)", flush=True)
    print()
    print(f"{'':8}{'deliveries/s':>14}{'loss %':>9}{'load CPU %':>12}{'KiB/idle':>10}")
    for name, s in summary.items():
        print(
            f"{name:8}{s.get('deliveries_per_s', float('nan')):>14,.0f}"
            f"{100 * s.get('loss', float('nan')):>9.3f}{s.get('load_cpu_pct', float('nan')):>12}"
            f"{s.get('idle_kib_per_conn', float('nan')):>10}"
        )
    if "node" in summary and "twoway" in summary and "deliveries_per_s" in summary["node"]:
        ratio = summary["twoway"]["deliveries_per_s"] / summary["node"]["deliveries_per_s"]
        print(f"twoway/node deliveries/s: {ratio:.2f}x (target >= 1.2x at 0 loss)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": None}, "summary": summary, "rounds": rounds},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
