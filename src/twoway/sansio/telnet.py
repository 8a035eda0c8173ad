"""Strip telnet protocol bytes from a stream and refuse every option the peer proposes.

People connect to line services with a real ``telnet`` client, which mixes protocol
commands into the data: ``IAC`` (0xFF) sequences for option negotiation, and on Ctrl-C
``IAC IP IAC DO TIMING-MARK`` (``ff f4 ff fd 06``), after which the client discards all
output until the server answers the timing mark. Without this filter those bytes would
reach the line decoder as garbage (and be broadcast), and the client would look hung.

:class:`TelnetFilter` is a pure state machine: bytes in, (clean data, reply bytes) out. It
implements the minimum a server that supports no option must do (RFC 854, RFC 1143 "NO"
state): every ``DO`` gets ``WONT``, every ``WILL`` gets ``DONT``, ``DONT``/``WONT`` are never
answered, so negotiation can never loop.
"""

from __future__ import annotations

__all__ = [
    "DO",
    "DONT",
    "IAC",
    "IP",
    "SB",
    "SE",
    "TIMING_MARK",
    "WILL",
    "WONT",
    "TelnetFilter",
]

IAC = 0xFF  # "interpret as command": every protocol sequence starts with it
DONT = 0xFE
DO = 0xFD
WONT = 0xFC
WILL = 0xFB
SB = 0xFA  # start of subnegotiation, ended by IAC SE
IP = 0xF4  # interrupt process (what Ctrl-C sends)
SE = 0xF0
TIMING_MARK = 0x06

_IAC_BYTE = b"\xff"
_CR_NUL = b"\r\0"
_CR_LF = b"\r\n"
_CR = 0x0D
_NUL = 0x00
_LF = 0x0A

# Parser states.
_DATA = 0  # ordinary data
_CMD = 1  # seen IAC, waiting for the command byte
_OPT = 2  # seen IAC WILL/WONT/DO/DONT, waiting for the option byte
_SB = 3  # inside a subnegotiation: everything is swallowed
_SB_IAC = 4  # inside a subnegotiation, seen IAC


class TelnetFilter:
    """Incremental telnet filter for one connection (server side, supporting no option).

    :meth:`feed` takes the bytes received and returns ``(data, reply)``: the data bytes
    for the line decoder, and the bytes to send back to the peer (often empty). It never
    raises on any input, and every way of splitting the same stream into chunks gives the
    same concatenated data and replies: a sequence cut at any byte resumes on the next feed.

    Rules:

    * ``IAC IAC`` is a literal 0xFF data byte.
    * ``IAC DO x`` is answered ``IAC WONT x`` and ``IAC WILL x`` is answered ``IAC DONT x``,
      once per option and direction: a peer that repeats a request it already had refused
      gets no second answer. ``DO TIMING-MARK`` is the exception and is answered every
      time: it is not a lasting option but a question (RFC 860), and telnet discards all
      output after Ctrl-C until it gets the answer.
    * ``IAC DONT x`` and ``IAC WONT x`` are consumed without reply (we are already there).
    * ``IAC SB ... IAC SE`` is consumed whole (``IAC IAC`` inside it included). An ``IAC``
      followed by another command inside a subnegotiation ends it, and the command is
      processed, as BSD telnetd does, so a malformed subnegotiation cannot swallow the
      rest of the stream.
    * Every other ``IAC`` command (``IP``, ``AO``, ``AYT``, ``NOP``, ``GA``, ...) is consumed.
    * ``CR NUL`` (how telnet sends a bare carriage return) becomes ``CR LF``, so Enter in
      telnet's character mode ends the line for the line decoder. The rule applies to the
      filtered data: a NUL right after a CR data byte becomes LF.

    Memory is O(1) per connection beyond the output: nothing of a subnegotiation is kept.
    """

    __slots__ = ("_after_cr", "_refused_do", "_refused_will", "_state", "_verb")

    def __init__(self) -> None:
        self._state = _DATA
        self._verb = 0
        # Whether the last data byte produced was a CR (so a NUL at the start of the next
        # chunk still belongs to a CR NUL pair).
        self._after_cr = False
        self._refused_do: set[int] = set()
        self._refused_will: set[int] = set()

    @property
    def idle(self) -> bool:
        """True when no sequence is pending (nothing has been cut at a chunk boundary)."""
        return self._state == _DATA and not self._after_cr

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Filter ``data``; return ``(clean data, bytes to send back to the peer)``.

        When ``data`` holds neither IAC nor CR NUL and nothing is pending, it is returned
        as is (no copy): that is what every line from a non-telnet client looks like.
        """
        if (
            self._state == _DATA
            and IAC not in data
            and _CR_NUL not in data
            and not (self._after_cr and data[:1] == b"\0")
        ):
            if data:
                self._after_cr = data[-1] == _CR
            return data, b""
        return self._feed_slow(data)

    def _feed_slow(self, data: bytes) -> tuple[bytes, bytes]:
        out = bytearray()
        reply = bytearray()
        state = self._state
        n = len(data)
        i = 0
        while i < n:
            if state == _DATA:
                j = data.find(_IAC_BYTE, i)
                if j < 0:
                    out += data[i:]
                    break
                out += data[i:j]
                i = j + 1
                state = _CMD
                continue
            if state == _SB:
                j = data.find(_IAC_BYTE, i)
                if j < 0:
                    break
                i = j + 1
                state = _SB_IAC
                continue
            byte = data[i]
            i += 1
            if state == _SB_IAC:
                if byte == SE:
                    state = _DATA
                elif byte == IAC:
                    state = _SB  # an escaped 0xFF inside the subnegotiation
                else:
                    # Malformed: treat as the end of the subnegotiation, and this byte as
                    # the command after IAC.
                    state = _CMD
                    i -= 1
            elif state == _CMD:
                if byte == IAC:
                    out.append(IAC)
                    state = _DATA
                elif WILL <= byte <= DONT:
                    self._verb = byte
                    state = _OPT
                elif byte == SB:
                    state = _SB
                else:
                    state = _DATA  # IP, AO, AYT, NOP, GA, DM, ...: consumed
            else:  # _OPT
                self._negotiate(self._verb, byte, reply)
                state = _DATA
        self._state = state
        if out:
            if self._after_cr and out[0] == _NUL:
                out[0] = _LF
            if _CR_NUL in out:
                out = out.replace(_CR_NUL, _CR_LF)
            self._after_cr = out[-1] == _CR
        return bytes(out), bytes(reply)

    def _negotiate(self, verb: int, option: int, reply: bytearray) -> None:
        # DONT and WONT are never answered: we never enable anything, so we are already
        # in the state they ask for, and answering them is how negotiation loops start.
        if verb == DO:
            if option == TIMING_MARK or option not in self._refused_do:
                self._refused_do.add(option)
                reply += bytes((IAC, WONT, option))
        elif verb == WILL and option not in self._refused_will:
            self._refused_will.add(option)
            reply += bytes((IAC, DONT, option))
