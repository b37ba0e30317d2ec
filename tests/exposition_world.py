"""The world the exposition tests share: snapshots of a few targets, a source to change them,
target_families that counts (and can hold) what it renders, a clock, and scrapes."""

from __future__ import annotations

import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from exposing import FixedSource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from exporter.api_stats import ApiStats
from exporter.ci.models import Queue
from exporter.collector import CICollector, snapshot_families, target_families
from exporter.exposition import Expositions, Response
from exporter.self_metrics import LiveCollector
from exporter.snapshot import (
    FailedJob,
    Histogram,
    QueueSnapshot,
    ReloadStatus,
    Snapshot,
    StreamSnapshot,
    TargetSnapshot,
)

TEXT = ""
OPENMETRICS = "application/openmetrics-text;version=1.0.0"
TIMEOUT = 5.0


def stream(queue_id: str, tag: str, finished: int, job: str = "job-1") -> StreamSnapshot:
    bounds = (5.0, 60.0, 3600.0)
    return StreamSnapshot(
        service="media",
        queue_id=queue_id,
        tag=tag,
        active={"Running": 2, "Submitted": 1},
        finished={"Success": finished, "Failed": 1},
        failures={"InternalError": 1},
        run_duration={
            "Success": Histogram(
                bounds, (min(1, finished), min(2, finished), finished), 99.5, finished
            )
        },
        queue_wait=Histogram((1.0, 10.0), (0, 1), 4.0, 1),
        oldest={"Running": 1_700_000_000.0},
        last_failed_job=job,
        last_failed_code="InternalError",
    )


def target(
    bucket: str, finished: int = 3, *, tag: str = "Transcode", queue_name: str = "queue one"
) -> TargetSnapshot:
    queue = Queue("q1", queue_name, "Active", 100, 2, "CateAll", True)
    return TargetSnapshot(
        bucket=bucket,
        region="ap-guangzhou",
        up=True,
        polled=True,
        last_poll_time=1_700_000_100.0,
        last_success_time=1_700_000_100.0,
        last_poll_duration=0.5,
        last_error="",
        queues=(QueueSnapshot("media", queue),),
        streams=(stream("q1", tag, finished), stream("q1", "Animation", 1)),
        tracked_jobs=3,
        recent_failures=(FailedJob(1.0, "media", "q1", tag, "job-1", "E", "m"),),
        anomalies={"duplicate_id": 1},
    )


class Source(FixedSource):
    def __init__(self, *buckets: str) -> None:
        super().__init__(Snapshot(tuple(target(b) for b in buckets), ReloadStatus(True, 1.0)))

    def change(self, index: int, finished: int) -> None:
        targets = list(self.current.targets)
        targets[index] = target(targets[index].bucket, finished)
        self.current = replace(self.current, targets=tuple(targets))


class Counted:
    """target_families, counting the single targets it renders; `held` makes each wait for a
    turn of `gate`."""

    def __init__(self) -> None:
        self.rendered: list[str] = []
        self.entered = threading.Event()
        self.held = False
        self.gate = threading.Semaphore(0)

    def __call__(self, targets: tuple[TargetSnapshot, ...]) -> Iterator[Metric]:
        if targets:
            self.rendered.append(targets[0].bucket)
            self.entered.set()
            if self.held:
                assert self.gate.acquire(timeout=TIMEOUT)
        return target_families(targets)

    def let_go(self) -> None:
        self.held = False
        for _ in range(50):
            self.gate.release()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def made(
    source: FixedSource,
    stats: ApiStats,
    counted: Callable[[tuple[TargetSnapshot, ...]], Iterator[Metric]] | None = None,
    clock: Clock | None = None,
) -> Expositions:
    """The exporter's expositions without process_*/python_* (which change by themselves)."""

    def costs() -> list:  # type: ignore[type-arg]
        return expositions.costs()

    def rest(snapshot: Snapshot) -> Iterator[Metric]:
        return snapshot_families(snapshot, "9.9")

    expositions = Expositions(
        source.snapshot,
        counted or target_families,
        rest,
        LiveCollector(stats, costs),
        clock or Clock(),
    )
    return expositions


def fresh(source: FixedSource, stats: ApiStats, expositions: Expositions, accept: str) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(source, stats, "9.9", expositions.costs))
    encoder, _ = choose_encoder(accept)
    return encoder(registry)


def inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(31)
    out = inflater.decompress(data)
    assert inflater.eof and inflater.unused_data == b""  # one complete gzip member
    return out


def body(expositions: Expositions, accept: str, zipped: bool = False) -> bytes:
    encoder, content_type = choose_encoder(accept)
    response = expositions.scrape(encoder, content_type, zipped)
    assert response.ok and response.gzip == zipped
    data = b"".join(response.chunks)
    return inflate(data) if zipped else data


def response(expositions: Expositions, accept: str, zipped: bool = False) -> Response:
    """A scrape's Response, whatever it is (for threads that must not raise)."""
    encoder, content_type = choose_encoder(accept)
    return expositions.scrape(encoder, content_type, zipped)


def waiting_for_a_rendering(thread: threading.Thread) -> bool:
    """Whether `thread` is blocked in Expositions.scrape's wait for a rendering (read from its
    stack: the innermost Python frame is Condition.wait, called from `_cached`)."""
    frame = sys._current_frames().get(thread.ident or -1)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return bool(names) and names[0] == "wait" and "_cached" in names


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.001)


def in_thread(
    work: Callable[[], Any], results: list[Any], name: str = "scrape"
) -> threading.Thread:
    def run() -> None:
        results.append(work())

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def renders(expositions: Expositions) -> dict[str, int]:
    return {cost.format: cost.renders for cost in expositions.costs()}
