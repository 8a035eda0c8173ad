"""Configuration through the CLI: file, environment, flags, their precedence, their errors.

Every expected failure is one ``twoway: ...`` line on stderr naming the key and the value,
exit code 2, and never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import TWOWAY, UNIT, cli_env, connect, recv_line, run_cli, start_cli

NOBODY = 65534


def one_error_line(result: object, code: int = 2) -> str:
    """The single stderr line of a failed run (asserting there is exactly one)."""
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("twoway: ")
    return str(lines[0])


def write(tmp_path: Path, text: str, name: str = "twoway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- file errors


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    cfg = write(tmp_path, "prot = 4001\n")
    line = one_error_line(run_cli("serve", "upper", "--config", str(cfg)))
    assert line == f"twoway: config file {cfg}: unknown key 'prot' (did you mean 'port'?)"


@pytest.mark.parametrize(
    ("toml", "shown"),
    [
        ('max-line = "abc"', "max-line = 'abc': not a size"),
        ("port = -1", "port = -1: must be at least 0"),
        ('port = "x"', "port = 'x'"),
        ('idle-timeout = "soon"', "idle-timeout = 'soon': not a duration"),
        ('loop = "fast"', "loop = 'fast': not one of auto, asyncio, uvloop"),
        ('no-delay = "maybe"', "no-delay = 'maybe': not a boolean"),
        ("host = 5", "host = 5: not a string"),
        ("grace = inf", "grace = inf: not a duration"),
        # Found moving the parsers: a TOML array or table reached int() and a traceback.
        ("max-conns = [1]", "max-conns = [1]: not a whole number"),
        ("max-line = {a = 1}", "max-line = {'a': 1}: not a size"),
    ],
)
def test_bad_value_names_key_and_value(tmp_path: Path, toml: str, shown: str) -> None:
    cfg = write(tmp_path, toml + "\n")
    line = one_error_line(run_cli("serve", "upper", "--config", str(cfg)))
    assert line.startswith(f"twoway: config file {cfg}: {shown}"), line


def test_a_rate_must_be_a_finite_number(tmp_path: Path) -> None:
    # nan passed every range check ("nan < 0" is false) and became chat's flood rate.
    cfg = write(tmp_path, "flood-rate = nan\n")
    line = one_error_line(run_cli("serve", "chat", "--config", str(cfg)))
    assert line == f"twoway: config file {cfg}: flood-rate = nan: not a number"


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    line = one_error_line(run_cli("serve", "upper", "--config", str(missing)))
    assert line == f"twoway: config file {missing}: not found"


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    line = one_error_line(run_cli("serve", "upper", "--config", str(tmp_path)))
    assert line == f"twoway: config file {tmp_path}: is a directory"


def test_unreadable_config_file() -> None:
    # Root reads a file whatever its mode, and CI runs as root: then the CLI runs as nobody
    # (setpriv keeps root's right to reach the interpreter until the exec, and drops every
    # privilege there). The directory is open to all: only the file's own mode refuses.
    drop: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to run the CLI without root")
        drop = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        # nobody must reach the code it runs: a checkout under a private directory (a
        # `mktemp -d` clone is 0700) cannot be tested this way.
        reach = subprocess.run(
            [*drop, *TWOWAY, "--version"],
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd="/",
            timeout=20 * UNIT,
            check=False,
        )
        if reach.returncode != 0:
            pytest.skip(f"user nobody cannot run this checkout's twoway: {reach.stderr.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        cfg = write(Path(tmp), "port = 1\n")
        cfg.chmod(0)
        result = subprocess.run(
            [*drop, *TWOWAY, "serve", "upper", "--config", str(cfg)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=tmp,
            timeout=20 * UNIT,
            check=False,
        )
        line = one_error_line(result)
    assert line == f"twoway: config file {cfg}: permission denied"


def test_config_path_through_a_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "port = 1\n") / "twoway.toml"
    line = one_error_line(run_cli("serve", "upper", "--config", str(cfg)))
    assert line == f"twoway: config file {cfg}: cannot read (Not a directory)"


def test_invalid_toml(tmp_path: Path) -> None:
    cfg = write(tmp_path, "port = \n")
    line = one_error_line(run_cli("serve", "upper", "--config", str(cfg)))
    assert line.startswith(f"twoway: config file {cfg}: invalid TOML: ")


def test_option_that_does_not_apply_to_the_service(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'framing = "chunk"\n')
    line = one_error_line(run_cli("serve", "echo", "--config", str(cfg)))
    assert line == f"twoway: config file {cfg}: option 'framing' does not apply to service 'echo'"


def test_bad_environment_value_is_named() -> None:
    result = run_cli("serve", "upper", env={"TWOWAY_MAX_LINE": "lots"})
    line = one_error_line(result)
    assert line.startswith("twoway: environment: TWOWAY_MAX_LINE = 'lots': not a size")


def test_bad_flag_value_is_named() -> None:
    line = one_error_line(run_cli("serve", "upper", "--max-line", "0"))
    assert line == "twoway: command line: --max-line = '0': must be at least 1"


@pytest.mark.parametrize(
    ("flag", "value", "hint"),
    [("--port", "abc", "not a whole number"), ("--keepalive", "abc", "not a keep-alive spec")],
)
def test_unparsable_number_gets_the_hint_not_pythons_message(
    flag: str, value: str, hint: str
) -> None:
    line = one_error_line(run_cli("serve", "upper", flag, value))
    assert line.startswith(f"twoway: command line: {flag} = '{value}': {hint}"), line


def test_port_out_of_range_is_a_config_error() -> None:
    # Found by these tests: it used to reach bind() and die with an OverflowError traceback.
    line = one_error_line(run_cli("serve", "upper", "--port", "70000"))
    assert line == "twoway: command line: --port = '70000': must be at most 65535"


# --------------------------------------------------------------------------- check-config


def test_check_config_prints_the_effective_settings(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'service = "upper"\nport = 4100\nmax-line = "4KiB"\n')
    result = run_cli("check-config", str(cfg), env={"TWOWAY_IDLE_TIMEOUT": "30"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"# {cfg}: ok"
    assert f'service = "upper"  # config file {cfg}' in lines
    assert f"port = 4100  # config file {cfg}" in lines
    assert f"max-line = 4096  # config file {cfg}" in lines
    assert "idle-timeout = 30  # environment" in lines
    assert 'host = "127.0.0.1"  # default' in lines
    assert 'framing = "line"  # default' in lines


def test_check_config_rejects_a_bad_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "max-conns = -3\n")
    line = one_error_line(run_cli("check-config", str(cfg)))
    assert line == f"twoway: config file {cfg}: max-conns = -3: must be at least 0"


def test_check_config_precedence_environment_over_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'service = "upper"\nport = 1111\n')
    result = run_cli("check-config", str(cfg), env={"TWOWAY_PORT": "2222"})
    assert result.returncode == 0, result.stderr
    assert "port = 2222  # environment" in result.stdout.splitlines()


# --------------------------------------------------------------------------- precedence, live


def _limit_of(server_port: int) -> int:
    """The max-line a running upper server enforces, read from its error line."""
    with connect(server_port) as sock:
        sock.sendall(b"x" * 100 + b"\n")
        line = recv_line(sock).decode()
    assert line.startswith("error: line too long (max "), line
    return int(line.split("(max ")[1].split()[0])


def test_precedence_flags_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'service = "upper"\nmax-line = 30\n')
    env = {"TWOWAY_MAX_LINE": "20"}
    with start_cli("serve", "--config", str(cfg), "--port", "0", "--max-line", "10", env=env) as s:
        assert _limit_of(s.port) == 10  # flag
    with start_cli("serve", "--config", str(cfg), "--port", "0", env=env) as s:
        assert _limit_of(s.port) == 20  # environment
    with start_cli("serve", "--config", str(cfg), "--port", "0") as s:
        assert _limit_of(s.port) == 30  # file
    with start_cli("serve", "upper", "--port", "0") as s, connect(s.port) as sock:
        sock.sendall(b"y" * 65536 + b"\n")  # default: 64 KiB is accepted
        assert recv_line(sock) == b'You said "' + b"Y" * 65536 + b'"\n'


def test_service_and_port_from_the_file_and_the_environment(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'service = "upper"\nport = 1\n')
    # TWOWAY_PORT beats the file's port 1 (which root could bind, but nobody else).
    with (
        start_cli("serve", env={"TWOWAY_CONFIG": str(cfg), "TWOWAY_PORT": "0"}) as server,
        connect(server.port) as sock,
    ):
        assert "twoway upper listening on" in server.stderr
        sock.sendall(b"from file\n")
        assert recv_line(sock) == b'You said "FROM FILE"\n'


def test_the_service_argument_beats_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'service = "upper"\n')
    with (
        start_cli("serve", "peers", "--config", str(cfg), "--port", "0") as server,
        connect(server.port) as sock,
    ):
        sock.sendall(b"x\n")
        assert recv_line(sock) == b"You have 0 peers on this server\n"
