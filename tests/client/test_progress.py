"""Long transfers show progress on a terminal (tqdm), never elsewhere, and ``-v`` sums them up
in one line (issue 13)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from helpers import TWOWAY, UNIT, cli_env, start_cli
from twoway.client.progress import format_bytes, summary

MIB = 1024 * 1024


def test_summary_and_sizes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(50_000_000) == "47.7 MiB"
    assert summary(MIB, 2 * MIB, 2.0) == "sent 1.0 MiB, received 2.0 MiB in 2.0 s (1.5 MiB/s)"


def _read_pty(master: int, proc: subprocess.Popen[bytes]) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + 20 * UNIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its side
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return bytes(out)


def test_a_file_piped_in_and_o_file_show_progress_on_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(4 * MIB))
    received = tmp_path / "received.bin"
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with start_cli("serve", "echo", "--port", "0") as server, upload.open("rb") as stdin:
        proc = subprocess.Popen(
            [*TWOWAY, "connect", "127.0.0.1", str(server.port), "-o", str(received), "-v"],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=cli_env(),
        )
        os.close(slave)
        try:
            screen = _read_pty(master, proc).decode("utf-8", "replace")
            assert proc.wait(10 * UNIT) == 0, screen
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    assert received.read_bytes() == upload.read_bytes()
    # tqdm's bars: the upload's with its size (so a percentage and an ETA), the download's.
    assert re.search(r"sent: 100%\|.*\| 4\.00M/4\.00M", screen), screen
    assert re.search(r"received: .*4\.00M", screen), screen
    assert re.search(r"sent 4\.0 MiB, received 4\.0 MiB in \d+\.\d s \(", screen), screen


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x" * MIB)
    received = tmp_path / "received.bin"
    with start_cli("serve", "echo", "--port", "0") as server, upload.open("rb") as stdin:
        quiet = subprocess.run(
            [*TWOWAY, "connect", "127.0.0.1", str(server.port), "-o", str(received)],
            stdin=stdin,
            capture_output=True,
            env=cli_env(),
            timeout=20 * UNIT,
            check=False,
        )
        stdin.seek(0)
        told = subprocess.run(
            [*TWOWAY, "connect", "127.0.0.1", str(server.port), "-o", str(received), "-v"],
            stdin=stdin,
            capture_output=True,
            env=cli_env(),
            timeout=20 * UNIT,
            check=False,
        )
    assert quiet.returncode == 0 and quiet.stderr == b""
    assert told.returncode == 0
    last = told.stderr.decode().splitlines()[-1]
    assert re.fullmatch(r"sent 1\.0 MiB, received 1\.0 MiB in \d+\.\d s \([\d.]+ \w+/s\)", last)
    assert "%|" not in told.stderr.decode()  # no bar in a log
