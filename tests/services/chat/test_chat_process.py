"""The chat server as a process: options from flags, environment and a TOML file; SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .chatkit import TIMEOUT, UNIT, ChatServer, Harness


def _burst(chat: Harness, srv: ChatServer, n: int = 9) -> tuple[int, int, list[str]]:
    """One client sends ``n`` lines at once: (lines delivered, lines refused, its welcome).

    With ``--paste-lines 1`` each line is a message: ``burst`` pass, the next ``burst`` are
    slowed (delivered, reading paused: ergo's fakelag), the rest of the read is refused.

    The burst ends with an over-long line: the error it gets (never rate limited) tells the
    sender that the server handled every line before it; the other client's ``/peers``
    barrier then shows everything delivered.
    """
    talker = chat.client(srv, name="talker", welcome=False)
    welcome = talker.lines_until("*** type /help")
    other = chat.client(srv, name="other")
    talker.expect("*** guest2 joined")
    burst = b"".join(b"burst %d\n" % i for i in range(n)) + b"M" * 70_000
    talker.send(burst)
    answers = talker.lines_until("error: line too long")
    refused = sum(line.startswith("error: slow down") for line in answers)
    delivered = [line for line in other.sync() if line.startswith("guest1: ")]
    assert delivered == [f"guest1: burst {i}" for i in range(len(delivered))]
    return len(delivered), refused, welcome


def _history_on_join(chat: Harness, srv: ChatServer) -> int:
    newcomer = chat.client(srv, name="newcomer", welcome=False)
    return sum(line.startswith("[history] ") for line in newcomer.lines_until("*** type /help"))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    motd = tmp_path / "motd.txt"
    motd.write_text("from the config file\n")
    path = tmp_path / "chat.toml"
    path.write_text(
        'service = "chat"\n'
        "port = 0\n"
        "history = 2\n"
        "flood-burst = 3\n"
        f'motd = "{motd}"\n'
        'max-queued = "1MiB"\n'
    )
    return path


def test_chat_options_from_a_toml_file(chat: Harness, config_file: Path) -> None:
    # --paste-lines 1: each line of the burst counts (a paste would count as one message).
    srv = chat.start("--config", str(config_file), "--paste-lines", "1", service=None, port0=False)
    delivered, refused, welcome = _burst(chat, srv)
    assert "*** from the config file" in welcome
    assert (delivered, refused) == (6, 3)  # flood-burst = 3: 3 at once, 3 slowed
    assert _history_on_join(chat, srv) == 2  # history = 2


def test_environment_overrides_the_file(chat: Harness, config_file: Path) -> None:
    env = {"TWOWAY_FLOOD_RATE": "0", "TWOWAY_HISTORY": "5", "TWOWAY_CONFIG": str(config_file)}
    srv = chat.start(env=env, service=None, port0=False)  # the file named by TWOWAY_CONFIG
    delivered, refused, welcome = _burst(chat, srv)
    assert "*** from the config file" in welcome
    assert (delivered, refused) == (9, 0)  # TWOWAY_FLOOD_RATE=0: no flood control
    assert _history_on_join(chat, srv) == 5


def test_flags_override_the_environment(chat: Harness, config_file: Path) -> None:
    env = {"TWOWAY_FLOOD_RATE": "0", "TWOWAY_FLOOD_BURST": "4", "TWOWAY_HISTORY": "5"}
    srv = chat.start(
        "--config",
        str(config_file),
        "--flood-rate",
        "5",
        "--history",
        "0",
        "--paste-lines",
        "1",
        env=env,
        port0=False,
    )
    delivered, refused, _ = _burst(chat, srv)
    assert (delivered, refused) == (8, 1)  # flag rate 5 with the environment's burst 4
    assert _history_on_join(chat, srv) == 0


def test_check_config_names_the_source_of_each_chat_option(config_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "twoway", "check-config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env={"TWOWAY_FLOOD_RATE": "2.5", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"flood-burst = 3  # config file {config_file}" in lines
    assert "flood-rate = 2.5  # environment" in lines
    assert f"max-queued = 1048576  # config file {config_file}" in lines
    assert "slow-grace = 10  # default" in lines


_PYTHON_MESSAGE = (
    "config._convert re-raises ValueError(str(exc) or hint): for int and float kinds "
    "str(exc) is Python's own message (\"could not convert string to float: 'fast'\", "
    "\"invalid literal for int() with base 10: 'lots'\"), so the documented hint is lost"
)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            ["chat"],
            {"TWOWAY_FLOOD_RATE": "fast"},
            "twoway: environment: TWOWAY_FLOOD_RATE = 'fast': not a number",
        ),
        pytest.param(
            ["chat", "--history", "lots"],
            {},
            "twoway: command line: --history = 'lots': not a whole number",
        ),
        (
            ["chat"],
            {"TWOWAY_MAX_QUEUED": "lots"},
            "twoway: environment: TWOWAY_MAX_QUEUED = 'lots': "
            "not a size (use bytes, e.g. 65536 or 64KiB)",
        ),
        (
            ["chat", "--flood-burst", "0"],
            {},
            "twoway: command line: --flood-burst = '0': must be at least 1",
        ),
        (
            ["echo", "--history", "3"],
            {},
            "twoway: command line: option 'history' does not apply to service 'echo'",
        ),
    ],
    ids=["float-from-env", "int-from-flag", "size-from-env", "below-minimum", "wrong-service"],
)
def test_bad_chat_options_are_one_line_errors(
    args: list[str], env: dict[str, str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "twoway", "serve", *args, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert proc.stderr == message + "\n"


def test_sigterm_tells_every_client_and_exits_0(chat: Harness) -> None:
    srv = chat.start()
    clients = [chat.client(srv, name=f"c{i}") for i in range(3)]
    clients[0].send("/join elsewhere")
    for c in clients:
        c.sync()
    srv.proc.send_signal(signal.SIGTERM)
    for c in clients:
        # The last line is the notice, then the end of the stream (a FIN, not a reset).
        assert c.read_to_end()[-1:] == ["server shutting down"]
        assert c.end == "eof"
        c.close()  # as nc and telnet do at EOF
    started = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - started < 2 * UNIT  # nobody left to wait for
    srv.wait_log(r"SIGTERM received: shutting down")


def test_sigterm_does_not_wait_past_the_grace_for_a_client_that_never_reads(
    chat: Harness,
) -> None:
    srv = chat.start("--grace", "1")
    stuck = chat.client(srv, name="stuck", welcome=False)  # never reads, never closes
    talker = chat.client(srv, name="talker")
    talker.send("/peers")
    talker.expect("You have 1 peer")
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert talker.read_to_end()[-1:] == ["server shutting down"]
    talker.close()
    assert srv.stop() == 0
    assert time.monotonic() - started < 1 + 2 * UNIT
    assert stuck.read_to_end()[-1:] == ["server shutting down"]
