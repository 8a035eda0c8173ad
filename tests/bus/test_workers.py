"""``--workers 2 --bus redis://...``: one port, two processes, one chat; a worker killed with
SIGKILL is restarted and its users leave the other worker's rooms within a few seconds."""

from __future__ import annotations

import os
import re
import signal
import time

from .buskit import UNIT, ChatClient, Cluster, owner_pid


def test_worker_killed_is_restarted_and_its_users_leave(cluster: Cluster) -> None:
    srv = cluster.server("--workers", "2", ready=False)
    srv.wait_for(r"listening on .* \(worker \d, pid \d+\)", 15 * UNIT, count=2)
    srv.wait_ready()
    pids = [
        int(m.group(1))
        for line in srv.stderr.splitlines()
        if (m := re.search(r"listening on .*\(worker \d, pid (\d+)\)", line))
    ]
    assert len(pids) == 2
    # Connect until both workers have clients (the kernel spreads connections by hash).
    by_pid: dict[int, list[ChatClient]] = {pid: [] for pid in pids}
    for i in range(40):
        client = cluster.client(srv.port, f"u{i}")
        owner = owner_pid(client.port, pids)
        assert owner is not None
        by_pid[owner].append(client)
        if all(len(v) >= 2 for v in by_pid.values()):
            break
    victim_pid, survivor_pid = pids if len(by_pid[pids[0]]) >= 2 else pids[::-1]
    victims, survivors = by_pid[victim_pid], by_pid[survivor_pid]
    assert victims and survivors, by_pid
    watcher = survivors[0]
    for v in victims:  # the other worker's users are in the survivor's directory
        watcher.knows(v.nick)
    who = watcher.ask("/who", "* in #lobby")
    assert all(v.nick in who for v in victims), who

    os.kill(victim_pid, signal.SIGKILL)
    srv.wait_for(rf"worker \d \(pid {victim_pid}\) was killed by SIGKILL; restarting")
    for v in victims:
        v.wait_closed()
    killed_at = time.monotonic()
    for v in victims:
        watcher.saw(f"* {v.nick} left #lobby (server lost)", 10 * UNIT)
    assert time.monotonic() - killed_at < 8 * UNIT
    who = watcher.ask("/who", "* in #lobby")
    names = set(who.removeprefix("*** in #lobby: ").split(", "))
    assert names == {s.nick for s in survivors}, who

    # The restarted worker joins the same chat (a new client may land on either worker).
    srv.wait_for(r"listening on .* \(worker \d, pid \d+\)", 15 * UNIT, count=3)
    newcomer = cluster.client(srv.port, "late")
    for s in survivors:
        newcomer.knows(s.nick)
    watcher.knows("late")
    newcomer.send("hi all")
    watcher.expect("late: hi all")


def test_browsers_and_line_clients_share_rooms_across_workers(cluster: Cluster) -> None:
    """``--ws`` with ``--workers``: every worker listens on the gateway's port too; tabs on
    either worker and an ``nc``-style client are in one room."""
    from net.ws.wskit import RawWs, free_port

    port = free_port()
    srv = cluster.server("--workers", "2", "--ws", f"127.0.0.1:{port}", ready=False)
    gateway = rf"WebSocket gateway on ws://127\.0\.0\.1:{port}/ .*\(worker \d, pid (\d+)\)"
    srv.wait_for(gateway, 15 * UNIT, count=2)
    srv.wait_ready()
    pids = [int(m.group(1)) for m in re.finditer(gateway, srv.stderr)]
    assert len(set(pids)) == 2, srv.stderr
    tabs: list[RawWs] = []
    owners: set[int | None] = set()
    try:
        for i in range(40):  # until both workers have a tab (the kernel hashes connections)
            tab = RawWs(port)
            tabs.append(tab)
            tab.expect("type /help for commands")
            tab.send_text(f"/nick tab{i}")
            tab.expect(f"is now known as tab{i}")
            owners.add(owner_pid(tab.sock.getsockname()[1], pids))
            if owners == set(pids):
                break
        assert owners == set(pids), owners
        liner = cluster.client(srv.port, "liner")
        for tab in tabs:
            tab.expect("is now known as liner")
        liner.send("hello from nc")
        for tab in tabs:
            tab.expect("liner: hello from nc")
        tabs[-1].send_text("hello from a tab")
        liner.expect(f"tab{len(tabs) - 1}: hello from a tab")
        for tab in tabs[:-1]:
            tab.expect(f"tab{len(tabs) - 1}: hello from a tab")
    finally:
        for tab in tabs:
            tab.close()
