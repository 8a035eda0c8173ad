"""``twoway connect -x``: a hex dump of both directions on stderr, bounded per direction."""

from __future__ import annotations

import subprocess

from helpers import TWOWAY, UNIT, cli_env, start_cli
from twoway.sansio.hexdump import HexDump, hexdump_lines


def test_lines_look_like_hexdump_c() -> None:
    assert hexdump_lines(b"hello\n", 0, "> ") == [
        "> 00000000  68 65 6c 6c 6f 0a                                 |hello.|"
    ]
    two = hexdump_lines(bytes(range(20)), 0x10)
    assert two[0] == (
        "00000010  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|"
    )
    assert two[1].startswith("00000020  10 11 12 13   ")
    assert two[1].endswith("|....|")
    assert two[0].index("|") == two[1].index("|")  # the text column stays aligned


def test_each_direction_has_its_own_budget_and_the_rest_is_counted() -> None:
    out: list[str] = []
    dump = HexDump(out.append, limit=32)
    dump.received(b"a" * 100)
    dump.sent(b"b" * 10)
    dump.received(b"c" * 5)
    assert [line[:12] for line in out] == ["< 00000000  ", "< 00000010  ", "> 00000000  "]
    dump.finish()
    assert out[-1].startswith("< hexdump: 73 more byte(s) received not shown (limit 32")
    dump.finish()  # reported once
    assert len(out) == 4
    dump.reset()
    dump.received(b"d")
    assert out[-1].startswith("< 00000000  64")  # a new connection starts over


def test_no_limit_shows_everything() -> None:
    out: list[str] = []
    HexDump(out.append, limit=None).sent(b"x" * 1000)
    assert len(out) == 63


def _connect(port: int, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*TWOWAY, "connect", "127.0.0.1", str(port), *args],
        input=data,
        capture_output=True,
        env=cli_env(),
        timeout=20 * UNIT,
        check=False,
    )


def test_connect_x_dumps_both_ways_and_leaves_stdout_alone() -> None:
    with start_cli("serve", "upper", "--port", "0") as server:
        result = _connect(server.port, b"hello\n", "-x")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "HELLO"\n'
    err = result.stderr.decode().splitlines()
    assert "> 00000000  68 65 6c 6c 6f 0a                                 |hello.|" in err
    assert '< 00000000  59 6f 75 20 73 61 69 64  20 22 48 45 4c 4c 4f 22  |You said "HELLO"|' in err
    assert "hexdump:" not in result.stderr.decode()


def test_a_large_transfer_cannot_flood_the_terminal() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    with start_cli("serve", "echo", "--port", "0") as server:
        result = _connect(server.port, data, "-x", "--hexdump-max", "1KiB")
    assert result.returncode == 0, result.stderr
    assert result.stdout == data  # the data itself is untouched
    err = result.stderr.decode().splitlines()
    assert sum(line.startswith("> 0") for line in err) == 64
    assert sum(line.startswith("< 0") for line in err) == 64
    assert f"> hexdump: {len(data) - 1024} more byte(s) sent not shown" in result.stderr.decode()
    assert f"< hexdump: {len(data) - 1024} more byte(s) received not shown" in (
        result.stderr.decode()
    )
