"""The suite's results as a table (printed) and as docs/benchmarks.md (--write-docs).

Each target is a row: what was measured, the bound it is held to, the ratio and a verdict:
"pass", "FAIL", or "pending" when the exporter or the simulator lacks what it needs yet.
"""

from __future__ import annotations

import math
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench.cpu import CpuResult
from bench.latency import LatencyResult
from bench.scale import ScaleResult
from bench.scrape import ScrapeResult
from bench.scrape_cost import (
    LATENCY_TARGET,
    LIFETIME_TARGET,
    PER_SCRAPE_TARGET,
    ScrapeCostResult,
)

REQUESTS_TARGET = 1.25
CPU_TARGET = 5.0
BYTES_PER_JOB_TARGET = 200.0
RENDER_TARGET = 1.2
WALL_TARGET = 1.2


@dataclass(frozen=True)
class Row:
    target: str
    measured: str
    bound: str
    ratio: str
    verdict: str  # pass, FAIL, pending, or "" for a row shown for comparison


@dataclass
class SuiteResult:
    command: str
    scale: ScaleResult | None = None
    cpu: CpuResult | None = None
    scrape: ScrapeResult | None = None
    latency: LatencyResult | None = None
    cost: ScrapeCostResult | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    load: tuple[float, float, float] = field(default_factory=lambda: _load())
    seconds: float = 0.0


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (math.nan, math.nan, math.nan)


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _x(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else "n/a"


def _exact(result: ScaleResult) -> bool:
    return (
        result.exporter.exact
        and result.traced.exact
        and (result.backoff is None or result.backoff.exact)
    )


def rows(result: SuiteResult) -> list[Row]:
    found: list[Row] = []
    if result.scale is not None:
        found += _scale_rows(result.scale)
    if result.cpu is not None:
        cpu = result.cpu
        found.append(
            Row(
                "3. CPU per 10,000 jobs parsed + accounted",
                f"{cpu.exporter * 1000:.0f} ms",
                f"SDK {cpu.sdk * 1000:.0f} ms / {CPU_TARGET:g}",
                f"{cpu.ratio:.1f}x less",
                _verdict(cpu.ratio >= CPU_TARGET),
            )
        )
    if result.scale is not None:
        found += _memory_rows(result.scale)
    if result.scrape is not None:
        found += _scrape_rows(result.scrape)
    if result.latency is not None:
        found += _latency_rows(result.latency)
    if result.cost is not None:
        found += _cost_rows(result.cost)
    return found


def _scale_rows(scale: ScaleResult) -> list[Row]:
    polls = max(1, len(scale.polls))
    bound = sum(p.bound for p in scale.polls) / polls
    exporter = scale.mean("exporter")
    baseline = scale.mean("baseline")
    ratio = scale.ratio("exporter")
    found = [
        Row(
            f"1. API requests per poll, {scale.jobs_per_day_overall / 1e6:.2f}M jobs/day",
            f"{exporter:.0f}",
            f"{REQUESTS_TARGET:g} x {bound:.0f}",
            _x(ratio),
            _verdict(ratio <= REQUESTS_TARGET and scale.exporter.exact),
        ),
        Row(
            f"   baseline: SDK cron script, {scale.options.baseline_lookback / 60:g} min lookback",
            f"{baseline:.0f}",
            f"{bound:.0f}",
            _x(scale.ratio("baseline")),
            "",
        ),
    ]
    if not scale.backoff_supported or scale.backoff is None:
        found.append(Row("2. idle-tag back-off", "-", "-", "-", "pending"))
    else:
        backoff = scale.mean("backoff")
        longest = scale.longest_idle_gap or 0.0
        ok = (
            backoff < exporter
            and _exact(scale)
            and longest <= max(scale.options.idle_tag_backoff, scale.options.interval)
        )
        found.append(
            Row(
                f"2. idle-tag back-off ({scale.options.idle_tag_backoff / 60:g} min max)",
                f"{backoff:.0f}",
                f"< {exporter:.0f} (no back-off)",
                _x(backoff / exporter if exporter else math.nan),
                _verdict(ok),
            )
        )
    found.append(
        Row(
            "   every job counted exactly once",
            f"{scale.exporter.counted}/{scale.exporter.expected}",
            "simulator's record",
            "exact" if _exact(scale) else "NOT EXACT",
            _verdict(_exact(scale)),
        )
    )
    return found


def _memory_rows(scale: ScaleResult) -> list[Row]:
    memory = scale.memory
    return [
        Row(
            f"4. memory per tracked job ({memory.tracked_jobs} tracked)",
            f"{memory.per_job:.0f} B",
            f"{BYTES_PER_JOB_TARGET:.0f} B",
            _x(memory.per_job / BYTES_PER_JOB_TARGET),
            _verdict(memory.per_job <= BYTES_PER_JOB_TARGET),
        ),
        Row(
            "   exporter process resident (RSS)",
            f"{(memory.rss - memory.tracemalloc_overhead) / 2**20:.0f} MiB",
            "-",
            "-",
            "",
        ),
    ]


def _scrape_rows(scrape: ScrapeResult) -> list[Row]:
    worst = max(scrape.exporter_few, scrape.exporter_many)
    return [
        Row(
            f"5. /metrics render, {scrape.streams} streams, {scrape.samples} samples",
            f"{worst:.2f} s",
            f"{RENDER_TARGET:g} x {scrape.plain:.2f} s (per sample)",
            _x(scrape.ratio),
            _verdict(scrape.ratio <= RENDER_TARGET),
        ),
        Row(
            f"   {scrape.many_jobs:,} vs {scrape.few_jobs:,} tracked jobs",
            f"{scrape.exporter_many:.2f} s",
            f"{scrape.exporter_few:.2f} s",
            _x(scrape.jobs_effect),
            "",
        ),
    ]


def _latency_rows(latency: LatencyResult) -> list[Row]:
    if not latency.available:
        return [Row("6. poll wall time, 50 ms latency", "-", "-", "-", "pending")]
    gate = latency.rate_bound
    assert gate is not None
    return [
        Row(
            f"6. poll wall time, {latency.latency * 1000:.0f} ms latency, {latency.requests} req",
            f"{latency.wall:.2f} s",
            f"{WALL_TARGET:g} x {latency.ideal:.2f} s",
            _x(latency.ratio),
            _verdict(latency.ratio <= WALL_TARGET),
        ),
        Row(
            f"   rate limit {gate.requests_per_second:g}/s burst {gate.burst}, "
            f"concurrency {gate.concurrency}",
            f"{gate.requests} req in {gate.wall:.2f} s",
            f">= {gate.floor:.2f} s",
            f"{gate.least_tokens:+.2f} tokens, {gate.most_in_flight} in flight",
            _verdict(gate.honoured),
        ),
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def _cost_rows(cost: ScrapeCostResult) -> list[Row]:
    found: list[Row] = []
    for level in cost.levels:
        ratio = cost.ratio(level)
        clean = level.failed == 0 and level.renderings == 0 and level.scrapes > 0
        scrapers = f"{level.scrapers} scraper{'s' if level.scrapers > 1 else ''}"
        found.append(
            Row(
                f"7. CPU per scrape of an unchanged snapshot, {cost.streams} streams, {scrapers}"
                if not found
                else f"   {scrapers}",
                _ms(level.per_scrape),
                f"{PER_SCRAPE_TARGET:g} x R {cost.render_cpu:.2f} s",
                f"{ratio:.2g}x",
                _verdict(ratio <= PER_SCRAPE_TARGET and clean and not cost.sizes.problems),
            )
        )
    first, last = cost.levels[0], cost.levels[-1]
    return [
        *found,
        Row(
            f"   lifetime of a snapshot R + K x c, {last.scrapers} vs {first.scrapers} scrapers",
            f"{cost.lifetime(last):.2f} s",
            f"{LIFETIME_TARGET:g} x {cost.lifetime(first):.2f} s",
            f"{cost.growth:.3f}x",
            _verdict(cost.lifetime_ok),
        ),
        Row(
            "   latency of a scrape of the unchanged snapshot, median",
            _ms(cost.latency_median),
            f"< {LATENCY_TARGET:g} s",
            f"max {_ms(cost.latency_max)}",
            _verdict(cost.latency_ok),
        ),
        Row(
            "   one full rendering (R), CPU and wall time",
            f"{cost.render_cpu:.2f} s",
            "-",
            f"{cost.render_wall:.2f} s wall",
            "",
        ),
    ]


def table(found: list[Row]) -> str:
    header = Row("target", "measured", "bound", "ratio", "result")
    widths = [
        max(len(getattr(row, name)) for row in [header, *found])
        for name in ("target", "measured", "bound", "ratio", "verdict")
    ]
    lines = []
    for row in [header, *found]:
        cells = (row.target, row.measured, row.bound, row.ratio, row.verdict)
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(found: list[Row]) -> str:
    lines = ["| target | measured | bound | ratio | result |", "|---|---|---|---|---|"]
    for row in found:
        target = row.target.strip()
        if row.target.startswith("   "):
            target = f"&nbsp;&nbsp;&nbsp;{target}"
        lines.append(f"| {target} | {row.measured} | {row.bound} | {row.ratio} | {row.verdict} |")
    return "\n".join(lines)


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model or platform.processor() or 'unknown model'}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


# -- docs/benchmarks.md ------------------------------------------------------------------------

COST_SECTION = "7. Scrapes of an unchanged snapshot"
OWN_SECTIONS = (
    "Summary",
    "1. API requests per poll",
    "2. Idle tags",
    "3. CPU per 10,000 jobs",
    "4. Memory per tracked job",
    "5. /metrics render time",
    "6. Poll wall time under latency",
    COST_SECTION,
    "Method and caveats",
)
_HEADING = re.compile(r"^## (.+?)\s*$", re.MULTILINE)
_ROW_TARGET = re.compile(r"^\|\s*(\d+)\.")


def foreign_sections(text: str) -> list[str]:
    """The `## ` sections of an existing file that this suite does not write, verbatim."""
    kept: list[str] = []
    matches = list(_HEADING.finditer(text))
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        if match.group(1) not in OWN_SECTIONS:
            kept.append(text[match.start() : end].rstrip() + "\n")
    return kept


def complete(result: SuiteResult) -> bool:
    """Whether every target ran."""
    parts = (result.scale, result.cpu, result.scrape, result.latency, result.cost)
    return all(part is not None for part in parts)


def write_docs(path: Path, result: SuiteResult, details: dict[str, str]) -> None:
    """A run of every target rewrites the file (keeping sections written by others); a run of
    some targets rewrites their sections and Summary rows in place (see merge_docs)."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing.strip() and not complete(result):
        text = merge_docs(existing, result, details)
    else:
        parts = [_preamble(result), f"## Summary\n\n{markdown_table(rows(result))}\n"]
        parts += [
            f"## {name}\n\n{details[name].strip()}\n" for name in OWN_SECTIONS if name in details
        ]
        parts += foreign_sections(existing)
        text = "\n".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text before the first `## ` heading, and (name, text) of every section."""
    matches = list(_HEADING.finditer(text))
    if not matches:
        return text, []
    found = []
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        found.append((match.group(1), text[match.start() : end].rstrip() + "\n"))
    return text[: matches[0].start()], found


def merge_docs(existing: str, result: SuiteResult, details: dict[str, str]) -> str:
    """`existing` with the run's sections rewritten in place (new ones where OWN_SECTIONS puts
    them) and its Summary rows replaced target by target; the numbered sections written say
    which run they come from. Everything else (the preamble, other targets' sections and rows,
    text under the Summary table, other people's sections) stays as it was."""
    preamble, sections = _sections(existing)
    stamp = (
        f"Latest run of this section: `{result.command}`, {result.started:%Y-%m-%d %H:%M} UTC;"
        f" load average {', '.join(f'{x:.1f}' for x in result.load)} when the run began.\n\n"
    )
    written = {
        name: f"## {name}\n\n{stamp if name[:1].isdigit() else ''}{body.strip()}\n"
        for name, body in details.items()
    }
    merged = [(name, written.pop(name, text)) for name, text in sections]
    merged = [
        (name, _merge_summary(text, rows(result)) if name == "Summary" else text)
        for name, text in merged
    ]
    for name in [n for n in OWN_SECTIONS if n in written]:
        later = OWN_SECTIONS[OWN_SECTIONS.index(name) + 1 :]
        at = next((i for i, (other, _) in enumerate(merged) if other in later), None)
        if at is None:  # after the last of ours, else at the end
            ours = [i for i, (other, _) in enumerate(merged) if other in OWN_SECTIONS]
            at = ours[-1] + 1 if ours else len(merged)
        merged.insert(at, (name, written.pop(name)))
    if not any(name == "Summary" for name, _ in merged):
        merged.insert(0, ("Summary", f"## Summary\n\n{markdown_table(rows(result))}\n"))
    return preamble + "\n".join(text for _, text in merged)


def _row_groups(lines: list[str]) -> dict[int, list[str]]:
    """Table rows by the target number of the row that starts each group (indented rows
    follow theirs); rows before the first numbered one are left out."""
    groups: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        match = _ROW_TARGET.match(line)
        if match:
            current = groups.setdefault(int(match.group(1)), [])
        if current is not None:
            current.append(line)
    return groups


def _merge_summary(text: str, new_rows: list[Row]) -> str:
    """The Summary section with the table's rows of the targets in `new_rows` replaced."""
    lines = text.splitlines()
    table_at = [i for i, line in enumerate(lines) if line.startswith("|")]
    fresh = _row_groups(markdown_table(new_rows).splitlines()[2:])
    if not table_at:
        return text.rstrip() + "\n\n" + markdown_table(new_rows) + "\n"
    start = table_at[0]
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    groups = {**_row_groups(lines[start + 2 : end]), **fresh}
    body = [line for number in sorted(groups) for line in groups[number]]
    return "\n".join([*lines[: start + 2], *body, *lines[end:]]) + "\n"


def _preamble(result: SuiteResult) -> str:
    load = ", ".join(f"{x:.1f}" for x in result.load)
    return (
        "# Benchmarks\n\n"
        "What the exporter costs at scale (API calls first, then CPU, memory, scrape time and poll"
        " wall time), against the least work CI's API allows and against a cron script written"
        " with cos-python-sdk-v5. Everything runs against the built-in CI simulator.\n\n"
        f"Latest run: `{result.command}`, {result.started:%Y-%m-%d %H:%M} UTC, "
        f"{result.seconds:.0f} s.\n\n"
        f"Machine: {machine()}; load average {load} when the run began (other work shared the"
        " machine: CPU times, not wall times, are compared where they can be).\n"
    )


def command_line() -> str:
    return "python3 -m bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python3 -m bench"
