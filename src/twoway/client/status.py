"""The client's own lines on standard error: state changes, lifecycle (``-v``), errors.

One line per event, prefixed with ``[name]`` when several connections run. The stream is
looked up at every write because the interactive mode replaces ``sys.stderr`` with a proxy
that prints above the input line.
"""

from __future__ import annotations

import sys

from twoway.client.output import prefix

__all__ = ["Status"]


class Status:
    """Where a client reports. ``announce``: print state changes (connected, disconnected,
    reconnecting); ``verbose``: also lifecycle events (lookup, addresses, end, close with
    byte counts). Errors are always printed, as ``twoway: ...``."""

    def __init__(self, *, announce: bool, verbose: bool) -> None:
        self.announce = announce or verbose
        self.verbose = verbose

    @staticmethod
    def _emit(name: str, text: str, lead: str = "") -> None:
        stream = sys.stderr
        try:
            stream.write(f"{lead}{prefix(name)}{text}\n")
            stream.flush()
        except (OSError, ValueError):  # stderr closed: nobody to tell
            pass

    def state(self, name: str, text: str) -> None:
        """A state change (``connected to ...``): shown with ``announce`` or ``verbose``."""
        if self.announce:
            self._emit(name, text)

    def detail(self, name: str, text: str) -> None:
        """A lifecycle event (``connected 127.0.0.1:5000 -> ...``): shown with ``verbose``."""
        if self.verbose:
            self._emit(name, text)

    def show(self, name: str, text: str) -> None:
        """A line asked for by a flag (``-x``'s dump): always shown."""
        self._emit(name, text)

    def error(self, name: str, text: str) -> None:
        """A failure the exit code reports too: always shown, as ``twoway: ...``."""
        self._emit(name, text, "twoway: ")
