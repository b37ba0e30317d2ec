"""The tracker alone, with no HTTP: a small in-memory CI answers its listings exactly as the
API documents them, with either reading of the creation-time bounds and a skewed clock."""

from __future__ import annotations

import gc
import random
import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.accounting import StreamKey, StreamListings, StreamTracker, listing_boundary
from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES, DescribeResult, Job
from exporter.held_jobs import ActiveJob, job_id_of, job_key
from exporter.stream_counts import CodeLimiter, HistogramAccumulator

T0 = 1_700_000_000


@dataclass
class FakeJob:
    job_id: str
    created: int
    started: int | None = None
    ended: int | None = None
    final: str = "Success"
    code: str = "Success"

    def state_at(self, t: float) -> str | None:
        if t < self.created:
            return None
        if self.ended is not None and t >= self.ended:
            return self.final
        if self.started is not None and t >= self.started:
            return "Running"
        return "Submitted"

    def record(self, t: float) -> Job:
        state = self.state_at(t)
        assert state is not None
        return Job(
            job_id=self.job_id,
            tag="Transcode",
            state=state,
            queue_id="q1",
            creation_time=float(self.created),
            start_time=float(self.started)
            if self.started is not None and t >= self.started
            else None,
            end_time=float(self.ended) if state in FINISHED_STATES else None,
            code=self.code if state == "Failed" else "Success",
        )


class FakeCI:
    def __init__(self, *, inclusive: bool, skew: float = 0.0) -> None:
        self.jobs: list[FakeJob] = []
        self.inclusive = inclusive
        self.skew = skew

    def add(self, job: FakeJob) -> FakeJob:
        self.jobs.append(job)
        return job

    def list(self, states: tuple[str, ...], at: float, start: int | None = None) -> list[Job]:
        ci_now = at + self.skew
        out = []
        for job in self.jobs:
            state = job.state_at(ci_now)
            if state not in states:
                continue
            if start is not None and (
                job.created < start if self.inclusive else job.created <= start
            ):
                continue
            out.append(job.record(ci_now))
        return out

    def describe(self, ids: list[str], at: float) -> DescribeResult:
        ci_now = at + self.skew
        by_id = {j.job_id: j for j in self.jobs}
        found = [by_id[i].record(ci_now) for i in ids if i in by_id]
        return DescribeResult(tuple(found), tuple(i for i in ids if i not in by_id))


STARTED: dict[int, float] = {}  # id(tracker) -> when its first poll began


def poll(
    tracker: StreamTracker,
    ci: FakeCI,
    at: float,
    *,
    offset: float | None = None,
    tolerance: float = 30.0,
    race: float = 0.0,
) -> int:
    """One poll as the poller does it; returns how many describe-by-id ids it needed."""
    boundary = listing_boundary(at, offset, tolerance)
    # As the poller does: the baseline is where polling of the stream began.
    started = STARTED.setdefault(id(tracker), at)
    tracker.begin(listing_boundary(started, offset, tolerance), started + (offset or 0) + tolerance)
    active = ci.list(ACTIVE_STATES, at)
    finished = ci.list(FINISHED_STATES, at + race, tracker.finished_listing_start(boundary))
    missing = tracker.to_describe(active, finished)
    described = ci.describe(missing, at + 2 * race) if missing else None
    tracker.commit(StreamListings(active, finished, described), boundary, at + 2 * race)
    return len(missing)


def new_tracker(limit: int = 50) -> StreamTracker:
    tracker = StreamTracker(StreamKey("media", "q1", "Transcode"), CodeLimiter(limit))
    STARTED.pop(id(tracker), None)  # an id of a tracker gone before
    return tracker


def total(tracker: StreamTracker) -> int:
    return sum(tracker.counts.finished.values())


@pytest.mark.parametrize("inclusive", [True, False])
def test_baseline_is_not_counted(inclusive: bool) -> None:
    ci = FakeCI(inclusive=inclusive)
    ci.add(FakeJob("old-done", T0 - 100, T0 - 90, T0 - 80))
    ci.add(FakeJob("recent-done", T0 - 5, T0 - 4, T0 - 2, "Failed", "E1"))
    ci.add(FakeJob("running", T0 - 50, T0 - 40))
    tracker = new_tracker()
    poll(tracker, ci, T0)
    assert total(tracker) == 0 and not tracker.counts.failures
    assert tracker.snapshot().active == {"Submitted": 0, "Running": 1, "Pause": 0}
    poll(tracker, ci, T0 + 60)
    assert total(tracker) == 0


@pytest.mark.parametrize("inclusive", [True, False])
def test_job_seen_active_then_finished_counts_once(inclusive: bool) -> None:
    ci = FakeCI(inclusive=inclusive)
    job = ci.add(FakeJob("j1", T0 - 3600, T0 - 3500))  # long runner, older than any window
    tracker = new_tracker()
    poll(tracker, ci, T0)
    job.ended, job.final = T0 + 30, "Success"
    assert poll(tracker, ci, T0 + 60) == 1  # found by describe-by-id
    for k in range(2, 6):
        poll(tracker, ci, T0 + 60 * k)
    assert tracker.counts.finished == {"Success": 1}
    assert tracker.counts.run_duration["Success"].count == 1
    assert tracker.counts.run_duration["Success"].total == 3530


@pytest.mark.parametrize("inclusive", [True, False])
def test_created_and_finished_between_polls(inclusive: bool) -> None:
    ci = FakeCI(inclusive=inclusive)
    tracker = new_tracker()
    poll(tracker, ci, T0)
    ci.add(FakeJob("fast", T0 + 10, T0 + 11, T0 + 20, "Failed", "InternalError"))
    ci.add(FakeJob("cancelled", T0 + 12, None, T0 + 13, "Cancel"))
    assert poll(tracker, ci, T0 + 60) == 0
    poll(tracker, ci, T0 + 120)
    assert tracker.counts.finished == {"Failed": 1, "Cancel": 1}
    assert tracker.counts.failures == {"InternalError": 1}
    assert tracker.counts.queue_wait.count == 1  # the cancelled job never started


@pytest.mark.parametrize("inclusive", [True, False])
def test_jobs_created_in_the_same_second_as_a_window_edge(inclusive: bool) -> None:
    ci = FakeCI(inclusive=inclusive)
    first_edge = listing_boundary(T0, 0.0, 30)
    ci.add(FakeJob("edge-running", first_edge, first_edge, T0 + 30))
    ci.add(FakeJob("edge-done-before-start", first_edge, first_edge, T0 - 1))
    tracker = new_tracker()
    poll(tracker, ci, T0, offset=0.0)
    assert tracker.window_start == first_edge
    second_edge = listing_boundary(T0 + 60, 0.0, 30)
    ci.add(FakeJob("next-edge", second_edge, second_edge, T0 + 58))
    poll(tracker, ci, T0 + 60, offset=0.0)
    assert tracker.window_start == second_edge
    # The next listing starts a second before the edge, so it returns "next-edge" again
    # whichever way CI reads its bounds; it must not count twice.
    poll(tracker, ci, T0 + 120, offset=0.0)
    poll(tracker, ci, T0 + 180, offset=0.0)
    assert tracker.counts.finished == {"Success": 2}


@pytest.mark.parametrize("skew", [-20.0, 20.0, -30.0, 30.0])
@pytest.mark.parametrize("measured", [True, False])
def test_clock_skew(skew: float, measured: bool) -> None:
    ci = FakeCI(inclusive=False, skew=skew)
    tracker = new_tracker()
    offset = skew if measured else None
    poll(tracker, ci, T0, offset=offset)
    # Created on CI's clock just after the baseline listing, finished before the next poll.
    ci.add(FakeJob("a", int(T0 + skew) + 1, int(T0 + skew) + 2, int(T0 + skew) + 3))
    ci.add(FakeJob("b", int(T0 + skew) + 40, None, int(T0 + skew) + 45, "Cancel"))
    for k in range(1, 5):
        poll(tracker, ci, T0 + 60 * k, offset=offset)
    assert tracker.counts.finished == {"Success": 1, "Cancel": 1}


def test_outage_catches_up_from_the_last_successful_window() -> None:
    ci = FakeCI(inclusive=True)
    tracker = new_tracker()
    poll(tracker, ci, T0)
    running = ci.add(FakeJob("long", T0 - 10, T0 - 5))
    poll(tracker, ci, T0 + 60)
    for i in range(250):  # created and finished while every poll failed
        ci.add(FakeJob(f"o{i}", T0 + 70 + i, T0 + 71 + i, T0 + 80 + i))
    running.ended = T0 + 200
    # Polls at +120 .. +300 failed: nothing is committed, the window stays where it was.
    window = tracker.window_start
    poll(tracker, ci, T0 + 360)
    assert tracker.window_start is not None and window is not None
    assert tracker.window_start > window
    poll(tracker, ci, T0 + 420)
    assert total(tracker) == 251


def test_race_between_the_listings_of_one_poll() -> None:
    ci = FakeCI(inclusive=False)
    tracker = new_tracker()
    poll(tracker, ci, T0)
    # Seen Running by the active listing, finished before the finished listing ran.
    ci.add(FakeJob("r", T0 + 5, T0 + 6, T0 + 61))
    poll(tracker, ci, T0 + 60, race=2)
    poll(tracker, ci, T0 + 120, race=2)
    poll(tracker, ci, T0 + 180, race=2)
    assert tracker.counts.finished == {"Success": 1}
    assert tracker.counts.queue_wait.count == 1


def test_deleted_job_is_dropped_not_counted() -> None:
    ci = FakeCI(inclusive=False)
    ci.add(FakeJob("gone", T0 - 500, T0 - 400))
    tracker = new_tracker()
    poll(tracker, ci, T0)
    ci.jobs.clear()
    poll(tracker, ci, T0 + 60)
    assert total(tracker) == 0 and tracker.vanished == 1 and tracker.tracked_jobs == 0


def test_failure_code_cap() -> None:
    codes = CodeLimiter(2)
    assert [codes.label(c) for c in ["A", "B", "C", "A", "", "B"]] == [
        "A",
        "B",
        "other",
        "A",
        "other",
        "B",
    ]


def test_histogram_accumulator_buckets() -> None:
    hist = HistogramAccumulator((1, 10))
    for value in (0.5, 1, 5, 10, 11, -3):
        hist.observe(value)
    snap = hist.snapshot()
    assert snap.cumulative == (3, 5) and snap.count == 6 and snap.sum == 27.5


def test_oldest_job_timestamps() -> None:
    ci = FakeCI(inclusive=False)
    ci.add(FakeJob("s1", T0 - 30))
    ci.add(FakeJob("s2", T0 - 90))
    ci.add(FakeJob("r1", T0 - 300, T0 - 200))
    tracker = new_tracker()
    poll(tracker, ci, T0)
    assert tracker.snapshot().oldest == {"Submitted": T0 - 90, "Running": T0 - 200}
    ci.jobs.clear()
    poll(tracker, ci, T0 + 60)
    assert tracker.snapshot().oldest == {}


def run_random_scenario(seed: int, inclusive: bool, skew: float, measured: bool) -> None:
    """Random jobs over random polls, some failing; after a drain every job that finished after
    the baseline is counted exactly once, and memory returns to nothing."""
    rng = random.Random(seed)
    ci = FakeCI(inclusive=inclusive, skew=skew)
    tracker = new_tracker(limit=3)
    ci_t0 = T0 + skew
    for i in range(rng.randint(0, 40)):
        created = int(ci_t0) - rng.randint(0, 4000)
        ci.add(_random_job(rng, f"pre{i}", created))
    offset = skew if measured else None
    poll(tracker, ci, T0, offset=offset)
    t = float(T0)
    for i in range(rng.randint(50, 300)):
        created = int(t + skew) + rng.randint(0, 300)
        ci.add(_random_job(rng, f"j{i}", created))
        if rng.random() < 0.1:
            t += rng.uniform(0.5, 90)
            if rng.random() < 0.2:
                continue  # this poll failed
            poll(tracker, ci, t, offset=offset, race=rng.choice([0, 0, 0.7]))
    drain = max(j.ended or 0 for j in ci.jobs) - skew + 1
    for k in range(6):
        poll(tracker, ci, max(t, drain) + 61 * k, offset=offset)
    expected = [j for j in ci.jobs if j.ended is not None and j.ended > ci_t0]
    expected_by_state = {s: sum(1 for j in expected if j.final == s) for s in FINISHED_STATES}
    got = {s: tracker.counts.finished[s] for s in FINISHED_STATES}
    assert got == expected_by_state
    assert sum(tracker.counts.failures.values()) == expected_by_state["Failed"]
    assert tracker.active == {}
    assert tracker.tracked_jobs == 0


def _random_job(rng: random.Random, job_id: str, created: int) -> FakeJob:
    started = created + int(rng.expovariate(1 / 20)) if rng.random() < 0.9 else None
    runtime = int(rng.lognormvariate(3, 1.5))
    ended = (started if started is not None else created) + runtime
    final = rng.choices(["Success", "Failed", "Cancel"], [90, 7, 3])[0]
    code = rng.choice(["E1", "E2", "E3", "E4", "E5"]) if final == "Failed" else "Success"
    return FakeJob(job_id, created, started, ended, final, code)


@pytest.mark.parametrize("seed", range(40))
def test_random_scenarios_count_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    run_random_scenario(
        seed, inclusive=rng.random() < 0.5, skew=rng.uniform(-30, 30), measured=rng.random() < 0.5
    )


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    inclusive=st.booleans(),
    skew=st.floats(-30, 30),
    measured=st.booleans(),
)
def test_exactly_once_property(seed: int, inclusive: bool, skew: float, measured: bool) -> None:
    run_random_scenario(seed, inclusive, skew, measured)


@pytest.mark.parametrize("measured", [True, False])
def test_first_poll_failing_still_counts_what_finished_after_it(measured: bool) -> None:
    ci = FakeCI(inclusive=False)
    ci.add(FakeJob("before", T0 - 20, T0 - 15, T0 - 2))
    tracker = new_tracker()
    offset = 0.0 if measured else None
    STARTED[id(tracker)] = T0  # the first poll, at T0, failed
    ci.add(FakeJob("after", T0 + 40, T0 + 41, T0 + 50, "Failed", "E1"))
    poll(tracker, ci, T0 + 60, offset=offset)
    poll(tracker, ci, T0 + 120, offset=offset)
    assert tracker.counts.finished == {"Failed": 1}


def test_a_finished_job_in_the_active_listing_is_counted() -> None:
    ci = FakeCI(inclusive=False)
    job = ci.add(FakeJob("lagging", T0 - 4000, T0 - 3900))
    tracker = new_tracker()
    poll(tracker, ci, T0)
    job.ended = T0 + 10
    # CI's active listing still returns it, already reading Success.
    ended = job.record(T0 + 60)
    boundary = listing_boundary(T0 + 60, None, 30)
    tracker.begin(boundary, T0 + 60)
    missing = tracker.to_describe([ended], [])
    assert missing == ["lagging"]
    tracker.commit(StreamListings([ended], []), boundary, T0 + 60)
    assert tracker.counts.finished == {"Success": 1}
    # The lagging index returns it again, long after the window forgot it: still once.
    for at in (T0 + 120, T0 + 180):
        boundary = listing_boundary(at, None, 30)
        tracker.begin(boundary, at)
        tracker.commit(StreamListings([ended], []), boundary, at)
    assert tracker.counts.finished == {"Success": 1}


# -- how tracked jobs are held ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "compact"),
    [
        ("j" + "0" * 32, True),
        ("a8d121820f5e411ec926ef19d53ba9c6f", True),  # CI's documented example
        ("z" + "f" * 32, True),
        ("jABCDEF0123456789abcdef0123456789", False),  # uppercase hex: kept as text
        ("j" + "0" * 31, False),  # a digit short
        ("j" + "0" * 33, False),
        ("9" + "0" * 32, False),
        ("jabcxxxxfeipplsdfwe", False),
        ("j0x" + "0" * 30, False),
        ("j_" + "0" * 31, False),
        ("j+" + "0" * 31, False),
        ("j " + "0" * 31, False),
        ("\u00e9" + "0" * 32, False),
        ("j" + "\u0663" * 32, False),  # digits of another script
    ],
)
def test_job_keys_give_back_the_job_id(job_id: str, compact: bool) -> None:
    key = job_key(job_id)
    assert job_id_of(key) == job_id
    assert isinstance(key, int) == compact


def test_distinct_job_ids_have_distinct_keys() -> None:
    rng = random.Random(7)
    ids = {f"{rng.choice('jaspd')}{rng.getrandbits(128):032x}" for _ in range(2000)}
    ids |= {"j" + "0" * 32, "j" + "0" * 31 + "1", "k" + "0" * 32, "j" + "0" * 32 + "x"}
    assert len({job_key(i) for i in ids}) == len(ids)


@given(
    state=st.sampled_from(ACTIVE_STATES),
    creation=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    start=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    observed=st.booleans(),
)
def test_an_active_job_record_packs_exactly(
    state: str, creation: float | None, start: float | None, observed: bool
) -> None:
    job = ActiveJob(state, creation, start, observed)
    assert ActiveJob.unpack(job.pack()) == job


def test_active_and_counted_views_by_job_id() -> None:
    ci = FakeCI(inclusive=False)
    long_id, odd_id = "j" + "1" * 32, "odd-id"
    ci.add(FakeJob(long_id, T0 - 300, T0 - 200))
    ci.add(FakeJob(odd_id, T0 - 30))
    tracker = new_tracker()
    poll(tracker, ci, T0)
    assert dict(tracker.active) == {
        long_id: ActiveJob("Running", T0 - 300, T0 - 200, True),
        odd_id: ActiveJob("Submitted", T0 - 30, None, False),
    }
    assert long_id in tracker.active and "j" + "2" * 32 not in tracker.active
    assert 5 not in tracker.active  # not a JobId at all
    done = ci.add(FakeJob("j" + "3" * 32, T0 + 50, T0 + 51, T0 + 55))
    poll(tracker, ci, T0 + 60)
    assert dict(tracker.seen) == {done.job_id: T0 + 50}
    assert tracker.tracked_jobs == 3


def tracked_job_bytes(jobs: int, kind: str, *, streams: int = 10, seed: int = 1) -> float:
    """Memory held per tracked job, as tracemalloc sees it: `jobs` jobs with CI-style JobIds
    (a letter and 32 hex digits) spread over `streams` streams, every one a running job with
    both times (kind "active") or a counted finished job (kind "counted"). The jobs' ids and
    times are objects of their own, as the parser hands them over."""
    rng = random.Random(seed)
    codes = CodeLimiter(50)
    trackers = [
        StreamTracker(StreamKey("media", f"q{s}", "Transcode"), codes) for s in range(streams)
    ]
    listings = []
    for tracker in trackers:
        tracker.commit(StreamListings([], []), T0 - 100, T0)
        created = [T0 + rng.randrange(3600) for _ in range(jobs // streams)]
        ids = [f"j{rng.getrandbits(128):032x}" for _ in created]
        listings.append((tracker, ids, created))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for tracker, ids, created in listings:
            records = [
                Job(
                    "".join(job_id),  # a new string, as the parser makes one
                    "Transcode",
                    "Running" if kind == "active" else "Success",
                    tracker.key.queue_id,
                    float(c),
                    float(c + 5),
                    None if kind == "active" else float(c + 9),
                )
                for job_id, c in zip(ids, created, strict=True)
            ]
            if kind == "active":
                tracker.commit(StreamListings(records, []), T0 - 100, T0)
            else:
                tracker.commit(StreamListings([], records), T0 - 100, T0 + 4000)
            del records
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    tracked = sum(tracker.tracked_jobs for tracker in trackers)
    assert tracked == jobs // streams * streams
    return held / tracked


@pytest.mark.parametrize("kind", ["active", "counted"])
def test_memory_per_tracked_job_is_at_most_200_bytes(kind: str) -> None:
    # 1366 jobs a stream: just after a dict has grown, the most per job.
    assert tracked_job_bytes(13_660, kind) <= 200
