"""Readings without sockets: merging workers, the JSON a worker sends, the address syntax."""

from __future__ import annotations

import pytest

from twoway.config import metrics_address
from twoway.metrics.exposition import Exposition
from twoway.metrics.figures import METRICS, Figures, Histogram, ProcessFigures, merge
from twoway.metrics.summary import exit_summary


def _reading(open_: float, lag: float, counts: list[int]) -> Figures:
    return Figures(
        {
            "connections_open": open_,
            "event_loop_lag_seconds": lag,
            "start_time_seconds": 100 + open_,
            "connections_refused_total|full": open_ * 2,
        },
        {"connection_duration_seconds": Histogram((1.0, 10.0), counts, sum(counts) * 0.5)},
        [ProcessFigures(resident_memory_bytes=1000 * open_)],
        taken=1.0,
    )


def test_merge_sums_counters_keeps_max_lag_and_first_start() -> None:
    fig = merge([_reading(3, 0.2, [1, 2, 0]), _reading(4, 0.5, [0, 1, 5])])
    assert fig.values["connections_open"] == 7
    assert fig.values["event_loop_lag_seconds"] == 0.5
    assert fig.values["start_time_seconds"] == 103
    assert fig.labelled("connections_refused_total") == {"full": 14}
    hist = fig.histograms["connection_duration_seconds"]
    assert hist.counts == [1, 3, 5] and hist.sum == 4.5
    assert hist.cumulative() == [("1", 1.0), ("10", 4.0), ("+Inf", 9.0)]
    assert [p.resident_memory_bytes for p in fig.process] == [3000, 4000]


def test_json_round_trip() -> None:
    fig = _reading(2, 0.1, [1, 0, 0])
    assert Figures.from_json(fig.to_json()) == fig
    with pytest.raises((KeyError, TypeError, ValueError)):
        Figures.from_json({"values": {"x": "nan?"}})


def test_exposition_has_every_metric_the_reading_has() -> None:
    text = Exposition().render(merge([_reading(2, 0.1, [1, 0, 0])])).decode()
    assert "twoway_connections_open 2.0" in text
    assert 'twoway_connections_refused_total{reason="full"} 4.0' in text
    assert 'twoway_connection_duration_seconds_bucket{le="+Inf"} 1.0' in text
    assert "process_resident_memory_bytes 2000.0" in text
    assert "twoway_chat_members" not in text  # absent from the reading: not exposed
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))


def test_summary_lists_only_what_fired() -> None:
    values = {"connections_peak": 4.0, "line_too_long_total": 3.0}
    values |= {"connections_refused_total|tls": 1.0, "connections_refused_total|full": 0.0}
    fig = Figures(values)
    text, fields = exit_summary(fig, 75.0)
    assert text == "up 1 min 15 s, peak 4 at once; dropped: 3 line too long; refused: 1 tls"
    assert fields["dropped"] == {"line too long": 3}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_metrics_address(given: str, expected: tuple[str, int]) -> None:
    assert metrics_address(given) == expected


@pytest.mark.parametrize("given", ["host", "[::1]", "a:b", "1:99999"])
def test_bad_metrics_address(given: str) -> None:
    with pytest.raises(ValueError):
        metrics_address(given)
