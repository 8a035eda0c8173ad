"""Building :class:`~twoway.config.table.Settings`: defaults < config file < environment < flags.

Every failure is a :class:`~twoway.errors.ConfigError` naming the source, the key and the
value. Which services exist and which per-service options each takes is handed in by the
caller (the services' registry), so config knows no service.
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from twoway.config.parse import convert, split_host_port
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
    other_env: Collection[str] = (),
) -> Settings:
    """Build :class:`Settings`: defaults < ``config_file`` < ``TWOWAY_*`` < ``flags``.

    ``services`` maps each service's name to the per-service option keys it takes (in the
    order errors list them). ``flags`` maps option keys (``max-line``) to raw values; ``None``
    means "not given". Raises :class:`ConfigError` naming the source, key and value of the
    first bad one. ``validate`` then checks how the values go together (the services'
    rules: chat with several workers needs a shared bus) and raises :class:`ConfigError`.

    A ``TWOWAY_*`` variable whose option does not apply to the chosen service is ignored
    (a flag or a file key is refused); an unknown ``TWOWAY_*`` name is a warning with the
    closest known one. Both end up in :attr:`Settings.notices`. Names under the prefixes in
    ``other_env`` (another command's, ``TWOWAY_CONNECT_``) are left alone. ``host`` may
    carry a port (``[::1]:4002``, ``0.0.0.0:4002``): it sets ``port`` unless ``port`` comes
    from a source of higher precedence; from the same source, the two must agree.
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
    operators: dict[str, str] = {}
    if config_file is not None:
        source = f"config file {config_file}"
        for key, raw in read_config_file(config_file).items():
            if key == "operators":
                operators = _operators(source, raw)
                continue
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
    notices = _unknown_env(env, other_env)
    for spec, source in given:
        if spec.per_service and spec.key not in takes:
            if source == "environment" and sources.get(spec.key) == "environment":
                # A variable left in the environment for another service must not stop this
                # one: the flag or the file was written for it, the variable was not.
                values.pop(spec.attr, None)
                sources.pop(spec.key, None)
                notices.append(
                    (
                        logging.DEBUG,
                        f"environment: {spec.env} ignored: option {spec.key!r} does not "
                        f"apply to service {chosen!r}",
                    )
                )
                continue
            if source == "environment":
                continue  # overridden by a flag, which is refused below
            raise ConfigError(f"{source}: option {spec.key!r} does not apply to service {chosen!r}")
    _split_host(values, sources)
    _check_unix_mode(values, sources)
    settings = Settings(
        service=chosen, sources=sources, notices=tuple(notices), operators=operators, **values
    )
    if validate is not None:
        validate(settings)
    return settings


def _operators(source: str, raw: Any) -> dict[str, str]:
    """The ``[operators]`` table: name -> password hash or certificate fingerprint."""
    if not isinstance(raw, dict):
        raise ConfigError(f'{source}: operators must be a table of NAME = "HASH"')
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"{source}: operators.{name} = {value!r}: not a password hash "
                "(twoway hash-password) or a certificate fingerprint"
            )
        out[name] = value
    return out


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


#: Variables that are not options but mean something: the service, the config file.
_OTHER_NAMES = (ENV_PREFIX + "SERVICE", ENV_PREFIX + "CONFIG")


def _unknown_env(env: Mapping[str, str], other_env: Collection[str]) -> list[tuple[int, str]]:
    known = [spec.env for spec in OPTIONS] + list(_OTHER_NAMES)
    out: list[tuple[int, str]] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if any(name.startswith(prefix) for prefix in other_env):
            continue
        match = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {match[0]}?)" if match else ""
        out.append((logging.WARNING, f"environment: unknown variable {name} ignored{hint}"))
    return out


def _check_unix_mode(values: dict[str, Any], sources: dict[str, str]) -> None:
    raw = values.get("unix_mode")
    if raw is None:
        return
    try:
        bits = int(raw, 8)
    except ValueError:
        bits = -1
    if not 0 <= bits <= 0o777:
        source = sources.get("unix-mode", "default")
        raise ConfigError(f"{source}: unix-mode = {raw!r}: not octal permission bits (e.g. 660)")


def _split_host(values: dict[str, Any], sources: dict[str, str]) -> None:
    """``host = "[::1]:4002"``: the host without brackets, and the port it names; several
    hosts (``127.0.0.1,[::1]:4002``) each the same way, and they must name the same port."""
    raw = values.get("host")
    if raw is None:
        return
    source = sources.get("host", "default")
    hosts, ports = [], set()
    for part in raw.split(","):
        try:
            host, named = split_host_port(part.strip())
        except ValueError as exc:
            raise ConfigError(f"{source}: host = {raw!r}: {exc}") from None
        hosts.append(host)
        if named is not None:
            ports.add(named)
    if len(ports) > 1:
        raise ConfigError(f"{source}: host = {raw!r} names different ports")
    values["host"] = ",".join(hosts)
    port = ports.pop() if ports else None
    if port is None:
        return
    port_source = sources.get("port")
    if port_source is None or _rank(source) > _rank(port_source):
        values["port"] = port
        sources["port"] = source
    elif _rank(source) == _rank(port_source) and values.get("port") != port:
        raise ConfigError(
            f"{source}: host = {raw!r} names port {port}, but port = {values['port']}"
        )


def _rank(source: str) -> int:
    """The precedence of a source: the file, then the environment, then the command line."""
    if source.startswith("config file"):
        return 1
    return {"environment": 2, "command line": 3}.get(source, 0)


def _close_match(key: str) -> str:
    match = difflib.get_close_matches(key, list(BY_KEY), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
