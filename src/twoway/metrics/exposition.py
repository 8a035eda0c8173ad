"""The Prometheus text format of a :class:`~twoway.metrics.figures.Figures` reading, written by
``prometheus_client`` (a private ``CollectorRegistry`` and a custom collector: no metric
object is touched per message, the collector turns one reading into metric families when
``/metrics`` is asked for). Importing this module imports ``prometheus_client``: only
``--metrics`` and ``twoway status`` do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from twoway.metrics.figures import METRICS, PREFIX, Figures

__all__ = ["CONTENT_TYPE", "Exposition"]

#: The ``Content-Type`` of :meth:`Exposition.render`'s output.
CONTENT_TYPE: str = CONTENT_TYPE_LATEST


class _Reading(Collector):
    """Yields the families of :attr:`figures`, the reading set just before a render."""

    def __init__(self) -> None:
        self.figures = Figures()

    def collect(self) -> Iterator[Any]:
        fig = self.figures
        for metric in METRICS:
            name = PREFIX + metric.name
            if metric.kind == "histogram":
                hist = fig.histograms.get(metric.name)
                if hist is not None:
                    yield HistogramMetricFamily(
                        name, metric.help, buckets=hist.cumulative(), sum_value=hist.sum
                    )
                continue
            family_type = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
            if metric.label is None:
                if metric.name in fig.values:
                    yield family_type(name, metric.help, value=fig.values[metric.name])
                continue
            values = fig.labelled(metric.name)
            if values:
                family = family_type(name, metric.help, labels=[metric.label])
                for label, value in sorted(values.items()):
                    family.add_metric([label], value)
                yield family
        yield from _process_families(fig)


def _process_families(fig: Figures) -> Iterator[Any]:
    """The standard ``process_*`` metrics (as prometheus_client's ProcessCollector names
    them), summed over the processes of the reading (the workers)."""
    procs = fig.process
    if not procs:
        return
    yield GaugeMetricFamily(
        "process_resident_memory_bytes",
        "Resident memory size in bytes (all workers).",
        value=sum(p.resident_memory_bytes for p in procs),
    )
    yield GaugeMetricFamily(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes (all workers).",
        value=sum(p.virtual_memory_bytes for p in procs),
    )
    yield CounterMetricFamily(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds (all workers).",
        value=sum(p.cpu_seconds_total for p in procs),
    )
    yield GaugeMetricFamily(
        "process_open_fds",
        "Number of open file descriptors (all workers).",
        value=sum(p.open_fds for p in procs),
    )
    yield GaugeMetricFamily(
        "process_max_fds",
        "Maximum number of open file descriptors (of one worker).",
        value=max(p.max_fds for p in procs),
    )


class Exposition:
    """Renders readings in the Prometheus text format (``/metrics``' body)."""

    def __init__(self) -> None:
        self._reading = _Reading()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._reading)

    def render(self, figures: Figures) -> bytes:
        """The exposition of ``figures`` (synchronous: no other reading can interleave)."""
        self._reading.figures = figures
        return bytes(generate_latest(self.registry))
