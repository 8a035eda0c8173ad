"""What the chat's moderation pieces share: the audit log line and a peer's host.

Every moderation action is one line on the ``twoway.audit`` logger: who, what, whom, why
(never a password: no log line carries a command's arguments).
"""

from __future__ import annotations

import logging

__all__ = ["audit", "audit_log", "peer_host"]

#: The logger of moderation actions.
audit_log = logging.getLogger("twoway.audit")


def audit(who: str, what: str, whom: str, why: str) -> None:
    """One line per moderation action: who, what, whom, why."""
    audit_log.info("%s %s %s%s", who, what, whom, f" ({why})" if why else "")


def peer_host(peer: str) -> str:
    """The host of ``host:port`` / ``[v6]:port``."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer
