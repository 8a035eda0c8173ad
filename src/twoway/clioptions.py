"""``serve``'s options as click options, written from the option table, and the settings
they load.

Every option of :data:`twoway.config.OPTIONS` becomes one click option
(:func:`with_options`): its flag, short flag (nc's ``-p``), help in click's style with its
variable and default (:func:`help_text`), and for a choice its values for shell completion
(:class:`Choices`, which leaves checking the value to config). :func:`complete_serve` and
:func:`complete_service` complete service names; :func:`load_service_settings` reads the
settings for a built-in service the way ``serve`` and ``check-config`` both do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem

from twoway.cliargs import CONNECT_ENV
from twoway.config import OPTIONS, OptionSpec, Settings, load_settings
from twoway.services import SERVICES, check_settings, service_options

__all__ = [
    "Choices",
    "complete_serve",
    "complete_service",
    "help_text",
    "load_service_settings",
    "with_options",
]

#: Short flags of ``serve``'s options (nc's ``-p``).
_SHORT = {"port": "-p", "hexdump": "-x"}


class Choices(click.Choice):  # type: ignore[type-arg]  # generic from click 8.2 on
    """A :class:`click.Choice` for shell completion and ``--help``, which leaves checking the
    value to config: a bad one reads the same from a flag, a variable or the file
    (``command line: --loop = 'fast': not one of auto, asyncio, uvloop``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value


def help_text(text: str, env: str | None, default: Any = None) -> str:
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
    helptext = help_text(helptext, spec.env, default)
    if spec.kind == "bool":
        short = [_SHORT[spec.key]] if spec.key in _SHORT else []
        return click.option(
            spec.flag or f"--{spec.key}", *short, spec.attr, default=None, help=helptext
        )
    names = [f"--{spec.key}", *([_SHORT[spec.key]] if spec.key in _SHORT else [])]
    if spec.kind == "choice":
        return click.option(*names, spec.attr, type=Choices(spec.choices), help=helptext)
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


def load_service_settings(**kwargs: Any) -> Settings:
    """Settings for a built-in service: the services say which options each takes and how
    the values go together. ``kwargs`` go to :func:`~twoway.config.load_settings`
    (``service``, ``flags``, ``config_file``); raises :class:`~twoway.errors.ConfigError`."""
    return load_settings(
        services=service_options(),
        validate=_check,
        other_env=(CONNECT_ENV + "_",),
        **kwargs,
    )


def with_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command with one click option per entry of the option table, in the
    table's order; each arrives as a keyword argument named after the option's ``attr``
    (``None`` or ``()`` when not given, so config can tell "not given" from a default)."""
    for spec in reversed(OPTIONS):
        func = _option(spec)(func)
    return func


def complete_serve(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of ``serve``'s positionals: a service name (with its summary) first,
    then a file after ``file``."""
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


def complete_service(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of a built-in service's name."""
    return [name for name in SERVICES if name.startswith(incomplete)]
