"""Bans and mutes in force: masks with an expiry, a reason and who set them.

:class:`Sanctions` is one list (the bans, or the mutes). Expiry is in *wall-clock* seconds
(``time.time()``) because a ban survives a restart; the caller passes the time. An expired
entry is forgotten when it is next looked at (:meth:`Sanctions.find`, :meth:`active`), and
the caller learns which (to delete them from its store). Pure logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twoway.sansio.moderation.masks import Mask, parse_mask

__all__ = ["Sanction", "Sanctions"]


@dataclass(frozen=True, slots=True)
class Sanction:
    """``mask`` banned (or muted) by ``by`` until ``until`` (None: until lifted)."""

    mask: Mask
    until: float | None
    reason: str
    by: str

    def record(self) -> dict[str, Any]:
        """This sanction as a JSON-able record (see :meth:`from_record`)."""
        return {"mask": self.mask.text, "until": self.until, "reason": self.reason, "by": self.by}

    @classmethod
    def from_record(cls, value: Any) -> Sanction | None:
        """The sanction :meth:`record` wrote, or None if ``value`` is not one."""
        if not isinstance(value, Mapping):
            return None
        mask = parse_mask(str(value.get("mask", "")))
        until = value.get("until")
        if mask is None or not (until is None or isinstance(until, int | float)):
            return None
        return cls(mask, until, str(value.get("reason", "")), str(value.get("by", "")))


class Sanctions:
    """Masks in force, by their canonical text; :meth:`find` gives the first that covers a
    client. Address masks are kept apart so the check when a client connects only walks
    them (name masks wait until the client has a name)."""

    __slots__ = ("_addresses", "_all")

    def __init__(self) -> None:
        self._all: dict[str, Sanction] = {}
        self._addresses: dict[str, Sanction] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, mask_text: str) -> bool:
        return mask_text in self._all

    def add(self, sanction: Sanction) -> None:
        """Put ``sanction`` in force (replacing one with the same mask)."""
        key = sanction.mask.text
        self._all[key] = sanction
        if sanction.mask.is_address:
            self._addresses[key] = sanction
        else:
            self._addresses.pop(key, None)

    def remove(self, mask_text: str) -> Sanction | None:
        """Lift the sanction on ``mask_text`` (canonical); the one lifted, or None."""
        self._addresses.pop(mask_text, None)
        return self._all.pop(mask_text, None)

    def find(
        self,
        nick: str | None,
        account: str | None,
        ip: str | None,
        now: float,
        *,
        addresses_only: bool = False,
        expired: list[str] | None = None,
    ) -> Sanction | None:
        """The first sanction in force at ``now`` covering that client, or None. Expired
        ones met on the way are removed (their mask texts appended to ``expired``)."""
        pool = self._addresses if addresses_only else self._all
        if not pool:
            return None
        found: Sanction | None = None
        for key, s in list(pool.items()):
            if s.until is not None and s.until <= now:
                self.remove(key)
                if expired is not None:
                    expired.append(key)
                continue
            if found is None and s.mask.matches(nick, account, ip):
                found = s
        return found

    def active(self, now: float, expired: list[str] | None = None) -> list[Sanction]:
        """Every sanction in force, sorted by mask (expired ones removed as in :meth:`find`)."""
        out = []
        for key, s in list(self._all.items()):
            if s.until is not None and s.until <= now:
                self.remove(key)
                if expired is not None:
                    expired.append(key)
            else:
                out.append(s)
        return sorted(out, key=lambda s: s.mask.text)
