"""The benchmark suite at tiny sizes: it runs end to end, every target has its numbers, and
the exporters it drives count every job exactly once. No timing is asserted: speed claims are
the suite's ratios, in docs/benchmarks.md."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.latency import least_tokens, most_in_flight
from bench.report import SuiteResult, rows, table, write_docs
from bench.scale import compare, lower_bound, tally
from bench.suite import details, run_suite, smoke_options
from exporter.simulator import RequestRecord


@pytest.fixture(scope="module")
def smoke() -> SuiteResult:
    return run_suite(smoke_options(), "python3 -m bench --smoke")


def test_smoke_run_counts_every_job_exactly_once(smoke: SuiteResult) -> None:
    scale = smoke.scale
    assert scale is not None
    assert scale.exporter.expected > 0  # jobs did finish during the run
    assert scale.exporter.exact, scale.exporter.examples
    assert scale.exporter.counted == scale.exporter.expected
    if scale.backoff_supported:
        assert scale.backoff is not None
        assert scale.backoff.expected > 0
        assert scale.backoff.exact, scale.backoff.examples


def test_smoke_run_has_every_number(smoke: SuiteResult) -> None:
    scale, cpu, scrape, latency = smoke.scale, smoke.cpu, smoke.scrape, smoke.latency
    assert scale is not None and cpu is not None and scrape is not None and latency is not None
    assert len(scale.polls) == smoke_options().scale.polls
    for poll in scale.polls:
        assert poll.bound > 0 and poll.exporter > 0 and poll.baseline > 0
    assert scale.memory.tracked_jobs > 0 and scale.memory.exporter > 0
    assert cpu.jobs > 0 and cpu.exporter > 0 and cpu.sdk > 0
    # The reference registry holds the same series as the exporter's.
    assert scrape.samples > 0 and scrape.plain_samples == pytest.approx(scrape.samples, rel=0.02)
    if latency.available:
        assert latency.requests > 0
        assert latency.rate_bound is not None and latency.rate_bound.requests > 0
    printed = table(rows(smoke))
    for target in ("1.", "2.", "3.", "4.", "5.", "6."):
        assert f"\n{target}" in printed


def test_docs_keep_sections_written_by_others(smoke: SuiteResult, tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    foreign = "## Scrapes under load\n\nWritten by someone else: 42 scrapes.\n"
    docs.write_text(f"# Benchmarks\n\nold\n\n## Summary\n\nold table\n\n{foreign}")
    write_docs(docs, smoke, details(smoke))
    write_docs(docs, smoke, details(smoke))  # twice: nothing doubles
    text = docs.read_text()
    assert text.count(foreign.strip()) == 1
    assert "old table" not in text
    assert text.count("## Summary") == 1
    assert "python3 -m bench --smoke" in text


def test_compare_finds_a_job_counted_twice_or_missed() -> None:
    a, b = ("b", "q", "Transcode"), ("b", "q", "Snapshot")
    truth = [
        {a: Counter({("state", "Success"): 5})},  # the exporter's first poll: its baseline
        {a: Counter({("state", "Success"): 7}), b: Counter({("state", "Failed"): 1})},
        {
            a: Counter({("state", "Success"): 9}),
            b: Counter({("state", "Failed"): 1, ("code", "E1"): 1}),
        },
    ]
    right = {a: Counter({("state", "Success"): 4}), b: Counter({("state", "Failed"): 1})}
    right[b][("code", "E1")] = 1
    assert compare(right, truth, 0, {a: 2, b: 2}).exact
    # b last polled at 1: compared as of then, when its failure code was not yet known.
    assert not compare(right, truth, 0, {a: 2, b: 1}).exact
    twice = {**right, a: Counter({("state", "Success"): 5})}
    result = compare(twice, truth, 0, {a: 2, b: 2})
    assert (result.wrong_streams, result.expected, result.counted) == (1, 5, 6)


def _listing(queue: str, tag: str, states: str, token: str = "") -> RequestRecord:
    params = {"queueId": queue, "tag": tag, "states": states}
    if token:
        params["nextToken"] = token
    return RequestRecord("b-1250000000", "GET", "/jobs", params, 200)


def test_tally_tells_listings_and_describe_apart() -> None:
    active, finished = "Submitted,Running,Pause", "Success,Failed,Cancel"
    records = [
        RequestRecord("b-1250000000", "GET", "/queue", {}, 200),
        _listing("q1", "Transcode", active),
        _listing("q1", "Transcode", active, "t1"),
        _listing("q1", "Transcode", finished),
        _listing("q1", "Transcode", finished),  # a second listing: for missing jobs
        RequestRecord("b-1250000000", "GET", "/jobs/ja,jb", {}, 200),
    ]
    result = tally(records)
    stream = ("b-1250000000", "q1", "Transcode")
    assert (result.total, result.queue_pages, result.describe) == (6, 1, 1)
    assert result.active_pages[stream] == 2
    assert result.finished_pages[stream] == 2 and result.finished_listings[stream] == 2


def test_lower_bound_is_one_page_per_hundred_jobs_and_never_less_than_one() -> None:
    streams = [("b", "q", "t1"), ("b", "q", "t2"), ("b", "q", "t3")]
    # 1 queue page; (1 + 1) + (1 + 2) + (3 + 1)
    assert lower_bound(streams, [0, 100, 201], [0, 101, 1], targets=1, queues=10) == 10


def test_token_bucket_replay_finds_one_request_too_many() -> None:
    # Burst 2 at once, then one every 0.1 s: exactly what 10/s with burst 2 allows.
    allowed = [0.0, 0.0, 0.1, 0.2, 0.3]
    assert least_tokens(allowed, 10.0, 2) >= -1e-9
    assert least_tokens([*allowed, 0.3], 10.0, 2) < -0.5
    assert most_in_flight([0.0, 0.1, 0.2], [0.15, 0.3, 0.4]) == 2
