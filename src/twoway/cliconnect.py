"""``twoway connect``: the client command, its options and how they become
:class:`~twoway.client.ClientOptions`.

Every option can also be set as ``TWOWAY_CONNECT_<OPTION>`` (click's ``auto_envvar_prefix``,
shown in ``--help``), and an unknown variable under that prefix is named in a warning. The
command checks how the options go together (``--unix`` or ``HOST PORT``, ``-4``/``-6``,
``--max-attempts`` with ``--reconnect``, sizes and keep-alive specs), then runs
:func:`~twoway.client.run_client` and exits with its code; the client itself is
:mod:`twoway.client`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from twoway.cliargs import (
    CONNECT_ENV,
    check_family,
    choose_family,
    connect_target,
    keepalive_options,
    unknown_env,
)
from twoway.cliexit import EXIT_USAGE, fail

__all__ = ["connect"]


def _copt(*names: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A ``connect`` option: its variable (``TWOWAY_CONNECT_<NAME>``) shown in ``--help``."""
    return click.option(*names, show_envvar=True, **kwargs)


@click.command(
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
        fail(str(exc), EXIT_USAGE)
        return
    sys.exit(run_client(opts))
