"""exporter.ratelimit: the shared request gate (exact rate, concurrency, first come first served,
prompt stop), the per-target pacer and the retry back-off. Time is a fake clock throughout,
except where threads must really block (and then they wait on conditions, never on guesses)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable

import pytest

from exporter.ci.models import CIStopped
from exporter.ratelimit import (
    PACE_CAP,
    PACE_FLOOR,
    Pacer,
    RequestGate,
    RetryPolicy,
    wait_on,
)

WAIT = 10.0  # generous: how long a test waits for another thread to get somewhere


class FakeTime:
    """A clock that moves only when someone sleeps on it. Thread-safe; remembers, per thread,
    the last reading it gave (the reading at which the gate let that thread go)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def clock(self) -> float:
        with self._lock:
            self._local.last = self.now
            return self.now

    @property
    def last_reading(self) -> float:
        value: float = self._local.last
        return value

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, stopping: threading.Event, seconds: float) -> bool:
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds
        return stopping.is_set()


def until(condition: Callable[[], bool]) -> None:
    """Wait for another thread to reach a state, with a generous deadline."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the other thread never got there"
        time.sleep(0.001)


def assert_rate_held(starts: list[float], rps: float, burst: int) -> None:
    """Over every window [starts[i], starts[j]]: at most burst + rps * length requests."""
    starts = sorted(starts)
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            allowed = burst + rps * (starts[j] - starts[i])
            assert j - i + 1 <= allowed + 1e-6, (i, j, starts[i], starts[j])


# -- the gate's rate ----------------------------------------------------------------------


@pytest.mark.parametrize(("rps", "burst"), [(15.0, 30), (0.5, 1), (3.0, 5), (100.0, 1), (7.0, 2)])
def test_the_gate_never_lets_more_than_burst_plus_rate_times_window(rps: float, burst: int) -> None:
    fake = FakeTime()
    gate = RequestGate(rps, burst, concurrency=4, clock=fake.clock, sleep=fake.sleep)
    rng = random.Random(f"{rps}/{burst}")
    starts = []
    for _ in range(300):
        # Bursts of back-to-back calls between idle spells, some long enough to refill.
        if rng.random() < 0.1:
            fake.advance(rng.choice([0.01, 0.3, 1.0, 5.0, 60.0]) / rps * burst)
        with gate.slot():
            starts.append(fake.last_reading)
    assert_rate_held(starts, rps, burst)
    assert gate.granted == 300


@pytest.mark.parametrize(("rps", "burst"), [(15.0, 30), (0.5, 1), (4.0, 3)])
def test_the_gate_allows_the_whole_rate_and_no_less(rps: float, burst: int) -> None:
    """Back to back: the burst at once, then one every 1/rps, as soon as each is due."""
    fake = FakeTime(start=0.0)
    gate = RequestGate(rps, burst, concurrency=1, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(burst + 40):
        with gate.slot():
            starts.append(fake.last_reading)
    assert starts[:burst] == [0.0] * burst
    expected = [(n + 1) / rps for n in range(40)]
    assert starts[burst:] == pytest.approx(expected, abs=1e-6)


def test_an_idle_gate_refills_only_up_to_the_burst() -> None:
    fake = FakeTime(start=0.0)
    gate = RequestGate(2.0, 3, concurrency=1, clock=fake.clock, sleep=fake.sleep)
    fake.advance(3600)  # an hour idle is worth 3 tokens, not 7200
    starts = []
    for _ in range(5):
        with gate.slot():
            starts.append(fake.last_reading - 3600)
    assert starts == pytest.approx([0, 0, 0, 0.5, 1.0])


def test_an_unlimited_rate_only_limits_concurrency() -> None:
    fake = FakeTime()
    gate = RequestGate(float("inf"), 1, concurrency=1, clock=fake.clock, sleep=fake.sleep)
    for _ in range(1000):
        with gate.slot():
            pass
    assert fake.slept == [] and gate.granted == 1000


def test_threads_sharing_a_gate_keep_the_rate_and_the_concurrency() -> None:
    fake = FakeTime()
    rps, burst, concurrency = 5.0, 4, 3
    gate = RequestGate(rps, burst, concurrency, clock=fake.clock, sleep=fake.sleep)
    starts: list[float] = []
    most_in_flight = [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            with gate.slot():
                with lock:
                    starts.append(fake.last_reading)
                    most_in_flight[0] = max(most_in_flight[0], gate.in_flight)
                if rng.random() < 0.3:
                    fake.advance(rng.random())  # a slow answer, while holding the slot
            if rng.random() < 0.2:
                fake.advance(rng.random() * 2)  # an idle spell

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(starts) == 320 and gate.granted == 320
    assert_rate_held(starts, rps, burst)
    assert 1 <= most_in_flight[0] <= concurrency
    assert gate.in_flight == 0 and gate.waiting == 0


# -- concurrency, order, stopping ---------------------------------------------------------


def start_waiter(
    gate: RequestGate, name: str, log: list[str], stopping: threading.Event | None = None
) -> threading.Thread:
    def run() -> None:
        try:
            with gate.slot(stopping):
                log.append(name)
        except CIStopped:
            log.append(f"{name} stopped")

    thread = threading.Thread(target=run)
    waiting = gate.waiting
    thread.start()
    until(lambda: gate.waiting > waiting or bool(log and log[-1].startswith(name)))
    return thread


def test_a_full_gate_holds_the_next_request_until_a_slot_is_released() -> None:
    gate = RequestGate(float("inf"), 1, concurrency=2)
    log: list[str] = []
    gate.acquire()
    gate.acquire()
    waiter = start_waiter(gate, "third", log)
    assert (gate.in_flight, gate.waiting, log) == (2, 1, [])
    gate.release()
    waiter.join(WAIT)
    assert log == ["third"] and gate.in_flight == 1


def test_waiters_go_first_come_first_served() -> None:
    gate = RequestGate(float("inf"), 1, concurrency=1)
    log: list[str] = []
    gate.acquire()
    waiters = [start_waiter(gate, f"w{n}", log) for n in range(5)]
    assert gate.waiting == 5
    gate.release()
    for waiter in waiters:
        waiter.join(WAIT)
    assert log == [f"w{n}" for n in range(5)]


def test_stopping_wakes_a_request_waiting_for_a_slot() -> None:
    gate = RequestGate(float("inf"), 1, concurrency=1)
    stopping = threading.Event()
    log: list[str] = []
    gate.acquire()
    waiter = start_waiter(gate, "w", log, stopping)
    stopping.set()
    waiter.join(WAIT)
    assert log == ["w stopped"]
    assert gate.waiting == 0  # its place in line is given up
    gate.release()
    with gate.slot():
        assert gate.in_flight == 1


def test_stopping_wakes_a_request_waiting_for_a_token() -> None:
    """The wait for a token is real here (100 s): only `stopping` ends it early."""
    gate = RequestGate(0.01, 1, concurrency=5)
    stopping = threading.Event()
    log: list[str] = []
    with gate.slot(stopping):
        pass
    waiter = start_waiter(gate, "w", log, stopping)
    stopping.set()
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert log == ["w stopped"] and gate.waiting == 0 and gate.granted == 1


def test_a_stopped_caller_gets_no_slot_at_all() -> None:
    gate = RequestGate(10.0, 5, concurrency=5)
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(CIStopped), gate.slot(stopping):
        pass
    assert (gate.granted, gate.in_flight, gate.waiting) == (0, 0, 0)


def test_the_slot_is_released_when_the_request_fails() -> None:
    gate = RequestGate(10.0, 5, concurrency=1)
    with pytest.raises(ZeroDivisionError), gate.slot():
        _ = 1 / 0
    assert gate.in_flight == 0


@pytest.mark.parametrize(
    ("rps", "burst", "concurrency"),
    [(0, 1, 1), (-1, 1, 1), (float("nan"), 1, 1), (1, 0, 1), (1, 1, 0)],
)
def test_gate_settings_are_checked(rps: float, burst: int, concurrency: int) -> None:
    with pytest.raises(ValueError):
        RequestGate(rps, burst, concurrency)


def test_gate_repr_is_its_settings() -> None:
    assert repr(RequestGate(15, 30, 4)) == (
        "RequestGate(requests_per_second=15, burst=30, concurrency=4)"
    )


def test_the_real_sleep_is_cut_short_by_stopping() -> None:
    stopping = threading.Event()
    assert wait_on(stopping, 0) is False
    stopping.set()
    assert wait_on(stopping, 3600) is True  # returns at once


# -- pacing -------------------------------------------------------------------------------


def test_an_unthrottled_target_is_not_paced() -> None:
    fake = FakeTime()
    pacer = Pacer(clock=fake.clock)
    assert [pacer.reserve() for _ in range(5)] == [0.0] * 5
    pacer.succeeded()
    assert pacer.spacing == 0.0


def test_a_throttle_holds_every_request_for_retry_after_then_spaces_them() -> None:
    fake = FakeTime()
    pacer = Pacer(clock=fake.clock)
    pacer.throttled(hold=2.0)
    assert pacer.spacing == PACE_FLOOR
    # Three requests booked at once: the first after the hold, the others spaced behind it.
    assert [pacer.reserve() for _ in range(3)] == pytest.approx([2.0, 2.1, 2.2])
    fake.advance(10)
    assert pacer.reserve() == 0.0


def test_throttles_double_the_spacing_up_to_the_cap() -> None:
    pacer = Pacer(clock=FakeTime().clock)
    spacings = []
    for _ in range(12):
        pacer.throttled()
        spacings.append(pacer.spacing)
    assert spacings[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert spacings[-1] == PACE_CAP and max(spacings) == PACE_CAP


def test_successes_relieve_the_spacing_gradually_then_drop_it() -> None:
    pacer = Pacer(clock=FakeTime().clock)
    for _ in range(4):
        pacer.throttled()  # 0.8 s
    history = []
    for _ in range(60):
        pacer.succeeded()
        history.append(pacer.spacing)
    assert history[0] == pytest.approx(0.75)
    assert history[10] == pytest.approx(0.8 * (15 / 16) ** 11)  # about halved after 11
    assert all(a > b or b == 0 for a, b in itertools.pairwise(history))
    first_zero = history.index(0.0)
    assert history[first_zero - 1] >= PACE_FLOOR / 2 > 0.8 * (15 / 16) ** (first_zero + 1)
    pacer.throttled()
    assert pacer.spacing == PACE_FLOOR  # back to the floor, not to where it was


def test_pacer_settings_are_checked() -> None:
    for kwargs in ({"floor": 0.0}, {"floor": 2.0, "cap": 1.0}, {"relief": 1.0}, {"relief": 0}):
        with pytest.raises(ValueError):
            Pacer(**kwargs)  # type: ignore[arg-type]


# -- retry back-off -----------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_maximum() -> None:
    policy = RetryPolicy(attempts=10, initial_backoff=0.5, max_backoff=10.0)
    ceilings = [policy.backoff(n, lambda: 1.0) for n in range(1, 9)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert policy.backoff(10_000, lambda: 1.0) == 10.0  # no overflow however many retries


def test_backoff_is_full_jitter_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(attempts=3, initial_backoff=0.5, max_backoff=10.0)
    rng = random.Random(5)
    draws = [policy.backoff(3, rng.random) for _ in range(2000)]
    assert all(0 <= d < 2.0 for d in draws)
    assert min(draws) < 0.05 and max(draws) > 1.95  # spread over the whole range
    assert policy.backoff(2, lambda: 0.0) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"initial_backoff": -1},
        {"initial_backoff": 5, "max_backoff": 1},
        {"max_backoff": float("inf")},
    ],
)
def test_retry_policy_is_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
