"""exporter.encode writes sample lines as prometheus_client does, byte for byte, and leaves to
prometheus_client what it does not write (returns None)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.samples import Exemplar, Sample

from exporter.encode import sample_lines

ODD = 'a "quoted"\\ value\nwith a newline, 数据万象 and 🎞'


class One:
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


def lines_of(family: Metric, om: bool) -> bytes:
    """What prometheus_client writes for the family, its header cut off."""
    text = (openmetrics if om else generate_latest)(One(family)).removesuffix(b"# EOF\n")
    return b"".join(line + b"\n" for line in text.splitlines() if not line.startswith(b"#"))


def families() -> list[Metric]:
    gauge = GaugeMetricFamily("g_bytes", "a gauge", labels=["b", "a"])
    gauge.add_metric(["x", ODD], 1.5)
    gauge.add_metric(["y", ""], 1e21)
    gauge.add_metric(["z", "w"], float("nan"))
    counter = CounterMetricFamily("c", "a counter", labels=["code"])
    counter.add_metric([ODD], 3, exemplar=Exemplar({"job_id": ODD}, 1.0))
    histogram = HistogramMetricFamily("h_seconds", "a histogram", labels=["tag"], unit="seconds")
    histogram.add_metric([ODD], [("1.0", 1), ("+Inf", 4)], 12.25)
    plain = GaugeMetricFamily("plain", "no labels", value=123456789.0)
    return [gauge, counter, histogram, plain]


@pytest.mark.parametrize("om", [False, True], ids=["text", "openmetrics"])
def test_lines_are_prometheus_clients_bytes(om: bool) -> None:
    for family in families():
        assert sample_lines(family, om) == lines_of(family, om), family.name


@pytest.mark.parametrize(
    "family",
    [
        Metric("fine", "a name not legacy-valid in a sample", "gauge"),
        Metric("fine", "a label name not legacy-valid", "gauge"),
        Metric("fine", "a timestamp", "gauge"),
        Metric("fine", "an exemplar on a gauge (prometheus_client refuses it)", "gauge"),
    ],
    ids=["sample name", "label name", "timestamp", "exemplar on a gauge"],
)
def test_what_it_does_not_write_is_left_to_prometheus_client(family: Metric) -> None:
    sample = {
        "a name not legacy-valid in a sample": Sample("fine.dotted", {}, 1.0),
        "a label name not legacy-valid": Sample("fine", {"bad-name": "v"}, 1.0),
        "a timestamp": Sample("fine", {}, 1.0, timestamp=5.0),
        "an exemplar on a gauge (prometheus_client refuses it)": Sample(
            "fine", {}, 1.0, exemplar=Exemplar({"a": "b"}, 1.0)
        ),
    }[family.documentation]
    family.samples = [sample]

    assert sample_lines(family, True) is None
    assert sample_lines(family, False) is None or family.documentation.startswith("an exemplar")
