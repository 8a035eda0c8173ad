"""Session resume on a cluster (chat servers on one redis-server), with plain socket
clients: a token works once across every server; a resume on the server the client left
replays from memory; a server restarted with SIGTERM lets its clients resume on itself and
on the other server, with exactly what they missed; no token is logged."""

from __future__ import annotations

import re
import socket
import struct

from .buskit import ChatClient, Cluster

TOKEN = re.compile(r"^\*\*\* resume token: (\S+)$")
SUMMARY = re.compile(r"^\*\*\* replayed (\d+) lines; (\d+) (missed|no longer kept)$")


def token_of(c: ChatClient) -> str:
    for line in reversed(c.history):
        if m := TOKEN.match(line):
            return m.group(1)
    raise AssertionError(f"no resume token in {c.history}")


def reset(c: ChatClient) -> None:
    """Drop ``c`` with an RST, as a network failure would."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def resume(cluster: Cluster, srv: object, token: str) -> ChatClient:
    back = cluster.client(srv)  # type: ignore[arg-type]
    back.send(f"/resume {token}")
    return back


def replayed(c: ChatClient) -> tuple[list[str], str]:
    lines = c.lines_until(SUMMARY)
    shown = [x.removeprefix("[history] ") for x in lines if x.startswith("[history] ")]
    return shown, c.history[-1]


def test_a_token_works_once_across_servers(cluster: Cluster) -> None:
    a, b = cluster.server(), cluster.server()
    alice = cluster.client(a, "alice")
    token = token_of(alice)
    bob = cluster.client(b, "bob")
    bob.knows("alice")
    reset(alice)
    bob.expect("*** alice left #lobby")
    bob.send("while away")
    bob.sync()
    back = resume(cluster, b, token)
    back.expect("*** resumed as alice in #lobby")
    shown, summary = replayed(back)
    assert (shown, summary) == (["bob: while away"], "*** replayed 1 lines; 0 missed")
    # Spent everywhere: on the server that made it, and on the one that took it.
    for srv in (a, b):
        again = resume(cluster, srv, token)
        assert again.expect("error:") == "error: resume refused (already used)"
    for srv in (a, b):
        assert token not in srv.stderr


def test_resume_on_the_same_server_replays_from_memory(cluster: Cluster) -> None:
    a, _ = cluster.server(), cluster.server()
    alice = cluster.client(a, "alice")
    token = token_of(alice)
    carol = cluster.client(a, "carol")
    reset(alice)
    carol.expect("*** alice left #lobby")
    for i in range(3):
        carol.send(f"line {i}")
    carol.sync()
    back = resume(cluster, a, token)
    back.expect("*** resumed as alice in #lobby")
    assert replayed(back) == (
        [f"carol: line {i}" for i in range(3)],
        "*** replayed 3 lines; 0 missed",
    )


def test_after_a_sigterm_restart_clients_resume_on_either_server(cluster: Cluster) -> None:
    a, b = cluster.server(), cluster.server()
    alice = cluster.client(a, "alice")
    dora = cluster.client(a, "dora")
    bob = cluster.client(b, "bob")
    bob.knows("dora")
    tokens = token_of(alice), token_of(dora)
    bob.send("before")
    alice.expect("bob: before")
    dora.expect("bob: before")
    assert a.stop() == 0  # SIGTERM: both sessions go to redis, their nicks held on B
    bob.expect("*** dora left #lobby (server shutting down)")
    assert bob.ask("/nick alice", "error:") == 'error: nick "alice" is already taken'
    bob.send("while a was down")
    bob.sync()
    a2 = cluster.server()
    back_b = resume(cluster, b, tokens[0])
    back_b.expect("*** resumed as alice in #lobby")
    assert replayed(back_b) == (["bob: while a was down"], "*** replayed 1 lines; 0 missed")
    back_a = resume(cluster, a2, tokens[1])
    back_a.expect("*** resumed as dora in #lobby")
    assert replayed(back_a) == (["bob: while a was down"], "*** replayed 1 lines; 0 missed")
