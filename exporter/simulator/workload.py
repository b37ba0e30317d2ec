"""The demo: its buckets, queues and the seeded workload that runs them (build_demo), each
queue healthy but for the problems named below. The workload itself, Stream and Workload, is
exporter.simulator.streams.

Thread ownership: no mutable state of its own; build_demo() hands the caller a Simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.ci.services import SERVICES
from exporter.simulator.server import Simulator
from exporter.simulator.streams import FAILURE_CODES, Stream, Surge, WeightedCode, Workload
from exporter.simulator.workflows import BATCH_QUEUE_ID

DEMO_SECRET_ID = "AKIDdemo0000000000000000000000000000"
DEMO_SECRET_KEY = "demo-secret-key-not-a-real-one-000000"


# -- the demo ------------------------------------------------------------------------------
#
# Healthy queues run far below MaxConcurrent: their load (jobs per second times mean run time)
# is at most a sixth of it, so that every slot is busy at once well under 1 time in 10,000,
# and they fail 2% of their jobs. No alert of deploy/prometheus/rules has anything to say about
# them. The demo's problems are these, each on its own (tests/test_demo_workload.py):

DEMO_PAUSED_QUEUE = "archive-paused"  # paused: jobs wait in Pause until their submitter gives up
DEMO_FLAKY_QUEUE = "tts-flaky"  # 40% of its jobs fail: most with InternalError, a few otherwise
DEMO_BACKLOG_QUEUE = "asr-backlog"  # a surge a quarter of every hour: its backlog grows, drains
DEMO_THROTTLED_BUCKET = "media-1250000001"  # CI throttles a share of its calls (exporter.demo)

DEMO_SIGMA = 0.5  # run times vary around their median, without a heavy tail
DEMO_FAILURE_RATIO = 0.02
DEMO_CANCEL_RATIO = 0.01
DEMO_PATIENCE = 1800.0  # a job still waiting after half an hour is cancelled by its submitter
# The backlog queue's surge: from the demo's start, 15 minutes of every hour.
DEMO_SURGE_EVERY = 3600.0
DEMO_SURGE_LASTING = 900.0


@dataclass(frozen=True, slots=True)
class DemoQueue:
    """A queue of the demo and the jobs that arrive on it."""

    service: str
    name: str
    max_concurrent: int
    tags: tuple[tuple[str, float, float], ...]  # (tag, jobs per second, median run seconds)
    category: str | None = None
    paused: bool = False
    notify: bool = False
    failure_ratio: float | None = None  # the queue's own, instead of DEMO_FAILURE_RATIO
    failure_codes: tuple[WeightedCode, ...] = ()  # the queue's own, instead of FAILURE_CODES
    surge: float = 1.0  # the tags' rates are this many times higher while a surge is on


DEMO_FLAKY_WORKFLOW = "thumbnail-flow"  # nearly half of its runs fail
DEMO_PAUSED_WORKFLOW = "archive-flow"  # paused: starts no runs
DEMO_SERVICES = (*SERVICES, "workflow", "batch")

FLAKY_CODES: tuple[WeightedCode, ...] = (
    ("InternalError", "internal error, please retry", 16.0),
    *((code, message, 1.0) for code, message in FAILURE_CODES if code != "InternalError"),
)

DEMO_BUCKETS: tuple[tuple[str, str, tuple[DemoQueue, ...]], ...] = (
    (
        "demo-1250000000",
        "ap-guangzhou",
        (
            DemoQueue(
                "media",
                "transcode-main",
                12,
                (("Transcode", 0.04, 30.0), ("Snapshot", 0.05, 3.0), ("Animation", 0.01, 15.0)),
                category="Transcoding",
                notify=True,
            ),
            DemoQueue(
                "media", "speed-hd", 8, (("Transcode", 0.02, 25.0),), category="SpeedTranscoding"
            ),
            DemoQueue(
                "media",
                DEMO_PAUSED_QUEUE,
                2,
                (("Transcode", 0.005, 60.0),),
                category="Transcoding",
                paused=True,
            ),
            DemoQueue(
                "ai",
                "ai-content",
                8,
                (("Translation", 0.04, 8.0), ("WordsGeneralize", 0.03, 4.0)),
                notify=True,
            ),
            DemoQueue("speech", "asr-default", 6, (("SpeechRecognition", 0.015, 20.0),)),
            # Text-to-speech jobs that often fail, within a second or two of starting.
            DemoQueue(
                "media",
                DEMO_FLAKY_QUEUE,
                10,
                (("Tts", 1.0, 1.0),),
                category="Transcoding",
                failure_ratio=0.4,
                failure_codes=FLAKY_CODES,
            ),
            DemoQueue(
                "pic", "pic-default", 8, (("PicProcess", 0.1, 2.0), ("PosterProduction", 0.02, 6.0))
            ),
            DemoQueue("doc", "doc-default", 5, (("DocProcess", 0.02, 10.0),), notify=True),
            # Workflows (their runs start at once: no slots of their own) and batch jobs.
            DemoQueue("workflow", "ingest-flow", 1000, (("Workflow", 0.05, 40.0),)),
            DemoQueue(
                "workflow",
                DEMO_FLAKY_WORKFLOW,
                1000,
                (("Workflow", 0.1, 15.0),),
                failure_ratio=0.5,
            ),
            DemoQueue("workflow", DEMO_PAUSED_WORKFLOW, 1000, (), paused=True),
            DemoQueue(
                "batch",
                "inventory trigger jobs",
                4,
                (("Job", 0.005, 120.0), ("Workflow", 0.002, 300.0)),
            ),
        ),
    ),
    (
        DEMO_THROTTLED_BUCKET,
        "ap-shanghai",
        (
            DemoQueue(
                "media",
                "live-clips",
                12,
                (("Transcode", 0.06, 20.0), ("Snapshot", 0.04, 3.0)),
                category="Transcoding",
                notify=True,
            ),
            DemoQueue(
                "media",
                "speed-batch",
                10,
                (("Transcode", 0.015, 45.0), ("SuperResolution", 0.004, 90.0)),
                category="SpeedTranscoding",
            ),
            # Two slots run ~0.06 jobs a second; 0.008 arrive, 0.12 while the surge is on.
            DemoQueue(
                "speech", DEMO_BACKLOG_QUEUE, 2, (("SpeechRecognition", 0.008, 30.0),), surge=15.0
            ),
        ),
    ),
)


def _demo_streams(queue_id: str, spec: DemoQueue, warmup: float) -> list[Stream]:
    """The streams of one demo queue. Its first surge starts when the demo does: `warmup`
    seconds after the workload."""

    def surge(rate: float) -> Surge | None:
        if spec.surge == 1.0:
            return None
        return Surge(rate * spec.surge, DEMO_SURGE_EVERY, DEMO_SURGE_LASTING, offset=warmup)

    return [
        Stream(
            queue_id,
            tag,
            rate,
            median,
            DEMO_SIGMA,
            failure_ratio=spec.failure_ratio,
            failure_codes=spec.failure_codes,
            surge=surge(rate),
            patience=DEMO_PATIENCE,
        )
        for tag, rate, median in spec.tags
    ]


def build_demo(seed: int = 1, warmup: float = 900.0, retention: float = 7200.0) -> Simulator:
    """A lively simulator: two buckets, queues of every service (SpeedTranscoding ones, some
    notifying), `warmup` seconds of history, jobs of a second to a few minutes, and the problems
    named above: a paused queue, a flaky one, a backlog that grows and drains (exporter.demo adds
    the throttled bucket). Finished jobs are kept `retention` seconds, waiting ones at most
    DEMO_PATIENCE: what it holds stays bounded however long it runs. Call start() and
    start_workload() to serve it live."""
    sim = Simulator({DEMO_SECRET_ID: DEMO_SECRET_KEY}, seed=seed)
    for n, (name, region, specs) in enumerate(DEMO_BUCKETS):
        bucket = sim.add_bucket(name, region, services=DEMO_SERVICES)
        begin = bucket.now() - warmup
        streams: list[Stream] = []
        for spec in specs:
            queue_id = bucket.add_queue(
                spec.service,
                # Batch jobs are listed from one stand-in queue, whatever the demo calls it.
                queue_id=BATCH_QUEUE_ID if spec.service == "batch" else None,
                name=spec.name,
                category=spec.category,
                max_concurrent=spec.max_concurrent,
                paused=spec.paused,
                notify=spec.notify,
                at=begin - 86400,
            )
            streams += _demo_streams(queue_id, spec, warmup)
        workload = Workload(
            bucket,
            seed * 1000 + n,
            streams,
            start=begin,
            failure_ratio=DEMO_FAILURE_RATIO,
            cancel_ratio=DEMO_CANCEL_RATIO,
            retention=retention,
        )
        workload.advance(bucket.now())
        sim.add_workload(workload)
    return sim
