"""The exporter's metrics about itself that change between scrapes: its calls to the CI API
(counted as they happen, mid-poll too), the callbacks it received and the cost of rendering
/metrics. Rendered on every
scrape (exporter.exposition), with prometheus_client's process_* and python_* collectors.

Threads: none of its own; LiveCollector.collect runs on the scrape's worker and reads ApiStats
and the renderings' costs, each guarded by its owner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from exporter.api_stats import ApiStats
from exporter.collector_callbacks import callback_families
from exporter.families import (
    API_DURATION,
    API_ERRORS,
    API_REQUESTS,
    API_RETRIED,
    API_SPACING,
    API_THROTTLED,
    EXPOSITION_BYTES,
    EXPOSITION_RENDERS,
    EXPOSITION_SECONDS,
    family,
    histogram,
    sample,
    template,
)
from exporter.snapshot import ApiSnapshot, RenderCost

Costs = Callable[[], Sequence[RenderCost]]


def api_families(api: ApiSnapshot) -> Iterator[Metric]:
    requests = [
        sample(
            API_REQUESTS + "_total",
            {
                "bucket": bucket,
                "region": region,
                "endpoint": endpoint,
                "status": status,
            },
            total,
        )
        for (bucket, region, endpoint, status), total in sorted(api.requests.items())
    ]
    errors = [
        sample(
            API_ERRORS + "_total",
            {
                "bucket": bucket,
                "region": region,
                "endpoint": endpoint,
                "error": error,
            },
            total,
        )
        for (bucket, region, endpoint, error), total in sorted(api.errors.items())
    ]
    durations: list[Sample] = []
    for endpoint, hist in sorted(api.durations.items()):
        labels = {"endpoint": endpoint}
        durations.extend(histogram(API_DURATION, labels, template(labels, "le"), hist))
    yield family(
        API_REQUESTS,
        "Calls made to the CI API, by endpoint and HTTP status (or error).",
        "counter",
        requests,
    )
    yield family(
        API_ERRORS,
        "Failed calls to the CI API, by endpoint and error (CI Code or failure kind).",
        "counter",
        errors,
    )
    yield family(
        API_DURATION, "Duration of calls to the CI API, by endpoint.", "histogram", durations
    )
    retried, throttled, spacing = API_RETRIED, API_THROTTLED, API_SPACING
    for name, counts, help_text in (
        (retried, api.retries, "Calls to the CI API made again after a failed one."),
        (throttled, api.throttled, "CI API answers that said slow down (429, 503, SlowDown)."),
    ):
        samples = [
            sample(name + "_total", {"bucket": b, "region": r, "endpoint": e}, total)
            for (b, r, e), total in sorted(counts.items())
        ]
        yield family(name, help_text + " By endpoint.", "counter", samples)
    yield family(
        spacing,
        "Seconds kept between a target's API calls since CI throttled it; 0 when not slowed.",
        "gauge",
        [
            sample(spacing, {"bucket": b, "region": r}, seconds)
            for (b, r), seconds in sorted(api.spacing.items())
        ],
    )


def exposition_families(costs: Sequence[RenderCost]) -> Iterator[Metric]:
    """What the last rendering of each format took, so a user sees slow scrapes coming."""
    ordered = sorted(costs, key=lambda cost: cost.format)

    def samples(name: str, values: Sequence[float]) -> list[Sample]:
        return [
            sample(name, {"format": cost.format}, value)
            for cost, value in zip(ordered, values, strict=True)
        ]

    yield family(
        EXPOSITION_SECONDS,
        "Wall time the last rendering of /metrics took, by format (made when a snapshot"
        " is published; scrapes send the result).",
        "gauge",
        samples(EXPOSITION_SECONDS, [cost.seconds for cost in ordered]),
    )
    yield family(
        EXPOSITION_BYTES,
        "Size of the last rendering of /metrics, uncompressed, by format.",
        "gauge",
        samples(EXPOSITION_BYTES, [cost.size for cost in ordered]),
    )
    yield family(
        EXPOSITION_RENDERS,
        "Renderings of /metrics, by format: one per published snapshot and format in"
        " demand, not one per scrape.",
        "counter",
        samples(EXPOSITION_RENDERS + "_total", [cost.renders for cost in ordered]),
    )


class LiveCollector(Collector):
    """The API self-metrics and rendering costs, fresh on every scrape."""

    def __init__(self, stats: ApiStats, costs: Costs = tuple) -> None:
        self._stats = stats
        self._costs = costs

    def collect(self) -> Iterator[Metric]:
        yield from api_families(self._stats.snapshot())
        if self._stats.callbacks.enabled:
            yield from callback_families(self._stats.callbacks.snapshot())
        yield from exposition_families(self._costs())


def live_registry(stats: ApiStats, costs: Costs) -> CollectorRegistry:
    """What every scrape renders anew: the live self-metrics, then process_* and python_*."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(stats, costs))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
