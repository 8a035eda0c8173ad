"""``twoway connect --tls``: verification on by default, ``--tls-ca``, ``--tls-servername``,
client certificates, ``--insecure``; against ``twoway serve --tls-cert`` and ``openssl
s_server``. A failed verification is one line naming the reason, and a non-zero exit."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from helpers import TWOWAY, UNIT, CliServer, cli_env
from helpers import start_server as start

from .clientkit import free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=30, check=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA; ``server`` (127.0.0.1 and localhost) and ``client`` signed by it; ``self``, a
    self-signed certificate for 127.0.0.1."""
    d = tmp_path_factory.mktemp("tlsclient")
    openssl(d, "req", "-x509", *EC, "-subj", "/CN=test CA", "-days", "2",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(d, "req", "-new", *EC, "-subj", f"/CN={name}.test", "-keyout", f"{name}.key",
                "-out", f"{name}.csr")  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")  # fmt: skip
    openssl(d, "req", "-x509", *EC, "-subj", "/CN=self", "-days", "2", "-addext",
            "subjectAltName=IP:127.0.0.1", "-keyout", "self.key", "-out", "self.pem")  # fmt: skip
    return d


def connect(
    *args: str, send: bytes = b"hello\n", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``twoway connect ARGS`` in pipe mode: ``send``, then EOF; waits for the exit."""
    return subprocess.run(
        [*TWOWAY, "connect", *args],
        input=send.decode(),
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=20 * UNIT,
        check=False,
    )


def tls_server(servers: list[CliServer], certs: Path, name: str, *more: str) -> CliServer:
    return start(
        servers, "upper", "--tls-cert", str(certs / f"{name}.pem"),
        "--tls-key", str(certs / f"{name}.key"), *more,
    )  # fmt: skip


class SServer:
    """``openssl s_server -rev`` (each line sent back reversed), on a free port."""

    def __init__(self, certs: Path, *more: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-rev",
             "-cert", str(certs / "server.pem"), "-key", str(certs / "server.key"), *more],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:  # "ACCEPT" once it listens
            if raw.strip() == b"ACCEPT":
                break
        else:
            raise AssertionError("openssl s_server did not start")

    def output(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10 * UNIT)
        return out.decode(errors="replace")


@pytest.fixture
def s_server(certs: Path) -> Iterator[list[SServer]]:
    started: list[SServer] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate()


def one_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, (done.returncode, done.stderr)
    return lines[0]


# ------------------------------------------------------------------------ verification


@pytest.mark.parametrize("client_loop", ["asyncio", "uvloop"])
def test_verified_against_the_given_ca(
    certs: Path, servers: list[CliServer], client_loop: str
) -> None:
    if client_loop == "uvloop":
        pytest.importorskip("uvloop")
    server = tls_server(servers, certs, "server")
    for host in ("127.0.0.1", "localhost"):
        done = connect("--tls-ca", str(certs / "ca.pem"), "--loop", client_loop,
                       host, str(server.port))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == 'You said "HELLO"\n' and done.stderr == ""
    assert server.error_lines() == []


def test_self_signed_is_refused_by_default_in_one_line(
    certs: Path, servers: list[CliServer]
) -> None:
    server = tls_server(servers, certs, "self")
    done = connect("--tls", "127.0.0.1", str(server.port))
    assert one_error(done) == (
        f"twoway: cannot connect to 127.0.0.1:{server.port}: TLS: certificate verify failed: "
        "self-signed certificate (host 127.0.0.1)"
    )
    assert done.stdout == ""
    # The same certificate named as the CA: trusted.
    done = connect("--tls-ca", str(certs / "self.pem"), f"127.0.0.1:{server.port}")
    assert done.returncode == 0 and done.stdout == 'You said "HELLO"\n', done.stderr


def test_a_private_ca_is_not_in_the_system_store(certs: Path, servers: list[CliServer]) -> None:
    server = tls_server(servers, certs, "server")
    line = one_error(connect("--tls", "127.0.0.1", str(server.port)))
    assert line.endswith(
        "TLS: certificate verify failed: unable to get local issuer certificate (host 127.0.0.1)"
    )


def test_servername_is_checked_and_sent(
    certs: Path, servers: list[CliServer], s_server: list[SServer]
) -> None:
    server = tls_server(servers, certs, "server")
    ca = str(certs / "ca.pem")
    line = one_error(connect("--tls-ca", ca, "--tls-servername", "other.example",
                             "127.0.0.1", str(server.port)))  # fmt: skip
    assert "TLS: certificate verify failed: Hostname mismatch" in line
    assert line.endswith("(host other.example)")
    # The name is what SNI carries: s_server prints the name it received.
    peer = SServer(certs, "-servername", "localhost", "-cert2", str(certs / "server.pem"),
                   "-key2", str(certs / "server.key"), "-naccept", "1")  # fmt: skip
    s_server.append(peer)
    done = connect("--tls-ca", ca, "--tls-servername", "localhost", "127.0.0.1", str(peer.port))
    assert done.returncode == 0 and done.stdout == "olleh\n", done.stderr
    assert 'Hostname in TLS extension: "localhost"' in peer.output()


def test_insecure_says_so_once_and_connects(certs: Path, servers: list[CliServer]) -> None:
    server = tls_server(servers, certs, "self")
    done = connect("--insecure", "127.0.0.1", str(server.port), send=b"a\nb\n")
    assert done.returncode == 0
    assert done.stdout == 'You said "A"\nYou said "B"\n'
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "--insecure: the server's certificate is not verified" in lines[0]


def test_env_variables_work_like_the_flags(certs: Path, servers: list[CliServer]) -> None:
    server = tls_server(servers, certs, "server")
    env = {"TWOWAY_CONNECT_TLS_CA": str(certs / "ca.pem")}
    done = connect("127.0.0.1", str(server.port), env=env)
    assert done.returncode == 0 and done.stdout == 'You said "HELLO"\n', done.stderr


def test_plain_server_is_one_line(servers: list[CliServer]) -> None:
    server = start(servers, "echo")
    line = one_error(connect("--tls", "127.0.0.1", str(server.port)))
    assert line.startswith(f"twoway: cannot connect to 127.0.0.1:{server.port}: TLS: ")
    assert line.endswith("(is it a TLS server?)")


# ------------------------------------------------------------------------ client certs


def test_client_certificate_to_s_server(certs: Path, s_server: list[SServer]) -> None:
    peer = SServer(certs, "-Verify", "1", "-CAfile", str(certs / "ca.pem"), "-naccept", "1")
    s_server.append(peer)
    done = connect("--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / "client.pem"),
                   "--tls-key", str(certs / "client.key"), "127.0.0.1", str(peer.port))  # fmt: skip
    assert done.returncode == 0 and done.stdout == "olleh\n", done.stderr
    out = peer.output()
    assert "CN = client.test" in out or "CN=client.test" in out, out


def test_client_certificate_to_twoway_serve(certs: Path, servers: list[CliServer]) -> None:
    server = tls_server(servers, certs, "server", "--tls-client-ca", str(certs / "ca.pem"))
    ca = str(certs / "ca.pem")
    mine = ["--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client.key")]
    done = connect("--tls-ca", ca, *mine, "127.0.0.1", str(server.port))
    assert done.returncode == 0 and done.stdout == 'You said "HELLO"\n', done.stderr
    # Without one: refused. Under TLS 1.3 the refusal comes after the client's side of the
    # handshake, as an alert uvloop reports as a reset and asyncio as an end of stream.
    done = connect("--tls-ca", ca, "127.0.0.1", str(server.port))
    assert "You said" not in done.stdout
    server.wait_for(r"TLS handshake failed: no client certificate")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-ca", "/nonexistent/ca.pem"], "twoway: cannot read --tls-ca /nonexistent/ca.pem"),
        (["--tls-ca", "{d}/server.key"], "no PEM certificate in it"),
        (["--tls-cert", "{d}/client.pem"], "cannot load the certificate and key"),
        (["--tls-cert", "{d}/client.pem", "--tls-key", "{d}/server.key"], "does not match"),
        (["--tls-key", "{d}/client.key"], "--tls-key needs --tls-cert"),
    ],
)
def test_bad_files_are_one_line_and_exit_2(certs: Path, args: Sequence[str], message: str) -> None:
    port = free_port()
    done = connect(*[a.format(d=certs) for a in args], "127.0.0.1", str(port))
    assert done.returncode == 2
    assert message in one_error(done)
