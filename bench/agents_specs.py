"""What the benchmark's parent and its agents (bench/agents.py) tell each other: the specs an
agent is built from, the reports it answers with, and which settings this exporter's Config
has."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

from exporter.config import Config

if TYPE_CHECKING:
    from bench.workload import ScaleWorkload
    from exporter.simulator import Simulator


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    bucket: str
    region: str
    endpoint: str
    tags: tuple[str, ...]


def target_specs(sim: Simulator, workload: ScaleWorkload) -> tuple[TargetSpec, ...]:
    """The workload's targets, as an agent is told them."""
    return tuple(
        TargetSpec(t.bucket, t.region, sim.endpoint(t.bucket), t.tags) for t in workload.targets
    )


@dataclasses.dataclass(frozen=True)
class ExporterSpec:
    targets: tuple[TargetSpec, ...]
    secret_id: str
    secret_key: str
    poll_interval: float
    frozen_at: float | None  # the start of simulated time; None: real time
    idle_tag_backoff: float | None = None  # None: the exporter's default
    rate_limit: tuple[float, int, int] | None = None  # (per second, burst, concurrency)
    trace_memory: bool = False
    request_timeout: float = 30.0
    # Streams with no jobs, polled by a second poller: what a stream alone costs, so that
    # memory per tracked job is net of it.
    twin_targets: tuple[TargetSpec, ...] = ()


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    targets: tuple[TargetSpec, ...]
    secret_id: str
    secret_key: str
    frozen_at: float
    lookback: float  # seconds of creation time re-listed on every run
    page_size: int = 100  # the most CI allows; the SDK's default is 10


@dataclasses.dataclass(frozen=True)
class PollReport:
    cpu: float  # seconds of this process's CPU time
    wall: float  # real seconds
    up: bool
    errors: tuple[str, ...]
    tracked_jobs: int


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """Traced bytes (tracemalloc) at the end of a run, each after a full collection.

    `exporter` and `twin` are what dropping each poller gave back: the exporter's own state
    (streams and jobs), and that of streams like them without jobs."""

    grown: int  # traced now less when the pollers had just been built (the twin's left out)
    exporter: int
    twin: int
    tracked_jobs: int
    streams: int
    twin_streams: int
    tracemalloc_overhead: int  # bytes tracemalloc itself holds (in the RSS, not traced)
    rss: int  # bytes, now (both pollers alive)
    peak_rss: int  # bytes, the high-water mark
    top: tuple[tuple[str, int, int], ...]  # (file:line, bytes, blocks) grown the most

    @property
    def per_stream(self) -> float:
        """Bytes per stream without jobs (the twin's)."""
        return self.twin / self.twin_streams if self.twin_streams else 0.0

    @property
    def per_job(self) -> float:
        """Bytes per tracked job: the exporter's state less what its streams cost idle."""
        if not self.tracked_jobs:
            return 0.0
        return (self.exporter - self.per_stream * self.streams) / self.tracked_jobs

    @property
    def gross_per_job(self) -> float:
        """Everything the process grew by (caches and lazy imports too) per tracked job."""
        return self.grown / self.tracked_jobs if self.tracked_jobs else 0.0


@dataclasses.dataclass(frozen=True)
class Finish:
    counts: dict[tuple[str, str, str], Counter[tuple[str, str]]]
    memory: MemoryReport | None


@dataclasses.dataclass(frozen=True)
class BaselineReport:
    requests: int
    jobs: int
    states: dict[str, int]
    cpu: float


def config_fields(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def supports(setting: str) -> bool:
    """Whether this exporter's Config has `setting` (the suite runs before and after it does)."""
    return setting in config_fields(Config)
