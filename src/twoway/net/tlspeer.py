"""What a finished or failed TLS handshake says about the peer: its verified certificate
(:class:`PeerCertificate`, :func:`peer_certificate`) and, for a failure, one phrase for the log
(:func:`describe_handshake_error`).

Here in ``net`` because the server's accept path (:mod:`twoway.net.accept`) and
:class:`~twoway.net.connection.Connection` use them; :mod:`twoway.tls` (building the contexts,
reload) re-exports nothing from here, since it may import nothing but errors.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass
from typing import Any

from twoway.errors import describe_oserror

__all__ = ["PeerCertificate", "describe_handshake_error", "peer_certificate"]


# ---------------------------------------------------------------------------- failures

_HANDSHAKE_REASONS = {
    "WRONG_VERSION_NUMBER": "not TLS (plain text on a TLS port?)",
    "HTTP_REQUEST": "an HTTP request on a TLS port",
    "HTTPS_PROXY_REQUEST": "an HTTP proxy request on a TLS port",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common (the client's is below the minimum)",
    "NO_SHARED_CIPHER": "no cipher in common",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "UNEXPECTED_EOF_WHILE_READING": "the client closed the connection",
}


def describe_handshake_error(exc: BaseException) -> str:
    """One lower-case phrase for why a server-side handshake failed, for a log line such
    as ``"1.2.3.4:5678: TLS handshake failed: not TLS (plain text on a TLS port?)"``.

    Takes what ``connect_accepted_socket(ssl=...)``/``start_tls`` raise on asyncio and
    uvloop alike (checked in ``tests/test_tls.py``): ``ssl.SSLError`` with a reason, a
    rejected client certificate, ``ConnectionAbortedError`` for ``ssl_handshake_timeout``,
    ``ConnectionResetError``. Never raises.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        if reason in _HANDSHAKE_REASONS:
            return _HANDSHAKE_REASONS[reason]
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")):
            alert = reason.split("_ALERT_", 1)[1].lower().replace("_", " ")
            return f"the client sent the alert {alert!r}"
        if isinstance(exc, ssl.SSLEOFError):
            return "the client closed the connection"
    if isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc):
        return "not finished within the handshake timeout"
    if isinstance(exc, TimeoutError):
        return "not finished within the handshake timeout"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the client"
    return describe_oserror(exc)


# ---------------------------------------------------------------------------- peer identity

_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A verified client certificate: ``subject`` in RFC 4514 form (``CN=alice,O=Example``,
    most specific first, as ``openssl x509 -subject -nameopt RFC2253`` prints it, but
    non-ASCII left as text), ``fingerprint`` the SHA-256 of its DER form in lower-case hex."""

    subject: str
    fingerprint: str


def _escape(value: str) -> str:
    out = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def peer_certificate(source: Any) -> PeerCertificate | None:
    """The verified certificate of a TLS peer, or ``None`` (no TLS, no certificate, or one
    that was not verified). ``source`` is an ``ssl.SSLObject``/``SSLSocket`` or an asyncio
    transport (its ``"ssl_object"`` extra is used). Call it after the handshake."""
    if hasattr(source, "get_extra_info"):
        source = source.get_extra_info("ssl_object")
    if source is None:
        return None
    decoded = source.getpeercert()
    if not decoded:  # None: no certificate; {}: not verified
        return None
    der = source.getpeercert(binary_form=True)
    rdns = [
        "+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn)
        for rdn in decoded.get("subject", ())
    ]
    return PeerCertificate(",".join(reversed(rdns)), hashlib.sha256(der).hexdigest())
