"""Where received data goes: the pipe writer's flow control and the line sink's shaping,
in-process on both event loops."""

from __future__ import annotations

import asyncio
import os
import threading

from twoway.client.output import LineSink, PipeWriter, RawSink, Writer

from .clientkit import UNIT


class Recorder(Writer):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.changed = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.data += data
        self.changed.set()


async def test_pipe_writer_pauses_when_nobody_reads_and_resumes_after() -> None:
    """1 MiB into a pipe nobody reads: the writer reports "full" (so the connections stop
    reading) instead of queueing without bound; once the reader catches up, it resumes,
    and every byte comes out in order. The descriptor's blocking mode is put back."""
    r, w = os.pipe()
    writer = PipeWriter(w)
    events: list[str] = []
    resumed = asyncio.Event()
    writer.on_pause = lambda: events.append("pause")

    def on_resume() -> None:
        events.append("resume")
        resumed.set()

    writer.on_resume = on_resume
    try:
        await writer.open()
        assert not os.get_blocking(w)  # while open, the loop owns it
        payload = bytes(range(256)) * 4096  # 1 MiB
        for i in range(0, len(payload), 65536):
            writer.write(payload[i : i + 65536])
        assert writer.paused
        assert events == ["pause"]
        got = bytearray()

        def drain() -> None:
            while len(got) < len(payload):
                got.extend(os.read(r, 65536))

        reader = threading.Thread(target=drain)
        reader.start()
        await asyncio.wait_for(resumed.wait(), 5 * UNIT)
        assert not writer.paused
        await writer.aclose()
        await asyncio.to_thread(reader.join, 5 * UNIT)
        assert bytes(got) == payload
        assert os.get_blocking(w)
    finally:
        os.close(r)
        os.close(w)


async def test_pipe_writer_reports_a_closed_reader() -> None:
    r, w = os.pipe()
    writer = PipeWriter(w)
    broken = asyncio.Event()
    writer.on_broken = broken.set
    try:
        await writer.open()
        os.close(r)
        r = -1
        writer.write(b"x" * 100_000)
        await asyncio.wait_for(broken.wait(), 5 * UNIT)
        assert writer.broken
        writer.write(b"more")  # ignored, never raises
        await writer.aclose()
    finally:
        if r != -1:
            os.close(r)
        os.close(w)


async def test_line_sink_prefixes_escapes_and_shows_a_partial_line_after_a_pause() -> None:
    out = Recorder()
    sink = LineSink(out, "[Elves] ", escape=True)
    sink.data(b"one\r\ntw")
    assert bytes(out.data) == b"[Elves] one\n"
    sink.data(b"o\x1b[31m\nServer says: hi")  # a prompt with no newline
    assert bytes(out.data) == b"[Elves] one\n[Elves] two^[[31m\n"
    out.changed.clear()
    await asyncio.wait_for(out.changed.wait(), 2 * UNIT)
    assert bytes(out.data).endswith(b"[Elves] Server says: hi\n")
    sink.flush()  # nothing held any more
    assert bytes(out.data).count(b"Server says") == 1


async def test_line_sink_without_escape_keeps_bytes_and_raw_sink_changes_nothing() -> None:
    out = Recorder()
    LineSink(out, "[1] ").data(b"\xff\x1b\n")
    assert bytes(out.data) == b"[1] \xff\x1b\n"
    raw = Recorder()
    RawSink(raw).data(b"a\r\n\x00")
    assert bytes(raw.data) == b"a\r\n\x00"
