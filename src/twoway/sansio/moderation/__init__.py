"""Governance without I/O: masks, durations, look-alike nicks, throttles, password hashes.

The bans and mutes in force, and what they are made of:

* :mod:`.skeleton` — Unicode TR39 skeletons: nicks that look alike share a key;
* :mod:`.masks` — what ``/ban MASK`` covers: an IP, a CIDR, or a name (nick or account);
* :mod:`.durations` — ``10m``, ``2h``, ``7d``;
* :mod:`.sanctions` — bans and mutes with expiry;
* :mod:`.throttle` — failed password attempts, joins per address;
* :mod:`.passwords` — scrypt hashes as PHC strings.

Nothing here reads a clock, a socket or a thread: time and salts are passed in.
"""

from __future__ import annotations

from twoway.sansio.moderation.durations import MAX_DURATION, format_duration, parse_duration
from twoway.sansio.moderation.masks import Mask, normalize_ip, parse_mask
from twoway.sansio.moderation.passwords import hash_password, is_password_hash, verify_password
from twoway.sansio.moderation.sanctions import Sanction, Sanctions
from twoway.sansio.moderation.skeleton import nick_key, skeleton
from twoway.sansio.moderation.throttle import AttemptThrottle, JoinThrottle

__all__ = [
    "MAX_DURATION",
    "AttemptThrottle",
    "JoinThrottle",
    "Mask",
    "Sanction",
    "Sanctions",
    "format_duration",
    "hash_password",
    "is_password_hash",
    "nick_key",
    "normalize_ip",
    "parse_duration",
    "parse_mask",
    "skeleton",
    "verify_password",
]
