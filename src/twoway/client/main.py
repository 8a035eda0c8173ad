"""The ``twoway connect`` process: picks the mode, runs the links, turns outcomes into an exit
code. Like :mod:`twoway.runner` for servers, this is the only client module that installs
signal handlers or decides how the process ends.

Exit codes: 0 when the server closed (or we finished and it closed after us); 1 when a
connection failed or was lost (refused, reset, timed out, unknown host), after one line on
stderr per failed connection; 130 after SIGINT or Ctrl-C, 143 after SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from twoway.client.completion import NickTracker
from twoway.client.link import Link, all_done
from twoway.client.options import ClientOptions
from twoway.client.output import (
    LineSink,
    PipeWriter,
    RawSink,
    Sink,
    TappedSink,
    choose_writer,
    prefix,
)
from twoway.client.progress import Clock, Meter, run_progress, summary, upload_size
from twoway.client.status import Status
from twoway.client.stdin import Source, TappedSource, open_stdin
from twoway.errors import ConfigError, describe_oserror
from twoway.loops import loop_factory

__all__ = ["EXIT_FAILURE", "EXIT_OK", "run_client"]

EXIT_OK = 0
EXIT_FAILURE = 1
#: A bad option found only once the run starts (a --tls-ca file that cannot be read).
EXIT_USAGE = 2
#: After Ctrl-C; a signal's own code (128 + its number) replaces it.
EXIT_INTERRUPTED = 130


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def run_client(opts: ClientOptions) -> int:
    """Run a client as configured; return the process exit code. Never raises for an
    expected failure (it has been reported on stderr)."""
    try:
        factory = loop_factory(opts.loop)
    except ConfigError as exc:
        Status(announce=False, verbose=False).error("", str(exc))
        return 2
    with asyncio.Runner(loop_factory=factory) as runner:
        try:
            return runner.run(_main(opts))
        except KeyboardInterrupt:  # before our handlers were installed
            return 130


async def _main(opts: ClientOptions) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    signals: list[int] = []
    stopping = asyncio.Event()

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) == 1:
            stopping.set()  # leave politely: flush, FIN, a bounded wait for the server
        else:
            main.cancel()  # a second one: at once

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        code = await _run(opts, stopping)
        return 128 + signals[0] if signals else code
    except asyncio.CancelledError:
        if signals:
            return 128 + signals[0]
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _quiet_ssl_eof(record: logging.LogRecord) -> bool:
    # asyncio's and uvloop's TLS transports warn when a protocol asks to stay open after
    # the peer's EOF, which twoway's connections do for half-close over plain TCP; under
    # TLS the transport closes anyway, and the line would only confuse a user.
    return "eof_received() has no effect when using ssl" not in record.getMessage()


async def _run(opts: ClientOptions, stopping: asyncio.Event) -> int:
    interactive = opts.send is None and _isatty(sys.stdin) and _isatty(sys.stdout)
    multi = bool(opts.names)
    status = Status(announce=opts.reconnect or multi or interactive, verbose=opts.verbose)
    tls = None
    if opts.tls is not None:
        from twoway.client.tls import client_context

        logging.getLogger("asyncio").addFilter(_quiet_ssl_eof)
        try:
            tls = client_context(opts.tls)
        except ConfigError as exc:
            status.error("", str(exc))
            return EXIT_USAGE
        if opts.tls.insecure:
            status.error(
                "",
                "warning: --insecure: the server's certificate is not verified; anyone "
                "on the path can read and change this connection",
            )
    try:
        writer, tty = choose_writer(opts.output)
        if isinstance(writer, PipeWriter):
            await writer.open()
    except OSError as exc:
        status.error("", f"cannot open {opts.output}: {describe_oserror(exc)}")
        return EXIT_FAILURE
    links: list[Link] = []
    nicks = NickTracker() if interactive else None
    for name in opts.names or ("",):
        sink: Sink = LineSink(writer, prefix(name), escape=tty) if multi or tty else RawSink(writer)
        if nicks is not None:
            sink = TappedSink(sink, nicks.feed_bytes)
        links.append(Link(name, opts, sink, status, tls))
    main = asyncio.current_task()
    assert main is not None

    def pause() -> None:
        for link in links:
            link.pause_reading()

    def resume() -> None:
        for link in links:
            link.resume_reading()

    writer.on_pause = pause
    writer.on_resume = resume

    def broken() -> None:
        # Nobody reads our output any more (``| head``): stop quietly, as cat does.
        main.cancel()

    writer.on_broken = broken
    tasks = [asyncio.ensure_future(link.run()) for link in links]
    clock = Clock()
    meters = [] if interactive else _meters(opts, links)
    progress = asyncio.ensure_future(run_progress(meters))
    source: Source | None = None
    code: int | None = None
    try:
        driver: Coroutine[Any, Any, int | None]
        if interactive:
            from twoway.client.interactive import run_interactive

            assert nicks is not None
            driver = run_interactive(links, opts, nicks)
        elif opts.send is not None:
            from twoway.client.sender import run_sender

            driver = _none(run_sender(links, opts))
        else:
            from twoway.client.pipe import pump_lines, pump_raw

            source = await open_stdin()
            if multi or opts.reconnect:
                driver = _none(pump_lines(source, links))  # through Link.send: dumped there
            else:
                if opts.hexdump:
                    source = TappedSource(source, links[0].dump_sent)
                driver = _none(pump_raw(source, links[0]))
        code = await _drive(driver, links, stopping)
        if code == EXIT_INTERRUPTED:
            # Ctrl-C (a signal, or the key in the interactive prompt): close like nc does,
            # with a FIN after what is queued, never an RST that reads as a crash.
            await _stop_links(links, opts.linger)
    except asyncio.CancelledError:
        if not writer.broken or stopping.is_set():
            raise
        code = EXIT_OK
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        progress.cancel()
        await asyncio.gather(progress, return_exceptions=True)
        if meters:  # a transfer (-o FILE, < file): -v sums it up
            sent = sum(link.bytes_out for link in links)
            received = sum(link.bytes_in for link in links)
            status.detail("", summary(sent, received, clock.elapsed()))
        if source is not None:
            await source.aclose()
        await writer.aclose()
        if writer.broken:
            _silence_stdout()
    if code is not None:
        return code
    failed = [link for link in links if link.error is not None]
    for link in failed:
        assert link.error is not None
        status.error(link.name, link.error)
    return EXIT_FAILURE if failed else EXIT_OK


def _meters(opts: ClientOptions, links: list[Link]) -> list[Meter]:
    """The transfers worth a progress bar: what arrives into ``-o FILE``, and a file piped
    in (``< file``, its size known: an ETA)."""
    meters = []
    size = upload_size() if opts.send is None else None
    if size is not None:
        meters.append(Meter("sent", lambda: sum(link.bytes_out for link in links), size))
    if opts.output is not None:
        meters.append(Meter("received", lambda: sum(link.bytes_in for link in links)))
    return meters


async def _none(coro: Coroutine[Any, Any, None]) -> int | None:
    await coro
    return None


async def _drive(
    driver: Coroutine[Any, Any, int | None], links: list[Link], stopping: asyncio.Event
) -> int | None:
    """Run the input side until it is finished and the links are done, or until the links
    are done (the server closed: stop reading input), or until ``stopping`` is set (a
    signal: returns :data:`EXIT_INTERRUPTED`). Returns the driver's exit code."""
    feeding = asyncio.ensure_future(driver)
    finished = asyncio.ensure_future(all_done(links))
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({feeding, finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            return EXIT_INTERRUPTED
        if feeding.done():
            code = feeding.result()
            if code is not None:
                return code
            await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
            return EXIT_INTERRUPTED if stopped.done() else None
        return None
    finally:
        for task in (feeding, finished, stopped):
            task.cancel()
        await asyncio.gather(feeding, finished, stopped, return_exceptions=True)


async def _stop_links(links: list[Link], linger: float) -> None:
    """Close every link politely and wait (bounded) until they are done."""
    # The server gets `linger` seconds to answer our FIN with its own, and no less than a
    # second: a chat server announces the departure first.
    within = max(linger, 1.0)
    for link in links:
        link.stop(within)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done(links), within + 0.5)


def _silence_stdout() -> None:
    # Python flushes sys.stdout at exit; to a closed pipe that prints a warning. Point it
    # at /dev/null instead (the recipe of the Python documentation for SIGPIPE).
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
