"""``twoway serve ... --tls-cert``: TLS on every service, against real peers (``openssl
s_client``, ``ncat --ssl``, ``socat OPENSSL:``), with reload on SIGHUP, hostile handshakes and
the file/dump services under TLS. Each CLI test runs the server on both event loops."""

from __future__ import annotations

import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from helpers import UNIT, CliServer, connect, run_cli
from helpers import start_server as start

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def openssl(cwd: Path, *args: str, stdin: bytes = b"") -> str:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, input=stdin, capture_output=True, timeout=30, check=True
    )
    return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    for name in ("a", "b"):
        openssl(d, "req", "-x509", *EC, "-subj", f"/CN=server-{name}", "-days", "2",
                "-keyout", f"{name}.key", "-out", f"{name}.pem")  # fmt: skip
    (d / "a-both.pem").write_bytes((d / "a.pem").read_bytes() + (d / "a.key").read_bytes())
    return d


def fp(path: Path) -> str:
    """The SHA-256 of a PEM certificate, lower-case hex."""
    der = ssl.PEM_cert_to_DER_cert(path.read_text().split("-----END CERTIFICATE-----")[0]
                                   + "-----END CERTIFICATE-----\n")  # fmt: skip
    import hashlib

    return hashlib.sha256(der).hexdigest()


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsClient:
    """A blocking TLS client (Python's ``ssl``), for a connection held open across a reload."""

    def __init__(self, port: int) -> None:
        raw = connect(port)
        raw.settimeout(10 * UNIT)
        self.sock = client_context().wrap_socket(raw)
        self.buf = b""

    @property
    def fingerprint(self) -> str:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        import hashlib

        return hashlib.sha256(der).hexdigest()

    def ask(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"\n")
        return out

    def close(self) -> None:
        self.sock.close()


def s_client(port: int, send: bytes = b"hello\n", *args: str) -> tuple[str, str]:
    """``openssl s_client``: sends ``send`` then EOF, returns (stdout, served fingerprint)."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args],
        input=send + b"quit\n",
        capture_output=True,
        timeout=15 * UNIT,
        check=False,
    )
    out = done.stdout.decode(errors="replace")
    start = out.find("-----BEGIN CERTIFICATE-----")
    found = ""
    if start >= 0:
        end = out.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
        import hashlib

        found = hashlib.sha256(ssl.PEM_cert_to_DER_cert(out[start:end])).hexdigest()
    return out, found


# ---------------------------------------------------------------------------- real peers


def test_upper_over_tls_with_s_client_ncat_and_socat(
    certs: Path, loop: str, servers: list[CliServer]
) -> None:
    server = start(servers, "upper", "--tls-cert", str(certs / "a-both.pem"), loop=loop)
    assert "with TLS 1.2+" in server.stderr
    out, seen = s_client(server.port)
    assert 'You said "HELLO"' in out and seen == fp(certs / "a.pem")
    if shutil.which("ncat"):
        done = subprocess.run(
            ["ncat", "--ssl", "127.0.0.1", str(server.port)],
            input=b"from ncat\n", capture_output=True, timeout=15 * UNIT, check=False,
        )  # fmt: skip
        assert b'You said "FROM NCAT"' in done.stdout
    if shutil.which("socat"):
        done = subprocess.run(
            ["socat", "-", f"OPENSSL:127.0.0.1:{server.port},verify=0"],
            input=b"from socat\n", capture_output=True, timeout=15 * UNIT, check=False,
        )  # fmt: skip
        assert b'You said "FROM SOCAT"' in done.stdout
    assert server.error_lines() == []


def test_chat_over_tls_with_a_separate_key(certs: Path, servers: list[CliServer]) -> None:
    server = start(
        servers, "chat", "--tls-cert", str(certs / "b.pem"), "--tls-key", str(certs / "b.key"),
        "--tls-min-version", "1.3",
    )  # fmt: skip
    out, seen = s_client(server.port, b"/nick alice\n")
    assert seen == fp(certs / "b.pem") and "alice" in out
    out, _ = s_client(server.port, b"", "-tls1_2")
    assert "You said" not in out
    server.wait_for(r"TLS handshake failed: no TLS version in common")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "/nonexistent/cert.pem"], "cannot read TLS certificate /nonexistent"),
        (["--tls-cert", "{a}.pem"], "contains no private key: give --tls-key"),
        (["--tls-cert", "{a}.pem", "--tls-key", "{b}.key"], "does not match the certificate"),
        (["--tls-key", "{a}.key"], "--tls-key needs --tls-cert"),
        (["--tls-cert", "{a}-both.pem", "--tls-min-version", "1.1"], "not one of 1.2, 1.3"),
        (["--deny", "10.0.0.1/8"], "--deny: '10.0.0.1/8' has host bits set"),
    ],
)
def test_a_bad_start_is_one_line_and_a_non_zero_exit(
    certs: Path, args: list[str], message: str
) -> None:
    args = [a.format(a=certs / "a", b=certs / "b") for a in args]
    done = run_cli("serve", "upper", "--port", "0", *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


# ---------------------------------------------------------------------------- reload


def install(certs: Path, live: Path, name: str) -> None:
    shutil.copy(certs / f"{name}.pem", live / "cert.pem")
    shutil.copy(certs / f"{name}.key", live / "key.pem")


def test_sighup_new_certificate_for_new_handshakes_open_ones_keep_theirs(
    certs: Path, tmp_path: Path, loop: str, servers: list[CliServer]
) -> None:
    install(certs, tmp_path, "a")
    server = start(
        servers, "upper", "--tls-cert", str(tmp_path / "cert.pem"),
        "--tls-key", str(tmp_path / "key.pem"), loop=loop,
    )  # fmt: skip
    old = TlsClient(server.port)
    try:
        assert old.ask(b"before") == b'You said "BEFORE"' and old.fingerprint == fp(certs / "a.pem")
        install(certs, tmp_path, "b")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: TLS certificate .* for new handshakes")
        _, seen = s_client(server.port)
        assert seen == fp(certs / "b.pem")
        assert old.ask(b"still here") == b'You said "STILL HERE"'
        assert old.fingerprint == fp(certs / "a.pem")
        # A bad new certificate: one line, and the one in use stays.
        (tmp_path / "cert.pem").write_text("not a certificate\n")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: .*contains no PEM certificate; the certificate in use stays")
        _, seen = s_client(server.port)
        assert seen == fp(certs / "b.pem")
        assert old.ask(b"and now") == b'You said "AND NOW"'
    finally:
        old.close()
    assert server.count("Traceback") == 0


def test_workers_pass_sighup_on(certs: Path, tmp_path: Path, servers: list[CliServer]) -> None:
    install(certs, tmp_path, "a")
    server = start(
        servers, "upper", "--workers", "2", "--tls-cert", str(tmp_path / "cert.pem"),
        "--tls-key", str(tmp_path / "key.pem"),
    )  # fmt: skip
    server.wait_for("listening on", count=2)
    install(certs, tmp_path, "b")
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload: TLS certificate", count=2)
    for _ in range(4):  # whichever worker the kernel picks
        _, seen = s_client(server.port)
        assert seen == fp(certs / "b.pem")
    assert server.running


# ---------------------------------------------------------------------------- hostile peers


def test_plain_text_on_the_tls_port_is_one_line(
    certs: Path, loop: str, servers: list[CliServer]
) -> None:
    server = start(servers, "upper", "--tls-cert", str(certs / "a-both.pem"), loop=loop)
    with connect(server.port) as sock:
        sock.sendall(b"hello there\r\n")
        sock.settimeout(10 * UNIT)
        try:
            assert sock.recv(100) == b""  # closed, nothing said in plain text
        except ConnectionResetError:
            pass
    server.wait_for(r"127\.0\.0\.1:\d+: TLS handshake failed: not TLS \(plain text on a TLS port")
    out, _ = s_client(server.port)
    assert 'You said "HELLO"' in out
    assert server.count("TLS handshake failed") == 1 and server.count("Traceback") == 0


def eof_times(socks: list[socket.socket], timeout: float) -> list[float]:
    """When (monotonic) each socket saw its EOF or reset; fails at ``timeout``."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    times: list[float] = []
    deadline = time.monotonic() + timeout
    while len(times) < len(socks):
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(times)} of {len(socks)} sockets were closed"
        for key, _ in sel.select(left):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b""
            times.append(time.monotonic())
            sel.unregister(s)
    sel.close()
    return times


def test_unfinished_handshakes_are_cut_at_the_timeout_within_max_conns(
    certs: Path, loop: str, servers: list[CliServer]
) -> None:
    timeout = 3 * UNIT
    server = start(
        servers, "upper", "--tls-cert", str(certs / "a-both.pem"), "--max-conns", "50",
        "--tls-handshake-timeout", f"{timeout:g}",
        "--max-handshakes-per-ip", "0",  # all from one address: only max-conns bounds them
        loop=loop,
    )  # fmt: skip
    socks = []
    try:
        opened = time.monotonic()
        for _ in range(200):
            socks.append(connect(server.port))
        times = eof_times(socks, 10 * timeout)
    finally:
        for s in socks:
            s.close()
    # 150 were refused at once (no slot), the 50 holding a slot were cut at the timeout.
    early = [t for t in times if t - opened < timeout * 0.8]
    late = [t for t in times if t - opened >= timeout * 0.8]
    assert len(early) == 150 and len(late) == 50, (len(early), len(late))
    server.wait_for(r"TLS handshake failed: not finished within the handshake timeout")
    # The slots are free again: a real client gets in.
    out, _ = s_client(server.port)
    assert 'You said "HELLO"' in out
    # Bounded log: one line per (address, reason) per minute.
    assert server.count("TLS handshake failed") == 1
    assert server.count("server full") == 1
    assert server.count("Traceback") == 0


# ---------------------------------------------------------------------------- file and dump


def test_file_falls_back_from_sendfile_under_tls_and_says_so_once(
    certs: Path, tmp_path: Path, loop: str, servers: list[CliServer]
) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "blob").write_bytes(payload)
    server = start(
        servers, "file", str(tmp_path / "blob"), "--tls-cert", str(certs / "a-both.pem"),
        loop=loop,
    )  # fmt: skip
    for _ in range(2):
        with connect(server.port) as raw:
            raw.settimeout(10 * UNIT)
            with client_context().wrap_socket(raw) as tls:
                got = b""
                while chunk := tls.recv(65536):
                    got += chunk
        assert got == payload
    assert server.count(r"sendfile\(2\) cannot be used \(TLS\)") == 1


def test_dump_stores_the_plaintext_under_tls(
    certs: Path, tmp_path: Path, loop: str, servers: list[CliServer]
) -> None:
    if shutil.which("socat") is None:
        pytest.skip("needs socat")
    # One file per connection (--dir) is the case splice(2) would take on plain TCP.
    server = start(
        servers, "dump", "--dir", str(tmp_path / "d"), "--tls-cert", str(certs / "a-both.pem"),
        loop=loop,
    )  # fmt: skip
    payload = b"".join(b"line %06d of the upload\n" % i for i in range(20000))
    done = subprocess.run(
        ["socat", "-u", "-", f"OPENSSL:127.0.0.1:{server.port},verify=0"],
        input=payload, capture_output=True, timeout=30 * UNIT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    server.wait_for(r"closed 127\.0\.0\.1:\d+ \(in ")
    server.stop()
    files = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == payload


def test_a_tls_hello_on_a_plain_port_is_one_line(loop: str, servers: list[CliServer]) -> None:
    server = start(servers, "upper", loop=loop)
    for _ in range(3):
        out, seen = s_client(server.port)
        assert seen == "" and "You said" not in out
    server.wait_for(r"127\.0\.0\.1:\d+: a TLS handshake on a plain port")
    with connect(server.port) as sock:  # plain clients are served as ever
        sock.sendall(b"plain\n")
        sock.settimeout(10 * UNIT)
        assert sock.recv(100).startswith(b'You said "PLAIN"')
    assert server.count("a TLS handshake on a plain port") == 1
    assert server.count("Traceback") == 0
