"""One-line descriptions of OS errors, TLS ones included (their errno means nothing)."""

from __future__ import annotations

import errno
import ssl

from twoway.errors import describe_oserror


def test_plain_os_errors_read_as_phrases() -> None:
    assert describe_oserror(OSError(errno.EADDRINUSE, "Address in use")) == (
        "address already in use"
    )
    assert describe_oserror(TimeoutError()) == "timed out"


def test_a_failed_certificate_check_says_so_not_operation_not_permitted() -> None:
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    exc.verify_message = "unable to get local issuer certificate"
    assert describe_oserror(exc) == (
        "TLS certificate verify failed: unable to get local issuer certificate"
    )


def test_other_tls_errors_give_their_reason() -> None:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    exc.reason = "WRONG_VERSION_NUMBER"
    assert describe_oserror(exc) == "TLS error: wrong version number"
