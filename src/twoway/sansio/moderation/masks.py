"""Ban and mute masks: who a ``/ban MASK`` or ``/mute MASK`` is about.

A mask is one of:

* an IP address (``192.0.2.7``, ``2001:db8::1``): that address;
* a network in CIDR form (``192.0.2.0/24``): every address in it;
* a name (``bob``, with ``*`` and ``?`` as wildcards: ``bot*``): a client whose nick *or*
  registered account has that look (names compare by their confusable skeleton, see
  :mod:`~twoway.sansio.moderation.skeleton`, so ``b0b`` is banned with ``bob``).

IPv4 addresses written as IPv6 (``::ffff:192.0.2.7``) are the IPv4 address. Pure logic.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from twoway.sansio.moderation.skeleton import nick_key

__all__ = ["Mask", "normalize_ip", "parse_mask"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAME_MASK = re.compile(r"[A-Za-z0-9_*?-]{1,32}")


def normalize_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address (an IPv4-mapped IPv6 address as IPv4; a zone or brackets
    removed), or None if it is not one."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    t = t.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(t)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, slots=True)
class Mask:
    """A parsed mask: ``text`` is its canonical spelling (the key it is stored under)."""

    text: str
    network: IPNetwork | None = None
    pattern: re.Pattern[str] | None = None

    @property
    def is_address(self) -> bool:
        """True for an IP or CIDR mask (checked when a client connects)."""
        return self.network is not None

    def matches(self, nick: str | None, account: str | None, ip: str | None) -> bool:
        """Whether a client called ``nick``, identified as ``account`` (None: not
        identified), connected from ``ip`` (None: unknown) is covered by this mask."""
        network = self.network
        if network is not None:
            if ip is None:
                return False
            addr = normalize_ip(ip)
            return addr is not None and addr.version == network.version and addr in network
        pattern = self.pattern
        assert pattern is not None
        if nick is not None and pattern.fullmatch(nick_key(nick)):
            return True
        return account is not None and pattern.fullmatch(nick_key(account)) is not None


def parse_mask(text: str) -> Mask | None:
    """The mask ``text`` spells, or None if it is none of the forms above."""
    t = text.strip()
    addr = normalize_ip(t)
    if addr is not None:
        net = ipaddress.ip_network(addr)
        return Mask(str(addr), net)
    if "/" in t:
        host, _, bits = t.partition("/")
        base = normalize_ip(host)
        if base is None or not bits.isdigit():
            return None
        try:
            net = ipaddress.ip_network(f"{base}/{bits}", strict=False)
        except ValueError:
            return None
        if net.num_addresses == 1:
            return Mask(str(net.network_address), net)
        return Mask(str(net), net)
    if not _NAME_MASK.fullmatch(t) or t.strip("*?") == "":
        return None  # "*" alone would ban everybody: refused
    # Each literal run is replaced by its skeleton key, so a mask matches look-alikes too.
    pieces = re.split(r"([*?])", t)
    regex = "".join(
        ".*" if p == "*" else "." if p == "?" else re.escape(nick_key(p)) for p in pieces if p
    )
    return Mask(t.lower(), None, re.compile(regex, re.DOTALL))
