"""No ghost input line after a terminal resize.

Most terminals (tmux, VTE's gnome-terminal, konsole, kitty, alacritty, wezterm, iTerm2,
Windows Terminal) *reflow* their lines when the window narrows: an input line longer than the
new width becomes two rows, and the cursor moves down with its character. prompt_toolkit does
not know: on a resize it moves up as many rows as its input had before, erases from there and
draws again, which leaves the first rows of the reflowed line on the screen for good, a ghost
of the input line above the real one. :func:`keep_resizes_clean` makes it move up as many rows
as the input takes once reflowed (:func:`rows_above`). xterm, rxvt and GNU screen do not
reflow (:func:`terminal_reflows`): there prompt_toolkit's own count is right.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["keep_resizes_clean", "row_widths", "rows_above", "terminal_reflows"]


def terminal_reflows(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the terminal reflows its lines when the window narrows: all do but xterm
    (which sets ``XTERM_VERSION``), rxvt and GNU screen outside tmux."""
    if "TMUX" in env:
        return True
    term = env.get("TERM", "")
    return "XTERM_VERSION" not in env and not term.startswith(("rxvt", "screen"))


def rows_above(widths: Sequence[int], cursor_x: int, cursor_y: int, columns: int) -> int:
    """How many rows above the cursor the drawn input takes once a terminal ``columns`` wide
    has reflowed it: ``widths`` are the cells used in each row prompt_toolkit drew (each row
    ended by a hard line break), the cursor was at (``cursor_x``, ``cursor_y``) of them."""
    if columns <= 0:
        return cursor_y
    above = sum(max(1, -(-w // columns)) for w in widths[:cursor_y])
    return above + cursor_x // columns


def row_widths(screen: Any, rows: int) -> list[int]:
    """The cells used in each of the first ``rows`` rows of a prompt_toolkit ``Screen``
    (trailing blanks are not drawn, so they do not count)."""
    widths = []
    for y in range(rows):
        row = screen.data_buffer.get(y) or {}
        used = [x + max(1, char.width) for x, char in row.items() if char.char not in (" ", "")]
        widths.append(max(used, default=0))
    return widths


def keep_resizes_clean(app: Any, reflows: bool | None = None) -> None:
    """Make the prompt_toolkit Application ``app`` erase its whole input on a resize, as the
    terminal reflowed it, before drawing it again (see the module docstring)."""
    if not (terminal_reflows() if reflows is None else reflows):
        return
    redraw = app._on_resize  # prompt_toolkit's: erase, ask for the cursor, draw

    def on_resize() -> None:
        screen = app.renderer.last_rendered_screen
        if screen is not None:
            # Where the renderer left the cursor: the focused window's cursor.
            cursor = screen.get_cursor_position(app.layout.current_window)
            columns = app.output.get_size().columns
            widths = row_widths(screen, cursor.y + 1)
            extra = rows_above(widths, cursor.x, cursor.y, columns) - cursor.y
            if extra > 0:
                app.output.cursor_up(extra)  # erase() then goes up the rows it knows of
        redraw()

    app._on_resize = on_resize
