"""Histograms within the series budget: made at their first observation, with the bounds of the
configuration (`histograms:`), none for a service whose histograms are off, and dropped by a
reload that changes their bounds (counts kept). The tracker alone, then the poller against the
simulator over HTTP with a frozen clock, reloads and a restart from the state file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from clients import bare_client
from freezegun import freeze_time

from exporter.accounting import StreamKey, StreamListings, StreamTracker
from exporter.api_stats import ApiStats
from exporter.ci.models import Job
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poller import Poller
from exporter.simulator import Simulator
from exporter.simulator.model import SimBucket
from exporter.snapshot import (
    QUEUE_WAIT_BUCKETS,
    RUN_TIME_BUCKETS,
    HistogramLayout,
    StreamSnapshot,
)
from exporter.stream_counts import CodeLimiter

T0 = 1_700_000_000
KEY = StreamKey("media", "q1", "Transcode")
DEFAULT = HistogramLayout()
SMALL = HistogramLayout(run_time=(2, 20), queue_wait=(3,))

# -- the tracker alone -------------------------------------------------------------------------


def finished_job(
    job_id: str, state: str = "Success", wait: int = 4, run: int = 6, ran: bool = True
) -> Job:
    """Created after the first poll, waited `wait` s, ran `run` s (or never started)."""
    created = T0 + 10
    started = created + wait if ran else None
    ended = created + wait + (run if ran else 0)
    code = "E1" if state == "Failed" else "Success"
    return Job(job_id, KEY.tag, state, KEY.queue_id, created, started, ended, code)


def counting_tracker(layout: HistogramLayout | None = DEFAULT) -> StreamTracker:
    """A tracker past its baseline poll (which saw no job)."""
    tracker = StreamTracker(KEY, CodeLimiter(50), layout=layout)
    tracker.commit(StreamListings((), ()), T0, T0)
    return tracker


def commit(tracker: StreamTracker, *jobs: Job, active: tuple[Job, ...] = ()) -> StreamSnapshot:
    tracker.commit(StreamListings(active, jobs), T0 + 60, T0 + 60)
    return tracker.snapshot()


def test_a_stream_without_jobs_has_no_histogram() -> None:
    snapshot = counting_tracker().snapshot()
    assert snapshot.run_duration == {}
    assert snapshot.queue_wait is None
    assert snapshot.finished == {"Success": 0, "Failed": 0, "Cancel": 0}


def test_one_success_makes_only_the_success_histogram() -> None:
    snapshot = commit(counting_tracker(), finished_job("j1"))
    assert list(snapshot.run_duration) == ["Success"]
    run = snapshot.run_duration["Success"]
    assert (run.bounds, run.count, run.sum) == (RUN_TIME_BUCKETS, 1, 6.0)
    assert snapshot.queue_wait is not None
    assert (snapshot.queue_wait.bounds, snapshot.queue_wait.count) == (QUEUE_WAIT_BUCKETS, 1)


def test_a_cancelled_job_that_never_ran_makes_no_histogram() -> None:
    snapshot = commit(counting_tracker(), finished_job("j1", "Cancel", ran=False))
    assert snapshot.finished["Cancel"] == 1
    assert snapshot.run_duration == {} and snapshot.queue_wait is None


def test_histograms_come_in_the_order_of_the_finished_states() -> None:
    jobs = (finished_job("j1", "Cancel", run=1), finished_job("j2", "Failed"), finished_job("j3"))
    snapshot = commit(counting_tracker(), *jobs)
    assert list(snapshot.run_duration) == ["Success", "Failed", "Cancel"]


def test_custom_bounds_reach_the_snapshot() -> None:
    snapshot = commit(counting_tracker(SMALL), finished_job("j1", wait=4, run=6))
    run = snapshot.run_duration["Success"]
    assert (run.bounds, run.cumulative, run.count) == ((2, 20), (0, 1), 1)
    assert snapshot.queue_wait is not None
    assert (snapshot.queue_wait.bounds, snapshot.queue_wait.cumulative) == ((3,), (0,))


def test_histograms_off_observe_nothing() -> None:
    tracker = counting_tracker(None)
    running = Job("r1", KEY.tag, "Running", KEY.queue_id, T0 + 5, T0 + 8)
    snapshot = commit(tracker, finished_job("j1"), finished_job("j2", "Failed"), active=(running,))
    assert snapshot.finished == {"Success": 1, "Failed": 1, "Cancel": 0}
    assert snapshot.failures == {"E1": 1}
    assert snapshot.active["Running"] == 1
    assert snapshot.run_duration == {} and snapshot.queue_wait is None
    assert tracker.counts.run_duration == {} and tracker.counts.queue_wait is None


def test_new_bounds_drop_the_histograms_and_keep_every_count() -> None:
    tracker = counting_tracker()
    running = Job("r1", KEY.tag, "Running", KEY.queue_id, T0 + 5, T0 + 8)
    before = commit(tracker, finished_job("j1"), finished_job("j2", "Failed"), active=(running,))
    tracked = tracker.tracked_jobs
    assert tracker.set_layout(SMALL) is True
    after = tracker.snapshot()
    assert after.run_duration == {} and after.queue_wait is None
    assert (after.finished, after.failures, after.active, after.oldest) == (
        before.finished,
        before.failures,
        before.active,
        before.oldest,
    )
    assert after.last_failed_job == before.last_failed_job == "j2"
    assert tracker.tracked_jobs == tracked
    # The next observation starts the histogram afresh, with the new bounds; the job seen
    # running had its wait observed already: not again.
    done = Job("r1", KEY.tag, "Success", KEY.queue_id, T0 + 5, T0 + 8, T0 + 30)
    snapshot = commit(tracker, done)
    assert snapshot.finished["Success"] == 2
    assert list(snapshot.run_duration) == ["Success"]
    run = snapshot.run_duration["Success"]
    assert (run.bounds, run.count) == ((2, 20), 1)
    assert snapshot.queue_wait is None


def test_the_same_bounds_keep_the_histograms() -> None:
    tracker = counting_tracker(SMALL)
    before = commit(tracker, finished_job("j1"))
    # An equal layout, however it was made (a reload builds a new one).
    assert tracker.set_layout(HistogramLayout((2.0, 20.0), (3.0,))) is False
    assert tracker.snapshot() == before
    assert tracker.snapshot().run_duration["Success"].count == 1


def test_histograms_turned_off_then_on_start_afresh() -> None:
    tracker = counting_tracker()
    commit(tracker, finished_job("j1"))
    assert tracker.set_layout(None) is True
    assert tracker.snapshot().run_duration == {}
    commit(tracker, finished_job("j2"))
    assert tracker.counts.run_duration == {} and tracker.counts.queue_wait is None
    assert tracker.set_layout(HistogramLayout()) is True
    commit(tracker, finished_job("j3"))
    snapshot = tracker.snapshot()
    assert snapshot.finished["Success"] == 3
    assert snapshot.run_duration["Success"].count == 1


# -- the poller: configuration, reloads and restarts -------------------------------------------

SECRET_ID, SECRET_KEY = "AKIDlayout00000000000000000000000000", "layout-key-000000000000000000000"
BUCKET, REGION = "layout-1250000000", "ap-chengdu"


@dataclass
class World:
    ci: SimBucket
    poller: Poller
    frozen: Any
    media: str  # a media queue, its Transcode stream
    ai: str  # an ai queue, its Translation stream

    def poll(self, seconds: float = 60) -> None:
        self.frozen.tick(seconds)
        self.poller.poll_once()

    def stream(self, service: str) -> StreamSnapshot:
        (target,) = self.poller.snapshot().targets
        (stream,) = (s for s in target.streams if s.service == service)
        return stream

    def run_job(self, service: str, waited: float = 4, ran: float = 6) -> None:
        """A job created, started and finished between two polls (the clock moves on)."""
        queue, tag = (self.media, "Transcode") if service == "media" else (self.ai, "Translation")
        job = self.ci.create_job(queue, tag)
        self.frozen.tick(waited)
        self.ci.start_job(job)
        self.frozen.tick(ran)
        self.ci.finish_job(job)


def configure(*, media_histograms: bool = True, layout: HistogramLayout = DEFAULT) -> Config:
    target = TargetConfig(
        BUCKET,
        REGION,
        "",  # set by make_world
        Credentials(SECRET_ID, SECRET_KEY),
        (
            ServiceConfig("media", ("Transcode",), histograms=media_histograms),
            ServiceConfig("ai", ("Translation",)),
        ),
    )
    return Config(targets=(target,), request_timeout=2, idle_tag_backoff=0, histograms=layout)


@pytest.fixture
def frozen() -> Iterator[Any]:
    with freeze_time("2026-11-21 04:00:00", tick=False) as frozen_time:
        yield frozen_time


@contextmanager
def make_world(frozen: Any, config: Config) -> Iterator[World]:
    sim = Simulator({SECRET_ID: SECRET_KEY})
    ci = sim.add_bucket(BUCKET, REGION)
    media, ai = ci.add_queue("media", name="transcode"), ci.add_queue("ai", name="ai")
    with sim.start():
        endpoint = sim.endpoint(BUCKET)
        config = replace(config, targets=(replace(config.targets[0], endpoint=endpoint),))
        poller = Poller(config, ApiStats(), client_factory=bare_client)
        try:
            yield World(ci, poller, frozen, media, ai)
        finally:
            poller.stop()


def reload(world: World, **changes: Any) -> None:
    """The running configuration with `changes` (histograms, or a media flag)."""
    config = world.poller.config
    if "media_histograms" in changes:
        target = config.targets[0]
        media = replace(target.services[0], histograms=changes.pop("media_histograms"))
        config = replace(config, targets=(replace(target, services=(media, *target.services[1:])),))
    world.poller.reload(replace(config, **changes))


def test_a_service_with_histograms_off_never_observes(frozen: Any) -> None:
    with make_world(frozen, configure(media_histograms=False, layout=SMALL)) as w:
        w.poller.poll_once()
        w.run_job("media")
        w.run_job("ai")
        w.poll()
        media, ai = w.stream("media"), w.stream("ai")
        assert media.finished["Success"] == ai.finished["Success"] == 1
        assert media.run_duration == {} and media.queue_wait is None
        # The other service's histograms have the configured bounds.
        run = ai.run_duration["Success"]
        assert (run.bounds, run.cumulative) == ((2, 20), (0, 1))
        assert ai.queue_wait is not None and ai.queue_wait.bounds == (3,)


def test_a_reload_with_new_bounds_drops_the_histograms_but_keeps_the_counts(
    frozen: Any,
) -> None:
    with make_world(frozen, configure()) as w:
        w.poller.poll_once()
        w.run_job("media")
        w.poll()
        assert w.stream("media").run_duration["Success"].bounds == RUN_TIME_BUCKETS
        reload(w, histograms=SMALL)
        w.poll()
        media = w.stream("media")
        assert media.finished["Success"] == 1
        assert media.run_duration == {} and media.queue_wait is None
        w.run_job("media", ran=30)
        w.poll()
        media = w.stream("media")
        assert media.finished["Success"] == 2
        run = media.run_duration["Success"]
        assert (run.bounds, run.cumulative, run.count) == ((2, 20), (0, 0), 1)


def test_a_reload_with_the_same_bounds_keeps_the_histograms(frozen: Any) -> None:
    with make_world(frozen, configure(layout=SMALL)) as w:
        w.poller.poll_once()
        w.run_job("media")
        w.poll()
        # Another setting changes; the bounds are equal, written anew.
        reload(w, poll_interval=30, histograms=HistogramLayout((2.0, 20.0), (3.0,)))
        w.poll(30)
        media = w.stream("media")
        assert media.finished["Success"] == 1
        assert media.run_duration["Success"].count == 1
        assert media.queue_wait is not None and media.queue_wait.count == 1


def test_a_reload_turns_one_service_off_and_leaves_the_others(frozen: Any) -> None:
    with make_world(frozen, configure()) as w:
        w.poller.poll_once()
        w.run_job("media")
        w.run_job("ai")
        w.poll()
        reload(w, media_histograms=False)
        w.run_job("media")
        w.poll()
        media, ai = w.stream("media"), w.stream("ai")
        assert media.finished["Success"] == 2
        assert media.run_duration == {} and media.queue_wait is None
        assert ai.run_duration["Success"].count == 1
        reload(w, media_histograms=True)
        w.run_job("media")
        w.poll()
        media = w.stream("media")
        assert media.finished["Success"] == 3
        assert media.run_duration["Success"].count == 1


def test_restored_streams_take_the_configured_layout(frozen: Any, tmp_path: Path) -> None:
    config = replace(configure(), state_file=str(tmp_path / "state.json"))
    with make_world(frozen, config) as w:
        w.poller.poll_once()
        w.run_job("media")
        w.poll()
        # A new process, configured with other bounds and media's histograms off.
        w.poller.stop()
        restarted = replace(w.poller.config, histograms=SMALL)
        target = restarted.targets[0]
        media = replace(target.services[0], histograms=False)
        restarted = replace(
            restarted, targets=(replace(target, services=(media, *target.services[1:])),)
        )
        w.poller = Poller(restarted, ApiStats(), client_factory=bare_client)
        (poller,) = w.poller.targets
        layouts = {key.service: t.counts.layout for key, t in poller.streams.trackers.items()}
        assert layouts == {"media": None, "ai": SMALL}
        w.run_job("media")
        w.run_job("ai")
        w.poll()
        media_stream, ai_stream = w.stream("media"), w.stream("ai")
        assert media_stream.finished["Success"] == ai_stream.finished["Success"] == 1
        assert media_stream.run_duration == {} and media_stream.queue_wait is None
        assert ai_stream.run_duration["Success"].bounds == (2, 20)
