"""What the interactive client completes with Tab: chat ``/commands`` at the start of a line,
and the nicks it has seen in what the server sent (``alice: hi``, ``* bob joined``...).

:class:`NickTracker` is fed the received text (pure: no terminal, no loop); the completer
itself is a prompt_toolkit :class:`~prompt_toolkit.completion.Completer` built on demand, so
the other modes never import prompt_toolkit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prompt_toolkit.completion import Completer

__all__ = ["COMMANDS", "NickTracker", "make_completer"]

#: The chat service's commands (``/help`` lists them).
COMMANDS = (
    "/help",
    "/join",
    "/me",
    "/msg",
    "/nick",
    "/part",
    "/peers",
    "/quit",
    "/rooms",
    "/topic",
    "/who",
)

_NICK = r"[A-Za-z0-9_-]{1,32}"
# `alice: hello`, `[Elves] alice: hello` (several connections), `* alice joined #lobby`,
# `*** alice left`, `* bob is now known as carol`, `you are guest3`, `-> alice: hi`.
_SEEN = (
    re.compile(rf"^(?:\[[^\]]*\] )?({_NICK}): "),
    re.compile(rf"^(?:\[[^\]]*\] )?\*+ ({_NICK}) "),
    re.compile(rf"\bis now known as ({_NICK})\b"),
    re.compile(rf"\byou are ({_NICK})\b"),
    re.compile(rf"(?:from|to) ({_NICK})\b"),
)
# `* here: alice, bob` (a /who answer) and its kin: every name after the colon.
_LIST = re.compile(r"^(?:\[[^\]]*\] )?\*+ [^:]*(?:here|in #\S+)[^:]*: (.+)$")
#: Nicks remembered at most: the most recent win.
MAX_NICKS = 500


class NickTracker:
    """The nicks seen in received lines, most recent last (bounded by :data:`MAX_NICKS`)."""

    def __init__(self) -> None:
        self._nicks: dict[str, None] = {}
        self._pending = b""

    def feed_bytes(self, data: bytes) -> None:
        """Received bytes, cut anywhere: complete lines are looked at, the rest is kept (at
        most 4 KiB of it: a nick is at the start of a line)."""
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:][:4096]
        if cut:
            self.feed(data[:cut].decode("utf-8", "replace"))

    @property
    def nicks(self) -> list[str]:
        """Every nick seen, the oldest first."""
        return list(self._nicks)

    def feed(self, text: str) -> None:
        """Look at received ``text`` (one or more lines) for nicks."""
        for line in text.splitlines():
            for pattern in _SEEN:
                for name in pattern.findall(line):
                    self._add(name)
            m = _LIST.match(line)
            if m:
                for name in re.split(r"[,\s]+", m.group(1)):
                    if re.fullmatch(_NICK, name):
                        self._add(name)

    def _add(self, name: str) -> None:
        self._nicks.pop(name, None)
        self._nicks[name] = None
        if len(self._nicks) > MAX_NICKS:
            del self._nicks[next(iter(self._nicks))]

    def complete(self, before: str) -> list[str]:
        """Completions for the text left of the cursor: a command for a ``/word`` at the
        start, else a nick for the word being typed (the most recently seen first)."""
        if " " not in before and before.startswith("/"):
            return [c for c in COMMANDS if c.startswith(before)]
        word = re.split(r"\s", before)[-1]
        if not word:
            return []
        found = [n for n in reversed(self._nicks) if n.lower().startswith(word.lower())]
        return found


def make_completer(tracker: NickTracker) -> Completer:
    """A prompt_toolkit completer over ``tracker`` (imports prompt_toolkit)."""
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document

    class _Completer(Completer):
        def get_completions(
            self, document: Document, complete_event: CompleteEvent
        ) -> Iterable[Completion]:
            before = document.text_before_cursor
            word = (
                before
                if before.startswith("/") and " " not in before
                else (re.split(r"\s", before)[-1])
            )
            for option in tracker.complete(before):
                yield Completion(option, start_position=-len(word))

    return _Completer()
