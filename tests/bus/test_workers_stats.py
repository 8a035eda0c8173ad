"""``--workers 2``: chat's ``/stats`` shows the whole server (every worker's figures added
up), not the figures of the worker the asking client landed on."""

from __future__ import annotations

import re

from .buskit import ChatClient, Cluster, owner_pid


def test_stats_adds_up_every_worker(cluster: Cluster) -> None:
    srv = cluster.server("--workers", "2", "--stats-public", "--flood-rate", "0", ready=False)
    srv.wait_for(r"listening on .* \(worker \d, pid \d+\)", count=2)
    srv.wait_ready()
    pids = [
        int(m.group(1))
        for line in srv.stderr.splitlines()
        if (m := re.search(r"listening on .*\(worker \d, pid (\d+)\)", line))
    ]
    by_pid: dict[int, list[ChatClient]] = {pid: [] for pid in pids}
    clients = []
    for i in range(40):  # until both workers have clients (the kernel spreads by hash)
        client = cluster.client(srv.port, f"u{i}")
        clients.append(client)
        owner = owner_pid(client.port, pids)
        assert owner is not None
        by_pid[owner].append(client)
        if all(by_pid.values()):
            break
    assert all(by_pid.values()), by_pid
    for asker in (by_pid[pids[0]][0], by_pid[pids[1]][0]):  # the same answer on either
        first = asker.ask("/stats", "*** stats: up ")
        assert f", {len(clients)} connected" in first, first
        assert f"{len(clients)} accepted" in first, first
        members = asker.saw(re.compile(r"^\*\*\* stats: \d+ members in "))
        assert members.startswith(f"*** stats: {len(clients)} members in "), members
