"""A CLI with the habits of its users (issue 13): nc's positional port and ``-p``, ``-4``/``-6``,
``[::1]`` and ``HOST:PORT``, forgiving and helpful environment variables, ``check-config
--service``, one ``--keepalive`` for both commands, ``TWOWAY_CONNECT_*``, ``--max-attempts``
and shell completion."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from helpers import TWOWAY, UNIT, cli_env, connect, recv_line, recv_until_eof, run_cli, start_cli


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _connect(
    *args: str, data: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*TWOWAY, "connect", *args],
        input=data,
        capture_output=True,
        env=cli_env(env),
        timeout=20 * UNIT,
        check=False,
    )


# --------------------------------------------------------------------------- serve: where


@pytest.mark.parametrize("how", [("PORT",), ("-p", "PORT"), ("--host", "127.0.0.1:PORT")])
def test_the_port_as_nc_and_socat_users_write_it(how: tuple[str, ...]) -> None:
    port = _free_port()
    args = [a.replace("PORT", str(port)) for a in how]
    with start_cli("serve", "upper", *args) as server:
        assert server.port == port
        with connect(port) as sock:
            sock.sendall(b"hi\n")
            assert recv_line(sock) == b'You said "HI"\n'


def test_file_takes_its_path_then_a_port(tmp_path: Path) -> None:
    served = tmp_path / "4002"  # a file may be called like a port: after `file`, it is PATH
    served.write_bytes(b"contents\n")
    port = _free_port()
    with start_cli("serve", "file", str(served), str(port)) as server:
        assert server.port == port
        with connect(port) as sock:
            assert recv_until_eof(sock) == b"contents\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("echo", "4002", "extra"), "unexpected argument 'extra': twoway serve echo [PORT]"),
        (("echo", "nonsense"), "unexpected argument 'nonsense'"),
        (("echo", "4002", "--port", "4003"), "give the port once: 4002 and --port 4003 disagree"),
        (("echo", "--host", "127.0.0.1:5", "--port", "6"), "names port 5, but port = 6"),
        (("echo", "--host", "[::1"), "not HOST, HOST:PORT, [IPV6] or [IPV6]:PORT"),
        (("echo", "-4", "-6"), "use either -4 or -6, not both"),
        (("echo", "-6", "--host", "127.0.0.1"), "-6 and --host 127.0.0.1: not an IPv6 address"),
        (("echo", "-4", "--host", "::1"), "-4 and --host ::1: not an IPv4 address"),
    ],
)
def test_address_mistakes_are_one_line(args: tuple[str, ...], message: str) -> None:
    line = _one_line(run_cli("serve", *args))
    assert message in line, line


def test_a_flag_overrides_the_port_of_a_host_from_the_environment() -> None:
    env = {"TWOWAY_HOST": "127.0.0.1:1"}  # port 1 needs root: it must not be used
    with start_cli("serve", "upper", "--port", "0", env=env) as server:
        assert server.port not in (0, 1)


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("args", [("-6",), ("--host", "[::1]"), ("--host", "[::1]:0")])
def test_ipv6_as_users_write_it(args: tuple[str, ...]) -> None:
    with start_cli("serve", "upper", *args, "--port", "0") as server:
        assert re.search(rf"listening on \[::1\]:{server.port}\b", server.stderr)
        with socket.create_connection(("::1", server.port), timeout=5 * UNIT) as sock:
            sock.sendall(b"six\n")
            assert recv_line(sock) == b'You said "SIX"\n'


# --------------------------------------------------------------------------- environment


def test_a_leftover_variable_of_another_service_does_not_block_this_one() -> None:
    env = {"TWOWAY_HISTORY": "50", "TWOWAY_FSYNC": "always"}
    with start_cli("serve", "upper", "--port", "0", "-v", env=env) as server:
        pass
    assert re.search(
        r"DEBUG   environment: TWOWAY_HISTORY ignored: option 'history' does not apply to "
        r"service 'upper'",
        server.stderr,
    ), server.stderr
    with start_cli("serve", "upper", "--port", "0", env=env) as quiet:
        pass
    assert "TWOWAY_HISTORY" not in quiet.stderr  # a debug line: only with -v


def test_a_flag_that_does_not_apply_is_still_refused() -> None:
    line = _one_line(run_cli("serve", "upper", "--history", "5", "--port", "0"))
    assert line == "twoway: command line: option 'history' does not apply to service 'upper'"


def test_a_misspelt_variable_is_one_warning_with_a_suggestion() -> None:
    env = {"TWOWAY_MAXLINE": "10", "TWOWAY_CONNECT_EVERY": "1"}  # connect's: not serve's business
    with (
        start_cli("serve", "upper", "--port", "0", env=env) as server,
        connect(server.port) as sock,
    ):
        sock.sendall(b"x" * 20 + b"\n")  # the default limit applies, not 10
        assert recv_line(sock) == b'You said "' + b"X" * 20 + b'"\n'
    warnings = [line for line in server.lines if "TWOWAY_" in line]
    assert len(warnings) == 1, server.stderr
    assert warnings[0].endswith(
        "WARNING environment: unknown variable TWOWAY_MAXLINE ignored "
        "(did you mean TWOWAY_MAX_LINE?)"
    )


def test_check_config_for_a_service(tmp_path: Path) -> None:
    cfg = tmp_path / "upper.toml"
    cfg.write_text('max-line = "4KiB"\nframing = "chunk"\n')  # meant for `serve --config f upper`
    result = run_cli("check-config", str(cfg), "--service", "upper")
    assert result.returncode == 0, result.stderr
    assert 'service = "upper"  # command line' in result.stdout
    assert "max-line = 4096" in result.stdout
    assert 'framing = "chunk"' in result.stdout
    # Without --service it cannot know, and says so; for a service that does not take a key
    # of the file, it says which.
    assert "no service given" in _one_line(run_cli("check-config", str(cfg)))
    line = _one_line(run_cli("check-config", str(cfg), "--service", "echo"))
    assert line.endswith("option 'framing' does not apply to service 'echo'")


# --------------------------------------------------------------------------- connect


@pytest.mark.parametrize("form", ["HOST PORT", "HOST:PORT"])
def test_connect_host_port_forms(form: str) -> None:
    with start_cli("serve", "upper", "--port", "0") as server:
        args = form.replace("HOST", "127.0.0.1").replace("PORT", str(server.port)).split()
        result = _connect(*args, data=b"hey\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "HEY"\n'


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("form", ["[::1] PORT", "[::1]:PORT", "::1 PORT"])
def test_connect_bracketed_ipv6(form: str) -> None:
    with start_cli("serve", "upper", "--host", "::1", "--port", "0") as server:
        args = form.replace("PORT", str(server.port)).split()
        result = _connect(*args, "-v", data=b"v6\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "V6"\n'
    assert f"connected to [::1]:{server.port}".encode() in result.stderr
    assert b"[[" not in result.stderr


def test_connect_refused_names_the_address_once() -> None:
    port = _free_port()
    result = _connect(f"[127.0.0.1]:{port}")
    assert (
        result.stderr.decode()
        == f"twoway: cannot connect to 127.0.0.1:{port}: connection refused\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("127.0.0.1",), "no port: twoway connect HOST PORT (or HOST:PORT)"),
        (("127.0.0.1:5", "6"), "two ports: 127.0.0.1:5 and 6"),
        (("-6", "127.0.0.1", "5"), "-6 and 127.0.0.1: not an IPv6 address"),
        (("--max-attempts", "2", "127.0.0.1", "5"), "--max-attempts counts reconnection"),
        (("--keepalive", "often", "127.0.0.1", "5"), "not a keep-alive spec"),
    ],
)
def test_connect_usage_mistakes_are_one_line(args: tuple[str, ...], message: str) -> None:
    line = _one_line(run_cli("connect", *args))
    assert message in line, line


def test_connect_takes_serves_keepalive_spec() -> None:
    with start_cli("serve", "upper", "--port", "0") as server:
        for spec in ("0", "off", "30", "30,5,3"):
            result = _connect("127.0.0.1", str(server.port), "--keepalive", spec, data=b"k\n")
            assert result.returncode == 0, (spec, result.stderr)
            assert result.stdout == b'You said "K"\n'


def test_connect_reads_twoway_connect_variables_and_warns_about_typos() -> None:
    with start_cli("serve", "upper", "--port", "0") as server:
        env = {
            "TWOWAY_CONNECT_SEND": "ping {seq}",
            "TWOWAY_CONNECT_COUNT": "2",
            "TWOWAY_CONNECT_EVERY": "0.05",
            "TWOWAY_CONNECT_EVRY": "9",
            "TWOWAY_MAX_LINE": "10",  # serve's: not connect's business
        }
        result = _connect("127.0.0.1", str(server.port), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'You said "PING 1"\nYou said "PING 2"\n'
    assert result.stderr.decode() == (
        "twoway: warning: unknown variable TWOWAY_CONNECT_EVRY ignored "
        "(did you mean TWOWAY_CONNECT_EVERY?)\n"
    )


def test_max_attempts_gives_up_with_one_line_and_exit_1() -> None:
    port = _free_port()
    result = _connect(
        "127.0.0.1", str(port), "--reconnect", "--retry-delay", "0.01", "--max-attempts", "3"
    )
    assert result.returncode == 1
    err = result.stderr.decode().splitlines()
    assert sum("reconnecting in" in line for line in err) == 2, err
    assert err[-1] == (
        f"twoway: cannot connect to 127.0.0.1:{port}: connection refused (gave up after 3 attempts)"
    )


def test_names_and_send_say_stdin_is_not_read() -> None:
    result = run_cli("connect", "--help")
    text = " ".join(result.stdout.split())
    assert "fills {name}, and stdin is not read" in text
    assert "Stdin is not read" in text
    assert "env var: TWOWAY_CONNECT_KEEPALIVE" in text


# --------------------------------------------------------------------------- completion


def _complete(words: str) -> list[str]:
    parts = words.split(" ")
    env = {
        "_TWOWAY_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
    }
    result = run_cli(env=env)
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if "," in line]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("twoway serve ", ["chat", "echo", "upper", "stamp", "peers", "dump", "file"]),
        ("twoway serve ch", ["chat"]),
        ("twoway serve upper --log-level w", ["warning"]),
        ("twoway serve dump --fsync ", ["never", "interval", "close", "always"]),
        ("twoway serve upper --loop uv", ["uvloop"]),
        ("twoway serve upper --log-format ", ["text", "json"]),
        ("twoway check-config f.toml --service e", ["echo"]),
        ("twoway connect --loop a", ["auto", "asyncio"]),
    ],
)
def test_shell_completion(words: str, expected: list[str]) -> None:
    assert _complete(words) == expected
