"""What the Redis bus keeps in Redis: the keys, and the Lua scripts that change them
atomically.

Keys, under a prefix (``twoway:chat:``):

* ``log`` — the stream. One entry per event-loop iteration with something to publish (the
  items of that iteration travel together), trimmed with ``XADD MAXLEN ~ maxlen``.
* ``seq:ROOM`` — the number of the room's last line ("each room has a sequence number");
  ``pub:NODE`` — the number of the node's last entry. Both are plain keys with a TTL,
  refreshed on each use, so the keys of nodes and rooms that are gone expire instead of
  piling up in Redis. A room idle past the TTL restarts its numbering at 1, which readers
  take as a restart, never as a gap.
* ``nodes`` — the counter node numbers come from; ``count:guests`` — the one guest numbers
  come from, reserved by blocks (:meth:`~twoway.bus.redis.RedisBus.reserve`); ``epoch`` — a
  random token set once (``SET NX``): if it changes, Redis lost its data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PUBLISH", "RAISE_COUNTER", "Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names under ``prefix``."""

    prefix: str

    @property
    def log(self) -> str:
        return self.prefix + "log"

    @property
    def nodes(self) -> str:
        return self.prefix + "nodes"

    @property
    def epoch(self) -> str:
        return self.prefix + "epoch"

    @property
    def seq(self) -> str:
        """The prefix of the room counters (``seq:ROOM``)."""
        return self.prefix + "seq:"

    def counter(self, name: str) -> str:
        """A counter every node draws numbers from (``count:NAME``)."""
        return f"{self.prefix}count:{name}"

    def pub(self, node: int) -> str:
        """The counter of ``node``'s entries."""
        return f"{self.prefix}pub:{node}"


# A publication, atomic: drop an entry number the node already published (a publish repeated
# after a lost reply lands once), number the room lines and append the entry.
# KEYS: the stream, this node's last published entry number. ARGV: entry number, maxlen,
# data, room-counter key prefix, key TTL, node, the publisher's wall-clock time (``t``: for
# the readers' lag histogram; older readers ignore the field), then (room, count) pairs.
PUBLISH = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) <= last then return 0 end
local ttl = tonumber(ARGV[5])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl)
local runs = {}
for i = 8, #ARGV, 2 do
  local count = tonumber(ARGV[i + 1])
  local key = ARGV[4] .. ARGV[i]
  local last = redis.call('INCRBY', key, count)
  redis.call('EXPIRE', key, ttl)
  runs[#runs + 1] = ARGV[i] .. ' ' .. (last - count + 1) .. ' ' .. count
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
           'n', ARGV[6], 's', ARGV[1], 'd', ARGV[3], 'q', table.concat(runs, ','),
           't', ARGV[7])
return 1
"""

# After Redis lost its data the counter restarts: lift it above this node's number so a node
# that starts later does not get the same one. KEYS: the counter. ARGV: the node.
RAISE_COUNTER = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
