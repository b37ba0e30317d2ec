"""The explanations of targets 1, 2 and 4 (one scale run, bench/scale.py): their sections of
docs/benchmarks.md."""

from __future__ import annotations

from bench.scale_results import ScaleResult


def requests_details(scale: ScaleResult) -> str:
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


def idle_details(scale: ScaleResult) -> str:
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


def memory_details(scale: ScaleResult) -> str:
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
