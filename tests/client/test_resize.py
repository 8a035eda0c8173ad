"""Narrowing the window under a half-typed line leaves no ghost of it (issue 13). Checked in
a real tmux, which reflows its lines as most terminals do, and on the pure row count."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from helpers import UNIT, cli_env, start_cli
from twoway.client.resize import rows_above, terminal_reflows

TMUX = shutil.which("tmux")
TYPED = "a long half typed line that is forty-plus chars"


def test_rows_above_after_a_reflow() -> None:
    # One 49-cell row, the cursor at its end: at 30 columns the cursor is one row down.
    assert rows_above([49], 49, 0, 30) == 1
    assert rows_above([49], 49, 0, 20) == 2
    assert rows_above([49], 49, 0, 80) == 0  # wider: nothing moves
    # Two rows drawn (a line break in the input), the cursor on the second.
    assert rows_above([40, 10], 10, 1, 30) == 2
    assert rows_above([], 0, 0, 0) == 0


def test_which_terminals_reflow() -> None:
    assert terminal_reflows({"TERM": "xterm-256color"})  # gnome-terminal, kitty, iTerm2...
    assert terminal_reflows({"TERM": "screen-256color", "TMUX": "/tmp/tmux-0/default,1,0"})
    assert not terminal_reflows({"TERM": "xterm-256color", "XTERM_VERSION": "XTerm(390)"})
    assert not terminal_reflows({"TERM": "rxvt-unicode-256color"})
    assert not terminal_reflows({"TERM": "screen"})


class Tmux:
    """A tmux server of its own (its own socket), one window running a command."""

    def __init__(self, command: str, columns: int, rows: int = 20) -> None:
        assert TMUX is not None
        self.socket = f"twoway-test-{uuid.uuid4().hex[:8]}"
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(columns),
                 "-y", str(rows), command)  # fmt: skip

    def run(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10 * UNIT,
            env=cli_env(),
            check=True,
        )
        return done.stdout

    def screen(self) -> list[str]:
        return self.run("capture-pane", "-p", "-t", "t").rstrip("\n").split("\n")

    def wait(self, predicate: str, timeout: float = 10 * UNIT) -> list[str]:
        """Poll the pane (tmux tells nobody when it draws) until a row contains ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.screen()
            if any(predicate in row for row in rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"{predicate!r} not on the screen:\n" + "\n".join(rows))
            time.sleep(0.05)

    def settle(self, check: str, timeout: float = 5 * UNIT) -> list[str]:
        """The screen once the last row holding ``check`` stops changing (a redraw ends)."""
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while time.monotonic() < deadline:
            rows = self.screen()
            if rows == last and any(check in row for row in rows):
                return rows
            last = rows
            time.sleep(0.15)
        return last

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10 * UNIT, check=False)  # fmt: skip


@pytest.fixture
def chat_in_tmux() -> Iterator[Tmux]:
    if TMUX is None:
        pytest.skip("tmux is not installed (Debian package tmux)")
    with start_cli("serve", "chat", "--port", "0") as server:
        # tmux starts its window with its own environment: ours (PYTHONPATH included).
        command = (
            f"{shlex.quote(sys.executable)} -m twoway connect 127.0.0.1 {server.port}"
            " --history-file off"
        )
        tmux = Tmux(command, 80)
        try:
            tmux.wait("type /help for commands")
            yield tmux
        finally:
            tmux.close()


def _prompt_rows(rows: list[str]) -> list[str]:
    return [row for row in rows if row.startswith("> ")]


def test_narrowing_then_widening_leaves_no_ghost_input_line(chat_in_tmux: Tmux) -> None:
    tmux = chat_in_tmux
    tmux.run("send-keys", "-t", "t", "-l", TYPED)
    rows = tmux.wait(TYPED)
    assert _prompt_rows(rows) == ["> " + TYPED]
    for columns in (30, 20, 80):
        tmux.run("resize-window", "-t", "t", "-x", str(columns), "-y", "20")
        rows = tmux.settle("> ")
        prompts = _prompt_rows(rows)
        assert len(prompts) == 1, f"{columns} columns: a ghost input line:\n" + "\n".join(rows)
        # The input is drawn whole from its prompt row on, wrapped at the width.
        start = rows.index(prompts[0])
        drawn = "".join(row.ljust(columns) for row in rows[start:]).rstrip()
        assert drawn == "> " + TYPED, "\n".join(rows)
