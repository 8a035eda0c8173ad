"""TLS contexts, live certificate reload and client certificates, against ``openssl s_client``.

Certificates are made here with the ``openssl`` command. Every async test runs on asyncio
and on uvloop (see conftest): the reload mechanism (``sni_callback`` switching the
handshake's context) must work on both, since each binds one context per listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import UNIT, loop_name, wait_until
from twoway.errors import ConfigError
from twoway.net.tlspeer import PeerCertificate, describe_handshake_error, peer_certificate
from twoway.tls import (
    ServerTls,
    TlsSettings,
    certificate_info,
    normalize_fingerprint,
    server_context,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
LEAF_EXT = (
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
)


def openssl(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


def self_signed(d: Path, name: str, subj: str, days: int = 2, ca: bool = False) -> None:
    ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign"]
    openssl(d, "req", "-x509", *EC, "-subj", subj, "-days", str(days),
            "-keyout", f"{name}.key", "-out", f"{name}.pem", *(ext if ca else []))  # fmt: skip


def signed(d: Path, name: str, subj: str, ca: str) -> None:
    (d / "leaf.ext").write_text(LEAF_EXT)
    openssl(d, "req", "-new", *EC, "-subj", subj, "-keyout", f"{name}.key", "-out", f"{name}.csr")
    sign = ["-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-set_serial", "7", "-days", "2"]
    openssl(
        d,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        *sign,
        "-extfile",
        "leaf.ext",
        "-out",
        f"{name}.pem",
    )


def fingerprint_of(d: Path, name: str) -> str:
    out = openssl(d, "x509", "-in", name, "-noout", "-fingerprint", "-sha256")
    return normalize_fingerprint(out)


@dataclass
class Certs:
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def fp(self, name: str) -> str:
        return fingerprint_of(self.dir, f"{name}.pem")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    self_signed(d, "a", "/CN=server-a")
    self_signed(d, "b", "/CN=server-b")
    self_signed(d, "far", "/CN=far-future", days=10_000)  # past 2049: GeneralizedTime
    (d / "a-both.pem").write_bytes((d / "a.pem").read_bytes() + (d / "a.key").read_bytes())
    self_signed(d, "ca", "/CN=Test Client CA", ca=True)
    self_signed(d, "evil-ca", "/CN=Evil CA", ca=True)
    signed(d, "alice", "/C=FR/O=Example, Inc./CN=alice", "ca")
    signed(d, "mallory", "/CN=mallory", "evil-ca")
    openssl(d, "pkey", "-in", "a.key", "-aes256", "-passout", "pass:secret", "-out", "enc.key")
    return Certs(d)


# ---------------------------------------------------------------------------- a real server


@dataclass
class Served:
    port: int
    peers: list[PeerCertificate | None]


@contextlib.asynccontextmanager
async def tls_server(tls: ServerTls) -> AsyncIterator[Served]:
    """An echo server on 127.0.0.1 with ``tls.context``, closing on ``quit``; ``peers``
    records each handshaken client's certificate."""
    peers: list[PeerCertificate | None] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(peer_certificate(writer.transport))
        writers.append(writer)
        with contextlib.suppress(OSError, ssl.SSLError):
            while (line := await reader.readline()) and line != b"quit\n":
                writer.write(line)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=tls.context, ssl_handshake_timeout=5 * UNIT
    )
    try:
        yield Served(server.sockets[0].getsockname()[1], peers)
    finally:
        server.close()
        for w in writers:
            w.transport.abort()
        await server.wait_closed()


@dataclass
class SClient:
    code: int
    out: str
    err: str

    @property
    def fingerprint(self) -> str:
        """The SHA-256 of the certificate the server presented."""
        start = self.out.index("-----BEGIN CERTIFICATE-----")
        end = self.out.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
        der = ssl.PEM_cert_to_DER_cert(self.out[start:end])
        return hashlib.sha256(der).hexdigest()


async def s_client(port: int, *args: str, send: bytes = b"") -> SClient:
    """Run ``openssl s_client`` against the port; with ``-ign_eof`` it keeps reading after
    ``send`` until the server closes (send ``quit``), so an echo (or a refusal) is seen."""
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(send), 10 * UNIT)
    assert proc.returncode is not None
    return SClient(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def install(certs: Certs, live: Path, name: str) -> None:
    """Put ``name``'s certificate and key at the paths the server was started with, as a
    certificate renewal does."""
    shutil.copy(certs.path(f"{name}.pem"), live / "cert.pem")
    shutil.copy(certs.path(f"{name}.key"), live / "key.pem")


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------------------- reload


async def test_reload_new_handshakes_get_the_new_cert_open_ones_keep_theirs(
    certs: Certs, tmp_path: Path
) -> None:
    assert loop_name() in ("asyncio", "uvloop")
    install(certs, tmp_path, "a")
    tls = ServerTls(TlsSettings(tmp_path / "cert.pem", tmp_path / "key.pem"))
    assert tls.info.fingerprint == certs.fp("a")
    async with tls_server(tls) as srv:
        assert (await s_client(srv.port, "-servername", "chat.example")).fingerprint == certs.fp(
            "a"
        )
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=client_context(), server_hostname=None
        )
        held = hashlib.sha256(writer.get_extra_info("ssl_object").getpeercert(True)).hexdigest()
        assert held == certs.fp("a")

        install(certs, tmp_path, "b")
        info = tls.reload()
        assert info.fingerprint == certs.fp("b") and tls.reloads == 1

        for args in (["-servername", "chat.example"], ["-noservername"]):
            seen = await s_client(srv.port, *args)
            assert seen.code == 0, seen.err
            assert seen.fingerprint == certs.fp("b"), args
        # The connection opened before the reload goes on, with its certificate.
        writer.write(b"still here\n")
        assert await asyncio.wait_for(reader.readline(), 5 * UNIT) == b"still here\n"
        assert writer.get_extra_info("ssl_object").getpeercert(True) == ssl.PEM_cert_to_DER_cert(
            certs.path("a.pem").read_text()
        )
        writer.close()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("mismatched key", r"^TLS key .*key\.pem does not match the certificate in .*cert\.pem$"),
        ("garbage cert", r"^TLS certificate .*cert\.pem contains no PEM certificate$"),
        ("missing cert", r"^cannot read TLS certificate .*cert\.pem: no such file or directory$"),
        ("empty key", r"^TLS key .*key\.pem contains no PEM private key$"),
    ],
)
async def test_a_bad_new_certificate_keeps_the_old_one(
    certs: Certs, tmp_path: Path, damage: str, message: str
) -> None:
    install(certs, tmp_path, "a")
    tls = ServerTls(TlsSettings(tmp_path / "cert.pem", tmp_path / "key.pem"))
    async with tls_server(tls) as srv:
        if damage == "mismatched key":
            shutil.copy(certs.path("b.pem"), tmp_path / "cert.pem")
        elif damage == "garbage cert":
            (tmp_path / "cert.pem").write_text("not a certificate\n")
        elif damage == "missing cert":
            (tmp_path / "cert.pem").unlink()
        else:
            (tmp_path / "key.pem").write_text("")
        with pytest.raises(ConfigError, match=message) as info:
            tls.reload()
        assert "\n" not in str(info.value)
        assert tls.reloads == 0 and tls.current is tls.context
        assert tls.info.fingerprint == certs.fp("a")
        seen = await s_client(srv.port, "-servername", "chat.example")
        assert seen.code == 0, seen.err
        assert seen.fingerprint == certs.fp("a")
        # Repaired, it reloads.
        install(certs, tmp_path, "b")
        tls.reload()
        assert (await s_client(srv.port)).fingerprint == certs.fp("b")


# ---------------------------------------------------------------------------- client certificates


async def test_client_certificate_verified_and_identified(certs: Certs) -> None:
    tls = ServerTls(TlsSettings(certs.path("a-both.pem"), client_ca=certs.path("ca.pem")))
    async with tls_server(tls) as srv:
        seen = await s_client(
            srv.port, "-cert", str(certs.path("alice.pem")), "-key", str(certs.path("alice.key")),
            "-ign_eof", send=b"hello from alice\nquit\n",
        )  # fmt: skip
        assert "hello from alice" in seen.out, seen.err
        subject = openssl(certs.dir, "x509", "-in", "alice.pem", "-noout", "-subject",
                          "-nameopt", "RFC2253")  # fmt: skip
        assert srv.peers == [PeerCertificate(subject.removeprefix("subject="), certs.fp("alice"))]
        assert srv.peers[0] is not None
        assert srv.peers[0].subject == "CN=alice,O=Example\\, Inc.,C=FR"


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
async def test_client_without_a_trusted_certificate_is_refused(certs: Certs, who: str) -> None:
    tls = ServerTls(TlsSettings(certs.path("a-both.pem"), client_ca=certs.path("ca.pem")))
    args = ["-ign_eof"]
    if who != "no certificate":
        args += ["-cert", str(certs.path("mallory.pem")), "-key", str(certs.path("mallory.key"))]
    async with tls_server(tls) as srv:
        seen = await s_client(srv.port, *args, send=b"let me in\nquit\n")
        assert "let me in" not in seen.out
        # How the client learns it varies with timing and loop (the alert, an EOF or a
        # reset: asyncio's SSLProtocol may drop the connection before flushing the alert);
        # what matters is that it failed and nothing was served.
        assert seen.code != 0, seen.out
        assert srv.peers == []  # the handshake never completed: no connection was served


async def test_reload_applies_a_new_client_ca(certs: Certs, tmp_path: Path) -> None:
    ca = tmp_path / "clients.pem"
    shutil.copy(certs.path("ca.pem"), ca)
    tls = ServerTls(TlsSettings(certs.path("a-both.pem"), client_ca=ca))

    async def attempt(port: int, who: str) -> bool:
        key = ["-cert", str(certs.path(f"{who}.pem")), "-key", str(certs.path(f"{who}.key"))]
        seen = await s_client(port, *key, "-ign_eof", send=f"I am {who}\nquit\n".encode())
        return f"I am {who}" in seen.out

    async with tls_server(tls) as srv:
        assert await attempt(srv.port, "alice") and not await attempt(srv.port, "mallory")
        shutil.copy(certs.path("evil-ca.pem"), ca)
        tls.reload()
        assert await attempt(srv.port, "mallory") and not await attempt(srv.port, "alice")
        subjects = [p.subject if p else None for p in srv.peers]
        assert subjects == ["CN=alice,O=Example\\, Inc.,C=FR", "CN=mallory"]


async def test_no_client_ca_means_no_peer_certificate(certs: Certs) -> None:
    tls = ServerTls(TlsSettings(certs.path("a-both.pem")))
    async with tls_server(tls) as srv:
        seen = await s_client(srv.port, "-ign_eof", send=b"hi\nquit\n")
        assert "hi" in seen.out.splitlines()
        assert srv.peers == [None]


async def test_min_version_1_3_refuses_a_1_2_client(certs: Certs) -> None:
    tls = ServerTls(TlsSettings(certs.path("a-both.pem"), min_version="1.3"))
    async with tls_server(tls) as srv:
        old = await s_client(srv.port, "-tls1_2", "-ign_eof", send=b"x\nquit\n")
        # Neither loop flushes the protocol_version alert before closing: the client sees
        # the handshake end without a certificate, which is the refusal.
        assert old.code != 0 and "no peer certificate available" in old.out, old.out
        new = await s_client(srv.port, "-tls1_3", "-ign_eof", send=b"x\nquit\n")
        assert new.code == 0 and "TLSv1.3" in new.out
        assert len(srv.peers) == 1


async def test_default_min_version_serves_1_2(certs: Certs) -> None:
    tls = ServerTls(TlsSettings(certs.path("a.pem"), certs.path("a.key")))
    async with tls_server(tls) as srv:
        seen = await s_client(srv.port, "-tls1_2", "-ign_eof", send=b"x\nquit\n")
        assert seen.code == 0 and "TLSv1.2" in seen.out, seen.err


# ---------------------------------------------------------------------------- building contexts


def test_context_defaults(certs: Certs) -> None:
    ctx = server_context(TlsSettings(certs.path("a.pem"), certs.path("a.key")))
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode is ssl.CERT_NONE
    assert ctx.options & ssl.OP_NO_RENEGOTIATION and ctx.options & ssl.OP_NO_COMPRESSION
    ctx = server_context(TlsSettings(certs.path("a-both.pem"), client_ca=certs.path("ca.pem")))
    assert ctx.verify_mode is ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("cert", "key", "extra", "message"),
    [
        ("a.pem", None, {}, r"^TLS certificate .*a\.pem contains no private key: give --tls-key$"),
        ("a.pem", "b.key", {}, r"^TLS key .*b\.key does not match the certificate in .*a\.pem$"),
        ("a.pem", "enc.key", {}, r"^TLS key .*enc\.key is encrypted: .*without a passphrase"),
        ("a.key", "a.key", {}, r"^TLS certificate .*a\.key contains no PEM certificate$"),
        ("a.pem", "a.pem", {}, r"^TLS key .*a\.pem contains no PEM private key$"),
        ("nope.pem", None, {}, r"^cannot read TLS certificate .*nope\.pem: no such file"),
        ("a.pem", "nope.key", {}, r"^cannot read TLS key .*nope\.key: no such file"),
        ("a-both.pem", None, {"min_version": "1.1"}, r"^--tls-min-version: '1\.1' is not 1\.2"),
        ("a-both.pem", None, {"client_ca": "nope.pem"}, r"^cannot read TLS client CA file"),
        ("a-both.pem", None, {"client_ca": "a.key"}, r"client CA file .*a\.key contains no cert"),
    ],
)
def test_every_mistake_is_one_line_naming_the_file(
    certs: Certs, cert: str, key: str | None, extra: dict[str, str], message: str
) -> None:
    if "client_ca" in extra:
        extra = {"client_ca": str(certs.path(extra["client_ca"]))}
    settings = TlsSettings(certs.path(cert), certs.path(key) if key else None, **extra)
    with pytest.raises(ConfigError, match=message) as info:
        ServerTls(settings)
    assert "\n" not in str(info.value)


def test_encrypted_key_in_the_cert_file_never_prompts(certs: Certs, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(certs.path("a.pem").read_bytes() + certs.path("enc.key").read_bytes())
    with pytest.raises(ConfigError, match="is encrypted"):
        server_context(TlsSettings(both))


def test_certificate_info_matches_openssl(certs: Certs) -> None:
    for name in ("a", "far"):
        info = certificate_info(certs.path(f"{name}.pem"))
        assert info.fingerprint == certs.fp(name)
        end = openssl(certs.dir, "x509", "-in", f"{name}.pem", "-noout", "-enddate")
        expected = datetime.strptime(end.removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z")
        assert info.not_after == expected.replace(tzinfo=UTC)
        assert not info.expired(datetime.now(UTC))
        assert info.expired(info.not_after.replace(year=info.not_after.year + 1))
    assert certificate_info(certs.path("far.pem")).not_after.year > 2049
    assert "valid until" in certificate_info(certs.path("a.pem")).describe()


def test_normalize_fingerprint() -> None:
    fp = "ab" * 32
    assert normalize_fingerprint("sha256 Fingerprint=" + ":".join(["AB"] * 32)) == fp
    assert normalize_fingerprint(fp.upper()) == fp
    with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
        normalize_fingerprint("abcd")


# ---------------------------------------------------------------------------- failed handshakes


@contextlib.asynccontextmanager
async def accepting(tls: ServerTls) -> AsyncIterator[tuple[int, asyncio.Queue[str]]]:
    """A listener that accepts sockets itself and starts TLS with
    ``connect_accepted_socket``, which awaits the handshake: each failure lands here, as the
    server will log it (the loops' own ``create_server(ssl=...)`` drops them silently)."""
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Queue[str] = asyncio.Queue()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()

    async def one(sock: socket.socket) -> None:
        try:
            transport, _ = await loop.connect_accepted_socket(
                asyncio.Protocol, sock, ssl=tls.context, ssl_handshake_timeout=1.5 * UNIT
            )
            outcomes.put_nowait("ok")
            transport.close()
        except OSError as exc:
            sock.close()
            outcomes.put_nowait(describe_handshake_error(exc))

    async def accept() -> None:
        while True:
            sock, _ = await loop.sock_accept(listener)
            tasks.add(task := asyncio.create_task(one(sock)))
            task.add_done_callback(tasks.discard)

    acceptor = asyncio.create_task(accept())
    try:
        yield listener.getsockname()[1], outcomes
    finally:
        acceptor.cancel()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(acceptor, *tasks, return_exceptions=True)
        listener.close()


async def test_failed_handshakes_are_one_phrase_each(certs: Certs) -> None:
    tls = ServerTls(TlsSettings(certs.path("a-both.pem"), min_version="1.3"))
    async with accepting(tls) as (port, outcomes):

        async def raw(data: bytes, reset: bool = False) -> str:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            if reset:
                await writer.drain()
                writer.transport.abort()
            outcome = await asyncio.wait_for(outcomes.get(), 10 * UNIT)
            writer.close()
            return outcome

        assert await raw(b"hello\r\n") == "not TLS (plain text on a TLS port?)"
        assert await raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == "an HTTP request on a TLS port"
        assert await raw(b"") == "not finished within the handshake timeout"
        assert await raw(b"\x16\x03\x01\x02\x00\x01", reset=True) in (
            "connection reset by the client",
            "the client closed the connection",
        )
        await s_client(port, "-tls1_2")
        assert await outcomes.get() == (
            "no TLS version in common (the client's is below the minimum)"
        )
        await s_client(port, "-ign_eof")
        assert await outcomes.get() == "ok"


async def test_failed_client_certificates_are_one_phrase_each(certs: Certs) -> None:
    tls = ServerTls(TlsSettings(certs.path("a-both.pem"), client_ca=certs.path("ca.pem")))
    async with accepting(tls) as (port, outcomes):
        await s_client(port)
        assert await outcomes.get() == "no client certificate"
        key = ["-cert", str(certs.path("mallory.pem")), "-key", str(certs.path("mallory.key"))]
        await s_client(port, *key)
        assert await outcomes.get() == (
            "client certificate rejected: unable to get local issuer certificate"
        )


def test_describe_handshake_error_fallbacks() -> None:
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    assert describe_handshake_error(alert) == "the client sent the alert 'unknown ca'"
    assert describe_handshake_error(TimeoutError()) == "not finished within the handshake timeout"
    assert describe_handshake_error(BrokenPipeError(32, "x")) == "broken pipe"


async def test_todays_twoway_server_reloads_through_servertls(certs: Certs, tmp_path: Path) -> None:
    """The building block needs nothing from the server but ``ssl=tls.context``."""
    from twoway.net import serve
    from twoway.services.echo import UpperService

    install(certs, tmp_path, "a")
    tls = ServerTls(TlsSettings(tmp_path / "cert.pem", tmp_path / "key.pem"))
    async with serve(UpperService(), "127.0.0.1", 0, ssl=tls.context) as server:
        port = server.addresses[0][1]
        seen = await s_client(port, "-ign_eof", send=b"hello\nquit\n")
        assert 'You said "HELLO"' in seen.out and seen.fingerprint == certs.fp("a")
        install(certs, tmp_path, "b")
        tls.reload()
        seen = await s_client(port, "-ign_eof", send=b"again\nquit\n")
        assert 'You said "AGAIN"' in seen.out and seen.fingerprint == certs.fp("b")


async def test_connection_carries_the_verified_client_certificate(certs: Certs) -> None:
    """``Connection.peer_certificate`` on a twoway server with a client CA: subject and
    fingerprint of the verified client; a client without one never reaches the service."""
    from twoway.net import Connection, LineService, serve

    seen: asyncio.Queue[PeerCertificate | None] = asyncio.Queue()

    class Who(LineService):
        def on_connect(self, conn: Connection) -> None:
            seen.put_nowait(conn.peer_certificate)
            conn.close()

    tls = ServerTls(TlsSettings(certs.path("a-both.pem"), client_ca=certs.path("ca.pem")))
    async with serve(Who(), "127.0.0.1", 0, ssl=tls.context) as server:
        port = server.addresses[0][1]
        key = ["-cert", str(certs.path("alice.pem")), "-key", str(certs.path("alice.key"))]
        await s_client(port, *key)
        got = await asyncio.wait_for(seen.get(), 10 * UNIT)
        assert got == PeerCertificate("CN=alice,O=Example\\, Inc.,C=FR", certs.fp("alice"))
        await s_client(port)  # no certificate: refused during the handshake
        await wait_until(lambda: server.stats.tls_failures == 1)
        assert seen.empty()
    async with serve(Who(), "127.0.0.1", 0, ssl=server_context(
        TlsSettings(certs.path("a-both.pem")))) as plain:  # fmt: skip
        await s_client(plain.addresses[0][1])
        assert await asyncio.wait_for(seen.get(), 10 * UNIT) is None
