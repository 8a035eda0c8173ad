"""The ``twoway`` command: ``serve``, ``connect``, ``check-config``, ``status``, ``--version``.

Every expected failure (bad flag, bad config, unknown service, port in use, ...) becomes one
line on stderr, ``twoway: ...``, and a non-zero exit code: 2 for usage and configuration
errors, 1 for runtime failures. Tracebacks are for bugs only.

The habits of nc, socat and uvicorn users work: ``twoway serve echo 4002`` (a port after the
service), ``-p``, ``-4``/``-6``, ``[::1]`` and ``HOST:PORT`` in ``--host`` and in
``connect``, ``TWOWAY_*`` for ``serve`` and ``TWOWAY_CONNECT_*`` for ``connect``, shell
completion of services and choices (``_TWOWAY_COMPLETE=bash_source twoway``).

The commands live in their own modules and are registered here: ``serve`` and
``check-config`` in :mod:`twoway.cliserve` (their options from :mod:`twoway.clioptions`),
``connect`` in :mod:`twoway.cliconnect`, ``hash-password`` and ``status`` in
:mod:`twoway.clitools`; how a failure ends is :mod:`twoway.cliexit`. :func:`main` turns
click's own errors into the same one line.
"""

from __future__ import annotations

import sys

import click

from twoway._version import __version__
from twoway.cliconnect import connect
from twoway.cliexit import EXIT_USAGE, fail
from twoway.cliserve import check_config, serve
from twoway.clitools import hash_password_cmd, status

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    __version__, "--version", "-V", prog_name="twoway", message="%(prog)s %(version)s"
)
def cli() -> None:
    """twoway: persistent, bi-directional TCP services."""


cli.add_command(serve)
cli.add_command(check_config)
cli.add_command(hash_password_cmd)
cli.add_command(connect)
cli.add_command(status)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``twoway`` console script."""
    try:
        cli.main(args=argv, prog_name="twoway", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "twoway"
        fail(f"{_lower_first(exc.format_message())} (see {cmd} --help)", EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        fail(exc.format_message(), EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text
