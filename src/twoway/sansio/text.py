"""Make text from one person safe to print on another person's terminal.

A chat relays what one client typed to everybody else's terminal, so a raw ESC would let any
client move cursors, recolour, retitle windows or (on some terminals) trigger answerback on
the others' screens. Invisible Unicode is the same threat in another form: a right-to-left
override (U+202E) or an isolate (U+2066-U+2069) reorders what follows it, so ``evil`` can
read as ``live`` and a line can seem to carry a server notice; a zero-width space or a BOM
hides inside a word; U+2028/U+2029 end a line on some terminals and in most browsers.
:func:`escape_controls` turns every such character into a visible, harmless spelling instead
of dropping it, so nothing is silently hidden.
"""

from __future__ import annotations

import re

__all__ = ["escape_controls"]

# C0 without TAB (0x09), DEL, and C1: the characters a terminal may interpret as commands.
_C0_C1 = "\x00-\x08\x0a-\x1f\x7f-\x9f"
# The invisible characters that reorder or hide text: every format character (Unicode
# category Cf, as of Unicode 15.1) and the line and paragraph separators (Zl, Zp), except
# the zero-width non-joiner and joiner (U+200C, U+200D). Those two only choose how adjacent
# glyphs join: Persian and the Indic scripts need them to spell words, emoji sequences (a
# family, a flag with a skin tone) are built with ZWJ, and neither can move or hide text.
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
_ESCAPED = re.compile(f"[{_C0_C1}{_INVISIBLE}]")


def _spelling(code: int) -> str:
    if code < 0x20:
        return "^" + chr(code + 0x40)  # caret notation: ESC -> ^[, NUL -> ^@, BEL -> ^G
    if code == 0x7F:
        return "^?"
    if code < 0xA0:
        return f"\\x{code:02x}"  # C1 has no caret notation: 0x85 -> \x85
    if code < 0x10000:
        return f"\\u{code:04x}"  # as Python and JSON spell it: U+202E -> \u202e
    return f"\\U{code:08x}"


_SPELLINGS: dict[str, str] = {}


def _replace(match: re.Match[str]) -> str:
    char = match.group()
    spelled = _SPELLINGS.get(char)
    if spelled is None:  # spelled when first met: the table would hold ~300 entries
        spelled = _SPELLINGS[char] = _spelling(ord(char))
    return spelled


def escape_controls(s: str) -> str:
    """Return ``s`` with control and invisible characters replaced by visible escapes.

    C0 controls other than TAB become caret notation (``ESC`` -> ``^[``, ``NUL`` -> ``^@``,
    ``LF`` -> ``^J``), ``DEL`` becomes ``^?``, C1 controls (U+0080-U+009F) become
    ``\\x85``-style escapes (a backslash, ``x`` and two lower-case hex digits), and the
    characters that reorder or hide text become ``\\u202e``-style escapes (``\\U000e0041``
    above U+FFFF): the bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E,
    U+200F, U+061C), zero-width and invisible characters (U+200B, U+2060-U+2064, the BOM
    U+FEFF, the soft hyphen, tag characters...), U+2028 and U+2029 -- every format
    character except the joiners U+200C and U+200D, which emoji and several scripts need.
    Every other character, including TAB and all printable Unicode, is kept. The result
    never contains a line terminator, so it is safe to put on one line of a line-based
    protocol, and escaping it again changes nothing.

    When there is nothing to escape, ``s`` itself is returned (no copy): this runs once per
    chat message, and almost every message is in that case.
    """
    # isprintable() is a single C loop and is true for the common case; it is also false
    # for TAB and for harmless non-printable Unicode (the joiners, unassigned code
    # points...), which the regex then lets through unchanged.
    if s.isprintable() or _ESCAPED.search(s) is None:
        return s
    # sub() with a lookup costs per character found; str.translate with a dict would cost
    # per character of the whole string, several times more for a long line.
    return _ESCAPED.sub(_replace, s)
