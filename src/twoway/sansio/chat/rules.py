"""The chat's rules on text: what a nick, a room name and a command are, what server lines
start with, and how bad input is quoted back.

These are the only places the chat decides such things: the core, its commands, the cluster
merge and the I/O layer (:func:`is_command`) all ask here.
"""

from __future__ import annotations

import re

from twoway.sansio.text import escape_controls

__all__ = [
    "COMMAND",
    "HELP",
    "MAX_TOPIC",
    "NAME",
    "NOTICE",
    "RESERVED_NICKS",
    "guest_number",
    "is_command",
    "quote",
    "room_key",
]

#: What every line from the server itself starts with (joins, departures, nick and topic
#: changes, answers to commands): ircII's "***". No client can produce it: a message reads
#: ``nick: text`` and a /me action ``* nick text``, and a nick never contains ``*``.
NOTICE = "*** "
#: Nicks a client may not take: a message from "error" would read like a server error line.
RESERVED_NICKS = frozenset({"error"})
#: The longest topic, in characters (IRC servers allow 300-400).
MAX_TOPIC = 400
#: A nick or a room name (without its ``#``): 1-32 letters, digits, ``-`` or ``_``.
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: A command line: ``/word`` and its argument.
COMMAND = re.compile(r"/(\S*)\s*(.*)", re.DOTALL)
# Bad input quoted back in an error message is cut to this many characters.
_QUOTE_MAX = 40

#: The answer to ``/help``.
HELP = (
    "*** commands:",
    "*** /nick NAME        change your nick (1-32 letters, digits, - or _)",
    "*** /join ROOM        go to a room, creating it if needed (the # is optional)",
    "*** /part             go back to the lobby",
    "*** /rooms            list the rooms and how many people are in each",
    "*** /who              list the people in this room",
    "*** /msg NICK text    send a private message",
    "*** /me action        describe what you are doing",
    "*** /topic [text]     show, or set, the topic of this room",
    "*** /peers            count the other people (on every server of the chat)",
    "*** /history [N]      replay the last N lines of this room",
    "*** /seq              the number of the newest line of this room (for /since)",
    "*** /since SEQ        replay the lines after number SEQ (at most 1000)",
    "*** /token            a new resume token (give it with /resume after a drop)",
    "*** /resume TOKEN     as your first line: get your nick, room and missed lines back",
    "*** /quit [reason]    leave (typing quit does the same)",
    "*** //text            send a message that starts with /",
    "*** /help             this list",
    "*** /register PASSWORD [--cert]  reserve your nick (--cert: your TLS certificate too)",
    "*** /identify PASSWORD           prove a registered nick is yours (or /nick NAME PASSWORD)",
    "*** /password OLD NEW            change your password",
    "*** /unregister                  free your registered nick",
    "*** /pass PASSWORD               the server password (first line, when the server has one)",
    "*** /oper NAME [PASSWORD]        become an operator",
    "*** /kick NICK [reason]          disconnect someone (operators; room owners: to the lobby)",
    "*** /ban MASK [DURATION] [reason]  ban a nick, account, IP or CIDR (10m, 2h, 7d...)",
    "*** /unban MASK                  lift a ban",
    "*** /banned                      list the bans",
    "*** /mute NICK [DURATION] [reason]  silence someone (operators, room owners)",
    "*** /unmute NICK                 let them speak again",
    "*** /topic lock|unlock           only the owner and operators may set the topic",
)


def is_command(text: str) -> bool:
    """Whether the line ``text`` is a command (``/word``, not ``//``) or a bare ``quit`` in
    any case: the lines that may change who is where. Everything else is a message."""
    if text[:1] == "/":
        return text[1:2] != "/"
    return len(text) == 4 and text.lower() == "quit"


def quote(s: str) -> str:
    """Client input quoted in an error: cut to a sensible length, then made safe."""
    if len(s) > _QUOTE_MAX:
        s = s[:_QUOTE_MAX] + "..."
    return '"' + escape_controls(s) + '"'


def guest_number(key: str) -> int | None:
    """The N of a nick key spelled exactly ``guestN`` (no leading zero), else None."""
    digits = key[5:]
    if key.startswith("guest") and digits.isdigit() and digits.isascii() and digits[0] != "0":
        return int(digits)
    return None


def room_key(name: str) -> str | None:
    """A room name as the core spells it (``#lower``, the ``#`` optional in ``name``); None
    if it is not a valid name."""
    bare = name[1:] if name[:1] == "#" else name
    return "#" + bare.lower() if NAME.fullmatch(bare) else None
