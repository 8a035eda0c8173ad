"""SIGHUP: reread the config file and apply what can change live, without dropping anyone.

:class:`Reloader` is the runner's reload hook. It loads the settings again exactly as at
start-up (the same flags, environment and ``--config`` file: only the file can have changed),
compares them with the settings in use, and for every key that differs:

- a live key (:data:`twoway.config.LIVE_KEYS`) is applied: the limits to the server's
  registry, the per-connection options to the connections made from now on, the MOTD and
  flood settings to the service, the log level to the logger, certificate paths and
  allow/deny lists to the :class:`~twoway.frontdoor.FrontDoor`;
- any other key is one log line naming it (``reload: port changed in chat.toml (4001 ->
  4002): needs a restart; 4001 stays``) and keeps its value.

A config file that no longer loads is one ``ERROR`` line and everything stays as it was.
Then the front door rereads the certificate and access files, as it does on every SIGHUP.
Open connections keep what they had: their options, their flood budget, their certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twoway.config import LIVE_KEYS, OPTIONS, Settings
from twoway.errors import ConfigError, ServiceError
from twoway.logs import setup_logging
from twoway.services import connection_options, reconfigure_service

if TYPE_CHECKING:
    from twoway.frontdoor import FrontDoor
    from twoway.net.server import Server
    from twoway.net.service import Service

__all__ = ["Reloader"]

log = logging.getLogger("twoway")


def _show(value: Any) -> str:
    if value is None:
        return "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


class Reloader:
    """The SIGHUP hook of one server process; see the module docstring.

    ``load`` reloads the settings (``None``: no config to reread, only the front door's
    files); ``fit`` lowers ``max-conns`` to the open-files limit as at start-up;
    ``verbose`` is the ``-v`` count the log level was set up with.
    """

    def __init__(
        self,
        settings: Settings,
        load: Callable[[], Settings] | None,
        door: FrontDoor,
        service: Service,
        *,
        fit: Callable[[int | None], int | None] = lambda n: n,
        verbose: int = 0,
    ) -> None:
        self.settings = settings
        self.load = load
        self.door = door
        self.service = service
        self.fit = fit
        self.verbose = verbose

    def __call__(self, server: Server) -> None:
        """Reload: the config first, then the front door's files. Never raises."""
        if self.load is not None:
            try:
                new = self.load()
            except (ConfigError, ServiceError) as exc:
                log.error("reload: %s; the settings in use stay", exc)
            else:
                self.apply(new, server)
        self.door.reload(server, config=self.load is not None)

    def changes(self, new: Settings) -> tuple[dict[str, Any], list[str]]:
        """``(live, restart)``: the live keys that changed with their new values (by
        attribute), and one message per restart-only key that changed."""
        old = self.settings
        live: dict[str, Any] = {}
        restart: list[str] = []
        for spec in OPTIONS:
            before, after = getattr(old, spec.attr), getattr(new, spec.attr)
            if before == after:
                continue
            # Turning TLS on or off changes how the listener accepts: a restart.
            toggles = spec.key in ("tls-cert",) and (before is None) != (after is None)
            if spec.key in LIVE_KEYS and not toggles:
                live[spec.attr] = after
                continue
            where = new.sources.get(spec.key, "default")
            restart.append(
                f"{spec.key} changed in {where} ({_show(before)} -> {_show(after)}): needs a "
                f"restart; {_show(before)} stays"
            )
        return live, restart

    def apply(self, new: Settings, server: Server) -> None:
        """Apply ``new``'s live changes to ``server`` and log the rest (see the module
        docstring)."""
        live, restart = self.changes(new)
        for message in restart:
            log.warning("reload: %s", message)
        if not live:
            if not restart:
                log.info("reload: config unchanged")
            return
        sources = dict(self.settings.sources)
        sources.update({k: new.sources[k] for k in new.sources if k.replace("-", "_") in live})
        merged = replace(self.settings, sources=sources, **live)
        try:
            reconfigure_service(self.service, merged)  # may refuse (an unreadable MOTD)
        except ConfigError as exc:
            log.error("reload: %s; the settings in use stay", exc)
            return
        server.options = connection_options(merged)
        registry = server.registry
        registry.max_connections = self.fit(merged.max_conns)
        registry.max_connections_per_ip = merged.max_conns_per_ip
        registry.ipv6_prefix = merged.ipv6_prefix
        if "log_level" in live:
            setup_logging(
                merged.log_level,
                merged.log_format,
                access_log=merged.access_log,
                log_time=merged.log_time,
                verbose=self.verbose,
            )
        self.door.settings = merged
        tls = self.door.tls
        if tls is not None and merged.tls_cert is not None:  # reread by door.reload next
            tls.settings = replace(tls.settings, cert=merged.tls_cert, key=merged.tls_key)
        self.settings = merged
        old = {spec.attr: spec.key for spec in OPTIONS}
        log.info(
            "reload: applied %s",
            ", ".join(f"{old[attr]} = {_show(value)}" for attr, value in live.items()),
        )
