#!/usr/bin/env python3
"""TLS echo and handshakes: twoway against the Node.js anchor (``../shared/bench/anchors/node/
tls-echo.js``), the same certificate, ratios measured in the same run (medians of
``--repeat`` rounds, the servers alternating within each round).

compare's load generator speaks plain TCP, so the load side here is ``bench/tlsload.c`` (C,
OpenSSL, built into ``bench/.build/`` on first use), pinned to CPU 1 while the server runs
pinned to CPU 0, as compare does. Each figure:

- ``echo msgs/s``: ``--conns`` connections (64), each sending a 64-byte line and waiting for
  its echo, for ``--seconds``; ``server CPU/msg``: the server's user+system CPU over the same
  window (``/proc/PID/stat``) divided by the messages;
- ``handshakes/s``: ``--hs-count`` new connections, ``--hs-conc`` at a time, each a full
  handshake (no resumption) and a one-byte echo; ``server CPU/handshake`` likewise;
- ``10k handshakes``: the seconds for 10,000 of them (``--big``), same concurrency.

Targets (issue 14): msgs/s >= 1.2x Node, CPU/msg <= 0.85x, handshakes/s >= 1.0x.

Is the load side the bottleneck? ``tlsload`` reports its own CPU per wall second
(``load cpu``): near 1.0 it saturated its core and the figure is a floor for both servers;
the table prints it for every run and the script warns above 0.9.

    python bench/tls.py                       # the recorded figures (~2 min; a quiet machine)
    python bench/tls.py --smoke               # seconds: checks the machinery, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("TWOWAY_BENCH_HARNESS", HERE.parent.parent / "shared" / "bench"))
NODE_ANCHOR = SHARED / "anchors" / "node" / "tls-echo.js"
BUILD = HERE / ".build"
TICK = os.sysconf("SC_CLK_TCK")

TARGETS = [  # (figure, op, ratio twoway/node)
    ("echo msgs/s", ">=", 1.2),
    ("server CPU/msg", "<=", 0.85),
    ("handshakes/s", ">=", 1.0),
]


def build_load() -> Path:
    """``bench/.build/tlsload``, compiled when missing or older than its source."""
    src, out = HERE / "tlsload.c", BUILD / "tlsload"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        cmd = ["cc", "-O2", "-pthread", "-o", str(out), str(src), "-lssl", "-lcrypto"]
        subprocess.run(cmd, check=True)
    return out


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=bench", "-days", "2", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def pin(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


class Server:
    """A server process pinned to the server CPU, ready once its port accepts."""

    def __init__(self, argv: list[str], port: int, cpus: str | None) -> None:
        self.proc = subprocess.Popen(
            pin(cpus, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"tls.py: server did not start: {shlex.join(argv)}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_load(load: Path, cpus: str | None, pid: int, *args: str) -> tuple[dict, float]:
    """tlsload's JSON, and the server's CPU seconds while it ran."""
    before = cpu_ticks(pid)
    done = subprocess.run(pin(cpus, [str(load), *args]), capture_output=True, text=True,
                          check=True, timeout=600)  # fmt: skip
    result = json.loads(done.stdout)
    return result, (cpu_ticks(pid) - before) / TICK


def measure(name: str, argv: list[str], port: int, load: Path, o: argparse.Namespace) -> dict:
    server = Server(argv, port, None if o.no_pin else o.server_cpus)
    lcpus = None if o.no_pin else o.load_cpus
    try:
        pid = server.proc.pid
        echo, cpu = run_load(load, lcpus, pid, "echo", "127.0.0.1", str(port), str(o.conns),
                             str(o.seconds))  # fmt: skip
        # The echo window is `seconds` long but the server also worked during the warm-up
        # second: the CPU is taken per message over the whole run, warm-up messages included
        # at the measured rate (a slight overestimate, the same for both servers).
        msgs_total = echo["msgs_per_s"] * (echo["seconds"] + 1.0)
        hs, hs_cpu = run_load(load, lcpus, pid, "hs", "127.0.0.1", str(port), str(o.hs_conc),
                              str(o.hs_count))  # fmt: skip
        big, _ = run_load(load, lcpus, pid, "hs", "127.0.0.1", str(port), str(o.hs_conc),
                          str(o.big))  # fmt: skip
    finally:
        server.stop()
    failures = echo["failures"] + hs["failures"] + big["failures"]
    return {
        "server": name,
        "echo msgs/s": echo["msgs_per_s"],
        "server CPU/msg": cpu / msgs_total if msgs_total else None,
        "handshakes/s": hs["handshakes_per_s"],
        "server CPU/handshake": hs_cpu / o.hs_count,
        f"{o.big} handshakes (s)": big["seconds"],
        "failures": failures,
        "load cpu": max(echo["cpu_load"], hs["cpu_load"], big["cpu_load"]),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--hs-count", type=int, default=3000)
    p.add_argument("--hs-conc", type=int, default=16)
    p.add_argument("--big", type=int, default=10000)
    p.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results" / "tls.json")
    p.add_argument("--smoke", action="store_true", help="tiny run, writes nothing")
    o = p.parse_args(argv)
    if o.smoke:
        o.repeat, o.conns, o.seconds, o.hs_count, o.big = 1, 8, 1.0, 200, 300
    for tool in ("openssl", "node", "cc"):
        if shutil.which(tool) is None:
            print(f"tls.py: needs {tool}", file=sys.stderr)
            return 2
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        o.no_pin = True
        print("tls.py: warning: fewer than 2 CPUs or no taskset: running unpinned", file=sys.stderr)
    load = build_load()
    rows: dict[str, list[dict]] = {"node": [], "twoway": []}
    with tempfile.TemporaryDirectory(prefix="twoway-tls-bench-") as tmp:
        cert, key = make_cert(Path(tmp))
        for r in range(o.repeat):
            order = ["node", "twoway"] if r % 2 == 0 else ["twoway", "node"]
            for name in order:
                port = free_port()
                if name == "node":
                    cmd = ["node", str(NODE_ANCHOR), str(port), "127.0.0.1", str(cert), str(key)]
                else:
                    cmd = [sys.executable, "-m", "twoway", "serve", "echo", "--host", "127.0.0.1",
                           "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key),
                           "--no-access-log", "--loop", o.loop, "--max-handshakes-per-ip", "0",
                           "--max-conns", "0"]  # fmt: skip
                row = measure(name, cmd, port, load, o)
                rows[name].append(row)
                print(f"round {r + 1} {name}: " + json.dumps(row), file=sys.stderr)
    figures = [k for k in rows["node"][0] if k not in ("server",)]
    med = {n: {f: statistics.median(x[f] for x in rows[n]) for f in figures} for n in rows}
    print(f"{'figure':28} {'node':>14} {'twoway':>14} {'ratio':>8}  target")
    verdicts = []
    for f in figures:
        a, b = med["node"][f], med["twoway"][f]
        ratio = b / a if a else None
        target = next(((op, v) for name, op, v in TARGETS if name == f), None)
        verdict = ""
        if target is not None and ratio is not None:
            ok = ratio >= target[1] if target[0] == ">=" else ratio <= target[1]
            verdict = f"{target[0]} {target[1]}  {'met' if ok else 'MISSED'}"
            verdicts.append({"figure": f, "ratio": ratio, "target": target, "met": ok})
        shown = f"{ratio:8.2f}" if ratio is not None else f"{'-':>8}"
        print(f"{f:28} {a:14.6g} {b:14.6g} {shown}  {verdict}")
    if max(med["node"]["load cpu"], med["twoway"]["load cpu"]) > 0.9:
        print(
            "tls.py: warning: the load side used > 0.9 of its CPU: it may be the bottleneck",
            file=sys.stderr,
        )
    if not o.smoke:
        o.out.parent.mkdir(exist_ok=True)
        o.out.write_text(
            json.dumps(
                {
                    "args": vars(o) | {"out": str(o.out)},
                    "rounds": rows,
                    "medians": med,
                    "verdicts": verdicts,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"written: {o.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
