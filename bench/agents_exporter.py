"""The exporter agent (bench/agents.py): the exporter's real Poller, alone in a process, polling
at the instants the parent names; its CPU time, and with tracemalloc on, the memory its pollers
hold."""

from __future__ import annotations

import dataclasses
import gc
import resource
import time
import tracemalloc
from collections import Counter
from typing import Any

import freezegun.api

from bench.agents_clock import Frozen
from bench.agents_specs import (
    ExporterSpec,
    Finish,
    MemoryReport,
    PollReport,
    config_fields,
    supports,
)
from exporter.api_stats import ApiStats
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poller import Poller


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


class ExporterAgent:
    def __init__(self, spec: ExporterSpec) -> None:
        self.spec = spec
        if spec.trace_memory:
            tracemalloc.start()
        self.clock = Frozen(spec.frozen_at)
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
