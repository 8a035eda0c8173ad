"""TLS for servers: the ``SSLContext`` from the user's files, and live reload.

- :class:`TlsSettings` holds what the options say (``--tls-cert``, ``--tls-key``,
  ``--tls-min-version``, ``--tls-client-ca``); :func:`server_context` builds a context from
  it, checking the files first so every mistake is one line naming the file (a missing key,
  a key that does not match, an encrypted key, a file with no certificate) instead of
  OpenSSL's ``[SSL] PEM lib``.
- :class:`ServerTls` is what a server holds: a fixed front context to bind, and a reload
  that swaps the certificate for new handshakes while open connections keep theirs.
- The peer's side (its verified certificate, why a handshake failed) is in
  :mod:`twoway.net.tlspeer`, where the server's accept path uses it.

How reload works, and why this way: ``loop.create_server(ssl=ctx)`` binds one context
object for the listener's life, on asyncio and on uvloop alike. Two ways keep that object
and still change the certificate:

1. ``ctx.load_cert_chain(...)`` again on the bound context. It works on both loops, but it
   is not atomic: OpenSSL installs the new certificate before checking the new key, and a
   key that does not match leaves the live context with *no usable key*: every following
   handshake fails ("no shared cipher") while the reload reports an error. A certbot run
   that writes the certificate and the key in two steps can hit exactly that.
2. ``ctx.sni_callback``, which OpenSSL calls during every ClientHello (with or without SNI),
   setting ``ssl_object.context`` to a context built and fully checked beforehand. This is
   what :class:`ServerTls` does: the front context is never modified; a reload builds a new
   context, and only if that succeeds points the callback at it (one reference assignment,
   so a handshake sees the old or the new one, never a mix). Open connections hold their
   own ``SSL`` objects and are untouched. Tested on asyncio and uvloop with ``openssl
   s_client`` in ``tests/test_tls.py``.

Switching contexts mid-handshake carries over the certificate, key and verification store
(a reloaded ``--tls-client-ca`` applies); the protocol versions and verify mode stay those
of the front context, which is why they come from the same settings and are not reloadable.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twoway.errors import ConfigError, describe_oserror

__all__ = [
    "CertificateInfo",
    "ServerTls",
    "TlsSettings",
    "certificate_info",
    "normalize_fingerprint",
    "server_context",
]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)
_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The server's TLS options, as given: ``key=None`` means the key is in ``cert``;
    ``client_ca`` set means clients must present a certificate it signed."""

    cert: str | Path
    key: str | Path | None = None
    min_version: str = "1.2"
    client_ca: str | Path | None = None


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """The leaf certificate a context serves, for log lines: ``fingerprint`` is the SHA-256
    of its DER form in lower-case hex; ``not_before``/``not_after`` are UTC."""

    path: str
    fingerprint: str
    not_before: datetime
    not_after: datetime

    def expired(self, now: datetime) -> bool:
        """Whether ``now`` (aware) is outside the validity period."""
        return not self.not_before <= now <= self.not_after

    def describe(self) -> str:
        """``"cert.pem (sha256 3f2a…9c01, valid until 2027-03-01 12:00 UTC)"``."""
        fp = f"{self.fingerprint[:4]}…{self.fingerprint[-4:]}"
        return f"{self.path} (sha256 {fp}, valid until {self.not_after:%Y-%m-%d %H:%M} UTC)"


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {describe_oserror(exc)}") from None


def _no_password() -> str:
    raise ConfigError("the private key is encrypted: twoway needs it without a passphrase")


def _check_key(data: bytes, path: str | Path, what: str) -> None:
    found = _PEM_KEY.search(data)
    if found is None or b"Proc-Type: 4,ENCRYPTED" in data or found.group(1) == b"ENCRYPTED ":
        if found is None:
            raise ConfigError(f"{what} {path} contains no PEM private key")
        raise ConfigError(
            f"{what} {path} is encrypted: twoway needs it without a passphrase "
            f"(openssl pkey -in {path} -out KEY.pem)"
        )


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """A new server context from ``settings``, or :class:`ConfigError` naming the file.

    TLS 1.2 or 1.3 as the minimum, OpenSSL's default ciphers, no compression, no
    client-initiated renegotiation (a CPU cost a client could impose at will); with
    ``client_ca``, a client certificate is required and verified against it.
    """
    version = _VERSIONS.get(str(settings.min_version))
    if version is None:
        raise ConfigError(f"--tls-min-version: {settings.min_version!r} is not 1.2 or 1.3")
    cert = _read(settings.cert, "TLS certificate")
    if _PEM_CERT.search(cert) is None:
        raise ConfigError(f"TLS certificate {settings.cert} contains no PEM certificate")
    if settings.key is None:
        if _PEM_KEY.search(cert) is None:
            raise ConfigError(
                f"TLS certificate {settings.cert} contains no private key: give --tls-key"
            )
        _check_key(cert, settings.cert, "TLS certificate")
    else:
        _check_key(_read(settings.key, "TLS key"), settings.key, "TLS key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = version
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(settings.cert, settings.key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"TLS key {settings.key or settings.cert} does not match the certificate "
                f"in {settings.cert}"
            ) from None
        raise ConfigError(
            f"cannot load TLS certificate {settings.cert}: {describe_oserror(exc)}"
        ) from None
    except OSError as exc:  # the file vanished between the check and the load
        raise ConfigError(f"cannot load TLS certificate {settings.cert}: {exc}") from None
    if settings.client_ca is not None:
        ca = _read(settings.client_ca, "TLS client CA file")
        if _PEM_CERT.search(ca) is None:
            raise ConfigError(f"TLS client CA file {settings.client_ca} contains no certificate")
        try:
            ctx.load_verify_locations(cafile=settings.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load TLS client CA file {settings.client_ca}: {describe_oserror(exc)}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def certificate_info(path: str | Path) -> CertificateInfo:
    """The first certificate of a PEM file (the leaf, in a full chain): its fingerprint and
    validity. Raises :class:`ConfigError` if there is none or it cannot be decoded."""
    found = _PEM_CERT.search(_read(path, "TLS certificate"))
    if found is None:
        raise ConfigError(f"TLS certificate {path} contains no PEM certificate")
    pem = b"-----BEGIN CERTIFICATE-----\n" + found.group(1) + b"\n-----END CERTIFICATE-----\n"
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
        not_before, not_after = _validity(der)
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ConfigError(f"TLS certificate {path} is not a valid X.509 certificate") from None
    return CertificateInfo(str(path), hashlib.sha256(der).hexdigest(), not_before, not_after)


def _der_item(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, where the value starts, where it ends) of the DER element at ``at``."""
    tag, size = der[at], der[at + 1]
    at += 2
    if size & 0x80:
        n = size & 0x7F
        size = int.from_bytes(der[at : at + n], "big")
        at += n
    if at + size > len(der):
        raise ValueError("DER element runs past the end")
    return tag, at, at + size


def _validity(der: bytes) -> tuple[datetime, datetime]:
    # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    # signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    _, at, _ = _der_item(der, 0)
    _, at, _ = _der_item(der, at)
    tag, _, end = _der_item(der, at)
    if tag == 0xA0:
        at = end
    for _ in range(3):  # serial, signature algorithm, issuer
        at = _der_item(der, at)[2]
    _, at, _ = _der_item(der, at)
    times = []
    for _ in range(2):
        tag, start, end = _der_item(der, at)
        text = der[start:end].decode("ascii")
        if tag == 0x17:  # UTCTime: two-digit years, 50-99 meaning 19xx
            text = ("19" if int(text[:2]) >= 50 else "20") + text
        elif tag != 0x18:
            raise ValueError(f"unexpected time tag {tag:#x}")
        times.append(datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC))
        at = end
    return times[0], times[1]


class ServerTls:
    """The TLS context of a listening server, with live certificate reload.

    Hand :attr:`context` to ``loop.create_server(ssl=...)`` once; call :meth:`reload` (on
    SIGHUP) to serve the files' current certificate to new handshakes. Building raises
    :class:`ConfigError` like :func:`server_context`.

    Plugging it in: ``tls = ServerTls(settings)`` at start-up (a ``ConfigError`` is a start-up
    failure), ``create_server(..., ssl=tls.context, ssl_handshake_timeout=...)`` for every
    listener, log ``tls.info.describe()``; on SIGHUP ``info = tls.reload()`` and log it, or
    log the ``ConfigError`` as one line: the previous certificate stays in use. Not
    thread-safe: call :meth:`reload` from the loop's thread.
    """

    __slots__ = ("_current", "context", "info", "reloads", "settings")

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.context = server_context(settings)
        self.info = certificate_info(settings.cert)
        self._current = self.context
        self.reloads = 0
        self.context.sni_callback = self._choose

    @property
    def current(self) -> ssl.SSLContext:
        """The context new handshakes get (the front one until the first reload)."""
        return self._current

    def _choose(self, ssl_object: Any, server_name: str | None, front: ssl.SSLContext) -> None:
        # Runs inside OpenSSL's ClientHello processing: no I/O, no exception.
        current = self._current
        if current is not front:
            ssl_object.context = current

    def reload(self) -> CertificateInfo:
        """Re-read the same files; on success new handshakes get the new certificate and the
        new info is returned. On failure raise :class:`ConfigError` (one line naming the
        file) and change nothing: the certificate in use stays in use."""
        context = server_context(self.settings)
        info = certificate_info(self.settings.cert)
        context.sni_callback = None
        self._current = context
        self.info = info
        self.reloads += 1
        return info


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as :class:`PeerCertificate` has it, from the way users copy it:
    ``openssl``'s ``sha256 Fingerprint=AB:CD:...``, with or without colons, any case.
    Raises :class:`ValueError` if it is not 32 bytes of hex."""
    value = text.split("=", 1)[-1].replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return value
