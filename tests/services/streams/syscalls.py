"""Reading an ``strace -f -ttt -yy`` log of the server: which syscalls touched which file or
connection, in the order they completed.

Run under ``strace --seccomp-bpf`` only the traced syscalls stop the process, so the server
keeps most of its speed. A syscall of one thread interrupted by another's is logged as
``<unfinished ...>`` and later ``<... NAME resumed>``: the event is recorded when it
completes, which is the order that matters ("the fsync returned before the FIN was sent").
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Syscall", "parse_strace", "strace_works", "strace_wrapper"]

_LINE = re.compile(r"^(\d+) +(\d+\.\d+) (.*)$")
_CALL = re.compile(r"^(\w+)\((\d+)<(TCP:\[[^\]]*\]|[^>]*)>")
# splice(IN, OFF_IN, OUT, ...): the descriptor written is the third argument.
_SPLICE_OUT = re.compile(
    r"^splice\(\d+<(?:TCP:\[[^\]]*\]|[^>]*)>, (?:NULL|\[\d+\]), \d+<(TCP:\[[^\]]*\]|[^>]*)>"
)
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>")
_RESULT = re.compile(r"= (-?\d+)")


@dataclass(frozen=True, slots=True)
class Syscall:
    tid: int
    time: float  # when it was entered
    name: str
    #: The path or ``TCP:[local->remote]`` strace printed for the descriptor (for ``splice``,
    #: the one written to: a socket → pipe splice has a ``pipe:[N]`` target).
    target: str
    result: int

    @property
    def ok(self) -> bool:
        return self.result >= 0


def strace_wrapper(log: Path, syscalls: str) -> tuple[str, ...]:
    """The command prefix that runs a program under strace, logging ``syscalls``."""
    return (
        "strace",
        "-f",
        "--seccomp-bpf",
        "-qq",
        "-ttt",
        "-yy",
        "-e",
        f"trace={syscalls}",
        "-e",
        "signal=none",
        "-o",
        str(log),
    )


def strace_works() -> str | None:
    """``None`` if strace can trace a child here, else why not."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    done = subprocess.run(
        ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=getpid", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        return f"strace cannot trace here: {done.stderr.strip()}"
    return None


def parse_strace(text: str) -> list[Syscall]:
    """The completed syscalls on decorated descriptors, in completion order."""
    events: list[Syscall] = []
    pending: dict[int, tuple[float, str, str]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        tid, when, rest = int(m.group(1)), float(m.group(2)), m.group(3)
        resumed = _RESUMED.match(rest)
        if resumed:
            started = pending.pop(tid, None)
            if started is None:
                continue
            when, name, target = started
        else:
            call = _CALL.match(rest)
            if not call:
                continue
            name, target = call.group(1), call.group(3)
            if name == "splice":
                out = _SPLICE_OUT.match(rest)
                if out:
                    target = out.group(1)
            if rest.endswith("<unfinished ...>"):
                pending[tid] = (when, name, target)
                continue
        result = _RESULT.search(rest)
        events.append(Syscall(tid, when, name, target, int(result.group(1)) if result else -1))
    return events
