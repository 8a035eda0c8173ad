"""Real command-line clients against ``twoway serve upper``: nc, ncat, socat.

Each one-liner must print the reply and exit by itself: the client half-closes at the end of
its input, the server answers every line, then closes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from helpers import UNIT, CliServer, start_cli


@pytest.fixture(scope="module")
def upper() -> Iterator[CliServer]:
    with start_cli("serve", "upper", "--port", "0") as server:
        yield server


def run_client(argv: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which(argv[0])
    if exe is None:
        pytest.skip(f"{argv[0]} is not installed (Debian: netcat-openbsd, ncat, socat)")
    # A timeout here means the client did not exit by itself: the test fails.
    return subprocess.run(
        [exe, *argv[1:]], input=data, capture_output=True, timeout=10 * UNIT, check=False
    )


def test_nc_half_close(upper: CliServer) -> None:
    # printf 'hello\n' | nc -N 127.0.0.1 PORT
    result = run_client(["nc", "-N", "127.0.0.1", str(upper.port)], b"hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "HELLO"\n'


def test_nc_several_lines_last_one_unterminated(upper: CliServer) -> None:
    result = run_client(["nc", "-N", "127.0.0.1", str(upper.port)], b"one\r\ntwo\nthree")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "ONE"\r\nYou said "TWO"\nYou said "THREE"\n'


def test_nc_quit(upper: CliServer) -> None:
    result = run_client(["nc", "-N", "127.0.0.1", str(upper.port)], b"x\nQUIT\nnever\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "X"\nBye Bye!\n'


def test_ncat(upper: CliServer) -> None:
    # ncat half-closes when its stdin ends (unless --no-shutdown).
    result = run_client(["ncat", "127.0.0.1", str(upper.port)], b"hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "HELLO"\n'


def test_ncat_crlf(upper: CliServer) -> None:
    # ncat -C sends CRLF line endings, like telnet: the reply ends the same way.
    result = run_client(["ncat", "-C", "127.0.0.1", str(upper.port)], b"hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "HELLO"\r\n'


def test_socat(upper: CliServer) -> None:
    # printf 'hello\n' | socat - TCP:127.0.0.1:PORT
    result = run_client(["socat", "-", f"TCP:127.0.0.1:{upper.port}"], b"hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "HELLO"\n'


def test_clients_are_logged(upper: CliServer) -> None:
    result = run_client(["nc", "-N", "127.0.0.1", str(upper.port)], b"logged\n")
    assert result.stdout == b'You said "LOGGED"\n'
    upper.wait_for(r"connection from 127\.0\.0\.1:\d+$")
    upper.wait_for(r"closed 127\.0\.0\.1:\d+ \(in 7 B, out 18 B, \d+\.\d s\)$")
