"""The benchmark's other processes: the exporter (its real Poller, over HTTP) and the cron-script
baseline (cos-python-sdk-v5), each alone in a process, so that the CPU time, the traced memory
and the resident size measured are its own and not the simulator's.

Each agent runs with its own freezegun clock, moved to the instant the parent names, so that
both sides of every request agree on the time while the parent steps simulated time by the
poll interval. The parent talks to an agent over a pipe: ("init", spec) once, then
(command, argument) pairs; every answer is ("ok", value) or ("error", traceback text).
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import resource
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import freezegun.api
from freezegun import freeze_time

from exporter.api_stats import ApiStats
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poller import Poller

# How long the parent waits for an agent's answer before it gives up on it.
ANSWER_TIMEOUT = 900.0
CST = timezone(timedelta(hours=8))


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    bucket: str
    region: str
    endpoint: str
    tags: tuple[str, ...]


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


def exporter_config(spec: ExporterSpec) -> Config:
    targets = tuple(
        TargetConfig(
            bucket=t.bucket,
            region=t.region,
            endpoint=t.endpoint,
            credentials=Credentials(spec.secret_id, spec.secret_key),
            services=(ServiceConfig("media", t.tags),),
        )
        for t in spec.targets
    )
    config = Config(targets, poll_interval=spec.poll_interval, request_timeout=spec.request_timeout)
    changes: dict[str, Any] = {}
    if spec.idle_tag_backoff is not None and supports("idle_tag_backoff"):
        changes["idle_tag_backoff"] = spec.idle_tag_backoff
    if spec.rate_limit is not None and supports("rate_limit"):
        current = config.rate_limit
        per_second, burst, concurrency = spec.rate_limit
        wanted: dict[str, Any] = {
            "requests_per_second": per_second,
            "burst": burst,
            "concurrency": concurrency,
        }
        known = config_fields(type(current))
        changes["rate_limit"] = dataclasses.replace(
            current, **{k: v for k, v in wanted.items() if k in known}
        )
    return dataclasses.replace(config, **changes)


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _rss() -> tuple[int, int]:
    """(resident bytes now, high-water mark), from /proc when there is one."""
    values: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    peak = values.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return values.get("VmRSS", peak), peak


class _Frozen:
    """This process's clock: frozen at an instant the parent moves, or the real one."""

    def __init__(self, at: float | None) -> None:
        self._freezer = freeze_time(_utc(at)) if at is not None else None
        self._frozen = self._freezer.start() if self._freezer is not None else None

    def move_to(self, at: float | None) -> None:
        if self._frozen is not None and at is not None:
            self._frozen.move_to(_utc(at))

    def stop(self) -> None:
        if self._freezer is not None:
            self._freezer.stop()
            self._freezer = self._frozen = None


class ExporterAgent:
    def __init__(self, spec: ExporterSpec) -> None:
        self.spec = spec
        if spec.trace_memory:
            tracemalloc.start()
        self.clock = _Frozen(spec.frozen_at)
        self.poller: Poller | None = Poller(exporter_config(spec), ApiStats())
        self.twin: Poller | None = None
        if spec.twin_targets:
            twin_spec = dataclasses.replace(spec, targets=spec.twin_targets)
            self.twin = Poller(exporter_config(twin_spec), ApiStats())
        gc.collect()
        self._traced_at_start = tracemalloc.get_traced_memory()[0]
        self._start_snapshot = tracemalloc.take_snapshot() if spec.trace_memory else None

    def _live(self) -> Poller:
        if self.poller is None:
            raise RuntimeError("the run is finished")
        return self.poller

    def poll(self, at: float | None) -> PollReport:
        poller = self._live()
        self.clock.move_to(at)
        cpu, wall = time.process_time(), freezegun.api.real_perf_counter()
        poller.poll_once()
        cpu, wall = time.process_time() - cpu, freezegun.api.real_perf_counter() - wall
        targets = poller.snapshot().targets
        return PollReport(
            cpu=cpu,
            wall=wall,
            up=all(t.up for t in targets),
            errors=tuple(t.last_error for t in targets if t.last_error),
            tracked_jobs=sum(t.tracked_jobs for t in targets),
        )

    def poll_twin(self, at: float | None) -> bool:
        if self.twin is None:
            return False
        self.clock.move_to(at)
        self.twin.poll_once()
        return all(t.up for t in self.twin.snapshot().targets)

    def counts(self) -> dict[tuple[str, str, str], Counter[tuple[str, str]]]:
        """Per stream: finished jobs by ("state", state) and failures by ("code", code)."""
        found: dict[tuple[str, str, str], Counter[tuple[str, str]]] = {}
        for target in self._live().snapshot().targets:
            for stream in target.streams:
                counts: Counter[tuple[str, str]] = Counter()
                for state, total in stream.finished.items():
                    counts[("state", state)] += total
                for code, total in stream.failures.items():
                    counts[("code", code)] += total
                counts = +counts
                if counts:
                    found[(target.bucket, stream.queue_id, stream.tag)] = counts
        return found

    def finish(self, _: object) -> Finish:
        """The counters, then what memory the pollers held (dropping them: the last command)."""
        counts = self.counts()
        memory = self._memory() if self.spec.trace_memory else None
        self.close()
        return Finish(counts, memory)

    def _memory(self) -> MemoryReport:
        tracked, streams = _size(self._live())
        twin_streams = _size(self.twin)[1] if self.twin is not None else 0
        rss, peak = _rss()
        both = _traced()
        _drop(self.twin)
        self.twin = None
        alone = _traced()
        top = self._top()
        _drop(self.poller)
        self.poller = None
        neither = _traced()
        return MemoryReport(
            grown=alone - self._traced_at_start,
            exporter=alone - neither,
            twin=both - alone,
            tracked_jobs=tracked,
            streams=streams,
            twin_streams=twin_streams,
            tracemalloc_overhead=tracemalloc.get_tracemalloc_memory(),
            rss=rss,
            peak_rss=peak,
            top=top,
        )

    def _top(self) -> tuple[tuple[str, int, int], ...]:
        if self._start_snapshot is None:
            return ()
        skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
        now = tracemalloc.take_snapshot().filter_traces(skip)
        grown = now.compare_to(self._start_snapshot.filter_traces(skip), "lineno")
        return tuple(
            (_where(stat.traceback[0]), stat.size_diff, stat.count_diff) for stat in grown[:12]
        )

    def close(self) -> None:
        for poller in (self.poller, self.twin):
            if poller is not None:
                poller.stop()
        self.clock.stop()


def _size(poller: Poller) -> tuple[int, int]:
    """(tracked jobs, streams) of a poller's last snapshot."""
    targets = poller.snapshot().targets
    return sum(t.tracked_jobs for t in targets), sum(len(t.streams) for t in targets)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _drop(poller: Poller | None) -> None:
    """Stop a poller so that nothing but the caller's reference keeps it alive."""
    if poller is not None:
        poller.stop()


def _where(frame: tracemalloc.Frame) -> str:
    path = frame.filename
    for marker in ("/exporter/", "/site-packages/", "/lib/python"):
        if marker in path:
            path = marker.strip("/") + "/" + path.split(marker, 1)[1]
            break
    return f"{path}:{frame.lineno}"


class BaselineAgent:
    """What a user's cron script does: every run, for every queue and tag, list the jobs of all
    states created in the last `lookback` seconds, every page, through cos-python-sdk-v5, and
    count them by state."""

    def __init__(self, spec: BaselineSpec) -> None:
        # Imported here: only this process needs the SDK.
        from qcloud_cos import CosConfig, CosS3Client

        self.spec = spec
        self.clock = _Frozen(spec.frozen_at)
        self.clients: dict[str, Any] = {}
        for target in spec.targets:
            parts = urlsplit(target.endpoint)
            host = parts.hostname or "127.0.0.1"
            # IP and Port say where to connect; Domain becomes the (signed) Host header.
            config = CosConfig(
                Region=target.region,
                SecretId=spec.secret_id,
                SecretKey=spec.secret_key,
                Scheme=parts.scheme,
                IP=host,
                Port=parts.port,
                Domain=parts.netloc,
                Timeout=30,
            )
            self.clients[target.bucket] = CosS3Client(config)

    def run(self, at: float) -> BaselineReport:
        self.clock.move_to(at)
        cpu = time.process_time()
        since = datetime.fromtimestamp(at - self.spec.lookback, CST)
        self._since = since.strftime("%Y-%m-%dT%H:%M:%S+0800")
        self._requests = 0
        states: Counter[str] = Counter()
        for target in self.spec.targets:
            client = self.clients[target.bucket]
            for queue_id in self._queue_ids(client, target.bucket):
                for tag in target.tags:
                    states.update(self._states(client, target.bucket, queue_id, tag))
        return BaselineReport(
            requests=self._requests,
            jobs=sum(states.values()),
            states=dict(states),
            cpu=time.process_time() - cpu,
        )

    def _queue_ids(self, client: Any, bucket: str) -> list[str]:
        ids: list[str] = []
        for page in range(1, 1001):
            answer = client.ci_get_media_queue(
                Bucket=bucket, State="All", PageNumber=str(page), PageSize="100"
            )
            self._requests += 1
            listed = answer.get("QueueList") or []
            ids.extend(queue["QueueId"] for queue in listed)
            if not listed or len(ids) >= int(answer.get("TotalCount") or 0):
                break
        return ids

    def _states(self, client: Any, bucket: str, queue_id: str, tag: str) -> Counter[str]:
        states: Counter[str] = Counter()
        token = ""
        while True:
            answer = client.ci_list_media_jobs(
                Bucket=bucket,
                Tag=tag,
                QueueId=queue_id,
                StartCreationTime=self._since,
                States="All",
                Size=self.spec.page_size,
                NextToken=token,
            )
            self._requests += 1
            states.update(job["State"] for job in answer.get("JobsDetail") or [])
            token = answer.get("NextToken") or ""
            if not token:
                return states

    def close(self) -> None:
        self.clock.stop()


def main(conn: Connection, role: str) -> None:
    """An agent process: build the agent from the spec sent first, then answer commands."""
    agent: ExporterAgent | BaselineAgent | None = None
    try:
        spec = conn.recv()
        if role == "exporter":
            exporter = agent = ExporterAgent(spec)
            commands: dict[str, Callable[[Any], object]] = {
                "poll": exporter.poll,
                "poll_twin": exporter.poll_twin,
                "finish": exporter.finish,
            }
        else:
            baseline = agent = BaselineAgent(spec)
            commands = {"run": baseline.run}
        conn.send(("ok", None))
        while True:
            command, argument = conn.recv()
            if command == "stop":
                agent.close()
                conn.send(("ok", None))
                return
            conn.send(("ok", commands[command](argument)))
    except EOFError:  # the parent went away
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class AgentError(Exception):
    pass


class Agent:
    """The parent's handle on one agent process (spawned, so it shares nothing with the
    parent: no simulator, no frozen clock, no threads)."""

    def __init__(self, role: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.role = role
        self._conn, child = context.Pipe()
        self._process = context.Process(target=main, args=(child, role), daemon=True)
        self._process.start()
        child.close()

    def init(self, spec: ExporterSpec | BaselineSpec) -> None:
        self._conn.send(spec)
        self._answer()

    def call(self, command: str, argument: object = None) -> Any:
        self._conn.send((command, argument))
        return self._answer()

    def _answer(self) -> Any:
        if not self._conn.poll(ANSWER_TIMEOUT):
            raise AgentError(f"{self.role} agent gave no answer within {ANSWER_TIMEOUT:g}s")
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            raise AgentError(f"{self.role} agent died") from None
        if status != "ok":
            raise AgentError(f"{self.role} agent failed:\n{value}")
        return value

    def close(self) -> None:
        try:
            if self._process.is_alive():
                self.call("stop")
        except (AgentError, OSError):
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()
