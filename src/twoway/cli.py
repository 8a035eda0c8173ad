"""The ``twoway`` command: ``serve``, ``check-config``, ``--version``.

Every expected failure (bad flag, bad config, unknown service, port in use, ...) becomes one
line on stderr, ``twoway: ...``, and a non-zero exit code: 2 for usage and configuration
errors, 1 for runtime failures. Tracebacks are for bugs only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from twoway._version import __version__
from twoway.config import OPTIONS, OptionSpec, load_settings
from twoway.errors import ConfigError, ServiceError, TwowayError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _fail(message: str, code: int) -> None:
    click.echo(f"twoway: {message}", err=True)
    sys.exit(code)


def _option(spec: OptionSpec) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    helptext = spec.help
    if spec.choices:
        helptext += f" [{'|'.join(spec.choices)}]"
    if spec.default is not None and spec.kind != "bool":
        helptext += f" (default {spec.default})"
    if spec.services is not None:
        helptext += f" ({', '.join(spec.services)})"
    helptext += f"; env {spec.env}"
    if spec.kind == "bool":
        return click.option(spec.flag or f"--{spec.key}", spec.attr, default=None, help=helptext)
    return click.option(
        f"--{spec.key}",
        spec.attr,
        default=None,
        metavar=spec.metavar or spec.kind.upper(),
        help=helptext,
    )


def _with_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for spec in reversed(OPTIONS):
        func = _option(spec)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    __version__, "--version", "-V", prog_name="twoway", message="%(prog)s %(version)s"
)
def cli() -> None:
    """twoway: persistent, bi-directional TCP services."""


@cli.command(context_settings={"show_default": False})
@click.argument("service", required=False, metavar="[SERVICE]")
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="TOML config file (keys are the long option names); env TWOWAY_CONFIG",
)
@_with_options
def serve(service: str | None, config_file: str | None, **flags: Any) -> None:
    """Run a built-in SERVICE: chat, echo, upper, stamp or peers.

    Settings come from flags, then TWOWAY_* environment variables, then the config file,
    then defaults. The server logs `listening on HOST:PORT` on stderr when it is ready and
    shuts down gracefully on SIGINT/SIGTERM.
    """
    import os

    from twoway.runner import serve_settings
    from twoway.services import SERVICES, build_service

    config_file = config_file or os.environ.get("TWOWAY_CONFIG") or None
    raw = {spec.key: flags[spec.attr] for spec in OPTIONS}
    try:
        settings = load_settings(service=service, flags=raw, config_file=config_file)
        svc = build_service(settings)
        spec = SERVICES[settings.service]
        overrides = spec.options(settings) if spec.options is not None else {}
    except (ConfigError, ServiceError) as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    try:
        code = serve_settings(settings, svc, **overrides)
    except TwowayError as exc:
        _fail(str(exc), EXIT_FAILURE)
        return
    except KeyboardInterrupt:  # a signal before the handlers were installed
        code = 130
    sys.exit(code)


@cli.command("check-config")
@click.argument("file", metavar="FILE")
def check_config(file: str) -> None:
    """Validate a config FILE and print the effective settings (with environment)."""
    try:
        settings = load_settings(config_file=file)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    click.echo(f"# {file}: ok")
    for line in settings.describe():
        click.echo(line)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``twoway`` console script."""
    try:
        cli.main(args=argv, prog_name="twoway", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "twoway"
        _fail(f"{_lower_first(exc.format_message())} (see {cmd} --help)", EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        _fail(exc.format_message(), EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text
