"""The poll pipeline's structure: a stream's finished listing always follows its active one;
reloads are taken up by the target's own thread, the last one winning; the state file never
holds a target the configuration does not poll; the poll thread survives anything."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clients import bare_client
from freezegun import freeze_time
from pipeline_world import BUCKETS, REGION, finished, target, two_buckets

import exporter.state as state_module
from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient
from exporter.config import Config, RateLimitConfig, RetryConfig
from exporter.poll.clients import SharedClients, build_client
from exporter.poller import Poller
from exporter.simulator import Fault, Simulator
from exporter.state import load_state
from exporter.stream_counts import CodeLimiter

pytestmark = pytest.mark.usefixtures("frozen_on_every_thread")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with two_buckets() as simulator:
        yield simulator


# -- the order -------------------------------------------------------------------------------


def test_a_job_ending_while_the_active_listing_is_retried_is_counted_once(
    sim: Simulator,
) -> None:
    """The first active listing fails; while the client backs off the job ends, so the retried
    active listing no longer shows it. The finished listing comes after, and finds it."""
    ci = sim.bucket(BUCKETS[0])
    (queue,) = (q.queue_id for q in ci.queues())
    ended: list[str] = []

    def sleep(stopping: threading.Event, seconds: float) -> bool:
        frozen.tick(seconds)
        if job_id not in ended:  # the back-off before the retry: the job ends meanwhile
            ci.finish_job(job_id, "Success")
            ended.append(job_id)
        return stopping.is_set()

    with freeze_time("2026-12-02 10:00:00") as frozen:
        config = Config((target(sim, BUCKETS[0]),), poll_interval=6, clock_skew_tolerance=1)
        shared = SharedClients(sleep=sleep)
        poller = Poller(
            config, ApiStats(), client_factory=lambda t, c, s: build_client(t, c, s, shared=shared)
        )
        poller.poll_once()
        frozen.tick(6)
        job_id = ci.create_job(queue, "Transcode")
        ci.start_job(job_id)
        frozen.tick(6)
        sim.reset_requests()
        sim.faults.add(Fault("http_500", path="/jobs", times=1))
        poller.poll_once()
        assert ended == [job_id]
        assert finished(poller) == 1
        states = [r.params.get("states", "") for r in sim.requests if r.path == "/jobs"]
        # Failed active, retried active, then finished: in this order.
        assert [s.startswith("Submitted") for s in states] == [True, True, False], states
        for _ in range(3):
            frozen.tick(6)
            poller.poll_once()
        assert finished(poller) == 1
        assert poller.snapshot().targets[0].up


# -- reloads ---------------------------------------------------------------------------------


def _request_times(sim: Simulator) -> list[float]:
    times: list[float] = []
    sim.on_request = lambda: times.append(time.monotonic())
    return times


@pytest.mark.parametrize("reloads", [2, 3])
def test_reloads_before_the_next_poll_leave_the_last_in_force(
    sim: Simulator, reloads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ci = sim.bucket(BUCKETS[0])
    for n in range(4):
        ci.add_queue("media", name=f"more-{n}")
    clients: list[CIClient] = []
    closed: list[CIClient] = []
    real_init, real_close = CIClient.__init__, CIClient.close

    def init(self: CIClient, **kwargs: Any) -> None:
        real_init(self, **kwargs)
        clients.append(self)

    def close(self: CIClient) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(CIClient, "__init__", init)
    monkeypatch.setattr(CIClient, "close", close)
    fast = Config(
        (target(sim, BUCKETS[0]),),
        request_timeout=10,
        idle_tag_backoff=0,
        rate_limit=RateLimitConfig(requests_per_second=200, burst=200, concurrency=4),
    )
    slow = Config(
        fast.targets,
        request_timeout=0.5,
        retry=RetryConfig(attempts=1),
        idle_tag_backoff=0,
        rate_limit=RateLimitConfig(requests_per_second=4, burst=1, concurrency=4),
    )
    poller = Poller(fast, ApiStats())
    poller.poll_once()
    for _ in range(reloads):  # SIGHUP, then a config-reloader's POST of the same file...
        poller.reload(slow)
    times = _request_times(sim)
    poller.poll_once()
    # 11 calls (a queue listing, two listings of 5 streams) at 4 a second after the first.
    assert len(times) == 11
    assert (len(times) - 1) / (times[-1] - times[0]) <= 4 * 1.05
    # The new timeout is in force: an answer taking a second is a timeout.
    sim.faults.add(Fault("slow", path="/jobs", delay=1.0))
    poller.poll_once()
    (snapshot,) = poller.snapshot().targets
    assert not snapshot.up and "no answer within 0.5s" in snapshot.last_error
    # One client per configuration actually taken up; every replaced one closed.
    assert len(clients) == 2
    assert clients[0] in closed and clients[1] not in closed
    poller.stop()
    assert clients[1] in closed


# -- the state file and reloads -------------------------------------------------------------


def _both(sim: Simulator, path: Path) -> tuple[Config, Config]:
    both = Config(tuple(target(sim, b) for b in BUCKETS), state_file=str(path))
    return both, Config(both.targets[:1], state_file=str(path))


def _saved(path: Path) -> set[str]:
    return set(load_state(path, CodeLimiter(5), lambda name: deque(maxlen=5)))


@pytest.mark.parametrize("when", ["encoding", "writing", "after"])
def test_a_removed_target_never_comes_back_into_the_state_file(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The reload that removes the second target lands while that target's save is encoding
    its state, while the file is being written, or after: the file never keeps it."""
    path = tmp_path / "state.json"
    both, first_only = _both(sim, path)
    poller = Poller(both, ApiStats(), client_factory=bare_client)
    poller.poll_once()
    assert _saved(path) == {f"{b}/{REGION}" for b in BUCKETS}
    second = f"{BUCKETS[1]}/{REGION}"
    real_write = state_module._write_atomically
    done: list[str] = []

    def reload_once() -> None:
        if not done:
            done.append(when)
            poller.reload(first_only)

    def write(where: str, data: bytes) -> None:
        real_write(where, data)
        if when == "writing":
            reload_once()

    second_poller = poller.targets[1]

    def second_state() -> Any:
        if when == "encoding":
            reload_once()  # between the poll and the save's insert
        return type(second_poller).state(second_poller)

    monkeypatch.setattr(second_poller, "state", second_state)
    monkeypatch.setattr(state_module, "_write_atomically", write)
    poller._poll_target(second_poller)
    if when == "after":
        reload_once()
    poller.poll_once()  # the first target saves again
    assert done == [when]
    assert second not in _saved(path)
    assert _saved(path) == {f"{BUCKETS[0]}/{REGION}"}


# -- the poll thread survives --------------------------------------------------------------


@pytest.mark.parametrize("failing", ["publish", "save"])
def test_a_failing_publish_or_save_marks_the_target_internal_and_the_next_poll_recovers(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    config = Config(
        (target(sim, BUCKETS[0]),), poll_interval=0.05, state_file=str(tmp_path / "s.json")
    )
    poller = Poller(config, ApiStats(), client_factory=bare_client)
    assert poller.state_file is not None
    failures = [RuntimeError("boom")]
    real = poller._publish if failing == "publish" else poller.state_file.save
    outcomes: list[bool] = []
    healthy = threading.Event()

    def flaky(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        real(*args, **kwargs)
        outcomes.append(poller.snapshot().targets[0].up)
        if len(outcomes) >= 2 and outcomes[-1]:
            healthy.set()

    if failing == "publish":
        monkeypatch.setattr(poller, "_publish", flaky)
    else:
        monkeypatch.setattr(poller.state_file, "save", flaky)
    poller.poll_once()
    (snapshot,) = poller.snapshot().targets
    assert not snapshot.up and "internal" in snapshot.last_error
    poller.start()  # the thread lives on, and its next polls are healthy
    try:
        assert healthy.wait(10)
    finally:
        poller.stop()


def test_any_exception_in_a_poll_is_logged_once_per_kind(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    poller = Poller(Config((target(sim, BUCKETS[0]),)), ApiStats(), client_factory=bare_client)
    (only,) = poller.targets
    monkeypatch.setattr(only, "poll", lambda: (_ for _ in ()).throw(KeyError("bug")))
    for _ in range(3):
        poller.poll_once()
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelname == "ERROR"]
    assert len(tracebacks) == 1
    assert not poller.snapshot().targets[0].up


def test_restored_targets_stay_in_the_state_file_before_their_first_save(
    sim: Simulator, tmp_path: Path
) -> None:
    """A restart whose first target saves, then crashes before the second one's first poll,
    must not lose the second one's restored state."""
    path = tmp_path / "state.json"
    both, _ = _both(sim, path)
    first = Poller(both, ApiStats(), client_factory=bare_client)
    first.poll_once()
    first.stop()
    restarted = Poller(both, ApiStats(), client_factory=bare_client)
    restarted._poll_target(restarted.targets[0])  # then the process dies
    assert _saved(path) == {f"{b}/{REGION}" for b in BUCKETS}
