"""The ``twoway`` command: ``serve``, ``connect``, ``check-config``, ``status``, ``--version``.

Every expected failure (bad flag, bad config, unknown service, port in use, ...) becomes one
line on stderr, ``twoway: ...``, and a non-zero exit code: 2 for usage and configuration
errors, 1 for runtime failures. Tracebacks are for bugs only.

The habits of nc, socat and uvicorn users work: ``twoway serve echo 4002`` (a port after the
service), ``-p``, ``-4``/``-6``, ``[::1]`` and ``HOST:PORT`` in ``--host`` and in
``connect``, ``TWOWAY_*`` for ``serve`` and ``TWOWAY_CONNECT_*`` for ``connect``, shell
completion of services and choices (``_TWOWAY_COMPLETE=bash_source twoway``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from twoway._version import __version__
from twoway.cliargs import (
    check_family,
    choose_family,
    connect_target,
    family_host,
    keepalive_options,
    serve_positionals,
    unknown_env,
)
from twoway.config import ENV_PREFIX, LIVE_KEYS, OPTIONS, OptionSpec, Settings, load_settings
from twoway.errors import ConfigError, ServiceError, TwowayError
from twoway.services import SERVICES, check_settings, service_options

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FAILURE = 1
#: ``connect``'s environment variables: ``TWOWAY_CONNECT_EVERY`` for ``--every``.
CONNECT_ENV = ENV_PREFIX + "CONNECT"
#: Short flags of ``serve``'s options (nc's ``-p``).
_SHORT = {"port": "-p", "hexdump": "-x"}


def _fail(message: str, code: int) -> None:
    click.echo(f"twoway: {message}", err=True)
    sys.exit(code)


class _Choices(click.Choice):  # type: ignore[type-arg]  # generic from click 8.2 on
    """A :class:`click.Choice` for shell completion and ``--help``, which leaves checking the
    value to config: a bad one reads the same from a flag, a variable or the file
    (``command line: --loop = 'fast': not one of auto, asyncio, uvloop``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value


def _help(text: str, env: str | None, default: Any = None) -> str:
    """Help in click's own style, as ``connect`` shows it: ``TEXT [env var: X; default: Y]``."""
    extra = [f"env var: {env}"] if env else []
    if default is not None:
        extra.append(f"default: {default}")
    return f"{text}  [{'; '.join(extra)}]" if extra else text


def _option(spec: OptionSpec) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    helptext = spec.help
    if spec.per_service:
        takers = [name for name, service in SERVICES.items() if spec.key in service.options]
        helptext += f" ({', '.join(takers)})"
    default = spec.default if spec.kind != "bool" and spec.default is not None else None
    helptext = _help(helptext, spec.env, default)
    if spec.kind == "bool":
        short = [_SHORT[spec.key]] if spec.key in _SHORT else []
        return click.option(
            spec.flag or f"--{spec.key}", *short, spec.attr, default=None, help=helptext
        )
    names = [f"--{spec.key}", *([_SHORT[spec.key]] if spec.key in _SHORT else [])]
    if spec.kind == "choice":
        return click.option(*names, spec.attr, type=_Choices(spec.choices), help=helptext)
    if spec.kind == "list" or spec.key == "host":  # repeatable: each use adds to the list
        return click.option(*names, spec.attr, multiple=True, metavar=spec.metavar, help=helptext)
    return click.option(
        *names, spec.attr, default=None, metavar=spec.metavar or spec.kind.upper(), help=helptext
    )


def _check(settings: Settings) -> None:
    """How the settings go together: the service's rules and the gateway's, checked before
    anything is built (building chat may already reach Redis)."""
    from twoway.wsgate import check_ws

    check_settings(settings)
    check_ws(settings)


def _load(**kwargs: Any) -> Settings:
    """Settings for a built-in service: the services say which options each takes and how
    the values go together."""
    return load_settings(
        services=service_options(),
        validate=_check,
        other_env=(CONNECT_ENV + "_",),
        **kwargs,
    )


def _with_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for spec in reversed(OPTIONS):
        func = _option(spec)(func)
    return func


def _complete_serve(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    typed = ctx.params.get("args") or ()
    if not typed:
        return [
            CompletionItem(name, help=spec.summary)
            for name, spec in SERVICES.items()
            if name.startswith(incomplete)
        ]
    if typed[0] == "file" and len(typed) == 1:
        return [CompletionItem(incomplete, type="file")]
    return []


def _complete_service(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [name for name in SERVICES if name.startswith(incomplete)]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    __version__, "--version", "-V", prog_name="twoway", message="%(prog)s %(version)s"
)
def cli() -> None:
    """twoway: persistent, bi-directional TCP services."""


def _given_once(raw: dict[str, Any], key: str, value: str | None, what: str) -> None:
    if value is None:
        return
    if raw.get(key) is not None and str(raw[key]) != value:
        raise click.UsageError(f"give the {what} once: {value} and --{key} {raw[key]} disagree")
    raw[key] = value


@cli.command(context_settings={"show_default": False})
@click.argument("args", nargs=-1, metavar="[SERVICE] [PATH] [PORT]", shell_complete=_complete_serve)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help=_help("TOML config file (keys are the long option names)", ENV_PREFIX + "CONFIG"),
)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only (default host 127.0.0.1)")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only (default host ::1)")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="log one level more per -v (-v: debug; -vv: asyncio's debug lines too)",
)
@_with_options
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
        loaded = _load(service=service, flags=raw, config_file=config_file)
        return family_host(loaded, family) if family is not None else loaded

    try:
        settings = load()
        svc = build_service(settings)
        options = connection_options(settings)
    except (ConfigError, ServiceError) as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    try:
        code = serve_settings(
            settings, svc, options, verbose=verbose, reload_settings=load if config_file else None
        )
    except TwowayError as exc:
        _fail(str(exc), EXIT_FAILURE)
        return
    except KeyboardInterrupt:  # a signal before the handlers were installed
        code = 130
    sys.exit(code)


@cli.command("check-config")
@click.argument("file", metavar="FILE")
@click.option(
    "--service",
    metavar="SERVICE",
    shell_complete=_complete_service,
    help="Check FILE for this service, as `twoway serve --config FILE SERVICE` would.",
)
def check_config(file: str, service: str | None) -> None:
    """Validate a config FILE and print the effective settings (with environment)."""
    try:
        settings = _load(config_file=file, service=service)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
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


@cli.command("hash-password")
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
            _fail("no password given", EXIT_USAGE)
            return
        if password != again:
            _fail("the passwords differ", EXIT_USAGE)
            return
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        _fail("empty password", EXIT_USAGE)
        return
    click.echo(hash_password(password, os.urandom(16)))


def _copt(*names: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A ``connect`` option: its variable (``TWOWAY_CONNECT_<NAME>``) shown in ``--help``."""
    return click.option(*names, show_envvar=True, **kwargs)


@cli.command(
    "connect",
    context_settings={"show_default": True, "auto_envvar_prefix": CONNECT_ENV},
)
@click.argument("host", required=False)
@click.argument("port", required=False)
@_copt(
    "--send",
    metavar="TEXT",
    help="Send TEXT periodically; {random} {seq} {time} {name}. Stdin is not read.",
)
@_copt(
    "--every",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    metavar="SECONDS",
    help="Period of --send.",
)
@_copt("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N sends.")
@_copt(
    "--linger",
    type=click.FloatRange(min=0),
    default=1.0,
    metavar="SECONDS",
    help="After the last send, Ctrl-D or /quit: wait this long for a reply, then for the close.",
)
@_copt("--reconnect", is_flag=True, help="Reconnect with exponential backoff.")
@_copt(
    "--max-attempts",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --reconnect: give up (exit 1) after N failed attempts in a row (socat's retry=).",
)
@_copt(
    "--buffer",
    type=click.IntRange(min=0),
    default=100,
    metavar="N",
    help="Lines kept while disconnected (the oldest are dropped beyond).",
)
@_copt(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    metavar="SECONDS",
    help="First reconnect delay; doubles per failed attempt.",
)
@_copt(
    "--retry-max",
    type=click.FloatRange(min=0),
    default=30.0,
    metavar="SECONDS",
    help="Longest reconnect delay.",
)
@_copt(
    "--connections",
    type=click.IntRange(min=1),
    metavar="N",
    help="Open N connections; output lines start with [1], [2], ...",
)
@_copt(
    "--names",
    metavar="A,B,...",
    help="One connection per name; lines start with [A]. A local label: with --send it "
    "fills {name}, and stdin is not read.",
)
@_copt(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Drop a connection that received nothing for SECONDS (reconnect with --reconnect).",
)
@_copt(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    metavar="SECONDS",
    help="Give up on a connection attempt after SECONDS.",
)
@_copt(
    "--keepalive",
    metavar="SPEC",
    help="TCP keep-alive, as for serve: IDLE[,INTERVAL[,COUNT]] seconds, or 0 (off).",
)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 only.")
@_copt("--unix", metavar="PATH", help="Connect to the Unix socket PATH instead of HOST PORT.")
@_copt(
    "--tls",
    is_flag=True,
    help="Speak TLS, verifying the server against the system's CAs (implied by --tls-*).",
)
@_copt("--tls-ca", metavar="FILE", help="Trust only the CA certificates in FILE (PEM).")
@_copt(
    "--tls-servername",
    metavar="NAME",
    help="The name sent in SNI and checked against the certificate [default: HOST].",
)
@_copt("--tls-cert", metavar="FILE", help="Present this client certificate (PEM, key inside).")
@_copt("--tls-key", metavar="FILE", help="The --tls-cert's private key, if not in its file.")
@_copt(
    "--insecure",
    is_flag=True,
    help="With TLS: do not verify the server's certificate (said once on stderr).",
)
@_copt("-o", "--output", metavar="FILE", help="Write what arrives to FILE, not stdout.")
@_copt("--crlf", is_flag=True, help="End the lines typed or sent with CRLF.")
@_copt("-v", "--verbose", is_flag=True, help="Log lookup, connect, end, close (bytes).")
@_copt(
    "-x",
    "--hexdump",
    is_flag=True,
    help="Show the traffic as a hex dump on stderr (> sent, < received), like ncat -x.",
)
@_copt(
    "--hexdump-max",
    default="16KiB",
    metavar="BYTES",
    help="Most bytes -x shows per direction and connection (0: all).",
)
@_copt(
    "--history-file",
    metavar="PATH",
    help="Interactive: keep typed lines here between runs (off: this run only). "
    "[default: $XDG_STATE_HOME/twoway/connect_history]",
    show_default=False,
)
@_copt(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    help="Event loop.",
)
def connect(
    host: str | None,
    port: str | None,
    connections: int | None,
    names: str | None,
    keepalive: str | None,
    hexdump_max: str,
    ipv4: bool,
    ipv6: bool,
    unix: str | None,
    tls: bool,
    tls_ca: str | None,
    tls_servername: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    insecure: bool,
    **kwargs: Any,
) -> None:
    """Connect to HOST PORT (or HOST:PORT, [IPV6]:PORT, or --unix PATH): a chat client on
    a terminal, nc -N in a pipe.

    \b
    Interactive (stdin and stdout are a terminal): received lines print above the
      input line; Tab completes /commands and nicks; Up recalls lines of earlier
      runs too (--history-file); Ctrl-Z suspends; Ctrl-D or /quit leaves.
    Pipe (stdin is not a terminal): stdin to the server, the server to stdout, raw;
      half-close when stdin ends; exit 0 when the server closes.
    --send TEXT: send TEXT every --every seconds ({random} {seq} {time} {name}).
    --reconnect: reconnect with backoff; lines wait in a --buffer meanwhile.
    --tls: TLS, the server verified against the system's CAs or --tls-ca FILE.

    Every option can be set as TWOWAY_CONNECT_<OPTION> (TWOWAY_CONNECT_KEEPALIVE=60).
    Exit 0 when the server closes; 1 when a connection fails (one line on stderr).
    """
    from twoway.client import ClientOptions, run_client
    from twoway.client.options import link_names
    from twoway.config import parse_size
    from twoway.config.parse import parse_keepalive

    params = click.get_current_context().command.params
    known = [
        f"{CONNECT_ENV}_{p.name.upper()}" for p in params if isinstance(p, click.Option) and p.name
    ]
    for warning in unknown_env(CONNECT_ENV + "_", known):
        click.echo(f"twoway: warning: {warning}", err=True)
    if unix is not None:
        if host is not None:
            raise click.UsageError(f"--unix {unix} and HOST {host}: give one of them")
        if ipv4 or ipv6:
            raise click.UsageError("-4/-6 and --unix: a Unix socket has no address family")
        target, number = "localhost", 0
    elif host is None:
        raise click.UsageError("no host: twoway connect HOST PORT (or --unix PATH)")
    else:
        target, number = connect_target(host, port)
    family = choose_family(ipv4, ipv6)
    if unix is None:
        check_family(target, family)
    tls_options = None
    if tls or tls_ca or tls_servername or tls_cert or tls_key or insecure:
        from twoway.client.tls import ClientTls

        tls_options = ClientTls(tls_ca, tls_servername, tls_cert, tls_key, insecure)
    if kwargs.get("max_attempts") is not None and not kwargs.get("reconnect"):
        raise click.UsageError("--max-attempts counts reconnection attempts: add --reconnect")
    try:
        dump_max = parse_size(hexdump_max)
    except ValueError:
        raise click.BadParameter(
            f"{hexdump_max!r}: not a size (e.g. 4096 or 64KiB)", param_hint="--hexdump-max"
        ) from None
    try:
        setting = parse_keepalive(keepalive) if keepalive is not None else None
    except ValueError:
        raise click.BadParameter(
            f"{keepalive!r}: not a keep-alive spec (IDLE[,INTERVAL[,COUNT]] seconds, or 0)",
            param_hint="--keepalive",
        ) from None
    try:
        opts = ClientOptions(
            host=target,
            port=number,
            family=family or 0,
            hexdump_max=dump_max or None,
            names=link_names(connections, names),
            keepalive=keepalive_options(setting),
            tls=tls_options,
            unix=unix,
            **kwargs,
        )
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
        return
    sys.exit(run_client(opts))


@cli.command()
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
        _fail(f"status: {where!r}: {exc}", EXIT_USAGE)
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
        _fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        sys.exit(0)


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
