"""``twoway serve dump``: every byte a client sends, appended to a file; nothing lost.

The promise: every byte the server read is in the file, in order, with no gap. The server
sends its FIN only after the file is complete and synced (per ``--fsync``), so a client that
half-closes and then reads EOF knows everything it sent is stored. After ``kill -9`` the file
is an exact prefix of what was sent. On a disk error (ENOSPC, EIO, a failed fsync) the
connection is aborted with an RST, never a FIN: the client is never told "stored" for bytes
that were not.

Writes run in worker threads so a slow disk never stalls the event loop: each connection has
at most one write in flight, and what arrives meanwhile is gathered into the next write (group
commit). Creating a connection's file is its first operation in flight, in a worker thread
too: creating a file on a stalled disk blocks like a write. Above ``buffer_high`` bytes
waiting, reading from that client pauses, so memory stays bounded whatever the client sends.

The package, by job: :mod:`.service` (the :class:`DumpService` callbacks and the
per-service resources), :mod:`.shared` (what the service hands every sink: settings, disk
figures, splice slots), :mod:`.sink` (one connection's upload: buffer, quota, whole lines,
fsync policy, splice pump), :mod:`.turn` (whose line a shared ``--lines`` file is
writing), :mod:`.lines` (where its chunks are cut), :mod:`.disk` (the blocking file work of
the worker threads).
Moving a socket into a file without a copy is :mod:`twoway.net.splice`'s job.
"""

from __future__ import annotations

from twoway.services.dump.service import DumpService
from twoway.services.dump.shared import FSYNC_POLICIES, FsyncPolicy

__all__ = ["FSYNC_POLICIES", "DumpService", "FsyncPolicy"]
