"""A TLS client certificate bound to a nick (``/register --cert``) identifies its holder when
it connects, with a real TLS server and Python's ``ssl`` client."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from .chatkit import TIMEOUT, Harness

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]


def _cert(d: Path, name: str) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            *EC,
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.pem",
        ],
        cwd=d,
        check=True,
        capture_output=True,
        timeout=30,
    )


class _TlsChat:
    def __init__(self, port: int, cert: Path, key: Path) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(cert, key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock = ctx.wrap_socket(raw)
        self.file = self.sock.makefile("rb")

    def expect(self, text: str) -> str:
        while True:
            line = self.file.readline()
            assert line, f"end of stream before {text!r}"
            s = line.decode().rstrip("\r\n")
            if text in s:
                return s

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_a_bound_certificate_identifies_on_connect(chat: Harness, tmp_path: Path) -> None:
    _cert(tmp_path, "server")
    _cert(tmp_path, "alice")
    srv = chat.start(
        "--flood-rate", "0",
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
        "--tls-client-ca", str(tmp_path / "alice.pem"),
    )  # fmt: skip
    pem, key = tmp_path / "alice.pem", tmp_path / "alice.key"
    first = _TlsChat(srv.port, pem, key)
    first.expect("type /help")
    first.send("/nick alice")
    first.expect("is now known as alice")
    first.send("/register --cert")
    assert first.expect("registered") == "*** alice is registered to you and your certificate"
    first.send("/quit")
    first.expect("Bye Bye!")
    first.close()
    again = _TlsChat(srv.port, pem, key)
    assert again.expect("identified") == "*** you are identified as alice (certificate)"
    again.send("/who")
    assert "alice" in again.expect("*** in #lobby")
    again.close()
