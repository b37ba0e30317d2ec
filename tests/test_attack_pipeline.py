"""Defects found in the rebuilt poll pipeline (exporter/poll/, exporter/poller.py). Each test
fails on the rebuilt pipeline and states the behaviour that the previous poller had, or that
README "How jobs are counted" promises."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from clients import bare_client
from freezegun import freeze_time
from pipeline_world import BUCKETS, REGION, TAG, finished, target, two_buckets

from exporter.api_stats import ApiStats
from exporter.config import Config, RateLimitConfig
from exporter.poller import Poller
from exporter.sharding import Shard
from exporter.simulator import Simulator
from exporter.state import load_state
from exporter.stream_counts import CodeLimiter

pytestmark = pytest.mark.usefixtures("frozen_on_every_thread")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with two_buckets() as simulator:
        yield simulator


OTHER_SHARD = "four-1250000000"  # shard 1 of 2; both of BUCKETS are shard 0


def finish_a_job(sim: Simulator, queue_id: str, bucket: str = BUCKETS[0]) -> str:
    ci = sim.bucket(bucket)
    job_id = ci.create_job(queue_id, TAG)
    ci.start_job(job_id)
    ci.finish_job(job_id, "Success")
    return job_id


# -- the idle back-off of a queue that leaves CI's listing and comes back ---------------------


def test_a_backed_off_queue_that_comes_back_is_polled_at_once(sim: Simulator) -> None:
    """The previous poller forgot a stream's idle back-off when its queue left the listing, so
    the queue, back at the next poll, was listed at once. The rebuilt one keeps the back-off
    (TargetStreams.replace_queues retires the tracker but nothing tells the IdleSchedule;
    IdleSchedule.keep_only is never called): the returning queue is skipped for up to
    idle_tag_backoff, its gauge and counters stale, and the schedule of every queue ever
    deleted stays in memory for good."""
    ci = sim.bucket(BUCKETS[0])
    (queue_id,) = (q.queue_id for q in ci.queues())
    with freeze_time("2026-12-02 10:00:00") as frozen:
        config = Config((target(sim, BUCKETS[0]),), poll_interval=60, idle_tag_backoff=600)
        poller = Poller(config, ApiStats(), client_factory=bare_client)
        for _ in range(5):  # empty polls: the stream backs off (streak 3: 4 to 7 minutes)
            poller.poll_once()
            frozen.tick(60)
        assert poller.snapshot().targets[0].idle_streams == 1  # skipped by the back-off
        ci.remove_queue(queue_id)  # a listing without the queue: retired
        poller.poll_once()
        frozen.tick(60)
        ci.add_queue("media", name="main", queue_id=queue_id)  # back, with a job done
        finish_a_job(sim, queue_id)
        poller.poll_once()
        (snapshot,) = poller.snapshot().targets
        assert [q.queue.queue_id for q in snapshot.queues] == [queue_id]
        # Listed by CI and shown on /metrics as a queue, yet its stream (counters, gauge) is
        # missing from /metrics until the old back-off runs out, and the job is not counted.
        assert len(snapshot.streams) == 1, "the returning queue's stream is off /metrics"
        assert snapshot.idle_streams == 0
        assert finished(poller) == 1


# -- the rate limit is the account's, whatever the reloads ----------------------------------


def test_a_rate_limit_changed_and_changed_back_keeps_one_gate_per_credentials(
    sim: Simulator,
) -> None:
    """Reload 1 changes the rate limit (a new SharedClients), reload 2 puts it back and adds a
    second bucket with the same keys (another new SharedClients). The first bucket's basis is
    unchanged, so TargetPoller.take_offer keeps its client and the request gate of the very
    first SharedClients, while the second bucket gets the gate of the newest one: two gates
    for one set of credentials, twice the configured rate. The previous poller rebuilt the
    client whenever the rate limit differed from the configuration before the reload."""
    for name in BUCKETS:
        for n in range(4):
            sim.bucket(name).add_queue("media", name=f"more-{n}")
    slow = RateLimitConfig(requests_per_second=20, burst=1, concurrency=4)
    fast = RateLimitConfig(requests_per_second=500, burst=500, concurrency=4)
    first = Config((target(sim, BUCKETS[0]),), idle_tag_backoff=0, rate_limit=slow)
    poller = Poller(first, ApiStats())
    poller.poll_once()
    poller.reload(Config(first.targets, idle_tag_backoff=0, rate_limit=fast))
    both = tuple(target(sim, b) for b in BUCKETS)
    poller.reload(Config(both, idle_tag_backoff=0, rate_limit=slow))
    poller.poll_once()  # each target takes up the last configuration
    times: list[float] = []
    lock = threading.Lock()

    def seen() -> None:
        with lock:
            times.append(time.monotonic())

    sim.on_request = seen
    # Both targets poll side by side, as their threads do: 2 x 11 calls through one gate.
    threads = [threading.Thread(target=poller._poll_target, args=(p,)) for p in poller.targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    poller.stop()
    assert len(times) == 22
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate <= 20 * 1.05, f"{rate:.1f} requests/s for one set of keys limited to 20/s"


# -- a bug in one stream must not stop the target's saves --------------------------------------


def test_a_bug_in_one_stream_does_not_stop_the_state_file_following_what_was_published(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug committing one stream (here: the second queue's tracker) ends the poll after the
    first stream's commit, and that commit is published (Poller._internal_error publishes).
    The previous poller then saved the state as well; the rebuilt one returns before the save
    (Poller._poll_target). While the bug lasts the target is never saved again, though every
    poll publishes new counts: a restart counts all of them a second time."""
    ci = sim.bucket(BUCKETS[0])
    ci.add_queue("media", name="other")
    path = tmp_path / "state.json"
    with freeze_time("2026-12-02 10:00:00") as frozen:
        config = Config(
            (target(sim, BUCKETS[0]),),
            poll_interval=6,
            clock_skew_tolerance=1,
            idle_tag_backoff=0,
            state_file=str(path),
        )
        poller = Poller(config, ApiStats(), client_factory=bare_client)
        poller.poll_once()  # the baseline, saved
        (only,) = poller.targets
        # Streams are committed in the order they were planned: the job in the first, the
        # bug in the last.
        keys = list(only.streams.trackers)
        first, last = keys[0], keys[-1]
        main = first.queue_id
        frozen.tick(6)
        finish_a_job(sim, main)
        frozen.tick(6)
        broken = only.streams.trackers[last]

        def bug(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug in one stream's accounting")

        monkeypatch.setattr(broken, "commit", bug)
        poller.poll_once()
        assert finished(poller, queue_id=main) == 1  # counted and published
        assert not poller.snapshot().targets[0].up
        frozen.tick(6)
        restarted = Poller(config, ApiStats(), client_factory=bare_client)
        restarted.poll_once()
        assert finished(restarted, queue_id=main) == 0, "the restart counted the job again"


# -- the state file and reloads ---------------------------------------------------------------


def _saved(path: Path) -> set[str]:
    return set(load_state(path, CodeLimiter(5), lambda name: deque(maxlen=5)))


def test_a_reload_leaving_a_shard_no_target_still_takes_the_removed_one_out_of_the_file(
    sim: Simulator, tmp_path: Path
) -> None:
    """README: "A target a reload removes can no longer write its state: the file holds only
    targets the running configuration polls." StateFile.retain drops the fragment and marks
    the file dirty, but only a later save of another target writes it. A shard (or a SIGTERM
    before the next save) with no other target to save never does: the file keeps the removed
    bucket for good, and a restart that polls it again takes up its stale accounting (its old
    window: every job it missed meanwhile, counted by whichever exporter polled it, counts
    again here)."""
    sim.add_bucket(OTHER_SHARD, REGION).add_queue("media", name="main")
    path = tmp_path / "state.json"
    shard = Shard(0, 2)  # BUCKETS[0] is this shard's, OTHER_SHARD the other's
    config = Config((target(sim, BUCKETS[0]), target(sim, OTHER_SHARD)), state_file=str(path))
    poller = Poller(config, ApiStats(), client_factory=bare_client, shard=shard)
    poller.poll_once()
    assert _saved(path) == {f"{BUCKETS[0]}/{REGION}"}
    poller.reload(Config(config.targets[1:], state_file=str(path)))  # none left in this shard
    poller.poll_once()
    poller.stop()
    assert _saved(path) == set(), "the file still holds a target no configuration polls"


def test_a_reload_that_moves_the_state_file_is_applied(sim: Simulator, tmp_path: Path) -> None:
    """A reload is "swapped in" (README) and answered "config reloaded", but the Poller builds
    its StateFile once (Poller.__init__) and _apply never looks at config.state_file again:
    the state keeps going to the old path, and a restart with the reloaded file (the new path)
    starts from a fresh baseline. (Also so in the previous poller.)"""
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    config = Config((target(sim, BUCKETS[0]),), state_file=str(before))
    poller = Poller(config, ApiStats(), client_factory=bare_client)
    poller.poll_once()
    poller.reload(Config(config.targets, state_file=str(after)))
    poller.poll_once()
    assert _saved(after) == {f"{BUCKETS[0]}/{REGION}"}, "the reloaded state_file is not used"


# -- a bug in a stream task -------------------------------------------------------------------


def test_a_bug_in_a_stream_task_leaves_a_traceback_in_the_log(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """README: a bug in a poll "is logged once per kind". A bug inside a stream task is caught
    by Pipeline._errors, which keeps only `internal error: KeyError` (no message) and logs
    nothing: the target is down with reason internal on every poll and no traceback is written
    at any level. The previous poller logged it (debug, with the traceback)."""
    caplog.set_level("DEBUG")
    poller = Poller(Config((target(sim, BUCKETS[0]),)), ApiStats(), client_factory=bare_client)
    (only,) = poller.targets

    def bug(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug listing jobs")

    monkeypatch.setattr(only.client, "list_jobs", bug)
    poller.poll_once()
    assert not poller.snapshot().targets[0].up
    logged = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], KeyError)]
    assert logged, "no traceback of the bug anywhere in the log"
