"""Target 7's options, bounds and results (bench/scrape_cost.py): R, one full rendering, against
c_K, the exporter's CPU per scrape of the unchanged snapshot with K scrapers."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

PER_SCRAPE_TARGET = 0.1  # c_K / R, at every level
LIFETIME_TARGET = 1.5  # T_50 / T_1
LATENCY_TARGET = 1.0  # seconds, a scrape of the unchanged snapshot


@dataclass(frozen=True)
class CostOptions:
    shape: tuple[int, int, int] = (50, 10, 20)  # targets, queues, tags
    levels: tuple[int, ...] = (1, 10, 50)  # concurrent scrapers, ascending
    scrapes: int = 10  # S: scrapes per scraper at each level
    render_repetitions: int = 2  # full renderings before the levels (each level adds one)


def smoke_cost_options() -> CostOptions:
    return CostOptions(shape=(2, 2, 3), scrapes=2, render_repetitions=1)


@dataclass(frozen=True)
class Publish:
    """What the exporter's process spent publishing one snapshot and rendering it."""

    cpu: float  # CPU seconds of the process, every thread
    seconds: float  # wall time of the rendering (RenderCost.seconds)
    size: int  # bytes of the cached part, uncompressed


@dataclass(frozen=True)
class Level:
    """K scrapers, each scraping the unchanged snapshot S times."""

    scrapers: int
    scrapes: int  # answered whole, status 200
    failed: int
    errors: tuple[str, ...]
    cpu: float  # the exporter's CPU seconds over the level
    wall: float
    renderings: int  # made during the level: 0 when every scrape was of the unchanged snapshot
    latencies: tuple[float, ...]
    received: int  # bytes of the bodies, gzip

    @property
    def per_scrape(self) -> float:
        return self.cpu / self.scrapes if self.scrapes else math.nan


@dataclass(frozen=True)
class Sizes:
    """One scrape with gzip and one without, checked whole."""

    content_type: str
    gzip_bytes: int
    identity_bytes: int
    samples: int
    problems: tuple[str, ...]  # what was wrong with the bodies; empty when nothing


@dataclass(frozen=True)
class ScrapeCostResult:
    targets: int
    streams: int
    scrapes_per_scraper: int
    sizes: Sizes
    renders: tuple[Publish, ...]  # full renderings (every target changed)
    one_target: Publish  # a publish where one target changed
    levels: tuple[Level, ...]
    peak_rss: int  # bytes, the exporter's process at the end

    @property
    def render_cpu(self) -> float:
        """R: the least CPU of a full rendering."""
        return min(p.cpu for p in self.renders)

    @property
    def render_wall(self) -> float:
        return min(p.seconds for p in self.renders)

    def ratio(self, level: Level) -> float:
        """c_K / R."""
        return level.per_scrape / self.render_cpu

    def lifetime(self, level: Level) -> float:
        """T_K = R + K x c_K: one rendering, then each of K scrapers scrapes once."""
        return self.render_cpu + level.scrapers * level.per_scrape

    @property
    def growth(self) -> float:
        """T of the most scrapers over T of the fewest."""
        return self.lifetime(self.levels[-1]) / self.lifetime(self.levels[0])

    @property
    def latencies(self) -> tuple[float, ...]:
        """A single scraper's scrapes of the unchanged snapshot."""
        return self.levels[0].latencies

    @property
    def latency_median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else math.nan

    @property
    def latency_max(self) -> float:
        return max(self.latencies, default=math.nan)

    @property
    def clean(self) -> bool:
        """No failed scrape, no rendering during a level, bodies whole."""
        return not self.sizes.problems and all(
            lv.failed == 0 and lv.renderings == 0 and lv.scrapes > 0 for lv in self.levels
        )

    @property
    def per_scrape_ok(self) -> bool:
        return self.clean and all(self.ratio(lv) <= PER_SCRAPE_TARGET for lv in self.levels)

    @property
    def lifetime_ok(self) -> bool:
        return self.clean and self.growth <= LIFETIME_TARGET

    @property
    def latency_ok(self) -> bool:
        return self.clean and self.latency_max < LATENCY_TARGET
