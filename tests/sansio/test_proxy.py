"""The PROXY protocol parser: every case of HAProxy's spec, valid and hostile, fed as bytes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.errors import ProxyProtocolError, TwowayError
from twoway.sansio.proxy import (
    DEFAULT_MAX_V2_LENGTH,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    Command,
    Family,
    ProxyHeader,
    ProxyReader,
    Transport,
    crc32c,
    parse_header,
)


def v2(
    command: int = 1,
    fam: int = 0x11,
    addr: bytes | None = None,
    tlvs: list[tuple[int, bytes]] | None = None,
    crc: bool = False,
    version: int = 2,
    extra: bytes = b"",
) -> bytes:
    """A v2 header as a sender builds it (the CRC32C TLV last, computed over the header)."""
    if addr is None:
        addr = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + (1234).to_bytes(2, "big") + b"\x00\x50"
    body = addr + b"".join(bytes([t]) + len(v).to_bytes(2, "big") + v for t, v in tlvs or [])
    if crc:
        body += b"\x03\x00\x04\x00\x00\x00\x00"
    body += extra
    head = V2_SIGNATURE + bytes([version << 4 | command, fam]) + len(body).to_bytes(2, "big")
    out = head + body
    if crc:
        out = out[:-4] + crc32c(out).to_bytes(4, "big")
    return out


def v6addr(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
    )


def error(data: bytes, **kw: int) -> ProxyProtocolError:
    with pytest.raises(ProxyProtocolError) as info:
        parse_header(data, **kw)
    return info.value


def eof_error(data: bytes) -> ProxyProtocolError:
    reader = ProxyReader()
    assert reader.feed(data) is None
    with pytest.raises(ProxyProtocolError) as info:
        reader.feed_eof()
    return info.value


# ---------------------------------------------------------------------------- v1 valid


def test_v1_tcp4_with_payload_after() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"
    h = parse_header(data)
    assert h == ProxyHeader(
        1,
        Command.PROXY,
        Family.INET,
        Transport.STREAM,
        ("192.168.0.1", 56324),
        ("192.168.0.11", 443),
        47,
    )
    assert data[h.length :] == b"GET / HTTP/1.1\r\n"
    assert h.client == ("192.168.0.1", 56324)


def test_v1_tcp6_longest_line_is_104_bytes() -> None:
    full = ":".join(["ffff"] * 8)
    line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(line) == 104
    h = parse_header(line)
    assert h is not None and h.family is Family.INET6
    assert h.source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)


def test_v1_tcp6_compressed_and_upper_case() -> None:
    h = parse_header(b"PROXY TCP6 2001:DB8::1 ::1 0 4001\r\n")
    assert h is not None
    assert h.source == ("2001:db8::1", 0)
    assert h.destination == ("::1", 4001)


def test_v1_unknown_short_and_worst_case_107_bytes() -> None:
    h = parse_header(b"PROXY UNKNOWN\r\nhello")
    assert h is not None and h.family is Family.UNSPEC and h.client is None and h.length == 15
    full = ":".join(["ffff"] * 8)
    line = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(line) == V1_MAX_LENGTH
    h = parse_header(line)
    assert h is not None and h.client is None and h.length == 107


def test_v1_unknown_ignores_whatever_precedes_crlf() -> None:
    h = parse_header(b"PROXY UNKNOWN anything at all, even \xff\r\n")
    assert h is not None and h.family is Family.UNSPEC


def test_v1_needs_more_until_crlf() -> None:
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    for i in range(len(line)):
        assert parse_header(line[:i]) is None, line[:i]
    assert parse_header(line) is not None


# ---------------------------------------------------------------------------- v1 hostile


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",  # a client speaking first on a PROXY port
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
        b"proxy TCP4 ",  # case matters
        b"PROXX",
        b"PROXY  TCP4",  # two spaces
        b"PROXY TCP5",
        b"PROXY UDP4 ",
        b"PROXY TCP4\r\n",
    ],
)
def test_not_a_header_is_refused_at_once(data: bytes) -> None:
    e = error(data)
    assert e.kind == "malformed"
    assert "PROXY protocol" in str(e) and "\n" not in str(e)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR not followed by LF"),
        (b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR not followed by LF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "4 fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "4 fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "4 fields"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "4 fields"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "source address"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "source address"),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "source address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "source address"),
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "destination address"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "source address"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "source address"),
        (b"PROXY TCP6 ::1 ::1::2 1 2\r\n", "destination address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "source port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "source port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "source port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "destination port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa3\r\n", "US-ASCII"),
        (b"PROXY UNKNOWNX 1 2\r\n", "not TCP4, TCP6 or UNKNOWN"),
    ],
)
def test_v1_malformed(line: bytes, words: str) -> None:
    e = error(line)
    assert e.kind == "malformed"
    assert words in str(e), str(e)


def test_v1_oversized_without_crlf_in_107_bytes() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n"
    assert parse_header(line[:106]) is None
    e = error(line[:107])
    assert e.kind == "oversized" and "107" in str(e)
    assert error(line).kind == "oversized"
    # A CRLF at bytes 107-108 is one byte too late.
    assert error(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n").kind == "oversized"


def test_v1_truncated_at_eof() -> None:
    e = eof_error(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r")
    assert e.kind == "truncated" and "31 byte(s)" in str(e)


def test_error_echoes_at_most_a_few_peer_bytes() -> None:
    e = error(b"PROXY TCP6 " + b"a" * 90 + b" ::1 1 2\r\n")
    assert len(str(e)) < 120


# ---------------------------------------------------------------------------- v2 valid


def test_v2_tcp4_with_payload_after() -> None:
    data = v2() + b"hello"
    h = parse_header(data)
    assert h is not None
    assert (h.version, h.command, h.family, h.transport) == (
        2,
        Command.PROXY,
        Family.INET,
        Transport.STREAM,
    )
    assert h.source == ("10.0.0.1", 1234) and h.destination == ("10.0.0.2", 80)
    assert h.length == 28 and data[h.length :] == b"hello"


def test_v2_tcp6_and_udp6() -> None:
    h = parse_header(v2(fam=0x21, addr=v6addr("2001:db8::7", "::1", 65535, 0)))
    assert h is not None and h.source == ("2001:db8::7", 65535) and h.destination == ("::1", 0)
    h = parse_header(v2(fam=0x22, addr=v6addr("::2", "::3", 5, 6)))
    assert h is not None and h.transport is Transport.DGRAM and h.client == ("::2", 5)


def test_v2_local_skips_its_address_block_whatever_the_family() -> None:
    data = v2(command=0, fam=0x11) + b"payload"
    h = parse_header(data)
    assert h is not None and h.command is Command.LOCAL and h.client is None
    assert data[h.length :] == b"payload"
    h = parse_header(v2(command=0, fam=0x00, addr=b""))
    assert h is not None and h.command is Command.LOCAL and h.length == 16


def test_v2_unspec_skips_the_block() -> None:
    h = parse_header(v2(fam=0x00, addr=b"whatever, ignored"))
    assert h is not None and h.family is Family.UNSPEC and h.client is None and h.length == 33


def test_v2_unix_reports_no_client() -> None:
    h = parse_header(v2(fam=0x31, addr=b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")))
    assert h is not None and h.family is Family.UNIX and h.client is None


def test_v2_tlvs_and_a_correct_crc32c() -> None:
    h = parse_header(v2(tlvs=[(0x02, b"chat.example"), (0x05, b"id-1"), (0x04, b"")], crc=True))
    assert h is not None
    assert h.tlv(0x02) == b"chat.example" and h.tlv(0x05) == b"id-1" and h.tlv(0x04) == b""
    assert h.tlv(0x30) is None
    assert len(h.tlvs) == 4


def test_crc32c_known_vector() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4 / the usual check value


# ---------------------------------------------------------------------------- v2 hostile


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (v2(version=1), "version 1"),
        (v2(version=3), "version 3"),
        (v2(command=2), "unknown command 0x2"),
        (v2(command=0xF), "unknown command 0xf"),
        (v2(fam=0x41), "unknown address family 0x4"),
        (v2(fam=0x13), "unknown transport 0x3"),
        (v2(addr=b"\x01" * 11), "too short for inet/stream (needs 12)"),
        (v2(fam=0x21, addr=b"\x01" * 35), "needs 36"),
        (v2(fam=0x31, addr=b"\x01" * 215), "needs 216"),
        (v2(extra=b"\x01"), "1 stray byte"),
        (v2(extra=b"\x01\x00"), "2 stray byte"),
        (v2(extra=b"\x02\x00\x05abcd"), "TLV 0x02 runs past"),
        (v2(tlvs=[(0x03, b"\x00\x00\x00")]), "CRC32C TLV has 3 bytes"),
        (v2(tlvs=[(0x03, b"\x00\x00\x00\x00")]), "CRC32C checksum does not match"),
        (V2_SIGNATURE[:4] + b"\x01" + V2_SIGNATURE[5:], "not a PROXY protocol header"),
    ],
)
def test_v2_malformed(data: bytes, words: str) -> None:
    e = error(data)
    assert e.kind == "malformed"
    assert words in str(e), str(e)


def test_v2_crc_covers_addresses() -> None:
    data = bytearray(v2(crc=True))
    data[17] ^= 1  # the source address, as a forger would change it
    assert "CRC32C" in str(error(bytes(data)))


def test_v2_bad_fields_refused_before_the_rest_arrives() -> None:
    assert error(V2_SIGNATURE + b"\x31").kind == "malformed"
    assert error(V2_SIGNATURE + b"\x21\x51").kind == "malformed"


def test_v2_oversized_refused_from_the_length_field_alone() -> None:
    head = V2_SIGNATURE + b"\x21\x11" + (DEFAULT_MAX_V2_LENGTH - 15).to_bytes(2, "big")
    e = error(head)
    assert e.kind == "oversized" and str(DEFAULT_MAX_V2_LENGTH) in str(e)
    assert error(V2_SIGNATURE + b"\x21\x11\xff\xff").kind == "oversized"
    # Exactly at the limit is fine.
    at_limit = v2(tlvs=[(0x04, b"\0" * (DEFAULT_MAX_V2_LENGTH - 16 - 12 - 3))])
    assert len(at_limit) == DEFAULT_MAX_V2_LENGTH and parse_header(at_limit) is not None
    assert error(v2(tlvs=[(0x04, b"\0" * 100)]), max_v2_length=100).kind == "oversized"


def test_v2_needs_more_until_complete() -> None:
    data = v2(tlvs=[(0x05, b"abc")], crc=True)
    for i in range(len(data)):
        assert parse_header(data[:i]) is None
    assert parse_header(data) is not None


@pytest.mark.parametrize("cut", [1, 12, 15, 16, 27])
def test_v2_truncated_at_eof(cut: int) -> None:
    assert eof_error(v2()[:cut]).kind == "truncated"


# ---------------------------------------------------------------------------- the reader


def test_reader_hands_back_the_payload() -> None:
    r = ProxyReader()
    assert r.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") is None
    h = r.feed(b"\nhello\n")
    assert h is not None and h.client == ("1.2.3.4", 1)
    assert r.payload == b"hello\n"
    with pytest.raises(RuntimeError):
        r.feed(b"more")


def test_reader_eof_before_anything() -> None:
    r = ProxyReader()
    with pytest.raises(ProxyProtocolError, match="closed before a PROXY header") as info:
        r.feed_eof()
    assert info.value.kind == "truncated"


def test_reader_spent_after_an_error() -> None:
    r = ProxyReader()
    with pytest.raises(ProxyProtocolError):
        r.feed(b"HELLO")
    with pytest.raises(RuntimeError):
        r.feed(b"PROXY UNKNOWN\r\n")


def test_reader_buffer_stays_bounded_byte_by_byte() -> None:
    r = ProxyReader()
    with pytest.raises(ProxyProtocolError) as info:
        for _ in range(10_000):
            r.feed(b"PROXY UNKNOWN "[r.buffered : r.buffered + 1] or b"x")
            assert r.buffered < V1_MAX_LENGTH
    assert info.value.kind == "oversized"


def test_reader_rejects_a_useless_limit() -> None:
    with pytest.raises(ValueError):
        ProxyReader(max_v2_length=51)


def test_error_belongs_to_the_tree() -> None:
    assert issubclass(ProxyProtocolError, TwowayError)
    assert issubclass(ProxyProtocolError, ValueError)


# ---------------------------------------------------------------------------- properties

ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
ipv6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
port = st.integers(0, 65535)


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[bytes, tuple[str, int] | None]:
    """A valid header (v1 or v2, any family) and the client it names."""
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-local"]))
    sp, dp = draw(port), draw(port)
    s: ipaddress.IPv4Address | ipaddress.IPv6Address
    d: ipaddress.IPv4Address | ipaddress.IPv6Address
    if kind in ("v1-4", "v2-4"):
        s, d = draw(ipv4), draw(ipv4)
    else:
        s, d = draw(ipv6), draw(ipv6)
    if kind == "v1-4":
        return f"PROXY TCP4 {s} {d} {sp} {dp}\r\n".encode(), (str(s), sp)
    if kind == "v1-6":
        text = draw(st.sampled_from([str(s), s.exploded, s.exploded.upper()]))
        return f"PROXY TCP6 {text} {d} {sp} {dp}\r\n".encode(), (str(s), sp)
    if kind == "v1-unknown":
        return b"PROXY UNKNOWN " + draw(st.binary(max_size=40)).replace(b"\r", b"").replace(
            b"\n", b""
        ) + b"\r\n", None
    tlvs = draw(st.lists(st.tuples(st.integers(4, 255), st.binary(max_size=20)), max_size=4))
    crc = draw(st.booleans())
    addr = s.packed + d.packed + sp.to_bytes(2, "big") + dp.to_bytes(2, "big")
    fam = 0x11 if kind == "v2-4" else 0x21
    if kind == "v2-local":
        return v2(command=0, fam=fam, addr=addr, tlvs=tlvs, crc=crc), None
    return v2(fam=fam, addr=addr, tlvs=tlvs, crc=crc), (str(s), sp)


@settings(max_examples=300, deadline=None)
@given(valid_headers(), st.binary(max_size=30), st.data())
def test_any_split_gives_the_same_header_and_payload(
    case: tuple[bytes, tuple[str, int] | None], payload: bytes, data: st.DataObject
) -> None:
    header, client = case
    stream = header + payload
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = ProxyReader()
    result = None
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if result is None:
            result = reader.feed(stream[a:b])
            rest = reader.payload
        else:
            rest += stream[a:b]
    assert result is not None and result.client == client
    assert result.length == len(header) and rest == payload
    assert result == parse_header(stream)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_nothing_but_the_typed_error(data: bytes) -> None:
    try:
        parse_header(data)
    except ProxyProtocolError as e:
        assert e.kind in ("malformed", "oversized") and "\n" not in str(e)


@settings(max_examples=500, deadline=None)
@given(valid_headers(), st.data())
def test_damaged_headers_raise_nothing_but_the_typed_error(
    case: tuple[bytes, tuple[str, int] | None], data: st.DataObject
) -> None:
    header = bytearray(case[0])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(header) - 1))
        header[at] = data.draw(st.integers(0, 255))
    reader = ProxyReader()
    try:
        if reader.feed(bytes(header)) is None:
            reader.feed_eof()
    except ProxyProtocolError as e:
        assert "\n" not in str(e)


def test_the_parser_imports_nothing_with_io() -> None:
    import ast

    import twoway.sansio.proxy

    path = twoway.sansio.proxy.__file__
    with open(path) as f:
        tree = ast.parse(f.read())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "enum", "ipaddress", "re", "dataclasses", "twoway.errors"}


def test_take_consumes_up_to_the_header_end_only() -> None:
    r = ProxyReader()
    assert r.take(b"PROXY TCP4 1.2.3.4 ") == (19, None)
    # The next peek shows the rest of the header and the start of a TLS ClientHello.
    n, h = r.take(b"5.6.7.8 1 2\r\n\x16\x03\x01")
    assert n == 13 and h is not None and h.client == ("1.2.3.4", 1)
    r = ProxyReader()
    data = v2() + b"\x16\x03\x01"
    n, h = r.take(data)
    assert n == len(data) - 3 and h is not None and h.length == n
