"""The series budget (README, "Series per stream"): with the default configuration a stream that
never had a job exports at most 12 series and a busy one at most 50, counted on a real
exposition of what the accounting made of real listings."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from exposing import FixedSource
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from test_accounting import T0, FakeCI, FakeJob, new_tracker, poll

from exporter.accounting import StreamTracker
from exporter.api_stats import ApiStats
from exporter.collector import CICollector
from exporter.config import parse_config
from exporter.exposition import exporter_expositions
from exporter.poller import Poller
from exporter.simulator import Simulator
from exporter.snapshot import ReloadStatus, Snapshot, TargetSnapshot

SECRET_ID = "AKIDbudget0000000000000000000000000000"
SECRET_KEY = "budget-secret-key-0000000000000000000"
IDLE_BUDGET = 12
BUSY_BUDGET = 50


def series_by_tag(*trackers: StreamTracker) -> Counter[str]:
    """Series of the exposition that belong to a stream, by the stream's tag."""
    target = TargetSnapshot(
        bucket="media-1250000000",
        region="ap-guangzhou",
        up=True,
        polled=True,
        last_poll_time=None,
        last_success_time=None,
        last_poll_duration=None,
        last_error="",
        queues=(),
        streams=tuple(t.snapshot() for t in trackers),
        tracked_jobs=0,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        CICollector(FixedSource(Snapshot((target,), ReloadStatus())), ApiStats(), "t")
    )
    text = generate_latest(registry).decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "tag" in sample.labels:
                counts[sample.labels["tag"]] += 1
    return counts


def busy_tracker() -> StreamTracker:
    """Every state seen: waiting and running now, finished in Success, Failed (three codes)
    and Cancel, each after running, so every histogram has observations."""
    tracker = new_tracker()
    ci = FakeCI(inclusive=True)
    poll(tracker, ci, T0)
    t = T0 + 10
    jobs = [
        FakeJob("ok", t, t + 5, t + 80, "Success"),
        FakeJob("bad-1", t, t + 2, t + 30, "Failed", "InternalError"),
        FakeJob("bad-2", t, t + 2, t + 40, "Failed", "InputFileNotExist"),
        FakeJob("bad-3", t, t + 2, t + 50, "Failed", "Timeout"),
        FakeJob("gone", t, t + 3, t + 60, "Cancel"),
        FakeJob("running", t, t + 4),
        FakeJob("waiting", t + 100),
    ]
    for job in jobs:
        ci.add(job)
    for at in range(T0 + 20, T0 + 200, 15):
        poll(tracker, ci, at)
    return tracker


def test_a_stream_that_never_had_a_job_stays_within_budget() -> None:
    idle = new_tracker()
    poll(idle, FakeCI(inclusive=True), T0)

    counts = series_by_tag(idle)

    assert counts["Transcode"] == 6  # three active states, three finished states
    assert counts["Transcode"] <= IDLE_BUDGET


def test_a_busy_stream_stays_within_budget() -> None:
    tracker = busy_tracker()
    snapshot = tracker.snapshot()
    assert set(snapshot.run_duration) == {"Success", "Failed", "Cancel"}
    assert snapshot.queue_wait is not None and len(snapshot.failures) == 3
    assert set(snapshot.oldest) == {"Submitted", "Running"}

    counts = series_by_tag(tracker)

    # 6 state series, 2 oldest, 3 codes, 3 run-time histograms of 10, one wait histogram of 8.
    assert counts["Transcode"] == 6 + 2 + 3 + 3 * 10 + 8
    assert counts["Transcode"] <= BUSY_BUDGET


def test_buckets_from_the_config_reach_metrics_and_a_service_can_turn_histograms_off() -> None:
    text = """
histograms:
  run_time_buckets: [7s, 70s, 2h]
  queue_wait_buckets: [3s]
targets:
  - bucket: alpha-1250000000
    region: ap-guangzhou
    endpoint: ENDPOINT
    credentials: {secret_id: SECRET_ID, secret_key: SECRET_KEY}
    services:
      media: {tags: [Transcode]}
      ai: {tags: [Translation], histograms: false}
"""
    with freeze_time("2026-11-21 04:00:00", tick=False) as frozen:
        sim = Simulator({SECRET_ID: SECRET_KEY}, seed=5)
        bucket = sim.add_bucket("alpha-1250000000", "ap-guangzhou")
        media = bucket.add_queue("media")
        ai = bucket.add_queue("ai")
        sim.start()
        try:
            config = parse_config(
                text.replace("ENDPOINT", sim.endpoint("alpha-1250000000"))
                .replace("SECRET_ID", SECRET_ID)
                .replace("SECRET_KEY", SECRET_KEY),
                "config.yml",
                {},
            )
            poller = Poller(replace(config, idle_tag_backoff=0.0), ApiStats())
            poller.poll_once()  # the baseline
            for queue, tag in ((media, "Transcode"), (ai, "Translation")):
                job = bucket.create_job(queue, tag)
                frozen.tick(2)
                bucket.start_job(job)
                frozen.tick(30)
                bucket.finish_job(job, "Success")
            frozen.tick(60)
            poller.poll_once()
            encoder, content_type = choose_encoder("")
            response = exporter_expositions(poller, ApiStats(), "t").scrape(
                encoder, content_type, False
            )
        finally:
            sim.stop()
    families = {
        f.name: f for f in text_string_to_metric_families(b"".join(response.chunks).decode())
    }

    run = families["tencent_ci_job_run_duration_seconds"].samples
    wait = families["tencent_ci_job_queue_wait_seconds"].samples
    assert [s.labels["le"] for s in run if s.name.endswith("_bucket")] == [
        "7.0",
        "70.0",
        "7200.0",
        "+Inf",
    ]
    assert [s.labels["le"] for s in wait if s.name.endswith("_bucket")] == ["3.0", "+Inf"]
    assert {s.labels["service"] for s in (*run, *wait)} == {"media"}  # ai: histograms off
    finished = families["tencent_ci_jobs_finished"].samples
    assert {
        s.labels["service"] for s in finished if s.value == 1 and s.labels["state"] == "Success"
    } == {"media", "ai"}
