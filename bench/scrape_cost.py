"""Target 7: what a scrape of an unchanged snapshot costs the exporter, against one rendering.

/metrics is rendered when a snapshot is published (exporter.exposition), once per format in
demand; a scrape of an unchanged snapshot sends those bytes (gzip: a cached prefix) and renders
only the live part (API self-metrics, process_*, python_*). This measures, side by side in one
run:

- R: the exporter's CPU for one full rendering: a snapshot where every target changed is
  published, with OpenMetrics (gzip) in demand; the least of several.
- c_K: its CPU per scrape with K scrapers (1, 10, 50) each scraping the unchanged snapshot S
  times: the CPU over the K x S scrapes, divided by them. c_K / R must be at most 1/10, and the
  lifetime of one snapshot, T_K = R + K x c_K (one rendering, then each scraper scrapes it
  once), must grow at most 1.5x from 1 scraper to 50.
- The latency of a scrape of the unchanged snapshot (the single scraper's), under 1 s at
  10,000 streams, against the wall time of one full rendering.

The exporter runs in a spawned process of its own (exporter_expositions + ExporterServer over a
synthetic snapshot of bench/scrape.py), answering commands over a pipe; its CPU is
time.process_time() there: every thread, kernel time of sendall included. The scrapers run in
another (threads, persistent connections, asking as Prometheus does: OpenMetrics, gzip), so that
they do not compete with the exporter for its GIL nor count in its CPU.

    python3 -m bench --only 7                 # the suite's target 7 (10,000 streams)
    python3 -m bench.scrape_cost --smoke      # tiny, seconds

Here: the parent, which runs the levels. The exporter's process is in
bench/scrape_cost_exporter.py, the scrapers' in bench/scrape_cost_scrapers.py, the options and
results in bench/scrape_cost_results.py, the table in bench/scrape_cost_table.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from bench.scrape_cost_exporter import changed, exporter_main
from bench.scrape_cost_results import (
    LATENCY_TARGET,
    LIFETIME_TARGET,
    PER_SCRAPE_TARGET,
    CostOptions,
    Level,
    Publish,
    ScrapeCostResult,
    Sizes,
    smoke_cost_options,
)
from bench.scrape_cost_scrapers import scrapers_main
from bench.scrape_cost_table import summary, table
from bench.spawned import Child

# The names others import from here, where they were before the split.
__all__ = [
    "LATENCY_TARGET",
    "LIFETIME_TARGET",
    "PER_SCRAPE_TARGET",
    "CostOptions",
    "ScrapeCostResult",
    "changed",
    "main",
    "run_scrape_cost",
    "smoke_cost_options",
    "summary",
    "table",
]


def _run_level(exporter: Child, scrapers: Child, count: int, scrapes: int) -> Level:
    scrapers.conn.send(("level", count, scrapes))
    if scrapers.conn.recv() != "ready":
        raise RuntimeError("the scrapers did not get ready")
    cpu, renders = exporter.ask("state")
    scrapers.conn.send("go")
    level: Level = scrapers.conn.recv()
    cpu_after, renders_after = exporter.ask("state")
    return replace(level, cpu=cpu_after - cpu, renderings=renders_after - renders)


def run_scrape_cost(options: CostOptions) -> ScrapeCostResult:
    if not options.levels or list(options.levels) != sorted(options.levels):
        raise ValueError("levels must be ascending")
    exporter = Child(exporter_main, options.shape)
    scrapers: Child | None = None
    try:
        port = exporter.conn.recv()
        scrapers = Child(scrapers_main, port)
        sizes: Sizes = scrapers.ask(("sizes",))  # OpenMetrics now in demand, with gzip
        renders: list[Publish] = [
            exporter.ask("publish all") for _ in range(options.render_repetitions)
        ]
        one_target: Publish = exporter.ask("publish one")
        levels: list[Level] = []
        for count in options.levels:
            # Each level scrapes a snapshot just published: a snapshot's lifetime.
            renders.append(exporter.ask("publish all"))
            levels.append(_run_level(exporter, scrapers, count, options.scrapes))
        peak_rss: int = exporter.ask("peak rss")
    finally:
        if scrapers is not None:
            scrapers.close()
        exporter.close()
    targets, queues, tags = options.shape
    return ScrapeCostResult(
        targets=targets,
        streams=targets * queues * tags,
        scrapes_per_scraper=options.scrapes,
        sizes=sizes,
        renders=tuple(renders),
        one_target=one_target,
        levels=tuple(levels),
        peak_rss=peak_rss,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.scrape_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--scrapes", type=int, help="S, scrapes per scraper (default 10)")
    args = parser.parse_args(argv)
    options = smoke_cost_options() if args.smoke else CostOptions()
    if args.scrapes:
        options = replace(options, scrapes=args.scrapes)
    result = run_scrape_cost(options)
    print(table(result))
    print()
    print(summary(result))
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
