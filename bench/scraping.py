"""What the scraping benchmarks (bench/scrape_load.py, bench/scrape_cost.py) share: how a
scraper asks, as Prometheus does, and what a scraper thread keeps."""

from __future__ import annotations

import threading

SCRAPE_TIMEOUT = 10.0  # Prometheus's default scrape_timeout
# What Prometheus 2.x/3.x sends: OpenMetrics preferred, the text format accepted, gzip.
ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
)


class ScraperThread(threading.Thread):
    """A scraper on a thread of its own: the latencies of its scrapes, the bytes it received
    and its failures (a few distinct errors kept, to say what failed)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.latencies: list[float] = []
        self.received = 0
        self.failures = 0
        self.errors: set[str] = set()

    def _fail(self, error: str) -> None:
        self.failures += 1
        if len(self.errors) < 5:
            self.errors.add(error)
