"""Metrics, health and status: what a running server shows of itself (issue 15).

:mod:`.figures` reads the plain counters the server, its registry and its service keep
(at scrape time, never on the hot path) into a :class:`Figures` reading; :mod:`.exposition`
writes a reading in the Prometheus text format with ``prometheus_client``; :mod:`.http` is
the endpoint (``/metrics``, ``/healthz``, ``/readyz``, the status page of :mod:`.page`);
:mod:`.source` says where a reading comes from (this process) and :mod:`.workers` how the
supervisor of ``--workers N`` adds up its workers; :mod:`.summary` puts a reading in words
(the exit summary, chat's ``/stats``); :mod:`.status` is ``twoway status``.

Importing this package imports no optional dependency: ``prometheus_client`` is loaded by
:mod:`.exposition` (and :mod:`.http`, :mod:`.status`), that is, only with ``--metrics``.
"""

from __future__ import annotations

from twoway.metrics.figures import METRICS, Figures, Metric, merge, read_figures

__all__ = ["METRICS", "Figures", "Metric", "merge", "read_figures"]
