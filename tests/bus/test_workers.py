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
