"""Moderation spans every server on one Redis: a ban made on one applies on the others (and,
with a durable store, after a restart); a mute and a kick too."""

from __future__ import annotations

import importlib.util
import os
import socket
import time
from pathlib import Path

import pytest

from twoway.sansio.moderation import hash_password

from .buskit import UNIT, Cluster

PASSWORD = "0per-secret"


def _config(tmp_path: Path) -> str:
    path = tmp_path / "chat.toml"
    phc = hash_password(PASSWORD, os.urandom(16), ln=4)
    path.write_text(f'[operators]\nadmin = "{phc}"\n')
    return str(path)


def _visit(port: int, source: str, timeout: float = 5 * UNIT) -> bytes:
    """Connect from ``source``, read until the server closes or goes quiet; what it said."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        data = b""
        try:
            while b"type /help" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        return data


def _refused_within(port: int, source: str, seconds: float) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        data = _visit(port, source)
        if b"banned" in data or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def test_a_cidr_ban_on_one_server_refuses_an_address_on_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    a = cluster.server("--config", config)
    b = cluster.server("--config", config)
    op = cluster.client(a, "op1")
    op.ask(f"/oper admin {PASSWORD}", "operator")
    victim = cluster.client(b, "victim")  # connected from 127.0.0.1: not covered
    victim.knows("op1")
    # Before the ban 127.0.0.2 is welcome on B.
    assert b"type /help" in _visit(b.port, "127.0.0.2")
    op.ask("/ban 127.0.0.2/31 10m spam wave", "banned 127.0.0.2/31")
    data = _refused_within(b.port, "127.0.0.2", 5 * UNIT)
    assert b"error: you are banned by op1 (operator admin)" in data, data
    assert b": spam wave" in data
    # Everybody else still gets in, on both servers.
    assert b"type /help" in _visit(b.port, "127.0.0.1")
    # A kick and a mute of a client of the other server reach it through Redis.
    op.ask("/mute victim", "muted victim")
    victim.expect("you were muted by op1")
    victim.send("can you hear me")
    assert victim.expect("error:") == "error: you are muted"
    op.send("/kick victim bye")
    victim.expect("error: you were kicked by op1 (operator admin): bye")
    # Lifted on one, lifted everywhere.
    op.ask("/unban 127.0.0.2/31", "unbanned")
    deadline = time.monotonic() + 5 * UNIT
    while b"type /help" not in _visit(b.port, "127.0.0.2"):
        assert time.monotonic() < deadline, "the unban never reached server B"
        time.sleep(0.05)


@pytest.mark.skipif(
    importlib.util.find_spec("twoway.store.sqlite") is None,
    reason="needs the SQLite store (twoway.store.sqlite, --data-dir): not merged yet",
)
def test_a_ban_survives_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    config = _config(tmp_path)
    data = tmp_path / "data"
    a = cluster.server("--config", config, "--data-dir", str(data))
    op = cluster.client(a, "op2")
    op.ask(f"/oper admin {PASSWORD}", "operator")
    op.ask("/ban 127.0.0.2/31 spam", "banned 127.0.0.2/31")
    op.close()
    assert a.stop() == 0
    again = cluster.server("--config", config, "--data-dir", str(data))
    assert b"error: you are banned" in _visit(again.port, "127.0.0.2")
