"""Building :class:`~twoway.config.table.Settings`: defaults < config file < environment < flags.

Every failure is a :class:`~twoway.errors.ConfigError` naming the source, the key and the
value. Which services exist and which per-service options each takes is handed in by the
caller (the services' registry), so config knows no service.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from twoway.config.parse import convert
from twoway.config.spec import ENV_PREFIX, OptionSpec
from twoway.config.table import BY_KEY, OPTIONS, Settings
from twoway.errors import ConfigError

__all__ = ["load_settings", "read_config_file"]


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML config file; every failure is a :class:`ConfigError` naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p}: is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {p}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: invalid TOML: {exc}") from None
    return data


def load_settings(
    *,
    services: Mapping[str, Collection[str]],
    service: str | None = None,
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    validate: Callable[[Settings], None] | None = None,
) -> Settings:
    """Build :class:`Settings`: defaults < ``config_file`` < ``TWOWAY_*`` < ``flags``.

    ``services`` maps each service's name to the per-service option keys it takes (in the
    order errors list them). ``flags`` maps option keys (``max-line``) to raw values; ``None``
    means "not given". Raises :class:`ConfigError` naming the source, key and value of the
    first bad one. ``validate`` then checks how the values go together (the services'
    rules: chat with several workers needs a shared bus) and raises :class:`ConfigError`.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    given: list[tuple[OptionSpec, str]] = []

    def put(spec: OptionSpec, raw: Any, source: str, shown: str) -> None:
        try:
            values[spec.attr] = convert(spec, raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {shown} = {raw!r}: {exc}") from None
        sources[spec.key] = source
        given.append((spec, source))

    file_service: str | None = None
    if config_file is not None:
        source = f"config file {config_file}"
        for key, raw in read_config_file(config_file).items():
            if key == "service":
                if not isinstance(raw, str):
                    raise ConfigError(f"{source}: service = {raw!r}: not a string")
                file_service = raw
                continue
            spec = BY_KEY.get(key)
            if spec is None:
                raise ConfigError(f"{source}: unknown key {key!r}{_close_match(key)}")
            put(spec, raw, source, key)
    for spec in OPTIONS:
        if spec.env in env:
            put(spec, env[spec.env], "environment", spec.env)
    for key, raw in (flags or {}).items():
        if raw is not None:
            put(BY_KEY[key], raw, "command line", f"--{key}")

    chosen = _choose_service(service, env, file_service, config_file, services, sources)
    takes = services[chosen]
    for spec, source in given:
        if spec.per_service and spec.key not in takes:
            raise ConfigError(f"{source}: option {spec.key!r} does not apply to service {chosen!r}")
    settings = Settings(service=chosen, sources=sources, **values)
    if validate is not None:
        validate(settings)
    return settings


def _choose_service(
    flag: str | None,
    env: Mapping[str, str],
    file_service: str | None,
    config_file: str | os.PathLike[str] | None,
    services: Mapping[str, Collection[str]],
    sources: dict[str, str],
) -> str:
    env_service = env.get(ENV_PREFIX + "SERVICE")
    if flag:
        sources["service"] = "command line"
    elif env_service:
        sources["service"] = "environment"
    elif file_service:
        sources["service"] = f"config file {config_file}"
    chosen = flag or env_service or file_service
    names = ", ".join(services)
    if chosen is None:
        raise ConfigError(
            f'no service given (choose from {names}, or set service = "..." in the config file)'
        )
    if chosen not in services:
        raise ConfigError(f"unknown service {chosen!r} (choose from {names})")
    return chosen


def _close_match(key: str) -> str:
    match = difflib.get_close_matches(key, list(BY_KEY), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
