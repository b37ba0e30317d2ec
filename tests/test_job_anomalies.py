"""Hostile CI (issue 11, items 6 and 9), over real HTTP against the simulator, time frozen.

Item 9: the same JobId in two queues, and a finished job brought back to life. One job is
counted once whatever CI does, and the anomaly is counted once in
tencent_ci_job_anomalies_total. Item 6: queues over max_queues_per_service are neither polled
nor exported, counted in tencent_ci_queues_dropped, logged once and shown on the landing page;
label values from CI are cut to 128 characters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from freezegun import freeze_time
from test_scenarios import INTERVAL, World, make_world

from exporter.accounting import StreamKey
from exporter.api_stats import ApiStats
from exporter.dedupe import LAG_LIMIT, TargetJobIds
from exporter.landing import render_landing_page
from exporter.poll.target import TargetPoller
from exporter.poller import Poller
from exporter.snapshot import MAX_LABEL_CHARS
from exporter.stream_counts import CodeLimiter

TAG = "Transcode"


@pytest.fixture
def frozen() -> Iterator[Any]:
    with freeze_time("2026-11-21 04:00:00", tick=False) as frozen_time:
        yield frozen_time


def finished_total(world: World) -> float:
    """Finished jobs of every stream of the target."""
    return sum(v for (n, _), v in world.metrics().items() if n == "tencent_ci_jobs_finished_total")


def anomalies(world: World, kind: str) -> float | None:
    return world.value("tencent_ci_job_anomalies_total", kind=kind)


def running(world: World, queue: str) -> float | None:
    return world.value("tencent_ci_jobs", queue_id=queue, tag=TAG, state="Running")


def target_of(world: World) -> TargetPoller:
    (target,) = world.poller.targets
    return target


def describes(world: World) -> int:
    """Describe-by-id calls since the last reset (the path names the ids)."""
    return sum(1 for r in world.sim.requests if r.path.startswith("/jobs/"))


# -- the same JobId in two queues -----------------------------------------------------------


def test_a_job_id_in_two_queues_is_counted_once_through_the_finished_listings(
    frozen: Any,
) -> None:
    with make_world(frozen) as world:
        twin = world.ci.add_queue("media", name="twin")
        world.poll()
        assert anomalies(world, "duplicate_id") == 0
        world.frozen.tick(1)
        job = world.ci.create_job(world.queue, TAG)
        world.ci.duplicate_job(job, twin)
        world.ci.start_job(job)
        world.ci.finish_job(job, "Failed", code="Broken")
        world.poll()
        # Both finished listings returned it (created after the window edge): once in all.
        assert finished_total(world) == 1
        assert world.finished("Failed") == 1
        assert world.finished("Failed", queue=twin) == 0
        assert world.value("tencent_ci_job_failures_total", queue_id=twin, tag=TAG) is None
        assert anomalies(world, "duplicate_id") == 1
        for _ in range(3):  # listed again while the windows still cover it: nothing more
            world.poll()
        assert finished_total(world) == 1
        assert anomalies(world, "duplicate_id") == 1
        assert world.up() == 1


def test_a_job_id_in_two_queues_is_counted_once_through_describe_by_id(frozen: Any) -> None:
    """Active in both queues, then finished once the windows have passed its creation: both
    streams describe it; both hear the answer, one counts it, neither keeps it active."""
    with make_world(frozen) as world:
        twin = world.ci.add_queue("media", name="twin")
        world.poll()
        job = world.ci.create_job(world.queue, TAG)
        world.ci.duplicate_job(job, twin)
        world.ci.start_job(job)
        world.poll()
        world.poll()
        assert (running(world, world.queue), running(world, twin)) == (1, 1)
        world.ci.finish_job(job)
        world.sim.reset_requests()
        world.poll()
        assert describes(world) == 1  # one call for both streams
        assert finished_total(world) == 1
        assert anomalies(world, "duplicate_id") == 1
        assert (running(world, world.queue), running(world, twin)) == (0, 0)
        world.sim.reset_requests()
        for _ in range(3):
            world.poll()
        assert describes(world) == 0  # neither stream still looks for it
        assert finished_total(world) == 1
        assert anomalies(world, "duplicate_id") == 1


def test_a_duplicate_in_a_stream_polled_later_is_still_counted_once(frozen: Any) -> None:
    """The twin queue is idle, so polled less often: its window lags the busy queue's. The
    target's view keeps the job until the twin's window has passed it too, then forgets it."""
    with make_world(frozen) as world:
        twin = world.ci.add_queue("media", name="twin")
        busy = world.ci.create_job(world.queue, TAG)
        world.ci.start_job(busy)  # keeps the main queue's stream polled every time
        twin_stream = StreamKey("media", twin, TAG)
        for _ in range(10):  # until a poll leaves the idle twin out
            world.frozen.tick(INTERVAL)
            if not target_of(world).schedule.due(twin_stream):
                break
            world.poller.poll_once()
        job = world.ci.create_job(world.queue, TAG)
        world.ci.duplicate_job(job, twin)
        world.ci.finish_job(job)
        world.poller.poll_once()
        ids = target_of(world).streams.ids
        assert world.value("tencent_ci_idle_streams") > 0  # the twin was left out
        assert world.finished("Success") == 1
        assert len(ids) == 1  # held for the twin's window
        for _ in range(12):
            world.poll()
        assert finished_total(world) == 1
        assert anomalies(world, "duplicate_id") == 1
        assert len(ids) == 0  # every window has passed it
        assert world.up() == 1


# -- a finished job active again --------------------------------------------------------------


def test_an_old_job_finished_running_and_finished_again_is_counted_once(frozen: Any) -> None:
    """Success -> Running -> Success for a job created long before the window: it is shown
    running while it runs, and counted once."""
    with make_world(frozen, idle_tag_backoff=0) as world:
        world.poll()
        job = world.ci.create_job(world.queue, TAG)
        world.ci.start_job(job)
        world.poll()
        world.ci.finish_job(job)
        world.poll()  # found by describe-by-id: counted
        assert world.finished("Success") == 1
        for _ in range(2):  # the window passes its creation: no stream remembers it
            world.poll()
        assert target_of(world).streams.trackers  # (sanity: streams exist)
        assert all(job not in t.seen for t in target_of(world).streams.trackers.values())
        world.ci.resurrect_job(job)
        world.poll()
        assert running(world, world.queue) == 1
        assert anomalies(world, "resurrected") == 1
        world.poll()  # still running: one anomaly, not one a poll
        assert anomalies(world, "resurrected") == 1
        world.ci.finish_job(job)
        for _ in range(3):
            world.poll()
        assert world.finished("Success") == 1
        assert running(world, world.queue) == 0
        assert anomalies(world, "resurrected") == 1
        assert world.value("tencent_ci_tracked_jobs") == 0
        # Brought back once more: another anomaly, still counted once.
        world.ci.resurrect_job(job)
        world.poll()
        world.ci.finish_job(job, "Failed")
        for _ in range(2):
            world.poll()
        assert finished_total(world) == 1
        assert anomalies(world, "resurrected") == 2


def test_a_recent_job_finished_running_and_finished_again_is_counted_once(frozen: Any) -> None:
    """Brought back while the window still covers it (the stream remembers it counted)."""
    with make_world(frozen, idle_tag_backoff=0) as world:
        world.poll()
        world.frozen.tick(INTERVAL - 20)
        job = world.ci.create_job(world.queue, TAG)
        world.ci.start_job(job)
        world.ci.finish_job(job)
        world.poll(20)
        assert world.finished("Success") == 1
        (tracker,) = (
            t
            for k, t in target_of(world).streams.trackers.items()
            if k.queue_id == world.queue and k.tag == TAG
        )
        assert job in tracker.seen  # the window still covers it
        world.ci.resurrect_job(job)
        world.frozen.tick(1)
        world.poller.poll_once()
        assert running(world, world.queue) == 1
        assert anomalies(world, "resurrected") == 1
        world.ci.finish_job(job)
        for _ in range(3):
            world.poll()
        assert world.finished("Success") == 1
        assert running(world, world.queue) == 0
        assert anomalies(world, "resurrected") == 1
        assert anomalies(world, "duplicate_id") == 0


def test_a_revived_job_survives_a_restart_uncounted(frozen: Any, tmp_path: Any) -> None:
    """Saved while revived (counted and active), restored, finished: not counted again."""
    path = tmp_path / "state.json"
    with make_world(frozen, idle_tag_backoff=0) as world:
        config = replace(world.poller.config, state_file=str(path))
        world.poller.stop()
        first = Poller(config, ApiStats(), queue_page_size=10)
        world.poller = first
        world.poll()
        world.frozen.tick(1)
        job = world.ci.create_job(world.queue, TAG)
        world.ci.finish_job(job)
        world.poll()
        assert sum(sum(s.finished.values()) for s in first.snapshot().targets[0].streams) == 1
        world.ci.resurrect_job(job)
        world.frozen.tick(1)
        first.poll_once()
        first.stop()
        second = Poller(config, ApiStats(), queue_page_size=10)
        try:
            world.ci.finish_job(job)
            for _ in range(3):
                world.frozen.tick(60)
                second.poll_once()
            (snapshot,) = second.snapshot().targets
            assert sum(sum(s.finished.values()) for s in snapshot.streams) == 0
            assert sum(s.active["Running"] for s in snapshot.streams) == 0
            assert snapshot.up
        finally:
            second.stop()


# -- queues over the cap ------------------------------------------------------------------------


def cap_queues(world: World, limit: int) -> None:
    """A reload that sets max_queues_per_service (taken up before the next poll)."""
    target = target_of(world)
    target.offer(target.target, replace(target.config, max_queues_per_service=limit))


def test_queues_over_the_cap_are_neither_polled_nor_exported(
    frozen: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with make_world(frozen) as world:
        extra = [world.ci.add_queue("media", name=f"extra-{i}") for i in range(4)]
        media = sorted([world.queue, *extra])
        kept, dropped = media[:2], media[2:]
        cap_queues(world, 2)
        caplog.set_level(logging.INFO, logger="exporter.poll.target")
        for queue in media:
            job = world.ci.create_job(queue, TAG)
            world.ci.start_job(job)
        world.sim.reset_requests()
        for _ in range(3):
            world.poll()
        polled = {r.params.get("queueId") for r in world.sim.requests if r.path == "/jobs"}
        assert polled == {*kept, world.ai_queue}
        info = {
            dict(labels)["queue_id"]
            for (name, labels), _ in world.metrics().items()
            if name == "tencent_ci_queue_info" and dict(labels)["service"] == "media"
        }
        assert info == set(kept)
        assert not [k for k in world.metrics() if ("queue_id", dropped[0]) in k[1]]
        assert world.value("tencent_ci_queues_dropped", service="media") == 3
        assert world.value("tencent_ci_queues_dropped", service="ai") == 0
        assert [running(world, q) for q in kept] == [1, 1]
        warnings = [r for r in caplog.records if "max_queues_per_service" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once, not once a poll
        assert warnings[0].levelno == logging.WARNING
        page = render_landing_page(world.poller.snapshot(), "/metrics", "test")
        assert "media: 3 (over max_queues_per_service, 2)" in page
        assert world.up() == 1

        # Under the cap again: every queue polled, the gauge 0, one info line.
        for queue in dropped[:2]:
            world.ci.remove_queue(queue)
        world.sim.reset_requests()
        world.poll()
        assert world.value("tencent_ci_queues_dropped", service="media") == 1
        cap_queues(world, 100)
        world.poll()
        assert world.value("tencent_ci_queues_dropped", service="media") == 0
        assert running(world, dropped[2]) == 1
        lines = [r for r in caplog.records if "max_queues_per_service" in r.getMessage()]
        assert [r.levelno for r in lines] == [logging.WARNING, logging.WARNING, logging.INFO]
        page = render_landing_page(world.poller.snapshot(), "/metrics", "test")
        assert "over max_queues_per_service" not in page


def test_label_values_from_ci_are_cut_to_128_characters(frozen: Any) -> None:
    with make_world(frozen) as world:
        long_name = "n" * 5000
        queue = world.ci.add_queue("media", name=long_name)
        world.poll()
        job = world.ci.create_job(queue, TAG)
        world.ci.finish_job(job, "Failed", code="C" * 200)
        world.poll()
        names = [
            dict(labels)["name"]
            for (name, labels), _ in world.metrics().items()
            if name == "tencent_ci_queue_info" and dict(labels)["queue_id"] == queue
        ]
        assert names == ["n" * (MAX_LABEL_CHARS - 3) + "..."]
        codes = [
            dict(labels)["code"]
            for (name, labels), _ in world.metrics().items()
            if name == "tencent_ci_job_failures_total" and dict(labels)["queue_id"] == queue
        ]
        assert [len(c) for c in codes] == [MAX_LABEL_CHARS]
        assert world.up() == 1


def test_failure_codes_alike_up_to_the_cap_are_one_label() -> None:
    codes = CodeLimiter(1)
    first = codes.label("X" * 300)
    assert first == "X" * (MAX_LABEL_CHARS - 3) + "..."
    assert codes.label("X" * 300 + "tail") == first  # the same label, not "other"
    assert codes.label("Y") == "other"


def test_the_target_view_is_bounded_by_the_lag_limit() -> None:
    """A stream stuck far behind (failing while the others succeed) does not hold the view."""
    ids = TargetJobIds()
    assert ids.claim(1, 1000.0)
    assert ids.claim(2, 5000.0)
    assert not ids.claim(1, 1000.0)
    ids.prune([900, 2000])  # the lagging window still covers job 1
    assert len(ids) == 2
    ids.prune([900, 900 + int(LAG_LIMIT) + 500])  # ...until it lags by more than LAG_LIMIT
    assert 1 not in ids and 2 in ids
    ids.prune([None])
    assert len(ids) == 1
