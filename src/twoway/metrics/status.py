"""``twoway status HOST:PORT``: a one-screen summary of a server's metrics endpoint.

It scrapes ``/metrics`` like Prometheus would (with ``urllib``) and reads it with
``prometheus_client``'s parser, so it works against any twoway server (one process or the
supervisor of ``--workers``) and shows exactly what Prometheus would store.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from twoway.errors import TwowayError
from twoway.metrics.summary import format_duration
from twoway.net.registry import format_size

__all__ = ["Scrape", "parse", "render", "scrape", "summary"]

#: Seconds to wait for the endpoint.
TIMEOUT = 5.0

#: ``{sample name: {label value or "": value}}`` of one scrape.
Scrape = dict[str, dict[str, float]]


def parse(text: str) -> Scrape:
    """The samples of an exposition, by name, then by their one label's value (``""``
    when unlabelled; a histogram's buckets by ``le``)."""
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = next(iter(sample.labels.values()), "") if sample.labels else ""
            out.setdefault(sample.name, {})[label] = sample.value
    return out


def scrape(where: str, token: str | None = None) -> Scrape:
    """Fetch and parse ``http://WHERE/metrics``. Raises :class:`TwowayError` with one line
    (unreachable, refused, unauthorized, not a metrics endpoint)."""
    url = f"http://{where}/metrics" if "://" not in where else where.rstrip("/") + "/metrics"
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            text = response.read(1 << 24).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        hint = " (give --token or TWOWAY_METRICS_TOKEN)" if exc.code == 401 else ""
        raise TwowayError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise TwowayError(f"cannot reach {url}: {str(why).lower()}") from None
    except (OSError, ValueError) as exc:
        raise TwowayError(f"cannot reach {url}: {exc}") from None
    try:
        samples = parse(text)
    except ValueError as exc:
        raise TwowayError(f"{url}: not a Prometheus exposition ({exc})") from None
    if "twoway_connections_open" not in samples:
        raise TwowayError(f"{url}: not a twoway metrics endpoint")
    return samples


def _one(samples: Scrape, name: str, label: str = "") -> float:
    return samples.get("twoway_" + name, {}).get(label, 0.0)


def _n(value: float) -> str:
    return f"{int(value):,}"


def _pairs(items: Iterable[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {_n(v)}" for name, v in items)


def render(samples: Scrape, where: str, now: float) -> list[str]:
    """The summary lines of one scrape of ``where`` taken at ``now`` (Unix time)."""
    info = samples.get("twoway_info", {})
    service = next(iter(info), "?")
    started = _one(samples, "start_time_seconds")
    workers = int(_one(samples, "workers"))
    head = f"twoway {service} at {where}: up {format_duration(max(0.0, now - started))}"
    if workers > 1:
        head += f", {workers} workers"
    refused = samples.get("twoway_connections_refused_total", {})
    lines = [
        head,
        f"connections  {_n(_one(samples, 'connections_open'))} open "
        f"(peak {_n(_one(samples, 'connections_peak'))}), "
        f"{_n(_one(samples, 'connections_accepted_total'))} accepted",
        f"refused      {_pairs(sorted(refused.items())) or 'none'}",
        f"traffic      in {format_size(int(_one(samples, 'bytes_received_total')))}, "
        f"out {format_size(int(_one(samples, 'bytes_sent_total')))}",
    ]
    drops: list[tuple[str, float]] = [
        ("line too long", _one(samples, "line_too_long_total")),
        ("too slow", _one(samples, "slow_disconnects_total")),
        ("idle", _one(samples, "idle_closes_total")),
        ("line timeout", _one(samples, "line_timeouts_total")),
    ]
    if "twoway_chat_members" in samples:
        drops += [
            ("flood drops", _one(samples, "chat_flood_drops_total")),
            ("flood kicks", _one(samples, "chat_flood_kicks_total")),
        ]
        lines.append(
            f"chat         {_n(_one(samples, 'chat_members'))} members in "
            f"{_n(_one(samples, 'chat_rooms'))} rooms, "
            f"{_n(_one(samples, 'chat_lines_received_total'))} lines in, "
            f"{_n(_one(samples, 'chat_lines_sent_total'))} delivered"
        )
    if "twoway_bus_up" in samples:
        up = _one(samples, "bus_up")
        state = "up" if up >= max(1, workers) else ("down" if up == 0 else "partly up")
        lines.append(
            f"bus          {state}, {_n(_one(samples, 'bus_published_total'))} published, "
            f"{_n(_one(samples, 'bus_read_total'))} read, "
            f"{_n(_one(samples, 'bus_dropped_total'))} dropped"
        )
    if "twoway_dump_uploads" in samples:
        lines.append(
            f"dump         {_n(_one(samples, 'dump_uploads'))} uploads, "
            f"{format_size(int(_one(samples, 'dump_bytes_stored_total')))} stored"
        )
    lines.append(f"protections  {_pairs(drops)}")
    rss = samples.get("process_resident_memory_bytes", {}).get("", 0.0)
    cpu = samples.get("process_cpu_seconds_total", {}).get("", 0.0)
    fds = samples.get("process_open_fds", {}).get("", 0.0)
    lag = _one(samples, "event_loop_lag_seconds")
    lines.append(
        f"process      RSS {format_size(int(rss))}, CPU {cpu:.1f} s, {_n(fds)} fds, "
        f"loop lag {lag * 1000:.0f} ms"
    )
    return lines


def summary(where: str, token: str | None, now: float) -> list[str]:
    """Scrape ``where`` and render it (see :func:`render`)."""
    return render(scrape(where, token), where, now)
