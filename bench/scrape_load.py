"""Scrapes under load: many Prometheus servers scraping one exporter that polls at full speed.

The exporter runs in this process as the CLI builds it (Poller, exporter_expositions,
ExporterServer) and polls every second, every stream at every poll, without a client rate
limit. The CI simulator runs in a process of its own, as CI would be elsewhere, with a seeded
live workload: 10 buckets x 4 queues x 1 or 2 tags, so /metrics holds thousands of series. The
scrapers run in a third process, each on a thread with a persistent connection, asking as
Prometheus does (OpenMetrics preferred, gzip) and scraping again as soon as an answer is in:
were they threads of this process, they would compete with the server for its GIL and measure
themselves.

Phases, side by side: no scraper and one scraper (the baselines), then N scrapers (default
50) for the duration. Each reports the exporter's CPU, scrapes done, failed scrapes (an error,
a status other than 200, a truncated body, or more than the 10 s Prometheus gives a scrape by
default), scrape latency p50/p99/max, the renderings of /metrics made (one per published
snapshot and format in demand, whatever the scrapers do), and the polling cadence: the
intervals between the starts of consecutive polls of each target against the configured
interval, read from the poller's snapshots (a poll starts at last_poll_time -
last_poll_duration).

There is no comparison phase any more. It made every scrape render on its own, as the server
did before scrapes arriving during a rendering shared it; now /metrics is rendered when a
snapshot is published (exporter.exposition), not per scrape, and there is no per-scrape
rendering left to switch back to. bench/scrape_cost.py (suite target 7) measures what a scrape
of an unchanged snapshot costs against one rendering.

    python3 -m bench.scrape_load                   # prints the table (about 60 s)
    python3 -m bench.scrape_load --write-docs      # and updates docs/benchmarks.md
    python3 -m bench.scrape_load --targets 2 --duration 2 --baseline 1 --scrapers 5

The exit code is 1 when a scrape failed.

Here: the exporter and the phases. The simulator is in bench/scrape_load_world.py, the
scrapers in bench/scrape_load_scrapers.py, the results in bench/scrape_load_results.py, the
table and the docs section in bench/scrape_load_report.py.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict

from bench.scrape_load_report import DOCS, SECTION, no_nan, section, table, write_docs
from bench.scrape_load_results import Cadence, Latency, LoadSpec, Phase, Result
from bench.scrape_load_scrapers import Scrapers
from bench.scrape_load_world import fast_polling, simulator_main
from bench.scraping import ACCEPT, SCRAPE_TIMEOUT
from bench.spawned import spawn_context
from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.exposition import Expositions, exporter_expositions
from exporter.poller import Poller
from exporter.server import ExporterServer

# The names the tests and others import from here, where they were before the split.
__all__ = [
    "SECTION",
    "Cadence",
    "Latency",
    "LoadSpec",
    "Phase",
    "Result",
    "main",
    "run",
    "section",
    "table",
    "write_docs",
]

SNAPSHOT_EVERY = 0.02  # seconds between two looks at the poller's snapshot


class _PollWatch(threading.Thread):
    """Every poll's (target, start, duration), from the snapshots the poller publishes; and
    the expositions, to count renderings."""

    def __init__(self, poller: Poller, expositions: Expositions) -> None:
        super().__init__(name="poll-watch", daemon=True)
        self.poller = poller
        self.expositions = expositions
        self.stopping = threading.Event()
        self.polls: dict[str, dict[float, float]] = {}  # target -> {finish: duration}

    def run(self) -> None:
        while not self.stopping.wait(SNAPSHOT_EVERY):
            for target in self.poller.snapshot().targets:
                if target.last_poll_time is None or target.last_poll_duration is None:
                    continue
                seen = self.polls.setdefault(target.bucket, {})
                seen[target.last_poll_time] = target.last_poll_duration

    def cadence(self, since: float, until: float, configured: float) -> Cadence:
        """Polls that started within [since, until] on the wall clock."""
        intervals: list[float] = []
        durations: list[float] = []
        for seen in self.polls.values():
            starts = sorted(
                (finish - took, took)
                for finish, took in seen.items()
                if since <= finish - took <= until
            )
            durations += [took for _, took in starts]
            intervals += [b[0] - a[0] for a, b in itertools.pairwise(starts)]
        return Cadence.of(intervals, durations, configured)


def _renderings(expositions: Expositions) -> int:
    return sum(cost.renders for cost in expositions.costs())


def _run_phase(
    scraping: Scrapers, scrapers: int, seconds: float, spec: LoadSpec, watch: _PollWatch
) -> Phase:
    # Poll times are on the wall clock (the poller's); the scrapers' window is monotonic.
    offset = time.time() - time.monotonic()
    renderings = _renderings(watch.expositions)
    cpu = time.process_time()
    report = scraping.scrape(scrapers, seconds)
    cpu = time.process_time() - cpu
    renderings = _renderings(watch.expositions) - renderings
    cadence = watch.cadence(report.started + offset, report.ended + offset, spec.poll_interval)
    took = report.ended - report.started
    scrapes = len(report.latencies)
    return Phase(
        name={0: "no scraper", 1: "1 scraper"}.get(scrapers, f"{scrapers} scrapers"),
        scrapers=scrapers,
        seconds=round(took, 1),
        exporter_cpu=cpu / took if took > 0 else math.nan,
        scrapes=scrapes,
        failed=report.failures,
        errors=report.errors,
        scrapes_per_second=scrapes / took if took > 0 else math.nan,
        mean_body_bytes=report.bytes_received / scrapes if scrapes else math.nan,
        latency=Latency.of(report.latencies),
        cadence=cadence,
        renderings=renderings,
    )


def run(spec: LoadSpec) -> Result:
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    parent, child = spawn_context().Pipe()
    simulator = spawn_context().Process(target=simulator_main, args=(child, spec), daemon=True)
    simulator.start()
    config = fast_polling(parent.recv())
    stats = ApiStats()
    poller = Poller(config, stats)
    expositions = exporter_expositions(poller, stats, __version__)
    poller.board.on_swap = expositions.published  # as exporter.cli's serve wires it
    server = ExporterServer(("127.0.0.1", 0), poller, expositions, version=__version__)
    watch = _PollWatch(poller, expositions)
    try:
        server.start()
        poller.start()
        watch.start()
        _wait_ready(poller)
        body = _fetch(server.port)
        result = Result(
            spec=spec,
            series=sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
            metrics_bytes=len(body),
            streams=sum(len(t.streams) for t in poller.snapshot().targets),
            load_average=load_average,
        )
        scraping = Scrapers(server.port)
        try:
            result.phases.extend(_phases(scraping, spec, watch))
        finally:
            scraping.close()
        return result
    finally:
        watch.stopping.set()
        server.stop()
        poller.stop(timeout=2.0)
        parent.send("stop")
        simulator.join(timeout=10)


def _phases(scraping: Scrapers, spec: LoadSpec, watch: _PollWatch) -> Iterator[Phase]:
    if spec.baseline > 0:
        yield _run_phase(scraping, 0, spec.baseline, spec, watch)
        yield _run_phase(scraping, 1, spec.baseline, spec, watch)
    yield _run_phase(scraping, spec.scrapers, spec.duration, spec, watch)


def _wait_ready(poller: Poller, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not poller.ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the exporter was not ready after {timeout:.0f} s")
        time.sleep(0.05)


def _fetch(port: int) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT)
    try:
        # As the scrapers ask (uncompressed): another format would be rendered at every
        # publish for WANTED_FOR seconds after, beside theirs.
        connection.request("GET", "/metrics", headers={"Accept": ACCEPT})
        return connection.getresponse().read()
    finally:
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.scrape_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--duration", type=float, default=LoadSpec.duration, help="seconds under load (default 30)"
    )
    parser.add_argument(
        "--baseline",
        type=float,
        default=LoadSpec.baseline,
        help="seconds with no scraper, then with one, first (default 10; 0: neither)",
    )
    parser.add_argument(
        "--scrapers", type=int, default=LoadSpec.scrapers, help="concurrent scrapers (default 50)"
    )
    parser.add_argument(
        "--targets", type=int, default=LoadSpec.targets, help="simulated buckets (default 10)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=LoadSpec.poll_interval, help="seconds (default 1)"
    )
    parser.add_argument("--seed", type=int, default=LoadSpec.seed)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--write-docs", action="store_true", help=f"update the section in {DOCS}")
    args = parser.parse_args(argv)
    spec = LoadSpec(
        targets=args.targets,
        scrapers=args.scrapers,
        duration=args.duration,
        baseline=args.baseline,
        poll_interval=args.poll_interval,
        seed=args.seed,
    )
    result = run(spec)
    if args.json:
        print(json.dumps(no_nan(asdict(result)), indent=2))
    else:
        print(section(result))
    if args.write_docs:
        write_docs(result)
    return 1 if any(phase.failed for phase in result.phases) else 0


if __name__ == "__main__":
    sys.exit(main())
