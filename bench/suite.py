"""Runs the parts of the suite and explains their numbers (the sections of docs/benchmarks.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from bench.cpu import run_cpu
from bench.latency import TIMING_ALLOWANCE, run_latency
from bench.report import COST_SECTION, SuiteResult
from bench.scale import ScaleOptions, ScaleResult, run_scale
from bench.scrape import run_scrape
from bench.scrape_cost import (
    LATENCY_TARGET,
    LIFETIME_TARGET,
    PER_SCRAPE_TARGET,
    CostOptions,
    ScrapeCostResult,
    run_scrape_cost,
    smoke_cost_options,
)
from bench.scrape_cost import table as cost_table
from bench.workload import Shape

TARGETS = ("1", "2", "3", "4", "5", "6", "7")


@dataclass(frozen=True)
class SuiteOptions:
    scale: ScaleOptions = field(default_factory=ScaleOptions)
    cpu_polls: int = 30
    cpu_repetitions: int = 5
    scrape: tuple[int, int, int] = (50, 10, 20)  # targets, queues, tags
    scrape_repetitions: int = 2
    latency_streams: tuple[int, int] = (10, 20)  # queues, tags: a target of the 1M/day shape
    latency: float = 0.05
    latency_concurrency: int = 8
    limited_rate: tuple[float, int] = (100.0, 20)
    cost: CostOptions = field(default_factory=CostOptions)
    only: Collection[str] = TARGETS


def smoke_options() -> SuiteOptions:
    """Tiny sizes: the whole suite in seconds, for the test suite."""
    shape = Shape(
        targets=1,
        queues=2,
        tags=3,
        jobs_per_day=20_000,
        burst_size=20,
        burst_spread=5.0,
        rare_every=300.0,
        retention=3600.0,
    )
    scale = ScaleOptions(
        shape=shape,
        history=1800.0,
        warmup_polls=4,
        settle_polls=2,
        polls=2,
        idle_tag_backoff=180.0,
        baseline_lookback=1800.0,
    )
    return SuiteOptions(
        scale=scale,
        cpu_polls=4,
        cpu_repetitions=1,
        scrape=(2, 2, 3),
        scrape_repetitions=1,
        latency_streams=(1, 3),
        latency=0.01,
        latency_concurrency=2,
        limited_rate=(100.0, 3),
        cost=smoke_cost_options(),
    )


def run_suite(
    options: SuiteOptions, command: str, progress: Callable[[str], None] | None = None
) -> SuiteResult:
    say = progress or (lambda _: None)
    began = time.monotonic()
    result = SuiteResult(command=command)
    wanted = set(options.only)
    if wanted & {"1", "2", "4"}:
        shape = options.scale.shape
        say(
            f"targets 1, 2, 4: {shape.targets} targets x {shape.queues} queues x {shape.tags} tags"
            f" at {shape.jobs_per_day:,.0f} jobs/day, {options.scale.polls} measured polls"
        )
        result.scale = run_scale(options.scale, say)
    if "3" in wanted:
        say("target 3: CPU per 10,000 jobs, exporter against cos-python-sdk-v5")
        result.cpu = run_cpu(polls=options.cpu_polls, repetitions=options.cpu_repetitions)
    if "5" in wanted:
        targets, queues, tags = options.scrape
        say(f"target 5: /metrics render at {targets} x {queues} x {tags} streams")
        result.scrape = run_scrape(
            targets=targets, queues=queues, tags=tags, repetitions=options.scrape_repetitions
        )
    if "6" in wanted:
        say("target 6: poll wall time under latency, and the rate limit (real time)")
        queues, tags = options.latency_streams
        result.latency = run_latency(
            queues=queues,
            tags=tags,
            latency=options.latency,
            concurrency=options.latency_concurrency,
            limited_rate=options.limited_rate,
        )
    if "7" in wanted:
        targets, queues, tags = options.cost.shape
        say(
            f"target 7: scrapes of an unchanged snapshot at {targets} x {queues} x {tags} streams,"
            f" {', '.join(map(str, options.cost.levels))} scrapers, against one rendering"
        )
        result.cost = run_scrape_cost(options.cost)
    result.seconds = time.monotonic() - began
    return result


def with_shape(options: SuiteOptions, **changes: object) -> SuiteOptions:
    shape = replace(options.scale.shape, **changes)  # type: ignore[arg-type]
    return replace(options, scale=replace(options.scale, shape=shape))


# -- the explanations -------------------------------------------------------------------------


def details(result: SuiteResult) -> dict[str, str]:
    found: dict[str, str] = {}
    if result.scale is not None:
        found["1. API requests per poll"] = _requests_details(result.scale)
        found["2. Idle tags"] = _idle_details(result.scale)
        found["4. Memory per tracked job"] = _memory_details(result.scale)
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


def _requests_details(scale: ScaleResult) -> str:
    o, shape = scale.options, scale.options.shape
    streams = ", ".join(f"{n} {kind}" for kind, n in sorted(scale.streams.items()))
    lines = [
        f"Workload (`bench/workload.py`): {shape.targets} targets x {shape.queues} queues x"
        f" {shape.tags} tags = {shape.streams} streams ({streams}); {shape.jobs_per_day:,.0f}"
        f" jobs/day asked for, {scale.jobs_per_day_overall:,.0f} played over the run and"
        f" {scale.jobs_per_day:,.0f} during the measured polls (arrivals are random, bursts"
        f" lumpy); Poisson arrivals, {shape.burst_share:.0%}"
        f" of jobs in bursts of ~{shape.burst_size}; lognormal run times (median"
        f" {shape.median_run:g} s, sigma {shape.run_sigma:g}, up to {shape.max_run / 3600:g} h);"
        f" {shape.failure_ratio:.0%} failures over ten codes; the last queue of every target"
        f" paused. {o.history / 3600:g} h of history before the first poll; polls every"
        f" {o.interval:g} s of simulated time; {len(scale.polls)} measured polls.",
        "",
        "Lower bound per poll = queue-listing pages + for every stream max(1, ceil(active/100))"
        " + max(1, ceil(newly_finished/100)), from the simulator's ground truth at the poll's"
        " instant. Requests are counted by the simulator.",
        "",
        "| poll | active jobs | newly finished | bound | exporter | back-off on | baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, poll in enumerate(scale.polls, 1):
        backoff = "-" if poll.backoff is None else str(poll.backoff)
        baseline = "-" if poll.baseline is None else str(poll.baseline)
        lines.append(
            f"| {n} | {poll.active_jobs} | {poll.newly_finished} | {poll.bound} |"
            f" {poll.exporter} | {backoff} | {baseline} |"
        )
    polls = max(1, len(scale.polls))
    excess = [p.excess for p in scale.polls]
    above = sum(p.exporter - p.bound for p in scale.polls) / polls
    lines += [
        "",
        f"Ratio to the bound: exporter **{scale.ratio('exporter'):.3f}x**, baseline"
        f" {scale.ratio('baseline'):.3f}x"
        + (f", exporter with idle back-off {scale.ratio('backoff'):.3f}x" if scale.backoff else "")
        + ".",
        "",
        f"Where the exporter's {above:.1f} requests per poll above the bound go (per poll):",
        "",
        "| source | requests |",
        "|---|---|",
        f"| describe-by-id calls (jobs active at the last poll, created before the window) |"
        f" {sum(e.describe for e in excess) / polls:.1f} |",
        f"| finished-listing pages beyond ceil(newly finished/100), net (window overlap,"
        f" window held back after a paged active listing, missing-job listings) |"
        f" {sum(e.finished_pages for e in excess) / polls:.1f} |",
        f"| &nbsp;&nbsp;of which listings of finished jobs from the oldest missing one |"
        f" {sum(e.missing_listings for e in excess) / polls:.1f} |",
        f"| active-listing pages beyond ceil(active/100) | "
        f"{sum(e.active_pages for e in excess) / polls:.1f} |",
        f"| queue-listing pages beyond the bound |"
        f" {sum(e.queue_pages for e in excess) / polls:.1f} |",
        "",
        _baseline_text(scale),
        "",
        _rate_limit_text(scale),
    ]
    return "\n".join(lines)


def _rate_limit_text(scale: ScaleResult) -> str:
    """What the default rate limit makes of a poll this size (in real time)."""
    from exporter.config import Config

    default = getattr(Config.__dataclass_fields__.get("rate_limit"), "default_factory", None)
    if not callable(default):
        return ""
    per_second = float(default().requests_per_second)
    exporter = scale.mean("exporter")
    busiest = max((p.backoff or 0 for p in scale.polls), default=0)
    return (
        f"In real time, at the default rate limit ({per_second:g} requests/s per credential),"
        f" a poll of {exporter:.0f} requests takes at least {exporter / per_second:.0f} s"
        f" against a poll interval of {scale.options.interval:g} s; with the idle back-off the"
        f" busiest poll ({busiest} requests) takes {busiest / per_second:.0f} s. Targets sharing"
        " a credential share that rate."
    )


def _baseline_text(scale: ScaleResult) -> str:
    o = scale.options
    text = (
        f"Baseline (`bench/agents.py`, BaselineAgent): what a cron script does with"
        f" cos-python-sdk-v5 each run: list the queues (`ci_get_media_queue`), then for every"
        f" queue and tag list the jobs of all states created in the last"
        f" {o.baseline_lookback / 60:g} minutes (`ci_list_media_jobs`, 100 a page, every page)"
        f" and count their states. {o.baseline_lookback / 60:g} minutes because a script that"
        " counts states must re-list at least as far back as the jobs it wants to see finish;"
        " an hour is the usual 'recent jobs' window, and it already misses the completions of"
        f" jobs older than that ({scale.late_finishes_per_poll:.1f} per poll here), which the"
        " exporter counts. It re-lists, and re-parses, every job of the window on every run."
        " It makes fewer requests than the bound because one listing of all states per stream"
        " is all it needs to count states; the bound counts two listings per stream, since an"
        " exporter that counts every job once must tell the active jobs from the newly finished"
        " ones. It pays instead in jobs listed and parsed: the whole hour every run, against"
        " the exporter's active and newly finished jobs (the table's two columns)."
    )
    if scale.baseline is not None and "baseline" in scale.costs:
        cost = scale.costs["baseline"]
        text += (
            f" Its last run: {scale.baseline.requests} requests, {scale.baseline.jobs} jobs"
            f" parsed, {cost.cpu_per_poll:.2f} s of CPU per run."
        )
    exporter = scale.costs.get("exporter")
    backoff = scale.costs.get("backoff")
    if exporter is not None:
        text += f" The exporter's process: {exporter.cpu_per_poll:.2f} s of CPU per poll"
        if backoff is not None:
            text += f"; with the idle back-off {backoff.cpu_per_poll:.2f} s"
        text += " (under freezegun, which costs a little on every clock reading)."
    return text


def _idle_details(scale: ScaleResult) -> str:
    o = scale.options
    if not scale.backoff_supported or scale.backoff is None:
        return "Pending: this exporter's Config has no `idle_tag_backoff` yet."
    polls = max(1, len(scale.polls))
    backoff, exporter = scale.mean("backoff"), scale.mean("exporter")
    polled = sum(p.backoff_streams or 0 for p in scale.polls) / polls
    counts = [p.backoff for p in scale.polls if p.backoff is not None]
    busiest, quietest = max(counts, default=0), min(counts, default=0)
    return (
        f"The same workload, polled side by side by a second exporter process with"
        f" `idle_tag_backoff: {o.idle_tag_backoff:g}s` from {o.warmup_polls} polls before the"
        f" measured ones (so that its back-off has settled). Per measured poll it polled"
        f" {polled:.0f} of {o.shape.streams} streams and made {backoff:.0f} requests, against"
        f" {exporter:.0f} without back-off: **{1 - backoff / exporter:.0%} fewer**"
        f" ({scale.ratio('backoff'):.2f}x the lower bound, which assumes every stream is polled"
        f" every time).\n\n"
        f"No job missed or counted twice: its counters equal the simulator's record of the jobs"
        f" that finished after its first poll, stream by stream, state by state and code by"
        f" code, as of its last poll of each stream ({scale.backoff.counted} of"
        f" {scale.backoff.expected} jobs; exact: {scale.backoff.exact}). The longest any stream"
        f" went unpolled: {scale.longest_idle_gap or 0:g} s (the configured maximum:"
        f" {o.idle_tag_backoff:g} s). Rare tags (a job every {o.shape.rare_every / 60:g} minutes"
        f" or so) go idle and come back: their first job resets the back-off.\n\n"
        f"The requests are not spread evenly: the busiest measured poll made {busiest} requests"
        f" (the idle streams, which went idle together, all come due in the same poll), the"
        f" quietest {quietest}."
    )


def _memory_details(scale: ScaleResult) -> str:
    m = scale.memory
    top = "\n".join(
        f"| `{where}` | {size / 1024:+.0f} KiB | {blocks:+d} |" for where, size, blocks in m.top
    )
    return (
        f"tracemalloc in an exporter process of its own (the simulator runs elsewhere), traced"
        f" from before its first poll, measured after its {scale.options.memory_polls} polls,"
        f" the last of the run (its counters exact: {scale.traced.exact}): {m.tracked_jobs} tracked"
        f" jobs (the sum of `tracked_jobs` over the targets) in {m.streams} streams, at"
        f" {scale.jobs_per_day:,.0f} jobs/day.\n\n"
        "Per tracked job = (traced bytes the exporter's poller held - its streams x what a"
        " stream with no jobs holds) / tracked jobs. What a stream holds without jobs comes from"
        f" a second poller in the same process, over {m.twin_streams} streams (one target's"
        " queues and tags) that never see a job; each poller is measured by what dropping it"
        " gives back (after `gc.collect()`).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| **per tracked job** | **{m.per_job:.0f} B** (target {200} B) |\n"
        f"| per stream, with no jobs | {m.per_stream:.0f} B |\n"
        f"| the exporter's poller in all | {m.exporter / 2**20:.2f} MiB |\n"
        f"| everything the process grew by (caches, lazy imports too), per tracked job |"
        f" {m.gross_per_job:.0f} B |\n"
        f"| process RSS (less tracemalloc's own {m.tracemalloc_overhead / 2**20:.0f} MiB) |"
        f" {(m.rss - m.tracemalloc_overhead) / 2**20:.0f} MiB |\n"
        f"| process peak RSS | {m.peak_rss / 2**20:.0f} MiB |\n\n"
        "Where the process grew most (tracemalloc, by line, from just after the pollers were"
        " built; the idle poller already dropped):\n\n"
        "| line | bytes | blocks |\n|---|---|---|\n" + top + "\n"
    )


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
