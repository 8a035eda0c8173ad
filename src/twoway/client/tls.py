"""``twoway connect --tls``: the client's ``SSLContext`` and the one line a failed handshake
becomes.

Verification is on by default, against the system's trust store (ncat does not verify by
default and its users are surprised by it: nmap #1898). ``--tls-ca FILE`` trusts only the
CAs in FILE (as curl's ``--cacert``); ``--tls-servername`` is the name sent in SNI and
checked against the certificate (default: the host as typed, an IP address checked against
the certificate's IP entries); ``--tls-cert``/``--tls-key`` present a client certificate;
``--insecure`` skips verification, and the CLI says so once on stderr.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from twoway.errors import ConfigError, describe_oserror

__all__ = ["ClientTls", "client_context"]


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What the ``--tls*`` options of ``twoway connect`` say."""

    ca: str | None = None
    servername: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False


def _readable(path: str, what: str) -> None:
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {describe_oserror(exc)}") from None


def client_context(tls: ClientTls) -> ssl.SSLContext:
    """The context for ``tls``, or :class:`ConfigError` naming the option and the file."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca is not None:
        _readable(tls.ca, "--tls-ca")
        # Only the given CAs: a private CA must not widen to every public one.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cafile=tls.ca)
        except (ssl.SSLError, ValueError):
            raise ConfigError(f"--tls-ca {tls.ca}: no PEM certificate in it") from None
    if tls.key is not None and tls.cert is None:
        raise ConfigError("--tls-key needs --tls-cert")
    if tls.cert is not None:
        _readable(tls.cert, "--tls-cert")
        if tls.key is not None:
            _readable(tls.key, "--tls-key")

        def no_password() -> str:
            raise ConfigError(
                f"the private key of --tls-cert {tls.cert} is encrypted: twoway needs it "
                "without a passphrase"
            )

        try:
            ctx.load_cert_chain(tls.cert, tls.key, password=no_password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ConfigError(
                    f"--tls-key {tls.key or tls.cert} does not match --tls-cert {tls.cert}"
                ) from None
            raise ConfigError(
                f"--tls-cert {tls.cert}: cannot load the certificate and key "
                f"({describe_oserror(exc)})"
            ) from None
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
