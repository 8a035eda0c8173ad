"""SIGHUP rereads the config file: the live keys (limits, MOTD, flood settings, per-connection
options, allow/deny) apply to what comes next, a restart-only key is one line and keeps its
value, a broken file changes nothing; nobody is dropped. ``check-config`` says which is
which."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from helpers import UNIT, CliServer, recv_line, run_cli
from helpers import start_server as start


def greeting(port: int) -> tuple[socket.socket, list[bytes]]:
    """A chat client, and the greeting up to ``type /help``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
    lines = []
    while not (line := recv_line(sock)).startswith(b"*** type /help"):
        lines.append(line)
    return sock, lines


def test_chat_reload_applies_live_keys_and_keeps_the_rest(
    tmp_path: Path, servers: list[CliServer], loop: str
) -> None:
    (tmp_path / "motd-a").write_text("first motd\n")
    (tmp_path / "motd-b").write_text("second motd\n")
    config = tmp_path / "chat.toml"
    config.write_text(f'motd = "{tmp_path / "motd-a"}"\nmax-conns-per-ip = 5\ngrace = 5\n')
    server = start(servers, "chat", "--config", str(config), loop=loop)
    old, lines = greeting(server.port)
    with old:
        assert b"*** first motd\n" in lines
        config.write_text(f'motd = "{tmp_path / "motd-b"}"\nmax-conns-per-ip = 2\ngrace = 1\n')
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: applied max-conns-per-ip = 2, motd = .*motd-b")
        server.wait_for(
            rf"reload: grace changed in config file {config} \(5.0 -> 1.0\): needs a "
            r"restart; 5.0 stays"
        )
        new, lines = greeting(server.port)
        with new:
            assert b"*** second motd\n" in lines and b"*** first motd\n" not in lines
            # max-conns-per-ip 2: the third from 127.0.0.1 is refused, the others stay.
            with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as third:
                assert recv_line(third).startswith(b"error: too many connections from 127.0.0.1")
            old.sendall(b"still here\n")
            assert b"still here" in recv_line(new)
        # A file that no longer loads: one line, nothing changes.
        config.write_text("max-conns-per-ip = 'many'\n")
        server.signal(signal.SIGHUP)
        server.wait_for(r"ERROR +reload: .*max-conns-per-ip.*; the settings in use stay")
        again, lines = greeting(server.port)
        again.close()
        assert b"*** second motd\n" in lines
        # An unreadable MOTD: refused as a whole, the limits do not move either.
        config.write_text(f'motd = "{tmp_path / "gone"}"\nmax-conns-per-ip = 9\n')
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: motd: .*gone: no such file or directory; the settings in use")
    assert server.count("Traceback") == 0


def test_per_connection_options_apply_to_new_connections_only(
    tmp_path: Path, servers: list[CliServer]
) -> None:
    config = tmp_path / "upper.toml"
    config.write_text("max-line = 1000\n")
    server = start(servers, "upper", "--config", str(config))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as old:
        config.write_text("max-line = 10\n")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: applied max-line = 10")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as new:
            new.sendall(b"x" * 20 + b"\n")
            assert b"10" in recv_line(new)  # the line-too-long answer names the limit
        old.sendall(b"y" * 20 + b"\n")
        assert recv_line(old) == b'You said "' + b"Y" * 20 + b'"\n'


def test_unchanged_config_and_no_config(tmp_path: Path, servers: list[CliServer]) -> None:
    config = tmp_path / "echo.toml"
    config.write_text("max-conns = 50\n")
    server = start(servers, "echo", "--config", str(config))
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload: config unchanged")
    plain = start(servers, "echo")
    plain.signal(signal.SIGHUP)
    plain.wait_for(r"reload: nothing to reload")
    assert plain.count("config unchanged") == 0


def test_check_config_says_what_is_live(tmp_path: Path) -> None:
    config = tmp_path / "chat.toml"
    config.write_text("max-conns = 100\n")
    done = run_cli("check-config", str(config), "--service", "chat")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    live = next(line for line in lines if line.startswith("# live on SIGHUP"))
    restart = next(line for line in lines if line.startswith("# need a restart"))
    for key in ("max-conns", "motd", "flood-rate", "flood-burst", "allow", "tls-cert"):
        assert f" {key}," in live or live.endswith(f" {key}")
    for key in ("host", "port", "workers", "bus", "history"):
        assert f" {key}," in restart or restart.endswith(f" {key}")
    # Only the keys this service takes: dump's keys are not listed for chat.
    assert "fsync" not in live + restart


def test_deny_list_from_the_config_file_applies_on_reload(
    tmp_path: Path, servers: list[CliServer]
) -> None:
    config = tmp_path / "upper.toml"
    config.write_text('deny = ["10.0.0.0/8"]\n')
    server = start(servers, "upper", "--config", str(config))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as old:
        # Admitted for sure before the reload (a connect completes before the accept).
        old.sendall(b"hello\n")
        assert recv_line(old) == b'You said "HELLO"\n'
        config.write_text('deny = ["127.0.0.0/8"]\n')
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: access rules: deny 1 network")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as new:
            assert recv_line(new) == b"error: access denied\n"
        old.sendall(b"admitted before\n")  # already in: stays
        assert recv_line(old) == b'You said "ADMITTED BEFORE"\n'
