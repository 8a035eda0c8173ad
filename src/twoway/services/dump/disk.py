"""The dump service's disk work, run in worker threads: create a file, append chunks, sync.

Plain blocking functions over descriptors, no event loop: a stalled disk blocks a worker
thread, never the loop. Errors are reported, never retried as if the data were safe.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

__all__ = [
    "WriteFailed",
    "create_file",
    "strerror",
    "sync_directory",
    "timed_fsync",
    "write_chunks",
]

_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def create_file(directory: Path, base: str) -> tuple[int, Path]:
    """Create a new file named ``base.dump`` in ``directory`` (``base-1.dump``, ... if
    taken); its descriptor (write-only) and path."""
    for n in range(100):
        path = directory / (f"{base}.dump" if n == 0 else f"{base}-{n}.dump")
        try:
            # Not O_APPEND: the file is new and only this connection writes it, and splice(2)
            # refuses a file opened for appending.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(errno.EEXIST, "too many files with the same name")


def strerror(exc: BaseException) -> str:
    """The short text of an error for a log line (``No space left on device``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class WriteFailed(Exception):
    """A write or fsync failed after ``written`` bytes of the chunk had reached the file
    (a disk that fills up mid-chunk takes part of it), so the log can say what is there."""

    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(error, written)
        self.error = error
        self.written = written


def write_chunks(
    fd: int, chunks: list[bytes], sync: bool, dirpath: Path | None
) -> tuple[int, float | None]:
    """Append all of ``chunks`` (with ``writev``, no joining copy), then fsync if asked (and
    the directory of ``dirpath``); the number of bytes written and how long the sync took
    in seconds (``None``: no sync), for the metrics.

    Raises :class:`WriteFailed`, with the count of bytes that did reach the file."""
    total = 0
    try:
        i = 0
        while i < len(chunks):
            batch = chunks[i : i + _IOV_MAX]
            want = sum(map(len, batch))
            n = os.writev(fd, batch)
            total += n
            if n == want:
                i += len(batch)
                continue
            if n == 0:  # pragma: no cover - a regular file never does this
                raise OSError(errno.EIO, "write returned 0")
            # A short write (rare on a regular file: a full disk, a signal): continue from
            # the first byte not written.
            for j, piece in enumerate(batch):
                if n < len(piece):
                    chunks = [piece[n:], *batch[j + 1 :], *chunks[i + len(batch) :]]
                    i = 0
                    break
                n -= len(piece)
        took = None
        if sync:
            # An error here is reported, never retried as if the data were safe.
            start = time.perf_counter()
            os.fsync(fd)
            if dirpath is not None:
                sync_directory(dirpath)
            took = time.perf_counter() - start
    except OSError as exc:
        raise WriteFailed(exc, total) from exc
    return total, took


def timed_fsync(fd: int) -> float:
    """fsync ``fd``; how long it took in seconds. Raises :class:`OSError`."""
    start = time.perf_counter()
    os.fsync(fd)
    return time.perf_counter() - start


def sync_directory(path: Path) -> None:
    """fsync the directory holding ``path``, so a new file's entry is durable too."""
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
