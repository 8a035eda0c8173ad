"""What stands between the internet and a service: TLS, the access rules and the trusted PROXY
protocol senders, from the settings, and their reload on SIGHUP.

:class:`FrontDoor` is built once per ``twoway serve`` process, before any worker starts, so
a bad certificate or a bad network is one :class:`~twoway.errors.ConfigError` line and a
non-zero exit. :meth:`FrontDoor.server_options` gives the :class:`~twoway.net.server.Server`
keyword arguments; :meth:`FrontDoor.reload` (the runner's SIGHUP hook) rereads the
certificate files and the ``--allow-file``/``--deny-file`` lists and applies what loaded:
new handshakes get the new certificate, open connections keep theirs; anything that fails
to load is one log line, and what was in use stays in use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twoway.errors import ConfigError
from twoway.sansio.access import AccessPolicy, AddressSet
from twoway.tls import ServerTls, TlsSettings

if TYPE_CHECKING:
    from twoway.config import Settings
    from twoway.net.server import Server

__all__ = ["FrontDoor"]

log = logging.getLogger("twoway")


def _where(settings: Settings, key: str) -> str:
    """How an error names an option: the flag, the variable or the config file key."""
    source = settings.sources.get(key, "")
    if source == "environment":
        return "TWOWAY_" + key.upper().replace("-", "_")
    if source.startswith("config file "):
        return f"{key} in {source.removeprefix('config file ')}"
    return f"--{key}"


class FrontDoor:
    """TLS (``tls``, ``None`` without ``--tls-cert``), the access rules (``access``) and the
    proxies trusted to send a PROXY header (``proxy_from``, ``None`` without
    ``--proxy-protocol``) of a server, built from ``settings``. Raises :class:`ConfigError`
    naming the option or file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tls: ServerTls | None = None
        if settings.tls_cert is not None:
            self.tls = ServerTls(
                TlsSettings(
                    settings.tls_cert,
                    settings.tls_key,
                    settings.tls_min_version,
                    settings.tls_client_ca,
                )
            )
        else:
            for key in ("tls-key", "tls-client-ca"):
                if getattr(settings, key.replace("-", "_")) is not None:
                    raise ConfigError(f"{_where(settings, key)} needs --tls-cert")
        self.access = self._policy()
        self.proxy_from: AddressSet | None = None
        if settings.proxy_protocol:
            if not settings.proxy_from:
                raise ConfigError(
                    f"{_where(settings, 'proxy-protocol')} needs --proxy-from CIDR: the "
                    "proxies allowed to send the header (a forged header would defeat "
                    "every per-address rule)"
                )
            self.proxy_from = AddressSet()
            self.proxy_from.update(settings.proxy_from, option=_where(settings, "proxy-from"))
        elif settings.proxy_from:
            raise ConfigError(f"{_where(settings, 'proxy-from')} needs --proxy-protocol")

    def _policy(self) -> AccessPolicy:
        s = self.settings
        allow, deny = AddressSet(), AddressSet()
        allow.update(s.allow, option=_where(s, "allow"))
        deny.update(s.deny, option=_where(s, "deny"))
        if s.allow_file is not None:
            allow.load(s.allow_file, what="allow file")
        if s.deny_file is not None:
            deny.load(s.deny_file, what="deny file")
        return AccessPolicy(allow, deny)

    def server_options(self) -> dict[str, Any]:
        """The :class:`~twoway.net.server.Server` keyword arguments for TLS, access and PROXY."""
        return {
            "ssl": self.tls.context if self.tls is not None else None,
            "ssl_handshake_timeout": self.settings.tls_handshake_timeout,
            "access": self.access if self.access.active else None,
            "proxy_from": self.proxy_from,
            "proxy_timeout": self.settings.proxy_timeout,
            "max_handshakes_per_ip": self.settings.max_handshakes_per_ip,
        }

    def describe(self) -> str:
        """For the ready line: ``" with TLS 1.2+ (cert.pem (sha256 …)), allow 2 networks"``;
        empty when neither is on."""
        parts = []
        if self.tls is not None:
            client = ", client certificates required" if self.settings.tls_client_ca else ""
            parts.append(
                f"TLS {self.settings.tls_min_version}+ ({self.tls.info.describe()}{client})"
            )
        if self.proxy_from is not None:
            n = len(self.proxy_from)
            parts.append(f"PROXY protocol from {n} network{'s' if n != 1 else ''}")
        if self.access.active:
            parts.append(self.access.describe())
        return " with " + ", ".join(parts) if parts else ""

    def reload(self, server: Server, *, config: bool = False) -> None:
        """Reread the certificate and the access files, apply what loads, log each outcome
        in one line. Never raises for a bad file: the old certificate or rules stay.
        ``config``: a config file was reread just before (which logged its own lines)."""
        if self.tls is not None:
            try:
                info = self.tls.reload()
            except ConfigError as exc:
                log.error("reload: %s; the certificate in use stays", exc)
            else:
                log.info("reload: TLS certificate %s for new handshakes", info.describe())
        s = self.settings
        # The lists themselves may have changed too (a config reload sets new settings).
        rules = bool(s.allow or s.deny) or s.allow_file is not None or s.deny_file is not None
        had = self.access.active
        if rules or had:
            try:
                policy = self._policy()
            except ConfigError as exc:
                log.error("reload: %s; the access rules in use stay", exc)
            else:
                self.access = policy
                server.access = policy if policy.active else None
                log.info("reload: access rules: %s", policy.describe())
        if self.tls is None and not rules and not had and not config:
            log.info("reload: nothing to reload (no --tls-cert, --allow-file or --deny-file)")
