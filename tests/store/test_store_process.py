"""The chat's SQLite store, end to end: history across a SIGTERM restart and a ``kill -9``
(an exact prefix), ``--keep``, and a database that cannot be used — refused at start-up
with one line, or (at run time) the chat going on in memory with one error line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_cli
from services.chat.chatkit import TIMEOUT, UNIT, ChatServer, Client

SUMMARY = re.compile(r"^\*\*\* replayed (\d+) lines; (\d+) (missed|no longer kept)$")
SEQ = re.compile(r"^\*\*\* at #(\S+) seq (\d+) epoch (\S+)$")


def start(data: Path, *args: str) -> ChatServer:
    return ChatServer(("--flood-rate", "0", "--data-dir", str(data), *args), loop="asyncio")


def client(srv: ChatServer, name: str = "c") -> Client:
    c = Client(srv.port, name=name)
    c.welcome()
    return c


def seq(c: Client) -> tuple[int, str]:
    c.send("/seq")
    m = SEQ.match(c.expect("*** at #"))
    assert m is not None
    return int(m.group(2)), m.group(3)


def history(c: Client, request: str) -> tuple[list[str], tuple[int, int, str]]:
    c.send(request)
    lines = c.lines_until(SUMMARY, timeout=TIMEOUT)
    m = SUMMARY.match(c.history[-1])
    assert m is not None
    shown = [x.removeprefix("[history] ") for x in lines if x.startswith("[history] ")]
    return shown, (int(m.group(1)), int(m.group(2)), m.group(3))


def test_ready_line_names_the_store(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        srv.wait_log(rf"listening on .*history in {re.escape(str(tmp_path))}/chat\.db")
    finally:
        assert srv.stop() == 0
    eph = ChatServer(("--ephemeral",))
    try:
        eph.wait_log(r"listening on .*history in memory \(--ephemeral\)")
    finally:
        assert eph.stop() == 0


def test_history_survives_a_restart_and_the_numbering_goes_on(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        with client(srv, "a") as a, client(srv, "b") as b:
            a.send("/join dev")
            b.send("/join dev")
            a.expect("joined #dev")
            for i in range(30):
                a.send(f"said {i}")
            b.expect("said 29")
            before = seq(b)
    finally:
        assert srv.stop() == 0  # SIGTERM: what was said is written before the exit
    srv = start(tmp_path)
    try:
        with client(srv, "c") as c:
            c.send("/join dev")
            c.expect("*** you are in #dev")
            c.expect(re.compile(r"^\[history\] guest1: said 29$"))
            assert c.skipped[-1] == "[history] guest1: said 28"
            assert seq(c) == before  # same numbering: a /since from before still works
            shown, summary = history(c, f"/since {before[0] - 5} {before[1]}")
            assert [x.split(": ", 1)[1] for x in shown] == [f"said {i}" for i in range(25, 30)]
            assert summary == (5, 0, "missed")
    finally:
        assert srv.stop() == 0


def test_kill_9_keeps_an_exact_prefix_of_what_was_said(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        with client(srv, "a") as a, client(srv, "b") as b:
            for i in range(200):
                a.send(f"n {i}")
            b.expect("n 199")  # acknowledged: delivered to the room
            time.sleep(0.3 * UNIT)  # past the group commit interval (50 ms)
            for i in range(200, 3000):
                a.send(f"n {i}")
            b.expect("n 1500")
            srv.kill()  # SIGKILL in the middle of the flood
            srv.wait_exit()
    finally:
        srv.stop()
    srv = start(tmp_path)
    try:
        with client(srv, "c") as c:
            last, _ = seq(c)
            assert last >= 200  # every line acknowledged before the commit interval
            shown, (count, lost, _) = history(c, f"/since {max(last - 1000, 0)}")
            numbers = [int(x.rsplit(" ", 1)[1]) for x in shown]
            # An exact prefix: the lines are n 0, n 1... up to the last one on disk.
            assert numbers == list(range(last - len(numbers), last))
            assert count == len(numbers) and lost == 0
    finally:
        assert srv.stop() == 0


def test_keep_trims_the_store_and_since_says_what_is_no_longer_kept(tmp_path: Path) -> None:
    srv = start(tmp_path, "--keep", "10")
    try:
        with client(srv, "a") as a, client(srv, "b") as b:
            for i in range(50):
                a.send(f"k {i}")
            b.expect("k 49")
    finally:
        assert srv.stop() == 0
    srv = start(tmp_path, "--keep", "10")
    try:
        with client(srv, "c") as c:
            shown, summary = history(c, "/since 0")
            assert [x.split(": ", 1)[1] for x in shown] == [f"k {i}" for i in range(40, 50)]
            assert summary == (10, 40, "no longer kept")
    finally:
        assert srv.stop() == 0


def test_a_bad_keep_is_refused_with_one_line(tmp_path: Path) -> None:
    done = run_cli("serve", "chat", "--port", "0", "--data-dir", str(tmp_path), "--keep", "3x")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "keep = '3x'" in done.stderr


# -- databases that cannot be used ---------------------------------------------------------


def refused(data: Path) -> str:
    """Start a chat server on ``data``: it must refuse, with one line; return it."""
    done = run_cli("serve", "chat", "--port", "0", "--data-dir", str(data), timeout=20 * UNIT)
    assert done.returncode != 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_a_corrupt_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "chat.db").write_bytes(os.urandom(64 * 1024))
    line = refused(tmp_path)
    assert line == (
        f"twoway: history store {tmp_path}/chat.db: file is not a database "
        "(move the file away to start afresh, or use --ephemeral)"
    )


def test_a_database_from_a_newer_twoway_is_refused(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "chat.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    assert "schema version 99 is newer than this twoway knows" in refused(tmp_path)


def test_a_database_locked_by_another_process_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"db = sqlite3.connect({str(tmp_path / 'chat.db')!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        line = refused(tmp_path)
        assert "database is locked (is another twoway server using this --data-dir?)" in line
    finally:
        holder.kill()
        holder.communicate()


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        assert "database is locked" in refused(tmp_path)
    finally:
        assert srv.stop() == 0


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_directory_is_refused(tmpfs: Path) -> None:
    done = _mount("-o", "remount,ro", str(tmpfs))
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    line = refused(tmpfs / "twoway")
    assert line.startswith("twoway: history store ")
    assert "Read-only file system" in line or "readonly" in line or "unable to open" in line


def test_a_full_disk_is_refused_at_start_up(tmpfs: Path) -> None:
    with (tmpfs / "filler").open("wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    line = refused(tmpfs)
    assert "full" in line or "No space" in line, line


def test_a_full_disk_at_run_time_is_one_error_and_chat_goes_on(tmpfs: Path) -> None:
    srv = start(tmpfs)
    srv.check_log = False
    try:
        with client(srv, "a") as a, client(srv, "b") as b:
            big = "x" * 30_000
            for i in range(60):  # 1.8 MB: more than the disk holds
                a.send(f"{i} {big}")
                b.expect(f"{i} x")
            srv.wait_log(r"ERROR .*history store .*full.*chat goes on in memory")
            a.send("still here")
            assert b.expect("still here").endswith("still here")
            b.send("/history 2")
            assert b.expect("[history]").endswith(big)
        assert srv.count(r"ERROR") == 1
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.stderr


def test_sigterm_writes_what_is_queued(tmp_path: Path) -> None:
    srv = start(tmp_path)
    with client(srv, "a") as a, client(srv, "b") as b:
        for i in range(500):
            a.send(f"q {i}")
        b.expect("q 499")
        srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    srv = start(tmp_path)
    try:
        with client(srv, "c") as c:
            assert seq(c)[0] == 500
    finally:
        assert srv.stop() == 0
