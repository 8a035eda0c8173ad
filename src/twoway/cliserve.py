"""``twoway serve`` and ``twoway check-config``: the commands that read the option table.

``serve`` takes ``SERVICE [PATH] [PORT]`` the way nc users type them, every option of the
table (:mod:`twoway.clioptions`), ``-4``/``-6``, ``--config`` and ``-v``; loads the
settings, builds the service and hands both to :func:`twoway.serving.serve_settings`, turning
an expected failure into one line and an exit code (:mod:`twoway.cliexit`).
``check-config`` loads a config file the same way and prints the effective settings, which
keys SIGHUP reloads and which need a restart.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from twoway.cliargs import choose_family, family_host, serve_positionals
from twoway.cliexit import EXIT_FAILURE, EXIT_USAGE, fail
from twoway.clioptions import (
    complete_serve,
    complete_service,
    help_text,
    load_service_settings,
    with_options,
)
from twoway.config import ENV_PREFIX, LIVE_KEYS, OPTIONS, Settings
from twoway.errors import ConfigError, ServiceError, TwowayError
from twoway.services import SERVICES

__all__ = ["check_config", "serve"]


def _given_once(raw: dict[str, Any], key: str, value: str | None, what: str) -> None:
    if value is None:
        return
    if raw.get(key) is not None and str(raw[key]) != value:
        raise click.UsageError(f"give the {what} once: {value} and --{key} {raw[key]} disagree")
    raw[key] = value


@click.command(context_settings={"show_default": False})
@click.argument("args", nargs=-1, metavar="[SERVICE] [PATH] [PORT]", shell_complete=complete_serve)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help=help_text("TOML config file (keys are the long option names)", ENV_PREFIX + "CONFIG"),
)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only (default host 127.0.0.1)")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only (default host ::1)")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="log one level more per -v (-v: debug; -vv: asyncio's debug lines too)",
)
@with_options
def serve(
    args: tuple[str, ...],
    config_file: str | None,
    ipv4: bool,
    ipv6: bool,
    verbose: int,
    **flags: Any,
) -> None:
    """Run a built-in SERVICE: chat, echo, upper, stamp, peers, dump or file.

    \b
    twoway serve echo 4002              a port after the service, as with nc -l
    twoway serve file PATH [PORT]       send PATH to every client
    twoway serve dump --dir DIR         store what every client sends
    twoway serve upper --host [::1]:4002

    Settings come from flags, then TWOWAY_* environment variables, then the config file,
    then defaults. The server logs `listening on HOST:PORT` and its limits on stderr when it
    is ready, and shuts down gracefully on SIGINT/SIGTERM.
    """
    from twoway.services import build_service, connection_options
    from twoway.serving import serve_settings

    family = choose_family(ipv4, ipv6)
    service, path, port = serve_positionals(args)
    config_file = config_file or os.environ.get(ENV_PREFIX + "CONFIG") or None
    # A repeatable flag not given arrives as (): "not given", like None for the others.
    raw = {spec.key: flags[spec.attr] or None if spec.kind == "list" else flags[spec.attr]
           for spec in OPTIONS}  # fmt: skip
    raw["host"] = ",".join(raw["host"]) if raw["host"] else None  # --host given N times
    _given_once(raw, "path", path, "file")
    _given_once(raw, "port", port, "port")

    def load() -> Settings:
        loaded = load_service_settings(service=service, flags=raw, config_file=config_file)
        return family_host(loaded, family) if family is not None else loaded

    try:
        settings = load()
        svc = build_service(settings)
        options = connection_options(settings)
    except (ConfigError, ServiceError) as exc:
        fail(str(exc), EXIT_USAGE)
        return
    try:
        code = serve_settings(
            settings, svc, options, verbose=verbose, reload_settings=load if config_file else None
        )
    except TwowayError as exc:
        fail(str(exc), EXIT_FAILURE)
        return
    except KeyboardInterrupt:  # a signal before the handlers were installed
        code = 130
    sys.exit(code)


@click.command("check-config")
@click.argument("file", metavar="FILE")
@click.option(
    "--service",
    metavar="SERVICE",
    shell_complete=complete_service,
    help="Check FILE for this service, as `twoway serve --config FILE SERVICE` would.",
)
def check_config(file: str, service: str | None) -> None:
    """Validate a config FILE and print the effective settings (with environment)."""
    try:
        settings = load_service_settings(config_file=file, service=service)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
        return
    click.echo(f"# {file}: ok")
    takes = SERVICES[settings.service].options
    for line in settings.describe(takes):
        click.echo(line)
    keys = [spec.key for spec in OPTIONS if not spec.per_service or spec.key in takes]
    # Comments, so the output stays a valid config file.
    live = [key for key in keys if key in LIVE_KEYS]
    click.echo("# live on SIGHUP (systemctl reload): " + ", ".join(live))
    click.echo("# need a restart: " + ", ".join(key for key in keys if key not in LIVE_KEYS))
    for level, message in settings.notices:
        if level >= 30:  # warnings: the debug ones are for serve -v
            click.echo(f"twoway: warning: {message}", err=True)
