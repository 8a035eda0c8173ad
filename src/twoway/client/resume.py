"""``twoway connect --reconnect`` against a chat server: resume the session after a drop.

A twoway chat server gives each client a resume token (``*** resume token: T``, in the
welcome and after ``/token`` or a resume). :class:`ResumeWatch` remembers the last one it
saw; when the link connects again it sends ``/resume T`` first, hides the new connection's
welcome (up to its own token line: the guest nick and the lobby's history that would show
lines already seen), shows the replayed lines, and reports the outcome as one line:
``resumed as alice in #lobby: 37 replayed, 0 missed`` or ``resume refused (expired):
continuing as a new guest``. Against any other server (no token line ever seen) it passes
everything through and sends nothing.

Pure: bytes in, bytes to show and lines to report out.
"""

from __future__ import annotations

import re

__all__ = ["ResumeWatch"]

_TOKEN = b"*** resume token: "
_HELP = b"*** type /help for commands"
_RESUMED = re.compile(rb"\*\*\* resumed as (\S+) in (\S+)\r?$")
_SUMMARY = re.compile(rb"\*\*\* replayed (\d+) lines; (\d+) (?:missed|no longer kept)\r?$")
_REFUSED = re.compile(rb"error: resume refused \(([^)]*)\)\r?$")
# A line longer than this is not one of the server lines looked for: only its tail is kept
# while waiting for its end (memory stays bounded whatever the server sends).
_MAX_LINE = 512


class ResumeWatch:
    """See the module docstring. Call :meth:`connected` for each new connection, then
    :meth:`feed` with what it receives."""

    def __init__(self) -> None:
        #: The last resume token seen (None: not a chat server, or none yet).
        self.token: bytes | None = None
        self._carry = b""  # the partial last line, for scanning
        self._held = b""  # what a resumed connection sent before its token line
        self._skipping = False
        self._drop_help = False
        self._awaiting = False
        self._where = ""

    def connected(self) -> bytes | None:
        """A new connection: the line to send first (``/resume T``), or None."""
        self._carry = b""
        self._held = b""
        self._drop_help = False
        if self.token is None:
            self._skipping = self._awaiting = False
            return None
        self._skipping = self._awaiting = True
        return b"/resume " + self.token + b"\n"

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """``data`` received: what to show of it, and the lines to report."""
        if self._skipping:
            held = self._held + data
            at = held.find(_TOKEN)
            while at > 0 and held[at - 1 : at] != b"\n":
                at = held.find(_TOKEN, at + 1)
            end = held.find(b"\n", at) if at >= 0 else -1
            if end < 0:
                self._held = held if len(held) < 1 << 20 else b""  # a welcome is small
                return b"", []
            self._held = b""
            self._skipping = False
            self.token = held[at + len(_TOKEN) : end].strip()
            data = held[end + 1 :]
            self._drop_help = True
        if self._drop_help and data:
            self._drop_help = False
            for ending in (b"\n", b"\r\n"):
                if data.startswith(_HELP + ending):
                    data = data[len(_HELP) + len(ending) :]
                    break
        return data, self._scan(data)

    def _scan(self, data: bytes) -> list[str]:
        buf = self._carry + data
        if b"\n" not in data:
            self._carry = buf[-_MAX_LINE:]
            return []
        lines = buf.split(b"\n")
        self._carry = lines.pop()[-_MAX_LINE:]
        report: list[str] = []
        for line in lines:
            if line.startswith(_TOKEN):
                self.token = line[len(_TOKEN) :].strip()
            elif self._awaiting:
                report += self._outcome(line)
        return report

    def _outcome(self, line: bytes) -> list[str]:
        m = _RESUMED.match(line)
        if m:
            self._where = f"{m.group(1).decode(errors='replace')} in {m.group(2).decode()}"
            return []
        m = _SUMMARY.match(line)
        if m and self._where:
            self._awaiting = False
            replayed, missed = int(m.group(1)), int(m.group(2))
            return [f"resumed as {self._where}: {replayed} replayed, {missed} missed"]
        m = _REFUSED.match(line)
        if m:
            self._awaiting = False
            reason = m.group(1).decode(errors="replace")
            return [f"resume refused ({reason}): continuing as a new guest"]
        return []
