"""Redis refusing the bus: a wrong or missing password (NOAUTH, WRONGPASS) or an ACL user
without a command the bus needs (NOPERM) is a configuration error. At start-up: one line
naming the cause and a non-zero exit, never an endless "unreachable, retrying". Later (the
password changed under a running server): one error line, and the bus comes back once it is
fixed. Real redis-server processes, started with ``--requirepass`` and with ACL users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import CliServer, serve_args
from twoway.bus.clients import NEEDED_ACL

from .buskit import UNIT, Cluster, RedisServer

PASSWORD = "s3cret-pw"


@pytest.fixture
def locked() -> Iterator[RedisServer]:
    """A redis-server started with ``--requirepass``."""
    server = RedisServer(password=PASSWORD)
    server.start()
    yield server
    server.close()


def _url(redis: RedisServer, credentials: str = "") -> str:
    at = f"{credentials}@" if credentials else ""
    return f"redis://{at}127.0.0.1:{redis.port}/0"


def _fails_at_start(url: str, *args: str, workers: int = 1) -> str:
    """Start a chat server on ``url``: it must exit non-zero, without a traceback, a ready
    line or a restart, after one line that says why (one per worker, each started once);
    return that line."""
    srv = CliServer(serve_args("chat", "--bus", url, *args))
    try:
        code = srv.wait_exit(15 * UNIT)
    finally:
        srv.stop()
    log = srv.stderr
    assert code != 0, log
    assert "Traceback" not in log, log
    assert "listening on" not in log, log
    assert "unreachable" not in log, log
    assert "restarting" not in log, log
    errors = [line for line in srv.lines if line.startswith("twoway: ")]
    assert 1 <= len(errors) <= workers, log
    assert len({e.split(": bus: ")[1] for e in errors}) == 1, log
    assert PASSWORD not in log  # the URL's password is never printed
    return errors[0]


def _acl_user(redis: RedisServer, name: str, *rules: str) -> str:
    reply = redis.command("ACL", "SETUSER", name, "on", ">pw", "resetkeys", *rules)
    assert reply.startswith(b"+OK"), reply
    return f"{name}:pw"


def test_no_password_given_is_a_config_error(locked: RedisServer) -> None:
    line = _fails_at_start(_url(locked))
    assert "bus: redis requires a password (NOAUTH)" in line, line


def test_wrong_password_is_a_config_error(locked: RedisServer) -> None:
    line = _fails_at_start(_url(locked, ":not-the-password"))
    assert "bus: redis refused user 'default' and its password (WRONGPASS" in line, line


def test_password_given_to_a_redis_without_one_is_a_config_error(redis: RedisServer) -> None:
    line = _fails_at_start(_url(redis, ":" + PASSWORD))
    assert "bus: redis refused the credentials in the URL" in line, line


def test_every_worker_refused_ends_the_server(locked: RedisServer) -> None:
    line = _fails_at_start(_url(locked, ":wrong"), "--workers", "2", workers=2)
    assert "WRONGPASS" in line, line


@pytest.mark.parametrize(
    ("missing", "command"),
    [
        ("-xread", "xread"),  # the reader's command
        ("-xadd", "xadd"),  # run by the publication script
        ("-incrby", "incrby"),  # the node number, in the handshake
    ],
)
def test_acl_user_without_a_needed_command_is_a_config_error(
    locked: RedisServer, missing: str, command: str
) -> None:
    creds = _acl_user(locked, "chatter", "~twoway:chat:*", *NEEDED_ACL.split(), missing)
    line = _fails_at_start(_url(locked, creds))
    assert "bus: redis user 'chatter' lacks a permission the bus needs (NOPERM" in line, line
    assert command in line or "script" in line, line
    assert NEEDED_ACL in line  # what to grant


def test_acl_user_without_the_keys_is_a_config_error(locked: RedisServer) -> None:
    creds = _acl_user(locked, "elsewhere", "~other:*", *NEEDED_ACL.split())
    line = _fails_at_start(_url(locked, creds))
    assert "lacks a permission the bus needs (NOPERM" in line, line
    assert "~twoway:chat:*" in line, line


def test_the_acl_the_error_asks_for_is_enough(locked: RedisServer) -> None:
    """The permissions the error names really are enough: two servers chat with them."""
    creds = _acl_user(locked, "chatter", "~twoway:chat:*", *NEEDED_ACL.split())
    url = _url(locked, creds)
    cluster = Cluster(locked, url)
    try:
        a = cluster.server()
        b = cluster.server()
        alice = cluster.client(a, "alice")
        bob = cluster.client(b, "bob")
        alice.knows("bob")
        bob.send("hello over an ACL")
        alice.expect("bob: hello over an ACL")
    finally:
        problems = cluster.close()
    assert not problems, problems


def test_password_changed_under_a_running_server(locked: RedisServer) -> None:
    """A refusal after start-up is one error line (not "unreachable"), the server goes on,
    and the bus is back once the password is right again. Redis's own message is in house
    style (``connection closed by the server``)."""
    srv = CliServer(serve_args("chat", "--bus", _url(locked, ":" + PASSWORD)))
    try:
        srv.wait_ready()
        srv.wait_for(r"bus: redis at ")
        assert locked.command("CONFIG", "SET", "requirepass", "changed").startswith(b"+OK")
        locked.password = "changed"
        # CLIENT KILL answers with the number killed; our own connection is spared.
        assert locked.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")[:1] == b":"
        srv.wait_for(
            r"bus: redis unreachable \(connection closed by the server\)"
            r"|ERROR +bus: redis refused user 'default' and its password \(WRONGPASS"
        )
        srv.wait_for(r"ERROR +bus: redis refused user 'default' and its password \(WRONGPASS")
        assert locked.command("CONFIG", "SET", "requirepass", PASSWORD).startswith(b"+OK")
        locked.password = PASSWORD
        srv.wait_for(r"bus: redis back", 15 * UNIT)
        assert srv.running
        assert srv.count("WRONGPASS") == 1, srv.stderr  # one line per cause, not per retry
        assert "Connection closed by server" not in srv.stderr
    finally:
        code = srv.stop()
    assert code == 0, srv.stderr
    assert "Traceback" not in srv.stderr, srv.stderr
