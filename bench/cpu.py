"""Target 3: CPU per 10,000 jobs parsed and accounted, against the SDK parsing the same pages.

The pages are the simulator's own bodies (exporter.simulator.render) of a busy stream polled
once a minute: each poll's active listing and its finished listing from the window edge, as
the exporter asks for them. The exporter's side is what a poll does with them: parse
(exporter.ci.parse) and account (exporter.accounting.StreamTracker: begin, to_describe,
commit). The baseline's side is what cos-python-sdk-v5 does with a listing's body
(qcloud_cos.cos_comm.xml_to_dict, then format_dict for JobsDetail, as ci_list_media_jobs
does) and the cron script's count of states. No HTTP on either side: that is counted in
requests (target 1). Both sides run over the same pages, interleaved, in this process.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from bench.workload import ScaleWorkload, Shape
from exporter.accounting import StreamKey, StreamListings, StreamTracker
from exporter.ci.client import JOB_PAGE_SIZE
from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES
from exporter.ci.parse import parse_job_page
from exporter.simulator import Simulator, render
from exporter.simulator.model import SimBucket
from exporter.simulator.records import JobQuery
from exporter.stream_counts import CodeLimiter

PER = 10_000  # jobs
SKEW = 30  # the exporter's default clock_skew_tolerance: the window starts this much early


@dataclass(frozen=True)
class PollPages:
    at: float
    active: tuple[bytes, ...]
    finished: tuple[bytes, ...]


@dataclass(frozen=True)
class CpuResult:
    jobs: int  # parsed per pass, by each side
    pages: int
    repetitions: int
    exporter: float  # CPU seconds per 10,000 jobs (median)
    sdk: float
    parse_only: float  # the exporter's parse alone, per 10,000 jobs (median)
    spread: tuple[float, float] = (0.0, 0.0)  # the least and greatest ratio of a repetition

    @property
    def ratio(self) -> float:
        """How many times more CPU the SDK takes."""
        return self.sdk / self.exporter if self.exporter else float("inf")


def poll_pages(
    polls: int, seed: int, *, interval: float = 60.0
) -> tuple[StreamKey, list[PollPages]]:
    """The bodies a busy stream's polls fetch: ~100 jobs finishing a minute, ~150 active."""
    sim = Simulator(seed=seed)
    start = 1_790_000_000.0
    shape = Shape(targets=1, queues=2, tags=1, jobs_per_day=144_000, burst_share=0.0)
    workload = ScaleWorkload(sim, shape, seed=seed, start=start - 3600)
    workload.advance(start)
    target = workload.targets[0]
    queue_id, tag = target.queue_ids[0], target.tags[0]
    bucket = sim.bucket(target.bucket)
    services = frozenset({"media"})
    found: list[PollPages] = []
    window = int(start) - SKEW - 1
    for n in range(1, polls + 1):
        at = start + n * interval
        workload.advance(at)
        active = JobQuery(services, queue_id, tag, frozenset(ACTIVE_STATES))
        finished = JobQuery(
            services, queue_id, tag, frozenset(FINISHED_STATES), start=window - 1, descending=False
        )
        found.append(PollPages(at, _bodies(bucket, active), _bodies(bucket, finished)))
        window = int(at) - SKEW - 1
    return StreamKey("media", queue_id, tag), found


def _bodies(bucket: SimBucket, query: JobQuery) -> tuple[bytes, ...]:
    """Every page of a listing, rendered as the simulator serves it."""
    bodies: list[bytes] = []
    while True:
        jobs, more = bucket.list_jobs(query, JOB_PAGE_SIZE)
        token = f"token{len(bodies) + 1}" if more else ""
        bodies.append(render.job_list_body(jobs, token, bucket.name, bucket.region))
        if not more:
            return tuple(bodies)
        query = replace(query, after=jobs[-1].key)


def exporter_pass(key: StreamKey, polls: list[PollPages]) -> int:
    """Parse and account every poll's pages, as TargetPoller does: the jobs parsed."""
    tracker = StreamTracker(key, CodeLimiter(50))
    parsed = 0
    for number, poll in enumerate(polls):
        boundary = int(poll.at) - SKEW - 1
        if number == 0:
            tracker.begin(boundary, poll.at + SKEW)
        active = [job for body in poll.active for job in parse_job_page(body).jobs]
        finished = [job for body in poll.finished for job in parse_job_page(body).jobs]
        parsed += len(active) + len(finished)
        tracker.to_describe(active, finished)
        paged = len(poll.active) > 1
        tracker.commit(
            StreamListings(active, finished, None, active_paged=paged), boundary, poll.at
        )
    return parsed


def parse_pass(polls: list[PollPages]) -> int:
    """The exporter's parse alone: what of its CPU is parsing, and what accounting."""
    return sum(
        len(parse_job_page(body).jobs) for poll in polls for body in (*poll.active, *poll.finished)
    )


def sdk_pass(polls: list[PollPages]) -> int:
    """The SDK's parse of the same pages, and the cron script's count of states."""
    # Imported here: the rest of the suite does not need the SDK loaded.
    from qcloud_cos.cos_comm import format_dict, xml_to_dict

    states: Counter[str] = Counter()
    for poll in polls:
        for body in (*poll.active, *poll.finished):
            data = xml_to_dict(body)
            format_dict(data, ["JobsDetail"])
            states.update(job["State"] for job in data.get("JobsDetail") or [])
    return sum(states.values())


def _cpu(work: Callable[[], int]) -> tuple[float, int]:
    gc.collect()
    began = time.process_time()
    jobs = work()
    return time.process_time() - began, jobs


def run_cpu(*, polls: int = 30, repetitions: int = 5, seed: int = 3) -> CpuResult:
    key, pages = poll_pages(polls, seed)
    exporter_times: list[float] = []
    sdk_times: list[float] = []
    parse_times: list[float] = []
    jobs = 0
    for _ in range(repetitions):
        seconds, jobs = _cpu(lambda: exporter_pass(key, pages))
        exporter_times.append(seconds)
        seconds, sdk_jobs = _cpu(lambda: sdk_pass(pages))
        sdk_times.append(seconds)
        seconds, parsed = _cpu(lambda: parse_pass(pages))
        parse_times.append(seconds)
        if not sdk_jobs == parsed == jobs:
            raise RuntimeError(f"the SDK parsed {sdk_jobs} jobs, the exporter {jobs}")
    scale = PER / max(1, jobs)
    ratios = [sdk / exporter for sdk, exporter in zip(sdk_times, exporter_times, strict=True)]
    return CpuResult(
        jobs=jobs,
        pages=sum(len(p.active) + len(p.finished) for p in pages),
        repetitions=repetitions,
        exporter=statistics.median(exporter_times) * scale,
        sdk=statistics.median(sdk_times) * scale,
        parse_only=statistics.median(parse_times) * scale,
        spread=(min(ratios), max(ratios)),
    )
