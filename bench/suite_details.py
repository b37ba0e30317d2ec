"""The explanations of the suite's numbers (bench/suite.py): the sections of
docs/benchmarks.md, by name."""

from __future__ import annotations

from bench.latency import TIMING_ALLOWANCE
from bench.report import COST_SECTION, SuiteResult
from bench.scrape_cost_results import (
    LATENCY_TARGET,
    LIFETIME_TARGET,
    PER_SCRAPE_TARGET,
    ScrapeCostResult,
)
from bench.scrape_cost_table import table as cost_table
from bench.suite_scale_details import idle_details, memory_details, requests_details


def details(result: SuiteResult) -> dict[str, str]:
    found: dict[str, str] = {}
    if result.scale is not None:
        found["1. API requests per poll"] = requests_details(result.scale)
        found["2. Idle tags"] = idle_details(result.scale)
        found["4. Memory per tracked job"] = memory_details(result.scale)
    if result.cpu is not None:
        cpu = result.cpu
        found["3. CPU per 10,000 jobs"] = (
            f"The pages a busy stream's polls fetch ({cpu.pages} pages, {cpu.jobs} jobs: each"
            " minute's active listing and finished listing from the window edge, rendered by the"
            " simulator), processed by both sides in this process, interleaved,"
            f" {cpu.repetitions} times; medians of CPU time (`time.process_time`).\n\n"
            "| side | CPU per 10,000 jobs |\n|---|---|\n"
            f"| exporter: `exporter.ci.parse` + `StreamTracker` (begin, to_describe, commit) |"
            f" {cpu.exporter * 1000:.0f} ms |\n"
            f"| cos-python-sdk-v5: `xml_to_dict` + `format_dict` (as `ci_list_media_jobs`),"
            f" states counted | {cpu.sdk * 1000:.0f} ms |\n\n"
            f"The SDK takes **{cpu.ratio:.1f}x** the CPU (target: at least {5:g}x; from"
            f" {cpu.spread[0]:.1f}x to {cpu.spread[1]:.1f}x repetition by repetition). Of the"
            f" exporter's {cpu.exporter * 1000:.0f} ms, parsing alone takes"
            f" {cpu.parse_only * 1000:.0f} ms ({cpu.parse_only / cpu.exporter:.0%}); the rest is"
            " accounting.\n"
        )
    if result.scrape is not None:
        found["5. /metrics render time"] = _scrape_details(result)
    if result.latency is not None:
        found["6. Poll wall time under latency"] = _latency_details(result)
    if result.cost is not None:
        found[COST_SECTION] = _cost_details(result.cost)
    found["Method and caveats"] = _method()
    return found


def _scrape_details(result: SuiteResult) -> str:
    s = result.scrape
    assert s is not None
    return (
        f"A snapshot of {s.streams} streams ({s.samples} samples per scrape), rendered by"
        f" `CICollector` through `generate_latest`; the reference is a registry of plain"
        f" prometheus_client Gauge/Counter/Histogram objects holding the same series"
        f" ({s.plain_samples} samples, `_created` off). {s.repetitions} interleaved repetitions,"
        " the least CPU time of each.\n\n"
        "| what | CPU per scrape | per sample |\n|---|---|---|\n"
        f"| exporter, {s.few_jobs:,} tracked jobs | {s.exporter_few:.2f} s |"
        f" {s.exporter_few / s.samples * 1e6:.2f} us |\n"
        f"| exporter, {s.many_jobs:,} tracked jobs | {s.exporter_many:.2f} s |"
        f" {s.exporter_many / s.samples * 1e6:.2f} us |\n"
        f"| prometheus_client, plain metrics | {s.plain:.2f} s |"
        f" {s.plain / s.plain_samples * 1e6:.2f} us |\n\n"
        f"Ratio per sample (the worse snapshot): **{s.ratio:.2f}x** (target at most 1.2x);"
        f" many tracked jobs over few: {s.jobs_effect:.2f}x (the snapshot holds aggregates"
        " only: its size does not depend on the jobs).\n"
    )


def _latency_details(result: SuiteResult) -> str:
    latency = result.latency
    assert latency is not None
    if not latency.available:
        return "Pending: needs `Simulator.latency` and the exporter's `rate_limit` configuration."
    gate, free = latency.rate_bound, latency.concurrency_bound
    assert gate is not None and free is not None
    return (
        f"Real time, in-process simulator answering every request after"
        f" {latency.latency * 1000:.0f} ms; the exporter in its own process polls one target of"
        f" {latency.streams} streams (idle back-off off), the poll after its first.\n\n"
        f"Concurrency-bound (rate limit far above it): {latency.requests} requests at"
        f" concurrency {latency.concurrency} took {latency.wall:.2f} s, against requests x"
        f" latency / concurrency = {latency.ideal:.2f} s: **{latency.ratio:.2f}x** (target at"
        f" most 1.2x); at most {free.most_in_flight} requests were in flight at the"
        f" simulator, and fewer than {latency.concurrency} for {free.underused:.2f} s of the"
        f" poll. The exporter's process spent {latency.cpu:.2f} s of CPU on the poll,"
        f" {latency.cpu / max(1, latency.requests) * 1000:.1f} ms per request: time in which a"
        " worker holds no request in flight.\n\n"
        f"Rate-bound ({gate.requests_per_second:g} requests/s, burst {gate.burst}, concurrency"
        f" {gate.concurrency}): {gate.requests} requests in {gate.wall:.2f} s (the gate allows no"
        f" less than {gate.floor:.2f} s). Replaying a token bucket of the same rate and burst"
        f" over the arrival times at the simulator, its lowest level was"
        f" {gate.least_tokens:+.2f} tokens (below zero: more requests in some window of w seconds"
        f" than burst + rate x w; {TIMING_ALLOWANCE * 1000:g} ms of arrival-time jitter"
        f" allowed); at most {gate.most_in_flight} were in flight. Honoured: {gate.honoured}.\n"
    )


def _cost_details(cost: ScrapeCostResult) -> str:
    sizes, first, last = cost.sizes, cost.levels[0], cost.levels[-1]
    worst = max(cost.ratio(level) for level in cost.levels)
    levels = ", ".join(str(level.scrapers) for level in cost.levels)
    renders = ", ".join(f"{p.cpu:.2f}" for p in cost.renders)
    return (
        "/metrics is rendered when a snapshot is published (`exporter/exposition.py`), once per"
        " format in demand, and a scrape of an unchanged snapshot sends the cached bytes (with"
        " gzip, a cached prefix) plus a small live part rendered per scrape (API self-metrics,"
        " `process_*`, `python_*`, `tencent_ci_exposition_*`). The exporter"
        " (`exporter_expositions` + `ExporterServer`) serves a synthetic snapshot of"
        f" {cost.targets} targets and {cost.streams} streams (`bench/scrape.py`'s, every"
        f" histogram observed: a busy deployment): {sizes.samples} samples,"
        f" {sizes.identity_bytes / 2**20:.1f} MiB of OpenMetrics text,"
        f" {sizes.gzip_bytes / 2**20:.2f} MiB with gzip. It runs in a spawned process of its"
        " own, and its CPU is `time.process_time()` there (every thread, the kernel's time in"
        " `sendall` included). The scrapers run in another process, one thread and one"
        " persistent connection each, asking as Prometheus does (OpenMetrics, gzip).\n\n"
        f"R, one full rendering: a snapshot where all {cost.targets} targets changed is"
        " published, OpenMetrics with gzip in demand, and the exporter's CPU is read when the"
        f" rendering is done: **{cost.render_cpu:.2f} s** (the least of {len(cost.renders)}:"
        f" {renders}). Its wall time, {cost.render_wall:.2f} s, is about what every scrape"
        " waited when /metrics was rendered per scrape.\n\n"
        f"Each level scrapes a snapshot just published: {levels} scrapers each scrape it"
        f" {cost.scrapes_per_scraper} times (K x S scrapes), each again as soon as its answer is"
        " in; c = the exporter's CPU over those scrapes / (K x S). The lifetime of one snapshot"
        " is T = R + K x c: one rendering, then each of the K scrapers scrapes it once. No"
        " rendering was made during the scrapes (the renderings column). Latencies are the"
        " scrapers' own, request sent to body read.\n\n"
        f"{cost_table(cost)}\n\n"
        f"Per scrape at most **{worst:.2g}x** R (1/{1 / worst:,.0f}; target at most"
        f" {PER_SCRAPE_TARGET:g}x at every level). T_{last.scrapers} / T_{first.scrapers} ="
        f" **{cost.growth:.3f}x** (target at most {LIFETIME_TARGET:g}x). A single scraper's"
        f" scrape of the unchanged snapshot took {cost.latency_median * 1000:.1f} ms (median of"
        f" {len(cost.latencies)}), {cost.latency_max * 1000:.1f} ms at most (target under"
        f" {LATENCY_TARGET:g} s), against {cost.render_wall:.2f} s for one rendering; with"
        f" {last.scrapers} at once, latency is mostly waiting for the server's workers (40 by"
        " default) and the loopback.\n\n"
        f"A publish where one of the {cost.targets} targets changed (a poll of one target) cost"
        f" {cost.one_target.cpu:.3f} s of CPU, {cost.one_target.cpu / cost.render_cpu:.0%} of R,"
        f" and {cost.one_target.seconds:.2f} s of wall time: that target's families are rendered"
        " again, and so are their deflate blocks; the others' pieces and blocks are kept, and"
        " the body is never joined into one copy. A scrape that arrives after a publish waits"
        " for that rendering, for at most half its scrape timeout when the rendering before can"
        " be sent instead. The exporter's process peaked at"
        f" {cost.peak_rss / 2**20:.0f} MiB resident.\n"
    )


def _method() -> str:
    return (
        "- One process per side: the simulator and the workload run in the benchmark's process;"
        " the exporter (its real `Poller`, over HTTP) and the cron-script baseline each run in a"
        " spawned process of their own (`bench/agents.py`), so that CPU time, traced memory and"
        " RSS are theirs alone. Simulated time: every process runs under freezegun, moved to the"
        " same instant before each poll; the workload is played up to that instant first. The"
        " agents poll one after the other, each counted alone.\n"
        "- Exactness is checked in the same run: each exporter's counters (finished jobs by"
        " stream and state, failures by stream and code) against the simulator's record of the"
        " jobs that finished after that exporter's first poll.\n"
        "- In frozen time a token bucket never refills, so targets 1, 2 and 4 run with the rate"
        " limit's rate unbounded (its concurrency, 4, kept); target 6 measures the limit in real"
        " time.\n"
        "- Ratios, not absolute times, are the results: the machine was shared with other work"
        " while this ran. Targets 3 and 6 sit closest to their bounds and move most with other"
        " load (CPU caches and scheduling for 3, the exporter's CPU per request for 6): compare"
        " a few runs before reading a pass or a fail into them.\n"
        "- Target 7 runs the exporter and its scrapers in two spawned processes of their own,"
        " in real time (`bench/scrape_cost.py`); tests/test_bench_scrape_cost.py runs it tiny.\n"
        "- `python3 -m bench --smoke` runs tiny sizes (tests/test_bench.py); `--only 1,3` runs"
        " some targets (1, 2 and 4 come from one run). A run of some targets with"
        " `--write-docs` rewrites their sections and Summary rows only, and leaves the rest of"
        " the file as it was.\n"
    )
