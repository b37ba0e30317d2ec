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
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import http.client
import itertools
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.config import Config, RateLimitConfig
from exporter.demo import demo_config
from exporter.exposition import Expositions, exporter_expositions
from exporter.poller import Poller
from exporter.server import ExporterServer
from exporter.simulator import DEMO_SECRET_ID, DEMO_SECRET_KEY, Simulator, Stream, Workload

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Scrapes under load"
SCRAPE_TIMEOUT = 10.0  # Prometheus's default scrape_timeout
# What Prometheus 2.x/3.x sends: OpenMetrics preferred, the text format accepted, gzip.
ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
)
SNAPSHOT_EVERY = 0.02  # seconds between two looks at the poller's snapshot
COMMAND = "python3 -m bench.scrape_load --write-docs"

# (service, category, [(tag, jobs per second, median run seconds)]) per queue of every bucket.
_QUEUES: tuple[tuple[str, str | None, tuple[tuple[str, float, float], ...]], ...] = (
    ("media", "Transcoding", (("Transcode", 0.2, 20.0), ("Snapshot", 0.3, 3.0))),
    ("media", "SpeedTranscoding", (("Transcode", 0.1, 30.0),)),
    ("ai", None, (("Translation", 0.1, 8.0),)),
    ("speech", None, (("SpeechRecognition", 0.1, 20.0),)),
)


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


# --- the simulator process ----------------------------------------------------------------


def build_simulator(spec: LoadSpec) -> Simulator:
    sim = Simulator({DEMO_SECRET_ID: DEMO_SECRET_KEY}, seed=spec.seed)
    for index in range(spec.targets):
        bucket = sim.add_bucket(f"load{index:02d}-{1250000000 + index}", "ap-shanghai")
        begin = bucket.now() - 600.0  # ten minutes of history: finished jobs to list
        streams: list[Stream] = []
        for service, category, tags in _QUEUES:
            queue_id = bucket.add_queue(
                service, category=category, max_concurrent=8, notify=True, at=begin - 86400
            )
            streams += [Stream(queue_id, tag, rate, median) for tag, rate, median in tags]
        workload = Workload(
            bucket,
            spec.seed * 1000 + index,
            streams,
            start=begin,
            failure_ratio=0.05,
            retention=3600.0,
        )
        workload.advance(bucket.now())
        sim.add_workload(workload)
    return sim


def _simulator_main(conn: Connection, spec: LoadSpec) -> None:
    sim = build_simulator(spec)
    sim.start()
    sim.start_workload()
    try:
        conn.send(demo_config(sim, spec.poll_interval, discover=False))
        conn.recv()  # until told to stop, or the parent is gone
    except EOFError:
        pass
    finally:
        sim.stop()


# --- the scraper process ------------------------------------------------------------------


class _Scraper(threading.Thread):
    def __init__(self, port: int, path: str, start: threading.Barrier, deadline: list[float]):
        super().__init__(daemon=True)
        self.port, self.path, self.start_line, self.deadline = port, path, start, deadline
        self.latencies: list[float] = []
        self.failures = 0
        self.errors: set[str] = set()
        self.received = 0
        self.checked = False

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SCRAPE_TIMEOUT)
        try:
            connection.connect()
        except OSError as error:
            self._fail(f"connect: {error}")
        self.start_line.wait()
        while time.monotonic() < self.deadline[0]:
            began = time.perf_counter()
            try:
                body = self._scrape(connection)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self._fail(f"{type(error).__name__}: {error}")
                connection.close()  # the next request connects again
                continue
            took = time.perf_counter() - began
            if took > SCRAPE_TIMEOUT:
                self._fail("took longer than the scrape timeout")
                continue
            self.latencies.append(took)
            self.received += len(body)
        connection.close()

    def _scrape(self, connection: http.client.HTTPConnection) -> bytes:
        connection.request("GET", self.path, headers={"Accept": ACCEPT, "Accept-Encoding": "gzip"})
        response = connection.getresponse()
        body = response.read()  # IncompleteRead when shorter than Content-Length
        if response.status != 200:
            raise ValueError(f"status {response.status}")
        if not self.checked:
            # Once per scraper: the body is a whole exposition, not just 200 bytes of something.
            text = gzip.decompress(body) if response.getheader("Content-Encoding") else body
            if b"tencent_ci_up{" not in text or not text.endswith(b"# EOF\n"):
                raise ValueError("the body is not the exporter's metrics")
            self.checked = True
        return body

    def _fail(self, error: str) -> None:
        self.failures += 1
        if len(self.errors) < 5:
            self.errors.add(error)


def _scrape_for(port: int, path: str, scrapers: int, seconds: float) -> ScrapeReport:
    deadline = [math.inf]
    start = threading.Barrier(scrapers + 1)
    threads = [_Scraper(port, path, start, deadline) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    deadline[0] = started + seconds
    start.wait()
    for thread in threads:
        thread.join()
    return ScrapeReport(
        started=started,
        ended=time.monotonic(),
        latencies=[x for t in threads for x in t.latencies],
        failures=sum(t.failures for t in threads),
        errors=sorted({e for t in threads for e in t.errors})[:5],
        bytes_received=sum(t.received for t in threads),
    )


def _scraper_main(conn: Connection, port: int, path: str) -> None:
    """One phase per order, (scrapers, seconds), until None or the parent is gone."""
    try:
        while (order := conn.recv()) is not None:
            scrapers, seconds = order
            conn.send(_scrape_for(port, path, scrapers, seconds))
    except EOFError:
        pass


# --- the exporter, here -------------------------------------------------------------------


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


def _fast_polling(config: Config) -> Config:
    """Every stream at every poll, no client-side rate limit: the simulator is no CI to spare,
    and the point is polling at full speed while scrapes come in."""
    unlimited = RateLimitConfig(requests_per_second=100_000.0, burst=100_000, concurrency=64)
    return replace(config, rate_limit=unlimited, idle_tag_backoff=0.0)


def _spawn() -> Any:
    # Not fork: this process runs threads, and a forked child would inherit their locks.
    return multiprocessing.get_context("spawn")


class _Scrapers:
    """The scraper process, started once (spawning one costs a second or two) for every phase."""

    def __init__(self, port: int) -> None:
        self._conn, child = _spawn().Pipe()
        self._process = _spawn().Process(
            target=_scraper_main, args=(child, port, "/metrics"), daemon=True
        )
        self._process.start()
        child.close()

    def scrape(self, scrapers: int, seconds: float) -> ScrapeReport:
        """`scrapers` scraping for `seconds`; none: just wait."""
        if scrapers == 0:
            started = time.monotonic()
            time.sleep(seconds)
            return ScrapeReport(started, time.monotonic(), [], 0, [], 0)
        self._conn.send((scrapers, seconds))
        report: ScrapeReport = self._conn.recv()
        return report

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(timeout=30)
        self._conn.close()


def _renderings(expositions: Expositions) -> int:
    return sum(cost.renders for cost in expositions.costs())


def _run_phase(
    scraping: _Scrapers, scrapers: int, seconds: float, spec: LoadSpec, watch: _PollWatch
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
    parent, child = _spawn().Pipe()
    simulator = _spawn().Process(target=_simulator_main, args=(child, spec), daemon=True)
    simulator.start()
    config = _fast_polling(parent.recv())
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
        scraping = _Scrapers(server.port)
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


def _phases(scraping: _Scrapers, spec: LoadSpec, watch: _PollWatch) -> Iterator[Phase]:
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


# --- the report ---------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _kib(size: float) -> str:
    return "-" if math.isnan(size) else f"{size / 1024:.0f} KiB"


def _s(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds:.2f} s"


def table(result: Result) -> str:
    rows: list[tuple[str, ...]] = [("", *(p.name for p in result.phases))]
    cells: tuple[tuple[str, Callable[[Phase], str]], ...] = (
        ("seconds", lambda p: f"{p.seconds:.1f}"),
        ("exporter CPU", lambda p: f"{p.exporter_cpu:.0%} of a core"),
        ("scrapes done", lambda p: str(p.scrapes)),
        ("failed scrapes", lambda p: str(p.failed)),
        ("scrapes per second", lambda p: f"{p.scrapes_per_second:.1f}"),
        ("response size (gzip)", lambda p: _kib(p.mean_body_bytes)),
        ("scrape latency p50", lambda p: _ms(p.latency.p50)),
        ("scrape latency p99", lambda p: _ms(p.latency.p99)),
        ("scrape latency max", lambda p: _ms(p.latency.max)),
        ("renderings of /metrics", lambda p: str(p.renderings)),
        ("polls", lambda p: str(p.cadence.polls)),
        ("poll start interval mean", lambda p: _s(p.cadence.mean)),
        ("poll start interval p99", lambda p: _s(p.cadence.p99)),
        ("poll start interval max", lambda p: _s(p.cadence.max)),
        (
            f"intervals > {1.5 * result.spec.poll_interval:g} s",
            lambda p: str(p.cadence.late),
        ),
        ("poll duration mean", lambda p: _s(p.cadence.mean_duration)),
    )
    for label, cell in cells:
        rows.append((label, *(cell(p) for p in result.phases)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU(s) ({model}), Python {platform.python_version()}, {platform.system()}"


def section(result: Result) -> str:
    spec = result.spec
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    when = (
        f"`{COMMAND}` ({today}; {machine()}; 1-minute load average "
        f"{result.load_average:.1f} when the run began)."
    )
    setup = (
        f"The exporter polls {spec.targets} simulated buckets ({result.streams} streams: "
        f"4 queues, 1 or 2 tags each) every {spec.poll_interval:g} s, every stream at every "
        f"poll and without a client rate limit; /metrics holds {result.series} series "
        f"({result.metrics_bytes / 1024:.0f} KiB of OpenMetrics text). The CI simulator runs in "
        "a process of its own, the scrapers in another, each on a thread with a persistent "
        "connection, asking as Prometheus does (OpenMetrics, gzip) and scraping again as soon "
        f"as an answer is in: no scraper and one scraper for {spec.baseline:g} s each, then "
        f"{spec.scrapers} for {spec.duration:g} s. /metrics is rendered when the poller publishes "
        "a snapshot (a poll of one target re-renders that target's part), once per format in "
        "demand, not per scrape: the renderings row counts them. There is no comparison with "
        "per-scrape rendering any more (section 7 measures a scrape against a rendering). "
        "A failed scrape is "
        f"an error, a status other than 200, a truncated body or one slower than "
        f"{SCRAPE_TIMEOUT:g} s (Prometheus's default scrape_timeout). Poll start intervals are "
        f"between consecutive polls of a target (configured: {spec.poll_interval:g} s; a poll "
        "that overruns starts the next at once). Exporter CPU is that of its process, every "
        "thread; the simulator and the scrapers are not in it."
    )
    parts = [SECTION, _wrap(when), _wrap(setup), table(result)]
    summary = _summary(result)
    if summary:
        parts.append(_wrap(summary))
    return "\n\n".join(parts) + "\n"


def _summary(result: Result) -> str:
    """The phases in one sentence, computed, so that it is true of the numbers above."""
    loaded = [p for p in result.phases if p.scrapers == result.spec.scrapers]
    quiet = [p for p in result.phases if p.scrapers == 0]
    if not loaded or not quiet or loaded[0].seconds <= 0 or quiet[0].seconds <= 0:
        return ""
    busy, idle = loaded[0], quiet[0]
    return (
        f"With {busy.scrapers} scrapers the exporter served {busy.scrapes_per_second:.0f} "
        f"scrapes per second at a p99 latency of {_ms(busy.latency.p99)}, with {busy.failed} "
        f"failed scrapes, and rendered /metrics {busy.renderings / busy.seconds:.1f} times per "
        f"second, against {idle.renderings / idle.seconds:.1f} with no scraper: renderings "
        "follow the polls, not the scrapes. Polls took "
        f"{_s(busy.cadence.mean_duration)} on average against {_s(idle.cadence.mean_duration)}."
    )


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=95, break_on_hyphens=False, break_long_words=False)


def write_docs(result: Result, path: Path = DOCS) -> None:
    """Replace our section in place, or add it at the end; the rest of the file is not ours."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    new = section(result)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == SECTION]
    if not starts:
        before = "".join(lines).rstrip("\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{before}\n\n{new}" if before else new)
        return
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + new + (f"\n{after}" if after else ""))


def _no_nan(value: Any) -> Any:
    """NaN (no sample) as null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_no_nan(item) for item in value]
    return value


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
        print(json.dumps(_no_nan(asdict(result)), indent=2))
    else:
        print(section(result))
    if args.write_docs:
        write_docs(result)
    return 1 if any(phase.failed for phase in result.phases) else 0


if __name__ == "__main__":
    sys.exit(main())
