"""Where ``twoway serve`` listens: ``--host ::`` is dual stack (unless ``-6``), ``--host``
repeated, ``--unix PATH`` (mode, stale file, removal at exit, a live server's socket left
alone) with ``nc -U`` and ``socat UNIX-CONNECT``, and ``twoway connect --unix``."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import TWOWAY, UNIT, CliServer, cli_env, recv_line, run_cli, serve_args
from helpers import start_server as start


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="needs IPv6 on loopback")


def ask(host: str, port: int, line: bytes = b"hi") -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(5 * UNIT)
        s.connect((host, port))
        s.sendall(line + b"\n")
        return recv_line(s)


def ask_unix(path: Path, line: bytes = b"hi") -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5 * UNIT)
        s.connect(str(path))
        s.sendall(line + b"\n")
        return recv_line(s)


def unix_server(
    servers: list[CliServer], path: Path, *args: str, loop: str = "asyncio"
) -> CliServer:
    server = CliServer(serve_args("upper", "--unix", str(path), *args, port=None, loop=loop))
    servers.append(server)
    server.wait_for(r"listening on unix:" + str(path))
    return server


# ---------------------------------------------------------------------------- TCP


@needs_ipv6
def test_host_any_v6_is_dual_stack(servers: list[CliServer], loop: str) -> None:
    server = start(servers, "upper", "--host", "::", loop=loop)
    assert server.host == "::"
    assert ask("127.0.0.1", server.port) == b'You said "HI"\n'
    assert ask("::1", server.port) == b'You said "HI"\n'
    # The client is logged as the IPv4 address it is, not ::ffff:127.0.0.1.
    server.wait_for(r"connection from 127\.0\.0\.1:\d+")


@needs_ipv6
def test_minus_6_keeps_host_any_v6_only(servers: list[CliServer]) -> None:
    server = start(servers, "upper", "-6", "--host", "::")
    assert ask("::1", server.port) == b'You said "HI"\n'
    with pytest.raises(ConnectionRefusedError):
        ask("127.0.0.1", server.port)
    server = start(servers, "upper", "--host", "::", "--ipv6-only")
    with pytest.raises(ConnectionRefusedError):
        ask("127.0.0.1", server.port)


@needs_ipv6
def test_host_repeated_listens_on_each_on_one_port(servers: list[CliServer]) -> None:
    server = start(servers, "upper", "--host", "127.0.0.1", "--host", "[::1]")
    ready = server.wait_for(r"listening on \[::1\]:(\d+)")
    assert int(ready.group(1)) == server.port
    assert ask("127.0.0.1", server.port) == b'You said "HI"\n'
    assert ask("::1", server.port) == b'You said "HI"\n'
    # The environment and the file take HOST,HOST.
    server = start(servers, "upper", env={"TWOWAY_HOST": "127.0.0.1,::1"})
    server.wait_for(r"listening on \[::1\]:" + str(server.port))
    assert ask("::1", server.port) == b'You said "HI"\n'


def test_hosts_naming_two_ports_is_one_line() -> None:
    done = run_cli("serve", "upper", "--host", "127.0.0.1:4100", "--host", "127.0.0.2:4101")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("names different ports"), done.stderr


# ---------------------------------------------------------------------------- Unix


def test_unix_socket_with_nc_socat_and_connect(
    tmp_path: Path, servers: list[CliServer], loop: str
) -> None:
    path = tmp_path / "upper.sock"
    server = unix_server(servers, path, "--unix-mode", "660", loop=loop)
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o660
    if shutil.which("nc"):
        done = subprocess.run(["nc", "-U", "-q", "1", str(path)], input=b"from nc\n",
                              capture_output=True, timeout=10 * UNIT, check=False)  # fmt: skip
        assert done.stdout == b'You said "FROM NC"\n'
    if shutil.which("socat"):
        done = subprocess.run(["socat", "-", f"UNIX-CONNECT:{path}"], input=b"from socat\n",
                              capture_output=True, timeout=10 * UNIT, check=False)  # fmt: skip
        assert done.stdout == b'You said "FROM SOCAT"\n'
    done = subprocess.run([*TWOWAY, "connect", "--unix", str(path)], input=b"from twoway\n",
                          capture_output=True, timeout=10 * UNIT, env=cli_env(),
                          check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout == b'You said "FROM TWOWAY"\n', done.stderr
    server.wait_for(r"connection from unix")
    assert server.stop() == 0
    assert not path.exists()  # removed at exit
    assert server.error_lines() == []


def test_stale_socket_is_replaced_a_live_one_is_not(
    tmp_path: Path, servers: list[CliServer]
) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed server leaves
    first = unix_server(servers, path)
    assert ask_unix(path) == b'You said "HI"\n'
    done = run_cli("serve", "upper", "--unix", str(path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"twoway: cannot listen on {path}: another server is listening there"
    assert path.exists() and ask_unix(path) == b'You said "HI"\n'  # the first one unharmed
    assert first.running


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("keep me\n")
    done = run_cli("serve", "upper", "--unix", str(path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"twoway: cannot listen on {path}: the file exists and is not a socket"
    )
    assert path.read_text() == "keep me\n"


def test_bad_unix_mode_is_one_line() -> None:
    done = run_cli("serve", "upper", "--unix", "/tmp/x.sock", "--unix-mode", "999")
    assert done.returncode == 2 and "not octal permission bits" in done.stderr


def test_unix_and_tcp_together_when_a_port_is_given(
    tmp_path: Path, servers: list[CliServer]
) -> None:
    path = tmp_path / "both.sock"
    server = start(servers, "upper", "--unix", str(path))  # --port 0 from serve_args
    server.wait_for(r"listening on unix:")
    assert ask("127.0.0.1", server.port) == b'You said "HI"\n'
    assert ask_unix(path) == b'You said "HI"\n'


def test_unix_with_workers_shares_one_socket(tmp_path: Path, servers: list[CliServer]) -> None:
    path = tmp_path / "w.sock"
    server = CliServer(serve_args("upper", "--unix", str(path), "--workers", "2", port=None))
    servers.append(server)
    server.wait_for(r"listening on unix:.* \(worker", count=2)
    for _ in range(4):
        assert ask_unix(path) == b'You said "HI"\n'
    assert server.stop() == 0
    assert not path.exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_over_a_unix_socket(tmp_path: Path, servers: list[CliServer]) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost", "-days", "2", "-keyout", "k.pem",
                    "-out", "c.pem"], cwd=tmp_path, capture_output=True, check=True)  # fmt: skip
    path = tmp_path / "tls.sock"
    unix_server(servers, path, "--tls-cert", str(tmp_path / "c.pem"),
                "--tls-key", str(tmp_path / "k.pem"))  # fmt: skip
    done = subprocess.run([*TWOWAY, "connect", "--unix", str(path), "--tls-ca",
                           str(tmp_path / "c.pem")], input=b"secret\n", capture_output=True,
                          timeout=10 * UNIT, env=cli_env(), check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout == b'You said "SECRET"\n', done.stderr
