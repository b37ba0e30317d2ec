"""The scrapes-under-load benchmark's spec and results (bench/scrape_load.py): per phase, the
exporter's CPU, the scrapes and their latency, the renderings and the polling cadence."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoadSpec:
    targets: int = 10
    scrapers: int = 50
    duration: float = 30.0  # seconds under load
    baseline: float = 10.0  # seconds with no scraper, then with one, first
    poll_interval: float = 1.0
    seed: int = 1


@dataclass(frozen=True)
class Latency:
    p50: float
    p99: float
    max: float

    @staticmethod
    def of(samples: Sequence[float]) -> Latency:
        if not samples:
            return Latency(math.nan, math.nan, math.nan)
        ordered = sorted(samples)
        return Latency(_quantile(ordered, 0.5), _quantile(ordered, 0.99), ordered[-1])


@dataclass(frozen=True)
class Cadence:
    """Intervals between the starts of consecutive polls of a target, all targets pooled."""

    polls: int
    mean: float
    p99: float
    max: float
    late: int  # intervals longer than 1.5 x the configured interval
    mean_duration: float  # of the polls themselves

    @staticmethod
    def of(intervals: Sequence[float], durations: Sequence[float], configured: float) -> Cadence:
        ordered = sorted(intervals)
        return Cadence(
            polls=len(durations),
            mean=statistics.fmean(ordered) if ordered else math.nan,
            p99=_quantile(ordered, 0.99) if ordered else math.nan,
            max=ordered[-1] if ordered else math.nan,
            late=sum(1 for i in ordered if i > 1.5 * configured),
            mean_duration=statistics.fmean(durations) if durations else math.nan,
        )


@dataclass(frozen=True)
class ScrapeReport:
    """What the scraper process saw; times are time.monotonic(), the same clock in every
    process of the machine."""

    started: float
    ended: float
    latencies: list[float]
    failures: int
    errors: list[str]  # a few distinct ones, to say what failed
    bytes_received: int


@dataclass(frozen=True)
class Phase:
    name: str
    scrapers: int
    seconds: float
    exporter_cpu: float  # CPU seconds of the exporter's process (every thread) per second
    scrapes: int
    failed: int
    errors: list[str]
    scrapes_per_second: float
    mean_body_bytes: float
    latency: Latency
    cadence: Cadence
    renderings: int = 0  # of /metrics, every format, made during the phase


@dataclass(frozen=True)
class Result:
    spec: LoadSpec
    series: int
    metrics_bytes: int
    streams: int
    phases: list[Phase] = field(default_factory=list)
    # The machine's 1-minute load average when the run began: other work on the same CPUs
    # slows everything here, and the reader should know.
    load_average: float = math.nan


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted samples."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
