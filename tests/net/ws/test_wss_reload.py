"""``wss://`` picks up a reloaded certificate on SIGHUP: the WebSocket gateway over TLS
(``--ws`` with ``--tls-cert``) serves the new certificate to new handshakes while a
WebSocket opened before the reload stays open on the old one, and a bad new certificate
leaves the one in use."""

from __future__ import annotations

import hashlib
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import pytest

from helpers import CliServer

from .wskit import RawWs, start_ws

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def make_cert(d: Path, name: str) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", f"/CN=server-{name}", "-addext", "subjectAltName=DNS:localhost",
         "-days", "2", "-keyout", f"{name}.key", "-out", f"{name}.pem"],
        cwd=d, capture_output=True, check=True, timeout=30,
    )  # fmt: skip


def fp_file(path: Path) -> str:
    """The SHA-256 of a PEM certificate, lower-case hex."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def fp_served(ws: RawWs) -> str:
    """The SHA-256 of the certificate the server presented to ``ws``."""
    assert isinstance(ws.sock, ssl.SSLSocket)
    der = ws.sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def install(d: Path, live: Path, name: str) -> None:
    shutil.copy(d / f"{name}.pem", live / "cert.pem")
    shutil.copy(d / f"{name}.key", live / "key.pem")


def test_sighup_gives_new_wss_handshakes_the_new_certificate(
    servers: list[CliServer], tmp_path: Path
) -> None:
    made, live = tmp_path / "made", tmp_path / "live"
    made.mkdir()
    live.mkdir()
    for name in ("a", "b"):
        make_cert(made, name)
    install(made, live, "a")
    # The client trusts both certificates (each is its own CA): the check is the fingerprint.
    ctx = ssl.create_default_context()
    for name in ("a", "b"):
        ctx.load_verify_locations(cafile=str(made / f"{name}.pem"))
    server, port = start_ws(
        servers, "chat", "--tls-cert", str(live / "cert.pem"), "--tls-key", str(live / "key.pem")
    )
    assert server.wait_for("WebSocket gateway on (wss?)://").group(1) == "wss"
    with RawWs(port, tls=ctx) as old:
        old.expect("type /help")
        assert fp_served(old) == fp_file(made / "a.pem")
        old.send_text("/nick olda")
        old.expect("now known as olda")
        install(made, live, "b")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: TLS certificate .* for new handshakes")
        with RawWs(port, tls=ctx) as new:
            new.expect("type /help")
            assert fp_served(new) == fp_file(made / "b.pem")
            new.send_text("hello from b")
            # The WebSocket opened before the reload is still open, on certificate A.
            assert old.expect("hello from b").endswith("hello from b")
            assert fp_served(old) == fp_file(made / "a.pem")
            old.send_text("still here")
            new.expect("olda: still here")
        # A bad new certificate: one line, and certificate B stays for new handshakes.
        (live / "cert.pem").write_text("not a certificate\n")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: .*contains no PEM certificate; the certificate in use stays")
        with RawWs(port, tls=ctx) as again:
            again.expect("type /help")
            assert fp_served(again) == fp_file(made / "b.pem")
        old.send_text("/who")  # the old WebSocket still answers
        old.expect("*** in #lobby")
    assert server.count("Traceback") == 0
