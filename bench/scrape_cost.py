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
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import math
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from bench.scrape import count_samples, synthetic_snapshot
from bench.scrape_load import ACCEPT, SCRAPE_TIMEOUT
from exporter.api_stats import ApiStats
from exporter.exposition import Expositions, exporter_expositions
from exporter.server import ExporterServer
from exporter.snapshot import Snapshot

PER_SCRAPE_TARGET = 0.1  # c_K / R, at every level
LIFETIME_TARGET = 1.5  # T_50 / T_1
LATENCY_TARGET = 1.0  # seconds, a scrape of the unchanged snapshot
FIRST_RENDER_TIMEOUT = 600.0  # seconds: the first scrape waits for the first rendering
POLL_EVERY = 0.01  # seconds between two looks at the renderings, while one is awaited


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


# --- the exporter's process -----------------------------------------------------------------


class _Board:
    """The snapshot source: swapped whole, as the poller's board is."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def snapshot(self) -> Snapshot:
        return self.current

    def ready(self) -> bool:
        return True


def changed(snapshot: Snapshot, every: bool) -> Snapshot:
    """A copy where every target (or the first) is a new TargetSnapshot: re-rendered."""
    targets = list(snapshot.targets)
    for index in range(len(targets) if every else min(1, len(targets))):
        target = targets[index]
        targets[index] = replace(target, last_poll_time=(target.last_poll_time or 0.0) + 1.0)
    return replace(snapshot, targets=tuple(targets))


def _renders(expositions: Expositions) -> dict[str, int]:
    return {cost.format: cost.renders for cost in expositions.costs()}


def _publish(board: _Board, expositions: Expositions, every: bool) -> Publish:
    """Swaps in a changed snapshot and waits until every format in demand rendered it."""
    before = _renders(expositions)
    if not before:
        raise RuntimeError("no format in demand: scrape before publishing")
    new = changed(board.current, every)
    cpu = time.process_time()
    board.current = new
    expositions.published()
    deadline = time.monotonic() + FIRST_RENDER_TIMEOUT
    while any(_renders(expositions).get(kind, 0) <= n for kind, n in before.items()):
        if time.monotonic() > deadline:
            raise RuntimeError("the published snapshot was not rendered in time")
        time.sleep(POLL_EVERY)
    cpu = time.process_time() - cpu
    costs = expositions.costs()
    return Publish(cpu, max(c.seconds for c in costs), max(c.size for c in costs))


def _exporter_main(conn: Connection, shape: tuple[int, int, int]) -> None:
    """Serves a synthetic snapshot; answers "state" with (CPU seconds, renderings) and
    "publish" with a Publish, until None or the parent is gone."""
    targets, queues, tags = shape
    board = _Board(synthetic_snapshot(targets, queues, tags, tracked_jobs=1_000))
    expositions = exporter_expositions(board, ApiStats(), "bench")
    server = ExporterServer(("127.0.0.1", 0), board, expositions, version="bench")
    server.start()
    try:
        conn.send(server.port)
        while (order := conn.recv()) is not None:
            if order == "state":
                conn.send((time.process_time(), sum(_renders(expositions).values())))
            elif order == "peak rss":
                conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            else:
                conn.send(_publish(board, expositions, every=order == "publish all"))
    except EOFError:
        pass
    finally:
        server.stop()


# --- the scrapers' process ------------------------------------------------------------------


def _request(connection: http.client.HTTPConnection, compressed: bool) -> tuple[str, bytes]:
    headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip" if compressed else "identity"}
    connection.request("GET", "/metrics", headers=headers)
    response = connection.getresponse()
    body = response.read()  # IncompleteRead when shorter than Content-Length
    if response.status != 200:
        raise ValueError(f"status {response.status}")
    if compressed and response.getheader("Content-Encoding") != "gzip":
        raise ValueError("asked for gzip, answered without")
    return response.getheader("Content-Type", ""), body


class _Scraper(threading.Thread):
    """One connection: connects (and asks /healthz, so the server has taken it in), waits at
    the start line, then scrapes `scrapes` times."""

    def __init__(self, port: int, scrapes: int, start: threading.Barrier) -> None:
        super().__init__(daemon=True)
        self.port, self.scrapes, self.start_line = port, scrapes, start
        self.connected = threading.Event()
        self.latencies: list[float] = []
        self.received = 0
        self.failures = 0
        self.errors: set[str] = set()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SCRAPE_TIMEOUT)
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
        except (OSError, http.client.HTTPException) as error:
            self._fail(f"connect: {error}")
        self.connected.set()
        self.start_line.wait()
        for _ in range(self.scrapes):
            began = time.perf_counter()
            try:
                _, body = _request(connection, compressed=True)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self._fail(f"{type(error).__name__}: {error}")
                connection.close()  # the next request connects again
                continue
            took = time.perf_counter() - began
            if took > SCRAPE_TIMEOUT or not body.startswith(b"\x1f\x8b"):
                self._fail("slower than the scrape timeout" if body else "empty body")
                continue
            self.latencies.append(took)
            self.received += len(body)
        connection.close()

    def _fail(self, error: str) -> None:
        self.failures += 1
        if len(self.errors) < 5:
            self.errors.add(error)


def _level(conn: Connection, port: int, scrapers: int, scrapes: int) -> Level:
    """Connects the scrapers, says "ready", and on "go" lets them scrape."""
    start = threading.Barrier(scrapers + 1)
    crew = [_Scraper(port, scrapes, start) for _ in range(scrapers)]
    for scraper in crew:
        scraper.start()
    for scraper in crew:
        scraper.connected.wait()
    conn.send("ready")
    conn.recv()
    began = time.perf_counter()
    start.wait()
    for scraper in crew:
        scraper.join()
    return Level(
        scrapers=scrapers,
        scrapes=sum(len(s.latencies) for s in crew),
        failed=sum(s.failures for s in crew),
        errors=tuple(sorted({e for s in crew for e in s.errors})[:5]),
        cpu=math.nan,  # the parent fills it in from the exporter's process
        wall=time.perf_counter() - began,
        renderings=0,
        latencies=tuple(x for s in crew for x in s.latencies),
        received=sum(s.received for s in crew),
    )


def _sizes(port: int) -> Sizes:
    """A gzip scrape (the first waits for the first rendering) and an identity one."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=FIRST_RENDER_TIMEOUT)
    try:
        content_type, packed = _request(connection, compressed=True)
        _, plain = _request(connection, compressed=False)
    finally:
        connection.close()
    problems: list[str] = []
    try:
        unpacked = gzip.decompress(packed)
    except (OSError, EOFError) as error:
        problems.append(f"the gzip body does not decompress: {error}")
        unpacked = b""
    for name, text in (("gzip", unpacked), ("identity", plain)):
        if not text.startswith(b"# HELP ") or not text.endswith(b"# EOF\n"):
            problems.append(f"the {name} body is not a whole OpenMetrics exposition")
        elif text.count(b"# EOF\n") != 1 or b"tencent_ci_up{" not in text:
            problems.append(f"the {name} body is not the exporter's metrics")
    if not content_type.startswith("application/openmetrics-text"):
        problems.append(f"answered {content_type!r}, not OpenMetrics")
    return Sizes(content_type, len(packed), len(plain), count_samples(plain), tuple(problems))


def _scrapers_main(conn: Connection, port: int) -> None:
    """("level", K, S) or ("sizes",), until None or the parent is gone."""
    try:
        while (order := conn.recv()) is not None:
            if order[0] == "sizes":
                conn.send(_sizes(port))
            else:
                _, scrapers, scrapes = order
                conn.send(_level(conn, port, scrapers, scrapes))
    except EOFError:
        pass


# --- the parent -----------------------------------------------------------------------------


class _Child:
    """A spawned process (not forked: the parent may run threads) and its end of a pipe."""

    def __init__(self, target: Any, *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args), daemon=True)
        self.process.start()
        child.close()

    def ask(self, order: Any) -> Any:
        self.conn.send(order)
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()


def _run_level(exporter: _Child, scrapers: _Child, count: int, scrapes: int) -> Level:
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
    exporter = _Child(_exporter_main, options.shape)
    scrapers: _Child | None = None
    try:
        port = exporter.conn.recv()
        scrapers = _Child(_scrapers_main, port)
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


# --- the table ------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def _fraction(ratio: float) -> str:
    """0.0013 as "1/770": easier to hold against 1/10."""
    return f"1/{1 / ratio:,.0f}" if ratio > 0 and math.isfinite(ratio) else "n/a"


def table(result: ScrapeCostResult) -> str:
    """The levels side by side with one rendering, as markdown."""
    lines = [
        "| scrapers | scrapes | exporter CPU | per scrape (c) | c / R | lifetime T = R + K x c |"
        " renderings during | latency median | latency max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in result.levels:
        latency = sorted(lv.latencies)
        median = statistics.median(latency) if latency else math.nan
        lines.append(
            f"| {lv.scrapers} | {lv.scrapes} ({lv.failed} failed) | {lv.cpu:.3f} s |"
            f" {_ms(lv.per_scrape)} | {_fraction(result.ratio(lv))} |"
            f" {result.lifetime(lv):.2f} s | {lv.renderings} | {_ms(median)} |"
            f" {_ms(max(latency, default=math.nan))} |"
        )
    return "\n".join(lines)


def summary(result: ScrapeCostResult) -> str:
    sizes, first, last = result.sizes, result.levels[0], result.levels[-1]
    return (
        f"{result.streams} streams, {sizes.samples} samples, {sizes.identity_bytes / 2**20:.1f}"
        f" MiB ({sizes.gzip_bytes / 2**20:.2f} MiB gzip) of {sizes.content_type}.\n"
        f"R, one full rendering: {result.render_cpu:.2f} s CPU (least of"
        f" {len(result.renders)}: {', '.join(f'{p.cpu:.2f}' for p in result.renders)}),"
        f" {result.render_wall:.2f} s wall; one target changed: {result.one_target.cpu:.3f} s.\n"
        f"T_{last.scrapers} / T_{first.scrapers} = {result.growth:.3f}"
        f" (bound {LIFETIME_TARGET:g}); per scrape at most"
        f" {_fraction(max(result.ratio(lv) for lv in result.levels))} of R (bound 1/10);"
        f" latency median {_ms(result.latency_median)}, max {_ms(result.latency_max)}"
        f" (bound {LATENCY_TARGET:g} s); clean: {result.clean}"
        + (f" ({'; '.join(sizes.problems)})" if sizes.problems else "")
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
