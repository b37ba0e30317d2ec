"""The scrapes-under-load benchmark's report (bench/scrape_load.py): the phases side by side,
and its section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import math
import os
import platform
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.scrape_load_results import Phase, Result
from bench.scraping import SCRAPE_TIMEOUT

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Scrapes under load"
COMMAND = "python3 -m bench.scrape_load --write-docs"


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


def no_nan(value: Any) -> Any:
    """NaN (no sample) as null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: no_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [no_nan(item) for item in value]
    return value
