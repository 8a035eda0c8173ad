#!/usr/bin/env python3
"""The chat store's cost: ``chat-rate0``, ``chat-200`` and ``chat-1000`` with history in
SQLite (the default) against ``--ephemeral`` (memory only), in one ``compare`` run each
(servers alternate, medians of ``--repeat`` rounds; the Node anchor as the third column).

The disk write rate is read from the server's own exit line: the chat logs ``history store:
N lines in C commits over S s; the process wrote B bytes to disk`` (``/proc/self/io``
``write_bytes``, what the kernel was asked to write back for the process, WAL and
checkpoints included). Bytes over seconds between the first and last commit is the rate;
group commit (at most one commit per 50 ms) bounds it by the bytes said, not their count.

    python bench/chat_store.py                          # the three workloads, 3 rounds
    python bench/chat_store.py chat-rate0 --repeat 1 --duration 2   # a quick look
    python bench/chat_store.py --json bench/results/chat-store.json
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ROOT, SHARED, WORKLOADS, twoway_cmd

NAMES = ("chat-rate0", "chat-200", "chat-1000")
_WRITES = re.compile(
    r"history store: (\d+) lines in (\d+) commits over ([\d.]+) s; "
    r"the process wrote (\d+) bytes to disk"
)


def run(name: str, repeat: int, extra: list[str], out: Path) -> dict:
    wl = next(w for w in WORKLOADS if w.name == name)
    store = twoway_cmd("chat", "--flood-rate", "0", "--data-dir", "{dir}")
    memory = twoway_cmd("chat", "--flood-rate", "0", "--ephemeral")
    cmd = [
        sys.executable, str(SHARED / "compare"), wl.scenario,
        "--a", memory, "--b", store, "--c", wl.anchor,
        "--label", "a=ephemeral", "--label", "b=sqlite", "--label", "c=node",
        "--repeat", str(repeat), *wl.args, *extra, "--keep-logs", "--json", str(out),
    ]  # fmt: skip
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if not out.exists():
        raise SystemExit(f"chat_store: {name}: compare wrote no result (exit {proc.returncode})")
    data = json.loads(out.read_text())
    m = re.search(r"server logs: (\S+)", proc.stdout)
    writes = []
    if m:
        for log in sorted(Path(m.group(1)).glob("*.log")):
            for hit in _WRITES.finditer(log.read_text(errors="replace")):
                lines, commits, span, written = hit.groups()
                writes.append(
                    {
                        "log": log.name,
                        "lines": int(lines),
                        "commits": int(commits),
                        "seconds": float(span),
                        "bytes": int(written),
                        "MiB/s": int(written) / max(float(span), 1e-9) / 2**20,
                        "commits/s": int(commits) / max(float(span), 1e-9),
                    }
                )
    data["store_writes"] = writes
    for w in writes:
        print(
            f"{name} {w['log']}: {w['lines']} lines, {w['commits']} commits in "
            f"{w['seconds']:.1f} s ({w['commits/s']:.1f}/s), {w['bytes'] / 2**20:.1f} MiB "
            f"written ({w['MiB/s']:.2f} MiB/s)"
        )
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # No choices= with nargs="*": argparse checks the whole default list against them.
    p.add_argument("names", nargs="*", metavar="WORKLOAD", help=f"of {', '.join(NAMES)}")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", help="measured seconds per run (compare's default if unset)")
    p.add_argument("--json", type=Path, help="write every workload's result here")
    opts = p.parse_args()
    unknown = [n for n in opts.names if n not in NAMES]
    if unknown:
        p.error(f"unknown workload {unknown[0]!r} (choose from {', '.join(NAMES)})")
    extra = ["--duration", opts.duration] if opts.duration else []
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in opts.names or NAMES:
            results[name] = run(name, opts.repeat, extra, Path(tmp) / f"{name}.json")
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
