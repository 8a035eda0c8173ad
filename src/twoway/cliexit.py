"""How a ``twoway`` command ends when it cannot do what was asked: one line, an exit code.

Every expected failure (bad flag, bad config, unknown service, port in use, ...) becomes one
line on stderr, ``twoway: ...``, and a non-zero exit code: :data:`EXIT_USAGE` (2) for usage
and configuration errors, :data:`EXIT_FAILURE` (1) for runtime failures. Every command module
and :func:`twoway.cli.main` end through :func:`fail`; tracebacks are for bugs only.
"""

from __future__ import annotations

import sys

import click

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "fail"]

#: Usage and configuration errors: a bad flag, value, config file or service.
EXIT_USAGE = 2
#: Runtime failures: the port is in use, the server cannot be reached, ...
EXIT_FAILURE = 1


def fail(message: str, code: int) -> None:
    """Print ``twoway: message`` on stderr and exit with ``code`` (raises ``SystemExit``)."""
    click.echo(f"twoway: {message}", err=True)
    sys.exit(code)
