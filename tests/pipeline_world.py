"""What the pipeline tests share: two buckets on the simulator, their target configs and the
count of finished jobs a poller shows (conftest's `frozen_on_every_thread` puts freezegun's
clock on every thread)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from exporter.config import ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poller import Poller
from exporter.simulator import Simulator

SECRET_ID, SECRET_KEY = "AKIDpipeline0000000000000000000000000", "pipeline-key-000000000000000000"
BUCKETS = ("one-1250000000", "two-1250000000")
REGION = "ap-nanjing"
TAG = "Transcode"


def target(sim: Simulator, bucket: str, tags: tuple[str, ...] = (TAG,)) -> TargetConfig:
    return TargetConfig(
        bucket,
        REGION,
        sim.endpoint(bucket),
        Credentials(SECRET_ID, SECRET_KEY),
        (ServiceConfig("media", tags),),
    )


@contextmanager
def two_buckets() -> Iterator[Simulator]:
    """The simulator with BUCKETS, one media queue each, serving."""
    simulator = Simulator({SECRET_ID: SECRET_KEY})
    for name in BUCKETS:
        simulator.add_bucket(name, REGION).add_queue("media", name="main")
    with simulator.start():
        yield simulator


def finished(poller: Poller, bucket: str = BUCKETS[0], queue_id: str | None = None) -> int:
    snapshot = next(t for t in poller.snapshot().targets if t.bucket == bucket)
    return sum(
        sum(s.finished.values())
        for s in snapshot.streams
        if queue_id is None or s.queue_id == queue_id
    )
