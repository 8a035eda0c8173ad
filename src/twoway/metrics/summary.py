"""The figures in words: the exit summary's tail and chat's ``/stats`` lines, from one
:class:`~twoway.metrics.figures.Figures` reading (no ``prometheus_client``)."""

from __future__ import annotations

from typing import Any

from twoway.metrics.figures import Figures
from twoway.net.registry import format_size

__all__ = ["DROPS", "drops", "exit_summary", "format_duration", "stats_lines"]

#: The protections that end or cut a client's traffic, by the words the summary uses.
DROPS = {
    "line too long": "line_too_long_total",
    "too slow": "slow_disconnects_total",
    "idle": "idle_closes_total",
    "line timeout": "line_timeouts_total",
    "flood drop": "chat_flood_drops_total",
    "flood kick": "chat_flood_kicks_total",
}


def format_duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``3 h 02 min``, ``2 d 03 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def drops(fig: Figures) -> dict[str, int]:
    """The protections that fired, by name (those at zero left out)."""
    out = {name: int(fig.get(key)) for name, key in DROPS.items()}
    return {name: n for name, n in out.items() if n}


def _refused(fig: Figures) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(fig.labelled("connections_refused_total").items()) if v}


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items()) or "none"


def exit_summary(fig: Figures, uptime: float) -> tuple[str, dict[str, Any]]:
    """The exit summary after ``stopped: N connection(s) served, in X, out Y``:
    ``up 12.3 s, peak 3 at once, 17 messages; dropped: 3 line too long; refused: 1 full``
    and its fields for ``--log-format json``."""
    parts = [f"up {format_duration(uptime)}", f"peak {int(fig.get('connections_peak'))} at once"]
    messages = fig.values.get("chat_lines_received_total")
    if messages is not None:
        parts.append(f"{int(messages)} message{'' if messages == 1 else 's'}")
    dropped, refused = drops(fig), _refused(fig)
    text = f"{', '.join(parts)}; dropped: {_listing(dropped)}; refused: {_listing(refused)}"
    fields: dict[str, Any] = {
        "uptime_s": round(uptime, 3),
        "peak_connections": int(fig.get("connections_peak")),
        "dropped": dropped,
        "refused": refused,
    }
    if messages is not None:
        fields["messages"] = int(messages)
    return text, fields


def stats_lines(fig: Figures, uptime: float) -> list[str]:
    """Chat's ``/stats`` answer: a few lines with the same figures as the metrics."""
    lines = [
        f"*** stats: up {format_duration(uptime)}, "
        f"{int(fig.get('connections_open'))} connected (peak {int(fig.get('connections_peak'))}), "
        f"{int(fig.get('connections_accepted_total'))} accepted",
        f"*** stats: in {format_size(int(fig.get('bytes_received_total')))}, "
        f"out {format_size(int(fig.get('bytes_sent_total')))}, "
        f"{int(fig.get('chat_lines_received_total'))} lines received, "
        f"{int(fig.get('chat_lines_sent_total'))} delivered",
        f"*** stats: {int(fig.get('chat_members'))} members in "
        f"{int(fig.get('chat_rooms'))} rooms, history {format_size(int(fig.get('chat_history_bytes')))}",  # noqa: E501
        f"*** stats: dropped: {_listing(drops(fig))}; refused: {_listing(_refused(fig))}",
    ]
    if "bus_up" in fig.values:
        state = "up" if fig.get("bus_up") else "down"
        lines.append(
            f"*** stats: bus {state}, {int(fig.get('bus_published_total'))} published, "
            f"{int(fig.get('bus_read_total'))} read, {int(fig.get('bus_dropped_total'))} dropped"
        )
    return lines
