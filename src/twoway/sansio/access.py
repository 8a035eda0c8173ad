"""Who may connect: allow and deny lists of IP networks, and a limiter for the log lines.

- :func:`parse_ip` / :func:`normalize_ip` turn a peer's address into the one form every
  per-address rule keys on (allow/deny, per-IP limits, flood control): a scope id is
  dropped and an IPv4-mapped IPv6 address is the IPv4 address (on a dual-stack socket an
  IPv4 client appears as ``::ffff:1.2.3.4``; it must match ``1.2.3.0/24``).
- :class:`AddressSet` is a set of networks with a membership test that costs one hash
  lookup per distinct prefix length (at most 33 for IPv4, 129 for IPv6), however many
  networks it holds: a deny list of 100,000 addresses costs no more per connection than
  one of ten.
- :class:`AccessPolicy` is the decision: **deny wins over allow**; an empty allow list
  admits everyone not denied; a non-empty one admits only its networks. A peer that has no
  IP address (a Unix socket) is in no network: it is admitted only when the allow list is
  empty (the caller skips the check for a Unix listener to admit it regardless).
- :class:`LogLimiter` says whether to log an event for a key (an address) at most once per
  interval, with bounded memory, so a refused client reconnecting in a loop, or a botnet,
  cannot flood the log.

Specs are ``CIDR[,CIDR...]`` (a bare address is a /32 or /128); files hold one network per
line, ``#`` starts a comment. A network with host bits set (``10.0.0.1/8``) is refused with
a suggestion rather than silently widened, because it is usually a typo for a single host.
Errors are :class:`~twoway.errors.ConfigError` naming the option or the file and line.

Pure logic: no sockets, no event loop; the clock is passed in. Reading a file is the one
I/O here, done only by :meth:`AddressSet.load` / :meth:`AccessPolicy.build`, at start-up and
on reload, never per connection.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from twoway.errors import ConfigError, describe_oserror

__all__ = [
    "AccessPolicy",
    "AddressSet",
    "IPAddress",
    "IPNetwork",
    "LogLimiter",
    "normalize_ip",
    "parse_ip",
    "parse_network",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_ip(host: object) -> IPAddress | None:
    """The normalised IP address of ``host`` (``str`` or an address object), else ``None``.

    ``"::ffff:1.2.3.4"`` gives ``IPv4Address("1.2.3.4")``; ``"fe80::1%eth0"`` and
    ``"[::1]"`` are accepted; anything that is not an IP address (a Unix socket path,
    ``""``) gives ``None``. Never raises. Strings are parsed through a bounded cache:
    :mod:`ipaddress` takes microseconds per address, and the same addresses come back (a
    client reconnecting, the per-IP limit and the access check on one connection).
    """
    if isinstance(host, str):
        return _parse_text(host)
    if isinstance(host, ipaddress.IPv4Address):
        return host
    if isinstance(host, ipaddress.IPv6Address):
        return _normal(host)
    return None


@functools.lru_cache(maxsize=4096)
def _parse_text(host: str) -> IPAddress | None:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return _normal(ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def _normal(ip: ipaddress.IPv6Address) -> IPAddress:
    if ip.scope_id is not None:
        ip = ipaddress.IPv6Address(ip.packed)
    mapped = ip.ipv4_mapped
    return ip if mapped is None else mapped


def normalize_ip(host: str) -> str:
    """The address as the one key every per-address rule uses (``::ffff:127.0.0.1`` →
    ``127.0.0.1``, IPv6 compressed and lower case); ``host`` unchanged if it is no IP."""
    ip = parse_ip(host)
    return host if ip is None else str(ip)


def _is_mapped(net: ipaddress.IPv6Network) -> bool:
    return net.prefixlen >= 96 and net.subnet_of(_MAPPED)


def parse_network(text: str) -> IPNetwork:
    """One network from ``"10.0.0.0/8"``, ``"2001:db8::/32"``, ``"1.2.3.4"`` (a /32), or an
    IPv4-mapped ``"::ffff:10.0.0.0/104"`` (becomes ``10.0.0.0/8``).

    Raises :class:`ValueError` with a one-line reason (the caller adds where it came from).
    """
    text = text.strip()
    try:
        net = ipaddress.ip_network(text.split("%", 1)[0] if "/" not in text else text)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise ValueError(
                f"{text!r} has host bits set (did you mean {loose} or {text.split('/')[0]}?)"
            ) from None
        raise ValueError(f"{text!r} is not an IP address or network") from None
    if isinstance(net, ipaddress.IPv6Network) and _is_mapped(net):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


class AddressSet:
    """A set of IPv4 and IPv6 networks; ``ip in s`` tests membership of a normalised address.

    Stored as, per family and prefix length, the set of network prefixes as integers: a
    lookup shifts the address once per prefix length present and tests set membership, so
    it is O(distinct prefix lengths), never a scan of the networks. Adding a network that is
    already covered is harmless. Not thread-safe; build a new one to change it while it is
    in use (a reload swaps the whole :class:`AccessPolicy`).
    """

    __slots__ = ("_count", "_v4", "_v6")

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self._v4: dict[int, set[int]] = {}
        self._v6: dict[int, set[int]] = {}
        self._count = 0
        for net in networks:
            self.add(net)

    def add(self, net: IPNetwork) -> None:
        """Add one network (IPv4-mapped IPv6 networks are stored as IPv4)."""
        if isinstance(net, ipaddress.IPv6Network) and _is_mapped(net):
            net = parse_network(str(net))
        table, bits = (self._v4, 32) if net.version == 4 else (self._v6, 128)
        prefixes = table.setdefault(net.prefixlen, set())
        key = int(net.network_address) >> (bits - net.prefixlen)
        if key not in prefixes:
            prefixes.add(key)
            self._count += 1

    def __contains__(self, host: object) -> bool:
        ip = parse_ip(host)
        if ip is None:
            return False
        n = int(ip)
        if ip.version == 4:
            return any((n >> (32 - p)) in keys for p, keys in self._v4.items())
        return any((n >> (128 - p)) in keys for p, keys in self._v6.items())

    def __len__(self) -> int:
        return self._count

    @property
    def probes(self) -> int:
        """How many set lookups a membership test costs at most: the number of distinct
        prefix lengths (IPv4 and IPv6 together), whatever the number of networks."""
        return len(self._v4) + len(self._v6)

    def __iter__(self) -> Iterator[IPNetwork]:
        """The networks, IPv4 first, shortest prefixes first."""
        for p in sorted(self._v4):
            for key in sorted(self._v4[p]):
                yield ipaddress.IPv4Network((key << (32 - p), p))
        for p in sorted(self._v6):
            for key in sorted(self._v6[p]):
                yield ipaddress.IPv6Network((key << (128 - p), p))

    def __repr__(self) -> str:
        shown = ", ".join(str(n) for _, n in zip(range(5), self, strict=False))
        more = f", ... {len(self) - 5} more" if len(self) > 5 else ""
        return f"AddressSet([{shown}{more}])"

    def update(self, specs: Iterable[str], *, option: str) -> None:
        """Add every network of each ``CIDR[,CIDR...]`` spec; errors name ``option``
        (``"--deny"``, ``"TWOWAY_DENY"``, ``"deny in twoway.toml"``)."""
        for spec in specs:
            for item in spec.split(","):
                if not item.strip():
                    raise ConfigError(f"{option}: empty network in {spec!r}")
                try:
                    self.add(parse_network(item))
                except ValueError as exc:
                    raise ConfigError(f"{option}: {exc}") from None

    def load(self, path: str | Path, *, what: str = "address file") -> None:
        """Add the networks listed in a file: one per line, ``#`` comments, blank lines
        ignored. Raises :class:`ConfigError` naming the file (and the line) if it cannot be
        read or a line is not a network."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path}: {describe_oserror(exc)}") from None
        for lineno, raw in enumerate(data.splitlines(), 1):
            try:
                line = raw.decode("utf-8").split("#", 1)[0].strip()
            except UnicodeDecodeError:
                raise ConfigError(f"{what} {path}:{lineno}: not UTF-8 text") from None
            if not line:
                continue
            if "," in line or " " in line or "\t" in line:
                raise ConfigError(f"{what} {path}:{lineno}: one network per line, got {line!r}")
            try:
                self.add(parse_network(line))
            except ValueError as exc:
                raise ConfigError(f"{what} {path}:{lineno}: {exc}") from None


@dataclass(frozen=True)
class AccessPolicy:
    """Allow and deny lists and the rule between them: deny wins, empty allow = everyone.

    Immutable once built: a reload builds a new policy (:meth:`build`) and swaps it in, so
    a connection being checked never sees half a list.
    """

    allow: AddressSet = field(default_factory=AddressSet)
    deny: AddressSet = field(default_factory=AddressSet)

    @classmethod
    def build(
        cls,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        *,
        allow_files: Iterable[str | Path] = (),
        deny_files: Iterable[str | Path] = (),
    ) -> AccessPolicy:
        """A policy from option values (``CIDR[,CIDR...]`` each) and files, read now.
        Raises :class:`ConfigError` naming the option, or the file and line."""
        a, d = AddressSet(), AddressSet()
        a.update(allow, option="--allow")
        d.update(deny, option="--deny")
        for path in allow_files:
            a.load(path, what="allow file")
        for path in deny_files:
            d.load(path, what="deny file")
        return cls(a, d)

    @property
    def active(self) -> bool:
        """False when there is no rule at all (everyone is admitted: skip the check)."""
        return bool(len(self.allow) or len(self.deny))

    def refusal(self, host: object) -> str | None:
        """``None`` if ``host`` may connect, else why not: ``"in the deny list"`` or
        ``"not in the allow list"`` (for the log; the client is told only "access denied")."""
        ip = parse_ip(host)  # once, not once per list
        if ip in self.deny:
            return "in the deny list"
        if len(self.allow) and ip not in self.allow:
            return "not in the allow list"
        return None

    def permits(self, host: object) -> bool:
        """Whether ``host`` (a peer address, any form :func:`parse_ip` takes) may connect."""
        return self.refusal(host) is None

    def describe(self) -> str:
        """For the start-up and reload log lines: ``"allow 2 networks, deny 1,204 networks"``."""
        if not self.active:
            return "no access rules"
        parts = []
        for word, s in (("allow", self.allow), ("deny", self.deny)):
            if len(s):
                parts.append(f"{word} {len(s):,} network{'s' if len(s) != 1 else ''}")
        return ", ".join(parts)


class LogLimiter:
    """At most one log line per key (an address) per ``interval`` seconds, memory bounded.

    :meth:`check` returns ``None`` to stay silent, or the number of events of that key that
    were silenced since its last logged line (``0`` usually), so the line can say "and N
    more". At most ``max_keys`` keys are remembered: when the table is full of keys still
    inside their interval, a new key is silenced too and counted in :attr:`dropped` (log
    that total periodically), so the number of lines per interval is bounded by
    ``max_keys`` whatever the number of addresses. The clock is the caller's (monotonic
    seconds); one that goes backwards silences, it never logs twice early.
    """

    __slots__ = ("_seen", "dropped", "interval", "max_keys")

    def __init__(self, interval: float = 60.0, max_keys: int = 4096) -> None:
        if interval <= 0 or max_keys < 1:
            raise ValueError(f"need interval > 0 and max_keys >= 1 ({interval}, {max_keys})")
        self.interval = interval
        self.max_keys = max_keys
        self.dropped = 0
        # key -> [time logged, events silenced since]; insertion order = order logged,
        # because a key that logs again is moved to the end.
        self._seen: dict[object, list[float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, key: object, now: float) -> int | None:
        """Record one event for ``key``: ``None`` = do not log it, else the count silenced."""
        seen = self._seen
        entry = seen.get(key)
        if entry is not None:
            if now - entry[0] < self.interval:
                entry[1] += 1
                return None
            del seen[key]
            silenced = int(entry[1])
        else:
            silenced = 0
            if len(seen) >= self.max_keys:
                self._expire(now)
                if len(seen) >= self.max_keys:
                    self.dropped += 1
                    return None
        seen[key] = [now, 0]
        return silenced

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            key = next(iter(seen))
            if now - seen[key][0] < self.interval:
                break
            del seen[key]
