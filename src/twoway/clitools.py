"""The small commands of ``twoway``: ``hash-password`` and ``status``.

``hash-password`` prints the scrypt hash of a password read without echo (or from a pipe)
for the ``[operators]`` table of a config file; ``status`` shows the key figures of a server
started with ``--metrics``, once or refreshed with ``--watch``. Each is a thin shell over
:mod:`twoway.sansio.moderation` and :mod:`twoway.metrics.status`; failures end through
:mod:`twoway.cliexit`.
"""

from __future__ import annotations

import os
import sys

import click

from twoway.cliexit import EXIT_FAILURE, EXIT_USAGE, fail
from twoway.config import ENV_PREFIX
from twoway.errors import TwowayError

__all__ = ["hash_password_cmd", "status"]


@click.command("hash-password")
def hash_password_cmd() -> None:
    """Print a password hash for the [operators] table of a config file (or --password).

    The password is read from the terminal without echo (twice), or from the first line of
    stdin when it is piped. It is never printed, only its scrypt hash.
    """
    import getpass

    from twoway.sansio.moderation import hash_password

    if sys.stdin.isatty():
        try:
            password = getpass.getpass("password: ")
            again = getpass.getpass("again: ")
        except (EOFError, KeyboardInterrupt):
            fail("no password given", EXIT_USAGE)
            return
        if password != again:
            fail("the passwords differ", EXIT_USAGE)
            return
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("empty password", EXIT_USAGE)
        return
    click.echo(hash_password(password, os.urandom(16)))


@click.command()
@click.argument("where", metavar="[HOST:]PORT")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--token",
    envvar=ENV_PREFIX + "METRICS_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="The endpoint's bearer token (--metrics-token of the server).",
)
def status(where: str, watch: bool, interval: float, token: str | None) -> None:
    """Show the key figures of a server started with --metrics [HOST:]PORT.

    \b
    twoway status 9100                 the endpoint on 127.0.0.1:9100
    twoway status host:9100 --watch    refresh every 2 s until Ctrl-C
    """
    import time

    from twoway.config import metrics_address

    try:
        host, port = metrics_address(where)
    except ValueError as exc:
        fail(f"status: {where!r}: {exc}", EXIT_USAGE)
        return
    from twoway.metrics.status import summary

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        while True:
            lines = summary(target, token, time.time())
            if watch:
                click.clear()
            click.echo("\n".join(lines))
            if not watch:
                return
            time.sleep(interval)
    except TwowayError as exc:
        fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        sys.exit(0)
