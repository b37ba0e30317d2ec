"""The scrapes-under-load benchmark's world (bench/scrape_load.py): the CI simulator, in a
process of its own, with a seeded live workload, and the exporter's configuration for it."""

from __future__ import annotations

from dataclasses import replace
from multiprocessing.connection import Connection

from bench.scrape_load_results import LoadSpec
from exporter.config import Config, RateLimitConfig
from exporter.demo import demo_config
from exporter.simulator import DEMO_SECRET_ID, DEMO_SECRET_KEY, Simulator, Stream, Workload

# (service, category, [(tag, jobs per second, median run seconds)]) per queue of every bucket.
_QUEUES: tuple[tuple[str, str | None, tuple[tuple[str, float, float], ...]], ...] = (
    ("media", "Transcoding", (("Transcode", 0.2, 20.0), ("Snapshot", 0.3, 3.0))),
    ("media", "SpeedTranscoding", (("Transcode", 0.1, 30.0),)),
    ("ai", None, (("Translation", 0.1, 8.0),)),
    ("speech", None, (("SpeechRecognition", 0.1, 20.0),)),
)


def build_simulator(spec: LoadSpec) -> Simulator:
    sim = Simulator({DEMO_SECRET_ID: DEMO_SECRET_KEY}, seed=spec.seed)
    for index in range(spec.targets):
        bucket = sim.add_bucket(f"load{index:02d}-{1250000000 + index}", "ap-shanghai")
        begin = bucket.now() - 600.0  # ten minutes of history: finished jobs to list
        streams: list[Stream] = []
        for service, category, tags in _QUEUES:
            queue_id = bucket.add_queue(
                service, category=category, max_concurrent=8, notify=True, at=begin - 86400
            )
            streams += [Stream(queue_id, tag, rate, median) for tag, rate, median in tags]
        workload = Workload(
            bucket,
            spec.seed * 1000 + index,
            streams,
            start=begin,
            failure_ratio=0.05,
            retention=3600.0,
        )
        workload.advance(bucket.now())
        sim.add_workload(workload)
    return sim


def simulator_main(conn: Connection, spec: LoadSpec) -> None:
    sim = build_simulator(spec)
    sim.start()
    sim.start_workload()
    try:
        conn.send(demo_config(sim, spec.poll_interval, discover=False))
        conn.recv()  # until told to stop, or the parent is gone
    except EOFError:
        pass
    finally:
        sim.stop()


def fast_polling(config: Config) -> Config:
    """Every stream at every poll, no client-side rate limit: the simulator is no CI to spare,
    and the point is polling at full speed while scrapes come in."""
    unlimited = RateLimitConfig(requests_per_second=100_000.0, burst=100_000, concurrency=64)
    return replace(config, rate_limit=unlimited, idle_tag_backoff=0.0)
