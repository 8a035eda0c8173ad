"""``twoway serve -x``: a bounded hex dump of each connection's traffic in the log, both ways,
each line led by the peer's address (issue 13); sendfile and splice step aside so that the
dump sees the bytes, and the transfers stay whole."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from helpers import UNIT, recv_line, recv_until_eof, start_cli


def _peer(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_both_directions_of_each_connection_led_by_its_peer() -> None:
    with (
        start_cli("serve", "upper", "--port", "0", "-x") as server,
        socket.create_connection(("127.0.0.1", server.port)) as a,
        socket.create_connection(("127.0.0.1", server.port)) as b,
    ):
        a.sendall(b"hello\n")
        assert recv_line(a) == b'You said "HELLO"\n'
        b.sendall(b"bob\n")
        assert recv_line(b) == b'You said "BOB"\n'
        pa, pb = re.escape(_peer(a)), re.escape(_peer(b))
        server.wait_for(rf"{pa} < 00000000  68 65 6c 6c 6f 0a +\|hello\.\|$")
        server.wait_for(
            rf"{pa} > 00000000  59 6f 75 20 73 61 69 64  20 22 48 45 4c 4c 4f 22"
            r"  \|You said \"HELLO\"\|$"
        )
        server.wait_for(rf"{pa} > 00000010  0a +\|\.\|$")
        server.wait_for(rf"{pb} < 00000000  62 6f 62 0a +\|bob\.\|$")
    assert "Traceback" not in server.stderr


def test_the_dump_is_bounded_per_direction() -> None:
    with start_cli("serve", "echo", "--port", "0", "-x", "--hexdump-max", "32") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as c:
            c.sendall(b"z" * 1000)
            got = b""
            while len(got) < 1000:
                got += c.recv(65536)
            peer = re.escape(_peer(c))
        server.wait_for(rf"{peer} < hexdump: 968 more byte\(s\) received not shown \(limit 32")
        server.wait_for(rf"{peer} > hexdump: 968 more byte\(s\) sent not shown")
        assert server.count(rf"{peer} < 0000") == 2  # 32 bytes: two lines, no more


def test_file_and_dump_transfers_are_dumped_and_whole(tmp_path: Path) -> None:
    data = os.urandom(3000)
    served = tmp_path / "served.bin"
    served.write_bytes(data)
    with start_cli("serve", "file", str(served), "--port", "0", "-x") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as c:
            assert recv_until_eof(c) == data
            peer = re.escape(_peer(c))
        first = " ".join(f"{b:02x}" for b in data[:8])
        server.wait_for(rf"{peer} > 00000000  {first} ")
        server.wait_for(rf"{peer} > 00000bb0  ")  # the last line: 3000 bytes, all shown
        server.wait_for(r"sendfile\(2\) cannot be used \(--hexdump shows the bytes\)")
    received = tmp_path / "in"
    received.mkdir()
    with start_cli("serve", "dump", "--dir", str(received), "--port", "0", "-x") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as c:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            recv_until_eof(c)
            peer = re.escape(_peer(c))
        first = " ".join(f"{b:02x}" for b in data[:8])
        server.wait_for(rf"{peer} < 00000000  {first} ")
    (dumped,) = received.iterdir()
    assert dumped.read_bytes() == data


def test_no_dump_without_x() -> None:
    with start_cli("serve", "upper", "--port", "0") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as c:
            c.sendall(b"hello\n")
            assert recv_line(c) == b'You said "HELLO"\n'
            peer = _peer(c)
        server.wait_for(rf"closed {re.escape(peer)}")
        assert server.count(r" 00000000  ") == 0
