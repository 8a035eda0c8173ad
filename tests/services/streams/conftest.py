"""Fixtures for the stream tests: CLI servers, and file systems that fail for real: a tiny
tmpfs (ENOSPC on write), a thin disk (write succeeds, fsync fails), a freezable disk."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .streamkit import UNIT, ServerProcess

#: The event loops the CLI offers (``--loop``); the file tests run on each.
LOOPS = ["asyncio", "uvloop"] if importlib.util.find_spec("uvloop") is not None else ["asyncio"]

StartServer = Callable[..., ServerProcess]

#: How ``dump`` reads its connections: splice(2) in a thread per connection (the default),
#: or into Python and written by worker threads (``--no-splice``, and past ``splice_max``).
DUMP_READS = ["splice", "python"]
_DUMP_MODULES = (
    "test_dump_backpressure",
    "test_dump_failures",
    "test_dump_fsync",
    "test_dump_integrity",
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every per-connection dump test runs with both ways of reading (``serve`` depends on
    ``dump_read``, so only dump modules, or tests naming it, are parametrized)."""
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    asks = "dump_read" in inspect.signature(metafunc.function).parameters
    if "dump_read" in metafunc.fixturenames and (asks or module in _DUMP_MODULES):
        metafunc.parametrize("dump_read", DUMP_READS)


@pytest.fixture
def dump_read(request: pytest.FixtureRequest) -> str:
    """``splice`` or ``python`` (see :data:`DUMP_READS`); ``splice`` where not parametrized."""
    return str(getattr(request, "param", "splice"))


@pytest.fixture
def serve(dump_read: str) -> Iterator[StartServer]:
    """``serve("dump", "--dir", d)`` starts ``twoway serve dump --dir d --port 0`` and waits
    until it listens (``dump`` with ``--splice`` or ``--no-splice`` per ``dump_read``). At
    teardown every server still running gets SIGTERM; a server that does not exit 0 (unless
    the test turned ``expect_clean_exit`` off) or that printed a traceback fails the test."""
    servers: list[ServerProcess] = []

    def start(*args: str, wrapper: tuple[str, ...] = ()) -> ServerProcess:
        if args and args[0] == "dump" and "--file" not in args:
            args = (*args, "--splice" if dump_read == "splice" else "--no-splice")
        server = ServerProcess(args, wrapper=wrapper)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    problems: list[str] = []
    for server in servers:
        try:
            code = server.stop()
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        finally:  # shown by pytest when the test fails
            print(f"--- server {server.title} (pid {server.pid}):\n{server.stderr}")
        if server.expect_clean_exit and code != 0:
            problems.append(f"server {server.title} exited {code}:\n{server.stderr}")
        if "Traceback" in server.stderr:
            problems.append(f"server {server.title} printed a traceback:\n{server.stderr}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root")


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30 * UNIT, check=False)


def _unmount(path: Path) -> None:
    # A server killed by the test may still be exiting: fall back to a lazy unmount.
    if _run("umount", str(path)).returncode != 0:
        _run("umount", "-l", str(path))


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for the test: writing more gives a real ENOSPC."""
    _need_root("mounting a tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        _unmount(mnt)


class FreezableDisk:
    """An ext4 file system on a loop device whose writes can be stopped (``fsfreeze``): the
    slowest disk there is. Writers block in the kernel until :meth:`thaw`."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.frozen = False

    def freeze(self) -> None:
        done = _run("fsfreeze", "--freeze", str(self.mountpoint))
        assert done.returncode == 0, done.stderr
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            done = _run("fsfreeze", "--unfreeze", str(self.mountpoint))
            assert done.returncode == 0, done.stderr
            self.frozen = False


@pytest.fixture
def freezable_disk(tmp_path: Path) -> Iterator[FreezableDisk]:
    """A 512 MiB ext4 image, kept in a tmpfs of its own (so the host disk is not involved),
    loop-mounted; thawed and unmounted at teardown."""
    _need_root("a loop-mounted file system")
    for tool in ("mkfs.ext4", "fsfreeze", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    ram = tmp_path / "ram"
    ram.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", "size=600m", "tmpfs", str(ram))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    with contextlib.ExitStack() as stack:
        stack.callback(_unmount, ram)
        image = ram / "disk.img"
        with image.open("wb") as f:
            f.truncate(512 * 1024 * 1024)
        done = _run("mkfs.ext4", "-q", "-F", str(image))
        assert done.returncode == 0, done.stderr
        mnt = tmp_path / "disk"
        mnt.mkdir()
        done = _run("mount", "-o", "loop", str(image), str(mnt))
        if done.returncode != 0:
            pytest.skip(f"cannot loop-mount an image: {done.stderr.strip()}")
        stack.callback(_unmount, mnt)
        disk = FreezableDisk(mnt)
        stack.callback(disk.thaw)  # runs first: never leave a frozen file system behind
        yield disk


@pytest.fixture
def thin_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system whose writes succeed and whose fsync fails: a sparse 64 MiB ext4
    image (no journal) in an 8 MiB tmpfs, loop-mounted. Writes go to the page cache;
    writing them back fills the tmpfs, and fsync reports the loss (ENOSPC, then EIO),
    like a thin-provisioned volume that ran out of space."""
    _need_root("a loop-mounted file system")
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    ram = tmp_path / "ram"
    ram.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(ram))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    with contextlib.ExitStack() as stack:
        stack.callback(_unmount, ram)
        image = ram / "thin.img"
        with image.open("wb") as f:
            f.truncate(64 * 1024 * 1024)
        done = _run(
            "mkfs.ext4",
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            str(image),
        )
        assert done.returncode == 0, done.stderr
        mnt = tmp_path / "thin"
        mnt.mkdir()
        done = _run("mount", "-o", "loop", str(image), str(mnt))
        if done.returncode != 0:
            pytest.skip(f"cannot loop-mount an image: {done.stderr.strip()}")
        stack.callback(_unmount, mnt)
        yield mnt
