"""exporter.api_stats: the self-metrics of API calls, and the cap on the `error` label."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.api_stats import DEFAULT_ERROR_LABEL_LIMIT, OTHER_ERROR, ApiStats
from exporter.collector import CICollector
from exporter.snapshot import Snapshot

B, R = "examplebucket-1250000000", "ap-chongqing"


def errors_by_label(stats: ApiStats) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (_, _, _, error), n in stats.snapshot().errors.items():
        counts[error] += n
    return counts


def record_errors(stats: ApiStats, *errors: str, endpoint: str = "/jobs") -> None:
    for error in errors:
        stats.record(B, R, endpoint, "400", error, 0.1)


def test_the_first_distinct_errors_keep_their_label_later_new_ones_are_other() -> None:
    stats = ApiStats(error_label_limit=2)
    record_errors(stats, "InvalidArgument", "SlowDown", "Junk1", "InvalidArgument", "Junk2")
    assert errors_by_label(stats) == {"InvalidArgument": 2, "SlowDown": 1, OTHER_ERROR: 2}


def test_a_kept_label_stays_kept_on_every_endpoint_and_bucket() -> None:
    stats = ApiStats(error_label_limit=1)
    record_errors(stats, "SlowDown", endpoint="/jobs")
    record_errors(stats, "SlowDown", "New", endpoint="/queue")
    stats.record("other-1250000000", R, "/jobs", "503", "SlowDown", 0.1)
    assert stats.snapshot().errors == {
        (B, R, "/jobs", "SlowDown"): 1,
        (B, R, "/queue", "SlowDown"): 1,
        (B, R, "/queue", OTHER_ERROR): 1,
        ("other-1250000000", R, "/jobs", "SlowDown"): 1,
    }


def test_the_default_limit_is_fifty() -> None:
    stats = ApiStats()
    record_errors(stats, *(f"Code{i}" for i in range(DEFAULT_ERROR_LABEL_LIMIT + 10)))
    counts = errors_by_label(stats)
    assert DEFAULT_ERROR_LABEL_LIMIT == 50
    assert counts[OTHER_ERROR] == 10
    assert set(counts) == {f"Code{i}" for i in range(50)} | {OTHER_ERROR}


def test_the_client_own_failure_kinds_are_never_capped() -> None:
    stats = ApiStats(error_label_limit=1)
    record_errors(
        stats,
        "Junk1",
        "Junk2",
        "timeout",
        "connection",
        "invalid_response",
        "error",
        "credentials",
        "stopped",
    )
    assert errors_by_label(stats) == {
        "Junk1": 1,
        OTHER_ERROR: 1,
        "timeout": 1,
        "connection": 1,
        "invalid_response": 1,
        "error": 1,
        "credentials": 1,
        "stopped": 1,
    }


def test_a_zero_limit_makes_every_code_other_and_a_negative_one_is_refused() -> None:
    stats = ApiStats(error_label_limit=0)
    record_errors(stats, "SlowDown", "timeout")
    assert errors_by_label(stats) == {OTHER_ERROR: 1, "timeout": 1}
    with pytest.raises(ValueError, match="error_label_limit"):
        ApiStats(error_label_limit=-1)


def test_the_cap_leaves_requests_and_durations_alone() -> None:
    stats = ApiStats(error_label_limit=0)
    record_errors(stats, "A", "B", "C")
    snapshot = stats.snapshot()
    assert snapshot.requests == {(B, R, "/jobs", "400"): 3}
    assert snapshot.durations["/jobs"].count == 3
    assert stats.total_requests() == 3


def test_concurrent_records_keep_exactly_the_limit_of_labels() -> None:
    limit, threads, per_thread = 5, 8, 200
    stats = ApiStats(error_label_limit=limit)
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait(5)
        record_errors(stats, *(f"T{n}-{i}" for i in range(per_thread)))

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    counts = errors_by_label(stats)
    assert sum(counts.values()) == threads * per_thread
    assert len(set(counts) - {OTHER_ERROR}) == limit
    assert counts[OTHER_ERROR] == threads * per_thread - limit


def test_retries_throttles_and_spacing_are_kept_per_target_and_endpoint() -> None:
    stats = ApiStats()
    stats.record_retry(B, R, "/jobs")
    stats.record_retry(B, R, "/jobs")
    stats.record_retry(B, R, "/queue")
    stats.record_throttle(B, R, "/jobs")
    stats.set_spacing(B, R, 0.4)
    stats.set_spacing(B, R, 0.2)  # a gauge: the latest value
    stats.set_spacing("other-1250000000", R, 0.0)
    snapshot = stats.snapshot()
    assert snapshot.retries == {(B, R, "/jobs"): 2, (B, R, "/queue"): 1}
    assert snapshot.throttled == {(B, R, "/jobs"): 1}
    assert snapshot.spacing == {(B, R): 0.2, ("other-1250000000", R): 0.0}
    assert stats.total_requests() == 0  # a retry is counted as a call only when it is made


def test_the_collector_serves_retries_throttles_and_spacing() -> None:
    stats = ApiStats()
    stats.record_retry(B, R, "/jobs")
    stats.record_throttle(B, R, "/asr_jobs")
    stats.set_spacing(B, R, 0.1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(FakeSource(), stats, "test"))
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "retried" in s.name or "throttled" in s.name or "spacing" in s.name
    }
    assert samples == {
        (
            "tencent_ci_api_retried_requests_total",
            (("bucket", B), ("endpoint", "/jobs"), ("region", R)),
        ): 1,
        (
            "tencent_ci_api_throttled_requests_total",
            (("bucket", B), ("endpoint", "/asr_jobs"), ("region", R)),
        ): 1,
        ("tencent_ci_api_request_spacing_seconds", (("bucket", B), ("region", R))): 0.1,
    }


class FakeSource:
    def snapshot(self) -> Snapshot:
        return Snapshot()

    def ready(self) -> bool:
        return True
