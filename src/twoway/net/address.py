"""Socket addresses as users write and count them: printing, normalising, limit keys."""

from __future__ import annotations

import ipaddress
from typing import Any

from twoway.sansio.access import normalize_ip, parse_ip

__all__ = ["format_address", "limit_key", "normalize_ip"]


def format_address(addr: Any) -> str:
    """``127.0.0.1:4001`` or ``[::1]:4001`` from a socket address (``?`` if unknown); an
    IPv4-mapped IPv6 address prints as the IPv4 one; a Unix socket's client (which has no
    address: ``""``) prints as ``unix``."""
    if addr == "":
        return "unix"
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return "?" if not addr else str(addr)


def limit_key(host: str, ipv6_prefix: int = 64) -> str:
    """What per-address limits count a client as: its IPv4 address (an IPv4-mapped IPv6
    address counts as the IPv4 one), or its IPv6 network of ``ipv6_prefix`` bits, written
    ``2001:db8::/64``, since one host usually holds a whole /64. A host name is itself.

    The address is normalised by :func:`twoway.sansio.access.parse_ip`, the one form the
    access rules and flood control key on too (re-exported here as :func:`normalize_ip`)."""
    ip = parse_ip(host)
    if ip is None:
        return host
    if ip.version == 6 and ipv6_prefix < 128:
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
