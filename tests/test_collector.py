"""CICollector: hand-built snapshots in, parsed exposition text out."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from exporter.api_stats import ApiStats
from exporter.build import build_info
from exporter.ci.models import Queue
from exporter.collector import CICollector
from exporter.snapshot import (
    DiscoveryStatus,
    FailedJob,
    Histogram,
    QueueSnapshot,
    ReloadStatus,
    RenderCost,
    Snapshot,
    StreamSnapshot,
    TargetSnapshot,
)

# prometheus_client's OpenMetrics functions are untyped.
render_openmetrics: Callable[[CollectorRegistry], bytes] = openmetrics.generate_latest
parse_openmetrics: Callable[[str], Iterator[Metric]] = (
    openmetrics_parser.text_string_to_metric_families
)

BUCKET = "media-1250000000"
REGION = "ap-guangzhou"
QUEUE_LABELS = ("bucket", "region", "service", "queue_id")
STREAM_LABELS = (*QUEUE_LABELS, "tag")
TARGET_LABELS = ("bucket", "region")

# name (as the text parser names families) -> (type, label names of every series but `le`)
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "tencent_ci_queue_info": ("gauge", (*QUEUE_LABELS, "name", "category")),
    "tencent_ci_queue_paused": ("gauge", QUEUE_LABELS),
    "tencent_ci_queue_max_concurrent": ("gauge", QUEUE_LABELS),
    "tencent_ci_queue_max_size": ("gauge", QUEUE_LABELS),
    "tencent_ci_queue_notify_enabled": ("gauge", QUEUE_LABELS),
    "tencent_ci_jobs": ("gauge", (*STREAM_LABELS, "state")),
    "tencent_ci_jobs_finished": ("counter", (*STREAM_LABELS, "state")),
    "tencent_ci_job_failures": ("counter", (*STREAM_LABELS, "code")),
    "tencent_ci_job_run_duration_seconds": ("histogram", (*STREAM_LABELS, "state")),
    "tencent_ci_job_queue_wait_seconds": ("histogram", STREAM_LABELS),
    "tencent_ci_oldest_job_timestamp_seconds": ("gauge", (*STREAM_LABELS, "state")),
    "tencent_ci_up": ("gauge", TARGET_LABELS),
    "tencent_ci_last_successful_poll_timestamp_seconds": ("gauge", TARGET_LABELS),
    "tencent_ci_poll_duration_seconds": ("gauge", TARGET_LABELS),
    "tencent_ci_api_requests": ("counter", ("bucket", "region", "endpoint", "status")),
    "tencent_ci_api_errors": ("counter", ("bucket", "region", "endpoint", "error")),
    "tencent_ci_api_request_duration_seconds": ("histogram", ("endpoint",)),
    "tencent_ci_tracked_jobs": ("gauge", TARGET_LABELS),
    "tencent_ci_idle_streams": ("gauge", TARGET_LABELS),
    "tencent_ci_queues_dropped": ("gauge", (*TARGET_LABELS, "service")),
    "tencent_ci_job_anomalies": ("counter", (*TARGET_LABELS, "kind")),
    "tencent_ci_api_retried_requests": ("counter", ("bucket", "region", "endpoint")),
    "tencent_ci_api_throttled_requests": ("counter", ("bucket", "region", "endpoint")),
    "tencent_ci_api_request_spacing_seconds": ("gauge", ("bucket", "region")),
    "tencent_ci_config_last_reload_successful": ("gauge", ()),
    "tencent_ci_config_last_reload_success_timestamp_seconds": ("gauge", ()),
    "tencent_ci_discovery_buckets": ("gauge", ("region", "service")),
    "tencent_ci_discovery_last_successful": ("gauge", ("region", "service")),
    "tencent_ci_discovery_last_success_timestamp_seconds": ("gauge", ("region", "service")),
    "tencent_ci_discovery_duration_seconds": ("gauge", ("region", "service")),
    "tencent_ci_exporter_build_info": ("gauge", ("python_version", "revision", "version")),
    "tencent_ci_exposition_render_seconds": ("gauge", ("format",)),
    "tencent_ci_exposition_bytes": ("gauge", ("format",)),
    "tencent_ci_exposition_renders": ("counter", ("format",)),
}
RENDERED = RenderCost("openmetrics", 0.25, 4096, 3)


def hist(
    bounds: tuple[float, ...], per_bucket: tuple[int, ...], over: int, total: float
) -> Histogram:
    """A histogram from per-bucket counts plus `over` observations above the last bound."""
    cumulative, running = [], 0
    for n in per_bucket:
        running += n
        cumulative.append(running)
    return Histogram(bounds, tuple(cumulative), total, running + over)


def stream(
    queue_id: str = "q1",
    tag: str = "Transcode",
    *,
    service: str = "media",
    active: Mapping[str, int] | None = None,
    finished: Mapping[str, int] | None = None,
    failures: Mapping[str, int] | None = None,
    run_duration: Mapping[str, Histogram] | None = None,
    queue_wait: Histogram | None = None,
    oldest: Mapping[str, float] | None = None,
    last_failed_job: str = "",
    last_failed_code: str = "",
) -> StreamSnapshot:
    return StreamSnapshot(
        service=service,
        queue_id=queue_id,
        tag=tag,
        active=active or {},
        finished=finished or {},
        failures=failures or {},
        run_duration=run_duration or {},
        queue_wait=queue_wait,
        oldest=oldest or {},
        last_failed_job=last_failed_job,
        last_failed_code=last_failed_code,
    )


def queue(queue_id: str = "q1", *, state: str = "Active", notify: bool = True) -> QueueSnapshot:
    return QueueSnapshot(
        "media",
        Queue(
            queue_id=queue_id,
            name=f"name-{queue_id}",
            state=state,
            max_size=10000,
            max_concurrent=8,
            category="CateAll",
            notify_enabled=notify,
        ),
    )


def target(
    queues: tuple[QueueSnapshot, ...] = (),
    streams: tuple[StreamSnapshot, ...] = (),
    *,
    up: bool = True,
    polled: bool = True,
    last_success_time: float | None = 1_700_000_000.0,
    last_poll_duration: float | None = 1.5,
) -> TargetSnapshot:
    return TargetSnapshot(
        bucket=BUCKET,
        region=REGION,
        up=up,
        polled=polled,
        last_poll_time=1_700_000_010.0 if polled else None,
        last_success_time=last_success_time,
        last_poll_duration=last_poll_duration,
        last_error="" if up else "timeout",
        queues=queues,
        streams=streams,
        tracked_jobs=7,
        recent_failures=(FailedJob(1.0, "media", "q1", "Transcode", "j1", "E", "m"),),
        queues_dropped={"media": 0},
    )


class FakeSource:
    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.calls = 0

    def snapshot(self) -> Snapshot:
        self.calls += 1
        return self.current

    def ready(self) -> bool:
        return True


def registry_for(source: FakeSource, stats: ApiStats | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(CICollector(source, stats or ApiStats(), "1.2.3", lambda: [RENDERED]))
    return registry


def scrape(registry: CollectorRegistry) -> dict[str, Metric]:
    text = generate_latest(registry).decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


LabelKey = tuple[tuple[str, str], ...]


def series(family: Metric, sample_name: str | None = None) -> dict[LabelKey, float]:
    """{sorted label items: value} of one sample name (the family's own name by default)."""
    wanted = sample_name or family.name
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == wanted}


def key(**labels: str) -> LabelKey:
    return tuple(sorted(labels.items()))


def stream_key(queue_id: str = "q1", tag: str = "Transcode", **extra: str) -> LabelKey:
    return key(bucket=BUCKET, region=REGION, service="media", queue_id=queue_id, tag=tag, **extra)


def full_snapshot() -> Snapshot:
    busy = stream(
        active={"Submitted": 4, "Running": 2, "Pause": 1},
        finished={"Success": 10, "Failed": 3, "Cancel": 1},
        failures={"InternalError": 2, "other": 1},
        run_duration={"Success": hist((1, 5), (2, 5), 3, 70.0)},
        queue_wait=hist((1, 5), (1, 0), 0, 0.5),
        oldest={"Submitted": 1_699_999_000.0, "Running": 1_699_999_500.0},
        last_failed_job="j-latest",
        last_failed_code="InternalError",
    )
    found = DiscoveryStatus(REGION, "media", 3, True, 1_700_000_000.0, 0.25)
    return Snapshot(
        (target((queue(),), (busy,)),), ReloadStatus(True, 1_700_000_000.0), discovery=(found,)
    )


def test_every_family_has_the_contract_type_and_labels() -> None:
    stats = ApiStats()
    stats.record(BUCKET, REGION, "media_jobs", "200", None, 0.2)
    stats.record(BUCKET, REGION, "media_jobs", "error", "timeout", 5.0)
    stats.record_retry(BUCKET, REGION, "media_jobs")
    stats.record_throttle(BUCKET, REGION, "media_jobs")
    stats.set_spacing(BUCKET, REGION, 0.5)

    families = scrape(registry_for(FakeSource(full_snapshot()), stats))

    assert set(families) == set(CONTRACT)
    for name, (typ, labels) in CONTRACT.items():
        family = families[name]
        assert family.type == typ, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)


def test_help_texts_say_values_come_from_the_last_poll() -> None:
    families = scrape(registry_for(FakeSource(full_snapshot())))

    for name in CONTRACT:
        own = (
            "tencent_ci_api_",
            "tencent_ci_exporter_",
            "tencent_ci_config_",
            "tencent_ci_expo",
            "tencent_ci_discovery_",  # from bucket listings, not from polls
        )
        if name.startswith(own):
            continue  # the exporter's own doings, not CI's
        assert "last poll of the CI API" in families[name].documentation, name


def test_queue_gauges_follow_the_queue_record() -> None:
    snapshot = Snapshot((target((queue("q1"), queue("q2", state="Paused", notify=False))),))

    families = scrape(registry_for(FakeSource(snapshot)))

    def qkey(queue_id: str) -> LabelKey:
        return key(bucket=BUCKET, region=REGION, service="media", queue_id=queue_id)

    assert series(families["tencent_ci_queue_paused"]) == {qkey("q1"): 0, qkey("q2"): 1}
    assert series(families["tencent_ci_queue_notify_enabled"]) == {qkey("q1"): 1, qkey("q2"): 0}
    assert series(families["tencent_ci_queue_max_concurrent"]) == {qkey("q1"): 8, qkey("q2"): 8}
    assert series(families["tencent_ci_queue_max_size"]) == {qkey("q1"): 10000, qkey("q2"): 10000}
    info = series(families["tencent_ci_queue_info"])
    assert info == {
        key(
            bucket=BUCKET,
            region=REGION,
            service="media",
            queue_id=q,
            name=f"name-{q}",
            category="CateAll",
        ): 1
        for q in ("q1", "q2")
    }


def test_job_counts_and_failures() -> None:
    families = scrape(registry_for(FakeSource(full_snapshot())))

    assert series(families["tencent_ci_jobs"]) == {
        stream_key(state="Submitted"): 4,
        stream_key(state="Running"): 2,
        stream_key(state="Pause"): 1,
    }
    finished = families["tencent_ci_jobs_finished"]
    assert series(finished, "tencent_ci_jobs_finished_total") == {
        stream_key(state="Success"): 10,
        stream_key(state="Failed"): 3,
        stream_key(state="Cancel"): 1,
    }
    failures = families["tencent_ci_job_failures"]
    assert series(failures, "tencent_ci_job_failures_total") == {
        stream_key(code="InternalError"): 2,
        stream_key(code="other"): 1,
    }
    assert series(families["tencent_ci_oldest_job_timestamp_seconds"]) == {
        stream_key(state="Submitted"): 1_699_999_000.0,
        stream_key(state="Running"): 1_699_999_500.0,
    }


def test_all_states_present_and_zero_before_any_job() -> None:
    families = scrape(registry_for(FakeSource(Snapshot((target((queue(),), (stream(),)),)))))

    assert series(families["tencent_ci_jobs"]) == {
        stream_key(state=s): 0 for s in ("Submitted", "Running", "Pause")
    }
    assert series(families["tencent_ci_jobs_finished"], "tencent_ci_jobs_finished_total") == {
        stream_key(state=s): 0 for s in ("Success", "Failed", "Cancel")
    }
    # Histograms appear with their first observation (the series budget).
    assert not families["tencent_ci_job_run_duration_seconds"].samples
    assert not families["tencent_ci_job_queue_wait_seconds"].samples
    assert not families["tencent_ci_job_failures"].samples
    assert not families["tencent_ci_oldest_job_timestamp_seconds"].samples


def test_oldest_shows_only_the_states_present() -> None:
    snapshot = Snapshot((target(streams=(stream(oldest={"Running": 1_700_000_000.0}),)),))

    families = scrape(registry_for(FakeSource(snapshot)))

    assert series(families["tencent_ci_oldest_job_timestamp_seconds"]) == {
        stream_key(state="Running"): 1_700_000_000.0
    }


def test_histogram_buckets_are_cumulative_with_inf_count_and_sum() -> None:
    families = scrape(registry_for(FakeSource(full_snapshot())))
    run = families["tencent_ci_job_run_duration_seconds"]

    buckets = [
        (s.labels["le"], s.value)
        for s in run.samples
        if s.name.endswith("_bucket") and s.labels["state"] == "Success"
    ]
    assert buckets == [("1.0", 2), ("5.0", 7), ("+Inf", 10)]
    assert (
        series(run, "tencent_ci_job_run_duration_seconds_count")[stream_key(state="Success")] == 10
    )
    assert (
        series(run, "tencent_ci_job_run_duration_seconds_sum")[stream_key(state="Success")] == 70.0
    )
    # States without observations have no histogram.
    assert {s.labels["state"] for s in run.samples} == {"Success"}
    wait = families["tencent_ci_job_queue_wait_seconds"]
    assert [(s.labels.get("le"), s.value) for s in wait.samples] == [
        ("1.0", 1),
        ("5.0", 1),
        ("+Inf", 1),
        (None, 1),
        (None, 0.5),
    ]


def test_vanished_queue_vanishes_from_the_next_scrape() -> None:
    two = Snapshot((target((queue("q1"), queue("q2")), (stream("q1"), stream("q2"))),))
    source = FakeSource(two)
    registry = registry_for(source)
    before = scrape(registry)
    assert {s.labels["queue_id"] for s in before["tencent_ci_jobs"].samples} == {"q1", "q2"}

    source.current = Snapshot((target((queue("q1"),), (stream("q1"),)),))
    after = scrape(registry)

    for name, family in after.items():
        assert all(s.labels.get("queue_id") != "q2" for s in family.samples), name
    assert {s.labels["queue_id"] for s in after["tencent_ci_queue_info"].samples} == {"q1"}


def test_target_health_before_first_poll() -> None:
    snapshot = Snapshot(
        (target(up=False, polled=False, last_success_time=None, last_poll_duration=None),)
    )

    families = scrape(registry_for(FakeSource(snapshot)))

    tkey = key(bucket=BUCKET, region=REGION)
    assert series(families["tencent_ci_up"]) == {tkey: 0}
    assert not families["tencent_ci_last_successful_poll_timestamp_seconds"].samples
    assert not families["tencent_ci_poll_duration_seconds"].samples
    assert series(families["tencent_ci_tracked_jobs"]) == {tkey: 7}


def test_target_health_after_success() -> None:
    families = scrape(registry_for(FakeSource(full_snapshot())))

    tkey = key(bucket=BUCKET, region=REGION)
    assert series(families["tencent_ci_up"]) == {tkey: 1}
    last = families["tencent_ci_last_successful_poll_timestamp_seconds"]
    assert series(last) == {tkey: 1_700_000_000.0}
    assert series(families["tencent_ci_poll_duration_seconds"]) == {tkey: 1.5}
    build = build_info()
    build_key = key(python_version=build.python_version, revision=build.revision, version="1.2.3")
    assert series(families["tencent_ci_exporter_build_info"]) == {build_key: 1}


def test_api_metrics_come_from_stats() -> None:
    source = FakeSource(Snapshot((target(),)))
    stats = ApiStats()
    stats.record(BUCKET, REGION, "media_queues", "200", None, 0.02)
    stats.record(BUCKET, REGION, "media_queues", "403", "AccessDenied", 0.3)

    families = scrape(registry_for(source, stats))

    requests = series(families["tencent_ci_api_requests"], "tencent_ci_api_requests_total")
    assert requests == {
        key(bucket=BUCKET, region=REGION, endpoint="media_queues", status="200"): 1,
        key(bucket=BUCKET, region=REGION, endpoint="media_queues", status="403"): 1,
    }
    errors = series(families["tencent_ci_api_errors"], "tencent_ci_api_errors_total")
    assert errors == {
        key(bucket=BUCKET, region=REGION, endpoint="media_queues", error="AccessDenied"): 1
    }
    duration = families["tencent_ci_api_request_duration_seconds"]
    assert series(duration, "tencent_ci_api_request_duration_seconds_count") == {
        key(endpoint="media_queues"): 2
    }
    inf = [s.value for s in duration.samples if s.labels.get("le") == "+Inf"]
    assert inf == [2]


def test_exemplar_marks_the_latest_failure_in_openmetrics_only() -> None:
    registry = registry_for(FakeSource(full_snapshot()))

    text = render_openmetrics(registry).decode("utf-8")

    families = {f.name: f for f in parse_openmetrics(text)}
    failures = {s.labels["code"]: s.exemplar for s in families["tencent_ci_job_failures"].samples}
    assert failures["other"] is None
    exemplar = failures["InternalError"]
    assert exemplar is not None
    assert exemplar.labels == {"job_id": "j-latest"}
    assert "j-latest" not in generate_latest(registry).decode("utf-8")


def test_no_exemplar_when_no_failed_job_is_known() -> None:
    quiet = stream(failures={"InternalError": 2}, last_failed_code="InternalError")
    registry = registry_for(FakeSource(Snapshot((target(streams=(quiet,)),))))

    text = render_openmetrics(registry).decode("utf-8")

    assert "job_id" not in text


def test_describe_does_no_work() -> None:
    source = FakeSource(full_snapshot())
    collector = CICollector(source, ApiStats(), "1.2.3")

    CollectorRegistry().register(collector)

    assert collector.describe() == []
    assert source.calls == 0


def test_each_collect_reads_the_current_snapshot_once() -> None:
    source = FakeSource(full_snapshot())
    registry = registry_for(source)

    scrape(registry)
    scrape(registry)

    assert source.calls == 2


def test_families_can_be_iterated_again() -> None:
    collector = CICollector(FakeSource(full_snapshot()), ApiStats(), "1.2.3")
    jobs = next(f for f in collector.collect() if f.name == "tencent_ci_jobs")

    first: list[Sample] = list(jobs.samples)

    assert first == list(jobs.samples)
    assert len(jobs.samples) == 3


@pytest.mark.parametrize("targets", [0, 3])
def test_output_is_valid_openmetrics(targets: int) -> None:
    snapshot = Snapshot(
        tuple(
            TargetSnapshot(
                bucket=f"b{i}",
                region=REGION,
                up=True,
                polled=True,
                last_poll_time=1.0,
                last_success_time=1.0,
                last_poll_duration=0.1,
                last_error="",
                queues=(queue(),),
                streams=full_snapshot().targets[0].streams,
                tracked_jobs=0,
            )
            for i in range(targets)
        )
    )
    registry = registry_for(FakeSource(snapshot))

    text = render_openmetrics(registry).decode("utf-8")

    # The OpenMetrics parser checks histogram layout, counter names and series grouping.
    names = {f.name for f in parse_openmetrics(text)}
    assert "tencent_ci_exporter_build_info" in names
    assert text.endswith("# EOF\n")
