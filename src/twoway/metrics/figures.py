"""What a server's metrics say: the metric table (:data:`METRICS`) and :class:`Figures`, one
reading of every counter, taken at scrape time from the plain integers the server, its
registry and its service keep (nothing here is on the hot path, and nothing imports
``prometheus_client``: the exit summary uses the same reading without it).

A reading is plain data (JSON-able), so a worker can hand its own to the supervisor, which
adds them up with :func:`merge`: counters and most gauges sum, histograms add bucket by
bucket, a few gauges take the largest or the smallest value (see :attr:`Metric.merge`).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from twoway.net.registry import DURATION_BUCKETS, Registry
from twoway.net.service import Service

__all__ = [
    "METRICS",
    "PREFIX",
    "REFUSALS",
    "Figures",
    "Histogram",
    "Metric",
    "ProcessFigures",
    "merge",
    "read_figures",
]

#: Every metric's name starts with this.
PREFIX = "twoway_"

Kind = Literal["counter", "gauge", "histogram"]
Merge = Literal["sum", "max", "min"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: its name without :data:`PREFIX` (counters end in ``_total``), kind,
    help, the one label it may have (whose values are the server's own words, never a
    client's), and how the readings of several workers combine."""

    name: str
    kind: Kind
    help: str
    label: str | None = None
    merge: Merge = "sum"


#: Refusal reasons: the ``reason`` label of ``connections_refused_total`` and the
#: :class:`~twoway.net.registry.ServerStats` field that counts each.
REFUSALS = {
    "full": "rejected_full",
    "per_ip": "rejected_per_ip",
    "denied": "rejected_access",
    "tls": "tls_failures",
    "proxy": "proxy_failures",
}

_M = Metric
#: Every metric twoway exposes (besides the process ones), in exposition order.
METRICS: tuple[Metric, ...] = (
    _M("info", "gauge", "1, labelled with the service this server runs", "service", "max"),
    _M("start_time_seconds", "gauge", "When the server started (Unix time)", merge="min"),
    _M("workers", "gauge", "Worker processes whose figures are in this reading"),
    _M("connections_open", "gauge", "Connections open now"),
    _M("connections_pending", "gauge", "Sockets accepted, in their TLS or PROXY handshake"),
    _M(
        "connections_peak",
        "gauge",
        "Most connections open at once (workers: the sum of each one's peak)",
    ),
    _M("connections_accepted_total", "counter", "Connections accepted (refused ones included)"),
    _M(
        "transport_connections_open",
        "gauge",
        "Connections open now, by transport (tcp, tls, ws, wss, unix)",
        "transport",
    ),
    _M(
        "transport_connections_accepted_total",
        "counter",
        "Connections accepted, by transport (refused ones included)",
        "transport",
    ),
    _M("connections_refused_total", "counter", "Connections refused, by reason", "reason"),
    _M("connections_closed_total", "counter", "Connections closed, by close reason", "reason"),
    _M("connection_errors_total", "counter", "Connections ended by an OS error (reset...)"),
    _M("connection_duration_seconds", "histogram", "How long the closed connections lasted"),
    _M("bytes_received_total", "counter", "Bytes received from clients"),
    _M("bytes_sent_total", "counter", "Bytes sent to clients"),
    _M("line_too_long_total", "counter", "Lines over --max-line (reported and skipped)"),
    _M("slow_disconnects_total", "counter", "Clients dropped for not reading (too slow)"),
    _M("idle_closes_total", "counter", "Connections closed after --idle-timeout"),
    _M("line_timeouts_total", "counter", "Connections closed for a line unfinished in time"),
    _M("lines_received_total", "counter", "Lines received by a line service (upper, stamp, peers)"),
    _M("lines_sent_total", "counter", "Lines answered by a line service (upper, stamp, peers)"),
    _M("write_paused_total", "counter", "Times a client's write queue passed its high-water mark"),
    _M(
        "write_queue_high_water_bytes",
        "gauge",
        "Largest write queue seen at its high-water mark",
        merge="max",
    ),
    _M("write_queue_bytes", "gauge", "Bytes queued for clients now"),
    _M("event_loop_lag_seconds", "gauge", "Event loop lag at the last check", merge="max"),
    _M("chat_members", "gauge", "Chat clients connected"),
    _M("chat_rooms", "gauge", "Chat rooms (workers: the sum of each one's rooms)"),
    _M("chat_history_bytes", "gauge", "Memory the rooms' history holds"),
    _M("chat_lines_received_total", "counter", "Chat lines received"),
    _M("chat_messages_total", "counter", "Room messages and /me actions broadcast"),
    _M("chat_private_messages_total", "counter", "Private messages (/msg) delivered"),
    _M("chat_commands_total", "counter", "Command lines received"),
    _M("chat_lines_sent_total", "counter", "Chat lines delivered to clients"),
    _M("chat_flood_drops_total", "counter", "Lines dropped by flood control (slow down)"),
    _M("chat_flood_kicks_total", "counter", "Clients disconnected for flooding"),
    _M("chat_remote_messages_total", "counter", "Room lines from other servers (bus)"),
    _M("chat_gap_notices_total", "counter", "Notices that messages from other servers were missed"),
    _M("bus_up", "gauge", "1 per process whose bus (Redis) is connected"),
    _M("bus_published_total", "counter", "Items published to the bus"),
    _M("bus_read_total", "counter", "Entries read from the bus"),
    _M("bus_dropped_total", "counter", "Items dropped because the bus buffer was full"),
    _M("bus_reconnections_total", "counter", "Times the bus connected again"),
    _M("bus_buffered", "gauge", "Items waiting for the bus (while it is down)"),
    _M("bus_gap_notices_total", "counter", "Gaps found in what other servers published"),
    _M(
        "bus_lag_seconds",
        "histogram",
        "From publication on another server (its clock) to receipt here (ours), per entry",
    ),
    _M("dump_uploads", "gauge", "dump: uploads in progress"),
    _M("dump_bytes_stored_total", "counter", "dump: bytes written to disk"),
    _M("dump_disk_errors_total", "counter", "dump: writes, syncs or file creations that failed"),
    _M("dump_fsync_seconds", "histogram", "dump: how long each fsync took"),
    _M("file_bytes_sent_total", "counter", "file: bytes of the file sent (sendfile or copied)"),
)
BY_NAME: Mapping[str, Metric] = {m.name: m for m in METRICS}


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (``counts[i]``: observations at most ``bounds[i]`` and above the
    bound before; the last count, above every bound) and their sum."""

    bounds: tuple[float, ...]
    counts: list[int]
    sum: float = 0.0

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus wants them, ``+Inf`` last."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", float(total)))
        return out


@dataclass(slots=True)
class ProcessFigures:
    """The standard ``process_*`` figures of one process (Linux ``/proc``)."""

    resident_memory_bytes: float = 0.0
    virtual_memory_bytes: float = 0.0
    cpu_seconds_total: float = 0.0
    open_fds: float = 0.0
    max_fds: float = 0.0
    start_time_seconds: float = 0.0

    @classmethod
    def read(cls) -> ProcessFigures:
        """This process, now (zeros where ``/proc`` is missing)."""
        out = cls()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.cpu_seconds_total = usage.ru_utime + usage.ru_stime
        out.max_fds = float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        try:
            with open("/proc/self/statm") as f:
                pages = f.read().split()
            page = os.sysconf("SC_PAGE_SIZE")
            out.virtual_memory_bytes = float(int(pages[0]) * page)
            out.resident_memory_bytes = float(int(pages[1]) * page)
            out.open_fds = float(len(os.listdir("/proc/self/fd")))
        except (OSError, IndexError, ValueError):
            pass
        return out


@dataclass(slots=True)
class Figures:
    """One reading of a server (or of several workers, merged).

    ``values``: counters and gauges by metric name; a labelled metric's values are keyed
    ``name|label value``. ``histograms``: by name. ``process``: one entry per process.
    """

    values: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    process: list[ProcessFigures] = field(default_factory=list)
    #: When the reading was taken (Unix time).
    taken: float = 0.0

    def get(self, name: str, default: float = 0.0) -> float:
        """A value by name (``"connections_refused_total|full"`` for a labelled one)."""
        return self.values.get(name, default)

    def labelled(self, name: str) -> dict[str, float]:
        """The values of the labelled metric ``name``, by label value."""
        prefix = name + "|"
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}

    def to_json(self) -> dict[str, Any]:
        """Plain data for :meth:`from_json` (what a worker sends its supervisor)."""
        return {
            "values": self.values,
            "histograms": {
                k: {"bounds": list(h.bounds), "counts": h.counts, "sum": h.sum}
                for k, h in self.histograms.items()
            },
            "process": [
                {name: getattr(p, name) for name in ProcessFigures.__slots__} for p in self.process
            ],
            "taken": self.taken,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Figures:
        """The reading :meth:`to_json` gave. Raises ``KeyError``, ``TypeError`` or
        ``ValueError`` on anything else."""
        values = {str(k): float(v) for k, v in data["values"].items()}
        histograms = {
            str(k): Histogram(
                tuple(float(b) for b in h["bounds"]), [int(c) for c in h["counts"]], float(h["sum"])
            )
            for k, h in data["histograms"].items()
        }
        process = [ProcessFigures(**{k: float(v) for k, v in p.items()}) for p in data["process"]]
        return cls(values, histograms, process, float(data["taken"]))


def read_figures(
    registry: Registry,
    service: Service,
    *,
    started: float,
    loop_lag: float = 0.0,
    with_process: bool = True,
) -> Figures:
    """One reading of a server: its ``registry`` (connections and protections), its
    ``service`` (:meth:`~twoway.net.service.Service.figures`) and, if ``with_process``, this
    process. ``started`` is the server's start (Unix time). Costs one pass over the open
    connections (their live byte counts and write queues)."""
    stats = registry.stats
    conns = registry.conns
    live_in = live_out = queued = 0
    for conn in conns:
        live_in += conn.bytes_read
        live_out += conn.bytes_written
        queued += conn.write_buffer_size
    values: dict[str, float] = {
        "info|" + service.name: 1,
        "start_time_seconds": started,
        "workers": 1,
        "connections_open": len(conns),
        "connections_pending": registry.pending,
        "connections_peak": stats.peak_connections,
        "connections_accepted_total": stats.accepted,
        "connection_errors_total": stats.errors,
        "bytes_received_total": stats.bytes_in + live_in,
        "bytes_sent_total": stats.bytes_out + live_out,
        "line_too_long_total": stats.line_too_long,
        "slow_disconnects_total": stats.slow_disconnects,
        "idle_closes_total": stats.idle_timeouts,
        "line_timeouts_total": stats.line_timeouts,
        "write_paused_total": stats.write_paused,
        "write_queue_high_water_bytes": stats.write_queue_high_water,
        "write_queue_bytes": queued,
        "event_loop_lag_seconds": loop_lag,
    }
    for reason, attr in REFUSALS.items():
        values["connections_refused_total|" + reason] = getattr(stats, attr)
    for reason, count in stats.closed_by_reason.items():
        values["connections_closed_total|" + (reason or "normal")] = count
    for transport, count in registry.open_by_transport().items():
        values["transport_connections_open|" + transport] = count
    for transport, count in stats.accepted_by_transport.items():
        values["transport_connections_accepted_total|" + transport] = count
    values.update(service.figures())
    histograms = {
        "connection_duration_seconds": Histogram(
            DURATION_BUCKETS, list(stats.durations), stats.duration_sum
        )
    }
    for name, buckets in service.histograms().items():
        histograms[name] = Histogram(buckets.bounds, list(buckets.counts), buckets.sum)
    process = [ProcessFigures.read()] if with_process else []
    return Figures(values, histograms, process, time.time())


def merge(readings: Iterable[Figures]) -> Figures:
    """The readings of several workers as one: see the module docstring."""
    out = Figures(taken=time.time())
    for fig in readings:
        for key, value in fig.values.items():
            metric = BY_NAME.get(key.partition("|")[0])
            rule = metric.merge if metric is not None else "sum"
            if key not in out.values:
                out.values[key] = value
            elif rule == "sum":
                out.values[key] += value
            elif rule == "max":
                out.values[key] = max(out.values[key], value)
            else:
                out.values[key] = min(out.values[key], value)
        for key, hist in fig.histograms.items():
            mine = out.histograms.get(key)
            if mine is None or mine.bounds != hist.bounds:
                # Every worker runs the same code, so the bounds agree; if not, keep one.
                out.histograms[key] = Histogram(hist.bounds, list(hist.counts), hist.sum)
            else:
                mine.counts = [a + b for a, b in zip(mine.counts, hist.counts, strict=True)]
                mine.sum += hist.sum
        out.process += fig.process
    return out
