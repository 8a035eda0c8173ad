"""What the chat's moderation pieces share: the audit log line, the refusal of a client's
bad command (its ``error: ...`` line, logged) and a peer's host.

Every moderation action is one line on the ``twoway.audit`` logger: who, what, whom, why
(never a password: no log line carries a command's arguments). Every ``error: ...`` line a
client gets for its mistake is one line on ``twoway.complaints`` too, rate-limited for the
process (:mod:`twoway.net.complaints`), with the client's nick and room.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from twoway.net.complaints import complain

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.sansio.chat import ChatCore

__all__ = ["audit", "audit_log", "client_error", "peer_host", "refuse"]

#: The logger of moderation actions.
audit_log = logging.getLogger("twoway.audit")


def audit(who: str, what: str, whom: str, why: str) -> None:
    """One line per moderation action: who, what, whom, why."""
    audit_log.info("%s %s %s%s", who, what, whom, f" ({why})" if why else "")


def client_error(core: ChatCore, conn: Conn, cid: int | None, text: str) -> None:
    """Log the ``error: ...`` line ``text`` that the client ``cid`` (on ``conn``) was sent,
    with its nick and room if it has them (see :func:`~twoway.net.complaints.complain`);
    ``cid`` None: the peer alone."""
    if cid is None:
        complain(conn.peer, text)
    else:
        complain(conn.peer, text, nick=core.nick(cid), room=core.room_of(cid))


def refuse(core: ChatCore, conn: Conn, cid: int | None, text: str) -> None:
    """Send the client ``cid`` (on ``conn``) the ``error: ...`` line ``text``, and log it
    (:func:`client_error`)."""
    conn.send_line(text)
    client_error(core, conn, cid, text)


def peer_host(peer: str) -> str:
    """The host of ``host:port`` / ``[v6]:port``."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer
