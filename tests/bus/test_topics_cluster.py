"""Room topics on a cluster (chat servers on one redis-server): a topic set on one server is
kept in Redis, so a server that did not have the room then shows it when the room is created
there, and every server shows it after all of them restarted."""

from __future__ import annotations

from .buskit import Cluster


def test_a_topic_outlives_every_server(cluster: Cluster) -> None:
    a, b = cluster.server(), cluster.server()
    alice = cluster.client(a, "alice")
    bob = cluster.client(b, "bob")
    bob.knows("alice")
    alice.send("/join dev")
    alice.expect("*** you are in #dev")
    alice.send("/topic shipping on friday")
    alice.expect("*** alice set the topic: shipping on friday")
    alice.send("/join lobby")  # #dev is empty everywhere now (once B has heard it)
    bob.expect("*** alice joined #lobby")
    bob.send("/join dev")  # created on B, which never had it: the topic came on the bus
    bob.expect("*** you are in #dev")
    assert bob.expect("*** topic:") == "*** topic: shipping on friday"
    for c in (alice, bob):
        c.close()
    assert a.stop() == 0
    assert b.stop() == 0
    for srv in (cluster.server(), cluster.server()):
        carol = cluster.client(srv)
        carol.send("/join dev")
        carol.expect("*** you are in #dev")
        assert carol.expect("*** topic:") == "*** topic: shipping on friday"
        carol.send("/topic")
        assert carol.expect("*** topic for") == "*** topic for #dev: shipping on friday"
        carol.close()
