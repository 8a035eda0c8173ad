"""Make text from one person safe to print on another person's terminal.

A chat relays what one client typed to everybody else's terminal, so a raw ESC would let any
client move cursors, recolour, retitle windows or (on some terminals) trigger answerback on
the others' screens. :func:`escape_controls` turns every control character except TAB into
a visible, harmless spelling instead of dropping it, so nothing is silently hidden.
"""

from __future__ import annotations

import re

__all__ = ["escape_controls"]

# C0 without TAB (0x09), DEL, and C1: the characters a terminal may interpret as commands.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _spelling(code: int) -> str:
    if code < 0x20:
        return "^" + chr(code + 0x40)  # caret notation: ESC -> ^[, NUL -> ^@, BEL -> ^G
    if code == 0x7F:
        return "^?"
    return f"\\x{code:02x}"  # C1 has no caret notation: 0x85 -> \x85


_SPELLINGS = {chr(code): _spelling(code) for code in (*range(0x09), *range(0x0A, 0x20), 0x7F)}
_SPELLINGS.update({chr(code): _spelling(code) for code in range(0x80, 0xA0)})


def _replace(match: re.Match[str]) -> str:
    return _SPELLINGS[match.group()]


def escape_controls(s: str) -> str:
    """Return ``s`` with control characters replaced by visible escapes.

    C0 controls other than TAB become caret notation (``ESC`` -> ``^[``, ``NUL`` -> ``^@``,
    ``LF`` -> ``^J``), ``DEL`` becomes ``^?`` and C1 controls (U+0080-U+009F) become
    ``\\x85``-style escapes (a backslash, ``x`` and two lower-case hex digits). Every other
    character, including TAB and all printable Unicode, is kept. The result never contains
    a newline, so it is safe to put on one line of a line-based protocol.

    When there is nothing to escape, ``s`` itself is returned (no copy): this runs once per
    chat message, and almost every message is in that case.
    """
    # isprintable() is a single C loop and is true for the common case; it is also false
    # for TAB and for harmless non-printable Unicode (format characters...), which the
    # regex then lets through unchanged.
    if s.isprintable() or _CONTROLS.search(s) is None:
        return s
    # sub() with a lookup costs per control character found; str.translate with a dict
    # would cost per character of the whole string, several times more for a long line.
    return _CONTROLS.sub(_replace, s)
