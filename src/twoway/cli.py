"""The ``twoway`` command: ``serve``, ``connect``, ``check-config``, ``--version``.

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
from twoway.config import OPTIONS, OptionSpec, Settings, load_settings
from twoway.errors import ConfigError, ServiceError, TwowayError
from twoway.services import SERVICES, check_settings, service_options

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
    if spec.default is not None and spec.kind not in ("bool", "list"):
        helptext += f" (default {spec.default})"
    if spec.per_service:
        takers = [name for name, service in SERVICES.items() if spec.key in service.options]
        helptext += f" ({', '.join(takers)})"
    helptext += f"; env {spec.env}"
    if spec.kind == "bool":
        return click.option(spec.flag or f"--{spec.key}", spec.attr, default=None, help=helptext)
    if spec.kind == "list":  # repeatable: each use adds to the list
        return click.option(
            f"--{spec.key}", spec.attr, multiple=True, metavar=spec.metavar, help=helptext
        )
    return click.option(
        f"--{spec.key}",
        spec.attr,
        default=None,
        metavar=spec.metavar or spec.kind.upper(),
        help=helptext,
    )


def _load(**kwargs: Any) -> Settings:
    """Settings for a built-in service: the services say which options each takes and how
    the values go together."""
    return load_settings(services=service_options(), validate=check_settings, **kwargs)


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
@click.argument("target", required=False, metavar="[PATH]")
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="TOML config file (keys are the long option names); env TWOWAY_CONFIG",
)
@_with_options
def serve(service: str | None, target: str | None, config_file: str | None, **flags: Any) -> None:
    """Run a built-in SERVICE: chat, echo, upper, stamp, peers, dump or file.

    `twoway serve file PATH` sends PATH to every client; `twoway serve dump --dir DIR`
    stores what every client sends.

    Settings come from flags, then TWOWAY_* environment variables, then the config file,
    then defaults. The server logs `listening on HOST:PORT` on stderr when it is ready and
    shuts down gracefully on SIGINT/SIGTERM.
    """
    import os

    from twoway.runner import serve_settings
    from twoway.services import build_service, connection_options

    config_file = config_file or os.environ.get("TWOWAY_CONFIG") or None
    # A repeatable flag not given arrives as (): "not given", like None for the others.
    raw = {spec.key: flags[spec.attr] or None if spec.kind == "list" else flags[spec.attr]
           for spec in OPTIONS}  # fmt: skip
    if target is not None:
        if raw.get("path") is not None:
            _fail("give the file once: either PATH or --path", EXIT_USAGE)
        raw["path"] = target
    try:
        settings = _load(service=service, flags=raw, config_file=config_file)
        svc = build_service(settings)
        options = connection_options(settings)
    except (ConfigError, ServiceError) as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    try:
        code = serve_settings(settings, svc, options)
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
        settings = _load(config_file=file)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    click.echo(f"# {file}: ok")
    for line in settings.describe(SERVICES[settings.service].options):
        click.echo(line)


@cli.command("connect", context_settings={"show_default": True})
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option(
    "--send", metavar="TEXT", help="Send TEXT periodically; {random} {seq} {time} {name}."
)
@click.option(
    "--every",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    metavar="SECONDS",
    help="Period of --send.",
)
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N sends.")
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=1.0,
    metavar="SECONDS",
    help="After the last send, Ctrl-D or /quit: wait this long for a reply, then for the close.",
)
@click.option("--reconnect", is_flag=True, help="Reconnect with exponential backoff.")
@click.option(
    "--buffer",
    type=click.IntRange(min=0),
    default=100,
    metavar="N",
    help="Lines kept while disconnected (the oldest are dropped beyond).",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    metavar="SECONDS",
    help="First reconnect delay; doubles per failed attempt.",
)
@click.option(
    "--retry-max",
    type=click.FloatRange(min=0),
    default=30.0,
    metavar="SECONDS",
    help="Longest reconnect delay.",
)
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    metavar="N",
    help="Open N connections; output lines start with [1], [2], ...",
)
@click.option("--names", metavar="A,B,...", help="One connection per name; lines start with [A].")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Drop a connection that received nothing for SECONDS (reconnect with --reconnect).",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    metavar="SECONDS",
    help="Give up on a connection attempt after SECONDS.",
)
@click.option(
    "--keepalive",
    type=click.IntRange(min=1),
    is_flag=False,
    flag_value=15,
    default=None,
    metavar="[SECONDS]",
    help="TCP keep-alive: probe after SECONDS of silence (15 if no value).",
)
@click.option("-o", "--output", metavar="FILE", help="Write what arrives to FILE, not stdout.")
@click.option("--crlf", is_flag=True, help="End the lines typed or sent with CRLF.")
@click.option("-v", "--verbose", is_flag=True, help="Log lookup, connect, end, close (bytes).")
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    help="Event loop.",
)
def connect(
    host: str,
    port: int,
    connections: int | None,
    names: str | None,
    keepalive: int | None,
    **kwargs: Any,
) -> None:
    """Connect to HOST PORT: a chat client on a terminal, nc -N in a pipe.

    \b
    Interactive (stdin and stdout are a terminal): received lines print above the
      input line; Ctrl-D or /quit leaves.
    Pipe (stdin is not a terminal): stdin to the server, the server to stdout, raw;
      half-close when stdin ends; exit 0 when the server closes.
    --send TEXT: send TEXT every --every seconds ({random} {seq} {time} {name}).
    --reconnect: reconnect with backoff; lines wait in a --buffer meanwhile.

    Exit 0 when the server closes; 1 when a connection fails (one line on stderr).
    """
    from twoway.client import ClientOptions, run_client
    from twoway.client.options import link_names
    from twoway.net.options import Keepalive

    try:
        opts = ClientOptions(
            host=host,
            port=port,
            names=link_names(connections, names),
            keepalive=(
                None
                if keepalive is None
                else Keepalive(idle=keepalive, interval=max(1, keepalive // 3), count=3)
            ),
            **kwargs,
        )
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    sys.exit(run_client(opts))


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
