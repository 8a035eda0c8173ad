"""The PROXY protocol, receiver side (HAProxy's spec, versions 1 and 2): bytes in, a header out.

A proxy in front of the server (HAProxy with ``send-proxy``/``send-proxy-v2``, AWS NLB,
stunnel, nginx's ``proxy_protocol on``) opens each connection with one header naming the
real client. :func:`parse_header` reads it from the start of a buffer; :class:`ProxyReader`
does the same incrementally for a protocol's ``data_received``. Both give one of:

- ``None``: the bytes so far are a valid beginning, more are needed;
- a :class:`ProxyHeader`, whose ``length`` is how many bytes the header took (everything
  after it is the client's payload, untouched);
- a raised :class:`~twoway.errors.ProxyProtocolError` (``kind`` ``"malformed"``,
  ``"truncated"`` or ``"oversized"``) whose ``str()`` is one line for the log.

Strictness follows the spec's "any sequence which does not exactly match the protocol must
be discarded": v1 is one CRLF-terminated US-ASCII line of at most 107 bytes, single spaces,
no leading zeros in IPv4 octets or ports, the address family matching the keyword; a bare CR
or LF is refused. v2 must have version 2, a known command, family and transport, an address
block long enough for its family, well-formed TLVs, a correct CRC32C when one is sent, and
a total length within ``max_v2_length``. Bytes that cannot begin any valid header are refused
at once, so a client that speaks first on a PROXY port is answered without waiting for a
timeout. The receiver must never guess whether a header is present (a forged header would
defeat every per-address rule): whether to expect one, and from which peers, is the caller's
configuration (see :class:`twoway.sansio.access.AddressSet`).

Addresses are reported as the proxy sent them (``str`` of :mod:`ipaddress`, so IPv6 is
compressed); an IPv4-mapped IPv6 source stays mapped here and is normalised by
:func:`twoway.sansio.access.normalize_ip` like every other address. AF_UNIX addresses are not
reported (``client`` is ``None``): the spec lets a receiver fall back to the real endpoints
for families it does not use, and a path names no client for per-address rules.

Pure logic: no sockets, no event loop, no clock. The caller bounds how long it waits for a
header (the spec suggests a few seconds, at least 3 to cover a TCP retransmit).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from twoway.errors import ProxyProtocolError

__all__ = [
    "DEFAULT_MAX_V2_LENGTH",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "Command",
    "Family",
    "ProxyHeader",
    "ProxyReader",
    "Transport",
    "crc32c",
    "parse_header",
]

#: The 12 bytes every v2 header starts with (NUL at the fifth: never a C string).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 line, CRLF included: ``PROXY UNKNOWN`` with two full IPv6 addresses.
V1_MAX_LENGTH = 107
# 4 KiB, fixed part included: HAProxy's and the cloud load balancers' headers, TLVs and all,
# take a few hundred bytes; the 16-bit length field would otherwise let any peer that is
# allowed to send a header make each connection buffer 64 KiB before saying anything.
DEFAULT_MAX_V2_LENGTH = 4096

_V1_PREFIXES = (b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN")
_V2_FIXED = 16
_TLV_CRC32C = 0x03
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class Command(enum.Enum):
    """v2's command: ``PROXY`` relays a client; ``LOCAL`` is the proxy's own connection (a
    health check), to be treated as if there were no header. v1 headers are always PROXY."""

    PROXY = "proxy"
    LOCAL = "local"


class Family(enum.Enum):
    """The relayed connection's address family; ``UNSPEC`` is v1's ``UNKNOWN`` too."""

    INET = "inet"
    INET6 = "inet6"
    UNIX = "unix"
    UNSPEC = "unspec"


class Transport(enum.Enum):
    """The relayed connection's transport (v1 only relays TCP: ``STREAM``)."""

    STREAM = "stream"
    DGRAM = "dgram"
    UNSPEC = "unspec"


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete, valid header.

    ``source``/``destination`` are ``(ip, port)`` for a relayed TCP/UDP connection over IPv4
    or IPv6, else ``None``. ``length`` is the header's size in bytes: the payload starts
    there. ``tlvs`` are v2's type-length-value extensions in order (``(type, value)``),
    structurally checked, the CRC32C one verified, the others not interpreted.
    """

    version: int
    command: Command
    family: Family
    transport: Transport
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def client(self) -> tuple[str, int] | None:
        """The real client's ``(ip, port)``, or ``None`` when the connection's own peer
        address stands (LOCAL, UNKNOWN/UNSPEC, AF_UNIX)."""
        return self.source

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind`` (``0x02`` authority, ``0x05`` unique
        id, ...), or ``None``."""
        for t, value in self.tlvs:
            if t == kind:
                return value
        return None


def _malformed(reason: str) -> ProxyProtocolError:
    return ProxyProtocolError("malformed", reason)


def _show(raw: bytes | str, limit: int = 40) -> str:
    """A peer-supplied field for a log line: quoted, escaped, cut short."""
    text = raw if isinstance(raw, str) else raw.decode("ascii", "backslashreplace")
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def parse_header(
    data: bytes | bytearray, *, max_v2_length: int = DEFAULT_MAX_V2_LENGTH
) -> ProxyHeader | None:
    """Parse the header at the start of ``data``: ``None`` if more bytes are needed.

    Raises :class:`ProxyProtocolError` as soon as the bytes can no longer become a valid
    header. Bytes after the header are ignored (they are the payload). Pure: the same
    buffer always gives the same answer.
    """
    if not data:
        return None
    if data[0] == 0x0D:
        return _parse_v2(data, max_v2_length)
    if data[0] == 0x50:  # "P"
        return _parse_v1(data)
    raise _malformed("not a PROXY protocol header")


# ---------------------------------------------------------------------------- version 1


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    head = bytes(data[:13])
    if not any(p.startswith(head) or head.startswith(p) for p in _V1_PREFIXES):
        raise _malformed(f"not a PROXY protocol header: {_show(head)}")
    cr = data.find(b"\r", 0, V1_MAX_LENGTH)
    if cr != -1 and cr + 1 < len(data) and data[cr + 1] != 0x0A:
        raise _malformed("v1 line has a CR not followed by LF")
    lf = data.find(b"\n", 0, V1_MAX_LENGTH)
    if lf == -1:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError(
                "oversized", f"v1 line has no CRLF within {V1_MAX_LENGTH} bytes"
            )
        return None
    if cr != lf - 1:
        raise _malformed("v1 line ends with LF without CR")
    raw = bytes(data[:cr])
    if raw == b"PROXY UNKNOWN" or raw.startswith(b"PROXY UNKNOWN "):
        # The spec: the receiver must ignore anything after UNKNOWN before the CRLF.
        return ProxyHeader(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC, None, None, lf + 1)
    try:
        line = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _malformed("v1 line is not US-ASCII") from None
    parts = line.split(" ")
    keyword = parts[1]
    if keyword not in ("TCP4", "TCP6"):
        raise _malformed(f"v1 protocol {_show(keyword)} is not TCP4, TCP6 or UNKNOWN")
    if len(parts) != 6:
        raise _malformed(f"v1 {keyword} line needs 4 fields after it, got {_show(line)}")
    family = Family.INET if keyword == "TCP4" else Family.INET6
    src = _v1_address(parts[2], family, "source")
    dst = _v1_address(parts[3], family, "destination")
    sport = _v1_port(parts[4], "source")
    dport = _v1_port(parts[5], "destination")
    return ProxyHeader(
        1, Command.PROXY, family, Transport.STREAM, (src, sport), (dst, dport), lf + 1
    )


def _v1_address(text: str, family: Family, which: str) -> str:
    try:
        if family is Family.INET:
            if _IPV4.fullmatch(text):
                # ipaddress refuses leading zeros (octal ambiguity), as the spec does.
                return str(ipaddress.IPv4Address(text))
        elif _IPV6.fullmatch(text):
            # The character check keeps out scope ids ("%eth0"), which ipaddress accepts.
            return str(ipaddress.IPv6Address(text))
    except ValueError:
        pass
    kind = "IPv4" if family is Family.INET else "IPv6"
    raise _malformed(f"v1 {which} address {_show(text)} is not {kind}")


def _v1_port(text: str, which: str) -> int:
    if _PORT.fullmatch(text) and int(text) <= 65535:
        return int(text)
    raise _malformed(f"v1 {which} port {_show(text)} is not 0-65535 without leading zeros")


# ---------------------------------------------------------------------------- version 2

_FAMILIES = (Family.UNSPEC, Family.INET, Family.INET6, Family.UNIX)
_TRANSPORTS = (Transport.UNSPEC, Transport.STREAM, Transport.DGRAM)
_ADDRESS_LENGTH = {Family.INET: 12, Family.INET6: 36, Family.UNIX: 216}


def _parse_v2(data: bytes | bytearray, max_length: int) -> ProxyHeader | None:
    n = len(data)
    if data[: min(n, 12)] != V2_SIGNATURE[: min(n, 12)]:
        raise _malformed("not a PROXY protocol header")
    if n > 12:
        version, command = data[12] >> 4, data[12] & 0x0F
        if version != 2:
            raise _malformed(f"v2 header has version {version}, not 2")
        if command > 1:
            raise _malformed(f"v2 header has unknown command {command:#x}")
    if n > 13:
        if data[13] >> 4 > 3:
            raise _malformed(f"v2 header has unknown address family {data[13] >> 4:#x}")
        if data[13] & 0x0F > 2:
            raise _malformed(f"v2 header has unknown transport {data[13] & 0x0F:#x}")
    if n < _V2_FIXED:
        return None
    total = _V2_FIXED + int.from_bytes(data[14:16], "big")
    if total > max_length:
        raise ProxyProtocolError(
            "oversized", f"v2 header of {total} bytes is over the limit of {max_length}"
        )
    if n < total:
        return None
    if data[12] & 0x0F == 0:
        # LOCAL: the proxy's own connection; the spec says discard the block, family and all.
        return ProxyHeader(2, Command.LOCAL, Family.UNSPEC, Transport.UNSPEC, None, None, total)
    family, transport = _FAMILIES[data[13] >> 4], _TRANSPORTS[data[13] & 0x0F]
    if family is Family.UNSPEC or transport is Transport.UNSPEC:
        # Unknown relayed protocol: the address block cannot be located, so it (and any
        # TLV) is skipped whole, and the real endpoints stand.
        return ProxyHeader(2, Command.PROXY, Family.UNSPEC, Transport.UNSPEC, None, None, total)
    need = _ADDRESS_LENGTH[family]
    if total - _V2_FIXED < need:
        raise _malformed(
            f"v2 address block of {total - _V2_FIXED} bytes is too short for "
            f"{family.value}/{transport.value} (needs {need})"
        )
    body = bytes(data[_V2_FIXED:total])
    source = destination = None
    if family is not Family.UNIX:
        size = 4 if family is Family.INET else 16
        ip = ipaddress.IPv4Address if family is Family.INET else ipaddress.IPv6Address
        ports = body[2 * size : 2 * size + 4]
        source = (str(ip(body[:size])), int.from_bytes(ports[:2], "big"))
        destination = (str(ip(body[size : 2 * size])), int.from_bytes(ports[2:], "big"))
    tlvs, crc_at = _parse_tlvs(body, need)
    if crc_at is not None:
        at = _V2_FIXED + crc_at
        # The checksum covers the whole header with its own four bytes zeroed.
        zeroed = bytes(data[:at]) + b"\0\0\0\0" + bytes(data[at + 4 : total])
        if crc32c(zeroed) != int.from_bytes(data[at : at + 4], "big"):
            raise _malformed("v2 header's CRC32C checksum does not match")
    return ProxyHeader(2, Command.PROXY, family, transport, source, destination, total, tlvs)


def _parse_tlvs(body: bytes, start: int) -> tuple[tuple[tuple[int, bytes], ...], int | None]:
    """The TLVs after the address block, and where the CRC32C value is (if one is sent)."""
    tlvs: list[tuple[int, bytes]] = []
    crc_at = None
    at = start
    while at < len(body):
        if len(body) - at < 3:
            raise _malformed(f"v2 header ends with {len(body) - at} stray byte(s) after its TLVs")
        kind = body[at]
        end = at + 3 + int.from_bytes(body[at + 1 : at + 3], "big")
        if end > len(body):
            raise _malformed(f"v2 TLV {kind:#04x} runs past the end of the header")
        if kind == _TLV_CRC32C and crc_at is None:
            if end - at != 7:
                raise _malformed(f"v2 CRC32C TLV has {end - at - 3} bytes, not 4")
            crc_at = at + 3
        tlvs.append((kind, body[at + 3 : end]))
        at = end
    return tuple(tlvs), crc_at


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B), as v2's checksum TLV uses it."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------------------- incremental


class ProxyReader:
    """Reads one header from a connection's first bytes, as they arrive.

    Call :meth:`feed` with each received chunk until it returns the header (then
    :attr:`payload` holds the bytes that followed it, to be handled as the connection's first
    data), and :meth:`feed_eof` if the stream ends first. Errors are raised as
    :class:`ProxyProtocolError`; after a header or an error the reader is spent and further
    calls raise :class:`RuntimeError` (a caller bug). Memory is bounded: while waiting, the
    buffer never holds more than the longest valid header allows (107 bytes for v1,
    ``max_v2_length`` for v2), because anything longer is refused on arrival.
    """

    __slots__ = ("_buf", "_done", "max_v2_length", "payload")

    def __init__(self, *, max_v2_length: int = DEFAULT_MAX_V2_LENGTH) -> None:
        if max_v2_length < _V2_FIXED + 36:
            raise ValueError(f"max_v2_length must be at least 52 (got {max_v2_length})")
        self.max_v2_length = max_v2_length
        self.payload = b""
        self._buf = b""
        self._done = False

    @property
    def buffered(self) -> int:
        """How many bytes have been received and not yet resolved into a header."""
        return len(self._buf)

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Add received bytes: the header once complete, else ``None`` (need more)."""
        if self._done:
            raise RuntimeError("ProxyReader already finished")
        buf = self._buf + data if self._buf else bytes(data)
        try:
            header = parse_header(buf, max_v2_length=self.max_v2_length)
        except ProxyProtocolError:
            self._done = True
            self._buf = b""
            raise
        if header is None:
            self._buf = buf
            return None
        self._done = True
        self._buf = b""
        self.payload = buf[header.length :]
        return header

    def take(self, peeked: bytes) -> tuple[int, ProxyHeader | None]:
        """For a reader that peeks (``recv(n, MSG_PEEK)``) so that no byte past the header
        leaves the socket, e.g. when TLS starts right after it: how many of the ``peeked``
        bytes to consume with a real ``recv``, and the header once complete.

        While the header is incomplete every peeked byte belongs to it, so all are consumed
        (the socket never stays readable with bytes nobody takes: no busy loop); once
        complete, exactly the rest of the header is consumed and the payload stays queued in
        the kernel for whoever reads next. Raises like :meth:`feed`.
        """
        header = self.feed(peeked)
        if header is None:
            return len(peeked), None
        return len(peeked) - len(self.payload), header

    def feed_eof(self) -> None:
        """The peer closed before a complete header: always raises (``"truncated"``)."""
        if self._done:
            raise RuntimeError("ProxyReader already finished")
        self._done = True
        got, self._buf = len(self._buf), b""
        if got == 0:
            raise ProxyProtocolError("truncated", "connection closed before a PROXY header")
        raise ProxyProtocolError(
            "truncated", f"connection closed after {got} byte(s) of a PROXY header"
        )
